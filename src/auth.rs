//! The decision: configuration + store + clock + rhost + the user's answer
//! in, one `Outcome` out. No PAM here: `pam.rs` supplies the conversation
//! and turns the outcome into a return code and a log line.

use zeroize::Zeroizing;

use crate::config::{self, Config, EnrollAtLogin, Mode, Unenrolled};
use crate::enroll;
use crate::network;
use crate::otp::{self, Params};
use crate::ratelimit::{self, Failures, Lock};
use crate::recovery::{self, Candidate};
use crate::secret::Secret;
use crate::sshkey::LoginKey;
use crate::store::{
    Answer, Claim, DEFAULT_DEVICE, Grant, Kind, LoginStore, Reservation, Settled, StoreError, Token,
};
use crate::sys::{self, Accounts};

/// What sshd hands to PAM instead of the user's answer when it has already
/// decided to refuse the login (unknown user, root under `PermitRootLogin
/// prohibit-password`, a denied user): this pattern, repeated or cut to the
/// length of what the user typed. sshd keeps asking so the client cannot
/// tell; we recognise it so the log can say so.
pub const SSHD_PLACEHOLDER: &[u8] = b"\x08\n\r\x7fINCORRECT";

/// The prompt for the first code of a token enrolled at login.
pub const CONFIRM_PROMPT: &str = "Code from your app, to confirm: ";

/// Confirmation codes asked, with the same key, before enrollment at login
/// gives up.
pub const CONFIRM_ATTEMPTS: u32 = 3;

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
    /// A right code with the same SSH key earlier, within `grace_key=`: no
    /// code asked until `until`.
    KeyGrace {
        fingerprint: String,
        until: i64,
    },
    /// An automation grant (`totpctl allow-automation`) names this key of
    /// this user and the client's network: no code asked.
    Automation {
        id: i64,
        fingerprint: String,
        ip: String,
        until: i64,
        reason: String,
    },
    /// An unenrolled user was shown a new key during this login and
    /// confirmed it with a code. The token is staged: it is stored only
    /// once the whole auth stack has succeeded (`commit_staged`).
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
    /// Every confirmed token of the user is stopped ("disabled" or
    /// "expired"): prompted anyway, then denied, whatever `unenrolled=`.
    NoUsableToken(&'static str),
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
    /// The store failed: unreachable for now, or broken (see `StoreFault`).
    StoreError(StoreFault),
    /// PAM_USER is a name NSS does not know: prompted, then denied.
    UnknownUser,
    ConfigError(String),
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
                | Outcome::KeyGrace { .. }
                | Outcome::Automation { .. }
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
    /// The canonical user name (NSS), once it was looked up.
    pub user: Option<String>,
    pub alerts: Vec<String>,
    /// Lines for the log besides the outcome's (an SSH key not used, and
    /// why; an automation grant that has ended).
    pub notices: Vec<String>,
    pub trace: Vec<String>,
    /// How long libpam should hold a failure back (`fail_delay=`).
    pub fail_delay_ms: u32,
    /// The nonce of what this login staged (an enrollment at login, a
    /// grace): `pam.rs` keeps it in the PAM environment for the account or
    /// setcred phase, which commits it.
    pub staged: Option<Zeroizing<String>>,
}

impl Decision {
    /// A decision made before the configuration could be read.
    pub fn early(outcome: Outcome) -> Decision {
        Decision {
            outcome,
            user: None,
            alerts: Vec::new(),
            notices: Vec::new(),
            trace: Vec::new(),
            fail_delay_ms: config::DEFAULT_FAIL_DELAY_MS,
            staged: None,
        }
    }
}

