//! Files the module trusts (the config file, the store, the sealing key,
//! the database password, a CA certificate) must be root's alone, and so
//! must every directory on the way to them. Anything else could let a local
//! user swap in their own store or configuration (cf. pam_oath's
//! CVE-2024-47191).
//!
//! Checking a path and then opening it by path is not enough: whoever can
//! write any directory on the way can swap the file, or a directory above
//! it, between the check and the open. So a trusted file is reached by
//! descriptors, never by a path looked up twice:
//!
//! 1. `/` is opened, and every directory below it is opened from its parent
//!    with `openat(O_PATH | O_NOFOLLOW)`; each descriptor is checked with
//!    `fstat`: a directory (a symlink anywhere is refused, not followed),
//!    owned by root, not writable by group or others. A sticky,
//!    world-writable directory such as /tmp is refused too: anyone can
//!    create names in it. Only root can then change any name on the way.
//! 2. The file is opened from that last directory with `O_NOFOLLOW`, and the
//!    *descriptor* is checked with `fstat`: a regular file, owned by root,
//!    not writable by group or others, and for a secret (the store, a key,
//!    a password) not readable by them either.
//! 3. The contents are read from that same descriptor.
//!
//! The SQLite store is opened by path by SQLite itself (it needs the path
//! for its -wal and -shm files beside it): `CheckedStore::open` checks it
//! as above and keeps the descriptor and its directory, SQLite opens the
//! path with SQLITE_OPEN_NOFOLLOW, and `CheckedStore::still_named` then
//! proves that the path still names the checked file (see there).

use std::ffi::{CStr, CString, OsStr};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use zeroize::Zeroizing;

/// Why a file is not trusted, for the log line: `path` is the file asked
/// for, `problem` says what is wrong (naming the directory when it is one
/// on the way) and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct Untrusted {
    pub path: String,
    pub problem: String,
    /// The file, or a directory on the way to it, does not exist (the
    /// directories before it passed): callers with an optional file (the
    /// default config file) take that as "absent".
    pub not_found: bool,
}

/// What a trusted file holds, which decides who else may read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// Settings anyone may read (the config file, a CA certificate).
    Settings,
    /// A secret (the sealing key, the database password): root's alone.
    Secret,
    /// The SQLite store: every user's token keys. Root's alone, in a
    /// directory that group and others can neither read nor write (SQLite
    /// keeps its -wal and -shm files there).
    Store,
}

impl Holds {
    fn what(self) -> &'static str {
        match self {
            Holds::Settings => "settings",
            Holds::Secret => "a secret",
            Holds::Store => "every user's token keys",
        }
    }
}

/// The largest trusted file read into memory (a CA bundle is ~200 KiB).
const MAX_READ: u64 = 16 << 20;

fn untrusted(path: &Path, problem: impl Into<String>) -> Untrusted {
    Untrusted {
        path: path.display().to_string(),
        problem: problem.into(),
        not_found: false,
    }
}

/// `openat(dir, name, flags | O_CLOEXEC)`, as an owned `File`.
fn open_at(dir: RawFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
    // SAFETY: `dir` is AT_FDCWD or a descriptor the caller holds open for
    // the whole call; `name` is a NUL-terminated string that outlives the
    // call; openat keeps neither.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat just returned this descriptor; nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn c_name(path: &Path, name: &OsStr) -> Result<CString, Untrusted> {
    CString::new(name.as_bytes()).map_err(|_| untrusted(path, "the path contains a NUL byte"))
}

fn kind(meta: &Metadata) -> &'static str {
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
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

fn mode(meta: &Metadata) -> u32 {
    meta.mode() & 0o7777
}

/// The failure of one step of the walk, with `not_found` set for ENOENT.
fn io_problem(path: &Path, what: String, e: &io::Error) -> Untrusted {
    Untrusted {
        path: path.display().to_string(),
        problem: format!("{what}: {e}"),
        not_found: e.kind() == io::ErrorKind::NotFound,
    }
}

