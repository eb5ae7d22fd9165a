//! pam_oath's users file (`/etc/users.oath`): one token per line,
//! `TYPE USER PIN SECRET-HEX [COUNTER [LAST-OTP [TIME]]]`, `#` comments.
//! TYPE is `HOTP` (event based) or `HOTP/T<seconds>` (time based), with an
//! optional `/<digits>`; `HOTP/E` is the same as `HOTP`.

use zeroize::Zeroizing;

use super::{ImportError, Imported, error};
use crate::otp::{Algorithm, Params};
use crate::secret::Secret;
use crate::store::Kind;

/// Parses the whole file; any bad line is an error naming its number.
pub fn parse(text: &str) -> Result<Vec<Imported>, ImportError> {
    let mut tokens: Vec<Imported> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let n = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 {
            return Err(error(n, "expected TYPE USER PIN SECRET [COUNTER ...]"));
        }
        let (kind, params) = token_type(fields[0]).map_err(|e| error(n, e))?;
        let user = fields[1].to_string();
        if !matches!(fields[2], "-" | "+") {
            return Err(error(
                n,
                "the token has a PIN; pam_totp has none (the password is the first factor): remove it or enroll this user anew",
            ));
        }
        let bytes = Zeroizing::new(
            hex(fields[3]).ok_or_else(|| error(n, "the secret is not hexadecimal"))?,
        );
        let secret = Secret::from_bytes(bytes).map_err(|e| error(n, e.to_string()))?;
        let counter = match fields.get(4) {
            Some(c) => Some(
                c.parse::<u64>()
                    .map_err(|_| error(n, "the counter (field 5) is not a number"))?,
            ),
            None => None,
        };
        if let Some(first) = tokens.iter().find(|t| t.user == user) {
            return Err(error(
                n,
                format!("the same user already has a token on line {}", first.line),
            ));
        }
        // pam_oath writes back the counter it accepted together with that
        // OTP (field 6): then the counter is spent. A counter without a
        // last OTP is where counting starts: the next code to accept.
        let last_otp_recorded = fields.get(5).is_some_and(|f| *f != "-");
        let last_step = match kind {
            Kind::Hotp if last_otp_recorded => counter,
            Kind::Hotp => counter.and_then(|c| c.checked_sub(1)),
            Kind::Totp => None,
        };
        let mut ignored = Vec::new();
        if kind == Kind::Totp && fields.len() > 5 {
            ignored.push(
                "last OTP and time (a code used just before the import could be used once more)"
                    .to_string(),
            );
        }
        tokens.push(Imported {
            line: n,
            user,
            kind,
            secret,
            params,
            last_step,
            scratch_codes: Vec::new(),
            ignored,
        });
    }
    Ok(tokens)
}

fn token_type(text: &str) -> Result<(Kind, Params), String> {
    let mut parts = text.split('/');
    if parts.next() != Some("HOTP") {
        return Err(
            "unknown token type (expected HOTP, HOTP/E or HOTP/T<seconds>, then /<digits> if any)"
                .to_string(),
        );
    }
    let mut kind = Kind::Hotp;
    let mut params = Params {
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: 30,
    };
    for part in parts {
        if part == "E" {
            kind = Kind::Hotp;
        } else if let Some(seconds) = part.strip_prefix('T') {
            kind = Kind::Totp;
            params.period = seconds
                .parse()
                .map_err(|_| "the time step of the token type is not a number".to_string())?;
        } else {
            params.digits = part.parse().map_err(|_| {
                "the token type has a part that is not E, T<seconds> or <digits>".to_string()
            })?;
        }
    }
    params.validate().map_err(|_| {
        "the token type asks for digits other than 6 to 8, or a time step other than 1 to 3600 s"
            .to_string()
    })?;
    Ok((kind, params))
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "3132333435363738393031323334353637383930";

    #[test]
    fn hotp_and_totp_lines() {
        let file = format!(
            "# users\nHOTP alice - {KEY}\nHOTP/T30 bob - {KEY}\nHOTP/T60/8 carol + {KEY} 0 123456 2024-01-01T00:00:00L\nHOTP/E/8 dave - {KEY} 7\nHOTP\terin\t-\t{KEY}\t4\t338314\t2026-11-23T13:07:33L\n"
        );
        let t = parse(&file).expect("parses");
        assert_eq!(t.len(), 5);
        assert_eq!((t[0].kind, t[0].last_step), (Kind::Hotp, None));
        assert_eq!(t[0].secret.as_bytes(), b"12345678901234567890");
        assert_eq!((t[1].kind, t[1].params.period), (Kind::Totp, 30));
        assert_eq!((t[2].params.period, t[2].params.digits), (60, 8));
        assert_eq!(t[2].ignored.len(), 1);
        assert_eq!(
            (t[3].kind, t[3].params.digits, t[3].last_step),
            (Kind::Hotp, 8, Some(6))
        );
        assert_eq!(t[3].line, 5);
        // Written back by pam_oath after accepting counter 4: 4 is spent.
        assert_eq!((t[4].kind, t[4].last_step), (Kind::Hotp, Some(4)));
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (format!("HOTP alice - {KEY}\nTOTP bob - {KEY}\n"), 2),
            (format!("HOTP alice 1234 {KEY}\n"), 1),
            ("HOTP alice - zz\n".to_string(), 1),
            ("HOTP alice -\n".to_string(), 1),
            (format!("HOTP alice - {KEY}\nHOTP alice - {KEY}\n"), 2),
            (format!("HOTP/T0 alice - {KEY}\n"), 1),
            (format!("HOTP alice - {KEY} many\n"), 1),
        ];
        for (text, line) in cases {
            let err = parse(&text).expect_err(&text);
            assert_eq!(err.line, line, "{text:?}: {err}");
            // The line is named, never repeated.
            let said = err.to_string();
            for part in ["alice", "bob", KEY, "zz", "many", "TOTP", "1234"] {
                assert!(!said.contains(part), "{text:?}: {said}");
            }
        }
    }
}
