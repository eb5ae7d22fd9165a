//! One login in a fresh process, the way an sshd child pays for it: the
//! bench (`benches/pam_bench.rs`) spawns this once per login and times it
//! from spawn to exit.
//!
//!   pam_once SERVICE_DIR USER CODE
//!
//! Starts a PAM transaction with the service file SERVICE_DIR/bench
//! (`pam_start_confdir`, no pam_wrapper), sets PAM_RHOST and a no-op fail
//! delay, answers every prompt with CODE, authenticates and ends. Prints
//! `once RC START_NS AUTH_NS END_NS` (the pam_authenticate return code and
//! how long pam_start, pam_authenticate and pam_end each took) and exits 0.
//! Links nothing but libpam and libc, so the process costs what the module
//! costs.

#[path = "../benches/support/pam_ffi.rs"]
mod pam_ffi;

use std::ffi::{CString, c_void};
use std::time::Instant;

use libc::{c_char, c_int};

use pam_ffi::*;

const RHOST: &str = "203.0.113.7";

/// Answers every prompt with the code `appdata` points to.
extern "C" fn answer(
    n: c_int,
    msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    let n = usize::try_from(n).unwrap_or(0);
    // SAFETY: libpam passes `n` valid messages and takes ownership of the
    // `n` malloc'd responses; appdata is the CString `main` keeps alive.
    unsafe {
        let out = libc::calloc(n.max(1), std::mem::size_of::<PamResponse>()) as *mut PamResponse;
        if out.is_null() {
            return PAM_CONV_ERR;
        }
        for i in 0..n {
            let style = (**msgs.add(i)).msg_style;
            if style == PAM_PROMPT_ECHO_OFF || style == PAM_PROMPT_ECHO_ON {
                (*out.add(i)).resp = libc::strdup(appdata as *const c_char);
            }
        }
        *resp = out;
    }
    PAM_SUCCESS
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        eprintln!("usage: pam_once SERVICE_DIR USER CODE");
        std::process::exit(2);
    }
    let cstr = |s: &str| CString::new(s).expect("no NUL in arguments");
    let (dir, user, code) = (cstr(&args[0]), cstr(&args[1]), cstr(&args[2]));
    let (service, rhost) = (cstr("bench"), cstr(RHOST));
    let conv = PamConv {
        conv: answer,
        appdata_ptr: code.as_ptr() as *mut c_void,
    };
    let mut pamh: *mut c_void = std::ptr::null_mut();
    let started = Instant::now();
    // SAFETY: every pointer is a live C string or struct that outlives the
    // handle; the handle is used only between pam_start and pam_end.
    let (rc, start, auth, end) = unsafe {
        let rc = pam_start_confdir(
            service.as_ptr(),
            user.as_ptr(),
            &conv,
            dir.as_ptr(),
            &mut pamh,
        );
        if rc != PAM_SUCCESS {
            eprintln!("pam_start_confdir: {rc}");
            std::process::exit(1);
        }
        pam_set_item(pamh, PAM_RHOST, rhost.as_ptr() as *const c_void);
        let delay: extern "C" fn(c_int, libc::c_uint, *mut c_void) = no_delay;
        pam_set_item(pamh, PAM_FAIL_DELAY, delay as *const c_void);
        let start = started.elapsed();
        let rc = pam_authenticate(pamh, 0);
        let auth = started.elapsed() - start;
        pam_end(pamh, rc);
        let end = started.elapsed() - start - auth;
        (rc, start, auth, end)
    };
    println!(
        "once {rc} {} {} {}",
        start.as_nanos(),
        auth.as_nanos(),
        end.as_nanos()
    );
}
