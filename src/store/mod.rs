//! The secret store: users' tokens (one or more devices each), the last
//! step or counter each token used, recovery code hashes, the enroll
//! windows an administrator opened, failed codes, grace periods and staged
//! grants.
//!
//! Layers, each importing only the ones below it:
//! - `login::LoginStore` (what the module's login path may do) and
//!   `admin::Store` (everything, for totpctl): the seam the decision and
//!   the CLI see;
//! - `shared::SqlStore`: both traits written once, with the statements of
//!   `sql`, on any `driver::Driver`;
//! - the backends, which keep only what is their own (connecting, schema
//!   and migration, durability, locking): `sqlite` (the embedded default,
//!   one node) and `postgres` (one database for a pool of login nodes).

pub mod admin;
pub mod driver;
pub mod location;
pub mod login;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod shared;
pub mod sql;
pub mod sqlite;

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::otp::Params;
use crate::ratelimit::{Failures, Lock};
use crate::recovery::RecoveryHash;
use crate::secret::Secret;

pub use admin::Store;
pub use location::{DEFAULT_DB_TIMEOUT, PgTarget, PgTls, StoreLocation};
pub use login::LoginStore;
#[cfg(feature = "postgres")]
pub use postgres::{PgDriver, PgSettings, PgStore};
pub use shared::SqlStore;
pub use sqlite::{SqliteDriver, SqliteStore};

/// The locks a user's failure counts hold now (`totpctl show`, `totp status`).
/// A lock in force now, as a login would meet it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locked {
    /// The per-user ceiling (`user_limit` wrong codes within 24 h): every
    /// untrusted address is refused until `until`.
    User { until: i64, recent: u64 },
    /// The back-off of one source address (`backoff_after` wrong codes in
    /// a row from it).
    Source {
        rhost: String,
        until: i64,
        count: u64,
    },
}

impl Locked {
    pub fn until(&self) -> i64 {
        match self {
            Locked::User { until, .. } | Locked::Source { until, .. } => *until,
        }
    }
}

/// The locks in force for `user` at `now`: the per-user lock alone (it
/// refuses every address), or the back-off of each address that has one.
/// Each address is read and judged exactly as the login's guess
/// reservation does (`Store::failures`, then `ratelimit::lock_at`).
pub fn locks(
    store: &(impl Store + ?Sized),
    user: &str,
    limits: &crate::ratelimit::Limits,
    now: i64,
) -> Result<Vec<Locked>, StoreError> {
    let mut sources: Vec<String> = store
        .failure_sources(user)?
        .into_iter()
        .map(|(rhost, _, _)| rhost)
        .collect();
    if sources.is_empty() {
        // No address counts against the user, but the per-user failures
        // may still (e.g. the addresses were cleared by right codes).
        sources.push(String::new());
    }
    let mut found = Vec::new();
    for rhost in sources {
        let failures = store.failures(user, &rhost, now)?;
        match crate::ratelimit::lock_at(&failures, limits, now) {
            Some(crate::ratelimit::Lock::User { until }) => {
                return Ok(vec![Locked::User {
                    until,
                    recent: failures.user_recent,
                }]);
            }
            Some(crate::ratelimit::Lock::Source { until }) => found.push(Locked::Source {
                rhost,
                until,
                count: failures.source_count,
            }),
            None => {}
        }
    }
    Ok(found)
}

/// The device name a pending replacement carries until it is confirmed: a
/// space is never in a device name given on a command line, so it cannot
/// clash with one of the user's devices.
pub fn replacement_name(device: &str) -> String {
    format!("{device} (new)")
}

