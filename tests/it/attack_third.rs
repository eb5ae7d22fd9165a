//! Third attack on the record of deleted keys (f1de23b, on top of
//! 382958b..e833d78): `loaded_secret` opening a key sealed for the
//! device's pending replacement name, `Token::cross_kind_floor` (a TOTP
//! and an HOTP token of one key share codes, counted at enrollment only),
//! pruning of `retired_keys` moved out of the trigger, and PostgreSQL
//! logins on a database one schema behind (`LOGIN_OLDEST_SCHEMA` = 9).
//!
//! Each test says whether it found a hole (FOUND: it fails on f1de23b)
//! or guards an attack that failed (GUARD: it passes). Found (3), on
//! both backends: a TOTP code used by a deleted phone logs in again on
//! the same key enrolled as HOTP just below the reach
//! `cross_kind_floor` computes at enrollment (an HOTP window only moves
//! up); a TOTP record pruned past its time while its codes stay valid for
//! ever as HOTP counters of the same key; a pending replacement's sealed
//! key copied by a database reader onto the device's confirmed row logs
//! in (promise 17). Guards (3): the seal still binds the user; an honest
//! fob at counter 0 with a key once used as TOTP logs in; a PostgreSQL
//! database at schema 9 serves logins, and totpctl refuses to delete
//! before `init`, so no deleted step is lost. All three found closed the
//! same day: HOTP counters where TOTP steps are refused
//! (`store::MAX_HOTP_COUNTER`; `cross_kind_floor` removed), and the
//! pending-name fallback only in `totpctl rekey`, which repairs such rows.

use crate::common;

use std::process::Output;

use common::rows::{ok, records_of, sealed, sql};
use common::{RHOST, World, oathtool, oathtool_hotp, pam_tools_present, unix_now};

fn world() -> World {
    let world = World::new();
    world.service("totp", "fail_delay=0 hotp_window=100");
    world
}

/// A TOTP device `phone` of `user` with a fresh key, logged in with the
/// code of `at` (so that step is used), then deleted by `totpctl delete`;
/// the key and the code that was used.
fn totp_used_at_then_deleted(world: &World, user: &str, at: u64) -> (String, String) {
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", user, "--device", "phone", "--secret", &key]));
    let code = oathtool(&key, Some(at), &[]);
    let run = world.login_at(at, "totp", user, Some(RHOST), &code);
    assert!(run.success, "the phone's login: {run:?}");
    ok(&world.totpctl(&["delete", user]));
    (key, code)
}

/// Closed (the same day): an HOTP counter where TOTP step numbers are is
/// refused at enrollment (`store::MAX_HOTP_COUNTER`), whatever the key's
/// history, so a TOTP code never comes back as an HOTP one.
fn assert_refused_as_totp_territory(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("where TOTP step numbers are"),
        "an HOTP counter among TOTP steps was enrolled: {out:?}"
    );
}

// ---------------------------------------------------------------------
// 1. TOTP and HOTP of one key (`Token::cross_kind_floor` on f1de23b,
//    `store::MAX_HOTP_COUNTER` since).
// ---------------------------------------------------------------------

