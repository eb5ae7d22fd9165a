//! Untrusted text (user names, rhosts, device names) inside log lines.
//!
//! Everything a client chooses is escaped before it is logged, so it can
//! never end a line, start a forged one, or close the quotes around it:
//! control characters become `\xNN`, `"` becomes `\"`, `\` becomes `\\`.

/// The escaped form of `text`, safe inside `"..."` on one log line.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for byte in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{byte:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// A whole line made single-line: any control character left becomes `?`.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (civil-from-days, proleptic Gregorian).
pub fn utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_lines_and_quotes_are_neutralised() {
        assert_eq!(escape("alice"), "alice");
        assert_eq!(
            escape("x\npam_totp(sshd:auth): accepted"),
            "x\\x0apam_totp(sshd:auth): accepted"
        );
        assert_eq!(escape("a\" rhost=\"10.0.0.1"), "a\\\" rhost=\\\"10.0.0.1");
        assert_eq!(escape("back\\slash\0"), "back\\\\slash\\x00");
        assert_eq!(escape("\u{85}"), "\\xc2\\x85");
        assert_eq!(one_line("a\nb\rc"), "a?b?c");
    }
}
