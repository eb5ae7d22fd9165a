//! What totpctl asks of a store beyond the login path, and how `SqlStore`
//! does it. Every write here is synced before it returns (the backends
//! open administrative connections that way).

use super::driver::{Driver, Hold, Purpose, params};
use super::shared::{KEY_COLUMN, SqlStore, changed, claim, step_to_sql, token_info};
use super::{
    AutomationGrant, Claim, Dump, EnrollMode, Enrollment, KeyRow, LoginStore, RetiredKey,
    SecretRow, StoreError, Token, TokenInfo, sql,
};
use crate::ratelimit::Failures;
use crate::recovery::RecoveryHash;

/// `RETIRED_KEYS_OF_USER`'s and `ALL_RETIRED_KEYS`' `key_mark`, after the
/// token columns and the key; `ALL_RETIRED_KEYS`' `keep_until` after it.
const RETIRED_MARK_COLUMN: usize = 14;
const RETIRED_KEEP_COLUMN: usize = 15;

/// Everything a store does: the login path's operations and the
/// administrator's.
pub trait Store: LoginStore {
    /// The schema version of the store (0: no schema yet).
    fn schema_version(&self) -> Result<i64, StoreError>;

    /// Stores the enrollments in one transaction: all or nothing.
    fn enroll(&self, enrollments: &[Enrollment], mode: EnrollMode) -> Result<(), StoreError>;

    /// `enroll`, for a change a user proved with one of their devices
    /// (`totp add-device`, `totp replace`): in the same transaction, only
    /// while `user`'s tokens are still the rows `seen` (read before the
    /// proof: the same ids with the same keys). A reset between the proof
    /// and the write (a stolen phone's holder waiting at a prompt) is
    /// `ChangedMeanwhile`, and nothing is written.
    fn enroll_unchanged(
        &self,
        enrollments: &[Enrollment],
        mode: EnrollMode,
        user: &str,
        seen: &[Token],
    ) -> Result<(), StoreError>;

    /// Confirms pending `token` (as read: its row while it holds the key
    /// the code was checked against) with the step of its first code, which
    /// is thereby used. `AlreadyUsed` if it is not pending, no longer holds
    /// that key, or the step is not newer than one used before. A pending replacement retires the
    /// user's other tokens and takes its device name, in the same
    /// transaction.
    fn confirm(&self, token: &Token, at: i64, step: u64) -> Result<Claim, StoreError>;

    /// Disables (`Some(time)`) or enables (`None`) the user's tokens, or
    /// one device; returns how many changed.
    fn set_disabled(
        &self,
        user: &str,
        device: Option<&str>,
        at: Option<i64>,
    ) -> Result<usize, StoreError>;

    /// Removes the pending tokens made before `before`, and the recovery
    /// codes of users it leaves without a token; returns (user, device).
    fn prune_pending(&self, before: i64) -> Result<Vec<(String, String)>, StoreError>;

    /// Drops the records of deleted keys past their time and turns every
    /// one still holding a key into its mark (`otp::key_mark`); returns
    /// (marked, left): left are sealed with a key file this process does
    /// not have.
    fn mark_deleted_keys(&self) -> Result<(usize, usize), StoreError>;

    /// Removes everything about a user; returns how many tokens went.
    fn delete_user(&self, user: &str) -> Result<usize, StoreError>;

    /// Removes one device; false if the user had no such device.
    fn delete_device(&self, user: &str, device: &str) -> Result<bool, StoreError>;

