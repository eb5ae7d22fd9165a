//! The shared store: one PostgreSQL database for a pool of login nodes.
//!
//! The same semantics as the SQLite store, statement for statement: the
//! step claim is one conditional `UPDATE` whose row count decides (under
//! READ COMMITTED a second updater of the same row waits for the first to
//! commit and then re-checks the `WHERE` on the new row, so exactly one of
//! any number of racers changes it); failure counts are one upsert; every
//! multi-row change is one transaction. Commits are durable when they
//! return (PostgreSQL's `synchronous_commit` default), so no boot fence is
//! needed for this store.
//!
//! Client: the pure-Rust `postgres` crate (on tokio-postgres, with a
//! current-thread runtime: no extra threads in the sshd child) and rustls
//! for TLS. libpq would bring libpq5 with OpenSSL, GSSAPI and LDAP
//! libraries into every sshd child; this keeps the module self-contained
//! (the cost is measured in the README's Performance section).
//!
//! Every login is bounded by `db_timeout`: the connect (TCP, TLS, auth:
//! `connect_within`), each statement (`statement_timeout`, `lock_timeout`),
//! unacknowledged writes on the socket (`TCP_USER_TIMEOUT`) and a peer that
//! vanished (keepalives). Not bounded: a server whose kernel keeps
//! acknowledging while the server process hangs in the middle of a
//! statement after a good connect.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use postgres::config::{SslMode, TargetSessionAttrs};
use postgres::{Client, GenericClient, NoTls, Transaction};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use zeroize::Zeroizing;

use super::location::{PgHost, PgTarget, PgTls, SYSTEM_CA_FILES};
use super::{
    Claim, EnrollMode, Enrollment, Grant, Kind, RecoveryCount, Reservation, StagedRow, Store,
    StoreError, StoredRecovery, Token, TokenInfo,
};
use crate::otp::{Algorithm, Params};
use crate::ratelimit::{Failures, Limits, USER_WINDOW_SECS};
use crate::recovery::RecoveryHash;

/// Schema migrations, as for SQLite: `MIGRATIONS[i]` takes the database from
/// version `i` to `i + 1`; the version is a row of `pam_totp_meta`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: everything the SQLite store has at its version 3.
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
    // 1 -> 2: grace periods per (user, IP address).
    r#"CREATE TABLE grace (
        "user" TEXT   NOT NULL,
        ip     TEXT   NOT NULL,
        until  BIGINT NOT NULL,
        PRIMARY KEY ("user", ip)
    );"#,
    // 2 -> 3: grants staged until the whole auth stack has succeeded (see
    // the SQLite store's migration 4 -> 5).
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
    // 3 -> 4: each failed code of a user with its time, for the per-user
    // ceiling (see the SQLite store's migration 5 -> 6).
    r#"CREATE TABLE guesses (
        id     BIGSERIAL PRIMARY KEY,
        "user" TEXT   NOT NULL,
        at     BIGINT NOT NULL
    );
    CREATE INDEX guesses_user ON guesses ("user", at);
    INSERT INTO guesses ("user", at)
        SELECT f."user", f.last FROM failures f, generate_series(1, LEAST(f.count, 10000));"#,
];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Serialises `totpctl init` runs on one database (any fixed number).
const MIGRATION_LOCK: i64 = 0x7061_6d5f_746f_7470; // "pam_totp"