/// A sealed key of (user, device) opened under the device's name, or else
/// under its pending name (`replacement_name`): a replacement confirmed
/// before schema 10 took its name without its key sealed again. Only where
/// a key file is being judged or replaced (`rekey`, the store's first
/// record of its key file), never at login.
pub fn open_under_its_names(
    sealer: &crate::seal::Sealer,
    user: &str,
    device: &str,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, crate::seal::SealError> {
    sealer.open(user, device, blob).or_else(|e| {
        sealer
            .open(user, &replacement_name(device), blob)
            .map_err(|_| e)
    })
}

/// `otp::key_mark` of `user`'s `key`, its impossible refusal an error of
/// the user's row: what a live token and a deleted one are compared by.
pub fn key_mark(
    key: &[u8],
    algorithm: crate::otp::Algorithm,
    user: &str,
) -> Result<[u8; 32], StoreError> {
    crate::otp::key_mark(key, algorithm, user).ok_or_else(|| StoreError::InvalidRow {
        user: user.to_string(),
        reason: "HMAC refused the key".to_string(),
    })
}

/// The schema version this build writes and understands, one sequence for
/// both backends (SQLite keeps it in `user_version`, PostgreSQL in
/// `pam_totp_meta`).
pub const SCHEMA_VERSION: i64 = 11;

/// The highest HOTP counter a token is enrolled, imported or loaded with
/// (exclusive). A TOTP code is the HOTP code of its step number, and every
/// TOTP step since 2000 of any period the store allows (at most 3600 s)
/// is above it (946,684,800 / 3600 = 262,968), so an HOTP token's codes
/// never meet the codes its key gave as TOTP (found by an attack: a TOTP
/// key deleted and enrolled again as HOTP at its step, or a little below
/// it, accepted the used code; records of deleted TOTP keys are kept only
/// for their window). A fob would need over 260,000 presses to climb from
/// under it to any TOTP step.
pub const MAX_HOTP_COUNTER: u64 = 1 << 18;

/// The oldest schema whose tables and columns every statement of a login
/// finds: this build's module logs users in on a PostgreSQL database from
/// this version to `SCHEMA_VERSION`, so the nodes of a pool can take a new
/// module one by one and `totpctl init` migrate the database after the
/// last (the administration tools and `totp` want `SCHEMA_VERSION`; a
/// SQLite store is migrated by whoever opens it first). Raise it with any
/// migration that changes what a login reads or writes. 10 added only
/// `retired_keys`, which logins never touch, and 11 only its `key_mark`.
pub const LOGIN_OLDEST_SCHEMA: i64 = 9;

/// Seconds since the epoch (0 if the clock is before 1970), for row times
/// the stores and totpctl stamp themselves.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A token key as the store keeps it: sealed for its (user, device) when a
/// sealing key is loaded, else the raw bytes.
pub fn stored_secret(
    sealer: Option<&crate::seal::Sealer>,
    token: &Token,
) -> Result<Vec<u8>, StoreError> {
    match sealer {
        Some(sealer) => Ok(sealer.seal(&token.user, &token.device, &token.secret)?),
        None => Ok(token.secret.as_bytes().to_vec()),
    }
}

/// A token's parameters checked and its key as the store keeps it, for
/// every statement that writes a token row (a token, a staged enrollment).
pub fn checked_secret(
    sealer: Option<&crate::seal::Sealer>,
    token: &Token,
) -> Result<zeroize::Zeroizing<Vec<u8>>, StoreError> {
    token
        .params
        .validate()
        .map_err(|e| StoreError::InvalidRow {
            user: token.user.clone(),
            reason: e.to_string(),
        })?;
    // The next counter (one past the used one) must be below the bound: a
    // token whose next code is at it would never log anyone in (found by
    // an attack: `--counter 262144` enrolled a dead fob).
    if token.kind == Kind::Hotp
        && token
            .last_step
            .is_some_and(|c| c.saturating_add(1) >= MAX_HOTP_COUNTER)
    {
        return Err(StoreError::InvalidRow {
            user: token.user.clone(),
            reason: format!(
                "an HOTP token's next counter must be below {MAX_HOTP_COUNTER}, where TOTP step \
                 numbers are (a TOTP code is the HOTP code of its step, so such a counter could \
                 accept a code its key once gave as TOTP): give the token a new key, or a \
                 counter below that"
            ),
        });
    }
    Ok(zeroize::Zeroizing::new(stored_secret(sealer, token)?))
}

/// A `staged` row as both backends read it: the token columns of an
/// enrollment come as a `TokenInfo` whose `last_step` is the confirming
/// step, and the key as stored.
pub struct StagedRow {
    pub owner: String,
    pub expires: i64,
    pub what: String,
    pub ip: Option<String>,
    pub until: Option<i64>,
    /// A key grace's fingerprint and end.
    pub fingerprint: Option<String>,
    pub key_until: Option<i64>,
    pub token: Option<(TokenInfo, zeroize::Zeroizing<Vec<u8>>)>,
    /// An enrollment's recovery codes (`encode_recovery`).
    pub recovery: Option<String>,
}

/// Recovery code hashes as one staged column: a `lookup hash` line each
/// (neither holds a space or a line break).
pub fn encode_recovery(codes: &[RecoveryHash]) -> String {
    codes
        .iter()
        .map(|c| format!("{} {}\n", c.lookup, c.phc))
        .collect()
}

fn decode_recovery(user: &str, text: &str) -> Result<Vec<RecoveryHash>, StoreError> {
    text.lines()
        .map(|line| {
            let (lookup, phc) = line.split_once(' ').ok_or_else(|| StoreError::InvalidRow {
                user: user.to_string(),
                reason: "staged recovery codes of an unknown shape".to_string(),
            })?;
            Ok(RecoveryHash {
                lookup: lookup.to_string(),
                phc: phc.to_string(),
            })
        })
        .collect()
}

impl StagedRow {
    /// The grant, if the row is `user`'s and not expired at `now`.
    pub fn grant(
        self,
        sealer: Option<&crate::seal::Sealer>,
        user: &str,
        now: i64,
    ) -> Result<Option<Grant>, StoreError> {
        if self.owner != user || self.expires <= now {
            return Ok(None);
        }
        let invalid = |reason: &str| StoreError::InvalidRow {
            user: user.to_string(),
            reason: reason.to_string(),
        };
        let key = match (self.fingerprint, self.key_until) {
            (Some(fingerprint), Some(until)) => Some((fingerprint, until)),
            (None, None) => None,
            _ => return Err(invalid("staged key grace without its fingerprint or end")),
        };
        match (self.what.as_str(), self.ip, self.until, self.token) {
            ("grace", Some(ip), Some(until), _) => Ok(Some(Grant::Grace {
                ip: Some((ip, until)),
                key,
            })),
            ("grace", None, None, _) if key.is_some() => Ok(Some(Grant::Grace { ip: None, key })),
            ("enroll", _, _, Some((info, blob))) => {
                let step = info
                    .last_step
                    .ok_or_else(|| invalid("staged enrollment without a step"))?;
                let secret = loaded_secret(sealer, user, &info.device, blob)?;
                let mut token = Token::from_info(info, secret, StoredKey::default());
                token.last_step = None;
                let recovery = decode_recovery(user, self.recovery.as_deref().unwrap_or(""))?;
                Ok(Some(Grant::Enroll {
                    token,
                    step,
                    recovery,
                }))
            }
            _ => Err(invalid("staged row of an unknown shape")),
        }
    }
}

/// A token key as read from the store. With a sealing key only sealed keys
/// are accepted (a plain key in a sealed store is a row someone wrote by
/// hand, or one `totpctl rekey` has not reached); without one, a sealed key
/// cannot be used. Either way the login is denied and the log says why.
pub fn loaded_secret(
    sealer: Option<&crate::seal::Sealer>,
    user: &str,
    device: &str,
    blob: zeroize::Zeroizing<Vec<u8>>,
) -> Result<Secret, StoreError> {
    let raw = match (sealer, crate::seal::is_sealed(&blob)) {
        (Some(sealer), true) => sealer.open(user, device, &blob)?,
        (None, false) => blob,
        (Some(_), false) => {
            return Err(StoreError::InvalidRow {
                user: user.to_string(),
                reason: format!(
                    "the key of device {device:?} is not sealed, but a key_file is in use (seal it with `totpctl rekey`)"
                ),
            });
        }
        (None, true) => {
            return Err(StoreError::InvalidRow {
                user: user.to_string(),
                reason: format!(
                    "the key of device {device:?} is sealed, but no key_file is loaded (key_file= must name the pool's key)"
                ),
            });
        }
    };
    Secret::from_bytes(raw).map_err(|e| StoreError::InvalidRow {
        user: user.to_string(),
        reason: e.to_string(),
    })
}

/// Which row a stored key is in: a token's, or a deleted token's kept
/// used step (`retired_keys`), by its table's id. `totpctl rekey` seals
/// both: a deleted key must still open when it is enrolled again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRow {
    Token(i64),
    Retired(i64),
}

