//! totpctl: the administrator's tool for the pam_totp store.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use zeroize::Zeroizing;

use pam_totp::config::DEFAULT_DB;
use pam_totp::otp::{Algorithm, Params};
use pam_totp::secret::Secret;
use pam_totp::store::{SqliteStore, Store, Token};

#[derive(Parser)]
#[command(
    name = "totpctl",
    version,
    about = "Manage the pam_totp secret store: enroll, delete and list users' TOTP tokens.",
    after_help = "The store is root-only (directory 0700, file 0600). Run as root.\n\
                  Examples:\n  \
                  totpctl init                         # create the store\n  \
                  totpctl enroll alice                 # new random key, shown once\n  \
                  totpctl enroll bob --secret -        # key read from stdin (migrations)\n  \
                  totpctl list\n  \
                  totpctl delete alice"
)]
struct Cli {
    /// Path of the SQLite store (must match the module's db= argument).
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_DB)]
    db: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the store (directory 0700, file 0600) or bring its schema up
    /// to date. Safe to run again. Do this before adding pam_totp to a PAM
    /// stack: the module never creates a store and denies while it is missing.
    Init,
    /// Give USER a TOTP token. Without --secret a random 160-bit key is
    /// generated and shown once (key and otpauth:// URI) for the user's app.
    Enroll {
        /// The login name, exactly as PAM sees it.
        user: String,
        /// Use this base32 key instead of generating one (the key already
        /// lives in an app). "-" reads it from standard input, which keeps it
        /// out of the shell history and the process list.
        #[arg(long, value_name = "BASE32")]
        secret: Option<String>,
        /// HMAC algorithm; most apps only support sha1.
        #[arg(long, default_value = "sha1", value_parser = parse_algorithm)]
        algorithm: Algorithm,
        /// Digits per code (6 to 8).
        #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(6..=8))]
        digits: u32,
        /// Seconds per code (1 to 3600).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
        period: u64,
        /// Issuer shown in the app (default: this host's name).
        #[arg(long)]
        issuer: Option<String>,
        /// Replace an existing token (the old one stops working at once).
        #[arg(long)]
        force: bool,
    },
    /// Remove USER's token. The user then follows the module's unenrolled= policy.
    Delete {
        /// The login name.
        user: String,
    },
    /// List enrolled users (never shows keys).
    List,
}

fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    text.parse()
}

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

fn run(cli: Cli) -> Result<(), String> {
    // Only init and enroll may create the store; the others need an existing one.
    let store = match cli.command {
        Command::Init | Command::Enroll { .. } => SqliteStore::create(&cli.db),
        _ => SqliteStore::open(&cli.db),
    }
    .map_err(|e| e.to_string())?;
    match cli.command {
        Command::Init => {
            let version = store.schema_version().map_err(|e| e.to_string())?;
            println!(
                "Store {} is ready (schema version {version}).",
                cli.db.display()
            );
            Ok(())
        }
        Command::Enroll {
            user,
            secret,
            algorithm,
            digits,
            period,
            issuer,
            force,
        } => {
            check_user(&user)?;
            let params = Params {
                algorithm,
                digits,
                period,
            };
            params.validate()?;
            let (secret, generated) = match secret {
                Some(text) => (read_secret(&text)?, false),
                None => (Secret::generate().map_err(|e| e.to_string())?, true),
            };
            let token = Token {
                user: user.clone(),
                secret,
                params,
                created: unix_now(),
                last_step: None,
            };
            store.enroll(&token, force).map_err(|e| e.to_string())?;
            println!(
                "Enrolled {user} ({}, {} digits, {} s).",
                params.algorithm, params.digits, params.period
            );
            if generated {
                let issuer = issuer.unwrap_or_else(host_name);
                println!(
                    "Add it to the authenticator app now; the key is not shown again.\n\
                     Key (type by hand): {}\n\
                     URI (as a QR code): {}",
                    token.secret.to_base32_grouped().as_str(),
                    token.secret.otpauth_uri(&issuer, &user, &params).as_str()
                );
            }
            Ok(())
        }
        Command::Delete { user } => {
            if store.delete(&user).map_err(|e| e.to_string())? {
                println!("Deleted the token of {user}.");
                Ok(())
            } else {
                Err(format!("{user} is not enrolled"))
            }
        }
        Command::List => {
            let tokens = store.list().map_err(|e| e.to_string())?;
            println!(
                "{:<24} {:<9} {:>6} {:>6}  {:<20}  {:<20}",
                "USER", "ALGORITHM", "DIGITS", "PERIOD", "CREATED (UTC)", "LAST USED (UTC)"
            );
            for t in tokens {
                let last_used = t
                    .last_step
                    .map(|s| utc(s.saturating_mul(t.params.period) as i64))
                    .unwrap_or_else(|| "never".to_string());
                println!(
                    "{:<24} {:<9} {:>6} {:>6}  {:<20}  {:<20}",
                    t.user,
                    t.params.algorithm,
                    t.params.digits,
                    t.params.period,
                    utc(t.created),
                    last_used
                );
            }
            Ok(())
        }
    }
}

/// User names go into the store key, log lines and URIs: refuse the ones
/// that cannot be a login name.
fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > 256 {
        return Err("the user name must be 1 to 256 bytes long".to_string());
    }
    if user.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "the user name {user:?} contains spaces or control characters"
        ));
    }
    Ok(())
}

fn read_secret(text: &str) -> Result<Secret, String> {
    let text = if text == "-" {
        if std::io::stdin().is_terminal() {
            eprint!("Base32 key: ");
        }
        let mut line = Zeroizing::new(String::new());
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading the key from stdin: {e}"))?;
        line
    } else {
        Zeroizing::new(text.to_string())
    };
    Secret::from_base32(&text).map_err(|e| format!("--secret: {e}"))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pam_totp".to_string())
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (civil-from-days, proleptic Gregorian).
fn utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
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

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
