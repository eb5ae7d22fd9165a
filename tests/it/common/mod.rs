//! Shared harness for the integration tests: the real libpam through
//! pam_wrapper, pamtester as the application, oathtool as the oracle.

pub mod dirs;
pub mod postgres;
pub mod race;
pub mod rows;
pub mod sshd;
pub mod syslog;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

pub use dirs::{private_tempdir, trusted_tempdir};

/// The client address of the logins (TEST-NET-3, RFC 5737): in no trusted
/// network of any test.
pub const RHOST: &str = "203.0.113.7";

/// The RFC 4226/6238 test key (ASCII `12345678901234567890`), base32.
pub const KEY: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

pub const PAM_WRAPPER: &str = "/usr/lib/x86_64-linux-gnu/libpam_wrapper.so";
pub const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
pub const STDBUF: &str = "/usr/libexec/coreutils/libstdbuf.so";
/// nss_wrapper gives each World a passwd and group file of its own: the
/// module resolves every user through NSS (unknown names are denied), and
/// the tests' users need not exist on the machine.
pub const NSS_WRAPPER: &str = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so";

/// LD_PRELOAD for a pamtester run: pam_wrapper, nss_wrapper, then `extra`.
pub fn preload(extra: &[&str]) -> String {
    let mut all = vec![PAM_WRAPPER, NSS_WRAPPER];
    all.extend_from_slice(extra);
    all.join(" ")
}

/// Returns false (and says so) when a tool the test needs is missing, so a
/// developer without it sees a skip; under `CI=true` a missing tool fails
/// the test instead, so CI can never pass by skipping.
pub fn tools_present(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            if tool.starts_with('/') {
                !Path::new(tool).exists()
            } else {
                !Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .stdout(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            }
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "missing test tools: {} (scripts/test.sh installs them: see ensure_debian_packages there)",
        missing.join(", ")
    );
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("{message}; CI=true, so this is a failure, not a skip");
    }
    eprintln!("SKIPPED: {message}");
    false
}

/// The PAM harness tools every PAM test needs.
pub fn pam_tools_present() -> bool {
    tools_present(&["pamtester", "oathtool", PAM_WRAPPER, NSS_WRAPPER])
}

/// The target profile directory the running test binary was built into
/// (`target/<profile>/`: the test binary is `target/<profile>/deps/NAME-HASH`).
/// The workspace builds the module, totpctl and the examples there too.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running test binary");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps/", exe.display()))
}

/// The totpctl the workspace built (crate `totpctl/`), in the same profile
/// directory as the running test. Integration tests cannot name another
/// package's binary (`CARGO_BIN_EXE_*` is per package), so it is found here.
pub fn built_totpctl() -> PathBuf {
    let path = profile_dir().join("totpctl");
    assert!(
        path.exists(),
        "{} missing: totpctl is its own crate in the workspace; \
         run `cargo build --release --workspace` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The totpctl under test: `PAM_TOTP_TOTPCTL` if set (an installed one,
/// e.g. /usr/sbin/totpctl), otherwise the one the workspace built.
pub fn totpctl_path() -> PathBuf {
    std::env::var_os("PAM_TOTP_TOTPCTL")
        .map(PathBuf::from)
        .unwrap_or_else(built_totpctl)
}

/// The module under test: `PAM_TOTP_MODULE` if set (an installed module),
/// otherwise the newest `libpam_totp.so` cargo built in the test's profile
/// directory.
pub fn module_path() -> PathBuf {
    if let Ok(path) = std::env::var("PAM_TOTP_MODULE") {
        return PathBuf::from(path);
    }
    let dir = profile_dir();
    let candidates = [
        dir.join("libpam_totp.so"),
        dir.join("deps").join("libpam_totp.so"),
    ];
    candidates
        .iter()
        .filter_map(|p| {
            let modified = std::fs::metadata(p).and_then(|m| m.modified()).ok()?;
            Some((modified, p.clone()))
        })
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            panic!(
                "libpam_totp.so not found in {}: run `cargo build --release --workspace` first",
                dir.display()
            )
        })
}

