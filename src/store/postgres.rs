//! The shared store: one PostgreSQL database for a pool of login nodes.
//!
//! The same semantics as the SQLite store, statement for statement: the
//! step claim is one conditional `UPDATE` whose row count decides (under
//! READ COMMITTED a second updater of the same row waits for the first to
//! commit and then re-checks the `WHERE` on the new row, so exactly one of
//! any number of racers changes it); failure counts are one upsert; every
//! multi-row change is one transaction. Commits are durable when they
//! return (the session sets `synchronous_commit = on`, whatever the role
//! or database defaults to), so no boot fence is needed for this store.
//!
//! Client: the pure-Rust `postgres` crate (on tokio-postgres, with a
//! current-thread runtime: no extra threads in the sshd child) and rustls
//! for TLS. libpq would bring libpq5 with OpenSSL, GSSAPI and LDAP
//! libraries into every sshd child; this keeps the module self-contained
//! (the cost is measured in docs/performance.md).
//!
//! Every login is bounded by `db_timeout`: the connect (TCP, TLS, auth:
//! `connect_within`), each statement (`statement_timeout`, `lock_timeout`),
//! unacknowledged writes on the socket (`TCP_USER_TIMEOUT`) and a peer that
//! vanished (keepalives). Not bounded: a server whose kernel keeps
//! acknowledging while the server process hangs in the middle of a
//! statement after a good connect.

use std::cell::RefCell;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::{SslMode, TargetSessionAttrs};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};
use zeroize::Zeroizing;

use super::StoreError;
use super::driver::{Driver, Hold, Param, Purpose, Row, Value, params, placeholders_as_dollars};
use super::location::{PgHost, PgTarget, PgTls, SYSTEM_CA_FILES};
use super::shared::SqlStore;

/// Schema migrations, in the version sequence both backends share
/// (`store::SCHEMA_VERSION`): each entry takes the database to version `.0`
/// from the entry before it; the version is a row of `pam_totp_meta`.
/// PostgreSQL has no versions 1 and 2: the first entry creates what a
/// SQLite store has at version 3.
const MIGRATIONS: &[(i64, &str)] = &[
    // 0 -> 3: tokens (several devices per user, HOTP, pending), recovery
    // codes, enroll windows, failed codes per (user, rhost).
    (
        3,
        r#"CREATE TABLE tokens (
        id        BIGSERIAL PRIMARY KEY,
        "user"    TEXT   NOT NULL,
        device    TEXT   NOT NULL,
        kind      TEXT   NOT NULL CHECK (kind IN ('totp', 'hotp')),
        secret    BYTEA  NOT NULL,
        algorithm TEXT   NOT NULL CHECK (algorithm IN ('sha1', 'sha256', 'sha512')),
        digits    BIGINT NOT NULL CHECK (digits BETWEEN 6 AND 8),
        period    BIGINT NOT NULL CHECK (period BETWEEN 1 AND 3600),
        created   BIGINT NOT NULL,
        confirmed BIGINT,
        last_step BIGINT,
        UNIQUE ("user", device)
    );
    CREATE TABLE recovery_codes (
        id      BIGSERIAL PRIMARY KEY,
        "user"  TEXT   NOT NULL,
        lookup  TEXT   NOT NULL,
        hash    TEXT   NOT NULL,
        created BIGINT NOT NULL,
        used    BIGINT
    );
    CREATE INDEX recovery_codes_user ON recovery_codes ("user", lookup);
    CREATE TABLE enroll_windows (
        "user"    TEXT   NOT NULL PRIMARY KEY,
        until     BIGINT NOT NULL,
        opened_by TEXT   NOT NULL
    );
    CREATE TABLE failures (
        "user" TEXT   NOT NULL,
        rhost  TEXT   NOT NULL,
        count  BIGINT NOT NULL,
        last   BIGINT NOT NULL,
        PRIMARY KEY ("user", rhost)
    );"#,
    ),
    // 3 -> 4: grace periods per (user, IP address).
    (
        4,
        r#"CREATE TABLE grace (
        "user" TEXT   NOT NULL,
        ip     TEXT   NOT NULL,
        until  BIGINT NOT NULL,
        PRIMARY KEY ("user", ip)
    );"#,
    ),
    // 4 -> 5: grants staged until the whole auth stack has succeeded.
    (
        5,
        r#"CREATE TABLE staged (
        nonce     TEXT   NOT NULL PRIMARY KEY,
        "user"    TEXT   NOT NULL,
        expires   BIGINT NOT NULL,
        what      TEXT   NOT NULL CHECK (what IN ('enroll', 'grace')),
        device    TEXT,
        kind      TEXT,
        secret    BYTEA,
        algorithm TEXT,
        digits    BIGINT,
        period    BIGINT,
        created   BIGINT,
        step      BIGINT,
        ip        TEXT,
        until     BIGINT
    );
    CREATE INDEX staged_expires ON staged (expires);"#,
    ),
    // 5 -> 6: each failed code of a user with its time, for the per-user
    // ceiling.
    (
        6,
        r#"CREATE TABLE guesses (
        id     BIGSERIAL PRIMARY KEY,
        "user" TEXT   NOT NULL,
        at     BIGINT NOT NULL
    );
    CREATE INDEX guesses_user ON guesses ("user", at);
    INSERT INTO guesses ("user", at)
        SELECT f."user", f.last FROM failures f, generate_series(1, LEAST(f.count, 10000));"#,
    ),
    // 6 -> 7: the recovery codes shown with an enrollment at login.
    (7, "ALTER TABLE staged ADD COLUMN recovery TEXT;"),
    // 7 -> 8: disabled, expires, replaces (see the SQLite store's 7 -> 8).
    (
        8,
        "ALTER TABLE tokens ADD COLUMN disabled BIGINT;
         ALTER TABLE tokens ADD COLUMN expires BIGINT;
         ALTER TABLE tokens ADD COLUMN replaces TEXT;",
    ),
    // 8 -> 9: key graces, automation grants, a staged key grace (see the
    // SQLite store's 8 -> 9).
    (
        9,
        r#"CREATE TABLE key_grace (
        "user"      TEXT   NOT NULL,
        fingerprint TEXT   NOT NULL,
        until       BIGINT NOT NULL,
        PRIMARY KEY ("user", fingerprint)
    );
    CREATE TABLE automation (
        id          BIGSERIAL PRIMARY KEY,
        "user"      TEXT   NOT NULL,
        fingerprint TEXT   NOT NULL,
        networks    TEXT   NOT NULL,
        until       BIGINT NOT NULL,
        reason      TEXT   NOT NULL,
        created     BIGINT NOT NULL,
        created_by  TEXT   NOT NULL,
        revoked     BIGINT
    );
    CREATE INDEX automation_key ON automation ("user", fingerprint);
    ALTER TABLE staged ADD COLUMN fingerprint TEXT;
    ALTER TABLE staged ADD COLUMN key_until BIGINT;"#,
    ),
    // 9 -> 10: deleted tokens' used steps (see the SQLite store's 9 -> 10).
    // The trigger runs in the deleting statement: a claim that committed
    // before the delete took its row is in `OLD`.
    (
        10,
        r#"CREATE TABLE retired_keys (
        id         BIGSERIAL PRIMARY KEY,
        "user"     TEXT   NOT NULL,
        device     TEXT   NOT NULL,
        kind       TEXT   NOT NULL,
        secret     BYTEA  NOT NULL,
        algorithm  TEXT   NOT NULL,
        digits     BIGINT NOT NULL,
        period     BIGINT NOT NULL,
        created    BIGINT NOT NULL,
        last_step  BIGINT NOT NULL,
        keep_until BIGINT
    );
    CREATE FUNCTION pam_totp_retire_key() RETURNS trigger LANGUAGE plpgsql AS $retire$
    BEGIN
        IF OLD.last_step IS NOT NULL THEN
            INSERT INTO retired_keys
                ("user", device, kind, secret, algorithm, digits, period, created, last_step,
                 keep_until)
            VALUES (OLD."user", OLD.device, OLD.kind, OLD.secret, OLD.algorithm, OLD.digits,
                OLD.period, OLD.created, OLD.last_step,
                CASE WHEN OLD.kind = 'totp' THEN (OLD.last_step + 11) * OLD.period + 3600 END);
        END IF;
        RETURN NULL;
    END
    $retire$;
    CREATE TRIGGER tokens_retire AFTER DELETE ON tokens
        FOR EACH ROW EXECUTE FUNCTION pam_totp_retire_key();"#,
    ),
    // 10 -> 11: deleted keys kept as marks (see the SQLite store's 10 -> 11).
    (11, "ALTER TABLE retired_keys ADD COLUMN key_mark BYTEA;"),
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;
const _: () = assert!(SCHEMA_VERSION == super::SCHEMA_VERSION);