/// A directory on the way to `file`: root's, not writable by group or
/// others (sticky or not), not a symlink. Checked on its descriptor.
fn check_dir(file: &Path, dir: &Path, meta: &Metadata) -> Result<(), Untrusted> {
    let d = dir.display();
    if meta.file_type().is_symlink() {
        return Err(untrusted(
            file,
            format!(
                "{d} is a symlink: symlinks on the way to a trusted file are not followed; \
                 name the file by its real path (`realpath {}`)",
                file.display()
            ),
        ));
    }
    if !meta.is_dir() {
        return Err(untrusted(
            file,
            format!("{d} is {}, not a directory", kind(meta)),
        ));
    }
    if meta.uid() != 0 {
        return Err(untrusted(
            file,
            format!(
                "directory {d} is owned by uid {}, not root: its owner could swap the file; \
                 keep it under root-owned directories (chown root: {d})",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        let fix = if meta.mode() & 0o1000 != 0 {
            "the sticky bit does not stop anyone from creating names in it; move the file \
             under root-only directories (like /etc/security or /var/lib/pam_totp)"
                .to_string()
        } else {
            format!("chmod go-w {d}")
        };
        return Err(untrusted(
            file,
            format!(
                "directory {d} is mode {:04o}, group- or world-writable: others could swap \
                 the file; {fix}",
                mode(meta)
            ),
        ));
    }
    Ok(())
}

/// The directory that holds a trusted file, reached and checked by
/// descriptors from `/` down.
struct Parent {
    dir: File,
    dir_path: PathBuf,
    name: CString,
}

/// Walks from `/` to the directory holding `path`, checking every
/// directory on its descriptor (`check_dir`); for the store, also that
/// group and others can neither read nor write its own directory.
fn walk(path: &Path, holds: Holds) -> Result<Parent, Untrusted> {
    if !path.is_absolute() {
        return Err(untrusted(path, "not an absolute path"));
    }
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => names.push(name),
            Component::ParentDir => {
                return Err(untrusted(
                    path,
                    "has a `..` component: name the file by its real path",
                ));
            }
            Component::Prefix(_) => return Err(untrusted(path, "not a Unix path")),
        }
    }
    let Some((name, dirs)) = names.split_last() else {
        return Err(untrusted(path, "names a directory, not a file"));
    };
    let mut dir_path = PathBuf::from("/");
    let mut dir = open_at(
        libc::AT_FDCWD,
        c"/",
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .map_err(|e| io_problem(path, "opening /".into(), &e))?;
    let meta = dir
        .metadata()
        .map_err(|e| io_problem(path, "fstat /".into(), &e))?;
    check_dir(path, &dir_path, &meta)?;
    for name in dirs {
        dir_path.push(name);
        let next = open_at(
            dir.as_raw_fd(),
            &c_name(path, name)?,
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
        )
        .map_err(|e| io_problem(path, format!("directory {}", dir_path.display()), &e))?;
        let meta = next
            .metadata()
            .map_err(|e| io_problem(path, format!("fstat {}", dir_path.display()), &e))?;
        check_dir(path, &dir_path, &meta)?;
        dir = next;
    }
    if holds == Holds::Store {
        let meta = dir
            .metadata()
            .map_err(|e| io_problem(path, format!("fstat {}", dir_path.display()), &e))?;
        if meta.mode() & 0o066 != 0 {
            return Err(untrusted(
                path,
                format!(
                    "store directory {d} is mode {:04o}: group or others can read or write \
                     where the store and its -wal/-shm files live: chmod 700 {d}",
                    mode(&meta),
                    d = dir_path.display()
                ),
            ));
        }
    }
    Ok(Parent {
        dir,
        dir_path,
        name: c_name(path, name)?,
    })
}

/// The checks on the opened file's own descriptor.
fn check_file(path: &Path, meta: &Metadata, holds: Holds) -> Result<(), Untrusted> {
    let p = path.display();
    if meta.file_type().is_symlink() {
        return Err(untrusted(
            path,
            "is a symlink: symlinks are not followed; name the real file",
        ));
    }
    if !meta.file_type().is_file() {
        return Err(untrusted(
            path,
            format!("is {}, not a regular file", kind(meta)),
        ));
    }
    if meta.uid() != 0 {
        return Err(untrusted(
            path,
            format!("owned by uid {}, not root: chown root: {p}", meta.uid()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(untrusted(
            path,
            format!(
                "mode {:04o} is group- or world-writable: chmod go-w {p}",
                mode(meta)
            ),
        ));
    }
    if holds != Holds::Settings && meta.mode() & 0o077 != 0 {
        return Err(untrusted(
            path,
            format!(
                "mode {:04o} lets group or others read it, and it holds {}: chmod 600 {p}",
                mode(meta),
                holds.what()
            ),
        ));
    }
    Ok(())
}

/// The metadata of `name` in the checked directory, without following a
/// symlink and without opening anything but an `O_PATH` descriptor (a FIFO
/// or a device is never opened for reading).
fn peek(path: &Path, parent: &Parent) -> Result<Metadata, Untrusted> {
    open_at(
        parent.dir.as_raw_fd(),
        &parent.name,
        libc::O_PATH | libc::O_NOFOLLOW,
        0,
    )
    .and_then(|f| f.metadata())
    .map_err(|e| io_problem(path, "cannot open".into(), &e))
}

/// Opens a trusted file for reading: every directory from `/` checked on
/// its descriptor, the file opened with `O_NOFOLLOW` from the last one, and
/// the returned descriptor itself checked with `fstat`.
pub fn open(path: &Path, holds: Holds) -> Result<File, Untrusted> {
    Ok(open_keeping_dir(path, holds)?.0)
}

/// The store file opened and checked as `open` does it, with the checked
/// directory it was found in, both held open until SQLite has opened the
/// path (`CheckedStore::still_named`).
pub struct CheckedStore {
    file: File,
    parent: Parent,
}

impl CheckedStore {
    /// Opens and checks the store file (`open` with `Holds::Store`).
    pub fn open(path: &Path) -> Result<CheckedStore, Untrusted> {
        let (file, parent) = open_keeping_dir(path, Holds::Store)?;
        Ok(CheckedStore { file, parent })
    }

    /// Proves that `path` names the checked file after SQLite opened the
    /// path (with SQLITE_OPEN_NOFOLLOW), so its descriptor is not the one
    /// that was checked. But: every directory on the path was checked to be
    /// root's alone, so only root can rename, replace or unlink any name on
    /// it, and the path still leads to the directory held open here; the
    /// file is held open too, so its inode cannot be freed and reused. If,
    /// after SQLite's open, the name in that directory (looked at again with
    /// `O_NOFOLLOW`) is the same device and inode as the held file, the file
    /// SQLite opened is the one that was checked; the only way for them to
    /// differ would be root swapping the file twice within microseconds, and
    /// root needs no race to change the store. (Until issue 18 the whole
    /// path was walked and checked again here: 3 system calls per directory
    /// more, 15 per login for the default store path.)
    pub fn still_named(&self, path: &Path) -> Result<(), Untrusted> {
        let now = peek(path, &self.parent)?;
        let checked = self
            .file
            .metadata()
            .map_err(|e| io_problem(path, "fstat".into(), &e))?;
        if now.dev() != checked.dev() || now.ino() != checked.ino() {
            return Err(untrusted(
                path,
                "was replaced while it was being opened (the file opened is not the one checked)",
            ));
        }
        Ok(())
    }
}

fn open_keeping_dir(path: &Path, holds: Holds) -> Result<(File, Parent), Untrusted> {
    let parent = walk(path, holds)?;
    check_file(path, &peek(path, &parent)?, holds)?;
    let file = open_at(
        parent.dir.as_raw_fd(),
        &parent.name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK,
        0,
    )
    .map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            untrusted(
                path,
                "is a symlink: symlinks are not followed; name the real file",
            )
        } else {
            io_problem(path, "cannot open".into(), &e)
        }
    })?;
    // The check that counts: on the descriptor the contents come from.
    let meta = file
        .metadata()
        .map_err(|e| io_problem(path, "fstat".into(), &e))?;
    check_file(path, &meta, holds)?;
    Ok((file, parent))
}

/// The whole contents of a trusted file, read from the checked descriptor.
pub fn read(path: &Path, holds: Holds) -> Result<Zeroizing<Vec<u8>>, Untrusted> {
    let file = open(path, holds)?;
    let size = file
        .metadata()
        .map_err(|e| io_problem(path, "fstat".into(), &e))?
        .len();
    if size > MAX_READ {
        return Err(untrusted(
            path,
            format!("{size} bytes, more than a trusted file may hold ({MAX_READ})"),
        ));
    }
    // Room for all of it up front: a secret is never copied by a realloc.
    let mut bytes = Zeroizing::new(Vec::with_capacity(
        usize::try_from(size).unwrap_or(0).saturating_add(1),
    ));
    file.take(MAX_READ + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_problem(path, "reading".into(), &e))?;
    if bytes.len() as u64 > MAX_READ {
        return Err(untrusted(
            path,
            format!("more than a trusted file may hold ({MAX_READ} bytes)"),
        ));
    }
    Ok(bytes)
}

/// A file holding a secret (a database password, a sealing key), read from
/// its checked descriptor: the text without its trailing newline.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, Untrusted> {
    let mut bytes = read(path, Holds::Secret)?;
    let mut text = match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Zeroizing::new(text),
        Err(e) => {
            // Wiped when dropped.
            let _wiped = Zeroizing::new(e.into_bytes());
            return Err(untrusted(path, "not valid UTF-8 text"));
        }
    };
    let trimmed = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(trimmed);
    Ok(text)
}

