//! What the module's login path asks of a store, and how `SqlStore` does it.
//!
//! Reads are single statements; every write that changes more than one row
//! is one transaction; the step claim is one conditional write.

use super::driver::{Driver, Hold, Purpose, params};
use super::shared::{SqlStore, claim, step_to_sql};
use super::{
    Answer, AutomationGrant, Claim, Grant, Kind, RecoveryCount, Reservation, Settled, StagedRow,
    StoreError, StoredRecovery, Token, sql,
};
use crate::ratelimit::Limits;
use crate::recovery::RecoveryHash;

pub trait LoginStore {
    /// Whether a TOTP step claim is on disk when `claim_step` returns (if
    /// not, `auth` refuses the steps that could have been claimed before
    /// the current boot).
    fn totp_claims_durable(&self) -> bool;

    /// All tokens of a user (active and pending), ordered by device.
    fn tokens(&self, user: &str) -> Result<Vec<Token>, StoreError>;

    /// Whether this process's key file (or none) is the one the store's
    /// keys are sealed with, changing nothing (`totpctl check-config`): an
    /// error says which is wrong, as a write of a key would.
    fn check_key_file(&self) -> Result<(), StoreError>;

    /// Atomically records `step` (a TOTP time step or an HOTP counter) as
    /// used by active `token`, if it is newer than anything used before.
    /// This single conditional write is the whole replay protection.
    /// HOTP counters never expire, so their claims are on disk on return.
    /// A disabled token, or one expired at `now`, claims nothing, and
    /// neither does a row that no longer holds the key `token` was read
    /// with (deleted, replaced, its id given to another row).
    fn claim_step(&self, token: &Token, step: u64, now: i64) -> Result<Claim, StoreError>;

    /// `claim_step` for a token another device of the user shares codes
    /// with (`Token::shares_codes_with`), under the user's hold that every
    /// settlement takes: the user's devices are read again and the step is
    /// claimed only if none of the twins has used it (else `AlreadyUsed`).
    fn claim_step_among_twins(
        &self,
        token: &Token,
        step: u64,
        now: i64,
    ) -> Result<Claim, StoreError>;

    /// `claim_step_among_twins` when `twins` (another device of the user
    /// shares the token's codes: `Token::has_twin`), else `claim_step`:
    /// how a login and `totp`'s proofs claim.
    fn claim_step_minding_twins(
        &self,
        token: &Token,
        step: u64,
        now: i64,
        twins: bool,
    ) -> Result<Claim, StoreError> {
        if twins {
            self.claim_step_among_twins(token, step, now)
        } else {
            self.claim_step(token, step, now)
        }
    }

    /// The user's unused recovery codes filed under `lookup`.
    fn recovery_candidates(
        &self,
        user: &str,
        lookup: &str,
    ) -> Result<Vec<StoredRecovery>, StoreError>;

    /// Marks the recovery code `code` (as checked: its row and hash) used,
    /// once (on disk on return).
    fn burn_recovery(&self, code: &StoredRecovery, at: i64) -> Result<Claim, StoreError>;

    /// The user's recovery codes, unused and used.
    fn recovery_count(&self, user: &str) -> Result<RecoveryCount, StoreError>;

    /// The end of the user's enroll window, if one is open at `now`.
    fn enroll_window(&self, user: &str, now: i64) -> Result<Option<i64>, StoreError>;

    /// One guess for (user, rhost) at `now`, decided against `limits` while
    /// every other reservation of the user waits: either the guess is
    /// counted as a failure before the answer is checked, or it is refused.
    fn reserve_guess(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &Limits,
    ) -> Result<Reservation, StoreError>;

    /// One guess for (user, rhost) at `now`, decided against `limits`, and
    /// settled with the `answer` checked before: the whole of a code's
    /// login in one write transaction, held like `reserve_guess`. The guess
    /// is counted first whatever the answer, so a right code's writes are a
    /// superset of a wrong one's and no failure of the store can spare a
    /// wrong guess alone; a right answer then claims its step and gives the
    /// guess back. An error rolls everything back, before anything about
    /// the answer is reported. A right HOTP counter is on disk on return.
    fn settle_guess(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &Limits,
        answer: Answer<'_>,
    ) -> Result<Settled, StoreError>;

    /// Gives back the guess of a right code taken at `at`; `clear` also
    /// ends the source's back-off.
    fn release_guess(
        &self,
        user: &str,
        rhost: &str,
        clear: bool,
        at: i64,
    ) -> Result<(), StoreError>;

    /// Enrolls the user's first token, confirmed by the code of `step`,
    /// with these recovery codes, and closes the window; refused when the
    /// user has a token already.
    fn enroll_at_login(
        &self,
        token: &Token,
        step: u64,
        recovery: &[RecoveryHash],
    ) -> Result<(), StoreError>;

