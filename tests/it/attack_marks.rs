//! Attacks on schema 11's marks: a deleted key is remembered by
//! `retired_keys.key_mark` (an HMAC of the user's name under the key), not
//! by the key. Each test says in its first word whether the attack
//! succeeded (FOUND: the test asserts the secure behaviour and fails until
//! it is fixed) or was held (GUARD: the test passes and keeps it held).

use crate::common;

use common::rows::{ok, sql};
use common::{RHOST, World, oathtool, pam_tools_present, unix_now};

/// The bytes of a base32 key (RFC 4648, upper case, no padding).
fn key_bytes(key: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut acc, mut out) = (0u32, 0u64, Vec::new());
    for c in key.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base32") as u64;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Every file of the SQLite store (the database, its -wal and -shm).
fn store_files(world: &World) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let dir = world.db.parent().expect("dir");
    std::fs::read_dir(dir)
        .expect("store dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read store file");
            (p, bytes)
        })
        .collect()
}

/// Logs `user` in with `key`'s code at `now` and asserts it got in.
fn logs_in(world: &World, user: &str, key: &str, now: u64) {
    let run = world.login_at(
        now,
        "totp",
        user,
        Some(RHOST),
        &oathtool(key, Some(now), &[]),
    );
    assert!(run.success, "{user}: {run:?}");
}

/// The code of `key` at `now` is refused as used, and the next step's
/// logs in.
fn replay_refused(world: &World, user: &str, key: &str, now: u64, what: &str) {
    let replay = world.login_at(
        now,
        "totp",
        user,
        Some(RHOST),
        &oathtool(key, Some(now), &[]),
    );
    assert!(
        !replay.success && replay.logged("already used"),
        "{what}: a deleted key's used code logged in again: {replay:?}"
    );
    logs_in(world, user, key, now + 30);
}

/// FOUND, SQLite. The key of a deleted device is replaced by its mark in
/// `retired_keys`, but the store file still holds the key's bytes: the
/// deleted `tokens` cell is freed, not cleared (no `PRAGMA secure_delete`),
/// and the WAL keeps page images with it, so anyone with a copy of the
/// store (a backup) reads the deleted key back after `delete` and `prune`.
/// Closed: SQLite is built with SQLITE_SECURE_DELETE (.cargo/config.toml;
/// each login's claim also frees a copy of its token's cell) and totpctl
/// sets the pragma; an administrator's connection truncates the WAL when
/// it closes (`SqliteDriver::bound_wal`).
#[test]
fn a_deleted_keys_bytes_stay_in_the_sqlite_file() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new_sqlite();
    world.service("totp", "fail_delay=0");
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    ok(&world.totpctl(&["enroll", "bob", "--secret", &common::random_secret()]));
    logs_in(&world, "ada", &key, unix_now());
    ok(&world.totpctl(&["delete", "ada", "--device", "phone"]));
    ok(&world.totpctl(&["prune", "--pending-older-than", "14d"]));
    assert_eq!(
        sql(
            &world,
            "SELECT count(*) FROM retired_keys WHERE length(secret) > 0"
        ),
        "0",
        "the record holds the key"
    );
    let raw = key_bytes(&key);
    assert_eq!(raw.len(), 20);
    for (path, bytes) in store_files(&world) {
        assert!(
            !bytes.windows(raw.len()).any(|w| w == raw.as_slice()),
            "{} still holds the deleted key's bytes",
            path.display()
        );
    }
}

