//! Second attack on the record of deleted keys (`git log 382958b..HEAD`:
//! schema 10, `retired_keys`, the TEMP trigger on SQLite, the reseal of a
//! confirmed replacement, `Store::reseal_keys`, TOTP and HOTP tokens of one
//! key sharing their codes).
//!
//! Each test says whether it found a hole or a broken honest flow (FOUND:
//! it fails on 7e60047) or guards an attack that failed (GUARD: it
//! passes). Found (7): a deleted TOTP key kept until some later delete
//! (never pruned by time); a sealed store's schema-9 replacement that no
//! verb can delete, and whose record (deleted by hand, PostgreSQL) blocks
//! the user's enrollments and every rekey; an HOTP fob given a key once
//! used as TOTP locked out for ever; an HOTP fob sharing its seed with a
//! TOTP phone (an older store) locked out at login; on PostgreSQL, an
//! unrelated user's delete that times out behind another's open delete
//! (the trigger's prune), and an enrollment racing `rekey` left sealed
//! with the old key file. Guards (3): schema 9 -> 10 on SQLite (by the
//! module at login) and PostgreSQL (`totpctl init`) with data; a sealed
//! reset, confirm, rekey, delete and enrollment again. All seven closed
//! the same day; each says how.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::rows::{ok, records_of, sealed, sql, wait_for_lock_waiter};
use common::{RHOST, World, oathtool, oathtool_hotp, pam_tools_present, unix_now};

fn world() -> World {
    let world = World::new();
    world.service("totp", "fail_delay=0");
    world
}

/// totpctl on the world's store with its clock frozen at `at`.
fn totpctl_at(world: &World, at: u64, args: &[&str]) -> Output {
    Command::new(common::totpctl_path())
        .args(world.store_options())
        .args(args)
        .env(
            "LD_PRELOAD",
            format!("{} {}", common::NSS_WRAPPER, common::FAKETIME),
        )
        .env("FAKETIME", format!("@{}", common::utc_for_faketime(at)))
        .env("TZ", "UTC")
        .env("NSS_WRAPPER_PASSWD", world.passwd_file())
        .env("NSS_WRAPPER_GROUP", world.group_file())
        .output()
        .expect("run totpctl")
}

/// A used TOTP device of `user` deleted by `totpctl delete`, its login
/// `ago` seconds before now; its key.
fn used_and_deleted(world: &World, user: &str, ago: u64) -> String {
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", user, "--device", "phone", "--secret", &key]));
    let then = unix_now() - ago;
    let run = world.login_at(
        then,
        "totp",
        user,
        Some(RHOST),
        &oathtool(&key, Some(then), &[]),
    );
    assert!(run.success, "{run:?}");
    ok(&world.totpctl(&["delete", user]));
    assert_eq!(records_of(world, user), "1", "the delete kept its record");
    key
}

// ---------------------------------------------------------------------
// 1. Records kept too long, and what they hold.
// ---------------------------------------------------------------------

/// FOUND. README ("TOTP records go a few minutes after their step, past
/// the widest window, plus an hour") and store.md promise that a deleted
/// TOTP key's record (its key, in the clear without a key file) goes once
/// past its time. It goes only with the next delete of some token (the
/// trigger's first statement): a day later, enrollments, `totpctl prune`
/// and logins leave the deleted user's key in the store, and on a store
/// where nothing is deleted again it stays for ever (and `migrate`
/// carries it on, `rekey` seals it again).
/// Closed: `totpctl prune` drops every record past its time, and each
/// change of a user's devices the user's; `migrate` and `rekey` skip them.
#[test]
fn a_deleted_totp_key_is_gone_a_day_after_its_step_without_another_delete() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    used_and_deleted(&world, "ada", 0);
    world.add_user("bob");
    let later = unix_now() + 24 * 3600;
    ok(&totpctl_at(
        &world,
        later,
        &["enroll", "bob", "--secret", &common::random_secret()],
    ));
    ok(&totpctl_at(
        &world,
        later,
        &["prune", "--pending-older-than", "14d"],
    ));
    ok(&totpctl_at(&world, later, &["list"]));
    assert_eq!(
        records_of(&world, "ada"),
        "0",
        "a day after its step, the deleted user's TOTP key is still in retired_keys"
    );
}

// ---------------------------------------------------------------------
// 2. Honest flows the record breaks.
// ---------------------------------------------------------------------

