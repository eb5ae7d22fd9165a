//! Untrusted text (user names, rhosts, device names) inside log lines.
//!
//! Everything a client chooses is escaped before it is logged, so it can
//! never end a line, start a forged one, close the quotes around it, or
//! make the line read differently from what it holds: ASCII control
//! characters become `\xNN`, `"` becomes `\"`, `\` becomes `\\`, and every
//! other control, format or line/paragraph separator character (Unicode
//! categories Cc, Cf, Zl, Zp: U+0085, U+2028, U+2029, the bidirectional
//! overrides and isolates, zero-width characters, U+FEFF…) becomes
//! `\u{XXXX}`. Whole lines pass through [`one_line`] on their way to syslog
//! (the module's `pam_syslog` and the audit lines of totpctl and totp
//! alike). The audit lines are built with [`Detail`] and [`audit_line`],
//! one implementation for both commands: each value escaped once, inside
//! its own quotes.

/// Unicode 15 general category Cf (format characters), as inclusive ranges.
/// U+2065 (unassigned) is taken along with its neighbours.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

/// True for the characters a log line must not carry as they are: controls
/// (Cc), format characters (Cf) and the line and paragraph separators (Zl,
/// Zp).
pub fn is_hidden(c: char) -> bool {
    // Most of a line is ASCII, where only the controls are hidden (the
    // first format character is U+00AD): no walk through the table.
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    let cp = u32::from(c);
    c.is_control()
        || cp == 0x2028
        || cp == 0x2029
        || FORMAT.iter().any(|&(low, high)| (low..=high).contains(&cp))
}

/// `\u{XXXX}` for a character outside ASCII.
fn push_unicode_escape(out: &mut String, c: char) {
    out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
}

/// The escaped form of `text`, safe inside `"..."` on one log line.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if is_hidden(c) => push_unicode_escape(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