/// Who is logging in and from where, as PAM reports it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub user: &'a str,
    pub rhost: Option<&'a str>,
    /// The SSH key this login used, as far as it can be believed
    /// (`pam.rs` reads it from sshd's `SSH_AUTH_INFO_0`).
    pub ssh_key: &'a LoginKey,
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
        sys::unix_time()
    }

    fn booted_at(&self) -> Result<u64, String> {
        // Uptime is whole seconds, rounded down: the estimate is at or
        // after the real boot, the safe side.
        Ok(self.unix_time()?.saturating_sub(sys::uptime()?))
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
pub fn authenticate<S: LoginStore>(
    args: &[String],
    request: Request<'_>,
    open_store: impl FnOnce(&Config) -> Result<S, StoreError>,
    clock: &dyn Clock,
    accounts: &dyn Accounts,
    conversation: &mut dyn Conversation,
) -> Decision {
    authenticate_loaded(
        config::load(args),
        request,
        open_store,
        clock,
        accounts,
        conversation,
    )
}

/// `authenticate` with the configuration already loaded (the module built
/// without the PostgreSQL client loads it first, to see which store it
/// names, and loads it only once).
pub fn authenticate_loaded<S: LoginStore>(
    loaded: Result<Config, config::ConfigError>,
    request: Request<'_>,
    open_store: impl FnOnce(&Config) -> Result<S, StoreError>,
    clock: &dyn Clock,
    accounts: &dyn Accounts,
    conversation: &mut dyn Conversation,
) -> Decision {
    let config = match loaded {
        Ok(config) => config,
        Err(e) => return Decision::early(Outcome::ConfigError(e.to_string())),
    };
    let mut decision = decide(&config, request, open_store, clock, accounts, conversation);
    if config.debug {
        decision.trace.push(config_trace(&config));
    }
    decision
}

/// The settings that led to a decision, for `debug` (never a secret).
fn config_trace(config: &Config) -> String {
    format!(
        "config: db={} window={} hotp_window={} trusted={} unenrolled={:?} enroll={:?} limits={:?} prompt={:?} mode={:?} grace={}s grace_key={}s exempt_users={:?} exempt_groups={:?} db_timeout={}s key_file={}{}",
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
        config.grace_key_secs,
        config.exempt_users,
        config.exempt_groups,
        config.db_timeout.as_secs(),
        config.key_file.display(),
        if config.key_file_named {
            ""
        } else {
            " (if present)"
        },
    )
}

/// How long a staged grant waits for the phase that commits it. sshd runs
/// the account phase right after the auth phase (in the same process for
/// keyboard-interactive) and `pam_setcred` when the session starts, after
/// any further authentication methods: minutes at most.
pub const STAGE_TTL_SECS: i64 = 600;

/// The decision for one login with a valid configuration.
///
/// The order of the phases is the security property: who the user is
/// (NSS), what lets them in without a code, the answer, a guess reserved
/// against the limits *before* the answer is checked, the check with its
/// atomic claim, and last what the login would grant, staged, never
/// granted here.
pub fn decide<S: LoginStore>(
    config: &Config,
    request: Request<'_>,
    open_store: impl FnOnce(&Config) -> Result<S, StoreError>,
    clock: &dyn Clock,
    accounts: &dyn Accounts,
    conversation: &mut dyn Conversation,
) -> Decision {
    let mut login = Login {
        config,
        rhost: request.rhost,
        ssh_key: request.ssh_key,
        clock,
        user: String::new(),
        alerts: Vec::new(),
        notices: Vec::new(),
        staged: None,
    };
    let outcome = login
        .run(request.user, open_store, accounts, conversation)
        .unwrap_or_else(|end| end);
    if config.messages
        && let Some(text) = user_message(&outcome, clock.unix_time().unwrap_or(0))
    {
        // The message is a courtesy: the outcome stands without it.
        let _ = conversation.info(&text);
    }
    Decision {
        outcome,
        user: (!login.user.is_empty()).then_some(login.user),
        alerts: login.alerts,
        notices: login.notices,
        trace: Vec::new(),
        fail_delay_ms: config.fail_delay_ms,
        staged: login.staged,
    }
}

/// What the user is told about an outcome they can act on (`messages=yes`).
/// Only what someone without the code learns nothing from: "already used"
/// and "before the restart" follow a right code only; a back-off is what
/// a guesser meets anyway, and saying so stops an honest user retrying.
pub fn user_message(outcome: &Outcome, now: u64) -> Option<String> {
    let minutes = |until: i64| {
        let left = until.saturating_sub(now as i64).max(1);
        (left + 59) / 60
    };
    Some(match outcome {
        Outcome::Reused { .. } => {
            "This code was already used. Wait for the next code from your app, then try again."
                .to_string()
        }
        Outcome::StepBeforeBoot { .. } => "This machine has just restarted and cannot accept \
            this code yet. Wait for the next code from your app, then try again."
            .to_string(),
        Outcome::RecoveryReused => "This recovery code was already used.".to_string(),
        Outcome::RateLimited(Lock::Source { until }) => format!(
            "Too many wrong codes from this address: try again in {} min.",
            minutes(*until)
        ),
        Outcome::RateLimited(Lock::User { until }) => format!(
            "Too many wrong codes for this account: code logins are blocked until {} UTC, \
             or until your help desk unlocks the account.",
            crate::logline::utc(*until)
        ),
        Outcome::RecoveryAccepted { remaining: 0 } => "Recovery code accepted. That was your \
            last one: set up your authenticator again or ask your help desk for new codes."
            .to_string(),
        Outcome::RecoveryAccepted { remaining } => format!(
            "Recovery code accepted: {remaining} left. If your phone is lost, set up a new \
             one before they run out."
        ),
        _ => return None,
    })
}

/// A code typed as apps show it, in two groups ("700 102"), without the
/// space; any other answer as typed (trimmed).
pub fn ungrouped(text: &str) -> Zeroizing<String> {
    let text = text.trim();
    let mut parts = text.splitn(2, ' ');
    if let (Some(first), Some(second)) = (parts.next(), parts.next())
        && !first.is_empty()
        && !second.is_empty()
        && first
            .bytes()
            .chain(second.bytes())
            .all(|b| b.is_ascii_digit())
    {
        let mut joined = Zeroizing::new(String::with_capacity(text.len()));
        joined.push_str(first);
        joined.push_str(second);
        return joined;
    }
    Zeroizing::new(text.to_string())
}

/// One login's state as the phases fill it in. Every phase returns
/// `Err(outcome)` to end the login early, so `?` does the early returns.
struct Login<'a> {
    config: &'a Config,
    rhost: Option<&'a str>,
    ssh_key: &'a LoginKey,
    clock: &'a dyn Clock,
    /// The canonical user name (NSS), once known.
    user: String,
    alerts: Vec<String>,
    notices: Vec<String>,
    staged: Option<Zeroizing<String>>,
}

type Phase<T> = Result<T, Outcome>;

