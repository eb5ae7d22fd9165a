//! pam_totp against google-authenticator-libpam and pam_oath, in one run,
//! through the real libpam in-process (`pam_start_confdir` with a private
//! service directory), a conversation that answers the code, and a no-op
//! PAM_FAIL_DELAY callback so deliberate delays are not counted. Only
//! `pam_authenticate` is timed; state resets between logins are not.
//!
//!   cargo bench --bench pam_bench            (LOGINS=300 RACE_TRIALS=100 by default)
//!
//! Needs: libpam-google-authenticator, libpam-oath, oathtool (scripts/bench.sh
//! installs them). Prints one Markdown table with ratios.

use std::ffi::{CString, c_void};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libc::{c_char, c_int, c_uint};

#[path = "support/pam_ffi.rs"]
mod pam_ffi;

#[path = "../tests/it/common/dirs.rs"]
mod dirs;
// The bench starts a cluster and makes a database; the tests use the rest.
#[allow(dead_code)]
#[path = "../tests/it/common/postgres.rs"]
mod pg_cluster;

use pam_ffi::*;

const KEY_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const KEY_HEX: &str = "3132333435363738393031323334353637383930";
const RHOST: &str = "203.0.113.7";

/// Answers every prompt with the code `appdata` points to.
extern "C" fn answer(
    n: c_int,
    msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    let n = usize::try_from(n).unwrap_or(0);
    // SAFETY: libpam passes `n` messages and expects `n` responses allocated
    // with malloc (it frees them); appdata is the CString owned by `Login`.
    unsafe {
        let out = libc::calloc(n, std::mem::size_of::<PamResponse>()) as *mut PamResponse;
        for i in 0..n {
            let msg = *msgs.add(i);
            let style = (*msg).msg_style;
            if style == PAM_PROMPT_ECHO_OFF || style == PAM_PROMPT_ECHO_ON {
                (*out.add(i)).resp = libc::strdup(appdata as *const c_char);
            }
        }
        *resp = out;
    }
    PAM_SUCCESS
}

/// One PAM transaction: started (untimed), authenticated (timed), ended.
struct Login {
    pamh: *mut c_void,
    _code: Box<CString>,
    _conv: Box<PamConv>,
}

impl Login {
    fn start(confdir: &Path, user: &str, code: &str) -> Login {
        let code = Box::new(CString::new(code).expect("code"));
        let conv = Box::new(PamConv {
            conv: answer,
            appdata_ptr: code.as_ptr() as *mut c_void,
        });
        let service = CString::new("bench").expect("service");
        let user = CString::new(user).expect("user");
        let dir = CString::new(confdir.to_str().expect("path")).expect("dir");
        let rhost = CString::new(RHOST).expect("rhost");
        let mut pamh: *mut c_void = std::ptr::null_mut();
        // SAFETY: all pointers are valid C strings / structs that outlive the
        // handle (conv and code are boxed in the returned Login).
        unsafe {
            let rc = pam_start_confdir(
                service.as_ptr(),
                user.as_ptr(),
                &*conv,
                dir.as_ptr(),
                &mut pamh,
            );
            assert_eq!(rc, PAM_SUCCESS, "pam_start_confdir");
            pam_set_item(pamh, PAM_RHOST, rhost.as_ptr() as *const c_void);
            let delay: extern "C" fn(c_int, c_uint, *mut c_void) = no_delay;
            pam_set_item(pamh, PAM_FAIL_DELAY, delay as *const c_void);
        }
        Login {
            pamh,
            _code: code,
            _conv: conv,
        }
    }

    fn authenticate(&self) -> (bool, Duration) {
        let started = Instant::now();
        // SAFETY: the handle is live until `end`.
        let rc = unsafe { pam_authenticate(self.pamh, 0) };
        (rc == PAM_SUCCESS, started.elapsed())
    }

    fn end(self) {
        // SAFETY: ends the handle this Login started, once.
        unsafe {
            pam_end(self.pamh, PAM_SUCCESS);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Module {
    Ours,
    /// pam_totp with its store on PostgreSQL (a private cluster on loopback,
    /// password authentication, no TLS).
    OursPg,
    /// pam_totp through PgBouncer on a Unix socket (transaction pooling,
    /// peer identity), TLS from the pooler to the database.
    OursPgBouncer,
    GoogleAuthenticator,
    Oath,
}

impl Module {
    fn name(self) -> &'static str {
        match self {
            Module::Ours => "pam_totp",
            Module::OursPg => "pam_totp-postgresql",
            Module::OursPgBouncer => "pam_totp-pgbouncer",
            Module::GoogleAuthenticator => "google-authenticator",
            Module::Oath => "pam_oath",
        }
    }

    fn by_name(name: &str) -> Module {
        [
            Module::Ours,
            Module::OursPg,
            Module::OursPgBouncer,
            Module::GoogleAuthenticator,
            Module::Oath,
        ]
        .into_iter()
        .find(|m| m.name() == name)
        .unwrap_or(Module::Oath)
    }
}

/// A private service directory and state for one module.
struct Setup {
    /// Dropped (stopped) before the cluster it pools (fields drop in order).
    _pooler: Option<pg_cluster::Pooler>,
    module: Module,
    dir: PathBuf,
    pg: Option<(pg_cluster::Cluster, pg_cluster::Database)>,
}

fn totpctl() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("totpctl"))
        .expect("target dir")
}

