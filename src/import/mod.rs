//! Reading the secret files of the tools sites migrate from. Pure parsers:
//! text in, tokens out; `totpctl import` shows them (dry run) or stores
//! them in one transaction (`--apply`). `home` is the one reader of files:
//! a user's `~/.google_authenticator`, opened and checked by descriptor.

pub mod google_authenticator;
pub mod home;
pub mod oath;

use zeroize::Zeroizing;

use crate::otp::Params;
use crate::secret::Secret;
use crate::store::Kind;

/// One token read from another tool's file.
#[derive(Debug)]
pub struct Imported {
    /// Line of the source file the token came from (1-based).
    pub line: usize,
    pub user: String,
    pub kind: Kind,
    pub secret: Secret,
    pub params: Params,
    /// TOTP: the highest step the old tool recorded as used. HOTP: the
    /// highest counter already used (the old tool's next counter minus one).
    pub last_step: Option<u64>,
    /// Single-use codes (google-authenticator's scratch codes).
    pub scratch_codes: Vec<Zeroizing<String>>,
    /// Settings of the old tool that have no equivalent here, for the dry run.
    pub ignored: Vec<String>,
}

/// A line the parser refuses: its number and what is wrong with it, never
/// what is on it (an import file holds keys, and totpctl may be pointed at
/// any file).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct ImportError {
    pub line: usize,
    pub reason: String,
}

pub(crate) fn error(line: usize, reason: impl Into<String>) -> ImportError {
    ImportError {
        line,
        reason: reason.into(),
    }
}
