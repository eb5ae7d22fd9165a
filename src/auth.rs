//! The decision: configuration + store + clock + rhost + the user's answer
//! in, one `Outcome` out. No PAM here: `pam.rs` supplies the conversation
//! and turns the outcome into a return code and a log line.

use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::config::{self, Config, EnrollAtLogin, Mode, Unenrolled};
use crate::enroll;
use crate::groups::Groups;
use crate::network;
use crate::otp::{self, Params};
use crate::ratelimit::{self, Lock};
use crate::recovery::{self, Candidate};
use crate::secret::Secret;
use crate::store::{Claim, DEFAULT_DEVICE, Kind, Store, StoreError, Token};

/// What sshd hands to PAM instead of the user's answer when it has already
/// decided to refuse the login (unknown user, root under `PermitRootLogin
/// prohibit-password`, a denied user): this pattern, repeated or cut to the
/// length of what the user typed. sshd keeps asking so the client cannot
/// tell; we recognise it so the log can say so.
pub const SSHD_PLACEHOLDER: &[u8] = b"\x08\n\r\x7fINCORRECT";

/// The prompt for the first code of a token enrolled at login.
pub const CONFIRM_PROMPT: &str = "Code from your app, to confirm: ";

/// True for a non-empty answer made of sshd's placeholder pattern. No one
/// types it: it starts with a backspace and a newline.
pub fn is_sshd_placeholder(answer: &[u8]) -> bool {
    !answer.is_empty()
        && answer
            .iter()
            .enumerate()
            .all(|(i, b)| *b == SSHD_PLACEHOLDER[i % SSHD_PLACEHOLDER.len()])
}

/// How an enrollment at login was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollVia {
    TrustedNetwork,
    AdminWindow,
}

/// Every way a login through this module can end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A right code; its step (TOTP) or counter (HOTP) is now marked used.
    /// `offset` is the matched step minus the current one (TOTP clock drift).
    Accepted {
        device: String,
        kind: Kind,
        step: u64,
        offset: Option<i64>,
    },
    /// A right recovery code, now burned.
    RecoveryAccepted {
        remaining: usize,
    },
    /// The client's address is inside `trusted=`: no code asked.
    TrustedNetwork {
        ip: String,
    },
    /// `exempt_user=` or `exempt_group=`: no code asked.
    Exempt {
        reason: String,
    },
    /// A right code from this address earlier, within `grace=`: no code
    /// asked until `until`.
    Grace {
        ip: String,
        until: i64,
    },
    /// An unenrolled user enrolled during this login and confirmed with a code.
    EnrolledAtLogin {
        via: EnrollVia,
    },
    /// Enrollment at login was offered but not completed (wrong code, or a
    /// token appeared meanwhile); nothing was stored.
    EnrollmentFailed(String),
    /// No active token and `unenrolled=deny`: prompted anyway, then denied.
    /// `pending` when the user has a token that was never confirmed.
    NotEnrolled {
        pending: bool,
    },
    /// No active token and `unenrolled=allow`: this module steps aside.
    NotEnrolledIgnored,
    /// Right shape, wrong code.
    WrongCode,
    /// Shaped like a recovery code, but not an unused one of this user.
    WrongRecoveryCode,
    /// Not a code of any of the user's tokens, nor a recovery code.
    MalformedAnswer,
    /// A right code whose step (or a later one) was already used.
    Reused {
        device: String,
        step: u64,
    },
    /// A right code whose TOTP step could have been used before this
    /// machine last booted: its claim may have been lost with the page
    /// cache (the store commits TOTP claims lazily), so it is refused.
    StepBeforeBoot {
        device: String,
        step: u64,
    },
    /// A right recovery code that a concurrent login burned first.
    RecoveryReused,
    /// Too many failures: refused without looking at the answer (a right
    /// code is not burned).
    RateLimited(Lock),
    /// sshd's stand-in answer for a login it already refuses.
    RefusedBySshd,
    /// No usable PAM_USER.
    NoUser(String),
    ConfigError(String),
    StoreError(String),
    ConversationError(String),
    ClockError(String),
}