/// The module as a site installs it (scripts/build-modules.sh, which
/// bench.sh runs): target/modules/pam_totp.so, the build without the
/// PostgreSQL client, which hands `postgresql://` stores to
/// pam_totp_postgresql.so beside it. Without that pair, the full build.
/// `PAM_TOTP_BENCH_MODULE` names another.
fn module_so() -> PathBuf {
    // Another build for an A/B run (`PAM_TOTP_BENCH_MODULE=/path/to/pam_totp.so`).
    if let Some(path) = std::env::var_os("PAM_TOTP_BENCH_MODULE") {
        return PathBuf::from(path);
    }
    let release = totpctl();
    let installed = release
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("modules").join("pam_totp.so"));
    match installed {
        Some(path) if path.exists() && path.with_file_name("pam_totp_postgresql.so").exists() => {
            path
        }
        _ => release.with_file_name("libpam_totp.so"),
    }
}

impl Setup {
    fn new(root: &Path, module: Module, users: usize) -> Setup {
        let dir = root.join(module.name());
        std::fs::create_dir_all(&dir).expect("dir");
        let pg = matches!(module, Module::OursPg | Module::OursPgBouncer).then(|| {
            let cluster = pg_cluster::Cluster::start_on_loopback();
            let database = cluster.database();
            (cluster, database)
        });
        let pooler = match (module, &pg) {
            (Module::OursPgBouncer, Some((cluster, database))) => {
                let (ca, _) = cluster.enable_tls();
                Some(cluster.pgbouncer(database, &ca))
            }
            _ => None,
        };
        let line = match (module, &pg) {
            (Module::OursPgBouncer, _) => format!(
                "auth required {} db={}\n",
                module_so().display(),
                pooler.as_ref().map_or("", |p| p.url.as_str())
            ),
            (Module::OursPg, Some((_, database))) => format!(
                "auth required {} db={} db_password_file={}\n",
                module_so().display(),
                database.url,
                database.password_file.display()
            ),
            (Module::Ours | Module::OursPg, _) => format!(
                "auth required {} db={}/state/totp.db\n",
                module_so().display(),
                dir.display()
            ),
            (Module::GoogleAuthenticator, _) => format!(
                "auth required pam_google_authenticator.so secret={}/ga/${{USER}} user=root allowed_perm=0600\n",
                dir.display()
            ),
            (Module::Oath, _) => format!(
                "auth required pam_oath.so usersfile={}/users.oath window=1\n",
                dir.display()
            ),
        };
        std::fs::write(dir.join("bench"), line).expect("service");
        let setup = Setup {
            module,
            dir,
            pg,
            _pooler: pooler,
        };
        setup.populate(users);
        setup
    }

