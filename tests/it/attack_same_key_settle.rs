//! Attacks on two changes: "no code works twice" across a user's devices
//! that hold the same key (`auth::last_used`, `enroll::holder_of_key`), and
//! SQLite's net-effect settlement of a right code (`settle_given_back`).
//!
//! Each test says whether it found a hole (each failed on 7f7d080 and was
//! closed in 7e79848) or guards an attack that failed.

use crate::common;

use common::rows::{Copied, answer_waiting, copy_device, ok, waiting_at_prompt};
use common::{RHOST, World, oathtool, pam_tools_present, sqlite_only, unix_now};
use serde_json::Value;

fn show(world: &World, user: &str) -> Value {
    let out = world.totpctl(&["show", user, "--json"]);
    serde_json::from_slice(&ok(&out).into_bytes()).expect("show --json")
}

/// The (rhost, count) rows of `show --json`'s failures, sorted.
fn failure_counts(world: &World, user: &str) -> Vec<(String, u64)> {
    let shown = show(world, user);
    let mut rows: Vec<(String, u64)> = shown["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| {
            (
                f["rhost"].as_str().expect("rhost").to_string(),
                f["count"].as_u64().expect("count"),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// The base32 text of `key` followed by `zeros` zero bytes (`zeros` a
/// multiple of 5, so the text is `key` plus `A`s). HMAC pads every key
/// shorter than its block with zero bytes: both keys give the same codes.
fn zero_padded(key: &str, zeros: usize) -> String {
    assert_eq!(zeros % 5, 0);
    format!("{key}{}", "A".repeat(zeros / 5 * 8))
}

fn world() -> World {
    let world = World::new();
    world.service("totp", "fail_delay=0");
    world
}

// ---------------------------------------------------------------------
// 1. The same key on two devices.
// ---------------------------------------------------------------------

/// Found by an attack (closed 2026-12-02). `holder_of_key` compares key bytes, but HMAC (RFC 2104) pads a
/// key shorter than its block (64 bytes for SHA-1 and SHA-256) with zero
/// bytes: the key with zero bytes appended is the same authenticator, its
/// codes are the same (oathtool agrees). `enroll --secret` takes it as a
/// new key.
#[test]
fn a_held_key_with_zero_bytes_appended_is_refused_as_held() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--secret", &key]));
    let padded = zero_padded(&key, 5);
    let now = unix_now();
    assert_eq!(
        oathtool(&key, Some(now), &[]),
        oathtool(&padded, Some(now), &[]),
        "oathtool: the zero-padded key gives the same codes"
    );
    let second = world.totpctl(&["enroll", "ada", "--device", "spare", "--secret", &padded]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && stderr.contains("already holds this key on device"),
        "the held key, zero-padded, was enrolled on a second device: {second:?}"
    );
}

/// Found by an attack (closed 2026-12-02). With the zero-padded copy of the key on a second device (enrolled
/// by `totpctl enroll --secret`, or, once that refuses, held by a store of
/// before), a used code logs in again once the device that used it is
/// disabled: `last_used` compares key bytes, so the copy's floor is its
/// own.
#[test]
fn a_used_code_does_not_log_in_again_on_a_device_with_the_key_zero_padded() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "bea", "--secret", &key]));
    let second = world.totpctl(&[
        "enroll",
        "bea",
        "--device",
        "spare",
        "--secret",
        &zero_padded(&key, 5),
    ]);
    if !second.status.success() {
        if sqlite_only("a store written before enroll refused the padded key") {
            return;
        }
        let padded = Copied {
            key: "CAST(secret || zeroblob(5) AS BLOB)",
            ..Copied::default()
        };
        copy_device(&world, "bea", "default", "spare", padded);
    }
    let code = oathtool(&key, None, &[]);
    let first = world.login("totp", "bea", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    ok(&world.totpctl(&["disable", "bea", "--device", "default"]));
    let again = world.login("totp", "bea", Some(RHOST), &code);
    assert!(
        !again.success,
        "a used code logged in again on the device holding the key zero-padded: {again:?}"
    );
}