    /// Removes one device, but only while another usable (confirmed, not
    /// disabled, not expired at `now`) token of the user remains (one
    /// statement), and ends the user's grace periods, in one transaction.
    /// False if nothing was removed (and nothing changed).
    fn delete_device_unless_last(
        &self,
        user: &str,
        device: &str,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Every token, without keys, by user and device.
    fn list(&self) -> Result<Vec<TokenInfo>, StoreError>;

    /// Replaces the user's recovery codes in one transaction.
    fn replace_recovery(&self, user: &str, codes: &[RecoveryHash]) -> Result<(), StoreError>;

    /// Lets the user enroll at login until `until` (opened by `by`).
    fn open_enroll_window(&self, user: &str, until: i64, by: &str) -> Result<(), StoreError>;

    /// The failure counts of (user, rhost) at `now`.
    fn failures(&self, user: &str, rhost: &str, now: i64) -> Result<Failures, StoreError>;

    /// Ends every back-off and the ceiling of a user; returns the number
    /// of sources that had failures.
    fn unlock(&self, user: &str) -> Result<usize, StoreError>;

    /// (source, failures, last) of a user, latest first.
    fn failure_sources(&self, user: &str) -> Result<Vec<(String, u64, i64)>, StoreError>;

    /// Ends every grace period of a user; returns how many.
    fn forget_grace(&self, user: &str) -> Result<usize, StoreError>;

    /// The user's grace periods running at `now`: (address, until), the
    /// longest first (`totpctl show`, `totp status`).
    fn graces(&self, user: &str, now: i64) -> Result<Vec<(String, i64)>, StoreError>;
    /// Ends the user's grace for one SSH key; how many ended (0 or 1).
    fn forget_key_grace(&self, user: &str, fingerprint: &str) -> Result<usize, StoreError>;

    /// The user's key graces running at `now`: (fingerprint, until), the
    /// latest end first. For `totpctl show` and `totp status`.
    fn key_graces(&self, user: &str, now: i64) -> Result<Vec<(String, i64)>, StoreError>;

    /// Records an automation grant; its id.
    #[allow(clippy::too_many_arguments)]
    fn add_automation(
        &self,
        user: &str,
        fingerprint: &str,
        networks: &str,
        until: i64,
        reason: &str,
        created: i64,
        created_by: &str,
    ) -> Result<i64, StoreError>;

    /// Automation grants, of one user or all, in force or ended, by id.
    fn automation_grants(&self, user: Option<&str>) -> Result<Vec<AutomationGrant>, StoreError>;

    /// Ends grant `id` at `at`: the grant as it now is, or `None` when
    /// there is no such grant in force (unknown, or revoked before).
    fn revoke_automation(&self, id: i64, at: i64) -> Result<Option<AutomationGrant>, StoreError>;

    /// Ends every grant of the user at `at`; how many.
    fn revoke_automation_of_user(&self, user: &str, at: i64) -> Result<usize, StoreError>;

    /// Seals every stored key again (`totpctl rekey`): each token's and
    /// each deleted token's (`retired_keys`) key as stored is handed to
    /// `reseal`, and what it returns is written in its place, all in one
    /// transaction that holds every key still (`Hold::AllKeys`: a delete
    /// or enrollment meanwhile cannot leave a key sealed the old way).
    /// The store records `sealed_with` (the new key file's
    /// `Sealer::id`) in the same transaction, so that every later write of
    /// a key by a process with another key file, or none, is refused
    /// (`SqlStore::check_sealing`). Returns how many token keys and
    /// deleted keys were written.
    fn reseal_keys(
        &self,
        reseal: &mut dyn FnMut(&SecretRow) -> Result<Vec<u8>, StoreError>,
        sealed_with: i64,
    ) -> Result<(usize, usize), StoreError>;
}

impl<D: Driver> Store for SqlStore<D> {
    fn schema_version(&self) -> Result<i64, StoreError> {
        self.driver.schema_version()
    }

    fn enroll(&self, enrollments: &[Enrollment], mode: EnrollMode) -> Result<(), StoreError> {
        // One user's enrollment (totpctl enroll, reset) waits for every
        // other change of that user's devices, on every node; an import of
        // many users holds only the rows it writes.
        let hold = match enrollments.split_first() {
            Some((first, rest)) if rest.iter().all(|e| e.token.user == first.token.user) => {
                Hold::User(&first.token.user, Purpose::Enrollment)
            }
            _ => Hold::Rows,
        };
        self.write(hold, |_| self.enroll_rows(enrollments, mode))
    }

    fn enroll_unchanged(
        &self,
        enrollments: &[Enrollment],
        mode: EnrollMode,
        user: &str,
        seen: &[Token],
    ) -> Result<(), StoreError> {
        // Held against the administrator's changes of this user's devices
        // (`enroll`, `set_disabled`, `delete_*`, which take the same hold):
        // on PostgreSQL a reset committed between the check below and this
        // commit would otherwise leave the new device beside the reset.
        self.write(Hold::User(user, Purpose::Enrollment), |db| {
            let mut now = Vec::new();
            for mut row in db.query(sql::TOKEN_KEYS_OF_USER, params![user])? {
                now.push((row.int(0)?, row.take_blob(1)?));
            }
            let mut then: Vec<(i64, &[u8])> = seen
                .iter()
                .map(|t| (t.id, t.stored_key.as_bytes()))
                .collect();
            then.sort_by_key(|(id, _)| *id);
            let same = now.len() == then.len()
                && now
                    .iter()
                    .zip(&then)
                    .all(|((a, ka), (b, kb))| a == b && ka.as_slice() == *kb);
            if !same {
                return Err(StoreError::ChangedMeanwhile {
                    user: user.to_string(),
                });
            }
            self.enroll_rows(enrollments, mode)
        })
    }

