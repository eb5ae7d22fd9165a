//! The audit trail: every change totpctl makes goes to syslog (authpriv)
//! with who made it and whom it concerns.

use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

pub struct Audit {
    logger: Option<Logger<LoggerBackend, Formatter3164>>,
    /// Who is acting: the sudo caller or the login user, then the uid.
    pub actor: String,
}

impl Audit {
    pub fn open() -> Audit {
        let formatter = Formatter3164 {
            facility: Facility::LOG_AUTHPRIV,
            hostname: None,
            process: "totpctl".to_string(),
            pid: std::process::id(),
        };
        let logger = match syslog::unix(formatter) {
            Ok(logger) => Some(logger),
            Err(e) => {
                eprintln!(
                    "totpctl: warning: no syslog socket ({e}); this change is not in the audit log"
                );
                None
            }
        };
        Audit {
            logger,
            actor: actor(),
        }
    }

    /// One line: `ACTION user="USER" DETAIL by ACTOR`. Never a key or code.
    /// Each value is escaped once, in its own quotes (see [`Detail`]), and
    /// the whole line goes through `one_line`, as the module's own lines do.
    pub fn record(&mut self, action: &str, user: &str, detail: Detail) {
        let line = one_line(&format!(
            "{action} user=\"{}\"{}{} by {}",
            printable(user),
            if detail.0.is_empty() { "" } else { " " },
            detail.0.join(" "),
            self.actor
        ));
        if let Some(logger) = self.logger.as_mut()
            && let Err(e) = logger.notice(&line)
        {
            eprintln!("totpctl: warning: audit log write failed: {e}");
        }
    }
}

/// The details of one audit line, built a part at a time: `key="value"`
/// for text, `key=value` for what totpctl itself made, and words of its
/// own. Each value is escaped here, once, within its own quotes, so that
/// whatever a value holds (a quote, a backslash, a line break, a control
/// or hidden character) it can neither end the line nor read as another
/// `key=value`.
#[derive(Default)]
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
            .push(format!("{key}=\"{}\"", printable(&value.to_string())));
        self
    }

    /// `key=value`: a value totpctl made that is one word (a number, an
    /// id, a state, a fingerprint, canonical networks). A value that is
    /// not one word of visible characters is quoted as by [`quoted`](Self::quoted).
    pub fn bare(mut self, key: &'static str, value: impl std::fmt::Display) -> Detail {
        let value = value.to_string();
        if !is_bare(&value) {
            return self.quoted(key, value);
        }
        self.0.push(format!("{key}={value}"));
        self
    }

    /// Words of totpctl's own, as they are: a constant, never a value.
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

/// One word that needs no quotes: visible characters, no space, quote or
/// backslash.
fn is_bare(value: &str) -> bool {
    !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\' || is_hidden(c))
}

use pam_totp::logline::{escape as printable, is_hidden, one_line};

/// How a stored creator is printed (`created_by` of a grant: what
/// [`Audit::actor`] made when it was written, a quoted name escaped then
/// and how it acted, or `uid N`): as it is when it has that shape, for it
/// is escaped already and escaping it again would show `\"bob\"`; any
/// other text (a row written some other way) quoted and escaped whole, so
/// nothing stored can end a line or read as another part of it.
pub fn shown_actor(stored: &str) -> String {
    if is_actor(stored) {
        stored.to_string()
    } else {
        format!("\"{}\"", printable(stored))
    }
}

