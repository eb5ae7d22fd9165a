//! The libc calls the decision needs, in one place: who a user is and which
//! groups they are in (NSS, so LDAP or SSSD count as much as /etc/passwd),
//! the wall clock, when the machine booted, and the host name. The core
//! (`auth`) reaches the system only through the `Accounts` and `Clock`
//! traits, so tests drive it with fixed answers.

use std::ffi::{CStr, CString};
use std::time::{SystemTime, UNIX_EPOCH};

/// Users and groups, for the decision; tests use fixed ones.
pub trait Accounts {
    /// The canonical name of the user PAM was given: the `pw_name` of the
    /// passwd entry NSS returns for it. Where the name service matches
    /// names case-insensitively or accepts aliases (SSSD, `user@domain`),
    /// `BOB` and `bob@site` both become `bob`. `Ok(None)`: NSS knows no
    /// such user. `Err`: the lookup itself failed.
    fn canonical_user(&self, name: &str) -> Result<Option<String>, String>;

    /// The names of every group `user` is in (primary group included).
    fn groups_of(&self, user: &str) -> Result<Vec<String>, String>;

    /// Whether NSS knows a group of this name. `Err`: the lookup failed.
    fn group_exists(&self, group: &str) -> Result<bool, String>;
}

/// The system's answer (NSS).
pub struct Nss;

/// Room for one passwd or group entry's strings; larger entries are retried
/// with a larger buffer up to `MAX_BUFFER`.
const BUFFER: usize = 16 * 1024;
const MAX_BUFFER: usize = 1024 * 1024;

/// One passwd entry: the canonical name and the primary group.
struct PasswdEntry {
    name: String,
    gid: libc::gid_t,
}

fn getpwnam(name: &str) -> Result<Option<PasswdEntry>, String> {
    let c_name = CString::new(name).map_err(|_| "user name contains NUL".to_string())?;
    let mut size = BUFFER;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: passwd is plain old data; getpwnam_r fills it and points
        // its strings into `buf`, which outlives every read of `pwd` below.
        // `found` is either null or points at `pwd`.
        let (rc, entry) = unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut found: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            );
            let entry = if rc == 0 && !found.is_null() && !pwd.pw_name.is_null() {
                Some(PasswdEntry {
                    name: CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
                    gid: pwd.pw_gid,
                })
            } else {
                None
            };
            (rc, entry)
        };
        match rc {
            0 => return Ok(entry),
            libc::ERANGE if size < MAX_BUFFER => size *= 4,
            // "Not found" as some NSS modules report it.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            _ => {
                return Err(format!(
                    "getpwnam_r failed: {}",
                    std::io::Error::from_raw_os_error(rc)
                ));
            }
        }
    }
}

impl Accounts for Nss {
    fn canonical_user(&self, name: &str) -> Result<Option<String>, String> {
        Ok(getpwnam(name)?.map(|entry| entry.name))
    }

    fn groups_of(&self, user: &str) -> Result<Vec<String>, String> {
        let Some(entry) = getpwnam(user)? else {
            return Err(format!("user {user:?} not found in the passwd database"));
        };
        let name = CString::new(user).map_err(|_| "user name contains NUL".to_string())?;
        let mut count: libc::c_int = 64;
        let mut gids: Vec<libc::gid_t> = vec![0; 64];
        loop {
            let capacity = count;
            // SAFETY: `gids` has room for `count` entries; getgrouplist
            // writes at most that many and updates `count`.
            let rc = unsafe {
                libc::getgrouplist(name.as_ptr(), entry.gid, gids.as_mut_ptr(), &mut count)
            };
            if rc >= 0 {
                gids.truncate(usize::try_from(count).unwrap_or(0));
                break;
            }
            if count <= capacity || count > 65_536 {
                return Err(format!("getgrouplist failed for {user:?}"));
            }
            gids.resize(usize::try_from(count).unwrap_or(0), 0);
        }
        Ok(gids.into_iter().filter_map(group_name).collect())
    }

    fn group_exists(&self, group: &str) -> Result<bool, String> {
        Ok(getgrnam_members(group)?.is_some())
    }
}