/// One key row as stored, for `totpctl rekey`: row, user, device, blob.
pub type SecretRow = (KeyRow, String, String, zeroize::Zeroizing<Vec<u8>>);

/// Everything a store holds, for `totpctl migrate` (keys included: it only
/// ever moves from one root-only place to another, in memory).
#[derive(Debug, Default)]
pub struct Dump {
    pub tokens: Vec<Token>,
    /// (user, lookup, hash, created, used)
    pub recovery: Vec<(String, String, String, i64, Option<i64>)>,
    /// (user, until, opened_by)
    pub windows: Vec<(String, i64, String)>,
    /// (user, rhost, count, last)
    pub failures: Vec<(String, String, i64, i64)>,
    /// Automation grants, in force or ended (the record of what was
    /// allowed). They get new ids in the destination.
    pub automation: Vec<AutomationGrant>,
    /// Deleted tokens' used steps (`retired_keys`), by their keys' marks,
    /// so a key enrolled again after the move still counts its codes from
    /// there.
    pub retired: Vec<RetiredKey>,
}

/// A deleted token's used step (`retired_keys`): what a key enrolled again
/// counts its codes from. The key itself is not kept, only its mark
/// (`otp::key_mark`), which tells whether another key is the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredKey {
    pub user: String,
    pub device: String,
    pub kind: Kind,
    pub params: Params,
    pub created: i64,
    pub last_step: u64,
    /// Until when it is kept (`None`: HOTP, kept).
    pub keep_until: Option<i64>,
    pub mark: [u8; 32],
}

