//! The SQLite store against its contract: enrollment modes, the atomic
//! claim, recovery codes, windows, failure counts, migrations, files.
use super::*;
use crate::otp::Params;
use crate::ratelimit::Failures;
use crate::recovery::RecoveryHash;
use crate::secret::Secret;
use crate::store::{
    Claim, DEFAULT_DEVICE, EnrollMode, Enrollment, Kind, LoginStore, RecoveryCount, Reservation,
    Store, Token,
};

fn token(user: &str, device: &str) -> Token {
    Token {
        id: 0,
        user: user.to_string(),
        device: device.to_string(),
        kind: Kind::Totp,
        secret: Secret::from_base32("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").expect("key"),
        params: Params::default(),
        created: 1_700_000_000,
        confirmed: Some(1_700_000_000),
        last_step: None,
        life: Default::default(),
        stored_key: Default::default(),
    }
}

fn enroll(store: &SqliteStore, t: Token, mode: EnrollMode) -> Result<(), StoreError> {
    store.enroll(
        &[Enrollment {
            token: t,
            recovery: None,
        }],
        mode,
    )
}

/// The stored token of row `id`, read as a login reads it (a row that is
/// gone: a token of that id whose key no row holds).
fn stored(store: &SqliteStore, id: i64) -> Token {
    let user = store
        .list()
        .expect("list")
        .into_iter()
        .find(|t| t.id == id)
        .map(|t| t.user);
    match user {
        Some(user) => store
            .tokens(&user)
            .expect("tokens")
            .into_iter()
            .find(|t| t.id == id)
            .expect("token"),
        None => Token {
            id,
            ..token("nobody", DEFAULT_DEVICE)
        },
    }
}

/// The TOTP step (30 s) of now.
fn now_step() -> u64 {
    u64::try_from(crate::store::unix_now()).expect("clock") / 30
}

fn only_id(store: &SqliteStore, user: &str) -> i64 {
    let tokens = store.tokens(user).expect("tokens");
    assert_eq!(tokens.len(), 1);
    tokens[0].id
}

#[test]
fn enroll_read_list_delete() {
    let store = SqliteStore::open_in_memory().expect("store");
    assert!(store.tokens("alice").expect("query").is_empty());
    enroll(&store, token("alice", DEFAULT_DEVICE), EnrollMode::Add).expect("enroll");
    enroll(&store, token("alice", "tablet"), EnrollMode::Add).expect("enroll");
    enroll(&store, token("bob", DEFAULT_DEVICE), EnrollMode::Add).expect("enroll");
    let alice = store.tokens("alice").expect("query");
    assert_eq!(
        alice.iter().map(|t| t.device.as_str()).collect::<Vec<_>>(),
        ["default", "tablet"]
    );
    assert_eq!(alice[0].secret, token("alice", "x").secret);
    let listed: Vec<(String, String)> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|t| (t.user, t.device))
        .collect();
    assert_eq!(listed.len(), 3);
    assert!(store.delete_device("alice", "tablet").expect("delete"));
    assert!(!store.delete_device("alice", "tablet").expect("delete"));
    assert_eq!(store.delete_user("alice").expect("delete"), 1);
    assert!(store.tokens("alice").expect("query").is_empty());
    assert_eq!(store.tokens("bob").expect("query").len(), 1);
}

#[test]
fn enroll_modes() {
    let store = SqliteStore::open_in_memory().expect("store");
    enroll(&store, token("alice", DEFAULT_DEVICE), EnrollMode::Add).expect("enroll");
    let err = enroll(&store, token("alice", DEFAULT_DEVICE), EnrollMode::Add)
        .expect_err("duplicate device");
    assert!(matches!(err, StoreError::AlreadyEnrolled { .. }), "{err}");
    // A step of now: one long past every window is forgotten (below).
    let step = now_step();
    store
        .claim_step(&stored(&store, only_id(&store, "alice")), step, 0)
        .expect("claim");
    enroll(
        &store,
        token("alice", DEFAULT_DEVICE),
        EnrollMode::ReplaceDevice,
    )
    .expect("replace");
    // The same key onto its device keeps the step it used; another key
    // starts afresh.
    assert_eq!(store.tokens("alice").expect("q")[0].last_step, Some(step));
    let mut rekeyed = token("alice", DEFAULT_DEVICE);
    rekeyed.secret = Secret::from_base32("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").expect("key");
    enroll(&store, rekeyed, EnrollMode::ReplaceDevice).expect("replace");
    assert_eq!(store.tokens("alice").expect("q")[0].last_step, None);

    enroll(&store, token("alice", "phone2"), EnrollMode::Add).expect("second device");
    store
        .replace_recovery(
            "alice",
            &[RecoveryHash {
                lookup: "abcd".into(),
                phc: "x".into(),
            }],
        )
        .expect("recovery");
    enroll(&store, token("alice", "new"), EnrollMode::ReplaceUser).expect("reset");
    let devices: Vec<String> = store
        .tokens("alice")
        .expect("q")
        .into_iter()
        .map(|t| t.device)
        .collect();
    assert_eq!(devices, ["new"]);
    assert_eq!(store.recovery_count("alice").expect("count").unused, 0);
}

