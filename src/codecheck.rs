//! What a typed code is and what it matches, for the commands that look at
//! a code outside a login: `totpctl check` and `confirm`, and the user's
//! `totp` (`test`, and the current code its changes ask for).
//!
//! `prove` is the gate of every `totp` change: one guess is reserved under
//! the login's limits before the answer is looked at, a right code is
//! claimed (used up, as by a login) and gives its guess back, a wrong one
//! stays counted.

use zeroize::Zeroizing;

use crate::auth::{last_used, match_token_after, ungrouped};
use crate::config::Config;
use crate::ratelimit::Lock;
use crate::recovery;
use crate::store::{Claim, Kind, LoginStore, Reservation, StoreError, Token};

/// Longer than any code or recovery code, typed with spaces: not a code.
pub const MAX_ANSWER: usize = 64;

/// `s` when `n` is not 1.
pub fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// "6" or "6 or 8": the code lengths of these tokens.
pub fn lengths(tokens: &[&Token]) -> String {
    let mut digits: Vec<u32> = tokens.iter().map(|t| t.params.digits).collect();
    digits.sort_unstable();
    digits.dedup();
    let digits: Vec<String> = digits.iter().map(u32::to_string).collect();
    digits.join(" or ")
}

/// What an answer typed to `check` or `confirm` is, before any code is
/// computed.
pub enum Shape {
    /// Digits only (spaces between groups removed).
    Code(Zeroizing<String>),
    /// `abcd-efgh-jkmn`: a recovery code.
    Recovery,
    /// Anything else: not a code.
    Other,
}

/// Reads an answer as typed: a code in one or two groups ("700 102"), a
/// recovery code, or neither. Never keeps the text beyond the code.
pub fn shape(answer: &str) -> Shape {
    if answer.len() > MAX_ANSWER {
        return Shape::Other;
    }
    let code = ungrouped(answer);
    if !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()) {
        return Shape::Code(code);
    }
    if recovery::candidate(answer).is_some() {
        return Shape::Recovery;
    }
    Shape::Other
}

/// What one device makes of the code.
pub struct Found<'a> {
    pub token: &'a Token,
    /// The step (TOTP) or counter (HOTP) the code is.
    pub step: u64,
    /// Steps (TOTP) or counters past the next expected one (HOTP).
    pub offset: i64,
    /// TOTP: the step was used by a login already (a login with it is
    /// refused as reused).
    pub used: bool,
}

/// Every token of `candidates` of the code's length is computed in full
/// (`match_token` compares in constant time), so the work does not show
/// which matched. The first active match wins, else the first pending one.
/// What was used counts among `all` the user's tokens (`last_used`: a
/// device with the same key, stopped ones too).
pub fn find<'a>(
    config: &Config,
    candidates: &'a [Token],
    all: &[Token],
    code: &str,
    now: u64,
) -> Option<Found<'a>> {
    let mut found: Vec<Found<'a>> = Vec::new();
    for token in candidates {
        if code.len() != token.params.digits as usize {
            continue;
        }
        let from = last_used(token, all);
        let Some(step) =
            match_token_after(token, from, code, now, config.window, config.hotp_window)
        else {
            continue;
        };
        let (offset, used) = match token.kind {
            Kind::Totp => {
                let current = crate::otp::step_at(now, token.params.period);
                (
                    step as i64 - current as i64,
                    from.is_some_and(|last| step <= last),
                )
            }
            Kind::Hotp => {
                let next = token.last_step.map_or(0, |c| c.saturating_add(1));
                (step.saturating_sub(next) as i64, false)
            }
        };
        found.push(Found {
            token,
            step,
            offset,
            used,
        });
    }
    let first_active = found.iter().position(|f| f.token.is_active());
    match first_active {
        Some(at) => Some(found.swap_remove(at)),
        None => found.into_iter().next(),
    }
}

/// "+1 step (its clock is about 30 s ahead)".
pub fn describe_offset(found: &Found) -> String {
    let token = found.token;
    match token.kind {
        Kind::Totp => {
            let steps = found.offset;
            let seconds = steps.unsigned_abs() * token.params.period;
            let clock = match steps {
                0 => format!("its clock is right, within {} s", token.params.period),
                s if s > 0 => format!("its clock is about {seconds} s ahead"),
                _ => format!("its clock is about {seconds} s behind"),
            };
            format!(
                "{steps:+} step{} ({clock})",
                plural(steps.unsigned_abs() as usize)
            )
        }
        Kind::Hotp => match found.offset {
            0 => "the next counter (in step with the store)".to_string(),
            n => format!(
                "{n} counter{} ahead (the button was pressed {n} time{} without a login)",
                plural(n as usize),
                plural(n as usize)
            ),
        },
    }
}