/// Databases made before the two backends shared one version sequence
/// recorded 1 to 4 for what is 3 to 6 in it. Every build since records 6
/// or more, so a recorded 1 to 4 is always the old numbering (and a build
/// from before reads 6 as "newer than supported": it refuses, as it must).
fn shared_version(recorded: i64) -> i64 {
    if (1..=4).contains(&recorded) {
        recorded + 2
    } else {
        recorded
    }
}

/// Serialises `totpctl init` runs on one database (any fixed number).
const MIGRATION_LOCK: i64 = 0x7061_6d5f_746f_7470; // "pam_totp"

/// The PostgreSQL store: the shared statements on one client connection.
pub type PgStore = SqlStore<PgDriver>;

/// One client connection to the database.
pub struct PgDriver {
    /// Every statement goes out unnamed with its parameter types
    /// (`query_typed`: Parse, Bind, Execute and Sync in one message), so
    /// nothing lives on the server connection between statements: the
    /// store works through a connection pooler in transaction mode
    /// (PgBouncer), where the next statement outside a transaction may run
    /// on another server connection, on which a named prepared statement
    /// would not exist.
    session: RefCell<Session>,
    /// For error messages: the URL (it never holds a password).
    target: String,
}

/// The connection, the runtime that drives it, and the writes not sent yet.
struct Session {
    /// A current-thread runtime: the connection's task runs only while the
    /// login waits for an answer (`Session::send`), on the login's thread.
    runtime: tokio::runtime::Runtime,
    /// `None` only while the session closes (see `Drop`).
    client: Option<Client>,
    /// The connection's task (it reads and writes the socket).
    connection: Option<tokio::task::JoinHandle<()>>,
    /// Writes of the open transaction that wait for the next statement
    /// that needs an answer (`Driver::execute_later`).
    deferred: Vec<Deferred>,
    /// Between `begin` and `commit` or `rollback`.
    in_transaction: bool,
    /// The store's name while its schema version is still to be checked
    /// (`PgStore::open_for_login`; see `send`).
    unchecked_schema: Option<String>,
    /// Inside `durably`: a statement outside a transaction commits synced.
    durable: bool,
}

