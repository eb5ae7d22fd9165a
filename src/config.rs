//! Module arguments and the optional config file, turned into one `Config`.
//!
//! Every mistake is an error that names the key, the value and where it came
//! from; the module then refuses every login. Nothing is guessed: an unknown
//! key, a key given twice, an empty value or a malformed value all fail.
//!
//! An error about a file never quotes the file: it names the file, the line
//! and the kind of problem, and the key only when it looks like one (see
//! [`ConfigError`]). `totpctl --config FILE` must not turn into a way of
//! reading the first line of a root-only file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::network;
use crate::ratelimit::Limits;
use crate::store::{Access, DEFAULT_DB_TIMEOUT, StoreLocation};

pub const DEFAULT_DB: &str = "/var/lib/pam_totp/pam_totp.db";
pub const DEFAULT_CONFIG: &str = "/etc/security/pam_totp.conf";
pub const DEFAULT_PROMPT: &str = "Verification code: ";
pub const DEFAULT_WINDOW: u32 = 1;
/// Ten steps either side is ±5 minutes at 30 s: beyond that a window stops
/// being clock-drift tolerance and becomes a gift to guessers.
pub const MAX_WINDOW: u32 = 10;
// A deleted TOTP key's used step is kept (`retired_keys`, schema 10) for
// `last_step + 11` periods and an hour: a wider window needs a migration
// that keeps it longer first.
const _: () = assert!(MAX_WINDOW <= 10);
const MAX_PROMPT_LEN: usize = 200;
/// HOTP counters accepted ahead of the stored one (a user who pressed the
/// button a few times without logging in).
pub const DEFAULT_HOTP_WINDOW: u32 = 10;
pub const MAX_HOTP_WINDOW: u32 = 100;
/// The longest automation grant unless `automation_max=` says otherwise.
pub const DEFAULT_AUTOMATION_MAX_DAYS: u64 = 90;
/// What `automation_max=` may be at most.
pub const MAX_AUTOMATION_MAX_DAYS: u64 = 366;
/// What pam_unix asks for too: 2 s after a failure, jittered by libpam.
pub const DEFAULT_FAIL_DELAY_MS: u32 = 2_000;

/// Every key the module and the config file accept. `apply` refuses any
/// other, so a key handled there but missing here fails its tests; the
/// manual pages, the packaged config file and the README are checked
/// against this list (tests/docs.rs).
pub const KEYS: &[&str] = &[
    "db",
    "db_password_file",
    "db_timeout",
    "key_file",
    "grace",
    "grace_key",
    "automation_max",
    "mode",
    "exempt_group",
    "exempt_user",
    "only_group",
    "messages",
    "config",
    "trusted",
    "window",
    "prompt",
    "unenrolled",
    "enroll",
    "hotp_window",
    "issuer",
    "backoff_after",
    "backoff_max",
    "user_limit",
    "fail_delay",
    "debug",
    "self_service",
];

/// What the user's own command, `totp`, may do (`self_service=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfService {
    /// `totp` refuses every verb.
    Off,
    /// Only `totp status`.
    Status,
    /// Every verb (the default).
    Full,
}

/// What to do with a user who has no token in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unenrolled {
    /// Prompt anyway (so enrollment is not revealed), then deny.
    Deny,
    /// Return PAM_IGNORE: the stack decides without this module.
    Allow,
}

/// When an unenrolled user may enroll during a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollAtLogin {
    /// Never: enrollment is the administrator's job.
    Never,
    /// From a trusted network only.
    Trusted,
    /// Only inside a window opened with `totpctl allow-enroll`.
    Window,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub db: StoreLocation,
    /// PostgreSQL: the file holding the database password (root's, 0600).
    pub db_password_file: Option<PathBuf>,
    /// PostgreSQL: bound on connecting and on each statement.
    pub db_timeout: Duration,
    /// The key that seals token keys at rest; used when the file exists
    /// (a `key_file=` that names a missing file is an error at login).
    pub key_file: PathBuf,
    pub key_file_named: bool,
    /// After a right code from an IP address, that user from that address
    /// skips the code for this many seconds (0: never).
    pub grace_secs: u64,
    /// After a login that used SSH key K (sshd's `SSH_AUTH_INFO_0`) and a
    /// right code, that user with that key skips the code for this many
    /// seconds, from any address (0: never).
    pub grace_key_secs: u64,
    /// The longest automation grant `totpctl allow-automation` makes.
    pub automation_max_secs: u64,
    /// One prompt for password and code, or the code on its own prompt.
    pub mode: Mode,
    /// Users, and members of groups, who log in without a code.
    pub exempt_users: Vec<String>,
    pub exempt_groups: Vec<String>,
    /// A pilot: when set, only members of these groups are asked for a
    /// code; everyone else logs in without one (logged). Each group must
    /// exist (NSS), or every login is denied: a typo never opens the door.
    pub only_groups: Vec<String>,
    /// Tell the user, through the conversation, what they can act on (a
    /// reused code, a back-off, recovery codes left).
    pub messages: bool,
    /// True when `prompt=` was given (the combined mode has its own default).
    pub prompt_named: bool,
    pub trusted: Vec<IpNet>,
    pub window: u32,
    pub hotp_window: u32,
    pub prompt: String,
    pub unenrolled: Unenrolled,
    pub enroll: EnrollAtLogin,
    /// Issuer shown in the app for tokens enrolled at login (default: host name).
    pub issuer: Option<String>,
    /// Back-off and ceiling on failed codes.
    pub limits: Limits,
    /// Delay libpam applies after a failed login, in milliseconds.
    pub fail_delay_ms: u32,
    pub debug: bool,
    /// What `totp` may do; the module itself ignores it.
    pub self_service: SelfService,
}