    /// `users` users `u0…`, all with the same key (fine for timing).
    fn populate(&self, users: usize) {
        if let Some((cluster, database)) = &self.pg {
            let st = Command::new(totpctl())
                .args(["--db", &database.url, "--db-password-file"])
                .arg(&database.password_file)
                .arg("init")
                .stdout(Stdio::null())
                .status()
                .expect("init");
            assert!(st.success());
            cluster.psql(
                &database.name,
                &format!(
                    "TRUNCATE tokens, failures, guesses, recovery_codes, grace, staged; \
                     INSERT INTO tokens (\"user\", device, kind, secret, algorithm, digits, period, created, confirmed) \
                     SELECT 'u' || i, 'default', 'totp', '\\x{KEY_HEX}'::bytea, 'sha1', 6, 30, 0, 0 \
                     FROM generate_series(0, {}) AS i; ANALYZE tokens",
                    users - 1
                ),
            );
            return;
        }
        match self.module {
            Module::Ours | Module::OursPg | Module::OursPgBouncer => {
                let db = self.dir.join("state/totp.db");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
                }
                let st = Command::new(totpctl())
                    .arg("--db")
                    .arg(&db)
                    .arg("init")
                    .stdout(Stdio::null())
                    .status()
                    .expect("init");
                assert!(st.success());
                let conn = rusqlite::Connection::open(&db).expect("open");
                conn.execute_batch("BEGIN").expect("begin");
                let key = base32::decode(base32::Alphabet::Rfc4648 { padding: false }, KEY_B32)
                    .expect("key");
                for i in 0..users {
                    conn.execute(
                        "INSERT INTO tokens (user, device, kind, secret, algorithm, digits, period, created, confirmed)
                         VALUES (?1, 'default', 'totp', ?2, 'sha1', 6, 30, 0, 0)",
                        rusqlite::params![format!("u{i}"), key],
                    )
                    .expect("insert");
                }
                conn.execute_batch("COMMIT").expect("commit");
            }
            Module::GoogleAuthenticator => {
                let ga = self.dir.join("ga");
                std::fs::create_dir_all(&ga).expect("ga dir");
                for i in 0..users.min(256) {
                    self.reset_user(&format!("u{i}"));
                }
            }
            Module::Oath => {
                let mut text = String::with_capacity(users * 70);
                for i in 0..users {
                    text.push_str(&format!("HOTP/T30 u{i} - {KEY_HEX}\n"));
                }
                write_private(&self.dir.join("users.oath"), &text);
            }
        }
    }

    /// Forgets that `user` used any code (untimed, between logins).
    fn reset_user(&self, user: &str) {
        if let Some((cluster, database)) = &self.pg {
            cluster.psql(
                &database.name,
                &format!(
                    "UPDATE tokens SET last_step = NULL WHERE \"user\" = '{user}'; \
                     DELETE FROM failures WHERE \"user\" = '{user}'"
                ),
            );
            return;
        }
        match self.module {
            Module::Ours | Module::OursPg | Module::OursPgBouncer => {
                let conn =
                    rusqlite::Connection::open(self.dir.join("state/totp.db")).expect("open");
                // Like the module: leave the WAL as it is on close, so the
                // WAL grows and is checkpointed as it would be in service.
                conn.set_db_config(
                    rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                    true,
                )
                .expect("config");
                conn.execute("UPDATE tokens SET last_step = NULL WHERE user = ?1", [user])
                    .expect("reset");
                conn.execute("DELETE FROM failures WHERE user = ?1", [user])
                    .expect("reset");
            }
            Module::GoogleAuthenticator => write_private(
                &self.dir.join("ga").join(user),
                &format!("{KEY_B32}\n\" DISALLOW_REUSE\n\" TOTP_AUTH\n"),
            ),
            Module::Oath => {
                // pam_oath rewrote the user's line with its last OTP: restore it.
                let path = self.dir.join("users.oath");
                let text = std::fs::read_to_string(&path).expect("users");
                let fresh = format!("HOTP/T30 {user} - {KEY_HEX}");
                let out: Vec<String> = text
                    .lines()
                    .map(|l| {
                        if l.split_whitespace().nth(1) == Some(user) {
                            fresh.clone()
                        } else {
                            l.to_string()
                        }
                    })
                    .collect();
                write_private(&path, &(out.join("\n") + "\n"));
            }
        }
    }
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// The current code from oathtool, asked once per 30 s step: a fork right
/// before each timed login would write-protect the whole process (copy on
/// write) and charge the next login a page fault for every page it writes.
fn code_now() -> String {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let step = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("time")
            .as_secs()
            / 30
    };
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        loop {
            let before = step();
            if cache.0 == before {
                return cache.1.clone();
            }
            let out = Command::new("oathtool")
                .args(["--totp", "-b", KEY_B32])
                .output()
                .expect("oathtool");
            // A code asked across a step boundary could be either step's.
            if step() == before {
                *cache = (
                    before,
                    String::from_utf8_lossy(&out.stdout).trim().to_string(),
                );
            }
        }
    })
}

fn wrong(code: &str) -> String {
    if code == "000000" { "111111" } else { "000000" }.to_string()
}

struct Stats {
    median: Duration,
    p99: Duration,
    ok: usize,
    n: usize,
}

fn stats(mut samples: Vec<(bool, Duration)>) -> Stats {
    let n = samples.len();
    let ok = samples.iter().filter(|(s, _)| *s).count();
    samples.sort_by_key(|(_, d)| *d);
    Stats {
        median: samples[n / 2].1,
        p99: samples[(n * 99 / 100).min(n - 1)].1,
        ok,
        n,
    }
}

fn pam_start_cost(setup: &Setup, logins: usize) -> Stats {
    let samples = (0..logins)
        .map(|_| {
            let started = Instant::now();
            let login = Login::start(&setup.dir, "u0", "0");
            let took = started.elapsed();
            login.end();
            (true, took)
        })
        .collect();
    stats(samples)
}

fn accept(setup: &Setup, user: &str, logins: usize) -> Stats {
    whole_logins(setup, user, logins).auth
}

/// A right code's login timed in its three calls, as an sshd child makes
/// them: pam_start (loads the module), pam_authenticate, pam_end.
struct Parts {
    start: Stats,
    auth: Stats,
    end: Stats,
    whole: Stats,
}

