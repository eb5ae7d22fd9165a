//! The secret store: users' tokens (one or more devices each), the last
//! step or counter each token used, recovery code hashes, and the enroll
//! windows an administrator opened. `Store` is the seam between the
//! decision and the backends: `sqlite` (the embedded default, one node) and
//! `postgres` (one database shared by a pool of login nodes).

pub mod location;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::str::FromStr;

use crate::otp::Params;
use crate::ratelimit::{Failures, Limits, Lock};
use crate::recovery::RecoveryHash;
use crate::secret::Secret;

pub use location::{DEFAULT_DB_TIMEOUT, PgTarget, PgTls, StoreLocation};
#[cfg(feature = "postgres")]
pub use postgres::{PgSettings, PgStore};
pub use sqlite::SqliteStore;

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
    pub token: Option<(TokenInfo, zeroize::Zeroizing<Vec<u8>>)>,
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
        match (self.what.as_str(), self.ip, self.until, self.token) {
            ("grace", Some(ip), Some(until), _) => Ok(Some(Grant::Grace { ip, until })),
            ("enroll", _, _, Some((info, blob))) => {
                let step = info
                    .last_step
                    .ok_or_else(|| invalid("staged enrollment without a step"))?;
                let secret = loaded_secret(sealer, user, &info.device, blob)?;
                let mut token = Token::from_info(info, secret);
                token.last_step = None;
                Ok(Some(Grant::Enroll { token, step }))
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

/// One token key row as stored, for `totpctl rekey`: id, user, device, blob.
pub type SecretRow = (i64, String, String, zeroize::Zeroizing<Vec<u8>>);

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
    pub fn open_for_login(&self) -> Result<Box<dyn Store>, StoreError> {
        let sealer = self.sealer()?;
        Ok(match self.location {
            StoreLocation::Sqlite(path) => {
                Box::new(SqliteStore::open_for_login(path)?.with_sealer(sealer))
            }
            #[cfg(feature = "postgres")]
            StoreLocation::Postgres(target) => {
                Box::new(PgStore::open(&self.pg(target))?.with_sealer(sealer))
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
}

impl Token {
    pub fn is_active(&self) -> bool {
        self.confirmed.is_some()
    }

    /// A stored token: its row and its key.
    pub fn from_info(info: TokenInfo, secret: Secret) -> Token {
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
    /// Replace the device of that name if it exists (`--force`).
    ReplaceDevice,
    /// Remove all the user's tokens, recovery codes and windows first (`reset`).
    ReplaceUser,
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
    /// A token enrolled at login, confirmed with the code of `step`.
    Enroll { token: Token, step: u64 },
    /// The user skips the code from `ip` until `until`.
    Grace { ip: String, until: i64 },
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
    #[cfg(feature = "postgres")]
    #[error("store query failed: {0}")]
    Postgres(#[from] ::postgres::Error),
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
    #[error("time step or counter {0} does not fit in the store")]
    StepOutOfRange(u64),
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
            #[cfg(feature = "postgres")]
            StoreError::Postgres(_) => true,
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
            | StoreError::StepOutOfRange(_) => false,
        }
    }
}

/// What every backend provides. Reads are single statements; every write
/// that changes more than one row is one transaction; the step claim is a
/// single atomic conditional write.
pub trait Store {
    /// The schema version of the store (0: no schema yet).
    fn schema_version(&self) -> Result<i64, StoreError>;

    /// False when a TOTP claim may be committed lazily and lost with a
    /// crash of the machine (SQLite's login connection): the decision then
    /// fences off steps from before the boot.
    fn totp_claims_durable(&self) -> bool;

    /// All the user's tokens (pending ones too), ordered by device.
    fn tokens(&self, user: &str) -> Result<Vec<Token>, StoreError>;

    /// Records `step` (TOTP) or `counter` (HOTP) as used for token `id` if,
    /// and only if, it is greater than every one used before. Two callers
    /// racing with the same value: exactly one gets `Claimed`. `kind` is
    /// the token's: an HOTP counter never expires, so its claim is on disk
    /// before this returns; a TOTP claim may be committed lazily (the
    /// decision fences off steps from before the last boot).
    fn claim_step(&self, id: i64, kind: Kind, step: u64) -> Result<Claim, StoreError>;

    /// Stores enrollments in one transaction (all or nothing).
    fn enroll(&self, enrollments: &[Enrollment], mode: EnrollMode) -> Result<(), StoreError>;

    /// Marks a pending token active and claims `step` with it, atomically:
    /// the confirmation code cannot then be replayed to log in.
    fn confirm(&self, id: i64, at: i64, step: u64) -> Result<Claim, StoreError>;

    /// Removes the user's tokens, recovery codes, enroll window and failure
    /// counts; returns
    /// how many tokens there were.
    fn delete_user(&self, user: &str) -> Result<usize, StoreError>;

    /// Removes one device; `false` when there was none of that name.
    fn delete_device(&self, user: &str, device: &str) -> Result<bool, StoreError>;

    /// Every token, without keys, ordered by user and device.
    fn list(&self) -> Result<Vec<TokenInfo>, StoreError>;

    /// Replaces the user's recovery codes (the old ones stop working).
    fn replace_recovery(&self, user: &str, codes: &[RecoveryHash]) -> Result<(), StoreError>;

    /// The user's unused recovery codes with this lookup tag.
    fn recovery_candidates(
        &self,
        user: &str,
        lookup: &str,
    ) -> Result<Vec<StoredRecovery>, StoreError>;

    /// Marks recovery code `id` used if it is still unused (atomic).
    fn burn_recovery(&self, id: i64, at: i64) -> Result<Claim, StoreError>;

    /// How many of the user's recovery codes are unused and used.
    fn recovery_count(&self, user: &str) -> Result<RecoveryCount, StoreError>;

    /// Lets `user` enroll at login until `until` (unix time).
    fn open_enroll_window(&self, user: &str, until: i64, by: &str) -> Result<(), StoreError>;

    /// The end of the user's enroll window, if one is open at `now`.
    fn enroll_window(&self, user: &str, now: i64) -> Result<Option<i64>, StoreError>;

    /// The failure counts that decide whether `user` from `rhost` may try a code.
    fn failures(&self, user: &str, rhost: &str, now: i64) -> Result<Failures, StoreError>;

    /// Counts one failed code from (user, rhost) at `now` (outside any
    /// reservation: tests and imports); returns the new counts.
    fn record_failure(&self, user: &str, rhost: &str, now: i64) -> Result<Failures, StoreError>;

    /// Forgets all the user's failures (`totpctl unlock`); returns the sources cleared.
    fn unlock(&self, user: &str) -> Result<usize, StoreError>;

    /// (rhost, failures, last failure) for each source, newest first.
    fn failure_sources(&self, user: &str) -> Result<Vec<(String, u64, i64)>, StoreError>;

    /// Stores a token enrolled at login, active, with `step` claimed, and
    /// closes the user's enroll window, in one transaction. Fails with
    /// `AlreadyEnrolled` if the user meanwhile got a token.
    fn enroll_at_login(&self, token: &Token, step: u64) -> Result<(), StoreError>;

    /// After a right code: `user` from `ip` skips the code until `until`.
    fn grant_grace(&self, user: &str, ip: &str, until: i64) -> Result<(), StoreError>;

    /// The end of the user's grace from `ip`, if one is running at `now`.
    fn grace_until(&self, user: &str, ip: &str, now: i64) -> Result<Option<i64>, StoreError>;

    /// Ends every grace of `user` (`totpctl forget`, `unlock`, `reset`…).
    fn forget_grace(&self, user: &str) -> Result<usize, StoreError>;

    /// Takes one guess for (user, rhost) at `now`, atomically against the
    /// limits: with the counts as they are, `ratelimit::lock_at` decides;
    /// when no lock is in force the guess is counted as a failure at once,
    /// so any number of concurrent answers can never check more codes than
    /// the limits allow.
    fn reserve_guess(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &Limits,
    ) -> Result<Reservation, StoreError>;

    /// Gives the guess reserved at `at` back (the answer was not a wrong
    /// guess). `clear`: a success, which also ends this source's back-off;
    /// the user's other failures of the last 24 h still count.
    fn release_guess(
        &self,
        user: &str,
        rhost: &str,
        clear: bool,
        at: i64,
    ) -> Result<(), StoreError>;

    /// Stages `grant` for `user` under `nonce` (a digest of a secret only
    /// this PAM transaction holds) until `expires`; drops every stage that
    /// expired before `now`.
    fn stage_grant(
        &self,
        nonce: &str,
        user: &str,
        grant: &Grant,
        expires: i64,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Removes the grant staged under `nonce` and returns it if it is
    /// `user`'s and has not expired at `now`. A stage is taken at most once.
    fn take_staged(&self, nonce: &str, user: &str, now: i64) -> Result<Option<Grant>, StoreError>;

    /// Every token's key as stored (sealed or not), for `totpctl rekey`.
    fn secret_rows(&self) -> Result<Vec<SecretRow>, StoreError>;

    /// Replaces stored keys by row id, all in one transaction; returns how
    /// many rows changed.
    fn replace_secrets(&self, rows: &[(i64, Vec<u8>)]) -> Result<usize, StoreError>;
}

/// A boxed store (the backend chosen at run time) is a store.
impl<T: Store + ?Sized> Store for Box<T> {
    fn schema_version(&self) -> Result<i64, StoreError> {
        (**self).schema_version()
    }
    fn totp_claims_durable(&self) -> bool {
        (**self).totp_claims_durable()
    }
    fn tokens(&self, user: &str) -> Result<Vec<Token>, StoreError> {
        (**self).tokens(user)
    }
    fn claim_step(&self, id: i64, kind: Kind, step: u64) -> Result<Claim, StoreError> {
        (**self).claim_step(id, kind, step)
    }
    fn enroll(&self, enrollments: &[Enrollment], mode: EnrollMode) -> Result<(), StoreError> {
        (**self).enroll(enrollments, mode)
    }
    fn confirm(&self, id: i64, at: i64, step: u64) -> Result<Claim, StoreError> {
        (**self).confirm(id, at, step)
    }
    fn delete_user(&self, user: &str) -> Result<usize, StoreError> {
        (**self).delete_user(user)
    }
    fn delete_device(&self, user: &str, device: &str) -> Result<bool, StoreError> {
        (**self).delete_device(user, device)
    }
    fn list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        (**self).list()
    }
    fn replace_recovery(&self, user: &str, codes: &[RecoveryHash]) -> Result<(), StoreError> {
        (**self).replace_recovery(user, codes)
    }
    fn recovery_candidates(
        &self,
        user: &str,
        lookup: &str,
    ) -> Result<Vec<StoredRecovery>, StoreError> {
        (**self).recovery_candidates(user, lookup)
    }
    fn burn_recovery(&self, id: i64, at: i64) -> Result<Claim, StoreError> {
        (**self).burn_recovery(id, at)
    }
    fn recovery_count(&self, user: &str) -> Result<RecoveryCount, StoreError> {
        (**self).recovery_count(user)
    }
    fn open_enroll_window(&self, user: &str, until: i64, by: &str) -> Result<(), StoreError> {
        (**self).open_enroll_window(user, until, by)
    }
    fn enroll_window(&self, user: &str, now: i64) -> Result<Option<i64>, StoreError> {
        (**self).enroll_window(user, now)
    }
    fn failures(&self, user: &str, rhost: &str, now: i64) -> Result<Failures, StoreError> {
        (**self).failures(user, rhost, now)
    }
    fn record_failure(&self, user: &str, rhost: &str, now: i64) -> Result<Failures, StoreError> {
        (**self).record_failure(user, rhost, now)
    }
    fn unlock(&self, user: &str) -> Result<usize, StoreError> {
        (**self).unlock(user)
    }
    fn failure_sources(&self, user: &str) -> Result<Vec<(String, u64, i64)>, StoreError> {
        (**self).failure_sources(user)
    }
    fn enroll_at_login(&self, token: &Token, step: u64) -> Result<(), StoreError> {
        (**self).enroll_at_login(token, step)
    }
    fn grant_grace(&self, user: &str, ip: &str, until: i64) -> Result<(), StoreError> {
        (**self).grant_grace(user, ip, until)
    }
    fn grace_until(&self, user: &str, ip: &str, now: i64) -> Result<Option<i64>, StoreError> {
        (**self).grace_until(user, ip, now)
    }
    fn forget_grace(&self, user: &str) -> Result<usize, StoreError> {
        (**self).forget_grace(user)
    }
    fn reserve_guess(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &Limits,
    ) -> Result<Reservation, StoreError> {
        (**self).reserve_guess(user, rhost, now, limits)
    }
    fn release_guess(
        &self,
        user: &str,
        rhost: &str,
        clear: bool,
        at: i64,
    ) -> Result<(), StoreError> {
        (**self).release_guess(user, rhost, clear, at)
    }
    fn stage_grant(
        &self,
        nonce: &str,
        user: &str,
        grant: &Grant,
        expires: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        (**self).stage_grant(nonce, user, grant, expires, now)
    }
    fn take_staged(&self, nonce: &str, user: &str, now: i64) -> Result<Option<Grant>, StoreError> {
        (**self).take_staged(nonce, user, now)
    }
    fn secret_rows(&self) -> Result<Vec<SecretRow>, StoreError> {
        (**self).secret_rows()
    }
    fn replace_secrets(&self, rows: &[(i64, Vec<u8>)]) -> Result<usize, StoreError> {
        (**self).replace_secrets(rows)
    }
}
