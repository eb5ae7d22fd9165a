//! disable, enable and prune: tokens that stop, start again, or go because
//! nobody finished enrolling them.

use crate::audit::{Audit, Detail};
use crate::report::utc;
use crate::unix_now;
use pam_totp::store::Store;

/// `totpctl disable|enable USER [--device NAME]`.
pub fn set_disabled(
    store: &dyn Store,
    audit: &mut Audit,
    user: &str,
    device: Option<&str>,
    disable: bool,
) -> Result<(), String> {
    let tokens = store.tokens(user).map_err(|e| e.to_string())?;
    if tokens.is_empty() {
        return Err(format!("{user} is not enrolled"));
    }
    if let Some(device) = device
        && !tokens.iter().any(|t| t.device == device)
    {
        let names: Vec<&str> = tokens.iter().map(|t| t.device.as_str()).collect();
        return Err(format!(
            "{user} has no device named {device:?} (devices: {})",
            names.join(", ")
        ));
    }
    let now = unix_now();
    let changed = store
        .set_disabled(user, device, disable.then_some(now))
        .map_err(|e| e.to_string())?;
    let verb = if disable { "disable" } else { "enable" };
    let what = match device {
        Some(device) => format!("device {device:?} of {user}"),
        None => format!("{user}'s tokens"),
    };
    if changed == 0 {
        println!(
            "Nothing to do: {what} {} already {verb}d.",
            if device.is_some() { "is" } else { "are" }
        );
        return Ok(());
    }
    audit.record(
        verb,
        user,
        Detail::new()
            .quoted("device", device.unwrap_or("*"))
            .bare("tokens", changed),
    );
    if disable {
        println!(
            "Disabled {what} ({changed} token(s)) at {} UTC: they log nobody in until \
             `totpctl enable {user}`. A user with no other working token is denied.",
            utc(now)
        );
    } else {
        println!("Enabled {what} ({changed} token(s)): they log in again.");
    }
    Ok(())
}

/// `totpctl prune --pending-older-than AGE [--dry-run]`.
pub fn prune(
    store: &dyn Store,
    audit: &mut Audit,
    older_than: u64,
    dry_run: bool,
) -> Result<(), String> {
    let before = unix_now().saturating_sub(i64::try_from(older_than).unwrap_or(i64::MAX));
    if dry_run {
        let stale: Vec<_> = store
            .list()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|t| t.confirmed.is_none() && t.created < before)
            .collect();
        for t in &stale {
            println!(
                "would remove {}'s pending device {:?} (created {} UTC)",
                t.user,
                t.device,
                utc(t.created)
            );
        }
        println!(
            "{} pending token(s) created before {} UTC (dry run: nothing removed).",
            stale.len(),
            utc(before)
        );
        return Ok(());
    }
    let removed = store.prune_pending(before).map_err(|e| e.to_string())?;
    for (user, device) in &removed {
        audit.record(
            "prune",
            user,
            Detail::new()
                .quoted("device", device)
                .bare("state", "pending")
                .quoted("created_before", format!("{} UTC", utc(before))),
        );
        println!("removed {user}'s pending device {device:?}");
    }
    println!(
        "Removed {} pending token(s) created before {} UTC.",
        removed.len(),
        utc(before)
    );
    let (marked, left) = store.mark_deleted_keys().map_err(|e| e.to_string())?;
    if marked > 0 {
        audit.record(
            "prune",
            "*",
            Detail::new().bare("deleted_keys_marked", marked),
        );
        println!("Replaced {marked} deleted key(s) by their marks (the keys are no longer kept).");
    }
    if left > 0 {
        return Err(format!(
            "{left} record(s) of deleted keys still hold their key, sealed with a key file this \
             node does not have: run `totpctl prune` where the store's key file is (key_file=)"
        ));
    }
    Ok(())
}