/// How the code is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Its own prompt, after the password module (the default).
    Separate,
    /// One prompt for password and code, before the password module, which
    /// gets the password as PAM_AUTHTOK (`try_first_pass`).
    Combined,
}

/// The combined mode's prompt unless `prompt=` says otherwise.
pub const DEFAULT_COMBINED_PROMPT: &str = "Password and verification code: ";

/// A duration such as `30m`, `8h`, `2d` or `90s`: seconds, more than 0 and
/// at most 30 days.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    parse_duration_up_to(text, 30)
}

/// A duration as `parse_duration` reads it, more than 0 and at most
/// `max_days` days.
pub fn parse_duration_up_to(text: &str, max_days: u64) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: s, m, h or d (e.g. 24h)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 24h"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number.saturating_mul(60),
        "h" => number.saturating_mul(3600),
        "d" => number.saturating_mul(86_400),
        _ => return Err(format!("unknown unit {unit:?} in {text:?} (s, m, h or d)")),
    };
    if seconds == 0 || seconds > max_days.saturating_mul(86_400) {
        return Err(format!(
            "{text:?} must be more than 0 and at most {max_days}d"
        ));
    }
    Ok(seconds)
}

impl Config {
    /// The prompt this configuration shows.
    pub fn effective_prompt(&self) -> &str {
        match (self.mode, self.prompt_named) {
            (Mode::Combined, false) => DEFAULT_COMBINED_PROMPT,
            _ => &self.prompt,
        }
    }

    /// How the module reaches its store.
    pub fn access(&self) -> Access<'_> {
        Access {
            location: &self.db,
            password_file: self.db_password_file.as_deref(),
            timeout: self.db_timeout,
            key_file: &self.key_file,
            key_file_named: self.key_file_named,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            db: StoreLocation::Sqlite(PathBuf::from(DEFAULT_DB)),
            db_password_file: None,
            db_timeout: DEFAULT_DB_TIMEOUT,
            key_file: PathBuf::from(crate::seal::DEFAULT_KEY_FILE),
            key_file_named: false,
            grace_secs: 0,
            grace_key_secs: 0,
            automation_max_secs: DEFAULT_AUTOMATION_MAX_DAYS * 86_400,
            mode: Mode::Separate,
            exempt_users: Vec::new(),
            exempt_groups: Vec::new(),
            only_groups: Vec::new(),
            messages: true,
            prompt_named: false,
            trusted: Vec::new(),
            window: DEFAULT_WINDOW,
            hotp_window: DEFAULT_HOTP_WINDOW,
            prompt: DEFAULT_PROMPT.to_string(),
            unenrolled: Unenrolled::Deny,
            enroll: EnrollAtLogin::Never,
            issuer: None,
            limits: Limits::default(),
            fail_delay_ms: DEFAULT_FAIL_DELAY_MS,
            debug: false,
            self_service: SelfService::Full,
        }
    }
}

/// Where a setting came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Argument,
    File { path: PathBuf, line: usize },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Argument => f.write_str("module argument"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
        }
    }
}

/// A configuration mistake. What comes from a file is never repeated in
/// the error: no line, no value, and a key only when it is shaped like one
/// (lower-case letters, digits and `_`, at most 32: see `plain_key`); a
/// reason that would repeat part of a file's value is replaced by what the
/// key expects (`expected`). Module arguments are shown (escaped): they
/// are the PAM stack's own text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: unknown key {key:?}")]
    UnknownKey { origin: Origin, key: String },
    #[error("{origin}: {} is invalid: {reason}", shown_value(key, value.as_deref()))]
    BadValue {
        origin: Origin,
        key: String,
        /// `None` when the value came from a file.
        value: Option<String>,
        reason: String,
    },
    #[error("{origin}: {key:?} needs a value ({key}=...)")]
    MissingValue { origin: Origin, key: String },
    #[error("{origin}: {key:?} is given more than once")]
    Duplicate { origin: Origin, key: String },
    #[error("{origin}: the line is not `key = value`")]
    Syntax { origin: Origin },
    #[error("{origin}: config= is only valid as a module argument")]
    ConfigInFile { origin: Origin },
    #[error(
        "{origin}: self_service is read by totp from {DEFAULT_CONFIG} alone (set it there; here \
         nothing would read it)"
    )]
    SelfServiceElsewhere { origin: Origin },
    #[error("module argument is not valid UTF-8")]
    NotUtf8,
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// `key="value"` for a module argument, `the value of key` for a file.
fn shown_value(key: &str, value: Option<&str>) -> String {
    match value {
        Some(value) => format!("{key}={value:?}"),
        None => format!("the value of {key}"),
    }
}

