//! The only FFI seam: PAM items in, the conversation, `Outcome` -> PAM code
//! and one syslog line out. Decisions live in `auth.rs`.

use std::ffi::{CStr, CString};

use libc::{
    LOG_ALERT, LOG_CRIT, LOG_DEBUG, LOG_ERR, LOG_INFO, LOG_NOTICE, LOG_WARNING, c_char, c_int,
    c_uint,
};
use pam::constants::{PAM_PROMPT_ECHO_OFF, PAM_TEXT_INFO, PamFlag, PamResultCode};
use pam::conv::Conv;
use pam::items::{AuthTok, Item, RHost, Service};
use pam::module::{PamHandle, PamHooks};
use zeroize::Zeroizing;

use crate::auth::{self, Commit, Conversation, Decision, EnrollVia, Outcome, Request, SystemClock};
use crate::logline::{escape, one_line};
use crate::ratelimit::Lock;
use crate::sshkey::{self, LoginKey};
use crate::store::Kind;
use crate::sys::Nss;

/// The PAM environment variable that carries the nonce of what the auth
/// phase staged to the phase that commits it. The PAM environment is the
/// one piece of a PAM transaction that OpenSSH carries from the process
/// that runs `pam_authenticate` (a child, for keyboard-interactive) back to
/// the monitor that later calls `pam_setcred`.
pub const STAGED_ENV: &str = "PAM_TOTP_STAGED";

#[link(name = "pam")]
unsafe extern "C" {
    /// Linux-PAM's logger: facility authpriv, ident from the PAM service,
    /// the module name prefixed (`pam_syslog(3)`).
    fn pam_syslog(pamh: *const PamHandle, priority: c_int, fmt: *const c_char, ...);
    /// Asks libpam to wait at least `usec` microseconds before returning a
    /// failure to the application (`pam_fail_delay(3)`).
    fn pam_fail_delay(pamh: *mut PamHandle, usec: c_uint) -> c_int;
    /// Sets (`NAME=value`) or deletes (`NAME`) a PAM environment variable.
    fn pam_putenv(pamh: *mut PamHandle, name_value: *const c_char) -> c_int;
    /// A PAM environment variable's value, owned by libpam, or NULL.
    fn pam_getenv(pamh: *const PamHandle, name: *const c_char) -> *const c_char;
}

#[cfg(not(feature = "postgres"))]
mod forward;
mod stack_result;

pub struct PamTotp;
pam::pam_hooks!(PamTotp);

/// The PAM phase an entry point serves, for log lines.
#[derive(Clone, Copy)]
enum Phase {
    Auth,
    Account,
    Setcred,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Auth => "auth",
            Phase::Account => "account",
            Phase::Setcred => "setcred",
        }
    }
}

/// Runs one entry point; a panic (a bug) never crosses into libpam: it is
/// caught here, logged as an internal error, and denies.
fn guarded(
    pamh: &mut PamHandle,
    phase: Phase,
    work: impl FnOnce(&mut PamHandle) -> PamResultCode,
) -> PamResultCode {
    let raw: *mut PamHandle = pamh;
    contain_panic(
        || work(pamh),
        |what| {
            // SAFETY: `raw` is the live handle libpam passed to this entry
            // point; the closure that borrowed it has ended (it unwound).
            let pamh = unsafe { &*raw };
            log(
                pamh,
                LOG_CRIT,
                &format!(
                    "denied: internal error in the {} phase (a bug, please report it): {}",
                    phase.name(),
                    escape(what)
                ),
            );
        },
    )
}

/// `work`'s result, or PAM_SERVICE_ERR after `report` has been told the
/// panic's message.
fn contain_panic(work: impl FnOnce() -> PamResultCode, report: impl FnOnce(&str)) -> PamResultCode {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(code) => code,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            report(&what);
            PamResultCode::PAM_SERVICE_ERR
        }
    }
}

/// The module arguments as UTF-8 strings.
fn string_args(args: &[&CStr]) -> Result<Vec<String>, Outcome> {
    args.iter()
        .map(|a| a.to_str().map(str::to_string))
        .collect::<Result<Vec<String>, _>>()
        .map_err(|_| Outcome::ConfigError("a module argument is not UTF-8".to_string()))
}

impl PamHooks for PamTotp {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        guarded(pamh, Phase::Auth, |pamh| authenticate(pamh, &args, flags))
    }

    fn acct_mgmt(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        guarded(pamh, Phase::Account, |pamh| {
            commit(pamh, &args, Phase::Account, flags)
        })
    }

    fn sm_setcred(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        guarded(pamh, Phase::Setcred, |pamh| {
            if flags & pam::constants::PAM_DELETE_CRED != 0 {
                return PamResultCode::PAM_SUCCESS;
            }
            commit(pamh, &args, Phase::Setcred, flags)
        })
    }
}