impl Outcome {
    /// True only for the ends that let the user through.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            Outcome::Accepted { .. }
                | Outcome::RecoveryAccepted { .. }
                | Outcome::TrustedNetwork { .. }
                | Outcome::EnrolledAtLogin { .. }
                | Outcome::Exempt { .. }
                | Outcome::Grace { .. }
        )
    }
}

impl Outcome {
    /// A right code or recovery code typed in this login (what may start a
    /// grace period; a grace login itself never extends one).
    pub fn is_code_success(&self) -> bool {
        matches!(
            self,
            Outcome::Accepted { .. } | Outcome::RecoveryAccepted { .. }
        )
    }

    /// The ends that count as a guess for the rate limits. A reused code
    /// is not a guess (it was right, and replaying it teaches nothing): an
    /// HPC user who opens five sessions at once with one code must not be
    /// backed off for it.
    pub fn is_failed_guess(&self) -> bool {
        matches!(
            self,
            Outcome::WrongCode | Outcome::WrongRecoveryCode | Outcome::MalformedAnswer
        )
    }
}

/// The outcome, alerts for the administrator (the per-user ceiling was
/// reached), and, when the configuration says `debug`, the settings that
/// led to it. Never a code or a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub alerts: Vec<String>,
    pub trace: Vec<String>,
    /// How long libpam should hold a failure back (`fail_delay=`).
    pub fail_delay_ms: u32,
}

/// Who is logging in and from where, as PAM reports it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub user: &'a str,
    pub rhost: Option<&'a str>,
}

/// The time source; tests use a fixed one.
pub trait Clock {
    /// Seconds since the Unix epoch.
    fn unix_time(&self) -> Result<u64, String>;
    /// When the machine booted, in the same seconds, never earlier than
    /// the truth (a later estimate only fences off more steps).
    fn booted_at(&self) -> Result<u64, String>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_time(&self) -> Result<u64, String> {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .map_err(|_| "system clock is before 1970".to_string())
    }

