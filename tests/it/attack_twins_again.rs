//! Attacks on the twin fixes (50a7e80, 7e79848): a used TOTP step or HOTP
//! counter stays used across a user's devices that give the same codes,
//! a held key is refused on another device, a key re-enrolled onto its
//! device keeps its used steps, a device that goes passes its used step on
//! to its twins, and a right code on a token with a twin is settled with
//! the twins read again under the user's hold.
//!
//! Each test says whether it found a hole (each failed on 3efb7ff; all but
//! one closed the same day, the last a session later with a record of
//! deleted keys) or guards an attack that failed (GUARD).

use crate::common;

use std::time::Duration;

use common::rows::{Copied, copy_device, ok, sql, wait_for_lock_waiter};
use common::{RHOST, World, oathtool, oathtool_hotp, pam_tools_present, sqlite_only, unix_now};

fn world() -> World {
    let world = World::new();
    world.service("totp", "fail_delay=0");
    world
}

// ---------------------------------------------------------------------
// 1. A key imported again onto its device, from a file.
// ---------------------------------------------------------------------

/// Found by an attack (closed 2026-12-02). `totpctl import oath FILE --force` onto the device that holds the
/// key (what the refusal of a held key tells the administrator to do:
/// "--device D --force imports it onto that device") takes the counter
/// the file says, not the one the store used since: every HOTP code used
/// since works again. `enroll --force` and `import --home-dirs --force`
/// keep the used counter (`last_used`, `last_step.max(old)`); the file
/// import (`importing.rs`, `enrollment`) does not.
#[test]
fn an_oath_file_imported_again_onto_its_device_keeps_the_used_counters() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let hex = "3132333435363738393031323334353637383930";
    let users = world.dir.path().join("users.oath");
    std::fs::write(&users, format!("HOTP otto - {hex}\n")).expect("users");
    let path = users.to_str().expect("path");
    ok(&world.totpctl(&["import", "oath", path, "--apply"]));
    let hotp = |c: u64| oathtool_hotp(hex, c, true);
    for counter in [0, 1] {
        let run = world.login("totp", "otto", Some(RHOST), &hotp(counter));
        assert!(run.success, "counter {counter}: {run:?}");
    }
    // The same file again, onto the same device.
    ok(&world.totpctl(&["import", "oath", path, "--apply", "--force"]));
    let replay = world.login("totp", "otto", Some(RHOST), &hotp(0));
    assert!(
        !replay.success,
        "HOTP counter 0, used before the file was imported again, logged in again: {replay:?}"
    );
    let replay = world.login("totp", "otto", Some(RHOST), &hotp(1));
    assert!(
        !replay.success,
        "HOTP counter 1, used before the file was imported again, logged in again: {replay:?}"
    );
}

/// Found by an attack (closed 2026-12-02). The same with a google-authenticator file and TOTP: the step the
/// last login used works again once the file is imported onto the device
/// again (`--force`), while still within the window.
#[test]
fn a_google_authenticator_file_imported_again_onto_its_device_keeps_the_used_step() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let key = common::random_secret();
    let ga = world.dir.path().join("ga_otto");
    std::fs::write(&ga, format!("{key}\n\" TOTP_AUTH\n")).expect("ga file");
    let path = ga.to_str().expect("path");
    let import = |extra: &[&str]| {
        let mut args = vec![
            "import",
            "google-authenticator",
            path,
            "--user",
            "otto",
            "--apply",
        ];
        args.extend_from_slice(extra);
        ok(&world.totpctl(&args));
    };
    import(&[]);
    let code = oathtool(&key, None, &[]);
    let first = world.login("totp", "otto", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    import(&["--force"]);
    let replay = world.login("totp", "otto", Some(RHOST), &code);
    assert!(
        !replay.success,
        "a TOTP code logged in a second time after its file was imported again: {replay:?}"
    );
}

// ---------------------------------------------------------------------
// 2. A key that leaves the store and comes back.
// ---------------------------------------------------------------------