    fn confirm(&self, token: &Token, at: i64, step: u64) -> Result<Claim, StoreError> {
        let used = step;
        let step = step_to_sql(step)?;
        let id = token.id;
        // Under the user's hold that logins' settlements take: a step a
        // device sharing the token's codes used (or uses meanwhile) does
        // not confirm it (found by an attack: a pending twin confirmed
        // with the code a login had just used).
        self.write(Hold::User(&token.user, Purpose::Guesses), |db| {
            if self.used_by_twins(token, used)? {
                return Ok(Claim::AlreadyUsed);
            }
            let confirmed = claim(db.execute(
                sql::CONFIRM,
                params![id, at, step, token.stored_key.as_bytes()],
            )?);
            if confirmed != Claim::Claimed {
                return Ok(confirmed);
            }
            let Some(row) = db.query(sql::REPLACES, params![id])?.into_iter().next() else {
                return Ok(confirmed);
            };
            if let Some(device) = row.opt_text(1)? {
                let user = row.text(0)?;
                // A sealed key is bound to its device name: sealed again
                // for the name it takes (found by an attack: a confirmed
                // replacement's key no longer opened, so the new phone
                // logged nobody in and the user could not be deleted).
                let renamed = Token {
                    device: device.clone(),
                    ..token.clone()
                };
                let key = super::checked_secret(self.sealer.as_deref(), &renamed)?;
                db.execute(sql::DELETE_OTHER_TOKENS, params![&user, id])?;
                db.execute(sql::TAKE_DEVICE_NAME, params![id, &device, key.as_slice()])?;
                self.check_sealing()?;
                self.prune_retired_of(&user)?;
                end_graces(db, &user)?;
            }
            Ok(confirmed)
        })
    }

    fn set_disabled(
        &self,
        user: &str,
        device: Option<&str>,
        at: Option<i64>,
    ) -> Result<usize, StoreError> {
        let rows = self.write(Hold::User(user, Purpose::Enrollment), |db| match device {
            Some(device) => db.execute(sql::SET_DISABLED_DEVICE, params![user, device, at]),
            None => db.execute(sql::SET_DISABLED_USER, params![user, at]),
        })?;
        Ok(changed(rows))
    }

