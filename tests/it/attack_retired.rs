//! Attacks on the record of deleted keys (664c480, schema 10,
//! `retired_keys`): a trigger keeps the used step of every used token row
//! deleted, and an enrollment counts a key's codes from its live and
//! deleted rows (`SqlStore::used_floor`, inside `enroll_rows`).
//!
//! Each test says whether it found a hole (FOUND: it fails on 664c480; all
//! four closed the same day, each says how) or
//! guards an attack that failed (GUARD: it passes on 664c480). Found: a
//! replaced device's step not passed on to its twin, a TOTP step replayed
//! as an HOTP counter of the same key, a sealed reset that no longer
//! opens once confirmed (and cannot be deleted), a delete racing `rekey`
//! that leaves a deleted key no key file opens (PostgreSQL). The rest
//! are guards: padded and hashed keys, other digits, HOTP kept for years,
//! the longest TOTP reach, imports, `totp replace`, migration to
//! PostgreSQL, a claim racing a replacement, honest administrators.

use crate::common;

use std::process::{Command, Output};
use std::time::Duration;

use common::rows::{Copied, copy_device, ok, sealed, sql, wait_for_lock_waiter};
use common::{RHOST, World, oathtool, oathtool_hotp, pam_tools_present, unix_now};

fn world() -> World {
    let world = World::new();
    world.service("totp", "fail_delay=0");
    world
}

// ---------------------------------------------------------------------
// 1. Paths that put a key back, or take one away, around the record.
// ---------------------------------------------------------------------

/// FOUND. Twins of an old store: `a` and `b` hold one key, a login used
/// a step on `a` (the claim raises only `a`'s row). `totpctl enroll
/// --device a --secret NEW --force` replaces `a` (`enroll_rows`,
/// `EnrollMode::ReplaceDevice`): since 664c480 a plain `DELETE_DEVICE`
/// whose trigger keeps `a`'s step in `retired_keys`, but nothing passes
/// it on to the twin `b` (`delete --device` does, `delete_passing_on`),
/// and the login path never reads `retired_keys`. The code that logged
/// in on `a` logs in again on `b`.
/// Closed: `enroll_rows` replaces a device with `delete_passing_on`.
#[test]
fn a_device_replaced_with_a_new_key_passes_its_used_step_to_its_twin() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "a", "--secret", &key]));
    copy_device(
        &world,
        "ada",
        "a",
        "b",
        Copied {
            last_step: "NULL",
            ..Copied::default()
        },
    );
    let code = oathtool(&key, None, &[]);
    let first = world.login("totp", "ada", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    let other = common::random_secret();
    ok(&world.totpctl(&[
        "enroll", "ada", "--device", "a", "--secret", &other, "--force",
    ]));
    let replay = world.login("totp", "ada", Some(RHOST), &code);
    assert!(
        !replay.success,
        "the code that logged in on a replaced device logged in again on its twin: {replay:?}"
    );
}

/// FOUND. A TOTP code is HMAC(key, step); an HOTP code is HMAC(key,
/// counter): the same key enrolled as HOTP with its counter at the TOTP
/// step gives the very code that logged in. `Token::shares_codes_with`
/// asks for the same kind, so the deleted TOTP row's step is not counted
/// (`used_floor`) and the code logs in a second time, now as an HOTP
/// counter.
/// Closed: first by pairing TOTP and HOTP tokens of one key, then (after
/// two more attacks) by refusing any HOTP counter where TOTP step numbers
/// are (`store::MAX_HOTP_COUNTER`).
#[test]
fn a_totp_key_deleted_and_enrolled_again_as_hotp_at_its_step_keeps_the_code_used() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    let now = unix_now();
    let code = oathtool(&key, Some(now), &[]);
    let step = now / 30;
    assert_eq!(code, oathtool_hotp(&key, step, false), "the oracle agrees");
    let first = world.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    ok(&world.totpctl(&["delete", "ada", "--device", "phone"]));
    // Refused since (`store::MAX_HOTP_COUNTER`): no counter where TOTP
    // steps are.
    let out = world.totpctl(&[
        "enroll",
        "ada",
        "--device",
        "token",
        "--type",
        "hotp",
        "--counter",
        &step.to_string(),
        "--secret",
        &key,
    ]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("where TOTP step numbers are"),
        "{out:?}"
    );
    let replay = world.login("totp", "ada", Some(RHOST), &code);
    assert!(
        !replay.success,
        "the TOTP code that logged in logged in again as the HOTP counter of its step: {replay:?}"
    );
}

