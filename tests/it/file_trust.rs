//! The files the module trusts, through the real libpam (pam_wrapper +
//! pamtester) and totpctl: a config file under a directory someone else
//! owns or can write, a store, key or password file others can read, a
//! store directory others can read. Each is refused, the login is denied
//! even with the right code, and one log line names the file, what is wrong
//! and the fix. Put right, the same code logs in (nothing was burned).

use crate::common;

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{RHOST, World, oathtool, pam_tools_present};

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), None).expect("chown");
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).expect("stat").mode() & 0o7777
}

/// A config file that would let anyone in without a code (every address
/// trusted): what an attacker who could swap the config file would write.
fn open_door_config(world: &World, dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir");
    set_mode(dir, 0o755);
    let conf = dir.join("pam_totp.conf");
    std::fs::write(
        &conf,
        format!("{}trusted = 0.0.0.0/0,::/0\n", world.store_config_lines()),
    )
    .expect("conf");
    set_mode(&conf, 0o644);
    conf
}

#[test]
fn a_config_file_under_a_directory_others_own_or_can_write_is_refused() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    let key = world.enroll("alice");

    // Control: in root's directories the file is used (every address is
    // trusted: in without a code).
    let good = open_door_config(&world, &world.dir.path().join("etc"));
    world.service_exact(
        "root-dir",
        &format!("config={} fail_delay=0", good.display()),
    );
    let run = world.login("root-dir", "alice", Some(RHOST), "");
    assert!(run.success, "{run:?}");

    // The same file, one directory up owned by uid 65534 (who could rename
    // it away and put their own in its place): refused, even with the code.
    let owned = world.dir.path().join("owned");
    let conf = open_door_config(&world, &owned.join("security"));
    chown(&owned, 65534);
    world.service_exact(
        "owned-dir",
        &format!("config={} fail_delay=0", conf.display()),
    );
    let run = world.login(
        "owned-dir",
        "alice",
        Some(RHOST),
        &oathtool(&key, None, &[]),
    );
    assert!(!run.success, "{run:?}");
    assert!(
        run.logged(&format!(
            "denied: configuration error: config file {}: directory {} is owned by uid 65534, not root",
            conf.display(),
            owned.display()
        )),
        "{run:?}"
    );

    // Group-writable, and sticky world-writable like /tmp: refused too.
    for (mode, says) in [(0o775, "chmod go-w"), (0o1777, "sticky bit")] {
        let dir = world.dir.path().join(format!("mode{mode:o}"));
        let conf = open_door_config(&world, &dir);
        set_mode(&dir, mode);
        world.service_exact(
            "writable-dir",
            &format!("config={} fail_delay=0", conf.display()),
        );
        let run = world.login("writable-dir", "alice", Some(RHOST), "");
        assert!(!run.success, "{mode:o}: {run:?}");
        assert!(
            run.logged(&format!(
                "config file {}: directory {}",
                conf.display(),
                dir.display()
            )) && run.logged("group- or world-writable")
                && run.logged(says),
            "{mode:o}: {run:?}"
        );
    }

    // A symlink on the way is not followed.
    let link = world.dir.path().join("etc-link");
    std::os::unix::fs::symlink(world.dir.path().join("etc"), &link).expect("symlink");
    let via_link = link.join("pam_totp.conf");
    world.service_exact(
        "linked-dir",
        &format!("config={} fail_delay=0", via_link.display()),
    );
    let run = world.login("linked-dir", "alice", Some(RHOST), "");
    assert!(!run.success, "{run:?}");
    assert!(
        run.logged(&format!("{} is a symlink", link.display())),
        "{run:?}"
    );

    // Nothing was burned: the code still logs in through the good file.
    world.service("plain", "");
    let run = world.login("plain", "alice", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(run.success, "{run:?}");
}

