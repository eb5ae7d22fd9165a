//! Files the module trusts must be root's alone: a regular file (not a
//! symlink), owned by root, not writable by group or others, in a directory
//! that is also root's alone. Anything else could let a local user swap in
//! their own store or configuration (cf. pam_oath's CVE-2024-47191).
//!
//! The check reads metadata without following links; the file is then
//! opened with O_NOFOLLOW. Between the two nobody but root can replace it,
//! because only root can write to the directory.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Why a path is not trusted, for the log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct Untrusted {
    pub path: String,
    pub problem: String,
}

fn untrusted(path: &Path, problem: impl Into<String>) -> Untrusted {
    Untrusted {
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

fn owner_and_mode(path: &Path, meta: &fs::Metadata) -> Result<(), Untrusted> {
    if meta.uid() != 0 {
        return Err(untrusted(
            path,
            format!("owned by uid {}, not root", meta.uid()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(untrusted(
            path,
            format!(
                "mode {:04o} is group- or world-writable",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

fn kind(meta: &fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// A regular, root-owned file nobody else can write.
pub fn check_file(path: &Path) -> Result<(), Untrusted> {
    let meta = fs::symlink_metadata(path).map_err(|e| untrusted(path, e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(untrusted(path, format!("is {}", kind(&meta))));
    }
    owner_and_mode(path, &meta)
}

/// A root-owned directory nobody else can write (not a symlink).
pub fn check_dir(path: &Path) -> Result<(), Untrusted> {
    let meta = fs::symlink_metadata(path).map_err(|e| untrusted(path, e.to_string()))?;
    if !meta.file_type().is_dir() {
        return Err(untrusted(
            path,
            format!("is {}, not a directory", kind(&meta)),
        ));
    }
    owner_and_mode(path, &meta)
}

/// The file and the directory that holds it.
pub fn check_file_and_dir(path: &Path) -> Result<(), Untrusted> {
    check_file(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    check_dir(dir)
}

/// A file holding a secret (a database password, a sealing key): trusted
/// like any other file, and readable by root alone (mode 0600 or 0400).
pub fn check_secret_file(path: &Path) -> Result<(), Untrusted> {
    check_file_and_dir(path)?;
    let meta = fs::symlink_metadata(path).map_err(|e| untrusted(path, e.to_string()))?;
    if meta.mode() & 0o077 != 0 {
        return Err(untrusted(
            path,
            format!(
                "mode {:04o} lets group or others read it (a secret: 0600)",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Reads a secret file after `check_secret_file`, without following a link;
/// the content without its trailing newline.
pub fn read_secret_file(path: &Path) -> Result<zeroize::Zeroizing<String>, Untrusted> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    check_secret_file(path)?;
    let mut text = zeroize::Zeroizing::new(String::new());
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| untrusted(path, e.to_string()))?;
    let trimmed = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(trimmed);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn root_only_files_pass_and_everything_else_is_named() {
        // The test suite runs as root (it drives PAM and sshd).
        if unsafe_is_not_root() {
            return;
        }
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("store.db");
        fs::write(&file, b"x").expect("write");
        chmod(&file, 0o600);
        chmod(dir.path(), 0o700);
        assert_eq!(check_file_and_dir(&file), Ok(()));

        chmod(&file, 0o664);
        assert!(
            check_file(&file)
                .expect_err("g+w")
                .problem
                .contains("mode 0664")
        );
        chmod(&file, 0o600);

        chmod(dir.path(), 0o777);
        assert!(
            check_file_and_dir(&file)
                .expect_err("o+w dir")
                .problem
                .contains("0777")
        );
        chmod(dir.path(), 0o700);

        std::os::unix::fs::chown(&file, Some(65534), None).expect("chown");
        assert!(
            check_file(&file)
                .expect_err("nobody")
                .problem
                .contains("uid 65534")
        );
        std::os::unix::fs::chown(&file, Some(0), None).expect("chown");

        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert_eq!(
            check_file(&link).expect_err("symlink").problem,
            "is a symlink"
        );
        assert_eq!(
            check_file(dir.path()).expect_err("dir").problem,
            "is a directory"
        );
        assert!(check_file(&dir.path().join("missing")).is_err());
    }

    fn unsafe_is_not_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() != 0 }
    }
}
