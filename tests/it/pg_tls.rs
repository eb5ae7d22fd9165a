//! `sslmode=verify-full` is enforced by the client library itself, against
//! fake database servers on loopback (no PostgreSQL needed): each binds
//! 127.0.0.1:0 and keeps the listener, so the test owns its port, and
//! records every byte a client sends.
//!
//! - a server that answers the SSLRequest with 'N' (TLS declined, as the
//!   relay of the reported attack did): a real login through libpam
//!   (pamtester + pam_wrapper), `totpctl --db URL list` and `totpctl
//!   migrate --to URL` all fail with one named line, and the server
//!   received the SSLRequest and not one byte more: no StartupMessage, no
//!   password (the fake asks for the password in clear if it ever sees a
//!   StartupMessage, as the attacker's relay did);
//! - a server that answers 'S' and then sends garbage, or closes: denied,
//!   named, and no StartupMessage or password in what it received.
//!
//! The CA file is a fixture (tests/fixtures/fake-server-ca.pem, its key
//! discarded): no handshake here gets as far as checking a certificate.

use crate::common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{RHOST, World, pam_tools_present, run_totpctl};

/// The 8-byte SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// Protocol 3.0, bytes 4..8 of every StartupMessage.
const PROTOCOL_3: [u8; 4] = [0, 3, 0, 0];
/// AuthenticationCleartextPassword: what a relay sends to get the password.
const ASK_CLEARTEXT_PASSWORD: [u8; 9] = [b'R', 0, 0, 0, 8, 0, 0, 0, 3];
/// The role in the URLs: it would be in a StartupMessage.
const DB_USER: &str = "totp_fake_role";

#[derive(Clone, Copy, Debug)]
enum Answer {
    /// 'N': "no TLS here".
    DeclineTls,
    /// 'S', then bytes that are no TLS record.
    AcceptThenGarbage,
    /// 'S', then the connection closes.
    AcceptThenClose,
}

/// What one client connection sent.
#[derive(Debug)]
struct Seen {
    /// The first 8 bytes (fewer if the client stopped sooner).
    first: Vec<u8>,
    /// Everything after them.
    after: Vec<u8>,
}

