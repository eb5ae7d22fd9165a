//! totpctl as an administrator uses it: output, errors and exit codes.

mod common;

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
        let mut child = Command::new(env!("CARGO_BIN_EXE_totpctl"))
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
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .expect("timeout");

    let ctl = Ctl::new();
    let enrolled = ctl.run(&["enroll", "alice", "--json", "--no-confirm"]);
    let key = serde_json::from_slice::<serde_json::Value>(&enrolled.stdout).expect("json")["key"]
        .as_str()
        .expect("key")
        .to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_totpctl"))
        .arg("--db")
        .arg(ctl.db())
        .args(["recovery", "alice"])
        .env("SUDO_USER", "helpdesk-bob")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(child.wait().expect("wait").success());
    for args in [
        &["allow-enroll", "carol", "--for", "2h"][..],
        &["reset", "alice", "--no-confirm"],
        &["delete", "alice"],
    ] {
        assert!(ctl.run(args).status.success(), "{args:?}");
    }
    // Other tests' totpctl runs may log here too: read until quiet, or 10 s.
    let mut lines = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => lines.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    let expect = [
        ("enroll user=\"alice\"", ""),
        ("recovery user=\"alice\"", "by \"helpdesk-bob\" (sudo"),
        ("allow-enroll user=\"carol\" until=", ""),
        ("reset user=\"alice\"", ""),
        ("delete user=\"alice\"", ""),
    ];
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