#[test]
fn a_failing_batch_writes_nothing() {
    let store = SqliteStore::open_in_memory().expect("store");
    enroll(&store, token("bob", DEFAULT_DEVICE), EnrollMode::Add).expect("enroll");
    let batch = [
        Enrollment {
            token: token("alice", DEFAULT_DEVICE),
            recovery: None,
        },
        Enrollment {
            token: token("bob", DEFAULT_DEVICE),
            recovery: None,
        },
    ];
    assert!(store.enroll(&batch, EnrollMode::Add).is_err());
    assert!(store.tokens("alice").expect("q").is_empty(), "rolled back");
}

#[test]
fn claim_is_monotonic_and_pending_tokens_cannot_claim() {
    let store = SqliteStore::open_in_memory().expect("store");
    enroll(&store, token("alice", DEFAULT_DEVICE), EnrollMode::Add).expect("enroll");
    let id = only_id(&store, "alice");
    assert_eq!(
        store.claim_step(&stored(&store, id), 100, 0).expect("c"),
        Claim::Claimed
    );
    assert_eq!(
        store.claim_step(&stored(&store, id), 100, 0).expect("c"),
        Claim::AlreadyUsed
    );
    assert_eq!(
        store.claim_step(&stored(&store, id), 99, 0).expect("c"),
        Claim::AlreadyUsed
    );
    assert_eq!(
        store.claim_step(&stored(&store, id), 101, 0).expect("c"),
        Claim::Claimed
    );
    assert_eq!(
        store.claim_step(&stored(&store, 9999), 500, 0).expect("c"),
        Claim::AlreadyUsed
    );
    assert!(matches!(
        store.claim_step(&stored(&store, id), u64::MAX, 0),
        Err(StoreError::StepOutOfRange(_))
    ));

    let mut pending = token("carol", DEFAULT_DEVICE);
    pending.confirmed = None;
    enroll(&store, pending, EnrollMode::Add).expect("enroll");
    let id = only_id(&store, "carol");
    assert_eq!(
        store.claim_step(&stored(&store, id), 100, 0).expect("c"),
        Claim::AlreadyUsed
    );
    assert_eq!(
        store.confirm(&stored(&store, id), 5, 100).expect("c"),
        Claim::Claimed
    );
    assert_eq!(
        store.confirm(&stored(&store, id), 6, 101).expect("c"),
        Claim::AlreadyUsed
    );
    let carol = &store.tokens("carol").expect("q")[0];
    assert_eq!(
        (carol.confirmed, carol.last_step),
        (Some(5), Some(100)),
        "confirming claims the confirmation code's step"
    );
    assert_eq!(
        store.claim_step(&stored(&store, id), 100, 0).expect("c"),
        Claim::AlreadyUsed
    );
}

#[test]
fn recovery_codes_burn_once() {
    let store = SqliteStore::open_in_memory().expect("store");
    // A recovery code works only while its user has a working token.
    enroll(&store, token("alice", DEFAULT_DEVICE), EnrollMode::Add).expect("token");
    let codes = [
        RecoveryHash {
            lookup: "aaaa".into(),
            phc: "h1".into(),
        },
        RecoveryHash {
            lookup: "bbbb".into(),
            phc: "h2".into(),
        },
    ];
    store.replace_recovery("alice", &codes).expect("store");
    let found = store.recovery_candidates("alice", "aaaa").expect("q");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].phc, "h1");
    assert_eq!(
        store.burn_recovery(&found[0], 7).expect("b"),
        Claim::Claimed
    );
    assert_eq!(
        store.burn_recovery(&found[0], 8).expect("b"),
        Claim::AlreadyUsed
    );
    assert!(
        store
            .recovery_candidates("alice", "aaaa")
            .expect("q")
            .is_empty()
    );
    assert_eq!(
        store.recovery_count("alice").expect("n"),
        RecoveryCount { unused: 1, used: 1 }
    );
    store.replace_recovery("alice", &codes[..1]).expect("again");
    assert_eq!(
        store.recovery_count("alice").expect("n"),
        RecoveryCount { unused: 1, used: 0 }
    );
}