/// Creates the store file (empty, 0600) in its checked directory if it does
/// not exist yet, never through a symlink.
pub fn create_store_file(path: &Path) -> Result<(), Untrusted> {
    let parent = walk(path, Holds::Store)?;
    match open_at(
        parent.dir.as_raw_fd(),
        &parent.name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_NOCTTY,
        0o600,
    ) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_problem(
            path,
            format!("cannot create it in {}", parent.dir_path.display()),
            &e,
        )),
    }
}

/// Before `mkdir -p DIR` as root: every directory of `dir` that exists
/// already passes the checks (those still missing will be root's, made by
/// the caller), so nothing is created through someone else's directory or
/// symlink.
pub fn check_dirs_before_mkdir(dir: &Path) -> Result<(), Untrusted> {
    let parent = match walk(dir, Holds::Settings) {
        Ok(parent) => parent,
        Err(e) if e.not_found => return Ok(()),
        Err(e) => return Err(e),
    };
    let meta = match open_at(
        parent.dir.as_raw_fd(),
        &parent.name,
        libc::O_PATH | libc::O_NOFOLLOW,
        0,
    )
    .and_then(|f| f.metadata())
    {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_problem(dir, "cannot open".into(), &e)),
    };
    check_dir(dir, dir, &meta)
}

/// What `private_store_dir` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreDir {
    /// Not there (yet): it will be created 0700.
    Absent,
    /// Already root's alone.
    Private,
    /// Was readable or writable by group or others: now 0700. The old mode.
    Fixed(u32),
}

