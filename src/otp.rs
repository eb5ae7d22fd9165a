//! HOTP (RFC 4226) and TOTP (RFC 6238): pure functions, no I/O, no clock.
//!
//! Time enters only as an argument (`unix_time` or a step number), so every
//! function here is deterministic and testable against the RFC vectors.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The HMAC hash a token uses (the `algorithm=` of an otpauth URI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The lowercase name used in the store and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The uppercase name used by otpauth:// URIs.
    pub fn uri_name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "sha1" => Ok(Algorithm::Sha1),
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            _ => Err(format!(
                "unknown algorithm {s:?} (expected sha1, sha256 or sha512)"
            )),
        }
    }
}

/// Code lengths RFC 4226 allows us to emit (it requires at least 6; 8 is what
/// every authenticator app supports at most).
pub const MIN_DIGITS: u32 = 6;
pub const MAX_DIGITS: u32 = 8;

/// The parameters that turn a key into codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub algorithm: Algorithm,
    /// Number of decimal digits, `MIN_DIGITS..=MAX_DIGITS`.
    pub digits: u32,
    /// Length of one TOTP step in seconds, at least 1.
    pub period: u64,
}

impl Default for Params {
    /// What Google Authenticator and every other app assume: SHA1, 6 digits, 30 s.
    fn default() -> Self {
        Params {
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 30,
        }
    }
}

impl Params {
    /// Checks the ranges; the store and the CLI call this before saving a token.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&self.digits) {
            return Err(format!(
                "digits must be between {MIN_DIGITS} and {MAX_DIGITS}, not {}",
                self.digits
            ));
        }
        if self.period == 0 || self.period > 3600 {
            return Err(format!(
                "period must be between 1 and 3600 seconds, not {}",
                self.period
            ));
        }
        Ok(())
    }
}

/// The HOTP value of each counter in `counters` under one key, handed to
/// `each` in order. The key is padded and hashed into the HMAC's inner and
/// outer states once, and that keyed state is copied for every counter:
/// two hash blocks per counter instead of four.
fn hotp_each<M: Mac + KeyInit + Clone>(
    key: &[u8],
    counters: std::ops::RangeInclusive<u64>,
    digits: u32,
    mut each: impl FnMut(u64, u32),
) {
    // HMAC accepts keys of any length, so new_from_slice cannot fail here;
    // an empty digest would make the truncation produce a non-matching code.
    let keyed = <M as KeyInit>::new_from_slice(key).ok();
    for counter in counters {
        let digest = match &keyed {
            Some(keyed) => {
                let mut mac = keyed.clone();
                mac.update(&counter.to_be_bytes());
                Zeroizing::new(mac.finalize().into_bytes().to_vec())
            }
            None => Zeroizing::new(Vec::new()),
        };
        each(counter, truncate(&digest, digits));
    }
}

/// The HOTP values of `counters` (see `hotp_each`).
fn hotp_values(
    key: &[u8],
    counters: std::ops::RangeInclusive<u64>,
    algorithm: Algorithm,
    digits: u32,
    each: impl FnMut(u64, u32),
) {
    match algorithm {
        Algorithm::Sha1 => hotp_each::<Hmac<sha1::Sha1>>(key, counters, digits, each),
        Algorithm::Sha256 => hotp_each::<Hmac<sha2::Sha256>>(key, counters, digits, each),
        Algorithm::Sha512 => hotp_each::<Hmac<sha2::Sha512>>(key, counters, digits, each),
    }
}

/// RFC 4226 HOTP value for `counter`, reduced to `digits` decimal digits.
pub fn hotp(key: &[u8], counter: u64, algorithm: Algorithm, digits: u32) -> u32 {
    let mut value = u32::MAX;
    hotp_values(key, counter..=counter, algorithm, digits, |_, v| value = v);
    value
}