fn whole_logins(setup: &Setup, user: &str, logins: usize) -> Parts {
    let (mut start, mut auth, mut end, mut whole) = (vec![], vec![], vec![], vec![]);
    for _ in 0..logins {
        setup.reset_user(user);
        let code = code_now();
        let started = Instant::now();
        let login = Login::start(&setup.dir, user, &code);
        let s = started.elapsed();
        let (ok, a) = login.authenticate();
        let before_end = Instant::now();
        login.end();
        let e = before_end.elapsed();
        start.push((true, s));
        auth.push((ok, a));
        end.push((true, e));
        whole.push((ok, s + a + e));
    }
    Parts {
        start: stats(start),
        auth: stats(auth),
        end: stats(end),
        whole: stats(whole),
    }
}

fn pam_once() -> PathBuf {
    totpctl().with_file_name("examples").join("pam_once")
}

/// One login per fresh process (examples/pam_once: libpam and libc, no
/// more), spawn to exit, the shape sshd runs PAM in; also the three calls
/// as the child timed them.
fn fresh_processes(setup: &Setup, user: &str, logins: usize) -> (Parts, Stats) {
    let (mut start, mut auth, mut end, mut whole, mut process) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..logins {
        setup.reset_user(user);
        let run = once(&setup.dir, user);
        start.push((true, run.start));
        auth.push((run.ok, run.auth));
        end.push((true, run.end));
        whole.push((run.ok, run.start + run.auth + run.end));
        process.push((run.ok, run.took));
    }
    (
        Parts {
            start: stats(start),
            auth: stats(auth),
            end: stats(end),
            whole: stats(whole),
        },
        stats(process),
    )
}

/// One login by examples/pam_once with the service in `service_dir`: its
/// three calls as the child timed them, and spawn to exit.
struct Once {
    ok: bool,
    start: Duration,
    auth: Duration,
    end: Duration,
    took: Duration,
}

fn once(service_dir: &Path, user: &str) -> Once {
    let code = code_now();
    let spawned = Instant::now();
    let out = Command::new(pam_once())
        .arg(service_dir)
        .args([user, code.as_str()])
        .stderr(Stdio::null())
        .output()
        .expect("examples/pam_once (cargo build --release --example pam_once)");
    let took = spawned.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<u64> = text
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let ns = |i: usize| Duration::from_nanos(fields.get(i).copied().unwrap_or(0));
    Once {
        ok: out.status.success() && fields.first() == Some(&0),
        start: ns(1),
        auth: ns(2),
        end: ns(3),
        took,
    }
}

/// `--ab MODULE ROUNDS A.so B.so …`: builds of pam_totp compared login by
/// login on one column's store (MODULE: pam_totp, pam_totp-postgresql or
/// pam_totp-pgbouncer): each round logs in once with each build, in a
/// fresh process, the user's step reset before each login, so that a slow
/// spell of the machine falls on all builds alike. Prints the median and
/// quartiles of pam_authenticate and of spawn to exit for each build. A
/// build that hands PostgreSQL on needs its `pam_totp_postgresql.so`
/// beside it.
fn ab(args: &[String]) {
    let module = Module::by_name(args.first().map(String::as_str).unwrap_or(""));
    let rounds: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(100);
    let builds: Vec<PathBuf> = args.iter().skip(2).map(PathBuf::from).collect();
    assert!(!builds.is_empty(), "--ab MODULE ROUNDS A.so B.so ...");
    let root = dirs::trusted_tempdir();
    let setup = Setup::new(root.path(), module, 64);
    let line = std::fs::read_to_string(setup.dir.join("bench")).expect("service");
    let ours = module_so().display().to_string();
    let services: Vec<PathBuf> = builds
        .iter()
        .enumerate()
        .map(|(i, so)| {
            let dir = root.path().join(format!("ab-{i}"));
            std::fs::create_dir_all(&dir).expect("dir");
            let so = so.canonicalize().expect("build to compare");
            std::fs::write(
                dir.join("bench"),
                line.replacen(&ours, &so.display().to_string(), 1),
            )
            .expect("service");
            dir
        })
        .collect();
    let mut runs: Vec<Vec<Once>> = builds.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (service, done) in services.iter().zip(runs.iter_mut()) {
            setup.reset_user("u0");
            done.push(once(service, "u0"));
        }
    }
    let quartiles = |mut v: Vec<Duration>| {
        v.sort();
        let at = |q: usize| us(v[(v.len() * q / 4).min(v.len() - 1)]);
        format!("{} (p25 {}, p75 {})", at(2), at(1), at(3))
    };
    println!("{} logins per build, alternating, µs:", rounds);
    for (so, done) in builds.iter().zip(runs) {
        let ok = done.iter().filter(|r| r.ok).count();
        println!(
            "{}: pam_authenticate {}, spawn to exit {}, {ok}/{rounds} in",
            so.display(),
            quartiles(done.iter().map(|r| r.auth).collect()),
            quartiles(done.iter().map(|r| r.took).collect()),
        );
    }
}

fn reject(setup: &Setup, logins: usize) -> Stats {
    let bad = wrong(&code_now());
    let samples = (0..logins)
        .map(|_| {
            setup.reset_user("u0");
            let login = Login::start(&setup.dir, "u0", &bad);
            let (ok, took) = login.authenticate();
            login.end();
            (!ok, took)
        })
        .collect();
    stats(samples)
}

