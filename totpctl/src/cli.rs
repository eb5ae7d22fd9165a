//! The command line: every verb and option, with the help a sysadmin reads.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use pam_totp::otp::Algorithm;
use pam_totp::store::{DEFAULT_DEVICE, Kind};

#[derive(Parser)]
#[command(
    name = "totpctl",
    version,
    about = "Manage the pam_totp secret store: enroll users, confirm, reset, recovery codes, imports.",
    after_help = "The store is root-only (directory 0700, file 0600). Run as root.\n\
                  Every change is logged to syslog (authpriv) with who made it.\n\n\
                  Examples:\n  \
                  totpctl init                            # create the store\n  \
                  totpctl enroll alice                    # QR code + key + recovery codes, shown once\n  \
                  totpctl confirm alice 123456            # activate a pending token (portals)\n  \
                  totpctl enroll alice --device tablet    # a second device\n  \
                  totpctl reset alice                     # lost phone: new token, new recovery codes\n  \
                  totpctl allow-enroll bob --for 24h      # let bob enroll at his next login\n  \
                  totpctl import oath /etc/users.oath     # dry run; add --apply to write\n  \
                  totpctl show alice\n\n\
                  Help desk through sudo: totpctl sees SUDO_USER, SUDO_UID, SUDO_GID or SUDO_COMMAND\n\
                  and then works only on the store the module's config file names: --db, --config,\n\
                  --key-file and --db-password-file (options before the verb only) are refused, and so\n\
                  are migrate, keygen, rekey, import and manpages; --qr-png FILE is created as the caller,\n\
                  new, mode 0600. A sudoers rule (visudo -f /etc/sudoers.d/totpctl):\n  \
                  Cmnd_Alias TOTP_HELPDESK = \\\n    \
                  /usr/sbin/totpctl show *, /usr/sbin/totpctl list, \\\n    \
                  /usr/sbin/totpctl list --json, /usr/sbin/totpctl reset *, \\\n    \
                  /usr/sbin/totpctl unlock *, /usr/sbin/totpctl forget *, \\\n    \
                  /usr/sbin/totpctl enroll *, /usr/sbin/totpctl confirm *, \\\n    \
                  /usr/sbin/totpctl delete *\n  \
                  %helpdesk ALL = (root) TOTP_HELPDESK"
)]
pub struct Cli {
    /// The store: a SQLite file or a postgresql://USER@HOST/DB?sslmode=…
    /// URL, as the module's db= (default: db from the config file, else
    /// /var/lib/pam_totp/pam_totp.db). Before the verb; refused through sudo.
    #[arg(long, value_name = "PATH|URL")]
    pub db: Option<String>,

    /// The module's config file, read for db, db_password_file and
    /// db_timeout (default /etc/security/pam_totp.conf, if it exists).
    /// Before the verb; refused through sudo.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// PostgreSQL: the file holding the database password (root's, 0600).
    /// Before the verb; refused through sudo.
    #[arg(long, value_name = "FILE")]
    pub db_password_file: Option<PathBuf>,

