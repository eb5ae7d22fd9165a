//! The embedded store: one SQLite file shared by every sshd child.
//!
//! Concurrency: WAL journal (readers never block the writer) and a busy
//! timeout (writers queue instead of failing with "database is locked").
//! Every statement runs in autocommit mode, so no connection ever holds a
//! read snapshot that it later tries to upgrade to a write.
//!
//! Durability: `synchronous=FULL`. In WAL mode, NORMAL survives a crash of
//! the process but may lose the last commits on power loss or a kernel
//! panic. Losing a commit here means forgetting that a step was used, and a
//! node that reboots quickly (a VM restart takes seconds) would then accept
//! the same code again inside its validity window. FULL syncs the WAL at
//! each commit, so a login that was answered "accepted" has its step on
//! disk first. The price is one fsync per successful login.

use std::fs::{DirBuilder, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};
use zeroize::Zeroizing;

use super::{Claim, Store, StoreError, Token, TokenInfo};
use crate::otp::{Algorithm, Params};
use crate::secret::Secret;

/// How long a login waits for another process's write before giving up.
/// A claim holds the write lock for well under a millisecond, so this only
/// runs out when something is badly wrong (a stuck process, a dead disk).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub struct SqliteStore {
    conn: Connection,
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

impl SqliteStore {
    /// Opens an existing, initialised store for the login path. Never
    /// creates anything: a missing store is an error, not an empty store.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(StoreError::Missing(path.display().to_string()));
            }
            Err(e) => return Err(io_error(path, e)),
        }
        let mut store = Self::connect(path)?;
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
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_error(dir, e))?;
        }
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(path, e)),
        }
        let mut store = Self::connect(path)?;
        store.migrate(path)?;
        Ok(store)
    }

    /// A private in-memory store with the current schema (for tests).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let mut store = SqliteStore {
            conn: Connection::open_in_memory()?,
        };
        store.migrate(Path::new(":memory:"))?;
        Ok(store)
    }

    fn connect(path: &Path) -> Result<SqliteStore, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, e))?;
        let setup = || -> rusqlite::Result<()> {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // The store is read by root only; never run code from its schema.
            conn.pragma_update(None, "trusted_schema", "OFF")?;
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
            }
            conn.pragma_update(None, "synchronous", "FULL")?;
            Ok(())
        };
        setup().map_err(|e| classify(path, e))?;
        Ok(SqliteStore { conn })
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

/// The columns every query reads, in this order.
const COLUMNS: &str = "user, algorithm, digits, period, created, last_step";

struct RawRow {
    user: String,
    algorithm: String,
    digits: i64,
    period: i64,
    created: i64,
    last_step: Option<i64>,
}

impl RawRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
        Ok(RawRow {
            user: row.get(0)?,
            algorithm: row.get(1)?,
            digits: row.get(2)?,
            period: row.get(3)?,
            created: row.get(4)?,
            last_step: row.get(5)?,
        })
    }

    fn info(self) -> Result<TokenInfo, StoreError> {
        let user = self.user;
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
            user,
            params,
            created: self.created,
            last_step,
        })
    }
}

