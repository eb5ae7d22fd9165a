//! Attacks on 6e47f05: on PostgreSQL a right code's claim and what it
//! leaves on the source's failures are one statement with data-modifying
//! CTEs (`sql::CLAIM_AND_SETTLE`, once `CLAIM_AND_GIVE_BACK`), sent with the
//! COMMIT (`Session::send_committing`). Since 2026-12-02 both backends
//! write only the net effect of taking a right code's guess and giving it
//! back (`SqlStore::settle_given_back`); the oracle is a third store that
//! still takes the guess and gives it back in separate steps
//! (`reserve_guess`, `claim_step`, `release_guess`): the same settlements
//! on all three must leave the same counts, claims and answers.

use crate::common;
use crate::store_contract::{enroll, token};

use std::path::PathBuf;
use std::time::Duration;

use common::KEY;

use pam_totp::ratelimit::Limits;
use pam_totp::secret::Secret;
use pam_totp::store::{
    Answer, Claim, EnrollMode, Kind, LoginStore, PgSettings, PgStore, Reservation, Settled,
    SqliteStore, Store, StoreError, Token,
};

const NOW: i64 = 1_700_000_000;

fn current(store: &dyn Store, user: &str, device: &str) -> Token {
    store
        .tokens(user)
        .expect("tokens")
        .into_iter()
        .find(|t| t.device == device)
        .expect("token")
}