impl Login<'_> {
    fn run<S: LoginStore>(
        &mut self,
        pam_user: &str,
        open_store: impl FnOnce(&Config) -> Result<S, StoreError>,
        accounts: &dyn Accounts,
        conversation: &mut dyn Conversation,
    ) -> Phase<Outcome> {
        self.resolve_user(pam_user, accounts, conversation)?;
        if let Some(reason) = exemption(self.config, &self.user, accounts) {
            return Ok(Outcome::Exempt { reason });
        }
        if let Some(reason) = outside_pilot(self.config, &self.user, accounts)? {
            return Ok(Outcome::Exempt { reason });
        }
        let trusted_ip = self.trusted_ip();
        // Fast path: a trusted source needs no store unless it may enroll.
        if let Some(ip) = &trusted_ip
            && self.config.enroll != EnrollAtLogin::Trusted
        {
            return Ok(Outcome::TrustedNetwork { ip: ip.clone() });
        }
        let store = open_store(self.config).map_err(store_error)?;
        let tokens = store.tokens(&self.user).map_err(store_error)?;
        self.without_code(&store, &tokens, trusted_ip, conversation)?;
        let now = self.now()? as i64;
        let active: Vec<&Token> = tokens.iter().filter(|t| t.usable_at(now)).collect();
        // Tokens an administrator stopped (disabled, expired) keep the user
        // enrolled: never `unenrolled=allow`'s way around the code.
        let stopped = tokens
            .iter()
            .filter(|t| t.is_active())
            .find_map(|t| t.life.stopped_at(now));
        if active.is_empty() && stopped.is_none() && self.config.unenrolled == Unenrolled::Allow {
            return Ok(Outcome::NotEnrolledIgnored);
        }
        if let LoginKey::Refused(why) = self.ssh_key {
            // `why` is the parser's own text (its parts of the value
            // escaped); the whole line passes `one_line` in `pam/`.
            self.notices
                .push(format!("the SSH key of this login is not used: {why}"));
        }
        // An administrator's stop (disable, expiry) also stops automation.
        if !(active.is_empty() && stopped.is_some()) {
            self.automation(&store)?;
        }
        let grace_key = self.grace_key();
        if let Some(fingerprint) = &grace_key
            && !active.is_empty()
        {
            self.key_grace(&store, fingerprint)?;
        }
        let grace_ip = self.grace_ip();
        if let Some(ip) = &grace_ip
            && !active.is_empty()
        {
            self.grace(&store, ip)?;
        }
        let candidates = self.answer(&active, conversation)?;
        if active.is_empty() {
            dummy_check(self.config, &candidates);
            if let Some(why) = stopped {
                return Ok(Outcome::NoUsableToken(why));
            }
            return Ok(Outcome::NotEnrolled {
                pending: !tokens.is_empty(),
            });
        }
        let now = self.now()?;
        // A code (the common answer) is checked in memory and settled in one
        // write; an answer that may be a recovery code takes the slow way:
        // its hash is too slow to check while the store is held.
        let (outcome, failures) = match plan(
            self.config,
            &active,
            &tokens,
            &candidates,
            now,
            store.totp_claims_durable(),
            self.clock,
        )? {
            Some(planned) => self.settle(&store, planned, now)?,
            None => {
                let failures = self.reserve_guess(&store, now)?;
                let outcome = self.verify(&store, &active, &tokens, &candidates, now);
                self.give_back(&store, &outcome, now);
                (outcome, failures)
            }
        };
        self.record(
            &store,
            &outcome,
            failures,
            now,
            grace_ip.as_deref(),
            grace_key.as_deref(),
        );
        Ok(outcome)
    }

    /// Phase 1: the user is who NSS says. A name NSS does not know is
    /// prompted like any other (the prompt reveals nothing), then denied.
    fn resolve_user(
        &mut self,
        pam_user: &str,
        accounts: &dyn Accounts,
        conversation: &mut dyn Conversation,
    ) -> Phase<()> {
        if pam_user.is_empty() {
            return Err(Outcome::NoUser("empty user name".to_string()));
        }
        match accounts.canonical_user(pam_user) {
            Ok(Some(name)) if !name.is_empty() => {
                self.user = name;
                Ok(())
            }
            Ok(_) => {
                let typed = ask(self.config, conversation)?;
                if is_sshd_placeholder(&typed) {
                    return Err(Outcome::RefusedBySshd);
                }
                dummy_check(self.config, &[typed]);
                Err(Outcome::UnknownUser)
            }
            Err(e) => Err(Outcome::NoUser(format!("user lookup failed: {e}"))),
        }
    }

    /// Phase 2: what lets the user in without a code (a trusted network,
    /// enrollment at login); `Ok(())` when a code is needed.
    fn without_code<S: LoginStore>(
        &mut self,
        store: &S,
        tokens: &[Token],
        trusted_ip: Option<String>,
        conversation: &mut dyn Conversation,
    ) -> Phase<()> {
        if let Some(ip) = trusted_ip {
            return Err(if tokens.is_empty() {
                self.enroll_at_login(store, conversation, EnrollVia::TrustedNetwork)
            } else {
                Outcome::TrustedNetwork { ip }
            });
        }
        if tokens.is_empty() && self.config.enroll == EnrollAtLogin::Window {
            let now = self.now()?;
            if store
                .enroll_window(&self.user, now as i64)
                .map_err(store_error)?
                .is_some()
            {
                return Err(self.enroll_at_login(store, conversation, EnrollVia::AdminWindow));
            }
        }
        Ok(())
    }

    /// A right code from this address earlier, within `grace=`.
    fn grace<S: LoginStore>(&self, store: &S, ip: &str) -> Phase<()> {
        let now = self.now()?;
        match store
            .grace_until(&self.user, ip, now as i64)
            .map_err(store_error)?
        {
            Some(until) => Err(Outcome::Grace {
                ip: ip.to_string(),
                until,
            }),
            None => Ok(()),
        }
    }

    /// A right code with this SSH key earlier, within `grace_key=`.
    fn key_grace<S: LoginStore>(&self, store: &S, fingerprint: &str) -> Phase<()> {
        let now = self.now()?;
        match store
            .key_grace_until(&self.user, fingerprint, now as i64)
            .map_err(store_error)?
        {
            Some(until) => Err(Outcome::KeyGrace {
                fingerprint: fingerprint.to_string(),
                until,
            }),
            None => Ok(()),
        }
    }

    /// An automation grant in force for this key, from this address. A
    /// grant whose stored networks do not parse admits no one (logged); a
    /// grant that has expired is logged when its key comes back.
    fn automation<S: LoginStore>(&mut self, store: &S) -> Phase<()> {
        let Some(key) = self.ssh_key.key() else {
            return Ok(());
        };
        let grants = store
            .automation_for_key(&self.user, &key.fingerprint)
            .map_err(store_error)?;
        if grants.is_empty() {
            return Ok(());
        }
        let now = self.now()? as i64;
        let ip = self.rhost.and_then(network::rhost_ip);
        for grant in &grants {
            if grant.revoked.is_some() {
                continue;
            }
            let reason = crate::logline::escape(&grant.reason);
            if !grant.in_force(now) {
                self.notices.push(format!(
                    "automation grant #{} for key {} expired at {} UTC (reason \"{reason}\"): not used, a code is asked",
                    grant.id,
                    key.fingerprint,
                    crate::logline::utc(grant.until)
                ));
                continue;
            }
            // Longer than this module's `automation_max=` allows (made
            // under a looser bound, or the bound lowered since): unused.
            let length = grant.until.saturating_sub(grant.created);
            if length > i64::try_from(self.config.automation_max_secs).unwrap_or(i64::MAX) {
                self.notices.push(format!(
                    "automation grant #{} for key {} is not used: it runs {} s from its making, longer than automation_max={} s (reason \"{reason}\"); a code is asked",
                    grant.id, key.fingerprint, length, self.config.automation_max_secs
                ));
                continue;
            }
            let networks = match grant.parsed_networks() {
                Ok(networks) => networks,
                Err(why) => {
                    self.notices.push(format!(
                        "automation grant #{} is not used: its networks do not parse ({}); it admits no one",
                        grant.id,
                        crate::logline::escape(&why)
                    ));
                    continue;
                }
            };
            match ip {
                Some(ip) if networks.iter().any(|n| n.contains(&ip)) => {
                    return Err(Outcome::Automation {
                        id: grant.id,
                        fingerprint: key.fingerprint.clone(),
                        ip: ip.to_string(),
                        until: grant.until,
                        reason: grant.reason.clone(),
                    });
                }
                _ => self.notices.push(format!(
                    "automation grant #{} for key {} is not used: the client {} is outside its networks {} (reason \"{reason}\")",
                    grant.id,
                    key.fingerprint,
                    crate::logline::escape(self.rhost.unwrap_or("")),
                    crate::logline::escape(&grant.networks)
                )),
            }
        }
        Ok(())
    }

    /// Phase 3: the answer, as the ways it can be read (one, or for a
    /// combined answer one per code length that fits).
    fn answer(
        &self,
        active: &[&Token],
        conversation: &mut dyn Conversation,
    ) -> Phase<Vec<Zeroizing<Vec<u8>>>> {
        // Prompt even for unenrolled users, so the prompt reveals nothing.
        let typed = ask(self.config, conversation)?;
        if is_sshd_placeholder(&typed) {
            return Err(Outcome::RefusedBySshd);
        }
        Ok(match self.config.mode {
            Mode::Separate => vec![typed],
            Mode::Combined => {
                let split = split_combined(&typed, active);
                // The password module gets the password part whatever the
                // code turns out to be: a wrong code and a wrong password
                // look alike.
                let password = split.first().map_or(&typed[..], |(p, _)| &p[..]);
                conversation
                    .set_authtok(password)
                    .map_err(Outcome::ConversationError)?;
                let codes: Vec<_> = split.into_iter().map(|(_, code)| code).collect();
                if codes.is_empty() {
                    vec![Zeroizing::new(Vec::new())]
                } else {
                    codes
                }
            }
        })
    }

    /// Phases 4 and 5 for a code checked in memory (`plan`): the guess is
    /// taken against the limits, counted, and, for a right code, the step
    /// claimed and the guess given back, in one transaction. A refused
    /// guess claims nothing and counts nothing; an error leaves nothing
    /// behind and reports nothing about the code.
    fn settle<S: LoginStore>(
        &self,
        store: &S,
        planned: Planned<'_>,
        now: u64,
    ) -> Phase<(Outcome, Failures)> {
        let answer = match &planned {
            Planned::Wrong(_) => Answer::Wrong,
            Planned::Refused(_) => Answer::Refused,
            Planned::Right(token, step, false) => Answer::Right { token, step: *step },
            Planned::Right(token, step, true) => Answer::RightOnSharedKey { token, step: *step },
        };
        let settled = store
            .settle_guess(
                &self.user,
                self.rhost_key(),
                now as i64,
                &self.config.limits,
                answer,
            )
            .map_err(store_error)?;
        let no_failures = Failures::default();
        match (settled, planned) {
            (Settled::Locked(lock), _) => Err(Outcome::RateLimited(lock)),
            (Settled::Counted(failures), Planned::Wrong(outcome)) => Ok((outcome, failures)),
            (Settled::GivenBack(None), Planned::Refused(outcome)) => Ok((outcome, no_failures)),
            (Settled::GivenBack(Some(claim)), Planned::Right(token, step, _)) => {
                Ok((claimed(token, step, now, claim), no_failures))
            }
            // A store that answers another question than the one asked.
            (settled, _) => Err(Outcome::StoreError(StoreFault {
                unavailable: false,
                message: format!("the guess was settled as {settled:?}, not as asked"),
            })),
        }
    }

    /// Phase 4: one guess taken against the limits before the answer is
    /// looked at. A refused guess checks nothing and burns nothing.
    fn reserve_guess<S: LoginStore>(&self, store: &S, now: u64) -> Phase<Failures> {
        match store
            .reserve_guess(
                &self.user,
                self.rhost_key(),
                now as i64,
                &self.config.limits,
            )
            .map_err(store_error)?
        {
            Reservation::Granted(failures) => Ok(failures),
            Reservation::Locked(lock) => Err(Outcome::RateLimited(lock)),
        }
    }

    /// Phase 5: the answer against the tokens and recovery codes; a match
    /// is claimed atomically.
    fn verify<S: LoginStore>(
        &self,
        store: &S,
        active: &[&Token],
        all: &[Token],
        candidates: &[Zeroizing<Vec<u8>>],
        now: u64,
    ) -> Outcome {
        let mut outcome = Outcome::MalformedAnswer;
        for candidate in candidates {
            outcome = check_answer(
                self.config,
                store,
                &self.user,
                Devices {
                    usable: active,
                    all,
                },
                candidate,
                now,
                self.clock,
            );
            if !outcome.is_failed_guess() {
                break;
            }
        }
        outcome
    }

    /// After the slow way's check: a wrong guess stays counted, and so does
    /// the guess of a store error (an error never gives one back); anything
    /// else gives the guess back.
    fn give_back<S: LoginStore>(&self, store: &S, outcome: &Outcome, now: u64) {
        if outcome.is_failed_guess() || matches!(outcome, Outcome::StoreError(_)) {
            return;
        }
        // Losing this only keeps one more failure counted: never a reason
        // to deny.
        let _ = store.release_guess(
            &self.user,
            self.rhost_key(),
            outcome.is_success(),
            now as i64,
        );
    }

    /// Phase 6: a wrong guess may raise the alert; a right code stages its
    /// grace.
    fn record<S: LoginStore>(
        &mut self,
        store: &S,
        outcome: &Outcome,
        failures: Failures,
        now: u64,
        grace_ip: Option<&str>,
        grace_key: Option<&str>,
    ) {
        if outcome.is_failed_guess() {
            if ratelimit::reaches_user_limit(failures.user_recent, &self.config.limits) {
                self.alerts.push(format!(
                    "user \"{}\" reached {} failed codes within 24 h (latest from \"{}\"): code logins for this user are refused from every untrusted address for 24 h, or until `totpctl unlock`",
                    crate::logline::escape(&self.user),
                    failures.user_recent,
                    crate::logline::escape(self.rhost_key())
                ));
            }
            return;
        }
        if outcome.is_code_success() && (grace_ip.is_some() || grace_key.is_some()) {
            let grant = Grant::Grace {
                ip: grace_ip.map(|ip| {
                    (
                        ip.to_string(),
                        (now as i64).saturating_add(self.config.grace_secs as i64),
                    )
                }),
                key: grace_key.map(|fingerprint| {
                    (
                        fingerprint.to_string(),
                        (now as i64).saturating_add(self.config.grace_key_secs as i64),
                    )
                }),
            };
            // Losing the stage only asks for a code next time.
            let _ = self.stage(store, &grant, now);
        }
    }

    /// Stages `grant` under a fresh nonce that only this PAM transaction
    /// will hold (`Decision::staged`).
    fn stage<S: LoginStore>(
        &mut self,
        store: &S,
        grant: &Grant,
        now: u64,
    ) -> Result<(), StoreError> {
        let nonce = new_nonce()?;
        store.stage_grant(
            &nonce_digest(&nonce),
            &self.user,
            grant,
            (now as i64).saturating_add(STAGE_TTL_SECS),
            now as i64,
        )?;
        self.staged = Some(nonce);
        Ok(())
    }

    /// Shows a new key (QR code and text) through the conversation, asks for
    /// a code from the app and, when it is right, stages the token: it is
    /// stored only once the whole login has succeeded.
    fn enroll_at_login<S: LoginStore>(
        &mut self,
        store: &S,
        conversation: &mut dyn Conversation,
        via: EnrollVia,
    ) -> Outcome {
        let secret = match Secret::generate() {
            Ok(secret) => secret,
            Err(e) => return Outcome::EnrollmentFailed(e.to_string()),
        };
        let params = Params::default();
        let issuer = self.config.issuer.clone().unwrap_or_else(sys::host_name);
        let uri = enroll::otpauth_uri(&secret, &issuer, &self.user, Kind::Totp, &params, 0);
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
        let now = match self.now() {
            Ok(now) => now,
            Err(outcome) => return outcome,
        };
        let token = Token {
            id: 0,
            user: self.user.clone(),
            device: DEFAULT_DEVICE.to_string(),
            kind: Kind::Totp,
            secret,
            params,
            created: now as i64,
            confirmed: Some(now as i64),
            last_step: None,
            life: Default::default(),
            stored_key: Default::default(),
        };
        // A mistyped code is asked again with the same key: the phone
        // already holds it, and a new key would leave a dead entry there.
        let mut confirmed = None;
        for attempt in 1..=CONFIRM_ATTEMPTS {
            let answer = match conversation.ask_hidden(CONFIRM_PROMPT) {
                Ok(answer) => answer,
                Err(e) => return Outcome::ConversationError(e),
            };
            let code = ungrouped(std::str::from_utf8(&answer).unwrap_or(""));
            let now = match self.now() {
                Ok(now) => now,
                Err(outcome) => return outcome,
            };
            confirmed = match_token(
                &token,
                &code,
                now,
                self.config.window,
                self.config.hotp_window,
            );
            if confirmed.is_some() {
                break;
            }
            if attempt < CONFIRM_ATTEMPTS
                && let Err(e) = conversation.info(
                    "That code does not match. Enter the newest code the app shows for this \
                     entry (and check that the phone sets its clock automatically).",
                )
            {
                return Outcome::ConversationError(e);
            }
        }
        let Some(step) = confirmed else {
            return Outcome::EnrollmentFailed(format!(
                "{CONFIRM_ATTEMPTS} wrong confirmation codes; nothing stored"
            ));
        };
        // Recovery codes come with the token. Failing to make them only
        // leaves the user without (totpctl can make a set later).
        let (shown, recovery): (Vec<_>, Vec<_>) =
            recovery::generate().unwrap_or_default().into_iter().unzip();
        let grant = Grant::Enroll {
            token,
            step,
            recovery,
        };
        if let Err(e) = self.stage(store, &grant, now) {
            return store_error(e);
        }
        let mut text = Zeroizing::new(String::from(
            "Code confirmed: your authenticator app is set up, and will be asked for at \
             every login once this one completes.\n",
        ));
        if !shown.is_empty() {
            text.push_str(
                "Your recovery codes, each good for one login without the phone. Write them \
                 down or store them safely now: they are not shown again.\n",
            );
            for code in &shown {
                text.push_str("  ");
                text.push_str(code.as_str());
                text.push('\n');
            }
        }
        if let Err(e) = conversation.info(&text) {
            return Outcome::ConversationError(e);
        }
        Outcome::EnrolledAtLogin { via }
    }

    fn trusted_ip(&self) -> Option<String> {
        network::is_trusted(self.rhost, &self.config.trusted)
            .then(|| self.rhost.and_then(network::rhost_ip))
            .flatten()
            .map(|ip| ip.to_string())
    }

    /// The fingerprint a key grace is looked up and granted for: with
    /// `grace_key=` set and a key sshd named. A key that cannot be
    /// believed is logged here (once per login), and a code is asked.
    fn grace_key(&mut self) -> Option<String> {
        if self.config.grace_key_secs == 0 {
            return None;
        }
        match self.ssh_key {
            LoginKey::Key(key) => Some(key.fingerprint.clone()),
            // Logged by `run`, whatever grace_key= says.
            LoginKey::NoKey | LoginKey::Refused(_) => None,
            LoginKey::Unknown(why) => {
                self.notices.push(format!(
                    "grace_key: the SSH key of this login is not used ({why}); a code is asked"
                ));
                None
            }
        }
    }

    fn grace_ip(&self) -> Option<String> {
        (self.config.grace_secs > 0)
            .then(|| self.rhost.and_then(network::rhost_ip))
            .flatten()
            .map(|ip| ip.to_string())
    }

    /// The source the per-address back-off is kept for.
    fn rhost_key(&self) -> &str {
        self.rhost.unwrap_or("")
    }

    fn now(&self) -> Phase<u64> {
        now(self.clock)
    }
}