/// A sealed store as schema 9 (382958b) left a confirmed `totpctl reset`:
/// the new key sealed for `default (new)` under the name `default`
/// (382958b's `confirm`: the code's step used, the other devices deleted,
/// the name taken, the key not sealed again). Written by hand exactly so.
/// Answers the key files (`seal.key` in use, `next.key` for a rekey).
fn v9_sealed_replacement(world: &World, keys: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (file, next) = (keys.join("seal.key"), keys.join("next.key"));
    common::keygen(&file);
    common::keygen(&next);
    ok(&sealed(
        world,
        &file,
        &["enroll", "ada", "--secret", &common::random_secret()],
    ));
    ok(&sealed(
        world,
        &file,
        &["enroll", "bob", "--secret", &common::random_secret()],
    ));
    let out = ok(&sealed(world, &file, &["reset", "ada", "--json"]));
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(json["key"].as_str().is_some(), "{out}");
    let now = unix_now();
    let step = now / 30;
    sql(
        world,
        &format!(
            "DELETE FROM tokens WHERE \"user\" = 'ada' AND replaces IS NULL; \
             UPDATE tokens SET device = 'default', replaces = NULL, confirmed = {now}, \
             last_step = {step} WHERE \"user\" = 'ada'"
        ),
    );
    (file, next)
}

/// FOUND (upgrade). A sealed store upgraded from schema 9 keeps every
/// confirmed replacement 382958b wrote with its key sealed for `NAME
/// (new)` under the name `NAME` (f628277 seals again only the
/// confirmations made after it; neither the 9 -> 10 migration nor any
/// verb repairs the rows already written). That user cannot log in, and
/// the help desk cannot do what the README says: `totpctl delete ada`
/// opens her keys to list her devices (`Store::tokens`), `delete
/// --device` and `reset` open them too (`delete_passing_on`,
/// `used_floor`): every remedy fails, and the user stays locked out.
/// Closed: `totpctl rekey --new-key` with the key file in use opens a key
/// sealed for its device's pending name and seals it for its name (the
/// repair the CHANGELOG and the "does not open" error name; a fallback in
/// every open, tried first, let a copied pending key log in: the third
/// attack).
#[test]
fn a_sealed_store_upgraded_with_a_v9_replacement_can_delete_and_enroll_that_user() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let keys = common::private_tempdir();
    let (file, _) = v9_sealed_replacement(&world, keys.path());
    let path = file.to_str().expect("path");
    let stuck = sealed(&world, &file, &["delete", "ada"]);
    assert!(
        String::from_utf8_lossy(&stuck.stderr).contains("totpctl rekey --new-key"),
        "the error does not name the repair: {stuck:?}"
    );
    ok(&sealed(&world, &file, &["rekey", "--new-key", path]));
    let delete = sealed(&world, &file, &["delete", "ada"]);
    assert!(
        delete.status.success(),
        "the upgraded store's user cannot be deleted: {}",
        String::from_utf8_lossy(&delete.stderr)
    );
    let enroll = sealed(&world, &file, &["enroll", "ada", "--no-confirm"]);
    assert!(
        enroll.status.success(),
        "after the delete the user can no longer be enrolled: {}",
        String::from_utf8_lossy(&enroll.stderr)
    );
}

/// FOUND, PostgreSQL (upgrade). The same v9 row, removed the only way
/// left (by hand, `DELETE FROM tokens` in psql): the schema's trigger
/// keeps the unopenable key in `retired_keys`. From then on every
/// enrollment of the user opens it (`SqlStore::used_floor` ->
/// `tokens_from`) and fails, and `totpctl rekey` (`Store::reseal_keys`
/// opens every record, past its time or not) fails for the whole store.
/// Closed by the same repair: `rekey` seals the record for its name too.
#[test]
fn pg_a_v9_replacement_deleted_by_hand_blocks_neither_enrollment_nor_rekey() {
    if !pam_tools_present() || !common::postgres_present() {
        return;
    }
    let world = World::with_postgres();
    world.service("totp", "fail_delay=0");
    let keys = common::private_tempdir();
    let (file, next) = v9_sealed_replacement(&world, keys.path());
    sql(&world, "DELETE FROM tokens WHERE \"user\" = 'ada'");
    assert_eq!(records_of(&world, "ada"), "1");
    ok(&sealed(
        &world,
        &file,
        &["rekey", "--new-key", file.to_str().expect("path")],
    ));
    let enroll = sealed(&world, &file, &["enroll", "ada", "--no-confirm"]);
    assert!(
        enroll.status.success(),
        "after the delete the user can no longer be enrolled: {}",
        String::from_utf8_lossy(&enroll.stderr)
    );
    let rekey = sealed(
        &world,
        &file,
        &["rekey", "--new-key", next.to_str().expect("path")],
    );
    assert!(
        rekey.status.success(),
        "rekey fails for the whole store: {}",
        String::from_utf8_lossy(&rekey.stderr)
    );
}

