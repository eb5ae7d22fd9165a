//! Micro-benchmarks of the two hot pieces of a login: verifying a code over
//! a ±1 window (three HMACs, constant-time compares) and the bare atomic
//! step claim in the SQLite store (one conditional UPDATE + commit).
//!   cargo bench --bench core

use criterion::{Criterion, black_box, criterion_group, criterion_main};

use pam_totp::otp::{self, Algorithm, Params};
use pam_totp::secret::Secret;
use pam_totp::store::LoginStore;
use pam_totp::store::{EnrollMode, Enrollment, Kind, SqliteStore, Store, Token};

#[path = "../tests/it/common/dirs.rs"]
mod dirs;

fn verify(c: &mut Criterion) {
    let key = Secret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").expect("key");
    let params = Params::default();
    let step = 59_847_920;
    let right = otp::format_code(otp::hotp(key.as_bytes(), step, Algorithm::Sha1, 6), 6);
    c.bench_function("verify_window ±1, right code", |b| {
        b.iter(|| otp::verify_window(key.as_bytes(), black_box(&right), step, 1, &params))
    });
    c.bench_function("verify_window ±1, wrong code", |b| {
        b.iter(|| otp::verify_window(key.as_bytes(), black_box("000000"), step, 1, &params))
    });
}

/// A store with one token; returns it as a login reads it.
fn store_with_token(db: &std::path::Path) -> Token {
    let store = SqliteStore::create(db).expect("store");
    let token = Token {
        id: 0,
        user: "bench".into(),
        device: "default".into(),
        kind: Kind::Totp,
        secret: Secret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").expect("key"),
        params: Params::default(),
        created: 0,
        confirmed: Some(0),
        last_step: None,
        life: Default::default(),
        stored_key: Default::default(),
    };
    store
        .enroll(
            &[Enrollment {
                token,
                recovery: None,
            }],
            EnrollMode::Add,
        )
        .expect("enroll");
    store.tokens("bench").expect("tokens").remove(0)
}

fn claim(c: &mut Criterion) {
    // Stores are trusted only in a private directory under root-owned ones.
    let dir = dirs::private_tempdir();
    let db = dir.path().join("totp.db");
    let token = store_with_token(&db);
    let mut step = 0u64;
    // A login's TOTP claim (synchronous=NORMAL, the WAL kept short).
    let store = SqliteStore::open_for_login(&db).expect("open");
    c.bench_function("claim_step TOTP (login, synchronous=NORMAL)", |b| {
        b.iter(|| {
            step += 1;
            store.claim_step(&token, step, 0).expect("claim")
        })
    });
    drop(store);
    // An HOTP claim or any totpctl write: synced before it returns.
    let store = SqliteStore::open(&db).expect("open");
    c.bench_function("claim_step synced (synchronous=FULL)", |b| {
        b.iter(|| {
            step += 1;
            store.claim_step(&token, step, 0).expect("claim")
        })
    });
    drop(store);
    // What a login pays for the store: open (trust checks, WAL index),
    // read the tokens, claim, close.
    c.bench_function("open + tokens + claim + close (login)", |b| {
        b.iter(|| {
            step += 1;
            let store = SqliteStore::open_for_login(&db).expect("open");
            store.tokens("bench").expect("tokens");
            store.claim_step(&token, step, 0).expect("claim")
        })
    });
}

/// The decision from the answer to the result for the three kinds of user
/// an outsider could tell apart by timing: unknown to NSS, known but not
/// enrolled (unenrolled=deny), enrolled with a wrong code. SECURITY.md
/// ("Timing") quotes what this prints.
fn answer_to_result(c: &mut Criterion) {
    use pam_totp::auth::{self, Clock, Conversation, Request};
    use pam_totp::config::Config;
    use pam_totp::sys::Accounts;
    use zeroize::Zeroizing;

    struct Now;
    impl Clock for Now {
        fn unix_time(&self) -> Result<u64, String> {
            pam_totp::sys::unix_time()
        }
        fn booted_at(&self) -> Result<u64, String> {
            Ok(0)
        }
    }
    /// "bench" and "plain" exist; nobody else does.
    struct TwoUsers;
    impl Accounts for TwoUsers {
        fn canonical_user(&self, name: &str) -> Result<Option<String>, String> {
            Ok(["bench", "plain"].contains(&name).then(|| name.to_string()))
        }
        fn groups_of(&self, _: &str) -> Result<Vec<String>, String> {
            Ok(Vec::new())
        }
        fn group_exists(&self, _: &str) -> Result<bool, String> {
            Ok(false)
        }
    }
    struct Says;
    impl Conversation for Says {
        fn ask_hidden(&mut self, _: &str) -> Result<Zeroizing<Vec<u8>>, String> {
            Ok(Zeroizing::new(b"000000".to_vec()))
        }
        fn info(&mut self, _: &str) -> Result<(), String> {
            Ok(())
        }
        fn set_authtok(&mut self, _: &[u8]) -> Result<(), String> {
            Ok(())
        }
    }
    let dir = dirs::private_tempdir();
    let db = dir.path().join("totp.db");
    store_with_token(&db);
    let config = Config {
        db: pam_totp::store::StoreLocation::Sqlite(db.clone()),
        limits: pam_totp::ratelimit::Limits {
            backoff_after: u32::MAX,
            backoff_max: 0,
            user_limit: 0,
        },
        ..Config::default()
    };
    for (name, user) in [
        ("answer to result: user unknown to NSS", "nobody-else"),
        ("answer to result: known, not enrolled", "plain"),
        ("answer to result: enrolled, wrong code", "bench"),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                auth::decide(
                    &config,
                    Request {
                        user,
                        rhost: Some("203.0.113.7"),
                        ssh_key: &pam_totp::sshkey::LoginKey::NoKey,
                    },
                    |_| SqliteStore::open_for_login(&db),
                    &Now,
                    &TwoUsers,
                    &mut Says,
                )
            })
        });
    }
}

criterion_group!(benches, verify, claim, answer_to_result);
criterion_main!(benches);