/// Runs the totpctl under test with exactly `args` and waits for it.
pub fn run_totpctl<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Output {
    Command::new(totpctl_path())
        .args(args)
        .output()
        .expect("run totpctl")
}

/// examples/pam_worker: one login through the real libpam without
/// pam_wrapper (see its documentation).
pub fn pam_worker_path() -> PathBuf {
    let path = profile_dir().join("examples").join("pam_worker");
    assert!(
        path.exists(),
        "{} missing: run `cargo build --release --workspace --all-targets` first",
        path.display()
    );
    path
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A new sealing key at `path`, made by `totpctl keygen`.
pub fn keygen(path: &Path) {
    let out = Command::new(totpctl_path())
        .arg("keygen")
        .arg(path)
        .output()
        .expect("keygen");
    assert!(out.status.success(), "{out:?}");
}

/// A fresh base32 key from the OS random source.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("random");
    base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &bytes)
}

/// `oathtool --totp` for `secret`, at `at` (unix seconds) or now. `extra`
/// may name the hash with `--totp=sha256` and so on.
pub fn oathtool(secret: &str, at: Option<u64>, extra: &[&str]) -> String {
    let mut cmd = Command::new("oathtool");
    if !extra.iter().any(|a| a.starts_with("--totp")) {
        cmd.arg("--totp");
    }
    cmd.arg("-b");
    if let Some(t) = at {
        cmd.arg(format!("--now=@{t}"));
    }
    cmd.args(extra).arg(secret);
    let out = cmd.output().expect("run oathtool");
    assert!(
        out.status.success(),
        "oathtool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// `oathtool --hotp` for counter `counter`; `key` is base32, or hex when
/// `hex_key`.
pub fn oathtool_hotp(key: &str, counter: u64, hex_key: bool) -> String {
    let mut cmd = Command::new("oathtool");
    cmd.arg("--hotp");
    if !hex_key {
        cmd.arg("-b");
    }
    let out = cmd
        .args(["-c", &counter.to_string(), key])
        .output()
        .expect("run oathtool");
    assert!(out.status.success(), "oathtool --hotp failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A six-digit code that is certainly not `code`.
pub fn wrong_code(code: &str) -> String {
    if code == "000000" { "111111" } else { "000000" }.to_string()
}

/// A private world for one test: a store, a PAM service directory, and
/// pamtester runs against them through pam_wrapper.
pub struct World {
    pub dir: tempfile::TempDir,
    /// The SQLite store (unused when the world runs on PostgreSQL).
    pub db: PathBuf,
    pub services: PathBuf,
    /// Set when `PAM_TOTP_TEST_STORE=postgres`: the world's store is a
    /// database of its own private cluster.
    pub pg: PgStore,
    /// Only users added with `add_user` exist (see `strict_users`).
    strict_users: std::sync::atomic::AtomicBool,
    /// Serialises additions to the passwd and group files.
    users_lock: std::sync::Mutex<()>,
}

/// True if a PostgreSQL cluster can be started here; under CI=true a
/// missing server is a failure, elsewhere a skip (like the other tools).
pub fn postgres_present() -> bool {
    match postgres::bin_dir() {
        Some(dir) => tools_present(&[dir.join("initdb").to_str().unwrap_or("initdb"), "runuser"]),
        None => tools_present(&["/usr/lib/postgresql/*/bin/initdb (package postgresql)"]),
    }
}

/// The store at `url` (a database's, or a pooler's), opened with `open`
/// (`PgStore::open`, `open_for_login` or `create`), with `password` the
/// role's password file and `timeout` its `db_timeout`.
pub fn open_pg(
    url: &str,
    password: Option<&Path>,
    open: fn(
        &pam_totp::store::PgSettings<'_>,
    ) -> Result<pam_totp::store::PgStore, pam_totp::store::StoreError>,
    timeout: std::time::Duration,
) -> Result<pam_totp::store::PgStore, pam_totp::store::StoreError> {
    let Ok(pam_totp::store::StoreLocation::Postgres(target)) =
        pam_totp::store::StoreLocation::parse(url)
    else {
        panic!("not a PostgreSQL URL: {url}");
    };
    open(&pam_totp::store::PgSettings {
        target: &target,
        password_file: password,
        timeout,
    })
}

/// A server log without the warnings of a `BEGIN` inside a transaction
/// or a `COMMIT` outside one: every transaction of the store was one.
pub fn assert_no_stray_transaction_warnings(log: &str) {
    for stray in [
        "there is already a transaction in progress",
        "there is no transaction in progress",
    ] {
        assert!(!log.contains(stray), "the server warned: {stray}\n{log}");
    }
}

/// A test's PostgreSQL store: its private cluster and its database.
pub type PgStore = Option<(postgres::Cluster, postgres::Database)>;

/// A PostgreSQL store for this test when the run asks for one.
pub fn pg_store_if_asked() -> PgStore {
    on_postgres().then(|| {
        assert!(
            postgres_present(),
            "PAM_TOTP_TEST_STORE=postgres needs the postgresql package"
        );
        let cluster = postgres::Cluster::start();
        let database = cluster.database();
        (cluster, database)
    })
}

/// The module arguments naming a store: the SQLite file, or the database.
pub fn store_args(db: &Path, pg: &PgStore) -> String {
    match pg {
        None => format!("db={}", db.display()),
        Some((_, database)) => format!(
            "db={} db_password_file={}",
            database.url,
            database.password_file.display()
        ),
    }
}

/// totpctl's options naming the same store.
pub fn store_options(db: &Path, pg: &PgStore) -> Vec<String> {
    match pg {
        None => vec!["--db".into(), db.display().to_string()],
        Some((_, database)) => vec![
            "--db".into(),
            database.url.clone(),
            "--db-password-file".into(),
            database.password_file.display().to_string(),
        ],
    }
}

/// True when this test run puts every store on PostgreSQL
/// (`PAM_TOTP_TEST_STORE=postgres`; scripts/test.sh runs the suites twice).
pub fn on_postgres() -> bool {
    std::env::var("PAM_TOTP_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// For a test about the SQLite file itself: says so and returns true when
/// the run is on PostgreSQL (the test then has nothing to check).
pub fn sqlite_only(what: &str) -> bool {
    if on_postgres() {
        println!("SQLite-only, not run on PostgreSQL: {what}");
    }
    on_postgres()
}

/// What one pamtester run ended with.
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// True if the module logged a line containing `text` (pam_wrapper
    /// echoes pam_syslog to stderr as `SYSLOG(priority): message`).
    pub fn logged(&self, text: &str) -> bool {
        self.stderr
            .lines()
            .any(|l| l.contains("SYSLOG(") && l.contains(text))
    }

    /// True if the prompt was shown (pamtester writes it to stderr).
    pub fn prompted(&self, prompt: &str) -> bool {
        self.stderr.contains(prompt)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "success={} stdout={:?}\nstderr:\n{}",
            self.success, self.stdout, self.stderr
        )
    }
}

impl World {
    pub fn new() -> World {
        World::in_dir(
            trusted_tempdir(),
            on_postgres().then_some(postgres::Cluster::start as fn() -> postgres::Cluster),
        )
    }

    /// A world whose store is a SQLite file, whatever the run's backend.
    pub fn new_sqlite() -> World {
        World::in_dir(trusted_tempdir(), None)
    }

    /// A world whose store is a PostgreSQL database of its own cluster,
    /// whatever the run's backend.
    pub fn with_postgres() -> World {
        World::in_dir(trusted_tempdir(), Some(postgres::Cluster::start))
    }

    /// Like `with_postgres`, with the cluster also on 127.0.0.1 (for TLS).
    pub fn with_postgres_on_loopback() -> World {
        World::in_dir(
            trusted_tempdir(),
            Some(postgres::Cluster::start_on_loopback),
        )
    }

    /// A world outside /tmp, for tests that give their processes a private
    /// /tmp (see `store_faults.rs`): every world is (see `test_root`).
    pub fn outside_tmp() -> World {
        World::new()
    }

    /// A world in `dir`, its store a database of the cluster `start_pg`
    /// starts, or a SQLite file.
    fn in_dir(dir: tempfile::TempDir, start_pg: Option<fn() -> postgres::Cluster>) -> World {
        let db = dir.path().join("state").join("pam_totp.db");
        let services = dir.path().join("pam.d");
        std::fs::create_dir(&services).expect("mkdir");
        std::fs::write(
            services.join("other"),
            "auth required pam_deny.so\naccount required pam_deny.so\n",
        )
        .expect("other");
        let pg = start_pg.map(|start| {
            if !on_postgres() {
                assert!(postgres_present(), "needs the postgresql package");
            }
            let cluster = start();
            let database = cluster.database();
            (cluster, database)
        });
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        )
        .expect("passwd");
        std::fs::write(
            dir.path().join("group"),
            "root:x:0:\nusers:x:100:\nnogroup:x:65534:\n",
        )
        .expect("group");
        World {
            dir,
            db,
            services,
            pg,
            strict_users: std::sync::atomic::AtomicBool::new(false),
            users_lock: std::sync::Mutex::new(()),
        }
    }

    /// The World's passwd file (nss_wrapper's NSS_WRAPPER_PASSWD).
    pub fn passwd_file(&self) -> PathBuf {
        self.dir.path().join("passwd")
    }

    /// The World's group file (nss_wrapper's NSS_WRAPPER_GROUP).
    pub fn group_file(&self) -> PathBuf {
        self.dir.path().join("group")
    }

    /// From now on only users added with `add_user` exist; by default
    /// every name a test logs in with is added to the passwd file first.
    pub fn strict_users(&self) {
        self.strict_users
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Adds `user` to the World's passwd file (primary group `users`).
    pub fn add_user(&self, user: &str) {
        assert!(
            !user.is_empty() && !user.contains([':', '\n', '\0']),
            "not a passwd name: {user:?}"
        );
        let _guard = self.users_lock.lock().unwrap_or_else(|e| e.into_inner());
        let text = std::fs::read_to_string(self.passwd_file()).expect("passwd");
        if text.lines().any(|l| l.split(':').next() == Some(user)) {
            return;
        }
        let uid = 10_000 + text.lines().count();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.passwd_file())
            .expect("passwd");
        writeln!(file, "{user}:x:{uid}:100::/nonexistent:/usr/sbin/nologin").expect("passwd");
    }

    fn ensure_user(&self, user: &str) {
        if !self.strict_users.load(std::sync::atomic::Ordering::SeqCst)
            && !user.is_empty()
            && !user.contains([':', '\n', '\0'])
        {
            self.add_user(user);
        }
    }

    /// The module arguments that name this world's store.
    pub fn store_args(&self) -> String {
        store_args(&self.db, &self.pg)
    }

    /// The config-file lines that name this world's store.
    pub fn store_config_lines(&self) -> String {
        match &self.pg {
            None => format!("db = {}\n", self.db.display()),
            Some((_, database)) => format!(
                "db = {}\ndb_password_file = {}\n",
                database.url,
                database.password_file.display()
            ),
        }
    }

    /// totpctl's options for this world's store.
    pub fn store_options(&self) -> Vec<String> {
        store_options(&self.db, &self.pg)
    }

    /// Writes service `name` with `pam_totp.so db=<store> ARGS`, and
    /// `fail_delay=0` unless ARGS set it: libpam would otherwise hold every
    /// failure back 2 s (`default_fail_delay_holds_failures_back` checks that).
    pub fn service(&self, name: &str, args: &str) {
        let delay = if args.contains("fail_delay=") {
            ""
        } else {
            " fail_delay=0"
        };
        // A loaded 2-core CI machine can take seconds to start a database
        // connection; tests that are about the timeout set their own.
        let delay = if self.pg.is_some() && !args.contains("db_timeout=") {
            format!("{delay} db_timeout=20")
        } else {
            delay.to_string()
        };
        self.raw_service(
            name,
            &format!(
                "auth required {} {} {args}{delay}\n",
                module_path().display(),
                self.store_args()
            ),
        );
    }

    /// Writes service `name` as `service` does, plus the account line with
    /// the same arguments that commits what a login staged, and pam_permit
    /// standing in for the system's account modules (pam_totp's account
    /// line says PAM_IGNORE when it has nothing to commit).
    pub fn service_with_account(&self, name: &str, args: &str) {
        self.service(name, args);
        let auth = std::fs::read_to_string(self.services.join(name)).expect("service");
        let account = auth.replacen("auth ", "account ", 1);
        self.raw_service(
            name,
            &format!("{auth}{account}account required pam_permit.so\n"),
        );
    }

    /// One login through examples/pam_worker (the real libpam, this
    /// World's users through nss_wrapper), `answers` one per prompt, then
    /// the phases in `then` (`account,setcred`) whatever the result, as a
    /// careless application would. Returns what the worker printed.
    pub fn pam_worker(
        &self,
        service: &str,
        user: &str,
        rhost: &str,
        answers: &[&str],
        then: &str,
    ) -> String {
        self.pam_worker_with(service, user, rhost, answers, &[("PAM_WORKER_THEN", then)])
    }

    /// `pam_worker` with any of its PAM_WORKER_* settings.
    pub fn pam_worker_with(
        &self,
        service: &str,
        user: &str,
        rhost: &str,
        answers: &[&str],
        settings: &[(&str, &str)],
    ) -> String {
        self.ensure_user(user);
        let mut child = Command::new(pam_worker_path())
            .env("LD_PRELOAD", NSS_WRAPPER)
            .env("NSS_WRAPPER_PASSWD", self.passwd_file())
            .env("NSS_WRAPPER_GROUP", self.group_file())
            .envs(settings.iter().copied())
            .arg(&self.services)
            .args([service, user, rhost])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("pam_worker");
        if let Some(mut stdin) = child.stdin.take() {
            for answer in answers {
                let _ = writeln!(stdin, "{answer}");
            }
        }
        let out = child.wait_with_output().expect("pam_worker");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes service `name` with exactly `args` after the module path.
    pub fn service_exact(&self, name: &str, args: &str) {
        self.raw_service(
            name,
            &format!("auth required {} {args}\n", module_path().display()),
        );
    }

    pub fn raw_service(&self, name: &str, text: &str) {
        std::fs::write(self.services.join(name), text).expect("service file");
    }

    /// totpctl on this world's store, under this world's name service
    /// (nss_wrapper), as the module sees it: the user a test enrolls or
    /// lets enroll is added to the passwd file first, unless `strict_users`.
    pub fn totpctl(&self, args: &[&str]) -> Output {
        if let Some(at) = args
            .iter()
            .position(|a| matches!(*a, "enroll" | "allow-enroll"))
            && let Some(user) = args.get(at + 1)
            && !user.starts_with('-')
        {
            self.ensure_user(user);
        }
        let store = self.store_options();
        Command::new(totpctl_path())
            .args(store.iter().map(String::as_str).chain(args.iter().copied()))
            .env("LD_PRELOAD", NSS_WRAPPER)
            .env("NSS_WRAPPER_PASSWD", self.passwd_file())
            .env("NSS_WRAPPER_GROUP", self.group_file())
            .output()
            .expect("run totpctl")
    }

    /// Enrolls `user` with a fresh random key and returns the key.
    pub fn enroll(&self, user: &str) -> String {
        let secret = random_secret();
        let out = self.totpctl(&["enroll", user, "--secret", &secret]);
        assert!(
            out.status.success(),
            "enroll {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        secret
    }

    /// The pamtester command for one authentication, ready to spawn.
    pub fn pamtester_command(&self, service: &str, user: &str, rhost: Option<&str>) -> Command {
        self.pamtester_with(Command::new("pamtester"), service, user, rhost)
    }

    /// pamtester with line-buffered stdout (coreutils' libstdbuf, as
    /// `stdbuf -oL` would preload it), for tests that must read
    /// PAM_TEXT_INFO messages while pamtester still runs. Preloaded into
    /// pamtester itself: a `stdbuf` process in between would start
    /// pam_wrapper too and, replaced by exec, leave its /tmp/pam.X behind.
    pub fn pamtester_command_unbuffered(
        &self,
        service: &str,
        user: &str,
        rhost: Option<&str>,
    ) -> Command {
        let mut cmd = self.pamtester_with(Command::new("pamtester"), service, user, rhost);
        cmd.env("LD_PRELOAD", preload(&[STDBUF]))
            .env("_STDBUF_O", "L");
        cmd
    }

    fn pamtester_with(
        &self,
        mut cmd: Command,
        service: &str,
        user: &str,
        rhost: Option<&str>,
    ) -> Command {
        self.ensure_user(user);
        cmd.env("LD_PRELOAD", preload(&[]))
            .env("NSS_WRAPPER_PASSWD", self.passwd_file())
            .env("NSS_WRAPPER_GROUP", self.group_file())
            .env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", &self.services)
            .env("PAM_WRAPPER_DEBUGLEVEL", "3")
            .arg("-v");
        if let Some(rhost) = rhost {
            cmd.args(["-I", &format!("rhost={rhost}")]);
        }
        cmd.args([service, user, "authenticate"]);
        // Like sshd, run the account phase after a successful
        // authentication when the service has an account stack: that is
        // where what pam_totp staged (an enrollment at login, a grace) is
        // committed.
        let text = std::fs::read_to_string(self.services.join(service)).unwrap_or_default();
        if text.lines().any(|l| l.trim_start().starts_with("account")) {
            cmd.arg("acct_mgmt");
        }
        cmd
    }

    /// Runs one authentication with `answer` on stdin.
    pub fn login(&self, service: &str, user: &str, rhost: Option<&str>, answer: &str) -> Run {
        let run = run_with_stdin(self.pamtester_command(service, user, rhost), answer);
        if self.module_never_ran(service, &run) {
            return run_with_stdin(self.pamtester_command(service, user, rhost), answer);
        }
        run
    }

    /// A failed run of a service whose first auth line is pam_totp with no
    /// log line at all: the module logs one line for every end, so it
    /// never ran. Under load another process's pam_wrapper can remove this
    /// one's copy of the service files between pam_start and
    /// pam_authenticate (seen in CI beside the syslog and pty suites).
    /// Nothing was claimed or counted, so the login may run again.
    fn module_never_ran(&self, service: &str, run: &Run) -> bool {
        let first_auth = std::fs::read_to_string(self.services.join(service))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.trim_start().starts_with("auth"))
                    .map(str::to_string)
            });
        let ours_first = first_auth.is_some_and(|l| l.contains("pam_totp"));
        if ours_first && !run.success && !run.stderr.contains("SYSLOG(") {
            eprintln!(
                "{service}: the module never ran (pam_wrapper lost its files), running again"
            );
            return true;
        }
        false
    }

    /// Like `login`, with the clock of the process frozen at `at`.
    pub fn login_at(
        &self,
        at: u64,
        service: &str,
        user: &str,
        rhost: Option<&str>,
        answer: &str,
    ) -> Run {
        self.login_at_in(at, service, user, rhost, answer, |cmd| cmd)
    }

    /// `login_at` on a machine that has been up for a month
    /// (`up_for_a_month`), for tests of long periods or wide windows: the
    /// boot fence refuses every step up to `window` after the boot's, which
    /// with 3600 s steps is hours after this machine (or CI's) booted.
    pub fn login_at_long_after_boot(
        &self,
        at: u64,
        service: &str,
        user: &str,
        rhost: Option<&str>,
        answer: &str,
    ) -> Run {
        self.login_at_in(at, service, user, rhost, answer, up_for_a_month)
    }

    fn login_at_in(
        &self,
        at: u64,
        service: &str,
        user: &str,
        rhost: Option<&str>,
        answer: &str,
        wrap: fn(Command) -> Command,
    ) -> Run {
        let command = || {
            let mut cmd = self.pamtester_command(service, user, rhost);
            cmd.env("LD_PRELOAD", preload(&[FAKETIME]))
                .env("FAKETIME", format!("@{}", utc_for_faketime(at)))
                .env("TZ", "UTC");
            wrap(cmd)
        };
        let run = run_with_stdin(command(), answer);
        if self.module_never_ran(service, &run) {
            return run_with_stdin(command(), answer);
        }
        run
    }
}

/// `cmd` in a time namespace of its own whose clock since boot reads a
/// month more (`unshare --time --boottime`; sysinfo's uptime follows it,
/// the wall clock does not), so `auth::before_boot` fences off no step a
/// test uses however recently this machine booted. The preloads reach
/// `cmd`'s program alone, through `env`, not unshare.
pub fn up_for_a_month(cmd: Command) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped.args(["--time", "--boottime", "2592000", "env"]);
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) if key == "LD_PRELOAD" => {
                let mut assignment = std::ffi::OsString::from("LD_PRELOAD=");
                assignment.push(value);
                wrapped.arg(assignment);
            }
            Some(value) => {
                wrapped.env(key, value);
            }
            None => {
                wrapped.env_remove(key);
            }
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped.arg(cmd.get_program()).args(cmd.get_args());
    wrapped
}

