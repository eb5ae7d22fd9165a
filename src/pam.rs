//! The only FFI seam: PAM items in, the conversation, `Outcome` -> PAM code
//! and one syslog line out. Decisions live in `auth.rs`.

use std::ffi::{CStr, CString};

use libc::{
    LOG_ALERT, LOG_DEBUG, LOG_ERR, LOG_INFO, LOG_NOTICE, LOG_WARNING, c_char, c_int, c_uint,
};
use pam::constants::{PAM_PROMPT_ECHO_OFF, PAM_TEXT_INFO, PamFlag, PamResultCode};
use pam::conv::Conv;
use pam::items::{AuthTok, Item, RHost};
use pam::module::{PamHandle, PamHooks};
use zeroize::Zeroizing;

use crate::auth::{self, Conversation, Decision, EnrollVia, Outcome, Request, SystemClock};
use crate::config::DEFAULT_FAIL_DELAY_MS;
use crate::groups::NssGroups;
use crate::logline::{escape, one_line};
use crate::ratelimit::Lock;
use crate::store::Kind;

#[link(name = "pam")]
unsafe extern "C" {
    /// Linux-PAM's logger: facility authpriv, ident from the PAM service,
    /// the module name prefixed (`pam_syslog(3)`).
    fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
    /// Asks libpam to wait at least `usec` microseconds before returning a
    /// failure to the application (`pam_fail_delay(3)`).
    fn pam_fail_delay(pamh: *mut PamHandle, usec: c_uint) -> c_int;
}

pub struct PamTotp;
pam::pam_hooks!(PamTotp);

/// A decision made before the configuration could be read.
fn early(outcome: Outcome) -> Decision {
    Decision {
        outcome,
        alerts: Vec::new(),
        trace: Vec::new(),
        fail_delay_ms: DEFAULT_FAIL_DELAY_MS,
    }
}

impl PamHooks for PamTotp {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        let (user, rhost) = match login_items(pamh) {
            Ok(items) => items,
            Err(outcome) => return finish(pamh, "?", None, &early(outcome)),
        };
        let args = match args
            .iter()
            .map(|a| a.to_str().map(str::to_string))
            .collect::<Result<Vec<String>, _>>()
        {
            Ok(args) => args,
            Err(_) => {
                let outcome = Outcome::ConfigError("a module argument is not UTF-8".to_string());
                return finish(pamh, &user, rhost.as_deref(), &early(outcome));
            }
        };
        let decision = {
            let mut conversation = PamConversation { pamh: &mut *pamh };
            auth::authenticate(
                &args,
                Request {
                    user: &user,
                    rhost: rhost.as_deref(),
                },
                |config| config.access().open_for_login(),
                &SystemClock,
                &NssGroups,
                &mut conversation,
            )
        };
        finish(pamh, &user, rhost.as_deref(), &decision)
    }

    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }
}

/// PAM_USER (asking for it if the application has not set it) and PAM_RHOST.
fn login_items(pamh: &mut PamHandle) -> Result<(String, Option<String>), Outcome> {
    let user = pamh
        .get_user(None)
        .map_err(|code| Outcome::NoUser(format!("pam_get_user failed: {code:?}")))?;
    let rhost = match pamh.get_item::<RHost>() {
        Ok(Some(rhost)) => Some(rhost.to_string_lossy().into_owned()),
        Ok(None) => None,
        Err(code) => return Err(Outcome::NoUser(format!("PAM_RHOST unreadable: {code:?}"))),
    };
    Ok((user, rhost))
}

/// The application's conversation function, asked for one hidden answer.
struct PamConversation<'a> {
    pamh: &'a mut PamHandle,
}

impl PamConversation<'_> {
    fn conv(&self) -> Result<Conv<'_>, String> {
        match self.pamh.get_item::<Conv>() {
            Ok(Some(conv)) => Ok(conv),
            Ok(None) => Err("the application set no conversation function".to_string()),
            Err(code) => Err(format!("PAM_CONV unreadable: {code:?}")),
        }
    }
}