fn authenticate(pamh: &mut PamHandle, raw_args: &[&CStr], flags: PamFlag) -> PamResultCode {
    // A stage of an earlier try in this transaction is never committed.
    let _ = take_env(pamh, STAGED_ENV);
    let (user, rhost) = match login_items(pamh) {
        Ok(items) => items,
        Err(outcome) => return finish(pamh, "?", None, &Decision::early(outcome)),
    };
    let args = match string_args(raw_args) {
        Ok(args) => args,
        Err(outcome) => return finish(pamh, &user, rhost.as_deref(), &Decision::early(outcome)),
    };
    let loaded = crate::config::load(&args);
    #[cfg(not(feature = "postgres"))]
    if let Ok(config) = &loaded
        && forward::names_postgres(config)
    {
        return match forward::call(pamh, raw_args, flags, forward::Hook::Authenticate) {
            Ok(code) => code,
            Err(why) => finish(
                pamh,
                &user,
                rhost.as_deref(),
                &Decision::early(Outcome::ConfigError(why)),
            ),
        };
    }
    #[cfg(feature = "postgres")]
    let _ = flags;
    let ssh_key = login_key(pamh);
    let mut decision = {
        let mut conversation = PamConversation { pamh: &mut *pamh };
        auth::authenticate_loaded(
            loaded,
            Request {
                user: &user,
                rhost: rhost.as_deref(),
                ssh_key: &ssh_key,
            },
            |config| config.access().open_for_login(),
            &SystemClock,
            &Nss,
            &mut conversation,
        )
    };
    if let Some(nonce) = decision.staged.take()
        && decision.outcome.is_success()
    {
        let entry = Zeroizing::new(format!("{STAGED_ENV}={}", nonce.as_str()));
        // The stage is handed on only together with the watch that takes it
        // back if the rest of the stack fails.
        let handed_on = put_env(pamh, &entry).and_then(|()| {
            stack_result::watch(pamh, &nonce).inspect_err(|_| {
                let _ = take_env(pamh, STAGED_ENV);
            })
        });
        if let Err(why) = handed_on {
            if matches!(decision.outcome, Outcome::EnrolledAtLogin { .. }) {
                decision.outcome = Outcome::EnrollmentFailed(format!(
                    "the confirmed token could not be staged ({why}); nothing stored"
                ));
            } else {
                log(pamh, LOG_WARNING, &format!("grace not staged: {why}"));
            }
        } else {
            log(
                pamh,
                LOG_INFO,
                "staged: what this login grants is stored once the whole login has succeeded (the application's pam_setcred, which sshd calls, or an `account required pam_totp.so` line with the same arguments)",
            );
        }
    }
    finish(pamh, &user, rhost.as_deref(), &decision)
}

