//! Diagnostics before tickets: `check` (does this code match, and at what
//! clock offset, without using it up) and `check-config` (every problem in
//! the module's configuration, as the module reads it).
//!
//! `check` is a code oracle, so it is held to a login's limits: one guess is
//! reserved for (user, [`CHECK_SOURCE`]) before the code is looked at, a
//! right code gives it back, a wrong one stays counted. Nothing is claimed:
//! the store is opened as a login opens it and only `tokens`,
//! `reserve_guess` and `release_guess` are called.

use std::path::{Path, PathBuf};

use crate::audit::{Audit, Detail};
use crate::check_user;
pub use pam_totp::codecheck::{Shape, describe_offset, find, lengths, plural, shape};
use pam_totp::config::{self, Config, ConfigError, DEFAULT_CONFIG};
use pam_totp::logline::{escape, utc};
use pam_totp::ratelimit::{self, Lock};
use pam_totp::store::{Kind, Reservation, StoreError, StoreLocation, Token};
use pam_totp::sys::{Accounts, Nss};

/// The source a check's guess is counted under (as a login's address is);
/// `show` lists it, `unlock` clears it.
pub const CHECK_SOURCE: &str = "totpctl check";

/// `--pam-args` longer than this is no pam.d line.
const MAX_PAM_ARGS: usize = 8 * 1024;

/// `check` and `check-config` read root's store and files and count
/// guesses in the store: as root only (through sudo, euid is root).
fn require_root(verb: &str) -> Result<(), String> {
    if pam_totp::sys::uids().1 != 0 {
        return Err(format!(
            "`totpctl {verb}` runs as root only (the store, the config file and the key \
             are root's): run it as root, or through sudo (README: \"Help desk through sudo\")"
        ));
    }
    Ok(())
}

