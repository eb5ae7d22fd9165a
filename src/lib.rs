//! pam_totp: a TOTP second factor for SSH login nodes.
//!
//! The pure core (`otp`, `secret`, `config`, `network`, `auth`) is driven by
//! tests without PAM; `store` holds the state; `pam` is the only FFI seam.

pub mod auth;
pub mod codecheck;
pub mod config;
pub mod enroll;
pub mod import;
pub mod logline;
pub mod network;
pub mod otp;
pub mod pam;
pub mod ratelimit;
pub mod recovery;
pub mod seal;
pub mod secret;
pub mod sshkey;
pub mod store;
pub mod sys;
pub mod trust;
