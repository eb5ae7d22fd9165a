//! The module as a site installs it since issue 18 (`scripts/build-modules.sh`
//! puts both in target/modules/, which `scripts/test.sh` runs first):
//! `pam_totp.so`, the crate built without the PostgreSQL client, and
//! `pam_totp_postgresql.so`, the full build, beside it.
//!
//! - the lean module links no PostgreSQL client and is less than half the
//!   size of the full one;
//! - a SQLite store: logins through the lean module alone (no second
//!   module anywhere near it), a code used once;
//! - a PostgreSQL store: the lean module hands the login to
//!   pam_totp_postgresql.so: in, the code refused the second time, and a
//!   grace staged by the auth phase committed by the account phase, both
//!   handed over;
//! - a PostgreSQL store with no pam_totp_postgresql.so beside the lean
//!   module: denied, and the log says what to install.

use crate::common;

use std::path::{Path, PathBuf};

use common::{RHOST, World, oathtool, pam_tools_present, postgres_present};

/// (pam_totp.so, pam_totp_postgresql.so) from target/modules/, or `None`
/// (and a note) when scripts/build-modules.sh has not run; with
/// `PAM_TOTP_REQUIRE_MODULES=1` (scripts/test.sh) a missing pair fails.
fn modules() -> Option<(PathBuf, PathBuf)> {
    let dir = common::profile_dir()
        .parent()
        .map(|target| target.join("modules"))
        .expect("target dir");
    let lean = dir.join("pam_totp.so");
    let full = dir.join("pam_totp_postgresql.so");
    if lean.exists() && full.exists() {
        return Some((lean, full));
    }
    assert!(
        std::env::var_os("PAM_TOTP_REQUIRE_MODULES").is_none(),
        "{} missing: run scripts/build-modules.sh",
        dir.display()
    );
    eprintln!(
        "SKIPPED: {} has no pam_totp.so and pam_totp_postgresql.so (scripts/build-modules.sh)",
        dir.display()
    );
    None
}

/// An auth line (and an account line, and pam_permit) naming `module`
/// with this world's store.
fn service(world: &World, name: &str, module: &Path, args: &str) {
    let line = format!(
        "{} {} fail_delay=0 db_timeout=20 {args}\n",
        module.display(),
        world.store_args()
    );
    world.raw_service(
        name,
        &format!("auth required {line}account required {line}account required pam_permit.so\n"),
    );
}

/// A copy of the lean module alone in a directory of its own.
fn lean_alone(lean: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = common::dirs::trusted_tempdir();
    let copy = dir.path().join("pam_totp.so");
    std::fs::copy(lean, &copy).expect("copy the module");
    (dir, copy)
}

#[test]
fn the_lean_module_links_no_postgresql_client() {
    let Some((lean, full)) = modules() else {
        return;
    };
    let size = |p: &Path| std::fs::metadata(p).expect("module").len();
    assert!(
        size(&lean) * 2 < size(&full),
        "pam_totp.so {} bytes, pam_totp_postgresql.so {} bytes",
        size(&lean),
        size(&full)
    );
    let text = std::fs::read(&lean).expect("read");
    for client in [&b"tokio-postgres"[..], b"rustls", b"SCRAM-SHA-256"] {
        assert!(
            !text.windows(client.len()).any(|w| w == client),
            "pam_totp.so contains {}",
            String::from_utf8_lossy(client)
        );
    }
    println!(
        "pam_totp.so {} bytes, pam_totp_postgresql.so {} bytes",
        size(&lean),
        size(&full)
    );
}

#[test]
fn sqlite_logins_need_no_second_module() {
    let Some((lean, _)) = modules() else {
        return;
    };
    if !pam_tools_present() {
        return;
    }
    let (_dir, alone) = lean_alone(&lean);
    let world = World::new_sqlite();
    service(&world, "lean", &alone, "");
    let key = world.enroll("sally");
    let code = oathtool(&key, None, &[]);
    let first = world.login("lean", "sally", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    let again = world.login("lean", "sally", Some(RHOST), &code);
    assert!(
        !again.success && again.logged("code already used"),
        "{again:?}"
    );
    println!(
        "{} alone: a right code in, the same code refused as used",
        alone.display()
    );
}

#[test]
fn a_postgresql_store_is_handed_to_pam_totp_postgresql() {
    let Some((lean, _)) = modules() else {
        return;
    };
    if !pam_tools_present() || !postgres_present() {
        return;
    }
    let world = World::with_postgres();
    service(&world, "lean", &lean, "");
    service(&world, "lean_grace", &lean, "grace=1h");
    assert!(world.totpctl(&["init"]).status.success());
    let key = world.enroll("paula");
    let code = oathtool(&key, None, &[]);
    let first = world.login("lean", "paula", Some(RHOST), &code);
    assert!(first.success, "{first:?}");
    let again = world.login("lean", "paula", Some(RHOST), &code);
    assert!(
        !again.success && again.logged("code already used"),
        "{again:?}"
    );
    // A grace: staged by pam_sm_authenticate, stored by pam_sm_acct_mgmt,
    // both in the full build behind the lean one.
    let key = world.enroll("grace");
    let code = oathtool(&key, None, &[]);
    let out = world.pam_worker("lean_grace", "grace", RHOST, &[&code], "account");
    assert!(
        out.contains("RESULT 0") && out.contains("ACCOUNT 0"),
        "{out}"
    );
    let skipped = world.login("lean_grace", "grace", Some(RHOST), "000000");
    assert!(skipped.success, "the grace was stored: {skipped:?}");
}

#[test]
fn without_pam_totp_postgresql_a_postgresql_store_denies_and_says_what_to_install() {
    let Some((lean, _)) = modules() else {
        return;
    };
    if !pam_tools_present() || !postgres_present() {
        return;
    }
    let (_dir, alone) = lean_alone(&lean);
    let world = World::with_postgres();
    service(&world, "lean_alone", &alone, "");
    assert!(world.totpctl(&["init"]).status.success());
    let key = world.enroll("pete");
    let run = world.login(
        "lean_alone",
        "pete",
        Some(RHOST),
        &oathtool(&key, None, &[]),
    );
    assert!(!run.success, "{run:?}");
    assert!(run.logged("pam_totp_postgresql.so"), "{run:?}");
}