/// `totpctl check USER CODE`.
pub fn check(config: &Config, user: &str, answer: &str) -> Result<(), String> {
    require_root("check")?;
    check_user(user)?;
    let code = match shape(answer) {
        Shape::Code(code) => code,
        Shape::Recovery => {
            return Err(
                "that is a recovery code shape; check does not test recovery codes (it would \
                 use one up). `totpctl show USER` says how many are left."
                    .to_string(),
            );
        }
        Shape::Other => {
            return Err(
                "that is not a code: a code is the 6 to 8 digits the app shows (\"700102\" or \
                 \"700 102\"); nothing was checked"
                    .to_string(),
            );
        }
    };
    let store = config
        .access()
        .open_for_login()
        .map_err(|e| e.to_string())?;
    let tokens = store.tokens(user).map_err(|e| e.to_string())?;
    if tokens.is_empty() {
        return Err(format!(
            "{user} is not enrolled (no token): there is nothing to check the code against"
        ));
    }
    let all: Vec<&Token> = tokens.iter().collect();
    if !tokens
        .iter()
        .any(|t| t.params.digits as usize == code.len())
    {
        let scratch = if code.len() == 8 {
            "; an 8-digit answer may also be an imported scratch code, which check does not \
             test (it would use it up)"
        } else {
            ""
        };
        return Err(format!(
            "the code has {} digit{}, but {user}'s devices show {}-digit codes: the user should \
             read every digit the app shows{scratch}; nothing was checked",
            code.len(),
            plural(code.len()),
            lengths(&all)
        ));
    }

    let mut audit = Audit::open();
    let now = pam_totp::sys::unix_time()?;
    let failures = match store
        .reserve_guess(user, CHECK_SOURCE, now as i64, &config.limits)
        .map_err(|e| e.to_string())?
    {
        Reservation::Granted(failures) => failures,
        Reservation::Locked(lock) => {
            audit.record(
                "check",
                user,
                Detail::new().bare("result", "locked").note("(not checked)"),
            );
            return Err(match lock {
                Lock::User { until } => format!(
                    "{user} is locked: too many wrong codes within 24 h, so code logins and \
                     checks are refused until {} UTC (`totpctl unlock {user}` ends it once you \
                     know who guessed: `totpctl show {user}` lists the addresses). The code was \
                     not checked.",
                    utc(until)
                ),
                Lock::Source { until } => format!(
                    "too many wrong codes checked for {user}: `totpctl check` backs off like a \
                     login from one address, until {} UTC (`totpctl unlock {user}` ends it). The \
                     code was not checked.",
                    utc(until)
                ),
            });
        }
    };
    match find(config, &tokens, &tokens, &code, now) {
        Some(found) => {
            // A right code gives its guess back and ends the check's
            // back-off, as a right login does for its address. Losing this
            // only keeps one more failure counted.
            let _ = store.release_guess(user, CHECK_SOURCE, true, now as i64);
            let token = found.token;
            let offset = describe_offset(&found);
            let stopped = token.life.stopped_at(now as i64);
            let state = if !token.is_active() {
                "pending"
            } else if let Some(stopped) = stopped {
                stopped
            } else if found.used {
                "used"
            } else {
                "match"
            };
            audit.record(
                "check",
                user,
                Detail::new()
                    .bare("result", state)
                    .quoted("device", &token.device)
                    .bare("offset", format!("{:+}", found.offset)),
            );
            let device = escape(&token.device);
            println!("The code matches {user}'s device \"{device}\" at {offset}.");
            if !token.is_active() {
                println!(
                    "That device is pending: it logs nobody in until it is confirmed \
                     (`totpctl confirm {user} CODE` with a code the app shows then)."
                );
            } else if let Some(stopped) = stopped {
                println!(
                    "That device is {stopped}: its codes log nobody in (`totpctl show {user}`; \
                     an administrator's `totpctl enable {user}` or a new enrollment)."
                );
            } else if found.used {
                println!(
                    "That code was already used by a login: a login with it is refused as reused. \
                     The app's next code works."
                );
            } else {
                println!(
                    "Not used up: the code still works for one login. If logins fail anyway, \
                     look at `totpctl show {user}` (a back-off or lock) and the module's syslog \
                     lines (authpriv)."
                );
            }
            if token.kind == Kind::Totp && found.offset != 0 {
                println!(
                    "The login window is ±{} step{}: set the device's clock to automatic (network) \
                     time before it drifts out of it.",
                    config.window,
                    plural(config.window as usize)
                );
            }
            Ok(())
        }
        None => {
            let checked = tokens
                .iter()
                .filter(|t| t.params.digits as usize == code.len())
                .count();
            let at_limit = ratelimit::reaches_user_limit(failures.user_recent, &config.limits);
            audit.record("check", user, {
                let detail = Detail::new()
                    .bare("result", "no-match")
                    .bare("devices", checked)
                    .bare("window", config.window)
                    .bare("failures_24h", failures.user_recent);
                if at_limit {
                    detail.note("(the per-user limit: code logins are now locked)")
                } else {
                    detail
                }
            });
            let mut message = format!(
                "the code does not match any device of {user} (checked {checked} device{} at \
                 ±{} step{}): is it {user}'s app entry for this host, and is the \
                 device's clock set automatically? It counts as a wrong code ({} of {} allowed \
                 within 24 h).",
                plural(checked),
                config.window,
                plural(config.window as usize),
                failures.user_recent,
                config.limits.user_limit
            );
            if at_limit {
                message.push_str(&format!(
                    " {user} has now reached that limit: code logins are locked for 24 h, or \
                     until `totpctl unlock {user}`."
                ));
            }
            Err(message)
        }
    }
}

/// Splits the arguments of a pam.d line as libpam does: at white space,
/// with `[...]` keeping spaces (`\]` is a `]` inside). A whole line works
/// too: everything up to the module's path (`…pam_totp.so`) is dropped.
pub fn split_pam_args(line: &str) -> Result<Vec<String>, String> {
    if line.len() > MAX_PAM_ARGS {
        return Err(format!(
            "--pam-args is {} bytes long; a pam.d line's arguments are at most {MAX_PAM_ARGS}",
            line.len()
        ));
    }
    let mut args = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else { break };
        let mut arg = String::new();
        if first == '[' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' if chars.peek() == Some(&']') => {
                        chars.next();
                        arg.push(']');
                    }
                    ']' => {
                        closed = true;
                        break;
                    }
                    c => arg.push(c),
                }
            }
            if !closed {
                return Err("--pam-args: a `[` without its `]`".to_string());
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_ascii_whitespace()) {
                arg.push(c);
            }
        }
        args.push(arg);
    }
    if let Some(module) = args.iter().rposition(|a| a.ends_with("pam_totp.so")) {
        args.drain(..=module);
    }
    Ok(args)
}