/// A write that goes out with the next statement that needs an answer.
enum Deferred {
    /// Simple-protocol text (a transaction's `BEGIN`).
    Batch(&'static str),
    /// A statement (placeholders as `$N`) and its parameters, owned.
    Typed(String, Vec<OwnedParam>),
    /// `SCHEMA_CHECK_SQL` (see `Session::send`).
    SchemaCheck,
}

/// A deferred statement's parameter. Blobs are wiped when dropped.
enum OwnedParam {
    Int(Option<i64>),
    Text(Option<String>),
    Blob(Zeroizing<Vec<u8>>),
}

impl OwnedParam {
    fn of(param: &Param<'_>) -> OwnedParam {
        match *param {
            Param::Int(v) => OwnedParam::Int(Some(v)),
            Param::OptInt(v) => OwnedParam::Int(v),
            Param::Text(v) => OwnedParam::Text(Some(v.to_string())),
            Param::OptText(v) => OwnedParam::Text(v.map(str::to_string)),
            Param::Blob(v) => OwnedParam::Blob(Zeroizing::new(v.to_vec())),
        }
    }

    fn typed(&self) -> (&(dyn ToSql + Sync), Type) {
        match self {
            OwnedParam::Int(v) => (v, Type::INT8),
            OwnedParam::Text(v) => (v, Type::TEXT),
            OwnedParam::Blob(v) => {
                let bytes: &Vec<u8> = v;
                (bytes, Type::BYTEA)
            }
        }
    }
}

impl Deferred {
    async fn run(&self, client: &Client) -> Result<Answer, tokio_postgres::Error> {
        match self {
            Deferred::Batch(sql) => client.batch_execute(sql).await.map(|()| Answer::Done),
            Deferred::Typed(sql, params) => {
                let typed: Vec<_> = params.iter().map(OwnedParam::typed).collect();
                client.execute_typed(sql, &typed).await.map(Answer::Count)
            }
            Deferred::SchemaCheck => client
                .query_typed(
                    SCHEMA_CHECK_SQL,
                    &[
                        (&super::LOGIN_OLDEST_SCHEMA, Type::INT8),
                        (&SCHEMA_VERSION, Type::INT8),
                    ],
                )
                .await
                .map(Answer::Rows),
        }
    }
}

/// The statement that needs an answer, sent after the deferred writes.
enum Last<'a> {
    /// A typed statement: its row count.
    Execute(&'a str, &'a [(&'a (dyn ToSql + Sync), Type)]),
    /// A typed statement: its rows.
    Query(&'a str, &'a [(&'a (dyn ToSql + Sync), Type)]),
    /// Simple-protocol text (`COMMIT`).
    Batch(&'a str),
}

/// What a `Last` answered.
enum Answer {
    Count(u64),
    Rows(Vec<tokio_postgres::Row>),
    Done,
}

impl Last<'_> {
    async fn run(&self, client: &Client) -> Result<Answer, tokio_postgres::Error> {
        match *self {
            Last::Execute(sql, params) => {
                client.execute_typed(sql, params).await.map(Answer::Count)
            }
            Last::Query(sql, params) => client.query_typed(sql, params).await.map(Answer::Rows),
            Last::Batch(sql) => client.batch_execute(sql).await.map(|()| Answer::Done),
        }
    }
}

/// The key file the store's keys are sealed with (`Driver::sealing_id`).
const SEALING_ID_SQL: &str = "SELECT value FROM pam_totp_meta WHERE key = 'sealing_key'";
const SET_SEALING_ID_SQL: &str = "INSERT INTO pam_totp_meta (key, value) VALUES ('sealing_key', ?1)
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";
const RECORD_SEALING_ID_SQL: &str =
    "INSERT INTO pam_totp_meta (key, value) VALUES ('sealing_key', ?1)
     ON CONFLICT (key) DO UPDATE SET value = CASE WHEN pam_totp_meta.value = 0
         THEN excluded.value ELSE pam_totp_meta.value END
     RETURNING value";

/// The statement that reads the schema version.
const SCHEMA_VERSION_SQL: &str = "SELECT value FROM pam_totp_meta WHERE key = 'schema_version'";

/// The schema check that goes out with a login's first statement: it fails
/// (an invalid cast, at run time) unless the recorded version is from `$1`
/// (`store::LOGIN_OLDEST_SCHEMA`) to `$2` (this build's), and
/// so aborts the transaction it runs in before anything after it runs. A
/// missing meta table fails it too (`undefined_table`); a missing row makes
/// `max` NULL, which fails it like a wrong version.
const SCHEMA_CHECK_SQL: &str = "SELECT CASE WHEN max(value) BETWEEN $1 AND $2 THEN 0 \
     ELSE CAST('pam_totp schema ' || COALESCE(max(value)::text, 'none') AS BIGINT) END \
     FROM pam_totp_meta WHERE key = 'schema_version'";

/// A statement on its way: a deferred write, the schema check or the last.
type Sent<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Answer, tokio_postgres::Error>> + 'a>>;

/// Why an exchange failed: the schema check, or anything else.
enum Failed {
    SchemaCheck(StoreError),
    Other(StoreError),
}

impl From<Failed> for StoreError {
    fn from(failed: Failed) -> StoreError {
        match failed {
            Failed::SchemaCheck(e) | Failed::Other(e) => e,
        }
    }
}

impl Session {
    /// Sends the deferred writes and then `last`, all before waiting for
    /// any answer (the server runs them in order: one round trip), and
    /// waits for every answer. The first error wins, so a failed deferred
    /// write is the one reported (the statements after it in its
    /// transaction fail too, and a `COMMIT` after it rolls back): nothing
    /// after a failure is ever reported as done.
    ///
    /// Until a schema check has passed (`PgStore::open_for_login`), every
    /// round trip starts with one, inside a transaction: the caller's, just
    /// after its `BEGIN`, or one made around `last` alone. A failed check
    /// aborts that transaction, so nothing after it is read or written; the
    /// error is then the precise one (`schema_usable`), read in a round
    /// trip of its own.
    fn send(&mut self, last: Last<'_>) -> Result<Answer, StoreError> {
        self.send_ending(last, None)
    }

    /// `send`, with the open transaction's `COMMIT` after `last` in the
    /// same round trip: `last`'s answer only once the commit is done (after
    /// any failure the server rolls back). The transaction is over either
    /// way.
    fn send_committing(&mut self, last: Last<'_>) -> Result<Answer, StoreError> {
        let done = self.send_ending(last, Some("COMMIT"));
        self.in_transaction = false;
        done
    }

    fn send_ending(
        &mut self,
        last: Last<'_>,
        end: Option<&'static str>,
    ) -> Result<Answer, StoreError> {
        let check = self.unchecked_schema.take();
        // A statement outside a transaction gets one of its own when a
        // check goes with it, or when it must be durable (`durably`): its
        // BEGIN sets `synchronous_commit = on`, which a pooler's dropping
        // of the connection's start-up options would otherwise leave to
        // the role's default.
        let wrap = !self.in_transaction && (check.is_some() || self.durable);
        if check.is_none() && !wrap {
            return Ok(self.exchange(end, last)?);
        }
        // The check goes right after the transaction's BEGIN when that is
        // still to be sent, else first (in a transaction already open).
        let after_begin = matches!(self.deferred.first(), Some(Deferred::Batch(_)));
        if wrap {
            let begin = if self.durable {
                "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit = on"
            } else {
                "BEGIN ISOLATION LEVEL READ COMMITTED"
            };
            self.deferred.insert(0, Deferred::Batch(begin));
        }
        if check.is_some() {
            let at = usize::from(wrap || after_begin);
            self.deferred.insert(at, Deferred::SchemaCheck);
        }
        let trailer = if wrap { Some("COMMIT") } else { end };
        match self.exchange(trailer, last) {
            Ok(answer) => Ok(answer),
            Err(Failed::Other(e)) => Err(e),
            Err(Failed::SchemaCheck(e)) => {
                let Some(target) = check else {
                    return Err(e);
                };
                self.unchecked_schema = Some(target.clone());
                // A transaction that sent its COMMIT is over (rolled back).
                if self.in_transaction && end.is_none() {
                    self.in_transaction = false;
                    let _ = self.exchange(None, Last::Batch("ROLLBACK"));
                }
                schema_usable(self.read_version()?, &target, super::LOGIN_OLDEST_SCHEMA)?;
                Err(e)
            }
        }
    }

    /// The schema version in the database (0 when it has no schema yet),
    /// read in a round trip of its own.
    fn read_version(&mut self) -> Result<i64, StoreError> {
        match self.exchange(None, Last::Query(SCHEMA_VERSION_SQL, &[])) {
            Err(failed) => match StoreError::from(failed) {
                StoreError::Postgres(e) => found_version(Err(e)),
                e => Err(e),
            },
            Ok(read) => found_version(Ok(read)),
        }
    }

    /// One round trip: the deferred statements, `last`, then `trailer`
    /// (the `COMMIT` of a transaction made around `last`).
    fn exchange(
        &mut self,
        trailer: Option<&'static str>,
        last: Last<'_>,
    ) -> Result<Answer, Failed> {
        let deferred = std::mem::take(&mut self.deferred);
        let Some(client) = self.client.as_ref() else {
            return Err(Failed::Other(StoreError::Unreachable {
                target: "the database".to_string(),
                reason: "the connection is closed".to_string(),
            }));
        };
        self.runtime.block_on(async {
            let end = trailer.map(Last::Batch);
            let mut earlier: Vec<Sent<'_>> = deferred
                .iter()
                .map(|d| -> Sent<'_> { Box::pin(d.run(client)) })
                .collect();
            let mut earlier_done: Vec<Option<Result<Answer, tokio_postgres::Error>>> =
                earlier.iter().map(|_| None).collect();
            let mut sent = std::pin::pin!(last.run(client));
            let mut last_done = None;
            let mut ending: Option<Sent<'_>> = end
                .as_ref()
                .map(|e| -> Sent<'_> { Box::pin(e.run(client)) });
            let mut end_done = None;
            // Polled in order, every time: a statement's request is queued
            // on its first poll, so they go out in the order they were made.
            let last = std::future::poll_fn(|cx| {
                for (future, done) in earlier.iter_mut().zip(earlier_done.iter_mut()) {
                    if done.is_none()
                        && let Poll::Ready(result) = future.as_mut().poll(cx)
                    {
                        *done = Some(result);
                    }
                }
                if last_done.is_none()
                    && let Poll::Ready(result) = sent.as_mut().poll(cx)
                {
                    last_done = Some(result);
                }
                if let Some(future) = ending.as_mut()
                    && end_done.is_none()
                    && let Poll::Ready(result) = future.as_mut().poll(cx)
                {
                    end_done = Some(result);
                }
                let ended = ending.is_none() || end_done.is_some();
                if ended
                    && earlier_done.iter().all(Option::is_some)
                    && let Some(result) = last_done.take()
                {
                    return Poll::Ready(result);
                }
                Poll::Pending
            })
            .await;
            for (statement, result) in deferred.iter().zip(earlier_done.into_iter().flatten()) {
                if let Err(e) = result {
                    return Err(match statement {
                        Deferred::SchemaCheck => Failed::SchemaCheck(e.into()),
                        _ => Failed::Other(e.into()),
                    });
                }
            }
            let answer = last.map_err(|e| Failed::Other(e.into()))?;
            if let Some(Err(e)) = end_done {
                return Err(Failed::Other(e.into()));
            }
            Ok(answer)
        })
    }
}

/// The schema version a read of `SCHEMA_VERSION_SQL` found (0: no schema:
/// a database without the meta table answers `undefined_table`; outside a
/// transaction that error leaves nothing behind).
fn found_version(read: Result<Answer, tokio_postgres::Error>) -> Result<i64, StoreError> {
    match read {
        Ok(Answer::Rows(rows)) => match rows.first() {
            Some(row) => Ok(shared_version(row.try_get(0)?)),
            None => Ok(0),
        },
        Ok(_) => Ok(0),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Whether a store with schema version `found` is one this build can use,
/// back to `oldest` (a login: `store::LOGIN_OLDEST_SCHEMA`; else this
/// build's own).
fn schema_usable(found: i64, target: &str, oldest: i64) -> Result<(), StoreError> {
    match found {
        0 => Err(StoreError::NotInitialised(target.to_string())),
        found if found > SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        }),
        found if found < oldest => Err(StoreError::NotInitialised(format!(
            "{target} (schema version {found}; run `totpctl init` to migrate)"
        ))),
        _ => Ok(()),
    }
}

impl Drop for Session {
    /// Ends the connection politely (a Terminate message, as libpq does):
    /// without its client the connection's task sends it and finishes;
    /// the runtime drives it for at most a moment.
    fn drop(&mut self) {
        drop(self.client.take());
        self.deferred.clear();
        if let Some(task) = self.connection.take() {
            // The timer is made inside the runtime (outside, it panics).
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(Duration::from_millis(200), task).await });
        }
    }
}

/// How to reach the database.
pub struct PgSettings<'a> {
    pub target: &'a PgTarget,
    pub password_file: Option<&'a Path>,
    pub timeout: Duration,
}

fn unreachable(target: &str, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Unreachable {
        target: target.to_string(),
        reason: reason.to_string(),
    }
}

/// The TLS client configuration for `verify-full`: the chain against the CA
/// file (or the system bundle), the name against the host (rustls always
/// checks both).
fn tls_config(target: &str, root_cert: Option<&Path>) -> Result<rustls::ClientConfig, StoreError> {
    let path = match root_cert {
        Some(path) => path.to_path_buf(),
        None => SYSTEM_CA_FILES
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
            .ok_or_else(|| unreachable(target, "no sslrootcert= and no system CA bundle"))?
            .to_path_buf(),
    };
    // The CA decides who may pose as the database: root's alone, like
    // every other file the module trusts.
    // Read from the descriptor that was checked (see `trust`).
    let pem = crate::trust::read(&path, crate::trust::Holds::Settings)
        .map_err(|e| unreachable(target, format!("sslrootcert not trusted: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| unreachable(target, format!("sslrootcert {}: {e}", path.display())))?;
        roots
            .add(cert)
            .map_err(|e| unreachable(target, format!("sslrootcert {}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(unreachable(
            target,
            format!("sslrootcert {}: no certificate in it", path.display()),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unreachable(target, e))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl SqlStore<PgDriver> {
    /// Connects to an initialised database (totpctl): refused at once
    /// when its schema is not the one this build knows.
    pub fn open(settings: &PgSettings<'_>) -> Result<PgStore, StoreError> {
        let driver = PgDriver::connect(settings)?;
        schema_usable(driver.version()?, &driver.target, SCHEMA_VERSION)?;
        Ok(SqlStore::new(driver))
    }

    /// Connects for a login: the schema version is checked with the first
    /// statement (see `Session::send`), so the login's first read and the
    /// check are one round trip; nothing is read or written before the
    /// check has passed. A schema back to `store::LOGIN_OLDEST_SCHEMA`
    /// passes: a pool's nodes take a new module before the database is
    /// migrated.
    pub fn open_for_login(settings: &PgSettings<'_>) -> Result<PgStore, StoreError> {
        let driver = PgDriver::connect(settings)?;
        driver.session.borrow_mut().unchecked_schema = Some(driver.target.clone());
        Ok(SqlStore::new(driver))
    }

    /// Connects and creates or migrates the schema (`totpctl init`).
    pub fn create(settings: &PgSettings<'_>) -> Result<PgStore, StoreError> {
        let driver = PgDriver::connect(settings)?;
        driver.migrate()?;
        Ok(SqlStore::new(driver))
    }
}

impl PgDriver {
    /// Sends `sql` with `send` (`Session::send`, or `send_committing`):
    /// the rows it changed.
    fn count(
        &self,
        sql: &'static str,
        params: &[Param<'_>],
        send: fn(&mut Session, Last<'_>) -> Result<Answer, StoreError>,
    ) -> Result<u64, StoreError> {
        let typed: Vec<_> = params.iter().map(typed).collect();
        let sql = placeholders_as_dollars(sql);
        match send(&mut self.session.borrow_mut(), Last::Execute(&sql, &typed))? {
            Answer::Count(n) => Ok(n),
            _ => Err(StoreError::Column {
                column: 0,
                expected: "a row count",
            }),
        }
    }

    fn connect(settings: &PgSettings<'_>) -> Result<PgDriver, StoreError> {
        let target = settings.target.url.clone();
        let mut config = client_config(settings.target);
        let millis = settings.timeout.as_millis();
        // TCP_USER_TIMEOUT fails a write the peer does not acknowledge in
        // time; keepalives notice a peer that is gone while we wait for it.
        config
            .connect_timeout(settings.timeout)
            .tcp_user_timeout(settings.timeout)
            .keepalives(true)
            .keepalives_idle(settings.timeout)
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(
                u32::try_from(settings.timeout.as_secs())
                    .unwrap_or(3)
                    .max(1),
            )
            // synchronous_commit=on whatever the role or database defaults
            // to: a claim must be on disk when it returns (a site's `off`
            // lost HOTP claims in a server crash; found by an attack).
            .options(format!(
                "-c statement_timeout={millis} -c lock_timeout={millis} \
                 -c idle_in_transaction_session_timeout={} -c synchronous_commit=on",
                millis.saturating_mul(10)
            ));
        let _password: Zeroizing<String>;
        if let Some(file) = settings.password_file {
            let password = crate::trust::read_secret_file(file).map_err(|mut e| {
                e.path = format!("db_password_file {}", e.path);
                StoreError::Untrusted(e)
            })?;
            config.password(password.as_bytes());
            _password = password;
        }
        let transport = match &settings.target.tls {
            PgTls::Disable => Transport::Plain,
            PgTls::VerifyFull { root_cert } => {
                Transport::VerifiedTls(Box::new(tls_config(&target, root_cert.as_deref())?))
            }
        };
        let session = connect_within(config, transport, settings.timeout, &target)?;
        Ok(PgDriver {
            session: RefCell::new(session),
            target,
        })
    }

    /// The schema version in the database (0 when it has no schema yet).
    /// One round trip: a database without the meta table answers
    /// `undefined_table`, which means no schema (outside a transaction the
    /// error leaves nothing behind).
    fn version(&self) -> Result<i64, StoreError> {
        self.session.borrow_mut().read_version()
    }

    /// Applies the missing migrations in one transaction, holding an
    /// advisory lock so two `totpctl init` runs cannot both apply a step.
    fn migrate(&self) -> Result<(), StoreError> {
        let mut session = self.session.borrow_mut();
        let Session {
            runtime, client, ..
        } = &mut *session;
        let client = client
            .as_mut()
            .ok_or_else(|| unreachable(&self.target, "closed"))?;
        runtime.block_on(async {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS pam_totp_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            )
            .await?;
            let found: i64 = match tx
                .query_opt(
                    "SELECT value FROM pam_totp_meta WHERE key = 'schema_version'",
                    &[],
                )
                .await?
            {
                Some(row) => shared_version(row.try_get(0)?),
                None => 0,
            };
            if found > SCHEMA_VERSION {
                return Err(StoreError::SchemaTooNew {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            for (to, sql) in MIGRATIONS.iter().filter(|(to, _)| *to > found) {
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO pam_totp_meta (key, value) VALUES ('schema_version', $1)
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[to],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

/// The client library's configuration, field by field from the parsed URL
/// (the library never parses the URL: see `location`). The TLS mode is set
/// in `connect_within`, with the connector, so the two cannot disagree.
fn client_config(target: &PgTarget) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config.user(&target.user);
    if let Some(dbname) = &target.dbname {
        config.dbname(dbname);
    }
    for host in &target.hosts {
        match host {
            PgHost::Tcp { name, port } => {
                config.host(name).port(*port);
            }
            PgHost::Socket { dir, port } => {
                config.host_path(dir).port(*port);
            }
        }
    }
    if let Some(name) = &target.application_name {
        config.application_name(name);
    }
    if target.read_write {
        config.target_session_attrs(TargetSessionAttrs::ReadWrite);
    }
    config
}

/// How the bytes travel: in clear (`sslmode=disable`, said explicitly) or
/// in TLS that is required and verified (`sslmode=verify-full`).
enum Transport {
    Plain,
    VerifiedTls(Box<rustls::ClientConfig>),
}

/// The reason for a failed connect; with verify-full a failed or declined
/// TLS handshake is named as such (nothing was sent in clear: the library
/// gives up before the start-up message).
fn connect_failure(e: &tokio_postgres::Error, tls: bool) -> String {
    let text = describe(e);
    // tokio-postgres has no public error kind; its TLS kind reads so.
    if tls && text.starts_with("error performing TLS handshake") {
        format!("TLS refused (sslmode=verify-full; nothing sent unencrypted): {text}")
    } else {
        text
    }
}

/// Connects, giving up after `timeout` whatever the server does. The
/// client library bounds only the TCP connect by its own timeout; a server
/// (or a proxy, or a firewall) that accepts the connection and then never
/// answers would hold the login forever in the start-up exchange. So the
/// connect runs on a thread of its own and the login waits for it at most
/// `timeout`; a connect that is given up finishes or fails on that thread
/// and is dropped (the sshd child ends soon after a denied login anyway).
///
/// With TLS the library's mode is `Require`: a server that answers the
/// SSLRequest with "no" ends the connect (its default, `Prefer`, would go
/// on in plain text and hand the start-up message and the password to
/// whoever answered). Without TLS the mode is `Disable`: no SSLRequest.
fn connect_within(
    mut config: tokio_postgres::Config,
    transport: Transport,
    timeout: Duration,
    target: &str,
) -> Result<Session, StoreError> {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("pam_totp-db".to_string())
        .spawn(move || {
            let _ = done.send(connect_session(&mut config, transport));
        })
        .map_err(|e| unreachable(target, format!("cannot start the connect: {e}")))?;
    match result.recv_timeout(timeout) {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(reason)) => Err(unreachable(target, reason)),
        Err(_) => Err(unreachable(
            target,
            format!("no answer within db_timeout ({} s)", timeout.as_secs()),
        )),
    }
}

/// The connect itself (on `connect_within`'s thread): a current-thread
/// runtime, the connection, and its task spawned on that runtime (it runs
/// whenever the session waits for an answer).
fn connect_session(
    config: &mut tokio_postgres::Config,
    transport: Transport,
) -> Result<Session, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the client's runtime: {e}"))?;
    let (client, connection) = match transport {
        Transport::Plain => {
            let (client, connection) = runtime
                .block_on(config.ssl_mode(SslMode::Disable).connect(NoTls))
                .map_err(|e| connect_failure(&e, false))?;
            let task = runtime.spawn(async move {
                let _ = connection.await;
            });
            (client, task)
        }
        Transport::VerifiedTls(tls) => {
            let (client, connection) = runtime
                .block_on(
                    config
                        .ssl_mode(SslMode::Require)
                        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(*tls)),
                )
                .map_err(|e| connect_failure(&e, true))?;
            let task = runtime.spawn(async move {
                let _ = connection.await;
            });
            (client, task)
        }
    };
    Ok(Session {
        runtime,
        client: Some(client),
        connection: Some(connection),
        deferred: Vec::new(),
        in_transaction: false,
        unchecked_schema: None,
        durable: false,
    })
}

/// The error with its cause, e.g. "error connecting to server: Connection
/// refused (os error 111)" or "db error: FATAL: password authentication
/// failed for user \"totp\"".
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    if let Some(db) = e.as_db_error() {
        text = format!("{}: {}", db.severity(), db.message());
    } else {
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text = format!("{text}: {cause_text}");
            }
            source = cause.source();
        }
    }
    if e.is_closed() {
        text.push_str(" (connection closed)");
    }
    text
}

/// One column of a result row.
fn read_value(row: &tokio_postgres::Row, column: usize) -> Result<Value, StoreError> {
    let wanted = row.columns().get(column).map(|c| c.type_().clone());
    let value = match wanted {
        Some(Type::INT8) => row
            .try_get::<_, Option<i64>>(column)?
            .map_or(Value::Null, Value::Int),
        Some(Type::INT4) => row
            .try_get::<_, Option<i32>>(column)?
            .map_or(Value::Null, |v| Value::Int(i64::from(v))),
        Some(Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR) => row
            .try_get::<_, Option<String>>(column)?
            .map_or(Value::Null, Value::Text),
        Some(Type::BYTEA) => row
            .try_get::<_, Option<Vec<u8>>>(column)?
            .map_or(Value::Null, |v| Value::Blob(Zeroizing::new(v))),
        _ => Value::Unsupported("a column type the store does not use"),
    };
    Ok(value)
}

/// A parameter and the type it is sent as.
fn typed<'p>(param: &'p Param<'_>) -> (&'p (dyn ToSql + Sync), Type) {
    match param {
        Param::Int(v) => (v, Type::INT8),
        Param::OptInt(v) => (v, Type::INT8),
        Param::Text(v) => (v, Type::TEXT),
        Param::OptText(v) => (v, Type::TEXT),
        Param::Blob(v) => (v, Type::BYTEA),
    }
}

impl Driver for PgDriver {
    fn execute(&self, sql: &'static str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        self.count(sql, params, Session::send)
    }

    /// The statement and the `COMMIT` in one round trip.
    fn execute_and_commit(
        &self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<u64, StoreError> {
        self.count(sql, params, Session::send_committing)
    }

    fn writes_in_with(&self) -> bool {
        true
    }

    /// Inside a transaction the write waits for the next statement that
    /// needs an answer, or the commit, and goes out with it: one round trip
    /// for all of them (through a pooler a round trip is most of a login's
    /// time). Outside one it runs at once: there every statement is its
    /// own transaction, and a later one must not run after an earlier one
    /// failed.
    fn execute_later(&self, sql: &'static str, params: &[Param<'_>]) -> Result<(), StoreError> {
        let mut session = self.session.borrow_mut();
        if !session.in_transaction {
            drop(session);
            return self.execute(sql, params).map(|_| ());
        }
        let owned = params.iter().map(OwnedParam::of).collect();
        session
            .deferred
            .push(Deferred::Typed(placeholders_as_dollars(sql), owned));
        Ok(())
    }

    fn query(&self, sql: &'static str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let typed: Vec<_> = params.iter().map(typed).collect();
        let sql = placeholders_as_dollars(sql);
        let rows = match self.session.borrow_mut().send(Last::Query(&sql, &typed))? {
            Answer::Rows(rows) => rows,
            _ => Vec::new(),
        };
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|column| read_value(row, column))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Row)
            })
            .collect()
    }

    /// Sends nothing yet: the `BEGIN` (and the advisory lock of a
    /// `Hold::User`) go out with the transaction's first statement that
    /// needs an answer, whose error is then theirs if they failed.
    fn begin(&self, hold: Hold<'_>) -> Result<(), StoreError> {
        // READ COMMITTED whatever the database or role defaults to: under
        // REPEATABLE READ a transaction's snapshot is taken by its first
        // statement, before the advisory lock it waits for is granted, so
        // the guess reservation would decide on stale counts.
        // Durable commits whatever the role defaults to, also through a
        // pooler that drops the connection's startup options.
        let begin = match hold {
            Hold::Rows | Hold::User(..) => {
                "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit = on"
            }
            Hold::RowsLazily => {
                "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit = off"
            }
            Hold::Snapshot => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
            // Locked in the order every delete takes them (a token row,
            // then its trigger's insert); enrollments only read
            // `retired_keys` before they write a token.
            Hold::AllKeys => {
                "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit = on; \
                 LOCK TABLE tokens, retired_keys IN EXCLUSIVE MODE"
            }
        };
        let mut session = self.session.borrow_mut();
        session.deferred.clear();
        session.deferred.push(Deferred::Batch(begin));
        session.in_transaction = true;
        if let Hold::User(_, Purpose::Enrollment) = hold {
            // A change of a user's devices may write a sealed key: it
            // waits for a running `rekey` (`Hold::AllKeys`), and a rekey
            // for it, from its start, not from its first write (found by an
            // attack: an enrollment that had read when rekey began wrote
            // its key sealed the old way after). Before the user's lock, so
            // that nobody holds that lock while waiting for this one.
            session
                .deferred
                .push(Deferred::Batch("LOCK TABLE tokens IN ROW EXCLUSIVE MODE"));
        }
        if let Hold::User(user, purpose) = hold {
            // A transaction-scoped advisory lock on (user, purpose): the
            // same user's decisions of one kind wait for each other on
            // every node of the pool; different users never do.
            session.deferred.push(Deferred::Typed(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, $2))".to_string(),
                vec![
                    OwnedParam::Text(Some(user.to_string())),
                    OwnedParam::Int(Some(purpose as i64)),
                ],
            ));
        }
        Ok(())
    }

    /// Sends the deferred writes with the `COMMIT`; done only when every
    /// one of them succeeded (after a failed one the server turns the
    /// `COMMIT` into a rollback, and the failure is what is reported).
    fn commit(&self) -> Result<(), StoreError> {
        let mut session = self.session.borrow_mut();
        // Still in the transaction while its COMMIT goes out (so `send`
        // makes no transaction around it); ended after, whatever the answer.
        let done = session.send(Last::Batch("COMMIT"));
        session.in_transaction = false;
        done.map(|_| ())
    }

    fn rollback(&self) {
        let mut session = self.session.borrow_mut();
        let open = std::mem::replace(&mut session.in_transaction, false);
        let sent = !matches!(session.deferred.first(), Some(Deferred::Batch(_)));
        session.deferred.clear();
        // Nothing to roll back: no transaction (a COMMIT, even a failed
        // one, ends it; so does a failed schema check), or one of which
        // nothing was sent yet.
        if open && sent {
            let _ = session.exchange(None, Last::Batch("ROLLBACK"));
        }
    }

    /// Commits are durable when they return: the session asks for
    /// `synchronous_commit = on` at connect, over any role or database
    /// default, and so does every durable write transaction's `BEGIN` (a
    /// pooler drops the connection's start-up options). Inside `work`, a
    /// statement outside a transaction (an HOTP claim, a recovery code's
    /// burn) gets a transaction of its own with that `BEGIN`, in the same
    /// round trip. The module turns it off only for `Hold::RowsLazily`, a
    /// write whose loss only makes the store stricter.
    fn durably<T>(&self, work: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let before = std::mem::replace(&mut self.session.borrow_mut().durable, true);
        let done = work();
        self.session.borrow_mut().durable = before;
        done
    }

    fn claims_durable(&self) -> bool {
        true
    }

    fn schema_version(&self) -> Result<i64, StoreError> {
        self.version()
    }

    /// A row of `pam_totp_meta` (`sealing_key`).
    fn sealing_id(&self) -> Result<i64, StoreError> {
        match self.query(SEALING_ID_SQL, &[])?.first_mut() {
            Some(row) => row.int(0),
            None => Ok(0),
        }
    }

    fn set_sealing_id(&self, id: i64) -> Result<(), StoreError> {
        self.execute(SET_SEALING_ID_SQL, params![id]).map(|_| ())
    }

    /// One statement: a second writer's insert waits for the first's row,
    /// then keeps it and answers it.
    fn record_sealing_id(&self, id: i64) -> Result<i64, StoreError> {
        match self.query(RECORD_SEALING_ID_SQL, params![id])?.first_mut() {
            Some(row) => row.int(0),
            None => Ok(0),
        }
    }

    fn name(&self) -> &str {
        &self.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn target(text: &str) -> PgTarget {
        match super::super::StoreLocation::parse(text) {
            Ok(super::super::StoreLocation::Postgres(target)) => target,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn the_client_gets_the_decoded_parts() {
        let config = client_config(&target(
            "postgresql://to%74p@db1:5433,db2/my%20db?sslmode=verify-full&application_name=a%26b&target_session_attrs=read-write",
        ));
        assert_eq!(config.get_user(), Some("totp"));
        assert_eq!(config.get_dbname(), Some("my db"));
        assert_eq!(config.get_application_name(), Some("a&b"));
        assert_eq!(config.get_ports(), &[5433, 5432]);
        assert_eq!(config.get_hosts().len(), 2);
        assert_eq!(
            config.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        assert_eq!(config.get_password(), None);
    }

    /// A server that answers the SSLRequest with 'N': the connect fails,
    /// named, and the server receives the 8 bytes of the SSLRequest and
    /// nothing else (no start-up message, no password).
    #[test]
    fn verified_tls_never_falls_back_to_plain_text() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 8];
            stream.read_exact(&mut request).expect("SSLRequest");
            stream.write_all(b"N").expect("answer");
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
            (request, rest)
        });
        let mut config = client_config(&target(&format!(
            "postgresql://totp@127.0.0.1:{port}/totp?sslmode=verify-full"
        )));
        config.password("s3cret-password");
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let err = match connect_within(
            config,
            Transport::VerifiedTls(Box::new(tls)),
            Duration::from_secs(10),
            "t",
        ) {
            Ok(_) => panic!("connected without TLS"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("TLS refused (sslmode=verify-full")
                && err.contains("does not support TLS"),
            "{err}"
        );
        let (request, rest) = server.join().expect("server");
        assert_eq!(request, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
        assert!(rest.is_empty(), "sent after 'N': {rest:?}");
    }
}
