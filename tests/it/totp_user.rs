//! `totp`, the user's set-uid command, run as it is installed: a set-uid
//! root copy of the built binary, run by a real unprivileged local user
//! (`setpriv --reuid`) on a pseudo-terminal (tests/fixtures/pty_drive.py),
//! inside a private mount namespace whose /etc/security is this test's
//! (the command reads only its compiled-in /etc/security/pam_totp.conf).
//! Logins go through the real libpam (pamtester) with codes from oathtool.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::sshd::{LocalUser, Serial};
use crate::common::{self, World, oathtool, tools_present, unix_now};

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pty_drive.py");

fn built_totp() -> PathBuf {
    let path = common::profile_dir().join("totp");
    assert!(
        path.exists(),
        "{} missing: run `cargo build --release --workspace` first",
        path.display()
    );
    path
}

/// One test's set-up: a World (store, PAM service), a real local user, the
/// set-uid copy of totp, and the /etc/security the command will see.
struct Setup {
    world: World,
    user: LocalUser,
    uid: String,
    gid: String,
    /// Holds `totp` (root's, 4755) and `etc/` (the namespace's /etc/security).
    dir: tempfile::TempDir,
    _serial: Serial,
}

fn present() -> bool {
    tools_present(&[
        "python3",
        "setpriv",
        "unshare",
        "useradd",
        "oathtool",
        "pamtester",
    ])
}

