//! What `list` and `show` print: text for people, JSON for scripts. Never
//! a key.

use serde_json::{Value, json};

use pam_totp::otp::Params;
use pam_totp::store::{Kind, RecoveryCount, TokenInfo};

pub use pam_totp::logline::utc;

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

pub fn print_table(tokens: &[TokenInfo]) {
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
            state(t)
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
}

pub fn show_json(user: &str, shown: &Shown) -> Value {
    json!({
        "user": user,
        "tokens": shown.tokens.iter().map(token_json).collect::<Vec<_>>(),
        "recovery_codes": { "unused": shown.recovery.unused, "used": shown.recovery.used },
        "enroll_window_until": shown.window,
        "failures": shown.failures.iter().map(|(rhost, count, last)| json!({
            "rhost": rhost, "count": count, "last": last,
        })).collect::<Vec<_>>(),
    })
}

pub fn print_show(user: &str, shown: &Shown) {
    println!("user: {user}");
    if shown.tokens.is_empty() {
        println!("tokens: none (not enrolled)");
    }
    for t in &shown.tokens {
        println!(
            "device {:?}: {}, {}, created {}, last used {}{}{}",
            t.device,
            describe_params(t.kind, &t.params),
            state(t),
            utc(t.created),
            last_used(t),
            t.life
                .expires
                .map(|at| format!(", expires {at} UTC", at = utc(at)))
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
        Some(until) => println!("enroll window: open until {} UTC", utc(until)),
        None => println!("enroll window: none"),
    }
    if shown.failures.is_empty() {
        println!("failed codes: none");
    }
    for (rhost, count, last) in &shown.failures {
        println!(
            "failed codes from {:?}: {count}, last {} UTC (totpctl unlock clears)",
            rhost,
            utc(*last)
        );
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