/// Dynamic truncation (RFC 4226 section 5.3) of an HMAC digest to `digits`
/// decimal digits; `u32::MAX` (never a code) for a digest too short.
fn truncate(digest: &[u8], digits: u32) -> u32 {
    let Some(&last) = digest.last() else {
        return u32::MAX;
    };
    // Dynamic truncation (RFC 4226 section 5.3).
    let offset = usize::from(last & 0x0f);
    let bin = match digest.get(offset..offset + 4) {
        Some(b) => u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]),
        None => return u32::MAX,
    };
    bin % 10u32.pow(digits.clamp(1, 9))
}

/// The TOTP step that contains `unix_time` (RFC 6238, T0 = 0).
pub fn step_at(unix_time: u64, period: u64) -> u64 {
    unix_time / period.max(1)
}

/// RFC 6238 TOTP value at `unix_time`.
pub fn totp_at(key: &[u8], unix_time: u64, params: &Params) -> u32 {
    hotp(
        key,
        step_at(unix_time, params.period),
        params.algorithm,
        params.digits,
    )
}

/// A code as the user types it: zero-padded to `digits`.
pub fn format_code(value: u32, digits: u32) -> Zeroizing<String> {
    Zeroizing::new(format!("{:0width$}", value, width = digits as usize))
}

/// Compares `code` with the codes for every counter in `first..=last`, all
/// of them in constant time, so the work does not depend on whether or
/// where a code matched. Returns the lowest and the highest match.
fn scan(key: &[u8], code: &str, first: u64, last: u64, params: &Params) -> Option<(u64, u64)> {
    let mut matched: Option<(u64, u64)> = None;
    hotp_values(
        key,
        first..=last,
        params.algorithm,
        params.digits,
        |counter, value| {
            let candidate = format_code(value, params.digits);
            let equal: bool = candidate.as_bytes().ct_eq(code.as_bytes()).into();
            if equal {
                matched = Some((matched.map_or(counter, |(low, _)| low), counter));
            }
        },
    );
    matched
}

/// Checks `code` against every step in `center - window ..= center + window`
/// and returns the step that matched, or `None`. If two steps in the window
/// happen to share a code, the later one is returned: it burns more of the
/// window, which is the safe direction for replay protection.
/// `code` must already be exactly `params.digits` ASCII digits.
pub fn verify_window(
    key: &[u8],
    code: &str,
    center_step: u64,
    window: u32,
    params: &Params,
) -> Option<u64> {
    let first = center_step.saturating_sub(u64::from(window));
    let last = center_step.saturating_add(u64::from(window));
    scan(key, code, first, last, params).map(|(_, latest)| latest)
}

/// The key HMAC really uses for `algorithm` (RFC 2104): a key longer than
/// the hash's block is replaced by its hash, and every key is padded with
/// zero bytes to the block. Returned without trailing zero bytes, so keys
/// that differ only in what HMAC does to them compare equal.
fn effective_key(key: &[u8], algorithm: Algorithm) -> Zeroizing<Vec<u8>> {
    use sha2::Digest;
    let block = match algorithm {
        Algorithm::Sha1 | Algorithm::Sha256 => 64,
        Algorithm::Sha512 => 128,
    };
    let mut effective = Zeroizing::new(if key.len() <= block {
        key.to_vec()
    } else {
        match algorithm {
            Algorithm::Sha1 => sha1::Sha1::digest(key).to_vec(),
            Algorithm::Sha256 => sha2::Sha256::digest(key).to_vec(),
            Algorithm::Sha512 => sha2::Sha512::digest(key).to_vec(),
        }
    });
    while effective.last() == Some(&0) {
        effective.pop();
    }
    effective
}

/// Whether two keys give the same codes under `algorithm` (a key and the
/// same key with zero bytes appended do, found by an attack), compared in
/// constant time.
pub fn same_hmac_key(a: &[u8], b: &[u8], algorithm: Algorithm) -> bool {
    let (a, b) = (effective_key(a, algorithm), effective_key(b, algorithm));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// What a deleted key is remembered by (`retired_keys.key_mark`): an
/// HMAC-SHA256 of the user's name under the key as `algorithm`'s HMAC
/// uses it (`effective_key`), so two keys have one mark exactly when
/// `same_hmac_key` holds for them. One-way: the mark gives no code and
/// no key back, and another user's mark of the same key differs. `None`
/// only if HMAC refused the key, which it never does (any length).
pub fn key_mark(key: &[u8], algorithm: Algorithm, user: &str) -> Option<[u8; 32]> {
    let effective = effective_key(key, algorithm);
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&effective).ok()?;
    mac.update(b"pam_totp deleted key v1\0");
    mac.update(algorithm.as_str().as_bytes());
    mac.update(b"\0");
    mac.update(user.as_bytes());
    Some(mac.finalize().into_bytes().into())
}