/// GUARD. The deleted key enrolled again in other spellings and shapes
/// (lower case with spaces, another device name, 8 digits; then `reset` to
/// it with zero bytes appended, and an `enroll --force` onto a device of
/// another key) is found by its mark each time: the used step stays used.
#[test]
fn a_deleted_key_in_other_forms_is_found_by_its_mark() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "fail_delay=0");
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    let now = unix_now();
    logs_in(&world, "ada", &key, now);
    ok(&world.totpctl(&["delete", "ada"]));
    let spaced = key
        .to_lowercase()
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    ok(&world.totpctl(&[
        "enroll", "ada", "--device", "tablet", "--digits", "8", "--secret", &spaced,
    ]));
    // The 8-digit code of the used step.
    let replay = world.login_at(
        now,
        "totp",
        "ada",
        Some(RHOST),
        &oathtool(&key, Some(now), &["-d", "8"]),
    );
    assert!(
        !replay.success && replay.logged("already used"),
        "8 digits, another device, another spelling: {replay:?}"
    );
    let next = oathtool(&key, Some(now + 30), &["-d", "8"]);
    let later = world.login_at(now + 30, "totp", "ada", Some(RHOST), &next);
    assert!(later.success, "{later:?}");
    // reset to the key with five zero bytes appended.
    let padded = format!("{key}AAAAAAAA");
    ok(&world.totpctl(&["reset", "ada", "--secret", &padded, "--now"]));
    replay_refused(&world, "ada", &key, now + 30, "reset to the padded key");
    // A device of another key replaced by the key with --force.
    let other = common::random_secret();
    ok(&world.totpctl(&["delete", "ada"]));
    ok(&world.totpctl(&["enroll", "ada", "--device", "x", "--secret", &other]));
    ok(&world.totpctl(&[
        "enroll", "ada", "--device", "x", "--secret", &key, "--force",
    ]));
    replay_refused(&world, "ada", &key, now + 60, "enroll --force");
    assert_eq!(
        sql(
            &world,
            "SELECT count(*) FROM retired_keys WHERE length(secret) > 0 OR key_mark IS NULL"
        ),
        "0",
        "a record kept its key"
    );
}

/// GUARD. Two users deleted with the same key leave two different marks
/// (the user's name is in the HMAC): a mark tells no one which users
/// shared a key, and one user's record never counts for the other.
#[test]
fn the_same_key_of_two_users_leaves_two_marks() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "fail_delay=0");
    let key = common::random_secret();
    let now = unix_now();
    for user in ["ada", "bob"] {
        ok(&world.totpctl(&["enroll", user, "--secret", &key]));
        logs_in(&world, user, &key, now);
        ok(&world.totpctl(&["delete", user]));
    }
    assert_eq!(
        sql(
            &world,
            "SELECT count(DISTINCT key_mark) FROM retired_keys WHERE key_mark IS NOT NULL"
        ),
        "2"
    );
}

/// Turns the world's schema-11 store back into schema 10 holding `user`'s
/// deleted tokens as schema 10 kept them: the key, no mark.
fn back_to_schema_10(world: &World, user: &str) {
    if world.pg.is_some() {
        // The schema's trigger keeps the rows (with their keys).
        sql(
            world,
            &format!(
                "DELETE FROM tokens WHERE \"user\" = '{user}'; \
                 ALTER TABLE retired_keys DROP COLUMN key_mark; \
                 UPDATE pam_totp_meta SET value = 10 WHERE key = 'schema_version'"
            ),
        );
    } else {
        sql(
            world,
            &format!(
                "INSERT INTO retired_keys (user, device, kind, secret, algorithm, digits, \
                 period, created, last_step, keep_until) SELECT user, device, kind, secret, \
                 algorithm, digits, period, created, last_step, \
                 (last_step + 11) * period + 3600 FROM tokens WHERE user = '{user}'; \
                 DELETE FROM tokens WHERE user = '{user}'; \
                 ALTER TABLE retired_keys DROP COLUMN key_mark; PRAGMA user_version = 10;"
            ),
        );
    }
    assert_eq!(
        sql(
            world,
            &format!("SELECT count(*) FROM retired_keys WHERE \"user\" = '{user}'")
        ),
        "1"
    );
}

/// The 10 -> 11 migration with a record holding a key, on `world`:
/// another user logs in on the schema-10 store, the migration (`init`)
/// keeps the record, the key enrolled again refuses its used code, and the
/// record is a mark afterwards.
fn upgrade_with_a_held_key(world: &World) {
    world.service("totp", "fail_delay=0");
    let key = common::random_secret();
    let bobs = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    ok(&world.totpctl(&["enroll", "bob", "--secret", &bobs]));
    let now = unix_now();
    logs_in(world, "ada", &key, now);
    back_to_schema_10(world, "ada");
    // Logins on a store one schema behind.
    logs_in(world, "bob", &bobs, now);
    ok(&world.totpctl(&["init"]));
    let version = if world.pg.is_some() {
        sql(
            world,
            "SELECT value FROM pam_totp_meta WHERE key = 'schema_version'",
        )
    } else {
        sql(world, "PRAGMA user_version")
    };
    assert_eq!(version, "11");
    ok(&world.totpctl(&["enroll", "ada", "--device", "tablet", "--secret", &key]));
    replay_refused(world, "ada", &key, now, "after the 10 -> 11 migration");
    assert_eq!(
        sql(
            world,
            "SELECT count(*) FROM retired_keys WHERE length(secret) > 0 OR key_mark IS NULL"
        ),
        "0",
        "the upgraded record still holds the key"
    );
    logs_in(world, "bob", &bobs, now + 30);
}