/// Every user of group `name`, sorted and without duplicates: the members
/// its group entry lists, and the users whose primary group it is (a scan
/// of the passwd database). `Ok(None)`: NSS knows no such group. `Err`: a
/// lookup failed. The scan sees only what the name service enumerates:
/// with SSSD's `enumerate = false` (its default) users whose primary group
/// this is but who are not listed in the group entry are missed.
pub fn group_members(name: &str) -> Result<Option<Vec<String>>, String> {
    let Some((gid, mut members)) = getgrnam_members(name)? else {
        return Ok(None);
    };
    members.extend(users_with_primary_group(gid)?);
    members.sort();
    members.dedup();
    Ok(Some(members))
}

/// The gid of group `name` and the members its entry lists.
fn getgrnam_members(name: &str) -> Result<Option<(libc::gid_t, Vec<String>)>, String> {
    let c_name = CString::new(name).map_err(|_| "group name contains NUL".to_string())?;
    let mut size = BUFFER;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: group is plain old data; getgrnam_r fills it and points
        // its strings and the NULL-terminated gr_mem array into `buf`,
        // which outlives every read below; `found` is null or points at
        // `grp`, and the pointers are read only when it is not null.
        let (rc, entry) = unsafe {
            let mut grp: libc::group = std::mem::zeroed();
            let mut found: *mut libc::group = std::ptr::null_mut();
            let rc = libc::getgrnam_r(
                c_name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            );
            let entry = if rc == 0 && !found.is_null() {
                let mut members = Vec::new();
                let mut member = grp.gr_mem;
                while !member.is_null() && !(*member).is_null() {
                    members.push(CStr::from_ptr(*member).to_string_lossy().into_owned());
                    member = member.add(1);
                }
                Some((grp.gr_gid, members))
            } else {
                None
            };
            (rc, entry)
        };
        match rc {
            0 => return Ok(entry),
            libc::ERANGE if size < MAX_BUFFER => size *= 4,
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            _ => {
                return Err(format!(
                    "getgrnam_r failed: {}",
                    std::io::Error::from_raw_os_error(rc)
                ));
            }
        }
    }
}

/// The names of the passwd entries whose primary group is `gid`: one pass
/// over the passwd database (setpwent, getpwent_r, endpwent). The
/// enumeration state is per process: not for threads that enumerate too.
fn users_with_primary_group(gid: libc::gid_t) -> Result<Vec<String>, String> {
    /// Ends the enumeration however the scan returns.
    struct End;
    impl Drop for End {
        fn drop(&mut self) {
            // SAFETY: endpwent only closes the enumeration setpwent opened.
            unsafe { libc::endpwent() }
        }
    }
    // SAFETY: setpwent (re)starts the enumeration; no preconditions.
    unsafe { libc::setpwent() };
    let _end = End;
    let mut users = Vec::new();
    let mut size = BUFFER;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: as for getpwnam_r: getpwent_r fills `pwd` and points its
        // strings into `buf`, which outlives the copy below; `found` is
        // null or points at `pwd`.
        let (rc, entry) = unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut found: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwent_r(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut found);
            let entry = if rc == 0 && !found.is_null() && !pwd.pw_name.is_null() {
                Some((
                    pwd.pw_gid,
                    CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
                ))
            } else {
                None
            };
            (rc, entry)
        };
        match (rc, entry) {
            (0, Some((user_gid, name))) => {
                if user_gid == gid {
                    users.push(name);
                }
            }
            // The end of the database.
            (0, None) | (libc::ENOENT, _) => return Ok(users),
            // The same entry again, with room for it.
            (libc::ERANGE, _) if size < MAX_BUFFER => size *= 4,
            (rc, _) => {
                return Err(format!(
                    "getpwent_r failed: {}",
                    std::io::Error::from_raw_os_error(rc)
                ));
            }
        }
    }
}

fn group_name(gid: libc::gid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; BUFFER];
    // SAFETY: as for getpwnam_r: the struct points into `buf`, which lives
    // until the name is copied out.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut found: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut found);
        if rc != 0 || found.is_null() || grp.gr_name.is_null() {
            return None;
        }
        Some(CStr::from_ptr(grp.gr_name).to_string_lossy().into_owned())
    }
}