/// Found by an attack (closed 2026-12-02, a session later). A device
/// deleted, and its key enrolled again (on another device name: a rename,
/// which totpctl has no verb for; or the same one) within the code's
/// window: the store forgot the step the key used, and the code that just
/// logged in worked again. `delete_passing_on` passed a going device's
/// step only to twins that exist; now every deleted row's used step is
/// kept (`retired_keys`, by a trigger on the delete).
#[test]
fn a_key_deleted_and_enrolled_again_keeps_its_used_step() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    let other = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "laptop", "--secret", &other]));
    let code = oathtool(&key, None, &[]);
    let first = world.login("totp", "ada", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    ok(&world.totpctl(&["delete", "ada", "--device", "phone"]));
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone2", "--secret", &key]));
    let replay = world.login("totp", "ada", Some(RHOST), &code);
    assert!(
        !replay.success,
        "the code that logged in worked again once its key was deleted and enrolled again: {replay:?}"
    );
}

/// The same with sealed keys, and the key file changed (`rekey`) between
/// the delete and the enrollment: the deleted key is kept as its mark
/// (`otp::key_mark`), which no key file seals, so there is nothing to seal
/// again and it still counts.
#[test]
fn a_deleted_key_survives_a_rekey() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let keys = common::private_tempdir();
    let (first, second) = (
        keys.path().join("first.key"),
        keys.path().join("second.key"),
    );
    common::keygen(&first);
    common::keygen(&second);
    let with = |file: &std::path::Path, args: &[&str]| {
        let mut all = vec!["--key-file", file.to_str().expect("path")];
        all.extend_from_slice(args);
        world.totpctl(&all)
    };
    let key = common::random_secret();
    ok(&with(
        &first,
        &["enroll", "ada", "--device", "phone", "--secret", &key],
    ));
    world.service(
        "sealed",
        &format!("fail_delay=0 key_file={}", first.display()),
    );
    let code = oathtool(&key, None, &[]);
    let run = world.login("sealed", "ada", Some(RHOST), &code);
    assert!(run.success, "{run:?}");
    ok(&with(&first, &["delete", "ada", "--device", "phone"]));
    let out = ok(&with(
        &first,
        &["rekey", "--new-key", second.to_str().expect("path")],
    ));
    assert!(!out.contains("deleted key(s)"), "{out}");
    assert_eq!(
        common::rows::sql(
            &world,
            "SELECT count(*) FROM retired_keys WHERE length(secret) > 0"
        ),
        "0"
    );
    ok(&with(
        &second,
        &["enroll", "ada", "--device", "phone", "--secret", &key],
    ));
    world.service(
        "sealed",
        &format!("fail_delay=0 key_file={}", second.display()),
    );
    let replay = world.login("sealed", "ada", Some(RHOST), &code);
    assert!(
        !replay.success,
        "the code worked again after delete, rekey, enroll: {replay:?}"
    );
}

// ---------------------------------------------------------------------
// 3. totpctl confirm and twins (a store of before the refusal).
// ---------------------------------------------------------------------

