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

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior};
use zeroize::Zeroizing;

use super::StoreError;
use super::driver::{Driver, Hold, Param, Row, Value};
use super::shared::SqlStore;

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
    // 6 -> 7: the recovery codes shown with an enrollment at login, staged
    // with it (`lookup hash` lines).
    "ALTER TABLE staged ADD COLUMN recovery TEXT;",
    // 7 -> 8: what an administrator sets on a token: disabled (a time),
    // expires (a time), replaces (the device name a pending replacement
    // takes when confirmed, retiring the user's other tokens).
    "ALTER TABLE tokens ADD COLUMN disabled INTEGER;
    ALTER TABLE tokens ADD COLUMN expires INTEGER;
    ALTER TABLE tokens ADD COLUMN replaces TEXT;",
    // 8 -> 9: grace periods per (user, SSH key fingerprint) (`grace_key=`),
    // automation grants (`totpctl allow-automation`), and the key grace a
    // login stages with its address grace.
    "CREATE TABLE key_grace (
        user        TEXT    NOT NULL,
        fingerprint TEXT    NOT NULL,
        until       INTEGER NOT NULL,
        PRIMARY KEY (user, fingerprint)
    ) STRICT;
    CREATE TABLE automation (
        id          INTEGER PRIMARY KEY,
        user        TEXT    NOT NULL,
        fingerprint TEXT    NOT NULL,
        networks    TEXT    NOT NULL,
        until       INTEGER NOT NULL,
        reason      TEXT    NOT NULL,
        created     INTEGER NOT NULL,
        created_by  TEXT    NOT NULL,
        revoked     INTEGER
    ) STRICT;
    CREATE INDEX automation_key ON automation (user, fingerprint);
    ALTER TABLE staged ADD COLUMN fingerprint TEXT;
    ALTER TABLE staged ADD COLUMN key_until INTEGER;",
    // 9 -> 10: the used step of every token row deleted (a device deleted
    // or replaced, a user deleted, a pending token pruned), so that its
    // key enrolled again counts its codes from there (found by an attack:
    // a deleted key forgot its used step). Written by `RETIRE_TRIGGER`.
    "CREATE TABLE retired_keys (
        id         INTEGER PRIMARY KEY,
        user       TEXT    NOT NULL,
        device     TEXT    NOT NULL,
        kind       TEXT    NOT NULL,
        secret     BLOB    NOT NULL,
        algorithm  TEXT    NOT NULL,
        digits     INTEGER NOT NULL,
        period     INTEGER NOT NULL,
        created    INTEGER NOT NULL,
        last_step  INTEGER NOT NULL,
        keep_until INTEGER
    ) STRICT;",
    // 10 -> 11: a deleted key is kept as its mark (`otp::key_mark`), not
    // as the key: `secret` is emptied when `key_mark` is written (in the
    // deleting transaction, `SqlStore::prune_retired_of`; older records by
    // `totpctl prune`).
    "ALTER TABLE retired_keys ADD COLUMN key_mark BLOB;",
];

/// Keeps every deleted token row that has used a step or counter in
/// `retired_keys`, inside the deleting transaction, whichever statement
/// deleted it. A TOTP record is kept until its step is past any window
/// (`config::MAX_WINDOW` = 10 steps, +1 for the step itself) and an hour
/// of clock difference between nodes; an HOTP record (its codes never
/// expire) is kept. Records past their time go with the user's next
/// change of devices and with `totpctl prune` (`sql::PRUNE_RETIRED_KEYS*`),
/// never here: on PostgreSQL a prune in the trigger locked other users'
/// records, so one user's delete waited for another's transaction (found
/// by an attack).
///
/// A TEMP trigger that every administration connection creates for itself
/// (`SqliteStore::open`, `create`, `open_in_memory`), not one in the
/// schema: every login's first statement parses the whole schema, and a
/// trigger there cost each login about 100 k instructions (+7 %,
/// scripts/count-login.sh), for a statement logins never run (a
/// `LoginStore` deletes no token).
const RETIRE_TRIGGER: &str = "CREATE TEMP TRIGGER IF NOT EXISTS tokens_retire
    AFTER DELETE ON main.tokens
    BEGIN
        INSERT INTO retired_keys
            (user, device, kind, secret, algorithm, digits, period, created, last_step, keep_until)
        SELECT old.user, old.device, old.kind, old.secret, old.algorithm, old.digits, old.period,
            old.created, old.last_step,
            CASE WHEN old.kind = 'totp' THEN (old.last_step + 11) * old.period + 3600 END
        WHERE old.last_step IS NOT NULL;
    END;";

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
const _: () = assert!(SCHEMA_VERSION == super::SCHEMA_VERSION);

/// The SQLite store: the shared statements on one connection.
pub type SqliteStore = SqlStore<SqliteDriver>;