impl Conversation for PamConversation<'_> {
    fn ask_hidden(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        match self.conv()?.send(PAM_PROMPT_ECHO_OFF, prompt) {
            Ok(Some(answer)) => Ok(Zeroizing::new(answer.as_bytes().to_vec())),
            Ok(None) => Ok(Zeroizing::new(Vec::new())),
            Err(code) => Err(format!("conversation failed: {code:?}")),
        }
    }

    fn info(&mut self, text: &str) -> Result<(), String> {
        self.conv()?
            .send(PAM_TEXT_INFO, text)
            .map(|_| ())
            .map_err(|code| format!("conversation failed: {code:?}"))
    }

    fn set_authtok(&mut self, password: &[u8]) -> Result<(), String> {
        if password.contains(&0) {
            return Err("the password contains a NUL byte".to_string());
        }
        let mut terminated = Zeroizing::new(Vec::with_capacity(password.len() + 1));
        terminated.extend_from_slice(password);
        terminated.push(0);
        // SAFETY: `terminated` is NUL-terminated with no other NUL and lives
        // until pam_set_item has copied it (libpam keeps its own copy).
        let item = unsafe { AuthTok::from_raw(terminated.as_ptr().cast()) };
        self.pamh
            .set_item_str(item)
            .map_err(|code| format!("setting PAM_AUTHTOK failed: {code:?}"))
    }
}

/// The one place an outcome becomes a PAM code, a syslog priority and a
/// message. Nothing here ever contains the code the user typed or the key.
fn translate(outcome: &Outcome) -> (PamResultCode, c_int, String) {
    use PamResultCode::*;
    match outcome {
        Outcome::Accepted {
            device,
            kind,
            step,
            offset,
        } => {
            let drift = offset.map(|o| format!(" (offset {o:+})")).unwrap_or_default();
            let what = match kind {
                Kind::Totp => "step",
                Kind::Hotp => "counter",
            };
            (
                PAM_SUCCESS,
                LOG_INFO,
                format!(
                    "accepted: code for {what} {step}{drift} from device \"{}\"",
                    escape(device)
                ),
            )
        }
        Outcome::RecoveryAccepted { remaining } => (
            PAM_SUCCESS,
            LOG_NOTICE,
            format!("accepted: recovery code used, {remaining} left"),
        ),
        Outcome::TrustedNetwork { ip } => (
            PAM_SUCCESS,
            LOG_INFO,
            format!("accepted without code: {ip} is in a trusted network"),
        ),
        Outcome::Exempt { reason } => (
            PAM_SUCCESS,
            LOG_NOTICE,
            format!("accepted without code: exempt ({})", escape(reason)),
        ),
        Outcome::Grace { ip, until } => (
            PAM_SUCCESS,
            LOG_INFO,
            format!(
                "accepted without code: grace from {ip} (a right code from there earlier) until {}",
                crate::logline::utc(*until)
            ),
        ),
        Outcome::EnrolledAtLogin { via } => (
            PAM_SUCCESS,
            LOG_NOTICE,
            format!(
                "accepted: enrolled a new token at login ({}) and confirmed it with a code",
                match via {
                    EnrollVia::TrustedNetwork => "from a trusted network",
                    EnrollVia::AdminWindow => "inside an enroll window opened by an administrator",
                }
            ),
        ),
        Outcome::EnrollmentFailed(why) => (
            PAM_AUTH_ERR,
            LOG_NOTICE,
            format!("denied: enrollment at login not completed: {why}"),
        ),
        Outcome::NotEnrolled { pending } => (
            PAM_AUTH_ERR,
            LOG_NOTICE,
            if *pending {
                "denied: user's token is pending confirmation (totpctl confirm)".to_string()
            } else {
                "denied: user is not enrolled (unenrolled=deny)".to_string()
            },
        ),
        Outcome::NotEnrolledIgnored => (
            PAM_IGNORE,
            LOG_INFO,
            "ignored: user is not enrolled (unenrolled=allow)".to_string(),
        ),
        Outcome::WrongCode => (PAM_AUTH_ERR, LOG_NOTICE, "denied: wrong code".to_string()),
        Outcome::WrongRecoveryCode => (
            PAM_AUTH_ERR,
            LOG_NOTICE,
            "denied: wrong or used recovery code".to_string(),
        ),
        Outcome::MalformedAnswer => (
            PAM_AUTH_ERR,
            LOG_NOTICE,
            "denied: wrong code (answer is not a code of the user's tokens)".to_string(),
        ),
        Outcome::Reused { device, step } => (
            PAM_AUTH_ERR,
            LOG_WARNING,
            format!(
                "denied: code already used (step {step} or later was used before on device \"{}\")",
                escape(device)
            ),
        ),
        Outcome::StepBeforeBoot { device, step } => (
            PAM_AUTH_ERR,
            LOG_WARNING,
            format!(
                "denied: right code, but its time step {step} (device \"{}\") could have been used before this machine booted; the next code will work",
                escape(device)
            ),
        ),
        Outcome::RateLimited(Lock::Source { until }) => (
            PAM_AUTH_ERR,
            LOG_WARNING,
            format!(
                "denied: too many failed codes from this address, back-off until {until} (answer not checked, nothing burned)"
            ),
        ),
        Outcome::RateLimited(Lock::User { until }) => (
            PAM_AUTH_ERR,
            LOG_WARNING,
            format!(
                "denied: too many failed codes for this user from all addresses, locked until {until} (answer not checked; totpctl unlock clears it)"
            ),
        ),
        Outcome::RecoveryReused => (
            PAM_AUTH_ERR,
            LOG_WARNING,
            "denied: recovery code already used by a concurrent login".to_string(),
        ),
        Outcome::RefusedBySshd => (
            PAM_AUTH_ERR,
            LOG_NOTICE,
            "denied: sshd had already refused this login (unknown user, or root not permitted) and sent its placeholder answer".to_string(),
        ),
        Outcome::NoUser(why) => (PAM_USER_UNKNOWN, LOG_ERR, format!("denied: no user: {why}")),
        Outcome::ConfigError(why) => (
            PAM_SERVICE_ERR,
            LOG_ERR,
            format!("denied: configuration error: {why}"),
        ),
        Outcome::StoreError(why) => (
            PAM_AUTHINFO_UNAVAIL,
            LOG_ERR,
            format!("denied: store error: {why}"),
        ),
        Outcome::ConversationError(why) => (PAM_CONV_ERR, LOG_ERR, format!("denied: {why}")),
        Outcome::ClockError(why) => (PAM_AUTH_ERR, LOG_ERR, format!("denied: clock error: {why}")),
    }
}

