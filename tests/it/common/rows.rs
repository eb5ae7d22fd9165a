//! Rows written and read behind the tools' backs, as an old store or an
//! attacker with the database would have them, and logins held at the
//! prompt: what the attack suites share.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use super::{RHOST, World, oathtool, wrong_code};

/// The command's stdout, after asserting that it succeeded (its stderr
/// otherwise).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `sql` on the world's store (sqlite3, or psql as the superuser)
/// and answers its output, trimmed.
pub fn sql(world: &World, sql: &str) -> String {
    match &world.pg {
        Some((cluster, db)) => cluster.psql(&db.name, sql).trim().to_string(),
        None => {
            let out = Command::new("sqlite3")
                .arg(&world.db)
                .arg(sql)
                .output()
                .expect("run sqlite3");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    }
}

/// The columns of a copied device, as SQL expressions over the row it is
/// copied from: by default the very same key, digits, confirmation and
/// used step, and no pending replacement.
pub struct Copied<'a> {
    pub key: &'a str,
    pub digits: &'a str,
    pub confirmed: &'a str,
    pub last_step: &'a str,
    pub replaces: &'a str,
}

impl Default for Copied<'_> {
    fn default() -> Self {
        Copied {
            key: "secret",
            digits: "digits",
            confirmed: "confirmed",
            last_step: "last_step",
            replaces: "NULL",
        }
    }
}

/// A device `to` of `user`, a copy of `from` (its key and parameters) with
/// the columns `copied` says, as a store written before `totpctl` refused a
/// key the user held holds it.
pub fn copy_device(world: &World, user: &str, from: &str, to: &str, copied: Copied<'_>) {
    let Copied {
        key,
        digits,
        confirmed,
        last_step,
        replaces,
    } = copied;
    sql(
        world,
        &format!(
            "INSERT INTO tokens (\"user\", device, kind, secret, algorithm, digits, period, \
             created, confirmed, last_step, replaces) SELECT \"user\", '{to}', kind, {key}, \
             algorithm, {digits}, period, created, {confirmed}, {last_step}, {replaces} \
             FROM tokens WHERE \"user\" = '{user}' AND device = '{from}'"
        ),
    );
}

/// A login (pamtester, service `totp`) that has read the user's tokens and
/// waits at the code prompt, as an sshd child does for up to
/// LoginGraceTime (an attacker's connection kept open).
pub fn waiting_at_prompt(world: &World, user: &str) -> (Child, ChildStderr) {
    let mut child = world
        .pamtester_command("totp", user, Some(RHOST))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pamtester");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(super::race::PROMPT) {
        match stderr.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => panic!("no prompt: {}", String::from_utf8_lossy(&seen)),
        }
    }
    (child, stderr)
}

/// Answers a waiting login; whether it got in, and its log lines.
pub fn answer_waiting((mut child, mut stderr): (Child, ChildStderr), code: &str) -> (bool, String) {
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = stdin.write_all(format!("{code}\n").as_bytes());
    drop(stdin);
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    let log = rest
        .lines()
        .filter(|l| l.contains("SYSLOG"))
        .collect::<Vec<_>>()
        .join("\n");
    (child.wait().expect("wait").success(), log)
}

/// Waits until a backend of the world's PostgreSQL database waits for a
/// lock while running a statement that starts with `prefix` (`%` matches
/// anything, as in LIKE).
pub fn wait_for_lock_waiter(world: &World, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting = sql(
            world,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND ltrim(query) LIKE '{prefix}%'"
            ),
        );
        if waiting != "0" {
            return;
        }
        assert!(Instant::now() < deadline, "nothing waited for a lock");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// totpctl on the world's store with `--key-file file` before `args`.
pub fn sealed(world: &World, file: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--key-file", file.to_str().expect("path")];
    all.extend_from_slice(args);
    world.totpctl(&all)
}

/// Two fresh key files (`a.key`, `b.key`) in a private directory.
pub fn two_key_files() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let keys = super::private_tempdir();
    let (first, second) = (keys.path().join("a.key"), keys.path().join("b.key"));
    super::keygen(&first);
    super::keygen(&second);
    (keys, first, second)
}

/// How many records of deleted keys (`retired_keys`) `user` has.
pub fn records_of(world: &World, user: &str) -> String {
    sql(
        world,
        &format!("SELECT count(*) FROM retired_keys WHERE \"user\" = '{user}'"),
    )
}

/// pamtester for an enrollment at login: reads the key the module shows
/// (PAM_TEXT_INFO, on stdout) and answers the confirmation with its code.
pub fn enroll_at_login(
    world: &World,
    service: &str,
    user: &str,
    rhost: &str,
    right: bool,
) -> (bool, String) {
    let mut child = world
        .pamtester_command_unbuffered(service, user, Some(rhost))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pamtester");
    // Both streams are read as they come: the key arrives on stdout
    // (PAM_TEXT_INFO), the prompts on stderr.
    let collect = |mut stream: Box<dyn Read + Send>| {
        let text = Arc::new(Mutex::new(String::new()));
        let sink = text.clone();
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        (text, handle)
    };
    let (shown, out_reader) = collect(Box::new(child.stdout.take().expect("stdout")));
    let (prompts, err_reader) = collect(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + Duration::from_secs(10);
    let key = loop {
        let text = shown.lock().expect("lock").clone();
        if let Some(line) = text.lines().find_map(|l| l.strip_prefix("Key: ")) {
            break Some(line.split_whitespace().collect::<String>());
        }
        let asked_for_code = prompts
            .lock()
            .expect("lock")
            .contains("Verification code: ");
        if asked_for_code || Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let answer = match &key {
        Some(key) if right => oathtool(key, None, &[]),
        Some(key) => wrong_code(&oathtool(key, None, &[])),
        None => "123456".to_string(),
    };
    let mut stdin = child.stdin.take().expect("stdin");
    let _ = writeln!(stdin, "{answer}");
    drop(stdin);
    let success = child.wait().expect("wait").success();
    out_reader.join().expect("stdout reader");
    err_reader.join().expect("stderr reader");
    let shown = shown.lock().expect("lock").clone();
    let stderr = prompts.lock().expect("lock").clone();
    (success, format!("{shown}\n{stderr}"))
}