struct FakeServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeServer {
    fn start(answer: Answer) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        // The listener lives in this thread until the test process ends.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let record = Arc::clone(&record);
                std::thread::spawn(move || {
                    let seen = serve(stream, answer);
                    record.lock().expect("lock").push(seen);
                });
            }
        });
        FakeServer { port, seen }
    }

    /// Waits until `count` connections have ended (or 15 s) and returns
    /// what they sent.
    fn connections(&self, count: usize) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            {
                let seen = self.seen.lock().expect("lock");
                if seen.len() >= count || Instant::now() > deadline {
                    return seen
                        .iter()
                        .map(|s| Seen {
                            first: s.first.clone(),
                            after: s.after.clone(),
                        })
                        .collect();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Reads until EOF, an error, or 2 s of silence.
fn read_some(stream: &mut TcpStream, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    match stream.read(&mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            into.extend_from_slice(&buf[..n]);
            true
        }
    }
}

fn serve(mut stream: TcpStream, answer: Answer) -> Seen {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut first = Vec::new();
    while first.len() < 8 {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(1) => first.push(byte[0]),
            _ => break,
        }
    }
    let mut after = Vec::new();
    if first != SSL_REQUEST {
        // Not an SSLRequest: whatever it is, record the rest.
        while read_some(&mut stream, &mut after) {}
        return Seen { first, after };
    }
    match answer {
        Answer::DeclineTls => {
            let _ = stream.write_all(b"N");
            let mut asked = false;
            while read_some(&mut stream, &mut after) {
                // A client that goes on in plain text: ask for the
                // password in clear, as the relay in the attack did.
                if !asked && after.len() >= 8 && after[4..8] == PROTOCOL_3 {
                    let _ = stream.write_all(&ASK_CLEARTEXT_PASSWORD);
                    asked = true;
                }
            }
        }
        Answer::AcceptThenGarbage => {
            let _ = stream.write_all(b"S");
            let _ = stream.write_all(b"HTTP/1.1 400 this is no TLS server hello\r\n\r\n");
            let _ = stream.shutdown(Shutdown::Write);
            while read_some(&mut stream, &mut after) {}
        }
        Answer::AcceptThenClose => {
            let _ = stream.write_all(b"S");
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
    Seen { first, after }
}

/// Root's files for the module: the CA (0644) and the password (0600).
struct Secrets {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    password_file: PathBuf,
    password: String,
}

fn secrets() -> Secrets {
    let dir = common::dirs::private_tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let ca = dir.path().join("ca.pem");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/fake-server-ca.pem"
        ),
        &ca,
    )
    .expect("copy CA");
    std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("random");
    let password = format!(
        "never-in-clear-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let password_file = dir.path().join("db.pw");
    std::fs::write(&password_file, format!("{password}\n")).expect("pw");
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod");
    Secrets {
        _dir: dir,
        ca,
        password_file,
        password,
    }
}

fn verify_full_url(port: u16, secrets: &Secrets) -> String {
    format!(
        "postgresql://{DB_USER}@127.0.0.1:{port}/totp?sslmode=verify-full&sslrootcert={}",
        secrets.ca.display()
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// No StartupMessage and no password in anything the server received.
fn assert_nothing_in_clear(connections: &[Seen], secrets: &Secrets, plain_after: bool) {
    for seen in connections {
        assert_eq!(
            seen.first, SSL_REQUEST,
            "the client must open with the SSLRequest: {seen:?}"
        );
        let all: Vec<u8> = seen.first.iter().chain(&seen.after).copied().collect();
        assert!(
            !contains(&all, secrets.password.as_bytes()),
            "the password reached the fake server: {seen:?}"
        );
        assert!(
            !contains(&all, format!("user\0{DB_USER}\0").as_bytes()),
            "a StartupMessage reached the fake server: {seen:?}"
        );
        if plain_after {
            // After an 'N' nothing at all may follow the SSLRequest.
            assert!(
                seen.after.is_empty(),
                "{} byte(s) sent after the server declined TLS: {:?}",
                seen.after.len(),
                seen.after
            );
        } else {
            assert!(
                !(seen.after.len() >= 8 && seen.after[4..8] == PROTOCOL_3),
                "a StartupMessage reached the fake server: {seen:?}"
            );
        }
    }
}

fn named(text: &str) -> bool {
    text.contains("TLS refused (sslmode=verify-full")
}

#[test]
fn verify_full_sends_nothing_in_clear_to_a_server_that_declines_tls() {
    if !pam_tools_present() {
        return;
    }
    let fake = FakeServer::start(Answer::DeclineTls);
    let secrets = secrets();
    let url = verify_full_url(fake.port, &secrets);
    let world = World::new_sqlite();
    world.service_exact(
        "fake_db",
        &format!(
            "db={url} db_password_file={} db_timeout=5 fail_delay=0",
            secrets.password_file.display()
        ),
    );
    let run = world.login("fake_db", "alice", Some(RHOST), "123456");
    assert!(!run.success, "{run:?}");
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("SYSLOG(") && named(l) && l.contains("does not support TLS")),
        "one named line: {run:?}"
    );
    assert!(!run.stderr.contains(&secrets.password), "{run:?}");
    if let Some(line) = run.stderr.lines().find(|l| named(l)) {
        println!("log: {line}");
    }

    let pw = secrets.password_file.to_str().expect("path");
    let list = run_totpctl(["--db", &url, "--db-password-file", pw, "list"]);
    let list_err = String::from_utf8_lossy(&list.stderr);
    assert!(!list.status.success(), "{list:?}");
    assert!(named(&list_err), "totpctl list: {list_err}");
    println!("totpctl list: {}", list_err.trim());

    // migrate: a SQLite store with one user, into the fake "database".
    let source = World::new_sqlite();
    source.enroll("alice");
    let migrate = run_totpctl([
        "--db-password-file",
        pw,
        "migrate",
        "--from",
        source.db.to_str().expect("path"),
        "--to",
        &url,
    ]);
    let migrate_err = String::from_utf8_lossy(&migrate.stderr);
    assert!(!migrate.status.success(), "{migrate:?}");
    assert!(named(&migrate_err), "totpctl migrate: {migrate_err}");

    let connections = fake.connections(3);
    assert_eq!(
        connections.len(),
        3,
        "login, list, migrate: {connections:?}"
    );
    assert_nothing_in_clear(&connections, &secrets, true);
    println!(
        "server declined TLS: login, totpctl list and migrate refused with a named line; \
         the server got 3 SSLRequests and nothing else"
    );
}

#[test]
fn verify_full_denies_when_the_tls_handshake_breaks() {
    if !pam_tools_present() {
        return;
    }
    let secrets = secrets();
    let pw = secrets.password_file.to_str().expect("path");
    for answer in [Answer::AcceptThenGarbage, Answer::AcceptThenClose] {
        let fake = FakeServer::start(answer);
        let url = verify_full_url(fake.port, &secrets);
        let world = World::new_sqlite();
        world.service_exact(
            "fake_db",
            &format!("db={url} db_password_file={pw} db_timeout=5 fail_delay=0",),
        );
        let run = world.login("fake_db", "alice", Some(RHOST), "123456");
        assert!(!run.success, "{answer:?}: {run:?}");
        assert!(
            run.stderr
                .lines()
                .any(|l| l.contains("SYSLOG(") && named(l)),
            "{answer:?}: one named line: {run:?}"
        );
        let list = run_totpctl(["--db", &url, "--db-password-file", pw, "list"]);
        let list_err = String::from_utf8_lossy(&list.stderr);
        assert!(!list.status.success(), "{answer:?}: {list:?}");
        assert!(named(&list_err), "{answer:?}: totpctl list: {list_err}");
        let connections = fake.connections(2);
        assert_eq!(connections.len(), 2, "{answer:?}: {connections:?}");
        assert_nothing_in_clear(&connections, &secrets, false);
        println!("{answer:?}: login and totpctl list denied, named; nothing sent in clear");
    }
}

#[test]
fn a_password_in_the_url_is_refused_and_never_repeated_even_percent_encoded() {
    if !pam_tools_present() {
        return;
    }
    const SECRET: &str = "Hunter2Secret";
    let world = World::new_sqlite();
    for url in [
        "postgresql://totp@127.0.0.1/totp?sslmode=verify-full&pass%77ord=Hunter2Secret",
        "postgresql://totp@127.0.0.1/totp?sslmode=disable&%70%61%73%73%77%6F%72%64=Hunter2Secret",
        "postgresql://totp%3AHunter2Secret@127.0.0.1/totp?sslmode=disable",
        "postgresql://totp:Hunter2Secret@127.0.0.1/totp?sslmode=disable",
    ] {
        world.service_exact("leak", &format!("db={url} debug fail_delay=0"));
        let run = world.login("leak", "alice", Some(RHOST), "123456");
        assert!(!run.success, "{url}: {run:?}");
        assert!(run.logged("carries a password"), "{url}: {run:?}");
        assert!(!run.stderr.contains(SECRET), "{url}: {run:?}");
        assert!(!run.stdout.contains(SECRET), "{url}: {run:?}");
        let out = run_totpctl(["--db", url, "list"]);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{url}: {said}");
        assert!(said.contains("password"), "{url}: {said}");
        assert!(!said.contains(SECRET), "{url}: {said}");
        let source = world.db.to_str().expect("path");
        let out = run_totpctl(["migrate", "--from", source, "--to", url]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && said.contains("password"), "{said}");
        assert!(!said.contains(SECRET), "{url}: {said}");
    }
    println!(
        "4 URLs with a password (2 percent-encoded): refused by the module, totpctl and migrate, the secret in no line"
    );
}
