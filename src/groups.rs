//! Which groups a user is in, through NSS (`getgrouplist`), so groups from
//! LDAP or SSSD count as much as /etc/group. Used only for `exempt_group=`.

use std::ffi::{CStr, CString};

/// Group membership, for the decision; tests use a fixed one.
pub trait Groups {
    /// The names of every group `user` is in (primary group included).
    fn groups_of(&self, user: &str) -> Result<Vec<String>, String>;
}

/// The system's answer (NSS).
pub struct NssGroups;

const BUFFER: usize = 16 * 1024;

impl Groups for NssGroups {
    fn groups_of(&self, user: &str) -> Result<Vec<String>, String> {
        let name = CString::new(user).map_err(|_| "user name contains NUL".to_string())?;
        let primary = primary_gid(&name)?;
        let mut count: libc::c_int = 64;
        let mut gids: Vec<libc::gid_t> = vec![0; 64];
        loop {
            let capacity = count;
            // SAFETY: `gids` has room for `count` entries; getgrouplist
            // writes at most that many and updates `count`.
            let rc = unsafe {
                libc::getgrouplist(name.as_ptr(), primary, gids.as_mut_ptr(), &mut count)
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
}

fn primary_gid(name: &CStr) -> Result<libc::gid_t, String> {
    let mut buf = vec![0 as libc::c_char; BUFFER];
    // SAFETY: passwd is plain old data; getpwnam_r fills it and points its
    // strings into `buf`, which outlives every read of `pwd`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        );
        if rc != 0 || found.is_null() {
            return Err(format!(
                "user {:?} not found in the passwd database",
                name.to_string_lossy()
            ));
        }
        Ok(pwd.pw_gid)
    }
}

fn group_name(gid: libc::gid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; BUFFER];
    // SAFETY: as for getpwnam_r: the struct points into `buf`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_in_the_root_group_and_strangers_are_errors() {
        let groups = NssGroups.groups_of("root").expect("root");
        assert!(groups.iter().any(|g| g == "root"), "{groups:?}");
        assert!(NssGroups.groups_of("no-such-user-pam-totp").is_err());
    }
}
