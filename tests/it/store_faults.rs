//! The store under abuse: logins killed with SIGKILL at random moments, a
//! full file system, a read-only file system. Each must deny cleanly, keep
//! the store intact, and never forget a step it acknowledged as used.

use crate::common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    FAKETIME, KEY, RHOST, World, oathtool, pam_tools_present, tools_present, utc_for_faketime,
};

fn sqlite(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random");
    u64::from_le_bytes(b) % n
}

/// `cmd` run with a private, empty /tmp: a process killed with SIGKILL
/// leaves pam_wrapper's state directory (/tmp/pam.X, one of ~62 slots)
/// behind, sometimes before writing the pid file pam_wrapper cleans stale
/// ones by. In its own mount namespace the directory goes with the process.
fn with_private_tmp(cmd: &Command) -> Command {
    // The preloads are for pamtester alone: in unshare, sh and mount,
    // pam_wrapper would make state directories in the host's /tmp.
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=16m tmpfs /tmp && exec env LD_PRELOAD=\"$CHILD_PRELOAD\" \"$@\"")
        .arg("sh")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        let key = if key == "LD_PRELOAD" {
            std::ffi::OsStr::new("CHILD_PRELOAD")
        } else {
            key
        };
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

#[test]
fn sigkill_at_random_moments_keeps_the_store_whole_and_every_acknowledged_step() {
    if common::sqlite_only("SIGKILL against the SQLite file")
        || !pam_tools_present()
        || !tools_present(&[FAKETIME, "sqlite3", "unshare"])
    {
        return;
    }
    // Everything this test's pamtester loads must live outside /tmp (the
    // checkout may be under /tmp): a copy of the module beside the store.
    let world = World::outside_tmp();
    let module = world.dir.path().join("pam_totp.so");
    std::fs::copy(common::module_path(), &module).expect("copy module");
    world.raw_service(
        "totp",
        &format!(
            "auth required {} db={} fail_delay=0\n",
            module.display(),
            world.db.display()
        ),
    );
    assert!(
        world
            .totpctl(&["enroll", "kim", "--secret", KEY])
            .status
            .success()
    );
    let base = (common::unix_now() / 30 - 10_000) * 30 + 10;
    let login = |i: u64, kill_after: Option<Duration>| {
        let at = base + 30 * i;
        let mut cmd = world.pamtester_command("totp", "kim", Some(RHOST));
        cmd.env("LD_PRELOAD", common::preload(&[FAKETIME]))
            .env("FAKETIME", format!("@{}", utc_for_faketime(at)))
            .env("TZ", "UTC")
            .env("PAM_WRAPPER_DEBUGLEVEL", "2");
        let mut child = with_private_tmp(&cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pamtester");
        let code = oathtool(KEY, Some(at), &[]);
        let started = std::time::Instant::now();
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{code}\n").as_bytes());
        if let Some(delay) = kill_after {
            std::thread::sleep(delay);
            let _ = child.kill();
        }
        let mut errors = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            use std::io::Read;
            let _ = stderr.read_to_string(&mut errors);
        }
        let status = child.wait().expect("wait");
        (at / 30, status, started.elapsed(), errors)
    };
    // How long a whole login takes here: the kills are spread over twice that.
    let mut longest = Duration::ZERO;
    for i in 0..5 {
        let (_, status, took, errors) = login(i, None);
        assert!(status.success(), "warm-up login {i}: {errors}");
        longest = longest.max(took);
    }
    let spread = (longest * 2).as_micros() as u64;
    let (mut acknowledged, mut killed, mut refused, mut unstarted) = (0, 0, Vec::new(), 0);
    for i in 5..105u64 {
        let (step, status, errors) = loop {
            let (step, status, _, errors) =
                login(i, Some(Duration::from_micros(random_below(spread))));
            // pamtester ended on its own before PAM performed anything
            // (unshare, the private /tmp or pam_wrapper's setup failed):
            // the harness, not the module; nothing was read or written, so
            // the same login runs again.
            if status.code().is_some_and(|c| c != 0) && !errors.contains("performing operation") {
                unstarted += 1;
                assert!(unstarted <= 5, "login {i} never reached PAM:\n{errors}");
                continue;
            }
            break (step, status, errors);
        };
        match (status.code(), status.signal()) {
            (Some(0), _) => {
                acknowledged += 1;
                let last: u64 =
                    sqlite(&world.db, "SELECT last_step FROM tokens WHERE user = 'kim'")
                        .parse()
                        .expect("an acknowledged login left a step");
                assert!(
                    last >= step,
                    "login {i} was acknowledged but step {step} is not recorded ({last})"
                );
            }
            (None, Some(libc::SIGKILL)) => killed += 1,
            (code, signal) => refused.push(format!(
                "login {i} ended with exit code {code:?}, signal {signal:?}:\n{errors}"
            )),
        }
        assert_eq!(
            sqlite(&world.db, "PRAGMA integrity_check"),
            "ok",
            "after login {i}"
        );
    }
    println!(
        "100 logins under SIGKILL: {acknowledged} acknowledged (each step on disk), {killed} killed mid-way, {} refused, {unstarted} run again because they never reached PAM; integrity_check ok after every one",
        refused.len()
    );
    assert!(
        killed > 0 && acknowledged > 0,
        "kills spread over {spread} µs should cover both ends"
    );
    // A login the module decided, or one that died of anything but our
    // SIGKILL (a panic's abort, a crash), fails the test with its log.
    assert!(
        refused.is_empty(),
        "no login may fail for a reason other than the kill:\n{}",
        refused.join("\n")
    );
}

