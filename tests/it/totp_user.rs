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
use crate::common::syslog::{SyslogCapture, audit_keys};
use crate::common::{self, World, oathtool, tools_present, unix_now};

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pty_drive.py");

/// The command under test: `PAM_TOTP_TOTP` if set (the installed one,
/// packaging/test-package.sh), else the build's.
fn built_totp() -> PathBuf {
    let path = std::env::var_os("PAM_TOTP_TOTP")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::profile_dir().join("totp"));
    assert!(
        path.exists(),
        "{} missing: run `cargo build --release --workspace` first",
        path.display()
    );
    path
}

/// One test's set-up: a World (store, PAM service), a real local user, the
/// set-uid copy of totp, and the /etc/security the command will see.
pub(crate) struct Setup {
    pub(crate) world: World,
    user: LocalUser,
    uid: String,
    gid: String,
    /// Holds `totp` (root's, 4755) and `etc/` (the namespace's /etc/security).
    dir: tempfile::TempDir,
    _serial: Serial,
}

pub(crate) fn present() -> bool {
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
    pub(crate) fn new(conf_extra: &str) -> Setup {
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

    pub(crate) fn name(&self) -> &str {
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
        self.run_program_with(program, args, script, as_root, &[])
    }

    /// As `run_program`, with `env` added to the hostile environment.
    fn run_program_with(
        &self,
        program: &Path,
        args: &[&str],
        script: &[(&str, &str)],
        as_root: bool,
        env: &[(&str, &str)],
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
        cmd.envs(env.iter().copied());
        let out = cmd.output().expect("unshare");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }

    pub(crate) fn totp(&self, args: &[&str], script: &[(&str, &str)]) -> (i32, String) {
        self.run_program(&self.dir.path().join("totp"), args, script, false)
    }

    /// `totp ARGS` as the user, with `env` added (e.g. another user's name
    /// in every variable that could name one).
    fn totp_with(
        &self,
        args: &[&str],
        script: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> (i32, String) {
        self.run_program_with(&self.dir.path().join("totp"), args, script, false, env)
    }

    /// A fresh set of recovery codes for `user` (root's totpctl); the first.
    fn recovery_code(&self, user: &str) -> String {
        let out = self.world.totpctl(&["recovery", user]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().next())
            .expect("a recovery code")
            .to_string()
    }

    /// Whether `code` matches one of `user`'s devices now (totpctl check,
    /// which uses nothing up); the counts it leaves are cleared.
    fn matches(&self, user: &str, code: &str) -> bool {
        let ok = self.world.totpctl(&["check", user, code]).status.success();
        assert!(self.world.totpctl(&["unlock", user]).status.success());
        ok
    }

    /// `totpctl show --json USER`.
    fn show(&self, user: &str) -> serde_json::Value {
        let out = self.world.totpctl(&["show", user, "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("show --json")
    }

    /// Enrolls the user through totpctl with a known key (active).
    pub(crate) fn enroll(&self) -> String {
        self.world.enroll(self.name())
    }

    pub(crate) fn login(&self, code: &str) -> bool {
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
    // A copy without the set-uid bit.
    let plain = s.dir.path().join("totp-plain");
    std::fs::copy(built_totp(), &plain).expect("copy totp");
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (rc, text) = s.run_program(&plain, &["status"], &[], false);
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
    let new_key = shown_key(&text);
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
    let recovery = s.recovery_code(s.name());
    let (rc, text) = s.totp(
        &["replace"],
        &[("or a recovery code", &recovery), ("NEW device", "@newkey")],
    );
    assert_eq!(rc, 0, "{text}");
    assert!(text.contains("no longer work"), "{text}");
    let new_key = shown_key(&text);
    assert!(!s.login(&next_code(&old_key)), "the old device is retired");
    assert!(s.login(&next_code(&new_key)), "the new device logs in");
    assert!(!s.login(&recovery), "the recovery code was used up");
}

/// totp's audit lines, as totpctl's: each value escaped once inside its
/// own quotes (`device="tablet"`, never `device=\"tablet\"`), what totp
/// makes bare, so a device name holding hidden characters (a right-to-left
/// override, a zero-width space: names may hold them) stays one quoted
/// value, escaped, and no line grows a key=value of its own.
#[test]
fn audit_lines_quote_each_value_once() {
    if !present() {
        return;
    }
    let s = Setup::new("window = 3\n");
    let key = s.enroll();
    let Some(syslog) = SyslogCapture::start() else {
        return;
    };
    let device = "ph\u{202e}one\u{200b}";
    let (rc, text) = s.totp(
        &["add-device", device],
        &[("Current code", &code(&key)), ("NEW device", "@newkey")],
    );
    assert_eq!(rc, 0, "{text}");
    let new_key = shown_key(&text);
    let (rc, text) = s.totp(&["test"], &[("Code to test", &code(&new_key))]);
    assert_eq!(rc, 0, "{text}");
    let wrong = common::wrong_code(&code(&new_key));
    let (rc, text) = s.totp(&["test"], &[("Code to test", &wrong)]);
    assert_ne!(rc, 0, "{text}");
    let (rc, text) = s.totp(
        &["remove-device", device],
        &[("Current code", &next_code(&key))],
    );
    assert_eq!(rc, 0, "{text}");
    let recovery = s.recovery_code(s.name());
    let (rc, text) = s.totp(
        &["replace"],
        &[("or a recovery code", &recovery), ("NEW device", "@newkey")],
    );
    assert_eq!(rc, 0, "{text}");
    let new_key = shown_key(&text);
    let (rc, text) = s.totp(
        &["recovery-codes"],
        &[("Current code", &next_code(&new_key))],
    );
    assert_eq!(rc, 0, "{text}");
    let lines = syslog.finish();
    // totp's lines only ("totpctl[" is not "totp[").
    let ours: Vec<&String> = lines.iter().filter(|l| l.contains("totp[")).collect();
    let user = s.name();
    let by = format!(" by uid {}", s.uid);
    let shown = "ph\\u{202e}one\\u{200b}";
    let expect: [(&str, &[&str]); 8] = [
        (
            &format!("add-device-auth user=\"{user}\" result=ok proof=code device=\"default\"{by}"),
            &["user", "result", "proof", "device"],
        ),
        (
            &format!("add-device user=\"{user}\" device=\"{shown}\" type=totp{by}"),
            &["user", "device", "type"],
        ),
        (
            &format!("test user=\"{user}\" result=match device=\"{shown}\" offset="),
            &["user", "result", "device", "offset"],
        ),
        (
            &format!("test user=\"{user}\" result=no-match{by}"),
            &["user", "result"],
        ),
        (
            &format!("remove-device user=\"{user}\" device=\"{shown}\"{by}"),
            &["user", "device"],
        ),
        (
            &format!("replace-auth user=\"{user}\" result=ok proof=recovery-code remaining=9{by}"),
            &["user", "result", "proof", "remaining"],
        ),
        (
            &format!(
                "replace user=\"{user}\" device=\"default\" type=totp removed=\"default\" \
                 recovery_codes=10{by}"
            ),
            &["user", "device", "type", "removed", "recovery_codes"],
        ),
        (
            &format!("recovery-codes user=\"{user}\" recovery_codes=10{by}"),
            &["user", "recovery_codes"],
        ),
    ];
    for (start, keys) in expect {
        let line = ours
            .iter()
            .find(|l| l.contains(start))
            .unwrap_or_else(|| panic!("no audit line {start:?} in {ours:#?}"));
        assert!(line.starts_with("<85>"), "not authpriv.notice: {line}");
        assert_eq!(audit_keys(line), keys, "{line}");
    }
    for line in &ours {
        assert!(!line.contains("=\\\""), "a value escaped twice: {line}");
        assert!(
            !line.contains(['\u{202e}', '\u{200b}', '\n']),
            "a raw hidden character: {line:?}"
        );
    }
}

/// The key shown on the terminal by add-device or replace.
fn shown_key(text: &str) -> String {
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("Key: "))
        .expect("key shown")
        .replace(' ', "")
}

#[test]
fn another_users_tokens_are_out_of_reach() {
    if !present() {
        return;
    }
    let s = Setup::new("window = 3\n");
    let my_key = s.enroll();
    let other = LocalUser::create("o");
    let other_key = s.world.enroll(&other.name);
    let other_recovery = s.recovery_code(&other.name);
    // Every variable that could name a user names the other one; the
    // command goes by the real uid alone.
    let env = [
        ("USER", other.name.as_str()),
        ("LOGNAME", other.name.as_str()),
        ("SUDO_USER", other.name.as_str()),
        ("PAM_USER", other.name.as_str()),
        ("HOME", "/root"),
    ];
    let (rc, text) = s.totp_with(&["status"], &[], &env);
    assert_eq!(rc, 0, "{text}");
    assert!(
        text.contains(&format!("Devices of {}:", s.name())),
        "{text}"
    );
    assert!(!text.contains(&other.name), "{text}");
    // The other user's code, and recovery code, prove nothing here and
    // change nothing there.
    let (rc, text) = s.totp_with(&["test"], &[("Code to test", &code(&other_key))], &env);
    assert_ne!(rc, 0, "{text}");
    assert!(text.contains("matches none of your devices"), "{text}");
    assert!(s.world.totpctl(&["unlock", s.name()]).status.success());
    let (rc, text) = s.totp_with(
        &["add-device", "tablet"],
        &[
            ("or a recovery code", &other_recovery),
            ("or a recovery code", ""),
        ],
        &env,
    );
    assert_ne!(rc, 0, "{text}");
    assert!(s.world.totpctl(&["unlock", s.name()]).status.success());
    let (rc, text) = s.totp_with(
        &["replace"],
        &[
            ("or a recovery code", &next_code(&other_key)),
            ("or a recovery code", ""),
        ],
        &env,
    );
    assert_ne!(rc, 0, "{text}");
    assert!(s.world.totpctl(&["unlock", s.name()]).status.success());
    // A device name of the other user's is only ever looked up among mine.
    let (rc, text) = s.totp_with(&["remove-device", "default"], &[], &env);
    assert_ne!(rc, 0, "{text}");
    assert!(text.contains("last usable device"), "{text}");
    // The other user: same device, same recovery codes, no failures, and
    // their codes and mine still log each in.
    let shown = s.show(&other.name);
    assert_eq!(shown["tokens"].as_array().map(Vec::len), Some(1), "{shown}");
    assert_eq!(shown["recovery_codes"]["unused"], 10, "{shown}");
    assert_eq!(
        shown["failures"].as_array().map(Vec::len),
        Some(0),
        "{shown}"
    );
    assert!(
        s.world
            .login("svc", &other.name, None, &next_code(&other_key))
            .success,
        "the other user's device still logs them in"
    );
    assert!(
        s.world
            .login("svc", &other.name, None, &other_recovery)
            .success,
        "the other user's recovery code still works"
    );
    assert!(s.login(&next_code(&my_key)), "my own device still works");
}

#[test]
fn qr_png_is_written_as_the_user_where_the_user_may_write() {
    if !present() {
        return;
    }
    let s = Setup::new("window = 3\n");
    let key = s.enroll();
    let home = PathBuf::from(format!("/home/{}", s.name()));
    use std::os::unix::fs::MetadataExt;
    let uid: u32 = s.uid.parse().expect("uid");
    // Refused before any code is asked, and nothing is created, where the
    // user may not create a file: a root-owned directory, an existing file,
    // a link to a place only root could write.
    let root_dir = common::trusted_tempdir();
    let existing = home.join("exists.png");
    std::fs::write(&existing, b"mine").expect("write");
    let link = home.join("link.png");
    std::os::unix::fs::symlink(root_dir.path().join("via-link.png"), &link).expect("symlink");
    for target in [
        root_dir.path().join("qr.png"),
        existing.clone(),
        link.clone(),
    ] {
        let path = target.to_str().expect("utf8");
        let (rc, text) = s.totp(&["add-device", "tablet", "--qr-png", path], &[]);
        assert_ne!(rc, 0, "{path}: {text}");
        assert!(text.contains("--qr-png"), "{text}");
        assert!(!text.contains("Current code"), "a code was asked: {text}");
    }
    assert_eq!(std::fs::read(&existing).expect("read"), b"mine");
    assert!(!root_dir.path().join("qr.png").exists());
    assert!(!root_dir.path().join("via-link.png").exists());
    // Not confirmed: the file with the unstored key goes again.
    let png = home.join("tablet.png");
    let path = png.to_str().expect("utf8");
    let wrong = "000000";
    let (rc, text) = s.totp(
        &["add-device", "tablet", "--qr-png", path],
        &[
            ("Current code", &code(&key)),
            ("NEW device", wrong),
            ("NEW device", wrong),
            ("NEW device", wrong),
        ],
    );
    assert_ne!(rc, 0, "{text}");
    assert!(!png.exists(), "the PNG of a key never stored was left");
    // Confirmed: the user's own file, 0600, a PNG.
    let (rc, text) = s.totp(
        &["add-device", "tablet", "--qr-png", path],
        &[
            ("Current code", &next_code(&key)),
            ("NEW device", "@newkey"),
        ],
    );
    assert_eq!(rc, 0, "{text}");
    let meta = std::fs::metadata(&png).expect("the PNG");
    assert_eq!(meta.uid(), uid, "not the user's file");
    assert_eq!(meta.mode() & 0o777, 0o600);
    let bytes = std::fs::read(&png).expect("read");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        s.login(&next_code(&shown_key(&text))),
        "the new device logs in"
    );
}

#[test]
fn signals_during_replace_leave_the_old_devices_or_the_new_one_never_half() {
    if !present() {
        return;
    }
    let s = Setup::new("window = 3\n");
    let mut current = s.enroll();
    let user = s.name().to_string();
    // The terminal closed at the new device's prompt: nothing changed.
    let recovery = s.recovery_code(&user);
    let (rc, text) = s.totp(
        &["replace"],
        &[("or a recovery code", &recovery), ("NEW device", ";hangup")],
    );
    assert_ne!(rc, 0, "{text}");
    assert!(s.matches(&user, &next_code(&current)), "{text}");
    assert_eq!(s.show(&user)["recovery_codes"]["unused"], 9);
    // Signal storms from the moment the new code is typed: the store holds either the old device (and the old recovery
    // codes, less the one used) or the new device (and ten new codes),
    // never a mix, never a pending leftover.
    // The delays double until the change has landed before the storm,
    // then bisect between the last "old" and the first "new", so the
    // later storms land around the moment of the write.
    let mut outcomes = Vec::new();
    let (mut old_at, mut new_at): (u64, Option<u64>) = (0, None);
    let mut delay = 0u64;
    let mut round = 0;
    let mut bisections = 0;
    while bisections < 8 {
        assert!(round < 40, "no replace landed: {outcomes:?}");
        let signal = ["KILL", "TERM", "INT", "HUP"][round % 4];
        round += 1;
        let recovery = s.recovery_code(&user);
        let (rc, text) = s.totp(
            &["replace"],
            &[
                ("or a recovery code", &recovery),
                (
                    "NEW device",
                    &format!("@newkey;kill={signal};delay_ms={delay}"),
                ),
            ],
        );
        if !text.contains("Key: ") {
            // The proof failed (e.g. a code a check above used): not this
            // test's point.
            panic!("{signal}/{delay}: no key shown: {text}");
        }
        let new_key = shown_key(&text);
        let old_ok = s.matches(&user, &next_code(&current));
        let new_ok = s.matches(&user, &next_code(&new_key));
        let shown = s.show(&user);
        let tokens = shown["tokens"].as_array().map(Vec::len);
        let unused = &shown["recovery_codes"]["unused"];
        assert_eq!(tokens, Some(1), "{signal}/{delay}: {shown}\n{text}");
        assert!(
            old_ok != new_ok,
            "{signal}/{delay}: old {old_ok}, new {new_ok}\n{text}"
        );
        if new_ok {
            assert_eq!(*unused, 10, "{signal}/{delay}: {shown}");
            current = new_key;
        } else {
            assert_eq!(*unused, 9, "{signal}/{delay}: {shown}");
        }
        outcomes.push(format!(
            "{signal}/{delay}ms rc={rc} -> {}",
            if new_ok { "new" } else { "old" }
        ));
        if new_ok {
            new_at = Some(delay);
        } else {
            old_at = old_at.max(delay);
        }
        delay = match new_at {
            None => (delay * 2).max(4),
            Some(new_at) => {
                bisections += 1;
                (old_at.min(new_at) + new_at.max(old_at)) / 2
            }
        };
    }
    eprintln!("signal storms: {outcomes:?}");
    assert!(
        s.login(&next_code(&current)),
        "the surviving device logs in"
    );
}

#[test]
fn sealed_keys_are_unsealed_for_the_proof_and_the_new_device_is_sealed_too() {
    if !present() {
        return;
    }
    let keys = common::private_tempdir();
    let key_file = keys.path().join("pam_totp.key");
    common::keygen(&key_file);
    let k = key_file.to_str().expect("path").to_string();
    let s = Setup::new(&format!("window = 3\nkey_file = {k}\n"));
    s.world.service("sealed", &format!("key_file={k}"));
    let secret = common::random_secret();
    let out = s
        .world
        .totpctl(&["--key-file", &k, "enroll", s.name(), "--secret", &secret]);
    assert!(out.status.success(), "{out:?}");
    let (rc, text) = s.totp(
        &["add-device", "tablet"],
        &[("Current code", &code(&secret)), ("NEW device", "@newkey")],
    );
    assert_eq!(rc, 0, "{text}");
    let new_key = shown_key(&text);
    let login = |code: &str| s.world.login("sealed", s.name(), None, code).success;
    assert!(login(&next_code(&new_key)), "the new device logs in");
    assert!(login(&next_code(&secret)), "the old device logs in");
    // At rest, the new key is sealed like the one totpctl stored: its
    // bytes are nowhere in the SQLite file (PostgreSQL keeps its rows
    // elsewhere; the logins above are the check there).
    if s.world.store_config_lines().starts_with("db = /") {
        let raw = pam_totp::secret::Secret::from_base32(&new_key).expect("key");
        let mut file = std::fs::read(&s.world.db).expect("db");
        let mut wal = s.world.db.clone().into_os_string();
        wal.push("-wal");
        file.extend(std::fs::read(wal).unwrap_or_default());
        assert!(
            !file
                .windows(raw.as_bytes().len())
                .any(|w| w == raw.as_bytes()),
            "the new key is stored in the clear"
        );
    }
}

#[test]
fn the_caller_cannot_stop_it_and_ctrl_c_at_a_prompt_restores_the_terminal() {
    if !present() {
        return;
    }
    let s = Setup::new("");
    s.enroll();
    let totp = s.dir.path().join("totp");
    let totp = totp.to_str().expect("utf8");
    // The user stops their own `totp` waiting at its prompt (SIGSTOP
    // cannot be blocked; stopped inside a store transaction it would hold
    // every login): not permitted, the process is root's alone.
    let (_, text) = s.run_program(
        Path::new("/bin/sh"),
        &[
            "-c",
            &format!(
                "sleep 3 | {totp} test >/dev/null 2>&1 & sleep 1; kill -STOP $!; \
                 echo \"stop=$?\"; wait"
            ),
        ],
        &[],
        false,
    );
    assert!(text.contains("stop=1"), "the user stopped totp: {text}");
    // Ctrl-C at a hidden prompt: totp gives up, and the terminal has its
    // echo and signal keys back.
    let (_, text) = s.run_program(
        Path::new("/bin/sh"),
        &["-c", &format!("{totp} test; stty -a")],
        &[("Code to test", "\u{3}")],
        false,
    );
    assert!(text.contains("interrupted"), "{text}");
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(words.contains(&"echo") && words.contains(&"isig"), "{text}");
    assert!(
        !words.contains(&"-echo") && !words.contains(&"-isig"),
        "{text}"
    );
}

#[test]
fn it_refuses_to_run_in_a_control_group_the_caller_can_freeze() {
    if !present() {
        return;
    }
    let s = Setup::new("");
    s.enroll();
    // A control group of the test's own (the v1 freezer where this machine
    // has one, else cgroup v2), with its freezer handed to the user, as
    // `systemd-run --user` would hand it.
    let name = format!("pam-totp-test-{}", std::process::id());
    let candidates = [
        ("/sys/fs/cgroup/freezer", "freezer.state"),
        ("/sys/fs/cgroup/unified", "cgroup.freeze"),
        ("/sys/fs/cgroup", "cgroup.freeze"),
    ];
    let Some((dir, control)) = candidates.iter().find_map(|(root, control)| {
        let dir = PathBuf::from(root).join(&name);
        (std::fs::create_dir(&dir).is_ok() && dir.join(control).exists()).then_some((dir, *control))
    }) else {
        eprintln!("SKIPPED: no cgroup hierarchy with a freezer can be made here");
        return;
    };
    let chown = Command::new("chown")
        .arg(&s.uid)
        .arg(dir.join(control))
        .status()
        .expect("chown");
    assert!(chown.success());
    let totp = s.dir.path().join("totp");
    let (rc, text) = s.run_program(
        Path::new("/bin/sh"),
        &[
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs && exec setpriv --reuid={} --regid={} \
                 --clear-groups -- {} status",
                dir.display(),
                s.uid,
                s.gid,
                totp.display()
            ),
        ],
        &[],
        true,
    );
    // Out of it again, so the directory can go.
    let _ = std::fs::remove_dir(&dir);
    assert_ne!(rc, 0, "{text}");
    assert!(
        text.contains("does not run inside a control group you can freeze"),
        "{text}"
    );
}

#[test]
fn added_devices_keep_the_administrators_expiry_and_unusable_matches_stay_counted() {
    if !present() {
        return;
    }
    let s = Setup::new("window = 3\n");
    let secret = common::random_secret();
    let out = s.world.totpctl(&[
        "enroll",
        s.name(),
        "--secret",
        &secret,
        "--device",
        "phone",
        "--expires",
        "1h",
    ]);
    assert!(out.status.success(), "{out:?}");
    let (rc, text) = s.totp(
        &["add-device", "tablet"],
        &[("Current code", &code(&secret)), ("NEW device", "@newkey")],
    );
    assert_eq!(rc, 0, "{text}");
    let tablet_key = shown_key(&text);
    let shown = s.show(s.name());
    let expiry = |device: &str| {
        shown["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .find(|t| t["device"] == device)
            .map(|t| t["expires"].clone())
            .expect("device")
    };
    assert!(expiry("phone").is_i64(), "{shown}");
    assert_eq!(expiry("tablet"), expiry("phone"), "{shown}");
    // A disabled device's code matches, says so, and stays counted.
    let out = s
        .world
        .totpctl(&["disable", s.name(), "--device", "tablet"]);
    assert!(out.status.success(), "{out:?}");
    let (rc, text) = s.totp(&["test"], &[("Code to test", &next_code(&tablet_key))]);
    assert_eq!(rc, 0, "{text}");
    assert!(text.contains("is disabled: it logs nobody in"), "{text}");
    let failures = s.show(s.name())["failures"].clone();
    assert!(
        failures
            .as_array()
            .expect("failures")
            .iter()
            .any(|f| f["rhost"] == "totp test" && f["count"] == 1),
        "{failures}"
    );
}

#[test]
fn status_lists_key_graces_and_automation_grants_in_force() {
    if !present() {
        return;
    }
    let s = Setup::new("");
    let key = s.enroll();
    // A key grace earned through the real libpam under service sshd, as
    // sshd hands the key over (pam_worker puts SSH_AUTH_INFO_0 into the PAM
    // environment), then committed at setcred.
    let blob = "AAAAC3NzaC1lZDI1NTE5AAAAIPWhMX3GrSZWFUTEvx5GuAhSZm+XOT6mzOYJAiiQgU9l";
    let fp = "SHA256:PBZqibLSCLdAS4+MC8G29Jx6IMJfj3+k9ckTzGesU+I";
    s.world.service_with_account("sshd", "grace_key=1h");
    let out = s.world.pam_worker_with(
        "sshd",
        s.name(),
        "203.0.113.7",
        &[&code(&key)],
        &[
            (
                "PAM_WORKER_PUTENV",
                &format!("SSH_AUTH_INFO_0=publickey ssh-ed25519 {blob}\n"),
            ),
            ("PAM_WORKER_THEN", "account,setcred"),
        ],
    );
    assert!(out.contains("RESULT 0"), "{out}");
    let out = s.world.totpctl(&[
        "allow-automation",
        s.name(),
        "--key",
        fp,
        "--from",
        "192.0.2.0/24",
        "--until",
        "7d",
        "--reason",
        "nightly rsync",
    ]);
    assert!(out.status.success(), "{out:?}");
    let (rc, text) = s.totp(&["status"], &[]);
    assert_eq!(rc, 0, "{text}");
    assert!(
        text.contains(&format!(
            "logins with your SSH key {fp} skip the code until"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "your SSH key {fp} logs in without a code from 192.0.2.0/24"
        )),
        "{text}"
    );
    assert!(text.contains("nightly rsync"), "{text}");
    assert!(!text.contains("No grace periods"), "{text}");
}

/// The lost-phone reset (`totpctl reset USER --now`, README) against a
/// `totp add-device` or `totp replace` that the thief (the stolen phone,
/// the password, a session) started before it and left waiting at the new
/// device's prompt: the proof was the stolen phone's code, checked before
/// the reset; the new device is written after it, unconditionally
/// (`EnrollMode::AddOwn` / `ReplaceConfirmed` name no token that proved
/// it). The thief keeps a device of their own through the reset, and with
/// `replace` also removes the help desk's new token (the user is locked
/// out). Found by an attack (the claim-by-key round's sibling for the
/// user's command).
#[test]
fn a_reset_during_a_pending_add_device_leaves_the_thief_no_device() {
    reset_during_a_pending("add-device");
}

/// As above for `totp replace`: the thief's replacement also removes the
/// help desk's new token.
#[test]
fn a_reset_during_a_pending_replace_leaves_the_thief_no_device() {
    reset_during_a_pending("replace");
}

fn reset_during_a_pending(verb: &str) {
    if !present() {
        return;
    }
    let s = Setup::new("window = 3\n");
    let user = s.name().to_string();
    {
        let stolen = s.enroll();
        let at_prompt = s.dir.path().join(format!("{verb}.at_prompt"));
        let go = s.dir.path().join(format!("{verb}.go"));
        let answer = format!(
            "@newkey;touch={};wait={}",
            at_prompt.display(),
            go.display()
        );
        let args: Vec<&str> = if verb == "add-device" {
            vec!["add-device", "evil"]
        } else {
            vec!["replace"]
        };
        let (rc, text) = std::thread::scope(|scope| {
            let thief = scope.spawn(|| {
                s.totp(
                    &args,
                    &[("Current code", &code(&stolen)), ("NEW device", &answer)],
                )
            });
            let started = std::time::Instant::now();
            while !at_prompt.exists() {
                assert!(
                    started.elapsed().as_secs() < 25,
                    "{verb}: never reached the new device's prompt"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            // The help desk: the user's new phone, the old tokens gone now.
            let helpdesk = common::random_secret();
            let out = s
                .world
                .totpctl(&["reset", &user, "--now", "--secret", &helpdesk]);
            assert!(out.status.success(), "{verb}: reset: {out:?}");
            std::fs::write(&go, "").expect("go");
            let done = thief.join().expect("thief");
            (done.0, format!("{}\nhelpdesk key {helpdesk}", done.1))
        });
        let helpdesk = text
            .rsplit("helpdesk key ")
            .next()
            .unwrap_or("")
            .to_string();
        let shown = s.show(&user);
        let devices: Vec<String> = shown["tokens"]
            .as_array()
            .map(|t| {
                t.iter()
                    .map(|t| t["device"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let thief_key = if text.contains("Key: ") {
            Some(shown_key(&text))
        } else {
            None
        };
        let thief_in = thief_key
            .as_deref()
            .is_some_and(|k| s.matches(&user, &next_code(k)));
        let user_in = s.matches(&user, &next_code(&helpdesk));
        assert!(
            !thief_in && user_in,
            "{verb} (rc {rc}) finished after `totpctl reset --now`: the thief's new device \
             logs in: {thief_in}, the help desk's new token logs in: {user_in}; devices now \
             {devices:?}\n{text}"
        );
    }
}
