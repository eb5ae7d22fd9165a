//! totpctl as an administrator uses it: output, errors and exit codes.

use crate::common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

struct Ctl {
    dir: tempfile::TempDir,
}

impl Ctl {
    fn new() -> Ctl {
        Ctl {
            dir: common::trusted_tempdir(),
        }
    }
    fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("lib").join("pam_totp.db")
    }
    fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "")
    }
    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = totpctl()
            .arg("--db")
            .arg(self.db())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn totpctl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write");
        child.wait_with_output().expect("wait")
    }
}

/// The variables sudo sets; totpctl takes any of them as "run through sudo".
const SUDO_VARIABLES: [&str; 4] = ["SUDO_USER", "SUDO_UID", "SUDO_GID", "SUDO_COMMAND"];

/// totpctl as root runs it: none of sudo's variables, even when the test
/// run itself was started through sudo.
fn totpctl() -> Command {
    let mut command = Command::new(common::built_totpctl());
    for variable in SUDO_VARIABLES {
        command.env_remove(variable);
    }
    command
}

/// totpctl as `sudo totpctl ARGS` runs it for the help desk user
/// `helpdesk-bob` (uid and gid 65534): sudo's variables are how totpctl
/// knows (README, "Help desk through sudo").
fn through_sudo(args: &[&str]) -> Command {
    let mut command = totpctl();
    command
        .args(args)
        .env("SUDO_USER", "helpdesk-bob")
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .env(
            "SUDO_COMMAND",
            format!("/usr/sbin/totpctl {}", args.join(" ")),
        )
        .stdin(Stdio::null());
    command
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn enroll_generates_a_key_shown_once_with_its_uri() {
    let ctl = Ctl::new();
    let out = ctl.run(&["enroll", "alice", "--issuer", "HPC Lander"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let key_line = stdout
        .lines()
        .find(|l| l.starts_with("Key: "))
        .expect("key line");
    let key: String = key_line["Key: ".len()..].split_whitespace().collect();
    assert_eq!(key.len(), 32, "160 bits in base32: {key}");
    assert!(stdout.contains(&format!(
        "otpauth://totp/HPC%20Lander:alice?secret={key}&issuer=HPC%20Lander&algorithm=SHA1&digits=6&period=30"
    )));

    // The store is private.
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&ctl.db()), 0o600);
    assert_eq!(mode(ctl.db().parent().expect("dir")), 0o700);

    let (listing, _) = text(&ctl.run(&["list"]));
    assert!(listing.contains("alice"), "{listing}");
    assert!(!listing.contains(&key), "list must never show keys");
}

#[test]
fn enrolling_twice_needs_force() {
    let ctl = Ctl::new();
    assert!(ctl.run(&["enroll", "alice"]).status.success());
    let again = ctl.run(&["enroll", "alice"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again)
            .1
            .contains("already has a token named \"default\""),
        "{:?}",
        text(&again)
    );
    assert!(ctl.run(&["enroll", "alice", "--force"]).status.success());
}

#[test]
fn secret_from_stdin_is_stored_and_not_echoed() {
    let ctl = Ctl::new();
    let out = ctl.run_with_stdin(
        &["enroll", "bob", "--secret", "-"],
        "gezd gnbv gy3t qojq gezd gnbv gy3t qojq\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.to_uppercase().contains("GEZD"), "{stdout}");
    assert!(!stdout.contains("otpauth://"), "{stdout}");
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let ctl = Ctl::new();
    let cases: &[(&[&str], &str)] = &[
        (
            &["enroll", "carol", "--secret", "not base32!"],
            "not valid base32",
        ),
        (
            &["enroll", "carol", "--secret", "GEZDGNBV"],
            "at least 80 bits",
        ),
        (
            &["enroll", "carol", "--secret", "GEZDGNBVGY3TQOJQ"],
            "at least 128 bits are required (--allow-short",
        ),
        (&["enroll", "carol", "--digits", "9"], "9"),
        (&["enroll", "carol", "--period", "0"], "0"),
        (&["enroll", "carol", "--algorithm", "md5"], "md5"),
        (&["enroll", "two words"], "spaces or control characters"),
        (&["enroll", ""], "1 to 256 bytes"),
    ];
    for (args, message) in cases {
        let out = ctl.run(args);
        let (_, stderr) = text(&out);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    // Nothing was enrolled by the failures.
    assert!(ctl.run(&["init"]).status.success());
    let (listing, _) = text(&ctl.run(&["list"]));
    assert!(!listing.contains("carol"), "{listing}");
}

#[test]
fn delete_and_list_need_an_existing_store_and_user() {
    let ctl = Ctl::new();
    let out = ctl.run(&["list"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("does not exist"), "{:?}", text(&out));

    assert!(ctl.run(&["enroll", "alice"]).status.success());
    let out = ctl.run(&["delete", "nobody"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("nobody is not enrolled"));
    assert!(ctl.run(&["delete", "alice"]).status.success());
    let (listing, _) = text(&ctl.run(&["list"]));
    assert!(!listing.contains("alice"), "{listing}");
}

/// Every change is in syslog (authpriv) with who made it and whom it
/// concerns, and never with a key or code. Needs /dev/log to itself: on a
/// machine without a syslog socket the test binds one there for its
/// duration (under the same lock as the sshd tests).
#[test]
fn every_change_is_audited_in_syslog() {
    use std::os::unix::net::UnixDatagram;
    let _serial = common::sshd::Serial::acquire();
    // A socket nobody listens on is a leftover of a killed test run.
    let stale = UnixDatagram::unbound()
        .and_then(|s| s.connect("/dev/log"))
        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
    if stale {
        let _ = std::fs::remove_file("/dev/log");
    }
    if std::fs::symlink_metadata("/dev/log").is_ok() {
        let message =
            "/dev/log is taken by this machine's syslog; audit lines cannot be captured here";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{message}");
        }
        eprintln!("SKIPPED: {message}");
        return;
    }
    let socket = UnixDatagram::bind("/dev/log").expect("bind /dev/log");
    struct Unlink;
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = std::fs::remove_file("/dev/log");
        }
    }
    let _unlink = Unlink;
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .expect("timeout");
    // Read from the start and all along: while /dev/log is this socket,
    // every process on the machine logs into it (modules that other tests
    // run outside pam_wrapper too), and a sender blocks once the queue is
    // full, totpctl included.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut buf = [0u8; 2048];
            let mut last_line = std::time::Instant::now();
            let mut done_at = None;
            loop {
                if let Ok(n) = socket.recv(&mut buf) {
                    lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    last_line = std::time::Instant::now();
                }
                // Once the test is done: until quiet for 500 ms (other
                // tests' runs may still arrive), at most 10 s more.
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    let done_at = *done_at.get_or_insert_with(std::time::Instant::now);
                    if last_line.elapsed() >= std::time::Duration::from_millis(500)
                        || done_at.elapsed() >= std::time::Duration::from_secs(10)
                    {
                        break;
                    }
                }
            }
            lines
        })
    };

    let ctl = Ctl::new();
    let enrolled = ctl.run(&["enroll", "alice", "--json", "--no-confirm"]);
    let key = serde_json::from_slice::<serde_json::Value>(&enrolled.stdout).expect("json")["key"]
        .as_str()
        .expect("key")
        .to_string();
    // Through sudo totpctl takes no --db: the help desk's change runs on
    // the default store, in a mount namespace where it is this test's.
    // A hidden character in the caller's name, user and device names:
    // escaped, never raw.
    let isolated = Isolated::new();
    if let Some(isolated) = &isolated {
        let mut enroll = totpctl();
        enroll.args(["enroll", "alice", "--no-confirm"]);
        assert!(isolated.run(&mut enroll).status.success());
        let mut recovery = through_sudo(&["recovery", "alice"]);
        recovery.env("SUDO_USER", "help\u{2028}desk");
        let out = isolated.run(&mut recovery);
        assert!(out.status.success(), "{:?}", text(&out));
    }
    let out = ctl.run(&[
        "enroll",
        "eve\u{202e}x",
        "--device",
        "ph\u{200b}one",
        "--no-confirm",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    for args in [
        &["allow-enroll", "carol", "--for", "2h"][..],
        &["reset", "alice", "--no-confirm"],
        &["delete", "alice"],
    ] {
        assert!(ctl.run(args).status.success(), "{args:?}");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let lines = reader.join().expect("syslog reader");
    let mut expect = vec![
        ("enroll user=\"alice\"", ""),
        ("enroll user=\"eve\\u{202e}x\"", "ph\\u{200b}one"),
        ("allow-enroll user=\"carol\" until=", ""),
        ("reset user=\"alice\"", ""),
        ("delete user=\"alice\"", ""),
    ];
    if isolated.is_some() {
        expect.push(("recovery user=\"alice\"", "by \"help\\u{2028}desk\" (sudo"));
    }
    for line in &lines {
        assert!(
            !line.contains(['\u{2028}', '\u{202e}', '\u{200b}', '\n']),
            "a raw hidden character in the audit log: {line:?}"
        );
    }
    for (action, who) in expect {
        let line = lines
            .iter()
            .find(|l| l.contains(action))
            .unwrap_or_else(|| panic!("no audit line {action:?} in {lines:#?}"));
        // <85>: facility authpriv (10), severity notice (5).
        assert!(line.starts_with("<85>"), "{line}");
        assert!(line.contains("totpctl["), "{line}");
        assert!(line.contains(" by "), "{line}");
        assert!(line.contains(who), "{line}");
        assert!(!line.contains(&key), "no key in the audit log: {line}");
    }
}

/// totpctl in a mount namespace of its own (unshare, as root), with this
/// test's directories bound over /etc/security and /var/lib: through sudo
/// totpctl takes no store option and uses the module's default config,
/// key file and store, which here are private to the test and never the
/// machine's.
struct Isolated {
    dir: tempfile::TempDir,
}

impl Isolated {
    /// None (a skip; a failure under CI=true) where mount namespaces are
    /// not available, e.g. not root.
    fn new() -> Option<Isolated> {
        let works = std::path::Path::new("/etc/security").is_dir()
            && Command::new("unshare")
                .args(["--mount", "true"])
                .status()
                .is_ok_and(|s| s.success());
        if !works {
            let message = "unshare --mount fails here (not root?) or there is no /etc/security: \
                           the tests of totpctl through sudo need both";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{message}");
            }
            eprintln!("SKIPPED: {message}");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["etc-security", "var-lib"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        Some(Isolated { dir })
    }

    /// Where the default store is, seen from outside.
    fn store(&self) -> std::path::PathBuf {
        self.dir.path().join("var-lib/pam_totp/pam_totp.db")
    }

    /// Runs a totpctl command (from `totpctl()` or `through_sudo()`) inside.
    fn run(&self, command: &mut Command) -> Output {
        let mut wrapped = Command::new("unshare");
        wrapped
            .args(["--mount", "--propagation", "private", "/bin/sh", "-euc"])
            .arg("mount --bind \"$1\" /etc/security; mount --bind \"$2\" /var/lib; shift 2; exec \"$@\"")
            .arg("isolated")
            .arg(self.dir.path().join("etc-security"))
            .arg(self.dir.path().join("var-lib"))
            .arg(command.get_program())
            .args(command.get_args());
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(name, value),
                None => wrapped.env_remove(name),
            };
        }
        wrapped.stdin(Stdio::null()).output().expect("unshare")
    }
}

/// Root-only files given where totpctl reads a config, an import file, a
/// key or a store: the errors name the file (and a line), never what is in
/// it. (Found by an attacker: `totpctl --config /etc/shadow` printed the
/// first line of /etc/shadow.)
#[test]
fn files_given_to_totpctl_are_never_quoted_in_errors() {
    let ctl = Ctl::new();
    assert!(ctl.run(&["init"]).status.success());
    let secrets = common::dirs::private_tempdir();
    let marks = ["Sup3rSecretSalt", "Tr0ub4dor", "a3a3a3a3", "hunter2x"];
    let files: &[(&str, String)] = &[
        (
            "shadow",
            format!("root:$y$j9T${}$Q0zLnb4:19000:0:99999:7:::\n", marks[0]),
        ),
        ("pam_totp.key", format!("{}\n", marks[2].repeat(8))),
        ("db_password", format!("{}=&3\n", marks[1])),
        ("lowercase_password", format!("{}\n", marks[3])),
        (
            "known_key.conf",
            format!("db = postgresql://totp@db/totp?sslmode={}\n", marks[3]),
        ),
        ("trusted.conf", format!("trusted = {}\n", marks[3])),
    ];
    let mut checked = 0;
    for (name, content) in files {
        let path = secrets.path().join(name);
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let path = path.to_str().expect("utf-8 path");
        let runs: Vec<Output> = vec![
            totpctl()
                .args(["--config", path, "list"])
                .output()
                .expect("run"),
            totpctl()
                .args(["--db", path, "list"])
                .output()
                .expect("run"),
            ctl.run(&["import", "oath", path]),
            ctl.run(&["import", "google-authenticator", path, "--user", "alice"]),
            totpctl()
                .arg("--db")
                .arg(ctl.db())
                .args(["--key-file", path, "list"])
                .output()
                .expect("run"),
            ctl.run(&["rekey", "--new-key", path]),
            totpctl()
                .args(["migrate", "--from", path, "--to"])
                .arg("postgresql://totp@127.0.0.1:9/totp?sslmode=disable")
                .output()
                .expect("run"),
        ];
        for out in runs {
            // (The key file is a valid key: `--key-file` with it succeeds.)
            let (stdout, stderr) = text(&out);
            for mark in marks {
                assert!(
                    !stdout.contains(mark) && !stderr.contains(mark),
                    "{name}: the file's content is in the output:\n{stdout}\n{stderr}"
                );
            }
            assert!(
                !stderr.contains("j9T") && !stderr.contains("19000"),
                "{stderr}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, files.len() * 7);
    // What the error says instead: the file, the line, the kind of problem.
    let shadow = secrets.path().join("shadow");
    let out = totpctl()
        .arg("--config")
        .arg(&shadow)
        .arg("list")
        .output()
        .expect("run");
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains(&format!(
            "{}:1: the line is not `key = value`",
            shadow.display()
        )),
        "{stderr}"
    );
}

/// The store options come before the verb: after it they are refused, so
/// `sudo totpctl reset bob --db /tmp/mine` (a sudoers rule `totpctl reset
/// *`) cannot point totpctl at a store of the caller's choice.
#[test]
fn store_options_are_refused_after_the_verb() {
    let ctl = Ctl::new();
    assert!(ctl.run(&["enroll", "bob", "--no-confirm"]).status.success());
    let mine = ctl.dir.path().join("mine");
    let mine = mine.to_str().expect("path");
    for args in [
        &["reset", "bob", "--db", mine][..],
        &["reset", "bob", "--config", mine],
        &["show", "bob", "--key-file", mine],
        &["unlock", "bob", "--db-password-file", mine],
        &["list", "--db=/tmp/elsewhere.db"],
        &[
            "migrate",
            "--from",
            mine,
            "--to",
            "postgresql://evil@evil/x?sslmode=disable",
            "--db-password-file",
            mine,
        ],
    ] {
        let out = ctl.run(args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("unexpected argument"), "{args:?}: {stderr}");
    }
    assert!(!std::path::Path::new(mine).exists());
    assert!(!std::path::Path::new("/tmp/elsewhere.db").exists());
}

/// Through sudo (any of sudo's variables set) totpctl works only on the
/// module's own store: the store, config, key and password options, and
/// the verbs that read or write files named on the command line (migrate
/// copied every key in clear to a database of the caller's choice), are
/// refused before anything is opened.
#[test]
fn through_sudo_nothing_can_redirect_the_store_or_name_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str| dir.path().join(name).display().to_string();
    let existing = file("existing");
    std::fs::write(
        &existing,
        "HOTP alice - 3132333435363738393031323334353637383930\n",
    )
    .expect("write");
    let refused: Vec<Vec<String>> = [
        vec!["--db", &file("mine.db"), "list"],
        vec![
            "--db",
            "postgresql://evil@evil.example/x?sslmode=disable",
            "show",
            "bob",
        ],
        vec!["--config", &existing, "list"],
        vec!["--key-file", &existing, "show", "bob"],
        vec!["--db-password-file", &existing, "list"],
        vec![
            "migrate",
            "--from",
            &file("mine.db"),
            "--to",
            "postgresql://evil@evil.example/x?sslmode=disable",
        ],
        vec!["keygen", &file("new.key")],
        vec!["rekey", "--new-key", &existing],
        vec!["import", "oath", &existing, "--apply"],
        vec![
            "import",
            "google-authenticator",
            &existing,
            "--user",
            "root",
        ],
        vec!["import", "google-authenticator", "--home-dirs", "--apply"],
        vec!["manpages", &file("man")],
    ]
    .iter()
    .map(|args| args.iter().map(|a| a.to_string()).collect())
    .collect();
    for args in &refused {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = through_sudo(&args).output().expect("run");
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stdout} {stderr}");
        assert!(
            stderr.contains("is refused when totpctl runs through sudo"),
            "{args:?}: {stderr}"
        );
    }
    // Each of sudo's variables alone is enough.
    for variable in SUDO_VARIABLES {
        let out = totpctl()
            .args(["--db", &file("mine.db"), "list"])
            .env(variable, "1000")
            .output()
            .expect("run");
        assert!(!out.status.success(), "{variable}");
        assert!(
            text(&out).1.contains("through sudo"),
            "{variable}: {:?}",
            text(&out)
        );
    }
    // Nothing was created.
    for name in ["mine.db", "new.key", "man"] {
        assert!(!dir.path().join(name).exists(), "{name} was created");
    }
}

/// Through sudo the help desk's verbs work on the module's own store (the
/// default paths, private to this test), and `--qr-png FILE` is created as
/// the caller: where the caller may not create a file, the reset is
/// refused before the store changes.
#[test]
fn through_sudo_the_help_desk_works_on_the_modules_store_and_writes_as_itself() {
    use std::os::unix::fs::MetadataExt;
    let Some(isolated) = Isolated::new() else {
        return;
    };
    let key = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    let mut admin = totpctl();
    admin.args(["enroll", "bob", "--secret", key]);
    let out = isolated.run(&mut admin);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(isolated.store().exists(), "the default store is the test's");

    let show = || {
        let out = isolated.run(&mut through_sudo(&["show", "bob", "--json"]));
        assert!(out.status.success(), "{:?}", text(&out));
        out.stdout
    };
    let before = show();
    for args in [&["list"][..], &["unlock", "bob"], &["forget", "bob"]] {
        let out = isolated.run(&mut through_sudo(args));
        assert!(out.status.success(), "{args:?}: {:?}", text(&out));
    }

    // Where the caller (uid 65534) may create files, and where not.
    let out_dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(out_dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let open = out_dir.path().join("open");
    let closed = out_dir.path().join("closed");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::create_dir(&closed).expect("mkdir");
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");

    let refused = closed.join("bob.png");
    let refused_arg = refused.display().to_string();
    let out = isolated.run(&mut through_sudo(&[
        "reset",
        "bob",
        "--digits",
        "8",
        "--qr-png",
        &refused_arg,
    ]));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--qr-png") && stderr.contains("ermission denied"),
        "{stderr}"
    );
    assert!(!refused.exists());
    assert_eq!(show(), before, "a refused --qr-png changed the store");

    let png = open.join("bob.png");
    let png_arg = png.display().to_string();
    let out = isolated.run(&mut through_sudo(&[
        "reset",
        "bob",
        "--no-confirm",
        "--qr-png",
        &png_arg,
    ]));
    assert!(out.status.success(), "{:?}", text(&out));
    let meta = std::fs::symlink_metadata(&png).expect("png written");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "created as the caller"
    );
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert!(std::fs::read(&png).expect("read").starts_with(b"\x89PNG"));
    assert_ne!(show(), before, "the reset happened");
    let out = isolated.run(&mut through_sudo(&["delete", "bob"]));
    assert!(out.status.success(), "{:?}", text(&out));
}

