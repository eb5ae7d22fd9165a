//! The embedded store: one SQLite file shared by every sshd child.
//!
//! Concurrency: WAL journal (readers never block the writer) and a busy
//! timeout (writers queue instead of failing with "database is locked").
//! Reads run in autocommit mode; every multi-row write is one `BEGIN
//! IMMEDIATE` transaction (it takes the write lock first), so no connection
//! ever holds a read snapshot that it later tries to upgrade to a write.
//!
//! Durability: the module's connection (`open_for_login`) commits TOTP step
//! claims and failure counts with `synchronous=NORMAL`: the commit is in
//! the WAL in the kernel's page cache before the login is answered, so it
//! survives the process being killed, but a power loss or kernel panic in
//! the next seconds can roll it back. What that could let through is a
//! TOTP code used just before the crash, replayed just after the reboot
//! while it is still inside its window; `auth` closes that by refusing
//! every step that could have been claimed before the current boot (see
//! `boot_fence`). HOTP counters, recovery codes and enrollments never
//! expire, so those writes are synced (`synchronous=FULL`) before the
//! answer, as is every write of `totpctl` (`open`, `create`). Every
//! checkpoint syncs the WAL, so NORMAL commits are on disk at the latest
//! after `WAL_LIMIT` frames.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};
use zeroize::Zeroizing;

use super::{
    Claim, EnrollMode, Enrollment, Grant, Kind, RecoveryCount, Reservation, StagedRow, Store,
    StoreError, StoredRecovery, Token, TokenInfo,
};
use crate::otp::{Algorithm, Params};
use crate::ratelimit::{Failures, Limits, USER_WINDOW_SECS};
use crate::recovery::RecoveryHash;

/// How long a login waits for another process's write before giving up.
/// A claim holds the write lock for well under a millisecond, so this only
/// runs out when something is badly wrong (a stuck process, a dead disk).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The busy handler: SQLite's own (`busy_timeout`) sleeps 1, 2, 5, 10 …
/// 100 ms between tries, far longer than a claim holds the lock, so 64
/// logins at once spent seconds asleep behind locks that were long free.
/// This one retries after 20 µs, doubling to at most 1 ms, with jitter so
/// that the waiters do not wake together, and gives up after `BUSY_TIMEOUT`
/// of one wait.
fn wait_briefly() -> impl FnMut(i32) -> bool + Send + 'static {
    let mut started = Instant::now();
    move |count: i32| {
        if count == 0 {
            started = Instant::now();
        }
        if started.elapsed() >= BUSY_TIMEOUT {
            return false;
        }
        let base = 20u64 << count.clamp(0, 6);
        let mut noise = [0u8; 2];
        let jitter = match getrandom::fill(&mut noise) {
            Ok(()) => u64::from(u16::from_le_bytes(noise)) % base,
            Err(_) => 0,
        };
        std::thread::sleep(Duration::from_micros(base + jitter));
        true
    }
}

/// WAL frames (pages) after which a closing connection checkpoints.
const WAL_LIMIT: i32 = 64;

