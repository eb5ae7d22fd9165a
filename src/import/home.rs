//! A user's `~/.google_authenticator`, read by root for `totpctl import
//! google-authenticator --home-dirs`. Unlike the files `trust` reads, this
//! one lives where its user decides everything: it may be a symlink to
//! another user's file or to /etc/shadow, a FIFO that never answers, a
//! file of gigabytes, or be swapped while it is being read. So:
//!
//! - The name is opened once, with `O_NOFOLLOW` (a symlink is refused, not
//!   followed), `O_NONBLOCK` (opening a FIFO does not wait for a writer)
//!   and `O_NOCTTY`.
//! - Every check is made on that descriptor (`fstat`), and the text is read
//!   from it: a regular file, owned by the user whose home it is (so a
//!   file of root's or of another user is refused), writable and readable
//!   by its owner alone (google-authenticator's own module refuses a file
//!   group or others can read: the key may be known), at most `MAX_LEN`
//!   bytes, UTF-8.
//! - Reasons name the problem, never the contents.
//!
//! A home directory that root cannot read (NFS with root squashing) makes
//! the file unreadable, which is reported, not an error of the whole walk.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// The file google-authenticator writes in a user's home directory.
pub const FILE_NAME: &str = ".google_authenticator";

/// The largest file read: a real one is a few hundred bytes (a key, a few
/// options, up to ten scratch codes); google-authenticator's module reads
/// at most 64 KiB too.
pub const MAX_LEN: u64 = 64 * 1024;

/// Why a file is not imported. The owner is given as a uid, for the caller
/// to name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("is a symlink (not followed)")]
    Symlink,
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("is owned by uid {owner}, not by the user whose home it is (uid {user})")]
    Owner { owner: u32, user: u32 },
    #[error("is writable by group or others (mode {0:04o})")]
    Writable(u32),
    #[error(
        "is readable by group or others (mode {0:04o}): the key may be known to others \
         (google-authenticator's module refuses such a file too)"
    )]
    Readable(u32),
    #[error("is {0} bytes, more than such a file holds (at most {MAX_LEN})")]
    TooBig(u64),
    #[error("is not UTF-8 text")]
    NotText,
}

/// What one home directory holds.
#[derive(Debug)]
pub enum Found {
    /// No such file, or no such home directory.
    Absent,
    /// The file is there but is not imported, and why.
    Refused(Refusal),
    /// The file could not be opened or read (e.g. "Permission denied" on
    /// a root-squashed NFS home): the error, never the contents.
    Unreadable(String),
    /// The text, read from the checked descriptor, and the file's (device,
    /// inode), so one file reached through two home directories is read once.
    Text {
        text: Zeroizing<String>,
        file: (u64, u64),
    },
}

/// The path `read_google_authenticator` opens for `home`.
pub fn path_in(home: &Path) -> PathBuf {
    home.join(FILE_NAME)
}

fn file_kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
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

/// Checks the descriptor's metadata: a regular file of `uid`'s, that only
/// its owner may read or write, not larger than `MAX_LEN`.
fn check(meta: &Metadata, uid: u32) -> Result<(), Refusal> {
    if meta.file_type().is_symlink() {
        return Err(Refusal::Symlink);
    }
    if !meta.file_type().is_file() {
        return Err(Refusal::NotRegular(file_kind(meta)));
    }
    if meta.uid() != uid {
        return Err(Refusal::Owner {
            owner: meta.uid(),
            user: uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Refusal::Writable(mode));
    }
    if mode & 0o044 != 0 {
        return Err(Refusal::Readable(mode));
    }
    if meta.len() > MAX_LEN {
        return Err(Refusal::TooBig(meta.len()));
    }
    Ok(())
}

/// Reads `home/.google_authenticator` for the user `uid` whose home it is.
/// Only an absolute `home` is looked in (a passwd entry with an empty or
/// relative home has none).
pub fn read_google_authenticator(home: &Path, uid: u32) -> Found {
    if !home.is_absolute() {
        return Found::Absent;
    }
    let path = path_in(home);
    // A first look without opening, for a clear reason; the checks that
    // count are made again on the opened descriptor below.
    match std::fs::symlink_metadata(&path) {
        Ok(meta) => {
            if let Err(refusal) = check(&meta, uid) {
                return Found::Refused(refusal);
            }
        }
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            return Found::Absent;
        }
        Err(e) => return Found::Unreadable(e.to_string()),
    }
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Found::Refused(Refusal::Symlink);
        }
        Err(e) if e.kind() == ErrorKind::NotFound => return Found::Absent,
        Err(e) => return Found::Unreadable(e.to_string()),
    };
    read_checked(file, uid)
}

