//! totpctl: the administrator's tool for the pam_totp store.

mod audit;
mod automation;
mod cli;
mod diagnose;
mod docs;
mod enrolling;
mod importing;
mod lifecycle;
mod population;
mod report;
mod sealing;
mod sudo;

use std::process::ExitCode;

use clap::Parser;

use audit::{Audit, Detail};
use cli::{Cli, Command};
use pam_totp::config::{self, Config};
use pam_totp::store::EnrollMode;
#[cfg(feature = "postgres")]
use pam_totp::store::{PgSettings, PgStore, SqliteStore, StoreLocation};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("totpctl: error: {message}");
            ExitCode::FAILURE
        }
    }
}

pub use pam_totp::store::unix_now;

/// User names go into the store key, log lines and URIs: refuse the ones
/// that cannot be a login name.
pub fn check_user(user: &str) -> Result<(), String> {
    config::check_name(user).map_err(|e| format!("the user name: {e}"))
}

/// A user the name service knows under exactly this name (the module looks
/// tokens up under the name NSS gives), unless `allow_unknown`.
pub fn known_user(user: &str, allow_unknown: bool) -> Result<(), String> {
    use pam_totp::sys::Accounts;
    check_user(user)?;
    if allow_unknown {
        return Ok(());
    }
    match pam_totp::sys::Nss.canonical_user(user) {
        Ok(Some(name)) if name == user => Ok(()),
        Ok(Some(name)) => Err(format!(
            "the name service calls this account {name:?}, not {user:?}, and the module looks \
             tokens up under {name:?}: use that name"
        )),
        Ok(None) => Err(format!(
            "{user:?} is not a user on this host (`getent passwd {user}` finds nothing): check \
             the spelling, or add --allow-unknown-user for an account that exists only on other \
             login nodes"
        )),
        Err(e) => Err(format!(
            "cannot look {user:?} up in the name service ({e}); add --allow-unknown-user to go on"
        )),
    }
}

/// The store settings, as the module would read them: the config file
/// (--config, else the default file if it exists), then the options.
fn settings(cli: &Cli) -> Result<Config, String> {
    let mut args = Vec::new();
    if let Some(file) = &cli.config {
        args.push(format!("config={}", file.display()));
    }
    if let Some(db) = &cli.db {
        args.push(format!("db={db}"));
    }
    if let Some(file) = &cli.db_password_file {
        args.push(format!("db_password_file={}", file.display()));
    }
    if let Some(file) = &cli.key_file {
        args.push(format!("key_file={}", file.display()));
    }
    config::load(&args).map_err(|e| e.to_string())
}

/// `totpctl init` on a SQLite store: the store directory, if it exists
/// already, must be root's alone; one that group or others can read or write
/// (e.g. made 0755 by hand) is set to 0700, and the administrator is told.
fn private_store_dir(path: &std::path::Path) -> Result<(), String> {
    use pam_totp::trust::StoreDir;
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    match pam_totp::trust::private_store_dir(dir) {
        Ok(StoreDir::Fixed(old)) => {
            println!(
                "Changed the mode of the store directory {} from {old:04o} to 0700: group and \
                 others must not read or write where the store lives.",
                dir.display()
            );
            Ok(())
        }
        Ok(StoreDir::Absent | StoreDir::Private) => Ok(()),
        Err(e) => Err(format!("store directory not trusted: {e}")),
    }
}

/// Without PostgreSQL support there is nothing to migrate to.
#[cfg(not(feature = "postgres"))]
fn migrate(_: &Cli, _: &std::path::Path, _: &str) -> Result<(), String> {
    Err(pam_totp::store::StoreError::NoPostgres.to_string())
}