/// One entry of the passwd database, as `all_users` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdUser {
    pub name: String,
    pub uid: u32,
    pub home: std::path::PathBuf,
}

/// Every user the passwd database lists (NSS: `setpwent`, `getpwent_r`,
/// `endpwent`), in its order, each name once (the first entry wins, as for
/// `getpwnam`). For totpctl, which is single-threaded: the enumeration
/// position is one per process. Name services that do not enumerate
/// (SSSD's default `enumerate = false`, many LDAP set-ups) list only the
/// local users. `Err`: the enumeration failed part way, so the list would
/// be incomplete.
pub fn all_users() -> Result<Vec<PasswdUser>, String> {
    use std::os::unix::ffi::OsStrExt;
    let mut users: Vec<PasswdUser> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut size = BUFFER;
    // SAFETY: setpwent takes no arguments and only rewinds libc's
    // enumeration state.
    unsafe { libc::setpwent() };
    let result = loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: passwd is plain old data; getpwent_r fills it and points
        // its strings into `buf`, which outlives every read of `pwd` here;
        // `found` is null or points at `pwd`. The strings are copied out
        // before `buf` is dropped.
        let (rc, entry) = unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut found: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwent_r(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut found);
            let entry = if rc == 0 && !found.is_null() && !pwd.pw_name.is_null() {
                let home = if pwd.pw_dir.is_null() {
                    std::path::PathBuf::new()
                } else {
                    std::path::PathBuf::from(std::ffi::OsStr::from_bytes(
                        CStr::from_ptr(pwd.pw_dir).to_bytes(),
                    ))
                };
                Some(PasswdUser {
                    name: CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned(),
                    uid: pwd.pw_uid,
                    home,
                })
            } else {
                None
            };
            (rc, entry)
        };
        match (rc, entry) {
            (0, Some(user)) => {
                if seen.insert(user.name.clone()) {
                    users.push(user);
                }
            }
            // No entry left (glibc says ENOENT; some modules 0 and null).
            (0, None) | (libc::ENOENT, _) => break Ok(users),
            // glibc hands the same entry again with a larger buffer.
            (libc::ERANGE, _) if size < MAX_BUFFER => size *= 4,
            (rc, _) => {
                break Err(format!(
                    "getpwent_r failed: {}",
                    std::io::Error::from_raw_os_error(rc)
                ));
            }
        }
    };
    // SAFETY: endpwent takes no arguments and only closes libc's
    // enumeration state.
    unsafe { libc::endpwent() };
    result
}

/// The name of the passwd entry of `uid`, if NSS has one.
pub fn user_name_of(uid: u32) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; BUFFER];
    // SAFETY: passwd is plain old data; getpwuid_r fills it and points its
    // strings into `buf`, which outlives the read of `pw_name` below;
    // `found` is null or points at `pwd`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found);
        if rc != 0 || found.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        Some(CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned())
    }
}

/// The real and the effective user id of this process.
pub fn uids() -> (u32, u32) {
    // SAFETY: getuid and geteuid have no preconditions and cannot fail.
    unsafe { (libc::getuid(), libc::geteuid()) }
}

/// The earliest time a clock may say (2000-01-01 00:00 UTC). An earlier
/// one is wrong (a node whose clock came back at the epoch after a power
/// loss), and its TOTP step numbers would be small enough to be HOTP
/// counters (`store::MAX_HOTP_COUNTER`): a code an HOTP token of the same
/// key once gave would come back as TOTP (found by an attack).
pub const EARLIEST_CLOCK: u64 = 946_684_800;

/// Seconds since the Unix epoch; an error for a clock before
/// `EARLIEST_CLOCK`, so that every code login fails closed on it.
pub fn unix_time() -> Result<u64, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| "system clock is before 1970".to_string())?;
    if now < EARLIEST_CLOCK {
        return Err(format!(
            "system clock says {now} s since 1970, before 2000-01-01: it is wrong (set it, e.g. \
             with chrony or systemd-timesyncd); codes are refused until it is right"
        ));
    }
    Ok(now)
}