/// Worker mode: start a transaction, say "ready", wait for the release
/// byte, authenticate, print "done RC END_NS".
fn worker(args: &[String]) {
    let (dir, user, code) = (&args[0], &args[1], &args[2]);
    let login = Login::start(Path::new(dir), user, code);
    println!("ready");
    std::io::stdout().flush().expect("flush");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("release");
    let (ok, _) = login.authenticate();
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_nanos();
    println!("done {} {end}", ok as u8);
    login.end();
}

/// 64 processes log in at the same moment; returns successes and the time
/// from release to the last finish.
fn together(setup: &Setup, users: &[String], code: &str) -> (usize, Duration) {
    let exe = std::env::current_exe().expect("exe");
    let mut children: Vec<_> = users
        .iter()
        .map(|user| {
            Command::new(&exe)
                .args(["--worker", setup.dir.to_str().expect("dir"), user, code])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("worker")
        })
        .collect();
    let mut readers: Vec<_> = children
        .iter_mut()
        .map(|c| BufReader::new(c.stdout.take().expect("stdout")))
        .collect();
    for r in &mut readers {
        let mut line = String::new();
        r.read_line(&mut line).expect("ready");
    }
    let released = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_nanos();
    for c in &mut children {
        let _ = c.stdin.as_mut().expect("stdin").write_all(b"go\n");
    }
    let mut ok = 0;
    let mut last = released;
    for r in &mut readers {
        let mut line = String::new();
        r.read_line(&mut line).expect("done");
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() == 3 {
            ok += usize::from(parts[1] == "1");
            last = last.max(parts[2].parse().unwrap_or(released));
        }
    }
    for mut c in children {
        let _ = c.wait();
    }
    (ok, Duration::from_nanos((last - released) as u64))
}

/// Profiling mode (for `perf record`): `--profile accept|reject N` runs N
/// logins of pam_totp only, with the same resets as the table rows.
fn profile(args: &[String]) {
    let what = args.first().map(String::as_str).unwrap_or("accept");
    let n = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(1000);
    // Stores are trusted only under root-owned directories (not /tmp).
    let root = dirs::trusted_tempdir();
    let setup = Setup::new(root.path(), Module::Ours, 64);
    let st = match what {
        "reject" => reject(&setup, n),
        _ => accept(&setup, "u0", n),
    };
    println!(
        "{what}: median {} µs, p99 {} µs, {}/{} logins ended as intended",
        us(st.median),
        us(st.p99),
        st.ok,
        st.n
    );
}

/// `--hold MODULE SECONDS`: sets up one module's store (and, for the
/// PostgreSQL columns, its cluster and pooler) as the rows do, prints how
/// to log in by hand (to trace or profile one login from outside), and
/// keeps it for SECONDS.
fn hold(args: &[String]) {
    let module = Module::by_name(args.first().map(String::as_str).unwrap_or(""));
    let seconds = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(600);
    let root = dirs::trusted_tempdir();
    let setup = Setup::new(root.path(), module, 64);
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    println!(
        "held for {seconds} s; one login (the code from oathtool --totp -b {KEY_B32}):\n\
         LD_PRELOAD={} NSS_WRAPPER_PASSWD={} NSS_WRAPPER_GROUP={} {} {} u0 CODE\n\
         a code logs in once: the next login needs the next 30-second step",
        env("LD_PRELOAD"),
        env("NSS_WRAPPER_PASSWD"),
        env("NSS_WRAPPER_GROUP"),
        pam_once().display(),
        setup.dir.display(),
    );
    std::thread::sleep(std::time::Duration::from_secs(seconds));
}