/// The shapes [`actor`] makes: `"NAME" (sudo, uid N)`, `"NAME" (login uid
/// L, uid N)`, `"NAME" (uid N)`, `uid N`, with NAME as `escape` leaves it
/// (no quote but an escaped one, no hidden character).
fn is_actor(text: &str) -> bool {
    let is_uid = |s: &str| {
        s.strip_prefix("uid ")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let Some(rest) = text.strip_prefix('"') else {
        return is_uid(text);
    };
    let mut chars = rest.char_indices();
    let close = loop {
        match chars.next() {
            None => return false,
            Some((i, '"')) => break i,
            Some((_, '\\')) => {
                if !matches!(chars.next(), Some((_, '"' | '\\' | 'x' | 'u'))) {
                    return false;
                }
            }
            Some((_, c)) if is_hidden(c) => return false,
            Some(_) => {}
        }
    };
    let Some(how) = rest[close + 1..]
        .strip_prefix(" (")
        .and_then(|how| how.strip_suffix(')'))
    else {
        return false;
    };
    let (first, uid) = match how.split_once(", ") {
        Some((first, uid)) => (Some(first), uid),
        None => (None, how),
    };
    close > 0
        && is_uid(uid)
        && first.is_none_or(|f| f == "sudo" || f.strip_prefix("login ").is_some_and(is_uid))
}

/// `bob (sudo, uid 0)`, or the login user, or the uid alone.
fn actor() -> String {
    let (uid, _) = pam_totp::sys::uids();
    if let Ok(sudo_user) = std::env::var("SUDO_USER") {
        return format!("\"{}\" (sudo, uid {uid})", printable(&sudo_user));
    }
    let login_uid = std::fs::read_to_string("/proc/self/loginuid")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|u| *u != u32::MAX);
    match login_uid.and_then(user_name) {
        Some(name) => format!(
            "\"{name}\" (login uid {}, uid {uid})",
            login_uid.unwrap_or(uid)
        ),
        None => match user_name(uid) {
            Some(name) => format!("\"{name}\" (uid {uid})"),
            None => format!("uid {uid}"),
        },
    }
}

fn user_name(uid: u32) -> Option<String> {
    pam_totp::sys::user_name_of(uid).map(|name| printable(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(detail: Detail) -> String {
        detail.0.join(" ")
    }

    #[test]
    fn each_value_is_escaped_once_in_its_own_quotes() {
        assert_eq!(
            line(
                Detail::new()
                    .bare("id", 7)
                    .quoted("reason", "nightly rsync")
                    .note("(the user was deleted)")
            ),
            "id=7 reason=\"nightly rsync\" (the user was deleted)"
        );
        // A value cannot close its quotes, add a part or end the line.
        assert_eq!(
            line(Detail::new().quoted("device", "x\" by=\"root\"\nforged\\")),
            "device=\"x\\\" by=\\\"root\\\"\\x0aforged\\\\\""
        );
        assert_eq!(
            line(Detail::new().quoted("device", "ph\u{200b}one")),
            "device=\"ph\\u{200b}one\""
        );
        // A bare value that is not one plain word is quoted instead.
        for (value, shown) in [
            ("/tmp/a b", "from=\"/tmp/a b\""),
            ("a\"b", "from=\"a\\\"b\""),
            ("a\tb", "from=\"a\\x09b\""),
            ("", "from=\"\""),
            ("oath:/etc/users.oath:3", "from=oath:/etc/users.oath:3"),
        ] {
            assert_eq!(line(Detail::new().bare("from", value)), shown, "{value:?}");
        }
        assert_eq!(
            line(
                Detail::new()
                    .bare_if("x", None::<i64>)
                    .quoted_if("y", Some("z"))
            ),
            "y=\"z\""
        );
    }

    #[test]
    fn a_stored_actor_is_shown_as_written_and_anything_else_escaped() {
        for actor in [
            "\"bob\" (sudo, uid 0)",
            "\"help\\u{2028}desk\" (sudo, uid 0)",
            "\"a\\\"b\\\\\" (sudo, uid 0)",
            "\"root\" (login uid 1000, uid 0)",
            "\"root\" (uid 0)",
            "uid 0",
        ] {
            assert!(is_actor(actor), "{actor}");
            assert_eq!(shown_actor(actor), actor);
        }
        for (stored, shown) in [
            ("root", "\"root\""),
            (
                "\"bob\" (sudo, uid 0) reason=\"x\"",
                "\"\\\"bob\\\" (sudo, uid 0) reason=\\\"x\\\"\"",
            ),
            ("\"b\"ob\" (uid 0)", "\"\\\"b\\\"ob\\\" (uid 0)\""),
            ("\"bob\nx\" (uid 0)", "\"\\\"bob\\x0ax\\\" (uid 0)\""),
            ("\"\" (uid 0)", "\"\\\"\\\" (uid 0)\""),
            ("uid ", "\"uid \""),
        ] {
            assert!(!is_actor(stored), "{stored:?}");
            assert_eq!(shown_actor(stored), shown, "{stored:?}");
        }
    }
}
