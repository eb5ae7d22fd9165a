//! End-to-end harness: a real OpenSSH sshd on loopback with its own PAM
//! stack (pam_unix, then pam_totp), throwaway local users, and the real
//! OpenSSH client answering prompts through an SSH_ASKPASS helper.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{module_path, tools_present};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// The tools an end-to-end test needs; `false` means skip (fails under CI=true).
pub fn e2e_tools_present() -> bool {
    tools_present(&[
        "/usr/sbin/sshd",
        "ssh",
        "ssh-keygen",
        "oathtool",
        "unshare",
        "useradd",
        "userdel",
        "chpasswd",
    ])
}

/// Holds an exclusive lock for the whole test: the end-to-end tests share
/// /dev/log (a placeholder on machines without syslog) and the user database.
pub struct Serial {
    _lock: File,
}

impl Serial {
    pub fn acquire() -> Serial {
        let file = File::create("/run/lock/pam_totp_e2e.lock")
            .or_else(|_| File::create("/tmp/pam_totp_e2e.lock"))
            .expect("lock file");
        // SAFETY: flock on a file descriptor we own and keep open for the
        // lifetime of `Serial`; it has no memory effects.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock");
        Serial { _lock: file }
    }
}

/// A local user with a known password, removed (with its home) on drop,
/// also when the test panics.
pub struct LocalUser {
    pub name: String,
    pub password: String,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("random");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl LocalUser {
    pub fn create(label: &str) -> LocalUser {
        let name = format!("e2e{}{label}", random_hex(3));
        let password = format!("Pw-{}", random_hex(8));
        let status = Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", &name])
            .status()
            .expect("useradd");
        assert!(status.success(), "useradd {name}");
        let user = LocalUser { name, password };
        let mut child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            writeln!(stdin, "{}:{}", user.name, user.password).expect("write");
        }
        assert!(child.wait().expect("chpasswd").success(), "chpasswd");
        user
    }
}

/// An ed25519 key pair without a passphrase at `key` (and `key`.pub).
fn new_key_pair(key: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success(), "ssh-keygen {}", key.display());
}

impl LocalUser {
    /// A new key pair whose public half is in the user's authorized_keys;
    /// returns the private key's path (inside `dir`).
    pub fn authorize_new_key(&self, dir: &Path) -> PathBuf {
        let key = dir.join(format!("{}_id_ed25519", self.name));
        new_key_pair(&key);
        let home = PathBuf::from(format!("/home/{}", self.name));
        let ssh = home.join(".ssh");
        fs::create_dir_all(&ssh).expect(".ssh");
        fs::copy(key.with_extension("pub"), ssh.join("authorized_keys")).expect("authorized_keys");
        let status = Command::new("chown")
            .args(["-R", &format!("{0}:{0}", self.name)])
            .arg(&ssh)
            .status()
            .expect("chown");
        assert!(status.success());
        key
    }

    /// Another key pair, added to the user's authorized_keys (the earlier
    /// keys stay); returns the private key's path (inside `dir`).
    pub fn authorize_another_key(&self, dir: &Path, label: &str) -> PathBuf {
        let key = dir.join(format!("{}_{label}_id_ed25519", self.name));
        new_key_pair(&key);
        let ssh = PathBuf::from(format!("/home/{}/.ssh", self.name));
        let public = fs::read_to_string(key.with_extension("pub")).expect("public key");
        let mut keys = fs::read_to_string(ssh.join("authorized_keys")).expect("authorized_keys");
        keys.push_str(&public);
        fs::write(ssh.join("authorized_keys"), keys).expect("authorized_keys");
        key
    }
}

/// The fingerprint of a key pair's public half, as `ssh-keygen -lf`
/// prints it (the oracle for the module's own computation).
pub fn fingerprint(private_key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(private_key.with_extension("pub"))
        .output()
        .expect("ssh-keygen -lf");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string()
}

/// A throwaway local group (removed on drop).
pub struct LocalGroup {
    pub name: String,
}

impl LocalGroup {
    pub fn create(members: &[&LocalUser]) -> LocalGroup {
        let name = format!("e2eg{}", random_hex(3));
        let status = Command::new("groupadd")
            .arg(&name)
            .status()
            .expect("groupadd");
        assert!(status.success(), "groupadd {name}");
        for member in members {
            let status = Command::new("usermod")
                .args(["-a", "-G", &name, &member.name])
                .status()
                .expect("usermod");
            assert!(status.success(), "usermod");
        }
        LocalGroup { name }
    }
}