/// GUARD, SQLite. A schema-10 store whose deleted key is held as the key
/// migrates on its first open by totpctl; a login on it before works, and
/// the key enrolled again after refuses the code it used.
#[test]
fn a_schema_10_sqlite_store_with_a_held_key_upgrades() {
    if !pam_tools_present() {
        return;
    }
    upgrade_with_a_held_key(&World::new_sqlite());
}

/// GUARD, PostgreSQL. The same on a schema-10 database: logins work on
/// it, `totpctl init` migrates it, the held key counts and is then marked.
#[test]
fn a_schema_10_postgres_database_with_a_held_key_upgrades() {
    if !pam_tools_present() || !common::postgres_present() {
        return;
    }
    upgrade_with_a_held_key(&World::with_postgres());
}

/// A sealed store (key file `file`) where `user`'s used device was deleted
/// by hand, its record holding the sealed key as schema 10 kept it.
fn sealed_with_a_held_record(world: &World, file: &std::path::Path, user: &str) -> (String, u64) {
    let key = common::random_secret();
    ok(&common::rows::sealed(
        world,
        file,
        &["enroll", user, "--device", "phone", "--secret", &key],
    ));
    let now = unix_now();
    logs_in(world, user, &key, now);
    sql(
        world,
        &format!(
            "INSERT INTO retired_keys (\"user\", device, kind, secret, algorithm, digits, \
             period, created, last_step, keep_until) SELECT \"user\", device, kind, secret, \
             algorithm, digits, period, created, last_step, NULL FROM tokens \
             WHERE \"user\" = '{user}'; DELETE FROM tokens WHERE \"user\" = '{user}'"
        ),
    );
    (key, now)
}

/// FOUND. `totpctl prune` promises to turn every record still holding a
/// key into a mark. Run on a node without the store's key file (none, or
/// another one), it cannot open a sealed record, leaves it holding the
/// key, exits 0 and says nothing of it: the (marked, left) count of
/// `mark_retired` is dropped, so a prune job never tells that keys are
/// still kept. Closed: `Store::mark_deleted_keys` returns it, and prune
/// exits 1 naming the records left and where to run it.
#[test]
fn prune_that_cannot_open_a_record_says_nothing_of_it() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    let (_keys, file, other) = common::rows::two_key_files();
    world.service("totp", &format!("fail_delay=0 key_file={}", file.display()));
    sealed_with_a_held_record(&world, &file, "ada");
    let held = || {
        sql(
            &world,
            "SELECT count(*) FROM retired_keys WHERE length(secret) > 0",
        )
    };
    let before = held();
    assert_ne!(before, "0");
    // A node without the key file, and one with another key file.
    let without = world.totpctl(&["prune", "--pending-older-than", "14d"]);
    let wrong = common::rows::sealed(&world, &other, &["prune", "--pending-older-than", "14d"]);
    assert_eq!(
        held(),
        before,
        "a prune that cannot open it marked a record"
    );
    for (node, out) in [("no key file", without), ("another key file", wrong)] {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success() || text.to_lowercase().contains("deleted key"),
            "{node}: prune left {before} deleted key(s) unmarked, exited 0 and said \
             nothing of it: {text:?}"
        );
    }
    // A prune with the store's key file marks it.
    ok(&common::rows::sealed(
        &world,
        &file,
        &["prune", "--pending-older-than", "14d"],
    ));
    assert_eq!(held(), "0");
}