/// HOTP look-ahead: checks `code` against counters `next ..= next + lookahead`
/// and returns the lowest counter that matched. The caller then advances the
/// stored counter past it.
pub fn verify_counter(
    key: &[u8],
    code: &str,
    next: u64,
    lookahead: u32,
    params: &Params,
) -> Option<u64> {
    let last = next.saturating_add(u64::from(lookahead));
    scan(key, code, next, last, params).map(|(lowest, _)| lowest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC4226_KEY: &[u8] = b"12345678901234567890";

    #[test]
    fn a_key_mark_is_the_same_exactly_for_keys_hmac_makes_the_same() {
        let key = RFC4226_KEY;
        let padded = [key, &[0u8; 3][..]].concat();
        let long = [0x5au8; 100];
        let hashed = <sha1::Sha1 as sha2::Digest>::digest(long);
        for algorithm in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
            assert_eq!(
                key_mark(key, algorithm, "ada"),
                key_mark(&padded, algorithm, "ada"),
                "{algorithm}: zero bytes appended"
            );
            assert_ne!(
                key_mark(key, algorithm, "ada"),
                key_mark(&key[..19], algorithm, "ada"),
                "{algorithm}: another key"
            );
            assert_ne!(
                key_mark(key, algorithm, "ada"),
                key_mark(key, algorithm, "bob"),
                "{algorithm}: another user"
            );
        }
        assert_eq!(
            key_mark(&long, Algorithm::Sha1, "ada"),
            key_mark(&hashed, Algorithm::Sha1, "ada"),
            "a key longer than SHA-1's block and its hash"
        );
        assert_ne!(
            key_mark(key, Algorithm::Sha1, "ada"),
            key_mark(key, Algorithm::Sha256, "ada"),
            "one key under two algorithms"
        );
        // Marks agree with the comparison the live tokens use.
        let pairs: [(&[u8], &[u8]); 3] = [(key, &padded), (&long, &hashed), (key, &key[..19])];
        for (a, b) in pairs {
            assert_eq!(
                key_mark(a, Algorithm::Sha1, "ada") == key_mark(b, Algorithm::Sha1, "ada"),
                same_hmac_key(a, b, Algorithm::Sha1)
            );
        }
    }

    #[test]
    fn rfc4226_appendix_d() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(
                hotp(RFC4226_KEY, counter as u64, Algorithm::Sha1, 6),
                *want,
                "counter {counter}"
            );
        }
    }

    #[test]
    fn rfc6238_appendix_b() {
        let sha1_key = b"12345678901234567890".as_slice();
        let sha256_key = b"12345678901234567890123456789012".as_slice();
        let sha512_key =
            b"1234567890123456789012345678901234567890123456789012345678901234".as_slice();
        // (time, sha1, sha256, sha512), 8 digits, 30 s.
        let table: [(u64, u32, u32, u32); 6] = [
            (59, 94287082, 46119246, 90693936),
            (1111111109, 7081804, 68084774, 25091201),
            (1111111111, 14050471, 67062674, 99943326),
            (1234567890, 89005924, 91819424, 93441116),
            (2000000000, 69279037, 90698825, 38618901),
            (20000000000, 65353130, 77737706, 47863826),
        ];
        for (time, s1, s256, s512) in table {
            for (alg, key, want) in [
                (Algorithm::Sha1, sha1_key, s1),
                (Algorithm::Sha256, sha256_key, s256),
                (Algorithm::Sha512, sha512_key, s512),
            ] {
                let params = Params {
                    algorithm: alg,
                    digits: 8,
                    period: 30,
                };
                assert_eq!(totp_at(key, time, &params), want, "{alg} at {time}");
            }
        }
    }

    #[test]
    fn codes_keep_leading_zeros() {
        // RFC 6238 vector 1111111109/SHA1 is 07081804 in 8 digits.
        let params = Params {
            algorithm: Algorithm::Sha1,
            digits: 8,
            period: 30,
        };
        let value = totp_at(b"12345678901234567890", 1111111109, &params);
        assert_eq!(format_code(value, 8).as_str(), "07081804");
    }

    #[test]
    fn verify_window_returns_the_matching_step() {
        let params = Params::default();
        let key = RFC4226_KEY;
        let center = 1000;
        for offset in [-1i64, 0, 1] {
            let step = (center as i64 + offset) as u64;
            let code = format_code(hotp(key, step, params.algorithm, params.digits), 6);
            assert_eq!(verify_window(key, &code, center, 1, &params), Some(step));
        }
        let previous = format_code(hotp(key, center - 1, params.algorithm, 6), 6);
        assert_eq!(verify_window(key, &previous, center, 0, &params), None);
        let far = format_code(hotp(key, center + 5, params.algorithm, 6), 6);
        assert_eq!(verify_window(key, &far, center, 1, &params), None);
    }

    #[test]
    fn verify_window_near_step_zero_does_not_underflow() {
        let params = Params::default();
        let code = format_code(hotp(RFC4226_KEY, 0, params.algorithm, 6), 6);
        assert_eq!(verify_window(RFC4226_KEY, &code, 0, 3, &params), Some(0));
    }

    #[test]
    fn verify_counter_looks_ahead_only() {
        let params = Params::default();
        let code = |c: u64| format_code(hotp(RFC4226_KEY, c, Algorithm::Sha1, 6), 6);
        assert_eq!(
            verify_counter(RFC4226_KEY, &code(5), 3, 3, &params),
            Some(5)
        );
        assert_eq!(
            verify_counter(RFC4226_KEY, &code(3), 3, 0, &params),
            Some(3)
        );
        assert_eq!(verify_counter(RFC4226_KEY, &code(2), 3, 10, &params), None);
        assert_eq!(verify_counter(RFC4226_KEY, &code(9), 3, 5, &params), None);
    }

    #[test]
    fn params_ranges() {
        assert!(Params::default().validate().is_ok());
        for digits in [0, 5, 9, 10] {
            let p = Params {
                digits,
                ..Params::default()
            };
            assert!(p.validate().is_err(), "digits {digits}");
        }
        let p = Params {
            period: 0,
            ..Params::default()
        };
        assert!(p.validate().is_err());
    }

    #[test]
    fn algorithm_names_round_trip() {
        for alg in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
            assert_eq!(alg.as_str().parse::<Algorithm>(), Ok(alg));
            assert_eq!(alg.uri_name().parse::<Algorithm>(), Ok(alg));
        }
        assert!("md5".parse::<Algorithm>().is_err());
    }

    #[test]
    fn keys_that_hmac_treats_alike_are_the_same_key() {
        let key: &[u8] = RFC4226_KEY;
        let mut padded = key.to_vec();
        padded.extend_from_slice(&[0, 0, 0, 0]);
        let long: Vec<u8> = (1..=100u8).collect();
        let hashed = {
            use sha2::Digest;
            sha1::Sha1::digest(&long).to_vec()
        };
        for (a, b, algorithm, same) in [
            (key, padded.as_slice(), Algorithm::Sha1, true),
            (key, padded.as_slice(), Algorithm::Sha512, true),
            (long.as_slice(), hashed.as_slice(), Algorithm::Sha1, true),
            (long.as_slice(), hashed.as_slice(), Algorithm::Sha512, false),
            (key, &key[..19], Algorithm::Sha1, false),
        ] {
            assert_eq!(same_hmac_key(a, b, algorithm), same, "{algorithm:?}");
            // The oracle: the codes themselves.
            let codes = |k: &[u8]| {
                (0..20)
                    .map(|c| hotp(k, c, algorithm, 8))
                    .collect::<Vec<_>>()
            };
            assert_eq!(codes(a) == codes(b), same, "{algorithm:?} codes");
        }
    }
}