/// `--together MODULE TRIALS`: only the 64-distinct-users row for one
/// module (median and worst wall of TRIALS), for A/B runs of a change.
fn together_only(args: &[String]) {
    let module = Module::by_name(args.first().map(String::as_str).unwrap_or(""));
    let trials = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(10);
    let root = dirs::trusted_tempdir();
    let setup = Setup::new(root.path(), module, 64);
    let users: Vec<String> = (0..64).map(|i| format!("u{i}")).collect();
    let (mut walls, mut worst_ok) = (Vec::new(), 64);
    for _ in 0..trials {
        for u in &users {
            setup.reset_user(u);
        }
        let (ok, wall) = together(&setup, &users, &code_now());
        worst_ok = worst_ok.min(ok);
        walls.push(wall.as_secs_f64() * 1e3);
    }
    walls.sort_by(f64::total_cmp);
    println!(
        "{}: 64 users at once, {trials} trials: median {:.1} ms, max {:.1} ms, min {worst_ok}/64 in",
        module.name(),
        walls[walls.len() / 2],
        walls[walls.len() - 1]
    );
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

const SCALES: [usize; 3] = [1, 1_000, 100_000];

/// Every module logs through syslog(3). On a machine without a syslog
/// daemon that costs nothing for some modules and a console write (about
/// 1 ms) for others (google-authenticator opens the log with LOG_CONS), so
/// the bench gives the run a /dev/log that reads and drops every line, the
/// cost a login node with journald or rsyslog pays. An existing, working
/// /dev/log is used as it is.
struct LogSink {
    path: Option<PathBuf>,
}

impl LogSink {
    fn ensure() -> LogSink {
        use std::os::unix::net::UnixDatagram;
        let path = Path::new("/dev/log");
        let probe = UnixDatagram::unbound().and_then(|s| s.connect(path));
        if probe.is_ok() {
            return LogSink { path: None };
        }
        let _ = std::fs::remove_file(path);
        match UnixDatagram::bind(path) {
            Ok(socket) => {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    while socket.recv(&mut buf).is_ok() {}
                });
                println!("(no syslog daemon here: /dev/log is a sink of this bench for the run)");
                LogSink {
                    path: Some(path.to_path_buf()),
                }
            }
            Err(e) => {
                println!("(no /dev/log and cannot make one: {e}; log lines cost nothing here)");
                LogSink { path: None }
            }
        }
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Child mode `--rows MODULE DIR`: the single-login rows of one module, in
/// a process that has loaded no other module (like an sshd child, which
/// loads only its own stack). Modules leave process-wide state behind:
/// google-authenticator's `openlog(LOG_CONS)` stays in libc after its
/// `pam_end`, and with no syslog daemon every later syslog line of any
/// module then goes to the console, at a millisecond each. Prints
/// `key<TAB>median_ns<TAB>cell` lines.
fn rows(args: &[String]) {
    let module = Module::by_name(args.first().map(String::as_str).unwrap_or(""));
    let root = Path::new(&args[1]);
    let logins = env_usize("LOGINS", 300);
    let setup = Setup::new(root, module, 64);
    let emit = |key: &str, st: &Stats, cell: String| {
        println!("{key}\t{}\t{cell}", st.median.as_nanos());
    };
    let plain = |st: &Stats| format!("{} / {}", us(st.median), us(st.p99));
    let counted =
        |st: &Stats| format!("{} / {} ({}/{} ok)", us(st.median), us(st.p99), st.ok, st.n);
    let st = pam_start_cost(&setup, logins);
    emit("start", &st, plain(&st));
    let parts = whole_logins(&setup, "u0", logins);
    emit("login_start", &parts.start, plain(&parts.start));
    emit("accept", &parts.auth, counted(&parts.auth));
    emit("login_end", &parts.end, plain(&parts.end));
    emit("login_whole", &parts.whole, counted(&parts.whole));
    if pam_once().exists() {
        let (parts, process) = fresh_processes(&setup, "u0", logins.min(200));
        emit("once_start", &parts.start, plain(&parts.start));
        emit("once_auth", &parts.auth, counted(&parts.auth));
        emit("once_end", &parts.end, plain(&parts.end));
        emit("once_whole", &parts.whole, counted(&parts.whole));
        emit("once_process", &process, counted(&process));
    }
    let st = reject(&setup, logins);
    emit(
        "reject",
        &st,
        format!(
            "{} / {} ({}/{} refused)",
            us(st.median),
            us(st.p99),
            st.ok,
            st.n
        ),
    );
    for users in SCALES {
        let key = format!("scale{users}");
        if module == Module::GoogleAuthenticator {
            println!("{key}\t0\tn/a (a file per user)");
            continue;
        }
        setup.populate(users);
        let st = accept(&setup, &format!("u{}", users - 1), logins.min(100));
        emit(
            &key,
            &st,
            format!("{} / {} ({}/{} ok)", us(st.median), us(st.p99), st.ok, st.n),
        );
    }
}

/// Runs `--rows` for `module` in a child process; key -> (median, cell).
fn rows_in_child(root: &Path, module: Module) -> std::collections::HashMap<String, (f64, String)> {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .args(["--rows", module.name(), root.to_str().expect("dir")])
        .stderr(Stdio::inherit())
        .output()
        .expect("rows");
    assert!(out.status.success(), "rows for {} failed", module.name());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, '\t');
            let key = parts.next()?.to_string();
            let median: f64 = parts.next()?.parse().ok()?;
            Some((key, (median, parts.next()?.to_string())))
        })
        .collect()
}

