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
//! libpam does tell one party the verdict: at the end of every
//! `pam_authenticate` it calls the handle's PAM_FAIL_DELAY function with the
//! stack's final status (Linux-PAM `_pam_await_timer`, always, even for a
//! zero delay). So while a stage is pending the module puts a function of
//! its own there and records each verdict; on a failure the stage's nonce
//! leaves the PAM environment at once, and the commit refuses unless the
//! last verdict recorded for the handle is a success. The application's own
//! function is called as before (or the delay slept, as libpam would).
//!
//! libpam hands that function only the status, the delay and the
//! conversation's appdata, not the handle, and appdata is no identity (it
//! is NULL in most applications and can change). So each watched handle
//! gets a function of its own: one of `SLOTS` trampolines, each bound to one
//! slot that names its handle. A handle that cannot get a slot stages
//! nothing.
//!
//! A stage can also arrive from another process: OpenSSH runs
//! keyboard-interactive in a child and hands the PAM environment back to
//! the monitor only when the stack succeeded. The monitor then has no
//! record for the handle, and the commit relies on that hand-over.

use std::ffi::c_void;
use std::sync::Mutex;

use libc::{LOG_NOTICE, c_int, c_uint};
use pam::module::PamHandle;

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

/// What libpam last said about a watched handle's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Watched, but no `pam_authenticate` has ended since: the
    /// application replaced the delay function, or has not finished.
    Pending,
    Succeeded,
    Failed,
}

#[derive(Clone, Copy)]
struct Slot {
    /// The watched handle's address; 0 for a free slot.
    pamh: usize,
    /// The application's delay function, called after ours.
    original: Option<DelayFn>,
    /// Which stage the verdicts are about (`stage_tag` of its nonce).
    stage: u64,
    verdict: Verdict,
}

const FREE: Slot = Slot {
    pamh: 0,
    original: None,
    stage: 0,
    verdict: Verdict::Pending,
};

/// 64 bits of a stage's nonce (hex), to tell stages apart.
fn stage_tag(nonce: &str) -> u64 {
    nonce
        .get(..16)
        .and_then(|head| u64::from_str_radix(head, 16).ok())
        .unwrap_or(0)
}

/// How many handles one process can watch at once (a PAM application runs
/// one or a few transactions at a time; sshd runs one per process).
const SLOTS: usize = 32;

static TABLE: Mutex<[Slot; SLOTS]> = Mutex::new([FREE; SLOTS]);

fn table() -> std::sync::MutexGuard<'static, [Slot; SLOTS]> {
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

macro_rules! trampolines {
    ($($slot:literal),*) => {
        /// One delay function per slot, so each knows its handle.
        const TRAMPOLINES: [DelayFn; SLOTS] = [$({
            unsafe extern "C" fn trampoline(status: c_int, delay: c_uint, appdata: *mut c_void) {
                stack_ended($slot, status, delay, appdata)
            }
            trampoline
        }),*];
    };
}
trampolines!(
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31
);

fn trampoline_slot(f: *const c_void) -> Option<usize> {
    TRAMPOLINES.iter().position(|t| *t as *const c_void == f)
}

/// Frees the handle's slot when libpam drops the module data (pam_end, or
/// a newer watch of the same handle): no slot outlives its handle.
struct Unwatch {
    slot: usize,
    pamh: usize,
}

impl Drop for Unwatch {
    fn drop(&mut self) {
        let mut slots = table();
        if slots[self.slot].pamh == self.pamh {
            slots[self.slot] = FREE;
        }
    }
}

const DATA_KEY: &str = "pam_totp.stack_result";

