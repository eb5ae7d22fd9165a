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
    /// The parts are escaped, and the whole line goes through `one_line`,
    /// as the module's own lines do.
    pub fn record(&mut self, action: &str, user: &str, detail: &str) {
        let line = one_line(&format!(
            "{action} user=\"{}\"{}{} by {}",
            printable(user),
            if detail.is_empty() { "" } else { " " },
            printable(detail),
            self.actor
        ));
        if let Some(logger) = self.logger.as_mut()
            && let Err(e) = logger.notice(&line)
        {
            eprintln!("totpctl: warning: audit log write failed: {e}");
        }
    }
}

use pam_totp::logline::{escape as printable, one_line};

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