/// Whole seconds since the machine booted, rounded down.
pub fn uptime() -> Result<u64, String> {
    // SAFETY: sysinfo fills the zeroed struct it is given and touches
    // nothing else.
    let (rc, info) = unsafe {
        let mut info: libc::sysinfo = std::mem::zeroed();
        (libc::sysinfo(&mut info), info)
    };
    if rc != 0 {
        return Err(format!(
            "sysinfo failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    u64::try_from(info.uptime).map_err(|_| "negative uptime".to_string())
}

/// The host name, for the issuer shown in apps when none is configured.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pam_totp".to_string())
}

/// The real user and group ids: who ran this process (for the set-uid
/// `totp`, the caller; never taken from arguments or the environment).
pub fn real_ids() -> (u32, u32) {
    // SAFETY: getuid and getgid have no preconditions and cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// What a set-uid program does first: no core dumps (not dumpable, so no
/// ptrace by the caller either, and RLIMIT_CORE 0), files it creates are
/// private (umask 077), and an environment of nothing (no locale, no
/// TZ, no NSS or library settings of the caller's). Call it before any
/// other thread starts.
pub fn harden_process() -> Result<(), String> {
    let os_error = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes plain integers and changes
    // only this process's dumpable flag.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(os_error("prctl(PR_SET_DUMPABLE)"));
    }
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads one valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
        return Err(os_error("setrlimit(RLIMIT_CORE)"));
    }
    // A file size limit the caller set would make a store write fail half
    // way (and SIGXFSZ end the process); as root, lift it. (A transaction
    // rolls back whole either way; this keeps changes from failing.)
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads one valid rlimit struct; failing (not root)
    // leaves the limit as it was, which is only less convenient.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &unlimited) };
    // SAFETY: umask takes a plain integer and cannot fail.
    unsafe { libc::umask(0o077) };
    let names: Vec<std::ffi::OsString> = std::env::vars_os().map(|(name, _)| name).collect();
    for name in names {
        // SAFETY: the caller runs this before starting any thread, so no
        // other thread reads or writes the environment meanwhile.
        unsafe { std::env::remove_var(name) };
    }
    Ok(())
}

/// For a set-uid program, once it knows its caller: makes the real, effective
/// and saved ids root's, so the caller can no longer signal, stop
/// (SIGSTOP cannot be blocked) or trace the process while it holds the
/// store's write lock, which would stall every login; and ignores the
/// terminal's job-control stops (SIGTSTP, SIGTTIN, SIGTTOU), which the
/// terminal sends whoever the process belongs to. Files the caller names
/// are still opened as the caller (`as_user`).
pub fn become_root_only() -> Result<(), String> {
    let os_error = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: setresgid/setresuid take plain integers; the gid first,
    // while the process may still change it.
    if unsafe { libc::setresgid(0, 0, 0) } != 0 {
        return Err(os_error("setresgid"));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(0, 0, 0) } != 0 {
        return Err(os_error("setresuid"));
    }
    for signal in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        // SAFETY: SIG_IGN is a valid disposition for these signals.
        if unsafe { libc::signal(signal, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(os_error("ignoring job-control signals"));
        }
    }
    Ok(())
}

/// A control group this process is in (or below) whose freezer `uid` may
/// use: from there the caller could stop the process at any instruction,
/// holding the store's write lock, which no uid change prevents. Checks
/// cgroup v2 (`cgroup.freeze`) and the v1 freezer (`freezer.state`) along
/// the process's path up to the hierarchy's root: a file owned by `uid`,
/// or writable by others, is such a control. Unknown layouts are not an
/// error (None): the check adds to the uid change, it does not replace it.
pub fn freezable_by(uid: u32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (file, mount) = if controllers.is_empty() {
            ("cgroup.freeze", cgroup_mount(&mounts, "cgroup2", None))
        } else if controllers.split(',').any(|c| c == "freezer") {
            (
                "freezer.state",
                cgroup_mount(&mounts, "cgroup", Some("freezer")),
            )
        } else {
            continue;
        };
        let Some(mount) = mount else { continue };
        let mut dir = std::path::PathBuf::from(&mount);
        let mut ancestors = vec![dir.clone()];
        for part in path.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            ancestors.push(dir.clone());
        }
        // The hierarchy's root has no freezer file of its own.
        for ancestor in ancestors.iter().skip(1) {
            let control = ancestor.join(file);
            if let Ok(meta) = std::fs::metadata(&control)
                && (meta.uid() == uid || meta.mode() & 0o002 != 0)
            {
                return Some(control.display().to_string());
            }
        }
    }
    None
}