fn pg_open(
    url: &str,
    password: Option<&std::path::Path>,
    open: fn(&PgSettings<'_>) -> Result<PgStore, StoreError>,
    timeout: Duration,
) -> PgStore {
    common::open_pg(url, password, open, timeout).expect("open postgres")
}

struct Pg {
    cluster: common::postgres::Cluster,
    database: common::postgres::Database,
}

impl Pg {
    fn start() -> Option<Pg> {
        if !common::postgres_present() {
            return None;
        }
        let cluster = common::postgres::Cluster::start();
        let database = cluster.database();
        drop(pg_open(
            &database.url,
            Some(&database.password_file),
            PgStore::create,
            Duration::from_secs(20),
        ));
        Some(Pg { cluster, database })
    }
    fn login(&self, timeout: Duration) -> PgStore {
        pg_open(
            &self.database.url,
            Some(&self.database.password_file),
            PgStore::open_for_login,
            timeout,
        )
    }
    fn admin(&self) -> PgStore {
        pg_open(
            &self.database.url,
            Some(&self.database.password_file),
            PgStore::open,
            Duration::from_secs(20),
        )
    }
    fn sql(&self, sql: &str) -> String {
        self.cluster.psql(&self.database.name, sql)
    }
    /// failures rows and guesses, as text.
    fn state(&self) -> String {
        format!(
            "failures[{}] guesses[{}] steps[{}]",
            self.sql(
                r#"SELECT coalesce(string_agg("user"||'/'||rhost||'='||count||'@'||last, ' ' ORDER BY "user", rhost), '') FROM failures"#
            ),
            self.sql(
                r#"SELECT coalesce(string_agg("user"||'@'||at, ' ' ORDER BY "user", at), '') FROM guesses"#
            ),
            self.sql(
                r#"SELECT coalesce(string_agg("user"||'/'||device||'='||coalesce(last_step::text,'-'), ' ' ORDER BY "user", device), '') FROM tokens"#
            ),
        )
    }
}

fn sqlite_state(db: &PathBuf) -> String {
    let conn = rusqlite::Connection::open(db).expect("open");
    let one = |sql: &str| -> String {
        conn.query_row(sql, [], |r| r.get::<_, Option<String>>(0))
            .expect("query")
            .unwrap_or_default()
    };
    format!(
        "failures[{}] guesses[{}] steps[{}]",
        one(
            r#"SELECT group_concat(x, ' ') FROM (SELECT "user"||'/'||rhost||'='||count||'@'||last AS x FROM failures ORDER BY "user", rhost)"#
        ),
        one(
            r#"SELECT group_concat(x, ' ') FROM (SELECT "user"||'@'||at AS x FROM guesses ORDER BY "user", at)"#
        ),
        one(
            r#"SELECT group_concat(x, ' ') FROM (SELECT "user"||'/'||device||'='||coalesce(last_step,'-') AS x FROM tokens ORDER BY "user", device)"#
        ),
    )
}

/// A tiny deterministic generator (no extra crate).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A settlement as the store made it before it wrote only the net effect:
/// the guess taken (counted at the source and for the user), the claim,
/// the guess given back; each step its own transaction (the slow path's
/// statements, which are unchanged).
fn settle_the_old_way(
    store: &dyn LoginStore,
    rhost: &str,
    now: i64,
    limits: &Limits,
    answer: Answer<'_>,
) -> Result<Settled, StoreError> {
    match store.reserve_guess("ada", rhost, now, limits)? {
        Reservation::Locked(lock) => Ok(Settled::Locked(lock)),
        Reservation::Granted(counted) => match answer {
            Answer::Wrong => Ok(Settled::Counted(counted)),
            Answer::Refused => {
                store.release_guess("ada", rhost, false, now)?;
                Ok(Settled::GivenBack(None))
            }
            Answer::Right { token, step } | Answer::RightOnSharedKey { token, step } => {
                let claimed = store.claim_step(token, step, now)?;
                store.release_guess("ada", rhost, claimed == Claim::Claimed, now)?;
                Ok(Settled::GivenBack(Some(claimed)))
            }
        },
    }
}

/// Differential: SQLite and PostgreSQL (each writing a settlement's net
/// effect) against a SQLite store settling the old way
/// (`settle_the_old_way`), the same random settlements: wrong codes, right codes of
/// fresh, replayed and old steps, refused ones, from three sources, with
/// guesses at the same second, tokens disabled and re-enabled, a token
/// deleted and re-added (a stale `Token`: key/id mismatch), the source's
/// count forced to 0 or negative, `unlock`s. Every answer and the whole
/// state after every step must be the same.
#[test]
fn net_settlements_leave_what_taking_and_giving_back_leaves() {
    let Some(pg) = Pg::start() else { return };
    let dir = common::dirs::private_tempdir();
    let db = dir.path().join("oracle.db");
    SqliteStore::create(&db).expect("create sqlite");
    let lite = SqliteStore::open(&db).expect("open sqlite");
    let old_db = dir.path().join("old-way.db");
    SqliteStore::create(&old_db).expect("create sqlite");
    let old = SqliteStore::open(&old_db).expect("open sqlite");
    let admin = pg.admin();
    let limits = Limits {
        backoff_after: 3,
        backoff_max: 2,
        user_limit: 8,
    };
    let stores: [&dyn Store; 3] = [&lite, &admin, &old];
    for s in stores {
        enroll(s, token("ada", "phone", Kind::Totp, true), EnrollMode::Add).expect("enroll");
        enroll(s, token("ada", "key", Kind::Hotp, true), EnrollMode::Add).expect("enroll");
    }
    let mut stale: [Option<Token>; 3] = [None, None, None];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut now = NOW;
    let mut rekeys = 0u64;
    let mut log = Vec::new();
    let pg_login = pg.login(Duration::from_secs(20));
    // What the run went through (asserted at the end).
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for round in 0..600 {
        // Time moves by 0, 1 or up to 40 000 s (past the 24 h window now
        // and then: old guesses are dropped on the way).
        now += match rng.below(10) {
            0..=4 => 0,
            5..=7 => 1,
            8 => 3,
            _ => 40_000,
        };
        let rhost = ["a", "b", "c"][rng.below(3) as usize];
        let op = rng.below(16);
        let step = 10 + rng.below(12);
        if op == 11 {
            rekeys += 1;
        }
        let mut answers = Vec::new();
        for (i, s) in stores.iter().enumerate() {
            // The PostgreSQL side settles through a login store; the third
            // store the old way.
            let login: &dyn LoginStore = match i {
                0 => &lite,
                1 => &pg_login,
                _ => &old,
            };
            let settle = |rhost: &str, answer: Answer<'_>| {
                if i == 2 {
                    settle_the_old_way(login, rhost, now, &limits, answer)
                } else {
                    login.settle_guess("ada", rhost, now, &limits, answer)
                }
            };
            let answer = match op {
                0..=3 => settle(rhost, Answer::Wrong),
                4..=7 => {
                    let t = current(*s, "ada", "phone");
                    settle(rhost, Answer::Right { token: &t, step })
                }
                8 => {
                    let t = current(*s, "ada", "key");
                    settle(rhost, Answer::Right { token: &t, step })
                }
                9 => settle(rhost, Answer::Refused),
                10 => {
                    // Disable or enable the phone.
                    let on = rng.0.is_multiple_of(2);
                    s.set_disabled("ada", Some("phone"), on.then_some(now))
                        .map(|_| Settled::GivenBack(None))
                }
                11 => {
                    // A stale token: read, then the device deleted and
                    // added again (another row, same key).
                    let t = current(*s, "ada", "phone");
                    s.delete_device("ada", "phone").expect("delete");
                    // With another key: SQLite gives the new row the
                    // deleted one's id, which with the same key would be
                    // the same token there alone.
                    let mut fresh = token("ada", "phone", Kind::Totp, true);
                    fresh.secret = Secret::from_base32(if rekeys.is_multiple_of(2) {
                        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
                    } else {
                        KEY
                    })
                    .expect("key");
                    enroll(*s, fresh, EnrollMode::Add).expect("enroll");
                    stale[i] = Some(t);
                    Ok(Settled::GivenBack(None))
                }
                12 => match &stale[i] {
                    Some(t) => settle(rhost, Answer::Right { token: t, step }),
                    None => Ok(Settled::GivenBack(None)),
                },
                13 => {
                    // The source's count forced to 0 or below.
                    let forced = -(rng.0 as i64 % 3).abs();
                    let sql = format!(
                        r#"UPDATE failures SET count = {forced} WHERE "user" = 'ada' AND rhost = '{rhost}'"#
                    );
                    if i == 1 {
                        pg.sql(&sql);
                    } else {
                        rusqlite::Connection::open(if i == 0 { &db } else { &old_db })
                            .expect("open")
                            .execute_batch(&sql)
                            .expect("force");
                    }
                    Ok(Settled::GivenBack(None))
                }
                14 => s.unlock("ada").map(|_| Settled::GivenBack(None)),
                _ => {
                    // A second guess in the same second from another source.
                    settle("z", Answer::Wrong)
                }
            };
            answers.push(format!("{answer:?}"));
        }
        // rng.0 is read, not advanced, inside the loop: both backends saw
        // the same draws.
        let before_low = log.last().is_some_and(|l: &String| {
            l.contains(&format!("ada/{rhost}=0@")) || l.contains(&format!("ada/{rhost}=-"))
        });
        for (mark, hit) in [
            ("claimed", answers[1].contains("(Claimed)")),
            ("replayed", answers[1].contains("AlreadyUsed") && op != 12),
            ("stale", answers[1].contains("AlreadyUsed") && op == 12),
            ("locked", answers[1].contains("Locked")),
            ("refused", op == 9 && answers[1] == "Ok(GivenBack(None))"),
            (
                "right on a count <= 0",
                before_low && answers[1].contains("GivenBack(Some"),
            ),
        ] {
            if hit {
                *seen.entry(mark).or_default() += 1;
            }
        }
        let states = [sqlite_state(&db), pg.state(), sqlite_state(&old_db)];
        log.push(format!(
            "#{round} t={} op={op} {rhost} step={step}: {:?} | {:?} | {:?}\n  sqlite   {}\n  postgres {}\n  old way  {}",
            now - NOW,
            answers[0],
            answers[1],
            answers[2],
            states[0],
            states[1],
            states[2]
        ));
        // Token ids differ between the backends: compare answers with ids
        // and the failure state only.
        let strip = |s: &str| s.split(" steps[").next().unwrap_or_default().to_string();
        let steps = |s: &str| s.split(" steps[").nth(1).unwrap_or_default().to_string();
        let differs = |a: usize, b: usize| {
            answers[a] != answers[b]
                || strip(&states[a]) != strip(&states[b])
                || steps(&states[a]) != steps(&states[b])
        };
        if differs(0, 2) || differs(1, 2) {
            let tail: Vec<_> = log.iter().rev().take(6).rev().cloned().collect();
            panic!(
                "SQLite, PostgreSQL and the old way differ at round {round}:\n{}",
                tail.join("\n")
            );
        }
    }
    eprintln!("covered: {seen:?}");
    assert_eq!(seen.len(), 6, "not every case came up: {seen:?}");
}