/// FOUND. An HOTP device given a key that once was a TOTP device's
/// (a hardware token first enrolled as TOTP by mistake, or a seed reused
/// for a fob): its codes (counters 1, 2, …) were never used, yet
/// `used_floor` sets the new token's stored counter to the TOTP step
/// (~59 million, `Token::shares_codes_with` pairs TOTP and HOTP), so the
/// fob never logs in. The code's comment says "locking that device out
/// until the step's record goes"; the counter is the token's own, so the
/// lockout outlasts the record (here: a day later) for ever.
/// Closed: the other kind counts only where the codes meet
/// (`Token::cross_kind_floor`, at enrollment only).
#[test]
fn an_hotp_fob_given_a_key_once_used_as_totp_logs_in_once_the_record_is_gone() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let key = used_and_deleted(&world, "ada", 0);
    ok(&world.totpctl(&[
        "enroll", "ada", "--device", "fob", "--type", "hotp", "--secret", &key,
    ]));
    let later = unix_now() + 24 * 3600;
    // The control: a fob with a fresh key, enrolled the same way.
    let fresh = common::random_secret();
    ok(&world.totpctl(&[
        "enroll", "bob", "--device", "fob", "--type", "hotp", "--secret", &fresh,
    ]));
    let control = world.login_at(
        later,
        "totp",
        "bob",
        Some(RHOST),
        &oathtool_hotp(&fresh, 1, false),
    );
    assert!(control.success, "{control:?}");
    let run = world.login_at(
        later,
        "totp",
        "ada",
        Some(RHOST),
        &oathtool_hotp(&key, 1, false),
    );
    assert!(
        run.success,
        "the fob's first code, a day after the TOTP record's time, is refused: {run:?}"
    );
}

/// FOUND (upgrade). A store written before `totpctl` refused a key the
/// user holds (7e79848; the code itself says such stores have twins) can
/// hold a user's TOTP phone and HOTP fob with one seed (inserted here as
/// the older totpctl wrote it). Since f628277 the login path counts the
/// phone's TOTP step as the fob's counter (`auth::last_used`,
/// `Token::shares_codes_with`): the fob logs in before the phone has, but
/// once the phone has logged in the fob's next code (counter 5, far below
/// any TOTP step, never a TOTP code) is refused, and stays refused.
/// Closed: the login path pairs only tokens of one kind again.
#[test]
fn an_hotp_fob_sharing_its_seed_with_a_totp_phone_still_logs_in_after_the_upgrade() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    sql(
        &world,
        "INSERT INTO tokens (\"user\", device, kind, secret, algorithm, digits, period, \
         created, confirmed, last_step, replaces) SELECT \"user\", 'fob', 'hotp', secret, \
         algorithm, digits, period, created, confirmed, 3, NULL FROM tokens \
         WHERE \"user\" = 'ada' AND device = 'phone'",
    );
    // The fob logs in before the phone has (the control).
    let fob = world.login("totp", "ada", Some(RHOST), &oathtool_hotp(&key, 4, false));
    assert!(fob.success, "{fob:?}");
    let phone = world.login("totp", "ada", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(phone.success, "{phone:?}");
    let fob = world.login("totp", "ada", Some(RHOST), &oathtool_hotp(&key, 5, false));
    assert!(
        fob.success,
        "the fob's next code is refused once the phone has logged in: {fob:?}"
    );
}

// ---------------------------------------------------------------------
// 3. PostgreSQL: waits between unrelated users.
// ---------------------------------------------------------------------

/// FOUND, PostgreSQL. Every delete's trigger first deletes every record
/// past its time (`pam_totp_retire_key`: `DELETE FROM retired_keys WHERE
/// keep_until < now`), so it row-locks records of other users: while one
/// transaction that deleted a token is open (here carol's delete, as a
/// `totpctl import --force` of many users holds it), any other user's
/// delete on any node waits for it, and past `db_timeout` (3 s) fails.
/// bob's `totpctl delete` fails because carol's is running.
/// Closed: the trigger prunes nothing; each change of a user's devices
/// prunes that user's records, `totpctl prune` everyone's.
#[test]
fn pg_an_unrelated_users_delete_does_not_wait_for_another_users_transaction() {
    if !pam_tools_present() || !common::postgres_present() {
        return;
    }
    let world = World::with_postgres();
    world.service("totp", "fail_delay=0");
    // A record past its time (a delete prunes its user's own at once, so
    // made so by hand).
    used_and_deleted(&world, "ada", 0);
    sql(&world, "UPDATE retired_keys SET keep_until = 1");
    ok(&world.totpctl(&["enroll", "bob", "--secret", &common::random_secret()]));
    ok(&world.totpctl(&["enroll", "carol", "--secret", &common::random_secret()]));
    let (deleted, took) = std::thread::scope(|s| {
        let holder = s.spawn(|| {
            sql(
                &world,
                "BEGIN; DELETE FROM tokens WHERE \"user\" = 'carol'; \
                 SELECT pg_sleep(6); COMMIT",
            )
        });
        std::thread::sleep(Duration::from_millis(700));
        let start = Instant::now();
        let deleted = world.totpctl(&["delete", "bob"]);
        let took = start.elapsed();
        let _ = holder.join();
        (deleted, took)
    });
    assert!(
        deleted.status.success(),
        "bob's delete failed while carol's delete was open: {}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert!(
        took < Duration::from_secs(3),
        "bob's delete waited {took:?} for carol's transaction"
    );
}