pub struct PgStore {
    client: RefCell<Client>,
    /// Seals token keys on the way in and opens them on the way out.
    sealer: Option<Arc<crate::seal::Sealer>>,
    /// For error messages: the URL (it never holds a password).
    target: String,
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

impl PgStore {
    /// Connects to an initialised database (the login path and totpctl).
    pub fn open(settings: &PgSettings<'_>) -> Result<PgStore, StoreError> {
        let store = Self::connect(settings)?;
        match store.schema_version()? {
            0 => Err(StoreError::NotInitialised(store.target.clone())),
            found if found > SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            }),
            found if found < SCHEMA_VERSION => Err(StoreError::NotInitialised(format!(
                "{} (schema version {found}; run `totpctl init` to migrate)",
                store.target
            ))),
            _ => Ok(store),
        }
    }

    /// Connects and creates or migrates the schema (`totpctl init`).
    pub fn create(settings: &PgSettings<'_>) -> Result<PgStore, StoreError> {
        let store = Self::connect(settings)?;
        store.migrate()?;
        Ok(store)
    }

    fn connect(settings: &PgSettings<'_>) -> Result<PgStore, StoreError> {
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
            .options(&format!(
                "-c statement_timeout={millis} -c lock_timeout={millis} \
                 -c idle_in_transaction_session_timeout={}",
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
        let client = connect_within(config, transport, settings.timeout, &target)?;
        Ok(PgStore {
            client: RefCell::new(client),
            sealer: None,
            target,
        })
    }

    /// Token keys are sealed with this key (or stored plain without one).
    pub fn with_sealer(mut self, sealer: Option<Arc<crate::seal::Sealer>>) -> Self {
        self.sealer = sealer;
        self
    }

    /// The schema version in the database (0 when it has no schema yet).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let mut client = self.client.borrow_mut();
        let exists: bool = client
            .query_one("SELECT to_regclass('pam_totp_meta') IS NOT NULL", &[])?
            .get(0);
        if !exists {
            return Ok(0);
        }
        Ok(client
            .query_opt(
                "SELECT value FROM pam_totp_meta WHERE key = 'schema_version'",
                &[],
            )?
            .map_or(0, |row| row.get(0)))
    }

    /// Applies the missing migrations in one transaction, holding an
    /// advisory lock so two `totpctl init` runs cannot both apply a step.
    fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS pam_totp_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        )?;
        let found: i64 = tx
            .query_opt(
                "SELECT value FROM pam_totp_meta WHERE key = 'schema_version'",
                &[],
            )?
            .map_or(0, |row| row.get(0));
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO pam_totp_meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&(from as i64 + 1)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Loads a dump into an empty store in one transaction: all or nothing.
    /// Returns (tokens, recovery codes, enroll windows, failure counts).
    pub fn load(&self, dump: &super::Dump) -> Result<(usize, usize, usize, usize), StoreError> {
        self.write(|tx| {
            let existing: i64 = tx.query_one("SELECT COUNT(*) FROM tokens", &[])?.get(0);
            if existing > 0 {
                return Err(StoreError::NotEmpty(format!(
                    "{} already holds {existing} token(s); migrate only into an empty store",
                    self.target
                )));
            }
            for token in &dump.tokens {
                insert_token(tx, self.sealer.as_deref(), token)?;
            }
            for (user, lookup, hash, created, used) in &dump.recovery {
                tx.execute(
                    r#"INSERT INTO recovery_codes ("user", lookup, hash, created, used)
                       VALUES ($1, $2, $3, $4, $5)"#,
                    &[user, lookup, hash, created, used],
                )?;
            }
            for (user, until, by) in &dump.windows {
                tx.execute(
                    r#"INSERT INTO enroll_windows ("user", until, opened_by) VALUES ($1, $2, $3)"#,
                    &[user, until, by],
                )?;
            }
            for (user, rhost, count, last) in &dump.failures {
                tx.execute(
                    r#"INSERT INTO failures ("user", rhost, count, last) VALUES ($1, $2, $3, $4)"#,
                    &[user, rhost, count, last],
                )?;
                // The ceiling's failures, at the source's last time.
                tx.execute(
                    r#"INSERT INTO guesses ("user", at)
                       SELECT $1, $2 FROM generate_series(1, LEAST($3, 10000))"#,
                    &[user, last, count],
                )?;
            }
            Ok((
                dump.tokens.len(),
                dump.recovery.len(),
                dump.windows.len(),
                dump.failures.len(),
            ))
        })
    }

    /// Runs `work` in one transaction: all or nothing.
    fn write<T>(
        &self,
        work: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.client.borrow_mut();
        // READ COMMITTED whatever the database or role defaults to: under
        // REPEATABLE READ a transaction's snapshot is taken by its first
        // statement, before the advisory lock it waits for is granted, so
        // the guess reservation would decide on stale counts.
        let mut tx = client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::ReadCommitted)
            .start()?;
        let value = work(&mut tx)?;
        tx.commit()?;
        Ok(value)
    }

    fn execute(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        Ok(self.client.borrow_mut().execute(sql, params)?)
    }
}