/// The CTE's claim racing plain claims (`claim_step`, no user lock: the
/// slow path) and other settlements of the same step, from many
/// connections at once: exactly one wins per step.
#[test]
fn cte_claims_race_plain_claims_and_one_wins() {
    let Some(pg) = Pg::start() else { return };
    let admin = pg.admin();
    enroll(
        &admin,
        token("bo", "phone", Kind::Totp, true),
        EnrollMode::Add,
    )
    .expect("enroll");
    let limits = Limits {
        backoff_after: 1_000_000,
        backoff_max: 1,
        user_limit: 1_000_000,
    };
    for trial in 0..10u64 {
        let step = 100 + trial;
        let stores: Vec<_> = (0..16).map(|_| pg.login(Duration::from_secs(20))).collect();
        let start = std::sync::Barrier::new(16);
        let wins: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = stores
                .into_iter()
                .enumerate()
                .map(|(i, store)| {
                    let (limits, start) = (&limits, &start);
                    scope.spawn(move || {
                        let t = current(&store, "bo", "phone");
                        start.wait();
                        if i % 2 == 0 {
                            format!("{:?}", store.claim_step(&t, step, NOW))
                        } else {
                            format!(
                                "{:?}",
                                store.settle_guess(
                                    "bo",
                                    &format!("r{i}"),
                                    NOW,
                                    limits,
                                    Answer::Right { token: &t, step }
                                )
                            )
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let won = wins
            .iter()
            .filter(|w| w.contains("Claimed") && !w.contains("AlreadyUsed"))
            .count();
        assert_eq!(won, 1, "trial {trial}: {wins:?}");
        assert!(wins.iter().all(|w| w.starts_with("Ok")), "{wins:?}");
    }
    assert_eq!(pg.sql("SELECT count(*) FROM guesses"), "0");
    assert_eq!(pg.sql("SELECT count(*) FROM failures"), "0");
}

/// The CTE itself fails (an error raised by the claim's UPDATE, the
/// token row locked elsewhere past lock_timeout, a trigger slower than
/// statement_timeout, the backend killed in the claim; an error raised in
/// the give-back's DELETE/UPDATE of `failures`, and one deferred to the
/// COMMIT on `failures`): the settlement fails, nothing stays, and the
/// *same* login store then settles a wrong code (counted exactly once)
/// and the right code (claimed), with no stray BEGIN/COMMIT warnings.
#[test]
fn a_failed_cte_leaves_nothing_and_the_same_store_goes_on() {
    let Some(pg) = Pg::start() else { return };
    let admin = pg.admin();
    enroll(
        &admin,
        token("cy", "phone", Kind::Totp, true),
        EnrollMode::Add,
    )
    .expect("enroll");
    let limits = Limits {
        backoff_after: 100,
        backoff_max: 1,
        user_limit: 100,
    };
    // One wrong guess first, committed.
    pg.login(Duration::from_secs(20))
        .settle_guess("cy", "a", NOW, &limits, Answer::Wrong)
        .expect("wrong");
    let raise = "CREATE OR REPLACE FUNCTION atk() RETURNS trigger LANGUAGE plpgsql AS \
                 $$BEGIN RAISE EXCEPTION 'refused by the attack'; END$$";
    let kill = "CREATE OR REPLACE FUNCTION atk() RETURNS trigger LANGUAGE plpgsql AS \
                $$BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); \
                RETURN NEW; END$$";
    let slow = "CREATE OR REPLACE FUNCTION atk() RETURNS trigger LANGUAGE plpgsql AS \
                $$BEGIN PERFORM pg_sleep(3); RETURN NEW; END$$";
    let cases: [(&str, &str, &str, &str); 6] = [
        (
            "raise in claim",
            raise,
            "BEFORE UPDATE ON tokens FOR EACH ROW",
            "tokens",
        ),
        (
            "kill in claim",
            kill,
            "BEFORE UPDATE ON tokens FOR EACH ROW",
            "tokens",
        ),
        (
            "slow claim",
            slow,
            "BEFORE UPDATE ON tokens FOR EACH ROW",
            "tokens",
        ),
        (
            "raise in cleared",
            raise,
            "BEFORE DELETE ON failures FOR EACH ROW",
            "failures",
        ),
        (
            "deferred on failures",
            raise,
            "AFTER DELETE ON failures DEFERRABLE INITIALLY DEFERRED FOR EACH ROW",
            "failures",
        ),
        ("lock held", "", "", "tokens"),
    ];
    for (what, function, trigger, table) in cases {
        let mut holder = None;
        if function.is_empty() {
            // The token row locked for 6 s by another session.
            let bin = common::postgres::bin_dir().expect("bin");
            let q: std::collections::HashMap<_, _> = pg
                .database
                .url
                .split_once('?')
                .expect("query")
                .1
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            holder = Some(
                std::process::Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(bin.join("psql"))
                    .args(["-X", "-q", "-h", q["host"], "-p", q["port"], "-d"])
                    .arg(&pg.database.name)
                    .args([
                        "-c",
                        "BEGIN; SELECT 1 FROM tokens FOR UPDATE; SELECT pg_sleep(6); COMMIT",
                    ])
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("psql"),
            );
            std::thread::sleep(Duration::from_millis(700));
        } else {
            let constraint = if trigger.contains("DEFERRABLE") {
                "CONSTRAINT "
            } else {
                ""
            };
            pg.sql(&format!(
                "{function}; CREATE {constraint}TRIGGER atk {trigger} EXECUTE FUNCTION atk()"
            ));
        }
        let before = pg.state();
        let store = pg.login(Duration::from_secs(1));
        let t = current(&store, "cy", "phone");
        let right = Answer::Right {
            token: &t,
            step: 500,
        };
        let settled = store.settle_guess("cy", "a", NOW, &limits, right);
        assert!(settled.is_err(), "{what}: settled {settled:?}");
        if let Some(mut h) = holder {
            let _ = h.wait();
        } else {
            pg.sql(&format!("DROP TRIGGER atk ON {table}"));
        }
        assert_eq!(pg.state(), before, "{what}: something stayed");
        if what == "kill in claim" {
            continue;
        }
        // The same store goes on.
        let wrong = store.settle_guess("cy", "b", NOW, &limits, Answer::Wrong);
        assert!(
            matches!(wrong, Ok(Settled::Counted(_))),
            "{what}: {wrong:?}"
        );
        let f = admin.failures("cy", "b", NOW).expect("failures");
        assert_eq!(f.source_count, 1, "{what}: wrong code counted once");
        let again = store.settle_guess("cy", "b", NOW, &limits, right);
        assert_eq!(
            again.as_ref().ok(),
            Some(&Settled::GivenBack(Some(Claim::Claimed))),
            "{what}: {again:?}"
        );
        // Reset for the next case.
        pg.sql(r#"UPDATE tokens SET last_step = NULL; DELETE FROM failures WHERE rhost = 'b'; DELETE FROM guesses WHERE at = 1700000000 AND id <> (SELECT min(id) FROM guesses)"#);
        assert_eq!(pg.state(), before, "{what}: reset");
    }
    common::assert_no_stray_transaction_warnings(&pg.cluster.server_log());
}

/// HOTP through PgBouncer (start-up options dropped) with the role's
/// synchronous_commit off: the transaction that claims a counter with the
/// CTE must run with synchronous_commit on (recorded by a trigger on the
/// claim's UPDATE), and the COMMIT must come in the same transaction.
#[test]
fn an_hotp_claim_by_the_cte_commits_synchronously_through_pgbouncer() {
    if !common::postgres_present() || !common::tools_present(&["openssl", "pgbouncer"]) {
        return;
    }
    let cluster = common::postgres::Cluster::start_on_loopback();
    let database = cluster.database();
    let admin = pg_open(
        &database.url,
        Some(&database.password_file),
        PgStore::create,
        Duration::from_secs(20),
    );
    enroll(
        &admin,
        token("di", "key", Kind::Hotp, true),
        EnrollMode::Add,
    )
    .expect("enroll");
    enroll(
        &admin,
        token("di", "phone", Kind::Totp, true),
        EnrollMode::Add,
    )
    .expect("enroll");
    cluster.psql(
        "postgres",
        &format!("ALTER ROLE {} SET synchronous_commit = off", database.name),
    );
    cluster.psql(
        &database.name,
        "CREATE TABLE atk_seen (kind TEXT, sc TEXT, xid BIGINT); \
         GRANT ALL ON atk_seen TO PUBLIC; \
         CREATE FUNCTION atk() RETURNS trigger LANGUAGE plpgsql AS \
         $$BEGIN INSERT INTO atk_seen VALUES (NEW.kind, current_setting('synchronous_commit'), \
         txid_current()); RETURN NEW; END$$; \
         CREATE TRIGGER atk AFTER UPDATE ON tokens FOR EACH ROW EXECUTE FUNCTION atk()",
    );
    let (ca, _) = cluster.enable_tls();
    let pooler = cluster.pgbouncer(&database, &ca);
    let limits = Limits::default();
    for (device, step) in [("key", 0u64), ("phone", 42)] {
        let store = pg_open(
            &pooler.url,
            None,
            PgStore::open_for_login,
            Duration::from_secs(10),
        );
        let t = current(&store, "di", device);
        let settled =
            store.settle_guess("di", "a", NOW, &limits, Answer::Right { token: &t, step });
        assert_eq!(
            settled.as_ref().ok(),
            Some(&Settled::GivenBack(Some(Claim::Claimed))),
            "{device}: {settled:?}\n{}",
            pooler.log()
        );
    }
    let seen = cluster.psql(
        &database.name,
        "SELECT string_agg(kind||'='||sc, ' ' ORDER BY kind) FROM atk_seen",
    );
    assert!(
        seen.contains("hotp=on"),
        "the HOTP claim's transaction ran with synchronous_commit: {seen}"
    );
    assert_eq!(
        cluster.psql(&database.name, "SELECT count(*) FROM guesses"),
        "0"
    );
    common::assert_no_stray_transaction_warnings(&cluster.server_log());
}

/// Through PgBouncer (transaction pooling): the CTE fails (an error raised
/// by the claim; the backend terminated from outside while the claim
/// waits for the token row; an error deferred to the COMMIT by the
/// give-back's delete of `failures`): the settlement fails, nothing
/// stays, and a new login through the pooler claims the step.
#[test]
fn through_pgbouncer_a_failed_cte_leaves_nothing() {
    if !common::postgres_present() || !common::tools_present(&["openssl", "pgbouncer"]) {
        return;
    }
    let cluster = common::postgres::Cluster::start_on_loopback();
    let database = cluster.database();
    let admin = pg_open(
        &database.url,
        Some(&database.password_file),
        PgStore::create,
        Duration::from_secs(20),
    );
    enroll(
        &admin,
        token("ed", "phone", Kind::Totp, true),
        EnrollMode::Add,
    )
    .expect("enroll");
    let (ca, _) = cluster.enable_tls();
    let pooler = cluster.pgbouncer(&database, &ca);
    let limits = Limits {
        backoff_after: 100,
        backoff_max: 1,
        user_limit: 100,
    };
    let login = || {
        pg_open(
            &pooler.url,
            None,
            PgStore::open_for_login,
            Duration::from_secs(10),
        )
    };
    login()
        .settle_guess("ed", "a", NOW, &limits, Answer::Wrong)
        .expect("wrong");
    let state = || {
        cluster.psql(
            &database.name,
            r#"SELECT (SELECT coalesce(string_agg(rhost||'='||count, ' '), '') FROM failures)
                || ' | ' || (SELECT count(*) FROM guesses)
                || ' | ' || (SELECT coalesce(string_agg(coalesce(last_step::text, '-'), ' '), '') FROM tokens)"#,
        )
    };
    let before = state();
    let raise = "CREATE OR REPLACE FUNCTION atk() RETURNS trigger LANGUAGE plpgsql AS \
                 $$BEGIN RAISE EXCEPTION 'refused by the attack'; END$$";
    for (what, setup, table) in [
        (
            "raise in claim",
            format!(
                "{raise}; CREATE TRIGGER atk BEFORE UPDATE ON tokens FOR EACH ROW EXECUTE FUNCTION atk()"
            ),
            "tokens",
        ),
        (
            "deferred on failures",
            format!(
                "{raise}; CREATE CONSTRAINT TRIGGER atk AFTER DELETE ON failures DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION atk()"
            ),
            "failures",
        ),
        ("terminated while waiting", String::new(), "tokens"),
    ] {
        let store = login();
        let t = current(&store, "ed", "phone");
        let right = Answer::Right {
            token: &t,
            step: 77,
        };
        let settled = if setup.is_empty() {
            // Another session holds the token row; the settlement's CTE
            // waits for it; its backend is terminated from outside.
            std::thread::scope(|scope| {
                let h = scope.spawn(|| {
                    cluster.psql(
                        &database.name,
                        "BEGIN; SELECT 1 FROM tokens FOR UPDATE; SELECT pg_sleep(4); COMMIT",
                    )
                });
                std::thread::sleep(Duration::from_millis(500));
                let killer = scope.spawn(|| {
                    for _ in 0..100 {
                        std::thread::sleep(Duration::from_millis(50));
                        let killed = cluster.psql(
                            &database.name,
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                             WHERE query LIKE 'WITH claimed AS%' AND wait_event_type = 'Lock'",
                        );
                        if killed != "0" {
                            return true;
                        }
                    }
                    false
                });
                let settled = store.settle_guess("ed", "a", NOW, &limits, right);
                assert!(killer.join().expect("killer"), "the CTE never waited");
                h.join().expect("holder");
                settled
            })
        } else {
            cluster.psql(&database.name, &setup);
            store.settle_guess("ed", "a", NOW, &limits, right)
        };
        assert!(settled.is_err(), "{what}: settled {settled:?}");
        if !setup.is_empty() {
            cluster.psql(&database.name, &format!("DROP TRIGGER atk ON {table}"));
        }
        assert_eq!(state(), before, "{what}: something stayed");
    }
    let t = current(&admin, "ed", "phone");
    assert_eq!(
        login()
            .settle_guess(
                "ed",
                "a",
                NOW,
                &limits,
                Answer::Right {
                    token: &t,
                    step: 77
                }
            )
            .expect("settle"),
        Settled::GivenBack(Some(Claim::Claimed)),
        "{}",
        pooler.log()
    );
}