/// For `totpctl init`: the directory that will hold the store, reached by
/// descriptors like any trusted path; if it exists and group or others can
/// read or write it, its mode becomes 0700 (on the checked descriptor).
/// A directory not owned by root, or with an untrusted ancestor, is refused.
pub fn private_store_dir(dir: &Path) -> Result<StoreDir, Untrusted> {
    let parent = match walk(dir, Holds::Settings) {
        Ok(parent) => parent,
        Err(e) if e.not_found => return Ok(StoreDir::Absent),
        Err(e) => return Err(e),
    };
    let opened = match open_at(
        parent.dir.as_raw_fd(),
        &parent.name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    ) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(StoreDir::Absent),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(untrusted(
                dir,
                "is a symlink: name the store directory by its real path",
            ));
        }
        Err(e) => return Err(io_problem(dir, "cannot open".into(), &e)),
    };
    let meta = opened
        .metadata()
        .map_err(|e| io_problem(dir, "fstat".into(), &e))?;
    check_dir(dir, dir, &meta)?;
    if meta.mode() & 0o066 == 0 {
        return Ok(StoreDir::Private);
    }
    opened
        .set_permissions(std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_problem(dir, "chmod 700".into(), &e))?;
    Ok(StoreDir::Fixed(mode(&meta)))
}