/// Watches this handle's `pam_authenticate` verdicts until the stage is
/// committed (`release`) or the handle ends. `Err` when it cannot: the
/// caller then must not leave a stage behind.
pub(super) fn watch(pamh: &mut PamHandle, nonce: &str) -> Result<(), String> {
    let stage = stage_tag(nonce);
    let handle = pamh as *mut PamHandle as usize;
    let mut current: *const c_void = std::ptr::null();
    // SAFETY: `pamh` is the live handle of this entry point; pam_get_item
    // only stores libpam's pointer into the out-parameter.
    let rc = unsafe { pam_get_item(pamh, PAM_FAIL_DELAY, &mut current) };
    if rc != PAM_SUCCESS {
        return Err(format!("PAM_FAIL_DELAY unreadable ({rc})"));
    }
    {
        let mut slots = table();
        // A retry in the same transaction, still watched: a new verdict is
        // awaited, the application's function is the one remembered.
        if let Some(slot) = trampoline_slot(current).filter(|&s| slots[s].pamh == handle) {
            slots[slot].verdict = Verdict::Pending;
            slots[slot].stage = stage;
            return Ok(());
        }
    }
    let original = match trampoline_slot(current) {
        // Another handle's trampoline is never chained to.
        Some(_) => None,
        None if current.is_null() => None,
        // SAFETY: a non-null PAM_FAIL_DELAY item other than ours is the
        // application's delay function, of exactly this type.
        None => Some(unsafe { std::mem::transmute::<*const c_void, DelayFn>(current) }),
    };
    let slot = {
        let mut slots = table();
        let Some(slot) = slots.iter().position(|s| s.pamh == 0) else {
            return Err(format!(
                "more than {SLOTS} transactions watched in this process"
            ));
        };
        slots[slot] = Slot {
            pamh: handle,
            original,
            stage,
            verdict: Verdict::Pending,
        };
        slot
    };
    // Replacing the data frees an earlier slot of this handle.
    if let Err(code) = pamh.set_data(DATA_KEY, Box::new(Unwatch { slot, pamh: handle })) {
        table()[slot] = FREE;
        return Err(format!("pam_set_data failed: {code:?}"));
    }
    let ours = TRAMPOLINES[slot] as *const c_void;
    // SAFETY: `pamh` is live; the item is a function of the type libpam
    // calls PAM_FAIL_DELAY functions with, and it stays loaded while the
    // module is (libpam unloads modules only in pam_end, after which the
    // handle is gone).
    let rc = unsafe { pam_set_item(pamh, PAM_FAIL_DELAY, ours) };
    if rc != PAM_SUCCESS {
        table()[slot] = FREE;
        return Err(format!("pam_set_item(PAM_FAIL_DELAY) failed ({rc})"));
    }
    Ok(())
}

/// The last verdict recorded for the stage with this nonce on this handle,
/// or `None` when this process did not stage it here (it came from another
/// process, e.g. sshd's keyboard-interactive child, which hands the PAM
/// environment back only when its stack succeeded).
pub(super) fn verdict(pamh: &PamHandle, nonce: &str) -> Option<Verdict> {
    let handle = pamh as *const PamHandle as usize;
    let stage = stage_tag(nonce);
    table()
        .iter()
        .find(|s| s.pamh == handle && s.stage == stage)
        .map(|s| s.verdict)
}

/// Ends the watch once the stage is committed or refused: the
/// application's own delay function goes back in place.
pub(super) fn release(pamh: &mut PamHandle) {
    let handle = pamh as *mut PamHandle as usize;
    let original = {
        let mut slots = table();
        let Some(slot) = slots.iter().position(|s| s.pamh == handle) else {
            return;
        };
        let original = slots[slot].original;
        slots[slot] = FREE;
        original
    };
    let restore = original.map_or(std::ptr::null(), |f| f as *const c_void);
    // SAFETY: `pamh` is the live handle of this entry point; the item is
    // the application's own function (or none), as it was before.
    unsafe {
        pam_set_item(pamh, PAM_FAIL_DELAY, restore);
    }
}

/// libpam's call at the end of a watched handle's `pam_authenticate`, with
/// the stack's status, through the handle's own trampoline.
fn stack_ended(slot: usize, status: c_int, delay: c_uint, appdata: *mut c_void) {
    let watched = {
        let mut slots = table();
        let watched = slots[slot];
        if watched.pamh != 0 {
            slots[slot].verdict = if status == PAM_SUCCESS {
                Verdict::Succeeded
            } else {
                Verdict::Failed
            };
        }
        watched
    };
    if watched.pamh != 0 && status != PAM_SUCCESS {
        let _ = std::panic::catch_unwind(|| {
            // SAFETY: this trampoline is the PAM_FAIL_DELAY item of exactly
            // this handle, so libpam is calling it from inside that
            // handle's own pam_authenticate, on its thread; the slot is
            // freed before the handle ends (`Unwatch`).
            let pamh = unsafe { &mut *(watched.pamh as *mut PamHandle) };
            if let Ok(Some(_)) = super::take_env(pamh, super::STAGED_ENV) {
                super::log(
                    pamh,
                    LOG_NOTICE,
                    "auth stack failed after this module succeeded: what it staged is dropped, nothing granted",
                );
            }
        });
    }
    match watched.original {
        // SAFETY: the application's own delay function, called as libpam
        // would have called it.
        Some(f) => unsafe { f(status, delay, appdata) },
        None if status != PAM_SUCCESS && delay > 0 => {
            std::thread::sleep(std::time::Duration::from_micros(u64::from(delay)));
        }
        None => {}
    }
}