/// Found by an attack (closed 2026-12-02). The refusal's own advice, "replace that device (--device X
/// --force)", with the same key: `enroll --force` deletes the row and
/// inserts one with no used step, so the code that just logged in logs in
/// again. (An import onto the device with --force keeps the used steps of
/// the same key; enroll does not.)
#[test]
fn forcing_the_same_key_onto_its_device_keeps_its_used_step() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "cid", "--secret", &key]));
    let code = oathtool(&key, None, &[]);
    let first = world.login("totp", "cid", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    ok(&world.totpctl(&[
        "enroll", "cid", "--device", "default", "--force", "--secret", &key,
    ]));
    let again = world.login("totp", "cid", Some(RHOST), &code);
    assert!(
        !again.success,
        "enroll --force --secret of the same key: the used code logged in again: {again:?}"
    );
}

/// Found by an attack (closed 2026-12-02). `reset --secret KEY` (and `reset --now --secret KEY`) with the
/// key the user holds skips the held-key check (a reset) and starts the
/// new token with no used step: the code that just logged in logs in
/// again.
#[test]
fn a_reset_to_the_same_key_keeps_its_used_step() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let mut replayed = Vec::new();
    for (user, now_flag) in [("dee", false), ("eve", true)] {
        let key = common::random_secret();
        ok(&world.totpctl(&["enroll", user, "--secret", &key]));
        let code = oathtool(&key, None, &[]);
        let first = world.login("totp", user, Some(RHOST), &code);
        assert!(first.success, "{first:?}");
        let mut args = vec!["reset", user, "--secret", &key];
        if now_flag {
            args.push("--now");
        }
        ok(&world.totpctl(&args));
        let again = world.login("totp", user, Some(RHOST), &code);
        if again.success {
            replayed.push(args.join(" ").replace(&key, "KEY"));
        }
    }
    assert!(
        replayed.is_empty(),
        "the used code logged in again after: {replayed:?}"
    );
}

/// Found by an attack (closed 2026-12-02). Two devices with the same key (a store of before the refusal):
/// removing the device that used a code frees its step on the other, the
/// floor being the rows left. `totpctl delete --device` (and `totp
/// remove-device`) take the used step with the row.
#[test]
fn removing_the_device_that_used_a_code_does_not_free_it_on_its_twin() {
    if !pam_tools_present() || sqlite_only("a store written before enroll refused a held key") {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "fay", "--secret", &key]));
    copy_device(&world, "fay", "default", "spare", Copied::default());
    let code = oathtool(&key, None, &[]);
    let first = world.login("totp", "fay", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    let replay = world.login("totp", "fay", Some(RHOST), &code);
    assert!(!replay.success, "{replay:?}");
    ok(&world.totpctl(&["delete", "fay", "--device", "default"]));
    let again = world.login("totp", "fay", Some(RHOST), &code);
    assert!(
        !again.success,
        "the used code logged in again on the twin once its device was removed: {again:?}"
    );
}

/// Found by an attack (closed 2026-12-02). Two devices with the same key (a store of before the refusal):
/// the floor of used steps is computed from the devices a login read
/// before its prompt, and the claim is on one row. An attacker's login
/// waits at the prompt while `default` is disabled (it will pick `spare`);
/// the administrator enables `default`; the user logs in with code C
/// (claimed on `default`); the attacker types C: its `spare` row has no
/// used step and its stale floor says C's step is free: it gets in.
#[test]
fn a_login_waiting_at_the_prompt_does_not_replay_a_code_on_the_twin() {
    if !pam_tools_present() || sqlite_only("a store written before enroll refused a held key") {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "gus", "--secret", &key]));
    copy_device(&world, "gus", "default", "spare", Copied::default());
    ok(&world.totpctl(&["disable", "gus", "--device", "default"]));
    let attacker = waiting_at_prompt(&world, "gus");
    ok(&world.totpctl(&["enable", "gus", "--device", "default"]));
    let code = oathtool(&key, None, &[]);
    let user = world.login("totp", "gus", Some(RHOST), &code);
    assert!(user.success, "{user:?}");
    let (got_in, log) = answer_waiting(attacker, &code);
    assert!(
        !got_in,
        "the user's code logged in a second time, on the twin, from a login waiting at the prompt:\n{log}"
    );
}