/// How the caller proved they hold a factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// A current code of this active device, now used up.
    Code { device: String, offset: i64 },
    /// One of the user's recovery codes, now used up; `remaining` are left.
    Recovery { remaining: usize },
}

/// Why an answer proved nothing. The guess stays counted for every
/// refusal but `Locked` (nothing was checked) and `Store`.
#[derive(Debug)]
pub enum Refusal {
    /// The back-off or the per-user lock is in force: not checked.
    Locked(Lock),
    /// Not a code of any usable device (nor, when allowed, a recovery code).
    Wrong,
    /// A recovery code where only a current code is accepted: not checked.
    RecoveryNotAccepted,
    /// Right code, but its step was used already (or may have been, before
    /// the last boot): wait for the next one.
    Reused,
    Store(StoreError),
}

/// Checks `answer` as a login would, and uses it up: one guess reserved
/// for (user, `source`) under `config.limits` before anything is looked at;
/// a code of a usable device is claimed (`claim_step`), a recovery code
/// (only with `recovery_ok`) burned; a right answer gives its guess back
/// and ends the source's back-off. `booted_at`: when the claims of the
/// store are not durable (SQLite TOTP), steps that could have been claimed
/// before this boot are refused, as at a login.
// One call per check, each argument a different fact of it.
#[allow(clippy::too_many_arguments)]
pub fn prove<S: LoginStore + ?Sized>(
    config: &Config,
    store: &S,
    user: &str,
    source: &str,
    answer: &str,
    recovery_ok: bool,
    now: u64,
    booted_at: Option<u64>,
) -> Result<Proof, Refusal> {
    let answer = Zeroizing::new(answer.trim().to_string());
    let is_recovery = answer.len() <= MAX_ANSWER && recovery::candidate(&answer).is_some();
    if is_recovery && !recovery_ok {
        return Err(Refusal::RecoveryNotAccepted);
    }
    match store
        .reserve_guess(user, source, now as i64, &config.limits)
        .map_err(Refusal::Store)?
    {
        Reservation::Granted(_) => {}
        Reservation::Locked(lock) => return Err(Refusal::Locked(lock)),
    }
    let proof = check_and_use(config, store, user, &answer, is_recovery, now, booted_at)?;
    // Losing this only keeps one more failure counted.
    let _ = store.release_guess(user, source, true, now as i64);
    Ok(proof)
}

fn check_and_use<S: LoginStore + ?Sized>(
    config: &Config,
    store: &S,
    user: &str,
    answer: &str,
    is_recovery: bool,
    now: u64,
    booted_at: Option<u64>,
) -> Result<Proof, Refusal> {
    if is_recovery {
        let Some(candidate) = recovery::candidate(answer) else {
            return Err(Refusal::Wrong);
        };
        let stored = store
            .recovery_candidates(user, &candidate.lookup)
            .map_err(Refusal::Store)?;
        let Some(hit) = stored.iter().find(|s| candidate.matches(&s.phc)) else {
            return Err(Refusal::Wrong);
        };
        return match store
            .burn_recovery(hit, now as i64)
            .map_err(Refusal::Store)?
        {
            Claim::Claimed => Ok(Proof::Recovery {
                remaining: store.recovery_count(user).map_err(Refusal::Store)?.unused,
            }),
            Claim::AlreadyUsed => Err(Refusal::Reused),
        };
    }
    let code = match shape(answer) {
        Shape::Code(code) => code,
        _ => return Err(Refusal::Wrong),
    };
    let tokens = store.tokens(user).map_err(Refusal::Store)?;
    let usable: Vec<Token> = tokens
        .iter()
        .filter(|t| t.usable_at(now as i64))
        .cloned()
        .collect();
    // Used steps count among all the user's devices: a step a stopped
    // device with the same key used is used (found by an attack).
    let Some(found) = find(config, &usable, &tokens, &code, now) else {
        return Err(Refusal::Wrong);
    };
    if found.used {
        return Err(Refusal::Reused);
    }
    let (token, step) = (found.token, found.step);
    if token.kind == Kind::Totp
        && !store.totp_claims_durable()
        && booted_at.is_none_or(|booted| {
            crate::auth::before_boot(step, token.params.period, config.window, booted)
        })
    {
        return Err(Refusal::Reused);
    }
    // A twin's claim under the user's hold, the twins read again (as a
    // login's settlement makes it).
    let claimed = store.claim_step_minding_twins(token, step, now as i64, token.has_twin(&tokens));
    match claimed.map_err(Refusal::Store)? {
        Claim::Claimed => Ok(Proof::Code {
            device: token.device.clone(),
            offset: found.offset,
        }),
        Claim::AlreadyUsed => Err(Refusal::Reused),
    }
}