/// The mount point of a cgroup hierarchy of `fstype`, with `option` among
/// its super options (v1 controllers), from /proc/self/mountinfo.
fn cgroup_mount(mountinfo: &str, fstype: &str, option: Option<&str>) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split(' ');
        let (kind, _source, options) = (right.next()?, right.next()?, right.next()?);
        if kind != fstype || option.is_some_and(|o| !options.split(',').any(|x| x == o)) {
            return None;
        }
        left.split(' ').nth(4).map(str::to_string)
    })
}

/// While held, the signals a terminal or another process can send (SIGINT,
/// SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, …) wait: a change being written is
/// not cut in half by them. They are delivered when the guard goes.
pub struct SignalsBlocked {
    old: libc::sigset_t,
}

impl SignalsBlocked {
    pub fn new() -> Result<SignalsBlocked, String> {
        // SAFETY: sigset_t is plain data; sigfillset initialises `all`, and
        // sigprocmask reads `all` and writes the old mask into `old`.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old) != 0 {
                return Err("blocking signals failed".to_string());
            }
            Ok(SignalsBlocked { old })
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new` from a valid sigset_t.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

/// The longest answer `read_hidden` keeps; the rest of a longer line is
/// read and dropped.
const ANSWER_MAX: usize = 256;

/// One line from standard input with the terminal's echo off (when it is
/// a terminal), after `prompt` on standard error. Without the line end.
///
/// On a terminal the line is read key by key with the terminal's own
/// signal keys off, so Ctrl-C or Ctrl-Z at the prompt cannot end or stop
/// the process while the echo is off: Ctrl-C and Ctrl-D give up
/// ("interrupted"), Backspace and Ctrl-U edit, and the terminal is always
/// restored before this returns.
pub fn read_hidden(prompt: &str) -> Result<zeroize::Zeroizing<String>, String> {
    use std::io::Write;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a valid fd and
    // fails (non-zero) when stdin is no terminal.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let tty = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if tty {
        let mut quiet = saved;
        quiet.c_lflag &= !(libc::ECHO | libc::ICANON | libc::ISIG);
        quiet.c_cc[libc::VMIN] = 1;
        quiet.c_cc[libc::VTIME] = 0;
        // SAFETY: sets the attributes of fd from a valid termios. TCSANOW:
        // nothing typed ahead is thrown away.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    // The prompt only once the echo is off, so an answer typed right after
    // it is never shown.
    let _ = write!(std::io::stderr(), "{prompt}");
    let _ = std::io::stderr().flush();
    let read = read_answer(tty);
    if tty {
        // SAFETY: restores the attributes read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
        let _ = writeln!(std::io::stderr());
    }
    read
}

/// The answer, byte by byte from standard input (unbuffered, so nothing
/// after the line is taken from the next reader).
fn read_answer(tty: bool) -> Result<zeroize::Zeroizing<String>, String> {
    let mut line = zeroize::Zeroizing::new(Vec::with_capacity(ANSWER_MAX));
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: reads at most one byte into a valid one-byte buffer.
        let n = unsafe { libc::read(libc::STDIN_FILENO, byte.as_mut_ptr().cast(), 1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("reading the answer: {e}"));
        }
        match (n, byte[0]) {
            (0, _) if line.is_empty() => return Err("no answer (end of input)".to_string()),
            (0, _) | (_, b'\n') | (_, b'\r') => break,
            (_, 0x03) | (_, 0x04) if tty => return Err("interrupted".to_string()),
            (_, 0x7f) | (_, 0x08) if tty => {
                line.pop();
            }
            (_, 0x15) if tty => line.clear(),
            (_, b) if b < 0x20 => {}
            (_, b) if line.len() < ANSWER_MAX => line.push(b),
            _ => {}
        }
    }
    zeroize::Zeroize::zeroize(&mut byte);
    let text = std::str::from_utf8(&line).map_err(|_| "the answer is not text".to_string())?;
    Ok(zeroize::Zeroizing::new(text.trim().to_string()))
}

/// Runs `f` with the effective uid, gid and groups of (uid, gid), then
/// returns to the effective ids before. When the process is not root
/// there is nothing to give up: `f` runs as it is. Fails closed: if the
/// identity cannot be taken back, the error stops the caller.
pub fn as_user<T>(
    uid: libc::uid_t,
    gid: libc::gid_t,
    f: impl FnOnce() -> std::io::Result<T>,
) -> Result<std::io::Result<T>, String> {
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid != 0 {
        return Ok(f());
    }
    let groups = current_groups()?;
    let os_error = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: setgroups reads exactly one gid from a valid pointer.
    if unsafe { libc::setgroups(1, &gid) } != 0 {
        return Err(os_error("setgroups"));
    }
    // SAFETY: setegid and seteuid take plain integers.
    let dropped = unsafe { libc::setegid(gid) } == 0 && unsafe { libc::seteuid(uid) } == 0;
    let result = if dropped {
        Ok(f())
    } else {
        Err(os_error("taking the caller's identity"))
    };
    // Back, whatever happened above.
    // SAFETY: as above; setgroups reads groups.len() gids from the vector.
    let restored = unsafe {
        libc::seteuid(euid) == 0
            && libc::setegid(egid) == 0
            && libc::setgroups(groups.len(), groups.as_ptr()) == 0
    };
    if !restored {
        return Err(os_error("returning to the former identity"));
    }
    result
}

/// The supplementary groups of this process.
fn current_groups() -> Result<Vec<libc::gid_t>, String> {
    // SAFETY: with size 0, getgroups only returns the number of groups.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let count = usize::try_from(count).map_err(|_| "getgroups failed".to_string())?;
    let mut groups: Vec<libc::gid_t> = vec![0; count];
    // SAFETY: the vector has room for `count` gids; getgroups writes at most that many.
    let got = unsafe { libc::getgroups(count as libc::c_int, groups.as_mut_ptr()) };
    let got = usize::try_from(got).map_err(|_| "getgroups failed".to_string())?;
    groups.truncate(got);
    Ok(groups)
}

/// One audit line to syslog (authpriv, notice) under `ident`, through
/// libc's syslog (no dependency of the module's). The line is sent as
/// data (`%s`), never as a format.
pub fn audit_syslog(ident: &'static CStr, line: &str) {
    let Ok(line) = CString::new(line.replace('\0', "?")) else {
        return;
    };
    // SAFETY: openlog keeps the pointer to `ident`, which is 'static;
    // syslog reads the NUL-terminated format and the one string argument
    // it names.
    unsafe {
        libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_AUTHPRIV);
        libc::syslog(libc::LOG_NOTICE, c"%s".as_ptr(), line.as_ptr());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_in_the_root_group_and_strangers_are_errors() {
        let groups = Nss.groups_of("root").expect("root");
        assert!(groups.iter().any(|g| g == "root"), "{groups:?}");
        assert!(Nss.groups_of("no-such-user-pam-totp").is_err());
    }

    #[test]
    fn root_is_a_user_of_the_root_group_and_unknown_groups_are_none() {
        let members = group_members("root").expect("lookup").expect("root group");
        assert!(members.iter().any(|u| u == "root"), "{members:?}");
        assert_eq!(group_members("no-such-group-pam-totp"), Ok(None));
        assert!(group_members("nul\0inside").is_err());
    }

    #[test]
    fn every_user_is_listed_once_with_uid_and_home() {
        let users = all_users().expect("passwd");
        let root = users
            .iter()
            .find(|u| u.name == "root")
            .expect("root listed");
        assert_eq!(root.uid, 0);
        assert!(root.home.is_absolute(), "{root:?}");
        let mut names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), users.len(), "each name once");
    }

    #[test]
    fn canonical_names_come_from_the_passwd_entry() {
        assert_eq!(Nss.canonical_user("root"), Ok(Some("root".to_string())));
        assert_eq!(Nss.canonical_user("no-such-user-pam-totp"), Ok(None));
        assert!(Nss.canonical_user("nul\0inside").is_err());
    }
}
