//! totpctl as an administrator uses it: output, errors and exit codes.

use crate::common;
use crate::common::syslog::{SyslogCapture, audit_keys};

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

struct Ctl {
    dir: tempfile::TempDir,
}

impl Ctl {
    fn new() -> Ctl {
        let dir = common::trusted_tempdir();
        std::fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\n",
        )
        .expect("passwd");
        std::fs::write(dir.path().join("group"), "root:x:0:\nusers:x:100:\n").expect("group");
        Ctl { dir }
    }
    fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("lib").join("pam_totp.db")
    }
    /// Adds `user` to this test's name service (nss_wrapper's passwd).
    fn add_user(&self, user: &str) {
        let path = self.dir.path().join("passwd");
        let text = std::fs::read_to_string(&path).expect("passwd");
        if text.lines().any(|l| l.split(':').next() == Some(user)) {
            return;
        }
        let uid = 20_000 + text.lines().count();
        std::fs::write(
            &path,
            format!("{text}{user}:x:{uid}:100::/nonexistent:/usr/sbin/nologin\n"),
        )
        .expect("passwd");
    }
    /// totpctl on this test's store; the user an `enroll` or `allow-enroll`
    /// names is added to the name service first (`run_strict` does not).
    fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, "")
    }
    fn run_strict(&self, args: &[&str]) -> Output {
        self.spawn(args, "")
    }
    fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        if let Some(at) = args
            .iter()
            .position(|a| matches!(*a, "enroll" | "allow-enroll"))
            && let Some(user) = args.get(at + 1)
            && !user.starts_with('-')
            && !user.is_empty()
            && !user.contains([':', '\n', '\0'])
        {
            self.add_user(user);
        }
        self.spawn(args, stdin)
    }
    fn spawn(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = totpctl()
            .env("LD_PRELOAD", common::NSS_WRAPPER)
            .env("NSS_WRAPPER_PASSWD", self.dir.path().join("passwd"))
            .env("NSS_WRAPPER_GROUP", self.dir.path().join("group"))
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

/// A fingerprint as `ssh-keygen -lf` prints it.
const AUTOMATION_KEY: &str = "SHA256:PBZqibLSCLdAS4+MC8G29Jx6IMJfj3+k9ckTzGesU+I";

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
    let _serial = common::sshd::Serial::acquire();
    let Some(syslog) = SyslogCapture::start() else {
        return;
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
        enroll.args(["enroll", "alice", "--no-confirm", "--allow-unknown-user"]);
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
        &[
            "allow-automation",
            "carol",
            "--key",
            AUTOMATION_KEY,
            "--from",
            "192.0.2.0/24",
            "--until",
            "30d",
            "--reason",
            "nightly rsync",
        ],
        &["automation", "revoke", "1"],
        &["reset", "alice", "--no-confirm"],
        &["enroll", "alice", "--device", "work,laptop", "--no-confirm"],
        &["delete", "alice"],
    ] {
        assert!(ctl.run(args).status.success(), "{args:?}");
    }
    let lines = syslog.finish();
    let mut expect = vec![
        ("enroll user=\"alice\"", ""),
        (
            "enroll user=\"eve\\u{202e}x\"",
            " device=\"ph\\u{200b}one\" ",
        ),
        ("allow-enroll user=\"carol\" until=", ""),
        (
            "allow-automation user=\"carol\" id=1 key=SHA256:",
            " reason=\"nightly rsync\" by ",
        ),
        (
            "automation-revoke user=\"carol\" id=1",
            " reason=\"nightly rsync\" by ",
        ),
        ("reset user=\"alice\"", ""),
        // Device names joined by `/`, which no name holds: a comma in one
        // does not split it.
        ("delete user=\"alice\"", "devices=\"default/work,laptop\" "),
    ];
    if isolated.is_some() {
        expect.push(("recovery user=\"alice\"", "by \"help\\u{2028}desk\" (sudo"));
    }
    // totpctl's lines only: while the test owns /dev/log, every process on
    // the machine logs into it (a groupdel of another test ends its line
    // with a newline).
    for line in lines.iter().filter(|l| l.contains("totpctl[")) {
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

/// Each value of an audit line is escaped once, within its own quotes, as
/// the README writes them (`allow-automation … reason="…"`, `check …
/// device="phone"`), never the whole detail at once (`reason=\"…\"`). A
/// value holding quotes, a backslash or a line break stays inside its
/// quotes: the line never splits, and never grows a key=value of its own.
#[test]
fn audit_values_are_escaped_once_each_in_its_own_quotes() {
    let _serial = common::sshd::Serial::acquire();
    let Some(syslog) = SyslogCapture::start() else {
        return;
    };
    let ctl = Ctl::new();
    assert!(ctl.run(&["enroll", "ci", "--no-confirm"]).status.success());
    let out = ctl.run(&[
        "allow-automation",
        "ci",
        "--key",
        AUTOMATION_KEY,
        "--from",
        "192.0.2.0/24",
        "--until",
        "30d",
        "--reason",
        "nightly rsync",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    // A file name is text nobody checked: quotes, a forged part, a line
    // break, a backslash.
    let hostile = ctl.dir.path().join("k \"x\" by=\"root\"\nforged=1 \\");
    let out = ctl.run(&["keygen", hostile.to_str().expect("utf8")]);
    assert!(out.status.success(), "{:?}", text(&out));
    let lines = syslog.finish();
    let ours: Vec<&String> = lines.iter().filter(|l| l.contains("totpctl[")).collect();
    let find = |start: &str| {
        ours.iter()
            .find(|l| l.contains(start))
            .unwrap_or_else(|| panic!("no audit line {start:?} in {lines:#?}"))
            .to_string()
    };

    let grant = find("allow-automation user=\"ci\" ");
    assert!(
        grant.contains(&format!(
            "allow-automation user=\"ci\" id=1 key={AUTOMATION_KEY} from=192.0.2.0/24 until=\""
        )),
        "{grant}"
    );
    assert!(grant.contains(" reason=\"nightly rsync\" by \""), "{grant}");
    assert!(!grant.contains('\\'), "escaped twice: {grant}");
    assert_eq!(
        audit_keys(&grant),
        ["user", "id", "key", "from", "until", "reason"],
        "{grant}"
    );

    let keygen = find("keygen user=\"*\" ");
    let dir = ctl.dir.path().display();
    assert!(
        keygen.contains(&format!(
            "keygen user=\"*\" file=\"{dir}/k \\\"x\\\" by=\\\"root\\\"\\x0aforged=1 \\\\\" by \""
        )),
        "{keygen}"
    );
    assert_eq!(audit_keys(&keygen), ["user", "file"], "{keygen}");
    for line in &ours {
        assert!(!line.contains('\n'), "a raw line break: {line:?}");
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
    admin.args(["enroll", "bob", "--secret", key, "--allow-unknown-user"]);
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

/// Names are checked against the name service before anything is stored;
/// an explicit option allows an account this host does not know; `delete`
/// says what it removed.
#[test]
fn enrollment_needs_a_name_the_name_service_knows_and_delete_says_what_went() {
    let ctl = Ctl::new();
    ctl.add_user("alice");
    let out = ctl.run_strict(&["enroll", "alcie", "--no-confirm"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("\"alcie\" is not a user on this host"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-unknown-user"), "{stderr}");
    assert!(
        !ctl.run(&["show", "alcie"]).status.success(),
        "nothing stored"
    );
    let out = ctl.run_strict(&["allow-enroll", "alcie", "--for", "1h"]);
    assert!(!out.status.success());
    let out = ctl.run_strict(&["enroll", "alcie", "--no-confirm", "--allow-unknown-user"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = ctl.run_strict(&["enroll", "alice", "--no-confirm"]);
    assert!(out.status.success(), "{:?}", text(&out));
    for bad in ["../etc", "a/b", ".."] {
        let out = ctl.run_strict(&["enroll", bad, "--allow-unknown-user"]);
        assert!(!out.status.success(), "{bad}");
    }
    let out = ctl.run(&["delete", "alice"]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("Deleted alice's 1 token(s) (default) and 10 unused recovery code(s)"),
        "{stdout}"
    );
}

/// The rollout report, `show` and `list` for a pilot group whose members
/// stand everywhere a rollout can leave them. Wrong codes go through the
/// real module (pamtester), and every process, the module and totpctl,
/// runs on the same frozen clock (libfaketime), so the locks' ends are
/// known dates; `date -u` computes the expected ones.
struct Pilot {
    world: common::World,
    config: std::path::PathBuf,
    /// When everything happened (a whole minute, so a TOTP step starts there).
    at: u64,
}

/// The limits the pilot's module and totpctl both read from the config
/// file: a back-off after 3 wrong codes in a row from one address, the
/// user locked after 4 within 24 h.
const PILOT_LIMITS: &str = "backoff_after = 3\nuser_limit = 4\n";

impl Pilot {
    fn new() -> Pilot {
        let world = common::World::new_sqlite();
        let config = world.dir.path().join("pam_totp.conf");
        std::fs::write(
            &config,
            format!("{}{PILOT_LIMITS}", world.store_config_lines()),
        )
        .expect("config");
        world.service("totp", &format!("config={}", config.display()));
        // Two days ahead, 14:03:00 UTC: after the machine's boot, and a
        // date that shows minutes and seconds.
        let at = (common::unix_now() / 86_400 + 2) * 86_400 + 14 * 3_600 + 3 * 60;
        Pilot { world, config, at }
    }

    /// libfaketime's absolute, frozen form (no `@`: the clock stands still).
    fn frozen(at: u64) -> String {
        common::utc_for_faketime(at)
    }

    /// totpctl with the World's passwd and group files (nss_wrapper), its
    /// clock frozen at `at`, reading the pilot's config file.
    fn ctl_at(&self, at: u64, args: &[&str]) -> Output {
        totpctl()
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env(
                "LD_PRELOAD",
                format!("{} {}", common::NSS_WRAPPER, common::FAKETIME),
            )
            .env("NSS_WRAPPER_PASSWD", self.world.passwd_file())
            .env("NSS_WRAPPER_GROUP", self.world.group_file())
            .env("FAKETIME", Pilot::frozen(at))
            .env("TZ", "UTC")
            .stdin(Stdio::null())
            .output()
            .expect("run totpctl")
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_at(self.at, args)
    }

    /// One login through the real module at the frozen time.
    fn login(&self, at: u64, user: &str, rhost: &str, answer: &str) -> common::Run {
        let mut cmd = self.world.pamtester_command("totp", user, Some(rhost));
        cmd.env("LD_PRELOAD", common::preload(&[common::FAKETIME]))
            .env("FAKETIME", Pilot::frozen(at))
            .env("TZ", "UTC");
        common::run_with_stdin(cmd, answer)
    }

    fn enroll_key(&self, user: &str) -> String {
        let key = common::random_secret();
        let out = self.ctl(&["enroll", user, "--secret", &key]);
        assert!(out.status.success(), "enroll {user}: {:?}", text(&out));
        key
    }
}

/// `2026-12-03 14:03:30 UTC`, from `date -u`, not from totpctl's code.
fn date_of(unix: u64) -> String {
    format!("{} UTC", common::utc_for_faketime(unix))
}

/// A minimal RFC 4180 reader: CRLF records, quoted fields with doubled
/// quotes (enough for what totpctl writes).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => {
                assert!(c != '\n', "a bare LF ends a record: {text:?}");
                field.push(c);
            }
        }
    }
    assert!(
        field.is_empty() && record.is_empty(),
        "unterminated: {text:?}"
    );
    records
}

#[test]
fn report_shows_where_each_member_of_the_pilot_stands_with_locks_as_dates() {
    if !common::pam_tools_present() || !common::tools_present(&[common::FAKETIME]) {
        return;
    }
    let pilot = Pilot::new();
    let world = &pilot.world;
    let at = pilot.at;
    // The pilot group lists six members; henry is in it by his primary
    // group only; grace is enrolled but not in the pilot.
    for user in ["alice", "bob", "carol", "dave", "erin", "frank", "grace"] {
        world.add_user(user);
    }
    let mut passwd = std::fs::OpenOptions::new()
        .append(true)
        .open(world.passwd_file())
        .expect("passwd");
    writeln!(passwd, "henry:x:20001:2000::/nonexistent:/usr/sbin/nologin").expect("passwd");
    let mut group = std::fs::OpenOptions::new()
        .append(true)
        .open(world.group_file())
        .expect("group");
    writeln!(group, "pilot:x:2000:alice,bob,carol,dave,erin,frank").expect("group");

    // alice: active, logged in once. bob: pending. carol: may enroll at
    // login. dave: three wrong codes from one address (the back-off).
    // erin: four wrong codes from two addresses (the per-user ceiling).
    // frank: active, never used. henry: nothing.
    let alice = pilot.enroll_key("alice");
    let bob = pilot.ctl(&["enroll", "bob", "--json"]);
    assert!(bob.status.success(), "{:?}", text(&bob));
    let allowed = pilot.ctl(&["allow-enroll", "carol", "--for", "24h"]);
    assert!(allowed.status.success(), "{:?}", text(&allowed));
    let dave = pilot.enroll_key("dave");
    let erin = pilot.enroll_key("erin");
    pilot.enroll_key("frank");
    pilot.enroll_key("grace");

    let right = pilot.login(
        at,
        "alice",
        "203.0.113.9",
        &common::oathtool(&alice, Some(at), &[]),
    );
    assert!(right.success, "{right:?}");
    let wrong = common::wrong_code(&common::oathtool(&dave, Some(at), &[]));
    for _ in 0..3 {
        let run = pilot.login(at, "dave", "192.0.2.7", &wrong);
        assert!(!run.success && run.logged("wrong code"), "{run:?}");
    }
    let wrong = common::wrong_code(&common::oathtool(&erin, Some(at), &[]));
    for rhost in [
        "198.51.100.1",
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.2",
    ] {
        let run = pilot.login(at, "erin", rhost, &wrong);
        assert!(!run.success && run.logged("wrong code"), "{run:?}");
    }
    // The module agrees that both are locked: a right code is refused
    // unchecked.
    for (user, key, rhost) in [("dave", &dave, "192.0.2.7"), ("erin", &erin, "203.0.113.9")] {
        let run = pilot.login(
            at + 10,
            user,
            rhost,
            &common::oathtool(key, Some(at + 10), &[]),
        );
        assert!(
            !run.success && run.logged("denied: too many failed codes"),
            "{run:?}"
        );
    }
    let backoff = format!(
        "backing off from 192.0.2.7 until {} (3 wrong codes)",
        date_of(at + 30)
    );
    let ceiling = format!(
        "locked until {} (4 wrong codes in 24 h)",
        date_of(at + 86_400)
    );

    // The table: one line per member, the locks and last use as dates.
    let out = pilot.ctl(&["report", "--group", "pilot"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let line = |user: &str| -> String {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(user))
            .unwrap_or_else(|| panic!("no line for {user}:\n{stdout}"))
            .to_string()
    };
    for (user, state) in [
        ("alice", "enrolled"),
        ("bob", "pending"),
        ("carol", "not enrolled"),
        ("dave", "locked"),
        ("erin", "locked"),
        ("frank", "never used"),
        ("henry", "not enrolled"),
    ] {
        let found = line(user);
        assert!(
            found[user.len()..].trim_start().starts_with(state),
            "{user} should be {state}: {found}\n{stdout}"
        );
    }
    assert!(!stdout.lines().any(|l| l.starts_with("grace")), "{stdout}");
    assert!(line("alice").contains(&date_of(at)), "{stdout}");
    assert!(line("dave").contains(&backoff), "{stdout}");
    assert!(line("erin").contains(&ceiling), "{stdout}");
    assert!(
        line("carol").contains(&format!(
            "may enroll at login until {}",
            date_of(at + 86_400)
        )),
        "{stdout}"
    );
    for (label, count) in [
        ("locked", 2),
        ("pending", 1),
        ("not enrolled", 2),
        ("never used", 1),
        ("enrolled", 1),
        ("total", 7),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(label) && l[label.len()..].trim() == count.to_string()),
            "count {label} {count}:\n{stdout}"
        );
    }
    // Dates, never epochs.
    for epoch in [at, at + 30, at + 86_400] {
        assert!(!stdout.contains(&epoch.to_string()), "{stdout}");
    }

    // JSON: the same users and counts, times both ways.
    let out = pilot.ctl(&["report", "--group", "pilot", "--json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    let users = report["users"].as_array().expect("users");
    let by_name = |user: &str| -> &serde_json::Value {
        users
            .iter()
            .find(|u| u["user"] == user)
            .unwrap_or_else(|| panic!("no {user} in {report}"))
    };
    let states: Vec<(String, String)> = users
        .iter()
        .map(|u| {
            (
                u["user"].as_str().expect("user").to_string(),
                u["state"].as_str().expect("state").to_string(),
            )
        })
        .collect();
    let mut sorted = states.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            ("alice", "enrolled"),
            ("bob", "pending"),
            ("carol", "not_enrolled"),
            ("dave", "locked"),
            ("erin", "locked"),
            ("frank", "never_used"),
            ("henry", "not_enrolled"),
        ]
        .map(|(u, s)| (u.to_string(), s.to_string()))
    );
    assert_eq!(report["group"], "pilot");
    assert_eq!(
        report["counts"],
        serde_json::json!({"locked": 2, "disabled_or_expired": 0, "pending": 1,
            "not_enrolled": 2, "never_used": 1, "enrolled": 1, "total": 7})
    );
    assert_eq!(by_name("alice")["last_used"], at);
    assert_eq!(by_name("alice")["last_used_utc"], date_of(at));
    assert_eq!(by_name("bob")["pending_tokens"], 1);
    assert_eq!(by_name("bob")["active_tokens"], 0);
    let lock = &by_name("dave")["locks"][0];
    assert_eq!(
        (
            &lock["kind"],
            &lock["rhost"],
            &lock["until"],
            &lock["failures"]
        ),
        (
            &"source".into(),
            &"192.0.2.7".into(),
            &(at + 30).into(),
            &3.into()
        )
    );
    let lock = &by_name("erin")["locks"];
    assert_eq!(lock.as_array().map(Vec::len), Some(1), "{lock}");
    assert_eq!(
        (
            &lock[0]["kind"],
            &lock[0]["until"],
            &lock[0]["until_utc"],
            &lock[0]["failures"]
        ),
        (
            &"user".into(),
            &(at + 86_400).into(),
            &date_of(at + 86_400).into(),
            &4.into()
        )
    );

    // CSV: a header, one row per user, the same states; dates, not epochs.
    let out = pilot.ctl(&["report", "--group", "pilot", "--csv"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let csv = String::from_utf8(out.stdout).expect("utf8");
    let records = csv_table(&csv);
    let header = &records[0];
    assert_eq!(header[0], "user");
    let column = |name: &str| header.iter().position(|h| h == name).expect(name);
    assert_eq!(records.len(), 8, "{csv}");
    let mut csv_states: Vec<(String, String)> = records[1..]
        .iter()
        .map(|r| {
            assert_eq!(r.len(), header.len(), "{r:?}");
            (r[0].clone(), r[column("state")].clone())
        })
        .collect();
    csv_states.sort();
    assert_eq!(csv_states, sorted);
    let row = |user: &str| records.iter().find(|r| r[0] == user).expect(user).clone();
    assert_eq!(row("dave")[column("locked_until_utc")], date_of(at + 30));
    assert_eq!(row("dave")[column("lock")], backoff);
    assert_eq!(
        row("erin")[column("locked_until_utc")],
        date_of(at + 86_400)
    );
    assert_eq!(row("alice")[column("last_used_utc")], date_of(at));
    for epoch in [at, at + 30, at + 86_400] {
        assert!(!csv.contains(&epoch.to_string()), "{csv}");
    }

    // show and list say who is locked, until when and why.
    let (shown, _) = text(&pilot.ctl(&["show", "dave"]));
    assert!(shown.contains(&backoff), "{shown}");
    let (shown, _) = text(&pilot.ctl(&["show", "erin"]));
    assert!(shown.contains(&ceiling), "{shown}");
    let (shown, _) = text(&pilot.ctl(&["show", "alice"]));
    assert!(shown.contains("locked: no"), "{shown}");
    assert!(
        shown.contains(&format!("last used {}", date_of(at))),
        "{shown}"
    );
    let (listed, _) = text(&pilot.ctl(&["list"]));
    let list_line = |user: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(user))
            .unwrap_or_else(|| panic!("{user}: {listed}"))
            .to_string()
    };
    assert!(list_line("dave").contains(&backoff), "{listed}");
    assert!(list_line("erin").contains(&ceiling), "{listed}");
    assert!(!list_line("frank").contains("lock"), "{listed}");
    let out = pilot.ctl(&["list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list JSON");
    let erin_token = listed
        .as_array()
        .and_then(|l| l.iter().find(|t| t["user"] == "erin"))
        .expect("erin");
    assert_eq!(erin_token["locks"][0]["until"], at + 86_400);

    // 31 s later the back-off is over (dave has never logged in), the
    // ceiling is not; the module and totpctl agree.
    let later = pilot.ctl_at(at + 31, &["report", "--group", "pilot", "--json"]);
    let later: serde_json::Value = serde_json::from_slice(&later.stdout).expect("JSON");
    let state_of = |user: &str| {
        later["users"]
            .as_array()
            .and_then(|u| u.iter().find(|u| u["user"] == user))
            .map(|u| u["state"].clone())
    };
    assert_eq!(state_of("dave"), Some("never_used".into()));
    assert_eq!(state_of("erin"), Some("locked".into()));
    let run = pilot.login(
        at + 60,
        "dave",
        "192.0.2.7",
        &common::oathtool(&dave, Some(at + 60), &[]),
    );
    assert!(run.success, "{run:?}");

    // Without --group: every user with a token, none without.
    let out = pilot.ctl(&["report", "--json"]);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut names: Vec<&str> = all["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["user"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["alice", "bob", "dave", "erin", "frank", "grace"]);
    assert_eq!(all["group"], serde_json::Value::Null);
}

#[test]
fn report_on_a_group_nss_does_not_know_is_an_error() {
    if !common::tools_present(&[common::NSS_WRAPPER, common::FAKETIME]) {
        return;
    }
    let pilot = Pilot::new();
    pilot.world.add_user("alice");
    pilot.enroll_key("alice");
    for format in [&[][..], &["--json"], &["--csv"]] {
        let mut args = vec!["report", "--group", "no-such-pilot"];
        args.extend_from_slice(format);
        let out = pilot.ctl(&args);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{args:?}: {stdout}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(
            stderr.contains("no group named \"no-such-pilot\""),
            "{stderr}"
        );
    }
    // A known but empty group is a report of nobody, not an error.
    let mut group = std::fs::OpenOptions::new()
        .append(true)
        .open(pilot.world.group_file())
        .expect("group");
    writeln!(group, "empty:x:2001:").expect("group");
    let out = pilot.ctl(&["report", "--group", "empty", "--json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["counts"]["total"], 0);
}

// ---- Diagnostics before tickets: check, check-config, confirm's messages.

/// A moment in the middle of the current 30 s step, so that codes for it
/// and its neighbours stay put while the test runs with the clock frozen
/// there (libfaketime). Never before this boot: the boot fence would
/// refuse its steps.
fn mid_step() -> u64 {
    let now = common::unix_now();
    now - now % 30 - 15
}

/// totpctl on `world`'s store with its clock frozen at `at`.
fn totpctl_at(world: &common::World, at: u64, args: &[&str]) -> Output {
    totpctl()
        .env("LD_PRELOAD", common::FAKETIME)
        .env("FAKETIME", format!("@{}", common::utc_for_faketime(at)))
        .env("TZ", "UTC")
        .args(world.store_options())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run totpctl")
}

/// "700102" as an app shows it: "700 102".
fn grouped(code: &str) -> String {
    let (a, b) = code.split_at(code.len() / 2);
    format!("{a} {b}")
}

/// `check` names the device and the clock offset of a right code (oathtool
/// at -1, 0 and +1 step, typed in two groups) and does not use it up: a
/// login with the same code afterwards succeeds, and a second check says
/// the login used it.
#[test]
fn check_names_device_and_offset_and_leaves_the_code_unused() {
    if !common::pam_tools_present() {
        return;
    }
    let world = common::World::new();
    let key = world.enroll("alice");
    let out = world.totpctl(&["enroll", "alice", "--device", "tablet", "--no-confirm"]);
    assert!(out.status.success(), "{:?}", text(&out));
    world.service("totp", "");
    let at = mid_step();
    for (shift, said) in [
        (0, "at +0 steps (its clock is right, within 30 s)"),
        (-30, "at -1 step (its clock is about 30 s behind)"),
        (30, "at +1 step (its clock is about 30 s ahead)"),
    ] {
        let code = common::oathtool(&key, Some(at.saturating_add_signed(shift)), &[]);
        let out = totpctl_at(&world, at, &["check", "alice", &grouped(&code)]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{shift}: {stdout} {stderr}");
        assert!(
            stdout.contains(&format!(
                "The code matches alice's device \"default\" {said}"
            )),
            "{shift}: {stdout}"
        );
        assert!(stdout.contains("Not used up"), "{stdout}");
        assert!(
            !stdout.contains(&code) && !stderr.contains(&code),
            "{stdout}"
        );
    }
    // Not used up: the module takes the +1 code once, then refuses it.
    let code = common::oathtool(&key, Some(at + 30), &[]);
    let login = world.login_at(at, "totp", "alice", Some(common::RHOST), &code);
    assert!(login.success, "{login:?}");
    let again = world.login_at(at, "totp", "alice", Some(common::RHOST), &code);
    assert!(!again.success, "{again:?}");
    let out = totpctl_at(&world, at, &["check", "alice", &code]);
    let (stdout, _) = text(&out);
    assert!(stdout.contains("already used by a login"), "{stdout}");
    // A right check gives its guess back: no failures for alice.
    let (shown, _) = text(&world.totpctl(&["show", "alice"]));
    assert!(shown.contains("failed codes: none"), "{shown}");
}

/// Wrong checks count as wrong logins: they back off (source "totpctl
/// check"), reach the per-user limit, and then even a right code is not
/// checked, by check or by a login, until `totpctl unlock`.
#[test]
fn wrong_checks_lock_like_logins_and_a_locked_user_is_not_checked() {
    if !common::pam_tools_present() {
        return;
    }
    let world = common::World::new();
    let conf = world.dir.path().join("pam_totp.conf");
    std::fs::write(&conf, "user_limit = 3\nbackoff_after = 100\n").expect("conf");
    let conf = conf.display().to_string();
    let limited = |args: &[&str]| {
        let mut command = totpctl();
        command
            .args(["--config", &conf])
            .args(world.store_options())
            .args(args)
            .stdin(Stdio::null());
        command.output().expect("run totpctl")
    };
    let key = world.enroll("alice");
    world.service("totp", "user_limit=3 backoff_after=100");
    let wrong = common::wrong_code(&common::oathtool(&key, None, &[]));
    for n in 1..=3 {
        let out = limited(&["check", "alice", &wrong]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
        assert!(
            stderr.contains(
                "the code does not match any device of alice (checked 1 device at ±1 step)"
            ),
            "{stderr}"
        );
        assert!(stderr.contains(&format!("({n} of 3 allowed")), "{stderr}");
        assert_eq!(
            n == 3,
            stderr.contains("has now reached that limit"),
            "{stderr}"
        );
    }
    let right = common::oathtool(&key, None, &[]);
    let out = limited(&["check", "alice", &right]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
    assert!(stderr.contains("alice is locked"), "{stderr}");
    assert!(stderr.contains("The code was not checked"), "{stderr}");
    // The module sees the same lock: the right code is refused, not burned.
    let login = world.login(
        "totp",
        "alice",
        Some(common::RHOST),
        &common::oathtool(&key, None, &[]),
    );
    assert!(!login.success, "{login:?}");
    let (shown, _) = text(&world.totpctl(&["show", "alice"]));
    assert!(shown.contains("\"totpctl check\": 3"), "{shown}");
    assert!(world.totpctl(&["unlock", "alice"]).status.success());
    let out = limited(&["check", "alice", &common::oathtool(&key, None, &[])]);
    assert!(out.status.success(), "{:?}", text(&out));

    // With the default limits a sixth wrong check in a row backs off.
    let bob = world.enroll("bob");
    let wrong = common::wrong_code(&common::oathtool(&bob, None, &[]));
    for _ in 0..5 {
        let out = world.totpctl(&["check", "bob", &wrong]);
        assert!(text(&out).1.contains("does not match"), "{:?}", text(&out));
    }
    let out = world.totpctl(&["check", "bob", &common::oathtool(&bob, None, &[])]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("too many wrong codes checked for bob"),
        "{stderr}"
    );
}

/// What is not a code is said so, and checks nothing (no guess taken): a
/// recovery code, letters, a wrong length, control characters, a huge
/// argument. Bad user names are refused. Nothing typed is echoed.
#[test]
fn check_explains_answers_that_are_no_code_and_takes_no_guess() {
    let world = common::World::new();
    let key = world.enroll("alice");
    let huge = "7".repeat(100_000);
    for (answer, said) in [
        (
            "abcd-efgh-jkmn",
            "that is a recovery code shape; check does not test recovery codes (it would use one up)",
        ),
        ("ABCD EFGH JKMN", "recovery code shape"),
        ("70o1o2", "that is not a code"),
        ("\u{1b}[2J700102", "that is not a code"),
        ("", "that is not a code"),
        (&huge, "that is not a code"),
        (
            "7001021",
            "the code has 7 digits, but alice's devices show 6-digit codes",
        ),
        ("70010212", "imported scratch code"),
    ] {
        let out = world.totpctl(&["check", "alice", answer]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{answer:?}: {stdout} {stderr}");
        assert!(stderr.contains(said), "{answer:?}: {stderr}");
        assert!(!stderr.contains('\u{1b}'), "{stderr}");
        assert!(
            answer.is_empty() || !stderr.contains(answer),
            "echoed: {stderr}"
        );
    }
    for user in ["al\u{1b}ice", "two words", &"u".repeat(300)] {
        let out = world.totpctl(&["check", user, "700102"]);
        assert_eq!(out.status.code(), Some(1), "{user:?}");
        assert!(!text(&out).1.contains('\u{1b}'), "{:?}", text(&out));
    }
    let out = world.totpctl(&["check", "nobody", "700102"]);
    assert!(
        text(&out).1.contains("nobody is not enrolled"),
        "{:?}",
        text(&out)
    );
    let (shown, _) = text(&world.totpctl(&["show", "alice"]));
    assert!(shown.contains("failed codes: none"), "{shown}");
    // The key still works: nothing above used or locked anything.
    let out = world.totpctl(&["check", "alice", &common::oathtool(&key, None, &[])]);
    assert!(out.status.success(), "{:?}", text(&out));
}

/// Each check is audited with the user, the result and the offset, by
/// whom, and never with the code.
#[test]
fn check_is_audited_without_the_code() {
    let _serial = common::sshd::Serial::acquire();
    let Some(syslog) = SyslogCapture::start() else {
        return;
    };
    let world = common::World::new();
    let key = world.enroll("alice");
    let right = common::oathtool(&key, None, &[]);
    let wrong = common::wrong_code(&right);
    assert!(
        world
            .totpctl(&["check", "alice", &grouped(&right)])
            .status
            .success()
    );
    assert!(!world.totpctl(&["check", "alice", &wrong]).status.success());
    let lines = syslog.finish();
    let check: Vec<&String> = lines.iter().filter(|l| l.contains("totpctl[")).collect();
    for line in &check {
        for code in [&right, &wrong, &grouped(&right), &grouped(&wrong)] {
            assert!(
                !line.contains(code.as_str()),
                "a code in the audit log: {line}"
            );
        }
    }
    for said in [
        "check user=\"alice\" result=match device=",
        "check user=\"alice\" result=no-match devices=1 window=1 failures_24h=1",
    ] {
        let line = check
            .iter()
            .find(|l| l.contains(said))
            .unwrap_or_else(|| panic!("no {said:?} in {lines:#?}"));
        assert!(line.starts_with("<85>") && line.contains(" by "), "{line}");
    }
    // The device in its own quotes, as the README shows it.
    assert!(
        check
            .iter()
            .any(|l| l.contains("result=match device=\"default\" offset=")),
        "{check:#?}"
    );
}

/// check-config on a good configuration: exit 0 and the effective
/// settings; groups come from NSS (here the World's, through nss_wrapper).
#[test]
fn check_config_passes_a_good_configuration_and_shows_it() {
    let world = common::World::new_sqlite();
    world.enroll("alice");
    let conf = world.dir.path().join("pam_totp.conf");
    std::fs::write(
        &conf,
        format!(
            "{}window = 2\nonly_group = users\n",
            world.store_config_lines()
        ),
    )
    .expect("conf");
    let out = check_config(
        &world,
        &[
            "--config",
            conf.to_str().expect("path"),
            "--pam-args",
            "auth required pam_totp.so [prompt=Code please: ] messages=no",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout} {stderr}");
    for said in [
        "No problems found",
        "window         ±2 steps",
        "only_group     users",
        "prompt \"Code please: \"",
        "messages       no",
        &format!("store          {}", world.db.display()),
    ] {
        assert!(stdout.contains(said), "{said:?}: {stdout}");
    }
}

/// check-config finds every problem, not only the first, and says what to
/// do, one line each; exit 1.
#[test]
fn check_config_reports_every_problem() {
    let world = common::World::new_sqlite();
    world.enroll("alice");
    let conf = world.dir.path().join("pam_totp.conf");
    std::fs::write(
        &conf,
        format!("{}windw = 2\nmode = sideways\n", world.store_config_lines()),
    )
    .expect("conf");
    let conf = conf.to_str().expect("path");
    let out = check_config(
        &world,
        &[
            "--config",
            conf,
            "--pam-args",
            "debugg only_group=users,no-such-group",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
    for said in [
        ":2: unknown key \"windw\" -- did you mean window?",
        ":3: the value of mode is invalid: expected separate or combined",
        "module argument: unknown key \"debugg\" -- did you mean debug?",
        "only_group: the name service knows no group \"no-such-group\"",
    ] {
        assert!(stdout.contains(said), "{said:?}: {stdout}");
    }
    assert!(stderr.contains("4 problems"), "{stderr}");
    assert!(!stdout.contains("No problems"), "{stdout}");

    // A store that is not there, a key file named but missing, a config
    // file others could write.
    let missing = world.dir.path().join("nothing").join("pam_totp.db");
    let out = check_config(
        &world,
        &[
            "--pam-args",
            &format!("config={conf} db={} only_group=users", missing.display()),
        ],
    );
    let (stdout, _) = text(&out);
    // (the config file still has its two typos)
    assert!(
        stdout.contains("does not exist (create it with `totpctl init`)"),
        "{stdout}"
    );
    let key = world.dir.path().join("absent.key");
    let good = world.dir.path().join("good.conf");
    std::fs::write(&good, world.store_config_lines()).expect("conf");
    let out = check_config(
        &world,
        &[
            "--pam-args",
            &format!("config={} key_file={}", good.display(), key.display()),
        ],
    );
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("key_file {}", key.display())),
        "{stdout}"
    );
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = check_config(&world, &["--config", good.to_str().expect("path")]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("not checked: the config file could not be read"),
        "{stdout}"
    );

    // Hostile input is refused cleanly, nothing echoed raw.
    for args in [
        vec!["--pam-args".to_string(), "x".repeat(100_000)],
        vec!["--pam-args".to_string(), "window=\u{1b}[2J".to_string()],
        vec!["--pam-args".to_string(), "[prompt=open".to_string()],
        vec!["--config".to_string(), "/etc/\u{1b}[2J".to_string()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = check_config(&world, &args);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stdout} {stderr}");
        assert!(
            !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'),
            "{stdout} {stderr}"
        );
        assert!(stdout.len() + stderr.len() < 4096, "{stdout} {stderr}");
    }
    // Through sudo, only the module's own file: no file named here.
    for args in [
        &["check-config", "--config", conf][..],
        &["check-config", "--pam-args", "db=/x"],
    ] {
        let out = through_sudo(args).output().expect("run");
        assert!(
            text(&out)
                .1
                .contains("is refused when totpctl runs through sudo"),
            "{:?}",
            text(&out)
        );
    }
}

/// totpctl check-config ARGS with the World's users and groups (nss_wrapper).
fn check_config(world: &common::World, args: &[&str]) -> Output {
    totpctl()
        .env("LD_PRELOAD", common::NSS_WRAPPER)
        .env("NSS_WRAPPER_PASSWD", world.passwd_file())
        .env("NSS_WRAPPER_GROUP", world.group_file())
        .arg("check-config")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run totpctl")
}

/// confirm explains an answer that is no code for the pending token, takes
/// a code typed in two groups, and says the confirming code is used: a
/// login with it is refused as reused.
#[test]
fn confirm_explains_wrong_shapes_and_says_the_code_is_used() {
    if !common::pam_tools_present() {
        return;
    }
    let world = common::World::new();
    let out = world.totpctl(&["enroll", "alice", "--json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["state"], "pending");
    let key = json["key"].as_str().expect("key").to_string();
    for (answer, said) in [
        (
            "12345",
            "the code has 5 digits, but alice's pending token shows 6-digit codes",
        ),
        ("1234567", "the code has 7 digits"),
        (
            "abcdef",
            "that is not a code: confirm needs the 6 digits the app shows now",
        ),
        ("\u{1b}]0;x\u{7}", "that is not a code"),
        ("abcd-efgh-jkmn", "that is a recovery code"),
    ] {
        let out = world.totpctl(&["confirm", "alice", answer]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{answer:?}: {stderr}");
        assert!(stderr.contains(said), "{answer:?}: {stderr}");
        assert!(!stderr.contains("clock"), "{answer:?}: {stderr}");
        assert!(!stderr.contains('\u{1b}'), "{stderr}");
    }
    let code = common::oathtool(&key, None, &[]);
    let out = world.totpctl(&["confirm", "alice", &grouped(&code)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(
        stdout.contains("The confirming code is now used: the next login needs the next code"),
        "{stdout}"
    );
    assert!(!stdout.contains(&code), "{stdout}");
    world.service("totp", "");
    let login = world.login("totp", "alice", Some(common::RHOST), &code);
    assert!(!login.success, "{login:?}");
    assert!(login.logged("denied: code already used"), "{login:?}");
}

/// Automation grants as the administrator makes and reviews them: every
/// limit refused with a message, the list, `--expiring`, `show`, `report`,
/// `revoke`, and `delete` revoking the user's grants.
#[test]
fn automation_grants_are_scoped_bounded_listed_and_revoked() {
    let ctl = Ctl::new();
    assert!(ctl.run(&["init"]).status.success());
    assert!(ctl.run(&["enroll", "ci", "--no-confirm"]).status.success());
    let grant = |extra: &[&str]| {
        let mut args = vec!["allow-automation", "ci", "--key", AUTOMATION_KEY];
        args.extend_from_slice(extra);
        ctl.run(&args)
    };
    for (extra, says) in [
        (&["--until", "30d", "--reason", "r"][..], "--from"),
        (&["--from", "192.0.2.0/24", "--reason", "r"], "--until"),
        (&["--from", "192.0.2.0/24", "--until", "30d"], "--reason"),
        (
            &["--from", "0.0.0.0/0", "--until", "30d", "--reason", "r"],
            "too wide",
        ),
        (
            &["--from", "192.0.2.1/24", "--until", "30d", "--reason", "r"],
            "host bits",
        ),
        (
            &["--from", "192.0.2.0/24", "--until", "91d", "--reason", "r"],
            "automation_max",
        ),
        (
            &[
                "--from",
                "192.0.2.0/24",
                "--until",
                "2001-01-01",
                "--reason",
                "r",
            ],
            "in the past",
        ),
        (
            &[
                "--from",
                "192.0.2.0/24",
                "--until",
                "30d",
                "--reason",
                "a\"b",
            ],
            "quotes",
        ),
    ] {
        let out = grant(extra);
        assert!(!out.status.success(), "{extra:?}");
        assert!(text(&out).1.contains(says), "{extra:?}: {:?}", text(&out));
    }
    let out = ctl.run(&[
        "allow-automation",
        "ci",
        "--key",
        "SHA256:short",
        "--from",
        "192.0.2.0/24",
        "--until",
        "30d",
        "--reason",
        "r",
    ]);
    assert!(!out.status.success());
    let out = ctl.run_strict(&[
        "allow-automation",
        "nobody",
        "--key",
        AUTOMATION_KEY,
        "--from",
        "192.0.2.0/24",
        "--until",
        "30d",
        "--reason",
        "r",
    ]);
    assert!(!out.status.success(), "an unknown user");

    let out = grant(&[
        "--from",
        "192.0.2.0/24,2001:db8::/32",
        "--until",
        "30d",
        "--reason",
        "lab sync",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let (said, _) = text(&out);
    assert!(said.contains("Automation grant #1"), "{said}");
    assert!(
        said.contains("restrict,from=\"192.0.2.0/24,2001:db8::/32\""),
        "{said}"
    );
    let out = grant(&["--from", "10.1.0.0/16", "--until", "10d", "--reason", "CI"]);
    assert!(out.status.success(), "{:?}", text(&out));

    let (list, _) = text(&ctl.run(&["automation", "list"]));
    assert!(
        list.contains("#1 user=\"ci\"") && list.contains("#2 user=\"ci\""),
        "{list}"
    );
    // Who made it, escaped once: `by "root" (uid 0)`, not `by \"root\"`.
    for line in list.lines() {
        assert!(line.contains(" by \"root\" ("), "{list}");
        assert!(!line.contains('\\'), "escaped twice: {list}");
    }
    let (soon, _) = text(&ctl.run(&["automation", "list", "--expiring", "14d"]));
    assert!(!soon.contains("#1 ") && soon.contains("#2 "), "{soon}");
    let (report, _) = text(&ctl.run(&["report"]));
    assert!(
        report.contains("Automation grants ending within 14 days"),
        "{report}"
    );
    assert!(
        report.contains("#2 ") && !report.contains("#1 "),
        "{report}"
    );
    // The CSV report is one table, the users'; the grants that end soon
    // come as CSV from `automation list --expiring 14d --csv`.
    let out = ctl.run(&["report", "--csv"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let csv = String::from_utf8(out.stdout).expect("utf8");
    let users = csv_table(&csv);
    assert_eq!(users[0][0], "user", "{csv}");
    assert_eq!(users.len(), 2, "a header and ci: {csv}");
    let out = ctl.run(&["automation", "list", "--expiring", "14d", "--csv"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let csv = String::from_utf8(out.stdout).expect("utf8");
    let grants = csv_table(&csv);
    assert_eq!(grants[0], AUTOMATION_CSV_HEADER, "{csv}");
    assert_eq!(grants.len(), 2, "a header and grant #2: {csv}");
    assert_eq!(grants[1][5], "in force", "{csv}");
    let out = ctl.run(&["automation", "list", "--all", "--csv"]);
    let all = csv_table(&String::from_utf8(out.stdout).expect("utf8"));
    assert_eq!(all.len(), 3, "a header and both grants: {all:?}");
    let row = &grants[1];
    assert_eq!(
        (
            &row[0][..],
            &row[1][..],
            &row[2][..],
            &row[3][..],
            &row[6][..]
        ),
        ("2", "ci", AUTOMATION_KEY, "10.1.0.0/16", "CI"),
        "{csv}"
    );
    assert!(
        row[4].ends_with(" UTC") && row[7].ends_with(" UTC"),
        "{row:?}"
    );
    assert!(row[8].starts_with("\"root\" ("), "{row:?}");
    let json: serde_json::Value =
        serde_json::from_slice(&ctl.run(&["report", "--json"]).stdout).expect("json");
    let soon: Vec<_> = json["automation_expiring"]
        .as_array()
        .expect("automation_expiring")
        .iter()
        .map(|g| g["id"].as_i64())
        .collect();
    assert_eq!(soon, vec![Some(2)], "{json}");
    let (show, _) = text(&ctl.run(&["show", "ci"]));
    assert!(show.contains("automation grant #1: key SHA256:"), "{show}");
    assert!(show.contains("key graces: none"), "{show}");
    let json: serde_json::Value =
        serde_json::from_slice(&ctl.run(&["show", "ci", "--json"]).stdout).expect("json");
    assert_eq!(
        json["automation"].as_array().map(Vec::len),
        Some(2),
        "{json}"
    );

    let out = ctl.run(&["automation", "revoke", "1"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = ctl.run(&["automation", "revoke", "1"]);
    assert!(!out.status.success(), "revoked twice");
    let (list, _) = text(&ctl.run(&["automation", "list"]));
    assert!(!list.contains("#1 ") && list.contains("#2 "), "{list}");
    let (all, _) = text(&ctl.run(&["automation", "list", "--all"]));
    assert!(all.contains("#1 ") && all.contains("revoked"), "{all}");

    let out = ctl.run(&["forget", "ci", "--key", "not-a-fingerprint"]);
    assert!(!out.status.success());
    let out = ctl.run(&["forget", "ci", "--key", AUTOMATION_KEY]);
    assert!(out.status.success(), "{:?}", text(&out));

    assert!(ctl.run(&["delete", "ci"]).status.success());
    let (list, _) = text(&ctl.run(&["automation", "list"]));
    assert!(list.contains("no automation grants"), "{list}");

    // An automation account with no token at all: `delete` still revokes
    // its grants (they are the only way it gets in).
    ctl.add_user("bot");
    let out = ctl.run(&[
        "allow-automation",
        "bot",
        "--key",
        AUTOMATION_KEY,
        "--from",
        "192.0.2.0/24",
        "--until",
        "30d",
        "--reason",
        "nightly rsync",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = ctl.run(&["delete", "bot"]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out).0.contains("revoked their 1 automation grant"),
        "{:?}",
        text(&out)
    );
    let (list, _) = text(&ctl.run(&["automation", "list"]));
    assert!(list.contains("no automation grants"), "{list}");
}

/// `automation list --csv`'s header (README, "Fewer prompts").
const AUTOMATION_CSV_HEADER: [&str; 9] = [
    "grant_id",
    "user",
    "key",
    "from",
    "until_utc",
    "state",
    "reason",
    "created_utc",
    "created_by",
];

/// A CSV file read as one table: a header first, then records with as many
/// fields as it has (no empty line, no second table).
fn csv_table(csv: &str) -> Vec<Vec<String>> {
    let table = parse_csv(csv);
    assert!(!table.is_empty(), "a table without a header: {csv:?}");
    for record in &table {
        assert_eq!(record.len(), table[0].len(), "{record:?} in {csv:?}");
    }
    table
}

/// Who made a grant, as `automation list` and `report` print it: what
/// totpctl stored (the creator as the audit line names it, a sudo caller's
/// name escaped once) as it is, never escaped again; a creator stored in
/// any other shape (a row totpctl did not write) quoted and escaped whole,
/// so it cannot split the line or add to it. `automation list --csv` and `--json`
/// carry the stored text as it is, in their own quoting.
#[test]
fn automation_creators_are_shown_escaped_once() {
    let ctl = Ctl::new();
    assert!(ctl.run(&["enroll", "ci", "--no-confirm"]).status.success());
    let out = ctl.run(&[
        "allow-automation",
        "ci",
        "--key",
        AUTOMATION_KEY,
        "--from",
        "192.0.2.0/24",
        "--until",
        "10d",
        "--reason",
        "nightly rsync",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let sudo_caller = "\"help\\u{2028}desk\" (sudo, uid 0)";
    let forged = "mallory\" reason=\"forged\nx";
    {
        use pam_totp::store::{SqliteStore, Store};
        let store = SqliteStore::open(&ctl.db()).expect("store");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        for (net, reason, by) in [
            ("198.51.100.0/24", "lab", sudo_caller),
            ("203.0.113.0/24", "@SUM(1+1)", forged),
        ] {
            store
                .add_automation("ci", AUTOMATION_KEY, net, now + 5 * 86_400, reason, now, by)
                .expect("add");
        }
    }
    let (list, _) = text(&ctl.run(&["automation", "list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "one line per grant: {list}");
    assert!(
        lines[0].starts_with("#1 ") && lines[0].contains(" by \"root\" ("),
        "{list}"
    );
    assert!(!lines[0].contains('\\'), "{list}");
    assert!(
        lines[1].ends_with(" reason=\"lab\" by \"help\\u{2028}desk\" (sudo, uid 0)"),
        "{list}"
    );
    assert!(
        lines[2].ends_with(" reason=\"@SUM(1+1)\" by \"mallory\\\" reason=\\\"forged\\x0ax\""),
        "{list}"
    );
    // The text report's section prints them the same way.
    let (report, _) = text(&ctl.run(&["report"]));
    for line in &lines {
        assert!(report.contains(line), "{line} in {report}");
    }
    let out = ctl.run(&["automation", "list", "--expiring", "14d", "--csv"]);
    let csv = String::from_utf8(out.stdout).expect("utf8");
    let grants = csv_table(&csv);
    let created_by: Vec<&str> = grants[1..].iter().map(|r| &r[8][..]).collect();
    assert_eq!(created_by[1..], [sudo_caller, forged], "{csv:?}");
    assert_eq!(grants[3][6], "'@SUM(1+1)", "a formula is text: {csv:?}");
    let json: serde_json::Value =
        serde_json::from_slice(&ctl.run(&["automation", "list", "--json"]).stdout).expect("json");
    assert_eq!(json[2]["created_by"], forged, "{json}");
}

/// Attack on e160c3e: `check-config` opens the store "as a login opens
/// it" (`Access::open_for_login`) and reports a store problem only if that
/// open fails. The PostgreSQL login store no longer checks the schema
/// version at connect (the check goes with the first statement), so a
/// database whose schema version is newer than the build (or older, or
/// missing), on which every login is denied, must still be reported by
/// check-config: exit 1, the reason and the fix, never "No problems".
#[test]
fn check_config_reports_a_postgres_store_whose_schema_every_login_refuses() {
    if !common::postgres_present() {
        return;
    }
    let world = common::World::with_postgres();
    let out = world.totpctl(&["init"]);
    assert!(out.status.success(), "{out:?}");
    let conf = world.dir.path().join("pam_totp.conf");
    std::fs::write(&conf, world.store_config_lines()).expect("conf");
    let conf = conf.to_str().expect("path");
    let out = check_config(&world, &["--config", conf]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "the good store: {stdout} {stderr}");
    let (cluster, database) = world.pg.as_ref().expect("pg");
    cluster.psql(
        &database.name,
        "UPDATE pam_totp_meta SET value = 99 WHERE key = 'schema_version'",
    );
    let out = check_config(&world, &["--config", conf]);
    let (stdout, stderr) = text(&out);
    assert!(
        !stdout.contains("No problems") && out.status.code() == Some(1),
        "schema version 99, on which every login is denied, passed check-config: \
         {stdout} {stderr}"
    );
    assert!(
        stdout.contains("schema version 99 is newer"),
        "the reason is named: {stdout}"
    );
}

/// `check-config` says whether this node's key file is the one the store's
/// keys are sealed with, before any user meets the refusal: the right key
/// file passes, another key file and none are each a problem (exit 1) that
/// names what is wrong. Both backends.
#[test]
fn check_config_names_a_key_file_the_store_is_not_sealed_with() {
    if !common::pam_tools_present() {
        return;
    }
    let world = common::World::new();
    let (keys, first, second) = common::rows::two_key_files();
    let out = common::rows::sealed(
        &world,
        &first,
        &["enroll", "alice", "--secret", &common::random_secret()],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let with_key = |key_file: &std::path::Path| {
        let conf = keys.path().join("pam_totp.conf");
        std::fs::write(
            &conf,
            format!(
                "{}key_file = {}\n",
                world.store_config_lines(),
                key_file.display()
            ),
        )
        .expect("conf");
        let out = check_config(&world, &["--config", conf.to_str().expect("path")]);
        let (stdout, stderr) = text(&out);
        (out.status.code(), format!("{stdout}\n{stderr}"))
    };
    let (code, said) = with_key(&first);
    assert_eq!(code, Some(0), "the store's own key file: {said}");
    let (code, said) = with_key(&second);
    assert!(
        code == Some(1) && said.contains("another key file"),
        "another key file: {said}"
    );
    let (code, said) = with_key(&keys.path().join("absent.key"));
    assert!(code == Some(1), "a named key file that is missing: {said}");
    // No key file at all: the default one is absent here.
    let conf = keys.path().join("plain.conf");
    std::fs::write(&conf, world.store_config_lines()).expect("conf");
    let out = check_config(&world, &["--config", conf.to_str().expect("path")]);
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.code() == Some(1) && stdout.contains("no key file is loaded"),
        "no key file: {stdout} {stderr}"
    );
}