/// A whole line made single-line and plain: an ASCII control character
/// left becomes `?`, any other hidden character (see [`is_hidden`])
/// `\u{XXXX}`.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_control() {
            out.push('?');
        } else if is_hidden(c) {
            push_unicode_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// The details of one audit line, built a part at a time: `key="value"`
/// for text, `key=value` for what the command itself made, and words of
/// its own. Each value is escaped here, once, within its own quotes, so
/// that whatever a value holds (a quote, a backslash, a line break, a
/// control or hidden character) it can neither end the line nor read as
/// another `key=value`. totpctl and totp both build their lines with it.
#[derive(Default, Debug)]
#[must_use]
pub struct Detail(Vec<String>);

impl Detail {
    pub fn new() -> Detail {
        Detail::default()
    }

    /// `key="value"`: text from outside or with spaces (a device name, a
    /// path, a reason, a date), escaped.
    pub fn quoted(mut self, key: &'static str, value: impl std::fmt::Display) -> Detail {
        self.0
            .push(format!("{key}=\"{}\"", escape(&value.to_string())));
        self
    }

    /// `key=value`: a value the command made that is one word (a number,
    /// an id, a state, a fingerprint, canonical networks). A value that is
    /// not one word of visible characters is quoted as by [`quoted`](Self::quoted).
    pub fn bare(mut self, key: &'static str, value: impl std::fmt::Display) -> Detail {
        let value = value.to_string();
        if !is_bare(&value) {
            return self.quoted(key, value);
        }
        self.0.push(format!("{key}={value}"));
        self
    }

    /// Words of the command's own, as they are: a constant, never a value.
    pub fn note(mut self, words: &'static str) -> Detail {
        self.0.push(words.to_string());
        self
    }

    /// [`bare`](Self::bare) when `value` is there, nothing otherwise.
    pub fn bare_if(self, key: &'static str, value: Option<impl std::fmt::Display>) -> Detail {
        match value {
            Some(value) => self.bare(key, value),
            None => self,
        }
    }

    /// [`quoted`](Self::quoted) when `value` is there, nothing otherwise.
    pub fn quoted_if(self, key: &'static str, value: Option<impl std::fmt::Display>) -> Detail {
        match value {
            Some(value) => self.quoted(key, value),
            None => self,
        }
    }
}

/// Device names as one audit value: joined by `/`, which no device name
/// holds (`config::check_name`; a pending replacement's name only adds
/// " (new)"), so a name with a comma or a space still reads as one name.
pub fn device_list<S: AsRef<str>>(names: &[S]) -> String {
    names
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<&str>>()
        .join("/")
}

/// One word that needs no quotes: visible characters, no space, quote or
/// backslash.
fn is_bare(value: &str) -> bool {
    !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\' || is_hidden(c))
}

/// One audit line of totpctl or totp: `ACTION user="USER" DETAIL by
/// ACTOR`, never a key or code. `action` and `actor` are the command's own
/// (the actor's names escaped where it was made); the user is escaped
/// here, each value of `detail` was escaped when it was added, and the
/// whole line goes through [`one_line`], as the module's own lines do.
pub fn audit_line(action: &str, user: &str, detail: Detail, actor: &str) -> String {
    one_line(&format!(
        "{action} user=\"{}\"{}{} by {actor}",
        escape(user),
        if detail.0.is_empty() { "" } else { " " },
        detail.0.join(" "),
    ))
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

/// Days since 1970-01-01 of a proleptic Gregorian date (days-from-civil,
/// the inverse of `utc`'s calendar).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A time a person typed, in UTC: `YYYY-MM-DD HH:MM` (or with `T`), or
/// `YYYY-MM-DD` alone, which means the end of that day (the next day's
/// 00:00). `None` for anything else, including impossible dates.
pub fn parse_utc(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((date, time)) => (date, Some(time.trim_end_matches(" UTC"))),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let number = |part: Option<&str>, len: usize| {
        part.filter(|p| p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<i64>().ok())
    };
    let (year, month, day) = (
        number(parts.next(), 4)?,
        number(parts.next(), 2)?,
        number(parts.next(), 2)?,
    );
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month[(month - 1) as usize] {
        return None;
    }
    let midnight = days_from_civil(year, month, day) * 86_400;
    match time {
        None => Some(midnight + 86_400),
        Some(time) => {
            let (hours, minutes) = time.split_once(':')?;
            let (hours, minutes) = (number(Some(hours), 2)?, number(Some(minutes), 2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            Some(midnight + hours * 3600 + minutes * 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_times_are_read_as_utc_and_round_trip() {
        assert_eq!(parse_utc("1970-01-01 00:00"), Some(0));
        assert_eq!(parse_utc("1970-01-01"), Some(86_400), "the end of the day");
        assert_eq!(parse_utc("2026-12-01T14:03"), Some(1_796_133_780));
        assert_eq!(utc(1_796_133_780), "2026-12-01 14:03:00");
        assert_eq!(parse_utc("2028-02-29 12:00"), Some(1_835_438_400));
        for t in [0, 951_782_400, 1_796_133_780, 4_102_444_800] {
            let shown = utc(t);
            assert_eq!(parse_utc(&shown[..16]), Some(t - t % 60), "{shown}");
        }
        for bad in [
            "",
            "2026-13-01",
            "2026-02-29",
            "2026-1-01",
            "2026-12-01 24:00",
            "2026-12-01 10:60",
            "tomorrow",
            "2026-12-01 10",
            "+2026-12-01",
            "2026-12-01 10:00:00",
        ] {
            assert_eq!(parse_utc(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn forged_lines_and_quotes_are_neutralised() {
        assert_eq!(escape("alice"), "alice");
        assert_eq!(
            escape("x\npam_totp(sshd:auth): accepted"),
            "x\\x0apam_totp(sshd:auth): accepted"
        );
        assert_eq!(escape("a\" rhost=\"10.0.0.1"), "a\\\" rhost=\\\"10.0.0.1");
        assert_eq!(escape("back\\slash\0"), "back\\\\slash\\x00");
        assert_eq!(one_line("a\nb\rc"), "a?b?c");
    }

    /// One character of every class a log line must not carry raw: each
    /// is escaped as `\u{XXXX}` (outside ASCII) by both functions, and
    /// nothing of it survives.
    #[test]
    fn unicode_controls_formats_and_separators_are_escaped() {
        let cases: &[(char, &str)] = &[
            // Cc outside ASCII: NEL and the other C1 controls.
            ('\u{85}', "\\u{0085}"),
            ('\u{9b}', "\\u{009b}"),
            // Zl, Zp: line and paragraph separators.
            ('\u{2028}', "\\u{2028}"),
            ('\u{2029}', "\\u{2029}"),
            // Cf: bidirectional embeddings and overrides U+202A–U+202E.
            ('\u{202a}', "\\u{202a}"),
            ('\u{202b}', "\\u{202b}"),
            ('\u{202c}', "\\u{202c}"),
            ('\u{202d}', "\\u{202d}"),
            ('\u{202e}', "\\u{202e}"),
            // Cf: bidirectional isolates U+2066–U+2069.
            ('\u{2066}', "\\u{2066}"),
            ('\u{2067}', "\\u{2067}"),
            ('\u{2068}', "\\u{2068}"),
            ('\u{2069}', "\\u{2069}"),
            // Cf: zero width space, non-joiner, joiner, LRM, RLM.
            ('\u{200b}', "\\u{200b}"),
            ('\u{200c}', "\\u{200c}"),
            ('\u{200d}', "\\u{200d}"),
            ('\u{200e}', "\\u{200e}"),
            ('\u{200f}', "\\u{200f}"),
            // Cf: byte order mark, soft hyphen, Arabic letter mark, word
            // joiner, interlinear annotation, a tag character.
            ('\u{feff}', "\\u{feff}"),
            ('\u{ad}', "\\u{00ad}"),
            ('\u{61c}', "\\u{061c}"),
            ('\u{2060}', "\\u{2060}"),
            ('\u{fff9}', "\\u{fff9}"),
            ('\u{e0041}', "\\u{e0041}"),
        ];
        for (c, escaped) in cases {
            let text = format!("eve{c}x");
            let want = format!("eve{escaped}x");
            assert!(is_hidden(*c), "U+{:04X}", u32::from(*c));
            assert_eq!(escape(&text), want, "escape U+{:04X}", u32::from(*c));
            assert_eq!(one_line(&text), want, "one_line U+{:04X}", u32::from(*c));
        }
        // A forged right-to-left line: nothing hidden is left in it.
        let forged = "mallory\u{202e}detpecca\u{2028}pam_totp: accepted\u{2029}";
        for out in [escape(forged), one_line(forged)] {
            assert!(!out.chars().any(is_hidden), "{out:?}");
            assert!(
                out.contains("\\u{202e}") && out.contains("\\u{2028}"),
                "{out}"
            );
        }
    }

    fn parts(detail: Detail) -> String {
        detail.0.join(" ")
    }

    #[test]
    fn each_value_is_escaped_once_in_its_own_quotes() {
        assert_eq!(
            parts(
                Detail::new()
                    .bare("id", 7)
                    .quoted("reason", "nightly rsync")
                    .note("(the user was deleted)")
            ),
            "id=7 reason=\"nightly rsync\" (the user was deleted)"
        );
        // A value cannot close its quotes, add a part or end the line.
        assert_eq!(
            parts(Detail::new().quoted("device", "x\" by=\"root\"\nforged\\")),
            "device=\"x\\\" by=\\\"root\\\"\\x0aforged\\\\\""
        );
        assert_eq!(
            parts(Detail::new().quoted("device", "ph\u{200b}one")),
            "device=\"ph\\u{200b}one\""
        );
        // A bare value that is not one plain word is quoted instead.
        for (value, shown) in [
            ("/tmp/a b", "from=\"/tmp/a b\""),
            ("a\"b", "from=\"a\\\"b\""),
            ("a\tb", "from=\"a\\x09b\""),
            ("", "from=\"\""),
            ("+1", "from=+1"),
            ("ph\u{202e}one", "from=\"ph\\u{202e}one\""),
            ("oath:/etc/users.oath:3", "from=oath:/etc/users.oath:3"),
        ] {
            assert_eq!(parts(Detail::new().bare("from", value)), shown, "{value:?}");
        }
        assert_eq!(
            parts(
                Detail::new()
                    .bare_if("x", None::<i64>)
                    .quoted_if("y", Some("z"))
            ),
            "y=\"z\""
        );
    }

    /// The whole line: the user escaped in its quotes, the details as
    /// built (never escaped a second time), nothing hidden or raw left.
    #[test]
    fn an_audit_line_escapes_each_part_once() {
        assert_eq!(
            audit_line(
                "add-device",
                "alice",
                Detail::new().quoted("device", "phone").bare("type", "totp"),
                "uid 1000"
            ),
            "add-device user=\"alice\" device=\"phone\" type=totp by uid 1000"
        );
        assert_eq!(
            audit_line("recovery-codes", "alice", Detail::new(), "uid 1000"),
            "recovery-codes user=\"alice\" by uid 1000"
        );
        let line = audit_line(
            "test",
            "eve\"\n",
            Detail::new().quoted("device", "ph\u{2028}one\" x=\"1"),
            "uid 1000",
        );
        assert_eq!(
            line,
            "test user=\"eve\\\"\\x0a\" device=\"ph\\u{2028}one\\\" x=\\\"1\" by uid 1000"
        );
        assert!(!line.chars().any(is_hidden), "{line:?}");
    }

    /// Letters, digits, punctuation and spaces of any script stay readable.
    #[test]
    fn ordinary_text_is_kept() {
        for text in [
            "alice",
            "José Müller",
            "анна",
            "李雷",
            "ph one",
            "a-b_c.d@e",
            "١٢٣",
        ] {
            assert_eq!(escape(text), text);
            assert_eq!(one_line(text), text);
        }
        for c in ['a', ' ', '\u{a0}', '\u{3000}', 'é', '\u{1f600}'] {
            assert!(!is_hidden(c), "U+{:04X}", u32::from(c));
        }
    }
}
