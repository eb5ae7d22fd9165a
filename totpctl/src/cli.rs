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
                  totpctl show alice\n  \
                  totpctl check alice 700102              # does the code match? clock offset (not used up)\n  \
                  totpctl check-config                    # every problem in the module's configuration\n\n\
                  Help desk through sudo: totpctl sees SUDO_USER, SUDO_UID, SUDO_GID or SUDO_COMMAND\n\
                  and then works only on the store the module's config file names: --db, --config,\n\
                  --key-file and --db-password-file (options before the verb only) are refused, and so\n\
                  are migrate, keygen, rekey, import, enroll --from-file, check-config --pam-args/--config\n\
                  and manpages; --qr-png FILE is created as the caller,\n\
                  new, mode 0600. A sudoers rule (visudo -f /etc/sudoers.d/totpctl):\n  \
                  Cmnd_Alias TOTP_HELPDESK = \\\n    \
                  /usr/sbin/totpctl show *, /usr/sbin/totpctl list, \\\n    \
                  /usr/sbin/totpctl list --json, /usr/sbin/totpctl reset *, \\\n    \
                  /usr/sbin/totpctl unlock *, /usr/sbin/totpctl forget *, \\\n    \
                  /usr/sbin/totpctl enroll *, /usr/sbin/totpctl confirm *, \\\n    \
                  /usr/sbin/totpctl delete *, /usr/sbin/totpctl check *, \\\n    \
                  /usr/sbin/totpctl disable *, /usr/sbin/totpctl enable *, \\\n    \
                  /usr/sbin/totpctl report, /usr/sbin/totpctl report *\n  \
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
pub enum AutomationAction {
    /// The grants in force, one line each (id, user, key, networks, end,
    /// reason, who made it).
    List {
        /// Only grants in force that end within AGE (e.g. 14d).
        #[arg(long, value_name = "AGE", value_parser = parse_age, conflicts_with = "all")]
        expiring: Option<u64>,
        /// Also revoked and expired grants.
        #[arg(long)]
        all: bool,
        /// A JSON array, one object per grant.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// CSV (RFC 4180 quoting) for a spreadsheet, times as UTC dates: a
        /// header line (grant_id, user, key, from, until_utc, state, reason,
        /// created_utc, created_by), then one row per grant. With
        /// --expiring 14d: the grants `report` warns about.
        #[arg(long)]
        csv: bool,
    },
    /// End grant ID now.
    Revoke { id: i64 },
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
    ///
    /// USER must be a user the name service (getent passwd) knows, under
    /// the name it gives (`BOB` is refused when the account is `bob`).
    ///
    /// With --from-file, every user named in FILE (one per line; blank lines
    /// and # comments skipped) is enrolled in one transaction, all or
    /// nothing: each result as one JSON line on standard output (user,
    /// device, key, uri, recovery_codes, state), or with --qr-dir one PNG
    /// per user in a new directory (mode 0700) and the JSON lines without
    /// keys. Nothing is shown or written when one user fails.
    Enroll {
        /// The login name, exactly as the name service gives it.
        #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
        user: Option<String>,
        #[command(flatten)]
        token: TokenArgs,
        /// Replace an existing token of the same device name.
        #[arg(long)]
        force: bool,
        /// Enroll every user listed in FILE (see above).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["secret", "qr_png"])]
        from_file: Option<PathBuf>,
        /// With --from-file: write USER.png for each user into DIR, which
        /// must not exist (created 0700).
        #[arg(long, value_name = "DIR", requires = "from_file")]
        qr_dir: Option<PathBuf>,
        /// Allow user names the name service does not know on this host
        /// (accounts that exist only on other login nodes).
        #[arg(long)]
        allow_unknown_user: bool,
    },
    /// Activate USER's pending token with a code from the app. The code
    /// confirming it is used up: the next login needs the app's next code.
    Confirm {
        user: String,
        /// The code the app shows now, as shown: "700102" or "700 102".
        code: String,
        /// Which pending device (default: whichever the code matches).
        #[arg(long, value_name = "NAME")]
        device: Option<String>,
    },
    /// Does CODE match one of USER's devices, and at what clock offset?
    /// For a user who says "my code does not work": the answer names the
    /// device and how far its clock is off (e.g. `matches device "phone" at
    /// +1 step (its clock is about 30 s ahead)`), or says that no device
    /// matches within the window (window= of the config file).
    ///
    /// The code is NOT used up: it still works for one login afterwards.
    /// Each check counts like a login's guess (source "totpctl check" in
    /// `show`), under the config file's backoff_after= and user_limit=: wrong
    /// checks back off and lock the user as wrong logins do, a locked user is
    /// not checked (`totpctl unlock USER` ends it), a right code gives its
    /// guess back. Recovery codes are not tested (that would use one up).
    /// Root only; allowed through sudo for the help desk. Audited (user,
    /// result, offset; never the code). Exit status 0 when the code matches.
    Check {
        /// The login name.
        user: String,
        /// The code the user reads from the app, as shown: "700102" or "700 102".
        code: String,
    },
    /// Check the module's configuration as the module reads it: the
    /// arguments of its pam.d line and /etc/security/pam_totp.conf (or
    /// config=). Reports every problem, one line each with what to do:
    /// unknown keys (with the likely meant one), keys given twice, malformed
    /// values, a config file that is not trusted, groups of only_group= or
    /// exempt_group= that the name service does not know, a sealing key
    /// file that is missing or bad, a store that is missing, not
    /// initialised, untrusted, unreachable or from a newer version (opened
    /// as a login opens it, which also brings an older schema up to date,
    /// as the next login would). Prints the effective settings when all is
    /// well. Exit status 0 only when nothing is wrong. Through sudo only the
    /// module's own config file is checked (--pam-args and --config are refused).
    ///
    /// With grace_key= set, also the auth modules of /etc/pam.d/sshd that run
    /// before pam_totp and could change SSH_AUTH_INFO_0 (includes followed).
    ///
    /// Example: totpctl check-config --pam-args "db=/var/lib/pam_totp/pam_totp.db only_group=pilot"
    CheckConfig {
        /// The arguments after pam_totp.so on the pam.d line, in one
        /// argument, as written there ([...] keeps spaces); a whole pam.d
        /// line works too (everything up to pam_totp.so is skipped).
        #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
        pam_args: Option<String>,
        /// The config file to check instead of /etc/security/pam_totp.conf
        /// (as the module's config=FILE).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// A new phone: enroll a new token and give USER new recovery codes
    /// (the old codes stop working at once). The old tokens keep working
    /// until the new one is confirmed with a code from the new phone
    /// (asked here on a terminal, or `totpctl confirm USER CODE`); the
    /// confirmation retires them in the same transaction. With --now (the
    /// old phone is lost or stolen), or when the new token is active at
    /// once (--secret, --no-confirm), the old tokens go now. Grace periods
    /// end at once. Takes the options of enroll; says what it removed.
    Reset {
        user: String,
        #[command(flatten)]
        token: TokenArgs,
        /// Remove the old tokens now, not when the new one is confirmed.
        #[arg(long)]
        now: bool,
    },
    /// Stop USER's tokens (or one device) from logging anyone in, keeping
    /// them: `enable` undoes it. A user whose tokens are all disabled is
    /// denied (whatever unenrolled= says), with a log line saying so.
    Disable {
        user: String,
        /// Only this device.
        #[arg(long, value_name = "NAME")]
        device: Option<String>,
    },
    /// Undo `disable` for USER's tokens (or one device).
    Enable {
        user: String,
        /// Only this device.
        #[arg(long, value_name = "NAME")]
        device: Option<String>,
    },
    /// Remove tokens that were never confirmed and are older than
    /// DURATION (e.g. 14d): enrollments nobody finished. Lists them.
    /// Also drops records of deleted keys past their time and turns those
    /// still holding a key (from before schema 11) into marks.
    Prune {
        /// Pending tokens created longer ago than this (1 to 3650 days,
        /// e.g. 14d, 36h).
        #[arg(long, value_name = "DURATION", value_parser = parse_age)]
        pending_older_than: u64,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove USER's tokens, recovery codes and enroll window (or one device).
    Delete {
        user: String,
        /// Remove only this device.
        #[arg(long, value_name = "NAME")]
        device: Option<String>,
    },
    /// List all tokens (never shows keys).
    ///
    /// STATE also names a lock of the token's user in force now, as the
    /// login computes it: "locked until … (N wrong codes in 24 h)" or
    /// "backing off from ADDRESS until … (N wrong codes)".
    List {
        /// One JSON object per token, in a list.
        #[arg(long)]
        json: bool,
    },
    /// Everything about USER except keys: devices, state, last use,
    /// recovery codes left, enroll window, failed codes per address.
    ///
    /// The line after the user's name says whether a lock is in force now and until when,
    /// as the login computes it (limits from the config file): "locked
    /// until … (N wrong codes in 24 h)" or "backing off from ADDRESS until …
    /// (N wrong codes)"; `totpctl unlock USER` ends it.
    Show {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Where a rollout stands: each user of a group (or of the store) as
    /// locked, pending, not enrolled, never used or enrolled, with counts.
    ///
    /// One line per user, those who need the help desk first, then the
    /// number of users in each state:
    ///
    /// locked: a back-off of one address or the 24 h ceiling is in force
    /// now (`totpctl show USER` says which; `totpctl unlock USER` ends it).
    ///
    /// pending: only tokens no code has confirmed yet, so no login works
    /// (`totpctl confirm USER CODE`, or enroll again).
    ///
    /// not enrolled: in the group, no token (`totpctl enroll USER`, or
    /// `totpctl allow-enroll USER --for 24h`).
    ///
    /// never used: an active token nobody has logged in with yet.
    ///
    /// enrolled: an active token, with the time of the last login.
    ///
    /// Locks are computed as the login computes them, with the limits of the
    /// config file (backoff_after, backoff_max, user_limit): keep them there,
    /// not only on the PAM line. Times are UTC dates. Changes nothing.
    Report {
        /// Every user of GROUP as NSS lists it: the group's members and
        /// the users whose primary group it is (passwd enumeration: with
        /// SSSD's enumerate = false only listed members are found). A
        /// group NSS does not know is an error. Without --group: every
        /// user with a token in the store.
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// One JSON object: "users" (state, tokens, last use, locks, enroll
        /// window; times as epoch seconds and as UTC dates), "counts", and
        /// "automation_expiring" (grants in force that end within 14 days;
        /// the text report lists them after the counts).
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// CSV (RFC 4180 quoting) for a spreadsheet, times as UTC dates: a
        /// header line and one row per user, one table. The automation
        /// grants that end within 14 days, as CSV: `totpctl automation list
        /// --expiring 14d --csv`.
        #[arg(long)]
        csv: bool,
    },
    /// Give USER 10 new recovery codes, shown once. The old ones stop working.
    Recovery {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Clear USER's failed-code counts: ends a back-off or a per-user lock.
    Unlock { user: String },
    /// End USER's grace periods (module arguments grace= and grace_key=):
    /// the next login from every address, with every SSH key, asks for a
    /// code again. With --key only the grace of that SSH key ends. unlock,
    /// reset and delete end them too.
    Forget {
        user: String,
        /// Only the grace of this SSH key, as `ssh-keygen -lf KEY.pub`
        /// prints it (SHA256:…).
        #[arg(long, value_name = "SHA256:…", value_parser = crate::automation::parse_key)]
        key: Option<String>,
    },
    /// Let one SSH key of USER log in without a code from the given
    /// networks until a date: for workflows that cannot type codes (rsync
    /// from a lab server, CI). --key, --from, --until and --reason are
    /// required; --until is at most automation_max= (default 90 days) away.
    /// The module reads the key sshd names (AuthenticationMethods
    /// publickey,keyboard-interactive). The grant, each login it lets in,
    /// its expiry and its revocation are logged with its id and reason.
    AllowAutomation {
        user: String,
        /// The key, as `ssh-keygen -lf KEY.pub` prints it (SHA256:…).
        #[arg(long, value_name = "SHA256:…", value_parser = crate::automation::parse_key)]
        key: String,
        /// The client networks: CIDR blocks, comma-separated, each at least
        /// /8 (IPv4) or /16 (IPv6).
        #[arg(long = "from", value_name = "CIDR[,CIDR…]", value_parser = crate::automation::parse_networks)]
        from: String,
        /// The end (UTC): `2027-01-31` (the end of that day),
        /// `2027-01-31 18:00`, or a time from now (`30d`).
        #[arg(long, value_name = "DATE", value_parser = parse_expiry)]
        until: i64,
        /// Why: kept with the grant and in every log line about it.
        #[arg(long, value_name = "TEXT", value_parser = crate::automation::parse_reason)]
        reason: String,
        /// Allow a user name the name service does not know on this host.
        #[arg(long)]
        allow_unknown_user: bool,
    },
    /// Automation grants: `list` (those in force; --all also ended ones;
    /// --expiring 14d those ending within 14 days) and `revoke ID`.
    Automation {
        #[command(subcommand)]
        action: AutomationAction,
    },
    /// Let USER enroll at login (module argument enroll=window) for a while.
    AllowEnroll {
        user: String,
        /// Allow a user name the name service does not know on this host.
        #[arg(long)]
        allow_unknown_user: bool,
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
    /// the shell history and the process list. Active at once. A key the
    /// user holds on another device is refused (one key, one authenticator).
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
    /// HOTP: the counter of the next code the app will show (below
    /// 262144, where TOTP step numbers start).
    #[arg(long, default_value_t = 0)]
    pub counter: u64,
    /// Issuer shown in the app (default: this host's name).
    #[arg(long)]
    pub issuer: Option<String>,
    /// The token logs nobody in from this time (UTC): `2027-01-31` (the
    /// end of that day), `2027-01-31 18:00`, or a time from now: `90d`,
    /// `12h`. `show` and `list` say "expired" after it.
    #[arg(long, value_name = "DATE", value_parser = parse_expiry)]
    pub expires: Option<i64>,
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

/// An age such as `14d` or `36h`: seconds, 1 s to 3650 days.
pub fn parse_age(text: &str) -> Result<u64, String> {
    pam_totp::config::parse_duration_up_to(text, 3650)
}

/// `--expires`: a UTC date or time, or an age from now; never in the past.
pub fn parse_expiry(text: &str) -> Result<i64, String> {
    let now = pam_totp::store::unix_now();
    let at = match pam_totp::logline::parse_utc(text) {
        Some(at) => at,
        None => {
            let age = parse_age(text).map_err(|_| {
                format!("{text:?} is not a date (2027-01-31, 2027-01-31 18:00 UTC) or a time from now (90d)")
            })?;
            now.saturating_add(i64::try_from(age).unwrap_or(i64::MAX))
        }
    };
    if at <= now {
        return Err(format!(
            "{text:?} is in the past ({} UTC)",
            pam_totp::logline::utc(at)
        ));
    }
    Ok(at)
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
        assert_eq!(parse_age("14d"), Ok(14 * 86_400));
        assert_eq!(parse_age("3650d"), Ok(3650 * 86_400));
        for bad in ["14", "0d", "3651d", "1y", "d", "-1d"] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
        assert!(parse_expiry("2001-01-01").is_err(), "the past");
        assert!(parse_expiry("2999-01-01").is_ok());
        assert!(parse_expiry("90d").is_ok());
        assert!(parse_expiry("next week").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
