//! Micro-benchmarks of the two hot pieces of a login: verifying a code over
//! a ±1 window (three HMACs, constant-time compares) and the bare atomic
//! step claim in the SQLite store (one conditional UPDATE + commit).
//!   cargo bench --bench core

use criterion::{Criterion, black_box, criterion_group, criterion_main};

use pam_totp::otp::{self, Algorithm, Params};
use pam_totp::secret::Secret;
use pam_totp::store::{EnrollMode, Enrollment, Kind, SqliteStore, Store, Token};

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

fn claim(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("totp.db");
    let store = SqliteStore::create(&db).expect("store");
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
    let id = store.tokens("bench").expect("tokens")[0].id;
    let mut step = 0u64;
    c.bench_function("claim_step (synchronous=FULL)", |b| {
        b.iter(|| {
            step += 1;
            store.claim_step(id, step).expect("claim")
        })
    });
}

criterion_group!(benches, verify, claim);
criterion_main!(benches);
