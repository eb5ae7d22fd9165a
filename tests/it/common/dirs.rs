//! Directories for test files the module must trust (shared by the tests
//! and the benches).

use std::path::PathBuf;

/// Where test worlds live. The module trusts a store, config, key or
/// password file only when every directory above it is root's and not
/// writable by group or others, so not under /tmp or /var/tmp (sticky,
/// world-writable): a root-owned 0755 directory outside them,
/// `PAM_TOTP_TEST_ROOT` or /run/pam_totp-tests.
pub fn test_root() -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let base = std::env::var_os("PAM_TOTP_TEST_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/pam_totp-tests"));
    match std::fs::create_dir(&base) {
        Ok(()) => std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755))
            .expect("chmod test root"),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("cannot create the test root {}: {e}", base.display()),
    }
    let meta = std::fs::symlink_metadata(&base).expect("test root");
    assert!(
        meta.is_dir() && meta.uid() == 0 && meta.mode() & 0o022 == 0,
        "{} must be a root-owned directory others cannot write",
        base.display()
    );
    base
}

/// A fresh directory (0755, root's) under `test_root()`, removed on drop.
pub fn trusted_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir_in(test_root()).expect("tempdir under the test root");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod tempdir");
    dir
}

/// A fresh directory only root can read (0700), for a store or secrets.
pub fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = trusted_tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod tempdir");
    dir
}
