//! Whether the whole auth stack succeeded, as libpam itself says it.
//!
//! A module runs in the middle of the stack and never learns the stack's
//! verdict: with `auth required pam_unix.so` before it, a wrong password
//! still lets pam_totp run and stage what it would grant. The account and
//! setcred phases commit a stage, and well-behaved applications call them
//! only after a successful `pam_authenticate`; but an application may call
//! them later on the same handle after a failed one (sshd's
//! PasswordAuthentication runs the stack on its long-lived monitor handle,
//! and a public key can then succeed on the same connection).
//!
//! libpam does tell one party the verdict: at the end of `pam_authenticate`
//! it calls the PAM_FAIL_DELAY function with the stack's final status
//! (Linux-PAM `_pam_await_timer`, always, even for a zero delay). So while a
//! stage is pending, the module puts its own function there, remembers the
//! application's, and on a failed stack takes the stage's nonce out of the
//! PAM environment, so nothing can commit it. It then restores and calls
//! the application's function, or sleeps the delay itself as libpam would
//! have (the delay it is handed is already randomised).

use std::ffi::c_void;
use std::sync::Mutex;

use libc::{LOG_NOTICE, c_int, c_uint};
use pam::module::PamHandle;

const PAM_CONV: c_int = 5;
const PAM_FAIL_DELAY: c_int = 10;
const PAM_SUCCESS: c_int = 0;

/// The PAM_FAIL_DELAY function's type (Linux-PAM ≥ 1.0: status, delay in
/// µs, the conversation's appdata).
type DelayFn = unsafe extern "C" fn(c_int, c_uint, *mut c_void);

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_get_item(pamh: *const PamHandle, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_set_item(pamh: *mut PamHandle, item_type: c_int, item: *const c_void) -> c_int;
}

/// The head of libpam's `struct pam_conv`.
#[repr(C)]
struct RawConv {
    conv: *const c_void,
    appdata_ptr: *mut c_void,
}

/// One handle being watched: the handle, its conversation's appdata (what
/// the delay function is called with), and the application's function.
struct Watch {
    pamh: usize,
    appdata: usize,
    original: Option<DelayFn>,
}

static WATCHES: Mutex<Vec<Watch>> = Mutex::new(Vec::new());

fn watches() -> std::sync::MutexGuard<'static, Vec<Watch>> {
    WATCHES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes the handle's watch when libpam drops the module data (pam_end,
/// or a newer watch of the same handle): no entry outlives its handle.
struct Unwatch(usize);

impl Drop for Unwatch {
    fn drop(&mut self) {
        watches().retain(|w| w.pamh != self.0);
    }
}

const DATA_KEY: &str = "pam_totp.stack_result";

/// Watches this `pam_authenticate` for a failed verdict (see the module
/// documentation). `Err` when libpam would not take the function: the
/// caller then must not leave a stage behind.
pub(super) fn watch(pamh: &mut PamHandle) -> Result<(), String> {
    let handle = pamh as *mut PamHandle;
    let mut current: *const c_void = std::ptr::null();
    let mut conv: *const c_void = std::ptr::null();
    // SAFETY: `handle` is the live handle of this entry point; pam_get_item
    // only stores libpam's own pointers into the two out-parameters.
    let (rc_delay, rc_conv) = unsafe {
        (
            pam_get_item(handle, PAM_FAIL_DELAY, &mut current),
            pam_get_item(handle, PAM_CONV, &mut conv),
        )
    };
    if rc_delay != PAM_SUCCESS || rc_conv != PAM_SUCCESS || conv.is_null() {
        return Err("PAM_FAIL_DELAY or PAM_CONV unreadable".to_string());
    }
    // SAFETY: a non-null PAM_CONV item points at libpam's copy of the
    // application's `struct pam_conv`, alive for the whole transaction.
    let appdata = unsafe { (*conv.cast::<RawConv>()).appdata_ptr } as usize;
    let ours = stack_ended as DelayFn as *const c_void;
    let original = if current == ours {
        // A retry in the same transaction: the application's function is
        // the one remembered by the earlier watch.
        let list = watches();
        list.iter()
            .find(|w| w.pamh == handle as usize)
            .and_then(|w| w.original)
    } else if current.is_null() {
        None
    } else {
        // SAFETY: a non-null PAM_FAIL_DELAY item is the application's
        // delay function, of exactly this type.
        Some(unsafe { std::mem::transmute::<*const c_void, DelayFn>(current) })
    };
    // Replacing the data drops an earlier watch of this handle first.
    pamh.set_data(DATA_KEY, Box::new(Unwatch(handle as usize)))
        .map_err(|code| format!("pam_set_data failed: {code:?}"))?;
    watches().push(Watch {
        pamh: handle as usize,
        appdata,
        original,
    });
    // SAFETY: `handle` is live; the item is a function with the type libpam
    // calls PAM_FAIL_DELAY functions with, and it stays loaded while the
    // module is (libpam unloads modules only at pam_end, after the call).
    let rc = unsafe { pam_set_item(handle, PAM_FAIL_DELAY, ours) };
    if rc != PAM_SUCCESS {
        watches().retain(|w| w.pamh != handle as usize);
        return Err(format!("pam_set_item(PAM_FAIL_DELAY) failed ({rc})"));
    }
    Ok(())
}

/// libpam's call at the end of `pam_authenticate`, with the stack's status.
unsafe extern "C" fn stack_ended(status: c_int, delay: c_uint, appdata: *mut c_void) {
    let ended: Vec<Watch> = {
        let mut list = watches();
        let (ended, kept) = list.drain(..).partition(|w| w.appdata == appdata as usize);
        *list = kept;
        ended
    };
    let mut original = None;
    for watch in &ended {
        let pamh = watch.pamh as *mut PamHandle;
        let restore = watch
            .original
            .map_or(std::ptr::null(), |f| f as *const c_void);
        // SAFETY: a watch lives only as long as its handle (`Unwatch`), and
        // libpam calls this from inside that handle's pam_authenticate.
        let pamh = unsafe {
            pam_set_item(pamh, PAM_FAIL_DELAY, restore);
            &mut *pamh
        };
        if status != PAM_SUCCESS {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let Ok(Some(_)) = super::take_env(pamh, super::STAGED_ENV) {
                    super::log(
                        pamh,
                        LOG_NOTICE,
                        "auth stack failed after this module succeeded: what it staged is dropped, nothing granted",
                    );
                }
            }));
        }
        original = original.or(watch.original);
    }
    match original {
        // SAFETY: the application's own delay function, called as libpam
        // would have called it.
        Some(f) => unsafe { f(status, delay, appdata) },
        None if status != PAM_SUCCESS && delay > 0 => {
            std::thread::sleep(std::time::Duration::from_micros(u64::from(delay)));
        }
        None => {}
    }
}