/// GUARD. The key enrolled again with a zero byte appended (the same key
/// to HMAC), on another device name: the deleted row's step counts.
#[test]
fn a_deleted_key_enrolled_again_zero_padded_keeps_its_used_step() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let key = common::random_secret();
    // 20 bytes are 32 base32 characters: "AA" is one more zero byte.
    let padded = format!("{key}AA");
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    let now = unix_now();
    let code = oathtool(&key, Some(now), &[]);
    assert_eq!(code, oathtool(&padded, Some(now), &[]));
    let first = world.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    ok(&world.totpctl(&["delete", "ada"]));
    ok(&world.totpctl(&["enroll", "ada", "--device", "other", "--secret", &padded]));
    let replay = world.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(!replay.success, "{replay:?}");
    let next = world.login_at(
        now + 30,
        "totp",
        "ada",
        Some(RHOST),
        &oathtool(&padded, Some(now + 30), &[]),
    );
    assert!(next.success, "the next step: {next:?}");
}

/// GUARD. An 8-digit enrollment of a deleted 6-digit key: the 6-digit code
/// is the last six of the 8, the step counts whatever the digits.
#[test]
fn a_deleted_key_enrolled_again_with_eight_digits_keeps_its_used_step() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    let now = unix_now();
    let first = world.login_at(
        now,
        "totp",
        "ada",
        Some(RHOST),
        &oathtool(&key, Some(now), &[]),
    );
    assert!(first.success, "{first:?}");
    ok(&world.totpctl(&["delete", "ada", "--device", "phone"]));
    ok(&world.totpctl(&[
        "enroll", "ada", "--device", "long", "--digits", "8", "--secret", &key,
    ]));
    let long = oathtool(&key, Some(now), &["-d", "8"]);
    let replay = world.login_at(now, "totp", "ada", Some(RHOST), &long);
    assert!(!replay.success, "{replay:?}");
}

/// GUARD. HOTP: a user deleted whole (`totpctl delete otto`), the same
/// OATH file imported again: the counters used stay used, the next one
/// logs in.
#[test]
fn an_hotp_user_deleted_and_imported_again_keeps_the_used_counters() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let hex = "3132333435363738393031323334353637383930";
    let users = world.dir.path().join("users.oath");
    std::fs::write(&users, format!("HOTP otto - {hex}\n")).expect("users");
    let path = users.to_str().expect("path");
    ok(&world.totpctl(&["import", "oath", path, "--apply"]));
    for counter in [0, 1] {
        let run = world.login(
            "totp",
            "otto",
            Some(RHOST),
            &oathtool_hotp(hex, counter, true),
        );
        assert!(run.success, "counter {counter}: {run:?}");
    }
    ok(&world.totpctl(&["delete", "otto"]));
    ok(&world.totpctl(&["import", "oath", path, "--apply"]));
    for counter in [0, 1] {
        let run = world.login(
            "totp",
            "otto",
            Some(RHOST),
            &oathtool_hotp(hex, counter, true),
        );
        assert!(!run.success, "counter {counter} again: {run:?}");
    }
    let next = world.login("totp", "otto", Some(RHOST), &oathtool_hotp(hex, 2, true));
    assert!(next.success, "counter 2: {next:?}");
}

// ---------------------------------------------------------------------
// 2. Sealing keys.
// ---------------------------------------------------------------------

