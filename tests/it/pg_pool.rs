//! A pool of login nodes on one PostgreSQL database, through the real
//! libpam: two "nodes" are two PAM service files, each with its own module
//! arguments, naming the same database. Codes come from oathtool.
//!
//! - a code accepted on node A is refused on node B;
//! - 64 logins with one code, spread over A and B, released together:
//!   exactly one gets in, in every trial; 64 different users: all get in
//!   (64 processes at once is more than pamtester under pam_wrapper can
//!   run, so these use examples/pam_worker: the real libpam with a private
//!   service directory, answering over a pipe);
//! - wrong codes are counted across nodes: the back-off holds when the
//!   guesses alternate between A and B;
//! - PostgreSQL stopped: denied within the timeout with the cause in the
//!   log, and working again once it is back, with nothing restarted; a
//!   server that accepts the connection and never answers: given up after
//!   `db_timeout`;
//!   a wrong database password: denied, named;
//! - TLS with `sslmode=verify-full`: the right CA and host name get in; a
//!   certificate from another CA, or for another name, is refused and named;
//! - `totpctl migrate` of a SQLite store with users, devices, HOTP and
//!   recovery codes: every user logs in afterwards;
//! - through PgBouncer in transaction pooling mode (a Unix socket, peer
//!   identity, TLS from the pooler to the server): a code is used once,
//!   64 logins with one code let exactly one in, 64 users all get in, a
//!   wrong code is counted, and the server saw a few pooled connections,
//!   not one per login.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{RHOST, World, oathtool, pam_tools_present, postgres_present, random_secret};

const SAME_CODE_TRIALS: usize = 10;
const RACERS: usize = 64;

fn tools() -> bool {
    pam_tools_present() && postgres_present()
}

/// A pool: one database, node A and node B. (Service names are lower
/// case: libpam lowercases the name before it looks for the file.) The
/// nodes reach the database over its Unix socket.
fn pool(extra: &str) -> World {
    pool_in(World::with_postgres(), extra)
}

/// A pool whose database is reached over TCP on 127.0.0.1.
fn pool_on_loopback(extra: &str) -> World {
    pool_in(World::with_postgres_on_loopback(), extra)
}

fn pool_in(world: World, extra: &str) -> World {
    world.service("node_a", extra);
    world.service("node_b", &format!("{extra} trusted=192.0.2.0/24 window=1"));
    let out = world.totpctl(&["init"]);
    assert!(out.status.success(), "{out:?}");
    world
}

/// A pam_worker parked at the code prompt.
struct Parked {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

// The child is handed back in `Parked` and waited for in `race`.
#[allow(clippy::zombie_processes)]
fn park(world: &World, service: &str, user: &str) -> Parked {
    world.add_user(user);
    let mut child = Command::new(common::pam_worker_path())
        .env("LD_PRELOAD", common::NSS_WRAPPER)
        .env("NSS_WRAPPER_PASSWD", world.passwd_file())
        .env("NSS_WRAPPER_GROUP", world.group_file())
        .arg(&world.services)
        .args([service, user, RHOST])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pam_worker");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        let read = out.read_line(&mut line).unwrap_or(0);
        if read > 0 && line.starts_with("PROMPT ") {
            return Parked { child, out };
        }
        if read == 0 || line.starts_with("RESULT") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pam_worker for {user} on {service} ended before the prompt: {line}");
        }
    }
}

/// Parks every (service, user, code), then answers all at once; returns
/// how many got in.
fn race(world: &World, logins: &[(&str, String, String)]) -> usize {
    let mut parked: Vec<(Parked, &String)> = logins
        .iter()
        .map(|(service, user, code)| (park(world, service, user), code))
        .collect();
    for (p, code) in &mut parked {
        let stdin = p.child.stdin.as_mut().expect("stdin");
        let _ = stdin.write_all(format!("{code}\n").as_bytes());
        let _ = stdin.flush();
    }
    parked
        .into_iter()
        .map(|(mut p, _)| {
            let mut result = String::new();
            let mut line = String::new();
            while p.out.read_line(&mut line).unwrap_or(0) > 0 {
                if line.starts_with("RESULT") {
                    result = line.trim().to_string();
                }
                line.clear();
            }
            let _ = p.child.wait();
            result == "RESULT 0"
        })
        .filter(|ok| *ok)
        .count()
}