/// A small tmpfs of our own, unmounted at the end.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> SmallFs {
        let dir = common::trusted_tempdir();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        SmallFs { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn remount(&self, option: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{option}")])
            .arg(self.path())
            .status()
            .expect("mount");
        assert!(status.success());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

/// A World whose store lives on `fs`.
fn world_on(fs: &SmallFs) -> World {
    let mut world = World::new();
    world.db = fs.path().join("pam_totp.db");
    world.service("totp", "");
    assert!(
        world
            .totpctl(&["enroll", "fran", "--secret", KEY])
            .status
            .success()
    );
    world
}

#[test]
fn a_full_disk_denies_and_leaves_the_store_intact() {
    if common::sqlite_only("a full file system under the SQLite file")
        || !pam_tools_present()
        || !tools_present(&["sqlite3", "mount"])
    {
        return;
    }
    let fs = SmallFs::mount("1m");
    let world = world_on(&fs);
    let filler = fs.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    let code = oathtool(KEY, None, &[]);
    let run = world.login("totp", "fran", Some(RHOST), &code);
    assert!(!run.success, "{run:?}");
    assert!(run.logged("denied: store unavailable"), "{run:?}");
    std::fs::remove_file(&filler).expect("free the disk");
    assert_eq!(sqlite(&world.db, "PRAGMA integrity_check"), "ok");
    let run = world.login("totp", "fran", Some(RHOST), &code);
    assert!(
        run.success,
        "the code was not burned by the failed login: {run:?}"
    );
}

#[test]
fn a_read_only_store_denies_and_stays_intact() {
    if common::sqlite_only("a read-only file system under the SQLite file")
        || !pam_tools_present()
        || !tools_present(&["sqlite3", "mount"])
    {
        return;
    }
    let fs = SmallFs::mount("4m");
    let world = world_on(&fs);
    fs.remount("ro");
    let code = oathtool(KEY, None, &[]);
    let run = world.login("totp", "fran", Some(RHOST), &code);
    assert!(!run.success, "{run:?}");
    assert!(run.logged("denied: store unavailable"), "{run:?}");
    fs.remount("rw");
    assert_eq!(sqlite(&world.db, "PRAGMA integrity_check"), "ok");
    let run = world.login("totp", "fran", Some(RHOST), &code);
    assert!(run.success, "{run:?}");
}

#[test]
fn a_store_locked_beyond_the_busy_timeout_denies_without_burning() {
    if common::sqlite_only("the SQLite file locked by another process")
        || !pam_tools_present()
        || !tools_present(&["sqlite3"])
    {
        return;
    }
    let world = World::new();
    world.service("totp", "");
    assert!(
        world
            .totpctl(&["enroll", "lee", "--secret", KEY])
            .status
            .success()
    );
    // Another process holds the write lock for longer than the 5 s busy timeout.
    let mut holder = Command::new("sqlite3")
        .arg(&world.db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sqlite3");
    let mut stdin = holder.stdin.take().expect("stdin");
    stdin
        .write_all(b"BEGIN EXCLUSIVE;\nUPDATE tokens SET created = created;\n")
        .expect("lock");
    stdin.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(300));
    let code = oathtool(KEY, None, &[]);
    let run = world.login("totp", "lee", Some(RHOST), &code);
    drop(stdin);
    let _ = holder.wait();
    assert!(!run.success, "{run:?}");
    assert!(run.logged("denied: store unavailable"), "{run:?}");
    assert!(run.logged("locked"), "{run:?}");
    let run = world.login("totp", "lee", Some(RHOST), &code);
    assert!(run.success, "the code was not burned: {run:?}");
}