impl RetiredKey {
    /// Whether `token`'s codes are this deleted token's (its mark as
    /// `Token::key_mark`), as `Token::shares_codes_with` asks of two tokens.
    pub fn shares_codes_with(&self, token: &Token, mark: &[u8; 32]) -> bool {
        use subtle::ConstantTimeEq;
        self.kind == token.kind
            && (self.kind == Kind::Hotp || self.params.period == token.params.period)
            && self.params.algorithm == token.params.algorithm
            && bool::from(self.mark.ct_eq(mark))
    }
}

/// How to reach a store: where, and for PostgreSQL the password file and the
/// timeout.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    pub location: &'a StoreLocation,
    pub password_file: Option<&'a std::path::Path>,
    pub timeout: std::time::Duration,
    /// The sealing key file, and whether it was named (a named file must
    /// exist; the default one switches sealing on only when present).
    pub key_file: &'a std::path::Path,
    pub key_file_named: bool,
}

impl Access<'_> {
    #[cfg(feature = "postgres")]
    fn pg<'a>(&'a self, target: &'a PgTarget) -> PgSettings<'a> {
        PgSettings {
            target,
            password_file: self.password_file,
            timeout: self.timeout,
        }
    }

    /// The sealing key, if one is in use.
    pub fn sealer(&self) -> Result<Option<std::sync::Arc<crate::seal::Sealer>>, StoreError> {
        if !self.key_file_named && std::fs::symlink_metadata(self.key_file).is_err() {
            return Ok(None);
        }
        Ok(Some(std::sync::Arc::new(crate::seal::Sealer::load(
            self.key_file,
        )?)))
    }

    /// The store for one login: never created here; SQLite commits TOTP
    /// claims lazily (see `sqlite`).
    pub fn open_for_login(&self) -> Result<Box<dyn LoginStore>, StoreError> {
        let sealer = self.sealer()?;
        Ok(match self.location {
            StoreLocation::Sqlite(path) => {
                Box::new(SqliteStore::open_for_login(path)?.with_sealer(sealer))
            }
            #[cfg(feature = "postgres")]
            StoreLocation::Postgres(target) => {
                Box::new(PgStore::open_for_login(&self.pg(target))?.with_sealer(sealer))
            }
            #[cfg(not(feature = "postgres"))]
            StoreLocation::Postgres(_) => return Err(StoreError::NoPostgres),
        })
    }

    /// The store for administration: every write synced; `create` makes or
    /// migrates it (`totpctl init`, and the verbs that may create it).
    pub fn open_admin(&self, create: bool) -> Result<Box<dyn Store>, StoreError> {
        let sealer = self.sealer()?;
        Ok(match (self.location, create) {
            (StoreLocation::Sqlite(path), true) => {
                Box::new(SqliteStore::create(path)?.with_sealer(sealer))
            }
            (StoreLocation::Sqlite(path), false) => {
                Box::new(SqliteStore::open(path)?.with_sealer(sealer))
            }
            #[cfg(feature = "postgres")]
            (StoreLocation::Postgres(target), true) => {
                Box::new(PgStore::create(&self.pg(target))?.with_sealer(sealer))
            }
            #[cfg(feature = "postgres")]
            (StoreLocation::Postgres(target), false) => {
                Box::new(PgStore::open(&self.pg(target))?.with_sealer(sealer))
            }
            #[cfg(not(feature = "postgres"))]
            (StoreLocation::Postgres(_), _) => return Err(StoreError::NoPostgres),
        })
    }
}