// ---------------------------------------------------------------------
// 4. Migrations and honest flows that hold.
// ---------------------------------------------------------------------

/// GUARD, SQLite. A schema-9 store with data (schema 10 taken back by
/// hand: no `retired_keys`, `user_version` 9) is migrated by the module's
/// own login connection; the user logs in, and a delete by `totpctl`
/// afterwards keeps the used step: the key enrolled again refuses the
/// code, the next one logs in.
#[test]
fn a_v9_sqlite_store_migrated_at_login_keeps_the_steps_of_later_deletes() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new_sqlite();
    world.service("totp", "fail_delay=0");
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    ok(&world.totpctl(&["enroll", "bob", "--secret", &common::random_secret()]));
    sql(&world, "DROP TABLE retired_keys; PRAGMA user_version = 9");
    assert_eq!(sql(&world, "PRAGMA user_version"), "9");
    let now = unix_now();
    let code = oathtool(&key, Some(now), &[]);
    let run = world.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(run.success, "{run:?}");
    assert_eq!(
        sql(&world, "PRAGMA user_version"),
        pam_totp::store::SCHEMA_VERSION.to_string()
    );
    ok(&world.totpctl(&["delete", "ada", "--device", "phone"]));
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    let replay = world.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(!replay.success, "{replay:?}");
    let next = world.login_at(
        now + 30,
        "totp",
        "ada",
        Some(RHOST),
        &oathtool(&key, Some(now + 30), &[]),
    );
    assert!(next.success, "{next:?}");
}

/// GUARD, PostgreSQL. A schema-9 database with data (the table, function
/// and trigger dropped, the version set back) is migrated by `totpctl
/// init`; a login and a delete afterwards: the key enrolled again refuses
/// the used code.
#[test]
fn a_v9_postgres_store_migrated_by_init_keeps_the_steps_of_later_deletes() {
    if !pam_tools_present() || !common::postgres_present() {
        return;
    }
    let world = World::with_postgres();
    world.service("totp", "fail_delay=0");
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    sql(
        &world,
        "DROP TRIGGER tokens_retire ON tokens; DROP FUNCTION pam_totp_retire_key(); \
         DROP TABLE retired_keys; \
         UPDATE pam_totp_meta SET value = 9 WHERE key = 'schema_version'",
    );
    ok(&world.totpctl(&["init"]));
    assert_eq!(
        sql(
            &world,
            "SELECT value FROM pam_totp_meta WHERE key = 'schema_version'"
        ),
        pam_totp::store::SCHEMA_VERSION.to_string()
    );
    let now = unix_now();
    let code = oathtool(&key, Some(now), &[]);
    let run = world.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(run.success, "{run:?}");
    ok(&world.totpctl(&["delete", "ada"]));
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    let replay = world.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(!replay.success, "{replay:?}");
}

