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
        getgrnam_exists(group)
    }
}

/// Whether `getgrnam_r` finds the group.
fn getgrnam_exists(name: &str) -> Result<bool, String> {
    let c_name = CString::new(name).map_err(|_| "group name contains NUL".to_string())?;
    let mut size = BUFFER;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: group is plain old data; getgrnam_r fills it and points
        // its strings into `buf`, which outlives the call; `found` is null
        // or points at `grp`. Nothing is read through the pointers.
        let (rc, found) = unsafe {
            let mut grp: libc::group = std::mem::zeroed();
            let mut found: *mut libc::group = std::ptr::null_mut();
            let rc = libc::getgrnam_r(
                c_name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            );
            (rc, !found.is_null())
        };
        match rc {
            0 => return Ok(found),
            libc::ERANGE if size < MAX_BUFFER => size *= 4,
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(false),
            _ => {
                return Err(format!(
                    "getgrnam_r failed: {}",
                    std::io::Error::from_raw_os_error(rc)
                ));
            }
        }
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

/// Seconds since the Unix epoch.
pub fn unix_time() -> Result<u64, String> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| "system clock is before 1970".to_string())
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