/// A key that may be named in an error about a file: shaped like the keys
/// of `KEYS`. Anything else on a file's line (a password, a hash, a line of
/// /etc/shadow) is not repeated.
fn plain_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && key.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// An unknown key, named only when it comes from the arguments or is a
/// plain key; otherwise the line is simply not `key = value`.
fn unknown_key(origin: &Origin, key: &str) -> ConfigError {
    match origin {
        Origin::File { .. } if !plain_key(key) => ConfigError::Syntax {
            origin: origin.clone(),
        },
        _ => ConfigError::UnknownKey {
            origin: origin.clone(),
            key: key.to_string(),
        },
    }
}

/// True when `reason` repeats the value or a piece of it (split at commas,
/// spaces, `?`, `&`, `=` and `;`) as a word of its own.
fn mentions_value(reason: &str, value: &str) -> bool {
    let separators = |c: char| c.is_whitespace() || matches!(c, ',' | '?' | '&' | '=' | ';');
    std::iter::once(value.trim())
        .chain(value.split(separators))
        .filter(|piece| !piece.is_empty())
        .any(|piece| {
            reason.match_indices(piece).any(|(at, _)| {
                let before = reason[..at].chars().next_back();
                let after = reason[at + piece.len()..].chars().next();
                !before.is_some_and(char::is_alphanumeric)
                    && !after.is_some_and(char::is_alphanumeric)
            })
        })
}

/// What a key accepts, for an error about a file's value whose own reason
/// would repeat the value.
fn expected(key: &str) -> &'static str {
    match key {
        "db" => {
            "expected an absolute path, or a postgresql://USER@HOST/DB URL with \
             sslmode=verify-full or sslmode=disable and no password (db_password_file=)"
        }
        "trusted" => "expected IP addresses or CIDR blocks, separated by commas",
        "grace" | "grace_key" => "expected a duration such as 8h (s, m, h or d; at most 30d)",
        "automation_max" => "expected a duration such as 90d (s, m, h or d; at most 366d)",
        "exempt_user" | "exempt_group" | "only_group" => {
            "expected names separated by commas, without spaces or control characters"
        }
        "messages" => "expected yes or no",
        "mode" => "expected separate or combined",
        "enroll" => "expected never, trusted or window",
        "unenrolled" => "expected deny or allow",
        "debug" => "expected yes or no",
        "self_service" => "expected off, status or full",
        _ => "see pam_totp.conf(5) for the values it accepts",
    }
}

/// The one rule for a user, group or device name that the module and
/// totpctl accept: 1 to 256 bytes, no whitespace, no control character, no
/// `/` (names become file names: `totpctl enroll --qr-dir`), not `.` or
/// `..`, no quote or backslash (audit lines quote names). The name service decides which names exist.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 256 {
        return Err("a name must be 1 to 256 bytes long".to_string());
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{name:?} contains spaces or control characters"));
    }
    if name.contains('/') || name == "." || name == ".." {
        return Err(format!("{name:?} is not a name (a / or a dot directory)"));
    }
    // Audit lines quote names: a quote or backslash inside one could make
    // a line seem to carry a field it does not.
    if name.contains(['"', '\\']) {
        return Err(format!("{name:?} contains a quote or a backslash"));
    }
    Ok(())
}

/// One `key[=value]` setting before validation.
struct Setting {
    key: String,
    value: Option<String>,
    origin: Origin,
}

/// Builds the configuration from the module arguments, reading the config
/// file first (`config=PATH`, or the default path if it exists). Arguments
/// override the file. The first mistake is the error: [`load_all`] meets
/// them in the same order.
pub fn load(args: &[String]) -> Result<Config, ConfigError> {
    let (config, problems) = load_all(args);
    match problems.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(config),
    }
}

/// Like [`load`], but goes on after a mistake and returns every one it
/// finds (each once), in the order `load` meets them, so the first is
/// `load`'s error. The configuration is what the settings that parsed make
/// of it: the module's only when there are no problems. For `totpctl
/// check-config`, which reports them all; the rules stay here.
pub fn load_all(args: &[String]) -> (Config, Vec<ConfigError>) {
    let mut problems = Problems(Vec::new());
    let arg_settings = parse_args(args);
    problems.extend(duplicates(&arg_settings));

    let explicit = arg_settings.iter().find(|s| s.key == "config");
    let read = match explicit {
        // A config= that is not an absolute path reads no file, not even
        // the default one.
        Some(setting) => absolute_path(setting).and_then(|path| read_file(&path, true)),
        None => read_file(Path::new(DEFAULT_CONFIG), false),
    };
    let file_settings = match read {
        Ok((settings, syntax)) => {
            problems.extend(syntax);
            settings
        }
        Err(e) => {
            problems.push(e);
            Vec::new()
        }
    };
    problems.extend(duplicates(&file_settings));
    problems.extend(file_settings.iter().filter(|s| s.key == "config").map(|s| {
        ConfigError::ConfigInFile {
            origin: s.origin.clone(),
        }
    }));

    // totp reads only the default file: self_service anywhere else (a
    // module argument, a file named by config=) would look set and change
    // nothing (found by an attack), so it is a mistake like any other.
    problems.extend(
        file_settings
            .iter()
            .chain(arg_settings.iter())
            .filter(|s| s.key == "self_service")
            .filter(|s| {
                !matches!(&s.origin, Origin::File { path, .. } if path == Path::new(DEFAULT_CONFIG))
            })
            .map(|s| ConfigError::SelfServiceElsewhere {
                origin: s.origin.clone(),
            }),
    );

    let mut config = Config::default();
    for setting in file_settings.iter().chain(arg_settings.iter()) {
        if setting.key == "config" && setting.origin != Origin::Argument {
            continue;
        }
        if let Err(e) = apply(&mut config, setting) {
            problems.push(e);
        }
    }
    (config, problems.0)
}