    /// The key that seals token keys at rest (default: key_file from the
    /// config file, else /etc/security/pam_totp.key if it exists). Before
    /// the verb; refused through sudo.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create the store (directory 0700, file 0600) or bring its schema up
    /// to date. Safe to run again. Do this before adding pam_totp to a PAM
    /// stack: the module never creates a store and denies while it is missing.
    /// An existing store directory that group or others can read or write is
    /// set to 0700 (and said so); every directory above it must be root's and
    /// not group- or world-writable.
    Init,
    /// Give USER a token. Without --secret a random 160-bit key is generated
    /// and shown once (QR code, otpauth:// URI, key) with 10 recovery codes
    /// (for the user's first token); the token stays pending until a code
    /// from the app confirms it (asked here on a terminal, or `confirm`).
    Enroll {
        /// The login name, exactly as PAM sees it.
        user: String,
        #[command(flatten)]
        token: TokenArgs,
        /// Replace an existing token of the same device name.
        #[arg(long)]
        force: bool,
    },
    /// Activate USER's pending token with a code from the app.
    Confirm {
        user: String,
        /// The code the app shows now.
        code: String,
        /// Which pending device (default: whichever the code matches).
        #[arg(long, value_name = "NAME")]
        device: Option<String>,
    },
    /// A lost or replaced phone: remove all of USER's tokens and recovery
    /// codes and enroll a new token, in one step. Takes the options of enroll.
    Reset {
        user: String,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Remove USER's tokens, recovery codes and enroll window (or one device).
    Delete {
        user: String,
        /// Remove only this device.
        #[arg(long, value_name = "NAME")]
        device: Option<String>,
    },
    /// List all tokens (never shows keys).
    List {
        /// One JSON object per token, in a list.
        #[arg(long)]
        json: bool,
    },
    /// Everything about USER except keys: devices, state, last use,
    /// recovery codes left, enroll window, failed codes per address.
    Show {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Give USER 10 new recovery codes, shown once. The old ones stop working.
    Recovery {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Clear USER's failed-code counts: ends a back-off or a per-user lock.
    Unlock { user: String },
    /// End USER's grace periods (module argument grace=): the next login
    /// from every address asks for a code again. unlock, reset and delete
    /// end them too.
    Forget { user: String },
    /// Let USER enroll at login (module argument enroll=window) for a while.
    AllowEnroll {
        user: String,
        /// How long: e.g. 30m, 24h, 2d (at most 30d).
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: u64,
    },
    /// Move tokens from another tool. A dry run unless --apply. Refused
    /// through sudo (it reads a file named on the command line).
    Import {
        #[command(subcommand)]
        source: ImportSource,
    },
    /// Copy a SQLite store into an empty PostgreSQL database (schema
    /// created or migrated first), in one transaction: tokens with their
    /// used steps, recovery codes, enroll windows, failure counts. Prints
    /// the counts. The SQLite file is left as it was. Refused through sudo.
    Migrate {
        /// The SQLite store to copy.
        #[arg(long, value_name = "PATH")]
        from: PathBuf,
        /// The database: postgresql://USER@HOST/DB?sslmode=verify-full|disable
        /// (password from --db-password-file).
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Write a new sealing key (32 random bytes, hex) to FILE, mode 0600;
    /// FILE must not exist. Then copy it to every login node and run
    /// `rekey --new-key FILE` (README: "Secrets sealed at rest"). Refused
    /// through sudo.
    Keygen {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Re-seal every token key with the key in --new-key FILE, in one
    /// transaction: keys are opened with the current key file (or read
    /// plain when none is in use) and sealed with the new one. Refused
    /// through sudo.
    Rekey {
        #[arg(long, value_name = "FILE")]
        new_key: PathBuf,
    },
    /// Print a completion script for SHELL (bash or zsh) on standard
    /// output. Packages install them; by hand, e.g.
    /// `totpctl completions bash > /etc/bash_completion.d/totpctl`.
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Write the manual pages generated from these definitions
    /// (totpctl.8 and one page per verb) into DIR (for packaging).
    #[command(hide = true)]
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// The shells totpctl ships completions for.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
}

#[derive(Subcommand)]
pub enum ImportSource {
    /// One user's ~/.google_authenticator (FILE --user USER), or every
    /// user's (--home-dirs). Scratch codes become recovery codes.
    GoogleAuthenticator {
        /// The file (with --user).
        #[arg(required_unless_present = "home_dirs", conflicts_with = "home_dirs")]
        file: Option<PathBuf>,
        /// Whose file it is (with FILE).
        #[arg(
            long,
            required_unless_present = "home_dirs",
            conflicts_with = "home_dirs"
        )]
        user: Option<String>,
        /// Look in every home directory the passwd database lists (NSS:
        /// a name service that does not enumerate, such as SSSD by default,
        /// lists only local users). A file is taken for the user whose home
        /// it is, and only when that user owns it; a symlink, anything but a
        /// regular file, a file of another user or of root (outside root's
        /// home), one that group or others may read or write, one over 64
        /// KiB or malformed is refused and reported. Users who already have
        /// a token are skipped unless --force. Every file read is reported,
        /// never its key or scratch codes; the imports are one transaction.
        #[arg(long)]
        home_dirs: bool,
        /// With --home-dirs: print one JSON object (applied, users, files,
        /// results: user, uid, file, status, reason, detail, type,
        /// scratch_codes) instead of text.
        #[arg(long, conflicts_with_all = ["file", "user"])]
        json: bool,
        #[command(flatten)]
        common: ImportArgs,
    },
    /// pam_oath's users file (all users; HOTP and TOTP lines).
    Oath {
        /// The users file, e.g. /etc/users.oath.
        file: PathBuf,
        #[command(flatten)]
        common: ImportArgs,
    },
}

#[derive(Args)]
pub struct ImportArgs {
    /// Write to the store (all or nothing). Without it, only print what would happen.
    #[arg(long)]
    pub apply: bool,
    /// Only print what would happen (the default without --apply).
    #[arg(long, conflicts_with = "apply")]
    pub dry_run: bool,
    /// Accept keys shorter than 128 bits (down to 80).
    #[arg(long)]
    pub allow_short: bool,
    /// Device name for the imported tokens.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_DEVICE)]
    pub device: String,
    /// Replace existing tokens of that device name.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct TokenArgs {
    /// Name of this token, so a user can have several (phone, tablet…).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_DEVICE)]
    pub device: String,
    /// Time-based (totp) or counter-based (hotp).
    #[arg(long = "type", value_name = "TYPE", default_value = "totp", value_parser = parse_kind)]
    pub kind: Kind,
    /// Use this base32 key instead of generating one (the key already lives
    /// in an app). "-" reads it from standard input, which keeps it out of
    /// the shell history and the process list. Active at once.
    #[arg(long, value_name = "BASE32")]
    pub secret: Option<String>,
    /// Accept a --secret shorter than 128 bits (down to 80).
    #[arg(long)]
    pub allow_short: bool,
    /// HMAC algorithm; most apps only support sha1.
    #[arg(long, default_value = "sha1", value_parser = parse_algorithm)]
    pub algorithm: Algorithm,
    /// Digits per code (6 to 8).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(6..=8))]
    pub digits: u32,
    /// Seconds per code, TOTP (1 to 3600).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub period: u64,
    /// HOTP: the counter of the next code the app will show.
    #[arg(long, default_value_t = 0)]
    pub counter: u64,
    /// Issuer shown in the app (default: this host's name).
    #[arg(long)]
    pub issuer: Option<String>,
    /// Make a generated token active at once, without a confirming code.
    #[arg(long)]
    pub no_confirm: bool,
    /// Draw the terminal QR code for a light background (default: dark).
    #[arg(long)]
    pub invert: bool,
    /// Also write the QR code as a PNG: a new file (never an existing file
    /// or a symlink), mode 0600; through sudo, created as the caller.
    #[arg(long, value_name = "FILE", conflicts_with = "secret")]
    pub qr_png: Option<PathBuf>,
    /// Print one JSON object (user, device, key, uri, recovery_codes, state)
    /// instead of text; never asks for a confirming code.
    #[arg(long)]
    pub json: bool,
}

fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    text.parse()
}

fn parse_kind(text: &str) -> Result<Kind, String> {
    text.parse()
}

/// `30m`, `24h`, `2d`, `90s` -> seconds, at most 30 days.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    pam_totp::config::parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(86_400));
        assert_eq!(parse_duration("30m"), Ok(1_800));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        for bad in ["24", "h", "0h", "31d", "1w", "-1h", ""] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