/// `--qr-png` onto an existing file or a symlink (dangling or not) is
/// refused before the store changes: the existing file keeps its content,
/// no link target appears, the user's tokens are as they were.
#[test]
fn qr_png_onto_an_existing_file_or_a_symlink_is_refused_before_anything_changes() {
    let ctl = Ctl::new();
    let key = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    assert!(
        ctl.run(&["enroll", "bob", "--secret", key])
            .status
            .success()
    );
    let show = || ctl.run(&["show", "bob", "--json"]).stdout;
    let before = show();
    let dir = ctl.dir.path();
    let existing = dir.join("existing.png");
    std::fs::write(&existing, "keep me").expect("write");
    let victim = dir.join("victim");
    std::fs::write(&victim, "root's file").expect("write");
    let link = dir.join("link.png");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let dangling = dir.join("dangling.png");
    let absent = dir.join("would-be-created");
    std::os::unix::fs::symlink(&absent, &dangling).expect("symlink");
    for target in [&existing, &link, &dangling] {
        let target = target.to_str().expect("path");
        for args in [
            &["reset", "bob", "--no-confirm", "--qr-png", target][..],
            &["enroll", "carol", "--no-confirm", "--qr-png", target],
            &["enroll", "bob", "--device", "tablet", "--qr-png", target],
        ] {
            let out = ctl.run(args);
            let (_, stderr) = text(&out);
            assert!(!out.status.success(), "{args:?}");
            assert!(stderr.contains("--qr-png"), "{args:?}: {stderr}");
        }
    }
    assert_eq!(std::fs::read_to_string(&existing).expect("read"), "keep me");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("read"),
        "root's file"
    );
    assert!(!absent.exists(), "a link's target was created");
    assert_eq!(show(), before, "bob's tokens changed");
    let (listing, _) = text(&ctl.run(&["list"]));
    assert!(!listing.contains("carol"), "{listing}");

    // A new file is written, 0600.
    let png = dir.join("new.png");
    let out = ctl.run(&[
        "reset",
        "bob",
        "--no-confirm",
        "--qr-png",
        png.to_str().expect("path"),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let meta = std::fs::symlink_metadata(&png).expect("png");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    assert!(std::fs::read(&png).expect("read").starts_with(b"\x89PNG"));
}