impl Drop for LocalGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel")
            .arg(&self.name)
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel")
            .args(["--remove", "--force", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Receives what the module (and pam_unix) log through syslog(3).
struct LogSink {
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    reader: Option<thread::JoinHandle<()>>,
}

impl LogSink {
    fn bind(path: &Path) -> LogSink {
        let socket = UnixDatagram::bind(path).expect("bind log socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let lines = lines.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut buf = vec![0u8; 8192];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        lines.lock().expect("log lines").push(text);
                    }
                }
            })
        };
        LogSink {
            lines,
            stop,
            reader: Some(reader),
        }
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Removes the /dev/log placeholder this test created, if any.
struct DevLogPlaceholder(bool);

impl DevLogPlaceholder {
    fn ensure() -> DevLogPlaceholder {
        if fs::symlink_metadata("/dev/log").is_ok() {
            return DevLogPlaceholder(false);
        }
        File::create("/dev/log").expect("create /dev/log placeholder");
        DevLogPlaceholder(true)
    }
}

impl Drop for DevLogPlaceholder {
    fn drop(&mut self) {
        if self.0 {
            let _ = fs::remove_file("/dev/log");
        }
    }
}

/// A running sshd on 127.0.0.1 and ::1 with `pam_unix` then `pam_totp ARGS`.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub db: PathBuf,
    /// Set when the run puts stores on PostgreSQL.
    pub pg: super::PgStore,
    child: Child,
    log: LogSink,
    _placeholder: DevLogPlaceholder,
    _serial: Serial,
}

/// What one ssh connection ended with.
pub struct Login {
    /// The remote command ran and printed its marker.
    pub success: bool,
    /// Every prompt the client was shown, in order.
    pub prompts: Vec<String>,
    pub stdout: String,
    pub stderr: String,
}

/// For the tests' failure messages: the client's output as it printed it.
impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "success={} prompts={:?} stdout={:?}\nssh stderr:\n{}",
            self.success, self.prompts, self.stdout, self.stderr
        )
    }
}

impl Login {
    pub fn code_prompts(&self) -> usize {
        self.prompts
            .iter()
            .filter(|p| p.contains("Verification code"))
            .count()
    }
    pub fn password_prompts(&self) -> usize {
        self.prompts
            .iter()
            .filter(|p| p.contains("Password"))
            .count()
    }
}

/// How a connection is made and answered.
pub struct Attempt<'a> {
    pub user: &'a str,
    /// Address to connect to: "127.0.0.1" or "::1".
    pub host: &'a str,
    /// Source address (`ssh -b`), e.g. "127.0.0.2".
    pub bind: Option<&'a str>,
    /// One password per attempt.
    pub passwords: Vec<String>,
    /// One code per attempt; "@oathtool" = a fresh code when asked.
    pub codes: Vec<String>,
    /// The key for "@oathtool" codes.
    pub key: Option<&'a str>,
    /// An SSH private key to offer first (`ssh -i`).
    pub identity: Option<PathBuf>,
}

impl<'a> Attempt<'a> {
    pub fn new(user: &'a str) -> Attempt<'a> {
        Attempt {
            user,
            host: "127.0.0.1",
            bind: None,
            passwords: Vec::new(),
            codes: Vec::new(),
            key: None,
            identity: None,
        }
    }

    /// A person at the keyboard: the right password, then a fresh code
    /// from the app (oathtool, at the moment it is asked for).
    pub fn in_person(user: &'a LocalUser, key: &'a str) -> Attempt<'a> {
        Attempt {
            passwords: vec![user.password.clone()],
            codes: vec!["@oathtool".to_string()],
            key: Some(key),
            ..Attempt::new(&user.name)
        }
    }
}