    fn prune_pending(&self, before: i64) -> Result<Vec<(String, String)>, StoreError> {
        self.write(Hold::Rows, |db| {
            let removed = db
                .query(sql::PRUNE_PENDING, params![before])?
                .iter()
                .map(|row| Ok((row.text(0)?, row.text(1)?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            for (user, _) in &removed {
                db.execute(sql::DELETE_ORPHAN_RECOVERY, params![user])?;
            }
            Ok(removed)
        })
    }

    fn mark_deleted_keys(&self) -> Result<(usize, usize), StoreError> {
        // Deleted keys past their time, every user's, and the rest held as
        // marks only (records of deleted keys written before marks, or by
        // a process that could not open them): a transaction of its own,
        // holding no token row another one may wait for, taking rows in
        // id order as every marking does.
        self.write(Hold::Rows, |db| {
            db.execute(sql::PRUNE_RETIRED_KEYS, params![super::unix_now()])?;
            self.mark_retired(db.query(sql::RETIRED_SECRETS, &[])?)
        })
    }

    fn delete_user(&self, user: &str) -> Result<usize, StoreError> {
        self.write(Hold::User(user, Purpose::Enrollment), |_| {
            self.delete_user_rows(user)
        })
    }

    fn delete_device(&self, user: &str, device: &str) -> Result<bool, StoreError> {
        let removed = self.write(Hold::User(user, Purpose::Enrollment), |_| {
            self.delete_passing_on(user, sql::DELETE_DEVICE_RETURNING, params![user, device])
        })?;
        Ok(removed == 1)
    }

    fn delete_device_unless_last(
        &self,
        user: &str,
        device: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        // Removals of this user wait for each other (on every node): the
        // second of two racing ones sees the first one's result.
        let removed = self.driver.durably(|| {
            self.write(Hold::User(user, Purpose::Enrollment), |db| {
                let removed = self.delete_passing_on(
                    user,
                    sql::DELETE_DEVICE_UNLESS_LAST,
                    params![user, device, now],
                )?;
                if removed == 1 {
                    end_graces(db, user)?;
                }
                Ok(removed)
            })
        })?;
        Ok(removed == 1)
    }

    fn list(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.driver
            .query(sql::ALL_TOKENS, &[])?
            .iter()
            .map(token_info)
            .collect()
    }

    fn replace_recovery(&self, user: &str, codes: &[RecoveryHash]) -> Result<(), StoreError> {
        self.write(Hold::Rows, |_| self.insert_recovery(user, codes))
    }

    fn open_enroll_window(&self, user: &str, until: i64, by: &str) -> Result<(), StoreError> {
        self.driver
            .execute(sql::OPEN_WINDOW, params![user, until, by])?;
        Ok(())
    }

    fn failures(&self, user: &str, rhost: &str, now: i64) -> Result<Failures, StoreError> {
        self.read_failures(user, rhost, now)
    }

    fn unlock(&self, user: &str) -> Result<usize, StoreError> {
        self.write(Hold::Rows, |db| {
            db.execute(sql::DELETE_GUESSES_OF_USER, params![user])?;
            Ok(changed(
                db.execute(sql::DELETE_FAILURES_OF_USER, params![user])?,
            ))
        })
    }

    fn graces(&self, user: &str, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.running_graces(sql::GRACES_OF_USER, user, now)
    }

    fn failure_sources(&self, user: &str) -> Result<Vec<(String, u64, i64)>, StoreError> {
        self.driver
            .query(sql::FAILURE_SOURCES, params![user])?
            .iter()
            .map(|row| {
                Ok((
                    row.text(0)?,
                    u64::try_from(row.int(1)?).unwrap_or(0),
                    row.int(2)?,
                ))
            })
            .collect()
    }

    /// Ends the user's address graces and key graces.
    fn forget_grace(&self, user: &str) -> Result<usize, StoreError> {
        self.write(Hold::Rows, |db| end_graces(db, user))
    }

    fn forget_key_grace(&self, user: &str, fingerprint: &str) -> Result<usize, StoreError> {
        self.write(Hold::Rows, |db| {
            let ended = db.execute(sql::DELETE_KEY_GRACE, params![user, fingerprint])?;
            db.execute(sql::DELETE_STAGED_KEY_GRACE, params![user, fingerprint])?;
            Ok(changed(ended))
        })
    }

    fn key_graces(&self, user: &str, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.running_graces(sql::KEY_GRACES_OF_USER, user, now)
    }

    fn add_automation(
        &self,
        user: &str,
        fingerprint: &str,
        networks: &str,
        until: i64,
        reason: &str,
        created: i64,
        created_by: &str,
    ) -> Result<i64, StoreError> {
        self.write(Hold::Rows, |db| {
            let rows = db.query(
                sql::INSERT_AUTOMATION,
                params![
                    user,
                    fingerprint,
                    networks,
                    until,
                    reason,
                    created,
                    created_by
                ],
            )?;
            rows.first()
                .ok_or(StoreError::Column {
                    column: 0,
                    expected: "the new grant's id",
                })?
                .int(0)
        })
    }

    fn automation_grants(&self, user: Option<&str>) -> Result<Vec<AutomationGrant>, StoreError> {
        let rows = match user {
            Some(user) => self.driver.query(sql::AUTOMATION_OF_USER, params![user])?,
            None => self.driver.query(sql::ALL_AUTOMATION, &[])?,
        };
        rows.iter().map(super::shared::automation_grant).collect()
    }

    fn revoke_automation(&self, id: i64, at: i64) -> Result<Option<AutomationGrant>, StoreError> {
        self.write(Hold::Rows, |db| {
            db.query(sql::REVOKE_AUTOMATION, params![id, at])?
                .first()
                .map(super::shared::automation_grant)
                .transpose()
        })
    }

    fn revoke_automation_of_user(&self, user: &str, at: i64) -> Result<usize, StoreError> {
        Ok(changed(self.driver.execute(
            sql::REVOKE_AUTOMATION_OF_USER,
            params![user, at],
        )?))
    }

    fn reseal_keys(
        &self,
        reseal: &mut dyn FnMut(&SecretRow) -> Result<Vec<u8>, StoreError>,
        sealed_with: i64,
    ) -> Result<(usize, usize), StoreError> {
        self.write(Hold::AllKeys, |db| {
            db.execute(sql::PRUNE_RETIRED_KEYS, params![super::unix_now()])?;
            let tokens = db.query(sql::ALL_KEYS, &[])?;
            let retired = db.query(sql::ALL_RETIRED_SECRETS, &[])?;
            let tagged = tokens
                .into_iter()
                .map(|row| (KeyRow::Token as fn(i64) -> KeyRow, row))
                .chain(retired.into_iter().map(|row| (KeyRow::Retired as _, row)));
            let (mut sealed_tokens, mut sealed_deleted) = (0, 0);
            for (which, mut row) in tagged {
                let blob = row.take_blob(3)?;
                let stored: SecretRow = (which(row.int(0)?), row.text(1)?, row.text(2)?, blob);
                let new = reseal(&stored)?;
                let (statement, id, count) = match stored.0 {
                    KeyRow::Token(id) => (sql::SET_KEY, id, &mut sealed_tokens),
                    KeyRow::Retired(id) => (sql::SET_RETIRED_KEY, id, &mut sealed_deleted),
                };
                *count += changed(db.execute(statement, params![id, new.as_slice()])?);
            }
            db.set_sealing_id(sealed_with)?;
            Ok((sealed_tokens, sealed_deleted))
        })
    }
}

/// A new token's administrator settings given what it replaces (`stops`:
/// the replaced tokens' disabled and expires columns): disabled when every
/// one of them was; expiring no later than the last of them when every one
/// of them expires.
impl<D: Driver> SqlStore<D> {
    /// (address or fingerprint, until) of the user's graces running at
    /// `now`, by `statement` (`GRACES_OF_USER`, `KEY_GRACES_OF_USER`).
    fn running_graces(
        &self,
        statement: &'static str,
        user: &str,
        now: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        self.driver
            .query(statement, params![user, now])?
            .iter()
            .map(|row| Ok((row.text(0)?, row.int(1)?)))
            .collect()
    }
}

/// Ends every grace of `user`, stored and staged; how many stored ones
/// ended (address and key graces).
fn end_graces<D: Driver>(db: &D, user: &str) -> Result<usize, StoreError> {
    let [ips, keys, staged] = sql::END_GRACES_OF_USER;
    let ended = db
        .execute(ips, params![user])?
        .saturating_add(db.execute(keys, params![user])?);
    db.execute(staged, params![user])?;
    Ok(changed(ended))
}

fn inherited(life: &super::Life, stops: &[super::driver::Row]) -> Result<super::Life, StoreError> {
    let mut life = life.clone();
    if stops.is_empty() {
        return Ok(life);
    }
    let mut disabled = Vec::with_capacity(stops.len());
    let mut expires = Vec::with_capacity(stops.len());
    for row in stops {
        disabled.push(row.opt_int(0)?);
        expires.push(row.opt_int(1)?);
    }
    if life.disabled.is_none() && disabled.iter().all(Option::is_some) {
        life.disabled = disabled.into_iter().flatten().min();
    }
    if expires.iter().all(Option::is_some)
        && let Some(last) = expires.into_iter().flatten().max()
    {
        life.expires = Some(life.expires.map_or(last, |given| given.min(last)));
    }
    Ok(life)
}

/// Failed codes beyond this many per source are not carried over by
/// `load` (the ceiling is far below it).
const CARRIED_GUESSES: i64 = 10_000;

impl<D: Driver> SqlStore<D> {
    /// One failed code from (user, rhost) at `now`, outside a login (tests
    /// and tools); returns the counts with it.
    pub fn record_failure(
        &self,
        user: &str,
        rhost: &str,
        now: i64,
    ) -> Result<Failures, StoreError> {
        self.write(Hold::Rows, |_| self.count_failure(user, rhost, now))?;
        self.read_failures(user, rhost, now)
    }

    /// Everything in the store (`totpctl migrate`), read from one snapshot.
    pub fn dump(&self) -> Result<Dump, StoreError> {
        self.write(Hold::Snapshot, |db| {
            let tokens = self.tokens_from(db.query(sql::ALL_TOKENS_WITH_KEYS, &[])?)?;
            let recovery = db
                .query(sql::ALL_RECOVERY, &[])?
                .iter()
                .map(|r| Ok((r.text(0)?, r.text(1)?, r.text(2)?, r.int(3)?, r.opt_int(4)?)))
                .collect::<Result<_, StoreError>>()?;
            let windows = db
                .query(sql::ALL_WINDOWS, &[])?
                .iter()
                .map(|r| Ok((r.text(0)?, r.int(1)?, r.text(2)?)))
                .collect::<Result<_, StoreError>>()?;
            let failures = db
                .query(sql::ALL_FAILURES, &[])?
                .iter()
                .map(|r| Ok((r.text(0)?, r.text(1)?, r.int(2)?, r.int(3)?)))
                .collect::<Result<_, StoreError>>()?;
            let automation = db
                .query(sql::ALL_AUTOMATION, &[])?
                .iter()
                .map(super::shared::automation_grant)
                .collect::<Result<_, StoreError>>()?;
            let mut retired = Vec::new();
            for row in db.query(sql::ALL_RETIRED_KEYS, params![super::unix_now()])? {
                let keep_until = row.opt_int(RETIRED_KEEP_COLUMN)?;
                retired.push(self.retired_from(row, keep_until)?);
            }
            Ok(Dump {
                tokens,
                recovery,
                windows,
                failures,
                automation,
                retired,
            })
        })
    }

    /// Loads a dump into an empty store in one transaction: all or nothing.
    /// Returns (tokens, recovery codes, enroll windows, failure counts),
    /// and (old id, new id) of each automation grant.
    #[allow(clippy::type_complexity)]
    pub fn load(
        &self,
        dump: &Dump,
    ) -> Result<((usize, usize, usize, usize), Vec<(i64, i64)>), StoreError> {
        self.write(Hold::Rows, |db| {
            let existing = self.one(sql::COUNT_TOKENS, &[])?.int(0)?;
            if existing > 0 {
                return Err(StoreError::NotEmpty(format!(
                    "{} already holds {existing} token(s); migrate only into an empty store",
                    db.name()
                )));
            }
            for token in &dump.tokens {
                self.insert_token(token)?;
            }
            for retired in &dump.retired {
                self.insert_retired(retired)?;
            }
            for (user, lookup, hash, created, used) in &dump.recovery {
                db.execute(
                    sql::INSERT_RECOVERY,
                    params![user, lookup, hash, *created, *used],
                )?;
            }
            for (user, until, by) in &dump.windows {
                db.execute(sql::OPEN_WINDOW, params![user, *until, by])?;
            }
            for (user, rhost, failures, last) in &dump.failures {
                db.execute(sql::INSERT_FAILURE, params![user, rhost, *failures, *last])?;
                // The ceiling's failures, at the source's last time.
                let carried = (*failures).clamp(0, CARRIED_GUESSES);
                if carried > 0 {
                    db.execute(sql::INSERT_GUESSES, params![user, *last, carried])?;
                }
            }
            let mut ids = Vec::new();
            for g in &dump.automation {
                let rows = db.query(
                    sql::INSERT_AUTOMATION,
                    params![
                        &g.user,
                        &g.fingerprint,
                        &g.networks,
                        g.until,
                        &g.reason,
                        g.created,
                        &g.created_by
                    ],
                )?;
                let id = rows
                    .first()
                    .ok_or(StoreError::Column {
                        column: 0,
                        expected: "the new grant's id",
                    })?
                    .int(0)?;
                if let Some(at) = g.revoked {
                    db.query(sql::REVOKE_AUTOMATION, params![id, at])?;
                }
                ids.push((g.id, id));
            }
            Ok((
                (
                    dump.tokens.len(),
                    dump.recovery.len(),
                    dump.windows.len(),
                    dump.failures.len(),
                ),
                ids,
            ))
        })
    }

    /// Deletes `user`'s token rows with `delete` (a statement answering
    /// `id, last_step` of each row it deleted), inside the caller's
    /// transaction, and keeps the step or counter each used on every other
    /// device of the user that shares its codes (`Token::shares_codes_with`;
    /// twins a store of before `totpctl` refused a held key may have), so
    /// that removing the device that used a code does not free the code on
    /// its twin (found by an attack). The rows are answered as deleted, a
    /// claim that committed meanwhile included (on PostgreSQL the delete
    /// waits for it). Returns how many rows went.
    fn delete_passing_on(
        &self,
        user: &str,
        delete: &'static str,
        params: &[super::driver::Param<'_>],
    ) -> Result<u64, StoreError> {
        let rows = self.driver.query(sql::TOKENS_OF_USER, params![user])?;
        let tokens = self.tokens_from(rows)?;
        let deleted = self.driver.query(delete, params)?;
        for row in &deleted {
            let (id, used) = (row.int(0)?, row.opt_int(1)?);
            let (Some(going), Some(used)) = (tokens.iter().find(|t| t.id == id), used) else {
                continue;
            };
            for twin in tokens
                .iter()
                .filter(|t| t.id != going.id && t.shares_codes_with(going))
            {
                self.driver
                    .execute(sql::RAISE_USED_STEP, params![twin.id, used])?;
            }
        }
        self.prune_retired_of(user)?;
        Ok(deleted.len() as u64)
    }

    /// What `token`'s codes count from (`Token::last_used_among`) among its
    /// user's rows and deleted rows not past their time (`retired_keys`,
    /// by their keys' marks), as read inside the caller's transaction.
    fn used_floor(&self, token: &Token, now: i64) -> Result<Option<u64>, StoreError> {
        let db = &self.driver;
        let all = self.tokens_from(db.query(sql::TOKENS_OF_USER, params![&token.user])?)?;
        let mut floor = token.last_used_among(&all);
        let mark = token.key_mark()?;
        for row in db.query(sql::RETIRED_KEYS_OF_USER, params![&token.user, now])? {
            let deleted = self.retired_from(row, None)?;
            if deleted.shares_codes_with(token, &mark) {
                floor = floor.max(Some(deleted.last_step));
            }
        }
        Ok(floor)
    }

    /// A `retired_keys` row (`RETIRED_KEYS_OF_USER`'s shape): its mark, or
    /// the mark of the key it still holds.
    fn retired_from(
        &self,
        mut row: super::driver::Row,
        keep_until: Option<i64>,
    ) -> Result<RetiredKey, StoreError> {
        let info = token_info(&row)?;
        let invalid = |reason: &str| StoreError::InvalidRow {
            user: info.user.clone(),
            reason: format!("deleted key of device {:?}: {reason}", info.device),
        };
        let mark = match row.take_opt_blob(RETIRED_MARK_COLUMN)? {
            Some(mark) => <[u8; 32]>::try_from(mark.as_slice())
                .map_err(|_| invalid("its mark is not 32 bytes"))?,
            None => self.mark_of_held_key(
                &info.user,
                &info.device,
                info.params.algorithm,
                row.take_blob(KEY_COLUMN)?,
            )?,
        };
        Ok(RetiredKey {
            last_step: info.last_step.ok_or_else(|| invalid("no used step"))?,
            user: info.user,
            device: info.device,
            kind: info.kind,
            params: info.params,
            created: info.created,
            keep_until,
            mark,
        })
    }

    /// The mark of a deleted key still held as a key: opened if sealed
    /// (under its device's name or its pending name, as `rekey` opens it),
    /// a plain one as it is (stored before the store was sealed). A key
    /// this process cannot open is a `StoreError::Sealing`.
    fn mark_of_held_key(
        &self,
        user: &str,
        device: &str,
        algorithm: crate::otp::Algorithm,
        blob: zeroize::Zeroizing<Vec<u8>>,
    ) -> Result<[u8; 32], StoreError> {
        let key = if crate::seal::is_sealed(&blob) {
            let Some(sealer) = self.sealer.as_deref() else {
                return Err(crate::seal::SealError::NoKeyFile.into());
            };
            super::open_under_its_names(sealer, user, device, &blob)?
        } else {
            blob
        };
        super::key_mark(&key, algorithm, user)
    }

    /// The user's deleted keys past their time dropped, and the rest held
    /// as marks only, in a transaction that holds the user (after its
    /// token writes: every writer takes token rows before `retired_keys`).
    pub(crate) fn prune_retired_of(&self, user: &str) -> Result<(), StoreError> {
        self.driver.execute(
            sql::PRUNE_RETIRED_KEYS_OF_USER,
            params![user, super::unix_now()],
        )?;
        let rows = self
            .driver
            .query(sql::RETIRED_SECRETS_OF_USER, params![user])?;
        self.mark_retired(rows)?;
        Ok(())
    }

    /// Replaces each deleted key of `rows` (`RETIRED_SECRETS*`) by its mark
    /// and empties its key. A sealed key this process cannot open (no key
    /// file, another one) is left as it is, sealed, for a process that can
    /// (`totpctl prune`). Returns (marked, left).
    pub(crate) fn mark_retired(
        &self,
        rows: Vec<super::driver::Row>,
    ) -> Result<(usize, usize), StoreError> {
        let (mut marked, mut left) = (0, 0);
        for mut row in rows {
            let (id, user, device) = (row.int(0)?, row.text(1)?, row.text(2)?);
            let algorithm: crate::otp::Algorithm =
                row.text(3)?.parse().map_err(|e| StoreError::InvalidRow {
                    user: user.clone(),
                    reason: e,
                })?;
            let mark = match self.mark_of_held_key(&user, &device, algorithm, row.take_blob(4)?) {
                Ok(mark) => mark,
                Err(StoreError::Sealing(_)) => {
                    left += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let empty: &[u8] = &[];
            marked += changed(
                self.driver
                    .execute(sql::MARK_RETIRED_KEY, params![id, mark.as_slice(), empty])?,
            );
        }
        Ok((marked, left))
    }

    /// A deleted token's used step carried over by `load`, by its mark.
    fn insert_retired(&self, retired: &RetiredKey) -> Result<(), StoreError> {
        let empty: &[u8] = &[];
        self.driver.execute(
            sql::INSERT_RETIRED_KEY,
            params![
                &retired.user,
                &retired.device,
                retired.kind.as_str(),
                empty,
                retired.mark.as_slice(),
                retired.params.algorithm.as_str(),
                retired.params.digits,
                step_to_sql(retired.params.period)?,
                retired.created,
                step_to_sql(retired.last_step)?,
                retired.keep_until
            ],
        )?;
        Ok(())
    }

    /// The rows of `enroll`, inside the caller's transaction.
    fn enroll_rows(&self, enrollments: &[Enrollment], mode: EnrollMode) -> Result<(), StoreError> {
        let db = &self.driver;
        for e in enrollments {
            let (user, device) = (&e.token.user, &e.token.device);
            // A replacement keeps what an administrator set on what it
            // replaces: a help desk's new phone never ends a disable
            // or extends an expiry.
            let stops = match mode {
                EnrollMode::Add => Vec::new(),
                EnrollMode::ReplaceDevice => {
                    db.query(sql::STOPS_OF_DEVICE, params![user, device])?
                }
                EnrollMode::ReplaceUser
                | EnrollMode::Replacement
                | EnrollMode::ReplaceConfirmed
                | EnrollMode::AddOwn => db.query(sql::STOPS_OF_USER, params![user])?,
            };
            let mut token = e.token.clone();
            token.life = inherited(&token.life, &stops)?;
            match mode {
                EnrollMode::Add | EnrollMode::AddOwn => {}
                EnrollMode::ReplaceDevice => {
                    // A twin left behind keeps what the device used (found
                    // by an attack: replaced by another key, the device's
                    // used step was kept only for its key enrolled again).
                    self.delete_passing_on(
                        user,
                        sql::DELETE_DEVICE_RETURNING,
                        params![user, device],
                    )?;
                    // Like every other change of devices: nothing granted
                    // outlives the key it was granted for (found by an
                    // attack: `enroll --force` onto the only device kept
                    // the old key's graces, address and SSH key alike).
                    end_graces(db, user)?;
                }
                EnrollMode::ReplaceUser => {
                    self.delete_user_rows(user)?;
                }
                EnrollMode::Replacement => {
                    db.execute(sql::DELETE_PENDING_REPLACEMENT, params![user])?;
                    end_graces(db, user)?;
                }
                EnrollMode::ReplaceConfirmed => {
                    if e.token.confirmed.is_none() {
                        return Err(StoreError::InvalidRow {
                            user: user.clone(),
                            reason: "a replacement of every device must be confirmed".to_string(),
                        });
                    }
                    db.execute(sql::DELETE_TOKENS_OF_USER, params![user])?;
                    end_graces(db, user)?;
                }
            }
            // A key the user holds or held (onto its own device with
            // --force, a reset to it, a file imported again, a device
            // deleted and its key enrolled again): the steps or counters
            // it used stay used (found by attacks), whatever the
            // enrollment brought. Read after the deletes above, whose
            // rows the schema's trigger kept as they were when deleted
            // (a claim that committed meanwhile included).
            token.last_step = self.used_floor(&token, super::unix_now())?;
            self.insert_token(&token)?;
            self.prune_retired_of(user)?;
            if let Some(codes) = &e.recovery {
                self.insert_recovery(user, codes)?;
            }
        }
        Ok(())
    }
}