/// The client library's configuration, field by field from the parsed URL
/// (the library never parses the URL: see `location`). The TLS mode is set
/// in `connect_within`, with the connector, so the two cannot disagree.
fn client_config(target: &PgTarget) -> postgres::Config {
    let mut config = postgres::Config::new();
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
fn connect_failure(e: &postgres::Error, tls: bool) -> String {
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
    mut config: postgres::Config,
    transport: Transport,
    timeout: Duration,
    target: &str,
) -> Result<Client, StoreError> {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("pam_totp-db".to_string())
        .spawn(move || {
            let client = match transport {
                Transport::Plain => config
                    .ssl_mode(SslMode::Disable)
                    .connect(NoTls)
                    .map_err(|e| connect_failure(&e, false)),
                Transport::VerifiedTls(tls) => config
                    .ssl_mode(SslMode::Require)
                    .connect(tokio_postgres_rustls::MakeRustlsConnect::new(*tls))
                    .map_err(|e| connect_failure(&e, true)),
            };
            let _ = done.send(client);
        })
        .map_err(|e| unreachable(target, format!("cannot start the connect: {e}")))?;
    match result.recv_timeout(timeout) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(reason)) => Err(unreachable(target, reason)),
        Err(_) => Err(unreachable(
            target,
            format!("no answer within db_timeout ({} s)", timeout.as_secs()),
        )),
    }
}