    /// The user skips the code from `ip` until `until`.
    fn grant_grace(&self, user: &str, ip: &str, until: i64) -> Result<(), StoreError>;

    /// The end of the user's grace from `ip`, if one is running at `now`.
    fn grace_until(&self, user: &str, ip: &str, now: i64) -> Result<Option<i64>, StoreError>;

    /// The user skips the code with the SSH key `fingerprint` until `until`.
    fn grant_key_grace(&self, user: &str, fingerprint: &str, until: i64) -> Result<(), StoreError>;

    /// The end of the user's grace for key `fingerprint`, if one is running
    /// at `now`.
    fn key_grace_until(
        &self,
        user: &str,
        fingerprint: &str,
        now: i64,
    ) -> Result<Option<i64>, StoreError>;

    /// Every automation grant for one key of one user, in force or ended.
    fn automation_for_key(
        &self,
        user: &str,
        fingerprint: &str,
    ) -> Result<Vec<AutomationGrant>, StoreError>;

    /// Stages `grant` under `nonce` (the hash of the transaction's secret)
    /// until `expires`; expired stages are dropped on the way.
    fn stage_grant(
        &self,
        nonce: &str,
        user: &str,
        grant: &Grant,
        expires: i64,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Takes the grant staged under `nonce`, once, if it is `user`'s and
    /// not expired at `now`.
    fn take_staged(&self, nonce: &str, user: &str, now: i64) -> Result<Option<Grant>, StoreError>;
}

impl<D: Driver> LoginStore for SqlStore<D> {
    fn check_key_file(&self) -> Result<(), StoreError> {
        self.key_file_verdict().map(|_| ())
    }

    fn totp_claims_durable(&self) -> bool {
        self.driver.claims_durable()
    }

    fn tokens(&self, user: &str) -> Result<Vec<Token>, StoreError> {
        let rows = self.driver.query(sql::TOKENS_OF_USER, params![user])?;
        self.tokens_from(rows)
    }

    fn claim_step(&self, token: &Token, step: u64, now: i64) -> Result<Claim, StoreError> {
        let update = || self.claim_row(token, step, now);
        match token.kind {
            Kind::Totp => update(),
            Kind::Hotp => self.driver.durably(update),
        }
    }

    fn claim_step_among_twins(
        &self,
        token: &Token,
        step: u64,
        now: i64,
    ) -> Result<Claim, StoreError> {
        let update = || {
            self.write(Hold::User(&token.user, Purpose::Guesses), |_| {
                if self.used_by_twins(token, step)? {
                    return Ok(Claim::AlreadyUsed);
                }
                self.claim_row(token, step, now)
            })
        };
        match token.kind {
            Kind::Totp => update(),
            Kind::Hotp => self.driver.durably(update),
        }
    }

    fn recovery_candidates(
        &self,
        user: &str,
        lookup: &str,
    ) -> Result<Vec<StoredRecovery>, StoreError> {
        self.driver
            .query(sql::RECOVERY_CANDIDATES, params![user, lookup])?
            .iter()
            .map(|row| {
                Ok(StoredRecovery {
                    id: row.int(0)?,
                    phc: row.text(1)?,
                })
            })
            .collect()
    }

    fn burn_recovery(&self, code: &StoredRecovery, at: i64) -> Result<Claim, StoreError> {
        let changed = self.driver.durably(|| {
            self.driver
                .execute(sql::BURN_RECOVERY, params![code.id, at, code.phc.as_str()])
        })?;
        Ok(claim(changed))
    }

    fn recovery_count(&self, user: &str) -> Result<RecoveryCount, StoreError> {
        let row = self.one(sql::RECOVERY_COUNT, params![user])?;
        Ok(RecoveryCount {
            unused: super::shared::count(row.int(0)?),
            used: super::shared::count(row.int(1)?),
        })
    }

    fn enroll_window(&self, user: &str, now: i64) -> Result<Option<i64>, StoreError> {
        self.opt_int(sql::WINDOW_UNTIL, params![user, now])
    }

    fn reserve_guess(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &Limits,
    ) -> Result<Reservation, StoreError> {
        // The hold is taken before the counts are read: every other
        // reservation of this user waits, so none decides on stale counts.
        self.write(Hold::User(user, Purpose::Guesses), |_| {
            self.take_guess(user, rhost, now, limits)
        })
    }