/// The device name a token gets when none is given.
pub const DEFAULT_DEVICE: &str = "default";

/// Time-based or counter-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Totp,
    Hotp,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Totp => "totp",
            Kind::Hotp => "hotp",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "totp" => Ok(Kind::Totp),
            "hotp" => Ok(Kind::Hotp),
            _ => Err(format!("unknown token type {s:?} (expected totp or hotp)")),
        }
    }
}

/// One token of one user, as the login path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Store row id (0 for a token not stored yet).
    pub id: i64,
    pub user: String,
    pub device: String,
    pub kind: Kind,
    pub secret: Secret,
    pub params: Params,
    /// Unix time of enrollment.
    pub created: i64,
    /// Unix time of confirmation; `None` while pending (logs nobody in).
    pub confirmed: Option<i64>,
    /// TOTP: the highest step ever accepted. HOTP: the highest counter used.
    pub last_step: Option<u64>,
    /// Disabled, expiring, replacing: what an administrator set.
    pub life: Life,
    /// The key as the store holds it (sealed or not), for the claim: a
    /// step is claimed only on the row whose key was checked, never on a
    /// row that took its id since (SQLite gives a new row the id of a
    /// deleted last one). Empty for a token not read from a store.
    pub stored_key: StoredKey,
}

/// A token key's bytes as the store holds them (sealed or not). Wiped when
/// dropped; `Debug` never shows them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoredKey(pub Zeroizing<Vec<u8>>);

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredKey([redacted])")
    }
}

impl StoredKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// What an administrator set on a token beyond its key and parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Life {
    /// Unix time it was disabled (`totpctl disable`); logs nobody in.
    pub disabled: Option<i64>,
    /// Unix time from which it logs nobody in (`enroll --expires`).
    pub expires: Option<i64>,
    /// A pending replacement (`totpctl reset`): when it is confirmed, the
    /// user's other tokens go and it takes this device name.
    pub replaces: Option<String>,
}

impl Life {
    /// Whether an administrator's setting stops the token at `now`.
    pub fn stopped_at(&self, now: i64) -> Option<&'static str> {
        if self.disabled.is_some() {
            Some("disabled")
        } else if self.expires.is_some_and(|e| e <= now) {
            Some("expired")
        } else {
            None
        }
    }
}