#[test]
fn a_code_used_on_one_node_is_refused_on_the_other() {
    if !tools() {
        return;
    }
    let world = pool("");
    let key = world.enroll("alice");
    let code = oathtool(&key, None, &[]);
    let first = world.login("node_a", "alice", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    let again = world.login("node_b", "alice", Some(RHOST), &code);
    assert!(!again.success, "{again:?}");
    assert!(again.logged("code already used"), "{again:?}");
    println!("accepted on node A, refused as used on node B");
}

#[test]
fn sixty_four_logins_with_one_code_across_two_nodes_one_gets_in() {
    if !tools() {
        return;
    }
    let world = pool("");
    let mut wins = Vec::new();
    for trial in 0..SAME_CODE_TRIALS {
        let user = format!("racer{trial}");
        let key = world.enroll(&user);
        let code = oathtool(&key, None, &[]);
        let logins: Vec<_> = (0..RACERS)
            .map(|i| {
                (
                    if i % 2 == 0 { "node_a" } else { "node_b" },
                    user.clone(),
                    code.clone(),
                )
            })
            .collect();
        wins.push(race(&world, &logins));
    }
    println!(
        "{RACERS} logins with one code over nodes A and B, {SAME_CODE_TRIALS} trials: successes per trial {wins:?}"
    );
    assert!(wins.iter().all(|w| *w == 1), "{wins:?}");
}

#[test]
fn sixty_four_users_across_two_nodes_all_get_in() {
    if !tools() {
        return;
    }
    let world = pool("");
    let logins: Vec<_> = (0..RACERS)
        .map(|i| {
            let user = format!("user{i}");
            let key = world.enroll(&user);
            (
                if i % 2 == 0 { "node_a" } else { "node_b" },
                user,
                oathtool(&key, None, &[]),
            )
        })
        .collect();
    let wins = race(&world, &logins);
    println!("{RACERS} different users at once over nodes A and B: {wins} of {RACERS} in");
    assert_eq!(wins, RACERS);
}

#[test]
fn wrong_codes_are_counted_across_nodes() {
    if !tools() {
        return;
    }
    let world = pool("backoff_after=3");
    let key = world.enroll("mallory");
    let right = oathtool(&key, None, &[]);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for node in ["node_a", "node_b", "node_a"] {
        let run = world.login(node, "mallory", Some(RHOST), wrong);
        assert!(!run.success && run.logged("wrong code"), "{run:?}");
    }
    // The fourth try, on the other node, is backed off: even the right
    // code is refused (and not burned).
    let run = world.login("node_b", "mallory", Some(RHOST), &right);
    assert!(!run.success, "{run:?}");
    assert!(run.logged("back"), "{run:?}");
    let out = world.totpctl(&["unlock", "mallory"]);
    assert!(out.status.success(), "{out:?}");
    let run = world.login("node_b", "mallory", Some(RHOST), &right);
    assert!(run.success, "{run:?}");
    println!(
        "3 wrong codes alternating A/B: the 4th try (right code, node B) backed off; after unlock, in"
    );
}

/// The guess is reserved before the answer is checked, in a transaction
/// the module makes READ COMMITTED itself: a database whose default is
/// REPEATABLE READ (a DBA's `ALTER DATABASE`) must not let racing answers
/// decide on a snapshot taken before the per-user lock was granted.
#[test]
fn racing_wrong_codes_check_one_guess_past_19_even_under_repeatable_read() {
    if !tools() {
        return;
    }
    let world = pool("user_limit=20 backoff_after=100");
    let (cluster, database) = world.pg.as_ref().expect("a database");
    cluster.psql(
        &database.name,
        &format!(
            "ALTER DATABASE \"{}\" SET default_transaction_isolation = 'repeatable read'",
            database.name
        ),
    );
    let key = world.enroll("rita");
    let right = oathtool(&key, None, &[]);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    let now = common::unix_now();
    cluster.psql(
        &database.name,
        &format!(
            "INSERT INTO failures (\"user\", rhost, count, last) VALUES ('rita', '192.0.2.77', 19, {now});
             INSERT INTO guesses (\"user\", at) SELECT 'rita', {now} FROM generate_series(1, 19)"
        ),
    );
    let logins: Vec<(&str, String, String)> = (0..24)
        .map(|i| {
            (
                if i % 2 == 0 { "node_a" } else { "node_b" },
                "rita".to_string(),
                wrong.to_string(),
            )
        })
        .collect();
    assert_eq!(race(&world, &logins), 0);
    let total = cluster.psql(
        &database.name,
        "SELECT SUM(count) FROM failures WHERE \"user\" = 'rita'",
    );
    assert_eq!(total.trim(), "20", "one guess past 19, not one per racer");
    println!(
        "24 wrong codes at once over A and B, 19 failures before, REPEATABLE READ default: 1 checked"
    );
}

#[test]
fn a_stopped_database_denies_within_the_timeout_and_recovers_without_restarts() {
    if !tools() {
        return;
    }
    let world = pool("db_timeout=2");
    let key = world.enroll("dora");
    let (cluster, _) = world.pg.as_ref().expect("pg");
    cluster.stop_server();
    let started = Instant::now();
    let run = world.login("node_a", "dora", Some(RHOST), &oathtool(&key, None, &[]));
    let took = started.elapsed();
    assert!(!run.success, "{run:?}");
    assert!(
        run.logged("unavailable") && run.logged("onnect"),
        "the log names the cause: {run:?}"
    );
    assert!(took < Duration::from_secs(5), "denied after {took:?}");
    cluster.start_server();
    // A fresh code (the one above was never claimed, but wait for the next
    // step anyway so the test does not depend on timing).
    let run = world.login("node_a", "dora", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(run.success, "{run:?}");
    println!("database stopped: denied in {took:?} with the cause logged; started again: in");
}

#[test]
fn a_wrong_database_password_denies_and_says_so() {
    if !tools() {
        return;
    }
    let world = pool("");
    let key = world.enroll("erin");
    let (_, database) = world.pg.as_ref().expect("pg");
    std::fs::write(&database.password_file, "not-the-password\n").expect("write");
    let run = world.login("node_a", "erin", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(!run.success, "{run:?}");
    assert!(run.logged("password authentication failed"), "{run:?}");
}

#[test]
fn migrate_copies_a_sqlite_store_and_everyone_logs_in() {
    if !tools() {
        return;
    }
    let sqlite = World::new_sqlite();
    let alice = sqlite.enroll("alice");
    let tablet = random_secret();
    let out = sqlite.totpctl(&["enroll", "alice", "--device", "tablet", "--secret", &tablet]);
    assert!(out.status.success(), "{out:?}");
    let out = sqlite.totpctl(&["recovery", "alice", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let codes: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let recovery = codes["recovery_codes"][0]
        .as_str()
        .expect("code")
        .to_string();
    let hotp = random_secret();
    let out = sqlite.totpctl(&["enroll", "hank", "--type", "hotp", "--secret", &hotp]);
    assert!(out.status.success(), "{out:?}");
    let bob = sqlite.enroll("bob");
    // Two automation grants, one revoked: both are copied, as they were.
    let fp = "SHA256:PBZqibLSCLdAS4+MC8G29Jx6IMJfj3+k9ckTzGesU+I";
    for reason in ["kept", "revoked"] {
        let out = sqlite.totpctl(&[
            "allow-automation",
            "bob",
            "--key",
            fp,
            "--from",
            "192.0.2.0/24",
            "--until",
            "30d",
            "--reason",
            reason,
        ]);
        assert!(out.status.success(), "{out:?}");
    }
    let out = sqlite.totpctl(&["automation", "revoke", "2"]);
    assert!(out.status.success(), "{out:?}");

    let world = pool("");
    let (_, database) = world.pg.as_ref().expect("pg");
    // The store options come before the verb.
    let out = Command::new(common::totpctl_path())
        .arg("--db-password-file")
        .arg(&database.password_file)
        .arg("migrate")
        .arg("--from")
        .arg(&sqlite.db)
        .args(["--to", &database.url])
        .output()
        .expect("migrate");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        said.contains("Copied 4 token(s), 10 recovery code(s)"),
        "{said}"
    );
    assert!(said.contains("Copied 2 automation grant(s)"), "{said}");
    let grants = world.totpctl(&["automation", "list", "--all", "--json"]);
    let grants: serde_json::Value = serde_json::from_slice(&grants.stdout).expect("json");
    let grants = grants.as_array().expect("list");
    assert_eq!(grants.len(), 2, "{grants:?}");
    assert_eq!(
        grants
            .iter()
            .map(|g| (g["reason"].as_str(), g["in_force"].as_bool()))
            .collect::<Vec<_>>(),
        vec![(Some("kept"), Some(true)), (Some("revoked"), Some(false))]
    );
    for (node, user, code) in [
        ("node_a", "alice", oathtool(&alice, None, &[])),
        ("node_b", "bob", oathtool(&bob, None, &[])),
        ("node_a", "hank", common::oathtool_hotp(&hotp, 0, false)),
    ] {
        let run = world.login(node, user, Some(RHOST), &code);
        assert!(run.success, "{user}: {run:?}");
    }
    // Each device keeps its own last step: the tablet's code works too.
    let run = world.login(
        "node_b",
        "alice",
        Some(RHOST),
        &oathtool(&tablet, None, &[]),
    );
    assert!(run.success, "tablet: {run:?}");
    let run = world.login("node_b", "alice", Some(RHOST), &recovery);
    assert!(run.success, "recovery code: {run:?}");
    // Migrating again into a store that is no longer empty is refused.
    let again = Command::new(common::totpctl_path())
        .arg("--db-password-file")
        .arg(&database.password_file)
        .arg("migrate")
        .arg("--from")
        .arg(&sqlite.db)
        .args(["--to", &database.url])
        .output()
        .expect("migrate");
    assert!(!again.status.success());
    println!("migrate: {}", said.trim());
}

#[test]
fn a_database_that_never_answers_is_given_up_after_db_timeout() {
    if !tools() {
        return;
    }
    // A listener that accepts connections and never says a word: the TCP
    // connect succeeds, the PostgreSQL start-up never completes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in silent.incoming().take(4) {
            open.push(stream);
        }
        std::thread::sleep(Duration::from_secs(10));
    });
    let world = pool("");
    let key = world.enroll("quinn");
    let (_, database) = world.pg.as_ref().expect("pg");
    world.raw_service(
        "silent",
        &format!(
            "auth required {} db=postgresql://{}@127.0.0.1:{port}/{}?sslmode=disable \
             db_password_file={} db_timeout=2 fail_delay=0\n",
            common::module_path().display(),
            database.name,
            database.name,
            database.password_file.display()
        ),
    );
    let started = Instant::now();
    let run = world.login("silent", "quinn", Some(RHOST), &oathtool(&key, None, &[]));
    let took = started.elapsed();
    assert!(!run.success, "{run:?}");
    assert!(run.logged("unavailable"), "{run:?}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "gave up after {took:?} with db_timeout=2"
    );
    println!("a database that never answers: denied after {took:?} (db_timeout=2)");
    drop(held);
}

#[test]
fn tls_verify_full_checks_the_chain_and_the_host_name() {
    if !tools() || !common::tools_present(&["openssl"]) {
        return;
    }
    let world = pool_on_loopback("");
    let key = world.enroll("tess");
    let (cluster, database) = world.pg.as_ref().expect("pg");
    let (ca, other_ca) = cluster.enable_tls();
    let service = |name: &str, host: &str, ca: &std::path::Path| {
        world.raw_service(
            name,
            &format!(
                "auth required {} db=postgresql://{}@{host}:{}/{}?sslmode=verify-full&sslrootcert={} \
                 db_password_file={} fail_delay=0\n",
                common::module_path().display(),
                database.name,
                cluster.port,
                database.name,
                ca.display(),
                database.password_file.display()
            ),
        );
    };
    service("tls_right", "localhost", &ca);
    service("tls_other_ca", "localhost", &other_ca);
    service("tls_other_name", "127.0.0.1", &ca);

    let run = world.login(
        "tls_other_ca",
        "tess",
        Some(RHOST),
        &oathtool(&key, None, &[]),
    );
    assert!(!run.success && run.logged("unavailable"), "{run:?}");
    assert!(run.logged("certificate"), "names the certificate: {run:?}");
    let run = world.login(
        "tls_other_name",
        "tess",
        Some(RHOST),
        &oathtool(&key, None, &[]),
    );
    assert!(!run.success && run.logged("certificate"), "{run:?}");
    let run = world.login("tls_right", "tess", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(run.success, "{run:?}");
    let log = cluster.server_log();
    let tls_line = log
        .lines()
        .rfind(|l| l.contains("connection authorized") && l.contains(&database.name))
        .unwrap_or_default()
        .to_string();
    assert!(
        tls_line.contains("SSL enabled"),
        "server saw no TLS: {tls_line}"
    );
    println!(
        "verify-full: other CA refused, other host name refused, right CA and name in; server: {tls_line}"
    );
}

/// The store reached through PgBouncer (`Cluster::pgbouncer`): transaction
/// pooling hands each transaction, and each statement outside one, to any
/// server connection, so a client "must not use any session-based
/// features" (pgbouncer(5)). The driver kept named prepared statements per
/// connection before issue 18; it now sends every statement unnamed, and
/// its locks are transaction-scoped advisory locks.
#[test]
fn through_pgbouncer_in_transaction_mode_claims_stay_exactly_once() {
    if !tools() || !common::tools_present(&["openssl", "pgbouncer"]) {
        return;
    }
    let world = pool_on_loopback("");
    let (cluster, database) = world.pg.as_ref().expect("pg");
    let (ca, _) = cluster.enable_tls();
    let pooler = cluster.pgbouncer(database, &ca);
    for node in ["pooled_a", "pooled_b"] {
        world.raw_service(
            node,
            &format!(
                "auth required {} db={} fail_delay=0 db_timeout=20\n",
                common::module_path().display(),
                pooler.url
            ),
        );
    }
    let connections_before = cluster
        .server_log()
        .matches("connection authorized")
        .count();

    let key = world.enroll("polly");
    let code = oathtool(&key, None, &[]);
    let first = world.login("pooled_a", "polly", Some(RHOST), &code);
    assert!(first.success, "{first:?}\npgbouncer: {}", pooler.log());
    let again = world.login("pooled_b", "polly", Some(RHOST), &code);
    assert!(
        !again.success && again.logged("code already used"),
        "{again:?}"
    );
    let wrong = world.login("pooled_b", "polly", Some(RHOST), "000000");
    assert!(!wrong.success, "{wrong:?}");
    let counted = cluster.psql(
        &database.name,
        "SELECT count FROM failures WHERE \"user\" = 'polly'",
    );
    assert_eq!(counted, "1", "the wrong code is counted through the pooler");

    let mut wins = Vec::new();
    for trial in 0..3 {
        let user = format!("pooledracer{trial}");
        let key = world.enroll(&user);
        let code = oathtool(&key, None, &[]);
        let logins: Vec<_> = (0..RACERS)
            .map(|i| {
                (
                    if i % 2 == 0 { "pooled_a" } else { "pooled_b" },
                    user.clone(),
                    code.clone(),
                )
            })
            .collect();
        wins.push(race(&world, &logins));
    }
    assert!(
        wins.iter().all(|w| *w == 1),
        "{wins:?}\npgbouncer: {}",
        pooler.log()
    );
    let logins: Vec<_> = (0..RACERS)
        .map(|i| {
            let user = format!("pooleduser{i}");
            let code = oathtool(&world.enroll(&user), None, &[]);
            (if i % 2 == 0 { "pooled_a" } else { "pooled_b" }, user, code)
        })
        .collect();
    let all_in = race(&world, &logins);
    assert_eq!(all_in, RACERS, "pgbouncer: {}", pooler.log());
    let log = cluster.server_log();
    let server_connections = log.matches("connection authorized").count() - connections_before;
    // totpctl connects directly (one per enroll); the logins share the
    // pooler's few server connections (default_pool_size 16).
    let logins_made = 3 + 3 * RACERS + RACERS;
    assert!(
        server_connections < logins_made / 2,
        "{server_connections} server connections for {logins_made} logins"
    );
    println!(
        "through PgBouncer (transaction pooling): one code {wins:?} winners per {RACERS}, {all_in}/{RACERS} users in, {server_connections} server connections for {logins_made} logins (the enrolls' totpctl runs included)"
    );
}

/// base64 (standard alphabet, padded) of `bytes`, to look for it in dumps.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn raw_key(base32_key: &str) -> Vec<u8> {
    base32::decode(base32::Alphabet::Rfc4648 { padding: false }, base32_key).expect("base32")
}

#[test]
fn sealed_keys_are_in_no_dump_and_do_not_open_in_another_row() {
    if !tools() {
        return;
    }
    let keys = common::private_tempdir();
    let key_file = keys.path().join("pam_totp.key");
    let other_key = keys.path().join("other.key");
    let world = pool("");
    let (cluster, database) = world.pg.as_ref().expect("pg");
    // Carol is enrolled before there is any key: stored plain.
    let carol = world.enroll("carol");
    for file in [&key_file, &other_key] {
        common::keygen(file);
    }
    let sealed = |args: &[&str]| {
        let mut all = vec!["--key-file", key_file.to_str().expect("path")];
        all.extend_from_slice(args);
        world.totpctl(&all)
    };
    let out = sealed(&["rekey", "--new-key", key_file.to_str().expect("path")]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Sealed 1 token key(s)"));
    let alice = random_secret();
    let bob = random_secret();
    for (user, key) in [("alice", &alice), ("bob", &bob)] {
        let out = sealed(&["enroll", user, "--secret", key]);
        assert!(out.status.success(), "{out:?}");
    }
    let key_arg = format!("key_file={}", key_file.display());
    world.service("sealed", &key_arg);
    world.service(
        "no_key",
        &format!("key_file={}", keys.path().join("absent.key").display()),
    );
    world.service("other_key", &format!("key_file={}", other_key.display()));

    for (user, key) in [("alice", &alice), ("carol", &carol)] {
        let run = world.login("sealed", user, Some(RHOST), &oathtool(key, None, &[]));
        assert!(run.success, "{user}: {run:?}");
    }

    // No key, in any encoding, anywhere in a dump of the database.
    let dump = String::from_utf8_lossy(&cluster.dump(&database.name)).into_owned();
    for (user, key) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        let raw = raw_key(key);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        for form in [key.clone(), key.to_lowercase(), hex, base64(&raw)] {
            assert!(
                !dump.contains(&form),
                "{user}'s key is in the dump as {form}"
            );
        }
        assert!(
            !dump
                .as_bytes()
                .windows(raw.len())
                .any(|w| w == raw.as_slice()),
            "{user}'s raw key is in the dump"
        );
    }

    // A sealed key moved into bob's row does not open there.
    cluster.psql(
        &database.name,
        r#"UPDATE tokens SET secret = (SELECT secret FROM tokens WHERE "user" = 'alice') WHERE "user" = 'bob'"#,
    );
    let run = world.login("sealed", "bob", Some(RHOST), &oathtool(&alice, None, &[]));
    assert!(!run.success && run.logged("does not open"), "{run:?}");
    // A missing or wrong key: denied, and the log says which.
    let run = world.login("no_key", "alice", Some(RHOST), &oathtool(&alice, None, &[]));
    assert!(!run.success && run.logged("absent.key"), "{run:?}");
    let run = world.login(
        "other_key",
        "alice",
        Some(RHOST),
        &oathtool(&alice, None, &[]),
    );
    assert!(!run.success && run.logged("does not open"), "{run:?}");
    // A plain key written into a sealed store by hand is refused.
    cluster.psql(
        &database.name,
        &format!(
            r#"UPDATE tokens SET secret = '\x{}' WHERE "user" = 'carol'"#,
            raw_key(&carol)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
    );
    let run = world.login("sealed", "carol", Some(RHOST), &oathtool(&carol, None, &[]));
    assert!(!run.success && run.logged("not sealed"), "{run:?}");
    println!(
        "sealed: dump holds no key in 5 encodings; a row moved to bob, a missing key, another key, a plain row: all refused and named"
    );
}

#[test]
fn a_database_schema_newer_than_the_module_is_refused() {
    if !tools() {
        return;
    }
    let world = pool("");
    let key = world.enroll("nina");
    let (cluster, database) = world.pg.as_ref().expect("pg");
    cluster.psql(
        &database.name,
        "UPDATE pam_totp_meta SET value = 99 WHERE key = 'schema_version'",
    );
    let run = world.login("node_a", "nina", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(!run.success, "{run:?}");
    assert!(run.logged("schema version 99 is newer"), "{run:?}");
    let out = world.totpctl(&["init"]);
    assert!(!out.status.success(), "init must not downgrade: {out:?}");
}

/// Databases made before both backends shared one version sequence
/// recorded 1 to 4 for what is now 3 to 6. One at the old 4 (the tables of
/// the new 6) and one at the old 2 (no staged grants, no guesses table: the
/// new 4) are read in the new numbering, refused until `totpctl init`
/// brings them to the current version, and keep their tokens and used
/// steps through it.
#[test]
fn databases_numbered_before_the_shared_sequence_are_read_and_migrated() {
    if !tools() {
        return;
    }
    let current = pam_totp::store::SCHEMA_VERSION.to_string();
    let world = pool("");
    let key = world.enroll("olga");
    let (cluster, database) = world.pg.as_ref().expect("pg");
    let version = || {
        cluster
            .psql(
                &database.name,
                "SELECT value FROM pam_totp_meta WHERE key = 'schema_version'",
            )
            .trim()
            .to_string()
    };
    assert_eq!(version(), current);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let run = world.login(
        "node_a",
        "olga",
        Some(RHOST),
        &oathtool(&key, Some(now), &[]),
    );
    assert!(run.success, "{run:?}");
    // Back to the tables of the new 4 (without those of 5 to 10), recorded
    // as the old 2.
    cluster.psql(
        &database.name,
        "DROP TABLE staged; DROP TABLE guesses; DROP TABLE key_grace; DROP TABLE automation; \
         DROP TABLE retired_keys; DROP FUNCTION pam_totp_retire_key() CASCADE; \
         ALTER TABLE tokens DROP COLUMN disabled, DROP COLUMN expires, DROP COLUMN replaces; \
         UPDATE pam_totp_meta SET value = 2 WHERE key = 'schema_version'",
    );
    let next = oathtool(&key, Some(now + 30), &[]);
    let run = world.login("node_a", "olga", Some(RHOST), &next);
    assert!(!run.success, "{run:?}");
    assert!(
        run.logged("schema version 4; run `totpctl init` to migrate"),
        "{run:?}"
    );
    let out = world.totpctl(&["init"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(version(), current);
    let run = world.login("node_b", "olga", Some(RHOST), &next);
    assert!(run.success, "after init: {run:?}");
    let run = world.login("node_a", "olga", Some(RHOST), &next);
    assert!(
        !run.success,
        "the used step survived the migration: {run:?}"
    );
    // The old 4 is the new 6: older than this build, so init is asked.
    cluster.psql(
        &database.name,
        "UPDATE pam_totp_meta SET value = 4 WHERE key = 'schema_version'",
    );
    let run = world.login(
        "node_a",
        "olga",
        Some(RHOST),
        &oathtool(&key, Some(now + 60), &[]),
    );
    assert!(run.logged("schema version 6;"), "{run:?}");
}

/// A pool's rolling upgrade: a node with this build's module logs users
/// in on a database one schema behind (`store::LOGIN_OLDEST_SCHEMA`: 10
/// added only what logins never touch), so the nodes can take the new
/// module one by one before `totpctl init`; totpctl itself wants the
/// migration first; one schema older than that is refused at login with
/// the way out.
#[test]
fn a_database_one_schema_behind_logs_users_in_until_it_is_migrated() {
    if !tools() {
        return;
    }
    let world = pool("");
    let key = world.enroll("uma");
    let (cluster, database) = world.pg.as_ref().expect("pg");
    let now = common::unix_now();
    let version = |v: i64| {
        cluster.psql(
            &database.name,
            &format!("UPDATE pam_totp_meta SET value = {v} WHERE key = 'schema_version'"),
        );
    };
    // Back to schema 9.
    cluster.psql(
        &database.name,
        "DROP TABLE retired_keys; DROP FUNCTION pam_totp_retire_key() CASCADE",
    );
    version(pam_totp::store::LOGIN_OLDEST_SCHEMA);
    let run = world.login(
        "node_a",
        "uma",
        Some(RHOST),
        &oathtool(&key, Some(now), &[]),
    );
    assert!(run.success, "a login one schema behind: {run:?}");
    let run = world.login(
        "node_b",
        "uma",
        Some(RHOST),
        &oathtool(&key, Some(now), &[]),
    );
    assert!(
        !run.success,
        "a code worked twice one schema behind: {run:?}"
    );
    let out = world.totpctl(&["list"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("totpctl init"),
        "{out:?}"
    );
    let out = world.totpctl(&["init"]);
    assert!(out.status.success(), "{out:?}");
    let next = oathtool(&key, Some(now + 30), &[]);
    let run = world.login("node_b", "uma", Some(RHOST), &next);
    assert!(run.success, "after init: {run:?}");
    // Older than the login path knows: refused, saying what to run.
    version(pam_totp::store::LOGIN_OLDEST_SCHEMA - 1);
    let run = world.login(
        "node_a",
        "uma",
        Some(RHOST),
        &oathtool(&key, Some(now + 60), &[]),
    );
    assert!(!run.success, "{run:?}");
    assert!(run.logged("run `totpctl init` to migrate"), "{run:?}");
}

/// `grace_key=` on a pool: the key grace a login earned on node A (its own
/// PAM service directory, service `sshd`, as sshd names it) lets the same
/// key in without a code on node B; another key is asked there.
#[test]
fn a_key_grace_holds_on_every_node_of_the_pool() {
    if !tools() {
        return;
    }
    let world = pool("");
    let key = world.enroll("kira");
    world.service_with_account("sshd", "grace_key=1h");
    let stack = std::fs::read_to_string(world.services.join("sshd")).expect("stack");
    let nodes: Vec<std::path::PathBuf> = ["a", "b"]
        .iter()
        .map(|n| {
            let dir = world.dir.path().join(format!("node-{n}"));
            std::fs::create_dir_all(&dir).expect("node dir");
            std::fs::write(dir.join("sshd"), &stack).expect("stack");
            dir
        })
        .collect();
    let line = |blob: &str| format!("SSH_AUTH_INFO_0=publickey ssh-ed25519 {blob}\n");
    let key_a = "AAAAC3NzaC1lZDI1NTE5AAAAIPWhMX3GrSZWFUTEvx5GuAhSZm+XOT6mzOYJAiiQgU9l";
    // Another ed25519 key (ssh-keygen).
    let key_b = "AAAAC3NzaC1lZDI1NTE5AAAAIMJ+hWixplMFOwfwBHsJsP37LpFiOa+zZuAJ4g/M7ewB";
    let worker = |node: &std::path::Path, blob: &str, answer: &str| {
        let mut child = Command::new(common::pam_worker_path())
            .env("LD_PRELOAD", common::NSS_WRAPPER)
            .env("NSS_WRAPPER_PASSWD", world.passwd_file())
            .env("NSS_WRAPPER_GROUP", world.group_file())
            .env("PAM_WORKER_PUTENV", line(blob))
            .env("PAM_WORKER_THEN", "account,setcred")
            .arg(node)
            .args(["sshd", "kira", RHOST])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("pam_worker");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "{answer}");
        }
        let out = child.wait_with_output().expect("pam_worker");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = worker(&nodes[0], key_a, &oathtool(&key, None, &[]));
    assert!(first.contains("RESULT 0"), "node A, key A + code: {first}");
    let other = worker(&nodes[1], key_a, "");
    assert!(
        other.contains("RESULT 0") && !other.contains("PROMPT"),
        "node B, key A: {other}"
    );
    let asked = worker(&nodes[1], key_b, "000000");
    assert!(
        asked.contains("PROMPT") && !asked.contains("RESULT 0"),
        "node B, key B: {asked}"
    );
    println!(
        "grace_key on a pool: key A + code on node A; key A on node B without a code; key B asked"
    );
}

/// A site's tuning that loses commits in a crash: asynchronous commits for
/// the store's role, and a WAL writer that flushes every 10 s.
fn commit_asynchronously(
    cluster: &common::postgres::Cluster,
    database: &common::postgres::Database,
) {
    cluster.psql(
        "postgres",
        &format!("ALTER ROLE {} SET synchronous_commit = off", database.name),
    );
    cluster.psql("postgres", "ALTER SYSTEM SET wal_writer_delay = '10s'");
    cluster.psql("postgres", "SELECT pg_reload_conf()");
}

/// Promise 12/15 on PostgreSQL: an HOTP counter (and a recovery code) is
/// "on disk on return" (`LoginStore::settle_guess`, `burn_recovery`). The
/// module relies on the server's default `synchronous_commit = on` and does
/// not set it for its own session (it does set the isolation level and the
/// timeouts), so a database or role configured `synchronous_commit = off`
/// (a common tuning) acknowledges the claim before its WAL is flushed: a
/// database crash right after the login forgets it, and the same HOTP code
/// logs in again (found by an attack).
#[test]
fn an_hotp_claim_survives_a_database_crash_whatever_the_role_defaults_to() {
    if !tools() {
        return;
    }
    let world = pool("fail_delay=0");
    let (cluster, database) = world.pg.as_ref().expect("pg");
    commit_asynchronously(cluster, database);
    let key = random_secret();
    let out = world.totpctl(&["enroll", "hedwig", "--type", "hotp", "--secret", &key]);
    assert!(out.status.success(), "{out:?}");
    // Let the enrollment reach the disk (a checkpoint flushes the WAL).
    cluster.psql("postgres", "CHECKPOINT");
    let code = common::oathtool_hotp(&key, 0, false);
    let first = world.login("node_a", "hedwig", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    cluster.crash_server();
    cluster.start_server();
    let replay = world.login("node_b", "hedwig", Some(RHOST), &code);
    assert!(
        !replay.success,
        "HOTP counter 0's code logged in again after a database crash: {replay:?}"
    );
    // The durable settlement is one transaction: no BEGIN inside it and no
    // COMMIT after it (the server warns about both).
    common::assert_no_stray_transaction_warnings(&cluster.server_log());
}

/// Every administrator's change of one user's devices (`totpctl reset`,
/// `disable`, `delete`) takes the user's enrollment lock, the one a
/// user's own `totp add-device` / `replace` holds while it checks that the
/// devices are still those it read and writes: under READ COMMITTED a
/// reset committed between that check and that commit would otherwise
/// leave the thief's new device beside the reset. Shown by holding the
/// lock from another session: each change finishes only after the holder
/// has committed its mark and let go.
#[test]
fn administrators_changes_of_a_user_wait_for_that_users_enrollment_lock() {
    if !tools() {
        return;
    }
    let world = pool("");
    world.enroll("rosa");
    let (cluster, database) = world.pg.as_ref().expect("pg");
    cluster.psql(&database.name, "CREATE TABLE test_marks (n BIGINT)");
    let key = random_secret();
    let verbs: [&[&str]; 3] = [
        &["reset", "rosa", "--now", "--secret", &key],
        &["disable", "rosa"],
        &["delete", "rosa"],
    ];
    for (n, args) in verbs.iter().enumerate() {
        let hold = format!(
            "SELECT pg_advisory_lock(hashtextextended('rosa', 0)); \
             SELECT pg_sleep(2); INSERT INTO test_marks VALUES ({n})"
        );
        std::thread::scope(|scope| {
            let holder = scope.spawn(|| cluster.psql(&database.name, &hold));
            // The holder has the lock before the change starts.
            let held = (0..250).any(|_| {
                let granted = cluster.psql(
                    &database.name,
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
                );
                granted != "0" || {
                    std::thread::sleep(Duration::from_millis(20));
                    false
                }
            });
            assert!(held, "the holder never got the lock");
            let out = world.totpctl(args);
            assert!(out.status.success(), "{args:?}: {out:?}");
            let marks = cluster.psql(
                &database.name,
                &format!("SELECT count(*) FROM test_marks WHERE n = {n}"),
            );
            assert_eq!(
                marks, "1",
                "totpctl {args:?} finished while the user's enrollment lock was held"
            );
            holder.join().expect("holder");
        });
    }
}

/// An active TOTP device with `common::KEY` for the store-level tests below.
fn active_totp(user: &str, device: &str) -> pam_totp::store::Enrollment {
    pam_totp::store::Enrollment {
        token: pam_totp::store::Token {
            id: 0,
            user: user.to_string(),
            device: device.to_string(),
            kind: pam_totp::store::Kind::Totp,
            secret: pam_totp::secret::Secret::from_base32(common::KEY).expect("key"),
            params: pam_totp::otp::Params::default(),
            created: 1_700_000_000,
            confirmed: Some(1_700_000_000),
            last_step: None,
            life: Default::default(),
            stored_key: Default::default(),
        },
        recovery: None,
    }
}

/// Attack on the pipelined store through PgBouncer (transaction pooling):
/// a login store's first statement goes out together with the schema
/// check, two statements each ending in its own Sync, sent before either
/// answer; outside a transaction PgBouncer may hand the server connection
/// back to the pool at the first ReadyForQuery, while the second
/// statement's answer is still to come on it (another client then reads
/// it, or nobody does). Many logins at once, more than the pool's server
/// connections, each reading its own user's tokens and counting a wrong
/// guess: every answer must be the asking login's own (never another
/// user's tokens), every call must end (no login hangs), and every guess
/// must be counted once.
#[test]
fn through_pgbouncer_pipelined_statements_never_cross_logins() {
    use pam_totp::store::{Answer, EnrollMode, LoginStore, PgStore, Settled, Store};
    if !postgres_present() || !common::tools_present(&["openssl", "pgbouncer"]) {
        return;
    }
    const LOGINS: usize = 24;
    const ROUNDS: usize = 40;
    let cluster = common::postgres::Cluster::start_on_loopback();
    let database = cluster.database();
    let admin = common::open_pg(
        &database.url,
        Some(&database.password_file),
        PgStore::create,
        Duration::from_secs(10),
    )
    .expect("create");
    for i in 0..LOGINS {
        admin
            .enroll(
                &[active_totp(&format!("u{i}"), &format!("dev-of-u{i}"))],
                EnrollMode::Add,
            )
            .expect("enroll");
    }
    drop(admin);
    let (ca, _) = cluster.enable_tls();
    let pooler = cluster.pgbouncer(&database, &ca);
    let limits = pam_totp::ratelimit::Limits {
        backoff_after: 1_000_000,
        backoff_max: 1,
        user_limit: 1_000_000,
    };
    let (done, results) = std::sync::mpsc::channel();
    let start = std::sync::Arc::new(std::sync::Barrier::new(LOGINS));
    for i in 0..LOGINS {
        let url = pooler.url.clone();
        let done = done.clone();
        let start = start.clone();
        std::thread::spawn(move || {
            let user = format!("u{i}");
            let mut failures = Vec::new();
            start.wait();
            for round in 0..ROUNDS {
                let store = match common::open_pg(
                    &url,
                    None,
                    PgStore::open_for_login,
                    Duration::from_secs(10),
                ) {
                    Ok(store) => store,
                    Err(e) => {
                        failures.push(format!("{user} round {round}: open: {e}"));
                        continue;
                    }
                };
                match store.tokens(&user) {
                    Ok(tokens) => {
                        let owners: Vec<_> = tokens.iter().map(|t| t.user.clone()).collect();
                        if owners != vec![user.clone()] {
                            failures.push(format!(
                                "{user} round {round}: read the tokens of {owners:?}"
                            ));
                        }
                    }
                    Err(e) => failures.push(format!("{user} round {round}: tokens: {e}")),
                }
                match store.settle_guess(
                    &user,
                    &format!("r{round}"),
                    1_700_000_000,
                    &limits,
                    Answer::Wrong,
                ) {
                    Ok(Settled::Counted(_)) => {}
                    other => failures.push(format!("{user} round {round}: settle: {other:?}")),
                }
            }
            let _ = done.send((user, failures));
        });
    }
    drop(done);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut all = Vec::new();
    for _ in 0..LOGINS {
        let left = deadline.saturating_duration_since(Instant::now());
        match results.recv_timeout(left) {
            Ok((_, failures)) => all.extend(failures),
            Err(_) => panic!(
                "logins through PgBouncer hung (no answer within 300 s); so far: {all:?}\npooler log:\n{}",
                pooler.log()
            ),
        }
    }
    assert!(
        all.is_empty(),
        "{} failures, first: {:?}\npooler log tail:\n{}",
        all.len(),
        &all[..all.len().min(10)],
        pooler
            .log()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let counted = cluster.psql(&database.name, "SELECT count(*) FROM guesses");
    assert_eq!(counted, (LOGINS * ROUNDS).to_string(), "guesses counted");
}

/// Attack on the pipelined settlement through PgBouncer: many login
/// stores (open_for_login, each its own client connection to the pooler,
/// more than the pool's server connections) settle the same right step of
/// one user at once, in several trials: exactly one claims it per trial,
/// every other is told the step was used, and the user's guesses are
/// given back (none stays counted), whatever server connection each
/// pipelined statement lands on.
#[test]
fn through_pgbouncer_racing_pipelined_settlements_claim_once() {
    use pam_totp::store::{Answer, Claim, EnrollMode, LoginStore, PgStore, Settled, Store};
    if !postgres_present() || !common::tools_present(&["openssl", "pgbouncer"]) {
        return;
    }
    const RACERS_HERE: usize = 24;
    const TRIALS: u64 = 8;
    let cluster = common::postgres::Cluster::start_on_loopback();
    let database = cluster.database();
    let open = |url: &str, password: Option<&std::path::Path>, create: bool| {
        let open = if create {
            PgStore::create
        } else {
            PgStore::open_for_login
        };
        common::open_pg(url, password, open, Duration::from_secs(10))
    };
    let admin = open(&database.url, Some(&database.password_file), true).expect("create");
    admin
        .enroll(&[active_totp("rae", "phone")], EnrollMode::Add)
        .expect("enroll");
    let (ca, _) = cluster.enable_tls();
    let pooler = cluster.pgbouncer(&database, &ca);
    let limits = pam_totp::ratelimit::Limits {
        backoff_after: 1_000_000,
        backoff_max: 1,
        user_limit: 1_000_000,
    };
    for trial in 0..TRIALS {
        let step = 1_000 + trial;
        let start = std::sync::Arc::new(std::sync::Barrier::new(RACERS_HERE));
        let racers: Vec<_> = (0..RACERS_HERE)
            .map(|i| {
                let url = pooler.url.clone();
                let start = start.clone();
                std::thread::spawn(move || {
                    let store = open(&url, None, false).map_err(|e| e.to_string())?;
                    let tokens = store.tokens("rae").map_err(|e| e.to_string())?;
                    let token = tokens.into_iter().next().ok_or("no token")?;
                    start.wait();
                    store
                        .settle_guess(
                            "rae",
                            &format!("r{i}"),
                            1_700_000_000,
                            &limits,
                            Answer::Right {
                                token: &token,
                                step,
                            },
                        )
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        let results: Vec<Result<Settled, String>> = racers
            .into_iter()
            .map(|r| r.join().expect("racer panicked"))
            .collect();
        let claimed = results
            .iter()
            .filter(|r| matches!(r, Ok(Settled::GivenBack(Some(Claim::Claimed)))))
            .count();
        let used = results
            .iter()
            .filter(|r| matches!(r, Ok(Settled::GivenBack(Some(Claim::AlreadyUsed)))))
            .count();
        assert_eq!(claimed, 1, "trial {trial}: {results:?}");
        assert_eq!(used, RACERS_HERE - 1, "trial {trial}: {results:?}");
    }
    assert_eq!(
        cluster.psql(&database.name, "SELECT count(*) FROM guesses"),
        "0",
        "every right guess given back"
    );
}

/// A recovery code's burn is one statement outside a transaction (the
/// slow path for answers that may be recovery codes), and so is an HOTP
/// claim there. Through a pooler, which drops the connection's start-up
/// options (`-c synchronous_commit=on`), such a statement would commit with
/// the role's default: with `off`, a used recovery code was lost in a
/// database crash and logged in again. `durably` gives it a transaction
/// whose `BEGIN` sets `synchronous_commit = on` (found by the attack on the
/// pipelined store, named there as untested).
#[test]
fn through_pgbouncer_a_used_recovery_code_survives_a_database_crash_whatever_the_role_defaults_to()
{
    if !tools() || !common::tools_present(&["openssl", "pgbouncer"]) {
        return;
    }
    let world = pool_on_loopback("fail_delay=0");
    let (cluster, database) = world.pg.as_ref().expect("pg");
    commit_asynchronously(cluster, database);
    let (ca, _) = cluster.enable_tls();
    let pooler = cluster.pgbouncer(database, &ca);
    world.raw_service(
        "pooled",
        &format!(
            "auth required {} db={} fail_delay=0 db_timeout=20\n",
            common::module_path().display(),
            pooler.url
        ),
    );
    world.enroll("rhea");
    let out = world.totpctl(&["recovery", "rhea", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let codes: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let recovery = codes["recovery_codes"][0]
        .as_str()
        .expect("code")
        .to_string();
    // Let the codes reach the disk (a checkpoint flushes the WAL).
    cluster.psql("postgres", "CHECKPOINT");
    let first = world.login("pooled", "rhea", Some(RHOST), &recovery);
    assert!(first.success, "{first:?}\npgbouncer: {}", pooler.log());
    cluster.crash_server();
    cluster.start_server();
    let replay = world.login("pooled", "rhea", Some(RHOST), &recovery);
    assert!(
        !replay.success,
        "a used recovery code logged in again after a database crash: {replay:?}"
    );
}