/// Schema migrations: `MIGRATIONS[i]` takes the store from version `i` to
/// `i + 1`. Versions are kept in `PRAGMA user_version`; never edit a
/// released entry, append a new one.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: one TOTP token per user.
    "CREATE TABLE tokens (
        user      TEXT    NOT NULL PRIMARY KEY,
        secret    BLOB    NOT NULL,
        algorithm TEXT    NOT NULL CHECK (algorithm IN ('sha1', 'sha256', 'sha512')),
        digits    INTEGER NOT NULL CHECK (digits BETWEEN 6 AND 8),
        period    INTEGER NOT NULL CHECK (period BETWEEN 1 AND 3600),
        created   INTEGER NOT NULL,
        last_step INTEGER
    ) STRICT;",
    // 1 -> 2: several devices per user, HOTP, pending tokens, recovery
    // codes, enroll windows. Existing tokens become the confirmed device
    // "default".
    "CREATE TABLE tokens_v2 (
        id        INTEGER PRIMARY KEY,
        user      TEXT    NOT NULL,
        device    TEXT    NOT NULL,
        kind      TEXT    NOT NULL CHECK (kind IN ('totp', 'hotp')),
        secret    BLOB    NOT NULL,
        algorithm TEXT    NOT NULL CHECK (algorithm IN ('sha1', 'sha256', 'sha512')),
        digits    INTEGER NOT NULL CHECK (digits BETWEEN 6 AND 8),
        period    INTEGER NOT NULL CHECK (period BETWEEN 1 AND 3600),
        created   INTEGER NOT NULL,
        confirmed INTEGER,
        last_step INTEGER,
        UNIQUE (user, device)
    ) STRICT;
    INSERT INTO tokens_v2
        (user, device, kind, secret, algorithm, digits, period, created, confirmed, last_step)
        SELECT user, 'default', 'totp', secret, algorithm, digits, period, created, created, last_step
        FROM tokens;
    DROP TABLE tokens;
    ALTER TABLE tokens_v2 RENAME TO tokens;
    CREATE TABLE recovery_codes (
        id      INTEGER PRIMARY KEY,
        user    TEXT    NOT NULL,
        lookup  TEXT    NOT NULL,
        hash    TEXT    NOT NULL,
        created INTEGER NOT NULL,
        used    INTEGER
    ) STRICT;
    CREATE INDEX recovery_codes_user ON recovery_codes (user, lookup);
    CREATE TABLE enroll_windows (
        user      TEXT    NOT NULL PRIMARY KEY,
        until     INTEGER NOT NULL,
        opened_by TEXT    NOT NULL
    ) STRICT;",
    // 2 -> 3: failed codes per (user, rhost), for back-off and the
    // per-user ceiling.
    "CREATE TABLE failures (
        user  TEXT    NOT NULL,
        rhost TEXT    NOT NULL,
        count INTEGER NOT NULL,
        last  INTEGER NOT NULL,
        PRIMARY KEY (user, rhost)
    ) STRICT;",
    // 3 -> 4: grace periods per (user, IP address).
    "CREATE TABLE grace (
        user  TEXT    NOT NULL,
        ip    TEXT    NOT NULL,
        until INTEGER NOT NULL,
        PRIMARY KEY (user, ip)
    ) STRICT;",
    // 4 -> 5: what a login would grant, staged until the whole auth stack
    // has succeeded (an enrollment at login, a grace entry). `nonce` is the
    // SHA-256 of a secret only that PAM transaction holds.
    "CREATE TABLE staged (
        nonce     TEXT    NOT NULL PRIMARY KEY,
        user      TEXT    NOT NULL,
        expires   INTEGER NOT NULL,
        what      TEXT    NOT NULL CHECK (what IN ('enroll', 'grace')),
        device    TEXT,
        kind      TEXT,
        secret    BLOB,
        algorithm TEXT,
        digits    INTEGER,
        period    INTEGER,
        created   INTEGER,
        step      INTEGER,
        ip        TEXT,
        until     INTEGER
    ) STRICT;
    CREATE INDEX staged_expires ON staged (expires);",
    // 5 -> 6: each failed code of a user with its time, for the per-user
    // ceiling: a success from one address ends that address's back-off
    // (`failures`) but no longer wipes its failures from the user's 24 h
    // count. Existing counts are carried over at their last time.
    "CREATE TABLE guesses (
        id   INTEGER PRIMARY KEY,
        user TEXT    NOT NULL,
        at   INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX guesses_user ON guesses (user, at);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
    INSERT INTO guesses (user, at)
        SELECT f.user, f.last FROM failures f JOIN n ON n.i <= f.count;",
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub struct SqliteStore {
    conn: Connection,
    /// Commits are `NORMAL` unless a write asks for `durably` (the login
    /// path); otherwise every commit is `FULL`.
    login: bool,
    /// Seals token keys on the way in and opens them on the way out.
    sealer: Option<std::sync::Arc<crate::seal::Sealer>>,
}

/// How the connection commits by default.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sync {
    Full,
    Normal,
}

impl Sync {
    fn pragma(self) -> &'static str {
        match self {
            Sync::Full => "FULL",
            Sync::Normal => "NORMAL",
        }
    }
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Names the failures an admin can act on; everything else stays a query error.
fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    let reason = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.display().to_string(),
            reason,
        },
        Some(ErrorCode::CannotOpen)
        | Some(ErrorCode::DatabaseBusy)
        | Some(ErrorCode::PermissionDenied)
        | Some(ErrorCode::ReadOnly)
        | Some(ErrorCode::DiskFull)
        | Some(ErrorCode::SystemIoFailure) => StoreError::Io {
            path: path.display().to_string(),
            reason,
        },
        _ => StoreError::Sqlite(e),
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.bound_wal();
    }
}