#[test]
fn enroll_windows_expire_and_close_on_enrollment() {
    let store = SqliteStore::open_in_memory().expect("store");
    store
        .open_enroll_window("alice", 1000, "root")
        .expect("open");
    assert_eq!(store.enroll_window("alice", 999).expect("q"), Some(1000));
    assert_eq!(store.enroll_window("alice", 1000).expect("q"), None);
    let mut t = token("alice", DEFAULT_DEVICE);
    t.created = 999;
    store.enroll_at_login(&t, 33, &[]).expect("enroll at login");
    assert_eq!(store.enroll_window("alice", 0).expect("q"), None);
    assert_eq!(store.tokens("alice").expect("q")[0].last_step, Some(33));
    assert!(matches!(
        store.enroll_at_login(&t, 34, &[]),
        Err(StoreError::AlreadyEnrolled { .. })
    ));
}

#[test]
fn failures_count_per_source_and_per_user() {
    let store = SqliteStore::open_in_memory().expect("store");
    store.record_failure("alice", "10.0.0.1", 100).expect("f");
    store.record_failure("alice", "10.0.0.1", 110).expect("f");
    let f = store.record_failure("alice", "10.0.0.2", 120).expect("f");
    assert_eq!((f.source_count, f.source_last), (1, 120));
    assert_eq!((f.user_recent, f.user_last), (3, 120));
    let f = store.failures("alice", "10.0.0.1", 130).expect("f");
    assert_eq!((f.source_count, f.user_recent), (2, 3));
    // The ceiling counts the failures of the 24 h up to the latest one, for
    // 24 h after it (the lock lasts until 24 h after the last failure);
    // then nothing counts.
    let f = store
        .failures("alice", "10.0.0.9", 110 + 86_400)
        .expect("f");
    assert_eq!(f.user_recent, 3);
    let f = store
        .failures("alice", "10.0.0.9", 120 + 86_400)
        .expect("f");
    assert_eq!(f.user_recent, 0);
    // A success from 10.0.0.1 ends its back-off and gives its own guess
    // back, but the user's other failures still count (attack finding:
    // one right code wiped its address's failures from the ceiling).
    store
        .release_guess("alice", "10.0.0.1", true, 110)
        .expect("clear");
    assert_eq!(
        store.failures("alice", "", 130).expect("f").user_recent,
        2,
        "the guess at 110 given back; 100 and 120 still count"
    );
    assert_eq!(
        store
            .failures("alice", "10.0.0.1", 130)
            .expect("f")
            .source_count,
        0
    );
    assert_eq!(store.failure_sources("alice").expect("s").len(), 1);
    assert_eq!(store.unlock("alice").expect("unlock"), 1);
    assert_eq!(
        store.failures("alice", "", 130).expect("f"),
        Failures::default()
    );
}

/// A guess drops the user's failures two windows (48 h) old and no others,
/// and counts the source whether its row was there or not.
#[test]
fn a_guess_drops_the_failures_two_windows_old_and_counts_its_source() {
    let store = SqliteStore::open_in_memory().expect("store");
    let limits = crate::ratelimit::Limits::default();
    let day = 86_400;
    let guesses = |store: &SqliteStore| -> Vec<i64> {
        let mut at = store
            .driver
            .conn
            .prepare("SELECT at FROM guesses ORDER BY at")
            .expect("prepare");
        at.query_map([], |r| r.get(0))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    };
    let reserve = |rhost: &str, at: i64| {
        store
            .reserve_guess("ann", rhost, at, &limits)
            .expect("reserve")
    };
    assert!(matches!(reserve("a", 1_000), Reservation::Granted(f) if f.source_count == 1));
    assert!(matches!(reserve("a", 1_001), Reservation::Granted(f) if f.source_count == 2));
    assert!(matches!(reserve("b", 1_000 + day), Reservation::Granted(f) if f.user_recent == 3));
    assert_eq!(guesses(&store), [1_000, 1_001, 1_000 + day]);
    // At 1_000 + 2 days the guess at 1_000 is two windows old: dropped;
    // 1_001 is not yet. (The latest, 1_000 + 1 day, is a window old: the
    // ceiling counts nothing before this guess.)
    assert!(matches!(
        reserve("c", 1_000 + 2 * day),
        Reservation::Granted(f) if f.user_recent == 1 && f.source_count == 1
    ));
    assert_eq!(guesses(&store), [1_001, 1_000 + day, 1_000 + 2 * day]);
    let f = store.failures("ann", "a", 1_000 + 2 * day).expect("f");
    assert_eq!((f.source_count, f.source_last), (2, 1_001));
    assert_eq!((f.user_recent, f.user_last), (1, 1_000 + 2 * day));
}