fn store_error(e: StoreError) -> Outcome {
    Outcome::StoreError(StoreFault::from(&e))
}

/// Why the store failed, kept typed as far as `pam.rs`: a store that is
/// only unavailable (PAM_AUTHINFO_UNAVAIL) is not a broken one
/// (PAM_SERVICE_ERR), so a stack that tolerates the first (for example
/// `[authinfo_unavail=…]`) never tolerates the second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFault {
    pub unavailable: bool,
    pub message: String,
}

impl From<&StoreError> for StoreFault {
    fn from(e: &StoreError) -> StoreFault {
        StoreFault {
            unavailable: e.is_unavailable(),
            message: e.to_string(),
        }
    }
}

fn ask(config: &Config, conversation: &mut dyn Conversation) -> Phase<Zeroizing<Vec<u8>>> {
    conversation
        .ask_hidden(config.effective_prompt())
        .map_err(Outcome::ConversationError)
}

/// The HMAC work of checking a code, against a key nobody has, for the
/// answers of users who have no token (unknown to NSS, or not enrolled):
/// the time from answer to result then does not depend on whether a token
/// was there to check (see SECURITY.md for what still differs).
fn dummy_check(config: &Config, candidates: &[Zeroizing<Vec<u8>>]) {
    let key = [0x5au8; 20];
    let params = Params::default();
    for candidate in candidates {
        let text = ungrouped(std::str::from_utf8(candidate).unwrap_or(""));
        let _ = otp::verify_window(&key, &text, 0, config.window, &params);
    }
}