impl Store for SqliteStore {
    fn token(&self, user: &str) -> Result<Option<Token>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS}, secret FROM tokens WHERE user = ?1"
        ))?;
        let found = stmt
            .query_row([user], |row| {
                let secret: Vec<u8> = row.get(6)?;
                Ok((RawRow::read(row)?, Zeroizing::new(secret)))
            })
            .optional()?;
        let Some((raw, secret)) = found else {
            return Ok(None);
        };
        let info = raw.info()?;
        let secret = Secret::from_bytes(secret).map_err(|e| invalid(user, e.to_string()))?;
        Ok(Some(Token {
            user: info.user,
            secret,
            params: info.params,
            created: info.created,
            last_step: info.last_step,
        }))
    }

    fn claim_step(&self, user: &str, step: u64) -> Result<Claim, StoreError> {
        let step = step_to_sql(step)?;
        // The whole replay protection is this one statement: it changes the
        // row only if the step is newer than anything used before, and
        // SQLite serialises writers, so exactly one racer sees 1 row changed.
        let mut stmt = self.conn.prepare(
            "UPDATE tokens SET last_step = ?2
             WHERE user = ?1 AND (last_step IS NULL OR last_step < ?2)",
        )?;
        match stmt.execute(params![user, step])? {
            1 => Ok(Claim::Claimed),
            _ => Ok(Claim::AlreadyUsed),
        }
    }

    fn enroll(&self, token: &Token, replace: bool) -> Result<(), StoreError> {
        token
            .params
            .validate()
            .map_err(|e| invalid(&token.user, e))?;
        let last_step = token.last_step.map(step_to_sql).transpose()?;
        let verb = if replace {
            "INSERT OR REPLACE"
        } else {
            "INSERT"
        };
        let sql = format!(
            "{verb} INTO tokens (user, secret, algorithm, digits, period, created, last_step)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        );
        let result = self.conn.execute(
            &sql,
            params![
                token.user,
                token.secret.as_bytes(),
                token.params.algorithm.as_str(),
                token.params.digits,
                step_to_sql(token.params.period)?,
                token.created,
                last_step,
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                Err(StoreError::AlreadyEnrolled(token.user.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn delete(&self, user: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM tokens WHERE user = ?1", [user])?
            == 1)
    }

    fn list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM tokens ORDER BY user"))?;
        let rows = stmt.query_map([], RawRow::read)?;
        rows.map(|row| row.map_err(StoreError::from).and_then(RawRow::info))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(user: &str) -> Token {
        Token {
            user: user.to_string(),
            secret: Secret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").expect("key"),
            params: Params::default(),
            created: 1_700_000_000,
            last_step: None,
        }
    }

    #[test]
    fn enroll_read_list_delete() {
        let store = SqliteStore::open_in_memory().expect("store");
        assert!(store.token("alice").expect("query").is_none());
        store.enroll(&token("alice"), false).expect("enroll");
        store.enroll(&token("bob"), false).expect("enroll");
        assert_eq!(store.token("alice").expect("query"), Some(token("alice")));
        let users: Vec<String> = store
            .list()
            .expect("list")
            .into_iter()
            .map(|t| t.user)
            .collect();
        assert_eq!(users, ["alice", "bob"]);
        assert!(store.delete("alice").expect("delete"));
        assert!(!store.delete("alice").expect("delete"));
        assert!(store.token("alice").expect("query").is_none());
    }

    #[test]
    fn enrolling_twice_needs_replace() {
        let store = SqliteStore::open_in_memory().expect("store");
        store.enroll(&token("alice"), false).expect("enroll");
        assert!(matches!(
            store.enroll(&token("alice"), false),
            Err(StoreError::AlreadyEnrolled(_))
        ));
        store.claim_step("alice", 10).expect("claim");
        store.enroll(&token("alice"), true).expect("replace");
        assert_eq!(
            store.token("alice").expect("query").map(|t| t.last_step),
            Some(None)
        );
    }

    #[test]
    fn claim_is_monotonic() {
        let store = SqliteStore::open_in_memory().expect("store");
        store.enroll(&token("alice"), false).expect("enroll");
        assert_eq!(store.claim_step("alice", 100).expect("c"), Claim::Claimed);
        assert_eq!(
            store.claim_step("alice", 100).expect("c"),
            Claim::AlreadyUsed
        );
        assert_eq!(
            store.claim_step("alice", 99).expect("c"),
            Claim::AlreadyUsed
        );
        assert_eq!(store.claim_step("alice", 101).expect("c"), Claim::Claimed);
        assert_eq!(
            store.claim_step("nobody", 500).expect("c"),
            Claim::AlreadyUsed
        );
        assert!(matches!(
            store.claim_step("alice", u64::MAX),
            Err(StoreError::StepOutOfRange(_))
        ));
    }

    #[test]
    fn file_store_is_created_private_and_reopened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state").join("pam_totp.db");
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::Missing(_))
        ));
        let store = SqliteStore::create(&path).expect("create");
        store.enroll(&token("alice"), false).expect("enroll");
        drop(store);
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);

        let store = SqliteStore::open(&path).expect("open");
        assert_eq!(store.schema_version().expect("v"), SCHEMA_VERSION);
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
        assert!(store.token("alice").expect("q").is_some());
    }

    #[test]
    fn broken_stores_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").expect("write");
        assert!(matches!(
            SqliteStore::open(&empty),
            Err(StoreError::NotInitialised(_))
        ));

        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![0x5a; 8192]).expect("write");
        let err = SqliteStore::open(&garbage).err().expect("corrupt");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");

        let newer = dir.path().join("newer.db");
        let store = SqliteStore::create(&newer).expect("create");
        store
            .conn
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("bump");
        drop(store);
        assert!(matches!(
            SqliteStore::open(&newer),
            Err(StoreError::SchemaTooNew { .. })
        ));
    }

    #[test]
    fn symlinked_store_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let real = dir.path().join("real.db");
        SqliteStore::create(&real).expect("create");
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert!(SqliteStore::open(&link).is_err());
    }

    #[test]
    fn threads_racing_one_step_claim_it_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("race.db");
        SqliteStore::create(&path)
            .expect("create")
            .enroll(&token("alice"), false)
            .expect("enroll");
        for step in 1..=20u64 {
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let path = path.clone();
                    let barrier = barrier.clone();
                    std::thread::spawn(move || {
                        let store = SqliteStore::open(&path).expect("open");
                        barrier.wait();
                        store.claim_step("alice", step).expect("claim")
                    })
                })
                .collect();
            let wins = handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .filter(|c| *c == Claim::Claimed)
                .count();
            assert_eq!(wins, 1, "step {step}");
        }
    }
}