pub fn run_with_stdin(mut cmd: Command, answer: &str) -> Run {
    for attempt in 1..=3 {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pamtester");
        if let Some(mut stdin) = child.stdin.take() {
            // The module may not read at all (trusted network): ignore EPIPE.
            let _ = stdin.write_all(answer.as_bytes());
            let _ = stdin.write_all(b"\n");
        }
        let out = child.wait_with_output().expect("wait pamtester");
        let run = Run {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        // pam_wrapper failing to set up its own state directory is the
        // harness failing, not the module: run again, but only if the login
        // never reached the module. pam_wrapper can complain about one slot
        // and go on with another; running such a login again would replay
        // its code and see it refused as used.
        // Under load another process's pam_wrapper can also take this one's
        // slot for stale and remove it under it: pamtester then ends before
        // it performs anything, with pam_wrapper's lines only.
        let never_performed = !run.success
            && !run.stderr.contains("performing operation")
            && run.stderr.contains("PWRAP_")
            && run.stdout.trim().is_empty();
        let wrapper_failed = (never_performed
            || run.stderr.lines().any(|l| {
                l.contains("PWRAP_ERROR")
                    && (l.contains("pam_wrapper config dir")
                        || l.contains("Failed to copy config files"))
            }))
            && !run.stderr.contains("performing operation");
        if !wrapper_failed {
            return run;
        }
        eprintln!("pam_wrapper could not start (attempt {attempt}), running again");
    }
    panic!("pam_wrapper could not start three times in a row");
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) as libfaketime's FAKETIME wants it.
pub fn utc_for_faketime(unix: u64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{unix}"), "+%Y-%m-%d %H:%M:%S"])
        .output()
        .expect("date");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}