/// Mistakes in the order they are met, each once (an argument `config=`
/// is checked when the file is looked for and again by `apply`).
struct Problems(Vec<ConfigError>);

impl Problems {
    fn push(&mut self, problem: ConfigError) {
        if !self.0.contains(&problem) {
            self.0.push(problem);
        }
    }

    fn extend(&mut self, problems: impl IntoIterator<Item = ConfigError>) {
        for problem in problems {
            self.push(problem);
        }
    }
}

impl ConfigError {
    /// The key the mistake is about, when it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::BadValue { key, .. }
            | ConfigError::MissingValue { key, .. }
            | ConfigError::Duplicate { key, .. } => Some(key),
            ConfigError::ConfigInFile { .. } => Some("config"),
            ConfigError::SelfServiceElsewhere { .. } => Some("self_service"),
            ConfigError::Syntax { .. } | ConfigError::NotUtf8 | ConfigError::File { .. } => None,
        }
    }
}

/// Splits module arguments. Linux-PAM passes `[key=some text]` without
/// the brackets; the brackets are also accepted here in case a caller
/// passes them through.
fn parse_args(args: &[String]) -> Vec<Setting> {
    args.iter()
        .map(|raw| {
            let arg = raw
                .strip_prefix('[')
                .and_then(|a| a.strip_suffix(']'))
                .unwrap_or(raw);
            let (key, value) = match arg.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (arg.to_string(), None),
            };
            Setting {
                key,
                value,
                origin: Origin::Argument,
            }
        })
        .collect()
}

/// Reads `key = value` lines; `#` starts a comment line; a value may be
/// wrapped in double quotes to keep leading or trailing spaces. A file that
/// cannot be read or trusted is the error; the lines that are not `key =
/// value` come back beside the settings of the others.
fn read_file(path: &Path, required: bool) -> Result<(Vec<Setting>, Vec<ConfigError>), ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    // Walked from / and checked on the descriptor it is read from (see
    // `trust`): a file that is not there is no file only when optional.
    let bytes = match crate::trust::read(path, crate::trust::Holds::Settings) {
        Ok(bytes) => bytes,
        Err(e) if e.not_found && !required => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(file_error(e.problem)),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| file_error("not valid UTF-8".into()))?;
    let mut settings = Vec::new();
    let mut syntax = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let origin = Origin::File {
            path: path.to_path_buf(),
            line: index + 1,
        };
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (key, value) = match trimmed.split_once('=') {
            Some((k, v)) => {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|inner| inner.strip_suffix('"'))
                    .unwrap_or(v);
                (k.trim().to_string(), Some(v.to_string()))
            }
            None if trimmed == "debug" => (trimmed.to_string(), None),
            None => {
                syntax.push(ConfigError::Syntax { origin });
                continue;
            }
        };
        settings.push(Setting { key, value, origin });
    }
    Ok((settings, syntax))
}

/// Every setting whose key an earlier one has already given.
fn duplicates(settings: &[Setting]) -> Vec<ConfigError> {
    settings
        .iter()
        .enumerate()
        .filter(|(i, s)| settings[..*i].iter().any(|earlier| earlier.key == s.key))
        .map(|(_, s)| match unknown_key(&s.origin, &s.key) {
            ConfigError::UnknownKey { origin, key } => ConfigError::Duplicate { origin, key },
            not_a_key => not_a_key,
        })
        .collect()
}

fn bad(setting: &Setting, value: &str, reason: impl Into<String>) -> ConfigError {
    let reason = reason.into();
    let (value, reason) = match setting.origin {
        Origin::Argument => {
            // Long values are cut so the reason still fits on the log line.
            const SHOWN: usize = 64;
            let value = match value.char_indices().nth(SHOWN) {
                Some((cut, _)) => format!("{}… ({} bytes)", &value[..cut], value.len()),
                None => value.to_string(),
            };
            (Some(value), reason)
        }
        // A file's value is never repeated, nor a reason that quotes it.
        Origin::File { .. } if mentions_value(&reason, value) => {
            (None, expected(&setting.key).to_string())
        }
        Origin::File { .. } => (None, reason),
    };
    ConfigError::BadValue {
        origin: setting.origin.clone(),
        key: setting.key.clone(),
        value,
        reason,
    }
}