/// FOUND (an honest flow; the record makes it worse). Sealed store: a
/// pending replacement (`totpctl reset`) is sealed for its device name
/// `default (new)`; `Store::confirm` renames the row (`TAKE_DEVICE_NAME`)
/// without sealing the key again for `default`, and the associated data
/// of the seal names the device: the confirmed new phone's key no longer
/// opens. The user is locked out, and `totpctl delete` cannot remove the
/// row (`delete_passing_on` and `delete_user_rows` open every key first);
/// had it gone, its trigger would have kept the unopenable key in
/// `retired_keys`, where every later enrollment of the user opens it.
/// Closed: `confirm` seals the key again for the name it takes.
#[test]
fn a_sealed_reset_confirmed_logs_in_and_can_be_deleted() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let keys = common::private_tempdir();
    let file = keys.path().join("seal.key");
    common::keygen(&file);
    world.service(
        "sealed",
        &format!("fail_delay=0 key_file={}", file.display()),
    );
    let old = common::random_secret();
    ok(&sealed(&world, &file, &["enroll", "ada", "--secret", &old]));
    let out = ok(&sealed(&world, &file, &["reset", "ada", "--json"]));
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    let new = json["key"].as_str().expect("key").to_string();
    let now = unix_now();
    ok(&sealed(
        &world,
        &file,
        &["confirm", "ada", &oathtool(&new, Some(now), &[])],
    ));
    let login = world.login_at(
        now + 30,
        "sealed",
        "ada",
        Some(RHOST),
        &oathtool(&new, Some(now + 30), &[]),
    );
    assert!(
        login.success,
        "the new phone, confirmed, does not log in (its sealed key does not open): {login:?}"
    );
    ok(&sealed(&world, &file, &["delete", "ada"]));
    ok(&sealed(&world, &file, &["enroll", "ada", "--no-confirm"]));
}