/// Mode 0600: a store readable by group or others is refused.
fn private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn version_1_stores_migrate_keeping_tokens_and_used_steps() {
    let dir = crate::trust::test_dir();
    let path = dir.path().join("v1.db");
    {
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(MIGRATIONS[0]).expect("v1 schema");
        conn.pragma_update(None, "user_version", 1).expect("v1");
        conn.execute(
            "INSERT INTO tokens VALUES ('alice', ?1, 'sha256', 8, 60, 123, 456)",
            [b"12345678901234567890".as_slice()],
        )
        .expect("row");
    }
    // A store holds every key: only root may read it.
    private(&path);
    let store = SqliteStore::open(&path).expect("migrates");
    assert_eq!(store.schema_version().expect("v"), SCHEMA_VERSION);
    let alice = &store.tokens("alice").expect("q")[0];
    assert_eq!(alice.device, DEFAULT_DEVICE);
    assert_eq!(alice.kind, Kind::Totp);
    assert_eq!(alice.params.digits, 8);
    assert_eq!(alice.params.period, 60);
    assert_eq!(alice.last_step, Some(456));
    assert!(alice.is_active());
    assert_eq!(alice.secret.as_bytes(), b"12345678901234567890");
}

#[test]
fn file_store_is_created_private_and_reopened() {
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::trust::test_dir();
    let path = dir.path().join("state").join("pam_totp.db");
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::Missing(_))
    ));
    let store = SqliteStore::create(&path).expect("create");
    enroll(&store, token("alice", DEFAULT_DEVICE), EnrollMode::Add).expect("enroll");
    drop(store);
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().expect("dir")), 0o700);

    let store = SqliteStore::open(&path).expect("open");
    assert_eq!(store.schema_version().expect("v"), SCHEMA_VERSION);
    let mode: String = store
        .driver
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal");
    assert_eq!(store.tokens("alice").expect("q").len(), 1);
}

#[test]
fn broken_stores_are_named() {
    let dir = crate::trust::test_dir();
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").expect("write");
    private(&empty);
    assert!(matches!(
        SqliteStore::open(&empty),
        Err(StoreError::NotInitialised(_))
    ));

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).expect("write");
    private(&garbage);
    let err = SqliteStore::open(&garbage).err().expect("corrupt");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");

    let newer = dir.path().join("newer.db");
    let store = SqliteStore::create(&newer).expect("create");
    store
        .driver
        .conn
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("bump");
    drop(store);
    assert!(matches!(
        SqliteStore::open(&newer),
        Err(StoreError::SchemaTooNew { .. })
    ));
}

#[test]
fn symlinked_store_is_refused() {
    let dir = crate::trust::test_dir();
    let real = dir.path().join("real.db");
    SqliteStore::create(&real).expect("create");
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    assert!(SqliteStore::open(&link).is_err());
}

#[test]
fn threads_racing_one_step_claim_it_once() {
    let dir = crate::trust::test_dir();
    let path = dir.path().join("race.db");
    let store = SqliteStore::create(&path).expect("create");
    enroll(&store, token("alice", DEFAULT_DEVICE), EnrollMode::Add).expect("enroll");
    let id = only_id(&store, "alice");
    for step in 1..=20u64 {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let path = path.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let store = SqliteStore::open(&path).expect("open");
                    barrier.wait();
                    store
                        .claim_step(&stored(&store, id), step, 0)
                        .expect("claim")
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .filter(|c| *c == Claim::Claimed)
            .count();
        assert_eq!(wins, 1, "step {step}");
    }
}

#[test]
fn the_wal_stays_short_when_every_login_is_the_only_connection() {
    // Each login is alone with the store, so SQLite rebuilds the WAL index
    // from the WAL at every open; without `bound_wal` the WAL never starts
    // over and every login reads more of it (it reached megabytes).
    let dir = crate::trust::test_dir();
    let path = dir.path().join("wal.db");
    let store = SqliteStore::create(&path).expect("create");
    enroll(&store, token("alice", DEFAULT_DEVICE), EnrollMode::Add).expect("enroll");
    let id = only_id(&store, "alice");
    drop(store);
    let wal = dir.path().join("wal.db-wal");
    let frame = 4096 + 24;
    let mut largest = 0;
    for step in 1..=(4 * WAL_LIMIT as u64) {
        let store = SqliteStore::open_for_login(&path).expect("open");
        assert_eq!(
            store
                .claim_step(&stored(&store, id), step, 0)
                .expect("claim"),
            Claim::Claimed
        );
        store
            .record_failure("alice", "203.0.113.7", step as i64)
            .expect("failure");
        drop(store);
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    assert!(
        largest <= 32 + (WAL_LIMIT as u64 + 4) * frame,
        "WAL grew to {largest} bytes"
    );
    // Every claim is still there after the checkpoints.
    let store = SqliteStore::open(&path).expect("open");
    assert_eq!(
        store.tokens("alice").expect("tokens")[0].last_step,
        Some(4 * WAL_LIMIT as u64)
    );
}