/// A fresh directory for a test, under a root-owned 0755 base outside /tmp
/// (`PAM_TOTP_TEST_ROOT`, default /run/pam_totp-tests): trusted files in a
/// temp dir under /tmp are refused, as they must be.
#[cfg(test)]
pub(crate) fn test_dir() -> tempfile::TempDir {
    let base = std::env::var_os("PAM_TOTP_TEST_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/pam_totp-tests"));
    match std::fs::create_dir(&base) {
        Ok(()) => {
            std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755))
                .expect("chmod test root");
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("cannot create {}: {e}", base.display()),
    }
    let dir = tempfile::tempdir_in(&base).expect("temp dir under the test root");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod test dir");
    dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::chown(path, Some(uid), None).expect("chown");
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// A test dir with `sub/file` (0600) in it; `sub` is 0700.
    fn layout() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = test_dir();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).expect("mkdir");
        chmod(&sub, 0o700);
        let file = sub.join("file");
        fs::write(&file, b"contents\n").expect("write");
        chmod(&file, 0o600);
        (dir, sub, file)
    }

    fn problem(path: &Path, holds: Holds) -> String {
        open(path, holds).expect_err("untrusted").problem
    }

    #[test]
    fn root_only_files_are_read_from_the_checked_descriptor() {
        if !is_root() {
            return;
        }
        let (_dir, _sub, file) = layout();
        for holds in [Holds::Settings, Holds::Secret, Holds::Store] {
            assert_eq!(
                read(&file, holds).expect("trusted").as_slice(),
                b"contents\n"
            );
        }
        assert_eq!(
            read_secret_file(&file).expect("secret").as_str(),
            "contents"
        );
    }

    #[test]
    fn an_ancestor_owned_by_another_user_is_refused() {
        if !is_root() {
            return;
        }
        let (dir, sub, file) = layout();
        // Owned by a throwaway uid, even with a root-owned 0700 file in a
        // root-owned 0700 directory below it: its owner could rename `sub`.
        chown(dir.path(), 65534);
        let p = problem(&file, Holds::Settings);
        assert!(p.contains("uid 65534"), "{p}");
        assert!(p.contains(&dir.path().display().to_string()), "{p}");
        chown(dir.path(), 0);
        chown(&sub, 65534);
        assert!(problem(&file, Holds::Secret).contains("uid 65534"));
        chown(&sub, 0);
        assert!(open(&file, Holds::Secret).is_ok());
    }

    #[test]
    fn a_group_or_world_writable_ancestor_is_refused_sticky_or_not() {
        if !is_root() {
            return;
        }
        let (dir, _sub, file) = layout();
        for (mode, shown) in [(0o775, "0775"), (0o757, "0757"), (0o1777, "1777")] {
            chmod(dir.path(), mode);
            let p = problem(&file, Holds::Settings);
            assert!(p.contains(shown) && p.contains("world-writable"), "{p}");
        }
        chmod(dir.path(), 0o1777);
        assert!(problem(&file, Holds::Settings).contains("sticky"));
        chmod(dir.path(), 0o755);
        assert!(open(&file, Holds::Settings).is_ok());
        // /tmp itself is such a directory.
        let in_tmp = tempfile::tempdir().expect("tmp");
        let f = in_tmp.path().join("f");
        fs::write(&f, b"x").expect("write");
        chmod(&f, 0o600);
        let p = problem(&f, Holds::Settings);
        assert!(p.contains("group- or world-writable"), "{p}");
    }

    #[test]
    fn symlinks_are_refused_as_the_file_and_as_an_ancestor() {
        if !is_root() {
            return;
        }
        let (dir, sub, file) = layout();
        let link = sub.join("link");
        symlink(&file, &link).expect("symlink");
        assert!(problem(&link, Holds::Settings).contains("is a symlink"));
        let dir_link = dir.path().join("dirlink");
        symlink(&sub, &dir_link).expect("symlink");
        let p = problem(&dir_link.join("file"), Holds::Settings);
        assert!(p.contains("dirlink is a symlink"), "{p}");
        let p = problem(&sub.join("..").join("sub").join("file"), Holds::Settings);
        assert!(p.contains(".."), "{p}");
        assert!(problem(Path::new("relative/file"), Holds::Settings).contains("absolute"));
    }

    #[test]
    fn files_are_checked_for_kind_owner_and_mode() {
        if !is_root() {
            return;
        }
        let (_dir, sub, file) = layout();
        chmod(&file, 0o644);
        assert!(open(&file, Holds::Settings).is_ok(), "settings may be read");
        for holds in [Holds::Secret, Holds::Store] {
            let p = problem(&file, holds);
            assert!(p.contains("mode 0644") && p.contains("chmod 600"), "{p}");
        }
        chmod(&file, 0o640);
        assert!(problem(&file, Holds::Secret).contains("mode 0640"));
        chmod(&file, 0o664);
        assert!(problem(&file, Holds::Settings).contains("chmod go-w"));
        chmod(&file, 0o600);
        chown(&file, 65534);
        assert!(problem(&file, Holds::Settings).contains("owned by uid 65534"));
        chown(&file, 0);
        assert!(problem(&sub, Holds::Settings).contains("a directory"));
        let fifo = sub.join("fifo");
        let name = CString::new(fifo.as_os_str().as_bytes()).expect("name");
        // SAFETY: `name` is a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        assert!(problem(&fifo, Holds::Settings).contains("a FIFO"));
        let missing = open(&sub.join("missing"), Holds::Settings).expect_err("missing");
        assert!(missing.not_found, "{missing}");
        let missing = open(&sub.join("no/such/file"), Holds::Settings).expect_err("missing");
        assert!(missing.not_found, "{missing}");
    }

    #[test]
    fn the_store_directory_must_be_private() {
        if !is_root() {
            return;
        }
        let (_dir, sub, file) = layout();
        chmod(&sub, 0o755);
        assert!(open(&file, Holds::Secret).is_ok());
        let p = problem(&file, Holds::Store);
        assert!(p.contains("0755") && p.contains("chmod 700"), "{p}");
        chmod(&sub, 0o711);
        assert!(open(&file, Holds::Store).is_ok());

        chmod(&sub, 0o755);
        assert_eq!(private_store_dir(&sub), Ok(StoreDir::Fixed(0o755)));
        assert_eq!(mode(&fs::metadata(&sub).expect("stat")), 0o700);
        assert_eq!(private_store_dir(&sub), Ok(StoreDir::Private));
        assert_eq!(private_store_dir(&sub.join("new")), Ok(StoreDir::Absent));
        chown(&sub, 65534);
        assert!(private_store_dir(&sub).is_err());
        chown(&sub, 0);

        let created = sub.join("created.db");
        create_store_file(&created).expect("create");
        assert_eq!(mode(&fs::metadata(&created).expect("stat")), 0o600);
        create_store_file(&created).expect("exists");
        // A symlink in its place is neither followed nor replaced; the open
        // that follows refuses it.
        let link = sub.join("link.db");
        symlink(sub.join("elsewhere.db"), &link).expect("symlink");
        create_store_file(&link).expect("left alone");
        assert!(!sub.join("elsewhere.db").exists());
        assert!(problem(&link, Holds::Store).contains("symlink"));
    }

    #[test]
    fn the_descriptor_is_checked_not_the_path() {
        if !is_root() {
            return;
        }
        let (_dir, sub, file) = layout();
        let checked = CheckedStore::open(&file).expect("trusted");
        let held = &checked.file;
        // A change made after the open shows on the descriptor.
        chmod(&file, 0o644);
        let meta = held.metadata().expect("fstat");
        assert!(check_file(&file, &meta, Holds::Store).is_err());
        chmod(&file, 0o600);
        checked.still_named(&file).expect("still the same file");
        // The path now names another file: the held descriptor is not it.
        let other = sub.join("other");
        fs::write(&other, b"other").expect("write");
        chmod(&other, 0o600);
        fs::rename(&other, &file).expect("swap");
        let err = checked.still_named(&file).expect_err("swapped");
        assert!(err.problem.contains("replaced"), "{err}");
        // What is read comes from the checked descriptor, not the path.
        let mut text = String::new();
        (&checked.file).read_to_string(&mut text).expect("read");
        assert_eq!(text, "contents\n");
    }

    #[test]
    fn nothing_is_created_under_an_untrusted_directory() {
        if !is_root() {
            return;
        }
        let (dir, _sub, _file) = layout();
        assert_eq!(check_dirs_before_mkdir(&dir.path().join("a/b/c")), Ok(()));
        let in_tmp = tempfile::tempdir().expect("tmp");
        let err = check_dirs_before_mkdir(&in_tmp.path().join("state")).expect_err("tmp");
        assert!(err.problem.contains("group- or world-writable"), "{err}");
        let p = create_store_file(&in_tmp.path().join("x.db")).expect_err("tmp");
        assert!(p.problem.contains("/tmp"), "{p}");
        assert!(!in_tmp.path().join("x.db").exists());
    }
}
