//! totp: the user's own command for pam_totp, installed set-uid root.
//!
//! It acts only on the caller, taken from the real uid. It starts from
//! nothing the caller controls: the environment is cleared before anything
//! else, the paths are compiled in (the module's config file, which names
//! the store, its password file and the sealing key exactly as the module
//! reads them), no core dumps, and signals wait while a change is written
//! (one transaction per change). Every code it checks counts against the
//! login's rate limits; every change is audited in syslog with the uid.

mod cli;
mod verbs;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use pam_totp::config::{self, Config, SelfService};
use pam_totp::store::Store;

/// Who runs `totp`: the real uid and its passwd entry.
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
}

fn main() -> ExitCode {
    // First, before arguments are read: no core dumps, umask 077, and an
    // empty environment (no locale, TZ, NSS or library variables).
    if let Err(e) = pam_totp::sys::harden_process() {
        eprintln!("totp: error: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("totp: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The caller, from the real uid; refused when totp is not set-uid root
/// or the caller is root.
fn caller() -> Result<Caller, String> {
    let (uid, gid) = pam_totp::sys::real_ids();
    let (_, euid) = pam_totp::sys::uids();
    if euid != 0 {
        return Err(
            "totp is not running set-uid root, so it cannot reach the token store (the site \
             may have removed the set-uid bit on purpose: ask your administrators)"
                .to_string(),
        );
    }
    if uid == 0 {
        return Err(
            "totp acts on the user who runs it, and root has no tokens of its own: root \
             manages users' tokens with totpctl"
                .to_string(),
        );
    }
    let name = pam_totp::sys::user_name_of(uid)
        .ok_or_else(|| format!("uid {uid} has no entry in the name service"))?;
    config::check_name(&name).map_err(|e| format!("your user name: {e}"))?;
    Ok(Caller { uid, gid, name })
}

fn run(cli: Cli) -> Result<(), String> {
    let caller = caller()?;
    // Where the caller could freeze this process (a control group they
    // own), they could hold the store's write lock, and every login with
    // it, for as long as they like: refused.
    if let Some(control) = pam_totp::sys::freezable_by(caller.uid) {
        return Err(format!(
            "totp does not run inside a control group you can freeze ({control}): run it from \
             your login shell, not under `systemd-run --user` or a container of yours"
        ));
    }
    // From here on the caller can neither signal nor stop nor trace it.
    pam_totp::sys::become_root_only()?;
    // The module's own config file, at its compiled-in path; no option or
    // variable can name another.
    let config: Config = config::load(&[]).map_err(|e| {
        format!(
            "the configuration ({}) has a problem; ask your administrators ({e})",
            config::DEFAULT_CONFIG
        )
    })?;
    match (config.self_service, &cli.command) {
        (SelfService::Full, _) | (SelfService::Status, Command::Status) => {}
        (SelfService::Status, _) => {
            return Err(
                "on this system `totp` may only show your status (self_service = status in \
                 pam_totp.conf): ask your administrators for changes to your devices"
                    .to_string(),
            );
        }
        (SelfService::Off, _) => {
            return Err(
                "self-service is turned off on this system (self_service = off in \
                 pam_totp.conf): ask your administrators"
                    .to_string(),
            );
        }
    }
    let store = config
        .access()
        .open_admin(false)
        .map_err(|e| format!("the token store: {e}"))?;
    let store: &dyn Store = store.as_ref();
    let ctx = verbs::Ctx {
        config: &config,
        store,
        caller: &caller,
    };
    match cli.command {
        Command::Status => verbs::status(&ctx),
        Command::Test => verbs::test(&ctx),
        Command::RecoveryCodes => verbs::recovery_codes(&ctx),
        Command::AddDevice {
            name,
            invert,
            qr_png,
        } => verbs::add_device(
            &ctx,
            &name,
            &verbs::Show {
                invert,
                png: qr_png,
            },
        ),
        Command::Replace {
            device,
            invert,
            qr_png,
        } => verbs::replace(
            &ctx,
            device.as_deref(),
            &verbs::Show {
                invert,
                png: qr_png,
            },
        ),
        Command::RemoveDevice { name } => verbs::remove_device(&ctx, &name),
    }
}