/// The users a login can name (u0…u255), known to NSS: pam_totp denies
/// names the name service does not know. Unless the bench already runs
/// under nss_wrapper, it writes a passwd and group file with them and runs
/// itself again with libnss_wrapper preloaded; its row and worker processes
/// inherit that. Every module in the table pays the same lookups.
fn under_nss_wrapper() -> Option<i32> {
    const NSS_WRAPPER: &str = "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so";
    if std::env::var_os("NSS_WRAPPER_PASSWD").is_some() {
        return None;
    }
    assert!(
        Path::new(NSS_WRAPPER).exists(),
        "{NSS_WRAPPER} missing: apt-get install libnss-wrapper (scripts/bench.sh does)"
    );
    let dir = std::env::temp_dir().join(format!("pam_bench_nss_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("nss dir");
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    for i in 0..256 {
        passwd.push_str(&format!(
            "u{i}:x:{}:100::/nonexistent:/bin/false\n",
            20_000 + i
        ));
    }
    // The user each store-size row logs in as (the last of its users).
    for users in SCALES {
        if users > 256 {
            passwd.push_str(&format!(
                "u{}:x:{}:100::/nonexistent:/bin/false\n",
                users - 1,
                20_000 + users
            ));
        }
    }
    // The PostgreSQL row's private cluster runs as the system's postgres
    // account (runuser, chown): keep its entries visible.
    let system = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("postgres:") || l.starts_with("ssl-cert:"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    passwd.push_str(&system("/etc/passwd"));
    std::fs::write(dir.join("passwd"), passwd).expect("passwd");
    std::fs::write(
        dir.join("group"),
        format!("root:x:0:\nusers:x:100:\n{}", system("/etc/group")),
    )
    .expect("group");
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(other) if !other.is_empty() => format!("{NSS_WRAPPER} {other}"),
        _ => NSS_WRAPPER.to_string(),
    };
    let status = Command::new(std::env::current_exe().expect("own path"))
        .args(std::env::args_os().skip(1))
        .env("LD_PRELOAD", preload)
        .env("NSS_WRAPPER_PASSWD", dir.join("passwd"))
        .env("NSS_WRAPPER_GROUP", dir.join("group"))
        .status()
        .expect("run the bench under nss_wrapper");
    let _ = std::fs::remove_dir_all(&dir);
    Some(status.code().unwrap_or(1))
}

fn main() {
    if let Some(code) = under_nss_wrapper() {
        std::process::exit(code);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--worker") {
        worker(&args[i + 1..]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        profile(&args[i + 1..]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--ab") {
        ab(&args[i + 1..]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--hold") {
        hold(&args[i + 1..]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--together") {
        together_only(&args[i + 1..]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--rows") {
        rows(&args[i + 1..]);
        return;
    }
    let logins = env_usize("LOGINS", 300);
    let trials = env_usize("RACE_TRIALS", 100);
    // Stores are trusted only under root-owned directories (not /tmp).
    let root = dirs::trusted_tempdir();
    let modules = [
        Module::Ours,
        Module::GoogleAuthenticator,
        Module::Oath,
        Module::OursPg,
        Module::OursPgBouncer,
    ];
    let _sink = LogSink::ensure();

    println!(
        "pam_bench: {logins} logins per row, {trials} race trials; times in µs (median / p99); module {} ({} bytes)\n",
        module_so().display(),
        std::fs::metadata(module_so()).map_or(0, |m| m.len())
    );
    println!(
        "| measurement | {} |",
        modules.map(|m| m.name()).join(" | ")
    );
    println!("|---|{}", "---|".repeat(modules.len()));
    let row = |name: &str, cells: Vec<String>| println!("| {name} | {} |", cells.join(" | "));

    let single: Vec<_> = modules
        .iter()
        .map(|m| rows_in_child(&root.path().join("rows"), *m))
        .collect();
    let cells = |key: &str| -> Vec<String> {
        single
            .iter()
            .map(|r| r.get(key).map_or("missing".to_string(), |c| c.1.clone()))
            .collect()
    };
    let median = |i: usize, key: &str| single[i].get(key).map_or(f64::NAN, |c| c.0);
    row("pam_start + pam_end (no authenticate)", cells("start"));
    row("login, right code: pam_start", cells("login_start"));
    row(
        "login, right code: pam_authenticate (accept)",
        cells("accept"),
    );
    row("login, right code: pam_end", cells("login_end"));
    row(
        "login, right code: pam_start + pam_authenticate + pam_end",
        cells("login_whole"),
    );
    row("reject a wrong code (pam_authenticate)", cells("reject"));
    row("fresh process per login: pam_start", cells("once_start"));
    row(
        "fresh process per login: pam_authenticate",
        cells("once_auth"),
    );
    row("fresh process per login: pam_end", cells("once_end"));
    row(
        "fresh process per login: start + authenticate + end",
        cells("once_whole"),
    );
    row(
        "fresh process per login: spawn to exit",
        cells("once_process"),
    );
    for users in SCALES {
        row(
            &format!("accept, {users} users in the store"),
            cells(&format!("scale{users}")),
        );
    }

    let setups: Vec<Setup> = modules
        .iter()
        .map(|m| Setup::new(root.path(), *m, 64))
        .collect();
    let users: Vec<String> = (0..64).map(|i| format!("u{i}")).collect();
    // Trials interleaved across the modules (trial 1 of each, then trial
    // 2 of each, ...), so that a slow spell of the machine falls on all of
    // them alike; each cell gives the median and the worst of its trials.
    let mut trials_of: Vec<Vec<(usize, f64)>> = setups.iter().map(|_| Vec::new()).collect();
    for _ in 0..10 {
        for (s, trials) in setups.iter().zip(trials_of.iter_mut()) {
            for u in &users {
                s.reset_user(u);
            }
            let (ok, wall) = together(s, &users, &code_now());
            trials.push((ok, wall.as_secs_f64() * 1e3));
        }
    }
    // (median, worst) wall per module, in ms.
    let mut walls = Vec::new();
    let distinct: Vec<String> = trials_of
        .iter()
        .map(|trials| {
            let worst_ok = trials.iter().map(|t| t.0).min().unwrap_or(0);
            let mut ms: Vec<f64> = trials.iter().map(|t| t.1).collect();
            ms.sort_by(f64::total_cmp);
            let (median, worst) = (ms[ms.len() / 2], ms[ms.len() - 1]);
            walls.push((median, worst));
            format!("min {worst_ok}/64 in, wall median {median:.1} ms, max {worst:.1} ms")
        })
        .collect();
    row("64 users at once (10 trials)", distinct);

    let same = vec!["u0".to_string(); 64];
    let races: Vec<String> = setups
        .iter()
        .map(|s| {
            let mut counts = Vec::new();
            for _ in 0..trials {
                s.reset_user("u0");
                counts.push(together(s, &same, &code_now()).0);
            }
            let exactly_one = counts.iter().filter(|c| **c == 1).count();
            format!(
                "exactly 1 in {exactly_one}/{trials} trials (max {})",
                counts.iter().max().unwrap_or(&0)
            )
        })
        .collect();
    row(&format!("64 logins, one code ({trials} trials)"), races);

    // The goals of issue 18, as ratios of medians from this run.
    let (ga, oath) = (1, 2);
    let faster = |key: &str| median(ga, key).min(median(oath, key));
    println!("\ngoals (issue 18), ratios of medians from this run:");
    println!(
        "- whole login, right code (pam_start + pam_authenticate + pam_end, in-process): {:.2} × the faster anchor (goal ≤ 0.5)",
        median(0, "login_whole") / faster("login_whole")
    );
    println!(
        "- whole login in a fresh process (pam_start + pam_authenticate + pam_end): {:.2} × the faster anchor",
        median(0, "once_whole") / faster("once_whole")
    );
    println!(
        "- one login per process, spawn to exit: {:.2} × google-authenticator, {:.2} × pam_oath (goal ≤ 1 for both)",
        median(0, "once_process") / median(ga, "once_process"),
        median(0, "once_process") / median(oath, "once_process")
    );
    println!(
        "- reject: {:.2} × our accept (goal ≤ 1), {:.2} × google-authenticator's reject (goal ≤ 0.25)",
        median(0, "reject") / median(0, "accept"),
        median(0, "reject") / median(ga, "reject")
    );
    println!(
        "- 64 distinct users at once (10 trials, interleaved with the other modules'): median {:.1} ms vs google-authenticator's {:.1} ms, {:.2} ×; worst {:.1} vs {:.1} ms, {:.2} × (goal ≤ 1, all in)",
        walls[0].0,
        walls[ga].0,
        walls[0].0 / walls[ga].0,
        walls[0].1,
        walls[ga].1,
        walls[0].1 / walls[ga].1
    );
    println!(
        "- 100,000 / 1 users: {:.2} (goal ≤ 1.2)",
        median(0, "scale100000") / median(0, "scale1")
    );
    println!(
        "- PostgreSQL (a connection per login, no pooler): accept {:.0} µs, whole login {:.0} µs",
        median(3, "accept") / 1e3,
        median(3, "login_whole") / 1e3
    );
    println!(
        "- PostgreSQL via PgBouncer (Unix socket, TLS to the server): accept {:.0} µs (goal ≤ 1500), whole login {:.0} µs",
        median(4, "accept") / 1e3,
        median(4, "login_whole") / 1e3
    );
    let ratio = |key: &str| median(0, key) / median(1, key).min(median(2, key));
    let pg_ratio = |key: &str| median(3, key) / median(1, key).min(median(2, key));
    println!(
        "\nissue 6's ratios (ours / faster anchor, medians; its goals were not met when it was resolved): accept {:.2} (goal ≤ 0.25), reject {:.2} (goal ≤ 0.5), pam_start {:.2}; 100,000 / 1 users: {:.2} (goal ≤ 1.2)",
        ratio("accept"),
        ratio("reject"),
        ratio("start"),
        median(0, "scale100000") / median(0, "scale1"),
    );
    println!(
        "PostgreSQL store (loopback, a connection per login): accept {:.2}, reject {:.2} of the faster anchor; 100,000 / 1 users: {:.2}",
        pg_ratio("accept"),
        pg_ratio("reject"),
        median(3, "scale100000") / median(3, "scale1"),
    );
}
