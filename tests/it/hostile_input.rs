//! Hostile input through the real libpam (pam_wrapper + pamtester): bad
//! module arguments and config files, bad answers, bad rhosts, bad user
//! names. Every row asserts the PAM result and the module's log line.

use crate::common;

use std::thread;

use common::{KEY, World, oathtool, pam_tools_present};

enum Answer {
    Text(String),
    RightCode,
}

struct Row {
    name: &'static str,
    /// Module arguments after `db=…` (raw bytes: non-UTF-8 rows).
    args: Vec<u8>,
    /// A config file to pass with `config=`.
    config_file: Option<Vec<u8>>,
    user: String,
    rhost: Option<String>,
    answer: Answer,
    success: bool,
    log: &'static str,
}

fn row(name: &'static str, args: &str, log: &'static str) -> Row {
    Row {
        name,
        args: args.as_bytes().to_vec(),
        config_file: None,
        user: "alice".to_string(),
        rhost: Some("203.0.113.7".to_string()),
        answer: Answer::RightCode,
        success: false,
        log,
    }
}

fn config_row(name: &'static str, file: &[u8], log: &'static str) -> Row {
    Row {
        config_file: Some(file.to_vec()),
        ..row(name, "", log)
    }
}

fn answer_row(name: &'static str, answer: &str, log: &'static str) -> Row {
    Row {
        answer: Answer::Text(answer.to_string()),
        ..row(name, "", log)
    }
}

fn rhost_row(name: &'static str, rhost: &str, trusted: bool, log: &'static str) -> Row {
    Row {
        args: b"trusted=10.0.0.0/8,2001:db8::/32".to_vec(),
        rhost: Some(rhost.to_string()),
        // Trusted: no prompt, success. Otherwise the empty answer is refused.
        answer: Answer::Text(String::new()),
        success: trusted,
        ..row(name, "", log)
    }
}

fn user_row(name: &'static str, user: &str, log: &'static str) -> Row {
    Row {
        user: user.to_string(),
        answer: Answer::Text("123456".to_string()),
        ..row(name, "", log)
    }
}