/// The error with its cause, e.g. "error connecting to server: Connection
/// refused (os error 111)" or "db error: FATAL: password authentication
/// failed for user \"totp\"".
fn describe(e: &postgres::Error) -> String {
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

fn step_to_sql(step: u64) -> Result<i64, StoreError> {
    i64::try_from(step).map_err(|_| StoreError::StepOutOfRange(step))
}

fn invalid(user: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidRow {
        user: user.to_string(),
        reason: reason.into(),
    }
}

const COLUMNS: &str =
    r#"id, "user", device, kind, algorithm, digits, period, created, confirmed, last_step"#;

fn info(row: &postgres::Row) -> Result<TokenInfo, StoreError> {
    let user: String = row.try_get(1)?;
    let kind: String = row.try_get(3)?;
    let algorithm: String = row.try_get(4)?;
    let kind: Kind = kind.parse().map_err(|e| invalid(&user, e))?;
    let algorithm: Algorithm = algorithm.parse().map_err(|e| invalid(&user, e))?;
    let digits: i64 = row.try_get(5)?;
    let period: i64 = row.try_get(6)?;
    let params = Params {
        algorithm,
        digits: u32::try_from(digits).map_err(|_| invalid(&user, "digits"))?,
        period: u64::try_from(period).map_err(|_| invalid(&user, "period"))?,
    };
    params.validate().map_err(|e| invalid(&user, e))?;
    let last_step: Option<i64> = row.try_get(9)?;
    let last_step = match last_step {
        Some(s) => Some(u64::try_from(s).map_err(|_| invalid(&user, "last_step"))?),
        None => None,
    };
    Ok(TokenInfo {
        id: row.try_get(0)?,
        device: row.try_get(2)?,
        kind,
        params,
        created: row.try_get(7)?,
        confirmed: row.try_get(8)?,
        last_step,
        user,
    })
}

fn insert_token(
    tx: &mut Transaction<'_>,
    sealer: Option<&crate::seal::Sealer>,
    token: &Token,
) -> Result<(), StoreError> {
    let last_step = token.last_step.map(step_to_sql).transpose()?;
    let secret = super::checked_secret(sealer, token)?;
    let result = tx.execute(
        r#"INSERT INTO tokens
             ("user", device, kind, secret, algorithm, digits, period, created, confirmed, last_step)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT ("user", device) DO NOTHING"#,
        &[
            &token.user,
            &token.device,
            &token.kind.as_str(),
            &secret.as_slice(),
            &token.params.algorithm.as_str(),
            &i64::from(token.params.digits),
            &step_to_sql(token.params.period)?,
            &token.created,
            &token.confirmed,
            &last_step,
        ],
    )?;
    if result == 0 {
        return Err(StoreError::AlreadyEnrolled {
            user: token.user.clone(),
            device: token.device.clone(),
        });
    }
    Ok(())
}

fn insert_recovery(
    tx: &mut Transaction<'_>,
    user: &str,
    codes: &[RecoveryHash],
) -> Result<(), StoreError> {
    tx.execute(r#"DELETE FROM recovery_codes WHERE "user" = $1"#, &[&user])?;
    let now = super::unix_now();
    for code in codes {
        tx.execute(
            r#"INSERT INTO recovery_codes ("user", lookup, hash, created) VALUES ($1, $2, $3, $4)"#,
            &[&user, &code.lookup, &code.phc, &now],
        )?;
    }
    Ok(())
}

fn delete_user_rows(tx: &mut Transaction<'_>, user: &str) -> Result<usize, StoreError> {
    let tokens = tx.execute(r#"DELETE FROM tokens WHERE "user" = $1"#, &[&user])?;
    for table in [
        "recovery_codes",
        "enroll_windows",
        "failures",
        "guesses",
        "grace",
        "staged",
    ] {
        tx.execute(
            &format!(r#"DELETE FROM {table} WHERE "user" = $1"#),
            &[&user],
        )?;
    }
    Ok(tokens as usize)
}

/// The failure counts for (user, rhost) at `now`, through a client or
/// inside a transaction.
fn read_failures(
    client: &mut impl GenericClient,
    user: &str,
    rhost: &str,
    now: i64,
) -> Result<Failures, StoreError> {
    let row = client.query_one(
        r#"SELECT
             COALESCE((SELECT count FROM failures WHERE "user" = $1 AND rhost = $2), 0),
             COALESCE((SELECT last FROM failures WHERE "user" = $1 AND rhost = $2), 0),
             (SELECT COUNT(*) FROM guesses WHERE "user" = $1 AND at >
                 (SELECT COALESCE(MAX(at), 0) FROM guesses WHERE "user" = $1) - $3),
             (SELECT COALESCE(MAX(at), 0) FROM guesses WHERE "user" = $1)"#,
        &[&user, &rhost, &USER_WINDOW_SECS],
    )?;
    Ok(Failures::new(
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
        now,
    ))
}

/// One failed code from (user, rhost) at `now` (see the SQLite store's
/// `count_failure`).
fn count_failure(
    client: &mut impl GenericClient,
    user: &str,
    rhost: &str,
    now: i64,
) -> Result<(), StoreError> {
    client.execute(
        r#"INSERT INTO failures ("user", rhost, count, last) VALUES ($1, $2, 1, $3)
           ON CONFLICT ("user", rhost) DO UPDATE SET count = failures.count + 1, last = $3"#,
        &[&user, &rhost, &now],
    )?;
    client.execute(
        r#"DELETE FROM guesses WHERE "user" = $1 AND at <= $2"#,
        &[&user, &(now - 2 * USER_WINDOW_SECS)],
    )?;
    client.execute(
        r#"INSERT INTO guesses ("user", at) VALUES ($1, $2)"#,
        &[&user, &now],
    )?;
    Ok(())
}

/// Serialises the rate-limit reservations of one user across every node
/// (a transaction-scoped advisory lock; seed 1 keeps it apart from the
/// enrollment lock of the same user).
const FAILURES_LOCK_SEED: i64 = 1;

fn claim(changed: u64) -> Claim {
    if changed == 1 {
        Claim::Claimed
    } else {
        Claim::AlreadyUsed
    }
}

impl Store for PgStore {
    fn schema_version(&self) -> Result<i64, StoreError> {
        PgStore::schema_version(self)
    }

    fn totp_claims_durable(&self) -> bool {
        true
    }

    fn tokens(&self, user: &str) -> Result<Vec<Token>, StoreError> {
        let rows = self.client.borrow_mut().query(
            &format!(r#"SELECT {COLUMNS}, secret FROM tokens WHERE "user" = $1 ORDER BY device"#),
            &[&user],
        )?;
        let mut tokens = Vec::with_capacity(rows.len());
        for row in &rows {
            let info = info(row)?;
            let secret = Zeroizing::new(row.try_get::<_, Vec<u8>>(10)?);
            let secret = super::loaded_secret(self.sealer.as_deref(), user, &info.device, secret)?;
            tokens.push(Token::from_info(info, secret));
        }
        Ok(tokens)
    }

    fn claim_step(&self, id: i64, _kind: Kind, step: u64) -> Result<Claim, StoreError> {
        let step = step_to_sql(step)?;
        Ok(claim(self.execute(
            "UPDATE tokens SET last_step = $2
             WHERE id = $1 AND confirmed IS NOT NULL
               AND (last_step IS NULL OR last_step < $2)",
            &[&id, &step],
        )?))
    }

    fn enroll(&self, enrollments: &[Enrollment], mode: EnrollMode) -> Result<(), StoreError> {
        self.write(|tx| {
            for e in enrollments {
                let (user, device) = (&e.token.user, &e.token.device);
                match mode {
                    EnrollMode::Add => {}
                    EnrollMode::ReplaceDevice => {
                        tx.execute(
                            r#"DELETE FROM tokens WHERE "user" = $1 AND device = $2"#,
                            &[user, device],
                        )?;
                    }
                    EnrollMode::ReplaceUser => {
                        delete_user_rows(tx, user)?;
                    }
                }
                insert_token(tx, self.sealer.as_deref(), &e.token)?;
                if let Some(codes) = &e.recovery {
                    insert_recovery(tx, user, codes)?;
                }
            }
            Ok(())
        })
    }

    fn confirm(&self, id: i64, at: i64, step: u64) -> Result<Claim, StoreError> {
        let step = step_to_sql(step)?;
        Ok(claim(self.execute(
            "UPDATE tokens SET confirmed = $2, last_step = $3
             WHERE id = $1 AND confirmed IS NULL
               AND (last_step IS NULL OR last_step < $3)",
            &[&id, &at, &step],
        )?))
    }

    fn delete_user(&self, user: &str) -> Result<usize, StoreError> {
        self.write(|tx| delete_user_rows(tx, user))
    }

    fn delete_device(&self, user: &str, device: &str) -> Result<bool, StoreError> {
        Ok(self.execute(
            r#"DELETE FROM tokens WHERE "user" = $1 AND device = $2"#,
            &[&user, &device],
        )? == 1)
    }

    fn list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = self.client.borrow_mut().query(
            &format!(r#"SELECT {COLUMNS} FROM tokens ORDER BY "user", device"#),
            &[],
        )?;
        rows.iter().map(info).collect()
    }

    fn replace_recovery(&self, user: &str, codes: &[RecoveryHash]) -> Result<(), StoreError> {
        self.write(|tx| insert_recovery(tx, user, codes))
    }

    fn recovery_candidates(
        &self,
        user: &str,
        lookup: &str,
    ) -> Result<Vec<StoredRecovery>, StoreError> {
        let rows = self.client.borrow_mut().query(
            r#"SELECT id, hash FROM recovery_codes
               WHERE "user" = $1 AND lookup = $2 AND used IS NULL ORDER BY id"#,
            &[&user, &lookup],
        )?;
        rows.iter()
            .map(|row| {
                Ok(StoredRecovery {
                    id: row.try_get(0)?,
                    phc: row.try_get(1)?,
                })
            })
            .collect()
    }

    fn burn_recovery(&self, id: i64, at: i64) -> Result<Claim, StoreError> {
        Ok(claim(self.execute(
            "UPDATE recovery_codes SET used = $2 WHERE id = $1 AND used IS NULL",
            &[&id, &at],
        )?))
    }

    fn recovery_count(&self, user: &str) -> Result<RecoveryCount, StoreError> {
        let row = self.client.borrow_mut().query_one(
            r#"SELECT COUNT(*) FILTER (WHERE used IS NULL), COUNT(*) FILTER (WHERE used IS NOT NULL)
               FROM recovery_codes WHERE "user" = $1"#,
            &[&user],
        )?;
        let (unused, used): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok(RecoveryCount {
            unused: usize::try_from(unused).unwrap_or(0),
            used: usize::try_from(used).unwrap_or(0),
        })
    }

    fn open_enroll_window(&self, user: &str, until: i64, by: &str) -> Result<(), StoreError> {
        self.execute(
            r#"INSERT INTO enroll_windows ("user", until, opened_by) VALUES ($1, $2, $3)
               ON CONFLICT ("user") DO UPDATE SET until = EXCLUDED.until, opened_by = EXCLUDED.opened_by"#,
            &[&user, &until, &by],
        )?;
        Ok(())
    }

    fn enroll_window(&self, user: &str, now: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .client
            .borrow_mut()
            .query_opt(
                r#"SELECT until FROM enroll_windows WHERE "user" = $1 AND until > $2"#,
                &[&user, &now],
            )?
            .map(|row| row.get(0)))
    }

    fn failures(&self, user: &str, rhost: &str, now: i64) -> Result<Failures, StoreError> {
        read_failures(&mut *self.client.borrow_mut(), user, rhost, now)
    }

    fn record_failure(&self, user: &str, rhost: &str, now: i64) -> Result<Failures, StoreError> {
        self.write(|tx| count_failure(tx, user, rhost, now))?;
        self.failures(user, rhost, now)
    }

    fn unlock(&self, user: &str) -> Result<usize, StoreError> {
        self.write(|tx| {
            tx.execute(r#"DELETE FROM guesses WHERE "user" = $1"#, &[&user])?;
            Ok(tx.execute(r#"DELETE FROM failures WHERE "user" = $1"#, &[&user])? as usize)
        })
    }

    fn failure_sources(&self, user: &str) -> Result<Vec<(String, u64, i64)>, StoreError> {
        let rows = self.client.borrow_mut().query(
            r#"SELECT rhost, count, last FROM failures WHERE "user" = $1 ORDER BY last DESC"#,
            &[&user],
        )?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    u64::try_from(row.try_get::<_, i64>(1)?).unwrap_or(0),
                    row.try_get(2)?,
                ))
            })
            .collect()
    }

    fn enroll_at_login(&self, token: &Token, step: u64) -> Result<(), StoreError> {
        let step = step_to_sql(step)?;
        self.write(|tx| {
            // Serialise enrollments of this user across nodes.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                &[&token.user],
            )?;
            let existing: i64 = tx
                .query_one(
                    r#"SELECT COUNT(*) FROM tokens WHERE "user" = $1"#,
                    &[&token.user],
                )?
                .get(0);
            if existing > 0 {
                return Err(StoreError::AlreadyEnrolled {
                    user: token.user.clone(),
                    device: token.device.clone(),
                });
            }
            insert_token(tx, self.sealer.as_deref(), token)?;
            tx.execute(
                r#"UPDATE tokens SET last_step = $3 WHERE "user" = $1 AND device = $2"#,
                &[&token.user, &token.device, &step],
            )?;
            tx.execute(
                r#"DELETE FROM enroll_windows WHERE "user" = $1"#,
                &[&token.user],
            )?;
            Ok(())
        })
    }

    fn grant_grace(&self, user: &str, ip: &str, until: i64) -> Result<(), StoreError> {
        self.execute(
            r#"INSERT INTO grace ("user", ip, until) VALUES ($1, $2, $3)
               ON CONFLICT ("user", ip) DO UPDATE SET until = EXCLUDED.until"#,
            &[&user, &ip, &until],
        )?;
        Ok(())
    }

    fn grace_until(&self, user: &str, ip: &str, now: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .client
            .borrow_mut()
            .query_opt(
                r#"SELECT until FROM grace WHERE "user" = $1 AND ip = $2 AND until > $3"#,
                &[&user, &ip, &now],
            )?
            .map(|row| row.get(0)))
    }

    fn forget_grace(&self, user: &str) -> Result<usize, StoreError> {
        Ok(self.execute(r#"DELETE FROM grace WHERE "user" = $1"#, &[&user])? as usize)
    }

    fn reserve_guess(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &Limits,
    ) -> Result<Reservation, StoreError> {
        self.write(|tx| {
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, $2))",
                &[&user, &FAILURES_LOCK_SEED],
            )?;
            let before = read_failures(tx, user, rhost, now)?;
            if let Some(lock) = crate::ratelimit::lock_at(&before, limits, now) {
                return Ok(Reservation::Locked(lock));
            }
            count_failure(tx, user, rhost, now)?;
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
        self.write(|tx| {
            tx.execute(
                r#"DELETE FROM guesses WHERE id =
                       (SELECT id FROM guesses WHERE "user" = $1 AND at = $2 LIMIT 1)"#,
                &[&user, &at],
            )?;
            if clear {
                tx.execute(
                    r#"DELETE FROM failures WHERE "user" = $1 AND rhost = $2"#,
                    &[&user, &rhost],
                )?;
                return Ok(());
            }
            tx.execute(
                r#"UPDATE failures SET count = count - 1 WHERE "user" = $1 AND rhost = $2"#,
                &[&user, &rhost],
            )?;
            tx.execute(
                r#"DELETE FROM failures WHERE "user" = $1 AND rhost = $2 AND count <= 0"#,
                &[&user, &rhost],
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
        self.write(|tx| {
            tx.execute("DELETE FROM staged WHERE expires <= $1", &[&now])?;
            match grant {
                Grant::Enroll { token, step } => {
                    let secret = super::checked_secret(self.sealer.as_deref(), token)?;
                    tx.execute(
                        r#"INSERT INTO staged (nonce, "user", expires, what, device, kind, secret,
                               algorithm, digits, period, created, step)
                           VALUES ($1, $2, $3, 'enroll', $4, $5, $6, $7, $8, $9, $10, $11)"#,
                        &[
                            &nonce,
                            &user,
                            &expires,
                            &token.device,
                            &token.kind.as_str(),
                            &secret.as_slice(),
                            &token.params.algorithm.as_str(),
                            &i64::from(token.params.digits),
                            &step_to_sql(token.params.period)?,
                            &token.created,
                            &step_to_sql(*step)?,
                        ],
                    )?;
                }
                Grant::Grace { ip, until } => {
                    tx.execute(
                        r#"INSERT INTO staged (nonce, "user", expires, what, ip, until)
                           VALUES ($1, $2, $3, 'grace', $4, $5)"#,
                        &[&nonce, &user, &expires, &ip, &until],
                    )?;
                }
            }
            Ok(())
        })
    }

    fn take_staged(&self, nonce: &str, user: &str, now: i64) -> Result<Option<Grant>, StoreError> {
        let row = self.client.borrow_mut().query_opt(
            r#"DELETE FROM staged WHERE nonce = $1
               RETURNING 0::BIGINT, "user", device, kind, algorithm, digits, period, created,
                         created, step, secret, what, ip, until, expires"#,
            &[&nonce],
        )?;
        let Some(row) = row else {
            return Ok(None);
        };
        let what: String = row.try_get(11)?;
        let token = match what.as_str() {
            "enroll" => Some((info(&row)?, Zeroizing::new(row.try_get::<_, Vec<u8>>(10)?))),
            _ => None,
        };
        StagedRow {
            owner: row.try_get(1)?,
            expires: row.try_get(14)?,
            what,
            ip: row.try_get(12)?,
            until: row.try_get(13)?,
            token,
        }
        .grant(self.sealer.as_deref(), user, now)
    }

    fn secret_rows(&self) -> Result<Vec<super::SecretRow>, StoreError> {
        let rows = self.client.borrow_mut().query(
            r#"SELECT id, "user", device, secret FROM tokens ORDER BY id"#,
            &[],
        )?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get(2)?,
                    Zeroizing::new(row.try_get(3)?),
                ))
            })
            .collect()
    }

    fn replace_secrets(&self, rows: &[(i64, Vec<u8>)]) -> Result<usize, StoreError> {
        self.write(|tx| {
            let mut changed = 0;
            for (id, blob) in rows {
                changed +=
                    tx.execute("UPDATE tokens SET secret = $2 WHERE id = $1", &[id, blob])?;
            }
            Ok(changed as usize)
        })
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