    fn settle_guess(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &Limits,
        answer: Answer<'_>,
    ) -> Result<Settled, StoreError> {
        let settle = || {
            self.write_ending(Hold::User(user, Purpose::Guesses), |_| {
                self.settle_within(user, rhost, now, limits, answer)
            })
        };
        match answer {
            Answer::Right { token, .. } | Answer::RightOnSharedKey { token, .. }
                if token.kind == Kind::Hotp =>
            {
                self.driver.durably(settle)
            }
            _ => settle(),
        }
    }

    fn release_guess(
        &self,
        user: &str,
        rhost: &str,
        clear: bool,
        at: i64,
    ) -> Result<(), StoreError> {
        // Lost in a crash, the guess stays counted: never a reason to wait
        // for the disk.
        self.write(Hold::RowsLazily, |_| self.give_back(user, rhost, clear, at))
    }

    fn enroll_at_login(
        &self,
        token: &Token,
        step: u64,
        recovery: &[RecoveryHash],
    ) -> Result<(), StoreError> {
        step_to_sql(step)?;
        let user = token.user.as_str();
        self.driver.durably(|| {
            // Enrollments of this user wait for each other (on every node):
            // only the first of two racing logins enrolls.
            self.write(Hold::User(user, Purpose::Enrollment), |db| {
                let existing = self.one(sql::COUNT_TOKENS_OF_USER, params![user])?;
                if existing.int(0)? > 0 {
                    return Err(StoreError::AlreadyEnrolled {
                        user: user.to_string(),
                        device: token.device.clone(),
                    });
                }
                let mut confirmed = token.clone();
                confirmed.last_step = Some(step);
                self.insert_token(&confirmed)?;
                if !recovery.is_empty() {
                    self.insert_recovery(user, recovery)?;
                }
                db.execute(sql::CLOSE_WINDOW, params![user])?;
                Ok(())
            })
        })
    }

    fn grant_grace(&self, user: &str, ip: &str, until: i64) -> Result<(), StoreError> {
        self.driver
            .execute(sql::GRANT_GRACE, params![user, ip, until])?;
        Ok(())
    }

    fn grace_until(&self, user: &str, ip: &str, now: i64) -> Result<Option<i64>, StoreError> {
        self.opt_int(sql::GRACE_UNTIL, params![user, ip, now])
    }

    fn grant_key_grace(&self, user: &str, fingerprint: &str, until: i64) -> Result<(), StoreError> {
        self.driver
            .execute(sql::GRANT_KEY_GRACE, params![user, fingerprint, until])?;
        Ok(())
    }

    fn key_grace_until(
        &self,
        user: &str,
        fingerprint: &str,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        self.opt_int(sql::KEY_GRACE_UNTIL, params![user, fingerprint, now])
    }

    fn automation_for_key(
        &self,
        user: &str,
        fingerprint: &str,
    ) -> Result<Vec<AutomationGrant>, StoreError> {
        self.driver
            .query(sql::AUTOMATION_FOR_KEY, params![user, fingerprint])?
            .iter()
            .map(super::shared::automation_grant)
            .collect()
    }

    fn stage_grant(
        &self,
        nonce: &str,
        user: &str,
        grant: &Grant,
        expires: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write(Hold::Rows, |db| {
            db.execute(sql::DROP_EXPIRED_STAGED, params![now])?;
            match grant {
                Grant::Enroll {
                    token,
                    step,
                    recovery,
                } => {
                    let secret = super::checked_secret(self.sealer.as_deref(), token)?;
                    let recovery = super::encode_recovery(recovery);
                    db.execute(
                        sql::STAGE_ENROLL,
                        params![
                            nonce,
                            user,
                            expires,
                            &token.device,
                            token.kind.as_str(),
                            secret.as_slice(),
                            token.params.algorithm.as_str(),
                            token.params.digits,
                            step_to_sql(token.params.period)?,
                            token.created,
                            step_to_sql(*step)?,
                            recovery.as_str(),
                        ],
                    )?;
                    // Judged, never recorded here: the login may still
                    // fail (its password, the account phase), and a login
                    // that fails leaves nothing lasting behind; the key
                    // file is recorded when the grant's token is written.
                    self.key_file_verdict()?;
                }
                Grant::Grace { ip, key } => {
                    if ip.is_none() && key.is_none() {
                        return Err(StoreError::InvalidRow {
                            user: user.to_string(),
                            reason: "a grace to stage without an address or a key".to_string(),
                        });
                    }
                    let (ip, until) = (ip.as_ref().map(|g| g.0.as_str()), ip.as_ref().map(|g| g.1));
                    let (fingerprint, key_until) = (
                        key.as_ref().map(|g| g.0.as_str()),
                        key.as_ref().map(|g| g.1),
                    );
                    db.execute(
                        sql::STAGE_GRACE,
                        params![nonce, user, expires, ip, until, fingerprint, key_until],
                    )?;
                }
            }
            Ok(())
        })
    }