fn table() -> Vec<Row> {
    let huge = format!("prompt={}", "A".repeat(5000));
    vec![
        // Module arguments: every mistake denies and names itself.
        row("unknown key", "frobnicate=1", "unknown key \"frobnicate\""),
        row("grace without a unit", "grace=8", "needs a unit"),
        row("grace too long", "grace=90d", "at most 30d"),
        row("unknown mode", "mode=both", "expected separate or combined"),
        row(
            "empty name in an exempt list",
            "exempt_group=wheel,,adm",
            "is not a user or group name",
        ),
        row(
            "database timeout out of range",
            "db_timeout=600",
            "from 0 to 60",
        ),
        config_row(
            "password in the database URL",
            b"db = postgresql://totp:hunter2@db.example.org/totp?sslmode=disable\n",
            "and no password (db_password_file=)",
        ),
        config_row(
            "unverified TLS to the database",
            b"db = postgresql://totp@db.example.org/totp?sslmode=require\n",
            // A file's value is not repeated: the error says what db takes.
            "the value of db is invalid: expected an absolute path, or a postgresql://",
        ),
        config_row(
            "database URL without a TLS decision",
            b"db = postgresql://totp@db.example.org/totp\n",
            "sslmode=verify-full",
        ),
        row(
            "option of another module",
            "nullok",
            "unknown key \"nullok\"",
        ),
        row("duplicate key", "window=1 window=2", "given more than once"),
        row("empty value", "trusted=", "empty value"),
        row("key without value", "window", "needs a value"),
        row(
            "huge value",
            Box::leak(huge.into_boxed_str()),
            "at most 200 printable",
        ),
        row(
            "CIDR prefix too long",
            "trusted=10.0.0.0/33",
            "not a valid CIDR",
        ),
        row(
            "CIDR with host bits",
            "trusted=10.1.2.3/16",
            "host bits set",
        ),
        row(
            "CIDR list with a hole",
            "trusted=10.0.0.0/8,,192.0.2.0/24",
            "empty network",
        ),
        row(
            "hostname as network",
            "trusted=campus.example.org",
            "not an IP address",
        ),
        row(
            "window not a number",
            "window=abc",
            "window=\"abc\" is invalid",
        ),
        row("window negative", "window=-1", "window=\"-1\" is invalid"),
        row("window too large", "window=11", "from 0 to 10"),
        row(
            "bad enum unenrolled",
            "unenrolled=yes",
            "expected deny or allow",
        ),
        row(
            "bad enum enroll",
            "enroll=always",
            "expected never, trusted or window",
        ),
        row("bad debug value", "debug=perhaps", "expected yes or no"),
        config_row(
            "relative store path",
            b"db = store.db\n",
            "must be an absolute path",
        ),
        row("hotp_window too large", "hotp_window=1000", "from 0 to 100"),
        row(
            "fail_delay with a unit",
            "fail_delay=2s",
            "fail_delay=\"2s\" is invalid",
        ),
        Row {
            args: b"window=\xff".to_vec(),
            ..row("non-UTF-8 argument", "", "not UTF-8")
        },
        // Config files.
        config_row(
            "NUL byte in a value",
            b"prompt = a\0b\n",
            "control characters",
        ),
        config_row("line without =", b"window 3\n", "not `key = value`"),
        config_row(
            "unknown key in file",
            b"windw = 1\n",
            "unknown key \"windw\"",
        ),
        config_row("non-UTF-8 file", b"prompt = \xff\n", "not valid UTF-8"),
        config_row(
            "config= inside the file",
            b"config = /etc/x\n",
            "only valid as a module argument",
        ),
        // Answers.
        answer_row("empty answer", "", "not a code of the user's tokens"),
        answer_row("spaces only", "    ", "not a code of the user's tokens"),
        answer_row("five digits", "12345", "not a code of the user's tokens"),
        answer_row("seven digits", "1234567", "not a code of the user's tokens"),
        answer_row(
            "two hundred digits",
            &"7".repeat(200),
            "not a code of the user's tokens",
        ),
        answer_row("letters", "abcdef", "not a code of the user's tokens"),
        answer_row(
            "Arabic-Indic digits",
            "١٢٣٤٥٦",
            "not a code of the user's tokens",
        ),
        // One space between two groups of digits is how apps show codes:
        // read as a code (a wrong one here); anything else is not a code.
        answer_row("grouped as apps show it", "123 456", "denied: wrong code"),
        answer_row(
            "two inner spaces",
            "123  456",
            "not a code of the user's tokens",
        ),
        answer_row(
            "three groups",
            "12 34 56",
            "not a code of the user's tokens",
        ),
        answer_row(
            "code plus junk",
            "123456x",
            "not a code of the user's tokens",
        ),
        answer_row(
            "sshd placeholder",
            "\u{8}\n\r\u{7f}INCORRECT",
            "sshd had already refused",
        ),
        answer_row(
            "recovery-shaped guess",
            "zzzz-zzzz-zzzz",
            "wrong or used recovery code",
        ),
        answer_row("wrong six digits", "000000", "denied:"),
        // Rhosts: only IP literals inside trusted= skip the code.
        rhost_row(
            "trusted IPv4",
            "10.1.2.3",
            true,
            "10.1.2.3 is in a trusted network",
        ),
        rhost_row(
            "v4-mapped IPv6",
            "::ffff:10.1.2.3",
            true,
            "10.1.2.3 is in a trusted network",
        ),
        rhost_row(
            "v4-mapped upper case",
            "::FFFF:10.1.2.3",
            true,
            "10.1.2.3 is in a trusted network",
        ),
        rhost_row(
            "trusted IPv6",
            "2001:db8::5",
            true,
            "2001:db8::5 is in a trusted network",
        ),
        rhost_row("empty rhost", "", false, "rhost=\"\""),
        rhost_row(
            "host name",
            "10.evil.example",
            false,
            "rhost=\"10.evil.example\"",
        ),
        rhost_row("zone id", "fe80::1%eth0", false, "rhost=\"fe80::1%eth0\""),
        rhost_row("trailing space", "10.1.2.3 ", false, "rhost=\"10.1.2.3 \""),
        rhost_row(
            "shell garbage",
            "$(reboot);`id`",
            false,
            "rhost=\"$(reboot);`id`\"",
        ),
        rhost_row(
            "newline in rhost",
            "10.1.2.3\nx",
            false,
            "rhost=\"10.1.2.3\\x0ax\"",
        ),
        // Users: never found, never able to break the log line.
        user_row("very long user", &"u".repeat(4000), "user is not enrolled"),
        user_row(
            "path in user",
            "../../etc/passwd",
            "user=\"../../etc/passwd\"",
        ),
        user_row(
            "forged log line in user",
            "eve\npam_totp(sshd:auth): accepted: code",
            "user=\"eve\\x0apam_totp(sshd:auth): accepted: code\"",
        ),
        user_row(
            "quotes in user",
            "a\" rhost=\"10.0.0.1",
            "user=\"a\\\" rhost=\\\"10.0.0.1\"",
        ),
        user_row(
            "line separator in user",
            "eve\u{2028}pam_totp(sshd:auth): accepted: code",
            "user=\"eve\\u{2028}pam_totp(sshd:auth): accepted: code\"",
        ),
        user_row(
            "right-to-left override in user",
            "mallory\u{202e}\u{2066}nimda\u{feff}",
            "user=\"mallory\\u{202e}\\u{2066}nimda\\u{feff}\"",
        ),
        user_row("empty user", "", "no user: empty user name"),
    ]
}