fn read_checked(file: File, uid: u32) -> Found {
    let meta = match file.metadata() {
        Ok(meta) => meta,
        Err(e) => return Found::Unreadable(e.to_string()),
    };
    if let Err(refusal) = check(&meta, uid) {
        return Found::Refused(refusal);
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(
        usize::try_from(meta.len()).unwrap_or(0).saturating_add(1),
    ));
    if let Err(e) = file.take(MAX_LEN + 1).read_to_end(&mut bytes) {
        return Found::Unreadable(e.to_string());
    }
    // It grew after the fstat.
    if bytes.len() as u64 > MAX_LEN {
        return Found::Refused(Refusal::TooBig(bytes.len() as u64));
    }
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Found::Text {
            text: Zeroizing::new(text),
            file: (meta.dev(), meta.ino()),
        },
        Err(e) => {
            // Wiped when dropped.
            let _wiped = Zeroizing::new(e.into_bytes());
            Found::Refused(Refusal::NotText)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const FILE: &str = "6TE4DJXQNB4P5OHDCBF3DTTGFM\n\" TOTP_AUTH\n51082359\n";
    /// A uid no account on the machine has.
    const UID: u32 = 54_321;

    fn am_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            eprintln!("SKIPPED: needs root (chown)");
        }
        root
    }

    fn home() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tmp");
        std::os::unix::fs::chown(dir.path(), Some(UID), None).expect("chown");
        dir
    }

    fn put(home: &Path, text: &[u8], owner: u32, mode: u32) {
        let path = path_in(home);
        std::fs::write(&path, text).expect("write");
        std::os::unix::fs::chown(&path, Some(owner), None).expect("chown");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn refusal(home: &Path) -> Refusal {
        match read_google_authenticator(home, UID) {
            Found::Refused(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_owners_private_file_is_read() {
        if !am_root() {
            return;
        }
        let dir = home();
        for mode in [0o400, 0o600] {
            put(dir.path(), FILE.as_bytes(), UID, mode);
            match read_google_authenticator(dir.path(), UID) {
                Found::Text { text, .. } => assert_eq!(text.as_str(), FILE),
                other => panic!("{mode:o}: {other:?}"),
            }
        }
    }

    #[test]
    fn absent_files_and_homes_are_absent() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(matches!(
            read_google_authenticator(dir.path(), UID),
            Found::Absent
        ));
        assert!(matches!(
            read_google_authenticator(&dir.path().join("gone"), UID),
            Found::Absent
        ));
        assert!(matches!(
            read_google_authenticator(Path::new(""), UID),
            Found::Absent
        ));
        assert!(matches!(
            read_google_authenticator(Path::new("relative"), UID),
            Found::Absent
        ));
    }

    #[test]
    fn files_of_others_and_open_modes_are_refused() {
        if !am_root() {
            return;
        }
        let dir = home();
        put(dir.path(), FILE.as_bytes(), 0, 0o400);
        assert_eq!(
            refusal(dir.path()),
            Refusal::Owner {
                owner: 0,
                user: UID
            }
        );
        put(dir.path(), FILE.as_bytes(), UID + 1, 0o400);
        assert_eq!(
            refusal(dir.path()),
            Refusal::Owner {
                owner: UID + 1,
                user: UID
            }
        );
        put(dir.path(), FILE.as_bytes(), UID, 0o620);
        assert_eq!(refusal(dir.path()), Refusal::Writable(0o620));
        put(dir.path(), FILE.as_bytes(), UID, 0o602);
        assert_eq!(refusal(dir.path()), Refusal::Writable(0o602));
        put(dir.path(), FILE.as_bytes(), UID, 0o644);
        assert_eq!(refusal(dir.path()), Refusal::Readable(0o644));
        put(dir.path(), b"\xff\xfe not text", UID, 0o400);
        assert_eq!(refusal(dir.path()), Refusal::NotText);
        let big = vec![b'1'; usize::try_from(MAX_LEN).expect("len") + 1];
        put(dir.path(), &big, UID, 0o400);
        assert_eq!(refusal(dir.path()), Refusal::TooBig(MAX_LEN + 1));
    }

    #[test]
    fn symlinks_fifos_and_directories_are_refused_without_waiting() {
        if !am_root() {
            return;
        }
        let dir = home();
        let target = dir.path().join("real");
        std::fs::write(&target, FILE).expect("write");
        std::os::unix::fs::chown(&target, Some(UID), None).expect("chown");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        std::os::unix::fs::symlink(&target, path_in(dir.path())).expect("symlink");
        assert_eq!(refusal(dir.path()), Refusal::Symlink);
        std::fs::remove_file(path_in(dir.path())).expect("rm");

        let fifo =
            std::ffi::CString::new(path_in(dir.path()).to_str().expect("utf8")).expect("path");
        // SAFETY: a valid NUL-terminated path; mkfifo keeps nothing.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::os::unix::fs::chown(path_in(dir.path()), Some(UID), None).expect("chown");
        assert_eq!(refusal(dir.path()), Refusal::NotRegular("a FIFO"));
        // Opened (O_NONBLOCK) and refused on the descriptor, not waited on.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path_in(dir.path()))
            .expect("open fifo");
        assert!(matches!(
            read_checked(file, UID),
            Found::Refused(Refusal::NotRegular("a FIFO"))
        ));
        std::fs::remove_file(path_in(dir.path())).expect("rm");

        std::fs::create_dir(path_in(dir.path())).expect("mkdir");
        std::os::unix::fs::chown(path_in(dir.path()), Some(UID), None).expect("chown");
        assert_eq!(refusal(dir.path()), Refusal::NotRegular("a directory"));
    }
}
