//! `~/.google_authenticator`, as written by google-authenticator-libpam:
//! the base32 key on line 1, then `" OPTION value` lines, then 8-digit
//! scratch codes, one per line.

use zeroize::Zeroizing;

use super::{ImportError, Imported, error};
use crate::otp::Params;
use crate::secret::Secret;
use crate::store::Kind;

/// Parses one user's file.
pub fn parse(text: &str, user: &str) -> Result<Imported, ImportError> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let (_, key_line) = lines
        .next()
        .filter(|(_, l)| !l.is_empty())
        .ok_or_else(|| error(1, "empty file: the first line must be the base32 key"))?;
    let secret = Secret::from_base32(key_line).map_err(|e| error(1, e.to_string()))?;
    let mut params = Params::default();
    let mut kind: Option<Kind> = None;
    let mut hotp_counter: Option<u64> = None;
    let mut used_steps: Vec<u64> = Vec::new();
    let mut scratch_codes = Vec::new();
    let mut ignored = Vec::new();
    for (n, line) in lines {
        if line.is_empty() {
            continue;
        }
        if let Some(option) = line.strip_prefix('"') {
            let mut words = option.split_whitespace();
            let name = words.next().unwrap_or("");
            let values: Vec<&str> = words.collect();
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| error(n, format!("{name}: a value is not a number")))
            };
            match name {
                "TOTP_AUTH" => kind = Some(Kind::Totp),
                "HOTP_COUNTER" => {
                    kind = Some(Kind::Hotp);
                    let value = values
                        .first()
                        .ok_or_else(|| error(n, "HOTP_COUNTER without a value"))?;
                    hotp_counter = Some(number(value)?);
                }
                "STEP_SIZE" => {
                    let value = values
                        .first()
                        .ok_or_else(|| error(n, "STEP_SIZE without a value"))?;
                    params.period = number(value)?;
                }
                "DISALLOW_REUSE" => {
                    for v in &values {
                        used_steps.push(number(v)?);
                    }
                }
                "WINDOW_SIZE" | "RATE_LIMIT" => ignored.push(format!(
                    "{name} {} (pam_totp uses its own window= and rate limits)",
                    values.join(" ")
                )),
                _ => ignored.push(format!("unknown option {name}")),
            }
            continue;
        }
        if line.len() == 8 && line.bytes().all(|b| b.is_ascii_digit()) {
            scratch_codes.push(Zeroizing::new(line.to_string()));
            continue;
        }
        return Err(error(
            n,
            "not an option line (\" NAME ...) or an 8-digit scratch code",
        ));
    }
    let kind = kind.ok_or_else(|| error(1, "neither TOTP_AUTH nor HOTP_COUNTER is set"))?;
    params
        .validate()
        .map_err(|_| error(1, "STEP_SIZE must be from 1 to 3600 seconds"))?;
    let last_step = match kind {
        Kind::Totp => used_steps.into_iter().max(),
        Kind::Hotp => hotp_counter.and_then(|c| c.checked_sub(1)),
    };
    Ok(Imported {
        line: 1,
        user: user.to_string(),
        kind,
        secret,
        params,
        last_step,
        scratch_codes,
        ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_file_with_options_and_scratch_codes() {
        let file = "6TE4DJXQNB4P5OHDCBF3DTTGFM\n\" RATE_LIMIT 3 30\n\" WINDOW_SIZE 3\n\
                    \" DISALLOW_REUSE 55555 55556\n\" TOTP_AUTH\n51082359\n81274732\n";
        let t = parse(file, "alice").expect("parses");
        assert_eq!(t.kind, Kind::Totp);
        assert_eq!(t.params, Params::default());
        assert_eq!(t.last_step, Some(55556));
        assert_eq!(t.scratch_codes.len(), 2);
        assert_eq!(t.secret.as_bytes().len(), 16);
        assert_eq!(t.ignored.len(), 2);
    }

    #[test]
    fn hotp_counter_and_step_size() {
        let t = parse("O5DEFUJ6B5LI6PQZJQ5ET3PVPM\n\" HOTP_COUNTER 5\n", "bob").expect("hotp");
        assert_eq!((t.kind, t.last_step), (Kind::Hotp, Some(4)));
        let t = parse("O5DEFUJ6B5LI6PQZJQ5ET3PVPM\n\" HOTP_COUNTER 0\n", "bob").expect("hotp");
        assert_eq!(t.last_step, None);
        let t = parse(
            "5Z5RD3RTCGD3YED6UFILWYKGMA\n\" STEP_SIZE 60\n\" TOTP_AUTH\n",
            "c",
        )
        .expect("totp");
        assert_eq!(t.params.period, 60);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("", 1),
            ("not base32!\n\" TOTP_AUTH\n", 1),
            ("6TE4DJXQNB4P5OHDCBF3DTTGFM\n\" TOTP_AUTH\n1234\n", 3),
            ("6TE4DJXQNB4P5OHDCBF3DTTGFM\n\" HOTP_COUNTER x\n", 2),
            ("6TE4DJXQNB4P5OHDCBF3DTTGFM\n12345678\n", 1),
        ];
        for (text, line) in cases {
            let err = parse(text, "u").expect_err(text);
            assert_eq!(err.line, line, "{text:?}: {err}");
        }
    }
}
