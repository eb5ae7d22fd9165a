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
//! `PAM_WORKER_RETRY_RHOST=ADDR` authenticates a second time on the same
//! handle from ADDR (printing `FIRST <rc>` for the first try);
//! `PAM_WORKER_NESTED` runs a second login inside the first (`maybe_nested`).
//! `PAM_WORKER_PUTENV=NAME=VALUE` puts that variable into the PAM
//! environment before authenticating, as sshd does with `SSH_AUTH_INFO_0`.

#[path = "../benches/support/pam_ffi.rs"]
mod pam_ffi;

use std::ffi::{CStr, CString, c_void};
use std::io::{BufRead, Write};

use libc::c_int;

use pam_ffi::*;

#[link(name = "pam")]
unsafe extern "C" {
    /// Sets `NAME=value` in the PAM environment (`pam_putenv(3)`).
    fn pam_putenv(pamh: *mut c_void, name_value: *const libc::c_char) -> c_int;
}

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
                maybe_nested(&text);
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

/// The answer of the nested login (`PAM_WORKER_NESTED`).
static NESTED_ANSWER: std::sync::OnceLock<CString> = std::sync::OnceLock::new();

/// Answers every prompt of the nested login with its fixed answer.
extern "C" fn fixed_answer(
    n: c_int,
    _msgs: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    _appdata: *mut c_void,
) -> c_int {
    let n = usize::try_from(n).unwrap_or(0);
    let answer = NESTED_ANSWER.get().cloned().unwrap_or_default();
    // SAFETY: libpam takes ownership of the `n` malloc'd responses.
    unsafe {
        let out = libc::calloc(n.max(1), std::mem::size_of::<PamResponse>()) as *mut PamResponse;
        if out.is_null() {
            return PAM_CONV_ERR;
        }
        for i in 0..n {
            (*out.add(i)).resp = libc::strdup(answer.as_ptr());
        }
        *resp = out;
    }
    PAM_SUCCESS
}

/// With `PAM_WORKER_NESTED="SERVICE USER ANSWER"`, the first prompt that
/// starts with "Password" first runs that whole login (authenticate, then
/// account) on a second handle in this thread, with the same (NULL)
/// conversation appdata, and prints `NESTED <rc>`.
fn maybe_nested(prompt: &str) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Ok(spec) = std::env::var("PAM_WORKER_NESTED") else {
        return;
    };
    if !prompt.starts_with("Password") || DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let parts: Vec<&str> = spec.split(' ').collect();
    let [service, user, answer] = parts[..] else {
        return;
    };
    let _ = NESTED_ANSWER.set(CString::new(answer).unwrap_or_default());
    let dir = std::env::args().nth(1).unwrap_or_default();
    let rhost = std::env::args().nth(4).unwrap_or_default();
    let rc = login(&dir, service, user, &rhost, fixed_answer, "account", None);
    println!("NESTED {rc}");
}

/// One PAM transaction: start, PAM_RHOST, the reporting delay function,
/// authenticate; with `retry_rhost`, authenticate again from that address;
/// then the phases in `then` whatever the result; end.
fn login(
    dir: &str,
    service: &str,
    user: &str,
    rhost: &str,
    conv_fn: ConvFn,
    then: &str,
    retry_rhost: Option<&str>,
) -> c_int {
    let c = |s: &str| CString::new(s).expect("no NUL in arguments");
    let (dir, service, user, rhost) = (c(dir), c(service), c(user), c(rhost));
    let conv = PamConv {
        conv: conv_fn,
        appdata_ptr: std::ptr::null_mut(),
    };
    let mut pamh: *mut c_void = std::ptr::null_mut();
    // SAFETY: every pointer is a live C string or struct owned by this
    // function for the whole transaction; the handle is ended once.
    unsafe {
        let rc = pam_start_confdir(
            service.as_ptr(),
            user.as_ptr(),
            &conv,
            dir.as_ptr(),
            &mut pamh,
        );
        if rc != PAM_SUCCESS {
            return rc;
        }
        pam_set_item(pamh, PAM_RHOST, rhost.as_ptr() as *const c_void);
        if let Ok(entry) = std::env::var("PAM_WORKER_PUTENV") {
            let entry = c(&entry);
            println!("PUTENV {}", pam_putenv(pamh, entry.as_ptr()));
        }
        let delay: extern "C" fn(c_int, libc::c_uint, *mut c_void) = report_delay;
        pam_set_item(pamh, PAM_FAIL_DELAY, delay as *const c_void);
        let mut rc = pam_authenticate(pamh, 0);
        if let Some(again) = retry_rhost {
            println!("FIRST {rc}");
            let again = c(again);
            pam_set_item(pamh, PAM_RHOST, again.as_ptr() as *const c_void);
            rc = pam_authenticate(pamh, 0);
        }
        for step in then.split(',') {
            match step {
                "account" => println!("ACCOUNT {}", pam_acct_mgmt(pamh, 0)),
                "setcred" => println!("SETCRED {}", pam_setcred(pamh, PAM_ESTABLISH_CRED)),
                _ => {}
            }
        }
        pam_end(pamh, rc);
        rc
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 4 {
        eprintln!("usage: pam_worker SERVICE_DIR SERVICE USER RHOST");
        std::process::exit(2);
    }
    let then = std::env::var("PAM_WORKER_THEN").unwrap_or_default();
    let retry = std::env::var("PAM_WORKER_RETRY_RHOST").ok();
    let rc = login(
        &args[0],
        &args[1],
        &args[2],
        &args[3],
        over_stdio,
        &then,
        retry.as_deref(),
    );
    println!("RESULT {rc}");
}
