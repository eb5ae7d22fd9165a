//! The audit trail: every change totpctl makes goes to syslog (authpriv)
//! with who made it and whom it concerns.

use std::ffi::CStr;

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
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
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
    // SAFETY: passwd is a plain C struct of integers and pointers, for
    // which all zero bytes is a valid value; getpwuid_r fills it in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: pwd, buf and result are valid for writes and outlive the
    // call; buf's length is passed; getpwuid_r writes only inside them.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside buf.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    Some(printable(&name.to_string_lossy()))
}