/// FOUND, PostgreSQL. `totpctl rekey` reads every key (`secret_rows`)
/// outside the transaction that writes them (`replace_secrets`), which
/// takes no user's hold. A `delete --device` that commits in between
/// makes its trigger copy the key, sealed with the old key file, into
/// `retired_keys`, where rekey never comes. After the switch to the new
/// key file every enrollment of the user opens that row (`used_floor`)
/// and fails: the user can never be enrolled again (a second rekey fails
/// on it too). Here rekey's first write waits behind a reader's `FOR
/// UPDATE` on another user's row.
/// Closed: `Store::reseal_keys` reads and writes every key in one
/// transaction holding them still (`Hold::AllKeys`).
#[test]
fn a_delete_racing_a_rekey_leaves_no_deleted_key_the_new_key_cannot_open() {
    if !pam_tools_present() || !common::postgres_present() {
        return;
    }
    let world = World::with_postgres();
    let keys = common::private_tempdir();
    let (first, second) = (
        keys.path().join("first.key"),
        keys.path().join("second.key"),
    );
    common::keygen(&first);
    common::keygen(&second);
    world.service(
        "sealed",
        &format!("fail_delay=0 key_file={}", first.display()),
    );
    // bob's row first: rekey writes by id and waits on it.
    ok(&sealed(
        &world,
        &first,
        &["enroll", "bob", "--secret", &common::random_secret()],
    ));
    let key = common::random_secret();
    ok(&sealed(
        &world,
        &first,
        &["enroll", "ada", "--device", "phone", "--secret", &key],
    ));
    ok(&sealed(
        &world,
        &first,
        &[
            "enroll",
            "ada",
            "--device",
            "laptop",
            "--secret",
            &common::random_secret(),
        ],
    ));
    let run = world.login("sealed", "ada", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(run.success, "{run:?}");
    let new_key = second.to_str().expect("path").to_string();
    let (rekeyed, deleted) = std::thread::scope(|s| {
        let holder = s.spawn(|| {
            sql(
                &world,
                "BEGIN; SELECT 1 FROM tokens WHERE \"user\" = 'bob' FOR UPDATE; \
                 SELECT pg_sleep(3); COMMIT",
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        let rekey = s.spawn(|| sealed(&world, &first, &["rekey", "--new-key", &new_key]));
        // Its `UPDATE tokens` on 664c480, its `LOCK TABLE tokens, …` now.
        wait_for_lock_waiter(&world, "%tokens");
        let deleted = sealed(&world, &first, &["delete", "ada", "--device", "phone"]);
        let _ = holder.join();
        (rekey.join().expect("rekey"), deleted)
    });
    ok(&rekeyed);
    // The delete now waits for the rekey from its start, and then finds
    // keys its (old) key file does not open: refused, nothing changed.
    // With the new key file it goes.
    if !deleted.status.success() {
        assert!(
            String::from_utf8_lossy(&deleted.stderr).contains("does not open with this key file"),
            "{deleted:?}"
        );
        ok(&sealed(
            &world,
            &second,
            &["delete", "ada", "--device", "phone"],
        ));
    }
    world.service(
        "sealed",
        &format!("fail_delay=0 key_file={}", second.display()),
    );
    let enroll = sealed(
        &world,
        &second,
        &["enroll", "ada", "--device", "tablet", "--no-confirm"],
    );
    assert!(
        enroll.status.success(),
        "after a rekey the user can no longer be enrolled: {}",
        String::from_utf8_lossy(&enroll.stderr)
    );
}

// ---------------------------------------------------------------------
// 3. Moves, races, and honest administrators.
// ---------------------------------------------------------------------

/// GUARD, PostgreSQL. `totpctl migrate` of a SQLite store into
/// PostgreSQL carries the deleted key's step (`Dump::retired`): the key
/// enrolled again on PostgreSQL refuses the code that logged in on
/// SQLite, and the next step logs in.
#[test]
fn a_deleted_keys_step_survives_a_migration_to_postgres() {
    if !pam_tools_present() || !common::postgres_present() {
        return;
    }
    let lite = World::new_sqlite();
    lite.service("totp", "fail_delay=0");
    let key = common::random_secret();
    ok(&lite.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    ok(&lite.totpctl(&["enroll", "bob", "--secret", &common::random_secret()]));
    let now = unix_now();
    let code = oathtool(&key, Some(now), &[]);
    let first = lite.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    ok(&lite.totpctl(&["delete", "ada"]));
    let pg = World::with_postgres();
    pg.service("totp", "fail_delay=0");
    let (_, database) = pg.pg.as_ref().expect("pg");
    let out = Command::new(common::totpctl_path())
        .arg("--db-password-file")
        .arg(&database.password_file)
        .arg("migrate")
        .arg("--from")
        .arg(&lite.db)
        .args(["--to", &database.url])
        .output()
        .expect("migrate");
    ok(&out);
    ok(&pg.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    let replay = pg.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(
        !replay.success,
        "the code that logged in before the migration logged in again after it: {replay:?}"
    );
    let next = pg.login_at(
        now + 30,
        "totp",
        "ada",
        Some(RHOST),
        &oathtool(&key, Some(now + 30), &[]),
    );
    assert!(next.success, "{next:?}");
}

/// GUARD, PostgreSQL. A login's claim and `totpctl enroll --force` of the
/// same key onto its device race: the claim waits on the row (a reader's
/// `FOR UPDATE`), the replacement's DELETE queues behind it, and its
/// trigger keeps the row as the claim left it: the code stays used.
#[test]
fn a_claim_racing_the_replacement_of_its_device_by_its_own_key_stays_used() {
    if !pam_tools_present() || !common::postgres_present() {
        return;
    }
    let world = World::with_postgres();
    world.service("totp", "fail_delay=0");
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "a", "--secret", &key]));
    let code = oathtool(&key, None, &[]);
    let (first, replaced) = std::thread::scope(|s| {
        let holder = s.spawn(|| {
            sql(
                &world,
                "BEGIN; SELECT 1 FROM tokens WHERE device = 'a' FOR UPDATE; \
                 SELECT pg_sleep(3); COMMIT",
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        let login = s.spawn(|| world.login("totp", "ada", Some(RHOST), &code));
        wait_for_lock_waiter(&world, "WITH claimed");
        let replace = s.spawn(|| {
            world.totpctl(&[
                "enroll", "ada", "--device", "a", "--secret", &key, "--force",
            ])
        });
        wait_for_lock_waiter(&world, "DELETE FROM tokens");
        let _ = holder.join();
        (
            login.join().expect("login"),
            replace.join().expect("enroll"),
        )
    });
    ok(&replaced);
    assert!(first.success, "{first:?}");
    let replay = world.login("totp", "ada", Some(RHOST), &code);
    assert!(
        !replay.success,
        "the code claimed while its device was replaced logged in again: {replay:?}"
    );
}

/// GUARD. Honest administrators: a key whose step is long past every
/// window (a login three hours ago) is deleted and enrolled again: the
/// enrollment works, a current code logs in, and no record is left (each
/// change of a user's devices prunes the user's records past their time:
/// the table does not grow with TOTP deletes).
/// A key deleted unused leaves no record, and enrolls again at once.
#[test]
fn honest_deletes_and_enrollments_leave_nothing_that_blocks_or_grows() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    let then = unix_now() - 3 * 3600;
    let old = world.login_at(
        then,
        "totp",
        "ada",
        Some(RHOST),
        &oathtool(&key, Some(then), &[]),
    );
    assert!(old.success, "{old:?}");
    ok(&world.totpctl(&["delete", "ada", "--device", "phone"]));
    // Past its time at once: the delete's own prune of the user's records.
    assert_eq!(sql(&world, "SELECT count(*) FROM retired_keys"), "0");
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    let now = world.login("totp", "ada", Some(RHOST), &oathtool(&key, None, &[]));
    assert!(now.success, "{now:?}");
    // Unused: no record, enrolled again at once.
    let unused = common::random_secret();
    ok(&world.totpctl(&["enroll", "bob", "--device", "tab", "--secret", &unused]));
    ok(&world.totpctl(&["delete", "bob", "--device", "tab"]));
    assert_eq!(
        sql(&world, "SELECT count(*) FROM retired_keys"),
        "0",
        "a record past every window is kept past the next delete"
    );
    ok(&world.totpctl(&["enroll", "bob", "--device", "tab", "--secret", &unused]));
    let run = world.login("totp", "bob", Some(RHOST), &oathtool(&unused, None, &[]));
    assert!(run.success, "{run:?}");
}

/// GUARD. A key longer than SHA-1's 64-byte block is, to HMAC, its SHA-1
/// hash: the long key used and deleted, its hash enrolled again (on
/// another device name) refuses the code that logged in.
#[test]
fn a_deleted_long_key_enrolled_again_as_its_hash_keeps_its_used_step() {
    use sha1::{Digest, Sha1};
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let mut long = [0u8; 80];
    getrandom::fill(&mut long).expect("random");
    let b32 = |bytes: &[u8]| base32::encode(base32::Alphabet::Rfc4648 { padding: false }, bytes);
    let (key, hashed) = (b32(&long), b32(&Sha1::digest(long)));
    let now = unix_now();
    let code = oathtool(&key, Some(now), &[]);
    assert_eq!(code, oathtool(&hashed, Some(now), &[]), "HMAC's own rule");
    ok(&world.totpctl(&["enroll", "ada", "--device", "long", "--secret", &key]));
    let first = world.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    ok(&world.totpctl(&["delete", "ada", "--device", "long"]));
    ok(&world.totpctl(&["enroll", "ada", "--device", "short", "--secret", &hashed]));
    let replay = world.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(!replay.success, "{replay:?}");
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

/// GUARD. The longest reach of a TOTP code: `window=10` and a period of
/// 3600 s. A code used, its device deleted, the key enrolled again ten
/// and a half hours later (by a totpctl whose clock says so, which prunes
/// the record by it): the code of that step is still inside the window,
/// and the record is still there to refuse it.
#[test]
fn a_deleted_key_of_an_hour_long_period_is_remembered_through_a_ten_step_window() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    world.service("w10", "fail_delay=0 window=10");
    let key = common::random_secret();
    ok(&world.totpctl(&[
        "enroll", "ada", "--device", "slow", "--period", "3600", "--secret", &key,
    ]));
    let now = unix_now();
    let code = oathtool(&key, Some(now), &["--time-step-size=3600s"]);
    let first = world.login_at_long_after_boot(now, "w10", "ada", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    ok(&world.totpctl(&["delete", "ada", "--device", "slow"]));
    let later = now / 3600 * 3600 + 10 * 3600 + 1800;
    ok(&totpctl_at(
        &world,
        later,
        &[
            "enroll", "ada", "--device", "slow", "--period", "3600", "--secret", &key,
        ],
    ));
    let replay = world.login_at_long_after_boot(later, "w10", "ada", Some(RHOST), &code);
    assert!(
        !replay.success && replay.logged("already used"),
        "a code inside the window logged in again once its record was pruned: {replay:?}"
    );
}

/// GUARD. HOTP codes never expire, and neither does their record: an
/// HOTP key deleted and enrolled again five years later (totpctl's clock)
/// refuses the counters it used.
#[test]
fn a_deleted_hotp_key_is_remembered_years_later() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&[
        "enroll", "ada", "--device", "fob", "--type", "hotp", "--secret", &key,
    ]));
    for counter in 0..3 {
        let run = world.login(
            "totp",
            "ada",
            Some(RHOST),
            &oathtool_hotp(&key, counter, false),
        );
        assert!(run.success, "counter {counter}: {run:?}");
    }
    ok(&world.totpctl(&["delete", "ada", "--device", "fob"]));
    let later = unix_now() + 5 * 365 * 86_400;
    ok(&totpctl_at(
        &world,
        later,
        &[
            "enroll", "ada", "--device", "fob2", "--type", "hotp", "--secret", &key,
        ],
    ));
    let replay = world.login("totp", "ada", Some(RHOST), &oathtool_hotp(&key, 2, false));
    assert!(!replay.success, "counter 2 again: {replay:?}");
    let next = world.login("totp", "ada", Some(RHOST), &oathtool_hotp(&key, 3, false));
    assert!(next.success, "counter 3: {next:?}");
}

/// GUARD. The user's own CLI: `totp replace` (with a recovery code)
/// retires the device whose key just logged in (`ReplaceConfirmed`, one
/// DELETE of every token, caught by the trigger); the administrator then
/// enrolls that key again: its used step stays used, the next one logs in.
#[test]
fn a_key_retired_by_totp_replace_and_enrolled_again_keeps_its_used_step() {
    if !crate::totp_user::present() || !pam_tools_present() {
        return;
    }
    let s = crate::totp_user::Setup::new("");
    let key = s.enroll();
    let now = unix_now();
    let code = oathtool(&key, Some(now), &[]);
    assert!(s.login(&code), "the first login");
    let out = ok(&s.world.totpctl(&["recovery", s.name()]));
    let recovery = out
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("a recovery code")
        .to_string();
    let (rc, text) = s.totp(
        &["replace"],
        &[("or a recovery code", &recovery), ("NEW device", "@newkey")],
    );
    assert_eq!(rc, 0, "{text}");
    ok(&s
        .world
        .totpctl(&["enroll", s.name(), "--device", "old", "--secret", &key]));
    assert!(
        !s.login(&code),
        "the code that logged in worked again after totp replace and a new enrollment"
    );
    assert!(
        s.login(&oathtool(&key, Some(now + 30), &[])),
        "the next step logs in"
    );
}