/// Starts sshd (through sshd-isolated) on a port it binds itself, on both
/// 127.0.0.1 and ::1, and returns it once its log says it listens on both.
/// The port is random, below Linux's ephemeral range; when sshd says it is
/// taken, sshd is stopped and started again on another (nothing probes a
/// port free and hands it over later: another process could take it in
/// between, and the test would then talk to that).
fn listen(dir: &Path, pam: &Path, log_socket: &Path, sshd: &Path) -> (Child, u16) {
    let template = fs::read_to_string(dir.join("sshd_config.in")).expect("sshd_config.in");
    for attempt in 1..=20 {
        let port = super::postgres::random_port();
        fs::write(
            dir.join("sshd_config"),
            template.replace("@PORT@", &port.to_string()),
        )
        .expect("sshd_config");
        let log_path = dir.join("sshd.log");
        let mut child = Command::new(Path::new(FIXTURES).join("sshd-isolated"))
            .env("SSHD", sshd)
            .arg(pam)
            .arg(log_socket)
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log_path).expect("sshd.log"))
            .spawn()
            .expect("start sshd");
        let listening = [
            format!("Server listening on 127.0.0.1 port {port}."),
            format!("Server listening on ::1 port {port}."),
        ];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("Address already in use") {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!("port {port} taken (attempt {attempt}), starting sshd on another");
                break;
            }
            if listening.iter().all(|line| log.contains(line.as_str())) {
                return (child, port);
            }
            let exited = child.try_wait().expect("sshd status").is_some();
            if exited || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("sshd did not start:\n{log}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("no free loopback port for sshd in 20 tries");
}

/// The PAM auth stack and sshd methods a test runs with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// `pam_unix`, then `pam_totp` (password, then code).
    PasswordThenCode,
    /// `pam_totp mode=combined`, then `pam_unix try_first_pass`: one prompt.
    Combined,
    /// `pam_totp` alone, after an SSH key: `AuthenticationMethods
    /// publickey,keyboard-interactive`.
    KeyThenCode,
    /// After an SSH key, `pam_unix` then `pam_totp` (key, password, code).
    KeyThenPasswordThenCode,
}

impl Sshd {
    /// Starts sshd with `auth required pam_totp.so db=<store> ARGS`.
    pub fn start(totp_args: &str) -> Sshd {
        Sshd::start_with(Stack::PasswordThenCode, totp_args)
    }

    /// Starts sshd with one of the stacks.
    pub fn start_with(stack: Stack, totp_args: &str) -> Sshd {
        Sshd::start_as("sshd", stack, totp_args)
    }

    /// Like `start_with`, with sshd run under another name: `service` is
    /// then its PAM service (the basename of its argv[0]).
    pub fn start_as(service: &str, stack: Stack, totp_args: &str) -> Sshd {
        let serial = Serial::acquire();
        fs::create_dir_all("/run/sshd").expect("/run/sshd");
        // The store is trusted only under root-owned directories.
        let dir = super::trusted_tempdir();
        let path = dir.path();
        new_key_pair(&path.join("ssh_host_ed25519_key"));

        let config = fs::read_to_string(Path::new(FIXTURES).join("sshd_config.in"))
            .expect("template")
            .replace("@DIR@", &path.display().to_string());
        let config = if matches!(stack, Stack::KeyThenCode | Stack::KeyThenPasswordThenCode) {
            config
                .replace("PubkeyAuthentication no", "PubkeyAuthentication yes")
                .replace(
                    "AuthenticationMethods keyboard-interactive",
                    "AuthenticationMethods publickey,keyboard-interactive",
                )
        } else {
            config
        };
        // The port is filled in for each start (see `listen`).
        fs::write(path.join("sshd_config.in"), config).expect("sshd_config");

        // Installed-name copy, so log lines read `pam_totp(sshd:auth)`.
        let module = match std::env::var("PAM_TOTP_MODULE") {
            Ok(installed) => PathBuf::from(installed),
            Err(_) => {
                let copy = path.join("pam_totp.so");
                fs::copy(module_path(), &copy).expect("copy module");
                copy
            }
        };
        let db = path.join("state").join("pam_totp.db");
        let pg = super::pg_store_if_asked();
        let pam = path.join("pam.d");
        fs::create_dir(&pam).expect("pam dir");
        let totp = format!(
            "auth     required {} {}{} {totp_args}",
            module.display(),
            super::store_args(&db, &pg),
            // Seconds to connect can happen on a loaded CI machine.
            if pg.is_some() { " db_timeout=20" } else { "" }
        );
        let auth = match stack {
            Stack::PasswordThenCode => format!("auth     required pam_unix.so\n{totp}\n"),
            Stack::Combined => {
                format!("{totp} mode=combined\nauth     required pam_unix.so try_first_pass\n")
            }
            Stack::KeyThenCode => format!("{totp}\n"),
            Stack::KeyThenPasswordThenCode => format!("auth     required pam_unix.so\n{totp}\n"),
        };
        fs::write(
            pam.join(service),
            format!(
                "{auth}account  required pam_unix.so\n\
                 session  required pam_permit.so\n"
            ),
        )
        .expect("pam stack");
        fs::write(
            pam.join("other"),
            "auth required pam_deny.so\naccount required pam_deny.so\n\
             password required pam_deny.so\nsession required pam_deny.so\n",
        )
        .expect("other");
        // The store exists before the first login, as after `totpctl init`.
        let status = Command::new(super::totpctl_path())
            .args(super::store_options(&db, &pg))
            .arg("init")
            .stdout(Stdio::null())
            .status()
            .expect("totpctl");
        assert!(status.success(), "totpctl init");
        let placeholder = DevLogPlaceholder::ensure();
        let log_socket = path.join("log.sock");
        let log = LogSink::bind(&log_socket);

        let sshd = if service == "sshd" {
            PathBuf::from("/usr/sbin/sshd")
        } else {
            let link = path.join(service);
            std::os::unix::fs::symlink("/usr/sbin/sshd", &link).expect("sshd link");
            link
        };
        let (child, port) = listen(path, &pam, &log_socket, &sshd);
        Sshd {
            dir,
            port,
            db,
            pg,
            child,
            log,
            _placeholder: placeholder,
            _serial: serial,
        }
    }