/// Found by an attack (closed 2026-12-02). `totpctl confirm` checks the code against the pending token's
/// own used step (`match_token`, `CONFIRM`), not its twins': the code a
/// login just used on the active twin confirms the pending one (a code
/// that works twice; "The confirming code is now used", it says).
#[test]
fn confirm_refuses_a_code_a_twin_used() {
    if !pam_tools_present() || sqlite_only("a twin made with sqlite3, as an old store holds it") {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--secret", &key]));
    copy_device(
        &world,
        "ada",
        "default",
        "spare",
        Copied {
            confirmed: "NULL",
            last_step: "NULL",
            ..Copied::default()
        },
    );
    let code = oathtool(&key, None, &[]);
    let first = world.login("totp", "ada", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    let confirm = world.totpctl(&["confirm", "ada", &code, "--device", "spare"]);
    assert!(
        !confirm.status.success(),
        "the code a login used confirmed the pending twin: {}",
        String::from_utf8_lossy(&confirm.stdout)
    );
}

/// Found by an attack (closed 2026-12-02). A pending replacement that is a twin of the device it replaces:
/// its confirmation (`Store::confirm`: `DELETE_OTHER_TOKENS`) removes the
/// old device without passing its used step on, and the confirming code
/// may be of an earlier step of the window than the one the old device
/// used. The code that logged in on the old device (a step ahead: a phone
/// 30 s fast) then logs in again on the new one.
#[test]
fn confirming_a_twin_replacement_keeps_the_step_the_old_device_used() {
    if !pam_tools_present() || sqlite_only("a twin made with sqlite3, as an old store holds it") {
        return;
    }
    let world = world();
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--secret", &key]));
    copy_device(
        &world,
        "ada",
        "default",
        "default.new",
        Copied {
            confirmed: "NULL",
            last_step: "NULL",
            replaces: "'default'",
            ..Copied::default()
        },
    );
    let now = unix_now();
    let ahead = oathtool(&key, Some(now + 30), &[]);
    let first = world.login("totp", "ada", Some(RHOST), &ahead);
    assert!(first.success, "{first:?}");
    let current = oathtool(&key, Some(now), &[]);
    let _ = world.totpctl(&["confirm", "ada", &current]);
    let replay = world.login("totp", "ada", Some(RHOST), &ahead);
    assert!(
        !replay.success,
        "the code that logged in on the replaced device logged in again on its twin: {replay:?}"
    );
}

// ---------------------------------------------------------------------
// 4. PostgreSQL: what is read outside the claim.
// ---------------------------------------------------------------------

/// Found by an attack (closed 2026-12-02), PostgreSQL. Twins of an old store: `default` (6 digits) and
/// `long` (8 digits, the same key). A login that takes the slow way
/// (`mode=combined` with two code lengths) reads the twins again before
/// its claim (`check_answer`), but claims with `claim_step` alone, outside
/// the user's hold; a login the fast way (`RightOnSharedKey`) reads them
/// under the hold. The slow claim held up on its row (here by a reader's
/// `FOR UPDATE`; on a busy server by anything that delays it), the fast
/// login reads, finds the twin unused and claims its own row: both get in
/// with one code (the 6 digits are the last six of the 8).
#[test]
fn a_slow_login_and_a_fast_login_with_one_code_on_twins_do_not_both_get_in() {
    if !pam_tools_present() || !common::postgres_present() {
        return;
    }
    let world = World::with_postgres();
    world.service("totp", "fail_delay=0");
    world.service("comb", "fail_delay=0 mode=combined");
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--secret", &key]));
    copy_device(
        &world,
        "ada",
        "default",
        "long",
        Copied {
            digits: "8",
            ..Copied::default()
        },
    );
    let long = oathtool(&key, None, &["-d", "8"]);
    let short = long[2..].to_string();
    assert_eq!(short, oathtool(&key, None, &[]));
    let (fast, slow) = std::thread::scope(|s| {
        let holder = s.spawn(|| {
            sql(
                &world,
                "BEGIN; SELECT 1 FROM tokens WHERE device = 'long' FOR UPDATE; \
                 SELECT pg_sleep(3); COMMIT",
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        let slow = s.spawn(|| world.login("comb", "ada", Some(RHOST), &format!("pw{long}")));
        wait_for_lock_waiter(&world, "UPDATE tokens");
        let fast = world.login("totp", "ada", Some(RHOST), &short);
        let slow = slow.join().expect("slow login");
        let _ = holder.join();
        (fast, slow)
    });
    assert!(
        !(fast.success && slow.success),
        "one code logged in twice, on twin devices:\nfast: {fast:?}\nslow: {slow:?}"
    );
}

/// Found by an attack (closed 2026-12-02), PostgreSQL. `totpctl delete --device` passes the going device's
/// used step on to its twins (`pass_on_used_steps`) from a plain read
/// under the user's Enrollment hold; a login's claim holds the Guesses
/// hold, another advisory lock, and is not kept out. A claim on the going
/// device that lands between that read and the DELETE is lost with the
/// row: its step works again on the twin. (Here the claim waits on the
/// row behind a reader's `FOR UPDATE`, and the DELETE queues behind it.)
#[test]
fn a_claim_racing_the_delete_of_its_device_stays_used_on_the_twin() {
    if !pam_tools_present() || !common::postgres_present() {
        return;
    }
    let world = World::with_postgres();
    world.service("totp", "fail_delay=0");
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "a", "--secret", &key]));
    copy_device(&world, "ada", "a", "b", Copied::default());
    let code = oathtool(&key, None, &[]);
    let (first, deleted) = std::thread::scope(|s| {
        let holder = s.spawn(|| {
            sql(
                &world,
                "BEGIN; SELECT 1 FROM tokens WHERE device = 'a' FOR UPDATE; \
                 SELECT pg_sleep(3); COMMIT",
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        // Devices are tried in name order: the code claims `a`.
        let login = s.spawn(|| world.login("totp", "ada", Some(RHOST), &code));
        wait_for_lock_waiter(&world, "WITH claimed");
        let delete = s.spawn(|| world.totpctl(&["delete", "ada", "--device", "a"]));
        wait_for_lock_waiter(&world, "DELETE FROM tokens");
        let _ = holder.join();
        (login.join().expect("login"), delete.join().expect("delete"))
    });
    ok(&deleted);
    assert!(first.success, "{first:?}");
    let replay = world.login("totp", "ada", Some(RHOST), &code);
    assert!(
        !replay.success,
        "the code that logged in on a deleted device logged in again on its twin: {replay:?}"
    );
}

// ---------------------------------------------------------------------
// 5. Guards: what failed, and honest users not locked out.
// ---------------------------------------------------------------------

/// GUARD. `mode=combined` sends a numeric password and a code the slow
/// way (two code lengths fit): an 8-digit twin's code used, its last six
/// digits on the 6-digit twin are refused, the slow way and the fast way,
/// and the next step works.
#[test]
fn the_slow_way_refuses_the_six_digits_of_a_used_eight_digit_code() {
    if !pam_tools_present() || sqlite_only("a twin made with sqlite3, as an old store holds it") {
        return;
    }
    let world = world();
    world.service("comb", "fail_delay=0 mode=combined");
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--secret", &key]));
    copy_device(
        &world,
        "ada",
        "default",
        "long",
        Copied {
            digits: "8",
            ..Copied::default()
        },
    );
    let now = unix_now();
    let long = oathtool(&key, Some(now), &["-d", "8"]);
    let short = long[2..].to_string();
    let first = world.login("comb", "ada", Some(RHOST), &format!("12{long}"));
    assert!(first.success, "{first:?}");
    for (service, answer) in [
        ("comb", format!("12{short}")),
        ("comb", format!("pw{short}")),
        ("totp", short.clone()),
    ] {
        let again = world.login(service, "ada", Some(RHOST), &answer);
        assert!(!again.success, "{service}: {again:?}");
    }
    let next = oathtool(&key, Some(now + 30), &[]);
    let run = world.login("comb", "ada", Some(RHOST), &format!("12{next}"));
    assert!(run.success, "the next step: {run:?}");
}

/// GUARD. Honest users: two devices with two keys both log in; a reset
/// to a new key, and a re-enrollment of a held key onto its own device,
/// are not refused; two users with the same key do not share used steps.
#[test]
fn honest_users_with_several_keys_or_one_key_each_are_not_refused() {
    if !pam_tools_present() {
        return;
    }
    let world = world();
    let (k1, k2, k3) = (
        common::random_secret(),
        common::random_secret(),
        common::random_secret(),
    );
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &k1]));
    ok(&world.totpctl(&["enroll", "ada", "--device", "tablet", "--secret", &k2]));
    let now = unix_now();
    assert!(
        world
            .login("totp", "ada", Some(RHOST), &oathtool(&k1, Some(now), &[]))
            .success
    );
    assert!(
        world
            .login("totp", "ada", Some(RHOST), &oathtool(&k2, Some(now), &[]))
            .success
    );
    // The same key for another user: their own business, their own steps.
    ok(&world.totpctl(&["enroll", "bob", "--secret", &k1]));
    assert!(
        world
            .login("totp", "bob", Some(RHOST), &oathtool(&k1, Some(now), &[]))
            .success
    );
    // Onto its own device again: accepted, and the used step stays used.
    ok(&world.totpctl(&[
        "enroll", "ada", "--device", "phone", "--secret", &k1, "--force",
    ]));
    assert!(
        !world
            .login("totp", "ada", Some(RHOST), &oathtool(&k1, Some(now), &[]))
            .success
    );
    // A reset to a new key works at once.
    ok(&world.totpctl(&["reset", "ada", "--secret", &k3]));
    assert!(
        world
            .login("totp", "ada", Some(RHOST), &oathtool(&k3, Some(now), &[]))
            .success
    );
}