impl SqliteStore {
    /// Keeps the WAL short. Each login opens the only connection, so SQLite
    /// rebuilds its WAL index by reading every frame of the WAL, and a
    /// passive checkpoint never lets the WAL start over (the rebuilt index
    /// forgets what was checkpointed). Once the WAL holds `WAL_LIMIT`
    /// frames, the closing connection copies them into the database, syncs
    /// it, and truncates the WAL, without waiting for anyone: if another
    /// login holds the store, the next one will do it.
    fn bound_wal(&self) {
        let Ok((frames, _)) = self
            .conn
            .wal_checkpoint_v2(None::<&str>, CheckpointMode::NOOP)
        else {
            return;
        };
        if frames < WAL_LIMIT {
            return;
        }
        if self.conn.busy_timeout(Duration::ZERO).is_ok() {
            let _ = self
                .conn
                .wal_checkpoint_v2(None::<&str>, CheckpointMode::TRUNCATE);
        }
    }
}

impl SqliteStore {
    /// Opens an existing, initialised store for administration: every
    /// commit is synced. Never creates anything: a missing store is an
    /// error, not an empty store.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, Sync::Full)
    }

    /// Opens an existing, initialised store for one login: TOTP claims and
    /// failure counts are committed without waiting for the disk (see the
    /// module documentation for why that gives nothing away).
    pub fn open_for_login(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, Sync::Normal)
    }

    fn open_with(path: &Path, sync: Sync) -> Result<SqliteStore, StoreError> {
        let checked = crate::trust::open(path, crate::trust::Holds::Store).map_err(|e| {
            if e.not_found {
                StoreError::Missing(path.display().to_string())
            } else {
                StoreError::Untrusted(e)
            }
        })?;
        let mut store = Self::connect(path, &checked, sync)?;
        match store.schema_version().map_err(|e| classify(path, e))? {
            0 => Err(StoreError::NotInitialised(path.display().to_string())),
            _ => {
                store.migrate(path)?;
                Ok(store)
            }
        }
    }

    /// Opens the store for administration, creating the directory (0700)
    /// and the file (0600) if needed, and bringing the schema up to date.
    pub fn create(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::trust::check_dirs_before_mkdir(dir).map_err(StoreError::Untrusted)?;
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_error(dir, e))?;
        }
        // Created only in a checked directory, never through a symlink.
        crate::trust::create_store_file(path).map_err(StoreError::Untrusted)?;
        let checked =
            crate::trust::open(path, crate::trust::Holds::Store).map_err(StoreError::Untrusted)?;
        let mut store = Self::connect(path, &checked, Sync::Full)?;
        store.migrate(path)?;
        Ok(store)
    }

    /// A private in-memory store with the current schema (for tests).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let mut store = SqliteStore {
            conn: Connection::open_in_memory()?,
            login: false,
            sealer: None,
        };
        store.migrate(Path::new(":memory:"))?;
        Ok(store)
    }

    /// Opens the store that `trust::open` checked as `checked`.
    ///
    /// SQLite opens the store by path (it finds the -wal and -shm files
    /// beside it by that name), so it cannot be handed the checked
    /// descriptor. What makes the path safe to open: every directory on it
    /// was checked to be root's alone, so nobody else can rename or replace
    /// any name on it; SQLITE_OPEN_NOFOLLOW refuses a symlink as the file;
    /// and `checked` is held open until SQLite has opened the path, after
    /// which (before SQLite reads a byte) `trust::same_file` proves that the
    /// path still names the inode that was checked (held open, it cannot be
    /// reused). A mismatch is refused.
    fn connect(
        path: &Path,
        checked: &std::fs::File,
        sync: Sync,
    ) -> Result<SqliteStore, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, e))?;
        crate::trust::same_file(checked, path).map_err(StoreError::Untrusted)?;
        conn.busy_handler(Some(wait_briefly()))
            .map_err(|e| classify(path, e))?;
        let setup = || -> rusqlite::Result<()> {
            // The store is read by root only; never run code from its schema.
            conn.pragma_update(None, "trusted_schema", "OFF")?;
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
            }
            conn.pragma_update(None, "synchronous", sync.pragma())?;
            // Checkpoints are ours (`bound_wal`), at close, never in the
            // middle of a login's write.
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            // Every login opens and closes the only connection: without this
            // each close would checkpoint the WAL into the database and
            // delete it (three more fsyncs per login).
            conn.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )?;
            Ok(())
        };
        setup().map_err(|e| classify(path, e))?;
        Ok(SqliteStore {
            conn,
            login: sync == Sync::Normal,
            sealer: None,
        })
    }

    /// Runs `work` in one `BEGIN IMMEDIATE` transaction: all or nothing.
    fn write<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match work(&self.conn) {
            Ok(value) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(value)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Token keys are sealed with this key (or stored plain without one).
    pub fn with_sealer(mut self, sealer: Option<std::sync::Arc<crate::seal::Sealer>>) -> Self {
        self.sealer = sealer;
        self
    }

    /// Runs one write that must be on disk before the login is answered
    /// (something that never expires: an HOTP counter, a recovery code, an
    /// enrollment). Only the login connection needs to switch.
    fn durably<T>(&self, work: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        if !self.login {
            return work();
        }
        self.conn
            .pragma_update(None, "synchronous", Sync::Full.pragma())?;
        let result = work();
        let restored = self
            .conn
            .pragma_update(None, "synchronous", Sync::Normal.pragma());
        let value = result?;
        restored?;
        Ok(value)
    }

    /// Everything in the store (`totpctl migrate`), read in one transaction.
    pub fn dump(&self) -> Result<super::Dump, StoreError> {
        self.conn.execute_batch("BEGIN")?;
        let result = self.dump_rows();
        let _ = self.conn.execute_batch("COMMIT");
        result
    }

    fn dump_rows(&self) -> Result<super::Dump, StoreError> {
        let mut dump = super::Dump::default();
        let users: Vec<String> = self
            .conn
            .prepare("SELECT DISTINCT user FROM tokens ORDER BY user")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for user in users {
            dump.tokens.extend(self.tokens(&user)?);
        }
        dump.recovery = self
            .conn
            .prepare("SELECT user, lookup, hash, created, used FROM recovery_codes ORDER BY id")?
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        dump.windows = self
            .conn
            .prepare("SELECT user, until, opened_by FROM enroll_windows ORDER BY user")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        dump.failures = self
            .conn
            .prepare("SELECT user, rhost, count, last FROM failures ORDER BY user, rhost")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        Ok(dump)
    }

    /// The connection's current `synchronous` setting, by name.
    pub fn synchronous(&self) -> rusqlite::Result<&'static str> {
        let level: i64 = self
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))?;
        Ok(match level {
            0 => "OFF",
            1 => "NORMAL",
            2 => "FULL",
            _ => "EXTRA",
        })
    }

    /// The schema version recorded in the file (0 for a fresh file).
    pub fn schema_version(&self) -> rusqlite::Result<i64> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
    }

    /// Applies the missing migrations in one immediate transaction, so two
    /// processes upgrading at once cannot both apply the same step.
    fn migrate(&mut self, path: &Path) -> Result<(), StoreError> {
        let found = self.schema_version().map_err(|e| classify(path, e))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify(path, e))?;
        let current: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| classify(path, e))?;
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
            tx.execute_batch(sql).map_err(|e| classify(path, e))?;
            tx.pragma_update(None, "user_version", from as i64 + 1)
                .map_err(|e| classify(path, e))?;
        }
        tx.commit().map_err(|e| classify(path, e))?;
        Ok(())
    }
}