/// The account and setcred phases: PAM reaches them only after the whole
/// auth stack succeeded, so what the auth phase staged is committed here.
fn commit(pamh: &mut PamHandle, args: &[&CStr], phase: Phase, flags: PamFlag) -> PamResultCode {
    let nothing = match phase {
        Phase::Account => PamResultCode::PAM_IGNORE,
        _ => PamResultCode::PAM_SUCCESS,
    };
    let denied = match phase {
        Phase::Account => PamResultCode::PAM_PERM_DENIED,
        _ => PamResultCode::PAM_CRED_ERR,
    };
    // sshd calls pam_setcred only once the whole account stack succeeded,
    // while this module's account line can run before another account
    // module that then denies (pam_nologin, an expired account, a pool
    // node's access rule): under sshd the stage waits for setcred, so a
    // login the account stack refused grants nothing.
    if matches!(phase, Phase::Account) && service_is_sshd(pamh) {
        return nothing;
    }
    // The build without the PostgreSQL client: a stage of a PostgreSQL
    // store is the full build's to commit (looked at only when something
    // is staged: the configuration is not loaded twice for nothing).
    #[cfg(not(feature = "postgres"))]
    if has_env(pamh, STAGED_ENV)
        && let Ok(strings) = string_args(args)
        && let Ok(config) = crate::config::load(&strings)
        && forward::names_postgres(&config)
    {
        let hook = match phase {
            Phase::Account => forward::Hook::Account,
            _ => forward::Hook::Setcred,
        };
        return match forward::call(pamh, args, flags, hook) {
            Ok(code) => code,
            Err(why) => {
                log(
                    pamh,
                    LOG_ERR,
                    &format!("denied: {}: {why}; nothing granted", phase.name()),
                );
                denied
            }
        };
    }
    #[cfg(feature = "postgres")]
    let _ = flags;
    // Taken out first: whatever happens next, it is committed at most once
    // and never handed to the user's session environment.
    let nonce = match take_env(pamh, STAGED_ENV) {
        Ok(Some(nonce)) => nonce,
        Ok(None) => return nothing,
        Err(why) => {
            log(
                pamh,
                LOG_ERR,
                &format!("denied: {}: staged grant unreadable: {why}", phase.name()),
            );
            return denied;
        }
    };
    // The stage is consumed here whatever follows; the watch on this
    // handle's verdicts has done its job once its last verdict is read.
    let verdict = stack_result::verdict(pamh, &nonce);
    stack_result::release(pamh);
    if let Some(verdict) = verdict
        && verdict != stack_result::Verdict::Succeeded
    {
        log(
            pamh,
            LOG_ERR,
            &format!(
                "denied: {}: the application asks to commit what pam_totp staged, but libpam's last verdict on the auth stack is {verdict:?}; nothing granted",
                phase.name()
            ),
        );
        return denied;
    }
    let user = match pamh.get_user(None) {
        Ok(user) => user,
        Err(code) => {
            log(
                pamh,
                LOG_ERR,
                &format!(
                    "denied: {}: pam_get_user failed: {code:?}; nothing granted",
                    phase.name()
                ),
            );
            return denied;
        }
    };
    let config = match string_args(args).and_then(|args| {
        crate::config::load(&args).map_err(|e| Outcome::ConfigError(e.to_string()))
    }) {
        Ok(config) => config,
        Err(outcome) => {
            let (_, _, why) = translate(&outcome);
            log(
                pamh,
                LOG_ERR,
                &format!("{}: {why}; nothing granted", phase.name()),
            );
            return denied;
        }
    };
    let result = auth::commit_staged(
        &config,
        &user,
        &nonce,
        |config| config.access().open_for_login(),
        &SystemClock,
        &Nss,
    );
    let user = escape(&user);
    let (code, priority, message) = match result {
        Commit::Nothing => return nothing,
        Commit::Enrolled { device } => (
            PamResultCode::PAM_SUCCESS,
            LOG_NOTICE,
            format!(
                "enrolled at login: token \"{}\" stored now that the login succeeded",
                escape(&device)
            ),
        ),
        Commit::Grace { ip, key } => (
            PamResultCode::PAM_SUCCESS,
            LOG_INFO,
            [
                ip.map(|(ip, until)| {
                    format!(
                        "grace from {ip} granted until {}",
                        crate::logline::utc(until)
                    )
                }),
                key.map(|(fingerprint, until)| {
                    format!(
                        "grace for SSH key {fingerprint} granted until {}",
                        crate::logline::utc(until)
                    )
                }),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; "),
        ),
        Commit::GraceLost(why) => (
            PamResultCode::PAM_SUCCESS,
            LOG_WARNING,
            format!("grace not stored (the next login asks for a code): {why}"),
        ),
        Commit::Missing => (
            denied,
            LOG_ERR,
            "denied: the grant staged at auth is gone (expired, or this line names another store than the auth line: give the account line the same arguments); nothing granted".to_string(),
        ),
        Commit::Failed(why) => (denied, LOG_ERR, format!("denied: {why}; nothing granted")),
    };
    log(
        pamh,
        priority,
        &format!("{}: {message}; user=\"{user}\"", phase.name()),
    );
    code
}

/// Whether the PAM environment holds `name` (nothing is taken out).
#[cfg(not(feature = "postgres"))]
fn has_env(pamh: &mut PamHandle, name: &str) -> bool {
    let Ok(c_name) = CString::new(name) else {
        return false;
    };
    // SAFETY: `pamh` is the live handle; `c_name` is NUL-terminated and
    // outlives the call; the result is only compared with NULL.
    !unsafe { pam_getenv(pamh, c_name.as_ptr()) }.is_null()
}

/// Removes a PAM environment variable and returns the value it had.
fn take_env(pamh: &mut PamHandle, name: &str) -> Result<Option<Zeroizing<String>>, String> {
    let c_name = CString::new(name).map_err(|_| "variable name contains NUL".to_string())?;
    // SAFETY: `pamh` is the live handle; `c_name` is NUL-terminated and
    // outlives the call. The returned pointer is libpam's and is read
    // before anything changes the environment.
    let value = unsafe {
        let ptr = pam_getenv(pamh, c_name.as_ptr());
        if ptr.is_null() {
            return Ok(None);
        }
        Zeroizing::new(CStr::from_ptr(ptr).to_string_lossy().into_owned())
    };
    // SAFETY: as above; a name without '=' deletes the variable.
    let rc = unsafe { pam_putenv(pamh, c_name.as_ptr()) };
    if rc != PamResultCode::PAM_SUCCESS as c_int {
        return Err(format!("pam_putenv could not remove {name} ({rc})"));
    }
    Ok(Some(value))
}

/// Sets `NAME=value` in the PAM environment.
fn put_env(pamh: &mut PamHandle, entry: &str) -> Result<(), String> {
    let c_entry = Zeroizing::new(
        CString::new(entry)
            .map_err(|_| "variable contains NUL".to_string())?
            .into_bytes_with_nul(),
    );
    // SAFETY: `pamh` is the live handle; `c_entry` is NUL-terminated and
    // lives until pam_putenv has copied it.
    let rc = unsafe { pam_putenv(pamh, c_entry.as_ptr().cast()) };
    if rc != PamResultCode::PAM_SUCCESS as c_int {
        return Err(format!("pam_putenv failed ({rc})"));
    }
    Ok(())
}

/// The PAM service name (empty when the application set none).
fn service_name(pamh: &PamHandle) -> Result<Vec<u8>, String> {
    match pamh.get_item::<Service>() {
        Ok(Some(service)) => Ok(service.to_bytes().to_vec()),
        Ok(None) => Ok(Vec::new()),
        Err(code) => Err(format!("PAM_SERVICE unreadable: {code:?}")),
    }
}

/// Whether the PAM service is sshd's (`sshd`).
fn service_is_sshd(pamh: &PamHandle) -> bool {
    service_name(pamh).is_ok_and(|service| service == sshkey::SSHD_SERVICE.as_bytes())
}

/// The SSH key of this login, from sshd's `SSH_AUTH_INFO_0` in the PAM
/// environment (never the process environment), and only under the PAM
/// service `sshd`: sshd sets the variable there immediately before it calls
/// `pam_authenticate`, so in the auth phase its value is sshd's unless a
/// module earlier in this auth stack replaced it (SECURITY.md says which
/// modules can). Read only here, in the auth phase.
fn login_key(pamh: &PamHandle) -> LoginKey {
    let service = match service_name(pamh) {
        Ok(service) => service,
        Err(why) => return LoginKey::Unknown(why),
    };
    if service != sshkey::SSHD_SERVICE.as_bytes() {
        return LoginKey::Unknown(format!(
            "the PAM service is \"{}\", not {}: {} is only believed from sshd",
            escape(&String::from_utf8_lossy(&service)),
            sshkey::SSHD_SERVICE,
            sshkey::AUTH_INFO_ENV
        ));
    }
    let Ok(name) = CString::new(sshkey::AUTH_INFO_ENV) else {
        return LoginKey::Unknown("variable name".to_string());
    };
    // SAFETY: `pamh` is the live handle; `name` is NUL-terminated and
    // outlives the call. The returned pointer is libpam's, valid until the
    // environment changes: it is copied before anything else runs.
    let value = unsafe {
        let ptr = pam_getenv(pamh, name.as_ptr());
        if ptr.is_null() {
            return LoginKey::Unknown(format!(
                "sshd set no {} (OpenSSH older than 7.8, or not keyboard-interactive)",
                sshkey::AUTH_INFO_ENV
            ));
        }
        CStr::from_ptr(ptr).to_bytes().to_vec()
    };
    sshkey::parse_auth_info(&value)
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
        Outcome::KeyGrace { fingerprint, until } => (
            PAM_SUCCESS,
            LOG_INFO,
            format!(
                "accepted without code: grace for SSH key {fingerprint} (a right code with it earlier) until {}",
                crate::logline::utc(*until)
            ),
        ),
        Outcome::Automation {
            id,
            fingerprint,
            ip,
            until,
            reason,
        } => (
            PAM_SUCCESS,
            LOG_NOTICE,
            format!(
                "accepted without code: automation grant #{id} for SSH key {fingerprint} from {ip} (until {} UTC, reason \"{}\")",
                crate::logline::utc(*until),
                escape(reason)
            ),
        ),
        Outcome::EnrolledAtLogin { via } => (
            PAM_SUCCESS,
            LOG_NOTICE,
            format!(
                "accepted: new token confirmed at login ({}); it is stored once the whole login has succeeded",
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
        Outcome::NoUsableToken(why) => (
            PAM_AUTH_ERR,
            LOG_NOTICE,
            format!(
                "denied: every token of the user is {why} (totpctl show; `totpctl enable` or a new enrollment)"
            ),
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
                "denied: code already used (it matched step {step} of device \"{}\"; that step or a later one of the same key was used before, on this device or another holding the key)",
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
                "denied: too many failed codes from this address, back-off until {} UTC (answer not checked, nothing burned)",
                crate::logline::utc(*until)
            ),
        ),
        Outcome::RateLimited(Lock::User { until }) => (
            PAM_AUTH_ERR,
            LOG_WARNING,
            format!(
                "denied: too many failed codes for this user from all addresses, locked until {} UTC (answer not checked; totpctl unlock clears it)",
                crate::logline::utc(*until)
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
        Outcome::UnknownUser => (
            PAM_USER_UNKNOWN,
            LOG_NOTICE,
            "denied: user unknown to the name service (NSS)".to_string(),
        ),
        Outcome::ConfigError(why) => (
            PAM_SERVICE_ERR,
            LOG_ERR,
            format!("denied: configuration error: {why}"),
        ),
        Outcome::StoreError(fault) if fault.unavailable => (
            PAM_AUTHINFO_UNAVAIL,
            LOG_ERR,
            format!("denied: store unavailable: {}", fault.message),
        ),
        Outcome::StoreError(fault) => (
            PAM_SERVICE_ERR,
            LOG_ERR,
            format!("denied: store error: {}", fault.message),
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
    for notice in &decision.notices {
        log(pamh, LOG_NOTICE, notice);
    }
    let (code, priority, message) = translate(&decision.outcome);
    // The canonical name (NSS) once known, and PAM's name when it differs.
    let named = match decision.user.as_deref() {
        Some(canonical) if canonical != user => format!(
            "user=\"{}\" pam_user=\"{}\"",
            escape(canonical),
            escape(user)
        ),
        Some(canonical) => format!("user=\"{}\"", escape(canonical)),
        None => format!("user=\"{}\"", escape(user)),
    };
    let line = format!(
        "{message}; {named} rhost=\"{}\"",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_contained_reported_and_denies() {
        let mut reported = None;
        let code = contain_panic(
            || panic!("index out of bounds: the len is 0"),
            |what| reported = Some(what.to_string()),
        );
        assert_eq!(code, PamResultCode::PAM_SERVICE_ERR);
        assert_eq!(
            reported.as_deref(),
            Some("index out of bounds: the len is 0")
        );
        let formatted = contain_panic(|| panic!("{} {}", "with", 2), |_| {});
        assert_eq!(formatted, PamResultCode::PAM_SERVICE_ERR);
        let fine = contain_panic(|| PamResultCode::PAM_SUCCESS, |_| unreachable!());
        assert_eq!(fine, PamResultCode::PAM_SUCCESS);
    }

    #[test]
    fn an_unavailable_store_and_a_broken_one_are_different_pam_results() {
        let fault = |unavailable| {
            Outcome::StoreError(auth::StoreFault {
                unavailable,
                message: "x".to_string(),
            })
        };
        assert_eq!(
            translate(&fault(true)).0,
            PamResultCode::PAM_AUTHINFO_UNAVAIL
        );
        assert_eq!(translate(&fault(false)).0, PamResultCode::PAM_SERVICE_ERR);
        use crate::store::StoreError;
        let unreachable = StoreError::Unreachable {
            target: "db".to_string(),
            reason: "refused".to_string(),
        };
        assert!(unreachable.is_unavailable());
        for broken in [
            StoreError::Missing("/x".to_string()),
            StoreError::SchemaTooNew {
                found: 9,
                supported: 5,
            },
            StoreError::Corrupt {
                path: "/x".to_string(),
                reason: "not a database".to_string(),
            },
        ] {
            assert!(!broken.is_unavailable(), "{broken}");
        }
    }

    #[test]
    fn every_outcome_that_is_not_a_success_denies() {
        for outcome in [
            Outcome::UnknownUser,
            Outcome::WrongCode,
            Outcome::EnrollmentFailed(String::new()),
            Outcome::StoreError(auth::StoreFault {
                unavailable: true,
                message: String::new(),
            }),
            Outcome::StoreError(auth::StoreFault {
                unavailable: false,
                message: String::new(),
            }),
            Outcome::ConfigError(String::new()),
            Outcome::ClockError(String::new()),
            Outcome::RefusedBySshd,
        ] {
            let (code, _, _) = translate(&outcome);
            assert!(
                code != PamResultCode::PAM_SUCCESS && code != PamResultCode::PAM_IGNORE,
                "{outcome:?}"
            );
        }
    }
}