/// The nearest key, for an unknown one within two edits of it.
fn likely_key(unknown: &str) -> Option<&'static str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut previous = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let substitute = previous + usize::from(ca != *cb);
                previous = row[j + 1];
                row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
            }
        }
        row[b.len()]
    }
    if unknown.len() > 32 {
        return None;
    }
    config::KEYS
        .iter()
        .map(|k| (distance(unknown, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| k)
}

/// What to do about a mistake `config::load_all` found.
fn fix(problem: &ConfigError) -> String {
    match problem {
        ConfigError::UnknownKey { key, .. } => match likely_key(key) {
            Some(meant) => format!("did you mean {meant}? (the keys: pam_totp.conf(5))"),
            None => "remove it, or see pam_totp.conf(5) for the keys".to_string(),
        },
        ConfigError::BadValue { key, .. } => {
            format!("see pam_totp.conf(5) for what {key}= accepts")
        }
        ConfigError::MissingValue { key, .. } => format!("give it a value: {key}=..."),
        ConfigError::Duplicate { .. } => {
            "keep one of them (a key given twice denies every login)".to_string()
        }
        ConfigError::Syntax { .. } => {
            "write the line as `key = value`, or start it with # to make it a comment".to_string()
        }
        ConfigError::ConfigInFile { .. } => {
            "remove the line: config= belongs on the pam.d line".to_string()
        }
        ConfigError::SelfServiceElsewhere { .. } => format!(
            "move the line to {} (the module does not use it)",
            pam_totp::config::DEFAULT_CONFIG
        ),
        ConfigError::NotUtf8 => "write the arguments in UTF-8".to_string(),
        ConfigError::File { .. } => {
            "fix the file as said: while it cannot be read and trusted, every login is denied"
                .to_string()
        }
    }
}

/// `totpctl check-config`: every problem, one line each, then the
/// effective settings when there is none. `file` is the verb's --config,
/// else totpctl's own (before the verb).
pub fn check_config(
    cli: &crate::cli::Cli,
    pam_args: Option<&str>,
    file: Option<&Path>,
) -> Result<(), String> {
    require_root("check-config")?;
    if cli.db.is_some() || cli.key_file.is_some() || cli.db_password_file.is_some() {
        return Err(
            "check-config takes the store settings from the module's arguments and config \
             file: give them as --pam-args \"db=... key_file=...\" (not --db, --key-file, \
             --db-password-file)"
                .to_string(),
        );
    }
    let file = file.or(cli.config.as_deref());
    let mut args = match pam_args {
        Some(line) => split_pam_args(line)?,
        None => Vec::new(),
    };
    if let Some(file) = file {
        let text = file
            .to_str()
            .filter(|t| !t.chars().any(char::is_control))
            .ok_or_else(|| {
                format!(
                    "--config {:?}: not a path the module could be given (control characters \
                     or not UTF-8)",
                    file
                )
            })?;
        args.insert(0, format!("config={text}"));
    }
    let (config, problems) = config::load_all(&args);
    let mut lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{p} -- {}", fix(p)))
        .collect();
    let failed = |key: &str| problems.iter().any(|p| p.key() == Some(key));
    let file_unread = problems
        .iter()
        .any(|p| matches!(p, ConfigError::File { .. }));
    if file_unread {
        lines.push(
            "the groups, the key file and the store were not checked: the config file could \
             not be read"
                .to_string(),
        );
    } else {
        lines.extend(group_problems(&config, &failed));
        lines.extend(store_problems(&config, &failed));
        lines.extend(key_grace_problems(&config, Path::new("/etc/pam.d")));
    }
    if !lines.is_empty() {
        for line in &lines {
            println!("{line}");
        }
        return Err(format!(
            "{} problem{} in the module's configuration (above, one per line)",
            lines.len(),
            plural(lines.len())
        ));
    }
    print_summary(&config, &args, pam_args.is_some());
    Ok(())
}

/// Auth modules known not to change the PAM environment in their auth hook
/// (pam_env does so in setcred and session only).
const QUIET_AUTH_MODULES: &[&str] = &[
    "pam_unix.so",
    "pam_deny.so",
    "pam_permit.so",
    "pam_env.so",
    "pam_faildelay.so",
    "pam_faillock.so",
    "pam_nologin.so",
    "pam_succeed_if.so",
    "pam_sss.so",
    "pam_usertype.so",
    "pam_localuser.so",
    "pam_listfile.so",
    "pam_securetty.so",
    "pam_shells.so",
    "pam_wheel.so",
    "pam_rootok.so",
];

/// With `grace_key=`: the auth modules of `DIR/sshd` that run before
/// pam_totp and could change `SSH_AUTH_INFO_0` before it reads it (any
/// module not in `QUIET_AUTH_MODULES`; includes and substacks are
/// followed). Nothing when the file does not exist or names no pam_totp.
fn key_grace_problems(config: &Config, pam_dir: &Path) -> Vec<String> {
    if config.grace_key_secs == 0 {
        return Vec::new();
    }
    let mut before = Vec::new();
    match auth_modules_before_totp(pam_dir, "sshd", 0, &mut before) {
        Some(true) => {}
        _ => return Vec::new(),
    }
    let loud: Vec<String> = before
        .into_iter()
        .filter(|m| {
            let name = m.rsplit('/').next().unwrap_or(m);
            !QUIET_AUTH_MODULES.contains(&name)
        })
        .collect();
    if loud.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "grace_key: {}/sshd runs auth module(s) {} before pam_totp; any of them could change SSH_AUTH_INFO_0 before pam_totp reads the SSH key -- make pam_totp the first auth module (README \"Fewer prompts\", SECURITY.md)",
        pam_dir.display(),
        loud.join(", ")
    )]
}