fn step_to_sql(step: u64) -> Result<i64, StoreError> {
    i64::try_from(step).map_err(|_| StoreError::StepOutOfRange(step))
}

fn invalid(user: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidRow {
        user: user.to_string(),
        reason: reason.into(),
    }
}

/// The columns every token query reads, in this order.
const COLUMNS: &str =
    "id, user, device, kind, algorithm, digits, period, created, confirmed, last_step";

struct RawRow {
    id: i64,
    user: String,
    device: String,
    kind: String,
    algorithm: String,
    digits: i64,
    period: i64,
    created: i64,
    confirmed: Option<i64>,
    last_step: Option<i64>,
}

impl RawRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            id: row.get(0)?,
            user: row.get(1)?,
            device: row.get(2)?,
            kind: row.get(3)?,
            algorithm: row.get(4)?,
            digits: row.get(5)?,
            period: row.get(6)?,
            created: row.get(7)?,
            confirmed: row.get(8)?,
            last_step: row.get(9)?,
        })
    }

    fn info(self) -> Result<TokenInfo, StoreError> {
        let user = self.user;
        let kind: Kind = self.kind.parse().map_err(|e| invalid(&user, e))?;
        let algorithm: Algorithm = self.algorithm.parse().map_err(|e| invalid(&user, e))?;
        let params = Params {
            algorithm,
            digits: u32::try_from(self.digits).map_err(|_| invalid(&user, "digits"))?,
            period: u64::try_from(self.period).map_err(|_| invalid(&user, "period"))?,
        };
        params.validate().map_err(|e| invalid(&user, e))?;
        let last_step = match self.last_step {
            Some(s) => Some(u64::try_from(s).map_err(|_| invalid(&user, "last_step"))?),
            None => None,
        };
        Ok(TokenInfo {
            id: self.id,
            user,
            device: self.device,
            kind,
            params,
            created: self.created,
            confirmed: self.confirmed,
            last_step,
        })
    }
}

