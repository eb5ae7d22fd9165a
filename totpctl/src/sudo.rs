//! totpctl run through sudo: a help desk's tool, held to the module's own
//! store.
//!
//! sudo puts `SUDO_USER`, `SUDO_UID`, `SUDO_GID` and `SUDO_COMMAND` in the
//! environment of the command it runs; when any of them is set, totpctl
//! takes itself to be run through sudo. Then:
//! - it uses only the store, sealing key and database password that the
//!   module's config file (/etc/security/pam_totp.conf) names: `--db`,
//!   `--config`, `--key-file` and `--db-password-file` are refused;
//! - it reads and writes no file named on its command line: `migrate`,
//!   `keygen`, `rekey`, `import`, `enroll --from-file` and `manpages` are
//!   refused, and so are `check-config --pam-args` and `--config` (module
//!   arguments name files);
//! - `check USER CODE` is allowed: the help desk's diagnosis of "my code
//!   does not work". It is a code oracle, so it takes a guess under the
//!   module's own limits (the config file's) like a login, and is audited.
//! - the one output file it writes, `--qr-png FILE`, is created as the
//!   caller (SUDO_UID, SUDO_GID), new (never an existing file or a link),
//!   mode 0600.
//!
//! The store options are accepted only before the verb (they are not
//! global), so a sudoers rule that starts with the verb cannot be stretched
//! to them by its wildcard either. Whoever can set these variables by hand
//! is root already (sudoers does not let the help desk set them: no
//! SETENV), and root needs no sudo.

use std::fs::File;
use std::path::Path;

use crate::cli::{Cli, Command};

/// The variables sudo sets for the command it runs.
pub const VARIABLES: &[&str] = &["SUDO_USER", "SUDO_UID", "SUDO_GID", "SUDO_COMMAND"];

/// True when totpctl runs through sudo (any of [`VARIABLES`] is set, even
/// empty: in doubt, the limits apply).
pub fn active() -> bool {
    VARIABLES.iter().any(|v| std::env::var_os(v).is_some())
}

fn refused(what: &str) -> String {
    format!(
        "{what} is refused when totpctl runs through sudo (SUDO_USER, SUDO_UID, SUDO_GID or \
         SUDO_COMMAND is set): through sudo it works only on the store the module's config \
         file names and touches no file named on its command line. An administrator runs \
         this as root outside sudo (a shell from `sudo -i` carries these variables: unset \
         them first). README: \"Help desk through sudo\"."
    )
}

/// Refuses, through sudo, every option and verb that chooses where data
/// comes from or goes. Checked before anything is opened.
pub fn check(cli: &Cli) -> Result<(), String> {
    if !active() {
        return Ok(());
    }
    for (given, option) in [
        (cli.db.is_some(), "--db"),
        (cli.config.is_some(), "--config"),
        (cli.key_file.is_some(), "--key-file"),
        (cli.db_password_file.is_some(), "--db-password-file"),
    ] {
        if given {
            return Err(refused(option));
        }
    }
    let verb = match &cli.command {
        Command::Migrate { .. } => "migrate",
        Command::Keygen { .. } => "keygen",
        Command::Rekey { .. } => "rekey",
        Command::Import { .. } => "import",
        Command::Manpages { .. } => "manpages",
        Command::Enroll {
            from_file: Some(_), ..
        } => "enroll --from-file",
        Command::CheckConfig { pam_args, config } if pam_args.is_some() || config.is_some() => {
            "check-config --pam-args/--config"
        }
        _ => return Ok(()),
    };
    Err(refused(&format!("`totpctl {verb}`")))
}

/// Who ran sudo: SUDO_UID and SUDO_GID, both required.
fn caller() -> Result<(libc::uid_t, libc::gid_t), String> {
    let number = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| {
                format!("through sudo, {name} must be set to a number (sudo sets it itself)")
            })
    };
    Ok((number("SUDO_UID")?, number("SUDO_GID")?))
}

/// A file totpctl writes for its caller (`--qr-png`): created new
/// (O_CREAT|O_EXCL, so never an existing file, and never through a symlink:
/// O_NOFOLLOW), mode 0600. Through sudo it is created as the caller, so it
/// appears only where the caller could create it and belongs to them.
pub struct OutputFile {
    pub file: File,
    caller: Option<(libc::uid_t, libc::gid_t)>,
}

impl OutputFile {
    pub fn create(path: &Path) -> Result<OutputFile, String> {
        let caller = if active() { Some(caller()?) } else { None };
        let open = || pam_totp_qr_png::create_new(path);
        let file = match caller {
            Some((uid, gid)) => as_user(uid, gid, open)?,
            None => open(),
        }
        .map_err(|e| e.to_string())?;
        Ok(OutputFile { file, caller })
    }

    /// Removes the file again (nothing was written to it), as whoever
    /// created it; best effort.
    pub fn discard(self, path: &Path) {
        drop(self.file);
        let _ = match self.caller {
            Some((uid, gid)) => as_user(uid, gid, || std::fs::remove_file(path)),
            None => Ok(std::fs::remove_file(path)),
        };
    }
}

use pam_totp::sys::as_user;