fn id(flag: &str, user: &str) -> String {
    let out = Command::new("id").args([flag, user]).output().expect("id");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

impl Setup {
    fn new(conf_extra: &str) -> Setup {
        let serial = Serial::acquire();
        let world = World::new();
        world.service("svc", "");
        let user = LocalUser::create("t");
        let dir = common::trusted_tempdir();
        let totp = dir.path().join("totp");
        std::fs::copy(built_totp(), &totp).expect("copy totp");
        std::fs::set_permissions(&totp, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        let setup = Setup {
            uid: id("-u", &user.name),
            gid: id("-g", &user.name),
            world,
            user,
            dir,
            _serial: serial,
        };
        setup.config(conf_extra);
        setup
    }

    /// The namespace's /etc/security/pam_totp.conf: this world's store,
    /// quick back-off, and `extra`.
    fn config(&self, extra: &str) {
        let path = self.dir.path().join("etc").join("pam_totp.conf");
        std::fs::write(
            &path,
            format!(
                "{}backoff_after = 2\n{extra}",
                self.world.store_config_lines()
            ),
        )
        .expect("conf");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }

    fn name(&self) -> &str {
        &self.user.name
    }

    /// Runs `program ARGS` as the user (or as root with `as_root`), on a
    /// pty answering `script`, with a hostile environment; returns
    /// (exit code, terminal text).
    fn run_program(
        &self,
        program: &Path,
        args: &[&str],
        script: &[(&str, &str)],
        as_root: bool,
    ) -> (i32, String) {
        let script: Vec<[&str; 2]> = script.iter().map(|(a, b)| [*a, *b]).collect();
        let script = serde_json_text(&script);
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--", "sh", "-c"])
            .arg(
                "mount --make-rprivate / && mount --bind \"$1\" /etc/security && shift && \
                 exec \"$@\"",
            )
            .arg("sh")
            .arg(self.dir.path().join("etc"))
            .args(["python3", DRIVER, &script]);
        if !as_root {
            cmd.args([
                "setpriv",
                &format!("--reuid={}", self.uid),
                &format!("--regid={}", self.gid),
                "--clear-groups",
                "--",
            ]);
        }
        cmd.arg(program).args(args);
        // What the caller controls must change nothing.
        cmd.env("LD_PRELOAD", common::NSS_WRAPPER)
            .env("NSS_WRAPPER_PASSWD", self.world.passwd_file())
            .env("NSS_WRAPPER_GROUP", self.world.group_file())
            .env("PAM_TOTP_CONFIG", "/nonexistent")
            .env("TZ", "Pacific/Kiritimati")
            .env("LANG", "xx_XX.UTF-8");
        let out = cmd.output().expect("unshare");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }

    fn totp(&self, args: &[&str], script: &[(&str, &str)]) -> (i32, String) {
        self.run_program(&self.dir.path().join("totp"), args, script, false)
    }

    /// Enrolls the user through totpctl with a known key (active).
    fn enroll(&self) -> String {
        self.world.enroll(self.name())
    }

    fn login(&self, code: &str) -> bool {
        self.world.login("svc", self.name(), None, code).success
    }
}

/// JSON for the driver's script, without a JSON dependency's help.
fn serde_json_text(script: &[[&str; 2]]) -> String {
    serde_json::to_string(script).expect("json")
}

/// A code of `key` one step ahead (the current one was used by a check).
fn next_code(key: &str) -> String {
    oathtool(key, Some(unix_now() + 30), &[])
}

fn code(key: &str) -> String {
    oathtool(key, None, &[])
}

#[test]
fn refuses_without_set_uid_and_as_root_and_when_turned_off() {
    if !present() {
        return;
    }
    let s = Setup::new("");
    s.enroll();
    // The built binary, without the set-uid bit.
    let (rc, text) = s.run_program(&built_totp(), &["status"], &[], false);
    assert_ne!(rc, 0, "{text}");
    assert!(text.contains("not running set-uid root"), "{text}");
    // Root, with the set-uid copy.
    let (rc, text) = s.run_program(&s.dir.path().join("totp"), &["status"], &[], true);
    assert_ne!(rc, 0, "{text}");
    assert!(
        text.contains("root manages users' tokens with totpctl"),
        "{text}"
    );
    // self_service = status: status only.
    s.config("self_service = status\n");
    let (rc, text) = s.totp(&["status"], &[]);
    assert_eq!(rc, 0, "{text}");
    let (rc, text) = s.totp(&["recovery-codes"], &[]);
    assert_ne!(rc, 0, "{text}");
    assert!(text.contains("may only show your status"), "{text}");
    // self_service = off: nothing.
    s.config("self_service = off\n");
    let (rc, text) = s.totp(&["status"], &[]);
    assert_ne!(rc, 0, "{text}");
    assert!(text.contains("self-service is turned off"), "{text}");
    // No option names another user, store or config.
    s.config("");
    for args in [
        &["status", "--db", "/tmp/x.db"][..],
        &["--config", "/tmp/x.conf", "status"],
        &["status", "root"],
        &["status", "--user", "root"],
    ] {
        let (rc, text) = s.totp(args, &[]);
        assert_eq!(rc, 2, "{args:?} accepted: {text}");
    }
}

#[test]
fn status_and_test_as_the_user_under_a_hostile_environment() {
    if !present() {
        return;
    }
    let s = Setup::new("");
    let key = s.enroll();
    let (rc, text) = s.totp(&["status"], &[]);
    assert_eq!(rc, 0, "{text}");
    // The user's own entry (the real passwd, not nss_wrapper's files).
    assert!(
        text.contains(&format!("Devices of {}:", s.name())),
        "{text}"
    );
    assert!(text.contains("default"), "{text}");
    assert!(text.contains("Not locked out."), "{text}");
    // test: matches, not used up, echo off (the code is not on the terminal).
    let right = code(&key);
    let (rc, text) = s.totp(&["test"], &[("Code to test", &right)]);
    assert_eq!(rc, 0, "{text}");
    assert!(text.contains("matches your device \"default\""), "{text}");
    assert!(!text.contains(&right), "the code was echoed: {text}");
    assert!(s.login(&right), "the tested code must still log in once");
}

#[test]
fn wrong_codes_hit_the_rate_limit_like_logins() {
    if !present() {
        return;
    }
    let s = Setup::new("");
    let key = s.enroll();
    let wrong = common::wrong_code(&code(&key));
    // backoff_after = 2: two wrong codes, then the third is not checked.
    let (rc, text) = s.totp(
        &["recovery-codes"],
        &[
            ("Current code", &wrong),
            ("Current code", &wrong),
            ("Current code", &wrong),
        ],
    );
    assert_ne!(rc, 0, "{text}");
    assert!(text.contains("too many wrong codes"), "{text}");
    // Now even the right code is refused, unchecked, by totp.
    let (rc, text) = s.totp(&["recovery-codes"], &[("Current code", &code(&key))]);
    assert_ne!(rc, 0, "{text}");
    assert!(text.contains("nothing was checked"), "{text}");
    let (_, status) = s.totp(&["status"], &[]);
    assert!(status.contains("Backing off"), "{status}");
}

#[test]
fn add_device_then_log_in_with_each_and_remove_one() {
    if !present() {
        return;
    }
    // A wider window for totp's checks: every code of the window is used
    // by a check or a login below.
    let s = Setup::new("window = 3\n");
    let key = s.enroll();
    let (rc, text) = s.totp(
        &["add-device", "tablet"],
        &[("Current code", &code(&key)), ("NEW device", "@newkey")],
    );
    assert_eq!(rc, 0, "{text}");
    assert!(text.contains("Added device \"tablet\""), "{text}");
    let new_key: String = text
        .lines()
        .find_map(|l| l.strip_prefix("Key: "))
        .expect("key shown")
        .replace(' ', "");
    assert!(s.login(&next_code(&key)), "the old device logs in");
    assert!(s.login(&next_code(&new_key)), "the new device logs in");
    // The last usable device is never removed.
    let (rc, text) = s.totp(
        &["remove-device", "default"],
        &[(
            "Current code",
            &oathtool(&new_key, Some(unix_now() + 60), &[]),
        )],
    );
    assert_eq!(rc, 0, "{text}");
    assert!(text.contains("Removed device \"default\""), "{text}");
    let (rc, text) = s.totp(&["remove-device", "tablet"], &[]);
    assert_ne!(rc, 0, "{text}");
    assert!(text.contains("last usable device"), "{text}");
    let (_, status) = s.totp(&["status"], &[]);
    assert!(
        status.contains("tablet") && !status.contains("default"),
        "{status}"
    );
}

#[test]
fn replace_with_a_recovery_code_retires_the_old_device() {
    if !present() {
        return;
    }
    let s = Setup::new("");
    let old_key = s.enroll();
    let out = s.world.totpctl(&["recovery", s.name()]);
    assert!(out.status.success());
    let codes = String::from_utf8_lossy(&out.stdout).into_owned();
    let recovery = codes
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("a recovery code")
        .to_string();
    let (rc, text) = s.totp(
        &["replace"],
        &[("or a recovery code", &recovery), ("NEW device", "@newkey")],
    );
    assert_eq!(rc, 0, "{text}");
    assert!(text.contains("no longer work"), "{text}");
    let new_key: String = text
        .lines()
        .find_map(|l| l.strip_prefix("Key: "))
        .expect("key shown")
        .replace(' ', "");
    assert!(!s.login(&next_code(&old_key)), "the old device is retired");
    assert!(s.login(&next_code(&new_key)), "the new device logs in");
    assert!(!s.login(&recovery), "the recovery code was used up");
}