fn run_row(world: &World, index: usize, row: &Row) -> Result<(), String> {
    let mut line = format!(
        "auth required {} {} ",
        common::module_path().display(),
        world.store_args()
    )
    .into_bytes();
    if let Some(file) = &row.config_file {
        let path = world.dir.path().join(format!("row{index}.conf"));
        std::fs::write(&path, file).map_err(|e| e.to_string())?;
        line.extend_from_slice(format!("config={} ", path.display()).as_bytes());
    }
    // Failures of rows whose configuration is valid are not held back.
    if !row.args.windows(10).any(|w| w == b"fail_delay") {
        line.extend_from_slice(b"fail_delay=0 ");
    }
    line.extend_from_slice(&row.args);
    line.push(b'\n');
    let service = format!("row{index}");
    std::fs::write(world.services.join(&service), line).map_err(|e| e.to_string())?;
    let answer = match &row.answer {
        Answer::Text(text) => text.clone(),
        Answer::RightCode => oathtool(KEY, None, &[]),
    };
    // Each row has its own source address so the back-off of one row does
    // not decide another.
    let rhost = match &row.rhost {
        Some(r) if r == "203.0.113.7" => Some(format!("198.18.0.{index}")),
        other => other.clone(),
    };
    // (World::login runs a login again whose module never ran.)
    let run = world.login(&service, &row.user, rhost.as_deref(), &answer);
    let mut problems = Vec::new();
    if run.success != row.success {
        problems.push(format!("success={} (want {})", run.success, row.success));
    }
    if !run.logged(row.log) {
        problems.push(format!("no log line with {:?}", row.log));
    }
    if run
        .stderr
        .lines()
        .filter(|l| l.contains("SYSLOG("))
        .any(|l| l.contains(KEY))
    {
        problems.push("the key was logged".to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}\n{run:?}", row.name, problems.join("; ")))
    }
}

