//! The secret store: who is enrolled, with which key, and the last time step
//! each token has used. `Store` is the seam a networked backend will plug
//! into later; `sqlite` is the embedded default.

pub mod sqlite;

use crate::otp::Params;
use crate::secret::Secret;

pub use sqlite::SqliteStore;

/// One user's token, as the login path needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub user: String,
    pub secret: Secret,
    pub params: Params,
    /// Unix time of enrollment.
    pub created: i64,
    /// The highest TOTP step ever accepted for this token, if any.
    pub last_step: Option<u64>,
}

/// A token without its key, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub user: String,
    pub params: Params,
    pub created: i64,
    pub last_step: Option<u64>,
}

/// The result of trying to mark a step as used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The step was newer than every step used before; it is now recorded.
    Claimed,
    /// This step, or a later one, was already used (or the token is gone).
    AlreadyUsed,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {0} does not exist (create it with `totpctl enroll`)")]
    Missing(String),
    #[error("store {0} is not initialised (no schema)")]
    NotInitialised(String),
    #[error("store schema version {found} is newer than this module supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("store {path} is not a usable database: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("store {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("store query failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store row for {user:?} is invalid: {reason}")]
    InvalidRow { user: String, reason: String },
    #[error("user {0:?} is already enrolled (use --force to replace the token)")]
    AlreadyEnrolled(String),
    #[error("time step {0} does not fit in the store")]
    StepOutOfRange(u64),
}

/// What every backend provides. Each method is one short transaction; the
/// step claim in particular must be a single atomic conditional write.
pub trait Store {
    /// The user's token, or `None` when the user is not enrolled.
    fn token(&self, user: &str) -> Result<Option<Token>, StoreError>;

    /// Records `step` as used for `user` if, and only if, it is greater than
    /// every step used before. Two callers racing with the same step: exactly
    /// one gets `Claimed`.
    fn claim_step(&self, user: &str, step: u64) -> Result<Claim, StoreError>;

    /// Stores a new token. With `replace`, an existing token for the user is
    /// overwritten (and its used-step history with it); without, it is an
    /// `AlreadyEnrolled` error.
    fn enroll(&self, token: &Token, replace: bool) -> Result<(), StoreError>;

    /// Removes the user's token; `false` when there was none.
    fn delete(&self, user: &str) -> Result<bool, StoreError>;

    /// Every token, without keys, ordered by user.
    fn list(&self) -> Result<Vec<TokenInfo>, StoreError>;
}

/// A borrowed store is a store: callers can lend one to `auth::decide`.
impl<S: Store + ?Sized> Store for &S {
    fn token(&self, user: &str) -> Result<Option<Token>, StoreError> {
        (**self).token(user)
    }
    fn claim_step(&self, user: &str, step: u64) -> Result<Claim, StoreError> {
        (**self).claim_step(user, step)
    }
    fn enroll(&self, token: &Token, replace: bool) -> Result<(), StoreError> {
        (**self).enroll(token, replace)
    }
    fn delete(&self, user: &str) -> Result<bool, StoreError> {
        (**self).delete(user)
    }
    fn list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        (**self).list()
    }
}