/// GUARD, PostgreSQL. A sealed schema-10 SQLite store whose deleted key is
/// held (sealed) migrates into PostgreSQL: `migrate` opens it with the key
/// file and carries its mark, never the key; the key enrolled again there
/// refuses the code it used.
#[test]
fn a_held_sealed_record_migrates_to_postgres_as_a_mark() {
    if !pam_tools_present() || !common::postgres_present() {
        return;
    }
    let lite = World::new_sqlite();
    let (_keys, file, _) = common::rows::two_key_files();
    lite.service("totp", &format!("fail_delay=0 key_file={}", file.display()));
    let (key, now) = sealed_with_a_held_record(&lite, &file, "ada");
    sql(
        &lite,
        "ALTER TABLE retired_keys DROP COLUMN key_mark; PRAGMA user_version = 10;",
    );
    let pg = World::with_postgres();
    pg.service("totp", &format!("fail_delay=0 key_file={}", file.display()));
    let (_, database) = pg.pg.as_ref().expect("pg");
    ok(&std::process::Command::new(common::totpctl_path())
        .arg("--key-file")
        .arg(&file)
        .arg("--db-password-file")
        .arg(&database.password_file)
        .arg("migrate")
        .arg("--from")
        .arg(&lite.db)
        .args(["--to", &database.url])
        .output()
        .expect("migrate"));
    assert_eq!(
        sql(
            &pg,
            "SELECT count(*) FROM retired_keys WHERE length(secret) > 0 OR key_mark IS NULL"
        ),
        "0",
        "the migration carried the key"
    );
    ok(&common::rows::sealed(
        &pg,
        &file,
        &["enroll", "ada", "--device", "tablet", "--secret", &key],
    ));
    replay_refused(&pg, "ada", &key, now, "after the migration");
}

/// GUARD. A SHA-256 key longer than the hash's block (100 bytes), used and
/// deleted, then its hash enrolled as the key (which HMAC makes the same:
/// the same codes): the mark is taken over the key as HMAC uses it, so
/// the hash is the deleted key and its used step stays used.
#[test]
fn a_long_keys_hash_enrolled_again_is_the_deleted_key() {
    if !pam_tools_present() {
        return;
    }
    use sha2::Digest;
    let world = World::new();
    world.service("totp", "fail_delay=0");
    let long: Vec<u8> = (0..100u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let alphabet = base32::Alphabet::Rfc4648 { padding: false };
    let key = base32::encode(alphabet, &long);
    let hashed = base32::encode(alphabet, &sha2::Sha256::digest(&long));
    ok(&world.totpctl(&["enroll", "ada", "--algorithm", "sha256", "--secret", &key]));
    let now = unix_now();
    let code = oathtool(&key, Some(now), &["--totp=sha256"]);
    assert_eq!(
        code,
        oathtool(&hashed, Some(now), &["--totp=sha256"]),
        "the oracle: the hash gives the long key's codes"
    );
    let first = world.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    ok(&world.totpctl(&["delete", "ada"]));
    ok(&world.totpctl(&[
        "enroll",
        "ada",
        "--device",
        "other",
        "--algorithm",
        "sha256",
        "--secret",
        &hashed,
    ]));
    let replay = world.login_at(now, "totp", "ada", Some(RHOST), &code);
    assert!(
        !replay.success && replay.logged("already used"),
        "the long key's hash took its used code again: {replay:?}"
    );
}

/// GUARD. A node without the store's key file (none, or another) tries
/// to delete a user or device of a sealed store (whose record it could not
/// mark): refused before anything
/// changes. Deleted on a node with it, the key enrolled again refuses the
/// code it used, and no record holds the key.
#[test]
fn a_node_without_the_key_file_deletes_nothing_it_could_not_mark() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    let (_keys, file, other) = common::rows::two_key_files();
    world.service("totp", &format!("fail_delay=0 key_file={}", file.display()));
    let key = common::random_secret();
    ok(&common::rows::sealed(
        &world,
        &file,
        &["enroll", "ada", "--device", "phone", "--secret", &key],
    ));
    let now = unix_now();
    logs_in(&world, "ada", &key, now);
    let keyless = world.totpctl(&["delete", "ada"]);
    let wrong = common::rows::sealed(&world, &other, &["delete", "ada", "--device", "phone"]);
    // Refused before anything changed: neither could mark what it deletes.
    for (node, out) in [("no key file", keyless), ("another key file", wrong)] {
        assert!(!out.status.success(), "{node}: deleted");
    }
    assert_eq!(common::rows::records_of(&world, "ada"), "0");
    assert_eq!(
        sql(&world, "SELECT count(*) FROM tokens WHERE \"user\" = 'ada'"),
        "1"
    );
    ok(&common::rows::sealed(&world, &file, &["delete", "ada"]));
    ok(&common::rows::sealed(
        &world,
        &file,
        &["enroll", "ada", "--device", "tablet", "--secret", &key],
    ));
    replay_refused(
        &world,
        "ada",
        &key,
        now,
        "deleted on a node without the key file",
    );
    assert_eq!(
        sql(
            &world,
            "SELECT count(*) FROM retired_keys WHERE length(secret) > 0 OR key_mark IS NULL"
        ),
        "0",
        "the enrollment left the record holding the key"
    );
}

