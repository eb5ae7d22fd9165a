//! The module built without the PostgreSQL client (`--no-default-features`,
//! installed as `pam_totp.so`) hands a login whose store is PostgreSQL to
//! the full build, installed beside it as `pam_totp_postgresql.so`: every
//! sshd child of a SQLite site loads a 2.6 MB module instead of a 6.1 MB
//! one (issue 18), and a site with `db=postgresql://…` keeps its PAM lines.
//!
//! The hand-over is the PAM interface itself: the full build's entry point
//! (`pam_sm_authenticate`, `pam_sm_acct_mgmt`, `pam_sm_setcred`) is called
//! with the same handle, flags and arguments libpam gave this one, and its
//! result is returned as this module's. The full build is loaded from this
//! module's own directory (root's, where libpam loaded this module from:
//! whoever can write there can replace this module too), with
//! `RTLD_NODELETE`, because what it leaves on the handle (`pam_set_data`
//! cleanup functions) must outlive the call. Missing or unloadable, the
//! login is denied and the log says what to install.

use std::ffi::{CStr, CString, c_void};

use libc::{c_char, c_int};
use pam::constants::{PamFlag, PamResultCode};
use pam::module::PamHandle;

use crate::config::Config;
use crate::store::StoreLocation;

/// The full build's file name, beside this module.
pub const POSTGRES_MODULE: &str = "pam_totp_postgresql.so";

/// Which entry point of the full build to call.
#[derive(Clone, Copy)]
pub enum Hook {
    Authenticate,
    Account,
    Setcred,
}

impl Hook {
    fn symbol(self) -> &'static CStr {
        match self {
            Hook::Authenticate => c"pam_sm_authenticate",
            Hook::Account => c"pam_sm_acct_mgmt",
            Hook::Setcred => c"pam_sm_setcred",
        }
    }
}

/// Whether the configuration names a PostgreSQL store.
pub fn names_postgres(config: &Config) -> bool {
    matches!(config.db, StoreLocation::Postgres(_))
}

type Entry = unsafe extern "C" fn(*mut PamHandle, PamFlag, c_int, *const *const c_char) -> c_int;

/// Calls `hook` of the full build with this call's handle, flags and
/// arguments; `Err` says why it could not (the caller logs it and denies).
pub fn call(
    pamh: &mut PamHandle,
    args: &[&CStr],
    flags: PamFlag,
    hook: Hook,
) -> Result<PamResultCode, String> {
    let path = beside_this_module()?;
    let c_path = CString::new(path.clone()).map_err(|_| "module path contains NUL".to_string())?;
    // SAFETY: `c_path` is NUL-terminated; dlopen has no other precondition.
    // RTLD_NODELETE: the handle may hold cleanup functions of that module
    // until pam_end.
    let library = unsafe {
        libc::dlopen(
            c_path.as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL | libc::RTLD_NODELETE,
        )
    };
    if library.is_null() {
        return Err(format!(
            "cannot load {path} ({}): the store is PostgreSQL and this pam_totp.so is the build without the PostgreSQL client; install the package's {POSTGRES_MODULE} beside it",
            dl_error()
        ));
    }
    // SAFETY: `library` is a live handle (never closed: NODELETE) and the
    // name is NUL-terminated.
    let symbol = unsafe { libc::dlsym(library, hook.symbol().as_ptr()) };
    if symbol.is_null() {
        return Err(format!(
            "{path} has no {}: not a pam_totp build",
            hook.symbol().to_string_lossy()
        ));
    }
    // SAFETY: the symbol is a PAM module entry point of the same crate's
    // full build (pam_hooks!), whose C signature is exactly `Entry`.
    let entry: Entry = unsafe { std::mem::transmute::<*mut c_void, Entry>(symbol) };
    let argv: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
    let argc = c_int::try_from(argv.len()).map_err(|_| "too many module arguments".to_string())?;
    // SAFETY: the handle is the live one libpam passed to this entry
    // point; `argv` holds `argc` pointers to libpam's own NUL-terminated
    // arguments, alive for this call.
    let rc = unsafe { entry(pamh, flags, argc, argv.as_ptr()) };
    Ok(PamResultCode::try_from(rc).unwrap_or(PamResultCode::PAM_SERVICE_ERR))
}

/// `pam_totp_postgresql.so` in the directory this module was loaded from.
fn beside_this_module() -> Result<String, String> {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let here = names_postgres as *const c_void;
    // SAFETY: `here` is an address inside this module; dladdr fills `info`
    // (whose strings belong to the dynamic loader and live while this
    // module is loaded) and returns 0 when it cannot.
    let found = unsafe { libc::dladdr(here, info.as_mut_ptr()) };
    // SAFETY: a zeroed Dl_info is a valid one (null pointers, which are
    // checked below); dladdr only ever fills it in.
    let info = unsafe { info.assume_init() };
    if found == 0 || info.dli_fname.is_null() {
        return Err("cannot tell where this module was loaded from (dladdr)".to_string());
    }
    // SAFETY: a NUL-terminated path owned by the dynamic loader.
    let own = unsafe { CStr::from_ptr(info.dli_fname) }
        .to_string_lossy()
        .into_owned();
    // libpam loads modules by absolute path (a bare name gets its module
    // directory): never let a relative one send dlopen searching.
    let dir = std::path::Path::new(&own)
        .parent()
        .filter(|dir| dir.is_absolute())
        .ok_or_else(|| format!("this module was loaded as {own}, not by an absolute path"))?;
    Ok(dir.join(POSTGRES_MODULE).display().to_string())
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated message owned by
    // libc, valid until the next dl* call on this thread.
    unsafe {
        let message = libc::dlerror();
        if message.is_null() {
            "unknown error".to_string()
        } else {
            CStr::from_ptr(message).to_string_lossy().into_owned()
        }
    }
}