    pub fn sshd_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Runs totpctl on this sshd's store.
    pub fn totpctl(&self, args: &[&str]) -> std::process::Output {
        let store = super::store_options(&self.db, &self.pg);
        super::run_totpctl(store.iter().map(String::as_str).chain(args.iter().copied()))
    }

    /// Enrolls `user` with a fresh random key; returns the key.
    pub fn enroll(&self, user: &str) -> String {
        let key = super::random_secret();
        let out = self.totpctl(&["enroll", user, "--secret", &key]);
        assert!(
            out.status.success(),
            "enroll: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        key
    }

    /// The module's syslog lines so far (`pam_totp(sshd:auth): ...`).
    pub fn module_log(&self) -> Vec<String> {
        self.log
            .lines
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains("pam_totp("))
            .cloned()
            .collect()
    }

    /// Waits up to 5 s for a module log line containing every part.
    pub fn expect_log(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self
                .module_log()
                .into_iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return line;
            }
            if Instant::now() > deadline {
                panic!(
                    "no module log line with {parts:?}; module log:\n{}\nsshd log:\n{}",
                    self.module_log().join("\n"),
                    self.sshd_log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connects with the real OpenSSH client and runs a marker command.
    pub fn login(&self, attempt: &Attempt<'_>) -> Login {
        let answers = tempfile::tempdir_in(self.dir.path()).expect("answers dir");
        fs::write(
            answers.path().join("passwords"),
            attempt.passwords.join("\n") + "\n",
        )
        .expect("passwords");
        fs::write(
            answers.path().join("codes"),
            attempt.codes.join("\n") + "\n",
        )
        .expect("codes");
        let tries = attempt.passwords.len().max(attempt.codes.len()).max(1);
        let ssh_log = answers.path().join("ssh.log");
        let mut cmd = Command::new("ssh");
        cmd.env("SSH_ASKPASS", Path::new(FIXTURES).join("askpass"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("ASKPASS_DIR", answers.path())
            .env("ASKPASS_TOTP_KEY", attempt.key.unwrap_or(""))
            .args(["-F", "/dev/null", "-T", "-p", &self.port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                // INFO: the client prints what the server's PAM conversation
                // shows (keyboard-interactive instructions) to stderr.
                "LogLevel=INFO",
                "-o",
                if attempt.identity.is_some() {
                    "PreferredAuthentications=publickey,keyboard-interactive"
                } else {
                    "PreferredAuthentications=keyboard-interactive"
                },
                "-o",
                "ConnectTimeout=20",
                "-o",
                &format!("NumberOfPasswordPrompts={tries}"),
            ]);
        if let Some(bind) = attempt.bind {
            cmd.args(["-b", bind]);
        }
        if let Some(identity) = &attempt.identity {
            cmd.arg("-i")
                .arg(identity)
                .args(["-o", "IdentitiesOnly=yes"]);
        }
        let marker = "E2E-LOGGED-IN-AS";
        cmd.arg(format!("{}@{}", attempt.user, attempt.host))
            .arg(format!("echo {marker}-$(id -un)"))
            .stdin(Stdio::null())
            .stderr(File::create(&ssh_log).expect("ssh log"));
        let out = cmd.output().expect("run ssh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let prompts = fs::read_to_string(answers.path().join("prompts"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        Login {
            success: out.status.success() && stdout.contains(&format!("{marker}-{}", attempt.user)),
            prompts,
            stdout,
            stderr: fs::read_to_string(&ssh_log).unwrap_or_default(),
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