/// Found by an attack (closed 2026-12-02), without any administrator: two devices with the same key, one
/// showing 8 digits, one 6 (a store of before the refusal). A 6-digit code
/// is the last six digits of the 8-digit code of the same step. The user
/// logs in with the 8-digit code (claimed on `spare`); an attacker whose
/// login was already at the prompt types its last six digits: `default`'s
/// stale floor lets the step be claimed a second time.
#[test]
fn a_waiting_login_does_not_replay_the_last_six_digits_of_a_used_eight_digit_code() {
    if !pam_tools_present() || sqlite_only("a store written before enroll refused a held key") {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "hal", "--secret", &key]));
    copy_device(
        &world,
        "hal",
        "default",
        "spare",
        Copied {
            digits: "8",
            ..Copied::default()
        },
    );
    let attacker = waiting_at_prompt(&world, "hal");
    let long = oathtool(&key, None, &["-d", "8"]);
    let user = world.login("totp", "hal", Some(RHOST), &long);
    assert!(user.success, "{user:?}");
    let (got_in, log) = answer_waiting(attacker, &long[2..]);
    assert!(
        !got_in,
        "the used step logged in again as the 8-digit code's last six digits:\n{log}"
    );
}

/// Guard (attack failed): the held key spelled otherwise (lower case,
/// spaces, dashes, `=` padding, an extra character past the key's bits)
/// is the same bytes and refused; an import onto another device too.
#[test]
fn a_held_key_spelled_otherwise_is_refused() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ivy", "--secret", &key]));
    let lower = key.to_ascii_lowercase();
    let grouped: Vec<String> = key
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    for spelling in [
        lower.clone(),
        grouped.join(" "),
        grouped.join("-"),
        format!("{key}======"),
        format!("{lower}A"),
    ] {
        let out = world.totpctl(&["enroll", "ivy", "--device", "spare", "--secret", &spelling]);
        assert!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("already holds this key"),
            "the held key spelled {spelling:?} was enrolled again: {out:?}"
        );
    }
    let ga = world.dir.path().join("ga_ivy");
    std::fs::write(&ga, format!("{lower}\n\" TOTP_AUTH\n")).expect("ga file");
    let out = world.totpctl(&[
        "import",
        "google-authenticator",
        ga.to_str().expect("path"),
        "--user",
        "ivy",
        "--device",
        "spare",
        "--apply",
    ]);
    assert!(!out.status.success(), "{out:?}");
    let shown = show(&world, "ivy");
    assert_eq!(shown["tokens"].as_array().map(Vec::len), Some(1), "{shown}");
}