/// `totpctl migrate`: a SQLite store into PostgreSQL, all or nothing.
#[cfg(feature = "postgres")]
fn migrate(cli: &Cli, from: &std::path::Path, to: &str) -> Result<(), String> {
    let target = match StoreLocation::parse(to) {
        Ok(StoreLocation::Postgres(target)) => target,
        Ok(StoreLocation::Sqlite(_)) => {
            return Err("--to must be a postgresql:// URL".to_string());
        }
        Err(e) => return Err(format!("--to {}: {e}", StoreLocation::shown(to))),
    };
    let config = settings(cli)?;
    // The key file opens the source's sealed keys and seals them in the
    // destination (found by an attack: without it a sealed store could not
    // be moved, and a plain one was copied in the clear with a key file).
    let sealer = config.access().sealer().map_err(|e| e.to_string())?;
    let source = SqliteStore::open(from)
        .map_err(|e| e.to_string())?
        .with_sealer(sealer.clone());
    let dump = source.dump().map_err(|e| e.to_string())?;
    let destination = PgStore::create(&PgSettings {
        target: &target,
        password_file: config.db_password_file.as_deref(),
        timeout: config.db_timeout,
    })
    .map_err(|e| e.to_string())?
    .with_sealer(sealer);
    let ((tokens, recovery, windows, failures), grants) =
        destination.load(&dump).map_err(|e| e.to_string())?;
    let renumbered: Vec<String> = grants
        .iter()
        .map(|(old, new)| format!("#{old}->#{new}"))
        .collect();
    Audit::open().record(
        "migrate",
        "*",
        Detail::new()
            .quoted("from", from.display())
            .quoted("to", &target.url)
            .bare("tokens", tokens)
            .bare("recovery_codes", recovery)
            .quoted("automation_grants", renumbered.join(",")),
    );
    if !grants.is_empty() {
        println!(
            "Copied {} automation grant(s) with new ids: {}.",
            grants.len(),
            renumbered.join(", ")
        );
    }
    println!(
        "Copied {tokens} token(s), {recovery} recovery code(s), {windows} enroll window(s) and \
         {failures} failure count(s) from {} to {} in one transaction.",
        from.display(),
        target.url
    );
    Ok(())
}