/// GUARD. Sealed store, the whole honest round: `totpctl reset`, the new
/// phone confirmed (its key sealed again for `default`), it logs in;
/// `totpctl rekey` to a new key file (deleted keys included); the nodes
/// switch, the phone logs in; the phone deleted and its key enrolled again
/// under the new key file refuses the code it used.
#[test]
fn a_sealed_reset_then_rekey_then_delete_and_enroll_again_hold() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let keys = common::private_tempdir();
    let (first, second) = (keys.path().join("a.key"), keys.path().join("b.key"));
    common::keygen(&first);
    common::keygen(&second);
    world.service(
        "sealed",
        &format!("fail_delay=0 key_file={}", first.display()),
    );
    ok(&sealed(
        &world,
        &first,
        &["enroll", "ada", "--secret", &common::random_secret()],
    ));
    // A deleted key too, for rekey to carry.
    let gone = common::random_secret();
    ok(&sealed(
        &world,
        &first,
        &["enroll", "ada", "--device", "old", "--secret", &gone],
    ));
    let then = unix_now() - 60;
    sql(
        &world,
        &format!(
            "UPDATE tokens SET last_step = {} WHERE device = 'old'",
            then / 30
        ),
    );
    ok(&sealed(
        &world,
        &first,
        &["delete", "ada", "--device", "old"],
    ));
    let out = ok(&sealed(&world, &first, &["reset", "ada", "--json"]));
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    let new = json["key"].as_str().expect("key").to_string();
    let now = unix_now();
    ok(&sealed(
        &world,
        &first,
        &["confirm", "ada", &oathtool(&new, Some(now), &[])],
    ));
    let run = world.login_at(
        now + 30,
        "sealed",
        "ada",
        Some(RHOST),
        &oathtool(&new, Some(now + 30), &[]),
    );
    assert!(run.success, "{run:?}");
    ok(&sealed(
        &world,
        &first,
        &["rekey", "--new-key", second.to_str().expect("path")],
    ));
    world.service(
        "sealed",
        &format!("fail_delay=0 key_file={}", second.display()),
    );
    let code = oathtool(&new, Some(now + 60), &[]);
    let run = world.login_at(now + 60, "sealed", "ada", Some(RHOST), &code);
    assert!(run.success, "{run:?}");
    ok(&sealed(
        &world,
        &second,
        &["delete", "ada", "--device", "default"],
    ));
    ok(&sealed(
        &world,
        &second,
        &["enroll", "ada", "--device", "phone", "--secret", &new],
    ));
    let replay = world.login_at(now + 60, "sealed", "ada", Some(RHOST), &code);
    assert!(!replay.success, "{replay:?}");
    // The deleted key carried by rekey opens under the new key file.
    ok(&sealed(
        &world,
        &second,
        &["enroll", "ada", "--device", "old", "--secret", &gone],
    ));
}

/// FOUND, PostgreSQL. `totpctl rekey` "holds every key still" with `LOCK
/// TABLE tokens, retired_keys IN EXCLUSIVE MODE`, which does not conflict
/// with the ACCESS SHARE of an enrollment that has read but not yet
/// written (`enroll_rows` in `Add` mode reads the user's tokens and
/// records, `used_floor`, before `insert_token` seals and inserts). An
/// enrollment that started before the rekey (the old key file still the
/// pool's) and writes after it leaves its key sealed with the old file:
/// rekey says every key is sealed with the new one, the nodes switch, and
/// the device just enrolled logs nobody in (here the window is widened by
/// a reader of `retired_keys` holding it for two seconds).
/// Closed: a change of a user's devices locks `tokens` ROW EXCLUSIVE
/// from its BEGIN, so rekey waits for it and it for rekey.
#[test]
fn pg_an_enrollment_racing_a_rekey_is_sealed_with_the_new_key() {
    if !pam_tools_present() || !common::postgres_present() {
        return;
    }
    let world = World::with_postgres();
    let keys = common::private_tempdir();
    let (first, second) = (keys.path().join("a.key"), keys.path().join("b.key"));
    common::keygen(&first);
    common::keygen(&second);
    ok(&sealed(
        &world,
        &first,
        &["enroll", "bob", "--secret", &common::random_secret()],
    ));
    world.add_user("ada");
    let key = common::random_secret();
    let new_key = second.to_str().expect("path").to_string();
    let (enrolled, rekeyed) = std::thread::scope(|s| {
        let holder = s.spawn(|| {
            sql(
                &world,
                "BEGIN; LOCK TABLE retired_keys IN ACCESS EXCLUSIVE MODE; \
                 SELECT pg_sleep(2); COMMIT",
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        let enroll = s.spawn(|| {
            sealed(
                &world,
                &first,
                &["enroll", "ada", "--device", "phone", "--secret", &key],
            )
        });
        wait_for_lock_waiter(&world, "%FROM retired_keys");
        let rekey = s.spawn(|| sealed(&world, &first, &["rekey", "--new-key", &new_key]));
        wait_for_lock_waiter(&world, "%LOCK TABLE tokens");
        let _ = holder.join();
        (enroll.join().expect("enroll"), rekey.join().expect("rekey"))
    });
    ok(&enrolled);
    ok(&rekeyed);
    world.service(
        "sealed",
        &format!("fail_delay=0 key_file={}", second.display()),
    );
    let run = world.login("sealed", "ada", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(
        run.success,
        "the device enrolled during the rekey does not log in with the new key file: {run:?}"
    );
}
