//! Automation grants: one SSH key of one user logs in without a code from
//! given networks until a date (`allow-automation`, `automation list`,
//! `automation revoke`), and the key graces `show` and `forget` see.

use serde_json::{Value, json};

use pam_totp::logline::escape;
use pam_totp::store::{AutomationGrant, Store, StoreError};

use crate::audit::{Audit, Detail, shown_actor};
use crate::population::push_record;
use crate::report::when;

/// Shortest prefixes a grant may name: a grant is for the networks a
/// workflow runs from, never "everywhere".
pub const MIN_PREFIX_V4: u8 = 8;
pub const MIN_PREFIX_V6: u8 = 16;
/// The longest reason kept.
pub const MAX_REASON: usize = 200;
/// `report` lists grants that end within this many days.
pub const REPORT_EXPIRING_DAYS: i64 = 14;

fn e(e: StoreError) -> String {
    e.to_string()
}

/// `--key`: a fingerprint as `ssh-keygen -lf KEY.pub` prints it.
pub fn parse_key(text: &str) -> Result<String, String> {
    pam_totp::sshkey::parse_fingerprint(text)
}

/// `--from`: CIDR blocks (or single addresses), comma-separated, each at
/// least /8 (IPv4) or /16 (IPv6); canonical, as stored.
pub fn parse_networks(text: &str) -> Result<String, String> {
    let mut blocks = Vec::new();
    for part in text.split(',') {
        let block = pam_totp::network::parse_block(part.trim())?;
        let min = if block.addr().is_ipv4() {
            MIN_PREFIX_V4
        } else {
            MIN_PREFIX_V6
        };
        if block.prefix_len() < min {
            return Err(format!(
                "{block} is too wide for an automation grant (at least /{MIN_PREFIX_V4} for IPv4, /{MIN_PREFIX_V6} for IPv6): name the networks the workflow runs from"
            ));
        }
        blocks.push(block.to_string());
    }
    if blocks.is_empty() {
        return Err("--from needs at least one network".to_string());
    }
    Ok(blocks.join(","))
}

/// `--reason`: printable text, 1 to 200 characters.
pub fn parse_reason(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_REASON {
        return Err(format!("--reason must be 1 to {MAX_REASON} characters"));
    }
    if text
        .chars()
        .any(|c| c.is_control() || c == '"' || c == '\\')
    {
        return Err("--reason must not hold control characters, quotes or backslashes".to_string());
    }
    Ok(text.to_string())
}

/// `totpctl allow-automation`.
#[allow(clippy::too_many_arguments)]
pub fn allow(
    store: &dyn Store,
    audit: &mut Audit,
    user: &str,
    key: &str,
    networks: &str,
    until: i64,
    reason: &str,
    max_secs: u64,
    now: i64,
) -> Result<(), String> {
    let longest = now.saturating_add(i64::try_from(max_secs).unwrap_or(i64::MAX));
    if until > longest {
        return Err(format!(
            "--until {} is later than automation_max allows ({} days from now: {}); grant less, and renew it",
            when(until),
            max_secs / 86_400,
            when(longest)
        ));
    }
    let id = store
        .add_automation(user, key, networks, until, reason, now, &audit.actor)
        .map_err(e)?;
    audit.record(
        "allow-automation",
        user,
        Detail::new()
            .bare("id", id)
            .bare("key", key)
            .bare("from", networks)
            .quoted("until", when(until))
            .quoted("reason", reason),
    );
    println!(
        "Automation grant #{id}: {user} with key {key} logs in without a code from {networks} until {}.\n\
         Reason: {reason}\n\
         Match the key's own limits in ~{user}/.ssh/authorized_keys, e.g.:\n  \
         restrict,from=\"{networks}\",command=\"/usr/local/bin/the-workflow\" ssh-ed25519 AAAA…\n\
         End it early with `totpctl automation revoke {id}`.",
        when(until)
    );
    Ok(())
}

/// A grant's state at `now`.
fn state(grant: &AutomationGrant, now: i64) -> String {
    match grant.revoked {
        Some(at) => format!("revoked {}", when(at)),
        None if grant.until <= now => format!("expired {}", when(grant.until)),
        None => "in force".to_string(),
    }
}

fn grant_json(grant: &AutomationGrant, now: i64) -> Value {
    json!({
        "id": grant.id,
        "user": grant.user,
        "key": grant.fingerprint,
        "from": grant.networks,
        "until": grant.until,
        "until_utc": when(grant.until),
        "reason": grant.reason,
        "created": grant.created,
        "created_utc": when(grant.created),
        "created_by": grant.created_by,
        "revoked": grant.revoked,
        "in_force": grant.in_force(now),
    })
}

/// The grants in force now that end within `within` seconds.
pub fn expiring(grants: &[AutomationGrant], now: i64, within: i64) -> Vec<&AutomationGrant> {
    grants
        .iter()
        .filter(|g| g.in_force(now) && g.until <= now.saturating_add(within))
        .collect()
}

/// `totpctl automation list [--expiring AGE] [--all] [--json]`: the grants
/// in force (with --all also the revoked and expired ones).
pub fn list(
    store: &dyn Store,
    expiring_within: Option<u64>,
    all: bool,
    format: ListFormat,
    now: i64,
) -> Result<(), String> {
    let grants = store.automation_grants(None).map_err(e)?;
    let shown: Vec<&AutomationGrant> = match expiring_within {
        Some(age) => expiring(&grants, now, i64::try_from(age).unwrap_or(i64::MAX)),
        None => grants.iter().filter(|g| all || g.in_force(now)).collect(),
    };
    match format {
        ListFormat::Json => {
            let list: Vec<Value> = shown.iter().map(|g| grant_json(g, now)).collect();
            println!("{}", Value::Array(list));
        }
        ListFormat::Csv => print!("{}", csv(&shown, now)),
        ListFormat::Text => print!("{}", table(&shown, now)),
    }
    Ok(())
}

