//! The `Store` trait's contract, one suite run against both backends: a
//! SQLite file and a PostgreSQL database of a private cluster. Each check
//! opens its connections the way logins do (one per process or thread) and
//! asserts what the decision relies on: the claim, recovery codes, the
//! enrollment modes, the guess reservation, staged grants and deletion.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::KEY;

use pam_totp::otp::Params;
use pam_totp::ratelimit::{Limits, Lock};
use pam_totp::recovery;
use pam_totp::secret::Secret;
use pam_totp::store::{
    Answer, Claim, EnrollMode, Enrollment, Grant, Kind, LoginStore, PgSettings, PgStore,
    Reservation, Settled, SqliteStore, Store, StoreError, Token,
};

const NOW: i64 = 1_700_000_000;
const FP_A: &str = "SHA256:PBZqibLSCLdAS4+MC8G29Jx6IMJfj3+k9ckTzGesU+I";
const FP_B: &str = "SHA256:AAAAibLSCLdAS4+MC8G29Jx6IMJfj3+k9ckTzGesU+I";

/// Where a backend's store lives; `open` gives a new connection each time.
enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        db: PathBuf,
    },
    Postgres {
        _cluster: common::postgres::Cluster,
        database: common::postgres::Database,
    },
}

impl Backend {
    fn sqlite() -> Backend {
        let dir = common::dirs::private_tempdir();
        let db = dir.path().join("contract.db");
        SqliteStore::create(&db).expect("create sqlite store");
        Backend::Sqlite { _dir: dir, db }
    }