/// The value of a `key=value` setting; empty values are refused.
fn required_value(setting: &Setting) -> Result<&str, ConfigError> {
    match setting.value.as_deref() {
        None => Err(ConfigError::MissingValue {
            origin: setting.origin.clone(),
            key: setting.key.clone(),
        }),
        Some("") => Err(bad(setting, "", "empty value")),
        Some(v) if v.chars().any(char::is_control) => Err(bad(
            setting,
            v,
            "control characters (NUL, newline…) are not allowed",
        )),
        Some(v) => Ok(v),
    }
}

fn absolute_path(setting: &Setting) -> Result<PathBuf, ConfigError> {
    let value = required_value(setting)?;
    let path = PathBuf::from(value);
    if !path.is_absolute() {
        return Err(bad(setting, value, "must be an absolute path"));
    }
    Ok(path)
}

/// A whole number from 0 to `max`.
fn number(setting: &Setting, max: u32) -> Result<u32, ConfigError> {
    let value = required_value(setting)?;
    value
        .parse::<u32>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| {
            bad(
                setting,
                value,
                format!("expected a whole number from 0 to {max}"),
            )
        })
}

/// Text shown to users: printable, bounded.
fn printable_text(setting: &Setting) -> Result<String, ConfigError> {
    let value = required_value(setting)?;
    if value.len() > MAX_PROMPT_LEN || value.chars().any(char::is_control) {
        return Err(bad(
            setting,
            value,
            format!("at most {MAX_PROMPT_LEN} printable characters"),
        ));
    }
    Ok(value.to_string())
}

