//! What `list` and `show` print: text for people, JSON for scripts. Never
//! a key.

use serde_json::{Value, json};

use pam_totp::otp::Params;
use std::collections::BTreeMap;

use pam_totp::store::{Kind, RecoveryCount, TokenInfo};

use crate::population::{Locked, ShownLock};

pub use pam_totp::logline::utc;

/// A time as people read it: `2026-12-01 14:03:00 UTC`. Every time totpctl
/// prints for a person is one of these, never an epoch.
pub fn when(unix: i64) -> String {
    format!("{} UTC", utc(unix))
}

/// `totp sha1 6 digits 30 s` / `hotp sha1 6 digits`.
pub fn describe_params(kind: Kind, params: &Params) -> String {
    let period = match kind {
        Kind::Totp => format!(" {} s", params.period),
        Kind::Hotp => String::new(),
    };
    format!(
        "{kind} {} {} digits{period}",
        params.algorithm, params.digits
    )
}

/// active, pending, pending replacement, disabled or expired, now.
pub fn state(t: &TokenInfo) -> &'static str {
    t.state_at(pam_totp::store::unix_now())
}

/// When the token was last used: a time (TOTP) or a counter (HOTP).
pub fn last_used(t: &TokenInfo) -> String {
    match (t.kind, t.last_step) {
        (_, None) => "never".to_string(),
        (Kind::Totp, Some(step)) => utc(step.saturating_mul(t.params.period) as i64),
        (Kind::Hotp, Some(counter)) => format!("counter {counter}"),
    }
}

/// `last_used` with the zone, for sentences (`show`).
fn last_used_when(t: &TokenInfo) -> String {
    match (t.kind, t.last_step) {
        (Kind::Totp, Some(step)) => when(step.saturating_mul(t.params.period) as i64),
        _ => last_used(t),
    }
}

pub fn token_json(t: &TokenInfo) -> Value {
    json!({
        "user": t.user,
        "device": t.device,
        "type": t.kind.as_str(),
        "algorithm": t.params.algorithm.as_str(),
        "digits": t.params.digits,
        "period": t.params.period,
        "created": t.created,
        "confirmed": t.confirmed,
        "last_step": t.last_step,
        "state": state(t),
        "disabled": t.life.disabled,
        "expires": t.life.expires,
        "replaces_on_confirmation": t.life.replaces,
    })
}

/// `list --json`: a token's object with the locks of its user.
pub fn token_json_with_locks(t: &TokenInfo, locks: &BTreeMap<String, Vec<Locked>>) -> Value {
    let mut value = token_json(t);
    value["locks"] = locks
        .get(&t.user)
        .map(|l| l.iter().map(Locked::json).collect())
        .unwrap_or_default();
    value
}

/// The STATE column: the token's state, then any lock of its user.
fn state_with_locks(t: &TokenInfo, locks: &BTreeMap<String, Vec<Locked>>) -> String {
    let mut text = state(t).to_string();
    for lock in locks.get(&t.user).into_iter().flatten() {
        text.push_str(", ");
        text.push_str(&lock.describe());
    }
    text
}

pub fn print_table(tokens: &[TokenInfo], locks: &BTreeMap<String, Vec<Locked>>) {
    println!(
        "{:<20} {:<10} {:<5} {:<7} {:>6} {:>6}  {:<19}  {:<19}  STATE",
        "USER", "DEVICE", "TYPE", "ALG", "DIGITS", "PERIOD", "CREATED (UTC)", "LAST USED (UTC)"
    );
    for t in tokens {
        println!(
            "{:<20} {:<10} {:<5} {:<7} {:>6} {:>6}  {:<19}  {:<19}  {}",
            t.user,
            t.device,
            t.kind,
            t.params.algorithm,
            t.params.digits,
            t.params.period,
            utc(t.created),
            last_used(t),
            state_with_locks(t, locks)
        );
    }
}

/// Everything `show` prints about one user.
pub struct Shown {
    pub tokens: Vec<TokenInfo>,
    pub recovery: RecoveryCount,
    pub window: Option<i64>,
    /// (rhost, failed codes, last failure), newest first.
    pub failures: Vec<(String, u64, i64)>,
    /// The locks in force now, as the login computes them.
    pub locks: Vec<Locked>,
    /// Grace periods running now: (address, until), the longest first.
    pub graces: Vec<(String, i64)>,
    /// Key graces running now: (fingerprint, until).
    pub key_graces: Vec<(String, i64)>,
    /// The user's automation grants, in force or ended.
    pub automation: Vec<pam_totp::store::AutomationGrant>,
}

pub fn show_json(user: &str, shown: &Shown) -> Value {
    let keys =
        crate::automation::show_json(&shown.key_graces, &shown.automation, crate::unix_now());
    let mut shown_json = show_json_base(user, shown);
    if let (Some(map), Value::Object(keys)) = (shown_json.as_object_mut(), keys) {
        map.extend(keys);
    }
    shown_json
}

fn show_json_base(user: &str, shown: &Shown) -> Value {
    json!({
        "user": user,
        "tokens": shown.tokens.iter().map(token_json).collect::<Vec<_>>(),
        "recovery_codes": { "unused": shown.recovery.unused, "used": shown.recovery.used },
        "enroll_window_until": shown.window,
        "enroll_window_until_utc": shown.window.map(when),
        "failures": shown.failures.iter().map(|(rhost, count, last)| json!({
            "rhost": rhost, "count": count, "last": last, "last_utc": when(*last),
        })).collect::<Vec<_>>(),
        "locks": shown.locks.iter().map(Locked::json).collect::<Vec<_>>(),
        "graces": shown.graces.iter().map(|(rhost, until)| json!({
            "rhost": rhost, "until": until, "until_utc": when(*until),
        })).collect::<Vec<_>>(),
    })
}

pub fn print_show(user: &str, shown: &Shown) {
    println!("user: {user}");
    if shown.locks.is_empty() {
        println!("locked: no");
    }
    for lock in &shown.locks {
        println!("{} (totpctl unlock clears)", lock.describe());
    }
    if shown.tokens.is_empty() {
        println!("tokens: none (not enrolled)");
    }
    for t in &shown.tokens {
        println!(
            "device {:?}: {}, {}, created {}, last used {}{}{}",
            t.device,
            describe_params(t.kind, &t.params),
            state(t),
            when(t.created),
            last_used_when(t),
            t.life
                .expires
                .map(|at| format!(", expires {}", when(at)))
                .unwrap_or_default(),
            t.life
                .replaces
                .as_ref()
                .map(|d| format!(", takes the name {d:?} and retires the others when confirmed"))
                .unwrap_or_default()
        );
    }
    println!(
        "recovery codes: {} unused, {} used",
        shown.recovery.unused, shown.recovery.used
    );
    match shown.window {
        Some(until) => println!("enroll window: open until {}", when(until)),
        None => println!("enroll window: none"),
    }
    if shown.failures.is_empty() {
        println!("failed codes: none");
    }
    for (rhost, count, last) in &shown.failures {
        println!(
            "failed codes from {:?}: {count}, last {} (totpctl unlock clears)",
            rhost,
            when(*last)
        );
    }
    if shown.graces.is_empty() {
        println!("grace periods: none");
    }
    for (rhost, until) in &shown.graces {
        println!(
            "grace period from {:?}: until {} (totpctl forget ends it)",
            rhost,
            when(*until)
        );
    }
    for line in
        crate::automation::show_lines(&shown.key_graces, &shown.automation, crate::unix_now())
    {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_111_111_111), "2005-03-18 01:58:31");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(2_000_000_000), "2033-05-18 03:33:20");
    }
}