#[test]
fn bad_inputs_deny_and_say_why() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    let out = world.totpctl(&["enroll", "alice", "--secret", KEY]);
    assert!(out.status.success());
    let rows = table();
    assert!(rows.len() >= 40, "the table has {} rows", rows.len());
    // Config errors are answered after libpam's default 2 s failure delay:
    // run the rows eight at a time.
    let failures: Vec<String> = thread::scope(|scope| {
        let chunks: Vec<_> = rows
            .iter()
            .enumerate()
            .collect::<Vec<_>>()
            .chunks(rows.len().div_ceil(8))
            .map(|chunk| chunk.to_vec())
            .collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let world = &world;
                scope.spawn(move || {
                    chunk
                        .into_iter()
                        .filter_map(|(i, row)| run_row(world, i, row).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("row thread"))
            .collect()
    });
    println!("{} hostile inputs, {} failed", rows.len(), failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A real ed25519 public key (ssh-keygen) and its fingerprint as
/// `ssh-keygen -lf` printed it.
const SSH_KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIPWhMX3GrSZWFUTEvx5GuAhSZm+XOT6mzOYJAiiQgU9l";
const SSH_KEY_FP: &str = "SHA256:PBZqibLSCLdAS4+MC8G29Jx6IMJfj3+k9ckTzGesU+I";

/// `SSH_AUTH_INFO_0` as another module or a forged environment could
/// leave it: through the real libpam (pam_worker puts it into the PAM
/// environment, as sshd does), under the PAM service `sshd`, after alice
/// earned a key grace with SSH_KEY. None of these values may skip the
/// code; only sshd's exact line for SSH_KEY does, and only under `sshd`.
#[test]
fn hostile_ssh_auth_info_values_never_skip_the_code() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    let out = world.totpctl(&["enroll", "alice", "--secret", KEY]);
    assert!(out.status.success());
    world.service_with_account("sshd", "grace_key=1h");
    world.service_with_account("sshd-other", "grace_key=1h");
    let good = format!("publickey ssh-ed25519 {SSH_KEY}\n");
    let putenv = |value: &str| format!("SSH_AUTH_INFO_0={value}");
    let worker = |service: &str, value: &str, answer: &str| {
        world.pam_worker_with(
            service,
            "alice",
            "203.0.113.7",
            &[answer],
            &[
                ("PAM_WORKER_PUTENV", &putenv(value)),
                ("PAM_WORKER_THEN", "account,setcred"),
            ],
        )
    };
    // A right code with SSH_KEY, the stack succeeds: the key grace is stored.
    let first = worker("sshd", &good, &oathtool(KEY, None, &[]));
    assert!(first.contains("RESULT 0"), "{first}");
    let shown = world.totpctl(&["show", "alice"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout)
            .contains(&format!("key grace: SSH key {SSH_KEY_FP}")),
        "{shown:?}"
    );
    // sshd's line for the same key: no prompt.
    let again = worker("sshd", &good, "");
    assert!(
        again.contains("RESULT 0") && !again.contains("PROMPT"),
        "{again}"
    );
    // The same line under another PAM service: asked.
    let other = worker("sshd-other", &good, "000000");
    assert!(
        other.contains("PROMPT") && !other.contains("RESULT 0"),
        "{other}"
    );

    let long = format!("publickey ssh-ed25519 {}\n", "A".repeat(9000));
    let hostile: Vec<(&str, String)> = vec![
        ("no trailing newline", good.trim_end().to_string()),
        ("two key lines", format!("{good}{good}")),
        ("a method before the key", format!("password\n{good}")),
        (
            "trailing field",
            format!("publickey ssh-ed25519 {SSH_KEY} extra\n"),
        ),
        (
            "double space",
            format!("publickey  ssh-ed25519 {SSH_KEY}\n"),
        ),
        (
            "carriage return",
            format!("publickey ssh-ed25519 {SSH_KEY}\r\n"),
        ),
        (
            "certificate type",
            format!("publickey ssh-ed25519-cert-v01@openssh.com {SSH_KEY}\n"),
        ),
        (
            "type not the blob's",
            format!("publickey ssh-rsa {SSH_KEY}\n"),
        ),
        (
            "fingerprint instead of key",
            format!("publickey ssh-ed25519 {SSH_KEY_FP}\n"),
        ),
        (
            "uppercase method",
            format!("PUBLICKEY ssh-ed25519 {SSH_KEY}\n"),
        ),
        ("bad base64", "publickey ssh-ed25519 !!!!\n".to_string()),
        (
            "truncated key",
            format!("publickey ssh-ed25519 {}\n", &SSH_KEY[..40]),
        ),
        ("over 8 KiB", long),
        ("empty", String::new()),
        ("password only", "password\n".to_string()),
        (
            "escape sequence",
            format!("publickey ssh-ed25519 {SSH_KEY}\u{1b}[2J\n"),
        ),
    ];
    let mut failures = Vec::new();
    for (name, value) in &hostile {
        let run = worker("sshd", value, "000000");
        if !run.contains("PROMPT") || run.contains("RESULT 0") {
            failures.push(format!("{name}: {run}"));
        }
    }
    println!(
        "{} hostile SSH_AUTH_INFO_0 values, {} failed",
        hostile.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Under sshd, a login the account stack refuses (pam_nologin, an expired
/// account; here pam_deny after pam_totp's own account line) grants no
/// key grace: the stage waits for sshd's pam_setcred, which sshd calls
/// only after the account stack succeeded.
#[test]
fn an_account_stack_that_denies_leaves_no_key_grace() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    let out = world.totpctl(&["enroll", "alice", "--secret", KEY]);
    assert!(out.status.success());
    world.service("sshd", "grace_key=1h");
    let auth = std::fs::read_to_string(world.services.join("sshd")).expect("service");
    let account = auth.replacen("auth ", "account ", 1);
    world.raw_service(
        "sshd",
        &format!("{auth}{account}account required pam_deny.so\n"),
    );
    let good = format!("SSH_AUTH_INFO_0=publickey ssh-ed25519 {SSH_KEY}\n");
    let out = world.pam_worker_with(
        "sshd",
        "alice",
        "203.0.113.7",
        &[&oathtool(KEY, None, &[])],
        &[("PAM_WORKER_PUTENV", &good), ("PAM_WORKER_THEN", "account")],
    );
    assert!(out.contains("RESULT 0"), "{out}");
    assert!(
        !out.contains("ACCOUNT 0"),
        "the account stack let it in: {out}"
    );
    let shown = world.totpctl(&["show", "alice"]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("key graces: none"), "{shown}");
}
