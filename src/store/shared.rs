//! `SqlStore`: the store written once, on any `Driver`. The operations are
//! in `login` (what the module's login path uses) and `admin` (what only
//! totpctl uses); this file holds what both build on: the transaction, row
//! decoding, and the statement groups more than one operation runs.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::driver::{Driver, Hold, Row, params};
use super::{Kind, StoreError, Token, TokenInfo, sql};
use crate::otp::{Algorithm, Params};
use crate::ratelimit::{Failures, USER_WINDOW_SECS};
use crate::recovery::RecoveryHash;
use crate::seal::Sealer;

/// A store on a database reached through `D`.
pub struct SqlStore<D> {
    pub(crate) driver: D,
    /// Seals token keys on the way in and opens them on the way out.
    pub(crate) sealer: Option<Arc<Sealer>>,
    /// `check_sealing` found no sealed key in a store that recorded no key
    /// file: not looked for again by this handle (whoever seals a key in it
    /// later records its key file, which `sealing_id` reads first).
    plain_seen: std::sync::atomic::AtomicBool,
}

impl<D: Driver> SqlStore<D> {
    pub(crate) fn new(driver: D) -> Self {
        SqlStore {
            driver,
            sealer: None,
            plain_seen: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Token keys are sealed with this key (or stored plain without one).
    pub fn with_sealer(mut self, sealer: Option<Arc<Sealer>>) -> Self {
        self.sealer = sealer;
        self
    }

    /// Runs `work` in one transaction holding `hold`: all or nothing.
    pub(crate) fn write<T>(
        &self,
        hold: Hold<'_>,
        work: impl FnOnce(&D) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.write_ending(hold, |db| {
            let value = work(db)?;
            db.commit()?;
            Ok(value)
        })
    }

    /// Like `write`, for `work` that ends the transaction itself (its
    /// `COMMIT` sent with its last statement); rolled back after an error.
    pub(crate) fn write_ending<T>(
        &self,
        hold: Hold<'_>,
        work: impl FnOnce(&D) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.driver.begin(hold)?;
        let done = work(&self.driver);
        if done.is_err() {
            self.driver.rollback();
        }
        done
    }

    /// The first row of a statement that always returns one.
    pub(crate) fn one(
        &self,
        sql: &'static str,
        params: &[super::driver::Param<'_>],
    ) -> Result<Row, StoreError> {
        self.driver
            .query(sql, params)?
            .into_iter()
            .next()
            .ok_or(StoreError::Column {
                column: 0,
                expected: "a row",
            })
    }

    /// The single integer of a statement that returns at most one row.
    pub(crate) fn opt_int(
        &self,
        sql: &'static str,
        params: &[super::driver::Param<'_>],
    ) -> Result<Option<i64>, StoreError> {
        match self.driver.query(sql, params)?.first() {
            Some(row) => Ok(Some(row.int(0)?)),
            None => Ok(None),
        }
    }

    /// Tokens with their keys from a statement that reads `token_columns`
    /// and then the key.
    pub(crate) fn tokens_from(&self, rows: Vec<Row>) -> Result<Vec<Token>, StoreError> {
        let mut tokens = Vec::with_capacity(rows.len());
        for mut row in rows {
            let info = token_info(&row)?;
            let blob = row.take_blob(KEY_COLUMN)?;
            let stored = super::StoredKey(blob.clone());
            let secret =
                super::loaded_secret(self.sealer.as_deref(), &info.user, &info.device, blob)?;
            tokens.push(Token::from_info(info, secret, stored));
        }
        Ok(tokens)
    }

    /// After a write of a sealed (or plain) key, in its transaction: the
    /// store's keys must be sealed with this process's key file, or with
    /// none when it has none. A store that recorded no key file takes this
    /// one's (a store sealed before this check, or a first sealed key);
    /// `rekey` records the new one. Refused: a key file other than the
    /// recorded one (a process that loaded its key before a rekey, a node
    /// with another key; its key would open nowhere) and none where one is
    /// recorded, or none recorded but sealed keys stored (the key would be
    /// stored in the clear). Checked after the
    /// write, which on PostgreSQL holds `tokens` against a rekey's table
    /// lock: a rekey either waits for this transaction and seals its key
    /// again, or committed first and its id is what this reads.
    pub(crate) fn check_sealing(&self) -> Result<(), StoreError> {
        match (self.key_file_verdict()?, self.sealer.as_deref()) {
            (0, Some(sealer)) => self.record_ours(sealer.id()),
            _ => Ok(()),
        }
    }

    /// Whether this process's key file (or none) is the one the store's
    /// keys are sealed with, read only: the id recorded (0: none, this
    /// key file may record itself), or why not (`check_sealing`; `totpctl
    /// check-config` through `LoginStore::check_key_file`).
    pub(crate) fn key_file_verdict(&self) -> Result<i64, StoreError> {
        use crate::seal::SealError;
        let ours = self.sealer.as_deref();
        let our_id = ours.map_or(0, Sealer::id);
        match self.driver.sealing_id()? {
            0 if ours.is_none() && self.plain_seen.load(Ordering::Relaxed) => Ok(0),
            0 => {
                // Nothing recorded: a plain store, a new one, or one sealed
                // before the record, whose sealed keys say which.
                let magic: &[u8] = crate::seal::MAGIC;
                let mut sealed = self.driver.query(sql::ONE_SEALED_KEY, params![magic])?;
                match (ours, sealed.first_mut()) {
                    (None, None) => {
                        self.plain_seen.store(true, Ordering::Relaxed);
                        Ok(0)
                    }
                    (None, Some(_)) => Err(SealError::NoKeyFile.into()),
                    (Some(sealer), Some(row)) => {
                        let (user, device, blob) = (row.text(0)?, row.text(1)?, row.take_blob(2)?);
                        if super::open_under_its_names(sealer, &user, &device, &blob).is_ok() {
                            Ok(0)
                        } else {
                            Err(SealError::DoesNotOpenHere.into())
                        }
                    }
                    (Some(_), None) => Ok(0),
                }
            }
            recorded if recorded == our_id => Ok(recorded),
            _ if ours.is_none() => Err(SealError::NoKeyFile.into()),
            recorded => Err(SealError::OtherKeyFile {
                recorded,
                ours: our_id,
            }
            .into()),
        }
    }

    /// Records this key file for a store that recorded none, unless
    /// another writer recorded one meanwhile: then that one decides.
    fn record_ours(&self, ours: i64) -> Result<(), StoreError> {
        match self.driver.record_sealing_id(ours)? {
            recorded if recorded == ours => Ok(()),
            recorded => Err(crate::seal::SealError::OtherKeyFile { recorded, ours }.into()),
        }
    }

    /// Inserts a token (its parameters checked, its key sealed if sealing
    /// is on); an existing (user, device) is `AlreadyEnrolled`.
    pub(crate) fn insert_token(&self, token: &Token) -> Result<(), StoreError> {
        let last_step = token.last_step.map(step_to_sql).transpose()?;
        let secret = super::checked_secret(self.sealer.as_deref(), token)?;
        let inserted = self.driver.execute(
            sql::INSERT_TOKEN,
            params![
                &token.user,
                &token.device,
                token.kind.as_str(),
                secret.as_slice(),
                token.params.algorithm.as_str(),
                token.params.digits,
                step_to_sql(token.params.period)?,
                token.created,
                token.confirmed,
                last_step,
                token.life.disabled,
                token.life.expires,
                token.life.replaces.as_deref(),
            ],
        )?;
        if inserted == 0 {
            return Err(StoreError::AlreadyEnrolled {
                user: token.user.clone(),
                device: token.device.clone(),
            });
        }
        self.check_sealing()
    }

    /// The user's recovery codes replaced by `codes`.
    pub(crate) fn insert_recovery(
        &self,
        user: &str,
        codes: &[RecoveryHash],
    ) -> Result<(), StoreError> {
        self.driver
            .execute(sql::DELETE_RECOVERY_OF_USER, params![user])?;
        let now = super::unix_now();
        for code in codes {
            self.driver.execute(
                sql::INSERT_RECOVERY,
                params![user, &code.lookup, &code.phc, now, None::<i64>],
            )?;
        }
        Ok(())
    }

    /// Everything the store holds about a user; returns the number of tokens.
    pub(crate) fn delete_user_rows(&self, user: &str) -> Result<usize, StoreError> {
        let [tokens, rest @ ..] = sql::DELETE_USER;
        let removed = self.driver.execute(tokens, params![user])?;
        for statement in rest {
            self.driver.execute(statement, params![user])?;
        }
        self.prune_retired_of(user)?;
        Ok(changed(removed))
    }

    /// The failure counts of (user, rhost) at `now`.
    pub(crate) fn read_failures(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
    ) -> Result<Failures, StoreError> {
        Ok(self.read_failure_rows(user, rhost, now)?.failures)
    }

    /// The failure counts of (user, rhost) at `now`, and what counting one
    /// more needs to know of the rows they come from.
    fn read_failure_rows(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
    ) -> Result<FailureRows, StoreError> {
        let mut source = None;
        let mut guesses = Vec::new();
        for row in self.driver.query(sql::FAILURE_ROWS, params![user, rhost])? {
            match row.opt_int(0)? {
                Some(count) => {
                    if source.is_none() {
                        source = Some((count, row.int(1)?));
                    }
                }
                None => guesses.push(row.int(1)?),
            }
        }
        // The user's failures in the window up to the latest one (0 without
        // any), compared as SQL would (no overflow).
        let latest = guesses.iter().copied().max().unwrap_or(0);
        let from = i128::from(latest) - i128::from(USER_WINDOW_SECS);
        let recent = guesses.iter().filter(|&&at| i128::from(at) > from).count();
        let (count, last) = source.unwrap_or((0, 0));
        let old = old_guesses_before(now);
        Ok(FailureRows {
            failures: Failures::new(
                count,
                last,
                i64::try_from(recent).unwrap_or(i64::MAX),
                latest,
                now,
            ),
            source_count: source.map(|(count, _)| count),
            old_guesses: guesses.iter().any(|&at| at <= old),
        })
    }

    /// One guess for (user, rhost) at `now` against `limits`, inside the
    /// caller's transaction (which holds the user's guesses): refused while
    /// a limit is in force, else counted as a failure.
    pub(crate) fn take_guess(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &crate::ratelimit::Limits,
    ) -> Result<super::Reservation, StoreError> {
        let before = self.read_failure_rows(user, rhost, now)?;
        if let Some(lock) = crate::ratelimit::lock_at(&before.failures, limits, now) {
            return Ok(super::Reservation::Locked(lock));
        }
        // What `count_failure` does, with what was just read under the
        // hold, and the old failures dropped only when there are any.
        if self.driver.holds_out_every_writer() {
            // SQLite: no writer ran since the read, so the source's row is
            // updated or inserted as read (fewer instructions to parse than
            // the upsert, which stays as the fallback).
            let counted = if before.source_count.is_some() {
                self.driver
                    .execute(sql::ADD_SOURCE_FAILURE, params![user, rhost, now])?
            } else {
                self.driver
                    .execute(sql::FIRST_SOURCE_FAILURE, params![user, rhost, now])?
            };
            if counted == 0 {
                self.driver
                    .execute(sql::COUNT_SOURCE_FAILURE, params![user, rhost, now])?;
            }
        } else {
            // PostgreSQL: writers that do not wait for the user's hold
            // (`release_guess`, `unlock`) may have changed the row; the
            // upsert needs no answer, so it goes with the next statement.
            self.driver
                .execute_later(sql::COUNT_SOURCE_FAILURE, params![user, rhost, now])?;
        }
        self.add_guess(user, now, before.old_guesses)?;
        Ok(super::Reservation::Granted(
            before.failures.with_one_more(now),
        ))
    }

    /// `LoginStore::settle_guess` inside the transaction holding the
    /// user's guesses, which it ends: committed when it returns a
    /// settlement, to be rolled back by the caller after an error.
    pub(crate) fn settle_within(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &crate::ratelimit::Limits,
        answer: super::Answer<'_>,
    ) -> Result<super::Settled, StoreError> {
        use super::{Answer, Reservation, Settled};
        if !matches!(answer, Answer::Wrong) {
            return self.settle_given_back(user, rhost, now, limits, answer);
        }
        match self.take_guess(user, rhost, now, limits)? {
            Reservation::Locked(lock) => {
                self.driver.commit()?;
                Ok(Settled::Locked(lock))
            }
            Reservation::Granted(counted) => {
                self.driver.commit()?;
                Ok(Settled::Counted(counted))
            }
        }
    }

    /// Whether `step` of `token` was used by a device of its user that
    /// shares its codes (itself included), as the store holds them now:
    /// inside the caller's transaction, under the user's hold.
    pub(crate) fn used_by_twins(&self, token: &Token, step: u64) -> Result<bool, StoreError> {
        let rows = self
            .driver
            .query(sql::TOKENS_OF_USER, params![&token.user])?;
        let floor = token.last_used_among(&self.tokens_from(rows)?);
        Ok(floor.is_some_and(|used| step <= used))
    }

    /// `settle_within` for an answer whose guess is given back (a right
    /// code, or one refused before its claim): what taking the guess and
    /// giving it back would leave behind, written directly. Counting the
    /// source's failure and taking it back again, or inserting the user's
    /// guess and deleting it, inside one transaction changes nothing but
    /// the source's `last` (the failure's time, which the count left
    /// there), an emptied source row's removal, and the old guesses the
    /// reservation drops on the way. The limits are checked as the
    /// reservation checks them. An accept writes the claimed token's row
    /// and, if the source had failures, clears them (issue 18: on SQLite
    /// three statements fewer to prepare and run and 1 WAL frame instead
    /// of 5; on PostgreSQL two statements fewer for the server).
    /// SQLite's transaction holds out every writer, so its writes follow
    /// what it read; PostgreSQL's `release_guess` and `unlock` do not wait
    /// for the user's hold, so its writes are conditioned on the rows as
    /// they are when they run.
    fn settle_given_back(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
        limits: &crate::ratelimit::Limits,
        answer: super::Answer<'_>,
    ) -> Result<super::Settled, StoreError> {
        use super::{Answer, Claim, Settled};
        let before = self.read_failure_rows(user, rhost, now)?;
        if let Some(lock) = crate::ratelimit::lock_at(&before.failures, limits, now) {
            self.driver.commit()?;
            return Ok(Settled::Locked(lock));
        }
        if before.old_guesses {
            self.driver.execute_later(
                sql::DROP_OLD_GUESSES,
                params![user, old_guesses_before(now)],
            )?;
        }
        // A twin's: read again under the hold, what the twins used by now.
        let answer = match answer {
            Answer::RightOnSharedKey { token, step } if !self.used_by_twins(token, step)? => {
                Answer::Right { token, step }
            }
            other => other,
        };
        let claimed = match answer {
            Answer::Right { token, step } if self.driver.writes_in_with() => {
                // The claim, the source's settlement that depends on it
                // and the COMMIT in one round trip (PostgreSQL).
                let changed = self.driver.execute_and_commit(
                    sql::CLAIM_AND_SETTLE,
                    params![
                        token.id,
                        step_to_sql(step)?,
                        now,
                        token.stored_key.as_bytes(),
                        user,
                        rhost
                    ],
                )?;
                return Ok(Settled::GivenBack(Some(claim(changed))));
            }
            Answer::Right { token, step } => Some(self.claim_row(token, step, now)?),
            // A twin used the step: nothing claimed.
            Answer::RightOnSharedKey { .. } => Some(Claim::AlreadyUsed),
            Answer::Refused | Answer::Wrong => None,
        };
        let cleared = claimed == Some(Claim::Claimed);
        if !self.driver.holds_out_every_writer() {
            // PostgreSQL, not claimed: the source's row as it is now.
            self.driver
                .execute_later(sql::TOUCH_SOURCE, params![user, rhost, now])?;
            self.driver
                .execute_later(sql::DROP_EMPTY_SOURCE, params![user, rhost])?;
        } else {
            match before.source_count {
                None => {}
                // Cleared by the claim, or dropped as empty once its count
                // went back to what it was (at or below 0: a row written by
                // hand).
                Some(count) if cleared || count <= 0 => self
                    .driver
                    .execute_later(sql::CLEAR_SOURCE, params![user, rhost])?,
                Some(_) => self
                    .driver
                    .execute_later(sql::TOUCH_SOURCE, params![user, rhost, now])?,
            }
        }
        self.driver.commit()?;
        Ok(Settled::GivenBack(claimed))
    }

    /// One failed code from (user, rhost) at `now`: the source's back-off
    /// count and the user's ceiling both count it. Failures too old to
    /// matter to the ceiling (48 h) are dropped on the way.
    pub(crate) fn count_failure(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.driver
            .execute_later(sql::COUNT_SOURCE_FAILURE, params![user, rhost, now])?;
        self.add_guess(user, now, true)
    }

    /// The user's failure at `now`, for the ceiling; with `drop_old`, the
    /// failures too old to matter to it (48 h) go on the way (the guess
    /// reservation drops them only when its read found some).
    fn add_guess(&self, user: &str, now: i64, drop_old: bool) -> Result<(), StoreError> {
        if drop_old {
            self.driver.execute_later(
                sql::DROP_OLD_GUESSES,
                params![user, old_guesses_before(now)],
            )?;
        }
        self.driver
            .execute_later(sql::INSERT_GUESS, params![user, now])
    }

    /// The step claim on `token`'s row while it holds the key it was read
    /// with (one conditional write; the row count decides).
    pub(crate) fn claim_row(
        &self,
        token: &Token,
        step: u64,
        now: i64,
    ) -> Result<super::Claim, StoreError> {
        let changed = self.driver.execute(
            sql::CLAIM_STEP,
            params![
                token.id,
                step_to_sql(step)?,
                now,
                token.stored_key.as_bytes()
            ],
        )?;
        Ok(claim(changed))
    }

    /// Gives back one guess of (user, rhost) taken at `at`: the user's
    /// count loses it, and the source's either loses it or, with `clear`
    /// (a right code), its whole back-off. Inside the caller's transaction.
    pub(crate) fn give_back(
        &self,
        user: &str,
        rhost: &str,
        clear: bool,
        at: i64,
    ) -> Result<(), StoreError> {
        self.driver
            .execute_later(sql::RELEASE_GUESS, params![user, at])?;
        if clear {
            self.driver
                .execute_later(sql::CLEAR_SOURCE, params![user, rhost])?;
        } else {
            self.driver
                .execute_later(sql::UNCOUNT_SOURCE_FAILURE, params![user, rhost])?;
            self.driver
                .execute_later(sql::DROP_EMPTY_SOURCE, params![user, rhost])?;
        }
        Ok(())
    }
}

/// What the guess reservation read, under the user's hold.
struct FailureRows {
    failures: Failures,
    /// The source's back-off count, when its row was there.
    source_count: Option<i64>,
    /// The user has failures too old to matter to the ceiling.
    old_guesses: bool,
}

/// Failures at or before this are dropped (two windows back).
fn old_guesses_before(now: i64) -> i64 {
    now - 2 * USER_WINDOW_SECS
}

pub(crate) fn step_to_sql(step: u64) -> Result<i64, StoreError> {
    i64::try_from(step).map_err(|_| StoreError::StepOutOfRange(step))
}

pub(crate) fn claim(changed: u64) -> super::Claim {
    if changed == 1 {
        super::Claim::Claimed
    } else {
        super::Claim::AlreadyUsed
    }
}

fn invalid(user: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidRow {
        user: user.to_string(),
        reason: reason.into(),
    }
}

/// Where a token query's key column comes, after `sql::token_columns`.
pub(crate) const KEY_COLUMN: usize = 13;

/// A token row's first thirteen columns (`sql::token_columns`), checked.
pub(crate) fn token_info(row: &Row) -> Result<TokenInfo, StoreError> {
    let user = row.text(1)?;
    let kind: Kind = row.text(3)?.parse().map_err(|e| invalid(&user, e))?;
    let algorithm: Algorithm = row.text(4)?.parse().map_err(|e| invalid(&user, e))?;
    let params = Params {
        algorithm,
        digits: u32::try_from(row.int(5)?).map_err(|_| invalid(&user, "digits"))?,
        period: u64::try_from(row.int(6)?).map_err(|_| invalid(&user, "period"))?,
    };
    params.validate().map_err(|e| invalid(&user, e))?;
    let last_step = match row.opt_int(9)? {
        Some(s) => Some(u64::try_from(s).map_err(|_| invalid(&user, "last_step"))?),
        None => None,
    };
    Ok(TokenInfo {
        id: row.int(0)?,
        device: row.text(2)?,
        kind,
        params,
        created: row.int(7)?,
        confirmed: row.opt_int(8)?,
        last_step,
        life: super::Life {
            disabled: row.opt_int(10)?,
            expires: row.opt_int(11)?,
            replaces: row.opt_text(12)?,
        },
        user,
    })
}

/// A count from the store as a `usize` (negative counts read as 0).
pub(crate) fn count(value: i64) -> usize {
    usize::try_from(value).unwrap_or(0)
}

/// A number of rows changed, as a `usize`.
pub(crate) fn changed(rows: u64) -> usize {
    usize::try_from(rows).unwrap_or(usize::MAX)
}

/// An automation row (`sql::automation_columns`).
pub(crate) fn automation_grant(row: &Row) -> Result<super::AutomationGrant, StoreError> {
    Ok(super::AutomationGrant {
        id: row.int(0)?,
        user: row.text(1)?,
        fingerprint: row.text(2)?,
        networks: row.text(3)?,
        until: row.int(4)?,
        reason: row.text(5)?,
        created: row.int(6)?,
        created_by: row.text(7)?,
        revoked: row.opt_int(8)?,
    })
}