/// A fresh secret for one PAM transaction: 32 random bytes, hex.
fn new_nonce() -> Result<Zeroizing<String>, StoreError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut *bytes).map_err(|e| StoreError::Io {
        path: "getrandom".to_string(),
        reason: e.to_string(),
    })?;
    let mut hex = Zeroizing::new(String::with_capacity(64));
    for b in bytes.iter() {
        hex.push_str(&format!("{b:02x}"));
    }
    Ok(hex)
}

/// What the store keeps of a nonce: its SHA-256, so that a store reader
/// learns nothing that could be put into a PAM environment.
pub fn nonce_digest(nonce: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(nonce.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How committing a staged grant ended (the account or setcred phase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// This transaction staged nothing.
    Nothing,
    /// The token enrolled at login is now stored.
    Enrolled { device: String },
    /// The grace from an address and/or for an SSH key now runs until its
    /// time.
    Grace {
        ip: Option<(String, i64)>,
        key: Option<(String, i64)>,
    },
    /// A grace could not be stored: logged, the login goes on (it only
    /// asks for a code next time).
    GraceLost(String),
    /// A nonce without its staged row: expired, taken already, or the
    /// account line names another store than the auth line.
    Missing,
    /// The enrollment could not be stored: the login is denied.
    Failed(String),
}

/// Commits what this transaction's auth phase staged for `pam_user`.
/// Called only from phases PAM reaches after the whole auth stack
/// succeeded.
pub fn commit_staged<S: LoginStore>(
    config: &Config,
    pam_user: &str,
    nonce: &str,
    open_store: impl FnOnce(&Config) -> Result<S, StoreError>,
    clock: &dyn Clock,
    accounts: &dyn Accounts,
) -> Commit {
    let user = match accounts.canonical_user(pam_user) {
        Ok(Some(user)) => user,
        Ok(None) => return Commit::Failed(format!("user {pam_user:?} is unknown to NSS")),
        Err(e) => return Commit::Failed(format!("user lookup failed: {e}")),
    };
    let now = match clock.unix_time() {
        Ok(now) => now as i64,
        Err(e) => return Commit::Failed(format!("clock error: {e}")),
    };
    let store = match open_store(config) {
        Ok(store) => store,
        Err(e) => return Commit::Failed(format!("store error: {e}")),
    };
    let grant = match store.take_staged(&nonce_digest(nonce), &user, now) {
        Ok(Some(grant)) => grant,
        Ok(None) => return Commit::Missing,
        Err(e) => return Commit::Failed(format!("store error: {e}")),
    };
    match grant {
        Grant::Enroll {
            token,
            step,
            recovery,
        } => match store.enroll_at_login(&token, step, &recovery) {
            Ok(()) => Commit::Enrolled {
                device: token.device,
            },
            Err(StoreError::AlreadyEnrolled { .. }) => Commit::Failed(
                "the user got a token meanwhile; the token confirmed at login was not stored"
                    .to_string(),
            ),
            Err(e) => Commit::Failed(format!("store error: {e}")),
        },
        Grant::Grace { ip, key } => {
            if let Some((ip, until)) = &ip
                && let Err(e) = store.grant_grace(&user, ip, *until)
            {
                return Commit::GraceLost(e.to_string());
            }
            if let Some((fingerprint, until)) = &key
                && let Err(e) = store.grant_key_grace(&user, fingerprint, *until)
            {
                return Commit::GraceLost(e.to_string());
            }
            Commit::Grace { ip, key }
        }
    }
}

/// Why `user` needs no code, if they are exempt. A group lookup that fails
/// (NSS or LDAP down) exempts no one: the code is asked.
fn exemption(config: &Config, user: &str, accounts: &dyn Accounts) -> Option<String> {
    if config.exempt_users.iter().any(|u| u == user) {
        return Some("listed in exempt_user".to_string());
    }
    if config.exempt_groups.is_empty() {
        return None;
    }
    let member_of = accounts.groups_of(user).ok()?;
    config
        .exempt_groups
        .iter()
        .find(|g| member_of.contains(g))
        .map(|g| format!("member of exempt group {g:?}"))
}

/// Why `user` needs no code under `only_group=` (a pilot), if they are
/// outside it. Every named group must exist: a typo denies every login
/// (`ConfigError`) rather than exempting everyone. A lookup that fails
/// (the group's or the user's) keeps the user in the pilot: the code is
/// asked.
fn outside_pilot(config: &Config, user: &str, accounts: &dyn Accounts) -> Phase<Option<String>> {
    if config.only_groups.is_empty() {
        return Ok(None);
    }
    for group in &config.only_groups {
        match accounts.group_exists(group) {
            Ok(true) => {}
            Ok(false) => {
                return Err(Outcome::ConfigError(format!(
                    "only_group: the name service knows no group {:?}; every login is denied until the group exists or the setting is fixed",
                    crate::logline::escape(group)
                )));
            }
            // Unknown whether the setting is right: the code is asked.
            Err(_) => return Ok(None),
        }
    }
    let Ok(member_of) = accounts.groups_of(user) else {
        return Ok(None);
    };
    if config.only_groups.iter().any(|g| member_of.contains(g)) {
        return Ok(None);
    }
    Ok(Some(format!(
        "outside the pilot: not a member of only_group {}",
        config.only_groups.join(",")
    )))
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

/// The user's devices as an answer is checked: the usable ones, and all of
/// them (stopped and pending too) for the HOTP floor (`last_used`).
#[derive(Clone, Copy)]
struct Devices<'a, 'b> {
    usable: &'b [&'a Token],
    all: &'b [Token],
}

/// The answer against the user's active tokens and recovery codes.
fn check_answer<S: LoginStore>(
    config: &Config,
    store: &S,
    user: &str,
    devices: Devices<'_, '_>,
    answer: &[u8],
    now: u64,
    clock: &dyn Clock,
) -> Outcome {
    let Ok(text) = std::str::from_utf8(answer) else {
        return Outcome::MalformedAnswer;
    };
    let text = ungrouped(text);
    let text = text.as_str();
    if let Some(candidate) = recovery::candidate(text) {
        return use_recovery(store, user, &candidate, now, Outcome::WrongRecoveryCode);
    }
    match check_code(config, devices.usable, devices.all, text, now) {
        CodeCheck::Match(token, step) => claim(
            config,
            store,
            token,
            step,
            now,
            clock,
            token.has_twin(devices.all),
        ),
        CodeCheck::UsedElsewhere(token, step) => reused(token, step),
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
    /// A right TOTP code whose step another device of the user with the
    /// same key used already: refused without a claim.
    UsedElsewhere(&'a Token, u64),
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
    match_token_after(token, token.last_step, code, now, window, hotp_window)
}

/// `match_token`, an HOTP token counting from `used` (the highest counter
/// used, see `last_used`) instead of its own.
pub fn match_token_after(
    token: &Token,
    used: Option<u64>,
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
        // Nor a TOTP step below it (a clock before 2000, which the real
        // clock refuses already): the two kinds' numbers never meet.
        Kind::Totp => otp::verify_window(
            key,
            code,
            otp::step_at(now, token.params.period),
            window,
            &token.params,
        )
        .filter(|&step| step >= crate::store::MAX_HOTP_COUNTER),
        // A counter from `MAX_HOTP_COUNTER` up is never accepted, however
        // far a fob was pressed: TOTP step numbers are there, so a code its
        // key once gave as TOTP could otherwise come back as an HOTP code
        // (enrollment refuses such counters; this stops one that climbs).
        Kind::Hotp => otp::verify_counter(
            key,
            code,
            used.map_or(0, |c| c.saturating_add(1)),
            hotp_window,
            &token.params,
        )
        .filter(|&counter| counter < crate::store::MAX_HOTP_COUNTER),
    }
}

/// The step or counter `token` counts from among the user's `tokens`: the
/// highest one any token of the user with the same key has used (itself
/// included), so that a code used on one device does not work again on a
/// second device that holds the same key (found by attacks: `totpctl
/// enroll --device spare --secret` of a key already enrolled; the device
/// that used the code disabled or expired meanwhile). Stopped and pending
/// tokens count too. Keys are compared unsealed and as HMAC uses them (a
/// key with zero bytes appended is the same key), under the same
/// algorithm; any number of digits (a 6-digit code is the last six digits
/// of the 8-digit one). HOTP counts among HOTP tokens; TOTP among TOTP
/// tokens of the same period, whose steps are the same clock's (another
/// period's codes come at other times).
pub fn last_used(token: &Token, tokens: &[Token]) -> Option<u64> {
    token.last_used_among(tokens)
}

/// Whether TOTP `step` of `token` was used already, by it or by a device
/// with the same key (`last_used`). HOTP never is: its match starts past
/// the floor.
fn used_already(token: &Token, floor: Option<u64>, step: u64) -> bool {
    token.kind == Kind::Totp && floor.is_some_and(|last| step <= last)
}

/// Checks the answer against every active token whose code length it has.
/// Every such token is computed in full, so the work does not reveal which
/// token (or whether any) matched.
fn check_code<'a>(
    config: &Config,
    active: &[&'a Token],
    all: &[Token],
    text: &str,
    now: u64,
) -> CodeCheck<'a> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return CodeCheck::NoMatch { shaped: false };
    }
    let mut shaped = false;
    let mut found: Option<(&Token, u64)> = None;
    let mut used: Option<(&Token, u64)> = None;
    for token in active {
        if text.len() != token.params.digits as usize {
            continue;
        }
        shaped = true;
        // The floor counts every device of the user, stopped ones too: a
        // step or counter used on a device disabled since is still used.
        let from = last_used(token, all);
        let Some(step) =
            match_token_after(token, from, text, now, config.window, config.hotp_window)
        else {
            continue;
        };
        // Only a step another device with the key used is refused here;
        // the token's own is the claim's to refuse (atomically).
        let slot = if used_already(token, from, step) && !used_already(token, token.last_step, step)
        {
            &mut used
        } else {
            &mut found
        };
        if slot.is_none() {
            *slot = Some((token, step));
        }
    }
    match (found, used) {
        (Some((token, step)), _) => CodeCheck::Match(token, step),
        (None, Some((token, step))) => CodeCheck::UsedElsewhere(token, step),
        (None, None) => CodeCheck::NoMatch { shaped },
    }
}

/// The slow way's claim; with `twins` (another device shares the token's
/// codes), under the user's hold with the twins read again, as a
/// settlement does it.
fn claim<S: LoginStore>(
    config: &Config,
    store: &S,
    token: &Token,
    step: u64,
    now: u64,
    clock: &dyn Clock,
    twins: bool,
) -> Outcome {
    if let Some(refused) = boot_fence(config, token, step, store.totp_claims_durable(), clock) {
        return refused;
    }
    match store.claim_step_minding_twins(token, step, now as i64, twins) {
        Ok(result) => claimed(token, step, now, result),
        Err(e) => store_error(e),
    }
}

/// Why a right TOTP code may not claim its step: a store whose claims are
/// not on disk at once may have lost those of before the last boot, so
/// those steps are refused (or the boot time could not be read).
fn boot_fence(
    config: &Config,
    token: &Token,
    step: u64,
    durable: bool,
    clock: &dyn Clock,
) -> Option<Outcome> {
    if token.kind != Kind::Totp || durable {
        return None;
    }
    match clock.booted_at() {
        Ok(booted) if before_boot(step, token.params.period, config.window, booted) => {
            Some(Outcome::StepBeforeBoot {
                device: token.device.clone(),
                step,
            })
        }
        Ok(_) => None,
        Err(e) => Some(Outcome::ClockError(e)),
    }
}

/// The outcome of a right code once its step's claim is known.
fn claimed(token: &Token, step: u64, now: u64, claim: Claim) -> Outcome {
    match claim {
        Claim::Claimed => Outcome::Accepted {
            device: token.device.clone(),
            kind: token.kind,
            step,
            offset: (token.kind == Kind::Totp)
                .then(|| step as i64 - otp::step_at(now, token.params.period) as i64),
        },
        Claim::AlreadyUsed => reused(token, step),
    }
}

fn reused(token: &Token, step: u64) -> Outcome {
    Outcome::Reused {
        device: token.device.clone(),
        step,
    }
}

/// A typed code decided in memory, before the store is written.
enum Planned<'a> {
    /// Wrong or malformed (the outcome to report).
    Wrong(Outcome),
    /// Right for this token at this step (TOTP) or counter (HOTP); whether
    /// another device of the user shares its codes (`Token::has_twin`).
    Right(&'a Token, u64, bool),
    /// Right, but refused before any claim (the outcome to report).
    Refused(Outcome),
}

/// The answer checked without the store, when it can be: one candidate that
/// cannot be a recovery code. `None` sends the login the slow way
/// (`reserve_guess`, `verify`, `give_back`).
fn plan<'a>(
    config: &Config,
    active: &[&'a Token],
    all: &[Token],
    candidates: &[Zeroizing<Vec<u8>>],
    now: u64,
    durable: bool,
    clock: &dyn Clock,
) -> Phase<Option<Planned<'a>>> {
    let [answer] = candidates else {
        return Ok(None);
    };
    let Ok(text) = std::str::from_utf8(answer) else {
        return Ok(Some(Planned::Wrong(Outcome::MalformedAnswer)));
    };
    let text = ungrouped(text);
    let text = text.as_str();
    if recovery::candidate(text).is_some() {
        return Ok(None);
    }
    match check_code(config, active, all, text, now) {
        CodeCheck::Match(token, step) => match boot_fence(config, token, step, durable, clock) {
            None => Ok(Some(Planned::Right(token, step, token.has_twin(all)))),
            Some(Outcome::ClockError(e)) => Err(Outcome::ClockError(e)),
            Some(refused) => Ok(Some(Planned::Refused(refused))),
        },
        CodeCheck::UsedElsewhere(token, step) => Ok(Some(Planned::Refused(reused(token, step)))),
        CodeCheck::NoMatch { .. } if recovery::scratch_candidate(text).is_some() => Ok(None),
        CodeCheck::NoMatch { shaped: true } => Ok(Some(Planned::Wrong(Outcome::WrongCode))),
        CodeCheck::NoMatch { shaped: false } => Ok(Some(Planned::Wrong(Outcome::MalformedAnswer))),
    }
}

/// Tries the answer as one of the user's unused recovery codes; burns it
/// atomically when it matches. `no_match` is the outcome when it does not.
fn use_recovery<S: LoginStore>(
    store: &S,
    user: &str,
    candidate: &Candidate,
    now: u64,
    no_match: Outcome,
) -> Outcome {
    let stored = match store.recovery_candidates(user, &candidate.lookup) {
        Ok(stored) => stored,
        Err(e) => return store_error(e),
    };
    let Some(hit) = stored.iter().find(|s| candidate.matches(&s.phc)) else {
        return no_match;
    };
    match store.burn_recovery(hit, now as i64) {
        Ok(Claim::Claimed) => match store.recovery_count(user) {
            Ok(count) => Outcome::RecoveryAccepted {
                remaining: count.unused,
            },
            Err(e) => store_error(e),
        },
        Ok(Claim::AlreadyUsed) => Outcome::RecoveryReused,
        Err(e) => store_error(e),
    }
}

#[cfg(test)]
mod tests;