    fn booted_at(&self) -> Result<u64, String> {
        // SAFETY: sysinfo fills the zeroed struct it is given and touches
        // nothing else.
        let (rc, info) = unsafe {
            let mut info: libc::sysinfo = std::mem::zeroed();
            (libc::sysinfo(&mut info), info)
        };
        if rc != 0 {
            return Err(format!(
                "sysinfo failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        // Uptime is whole seconds, rounded down: the estimate is at or
        // after the real boot, the safe side.
        let uptime = u64::try_from(info.uptime).map_err(|_| "negative uptime".to_string())?;
        Ok(self.unix_time()?.saturating_sub(uptime))
    }
}

/// True when a TOTP `step` could have been claimed before the boot at
/// `booted_at`: before the crash, `window` steps ahead of the clock could be
/// used, so every step up to the boot's own step plus `window` is fenced.
/// For at most `window + 1` periods after a boot, codes are refused.
pub fn before_boot(step: u64, period: u64, window: u32, booted_at: u64) -> bool {
    step <= otp::step_at(booted_at, period).saturating_add(u64::from(window))
}

/// Talks to the user.
pub trait Conversation {
    /// One prompt with echo off; returns what the user typed.
    fn ask_hidden(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, String>;
    /// Shows text without asking anything (PAM_TEXT_INFO).
    fn info(&mut self, text: &str) -> Result<(), String>;
    /// Hands the password part of a combined answer to the next module
    /// (PAM_AUTHTOK).
    fn set_authtok(&mut self, password: &[u8]) -> Result<(), String>;
}

/// Loads the configuration from the module arguments, then decides.
pub fn authenticate<S: Store>(
    args: &[String],
    request: Request<'_>,
    open_store: impl FnOnce(&Config) -> Result<S, StoreError>,
    clock: &dyn Clock,
    groups: &dyn Groups,
    conversation: &mut dyn Conversation,
) -> Decision {
    let config = match config::load(args) {
        Ok(config) => config,
        Err(e) => {
            return Decision {
                outcome: Outcome::ConfigError(e.to_string()),
                alerts: Vec::new(),
                trace: Vec::new(),
                fail_delay_ms: config::DEFAULT_FAIL_DELAY_MS,
            };
        }
    };
    let mut decision = decide(&config, request, open_store, clock, groups, conversation);
    if config.debug {
        decision.trace.push(format!(
            "config: db={} window={} hotp_window={} trusted={} unenrolled={:?} enroll={:?} limits={:?} prompt={:?} mode={:?} grace={}s exempt_users={:?} exempt_groups={:?} db_timeout={}s key_file={}{}",
            config.db,
            config.window,
            config.hotp_window,
            config
                .trusted
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
            config.unenrolled,
            config.enroll,
            config.limits,
            config.effective_prompt(),
            config.mode,
            config.grace_secs,
            config.exempt_users,
            config.exempt_groups,
            config.db_timeout.as_secs(),
            config.key_file.display(),
            if config.key_file_named { "" } else { " (if present)" },
        ));
    }
    decision
}

/// The decision for one login with a valid configuration.
pub fn decide<S: Store>(
    config: &Config,
    request: Request<'_>,
    open_store: impl FnOnce(&Config) -> Result<S, StoreError>,
    clock: &dyn Clock,
    groups: &dyn Groups,
    conversation: &mut dyn Conversation,
) -> Decision {
    let mut alerts = Vec::new();
    let outcome = match exemption(config, request.user, groups) {
        Some(reason) if !request.user.is_empty() => Outcome::Exempt { reason },
        _ => decide_outcome(
            config,
            request,
            open_store,
            clock,
            conversation,
            &mut alerts,
        ),
    };
    Decision {
        outcome,
        alerts,
        trace: Vec::new(),
        fail_delay_ms: config.fail_delay_ms,
    }
}

/// Why `user` needs no code, if they are exempt. A group lookup that fails
/// (NSS or LDAP down) exempts no one: the code is asked.
fn exemption(config: &Config, user: &str, groups: &dyn Groups) -> Option<String> {
    if config.exempt_users.iter().any(|u| u == user) {
        return Some("listed in exempt_user".to_string());
    }
    if config.exempt_groups.is_empty() {
        return None;
    }
    let member_of = groups.groups_of(user).ok()?;
    config
        .exempt_groups
        .iter()
        .find(|g| member_of.contains(g))
        .map(|g| format!("member of exempt group {g:?}"))
}

fn decide_outcome<S: Store>(
    config: &Config,
    request: Request<'_>,
    open_store: impl FnOnce(&Config) -> Result<S, StoreError>,
    clock: &dyn Clock,
    conversation: &mut dyn Conversation,
    alerts: &mut Vec<String>,
) -> Outcome {
    if request.user.is_empty() {
        return Outcome::NoUser("empty user name".to_string());
    }
    let trusted_ip = network::is_trusted(request.rhost, &config.trusted)
        .then(|| request.rhost.and_then(network::rhost_ip))
        .flatten();
    // Fast path: a trusted source needs no store unless it may enroll.
    if let Some(ip) = trusted_ip
        && config.enroll != EnrollAtLogin::Trusted
    {
        return Outcome::TrustedNetwork { ip: ip.to_string() };
    }

    let store = match open_store(config) {
        Ok(store) => store,
        Err(e) => return Outcome::StoreError(e.to_string()),
    };
    let tokens = match store.tokens(request.user) {
        Ok(tokens) => tokens,
        Err(e) => return Outcome::StoreError(e.to_string()),
    };
    if let Some(ip) = trusted_ip {
        return if tokens.is_empty() {
            enroll_at_login(
                config,
                &store,
                request.user,
                clock,
                conversation,
                EnrollVia::TrustedNetwork,
            )
        } else {
            Outcome::TrustedNetwork { ip: ip.to_string() }
        };
    }
    if tokens.is_empty() && config.enroll == EnrollAtLogin::Window {
        let now = match now(clock) {
            Ok(now) => now,
            Err(outcome) => return outcome,
        };
        match store.enroll_window(request.user, now as i64) {
            Ok(Some(_)) => {
                return enroll_at_login(
                    config,
                    &store,
                    request.user,
                    clock,
                    conversation,
                    EnrollVia::AdminWindow,
                );
            }
            Ok(None) => {}
            Err(e) => return Outcome::StoreError(e.to_string()),
        }
    }
    let active: Vec<&Token> = tokens.iter().filter(|t| t.is_active()).collect();
    if active.is_empty() && config.unenrolled == Unenrolled::Allow {
        return Outcome::NotEnrolledIgnored;
    }

    let grace_ip = (config.grace_secs > 0)
        .then(|| request.rhost.and_then(network::rhost_ip))
        .flatten()
        .map(|ip| ip.to_string());
    if let (Some(ip), false) = (&grace_ip, active.is_empty()) {
        let now = match now(clock) {
            Ok(now) => now,
            Err(outcome) => return outcome,
        };
        match store.grace_until(request.user, ip, now as i64) {
            Ok(Some(until)) => {
                return Outcome::Grace {
                    ip: ip.clone(),
                    until,
                };
            }
            Ok(None) => {}
            Err(e) => return Outcome::StoreError(e.to_string()),
        }
    }

    // Prompt even for unenrolled users, so the prompt reveals nothing.
    let typed = match conversation.ask_hidden(config.effective_prompt()) {
        Ok(answer) => answer,
        Err(e) => return Outcome::ConversationError(e),
    };
    if is_sshd_placeholder(&typed) {
        return Outcome::RefusedBySshd;
    }
    let candidates = match config.mode {
        Mode::Separate => vec![typed],
        Mode::Combined => {
            let split = split_combined(&typed, &active);
            // The password module gets the password part whatever the code
            // turns out to be: a wrong code and a wrong password look alike.
            let password = split.first().map_or(&typed[..], |(p, _)| &p[..]);
            if let Err(e) = conversation.set_authtok(password) {
                return Outcome::ConversationError(e);
            }
            let codes: Vec<_> = split.into_iter().map(|(_, code)| code).collect();
            if codes.is_empty() {
                vec![Zeroizing::new(Vec::new())]
            } else {
                codes
            }
        }
    };

    if active.is_empty() {
        return Outcome::NotEnrolled {
            pending: !tokens.is_empty(),
        };
    }
    let now = match now(clock) {
        Ok(now) => now,
        Err(outcome) => return outcome,
    };
    let rhost = request.rhost.unwrap_or("");
    let failures = match store.failures(request.user, rhost, now as i64) {
        Ok(failures) => failures,
        Err(e) => return Outcome::StoreError(e.to_string()),
    };
    if let Some(lock) = ratelimit::lock_at(&failures, &config.limits, now as i64) {
        return Outcome::RateLimited(lock);
    }
    let mut outcome = Outcome::MalformedAnswer;
    for candidate in &candidates {
        outcome = check_answer(config, &store, request.user, &active, candidate, now, clock);
        if !outcome.is_failed_guess() {
            break;
        }
    }
    if let (Some(ip), true) = (&grace_ip, outcome.is_code_success()) {
        // Losing this only asks for a code next time: never a reason to deny.
        let _ = store.grant_grace(
            request.user,
            ip,
            (now as i64).saturating_add(config.grace_secs as i64),
        );
    }
    if outcome.is_failed_guess() {
        match store.record_failure(request.user, rhost, now as i64) {
            Ok(f) if ratelimit::reaches_user_limit(f.user_recent, &config.limits) => {
                alerts.push(format!(
                    "user \"{}\" reached {} failed codes within 24 h (latest from \"{}\"): code logins for this user are refused from every untrusted address for 24 h, or until `totpctl unlock`",
                    crate::logline::escape(request.user),
                    f.user_recent,
                    crate::logline::escape(rhost)
                ));
            }
            Ok(_) => {}
            Err(e) => return Outcome::StoreError(format!("recording a failed code: {e}")),
        }
    } else if outcome.is_success() && failures.source_count > 0 {
        // Losing this only keeps an old count: never a reason to deny.
        let _ = store.clear_failures(request.user, rhost);
    }
    outcome
}

/// One way to read a combined answer: (password, code).
type Split = (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>);

/// A combined answer split into (password, code) ways to read it: for each
/// code length of the user's tokens (longest first), if it ends in that
/// many digits; then, if it ends in a recovery code's shape, that. Empty
/// when it ends in neither.
fn split_combined(typed: &[u8], active: &[&Token]) -> Vec<Split> {
    let mut lengths: Vec<usize> = active.iter().map(|t| t.params.digits as usize).collect();
    lengths.sort_unstable_by(|a, b| b.cmp(a));
    lengths.dedup();
    lengths.push(recovery::CODE_TEXT_LEN);
    let mut ways = Vec::new();
    for len in lengths {
        if typed.len() < len {
            continue;
        }
        let (password, code) = typed.split_at(typed.len() - len);
        let shaped = if len == recovery::CODE_TEXT_LEN {
            std::str::from_utf8(code).is_ok_and(|c| recovery::candidate(c).is_some())
        } else {
            code.iter().all(u8::is_ascii_digit)
        };
        if shaped {
            ways.push((
                Zeroizing::new(password.to_vec()),
                Zeroizing::new(code.to_vec()),
            ));
        }
    }
    ways
}

/// The answer against the user's active tokens and recovery codes.
fn check_answer<S: Store>(
    config: &Config,
    store: &S,
    user: &str,
    active: &[&Token],
    answer: &[u8],
    now: u64,
    clock: &dyn Clock,
) -> Outcome {
    let Ok(text) = std::str::from_utf8(answer) else {
        return Outcome::MalformedAnswer;
    };
    let text = text.trim();
    if let Some(candidate) = recovery::candidate(text) {
        return use_recovery(store, user, &candidate, now, Outcome::WrongRecoveryCode);
    }
    match check_code(config, active, text, now) {
        CodeCheck::Match(token, step) => claim(config, store, token, step, now, clock),
        CodeCheck::NoMatch { shaped } => match recovery::scratch_candidate(text) {
            Some(candidate) => {
                let fallback = if shaped {
                    Outcome::WrongCode
                } else {
                    Outcome::MalformedAnswer
                };
                use_recovery(store, user, &candidate, now, fallback)
            }
            None if shaped => Outcome::WrongCode,
            None => Outcome::MalformedAnswer,
        },
    }
}

fn now(clock: &dyn Clock) -> Result<u64, Outcome> {
    clock.unix_time().map_err(Outcome::ClockError)
}

enum CodeCheck<'a> {
    Match(&'a Token, u64),
    /// `shaped`: the answer had the digit count of at least one token.
    NoMatch {
        shaped: bool,
    },
}

/// The step (TOTP) or counter (HOTP) `code` matches for `token` at `now`,
/// or `None`; also `None` when the code is not `digits` ASCII digits. TOTP
/// accepts `window` steps either side of now, HOTP `hotp_window` counters
/// ahead of the stored one.
pub fn match_token(
    token: &Token,
    code: &str,
    now: u64,
    window: u32,
    hotp_window: u32,
) -> Option<u64> {
    let shaped =
        code.len() == token.params.digits as usize && code.bytes().all(|b| b.is_ascii_digit());
    if !shaped {
        return None;
    }
    let key = token.secret.as_bytes();
    match token.kind {
        Kind::Totp => otp::verify_window(
            key,
            code,
            otp::step_at(now, token.params.period),
            window,
            &token.params,
        ),
        Kind::Hotp => otp::verify_counter(
            key,
            code,
            token.last_step.map_or(0, |c| c.saturating_add(1)),
            hotp_window,
            &token.params,
        ),
    }
}

/// Checks the answer against every active token whose code length it has.
/// Every such token is computed in full, so the work does not reveal which
/// token (or whether any) matched.
fn check_code<'a>(config: &Config, active: &[&'a Token], text: &str, now: u64) -> CodeCheck<'a> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return CodeCheck::NoMatch { shaped: false };
    }
    let mut shaped = false;
    let mut found: Option<(&Token, u64)> = None;
    for token in active {
        if text.len() != token.params.digits as usize {
            continue;
        }
        shaped = true;
        let step = match_token(token, text, now, config.window, config.hotp_window);
        if let (None, Some(step)) = (found, step) {
            found = Some((token, step));
        }
    }
    match found {
        Some((token, step)) => CodeCheck::Match(token, step),
        None => CodeCheck::NoMatch { shaped },
    }
}