impl Token {
    /// Whether `other` shows this token's codes for the same steps or
    /// counters: the same kind, for TOTP the same period, and the same key
    /// (`same_key_as`). Itself included. A store written before `totpctl`
    /// refused a key the user held may have such twins; a step or counter
    /// used on one is used on all (`auth::last_used`), and a deleted one's
    /// on the key enrolled again. (A TOTP and an HOTP token of one key
    /// give the same code for one step and counter, but never meet:
    /// `MAX_HOTP_COUNTER`.)
    pub fn shares_codes_with(&self, other: &Token) -> bool {
        self.kind == other.kind
            && (self.kind == Kind::Hotp || self.params.period == other.params.period)
            && self.same_key_as(other)
    }

    /// The same algorithm and a key HMAC makes the same (any number of
    /// digits: a 6-digit code is the last six digits of the 8-digit one).
    pub fn same_key_as(&self, other: &Token) -> bool {
        self.params.algorithm == other.params.algorithm
            && self
                .secret
                .gives_the_codes_of(&other.secret, self.params.algorithm)
    }

    /// What this token's key is remembered by once deleted
    /// (`otp::key_mark`, with the user's name).
    pub fn key_mark(&self) -> Result<[u8; 32], StoreError> {
        key_mark(self.secret.as_bytes(), self.params.algorithm, &self.user)
    }

    /// The highest step or counter used by this token or any of `all` (the
    /// user's tokens) that shares its codes: what its codes count from.
    pub fn last_used_among(&self, all: &[Token]) -> Option<u64> {
        all.iter()
            .filter(|o| o.shares_codes_with(self))
            .filter_map(|o| o.last_step)
            .chain(self.last_step)
            .max()
    }

    /// Whether another of `all` (the user's tokens) shares this token's
    /// codes: a twin.
    pub fn has_twin(&self, all: &[Token]) -> bool {
        all.iter()
            .any(|o| o.id != self.id && o.shares_codes_with(self))
    }

    /// Confirmed (a pending token logs nobody in).
    pub fn is_active(&self) -> bool {
        self.confirmed.is_some()
    }

    /// Confirmed, not disabled and not expired at `now`: the tokens a code
    /// is checked against.
    pub fn usable_at(&self, now: i64) -> bool {
        self.is_active() && self.life.stopped_at(now).is_none()
    }

    /// A stored token: its row, its key, and the key as stored.
    pub fn from_info(info: TokenInfo, secret: Secret, stored_key: StoredKey) -> Token {
        Token {
            id: info.id,
            user: info.user,
            device: info.device,
            kind: info.kind,
            secret,
            params: info.params,
            created: info.created,
            confirmed: info.confirmed,
            last_step: info.last_step,
            life: info.life,
            stored_key,
        }
    }

    /// Everything but the key.
    pub fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id,
            user: self.user.clone(),
            device: self.device.clone(),
            kind: self.kind,
            params: self.params,
            created: self.created,
            confirmed: self.confirmed,
            last_step: self.last_step,
            life: self.life.clone(),
        }
    }
}

/// A token without its key, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub user: String,
    pub device: String,
    pub kind: Kind,
    pub params: Params,
    pub created: i64,
    pub confirmed: Option<i64>,
    pub last_step: Option<u64>,
    pub life: Life,
}

impl TokenInfo {
    /// What the token is at `now`, for people: active, pending (with
    /// "replacement" when confirming it retires the others), disabled,
    /// expired.
    pub fn state_at(&self, now: i64) -> &'static str {
        match (self.confirmed, self.life.stopped_at(now)) {
            (_, Some(stopped)) => stopped,
            (None, None) if self.life.replaces.is_some() => "pending replacement",
            (None, None) => "pending",
            (Some(_), None) => "active",
        }
    }
}

/// The result of trying to mark a step, counter or recovery code as used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// It was newer than everything used before (or unused); now recorded.
    Claimed,
    /// It, or something later, was already used (or the row is gone).
    AlreadyUsed,
}