/// Walks the auth lines of `DIR/SERVICE` (and what it includes), pushing
/// each module before the first pam_totp into `before`. `Some(true)` when
/// pam_totp was reached, `Some(false)` when not, `None` when the file
/// cannot be read.
fn auth_modules_before_totp(
    dir: &Path,
    service: &str,
    depth: usize,
    before: &mut Vec<String>,
) -> Option<bool> {
    if depth > 4 || service.contains('/') {
        return None;
    }
    let text = std::fs::read_to_string(dir.join(service)).ok()?;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            // Walked in the guard: an included file without pam_totp falls
            // through to the arms below, which match no `@include` line.
            ["@include", file, ..] if auth_modules_before_totp(dir, file, depth + 1, before)? => {
                return Some(true);
            }
            [kind, control, rest @ ..] if kind.trim_start_matches('-') == "auth" => {
                // `[value=action ...]` controls may hold spaces.
                let rest: Vec<&str> = if control.starts_with('[') && !control.ends_with(']') {
                    let close = rest.iter().position(|w| w.ends_with(']'))?;
                    rest[close + 1..].to_vec()
                } else {
                    rest.to_vec()
                };
                let Some(module) = rest.first() else {
                    continue;
                };
                if matches!(*control, "include" | "substack") {
                    if auth_modules_before_totp(dir, module, depth + 1, before)? {
                        return Some(true);
                    }
                    continue;
                }
                if module.rsplit('/').next() == Some("pam_totp.so") {
                    return Some(true);
                }
                before.push(module.to_string());
            }
            _ => {}
        }
    }
    Some(false)
}

/// only_group= and exempt_group= groups the name service does not know.
fn group_problems(config: &Config, failed: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut lines = Vec::new();
    for (key, groups, unknown) in [
        (
            "only_group",
            &config.only_groups,
            "every login is denied while it is named (a pilot nobody is in would exempt everyone)",
        ),
        ("exempt_group", &config.exempt_groups, "it exempts nobody"),
    ] {
        if failed(key) {
            continue;
        }
        for group in groups {
            let shown = escape(group);
            match Nss.group_exists(group) {
                Ok(true) => {}
                Ok(false) => lines.push(format!(
                    "{key}: the name service knows no group \"{shown}\": {unknown} -- correct the \
                     name, or create the group (getent group {shown})"
                )),
                Err(e) => lines.push(format!(
                    "{key}: looking up group \"{shown}\" failed: {e} -- the module asks for a \
                     code while lookups fail; fix the name service (sssd, LDAP)"
                )),
            }
        }
    }
    lines
}

