//! `totpctl import google-authenticator --home-dirs`: every home directory
//! the passwd database lists (the World's, through nss_wrapper), files
//! written by google-authenticator itself, owned by the right and the wrong
//! users, a symlink, a FIFO, a malformed and an open file; then logins
//! through the real libpam with oathtool's codes and the scratch codes.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    NSS_WRAPPER, RHOST, World, oathtool, oathtool_hotp, pam_tools_present, tools_present,
};
use serde_json::Value;

/// A user of the World's passwd file with a home directory of their own.
struct User {
    uid: u32,
    home: PathBuf,
}

impl User {
    fn file(&self) -> PathBuf {
        self.home.join(".google_authenticator")
    }
}

/// Adds `name` with `uid` and a home directory (theirs, 0700) under the
/// World's directory to its passwd file.
fn user(world: &World, homes: &Path, name: &'static str, uid: u32) -> User {
    let home = homes.join(name);
    std::fs::create_dir_all(&home).expect("mkdir home");
    std::os::unix::fs::chown(&home, Some(uid), Some(100)).expect("chown home");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    append_passwd(world, name, uid, &home);
    User { uid, home }
}

fn append_passwd(world: &World, name: &str, uid: u32, home: &Path) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(world.passwd_file())
        .expect("passwd");
    writeln!(file, "{name}:x:{uid}:100::{}:/bin/sh", home.display()).expect("passwd");
}

/// Writes a key file with google-authenticator itself (TOTP unless
/// `hotp`, five scratch codes) at `path`, owned by `uid`, mode 0400;
/// returns (key, scratch codes).
fn google_authenticator(path: &Path, uid: u32, hotp: bool) -> (String, Vec<String>) {
    let kind: &[&str] = if hotp {
        &["-c", "-u", "-w", "3"]
    } else {
        &["-t", "-d", "-r", "3", "-R", "30", "-w", "3"]
    };
    let made = Command::new("google-authenticator")
        .args(kind)
        .args(["-f", "-Q", "NONE", "-q", "-s"])
        .arg(path)
        .output()
        .expect("google-authenticator");
    assert!(made.status.success(), "{made:?}");
    own(path, uid, 0o400);
    let text = std::fs::read_to_string(path).expect("file");
    let key = text.lines().next().expect("key").to_string();
    let scratch = text
        .lines()
        .filter(|l| l.len() == 8 && l.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
        .collect();
    (key, scratch)
}

fn own(path: &Path, uid: u32, mode: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).expect("chown");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// totpctl on the World's store with the World's passwd file (nss_wrapper),
/// killed if it takes longer than 60 s (a FIFO must not make it wait).
fn totpctl(world: &World, args: &[&str]) -> Output {
    let mut child = Command::new(common::totpctl_path())
        .env("LD_PRELOAD", NSS_WRAPPER)
        .env("NSS_WRAPPER_PASSWD", world.passwd_file())
        .env("NSS_WRAPPER_GROUP", world.group_file())
        .args(world.store_options())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("totpctl");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("totpctl {args:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// The result for `user`, which must be there exactly once.
fn result<'a>(report: &'a Value, user: &str) -> &'a Value {
    let found: Vec<&Value> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["user"] == user)
        .collect();
    assert_eq!(found.len(), 1, "{user} in {report:#}");
    found[0]
}

fn assert_no_secret(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "a key or scratch code printed");
    }
}