    fn take_staged(&self, nonce: &str, user: &str, now: i64) -> Result<Option<Grant>, StoreError> {
        let Some(mut row) = self
            .driver
            .query(sql::TAKE_STAGED, params![nonce])?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        // After the token's columns and its key: what, ip, until, expires,
        // recovery (`sql::TAKE_STAGED`).
        let at = super::shared::KEY_COLUMN;
        let what = row.text(at + 1)?;
        let token = match what.as_str() {
            "enroll" => {
                let info = super::shared::token_info(&row)?;
                Some((info, row.take_blob(at)?))
            }
            _ => None,
        };
        StagedRow {
            owner: row.text(1)?,
            expires: row.int(at + 4)?,
            what,
            ip: row.opt_text(at + 2)?,
            until: row.opt_int(at + 3)?,
            fingerprint: row.opt_text(at + 6)?,
            key_until: row.opt_int(at + 7)?,
            token,
            recovery: row.opt_text(at + 5)?,
        }
        .grant(self.sealer.as_deref(), user, now)
    }
}

/// The login path takes its store by value from an opener; the module's
/// opener returns whichever backend the configuration names, boxed.
impl<T: LoginStore + ?Sized> LoginStore for Box<T> {
    fn check_key_file(&self) -> Result<(), StoreError> {
        (**self).check_key_file()
    }

    fn totp_claims_durable(&self) -> bool {
        (**self).totp_claims_durable()
    }
    fn tokens(&self, user: &str) -> Result<Vec<Token>, StoreError> {
        (**self).tokens(user)
    }
    fn claim_step(&self, token: &Token, step: u64, now: i64) -> Result<Claim, StoreError> {
        (**self).claim_step(token, step, now)
    }
    fn claim_step_among_twins(
        &self,
        token: &Token,
        step: u64,
        now: i64,
    ) -> Result<Claim, StoreError> {
        (**self).claim_step_among_twins(token, step, now)
    }
    fn recovery_candidates(
        &self,
        user: &str,
        lookup: &str,
    ) -> Result<Vec<StoredRecovery>, StoreError> {
        (**self).recovery_candidates(user, lookup)
    }
    fn burn_recovery(&self, code: &StoredRecovery, at: i64) -> Result<Claim, StoreError> {
        (**self).burn_recovery(code, at)
    }
    fn recovery_count(&self, user: &str) -> Result<RecoveryCount, StoreError> {
        (**self).recovery_count(user)
    }
    fn enroll_window(&self, user: &str, now: i64) -> Result<Option<i64>, StoreError> {
        (**self).enroll_window(user, now)
    }
    fn reserve_guess(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &Limits,
    ) -> Result<Reservation, StoreError> {
        (**self).reserve_guess(user, rhost, now, limits)
    }
    fn settle_guess(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &Limits,
        answer: Answer<'_>,
    ) -> Result<Settled, StoreError> {
        (**self).settle_guess(user, rhost, now, limits, answer)
    }
    fn release_guess(
        &self,
        user: &str,
        rhost: &str,
        clear: bool,
        at: i64,
    ) -> Result<(), StoreError> {
        (**self).release_guess(user, rhost, clear, at)
    }
    fn enroll_at_login(
        &self,
        token: &Token,
        step: u64,
        recovery: &[RecoveryHash],
    ) -> Result<(), StoreError> {
        (**self).enroll_at_login(token, step, recovery)
    }
    fn grant_grace(&self, user: &str, ip: &str, until: i64) -> Result<(), StoreError> {
        (**self).grant_grace(user, ip, until)
    }
    fn grace_until(&self, user: &str, ip: &str, now: i64) -> Result<Option<i64>, StoreError> {
        (**self).grace_until(user, ip, now)
    }
    fn grant_key_grace(&self, user: &str, fingerprint: &str, until: i64) -> Result<(), StoreError> {
        (**self).grant_key_grace(user, fingerprint, until)
    }
    fn key_grace_until(
        &self,
        user: &str,
        fingerprint: &str,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        (**self).key_grace_until(user, fingerprint, now)
    }
    fn automation_for_key(
        &self,
        user: &str,
        fingerprint: &str,
    ) -> Result<Vec<AutomationGrant>, StoreError> {
        (**self).automation_for_key(user, fingerprint)
    }
    fn stage_grant(
        &self,
        nonce: &str,
        user: &str,
        grant: &Grant,
        expires: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        (**self).stage_grant(nonce, user, grant, expires, now)
    }
    fn take_staged(&self, nonce: &str, user: &str, now: i64) -> Result<Option<Grant>, StoreError> {
        (**self).take_staged(nonce, user, now)
    }
}