fn claim<S: Store>(
    config: &Config,
    store: &S,
    token: &Token,
    step: u64,
    now: u64,
    clock: &dyn Clock,
) -> Outcome {
    if token.kind == Kind::Totp && !store.totp_claims_durable() {
        match clock.booted_at() {
            Ok(booted) if before_boot(step, token.params.period, config.window, booted) => {
                return Outcome::StepBeforeBoot {
                    device: token.device.clone(),
                    step,
                };
            }
            Ok(_) => {}
            Err(e) => return Outcome::ClockError(e),
        }
    }
    match store.claim_step(token.id, token.kind, step) {
        Ok(Claim::Claimed) => Outcome::Accepted {
            device: token.device.clone(),
            kind: token.kind,
            step,
            offset: (token.kind == Kind::Totp)
                .then(|| step as i64 - otp::step_at(now, token.params.period) as i64),
        },
        Ok(Claim::AlreadyUsed) => Outcome::Reused {
            device: token.device.clone(),
            step,
        },
        Err(e) => Outcome::StoreError(e.to_string()),
    }
}

/// Tries the answer as one of the user's unused recovery codes; burns it
/// atomically when it matches. `no_match` is the outcome when it does not.
fn use_recovery<S: Store>(
    store: &S,
    user: &str,
    candidate: &Candidate,
    now: u64,
    no_match: Outcome,
) -> Outcome {
    let stored = match store.recovery_candidates(user, &candidate.lookup) {
        Ok(stored) => stored,
        Err(e) => return Outcome::StoreError(e.to_string()),
    };
    let Some(hit) = stored.iter().find(|s| candidate.matches(&s.phc)) else {
        return no_match;
    };
    match store.burn_recovery(hit.id, now as i64) {
        Ok(Claim::Claimed) => match store.recovery_count(user) {
            Ok(count) => Outcome::RecoveryAccepted {
                remaining: count.unused,
            },
            Err(e) => Outcome::StoreError(e.to_string()),
        },
        Ok(Claim::AlreadyUsed) => Outcome::RecoveryReused,
        Err(e) => Outcome::StoreError(e.to_string()),
    }
}

