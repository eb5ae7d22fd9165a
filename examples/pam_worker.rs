//! One PAM login through the real libpam, answered over stdin/stdout, for
//! tests that need more simultaneous logins than pamtester under
//! pam_wrapper allows (pam_wrapper has about 62 state slots in /tmp).
//!
//!   pam_worker SERVICE_DIR SERVICE USER RHOST
//!
//! Starts a PAM transaction with the service file SERVICE_DIR/SERVICE
//! (`pam_start_confdir`: no pam_wrapper, no /etc/pam.d), sets PAM_RHOST and
//! a no-op fail delay, and authenticates. Each hidden or visible prompt is
//! written to stdout as `PROMPT <text>` and answered with the next line of
//! stdin; text messages are written as `INFO <text>`. At the end it prints
//! `RESULT <pam return code>` and exits 0.
//!
//! With `PAM_WORKER_THEN=account,setcred` it goes on like a careless
//! application, whatever pam_authenticate said: pam_acct_mgmt and
//! pam_setcred on the same handle, printing `ACCOUNT <rc>` and
//! `SETCRED <rc>`. Its PAM_FAIL_DELAY function prints `DELAY <status>`
//! (the status libpam reports for the whole stack) and does not sleep.

#[path = "../benches/support/pam_ffi.rs"]
mod pam_ffi;

use std::ffi::{CStr, CString, c_void};
use std::io::{BufRead, Write};

use libc::c_int;

use pam_ffi::*;

/// Writes each prompt to stdout and answers it with a line from stdin.
extern "C" fn over_stdio(
    n: c_int,
    msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    _appdata: *mut c_void,
) -> c_int {
    let n = usize::try_from(n).unwrap_or(0);
    // SAFETY: libpam passes `n` valid messages and takes ownership of the
    // `n` malloc'd responses (and of the strdup'd answers in them).
    unsafe {
        let out = libc::calloc(n.max(1), std::mem::size_of::<PamResponse>()) as *mut PamResponse;
        if out.is_null() {
            return PAM_CONV_ERR;
        }
        for i in 0..n {
            let msg = *msgs.add(i);
            let text = CStr::from_ptr((*msg).msg).to_string_lossy().into_owned();
            let style = (*msg).msg_style;
            let mut stdout = std::io::stdout();
            if style == PAM_PROMPT_ECHO_OFF || style == PAM_PROMPT_ECHO_ON {
                let _ = writeln!(stdout, "PROMPT {}", text.replace('\n', " "));
                let _ = stdout.flush();
                let mut line = String::new();
                if std::io::stdin().lock().read_line(&mut line).unwrap_or(0) == 0 {
                    libc::free(out as *mut c_void);
                    return PAM_CONV_ERR;
                }
                let answer = CString::new(line.trim_end_matches('\n')).unwrap_or_default();
                (*out.add(i)).resp = libc::strdup(answer.as_ptr());
            } else {
                let _ = writeln!(stdout, "INFO {}", text.replace('\n', " "));
                let _ = stdout.flush();
            }
        }
        *resp = out;
    }
    PAM_SUCCESS
}

/// The application's PAM_FAIL_DELAY function: says what libpam reported.
extern "C" fn report_delay(status: c_int, _usec: libc::c_uint, _appdata: *mut c_void) {
    println!("DELAY {status}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 4 {
        eprintln!("usage: pam_worker SERVICE_DIR SERVICE USER RHOST");
        std::process::exit(2);
    }
    let c = |s: &str| CString::new(s).expect("no NUL in arguments");
    let (dir, service, user, rhost) = (c(&args[0]), c(&args[1]), c(&args[2]), c(&args[3]));
    let conv = PamConv {
        conv: over_stdio,
        appdata_ptr: std::ptr::null_mut(),
    };
    let mut pamh: *mut c_void = std::ptr::null_mut();
    // SAFETY: every pointer is a live C string or struct owned by main for
    // the whole transaction; the handle is ended once.
    let rc = unsafe {
        let rc = pam_start_confdir(
            service.as_ptr(),
            user.as_ptr(),
            &conv,
            dir.as_ptr(),
            &mut pamh,
        );
        if rc != PAM_SUCCESS {
            println!("RESULT {rc}");
            return;
        }
        pam_set_item(pamh, PAM_RHOST, rhost.as_ptr() as *const c_void);
        let delay: extern "C" fn(c_int, libc::c_uint, *mut c_void) = report_delay;
        pam_set_item(pamh, PAM_FAIL_DELAY, delay as *const c_void);
        let rc = pam_authenticate(pamh, 0);
        let then = std::env::var("PAM_WORKER_THEN").unwrap_or_default();
        for step in then.split(',') {
            match step {
                "account" => println!("ACCOUNT {}", pam_acct_mgmt(pamh, 0)),
                "setcred" => println!("SETCRED {}", pam_setcred(pamh, PAM_ESTABLISH_CRED)),
                _ => {}
            }
        }
        pam_end(pamh, rc);
        rc
    };
    println!("RESULT {rc}");
}