/// Guard (attack failed): `totpctl check` claims nothing (the code still
/// logs in after it), and reports a step used on a twin since disabled as
/// used; the login refuses it on the twin.
#[test]
fn check_reports_a_step_used_on_the_twin_as_used_and_claims_nothing() {
    if !pam_tools_present() || sqlite_only("a store written before enroll refused a held key") {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "jon", "--secret", &key]));
    copy_device(&world, "jon", "default", "spare", Copied::default());
    ok(&world.totpctl(&["disable", "jon", "--device", "spare"]));
    let code = oathtool(&key, None, &[]);
    // check claims nothing: the code still logs in after it.
    ok(&world.totpctl(&["check", "jon", &code]));
    let first = world.login("totp", "jon", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    ok(&world.totpctl(&["disable", "jon", "--device", "default"]));
    ok(&world.totpctl(&["enable", "jon", "--device", "spare"]));
    let checked = world.totpctl(&["check", "jon", &code]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(text.contains("used"), "check on the twin: {text}");
    let again = world.login("totp", "jon", Some(RHOST), &code);
    assert!(!again.success, "{again:?}");
}

// ---------------------------------------------------------------------
// 2. The settlement of a right code (SQLite writes only the net effect).
// ---------------------------------------------------------------------

/// Guard (attacks failed): the source back-off and the user ceiling
/// through right, reused and refused codes, with a frozen clock. A right
/// code inside a back-off is refused and not burned; after it, it clears
/// that source only (the user's ceiling keeps the failures); a reused code
/// clears nothing, counts nothing and lowers nothing; a reused code from a
/// source with failures keeps them; the ceiling then holds from a third
/// address, the right code is not burned, and works after `unlock`. Runs
/// on the run's backend (SQLite; PostgreSQL with PAM_TOTP_TEST_STORE).
#[test]
fn right_and_reused_codes_neither_open_nor_loosen_the_limits() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "fail_delay=0 backoff_after=2 user_limit=4");
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "kit", "--secret", &key]));
    let (a, b, c) = ("203.0.113.7", "198.51.100.9", "192.0.2.33");
    // A future step start, so every time below is in a known step.
    let t0 = (unix_now() / 30 + 20) * 30;
    let code_k = oathtool(&key, Some(t0), &[]);
    let code_k1 = oathtool(&key, Some(t0 + 30), &[]);
    let wrong = |code: &str| common::wrong_code(code);
    let login =
        |at: u64, rhost: &str, code: &str| world.login_at(at, "totp", "kit", Some(rhost), code);

    for at in [t0 + 1, t0 + 2] {
        assert!(!login(at, a, &wrong(&code_k)).success);
    }
    assert_eq!(failure_counts(&world, "kit"), vec![(a.to_string(), 2)]);
    // Backed off until t0 + 32: the right code is refused, and not burned.
    let locked = login(t0 + 10, a, &code_k);
    assert!(
        !locked.success,
        "a right code inside the back-off: {locked:?}"
    );
    assert_eq!(failure_counts(&world, "kit"), vec![(a.to_string(), 2)]);
    // After it the same code logs in (step k, within the window).
    let right = login(t0 + 40, a, &code_k);
    assert!(right.success, "{right:?}");
    assert_eq!(failure_counts(&world, "kit"), vec![]);
    // Used: refused, nothing counted, nothing written for the source.
    let reused = login(t0 + 41, a, &code_k);
    assert!(!reused.success, "{reused:?}");
    assert_eq!(failure_counts(&world, "kit"), vec![]);
    // A second source with a failure: a reused code from it keeps it.
    assert!(!login(t0 + 42, b, &wrong(&code_k)).success);
    let reused = login(t0 + 43, b, &code_k);
    assert!(!reused.success, "{reused:?}");
    assert_eq!(failure_counts(&world, "kit"), vec![(b.to_string(), 1)]);
    // The fourth failure within 24 h (two from a, cleared from the back-off
    // but not from the ceiling): the user is locked everywhere.
    assert!(!login(t0 + 44, b, &wrong(&code_k)).success);
    let ceiling = login(t0 + 50, c, &code_k1);
    assert!(
        !ceiling.success,
        "a right code from a third address under the user ceiling: {ceiling:?}"
    );
    assert!(
        ceiling.logged("too many failed codes for this user"),
        "{ceiling:?}"
    );
    ok(&world.totpctl(&["unlock", "kit"]));
    let after = login(t0 + 55, c, &code_k1);
    assert!(
        after.success,
        "the right code refused under the ceiling was burned: {after:?}"
    );
    assert_eq!(failure_counts(&world, "kit"), vec![]);
}

/// Found by an attack (closed 2026-12-02), through the user's own `totp`: its proof of a device
/// (`codecheck::prove`, for add-device, replace, remove-device) counts the
/// floor of used steps among the usable devices only, and claims on its
/// own row. Two devices with the same key (a store of before the refusal):
/// a code logs in on `default`; the administrator disables `default`; the
/// same code is taken again as `spare`'s proof, and a device is added with
/// it (a login refuses it: its floor counts stopped devices too).
#[test]
fn totp_add_device_does_not_take_a_code_a_stopped_twin_used() {
    if !crate::totp_user::present()
        || sqlite_only("a store written before enroll refused a held key")
    {
        return;
    }
    let s = crate::totp_user::Setup::new("");
    let key = s.enroll();
    let user = s.name().to_string();
    copy_device(&s.world, &user, "default", "spare", Copied::default());
    ok(&s.world.totpctl(&["disable", &user, "--device", "spare"]));
    let code = oathtool(&key, None, &[]);
    assert!(s.login(&code), "the first login");
    ok(&s.world.totpctl(&["disable", &user, "--device", "default"]));
    ok(&s.world.totpctl(&["enable", &user, "--device", "spare"]));
    assert!(!s.login(&code), "a login refuses the used code on the twin");
    let (rc, text) = s.totp(
        &["add-device", "tablet"],
        &[("Current code", &code), ("NEW device", "@newkey")],
    );
    assert!(
        rc != 0 && !text.contains("Added device"),
        "totp add-device took a code already used to log in as its proof (rc {rc}):\n{text}"
    );
}