/// Shows a new key (QR code and text) through the conversation, asks for a
/// code from the app, and stores the token only when the code is right.
fn enroll_at_login<S: Store>(
    config: &Config,
    store: &S,
    user: &str,
    clock: &dyn Clock,
    conversation: &mut dyn Conversation,
    via: EnrollVia,
) -> Outcome {
    let secret = match Secret::generate() {
        Ok(secret) => secret,
        Err(e) => return Outcome::EnrollmentFailed(e.to_string()),
    };
    let params = Params::default();
    let issuer = config.issuer.clone().unwrap_or_else(host_name);
    let uri = enroll::otpauth_uri(&secret, &issuer, user, Kind::Totp, &params, 0);
    let qr = match enroll::qr_terminal(&uri, false) {
        Ok(qr) => qr,
        Err(e) => return Outcome::EnrollmentFailed(e.to_string()),
    };
    let text = Zeroizing::new(format!(
        "You have no authenticator token yet. Scan this QR code with your \
         authenticator app, or add the key by hand, then enter the code it shows.\n\
         {}\nKey: {}\n",
        qr.as_str(),
        secret.to_base32_grouped().as_str()
    ));
    if let Err(e) = conversation.info(&text) {
        return Outcome::ConversationError(e);
    }
    let answer = match conversation.ask_hidden(CONFIRM_PROMPT) {
        Ok(answer) => answer,
        Err(e) => return Outcome::ConversationError(e),
    };

    let now = match now(clock) {
        Ok(now) => now,
        Err(outcome) => return outcome,
    };
    let token = Token {
        id: 0,
        user: user.to_string(),
        device: DEFAULT_DEVICE.to_string(),
        kind: Kind::Totp,
        secret,
        params,
        created: now as i64,
        confirmed: Some(now as i64),
        last_step: None,
    };
    let code = std::str::from_utf8(&answer).unwrap_or("").trim();
    let Some(step) = match_token(&token, code, now, config.window, config.hotp_window) else {
        return Outcome::EnrollmentFailed("wrong confirmation code; nothing stored".to_string());
    };
    match store.enroll_at_login(&token, step) {
        Ok(()) => Outcome::EnrolledAtLogin { via },
        Err(StoreError::AlreadyEnrolled { .. }) => {
            Outcome::EnrollmentFailed("the user got a token meanwhile; nothing stored".to_string())
        }
        Err(e) => Outcome::StoreError(e.to_string()),
    }
}

/// The issuer shown in apps when none is configured.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pam_totp".to_string())
}

#[cfg(test)]
mod tests;