/// FOUND. A TOTP code is the HOTP code of its step number, and
/// `cross_kind_floor` counts a deleted TOTP key's used step for the same
/// key enrolled as HOTP only where the new counter's reach *at
/// enrollment* (`--counter` .. `--counter` + MAX_HOTP_WINDOW) meets the
/// TOTP's used steps (`created / period - 10` .. `last_step`). An HOTP
/// counter only grows: a fob enrolled with `--counter` just below that
/// range gets no floor, and after one honest login near the top of its
/// window (`hotp_window=100`) its window covers the TOTP's used step.
/// The TOTP code the phone used (and a shoulder-surfer saw) then logs in
/// as the fob's HOTP code: a used code works twice, with the record of
/// the deleted key still in the store.
#[test]
fn a_used_totp_code_replays_on_an_hotp_fob_enrolled_just_below_the_reach() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let now = unix_now();
    let step = now / 30;
    let (key, seen) = totp_used_at_then_deleted(&world, "ada", now);
    assert_eq!(records_of(&world, "ada"), "1", "the delete kept its record");
    // The reach of counters 150..50 below the used step ends 40 below the
    // lowest step the phone could have used (its creation step less 10).
    let counter = step - 150;
    let out = world.totpctl(&[
        "enroll",
        "ada",
        "--device",
        "fob",
        "--type",
        "hotp",
        "--secret",
        &key,
        "--counter",
        &counter.to_string(),
    ]);
    // Closed: no HOTP counter is enrolled where TOTP steps are.
    assert_refused_as_totp_territory(&out);
    let replay = world.login("totp", "ada", Some(RHOST), &seen);
    assert!(!replay.success, "{replay:?}");
    if !out.status.success() {
        return;
    }
    // The honest user presses the button a few dozen times and logs in.
    let honest = world.login(
        "totp",
        "ada",
        Some(RHOST),
        &oathtool_hotp(&key, step - 60, false),
    );
    assert!(honest.success, "the fob's honest login: {honest:?}");
    // The attacker replays the TOTP code the phone used.
    let replay = world.login("totp", "ada", Some(RHOST), &seen);
    assert!(
        !replay.success,
        "the phone's used code logged in again as the fob's counter {step}: {replay:?}"
    );
}

/// FOUND. A TOTP record is pruned once past its step, the widest window
/// and an hour (`keep_until`), by the user's next change of devices:
/// here the very delete that wrote it (its step was two hours ago). That
/// bound holds for the key enrolled again as TOTP, whose windows never go
/// back to that step; but a TOTP code is the HOTP code of its step for
/// ever. With the record gone, the key enrolled as HOTP at that counter
/// accepts the code used two hours ago. Control: the same done while the
/// record is kept (bob, a step of now) is refused by `cross_kind_floor`.
#[test]
fn a_pruned_totp_record_lets_its_used_code_in_again_as_an_hotp_counter() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let now = unix_now();
    let hotp_at = |world: &World, user: &str, key: &str, counter: u64| {
        assert_refused_as_totp_territory(&world.totpctl(&[
            "enroll",
            user,
            "--device",
            "fob",
            "--type",
            "hotp",
            "--secret",
            key,
            "--counter",
            &counter.to_string(),
        ]));
    };
    // Control: the record kept, the floor holds.
    let (bob_key, bob_seen) = totp_used_at_then_deleted(&world, "bob", now);
    assert_eq!(records_of(&world, "bob"), "1");
    hotp_at(&world, "bob", &bob_key, now / 30);
    let bob = world.login("totp", "bob", Some(RHOST), &bob_seen);
    assert!(!bob.success, "the control let the used code in: {bob:?}");
    // Two hours ago: the delete's own prune drops the record at once.
    let then = now - 7200;
    let (key, seen) = totp_used_at_then_deleted(&world, "ada", then);
    assert_eq!(records_of(&world, "ada"), "0", "pruned past its time");
    hotp_at(&world, "ada", &key, then / 30);
    let replay = world.login("totp", "ada", Some(RHOST), &seen);
    assert!(
        !replay.success,
        "the code used two hours ago logged in again on the same key as HOTP: {replay:?}"
    );
}

/// GUARD. An honest fob given a key once used as TOTP (counter 0): its
/// codes are far below any step, `cross_kind_floor` sets no floor, and
/// it logs in at once.
#[test]
fn an_honest_fob_with_a_key_once_used_as_totp_logs_in_while_the_record_is_kept() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let (key, _) = totp_used_at_then_deleted(&world, "ada", unix_now());
    assert_eq!(records_of(&world, "ada"), "1");
    ok(&world.totpctl(&[
        "enroll", "ada", "--device", "fob", "--type", "hotp", "--secret", &key,
    ]));
    let fob = world.login("totp", "ada", Some(RHOST), &oathtool_hotp(&key, 0, false));
    assert!(fob.success, "{fob:?}");
    let again = world.login("totp", "ada", Some(RHOST), &oathtool_hotp(&key, 0, false));
    assert!(!again.success, "{again:?}");
}

// ---------------------------------------------------------------------
// 2. The seal's binding relaxed to the pending replacement name.
// ---------------------------------------------------------------------

