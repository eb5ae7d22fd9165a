//! A private PostgreSQL cluster for one test: initdb into a temporary
//! directory (as the `postgres` user, which the server package creates),
//! password (SCRAM) authentication for every role but the superuser, and a
//! database per store with its own role and a root-only password file, as a
//! site would set it up for pam_totp. (Also compiled into the bench,
//! benches/pam_bench.rs, for its PostgreSQL column.)
//!
//! The server listens where the test owns the address. `Cluster::start`:
//! only on a Unix socket in the cluster's private directory, no TCP at all.
//! `Cluster::start_on_loopback` (TLS needs TCP; the bench measures it): also
//! on 127.0.0.1, on a port the server binds itself, tried again on another
//! port when it is taken (never probed free and handed over later).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The server binaries of the newest installed PostgreSQL.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

pub struct Cluster {
    /// Owned by postgres: the data directory, the socket, the server log.
    dir: tempfile::TempDir,
    /// Root's alone: the password files the module reads.
    secrets: tempfile::TempDir,
    bin: PathBuf,
    /// The socket's name (`.s.PGSQL.<port>` in `dir`) and, when `loopback`,
    /// the TCP port on 127.0.0.1 the server holds.
    pub port: u16,
    /// Also listening on 127.0.0.1 (`start_on_loopback`).
    loopback: bool,
}

/// The port of a socket-only cluster: only the socket's file name, in a
/// directory of its own, so every cluster can use it.
const SOCKET_ONLY_PORT: u16 = 5432;

/// Who connects how: the superuser (`psql` run as postgres) over the socket
/// by peer identity, every other role (the stores') with its password, over
/// the socket or loopback.
const PG_HBA: &str = "\
local all postgres peer
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
";

/// A port for a server on loopback (a cluster, sshd): random, below Linux's
/// ephemeral range (32768-60999), so that it is not the local end of some
/// connection or a port another test's `bind(0)` holds. The server binds it
/// itself; the caller starts it again on another when it is taken.
pub fn random_port() -> u16 {
    let mut bytes = [0u8; 2];
    getrandom::fill(&mut bytes).expect("random");
    20_000 + u16::from_le_bytes(bytes) % 12_000
}

/// One database for one store: its URL (no password in it) and the file
/// with its role's password.
#[derive(Clone)]
pub struct Database {
    pub name: String,
    pub url: String,
    pub password_file: PathBuf,
}

fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd
}