/// One connection to the store file.
pub struct SqliteDriver {
    conn: Connection,
    /// Commits are `NORMAL` unless a write asks for `durably` (the login
    /// path); otherwise every commit is `FULL`.
    login: bool,
    /// The file, for messages.
    name: String,
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

impl Drop for SqliteDriver {
    fn drop(&mut self) {
        self.bound_wal();
    }
}

impl SqliteDriver {
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
        // An administrator's connection (rare) always tries: what it
        // deleted (a key replaced by its mark) must not stay readable in
        // the WAL's older frames.
        if frames < WAL_LIMIT && self.login {
            return;
        }
        if self.conn.busy_timeout(Duration::ZERO).is_ok() {
            let _ = self
                .conn
                .wal_checkpoint_v2(None::<&str>, CheckpointMode::TRUNCATE);
        }
    }
}

impl SqlStore<SqliteDriver> {
    /// Opens an existing, initialised store for administration: every
    /// commit is synced. Never creates anything: a missing store is an
    /// error, not an empty store.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, Sync::Full)?.administering(path)
    }

    /// This connection keeps deleted tokens' used steps (`RETIRE_TRIGGER`)
    /// and zeroes what it deletes (`secure_delete`): a deleted or replaced
    /// key, kept only as its mark, must not stay in the file's free space
    /// (found by an attack). The build sets it for every connection
    /// (`SQLITE_SECURE_DELETE`, .cargo/config.toml), logins' included;
    /// this pragma keeps it for totpctl in a build without that file.
    fn administering(self, path: &Path) -> Result<SqliteStore, StoreError> {
        self.driver
            .conn
            .execute_batch(&format!("PRAGMA secure_delete = ON; {RETIRE_TRIGGER}"))
            .map_err(|e| classify(path, e))?;
        Ok(self)
    }

    /// Opens an existing, initialised store for one login: TOTP claims and
    /// failure counts are committed without waiting for the disk (see the
    /// module documentation for why that gives nothing away).
    pub fn open_for_login(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(path, Sync::Normal)
    }

    fn open_with(path: &Path, sync: Sync) -> Result<SqliteStore, StoreError> {
        let checked = crate::trust::CheckedStore::open(path).map_err(|e| {
            if e.not_found {
                StoreError::Missing(path.display().to_string())
            } else {
                StoreError::Untrusted(e)
            }
        })?;
        let mut driver = SqliteDriver::connect(path, &checked, sync)?;
        match driver.user_version().map_err(|e| classify(path, e))? {
            0 => Err(StoreError::NotInitialised(path.display().to_string())),
            // The common case, read once: nothing to migrate.
            SCHEMA_VERSION => Ok(SqlStore::new(driver)),
            _ => {
                driver.migrate(path)?;
                Ok(SqlStore::new(driver))
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
        let checked = crate::trust::CheckedStore::open(path).map_err(StoreError::Untrusted)?;
        let mut driver = SqliteDriver::connect(path, &checked, Sync::Full)?;
        driver.migrate(path)?;
        SqlStore::new(driver).administering(path)
    }

    /// A private in-memory store with the current schema (for tests).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let mut driver = SqliteDriver {
            conn: Connection::open_in_memory()?,
            login: false,
            name: ":memory:".to_string(),
        };
        driver.migrate(Path::new(":memory:"))?;
        SqlStore::new(driver).administering(Path::new(":memory:"))
    }

    /// The connection's current `synchronous` setting, by name.
    pub fn synchronous(&self) -> rusqlite::Result<&'static str> {
        let level: i64 = self
            .driver
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))?;
        Ok(match level {
            0 => "OFF",
            1 => "NORMAL",
            2 => "FULL",
            _ => "EXTRA",
        })
    }
}