#[test]
fn every_users_file_is_imported_for_its_owner_and_the_rest_reported() {
    if !pam_tools_present() || !tools_present(&["google-authenticator", NSS_WRAPPER]) {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let homes = world.dir.path().join("home");
    std::fs::create_dir(&homes).expect("mkdir");
    // Root's home is the World's too, not the machine's /root.
    let root_home = homes.join("root");
    std::fs::create_dir(&root_home).expect("mkdir");
    std::fs::set_permissions(&root_home, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let passwd = std::fs::read_to_string(world.passwd_file()).expect("passwd");
    std::fs::write(
        world.passwd_file(),
        passwd.replace(":/root:", &format!(":{}:", root_home.display())),
    )
    .expect("passwd");

    let ann = user(&world, &homes, "ann", 20_001);
    let hal = user(&world, &homes, "hal", 20_002);
    let bob = user(&world, &homes, "bob", 20_003);
    let cid = user(&world, &homes, "cid", 20_004);
    let dan = user(&world, &homes, "dan", 20_005);
    let eve = user(&world, &homes, "eve", 20_006);
    let fay = user(&world, &homes, "fay", 20_007);
    let gus = user(&world, &homes, "gus", 20_008);
    let ivy = user(&world, &homes, "ivy", 20_009);
    let jon = user(&world, &homes, "jon", 20_010);
    let _kim = user(&world, &homes, "kim", 20_011);
    let lee = user(&world, &homes, "lee", 20_012);
    // A second name for ann: same uid, same home.
    append_passwd(&world, "ann2", ann.uid, &ann.home);

    let (ann_key, ann_scratch) = google_authenticator(&ann.file(), ann.uid, false);
    let (hal_key, _) = google_authenticator(&hal.file(), hal.uid, true);
    let (root_key, _) = google_authenticator(&root_home.join(".google_authenticator"), 0, false);
    // bob's own file is fine; cid's home holds a file of bob's.
    let (bob_key, _) = google_authenticator(&bob.file(), bob.uid, false);
    let (cid_key, _) = google_authenticator(&cid.file(), bob.uid, false);
    // dan's home holds a file of root's.
    let (dan_key, _) = google_authenticator(&dan.file(), 0, false);
    // eve's is a symlink to ann's; fay's a FIFO.
    std::os::unix::fs::symlink(ann.file(), eve.file()).expect("symlink");
    let fifo = Command::new("mkfifo")
        .arg(fay.file())
        .status()
        .expect("mkfifo");
    assert!(fifo.success());
    own(&fay.file(), fay.uid, 0o600);
    // gus's is malformed; ivy's is readable by everyone; lee's is huge.
    std::fs::write(gus.file(), "not a key\n\" TOTP_AUTH\n").expect("write");
    own(&gus.file(), gus.uid, 0o400);
    let (ivy_key, _) = google_authenticator(&ivy.file(), ivy.uid, false);
    own(&ivy.file(), ivy.uid, 0o644);
    std::fs::write(lee.file(), "1".repeat(100_000)).expect("write");
    own(&lee.file(), lee.uid, 0o400);
    // jon is enrolled already.
    let jon_old_key = world.enroll("jon");
    let (jon_key, _) = google_authenticator(&jon.file(), jon.uid, false);

    let secrets: Vec<&str> = [
        &ann_key, &hal_key, &root_key, &bob_key, &cid_key, &dan_key, &ivy_key, &jon_key,
    ]
    .into_iter()
    .map(String::as_str)
    .chain(ann_scratch.iter().map(String::as_str))
    .collect();

    // The dry run (the default) reports and writes nothing.
    let out = totpctl(
        &world,
        &["import", "google-authenticator", "--home-dirs", "--json"],
    );
    let all_output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secret(&all_output, &secrets);
    let dry = json(&out);
    assert_eq!(dry["applied"], false);
    for name in ["ann", "hal", "bob", "root"] {
        assert_eq!(result(&dry, name)["status"], "would_import", "{name}");
    }
    assert!(
        !totpctl(&world, &["show", "ann"]).status.success(),
        "the dry run wrote nothing"
    );

    // The text form says the same, with --dry-run spelled out.
    let out = totpctl(
        &world,
        &["import", "google-authenticator", "--home-dirs", "--dry-run"],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_no_secret(&text, &secrets);
    assert!(text.contains("ann: would import: totp"), "{text}");
    assert!(text.contains("5 scratch code(s)"), "{text}");
    assert!(text.contains("Dry run: would import 4 user(s)"), "{text}");
    assert!(
        text.contains("cid: skipped: refused:") && text.contains("owned by bob (uid 20003)"),
        "{text}"
    );
    assert!(!totpctl(&world, &["show", "ann"]).status.success());

    // --apply: one transaction for all.
    let started = Instant::now();
    let out = totpctl(
        &world,
        &[
            "import",
            "google-authenticator",
            "--home-dirs",
            "--json",
            "--apply",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the FIFO was not waited on"
    );
    assert_no_secret(
        &format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        &secrets,
    );
    let report = json(&out);
    assert_eq!(report["applied"], true);
    assert_eq!(report["imported"], 4, "{report:#}");
    let ann_result = result(&report, "ann");
    assert_eq!(ann_result["status"], "imported");
    assert_eq!(ann_result["type"], "totp");
    assert_eq!(ann_result["scratch_codes"], 5);
    assert_eq!(result(&report, "hal")["type"], "hotp");
    assert_eq!(result(&report, "root")["status"], "imported");
    assert_eq!(result(&report, "bob")["status"], "imported");
    let skipped = |name: &str, reason: &str, detail: &str| {
        let r = result(&report, name);
        assert_eq!(r["status"], "skipped", "{name}: {r}");
        assert_eq!(r["reason"], reason, "{name}: {r}");
        let said = r["detail"].as_str().expect("detail");
        assert!(said.contains(detail), "{name}: {said}");
    };
    skipped("cid", "refused", "owned by bob (uid 20003), not by cid");
    skipped("dan", "refused", "owned by root (uid 0), not by dan");
    skipped("eve", "refused", "symlink");
    skipped("fay", "refused", "a FIFO, not a regular file");
    skipped("gus", "refused", "malformed: line 1");
    skipped("ivy", "refused", "readable by group or others (mode 0644)");
    skipped("lee", "refused", "100000 bytes");
    skipped("jon", "already_enrolled", "already enrolled (1 token(s))");
    skipped("ann2", "refused", "same file as ann's");
    // kim has no file, nobody's home does not exist: not reported.
    for absent in ["kim", "nobody"] {
        assert!(
            report["results"]
                .as_array()
                .expect("results")
                .iter()
                .all(|r| r["user"] != absent),
            "{absent}"
        );
    }
    assert_eq!(report["users"], 15, "every passwd entry walked");

    // Logins through the real module with the imported keys.
    let code = oathtool(&ann_key, None, &[]);
    let run = world.login("totp", "ann", Some(RHOST), &code);
    assert!(run.success, "ann with oathtool's code: {run:?}");
    let run = world.login("totp", "ann", Some(RHOST), &ann_scratch[0]);
    assert!(run.success, "a scratch code as a recovery code: {run:?}");
    let run = world.login("totp", "ann", Some(RHOST), &ann_scratch[0]);
    assert!(!run.success, "a scratch code works once: {run:?}");
    assert!(
        world
            .login("totp", "ann", Some(RHOST), &ann_scratch[1])
            .success
    );
    // HOTP: google-authenticator -c leaves HOTP_COUNTER 1: counter 0 is spent.
    assert!(
        !world
            .login(
                "totp",
                "hal",
                Some(RHOST),
                &oathtool_hotp(&hal_key, 0, false)
            )
            .success
    );
    assert!(
        world
            .login(
                "totp",
                "hal",
                Some(RHOST),
                &oathtool_hotp(&hal_key, 1, false)
            )
            .success
    );
    assert!(
        world
            .login("totp", "bob", Some(RHOST), &oathtool(&bob_key, None, &[]))
            .success
    );
    // Refused files gave nobody a token: cid and dan stay unenrolled.
    for (name, key) in [("cid", &cid_key), ("dan", &dan_key)] {
        let run = world.login("totp", name, Some(RHOST), &oathtool(key, None, &[]));
        assert!(!run.success, "{name}: {run:?}");
    }
    // jon was skipped: his old key works, the file's does not.
    let run = world.login("totp", "jon", Some(RHOST), &oathtool(&jon_key, None, &[]));
    assert!(!run.success, "{run:?}");
    let run = world.login(
        "totp",
        "jon",
        Some(RHOST),
        &oathtool(&jon_old_key, None, &[]),
    );
    assert!(run.success, "{run:?}");

    // --force imports jon's file too, and importing ann's again keeps the
    // code she used refused (the same key keeps its used steps).
    let report = json(&totpctl(
        &world,
        &[
            "import",
            "google-authenticator",
            "--home-dirs",
            "--json",
            "--apply",
            "--force",
        ],
    ));
    assert_eq!(result(&report, "jon")["status"], "imported");
    assert_eq!(result(&report, "jon")["replaces_device"], true);
    assert_eq!(result(&report, "ann")["scratch_codes"], 0, "{report:#}");
    let run = world.login("totp", "ann", Some(RHOST), &code);
    assert!(
        !run.success,
        "ann's used code after a forced re-import: {run:?}"
    );
    let run = world.login("totp", "ann", Some(RHOST), &ann_scratch[0]);
    assert!(
        !run.success,
        "a used scratch code after a forced re-import: {run:?}"
    );
    let run = world.login("totp", "ann", Some(RHOST), &ann_scratch[2]);
    assert!(run.success, "unused ones still work: {run:?}");
    let run = world.login("totp", "jon", Some(RHOST), &oathtool(&jon_key, None, &[]));
    assert!(run.success, "jon's file key after --force: {run:?}");
}

#[test]
fn the_single_file_form_and_the_walk_do_not_mix() {
    for args in [
        vec![
            "import",
            "google-authenticator",
            "--home-dirs",
            "--user",
            "a",
        ],
        vec!["import", "google-authenticator", "/x", "--home-dirs"],
        vec!["import", "google-authenticator", "/x"],
        vec![
            "import",
            "google-authenticator",
            "/x",
            "--user",
            "a",
            "--json",
        ],
        vec![
            "import",
            "google-authenticator",
            "--home-dirs",
            "--apply",
            "--dry-run",
        ],
    ] {
        let out = common::run_totpctl(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}