fn apply(config: &mut Config, setting: &Setting) -> Result<(), ConfigError> {
    let unknown = || unknown_key(&setting.origin, &setting.key);
    if !KEYS.contains(&setting.key.as_str()) {
        return Err(unknown());
    }
    match setting.key.as_str() {
        "config" => {
            absolute_path(setting)?;
        }
        "db" => {
            let value = required_value(setting)?;
            // A refused URL is not repeated: it may hold a password.
            config.db = StoreLocation::parse(value).map_err(|reason| {
                // `bad` compares the reason with the shown (redacted) value;
                // a file's raw value must not come back through the reason.
                let reason = match setting.origin {
                    Origin::File { .. } if mentions_value(&reason, value) => {
                        expected("db").to_string()
                    }
                    _ => reason,
                };
                bad(setting, &StoreLocation::shown(value), reason)
            })?;
        }
        "db_password_file" => config.db_password_file = Some(absolute_path(setting)?),
        "key_file" => {
            config.key_file = absolute_path(setting)?;
            config.key_file_named = true;
        }
        "db_timeout" => {
            let seconds = number(setting, 60)?.max(1);
            config.db_timeout = Duration::from_secs(u64::from(seconds));
        }
        "trusted" => {
            let value = required_value(setting)?;
            config.trusted = value
                .split(',')
                .map(network::parse_block)
                .collect::<Result<_, _>>()
                .map_err(|reason| bad(setting, value, reason))?;
        }
        "window" => config.window = number(setting, MAX_WINDOW)?,
        "hotp_window" => config.hotp_window = number(setting, MAX_HOTP_WINDOW)?,
        "backoff_after" => config.limits.backoff_after = number(setting, 100)?,
        "backoff_max" => {
            config.limits.backoff_max = u64::from(number(setting, 86_400)?).max(30);
        }
        "user_limit" => config.limits.user_limit = number(setting, 10_000)?,
        "fail_delay" => config.fail_delay_ms = number(setting, 10_000)?,
        "prompt" => {
            config.prompt = printable_text(setting)?;
            config.prompt_named = true;
        }
        "grace" => {
            let value = required_value(setting)?;
            config.grace_secs =
                parse_duration(value).map_err(|reason| bad(setting, value, reason))?;
        }
        "grace_key" => {
            let value = required_value(setting)?;
            config.grace_key_secs =
                parse_duration(value).map_err(|reason| bad(setting, value, reason))?;
        }
        "automation_max" => {
            let value = required_value(setting)?;
            config.automation_max_secs = parse_duration_up_to(value, MAX_AUTOMATION_MAX_DAYS)
                .map_err(|reason| bad(setting, value, reason))?;
        }
        "self_service" => {
            let value = required_value(setting)?;
            config.self_service = match value {
                "off" => SelfService::Off,
                "status" => SelfService::Status,
                "full" => SelfService::Full,
                _ => return Err(bad(setting, value, "expected off, status or full")),
            };
        }
        "mode" => {
            let value = required_value(setting)?;
            config.mode = match value {
                "separate" => Mode::Separate,
                "combined" => Mode::Combined,
                _ => return Err(bad(setting, value, "expected separate or combined")),
            };
        }
        "exempt_user" | "exempt_group" | "only_group" => {
            let value = required_value(setting)?;
            let names: Vec<String> = value.split(',').map(|n| n.trim().to_string()).collect();
            if let Some(bad_name) = names.iter().find(|n| check_name(n).is_err()) {
                return Err(bad(
                    setting,
                    value,
                    format!("{bad_name:?} is not a user or group name"),
                ));
            }
            match setting.key.as_str() {
                "exempt_user" => config.exempt_users = names,
                "exempt_group" => config.exempt_groups = names,
                _ => config.only_groups = names,
            }
        }
        "issuer" => config.issuer = Some(printable_text(setting)?),
        "enroll" => {
            let value = required_value(setting)?;
            config.enroll = match value {
                "never" => EnrollAtLogin::Never,
                "trusted" => EnrollAtLogin::Trusted,
                "window" => EnrollAtLogin::Window,
                _ => return Err(bad(setting, value, "expected never, trusted or window")),
            };
        }
        "unenrolled" => {
            let value = required_value(setting)?;
            config.unenrolled = match value {
                "deny" => Unenrolled::Deny,
                "allow" => Unenrolled::Allow,
                _ => return Err(bad(setting, value, "expected deny or allow")),
            };
        }
        "messages" => {
            let value = required_value(setting)?;
            config.messages = match value {
                "yes" | "true" | "1" => true,
                "no" | "false" | "0" => false,
                _ => return Err(bad(setting, value, "expected yes or no")),
            };
        }
        "debug" => {
            config.debug = match setting.value.as_deref() {
                None | Some("yes") | Some("true") | Some("1") => true,
                Some("no") | Some("false") | Some("0") => false,
                Some(other) => return Err(bad(setting, other, "expected yes or no")),
            };
        }
        _ => return Err(unknown()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_key_is_handled() {
        let sample = |key: &str| match key {
            "db" | "config" | "db_password_file" | "key_file" => "/etc/security/x",
            "trusted" => "10.0.0.0/8",
            "prompt" | "issuer" => "text",
            "unenrolled" => "allow",
            "enroll" => "trusted",
            "grace" | "grace_key" => "8h",
            "automation_max" => "30d",
            "mode" => "combined",
            "exempt_user" | "exempt_group" | "only_group" => "svc,backup",
            "debug" | "messages" => "yes",
            "self_service" => "status",
            _ => "7",
        };
        for key in KEYS {
            let setting = Setting {
                key: key.to_string(),
                value: Some(sample(key).to_string()),
                origin: Origin::Argument,
            };
            assert!(
                apply(&mut Config::default(), &setting).is_ok(),
                "{key} is listed in KEYS but apply refuses it"
            );
        }
    }
    #[test]
    fn grace_key_and_automation_max_take_bounded_durations() {
        let set = |key: &str, value: &str| {
            let mut config = Config::default();
            apply(
                &mut config,
                &Setting {
                    key: key.to_string(),
                    value: Some(value.to_string()),
                    origin: Origin::Argument,
                },
            )
            .map(|()| (config.grace_key_secs, config.automation_max_secs))
        };
        assert_eq!(Config::default().grace_key_secs, 0);
        assert_eq!(Config::default().automation_max_secs, 90 * 86_400);
        assert_eq!(set("grace_key", "24h").ok(), Some((86_400, 90 * 86_400)));
        assert_eq!(set("automation_max", "366d").ok(), Some((0, 366 * 86_400)));
        for bad in ["24", "0h", "31d", "1w", "-1h", ""] {
            assert!(set("grace_key", bad).is_err(), "grace_key={bad:?}");
        }
        for bad in ["90", "0d", "367d", "x"] {
            assert!(
                set("automation_max", bad).is_err(),
                "automation_max={bad:?}"
            );
        }
        // A bad value denies every login (load fails), never turns it off.
        assert!(load(&["grace_key=forever".to_string()]).is_err());
    }

    #[test]
    fn self_service_anywhere_but_the_default_file_is_a_mistake() {
        // totp reads DEFAULT_CONFIG alone: set elsewhere it would change
        // nothing while it looked set.
        let err = load(&args(&["self_service=off"])).expect_err("as an argument");
        assert_eq!(err.key(), Some("self_service"), "{err}");
        assert!(err.to_string().contains(DEFAULT_CONFIG), "{err}");
        let (_dir, cfg) = with_file("self_service = off\n");
        let err = load(&[cfg]).expect_err("in a file named by config=");
        assert!(
            matches!(err, ConfigError::SelfServiceElsewhere { .. }),
            "{err}"
        );
    }

    #[test]
    fn self_service_takes_off_status_or_full() {
        let set = |value: &str| {
            let mut config = Config::default();
            apply(
                &mut config,
                &Setting {
                    key: "self_service".to_string(),
                    value: Some(value.to_string()),
                    origin: Origin::Argument,
                },
            )
            .map(|()| config.self_service)
        };
        assert_eq!(Config::default().self_service, SelfService::Full);
        assert_eq!(set("off").ok(), Some(SelfService::Off));
        assert_eq!(set("status").ok(), Some(SelfService::Status));
        assert_eq!(set("full").ok(), Some(SelfService::Full));
        assert!(set("yes").is_err());
    }
    use std::io::Write;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// A config file in a fresh temp dir; `config=` points at it so the
    /// machine's own /etc/security/pam_totp.conf never leaks into a test.
    fn with_file(content: &str) -> (tempfile::TempDir, String) {
        let dir = crate::trust::test_dir();
        let path = dir.path().join("pam_totp.conf");
        let mut f = std::fs::File::create(&path).expect("create");
        f.write_all(content.as_bytes()).expect("write");
        let arg = format!("config={}", path.display());
        (dir, arg)
    }

    fn load_isolated(extra: &[&str]) -> Result<Config, ConfigError> {
        let (_dir, cfg) = with_file("");
        let mut all = vec![cfg];
        all.extend(args(extra));
        load(&all)
    }

    #[test]
    fn defaults() {
        let c = load_isolated(&[]).expect("ok");
        assert_eq!(c, Config::default());
        assert_eq!(c.db, StoreLocation::Sqlite(PathBuf::from(DEFAULT_DB)));
        assert_eq!(c.window, 1);
        assert_eq!(c.prompt, "Verification code: ");
        assert_eq!(c.unenrolled, Unenrolled::Deny);
    }

    #[test]
    fn every_argument_parses() {
        let c = load_isolated(&[
            "db=/tmp/x.db",
            "trusted=10.0.0.0/8,2001:db8::/32",
            "window=0",
            "prompt=Second Factor: ",
            "unenrolled=allow",
            "enroll=window",
            "hotp_window=20",
            "[issuer=HPC Lander]",
            "backoff_after=3",
            "backoff_max=600",
            "user_limit=0",
            "fail_delay=0",
            "only_group=pilot,hpc-staff",
            "messages=no",
            "debug",
        ])
        .expect("ok");
        assert_eq!(c.only_groups, ["pilot", "hpc-staff"]);
        assert!(!c.messages);
        assert_eq!(c.limits.backoff_after, 3);
        assert_eq!(c.limits.backoff_max, 600);
        assert_eq!(c.limits.user_limit, 0);
        assert_eq!(c.fail_delay_ms, 0);
        assert_eq!(c.enroll, EnrollAtLogin::Window);
        assert_eq!(c.hotp_window, 20);
        assert_eq!(c.issuer.as_deref(), Some("HPC Lander"));
        assert_eq!(c.db, StoreLocation::Sqlite(PathBuf::from("/tmp/x.db")));
        assert_eq!(c.trusted.len(), 2);
        assert_eq!(c.window, 0);
        assert_eq!(c.prompt, "Second Factor: ");
        assert_eq!(c.unenrolled, Unenrolled::Allow);
        assert!(c.debug);
    }

    #[test]
    fn bracketed_argument_keeps_spaces() {
        let c = load_isolated(&["[prompt=Second Factor: ]"]).expect("ok");
        assert_eq!(c.prompt, "Second Factor: ");
    }

    #[test]
    fn typos_fail_closed_and_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("windw=1", "windw"),
            ("window=abc", "window"),
            ("window=-1", "window"),
            ("window=11", "window"),
            ("trusted=10.0.0.0/33", "trusted"),
            ("trusted=10.0.0.0/8,", "trusted"),
            ("trusted=", "trusted"),
            ("trusted", "trusted"),
            ("unenrolled=maybe", "unenrolled"),
            ("enroll=always", "enroll"),
            ("hotp_window=101", "hotp_window"),
            ("user_limit=-1", "user_limit"),
            ("fail_delay=1s", "fail_delay"),
            ("db=/tmp/a\nb", "db"),
            ("db=relative.db", "db"),
            ("debug=perhaps", "debug"),
            ("messages=perhaps", "messages"),
            ("messages", "messages"),
            ("only_group=", "only_group"),
            ("only_group=pilot,,staff", "only_group"),
            ("only_group=pi lot", "only_group"),
            ("only_groups=pilot", "only_groups"),
            ("nullok", "nullok"),
        ];
        for (arg, key) in cases {
            let err = load_isolated(&[arg]).expect_err(arg);
            assert!(err.to_string().contains(key), "{arg}: {err}");
        }
    }

    #[test]
    fn duplicate_argument_is_an_error() {
        let err = load_isolated(&["window=1", "window=3"]).expect_err("dup");
        assert!(matches!(err, ConfigError::Duplicate { .. }), "{err}");
    }

    #[test]
    fn file_is_read_and_arguments_override_it() {
        let (_dir, cfg) = with_file(
            "# site settings\n\
             window = 2\n\
             trusted = 192.0.2.0/24\n\
             prompt = \"Code: \"\n\
             debug\n",
        );
        let c = load(std::slice::from_ref(&cfg)).expect("ok");
        assert_eq!(c.window, 2);
        assert_eq!(c.prompt, "Code: ");
        assert!(c.debug);
        assert_eq!(c.trusted.len(), 1);

        let c = load(&[cfg, "window=0".to_string()]).expect("ok");
        assert_eq!(c.window, 0);
    }

    #[test]
    fn file_errors_name_path_and_line() {
        let (_dir, cfg) = with_file("window = 1\nwindow_size = 3\n");
        let err = load(&[cfg]).expect_err("unknown");
        let text = err.to_string();
        assert!(text.contains("pam_totp.conf:2"), "{text}");
        assert!(text.contains("window_size"), "{text}");

        let (_dir, cfg) = with_file("just words\n");
        assert!(matches!(load(&[cfg]), Err(ConfigError::Syntax { .. })));

        let (_dir, cfg) = with_file("config = /etc/other.conf\n");
        assert!(load(&[cfg]).is_err());
    }

    /// A file that is not a config file (a shadow line, a sealing key, a
    /// password, secrets behind known keys): the error names the file and
    /// the line, never what is on it.
    #[test]
    fn errors_about_a_file_never_quote_it() {
        let secret = "hunter2Secret";
        let files = [
            format!("root:$y$j9T${secret}$:19000:0:99999:7:::\n"),
            format!("{secret}\n"),
            format!("{}\n", "a3".repeat(32)),
            format!("{secret}={secret}\n"),
            format!("PASSWORD={secret}\n"),
            format!("# comment\n\n{secret} = 1\n"),
            format!("db = postgresql://totp@db/totp?sslmode={secret}\n"),
            format!("db = {secret}\n"),
            format!("trusted = {secret}\n"),
            format!("trusted = 10.1.2.3/16,{secret}\n"),
            format!("grace = {secret}\n"),
            format!("window = {secret}\n"),
            format!("mode = {secret}\n"),
            format!("exempt_user = alice,{secret} x\n"),
            format!("prompt = {secret}\u{7}\n"),
            format!("window = 1\nwindow = {secret}\n"),
            format!("{secret} = 1\n{secret} = 2\n"),
            format!("x{secret}-y = 1\nx{secret}-y = 2\n"),
            format!("config = /etc/{secret}\n"),
        ];
        for file in &files {
            let (_dir, cfg) = with_file(file);
            let err = load(std::slice::from_ref(&cfg)).expect_err(file);
            let shown = format!("{err} {err:?}");
            assert!(
                !shown.contains(secret) && !shown.contains("a3a3a3") && !shown.contains("j9T"),
                "{file:?}: {shown}"
            );
            assert!(
                err.to_string().contains("pam_totp.conf:"),
                "{file:?}: {err}"
            );
        }
        // Key names shaped like keys are still named, and fixed reasons kept.
        for (file, said) in [
            ("windw = 1\n", "unknown key \"windw\""),
            (
                "window = 1\nwindow = 2\n",
                "\"window\" is given more than once",
            ),
            (
                "window = 11\n",
                "the value of window is invalid: expected a whole number",
            ),
            ("db = store.db\n", "must be an absolute path"),
            (
                "trusted = 10.1.2.3/16\n",
                "the value of trusted is invalid: expected IP addresses or CIDR blocks",
            ),
            (
                "db = postgresql://totp@db/totp?sslmode=require\n",
                "sslmode=verify-full or sslmode=disable",
            ),
            ("grace = 8\n", "expected a duration such as 8h"),
            (
                "window 3\n",
                "pam_totp.conf:1: the line is not `key = value`",
            ),
            (
                "config = /etc/x.conf\n",
                "config= is only valid as a module argument",
            ),
        ] {
            let (_dir, cfg) = with_file(file);
            let err = load(&[cfg]).expect_err(file).to_string();
            assert!(err.contains(said), "{file:?}: {err}");
        }
        // Module arguments are the PAM stack's own text: shown, escaped.
        let err = load_isolated(&["window=abc"]).expect_err("abc").to_string();
        assert!(err.contains("window=\"abc\" is invalid"), "{err}");
    }

    /// `load_all` reports every mistake, each once, in `load`'s order: the
    /// first is `load`'s error, and the settings that parsed still apply.
    #[test]
    fn load_all_reports_every_mistake_and_load_the_first() {
        let (_dir, cfg) = with_file(
            "windw = 1\n\
             trusted = 10.0.0.0/8\n\
             just words\n\
             mode = sideways\n\
             trusted = 192.0.2.0/24\n",
        );
        let all = args(&[&cfg, "fail_delay=1s", "debug", "only_groups=pilot", "debug"]);
        let (config, problems) = load_all(&all);
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let keys: Vec<Option<&str>> = problems.iter().map(ConfigError::key).collect();
        assert_eq!(
            keys,
            [
                Some("debug"),
                None,
                Some("trusted"),
                Some("windw"),
                Some("mode"),
                Some("fail_delay"),
                Some("only_groups"),
            ],
            "{shown:#?}"
        );
        assert!(shown[1].contains("pam_totp.conf:3"), "{shown:#?}");
        assert!(shown[2].contains("pam_totp.conf:5"), "{shown:#?}");
        assert_eq!(load(&all), Err(problems[0].clone()));
        // What parsed is applied: the later trusted line, debug.
        assert_eq!(config.trusted.len(), 1);
        assert!(config.debug);

        let (_dir, cfg) = with_file("window = 2\n");
        assert_eq!(load_all(&[cfg]).1, []);
        // A config= that is not absolute: one problem, and no default file.
        let (_, problems) = load_all(&args(&["config=pam_totp.conf"]));
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn explicit_config_must_exist() {
        let err = load(&args(&["config=/nonexistent/pam_totp.conf"])).expect_err("missing");
        assert!(matches!(err, ConfigError::File { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/pam_totp.conf"));
    }
}
