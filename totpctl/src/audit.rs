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
    /// the whole line goes through `one_line`, as the module's own lines
    /// do (`logline::audit_line`, which totp's lines use too).
    pub fn record(&mut self, action: &str, user: &str, detail: Detail) {
        let line = audit_line(action, user, detail, &self.actor);
        if let Some(logger) = self.logger.as_mut()
            && let Err(e) = logger.notice(&line)
        {
            eprintln!("totpctl: warning: audit log write failed: {e}");
        }
    }
}

/// The details of an audit line: the library's builder, shared with totp.
pub use pam_totp::logline::Detail;

use pam_totp::logline::{audit_line, escape as printable, is_hidden};

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