fn check(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Cluster {
    /// A cluster on a Unix socket in its private directory only.
    pub fn start() -> Cluster {
        let cluster = Cluster::init(false);
        cluster.start_server();
        cluster
    }

    /// A cluster also listening on 127.0.0.1: the server binds a random
    /// port itself; when that port is taken it fails to start and is
    /// started again on another one.
    pub fn start_on_loopback() -> Cluster {
        let mut cluster = Cluster::init(true);
        for attempt in 1..=20 {
            cluster.port = random_port();
            let logged_before = cluster.server_log().len();
            match cluster.try_start_server() {
                Ok(()) => return cluster,
                Err(failure) => {
                    let log = cluster.server_log();
                    let new_lines = log.get(logged_before..).unwrap_or(&log);
                    if !new_lines.contains("Address already in use") {
                        panic!("pg_ctl start: {failure}\nserver log:\n{new_lines}");
                    }
                    eprintln!(
                        "port {} taken (attempt {attempt}), starting on another",
                        cluster.port
                    );
                }
            }
        }
        panic!("no free loopback port for PostgreSQL in 20 tries");
    }

    fn init(loopback: bool) -> Cluster {
        let bin = bin_dir().expect("postgresql server binaries");
        let dir = tempfile::Builder::new()
            .prefix("pam_totp_pg")
            .tempdir()
            .expect("tmp");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        // Password files are trusted only under root-owned directories.
        let secrets = super::dirs::private_tempdir();
        fs::set_permissions(secrets.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
        let data = dir.path().join("data");
        let superuser_pw = dir.path().join("superuser.pw");
        fs::write(&superuser_pw, "superuser-password\n").expect("pw");
        check(
            "chown",
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .output()
                .expect("chown"),
        );
        check(
            "initdb",
            as_postgres(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ])
                .arg(format!("--pwfile={}", superuser_pw.display()))
                .args(["-E", "UTF8", "--no-sync"])
                .output()
                .expect("initdb"),
        );
        fs::write(data.join("pg_hba.conf"), PG_HBA).expect("pg_hba.conf");
        Cluster {
            dir,
            secrets,
            bin,
            port: SOCKET_ONLY_PORT,
            loopback,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again) where it listened before and waits until
    /// it accepts connections.
    pub fn start_server(&self) {
        if let Err(failure) = self.try_start_server() {
            panic!(
                "pg_ctl start: {failure}\nserver log:\n{}",
                self.server_log()
            );
        }
    }

    fn try_start_server(&self) -> Result<(), String> {
        let listen = if self.loopback { "127.0.0.1" } else { "''" };
        let options = format!(
            "-c listen_addresses={listen} -p {} -k {} -c max_connections=300 -c fsync=on \
             -c log_connections=on",
            self.port,
            self.dir.path().display()
        );
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &options, "-w", "-t", "30", "start"])
            .output()
            .expect("pg_ctl");
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Stops the server at once (as a crash or an admin would).
    pub fn stop_server(&self) {
        check(
            "pg_ctl stop",
            as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .args(["-m", "fast", "-w", "stop"])
                .output()
                .expect("pg_ctl"),
        );
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: no
    /// shutdown checkpoint, WAL not yet flushed is lost).
    pub fn crash_server(&self) {
        check(
            "pg_ctl stop -m immediate",
            as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .output()
                .expect("pg_ctl"),
        );
    }

    /// Runs SQL as the superuser over the socket; returns stdout.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = check(
            "psql",
            as_postgres(&self.bin.join("psql"))
                .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
                .arg("-h")
                .arg(self.dir.path())
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    db,
                    "-c",
                    sql,
                ])
                .output()
                .expect("psql"),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `pg_dump` of one database, as a DBA's backup would hold it.
    pub fn dump(&self, db: &str) -> Vec<u8> {
        check(
            "pg_dump",
            as_postgres(&self.bin.join("pg_dump"))
                .arg("-h")
                .arg(self.dir.path())
                .args(["-p", &self.port.to_string(), "-U", "postgres", db])
                .output()
                .expect("pg_dump"),
        )
        .stdout
    }

    /// A new database owned by a new role with a random password, and the
    /// root-only file holding that password.
    pub fn database(&self) -> Database {
        let n = DATABASES.fetch_add(1, Ordering::SeqCst);
        let name = format!("totp{}_{n}", std::process::id());
        let mut bytes = [0u8; 18];
        getrandom::fill(&mut bytes).expect("random");
        let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.psql(
            "postgres",
            &format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'"),
        );
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER {name}"));
        let password_file = self.secrets.path().join(format!("{name}.pw"));
        fs::write(&password_file, format!("{password}\n")).expect("pw file");
        fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600)).expect("chmod");
        let url = if self.loopback {
            format!(
                "postgresql://{name}@127.0.0.1:{}/{name}?sslmode=disable",
                self.port
            )
        } else {
            format!(
                "postgresql://{name}@/{name}?host={}&port={}&sslmode=disable",
                self.dir.path().display(),
                self.port
            )
        };
        Database {
            url,
            name,
            password_file,
        }
    }

    /// Turns TLS on with a server certificate for DNS name `localhost` only,
    /// signed by a new CA; returns the CA file (root's, for the module) and
    /// a second, unrelated CA that signed nothing here.
    pub fn enable_tls(&self) -> (PathBuf, PathBuf) {
        assert!(self.loopback, "TLS needs TCP: Cluster::start_on_loopback");
        let ssl = |args: &[&str]| {
            check(
                "openssl",
                Command::new("openssl")
                    .args(args)
                    .current_dir(self.dir.path())
                    .output()
                    .expect("openssl"),
            );
        };
        for ca in ["ca", "other-ca"] {
            ssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=pam_totp test {ca}"),
            ]);
        }
        ssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        fs::write(
            self.dir.path().join("san.ext"),
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .expect("ext");
        ssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        check(
            "chown",
            Command::new("chown")
                .args(["postgres:postgres", "server.key", "server.pem"])
                .current_dir(self.dir.path())
                .output()
                .expect("chown"),
        );
        fs::set_permissions(
            self.dir.path().join("server.key"),
            fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        let dir = self.dir.path().display();
        self.psql("postgres", "ALTER SYSTEM SET ssl = on");
        self.psql(
            "postgres",
            &format!("ALTER SYSTEM SET ssl_cert_file = '{dir}/server.pem'"),
        );
        self.psql(
            "postgres",
            &format!("ALTER SYSTEM SET ssl_key_file = '{dir}/server.key'"),
        );
        self.psql("postgres", "SELECT pg_reload_conf()");
        let mut cas = Vec::new();
        for ca in ["ca", "other-ca"] {
            let path = self.secrets.path().join(format!("{ca}.pem"));
            fs::copy(self.dir.path().join(format!("{ca}.pem")), &path).expect("copy ca");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
            cas.push(path);
        }
        (cas[0].clone(), cas[1].clone())
    }

    /// PgBouncer on a Unix socket in front of `db` (TLS to this cluster,
    /// which needs `start_on_loopback` and `enable_tls`), the way a pool of
    /// login nodes runs it: transaction pooling, root admitted by its
    /// kernel-checked identity (`peer`: no password file on the node), the
    /// pooler logging in to the server as the database's role over
    /// verify-full TLS. `ignore_startup_parameters = options`: the module's
    /// `-c statement_timeout=…` cannot pass a pooler, so the role carries
    /// its timeouts (`ALTER ROLE … SET`). Returns the URL the module names.
    pub fn pgbouncer(&self, db: &Database, ca: &Path) -> Pooler {
        let dir = self.dir.path().join(format!("pgbouncer-{}", db.name));
        fs::create_dir_all(&dir).expect("pooler dir");
        let password = fs::read_to_string(&db.password_file).expect("password");
        let password = password.trim();
        for (setting, value) in [("statement_timeout", "5s"), ("lock_timeout", "5s")] {
            self.psql(
                "postgres",
                &format!("ALTER ROLE {} SET {setting} = '{value}'", db.name),
            );
        }
        fs::copy(ca, dir.join("ca.pem")).expect("ca");
        let port = random_port();
        fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]
                 {name} = host=localhost port={server_port} dbname={name} user={name} password={password}
                 [pgbouncer]
                 listen_addr =
                 listen_port = {port}
                 unix_socket_dir = {dir}
                 unix_socket_mode = 0777
                 auth_type = hba
                 auth_hba_file = {dir}/hba.conf
                 auth_file = {dir}/users.txt
                 pool_mode = transaction
                 max_client_conn = 500
                 default_pool_size = 16
                 ignore_startup_parameters = options
                 server_tls_sslmode = verify-full
                 server_tls_ca_file = {dir}/ca.pem
                 logfile = {dir}/pgbouncer.log
                 pidfile = {dir}/pgbouncer.pid
",
                name = db.name,
                server_port = self.port,
                dir = dir.display(),
            ),
        )
        .expect("pgbouncer.ini");
        fs::write(
            dir.join("hba.conf"),
            "local all root peer
",
        )
        .expect("hba");
        fs::write(dir.join("users.txt"), "\"root\" \"\"\n").expect("users");
        check(
            "chown",
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .output()
                .expect("chown"),
        );
        check(
            "pgbouncer",
            Command::new("runuser")
                .args(["-u", "postgres", "--", "pgbouncer", "-d", "-q"])
                .arg(dir.join("pgbouncer.ini"))
                .output()
                .expect("pgbouncer (apt-get install pgbouncer)"),
        );
        let socket = dir.join(format!(".s.PGSQL.{port}"));
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        assert!(
            socket.exists(),
            "pgbouncer did not listen on {}",
            socket.display()
        );
        // Read now: the cluster's directory (and the pid file in it) may be
        // gone by the time the pooler is dropped.
        let pid = fs::read_to_string(dir.join("pgbouncer.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        Pooler {
            url: format!(
                "postgresql://root@/{}?host={}&port={port}&sslmode=disable",
                db.name,
                dir.display()
            ),
            dir,
            pid,
        }
    }

    pub fn server_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

/// A running PgBouncer (`Cluster::pgbouncer`), stopped on drop.
pub struct Pooler {
    /// What the module names: the pooler's socket, no password.
    pub url: String,
    dir: PathBuf,
    pid: Option<u32>,
}

impl Pooler {
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = Command::new("kill").arg(pid.to_string()).output();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