/// The sealing key and the store, opened as a login opens them.
fn store_problems(config: &Config, failed: &dyn Fn(&str) -> bool) -> Vec<String> {
    if ["db", "db_password_file", "db_timeout", "key_file"]
        .iter()
        .any(|k| failed(k))
    {
        return vec!["the store was not checked: fix its settings (above) first".to_string()];
    }
    let access = config.access();
    if let Err(e) = access.sealer() {
        return vec![format!(
            "key_file {}: {e} -- every login is denied: restore the key (root, 0600), or \
             remove key_file= if the store is not sealed; the store was not checked",
            config.key_file.display()
        )];
    }
    // Opened as a login opens it, and read as a login first reads it: a
    // PostgreSQL login store checks its schema with that first statement.
    let store = match access
        .open_for_login()
        .and_then(|store| store.tokens("").map(|_| store))
    {
        Ok(store) => store,
        Err(e) => return vec![format!("{e} -- {}", store_fix(&e, &config.db))],
    };
    // The key file the store's keys are sealed with, as a write of a key
    // on this node would find it.
    match store.check_key_file() {
        Ok(()) => Vec::new(),
        Err(e) => vec![format!(
            "{e} -- on this node every code login of a sealed key is denied and no key can be \
             written: give it the key file the store is sealed with (key_file=)"
        )],
    }
}

fn store_fix(e: &StoreError, db: &StoreLocation) -> String {
    match e {
        StoreError::Missing(_) | StoreError::NotInitialised(_) => {
            format!("every login is denied: create it with `totpctl --db {db} init`")
        }
        StoreError::SchemaTooNew { .. } => "every login is denied: a newer pam_totp wrote this \
            store; install that version on this node too"
            .to_string(),
        e if e.is_unavailable() => "every login is denied while it lasts: bring the store \
            (database, disk) back, or fix db=, db_password_file= or db_timeout="
            .to_string(),
        _ => "every login is denied until it is fixed".to_string(),
    }
}

