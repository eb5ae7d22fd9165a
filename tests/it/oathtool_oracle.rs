//! Our OTP core against oathtool, an independent implementation, for a few
//! hundred random keys, times and parameter sets.

use crate::common;

use common::{oathtool, random_secret, tools_present};
use pam_totp::otp::{Algorithm, Params, format_code, totp_at};
use pam_totp::secret::Secret;

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("random");
    u64::from_le_bytes(bytes)
}

#[test]
fn totp_matches_oathtool_for_random_keys_and_times() {
    if !tools_present(&["oathtool"]) {
        return;
    }
    let shapes = [
        (Algorithm::Sha1, 6, 30, "--totp=sha1"),
        (Algorithm::Sha1, 8, 30, "--totp=sha1"),
        (Algorithm::Sha256, 6, 30, "--totp=sha256"),
        (Algorithm::Sha256, 8, 60, "--totp=sha256"),
        (Algorithm::Sha512, 7, 30, "--totp=sha512"),
        (Algorithm::Sha512, 8, 45, "--totp=sha512"),
    ];
    let mut compared = 0;
    for round in 0..300 {
        let (algorithm, digits, period, flag) = shapes[round % shapes.len()];
        let key = random_secret();
        // Any time from 1970 to 2100.
        let at = random_u64() % 4_102_444_800;
        let params = Params {
            algorithm,
            digits,
            period,
        };
        let secret = Secret::from_base32(&key).expect("key");
        let ours = format_code(totp_at(secret.as_bytes(), at, &params), digits);
        let digits_arg = digits.to_string();
        let period_arg = format!("{period}s");
        let theirs = oathtool(
            &key,
            Some(at),
            &[flag, "-d", &digits_arg, "-s", &period_arg],
        );
        assert_eq!(
            ours.as_str(),
            theirs,
            "{algorithm} {digits} digits {period}s at {at}"
        );
        compared += 1;
    }
    println!("{compared} codes identical to oathtool");
}
