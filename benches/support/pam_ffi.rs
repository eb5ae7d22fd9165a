//! The part of libpam's C interface that the bench and the test worker
//! (examples/pam_worker.rs) call: a transaction with a private service
//! directory, items, authenticate, end. (`#[path]`-included by both.)

#![allow(dead_code)]

use std::ffi::c_void;

use libc::{c_char, c_int, c_uint};

pub const PAM_SUCCESS: c_int = 0;
pub const PAM_CONV_ERR: c_int = 19;
pub const PAM_RHOST: c_int = 4;
pub const PAM_FAIL_DELAY: c_int = 10;
pub const PAM_PROMPT_ECHO_OFF: c_int = 1;
pub const PAM_PROMPT_ECHO_ON: c_int = 2;
pub const PAM_ESTABLISH_CRED: c_int = 0x2;

#[repr(C)]
pub struct PamMessage {
    pub msg_style: c_int,
    pub msg: *const c_char,
}

#[repr(C)]
pub struct PamResponse {
    pub resp: *mut c_char,
    pub resp_retcode: c_int,
}

pub type ConvFn =
    extern "C" fn(c_int, *mut *const PamMessage, *mut *mut PamResponse, *mut c_void) -> c_int;

#[repr(C)]
pub struct PamConv {
    pub conv: ConvFn,
    pub appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
unsafe extern "C" {
    pub fn pam_start_confdir(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        confdir: *const c_char,
        pamh: *mut *mut c_void,
    ) -> c_int;
    pub fn pam_authenticate(pamh: *mut c_void, flags: c_int) -> c_int;
    pub fn pam_end(pamh: *mut c_void, status: c_int) -> c_int;
    pub fn pam_acct_mgmt(pamh: *mut c_void, flags: c_int) -> c_int;
    pub fn pam_setcred(pamh: *mut c_void, flags: c_int) -> c_int;
    pub fn pam_set_item(pamh: *mut c_void, item_type: c_int, item: *const c_void) -> c_int;
}

/// The no-op PAM_FAIL_DELAY callback: deliberate delays are not timed.
pub extern "C" fn no_delay(_retval: c_int, _usec: c_uint, _appdata: *mut c_void) {}