fn insert_token(
    conn: &Connection,
    sealer: Option<&crate::seal::Sealer>,
    token: &Token,
) -> Result<(), StoreError> {
    let last_step = token.last_step.map(step_to_sql).transpose()?;
    let secret = super::checked_secret(sealer, token)?;
    let result = conn.execute(
        "INSERT INTO tokens
             (user, device, kind, secret, algorithm, digits, period, created, confirmed, last_step)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            token.user,
            token.device,
            token.kind.as_str(),
            secret.as_slice(),
            token.params.algorithm.as_str(),
            token.params.digits,
            step_to_sql(token.params.period)?,
            token.created,
            token.confirmed,
            last_step,
        ],
    );
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
            Err(StoreError::AlreadyEnrolled {
                user: token.user.clone(),
                device: token.device.clone(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

fn insert_recovery(
    conn: &Connection,
    user: &str,
    codes: &[RecoveryHash],
) -> Result<(), StoreError> {
    conn.execute("DELETE FROM recovery_codes WHERE user = ?1", [user])?;
    let mut stmt = conn.prepare(
        "INSERT INTO recovery_codes (user, lookup, hash, created) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let now = super::unix_now();
    for code in codes {
        stmt.execute(params![user, code.lookup, code.phc, now])?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(SqliteStore::schema_version(self)?)
    }

    fn totp_claims_durable(&self) -> bool {
        !self.login
    }

    fn tokens(&self, user: &str) -> Result<Vec<Token>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS}, secret FROM tokens WHERE user = ?1 ORDER BY device"
        ))?;
        let rows = stmt.query_map([user], |row| {
            let secret: Vec<u8> = row.get(10)?;
            Ok((RawRow::read(row)?, Zeroizing::new(secret)))
        })?;
        let mut tokens = Vec::new();
        for row in rows {
            let (raw, secret) = row?;
            let info = raw.info()?;
            let secret = super::loaded_secret(self.sealer.as_deref(), user, &info.device, secret)?;
            tokens.push(Token::from_info(info, secret));
        }
        Ok(tokens)
    }

    fn claim_step(&self, id: i64, kind: Kind, step: u64) -> Result<Claim, StoreError> {
        let step = step_to_sql(step)?;
        // The whole replay protection is this one statement: it changes the
        // row only if the step is newer than anything used before, and
        // SQLite serialises writers, so exactly one racer sees 1 row changed.
        // Pending tokens cannot claim (and so cannot log in).
        let update = || -> Result<usize, StoreError> {
            Ok(self.conn.execute(
                "UPDATE tokens SET last_step = ?2
                 WHERE id = ?1 AND confirmed IS NOT NULL
                   AND (last_step IS NULL OR last_step < ?2)",
                params![id, step],
            )?)
        };
        let changed = match kind {
            Kind::Totp => update()?,
            Kind::Hotp => self.durably(update)?,
        };
        Ok(if changed == 1 {
            Claim::Claimed
        } else {
            Claim::AlreadyUsed
        })
    }

    fn enroll(&self, enrollments: &[Enrollment], mode: EnrollMode) -> Result<(), StoreError> {
        self.write(|conn| {
            for e in enrollments {
                let (user, device) = (&e.token.user, &e.token.device);
                match mode {
                    EnrollMode::Add => {}
                    EnrollMode::ReplaceDevice => {
                        conn.execute(
                            "DELETE FROM tokens WHERE user = ?1 AND device = ?2",
                            [user, device],
                        )?;
                    }
                    EnrollMode::ReplaceUser => {
                        delete_user_rows(conn, user)?;
                    }
                }
                insert_token(conn, self.sealer.as_deref(), &e.token)?;
                if let Some(codes) = &e.recovery {
                    insert_recovery(conn, user, codes)?;
                }
            }
            Ok(())
        })
    }

    fn confirm(&self, id: i64, at: i64, step: u64) -> Result<Claim, StoreError> {
        let step = step_to_sql(step)?;
        let changed = self.conn.execute(
            "UPDATE tokens SET confirmed = ?2, last_step = ?3
             WHERE id = ?1 AND confirmed IS NULL
               AND (last_step IS NULL OR last_step < ?3)",
            params![id, at, step],
        )?;
        Ok(if changed == 1 {
            Claim::Claimed
        } else {
            Claim::AlreadyUsed
        })
    }

    fn delete_user(&self, user: &str) -> Result<usize, StoreError> {
        self.write(|conn| delete_user_rows(conn, user))
    }

    fn delete_device(&self, user: &str, device: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM tokens WHERE user = ?1 AND device = ?2",
            [user, device],
        )? == 1)
    }

    fn list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM tokens ORDER BY user, device"
        ))?;
        let rows = stmt.query_map([], RawRow::read)?;
        rows.map(|row| row.map_err(StoreError::from).and_then(RawRow::info))
            .collect()
    }

    fn replace_recovery(&self, user: &str, codes: &[RecoveryHash]) -> Result<(), StoreError> {
        self.write(|conn| insert_recovery(conn, user, codes))
    }

    fn recovery_candidates(
        &self,
        user: &str,
        lookup: &str,
    ) -> Result<Vec<StoredRecovery>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, hash FROM recovery_codes
             WHERE user = ?1 AND lookup = ?2 AND used IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([user, lookup], |row| {
            Ok(StoredRecovery {
                id: row.get(0)?,
                phc: row.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn burn_recovery(&self, id: i64, at: i64) -> Result<Claim, StoreError> {
        let changed = self.durably(|| {
            Ok(self.conn.execute(
                "UPDATE recovery_codes SET used = ?2 WHERE id = ?1 AND used IS NULL",
                params![id, at],
            )?)
        })?;
        Ok(if changed == 1 {
            Claim::Claimed
        } else {
            Claim::AlreadyUsed
        })
    }

    fn recovery_count(&self, user: &str) -> Result<RecoveryCount, StoreError> {
        let (unused, used): (i64, i64) = self.conn.query_row(
            "SELECT COALESCE(SUM(used IS NULL), 0), COALESCE(SUM(used IS NOT NULL), 0)
             FROM recovery_codes WHERE user = ?1",
            [user],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(RecoveryCount {
            unused: usize::try_from(unused).unwrap_or(0),
            used: usize::try_from(used).unwrap_or(0),
        })
    }

    fn open_enroll_window(&self, user: &str, until: i64, by: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO enroll_windows (user, until, opened_by) VALUES (?1, ?2, ?3)",
            params![user, until, by],
        )?;
        Ok(())
    }

    fn enroll_window(&self, user: &str, now: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT until FROM enroll_windows WHERE user = ?1 AND until > ?2",
                params![user, now],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn failures(&self, user: &str, rhost: &str, now: i64) -> Result<Failures, StoreError> {
        let (source_count, source_last): (i64, i64) = self
            .conn
            .query_row(
                "SELECT count, last FROM failures WHERE user = ?1 AND rhost = ?2",
                [user, rhost],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((0, 0));
        let (user_recent, user_last): (i64, i64) =
            self.conn
                .query_row(USER_FAILURES, params![user, USER_WINDOW_SECS], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
        Ok(Failures::new(
            source_count,
            source_last,
            user_recent,
            user_last,
            now,
        ))
    }

    fn record_failure(&self, user: &str, rhost: &str, now: i64) -> Result<Failures, StoreError> {
        self.write(|conn| count_failure(conn, user, rhost, now))?;
        self.failures(user, rhost, now)
    }

    fn unlock(&self, user: &str) -> Result<usize, StoreError> {
        self.write(|conn| {
            conn.execute("DELETE FROM guesses WHERE user = ?1", [user])?;
            Ok(conn.execute("DELETE FROM failures WHERE user = ?1", [user])?)
        })
    }

    fn failure_sources(&self, user: &str) -> Result<Vec<(String, u64, i64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT rhost, count, last FROM failures WHERE user = ?1 ORDER BY last DESC",
        )?;
        let rows = stmt.query_map([user], |r| {
            Ok((
                r.get::<_, String>(0)?,
                u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                r.get::<_, i64>(2)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn enroll_at_login(&self, token: &Token, step: u64) -> Result<(), StoreError> {
        let step = step_to_sql(step)?;
        self.durably(|| self.enroll_at_login_tx(token, step))
    }

    fn grant_grace(&self, user: &str, ip: &str, until: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO grace (user, ip, until) VALUES (?1, ?2, ?3)
             ON CONFLICT (user, ip) DO UPDATE SET until = ?3",
            params![user, ip, until],
        )?;
        Ok(())
    }

    fn grace_until(&self, user: &str, ip: &str, now: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT until FROM grace WHERE user = ?1 AND ip = ?2 AND until > ?3",
                params![user, ip, now],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn forget_grace(&self, user: &str) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM grace WHERE user = ?1", [user])?)
    }

    fn reserve_guess(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &Limits,
    ) -> Result<Reservation, StoreError> {
        // BEGIN IMMEDIATE takes the write lock before the counts are read:
        // every other reservation waits, so none decides on stale counts.
        self.write(|conn| {
            let before = self.failures(user, rhost, now)?;
            if let Some(lock) = crate::ratelimit::lock_at(&before, limits, now) {
                return Ok(Reservation::Locked(lock));
            }
            count_failure(conn, user, rhost, now)?;
            Ok(Reservation::Granted(before.with_one_more(now)))
        })
    }

    fn release_guess(
        &self,
        user: &str,
        rhost: &str,
        clear: bool,
        at: i64,
    ) -> Result<(), StoreError> {
        self.write(|conn| {
            conn.execute(
                "DELETE FROM guesses WHERE id =
                     (SELECT id FROM guesses WHERE user = ?1 AND at = ?2 LIMIT 1)",
                params![user, at],
            )?;
            if clear {
                conn.execute(
                    "DELETE FROM failures WHERE user = ?1 AND rhost = ?2",
                    [user, rhost],
                )?;
                return Ok(());
            }
            conn.execute(
                "UPDATE failures SET count = count - 1 WHERE user = ?1 AND rhost = ?2",
                [user, rhost],
            )?;
            conn.execute(
                "DELETE FROM failures WHERE user = ?1 AND rhost = ?2 AND count <= 0",
                [user, rhost],
            )?;
            Ok(())
        })
    }

    fn stage_grant(
        &self,
        nonce: &str,
        user: &str,
        grant: &Grant,
        expires: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write(|conn| {
            conn.execute("DELETE FROM staged WHERE expires <= ?1", [now])?;
            match grant {
                Grant::Enroll { token, step } => {
                    let secret = super::checked_secret(self.sealer.as_deref(), token)?;
                    conn.execute(
                        "INSERT INTO staged (nonce, user, expires, what, device, kind, secret,
                             algorithm, digits, period, created, step)
                         VALUES (?1, ?2, ?3, 'enroll', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                        params![
                            nonce,
                            user,
                            expires,
                            token.device,
                            token.kind.as_str(),
                            secret.as_slice(),
                            token.params.algorithm.as_str(),
                            token.params.digits,
                            step_to_sql(token.params.period)?,
                            token.created,
                            step_to_sql(*step)?,
                        ],
                    )?;
                }
                Grant::Grace { ip, until } => {
                    conn.execute(
                        "INSERT INTO staged (nonce, user, expires, what, ip, until)
                         VALUES (?1, ?2, ?3, 'grace', ?4, ?5)",
                        params![nonce, user, expires, ip, until],
                    )?;
                }
            }
            Ok(())
        })
    }

    fn take_staged(&self, nonce: &str, user: &str, now: i64) -> Result<Option<Grant>, StoreError> {
        let row = self.write(|conn| {
            let row = conn
                .query_row(
                    "SELECT 0, user, device, kind, algorithm, digits, period, created,
                            created, step, secret, what, ip, until, expires
                     FROM staged WHERE nonce = ?1",
                    [nonce],
                    |r| {
                        let token = match r.get::<_, Option<String>>(2)? {
                            Some(_) => {
                                Some((RawRow::read(r)?, Zeroizing::new(r.get::<_, Vec<u8>>(10)?)))
                            }
                            None => None,
                        };
                        Ok((
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(14)?,
                            r.get::<_, String>(11)?,
                            r.get::<_, Option<String>>(12)?,
                            r.get::<_, Option<i64>>(13)?,
                            token,
                        ))
                    },
                )
                .optional()?;
            conn.execute("DELETE FROM staged WHERE nonce = ?1", [nonce])?;
            Ok(row)
        })?;
        let Some((owner, expires, what, ip, until, token)) = row else {
            return Ok(None);
        };
        let token = match token {
            Some((raw, blob)) => Some((raw.info()?, blob)),
            None => None,
        };
        StagedRow {
            owner,
            expires,
            what,
            ip,
            until,
            token,
        }
        .grant(self.sealer.as_deref(), user, now)
    }

    fn secret_rows(&self) -> Result<Vec<super::SecretRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, user, device, secret FROM tokens ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, Zeroizing::new(r.get(3)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn replace_secrets(&self, rows: &[(i64, Vec<u8>)]) -> Result<usize, StoreError> {
        self.write(|conn| {
            let mut changed = 0;
            for (id, blob) in rows {
                changed += conn.execute(
                    "UPDATE tokens SET secret = ?2 WHERE id = ?1",
                    params![id, blob],
                )?;
            }
            Ok(changed)
        })
    }
}

impl SqliteStore {
    fn enroll_at_login_tx(&self, token: &Token, step: i64) -> Result<(), StoreError> {
        self.write(|conn| {
            let existing: i64 = conn.query_row(
                "SELECT COUNT(*) FROM tokens WHERE user = ?1",
                [&token.user],
                |r| r.get(0),
            )?;
            if existing > 0 {
                return Err(StoreError::AlreadyEnrolled {
                    user: token.user.clone(),
                    device: token.device.clone(),
                });
            }
            insert_token(conn, self.sealer.as_deref(), token)?;
            conn.execute(
                "UPDATE tokens SET last_step = ?3 WHERE user = ?1 AND device = ?2",
                params![token.user, token.device, step],
            )?;
            conn.execute("DELETE FROM enroll_windows WHERE user = ?1", [&token.user])?;
            Ok(())
        })
    }
}

/// The user's failed codes for the ceiling: how many in the 24 h up to the
/// latest, and the latest (see `Failures::new`).
const USER_FAILURES: &str = "SELECT COUNT(*), COALESCE(MAX(at), 0) FROM guesses
     WHERE user = ?1
       AND at > (SELECT COALESCE(MAX(at), 0) FROM guesses WHERE user = ?1) - ?2";

/// One failed code from (user, rhost) at `now`: the source's back-off
/// count and the user's ceiling both count it. Failures too old to matter
/// to the ceiling (48 h) are dropped on the way.
fn count_failure(conn: &Connection, user: &str, rhost: &str, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO failures (user, rhost, count, last) VALUES (?1, ?2, 1, ?3)
         ON CONFLICT (user, rhost) DO UPDATE SET count = count + 1, last = ?3",
        params![user, rhost, now],
    )?;
    conn.execute(
        "DELETE FROM guesses WHERE user = ?1 AND at <= ?2",
        params![user, now - 2 * USER_WINDOW_SECS],
    )?;
    conn.execute(
        "INSERT INTO guesses (user, at) VALUES (?1, ?2)",
        params![user, now],
    )?;
    Ok(())
}

/// Everything the store holds about a user; returns the number of tokens.
fn delete_user_rows(conn: &Connection, user: &str) -> Result<usize, StoreError> {
    let tokens = conn.execute("DELETE FROM tokens WHERE user = ?1", [user])?;
    conn.execute("DELETE FROM recovery_codes WHERE user = ?1", [user])?;
    conn.execute("DELETE FROM enroll_windows WHERE user = ?1", [user])?;
    conn.execute("DELETE FROM failures WHERE user = ?1", [user])?;
    conn.execute("DELETE FROM guesses WHERE user = ?1", [user])?;
    conn.execute("DELETE FROM grace WHERE user = ?1", [user])?;
    conn.execute("DELETE FROM staged WHERE user = ?1", [user])?;
    Ok(tokens)
}

#[cfg(test)]
mod tests;