fn finish(
    pamh: &mut PamHandle,
    user: &str,
    rhost: Option<&str>,
    decision: &Decision,
) -> PamResultCode {
    for line in &decision.trace {
        log(pamh, LOG_DEBUG, line);
    }
    for alert in &decision.alerts {
        log(pamh, LOG_ALERT, &format!("ALERT: {alert}"));
    }
    let (code, priority, message) = translate(&decision.outcome);
    let line = format!(
        "{message}; user=\"{}\" rhost=\"{}\"",
        escape(user),
        escape(rhost.unwrap_or(""))
    );
    log(pamh, priority, &line);
    if code != PamResultCode::PAM_SUCCESS && code != PamResultCode::PAM_IGNORE {
        request_fail_delay(pamh, decision.fail_delay_ms);
    }
    code
}

/// Failures are answered no faster than `ms`, like the other modules in
/// the stack (libpam applies the longest delay any module asked for).
fn request_fail_delay(pamh: &mut PamHandle, ms: u32) {
    if ms == 0 {
        return;
    }
    let usec = ms.saturating_mul(1000);
    // SAFETY: `pamh` is the live handle PAM passed to this hook, borrowed
    // mutably for the call; pam_fail_delay only records the delay in it.
    unsafe {
        pam_fail_delay(pamh, usec);
    }
}

fn log(pamh: &PamHandle, priority: c_int, message: &str) {
    let Ok(message) = CString::new(one_line(message)) else {
        return;
    };
    // SAFETY: `pamh` is the live handle PAM passed to this hook; the format
    // is a static "%s" and the single vararg is a NUL-terminated string that
    // outlives the call, so pam_syslog reads exactly one valid C string.
    unsafe {
        pam_syslog(pamh, priority, c"%s".as_ptr(), message.as_ptr());
    }
}