#[test]
fn a_store_others_can_read_is_refused() {
    if !pam_tools_present() || common::sqlite_only("the store file's mode") {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    let key = world.enroll("bea");
    let login = || world.login("totp", "bea", Some(RHOST), &oathtool(&key, None, &[]));
    let db = world.db.display().to_string();

    set_mode(&world.db, 0o644);
    let run = login();
    assert!(!run.success, "{run:?}");
    assert!(
        run.logged(&format!(
            "denied: store error: store not trusted: {db}: mode 0644 lets group or others read it, and it holds every user's token keys: chmod 600 {db}"
        )),
        "{run:?}"
    );
    set_mode(&world.db, 0o600);

    let dir = world.db.parent().expect("store dir");
    set_mode(dir, 0o755);
    let run = login();
    assert!(!run.success, "{run:?}");
    assert!(
        run.logged(&format!(
            "store directory {} is mode 0755: group or others can read or write",
            dir.display()
        )) && run.logged(&format!("chmod 700 {}", dir.display())),
        "{run:?}"
    );
    set_mode(dir, 0o700);

    let run = login();
    assert!(run.success, "{run:?}");
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    let keys = common::private_tempdir();
    let key_file = keys.path().join("pam_totp.key");
    common::keygen(&key_file);
    assert_eq!(mode_of(&key_file), 0o600, "keygen writes it 0600");
    let secret = common::random_secret();
    let out = world.totpctl(&[
        "--key-file",
        key_file.to_str().expect("path"),
        "enroll",
        "cy",
        "--secret",
        &secret,
    ]);
    assert!(out.status.success(), "{out:?}");
    world.service("sealed", &format!("key_file={}", key_file.display()));
    let login = || world.login("sealed", "cy", Some(RHOST), &oathtool(&secret, None, &[]));

    set_mode(&key_file, 0o640);
    let run = login();
    assert!(!run.success, "{run:?}");
    let k = key_file.display();
    assert!(
        run.logged(&format!(
            "denied: store error: key file {k}: mode 0640 lets group or others read it, and it holds a secret: chmod 600 {k}"
        )),
        "{run:?}"
    );
    // totpctl refuses it the same way.
    let out = world.totpctl(&["--key-file", key_file.to_str().expect("path"), "list"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mode 0640"),
        "{out:?}"
    );

    set_mode(&key_file, 0o600);
    let run = login();
    assert!(run.success, "{run:?}");
}

#[test]
fn a_password_file_others_can_read_is_refused() {
    if !pam_tools_present() || !common::postgres_present() {
        return;
    }
    let world = World::with_postgres();
    world.service("totp", "");
    let key = world.enroll("dee");
    let (_, database) = world.pg.as_ref().expect("pg");
    let file = &database.password_file;
    set_mode(file, 0o640);
    let run = world.login("totp", "dee", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(!run.success, "{run:?}");
    let f = file.display();
    assert!(
        run.logged(&format!(
            "denied: store error: store not trusted: db_password_file {f}: mode 0640 lets group or others read it, and it holds a secret: chmod 600 {f}"
        )),
        "{run:?}"
    );
    set_mode(file, 0o600);
    let run = world.login("totp", "dee", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(run.success, "{run:?}");
}

fn totpctl(db: &Path, args: &[&str]) -> std::process::Output {
    let db_option = [OsStr::new("--db"), db.as_os_str()];
    common::run_totpctl(db_option.into_iter().chain(args.iter().map(OsStr::new)))
}

#[test]
fn totpctl_init_makes_a_store_directory_others_can_read_private_and_says_so() {
    let base = common::trusted_tempdir();
    let dir = base.path().join("lib");
    std::fs::create_dir(&dir).expect("mkdir");
    set_mode(&dir, 0o755);
    let db = dir.join("pam_totp.db");

    // Another verb that may create the store refuses, naming the fix.
    let out = totpctl(
        &db,
        &["enroll", "eve", "--secret", &common::random_secret()],
    );
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("chmod 700 {}", dir.display())),
        "{stderr}"
    );
    assert!(
        !db.exists(),
        "nothing created in a directory others can read"
    );

    // init fixes the mode, and says it did.
    let out = totpctl(&db, &["init"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "Changed the mode of the store directory {} from 0755 to 0700",
            dir.display()
        )),
        "{stdout}"
    );
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(mode_of(&db), 0o600);
    // Said once: the second init has nothing to change.
    let out = totpctl(&db, &["init"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("Changed the mode"),
        "{out:?}"
    );

    // A store directory owned by someone else is not taken over: refused.
    let theirs = base.path().join("theirs");
    std::fs::create_dir(&theirs).expect("mkdir");
    chown(&theirs, 65534);
    let out = totpctl(&theirs.join("pam_totp.db"), &["init"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("store directory not trusted") && stderr.contains("uid 65534"),
        "{stderr}"
    );
    assert_eq!(mode_of(&theirs), 0o755, "left as it was");

    // Under /tmp (sticky, world-writable): refused, nothing created.
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().join("state");
    let out = totpctl(&state.join("pam_totp.db"), &["init"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("group- or world-writable"), "{stderr}");
    assert!(!state.exists(), "nothing created under /tmp");
}