/// GUARD. A TOTP key used and deleted comes back through `totpctl import
/// oath` (pam_oath's users file, the key in hex with zero bytes appended,
/// under another device name): the import counts from the deleted key's
/// mark and the used code is refused.
#[test]
fn a_deleted_key_imported_from_an_oath_file_keeps_its_used_step() {
    if !pam_tools_present() {
        return;
    }
    let world = World::new();
    world.service("totp", "fail_delay=0");
    let key = common::random_secret();
    ok(&world.totpctl(&["enroll", "ada", "--device", "phone", "--secret", &key]));
    let now = unix_now();
    logs_in(&world, "ada", &key, now);
    ok(&world.totpctl(&["delete", "ada"]));
    let hex: String = key_bytes(&key)
        .iter()
        .chain(&[0u8; 4])
        .map(|b| format!("{b:02x}"))
        .collect();
    let users = world.dir.path().join("users.oath");
    std::fs::write(&users, format!("HOTP/T30/6 ada - {hex}\n")).expect("users");
    let path = users.to_str().expect("path");
    ok(&world.totpctl(&["import", "oath", path, "--device", "imported", "--apply"]));
    replay_refused(&world, "ada", &key, now, "imported from an oath file");
}

/// GUARD, PostgreSQL. Writers racing over records still holding keys:
/// `totpctl prune` (marking every record, in id order) against deletes and
/// enrollments of the key again of four users whose records it marks too.
/// Every command succeeds (no deadlock between the markings), no record
/// keeps a key, and each user's used code stays used.
#[test]
fn prune_racing_changes_of_devices_marks_everything_once() {
    if !pam_tools_present() || !common::postgres_present() {
        return;
    }
    let world = World::with_postgres();
    world.service("totp", "fail_delay=0");
    let users = ["ada", "bob", "cy", "dee"];
    let now = unix_now();
    let keys: Vec<String> = users
        .iter()
        .map(|user| {
            let key = common::random_secret();
            ok(&world.totpctl(&["enroll", user, "--device", "phone", "--secret", &key]));
            ok(&world.totpctl(&["enroll", user, "--device", "spare"]));
            logs_in(&world, user, &key, now);
            // Held as schema 10 kept it (the trigger keeps the row).
            sql(
                &world,
                &format!("DELETE FROM tokens WHERE \"user\" = '{user}' AND device = 'phone'"),
            );
            key
        })
        .collect();
    std::thread::scope(|s| {
        let prunes: Vec<_> = (0..2)
            .map(|_| s.spawn(|| world.totpctl(&["prune", "--pending-older-than", "14d"])))
            .collect();
        let changes: Vec<_> = users
            .iter()
            .zip(&keys)
            .map(|(user, key)| {
                let world = &world;
                s.spawn(move || {
                    let deleted = world.totpctl(&["delete", user, "--device", "spare"]);
                    let again =
                        world.totpctl(&["enroll", user, "--device", "tablet", "--secret", key]);
                    (deleted, again)
                })
            })
            .collect();
        for p in prunes {
            ok(&p.join().expect("prune"));
        }
        for c in changes {
            let (deleted, again) = c.join().expect("change");
            ok(&deleted);
            ok(&again);
        }
    });
    assert_eq!(
        sql(
            &world,
            "SELECT count(*) FROM retired_keys WHERE length(secret) > 0 OR key_mark IS NULL"
        ),
        "0"
    );
    for (user, key) in users.iter().zip(&keys) {
        replay_refused(&world, user, key, now, "after the race");
    }
}