    fn postgres() -> Backend {
        let cluster = common::postgres::Cluster::start();
        let database = cluster.database();
        let backend = Backend::Postgres {
            _cluster: cluster,
            database,
        };
        backend.connect(true);
        backend
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    fn connect(&self, create: bool) -> Box<dyn Store + Send> {
        match self {
            Backend::Sqlite { db, .. } => Box::new(SqliteStore::open(db).expect("open sqlite")),
            Backend::Postgres { database, .. } => {
                let open = if create {
                    PgStore::create
                } else {
                    PgStore::open
                };
                Box::new(pg_store(database, open, Duration::from_secs(20)))
            }
        }
    }

    fn open(&self) -> Box<dyn Store + Send> {
        self.connect(false)
    }

    /// Makes every write of `event` (`INSERT` or `DELETE`) on `table` fail
    /// in the database, until `allow_writes`.
    fn refuse_writes(&self, table: &str, event: &str) {
        match self {
            Backend::Sqlite { db, .. } => {
                let conn = rusqlite::Connection::open(db).expect("open");
                conn.execute_batch(&format!(
                    "CREATE TRIGGER refuse BEFORE {event} ON {table} \
                     BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                ))
                .expect("trigger");
            }
            Backend::Postgres {
                _cluster: cluster,
                database,
            } => {
                cluster.psql(
                    &database.name,
                    &format!(
                        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
                         $$BEGIN RAISE EXCEPTION 'refused by the test'; END$$; \
                         CREATE TRIGGER refuse BEFORE {event} ON {table} \
                         FOR EACH ROW EXECUTE FUNCTION refuse()"
                    ),
                );
            }
        }
    }

    fn allow_writes(&self, table: &str) {
        match self {
            Backend::Sqlite { db, .. } => {
                let conn = rusqlite::Connection::open(db).expect("open");
                conn.execute_batch("DROP TRIGGER refuse").expect("drop");
            }
            Backend::Postgres {
                _cluster: cluster,
                database,
            } => {
                cluster.psql(
                    &database.name,
                    &format!("DROP TRIGGER refuse ON {table}; DROP FUNCTION refuse()"),
                );
            }
        }
    }
}

/// Both backends; PostgreSQL only where a server can be started (under
/// CI=true a missing server fails the test).
fn backends() -> Vec<Backend> {
    let mut all = vec![Backend::sqlite()];
    if common::postgres_present() {
        all.push(Backend::postgres());
    }
    all
}

pub(crate) fn token(user: &str, device: &str, kind: Kind, active: bool) -> Token {
    Token {
        id: 0,
        user: user.to_string(),
        device: device.to_string(),
        kind,
        secret: Secret::from_base32(KEY).expect("key"),
        params: Params::default(),
        created: NOW,
        confirmed: active.then_some(NOW),
        last_step: None,
        life: Default::default(),
        stored_key: Default::default(),
    }
}

pub(crate) fn enroll(store: &dyn Store, token: Token, mode: EnrollMode) -> Result<(), StoreError> {
    store.enroll(
        &[Enrollment {
            token,
            recovery: None,
        }],
        mode,
    )
}

fn id_of(store: &dyn Store, user: &str, device: &str) -> i64 {
    store
        .tokens(user)
        .expect("tokens")
        .into_iter()
        .find(|t| t.device == device)
        .map(|t| t.id)
        .expect("token")
}

/// The stored token of row `id`, read as a login reads it (a row that is
/// gone: a token of that id whose key no row holds).
fn stored(store: &dyn Store, id: i64) -> Token {
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
            ..token("nobody", "gone", Kind::Totp, true)
        },
    }
}

/// A fresh set of recovery code hashes (the codes themselves are dropped).
fn recovery_hashes() -> Vec<pam_totp::recovery::RecoveryHash> {
    recovery::generate()
        .expect("codes")
        .into_iter()
        .map(|(_, hash)| hash)
        .collect()
}

#[test]
fn claims_only_move_forward_and_pending_tokens_never_claim() {
    for backend in backends() {
        let store = backend.open();
        enroll(
            &*store,
            token("ann", "phone", Kind::Totp, true),
            EnrollMode::Add,
        )
        .expect("add");
        let mut spare = token("ann", "spare", Kind::Totp, false);
        // A key of its own: with the phone's, the phone's used steps would
        // be its own (`Token::shares_codes_with`).
        spare.secret = Secret::from_base32("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").expect("key");
        enroll(&*store, spare, EnrollMode::Add).expect("add");
        let phone = id_of(&*store, "ann", "phone");
        let spare = id_of(&*store, "ann", "spare");
        let name = backend.name();
        assert_eq!(
            store.claim_step(&stored(&*store, phone), 10, 0).expect("c"),
            Claim::Claimed,
            "{name}"
        );
        for step in [10, 9] {
            assert_eq!(
                store
                    .claim_step(&stored(&*store, phone), step, 0)
                    .expect("c"),
                Claim::AlreadyUsed,
                "{name}: step {step}"
            );
        }
        assert_eq!(
            store.claim_step(&stored(&*store, phone), 11, 0).expect("c"),
            Claim::Claimed
        );
        assert_eq!(
            store.claim_step(&stored(&*store, spare), 1, 0).expect("c"),
            Claim::AlreadyUsed,
            "{name}: a pending token cannot claim"
        );
        assert_eq!(
            store
                .confirm(&stored(&*store, spare), NOW, 5)
                .expect("confirm"),
            Claim::Claimed
        );
        assert_eq!(
            store.claim_step(&stored(&*store, spare), 5, 0).expect("c"),
            Claim::AlreadyUsed,
            "{name}: the confirming step is spent"
        );
        assert!(matches!(
            store.claim_step(&stored(&*store, phone), u64::MAX, 0),
            Err(StoreError::StepOutOfRange(_))
        ));
    }
}

#[test]
fn a_claim_holds_only_for_the_key_that_was_read() {
    for backend in backends() {
        let name = backend.name();
        let store = backend.open();
        enroll(
            &*store,
            token("ivy", "phone", Kind::Totp, true),
            EnrollMode::Add,
        )
        .expect("add");
        // A login reads the token, then waits at the prompt.
        let old = stored(&*store, id_of(&*store, "ivy", "phone"));
        // Meanwhile the user is reset: the token deleted, a new one with
        // another key (SQLite gives it the deleted row's id, the last one).
        assert_eq!(store.delete_user("ivy").expect("delete"), 1);
        let mut new = token("ivy", "phone", Kind::Totp, true);
        new.secret = Secret::from_base32("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").expect("key");
        enroll(&*store, new, EnrollMode::Add).expect("add");
        let fresh = stored(&*store, id_of(&*store, "ivy", "phone"));
        // The code of the old key claims nothing on the new row, however
        // it is settled.
        assert_eq!(
            store.claim_step(&old, 50, NOW).expect("c"),
            Claim::AlreadyUsed,
            "{name}: id {} then {}",
            old.id,
            fresh.id
        );
        assert_eq!(
            store
                .settle_guess(
                    "ivy",
                    "a",
                    NOW,
                    &Limits::default(),
                    Answer::Right {
                        token: &old,
                        step: 51
                    }
                )
                .expect("settle"),
            Settled::GivenBack(Some(Claim::AlreadyUsed)),
            "{name}"
        );
        assert_eq!(
            stored(&*store, fresh.id).last_step,
            None,
            "{name}: the new token's steps are untouched"
        );
        assert_eq!(
            store.claim_step(&fresh, 52, NOW).expect("c"),
            Claim::Claimed,
            "{name}: the new key claims"
        );
        // A pending token confirmed with the code of a key that its row no
        // longer holds stays pending (`totpctl confirm` racing a reset).
        enroll(
            &*store,
            token("ivy", "tablet", Kind::Totp, false),
            EnrollMode::Add,
        )
        .expect("add pending");
        let pending = stored(&*store, id_of(&*store, "ivy", "tablet"));
        assert!(store.delete_device("ivy", "tablet").expect("delete"));
        let mut other = token("ivy", "tablet", Kind::Totp, false);
        other.secret = Secret::from_base32("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").expect("key");
        enroll(&*store, other, EnrollMode::Add).expect("add pending");
        assert_eq!(
            store.confirm(&pending, NOW, 60).expect("confirm"),
            Claim::AlreadyUsed,
            "{name}: the replaced pending row is not confirmed"
        );
        let now_pending = stored(&*store, id_of(&*store, "ivy", "tablet"));
        assert_eq!(now_pending.confirmed, None, "{name}: still pending");
        assert_eq!(
            store.confirm(&now_pending, NOW, 60).expect("confirm"),
            Claim::Claimed,
            "{name}"
        );
    }
}

#[test]
fn a_recovery_code_burns_only_as_the_hash_that_was_checked() {
    for backend in backends() {
        let name = backend.name();
        let store = backend.open();
        enroll(
            &*store,
            token("joy", "phone", Kind::Totp, true),
            EnrollMode::Add,
        )
        .expect("add");
        let first = recovery_hashes();
        store.replace_recovery("joy", &first).expect("recovery");
        let checked = store
            .recovery_candidates("joy", &first[first.len() - 1].lookup)
            .expect("candidates")
            .remove(0);
        // New codes replace the old ones while the old one is checked.
        let second = recovery_hashes();
        store.replace_recovery("joy", &second).expect("recovery");
        assert_eq!(
            store.burn_recovery(&checked, NOW).expect("burn"),
            Claim::AlreadyUsed,
            "{name}: the replaced code burns nothing"
        );
        assert_eq!(
            store.recovery_count("joy").expect("count").unused,
            second.len(),
            "{name}: every new code is still unused"
        );
    }
}

#[test]
fn racing_connections_claim_one_step_exactly_once() {
    for backend in backends() {
        let setup = backend.open();
        enroll(
            &*setup,
            token("bea", "phone", Kind::Totp, true),
            EnrollMode::Add,
        )
        .expect("add");
        let id = id_of(&*setup, "bea", "phone");
        drop(setup);
        for step in 1..=5u64 {
            let stores: Vec<_> = (0..8).map(|_| backend.open()).collect();
            let wins = std::thread::scope(|scope| {
                let handles: Vec<_> = stores
                    .into_iter()
                    .map(|store| {
                        scope.spawn(move || store.claim_step(&stored(&*store, id), step, 0))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("thread").expect("claim"))
                    .filter(|c| *c == Claim::Claimed)
                    .count()
            });
            assert_eq!(wins, 1, "{}: step {step}", backend.name());
        }
    }
}

#[test]
fn enrollment_modes_and_deletion() {
    for backend in backends() {
        let name = backend.name();
        let store = backend.open();
        enroll(
            &*store,
            token("cy", "phone", Kind::Totp, true),
            EnrollMode::Add,
        )
        .expect("add");
        assert!(
            matches!(
                enroll(
                    &*store,
                    token("cy", "phone", Kind::Hotp, true),
                    EnrollMode::Add
                ),
                Err(StoreError::AlreadyEnrolled { .. })
            ),
            "{name}"
        );
        enroll(
            &*store,
            token("cy", "phone", Kind::Hotp, true),
            EnrollMode::ReplaceDevice,
        )
        .expect("replace device");
        let tokens = store.tokens("cy").expect("tokens");
        assert_eq!((tokens.len(), tokens[0].kind), (1, Kind::Hotp), "{name}");
        let hashes = recovery_hashes();
        store.replace_recovery("cy", &hashes).expect("recovery");
        store
            .open_enroll_window("cy", NOW + 60, "root")
            .expect("window");
        store
            .grant_key_grace("cy", FP_A, NOW + 600)
            .expect("key grace");
        enroll(
            &*store,
            token("cy", "tablet", Kind::Totp, true),
            EnrollMode::ReplaceUser,
        )
        .expect("reset");
        assert_eq!(
            store.key_grace_until("cy", FP_A, NOW).expect("k"),
            None,
            "{name}: reset --now ends key graces"
        );
        let tokens = store.tokens("cy").expect("tokens");
        assert_eq!(tokens.len(), 1, "{name}: reset leaves only the new token");
        assert_eq!(
            store.recovery_count("cy").expect("count").unused,
            0,
            "{name}"
        );
        assert_eq!(
            store.enroll_window("cy", NOW).expect("window"),
            None,
            "{name}"
        );
        // delete_user: tokens, recovery codes, windows, failures, grace and
        // stages all go.
        store.replace_recovery("cy", &hashes).expect("recovery");
        store
            .grant_grace("cy", "192.0.2.1", NOW + 60)
            .expect("grace");
        store
            .reserve_guess("cy", "192.0.2.1", NOW, &Limits::default())
            .expect("reserve");
        let grace = Grant::Grace {
            ip: Some(("192.0.2.2".to_string(), NOW + 60)),
            key: None,
        };
        store
            .grant_key_grace("cy", FP_A, NOW + 60)
            .expect("key grace");
        store
            .stage_grant("n-cy", "cy", &grace, NOW + 600, NOW)
            .expect("stage");
        assert_eq!(store.delete_user("cy").expect("delete"), 1, "{name}");
        assert!(store.tokens("cy").expect("tokens").is_empty());
        assert_eq!(store.recovery_count("cy").expect("count").unused, 0);
        assert_eq!(
            store.grace_until("cy", "192.0.2.1", NOW).expect("grace"),
            None
        );
        assert_eq!(
            store
                .failures("cy", "192.0.2.1", NOW)
                .expect("f")
                .user_recent,
            0
        );
        assert_eq!(
            store.take_staged("n-cy", "cy", NOW).expect("take"),
            None,
            "{name}"
        );
        assert_eq!(
            store.key_grace_until("cy", FP_A, NOW).expect("key grace"),
            None,
            "{name}: key graces go with the user"
        );
    }
}

/// A deleted key's used step outlives its row (`retired_keys`, kept by
/// the schema's trigger): enrolled again, by any path that deletes the
/// row first or after, it counts its codes from there. A TOTP step past
/// every window is forgotten; an HOTP counter is kept.
#[test]
fn a_deleted_keys_used_step_outlives_its_row() {
    let now = common::unix_now() as i64;
    let step = u64::try_from(now).expect("clock") / 30;
    for backend in backends() {
        let name = backend.name();
        let store = backend.open();
        let used = |user: &str| -> Vec<Option<u64>> {
            store
                .tokens(user)
                .expect("tokens")
                .into_iter()
                .map(|t| t.last_step)
                .collect()
        };
        let claim = |user: &str, device: &str, at: u64| {
            store
                .claim_step(&stored(&*store, id_of(&*store, user, device)), at, now)
                .expect("claim")
        };
        let add = |user: &str, device: &str, kind: Kind, mode: EnrollMode| {
            enroll(&*store, token(user, device, kind, true), mode).expect("enroll");
        };
        // delete, then the key on another device name.
        add("ann", "phone", Kind::Totp, EnrollMode::Add);
        assert_eq!(claim("ann", "phone", step), Claim::Claimed, "{name}");
        assert!(
            store.delete_device("ann", "phone").expect("delete"),
            "{name}"
        );
        add("ann", "phone2", Kind::Totp, EnrollMode::Add);
        assert_eq!(used("ann"), [Some(step)], "{name}: delete, enroll again");
        assert_eq!(claim("ann", "phone2", step), Claim::AlreadyUsed, "{name}");
        // The whole user deleted, then enrolled again.
        assert_eq!(store.delete_user("ann").expect("delete"), 1, "{name}");
        add("ann", "phone", Kind::Totp, EnrollMode::Add);
        assert_eq!(
            used("ann"),
            [Some(step)],
            "{name}: delete user, enroll again"
        );
        // A reset to another key, then back to this one.
        let mut other = token("ann", "phone", Kind::Totp, true);
        other.secret = Secret::from_base32("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").expect("key");
        enroll(&*store, other, EnrollMode::ReplaceUser).expect("reset");
        assert_eq!(used("ann"), [None], "{name}: another key starts afresh");
        add("ann", "phone", Kind::Totp, EnrollMode::ReplaceUser);
        assert_eq!(used("ann"), [Some(step)], "{name}: reset back to the key");
        // Another user's codes are theirs: nothing carried across users.
        add("bo", "phone", Kind::Totp, EnrollMode::Add);
        assert_eq!(used("bo"), [None], "{name}");
        // A step past every window (and its skew margin) is forgotten.
        assert_eq!(claim("bo", "phone", step - 200), Claim::Claimed, "{name}");
        assert!(
            store.delete_device("bo", "phone").expect("delete"),
            "{name}"
        );
        add("bo", "phone", Kind::Totp, EnrollMode::Add);
        assert_eq!(used("bo"), [None], "{name}: an old step is not kept");
        // HOTP: the counter is kept, however old.
        add("cid", "fob", Kind::Hotp, EnrollMode::Add);
        assert_eq!(claim("cid", "fob", 5), Claim::Claimed, "{name}");
        assert!(store.delete_device("cid", "fob").expect("delete"), "{name}");
        add("cid", "fob", Kind::Hotp, EnrollMode::Add);
        assert_eq!(used("cid"), [Some(5)], "{name}: an HOTP counter is kept");
        // A never used token leaves nothing behind.
        add("dot", "phone", Kind::Totp, EnrollMode::Add);
        assert!(
            store.delete_device("dot", "phone").expect("delete"),
            "{name}"
        );
        add("dot", "phone", Kind::Totp, EnrollMode::Add);
        assert_eq!(used("dot"), [None], "{name}");
    }
}

#[test]
fn key_graces_run_until_their_end_and_are_forgotten_per_key_or_all() {
    for backend in backends() {
        let store = backend.open();
        let name = backend.name();
        store.grant_key_grace("kim", FP_A, NOW + 60).expect("grant");
        store
            .grant_key_grace("kim", FP_B, NOW + 600)
            .expect("grant");
        // Granting again moves the end (one row per user and key).
        store
            .grant_key_grace("kim", FP_A, NOW + 120)
            .expect("grant");
        assert_eq!(
            store.key_grace_until("kim", FP_A, NOW).expect("until"),
            Some(NOW + 120),
            "{name}"
        );
        assert_eq!(
            store.key_grace_until("kim", FP_A, NOW + 120).expect("u"),
            None
        );
        assert_eq!(store.key_grace_until("lou", FP_A, NOW).expect("u"), None);
        assert_eq!(
            store.key_graces("kim", NOW).expect("list"),
            vec![(FP_B.to_string(), NOW + 600), (FP_A.to_string(), NOW + 120)],
            "{name}"
        );
        assert_eq!(store.key_graces("kim", NOW + 200).expect("list").len(), 1);
        assert_eq!(store.forget_key_grace("kim", FP_A).expect("forget"), 1);
        assert_eq!(store.forget_key_grace("kim", FP_A).expect("forget"), 0);
        store
            .grant_grace("kim", "192.0.2.1", NOW + 60)
            .expect("grace");
        // `forget USER` ends the address graces and the key graces.
        assert_eq!(store.forget_grace("kim").expect("forget"), 2, "{name}");
        assert!(store.key_graces("kim", NOW).expect("list").is_empty());
        // A staged key grace alone comes back as staged.
        let grace = Grant::Grace {
            ip: None,
            key: Some((FP_A.to_string(), NOW + 900)),
        };
        store
            .stage_grant("nk", "kim", &grace, NOW + 600, NOW)
            .expect("stage");
        assert_eq!(
            store.take_staged("nk", "kim", NOW).expect("take"),
            Some(grace),
            "{name}"
        );
        // An empty grace is not staged.
        assert!(
            store
                .stage_grant(
                    "ne",
                    "kim",
                    &Grant::Grace {
                        ip: None,
                        key: None
                    },
                    NOW + 600,
                    NOW
                )
                .is_err()
        );
    }
}

#[test]
fn automation_grants_are_kept_listed_and_revoked_once() {
    for backend in backends() {
        let store = backend.open();
        let name = backend.name();
        let first = store
            .add_automation(
                "ci",
                FP_A,
                "192.0.2.0/24",
                NOW + 86_400,
                "nightly rsync",
                NOW,
                "root",
            )
            .expect("add");
        let second = store
            .add_automation(
                "ci",
                FP_B,
                "10.0.0.0/8,2001:db8::/32",
                NOW + 3600,
                "CI",
                NOW,
                "admin",
            )
            .expect("add");
        let third = store
            .add_automation("dee", FP_A, "192.0.2.0/24", NOW + 60, "x", NOW, "root")
            .expect("add");
        assert!(first < second && second < third, "{name}");
        let for_key = store.automation_for_key("ci", FP_A).expect("for key");
        assert_eq!(for_key.len(), 1, "{name}");
        let grant = &for_key[0];
        assert_eq!(
            (
                grant.id,
                grant.user.as_str(),
                grant.fingerprint.as_str(),
                grant.networks.as_str()
            ),
            (first, "ci", FP_A, "192.0.2.0/24")
        );
        assert_eq!(
            (
                grant.until,
                grant.reason.as_str(),
                grant.created,
                grant.created_by.as_str()
            ),
            (NOW + 86_400, "nightly rsync", NOW, "root")
        );
        assert!(grant.in_force(NOW) && !grant.in_force(NOW + 86_400));
        assert_eq!(store.automation_grants(None).expect("all").len(), 3);
        assert_eq!(store.automation_grants(Some("ci")).expect("ci").len(), 2);
        let revoked = store
            .revoke_automation(first, NOW + 5)
            .expect("revoke")
            .expect("was in force");
        assert_eq!(revoked.revoked, Some(NOW + 5));
        assert!(!revoked.in_force(NOW + 6));
        assert_eq!(
            store.revoke_automation(first, NOW + 9).expect("again"),
            None,
            "{name}"
        );
        assert_eq!(
            store.revoke_automation(999_999, NOW).expect("unknown"),
            None
        );
        assert_eq!(
            store
                .revoke_automation_of_user("ci", NOW + 10)
                .expect("all"),
            1
        );
        // Kept as the record: both still listed, both revoked.
        let ci = store.automation_grants(Some("ci")).expect("ci");
        assert!(ci.iter().all(|g| g.revoked.is_some()), "{name}");
        assert_eq!(ci[0].revoked, Some(NOW + 5));
    }
}

#[test]
fn a_recovery_code_burns_once() {
    for backend in backends() {
        let store = backend.open();
        let hashes = recovery_hashes();
        // A recovery code works only while its user has a working token.
        enroll(
            &*store,
            token("dee", "default", Kind::Totp, true),
            EnrollMode::Add,
        )
        .expect("token");
        store.replace_recovery("dee", &hashes).expect("recovery");
        let candidates = store
            .recovery_candidates("dee", &hashes[0].lookup)
            .expect("candidates");
        let code = &candidates[0];
        let racers: Vec<_> = (0..6).map(|_| backend.open()).collect();
        let burned = std::thread::scope(|scope| {
            let handles: Vec<_> = racers
                .into_iter()
                .map(|store| scope.spawn(move || store.burn_recovery(code, NOW)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread").expect("burn"))
                .filter(|c| *c == Claim::Claimed)
                .count()
        });
        assert_eq!(burned, 1, "{}", backend.name());
        let count = store.recovery_count("dee").expect("count");
        assert_eq!(
            (count.unused, count.used),
            (hashes.len() - 1, 1),
            "{}",
            backend.name()
        );
    }
}

#[test]
fn guesses_are_reserved_against_the_limits_and_given_back() {
    let limits = Limits {
        backoff_after: 2,
        backoff_max: 3600,
        user_limit: 4,
    };
    for backend in backends() {
        let name = backend.name();
        let store = backend.open();
        let reserve = |rhost: &str, at: i64| {
            store
                .reserve_guess("eve", rhost, at, &limits)
                .expect("reserve")
        };
        assert!(matches!(reserve("a", NOW), Reservation::Granted(f) if f.source_count == 1));
        assert!(matches!(reserve("a", NOW), Reservation::Granted(f) if f.source_count == 2));
        // Two failures from "a": backed off for 30 s, nothing counted.
        assert_eq!(
            reserve("a", NOW + 1),
            Reservation::Locked(Lock::Source { until: NOW + 30 }),
            "{name}"
        );
        assert_eq!(store.failures("eve", "a", NOW).expect("f").source_count, 2);
        // A reused code gives its guess back; a success clears the source.
        assert!(matches!(reserve("b", NOW), Reservation::Granted(_)));
        store
            .release_guess("eve", "b", false, NOW)
            .expect("release");
        assert_eq!(
            store.failures("eve", "b", NOW).expect("f").source_count,
            0,
            "{name}"
        );
        assert_eq!(
            store.failures("eve", "", NOW).expect("f").user_recent,
            2,
            "{name}"
        );
        assert!(matches!(reserve("c", NOW), Reservation::Granted(_)));
        assert!(matches!(reserve("d", NOW), Reservation::Granted(f) if f.user_recent == 4));
        // The per-user ceiling: every address is refused.
        assert!(
            matches!(
                reserve("e", NOW + 5),
                Reservation::Locked(Lock::User { .. })
            ),
            "{name}"
        );
        store.release_guess("eve", "a", true, NOW).expect("clear");
        assert_eq!(
            store.failures("eve", "a", NOW).expect("f").source_count,
            0,
            "{name}"
        );
        assert_eq!(
            store.failures("eve", "", NOW).expect("f").user_recent,
            3,
            "{name}: a success gives back its own guess, not the address's failures"
        );
        assert_eq!(
            store.unlock("eve").expect("unlock"),
            2,
            "{name}: c and d were left"
        );
    }
}

#[test]
fn a_code_is_settled_against_the_limits_in_one_write() {
    let limits = Limits {
        backoff_after: 2,
        backoff_max: 3600,
        user_limit: 5,
    };
    for backend in backends() {
        let name = backend.name();
        let store = backend.open();
        enroll(
            &*store,
            token("gil", "phone", Kind::Totp, true),
            EnrollMode::Add,
        )
        .expect("add");
        enroll(
            &*store,
            token("gil", "key", Kind::Hotp, true),
            EnrollMode::Add,
        )
        .expect("add");
        let phone = stored(&*store, id_of(&*store, "gil", "phone"));
        let hotp = stored(&*store, id_of(&*store, "gil", "key"));
        let settle = |rhost: &str, at: i64, answer: Answer| {
            store
                .settle_guess("gil", rhost, at, &limits, answer)
                .expect("settle")
        };
        let right = |step: u64| Answer::Right {
            token: &phone,
            step,
        };
        let source = |rhost: &str| store.failures("gil", rhost, NOW).expect("f");
        // A wrong code stays counted, for the source and the user.
        assert!(
            matches!(settle("a", NOW, Answer::Wrong), Settled::Counted(f) if f.source_count == 1 && f.user_recent == 1),
            "{name}"
        );
        // A right code claims its step, gives its guess back and ends the
        // source's back-off.
        assert_eq!(
            settle("a", NOW, right(100)),
            Settled::GivenBack(Some(Claim::Claimed)),
            "{name}"
        );
        assert_eq!(source("a").source_count, 0, "{name}: back-off ended");
        assert_eq!(
            source("").user_recent,
            1,
            "{name}: only the wrong guess is left"
        );
        // The same step again: refused as used, its guess given back, the
        // source's failures kept.
        settle("b", NOW, Answer::Wrong);
        assert_eq!(
            settle("b", NOW, right(100)),
            Settled::GivenBack(Some(Claim::AlreadyUsed)),
            "{name}"
        );
        assert_eq!(source("b").source_count, 1, "{name}");
        assert_eq!(source("").user_recent, 2, "{name}");
        // A right code refused before its claim (a step from before the
        // boot) is given back and claims nothing.
        assert_eq!(
            settle("b", NOW, Answer::Refused),
            Settled::GivenBack(None),
            "{name}"
        );
        assert_eq!(source("b").source_count, 1, "{name}");
        // A right HOTP counter is claimed like a step.
        assert_eq!(
            settle(
                "c",
                NOW,
                Answer::Right {
                    token: &hotp,
                    step: 3
                }
            ),
            Settled::GivenBack(Some(Claim::Claimed)),
            "{name}"
        );
        assert_eq!(
            store.claim_step(&hotp, 3, NOW).expect("c"),
            Claim::AlreadyUsed,
            "{name}: counter 3 is used"
        );
        // Backed off: even a right code is neither claimed nor counted.
        settle("b", NOW, Answer::Wrong);
        assert_eq!(
            settle("b", NOW + 1, right(101)),
            Settled::Locked(Lock::Source { until: NOW + 30 }),
            "{name}"
        );
        assert_eq!(source("b").source_count, 2, "{name}: nothing counted");
        assert_eq!(
            store.claim_step(&phone, 101, NOW).expect("c"),
            Claim::Claimed,
            "{name}: the refused right code claimed nothing"
        );
        // The per-user ceiling holds every address, right code or not.
        settle("d", NOW, Answer::Wrong);
        settle("e", NOW, Answer::Wrong);
        assert!(
            matches!(
                settle("f", NOW + 2, right(102)),
                Settled::Locked(Lock::User { .. })
            ),
            "{name}"
        );
        assert_eq!(
            store.claim_step(&phone, 102, NOW).expect("c"),
            Claim::Claimed,
            "{name}"
        );
        // A step the database cannot hold changes nothing.
        assert!(store.unlock("gil").is_ok());
        assert!(matches!(
            store.settle_guess("gil", "g", NOW, &limits, right(u64::MAX)),
            Err(StoreError::StepOutOfRange(_))
        ));
        assert_eq!(
            source("g").source_count,
            0,
            "{name}: an error counts nothing"
        );
    }
}

/// A settlement is one transaction, however its statements travel (the
/// PostgreSQL store sends the writes whose row counts it does not need
/// together with the next statement that needs an answer, or with the
/// COMMIT): when any one of its writes fails, the settlement fails and
/// leaves nothing behind: no claim, no count, no give-back.
#[test]
fn a_settlement_with_a_failed_write_leaves_nothing_behind() {
    let limits = Limits {
        backoff_after: 2,
        backoff_max: 3600,
        user_limit: 5,
    };
    for backend in backends() {
        let name = backend.name();
        let store = backend.open();
        enroll(
            &*store,
            token("ivo", "phone", Kind::Totp, true),
            EnrollMode::Add,
        )
        .expect("add");
        let phone = stored(&*store, id_of(&*store, "ivo", "phone"));
        let right = |step: u64| Answer::Right {
            token: &phone,
            step,
        };
        // One wrong guess, committed, so there is a count to keep or lose.
        store
            .settle_guess("ivo", "a", NOW, &limits, Answer::Wrong)
            .expect("wrong");
        // A wrong code's count fails; a right code's claim fails; the
        // source's clear that goes with it fails (on PostgreSQL in the
        // claim's statement, with the COMMIT). A right code's guess is not
        // written at all (`settle_given_back`).
        let refused = [
            ("guesses", "INSERT", vec![Answer::Wrong]),
            ("tokens", "UPDATE", vec![right(200)]),
            ("failures", "DELETE", vec![right(200)]),
        ];
        for (table, event, answers) in refused {
            backend.refuse_writes(table, event);
            let store = backend.open();
            for answer in answers {
                let settled = store.settle_guess("ivo", "a", NOW, &limits, answer);
                assert!(
                    settled.is_err(),
                    "{name}: {event} on {table} refused, yet settled: {settled:?}"
                );
            }
            assert_eq!(
                stored(&*store, phone.id).last_step,
                None,
                "{name}: {event} refused: the claim must not stay"
            );
            let left = store.failures("ivo", "a", NOW).expect("failures");
            assert_eq!(
                (left.source_count, left.user_recent),
                (1, 1),
                "{name}: {event} refused: the counts must be as before"
            );
            backend.allow_writes(table);
        }
        // With the writes allowed again, the same step is still unclaimed.
        let store = backend.open();
        assert_eq!(
            store
                .settle_guess("ivo", "a", NOW, &limits, right(200))
                .expect("settle"),
            Settled::GivenBack(Some(Claim::Claimed)),
            "{name}"
        );
    }
}

#[test]
fn racing_settlements_claim_once_and_never_pass_the_user_limit() {
    let limits = Limits {
        backoff_after: 100,
        backoff_max: 3600,
        user_limit: 5,
    };
    for backend in backends() {
        let setup = backend.open();
        enroll(
            &*setup,
            token("hal", "phone", Kind::Totp, true),
            EnrollMode::Add,
        )
        .expect("add");
        let phone = stored(&*setup, id_of(&*setup, "hal", "phone"));
        drop(setup);
        // 12 connections with the same right code: one claims it.
        let racers: Vec<_> = (0..12).map(|_| backend.open()).collect();
        let settled: Vec<Settled> = std::thread::scope(|scope| {
            let handles: Vec<_> = racers
                .into_iter()
                .enumerate()
                .map(|(i, store)| {
                    let (limits, phone) = (&limits, &phone);
                    scope.spawn(move || {
                        let answer = Answer::Right {
                            token: phone,
                            step: 7,
                        };
                        store.settle_guess("hal", &format!("192.0.2.{i}"), NOW, limits, answer)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread").expect("settle"))
                .collect()
        });
        let claimed = |c: Claim| {
            settled
                .iter()
                .filter(|s| **s == Settled::GivenBack(Some(c)))
                .count()
        };
        assert_eq!(claimed(Claim::Claimed), 1, "{}", backend.name());
        assert_eq!(claimed(Claim::AlreadyUsed), 11, "{}", backend.name());
        // 12 wrong codes at once with room for 5: exactly 5 are counted.
        let racers: Vec<_> = (0..12).map(|_| backend.open()).collect();
        let counted = std::thread::scope(|scope| {
            let handles: Vec<_> = racers
                .into_iter()
                .enumerate()
                .map(|(i, store)| {
                    let limits = &limits;
                    scope.spawn(move || {
                        store.settle_guess(
                            "hal",
                            &format!("198.51.100.{i}"),
                            NOW,
                            limits,
                            Answer::Wrong,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread").expect("settle"))
                .filter(|s| matches!(s, Settled::Counted(_)))
                .count()
        });
        assert_eq!(counted, 5, "{}", backend.name());
    }
}

#[test]
fn racing_reservations_never_pass_the_user_limit() {
    let limits = Limits {
        backoff_after: 100,
        backoff_max: 3600,
        user_limit: 5,
    };
    for backend in backends() {
        let setup = backend.open();
        for i in 0..4 {
            setup
                .reserve_guess("fay", &format!("192.0.2.{i}"), NOW, &limits)
                .expect("reserve");
        }
        drop(setup);
        let racers: Vec<_> = (0..12).map(|_| backend.open()).collect();
        let granted = std::thread::scope(|scope| {
            let handles: Vec<_> = racers
                .into_iter()
                .enumerate()
                .map(|(i, store)| {
                    let limits = &limits;
                    scope.spawn(move || {
                        store.reserve_guess("fay", &format!("198.51.100.{i}"), NOW, limits)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread").expect("reserve"))
                .filter(|r| matches!(r, Reservation::Granted(_)))
                .count()
        });
        assert_eq!(granted, 1, "{}", backend.name());
    }
}

#[test]
fn staged_grants_are_taken_once_by_their_user_before_they_expire() {
    for backend in backends() {
        let name = backend.name();
        let store = backend.open();
        let enrolled = token("gil", "default", Kind::Totp, true);
        let hashes = recovery_hashes();
        let enroll = Grant::Enroll {
            token: enrolled.clone(),
            step: 42,
            recovery: hashes.clone(),
        };
        store
            .stage_grant("n1", "gil", &enroll, NOW + 600, NOW)
            .expect("stage");
        // Another user's take consumes it and gets nothing.
        assert_eq!(
            store.take_staged("n1", "mallory", NOW).expect("t"),
            None,
            "{name}"
        );
        assert_eq!(
            store.take_staged("n1", "gil", NOW).expect("t"),
            None,
            "{name}"
        );
        store
            .stage_grant("n2", "gil", &enroll, NOW + 600, NOW)
            .expect("stage");
        let Some(Grant::Enroll {
            token,
            step,
            recovery,
        }) = store.take_staged("n2", "gil", NOW).expect("t")
        else {
            panic!("{name}: the staged enrollment");
        };
        assert_eq!(step, 42);
        assert_eq!(recovery, hashes, "{name}: the recovery codes");
        assert_eq!(token.secret, enrolled.secret, "{name}: the key comes back");
        assert_eq!((token.device.as_str(), token.last_step), ("default", None));
        assert_eq!(
            store.take_staged("n2", "gil", NOW).expect("t"),
            None,
            "{name}: once"
        );
        // Expired stages give nothing, and a new stage sweeps them away.
        let grace = Grant::Grace {
            ip: Some(("192.0.2.9".to_string(), NOW + 3600)),
            key: Some((FP_A.to_string(), NOW + 7200)),
        };
        store
            .stage_grant("n3", "gil", &grace, NOW + 10, NOW)
            .expect("stage");
        assert_eq!(
            store.take_staged("n3", "gil", NOW + 10).expect("t"),
            None,
            "{name}"
        );
        store
            .stage_grant("n4", "gil", &grace, NOW + 10, NOW)
            .expect("stage");
        store
            .stage_grant("n5", "gil", &grace, NOW + 900, NOW + 20)
            .expect("stage");
        assert_eq!(
            store.take_staged("n4", "gil", NOW).expect("t"),
            None,
            "{name}: swept"
        );
        assert_eq!(
            store.take_staged("n5", "gil", NOW + 30).expect("t"),
            Some(grace)
        );
        // Committing: enroll_at_login stores it and closes the window, once.
        store
            .open_enroll_window("gil", NOW + 600, "root")
            .expect("window");
        store
            .enroll_at_login(&token, step, &recovery)
            .expect("enroll at login");
        let stored = store.tokens("gil").expect("tokens");
        assert_eq!(stored[0].last_step, Some(42), "{name}");
        assert_eq!(store.enroll_window("gil", NOW).expect("w"), None, "{name}");
        assert_eq!(
            store.recovery_count("gil").expect("count").unused,
            recovery.len(),
            "{name}: the recovery codes are stored with the token"
        );
        assert!(matches!(
            store.enroll_at_login(&token, step, &recovery),
            Err(StoreError::AlreadyEnrolled { .. })
        ));
    }
}

/// What an administrator sets on a token, on both backends: a disabled or
/// expired token claims nothing (in the claim's own write), enabling it
/// again works, a confirmed replacement retires the user's other tokens and
/// takes their device name, and pruning removes only old pending tokens.
#[test]
fn stopped_tokens_claim_nothing_and_a_confirmed_replacement_retires_the_rest() {
    for backend in backends() {
        let name = backend.name();
        let store = backend.open();
        enroll(
            &*store,
            token("ada", "phone", Kind::Totp, true),
            EnrollMode::Add,
        )
        .expect("e");
        let id = id_of(&*store, "ada", "phone");
        assert_eq!(
            store.set_disabled("ada", None, Some(NOW)).expect("d"),
            1,
            "{name}"
        );
        assert_eq!(
            store.set_disabled("ada", None, Some(NOW)).expect("d"),
            0,
            "{name}: again"
        );
        assert_eq!(
            store.claim_step(&stored(&*store, id), 100, NOW).expect("c"),
            Claim::AlreadyUsed,
            "{name}: disabled"
        );
        assert_eq!(
            store.set_disabled("ada", Some("phone"), None).expect("e"),
            1,
            "{name}"
        );
        assert_eq!(
            store.claim_step(&stored(&*store, id), 100, NOW).expect("c"),
            Claim::Claimed,
            "{name}: enabled"
        );
        let mut expiring = token("ada", "tablet", Kind::Totp, true);
        expiring.life.expires = Some(NOW + 10);
        // A key of its own: with the phone's, it would share the phone's
        // used steps (`Token::shares_codes_with`).
        expiring.secret = Secret::from_base32("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP").expect("key");
        enroll(&*store, expiring, EnrollMode::Add).expect("e");
        let tablet = id_of(&*store, "ada", "tablet");
        assert_eq!(
            store
                .claim_step(&stored(&*store, tablet), 100, NOW + 10)
                .expect("c"),
            Claim::AlreadyUsed,
            "{name}: expired"
        );
        assert_eq!(
            store
                .claim_step(&stored(&*store, tablet), 100, NOW + 9)
                .expect("c"),
            Claim::Claimed,
            "{name}: before expiry"
        );
        // A pending replacement: the old tokens work until it is confirmed.
        let mut new = token("ada", "phone (new)", Kind::Totp, false);
        new.life.replaces = Some("phone".to_string());
        store
            .grant_key_grace("ada", FP_A, NOW + 600)
            .expect("key grace");
        store
            .grant_key_grace("ada", FP_B, NOW + 600)
            .expect("key grace");
        enroll(&*store, new, EnrollMode::Replacement).expect("replacement");
        // `reset`: key graces end when the replacement is made.
        assert!(
            store.key_graces("ada", NOW).expect("k").is_empty(),
            "{name}: key graces outlive a reset"
        );
        store
            .grant_key_grace("ada", FP_A, NOW + 600)
            .expect("key grace");
        assert_eq!(store.tokens("ada").expect("t").len(), 3, "{name}");
        let new_id = id_of(&*store, "ada", "phone (new)");
        assert_eq!(
            store
                .confirm(&stored(&*store, new_id), NOW, 200)
                .expect("confirm"),
            Claim::Claimed,
            "{name}"
        );
        let left = store.tokens("ada").expect("t");
        assert_eq!(left.len(), 1, "{name}: {left:?}");
        assert!(
            store.key_graces("ada", NOW).expect("k").is_empty(),
            "{name}: and again when it is confirmed"
        );
        assert_eq!(
            (
                left[0].id,
                left[0].device.as_str(),
                left[0].life.replaces.clone()
            ),
            (new_id, "phone", None),
            "{name}"
        );
        // Prune: only pending tokens made before the cut.
        enroll(
            &*store,
            token("bo", "default", Kind::Totp, false),
            EnrollMode::Add,
        )
        .expect("e");
        assert_eq!(
            store.prune_pending(NOW).expect("p"),
            Vec::<(String, String)>::new()
        );
        assert_eq!(
            store.prune_pending(NOW + 1).expect("p"),
            [("bo".to_string(), "default".to_string())],
            "{name}"
        );
        assert_eq!(
            store.tokens("ada").expect("t").len(),
            1,
            "{name}: active kept"
        );
    }
}

/// `totp replace`'s change: a confirmed new device in place of all the
/// user's tokens, in one transaction.
#[test]
fn a_confirmed_replacement_of_every_device_is_one_change() {
    let limits = Limits {
        backoff_after: 5,
        backoff_max: 3600,
        user_limit: 10,
    };
    for backend in backends() {
        let name = backend.name();
        let store = backend.open();
        enroll(
            &*store,
            token("cy", "phone", Kind::Totp, true),
            EnrollMode::Add,
        )
        .expect("e");
        enroll(
            &*store,
            token("cy", "tablet", Kind::Totp, false),
            EnrollMode::Add,
        )
        .expect("e");
        enroll(
            &*store,
            token("di", "phone", Kind::Totp, true),
            EnrollMode::Add,
        )
        .expect("e");
        store.grant_grace("cy", "10.0.0.1", NOW + 600).expect("g");
        store.grant_grace("di", "10.0.0.1", NOW + 600).expect("g");
        assert!(matches!(
            store.reserve_guess("cy", "a", NOW, &limits).expect("r"),
            Reservation::Granted(_)
        ));
        assert_eq!(
            store.graces("cy", NOW).expect("graces"),
            [("10.0.0.1".to_string(), NOW + 600)],
            "{name}"
        );
        store
            .set_disabled("cy", Some("phone"), Some(NOW))
            .expect("d");

        // Not confirmed: refused, nothing changed.
        let unconfirmed = token("cy", "new", Kind::Totp, false);
        assert!(
            store
                .enroll(
                    &[Enrollment {
                        token: unconfirmed,
                        recovery: Some(recovery_hashes()),
                    }],
                    EnrollMode::ReplaceConfirmed,
                )
                .is_err(),
            "{name}"
        );
        assert_eq!(store.tokens("cy").expect("t").len(), 2, "{name}");

        let mut new = token("cy", "phone", Kind::Totp, true);
        new.last_step = Some(300);
        store
            .enroll(
                &[Enrollment {
                    token: new,
                    recovery: Some(recovery_hashes()),
                }],
                EnrollMode::ReplaceConfirmed,
            )
            .expect("replace");
        let left = store.tokens("cy").expect("t");
        assert_eq!(left.len(), 1, "{name}: {left:?}");
        assert_eq!(left[0].last_step, Some(300), "{name}");
        // The administrator's disable carries over; the step typed is used.
        assert_eq!(left[0].life.disabled, Some(NOW), "{name}");
        store.set_disabled("cy", None, None).expect("enable");
        assert_eq!(
            store
                .claim_step(&stored(&*store, left[0].id), 300, NOW)
                .expect("c"),
            Claim::AlreadyUsed,
            "{name}"
        );
        assert_eq!(store.recovery_count("cy").expect("r").unused, 10, "{name}");
        assert!(store.graces("cy", NOW).expect("g").is_empty(), "{name}");
        // The failure counts stay: replacing a phone clears no lock.
        assert_eq!(
            store.failures("cy", "a", NOW).expect("f").source_count,
            1,
            "{name}"
        );
        // Another user: untouched.
        assert_eq!(store.tokens("di").expect("t").len(), 1, "{name}");
        assert_eq!(store.graces("di", NOW).expect("g").len(), 1, "{name}");

        // `totp remove-device`: the device and the grace periods go in one
        // change, and neither when the device is the last usable one.
        enroll(
            &*store,
            token("di", "tablet", Kind::Totp, true),
            EnrollMode::Add,
        )
        .expect("e");
        assert!(
            store
                .delete_device_unless_last("di", "tablet", NOW)
                .expect("rm"),
            "{name}"
        );
        assert!(store.graces("di", NOW).expect("g").is_empty(), "{name}");
        store.grant_grace("di", "10.0.0.2", NOW + 600).expect("g");
        assert!(
            !store
                .delete_device_unless_last("di", "phone", NOW)
                .expect("rm"),
            "{name}"
        );
        assert_eq!(store.graces("di", NOW).expect("g").len(), 1, "{name}");
    }
}

/// What ends a user's graces also ends the ones a login staged and has
/// not committed yet: otherwise a login past its code brings them back.
#[test]
fn forgetting_graces_also_ends_the_staged_ones() {
    for backend in backends() {
        let name = backend.name();
        let store = backend.open();
        let fp = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let grace = Grant::Grace {
            ip: Some(("10.0.0.9".to_string(), NOW + 600)),
            key: Some((fp.to_string(), NOW + 600)),
        };
        store
            .stage_grant("n-1", "fay", &grace, NOW + 600, NOW)
            .expect("stage");
        store.forget_grace("fay").expect("forget");
        assert_eq!(
            store.take_staged("n-1", "fay", NOW).expect("take"),
            None,
            "{name}: a staged grace outlived forget"
        );
        store
            .stage_grant("n-2", "fay", &grace, NOW + 600, NOW)
            .expect("stage");
        store.forget_key_grace("fay", fp).expect("forget --key");
        assert_eq!(
            store.take_staged("n-2", "fay", NOW).expect("take"),
            None,
            "{name}: a staged key grace outlived forget --key"
        );
    }
}

// ---------------------------------------------------------------------
// Attacks on the pipelined PostgreSQL login store (h-att3): the schema
// check that goes out with the login's first statement.
// ---------------------------------------------------------------------

/// A fresh PostgreSQL store opened the way the module opens one for a
/// login (`PgStore::open_for_login`: the schema version is checked with
/// the first statement, not at connect).
fn login_store(database: &common::postgres::Database) -> PgStore {
    pg_store(database, PgStore::open_for_login, Duration::from_secs(20))
}

/// A PostgreSQL store of `database`, opened with `open` (`PgStore::open`,
/// `open_for_login` or `create`) and `timeout` as its `db_timeout`.
fn pg_store(
    database: &common::postgres::Database,
    open: fn(&PgSettings<'_>) -> Result<PgStore, StoreError>,
    timeout: Duration,
) -> PgStore {
    common::open_pg(&database.url, Some(&database.password_file), open, timeout)
        .expect("open postgres")
}

/// A PostgreSQL backend alone (None where no server can be started).
fn postgres_only() -> Option<(common::postgres::Cluster, common::postgres::Database)> {
    if !common::postgres_present() {
        return None;
    }
    match Backend::postgres() {
        Backend::Postgres {
            _cluster: cluster,
            database,
        } => Some((cluster, database)),
        Backend::Sqlite { .. } => None,
    }
}

fn set_schema_version(
    cluster: &common::postgres::Cluster,
    database: &common::postgres::Database,
    version: i64,
) {
    cluster.psql(
        &database.name,
        &format!("UPDATE pam_totp_meta SET value = {version} WHERE key = 'schema_version'"),
    );
}

/// `pam_sm_acct_mgmt`/`setcred` commit what the auth phase staged with a
/// fresh login store (`commit_staged`) whose first statement is
/// `take_staged`: a `DELETE … RETURNING`, a statement that answers with
/// rows. The deferred schema check lets a first statement that answers
/// with rows go out together with the check, before the check's answer is
/// known; the answer is then dropped, but the `DELETE` has run (and,
/// outside a transaction, committed). A store whose schema version is
/// newer or older than the build must be refused before anything is read
/// or written: the staged row must still be there afterwards.
#[test]
fn a_login_store_with_a_refused_schema_takes_no_staged_grant() {
    let Some((cluster, database)) = postgres_only() else {
        return;
    };
    let current = pam_totp::store::SCHEMA_VERSION;
    let grace = Grant::Grace {
        ip: Some(("192.0.2.2".to_string(), NOW + 60)),
        key: None,
    };
    let mut broken = Vec::new();
    // Newer, older, and none at all (the meta table gone, the tables
    // still there).
    for (case, nonce) in [
        ("newer", "n-newer"),
        ("older", "n-older"),
        ("missing", "n-missing"),
    ] {
        set_schema_version(&cluster, &database, current);
        login_store(&database)
            .stage_grant(nonce, "gil", &grace, NOW + 600, NOW)
            .expect("stage");
        match case {
            "newer" => set_schema_version(&cluster, &database, current + 1),
            "older" => set_schema_version(
                &cluster,
                &database,
                pam_totp::store::LOGIN_OLDEST_SCHEMA - 1,
            ),
            _ => {
                cluster.psql(
                    &database.name,
                    "ALTER TABLE pam_totp_meta RENAME TO pam_totp_meta_away",
                );
            }
        }
        let taken = login_store(&database).take_staged(nonce, "gil", NOW);
        assert!(
            taken.is_err(),
            "schema {case}: the login store answered {taken:?}"
        );
        let left = cluster.psql(
            &database.name,
            &format!("SELECT count(*) FROM staged WHERE nonce = '{nonce}'"),
        );
        if left != "1" {
            broken.push(format!(
                "schema {case} (build {current}): refused ({}), yet the staged row was deleted",
                taken.err().map(|e| e.to_string()).unwrap_or_default()
            ));
        }
        if case == "missing" {
            cluster.psql(
                &database.name,
                "ALTER TABLE pam_totp_meta_away RENAME TO pam_totp_meta",
            );
        }
    }
    assert!(
        broken.is_empty(),
        "a store refused for its schema was written before the refusal:\n{}",
        broken.join("\n")
    );
}

/// A login store refused for its schema version must stay refused: the
/// check is taken out of the session when the first statement goes out,
/// so a caller that goes on with the same store after the refusal (a
/// second statement, a retry) would read and write a store this build
/// does not know. First statement inside a transaction (the settlement:
/// the check goes alone, first), then a read, then a settlement again:
/// every one refused, nothing counted.
#[test]
fn a_login_store_refused_for_its_schema_stays_refused() {
    let Some((cluster, database)) = postgres_only() else {
        return;
    };
    let current = pam_totp::store::SCHEMA_VERSION;
    set_schema_version(&cluster, &database, current + 1);
    let limits = Limits::default();
    // First statement a settlement (a transaction: the check goes first).
    let store = login_store(&database);
    let first = store.settle_guess("hal", "a", NOW, &limits, Answer::Wrong);
    assert!(
        matches!(first, Err(StoreError::SchemaTooNew { .. })),
        "{first:?}"
    );
    let second = store.settle_guess("hal", "a", NOW, &limits, Answer::Wrong);
    assert!(
        second.is_err(),
        "the same store, refused a moment ago, settled: {second:?}"
    );
    // First statement a read (it goes out with the check).
    let store = login_store(&database);
    let first = store.tokens("hal");
    assert!(first.is_err(), "{first:?}");
    let second = store.settle_guess("hal", "a", NOW, &limits, Answer::Wrong);
    assert!(
        second.is_err(),
        "the same store, refused a moment ago, settled: {second:?}"
    );
    let counted = cluster.psql(
        &database.name,
        "SELECT (SELECT count(*) FROM guesses) + (SELECT count(*) FROM failures)",
    );
    assert_eq!(
        counted, "0",
        "a store refused for its schema version wrote guesses"
    );
}

/// A right code's settlement whose transaction dies after the claim's
/// answer came back: the server connection is killed while the deferred
/// give-back runs (it goes with the `COMMIT`), an error is raised by the
/// `COMMIT` itself (a deferred constraint trigger on the claimed row), or
/// the connection is killed during the `COMMIT`. In every case the login
/// must be told no, and nothing may stay: no claim, the count as before;
/// the same step is claimable afterwards.
#[test]
fn a_settlement_whose_transaction_dies_after_the_claim_leaves_nothing_behind() {
    let Some((cluster, database)) = postgres_only() else {
        return;
    };
    let limits = Limits {
        backoff_after: 2,
        backoff_max: 3600,
        user_limit: 5,
    };
    let admin = login_store(&database);
    admin
        .settle_guess("ivy", "a", NOW, &limits, Answer::Wrong)
        .expect("wrong");
    let checked = pg_store(&database, PgStore::open, Duration::from_secs(20));
    enroll(
        &checked,
        token("ivy", "phone", Kind::Totp, true),
        EnrollMode::Add,
    )
    .expect("add");
    let phone = stored(&checked, id_of(&checked, "ivy", "phone"));
    let kill = "CREATE OR REPLACE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS \
                $$BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); \
                RETURN NULL; END$$";
    let raise = "CREATE OR REPLACE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS \
                 $$BEGIN RAISE EXCEPTION 'refused at commit by the test'; END$$";
    let cases = [
        (
            "the backend killed while the claim clears the source's failures",
            kill,
            "CREATE TRIGGER die BEFORE DELETE ON failures FOR EACH ROW EXECUTE FUNCTION die()",
            "failures",
        ),
        (
            "an error raised by the COMMIT",
            raise,
            "CREATE CONSTRAINT TRIGGER die AFTER UPDATE ON tokens DEFERRABLE INITIALLY DEFERRED \
             FOR EACH ROW EXECUTE FUNCTION die()",
            "tokens",
        ),
        (
            "the backend killed during the COMMIT",
            kill,
            "CREATE CONSTRAINT TRIGGER die AFTER UPDATE ON tokens DEFERRABLE INITIALLY DEFERRED \
             FOR EACH ROW EXECUTE FUNCTION die()",
            "tokens",
        ),
    ];
    for (what, function, trigger, table) in cases {
        cluster.psql(&database.name, &format!("{function}; {trigger}"));
        let store = login_store(&database);
        let settled = store.settle_guess(
            "ivy",
            "a",
            NOW,
            &limits,
            Answer::Right {
                token: &phone,
                step: 300,
            },
        );
        assert!(settled.is_err(), "{what}: yet settled: {settled:?}");
        // The same store after the failure: an error or a right answer,
        // never a panic.
        let _ = store.tokens("ivy");
        drop(store);
        cluster.psql(&database.name, &format!("DROP TRIGGER die ON {table}"));
        assert_eq!(
            stored(&checked, phone.id).last_step,
            None,
            "{what}: the claim must not stay"
        );
        let left = checked.failures("ivy", "a", NOW).expect("failures");
        assert_eq!(
            (left.source_count, left.user_recent),
            (1, 1),
            "{what}: the counts must be as before"
        );
    }
    assert_eq!(
        login_store(&database)
            .settle_guess(
                "ivy",
                "a",
                NOW,
                &limits,
                Answer::Right {
                    token: &phone,
                    step: 300
                }
            )
            .expect("settle"),
        Settled::GivenBack(Some(Claim::Claimed))
    );
}

/// A login store like `login_store`, with a short `db_timeout` (it is the
/// session's `lock_timeout` and `statement_timeout`).
fn login_store_within(database: &common::postgres::Database, timeout: Duration) -> PgStore {
    pg_store(database, PgStore::open_for_login, timeout)
}

/// Queued statements that fail by timing out: the per-user advisory lock
/// (it goes out with the settlement's first read) held elsewhere past
/// `lock_timeout`, and a guess's count (a deferred write) running past
/// `statement_timeout`. The settlement must fail within about the
/// timeout, claim nothing and count nothing; afterwards the same step is
/// claimable.
#[test]
fn a_settlement_whose_queued_statements_time_out_leaves_nothing_behind() {
    let Some((cluster, database)) = postgres_only() else {
        return;
    };
    let limits = Limits::default();
    let checked = pg_store(&database, PgStore::open, Duration::from_secs(20));
    enroll(
        &checked,
        token("jo", "phone", Kind::Totp, true),
        EnrollMode::Add,
    )
    .expect("add");
    let phone = stored(&checked, id_of(&checked, "jo", "phone"));
    let right = Answer::Right {
        token: &phone,
        step: 400,
    };
    // The lock held by another session for 6 s.
    let query: std::collections::HashMap<_, _> = database
        .url
        .split_once('?')
        .expect("query")
        .1
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let bin = common::postgres::bin_dir().expect("bin");
    let mut holder = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join("psql"))
        .args(["-X", "-q", "-h", query["host"], "-p", query["port"], "-d"])
        .arg(&database.name)
        .args([
            "-c",
            "SELECT pg_advisory_lock(hashtextextended('jo', 1)); SELECT pg_sleep(6)",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cluster.psql(
        &database.name,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
    ) != "1"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was not taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for answer in [right, Answer::Wrong] {
        let started = std::time::Instant::now();
        let store = login_store_within(&database, Duration::from_secs(1));
        let settled = store.settle_guess("jo", "a", NOW, &limits, answer);
        assert!(
            settled.is_err(),
            "the lock is held elsewhere, yet: {settled:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the lock wait outlived lock_timeout: {:?}",
            started.elapsed()
        );
    }
    let _ = holder.wait();
    // A wrong guess's count, and a right code's claim (sent with the
    // COMMIT), that outlive statement_timeout.
    cluster.psql(
        &database.name,
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS \
         $$BEGIN PERFORM pg_sleep(3); RETURN NEW; END$$; \
         CREATE TRIGGER slow BEFORE INSERT ON guesses FOR EACH ROW EXECUTE FUNCTION slow(); \
         CREATE TRIGGER slow BEFORE UPDATE ON tokens FOR EACH ROW EXECUTE FUNCTION slow()",
    );
    for answer in [right, Answer::Wrong] {
        let store = login_store_within(&database, Duration::from_secs(1));
        let settled = store.settle_guess("jo", "a", NOW, &limits, answer);
        assert!(settled.is_err(), "the write timed out, yet: {settled:?}");
    }
    cluster.psql(
        &database.name,
        "DROP TRIGGER slow ON guesses; DROP TRIGGER slow ON tokens",
    );
    assert_eq!(
        stored(&checked, phone.id).last_step,
        None,
        "no claim may stay"
    );
    let left = checked.failures("jo", "a", NOW).expect("failures");
    assert_eq!(
        (left.source_count, left.user_recent),
        (0, 0),
        "nothing may be counted"
    );
    assert_eq!(
        login_store(&database)
            .settle_guess("jo", "a", NOW, &limits, right)
            .expect("settle"),
        Settled::GivenBack(Some(Claim::Claimed))
    );
}

/// The deferred schema check sends the login's first read together with
/// the check, before the check's answer is known: the read runs on the
/// server of a store this build refuses (its answer is then dropped). The
/// promise is stricter: a store whose schema version is not this build's
/// is refused before anything is read. Shown by the server's own count of
/// scans of `tokens` (flushed when the refused login's backend exits).
#[test]
fn a_login_store_with_a_refused_schema_reads_nothing() {
    let Some((cluster, database)) = postgres_only() else {
        return;
    };
    let current = pam_totp::store::SCHEMA_VERSION;
    let scans = || {
        // A fresh backend each time: it sees every flushed count.
        cluster
            .psql(
                &database.name,
                "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) \
                 FROM pg_stat_user_tables WHERE relname = 'tokens'",
            )
            .parse::<i64>()
            .expect("scans")
    };
    set_schema_version(&cluster, &database, current + 1);
    std::thread::sleep(Duration::from_millis(1500));
    let before = scans();
    {
        let store = login_store(&database);
        let read = store.tokens("kay");
        assert!(
            matches!(read, Err(StoreError::SchemaTooNew { .. })),
            "{read:?}"
        );
    }
    // The backend flushes its counts when it exits.
    std::thread::sleep(Duration::from_millis(1500));
    let after = scans();
    assert_eq!(
        after,
        before,
        "schema version {} refused, yet the login's read of tokens ran on the server first",
        current + 1
    );
}

/// A transaction that fails on the client after one of its writes went
/// out (stage_grant: the DELETE of expired stages is sent, then the step
/// does not fit a BIGINT) and one that fails before anything went out (a
/// grace without an address or a key), each followed on the same login
/// store by a transaction that commits: the failed one's writes must not
/// ride along with the next COMMIT (its ROLLBACK must have gone out, or
/// nothing must have been sent), and the store must keep working.
#[test]
fn a_failed_transaction_on_a_reused_login_store_leaves_nothing_behind() {
    let Some((cluster, database)) = postgres_only() else {
        return;
    };
    let grace = Grant::Grace {
        ip: Some(("192.0.2.2".to_string(), NOW + 60)),
        key: None,
    };
    let store = login_store(&database);
    // A stage that expires at NOW + 10.
    store
        .stage_grant("n-old", "lea", &grace, NOW + 10, NOW)
        .expect("stage");
    // At NOW + 100 it is expired: the DELETE goes out, then the step
    // overflows.
    let bad = Grant::Enroll {
        token: token("lea", "default", Kind::Totp, false),
        step: u64::MAX,
        recovery: Vec::new(),
    };
    let failed = store.stage_grant("n-bad", "lea", &bad, NOW + 600, NOW + 100);
    assert!(failed.is_err(), "{failed:?}");
    // Nothing sent yet when this one fails.
    let empty = Grant::Grace {
        ip: None,
        key: None,
    };
    let failed = store.stage_grant("n-empty", "lea", &empty, NOW + 600, NOW + 100);
    assert!(failed.is_err(), "{failed:?}");
    // The next transaction on the same connection commits (at NOW - 100
    // nothing is expired: it drops nothing of its own).
    store
        .stage_grant("n-next", "lea", &grace, NOW + 600, NOW - 100)
        .expect("the store works after the failures");
    store
        .settle_guess("lea", "a", NOW, &Limits::default(), Answer::Wrong)
        .expect("settle");
    assert_eq!(
        cluster.psql(
            &database.name,
            "SELECT string_agg(nonce, ',' ORDER BY nonce) FROM staged"
        ),
        "n-next,n-old",
        "the failed transaction's DELETE committed with a later one"
    );
    assert_eq!(
        cluster.psql(&database.name, "SELECT count(*) FROM guesses"),
        "1"
    );
}