/// How an enrollment treats what the user already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollMode {
    /// Add the device; an existing device of that name is an error.
    Add,
    /// A device the user adds themselves (`totp add-device`): added as
    /// with `Add`, and what an administrator set on the user's devices (a
    /// disable, an expiry) carries over to it, so a user cannot outlive an
    /// expiry by adding a device before it.
    AddOwn,
    /// Replace the device of that name if it exists (`--force`).
    ReplaceDevice,
    /// Remove all the user's tokens, recovery codes and windows first
    /// (`reset --now`, or a reset whose token is active at once).
    ReplaceUser,
    /// A pending replacement (`reset`): the user's tokens keep working
    /// until it is confirmed, which retires them in the same transaction
    /// (`Life::replaces`). An earlier pending replacement is dropped, the
    /// recovery codes are replaced and grace entries end now.
    Replacement,
    /// A confirmed new device in place of all the user's tokens, in one
    /// transaction (`totp replace`, after the new device's code was
    /// checked): every token of the user, pending ones too, goes, the
    /// recovery codes are replaced and grace entries end. What an
    /// administrator set (a disable, an expiry) carries over, and the
    /// failure counts and enrollment windows stay: a user cannot clear
    /// their own lock by replacing their phone.
    ReplaceConfirmed,
}

/// One user's enrollment: a token and, optionally, a new set of recovery
/// codes (replacing the old set).
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub token: Token,
    pub recovery: Option<Vec<RecoveryHash>>,
}

/// What a login may grant, staged during the auth phase and committed only
/// once the whole auth stack has succeeded (`auth::commit_staged`, from
/// `pam_sm_acct_mgmt` or `pam_sm_setcred`). A login that fails leaves a
/// staged row behind that nobody can name and that expires by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A token enrolled at login, confirmed with the code of `step`, and
    /// the recovery codes shown with it (none when they could not be made).
    Enroll {
        token: Token,
        step: u64,
        recovery: Vec<RecoveryHash>,
    },
    /// What a right code starts: the user skips the code from an address
    /// (`grace=`) and/or with an SSH key fingerprint (`grace_key=`), each
    /// until its time. At least one of the two.
    Grace {
        ip: Option<(String, i64)>,
        key: Option<(String, i64)>,
    },
}

/// An automation grant (`totpctl allow-automation`): one key of one user
/// logs in without a code from `networks` until `until`, unless revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutomationGrant {
    pub id: i64,
    pub user: String,
    /// `SHA256:…`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// CIDR blocks, comma-separated, as given (checked when made).
    pub networks: String,
    pub until: i64,
    pub reason: String,
    pub created: i64,
    pub created_by: String,
    pub revoked: Option<i64>,
}

impl AutomationGrant {
    /// True while the grant lets its key in (not revoked, not past `until`).
    pub fn in_force(&self, now: i64) -> bool {
        self.revoked.is_none() && now < self.until
    }

    /// The grant's networks, parsed. A stored value that does not parse is
    /// an error: the grant admits no one (fail closed).
    pub fn parsed_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        let networks: Vec<ipnet::IpNet> = self
            .networks
            .split(',')
            .map(crate::network::parse_block)
            .collect::<Result<_, _>>()?;
        if networks.is_empty() {
            return Err("no network".to_string());
        }
        Ok(networks)
    }
}

/// The answer to a request for one guess against the rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The guess is taken and already counted as a failure; these are the
    /// counts with it. A right code gives it back (`release_guess`).
    Granted(Failures),
    /// A limit is in force: the answer must not be checked.
    Locked(Lock),
}

/// A code checked before the store is written, as the transaction that
/// takes its guess needs it (`LoginStore::settle_guess`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    /// Wrong or malformed: the guess stays counted.
    Wrong,
    /// Right for this active token at `step` (a TOTP time step or an HOTP
    /// counter): the step is claimed (on the token's row only while it
    /// holds the key that was checked), and the guess given back either way.
    Right { token: &'a Token, step: u64 },
    /// `Right`, for a token another device of the user shares codes with
    /// (`Token::shares_codes_with`): under the user's hold the user's
    /// devices are read again, and the step is claimed only if none of
    /// them has used it (else `AlreadyUsed`), so that a login that read
    /// them before its prompt cannot claim a step a twin used meanwhile.
    RightOnSharedKey { token: &'a Token, step: u64 },
    /// Right, but refused before any claim (a step from before the boot):
    /// the guess is given back.
    Refused,
}

/// What `LoginStore::settle_guess` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// A limit is in force: nothing was written and the answer must not be
    /// acted on.
    Locked(Lock),
    /// A wrong answer, counted; these are the counts with it.
    Counted(Failures),
    /// A right answer: the claim (none for `Answer::Refused`), and the
    /// guess given back (a claimed step also ends the source's back-off).
    GivenBack(Option<Claim>),
}