fn run(cli: Cli) -> Result<(), String> {
    // Through sudo: only the module's own store, no file named on the
    // command line. Before anything is read or written.
    sudo::check(&cli)?;
    // Verbs that do not touch the store.
    match &cli.command {
        Command::Completions { shell } => {
            docs::completions(*shell, &mut std::io::stdout());
            return Ok(());
        }
        Command::Migrate { from, to } => return migrate(&cli, from, to),
        Command::Keygen { file } => return sealing::keygen(file),
        // They open the store as a login does (check) or check it
        // (check-config), never with open_admin.
        Command::Check { user, code } => return diagnose::check(&settings(&cli)?, user, code),
        Command::CheckConfig { pam_args, config } => {
            return diagnose::check_config(&cli, pam_args.as_deref(), config.as_deref());
        }
        Command::Manpages { dir } => {
            for page in docs::manpages(dir)? {
                println!("{}", dir.join(page).display());
            }
            return Ok(());
        }
        _ => {}
    }
    // Only init, enroll, reset and import may create the store.
    let creates = matches!(
        cli.command,
        Command::Init | Command::Enroll { .. } | Command::Reset { .. } | Command::Import { .. }
    );
    let config = settings(&cli)?;
    if let (Command::Init, pam_totp::store::StoreLocation::Sqlite(path)) =
        (&cli.command, &config.db)
    {
        private_store_dir(path)?;
    }
    let store = config
        .access()
        .open_admin(creates)
        .map_err(|e| e.to_string())?;
    let store = store.as_ref();
    let e = |e: pam_totp::store::StoreError| e.to_string();
    match cli.command {
        // Answered above, before the store was opened.
        Command::Completions { .. }
        | Command::Manpages { .. }
        | Command::Migrate { .. }
        | Command::Keygen { .. }
        | Command::Check { .. }
        | Command::CheckConfig { .. } => Ok(()),
        Command::Rekey { new_key } => sealing::rekey(store, &config, &new_key),
        Command::Init => {
            let version = store.schema_version().map_err(|e| e.to_string())?;
            println!("Store {} is ready (schema version {version}).", config.db);
            Ok(())
        }
        Command::Enroll {
            user,
            token,
            force,
            from_file,
            qr_dir,
            allow_unknown_user,
        } => {
            let mode = if force {
                EnrollMode::ReplaceDevice
            } else {
                EnrollMode::Add
            };
            let mut audit = Audit::open();
            match (user, from_file) {
                (Some(user), None) => {
                    known_user(&user, allow_unknown_user)?;
                    enrolling::enroll(store, &mut audit, &user, &token, mode, &[])
                }
                (None, Some(file)) => enrolling::enroll_many(
                    store,
                    &mut audit,
                    &file,
                    &token,
                    mode,
                    qr_dir.as_deref(),
                    allow_unknown_user,
                ),
                _ => Err("name one USER or --from-file FILE".to_string()),
            }
        }
        Command::Reset { user, token, now } => {
            let tokens = store.tokens(&user).map_err(e)?;
            let old: Vec<String> = tokens
                .iter()
                .filter(|t| t.life.replaces.is_none())
                .map(|t| t.device.clone())
                .collect();
            let confirmed: Vec<_> = tokens.iter().filter(|t| t.is_active()).collect();
            let all_disabled =
                !confirmed.is_empty() && confirmed.iter().all(|t| t.life.disabled.is_some());
            if old.is_empty() {
                return Err(format!(
                    "{user} is not enrolled; use `totpctl enroll {user}`"
                ));
            }
            // The old tokens go now when the old phone is lost (--now) or
            // the new token works at once; otherwise at the confirmation.
            let at_once = token.secret.is_some() || token.no_confirm;
            let mode = if now || at_once {
                EnrollMode::ReplaceUser
            } else {
                EnrollMode::Replacement
            };
            enrolling::enroll(store, &mut Audit::open(), &user, &token, mode, &old)?;
            if all_disabled {
                println!(
                    "{user}'s tokens were all disabled, so the new one is too: only an \
                     administrator's `totpctl enable {user}` lets it log in."
                );
            }
            Ok(())
        }
        Command::Disable { user, device } => {
            lifecycle::set_disabled(store, &mut Audit::open(), &user, device.as_deref(), true)
        }
        Command::Enable { user, device } => {
            lifecycle::set_disabled(store, &mut Audit::open(), &user, device.as_deref(), false)
        }
        Command::Prune {
            pending_older_than,
            dry_run,
        } => lifecycle::prune(store, &mut Audit::open(), pending_older_than, dry_run),
        Command::Confirm { user, code, device } => {
            enrolling::confirm(store, &mut Audit::open(), &user, &code, device.as_deref())
        }
        Command::Delete { user, device } => {
            let mut audit = Audit::open();
            match device {
                Some(device) => {
                    if !store.delete_device(&user, &device).map_err(e)? {
                        return Err(format!("{user} has no device named {device:?}"));
                    }
                    store.forget_grace(&user).map_err(e)?;
                    audit.record("delete", &user, Detail::new().quoted("device", &device));
                    println!("Deleted device {device:?} of {user}.");
                }
                None => {
                    let devices: Vec<String> = store
                        .tokens(&user)
                        .map_err(e)?
                        .into_iter()
                        .map(|t| t.device)
                        .collect();
                    let codes = store.recovery_count(&user).map_err(e)?;
                    let count = store.delete_user(&user).map_err(e)?;
                    // The user's automation grants end with them, also for
                    // an automation account that never had a token.
                    let now = unix_now();
                    let in_force: Vec<_> = store
                        .automation_grants(Some(&user))
                        .map_err(e)?
                        .into_iter()
                        .filter(|g| g.revoked.is_none())
                        .collect();
                    let grants = store.revoke_automation_of_user(&user, now).map_err(e)?;
                    for grant in &in_force {
                        audit.record(
                            "automation-revoke",
                            &user,
                            Detail::new()
                                .bare("id", grant.id)
                                .bare("key", &grant.fingerprint)
                                .quoted("reason", &grant.reason)
                                .note("(the user was deleted)"),
                        );
                    }
                    if count == 0 {
                        if grants > 0 {
                            println!(
                                "{user} had no token; revoked their {grants} automation grant(s)."
                            );
                            return Ok(());
                        }
                        return Err(format!("{user} is not enrolled"));
                    }
                    audit.record(
                        "delete",
                        &user,
                        Detail::new()
                            .bare("tokens", count)
                            .quoted("devices", pam_totp::logline::device_list(&devices))
                            .bare("recovery_codes_unused", codes.unused),
                    );
                    println!(
                        "Deleted {user}'s {count} token(s) ({}) and {} unused recovery code(s); \
                         their grace periods, failed-code counts and enroll window went with them.",
                        devices.join(", "),
                        codes.unused
                    );
                }
            }
            Ok(())
        }
        Command::List { json } => {
            let tokens = store.list().map_err(e)?;
            let users = tokens.iter().map(|t| t.user.as_str());
            let locks =
                population::locks_of(store, users, &config.limits, unix_now()).map_err(e)?;
            if json {
                let list: Vec<_> = tokens
                    .iter()
                    .map(|t| report::token_json_with_locks(t, &locks))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                report::print_table(&tokens, &locks);
            }
            Ok(())
        }
        Command::Show { user, json } => {
            // One user's rows, not a scan of every token in the store.
            let tokens: Vec<_> = store
                .tokens(&user)
                .map_err(e)?
                .iter()
                .map(|t| t.info())
                .collect();
            let shown = report::Shown {
                key_graces: store.key_graces(&user, unix_now()).map_err(e)?,
                automation: store.automation_grants(Some(&user)).map_err(e)?,
                recovery: store.recovery_count(&user).map_err(e)?,
                window: store.enroll_window(&user, unix_now()).map_err(e)?,
                failures: store.failure_sources(&user).map_err(e)?,
                locks: population::locks(store, &user, &config.limits, unix_now()).map_err(e)?,
                graces: store.graces(&user, unix_now()).map_err(e)?,
                tokens,
            };
            if shown.tokens.is_empty()
                && shown.recovery.unused + shown.recovery.used == 0
                && shown.window.is_none()
                && shown.failures.is_empty()
                && shown.key_graces.is_empty()
                && shown.automation.is_empty()
            {
                return Err(format!("{user} is not enrolled"));
            }
            if json {
                println!("{}", report::show_json(&user, &shown));
            } else {
                report::print_show(&user, &shown);
            }
            Ok(())
        }
        Command::Recovery { user, json } => {
            enrolling::new_recovery_codes(store, &mut Audit::open(), &user, json)
        }
        Command::Unlock { user } => {
            let cleared = store.unlock(&user).map_err(e)?;
            let graces = store.forget_grace(&user).map_err(e)?;
            Audit::open().record(
                "unlock",
                &user,
                Detail::new()
                    .bare("sources", cleared)
                    .bare("graces", graces),
            );
            println!(
                "Cleared the failed-code counts of {user} ({cleared} address(es)) and ended {graces} grace period(s)."
            );
            Ok(())
        }
        Command::Forget { user, key: None } => {
            let graces = store.forget_grace(&user).map_err(e)?;
            Audit::open().record("forget", &user, Detail::new().bare("graces", graces));
            println!(
                "Ended {graces} grace period(s) of {user}: every address and every SSH key asks for a code again."
            );
            Ok(())
        }
        Command::Forget {
            user,
            key: Some(key),
        } => {
            let graces = store.forget_key_grace(&user, &key).map_err(e)?;
            Audit::open().record(
                "forget",
                &user,
                Detail::new().bare("key", &key).bare("graces", graces),
            );
            println!(
                "Ended {graces} grace period(s) of {user} for SSH key {key}: that key asks for a code again."
            );
            Ok(())
        }
        Command::AllowAutomation {
            user,
            key,
            from,
            until,
            reason,
            allow_unknown_user,
        } => {
            known_user(&user, allow_unknown_user)?;
            automation::allow(
                store,
                &mut Audit::open(),
                &user,
                &key,
                &from,
                until,
                &reason,
                config.automation_max_secs,
                unix_now(),
            )
        }
        Command::Automation { action } => match action {
            cli::AutomationAction::List {
                expiring,
                all,
                json,
                csv,
            } => {
                let format = match (json, csv) {
                    (true, _) => automation::ListFormat::Json,
                    (_, true) => automation::ListFormat::Csv,
                    _ => automation::ListFormat::Text,
                };
                automation::list(store, expiring, all, format, unix_now())
            }
            cli::AutomationAction::Revoke { id } => {
                automation::revoke(store, &mut Audit::open(), id, unix_now())
            }
        },
        Command::AllowEnroll {
            user,
            duration,
            allow_unknown_user,
        } => {
            known_user(&user, allow_unknown_user)?;
            if !store.tokens(&user).map_err(e)?.is_empty() {
                return Err(format!(
                    "{user} already has a token; enrollment at login is only for users without one \
                     (`totpctl delete {user}` first, or `totpctl reset {user}`)"
                ));
            }
            let mut audit = Audit::open();
            let until = unix_now() + duration as i64;
            store
                .open_enroll_window(&user, until, &audit.actor)
                .map_err(e)?;
            audit.record(
                "allow-enroll",
                &user,
                Detail::new().quoted("until", format!("{} UTC", report::utc(until))),
            );
            println!(
                "{user} may enroll at login until {} UTC (module argument enroll=window).",
                report::utc(until)
            );
            Ok(())
        }
        Command::Import { source } => importing::import(store, &mut Audit::open(), source),
        Command::Report { group, json, csv } => {
            let report = population::build(store, group.as_deref(), &config.limits, unix_now())?;
            if json {
                let mut value = population::json(&report);
                if let Some(map) = value.as_object_mut() {
                    map.insert(
                        "automation_expiring".to_string(),
                        automation::report_json(store, unix_now())?,
                    );
                }
                println!("{value}");
            } else if csv {
                print!("{}", population::csv(&report));
            } else {
                print!("{}", population::text(&report));
                print!("{}", automation::report_section(store, unix_now())?);
            }
            Ok(())
        }
    }
}