/// The settings the module would use.
fn print_summary(config: &Config, args: &[String], from_pam: bool) {
    let file = args
        .iter()
        .find_map(|a| a.strip_prefix("config=").map(PathBuf::from))
        .or_else(|| {
            Path::new(DEFAULT_CONFIG)
                .exists()
                .then(|| PathBuf::from(DEFAULT_CONFIG))
        });
    let list = |names: &[String]| -> String {
        if names.is_empty() {
            "none".to_string()
        } else {
            names
                .iter()
                .map(|n| escape(n))
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    println!("No problems found. The module would use:");
    let source = match (&file, from_pam) {
        (Some(f), true) => format!("{} and the given module arguments", f.display()),
        (Some(f), false) => format!("{} (no module arguments given: --pam-args)", f.display()),
        (None, true) => "the given module arguments (no config file)".to_string(),
        (None, false) => "built-in defaults (no config file, no --pam-args)".to_string(),
    };
    println!("  settings from  {source}");
    let kind = match &config.db {
        StoreLocation::Sqlite(_) => "SQLite",
        StoreLocation::Postgres(_) => "PostgreSQL",
    };
    println!(
        "  store          {} ({kind}, opened as a login opens it)",
        config.db
    );
    let sealed = config.key_file_named || config.key_file.exists();
    println!(
        "  sealing key    {}",
        if sealed {
            format!("{} (in use)", config.key_file.display())
        } else {
            "none (token keys are stored in the clear)".to_string()
        }
    );
    let mode = match config.mode {
        config::Mode::Separate => "separate",
        config::Mode::Combined => "combined",
    };
    println!(
        "  mode           {mode}, prompt \"{}\"",
        escape(config.effective_prompt())
    );
    println!(
        "  window         ±{} step{} (TOTP), {} counters ahead (HOTP)",
        config.window,
        plural(config.window as usize),
        config.hotp_window
    );
    println!(
        "  limits         back-off after {} wrong codes per address (up to {} s); {} per user within 24 h lock",
        config.limits.backoff_after, config.limits.backoff_max, config.limits.user_limit
    );
    let trusted: Vec<String> = config.trusted.iter().map(ToString::to_string).collect();
    println!("  trusted        {}", list(&trusted));
    println!(
        "  exempt         users {}; groups {}",
        list(&config.exempt_users),
        list(&config.exempt_groups)
    );
    println!(
        "  only_group     {}",
        if config.only_groups.is_empty() {
            "everyone is asked (no pilot)".to_string()
        } else {
            list(&config.only_groups)
        }
    );
    println!(
        "  unenrolled     {}",
        match config.unenrolled {
            config::Unenrolled::Deny => "deny",
            config::Unenrolled::Allow => "allow",
        }
    );
    println!(
        "  enroll         {}",
        match config.enroll {
            config::EnrollAtLogin::Never => "never",
            config::EnrollAtLogin::Trusted => "trusted",
            config::EnrollAtLogin::Window => "window",
        }
    );
    println!(
        "  grace          {}",
        if config.grace_secs == 0 {
            "off".to_string()
        } else {
            format!("{} s", config.grace_secs)
        }
    );
    println!(
        "  grace_key      {}",
        if config.grace_key_secs == 0 {
            "off".to_string()
        } else {
            format!("{} s", config.grace_key_secs)
        }
    );
    println!("  automation_max {} s", config.automation_max_secs);
    println!("  messages       {}", yes_no(config.messages));
    println!("  fail_delay     {} ms", config.fail_delay_ms);
    println!("  debug          {}", yes_no(config.debug));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_key_names_the_auth_modules_that_run_before_pam_totp() {
        let dir = std::env::temp_dir().join(format!("totpctl-key-grace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).expect("w");
        let with_key = Config {
            grace_key_secs: 3600,
            ..Config::default()
        };
        // Off: nothing checked.
        write(
            "sshd",
            "auth required pam_python.so x\nauth required pam_totp.so\n",
        );
        assert!(key_grace_problems(&Config::default(), &dir).is_empty());
        // A module that could set the variable, before pam_totp: named.
        let found = key_grace_problems(&with_key, &dir);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("pam_python.so"), "{found:?}");
        // After pam_totp, or known quiet ones (through an include and a
        // substack with a bracketed control): nothing.
        write(
            "sshd",
            "# comment\n@include common-auth\nauth substack password-auth\n\
             auth [success=1 default=ignore] pam_succeed_if.so uid < 1000\n\
             auth required /lib/security/pam_totp.so grace_key=1h\nauth required pam_python.so\n",
        );
        write(
            "common-auth",
            "auth required pam_env.so user_readenv=1\nauth required pam_unix.so\n",
        );
        write(
            "password-auth",
            "auth sufficient pam_sss.so\n-auth optional pam_faillock.so\n",
        );
        assert!(key_grace_problems(&with_key, &dir).is_empty());
        // An included file that runs another module first: named.
        write("common-auth", "auth optional pam_script.so\n");
        let found = key_grace_problems(&with_key, &dir);
        assert!(
            found.iter().any(|l| l.contains("pam_script.so")),
            "{found:?}"
        );
        // No pam_totp in the stack, or no file: not this check's business.
        write("sshd", "auth required pam_python.so\n");
        assert!(key_grace_problems(&with_key, &dir).is_empty());
        std::fs::remove_file(dir.join("sshd")).expect("rm");
        assert!(key_grace_problems(&with_key, &dir).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pam_lines_split_as_libpam_splits_them() {
        let split = |s: &str| split_pam_args(s).expect(s);
        assert_eq!(split(""), Vec::<String>::new());
        assert_eq!(split("  db=/x  debug "), ["db=/x", "debug"]);
        assert_eq!(
            split("[prompt=Code please: ] window=2"),
            ["prompt=Code please: ", "window=2"]
        );
        assert_eq!(split("[issuer=a\\]b]"), ["issuer=a]b"]);
        assert_eq!(
            split("auth [success=1 default=ignore] /lib/security/pam_totp.so db=/x"),
            ["db=/x"]
        );
        assert!(split_pam_args("[prompt=open").is_err());
        assert!(split_pam_args(&"a".repeat(MAX_PAM_ARGS + 1)).is_err());
    }

    #[test]
    fn typos_name_the_key_meant() {
        assert_eq!(likely_key("windw"), Some("window"));
        assert_eq!(likely_key("only_groups"), Some("only_group"));
        assert_eq!(likely_key("nullok"), None);
        assert_eq!(likely_key(&"x".repeat(1000)), None);
    }

    #[test]
    fn answers_are_read_by_shape() {
        assert!(matches!(shape("700 102"), Shape::Code(c) if c.as_str() == "700102"));
        assert!(matches!(shape(" 70010234 "), Shape::Code(c) if c.as_str() == "70010234"));
        assert!(matches!(shape("abcd-efgh-jkmn"), Shape::Recovery));
        for other in [
            "",
            "70o102",
            "700 102 3",
            "７００１０２",
            "a\u{1b}[2J",
            &"7".repeat(100),
        ] {
            assert!(matches!(shape(other), Shape::Other), "{other:?}");
        }
    }
}