/// A sealed world: the key file and a `sealed` service using it; ada
/// enrolled (`default`) and `totpctl reset ada` pending (`default (new)`)
/// with a generated key; answers the key file's directory and the pending
/// key.
fn sealed_with_pending_reset(world: &World) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let keys = common::private_tempdir();
    let file = keys.path().join("seal.key");
    common::keygen(&file);
    world.service(
        "sealed",
        &format!("fail_delay=0 key_file={}", file.display()),
    );
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
    let pending = json["key"].as_str().expect("the new key").replace(' ', "");
    (keys, file, pending)
}

/// FOUND (promise 17: "a sealed key opens only in its own (user, device)
/// row"). A reader of the database without the key file copies the
/// sealed key of ada's pending replacement (`default (new)`, not
/// confirmed: no code has shown that anyone holds it) onto her confirmed
/// `default` row. `loaded_secret` now opens a key sealed for the row's
/// pending name too, so the unconfirmed key logs in at once and the
/// phone's own key stops working, without the confirmation, with no
/// change to `confirmed` or `replaces`. Before f1de23b the row did not
/// open (the login was denied with the row named). Control: the pending
/// key does not log in before the copy.
#[test]
fn a_pending_replacements_sealed_key_copied_onto_the_device_row_logs_in() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let (_keys, _file, pending) = sealed_with_pending_reset(&world);
    let now = unix_now();
    let code = oathtool(&pending, Some(now), &[]);
    let before = world.login_at(now, "sealed", "ada", Some(RHOST), &code);
    assert!(!before.success, "the pending key logged in: {before:?}");
    sql(
        &world,
        "UPDATE tokens SET secret = (SELECT secret FROM tokens WHERE \"user\" = 'ada' \
         AND device = 'default (new)') WHERE \"user\" = 'ada' AND device = 'default'",
    );
    let after = world.login_at(
        now + 30,
        "sealed",
        "ada",
        Some(RHOST),
        &oathtool(&pending, Some(now + 30), &[]),
    );
    assert!(
        !after.success,
        "a key sealed for `default (new)` opened in the row `default`: {after:?}"
    );
}

/// GUARD. The relaxation keeps the user in the sealed data: the pending
/// key of ada copied onto bob's `default` row does not open (associated
/// data: ada), and bob's login with its code is denied.
#[test]
fn a_pending_replacements_sealed_key_copied_to_another_user_stays_shut() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let (_keys, _file, pending) = sealed_with_pending_reset(&world);
    sql(
        &world,
        "UPDATE tokens SET secret = (SELECT secret FROM tokens WHERE \"user\" = 'ada' \
         AND device = 'default (new)') WHERE \"user\" = 'bob' AND device = 'default'",
    );
    let now = unix_now();
    let run = world.login_at(
        now,
        "sealed",
        "bob",
        Some(RHOST),
        &oathtool(&pending, Some(now), &[]),
    );
    assert!(!run.success, "{run:?}");
}

// ---------------------------------------------------------------------
// 3. PostgreSQL logins on a database one schema behind.
// ---------------------------------------------------------------------

/// GUARD, PostgreSQL. A schema-9 database (no `retired_keys`, no
/// trigger), the new module in front of it before `totpctl init`: a
/// login claims its step and the replay is refused; `totpctl delete` (the
/// admin path, which would delete without a record) is refused until
/// `init`, the token stays; after `init` the delete keeps the record and
/// the key enrolled again refuses the used code.
#[test]
fn pg_a_schema_9_database_logs_in_but_loses_no_deleted_step_before_init() {
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
    let now = unix_now();
    let code = oathtool(&key, Some(now), &[]);
    let run = world.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(run.success, "a login on schema 9: {run:?}");
    let replay = world.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(!replay.success, "{replay:?}");
    let refused = world.totpctl(&["delete", "ada"]);
    assert!(!refused.status.success(), "totpctl deleted on schema 9");
    assert_eq!(
        sql(&world, "SELECT count(*) FROM tokens WHERE \"user\" = 'ada'"),
        "1"
    );
    ok(&world.totpctl(&["init"]));
    ok(&world.totpctl(&["delete", "ada"]));
    assert_eq!(records_of(&world, "ada"), "1");
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    let again = world.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(!again.success, "{again:?}");
}