/// How `automation list` prints the grants.
#[derive(Clone, Copy)]
pub enum ListFormat {
    Text,
    Json,
    Csv,
}

/// The grants as a table, one line each.
pub fn table(grants: &[&AutomationGrant], now: i64) -> String {
    if grants.is_empty() {
        return "(no automation grants)\n".to_string();
    }
    let mut out = String::new();
    for g in grants {
        out.push_str(&format!(
            "#{} user=\"{}\" key={} from={} until {} ({}) reason=\"{}\" by {}\n",
            g.id,
            escape(&g.user),
            g.fingerprint,
            g.networks,
            when(g.until),
            state(g, now),
            escape(&g.reason),
            shown_actor(&g.created_by),
        ));
    }
    out
}

/// `totpctl automation revoke ID`.
pub fn revoke(store: &dyn Store, audit: &mut Audit, id: i64, now: i64) -> Result<(), String> {
    let Some(grant) = store.revoke_automation(id, now).map_err(e)? else {
        return Err(format!(
            "no automation grant #{id} in force (`totpctl automation list --all` shows them all)"
        ));
    };
    audit.record(
        "automation-revoke",
        &grant.user,
        Detail::new()
            .bare("id", id)
            .bare("key", &grant.fingerprint)
            .quoted("reason", &grant.reason),
    );
    println!(
        "Revoked automation grant #{id} of {} (key {}): its next login asks for a code.",
        grant.user, grant.fingerprint
    );
    Ok(())
}

/// `report`'s section: grants in force that end within 14 days.
pub fn report_section(store: &dyn Store, now: i64) -> Result<String, String> {
    let grants = store.automation_grants(None).map_err(e)?;
    let soon = expiring(&grants, now, REPORT_EXPIRING_DAYS * 86_400);
    if soon.is_empty() {
        return Ok(String::new());
    }
    Ok(format!(
        "\nAutomation grants ending within {REPORT_EXPIRING_DAYS} days (renew with allow-automation, or let them end):\n{}",
        table(&soon, now)
    ))
}

/// The header of `automation list --csv`.
pub const CSV_HEADER: [&str; 9] = [
    "grant_id",
    "user",
    "key",
    "from",
    "until_utc",
    "state",
    "reason",
    "created_utc",
    "created_by",
];

/// `automation list --csv`: one RFC 4180 table, its header always (so the
/// file has the same shape whether or not a grant is listed), then one
/// record per grant, quoted as `report --csv`'s records are, times as UTC
/// dates, the state as `list` says it ("in force", "revoked DATE",
/// "expired DATE").
fn csv(grants: &[&AutomationGrant], now: i64) -> String {
    let mut out = String::new();
    push_record(&mut out, CSV_HEADER.iter().map(|h| h.to_string()));
    for g in grants {
        push_record(
            &mut out,
            [
                g.id.to_string(),
                g.user.clone(),
                g.fingerprint.clone(),
                g.networks.clone(),
                when(g.until),
                state(g, now),
                g.reason.clone(),
                when(g.created),
                g.created_by.clone(),
            ],
        );
    }
    out
}

/// `report --json`'s `automation_expiring`: the grants in force that end
/// within 14 days.
pub fn report_json(store: &dyn Store, now: i64) -> Result<Value, String> {
    let grants = store.automation_grants(None).map_err(e)?;
    Ok(Value::Array(
        expiring(&grants, now, REPORT_EXPIRING_DAYS * 86_400)
            .into_iter()
            .map(|g| grant_json(g, now))
            .collect(),
    ))
}

/// For `show`: the user's key graces and automation grants, as lines.
pub fn show_lines(
    key_graces: &[(String, i64)],
    grants: &[AutomationGrant],
    now: i64,
) -> Vec<String> {
    let mut lines = Vec::new();
    if key_graces.is_empty() {
        lines.push("key graces: none".to_string());
    }
    for (fingerprint, until) in key_graces {
        lines.push(format!(
            "key grace: SSH key {fingerprint} until {} (totpctl forget --key ends it)",
            when(*until)
        ));
    }
    for g in grants {
        lines.push(format!(
            "automation grant #{}: key {} from {} until {}, {}, reason \"{}\"",
            g.id,
            g.fingerprint,
            g.networks,
            when(g.until),
            state(g, now),
            escape(&g.reason)
        ));
    }
    lines
}

/// For `show --json`.
pub fn show_json(key_graces: &[(String, i64)], grants: &[AutomationGrant], now: i64) -> Value {
    json!({
        "key_graces": key_graces.iter().map(|(fp, until)| json!({
            "key": fp, "until": until, "until_utc": when(*until),
        })).collect::<Vec<_>>(),
        "automation": grants.iter().map(|g| grant_json(g, now)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_must_be_scoped() {
        assert_eq!(
            parse_networks("192.0.2.0/24, 2001:db8::/32").as_deref(),
            Ok("192.0.2.0/24,2001:db8::/32")
        );
        assert!(parse_networks("192.0.2.7").is_ok());
        for bad in [
            "0.0.0.0/0",
            "10.0.0.0/7",
            "::/0",
            "2000::/3",
            "",
            "host.example",
            "10.0.0.0/8,",
        ] {
            assert!(parse_networks(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reasons_are_short_printable_text() {
        assert!(parse_reason("nightly rsync from lab01").is_ok());
        for bad in ["", "  ", "a\nb", "say \"hi\"", &"x".repeat(201)] {
            assert!(parse_reason(bad).is_err(), "{bad:?}");
        }
    }
}