impl SqliteDriver {
    /// Opens the store that `trust::CheckedStore::open` checked as `checked`.
    ///
    /// SQLite opens the store by path (it finds the -wal and -shm files
    /// beside it by that name), so it cannot be handed the checked
    /// descriptor. What makes the path safe to open: every directory on it
    /// was checked to be root's alone, so nobody else can rename or replace
    /// any name on it; SQLITE_OPEN_NOFOLLOW refuses a symlink as the file;
    /// and `checked` (the file and its directory) is held open until SQLite
    /// has opened the path, after which (before any statement runs)
    /// `CheckedStore::still_named` proves that the name in the checked
    /// directory is still the inode that was checked (held open, it cannot
    /// be reused). A mismatch is refused.
    fn connect(
        path: &Path,
        checked: &crate::trust::CheckedStore,
        sync: Sync,
    ) -> Result<SqliteDriver, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, e))?;
        checked.still_named(path).map_err(StoreError::Untrusted)?;
        conn.busy_handler(Some(wait_briefly()))
            .map_err(|e| classify(path, e))?;
        let setup = || -> rusqlite::Result<()> {
            // The store is read by root only; never run code from its schema.
            // (The C interface's switch: no statement to parse.)
            conn.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA,
                false,
            )?;
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
            }
            // A WAL store commits `NORMAL` unless told otherwise: SQLite is
            // built with SQLITE_DEFAULT_WAL_SYNCHRONOUS=1 (.cargo/config.toml),
            // the level every connection that has not set one takes once it
            // finds the file in WAL mode (the read above). So only `FULL`
            // is set, one statement fewer to parse for every login; the
            // login connection's level is checked by
            // auth::tests::hotp_counters_and_recovery_codes_are_not_fenced_and_leave_the_login_store_lazy.
            if sync == Sync::Full {
                conn.pragma_update(None, "synchronous", sync.pragma())?;
            }
            // Checkpoints are ours (`bound_wal`), at close, never in the
            // middle of a login's write. (The C interface's switch, the
            // same as `PRAGMA wal_autocheckpoint = 0`: no statement to parse.)
            // SAFETY: `conn.handle()` is this open connection's handle, used
            // on this thread only; sqlite3_wal_autocheckpoint only sets the
            // connection's WAL hook and returns SQLITE_OK.
            let rc = unsafe { rusqlite::ffi::sqlite3_wal_autocheckpoint(conn.handle(), 0) };
            if rc != rusqlite::ffi::SQLITE_OK {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rc),
                    Some("wal_autocheckpoint".to_string()),
                ));
            }
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
        Ok(SqliteDriver {
            conn,
            login: sync == Sync::Normal,
            name: path.display().to_string(),
        })
    }

    /// The schema version recorded in the file (0 for a fresh file).
    fn user_version(&self) -> rusqlite::Result<i64> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
    }

    /// Applies the missing migrations in one immediate transaction, so two
    /// processes upgrading at once cannot both apply the same step.
    fn migrate(&mut self, path: &Path) -> Result<(), StoreError> {
        let found = self.user_version().map_err(|e| classify(path, e))?;
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

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Int(v) => ValueRef::Integer(v),
            Param::OptInt(Some(v)) => ValueRef::Integer(v),
            Param::OptInt(None) => ValueRef::Null,
            Param::Text(v) | Param::OptText(Some(v)) => ValueRef::Text(v.as_bytes()),
            Param::OptText(None) => ValueRef::Null,
            Param::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

fn read_value(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(v) => Value::Int(v),
        // No column of the schema is REAL: every reader refuses it.
        ValueRef::Real(_) => Value::Unsupported("a real number"),
        ValueRef::Text(v) => Value::Text(String::from_utf8_lossy(v).into_owned()),
        ValueRef::Blob(v) => Value::Blob(Zeroizing::new(v.to_vec())),
    }
}

impl Driver for SqliteDriver {
    /// Every write transaction is `BEGIN IMMEDIATE`: one writer at a time.
    fn holds_out_every_writer(&self) -> bool {
        true
    }

    fn execute(&self, sql: &'static str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let mut statement = self.conn.prepare(sql)?;
        let changed = statement.execute(rusqlite::params_from_iter(params.iter()))?;
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    fn query(&self, sql: &'static str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut statement = self.conn.prepare(sql)?;
        let columns = statement.column_count();
        let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
        let mut read = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for column in 0..columns {
                values.push(read_value(row.get_ref(column)?));
            }
            read.push(Row(values));
        }
        Ok(read)
    }

    fn begin(&self, hold: Hold<'_>) -> Result<(), StoreError> {
        // One writer at a time for the whole file: IMMEDIATE takes the write
        // lock before the first read, so every hold is the whole store and
        // no transaction decides on a snapshot it later cannot write from.
        let statement = match hold {
            Hold::Rows | Hold::RowsLazily | Hold::User(..) | Hold::AllKeys => "BEGIN IMMEDIATE",
            Hold::Snapshot => "BEGIN",
        };
        Ok(self.conn.execute_batch(statement)?)
    }

    fn commit(&self) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch("COMMIT")?)
    }

    fn rollback(&self) {
        let _ = self.conn.execute_batch("ROLLBACK");
    }

    /// The login connection commits `NORMAL`; these writes switch to
    /// `FULL` for their commit. Administrative connections are always FULL.
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

    fn claims_durable(&self) -> bool {
        !self.login
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self.user_version()?)
    }

    /// Kept in the file header's `application_id` (a 32-bit field SQLite
    /// leaves to the application; transactional like `user_version`): no
    /// table, so nothing more for every login's schema parse.
    fn sealing_id(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "application_id", |r| r.get(0))?)
    }

    fn set_sealing_id(&self, id: i64) -> Result<(), StoreError> {
        Ok(self.conn.pragma_update(None, "application_id", id)?)
    }

    /// One writer at a time (`BEGIN IMMEDIATE`): what it reads stays true.
    fn record_sealing_id(&self, id: i64) -> Result<i64, StoreError> {
        match self.sealing_id()? {
            0 => {
                self.set_sealing_id(id)?;
                Ok(id)
            }
            recorded => Ok(recorded),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests;