/// A stored recovery code that is still unused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecovery {
    pub id: i64,
    pub phc: String,
}

/// Counts for `show` and `list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoveryCount {
    pub unused: usize,
    pub used: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {0} does not exist (create it with `totpctl init`)")]
    Missing(String),
    #[error("store {0} is not initialised (no schema)")]
    NotInitialised(String),
    #[error("store schema version {found} is newer than this module supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("store {path} is not a usable database: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("store {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("store not trusted: {0}")]
    Untrusted(crate::trust::Untrusted),
    #[error("store query failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Said with the server's own message ("db error" alone tells a
    /// sysadmin nothing), never its detail (which can quote a row).
    #[cfg(feature = "postgres")]
    #[error("store query failed: {}", postgres::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("this build has no PostgreSQL support (built without the `postgres` feature)")]
    NoPostgres,
    #[error("{0}")]
    NotEmpty(String),
    #[error("{0}")]
    Sealing(#[from] crate::seal::SealError),
    #[error("database {target} unavailable: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("store row for {user:?} is invalid: {reason}")]
    InvalidRow { user: String, reason: String },
    #[error(
        "{user} already has a token named {device:?} (use --force to replace it, or --device NAME to add another)"
    )]
    AlreadyEnrolled { user: String, device: String },
    #[error(
        "the devices of {user} changed while this was asked (an administrator's reset or another change): nothing was changed"
    )]
    ChangedMeanwhile { user: String },
    #[error("time step or counter {0} does not fit in the store")]
    StepOutOfRange(u64),
    #[error("store row has no {expected} in column {column}")]
    Column {
        column: usize,
        expected: &'static str,
    },
    #[error("store statement parameter {index}: {reason}")]
    Parameter { index: usize, reason: String },
}

impl StoreError {
    /// True when the store could not be reached or used just now (a
    /// database down or slow, a file locked, full or read-only): the
    /// condition passes by itself. False when the store is there but must
    /// not be used as it is (missing, not initialised, too new, corrupt,
    /// untrusted, a bad row or key): an administrator has to act.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unreachable { .. } | StoreError::Io { .. } => true,
            // The connection or the server's resources, not the data: a
            // broken connection, SQLSTATE classes 08 (connection), 53
            // (resources), 57 (operator intervention, statement timeout),
            // 58 (system), 40 (rolled back), 55P03 (lock not available).
            #[cfg(feature = "postgres")]
            StoreError::Postgres(e) => match e.as_db_error() {
                None => true,
                Some(db) => {
                    let code = db.code().code();
                    ["08", "53", "57", "58", "40"]
                        .iter()
                        .any(|class| code.starts_with(class))
                        || code == "55P03"
                }
            },
            // What `sqlite::classify` calls an I/O condition, when a
            // statement (not the open) meets it.
            StoreError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::PermissionDenied
                        | rusqlite::ErrorCode::ReadOnly
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::SystemIoFailure
                )
            ),
            StoreError::Missing(_)
            | StoreError::NotInitialised(_)
            | StoreError::SchemaTooNew { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Untrusted(_)
            | StoreError::NoPostgres
            | StoreError::NotEmpty(_)
            | StoreError::Sealing(_)
            | StoreError::InvalidRow { .. }
            | StoreError::AlreadyEnrolled { .. }
            | StoreError::ChangedMeanwhile { .. }
            | StoreError::StepOutOfRange(_)
            | StoreError::Column { .. }
            | StoreError::Parameter { .. } => false,
        }
    }
}
