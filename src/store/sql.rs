//! Every statement the store runs, once, for both backends.
//!
//! The dialect is the part SQLite and PostgreSQL share: `?N` placeholders
//! (rewritten to `$N` for PostgreSQL by its driver), `"user"` quoted (a
//! reserved word in PostgreSQL), `ON CONFLICT … DO UPDATE/NOTHING` upserts,
//! `RETURNING`, `CAST(… AS BIGINT)` where PostgreSQL must know a type.
//! Schema creation and migration are each backend's own (`sqlite`,
//! `postgres`): the column types differ, the tables and columns do not.

/// The token columns every token query reads first, in this order
/// (`rows::token_info` decodes them).
macro_rules! token_columns {
    () => {
        r#"id, "user", device, kind, algorithm, digits, period, created, confirmed, last_step,
           disabled, expires, replaces"#
    };
}

// Tokens.

pub const TOKENS_OF_USER: &str = concat!(
    "SELECT ",
    token_columns!(),
    r#", secret FROM tokens WHERE "user" = ?1 ORDER BY device"#
);
pub const ALL_TOKENS_WITH_KEYS: &str = concat!(
    "SELECT ",
    token_columns!(),
    r#", secret FROM tokens ORDER BY "user", device"#
);
pub const ALL_TOKENS: &str = concat!(
    "SELECT ",
    token_columns!(),
    r#" FROM tokens ORDER BY "user", device"#
);
pub const COUNT_TOKENS: &str = "SELECT COUNT(*) FROM tokens";
pub const COUNT_TOKENS_OF_USER: &str = r#"SELECT COUNT(*) FROM tokens WHERE "user" = ?1"#;

/// The whole replay protection: the row changes only if the step is newer
/// than anything used before, and only for a confirmed token that is not
/// disabled or expired at `?3` (so a `disable` racing a login wins or
/// loses whole). Both
/// databases serialise writers of one row (SQLite the whole file;
/// PostgreSQL re-checks the `WHERE` on the committed row under READ
/// COMMITTED), so of any number of racers exactly one sees 1 row changed.
/// The row is named by its id and the key it held when it was read (`?4`,
/// as stored): a row that took the id of a deleted one (SQLite reuses the
/// id of a deleted last row) holds another key and claims nothing.
pub const CLAIM_STEP: &str = "UPDATE tokens SET last_step = ?2
     WHERE id = ?1 AND secret = ?4 AND confirmed IS NOT NULL
       AND disabled IS NULL AND (expires IS NULL OR expires > ?3)
       AND (last_step IS NULL OR last_step < ?2)";
/// PostgreSQL only (writes in `WITH`, `Driver::writes_in_with`): a right
/// code's `CLAIM_STEP` (`?1`-`?4`) and what its guess leaves on the source
/// `?6` of user `?5` (`SqlStore::settle_given_back`), in one statement, so
/// that the transaction's `COMMIT` goes out with it: the source's back-off
/// is cleared when the step was claimed, else keeps its count with the
/// time `?3` (`TOUCH_SOURCE`), or goes if the count is at or below 0
/// (`DROP_EMPTY_SOURCE`). The row count is the claim's: 1 claimed, 0 not.
/// Every part reads the rows as they were before the statement, and no two
/// parts change the same row.
pub const CLAIM_AND_SETTLE: &str = r#"WITH claimed AS (
         UPDATE tokens SET last_step = ?2
         WHERE id = ?1 AND secret = ?4 AND confirmed IS NOT NULL
           AND disabled IS NULL AND (expires IS NULL OR expires > ?3)
           AND (last_step IS NULL OR last_step < ?2)
         RETURNING id),
     cleared AS (
         DELETE FROM failures WHERE "user" = ?5 AND rhost = ?6
           AND (EXISTS (SELECT 1 FROM claimed) OR count <= 0)),
     touched AS (
         UPDATE failures SET last = ?3 WHERE "user" = ?5 AND rhost = ?6
           AND NOT EXISTS (SELECT 1 FROM claimed) AND count > 0)
     SELECT id FROM claimed"#;
/// A user's token rows as (id, key as stored), to see whether they changed.
pub const TOKEN_KEYS_OF_USER: &str =
    r#"SELECT id, secret FROM tokens WHERE "user" = ?1 ORDER BY id"#;
/// Confirms a pending token with the step of its first code (used up).
/// The row is named by its id and the key it was checked against (`?4`),
/// like `CLAIM_STEP`.
pub const CONFIRM: &str = "UPDATE tokens SET confirmed = ?2, last_step = ?3
     WHERE id = ?1 AND secret = ?4 AND confirmed IS NULL
       AND (last_step IS NULL OR last_step < ?3)";
/// A new token; a (user, device) that exists changes nothing (0 rows).
pub const INSERT_TOKEN: &str = r#"INSERT INTO tokens
         ("user", device, kind, secret, algorithm, digits, period, created, confirmed, last_step,
          disabled, expires, replaces)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
     ON CONFLICT ("user", device) DO NOTHING"#;
/// Disables (a time) or enables (NULL) every token of a user.
pub const SET_DISABLED_USER: &str = r#"UPDATE tokens SET disabled = ?2
     WHERE "user" = ?1 AND ((CAST(?2 AS BIGINT) IS NULL) <> (disabled IS NULL))"#;
/// Disables (a time) or enables (NULL) one device of a user.
pub const SET_DISABLED_DEVICE: &str = r#"UPDATE tokens SET disabled = ?3
     WHERE "user" = ?1 AND device = ?2 AND ((CAST(?3 AS BIGINT) IS NULL) <> (disabled IS NULL))"#;
/// Pending tokens made before `?1`, removed; their user and device.
pub const PRUNE_PENDING: &str = r#"DELETE FROM tokens WHERE confirmed IS NULL AND created < ?1
     RETURNING "user", device"#;
/// The recovery codes of a user left without a token (they came with it).
pub const DELETE_ORPHAN_RECOVERY: &str = r#"DELETE FROM recovery_codes WHERE "user" = ?1
     AND NOT EXISTS (SELECT 1 FROM tokens WHERE tokens."user" = ?1)"#;
/// What an administrator set on the tokens a replacement replaces: the
/// user's confirmed tokens (`?2` NULL) or one device.
pub const STOPS_OF_USER: &str = r#"SELECT disabled, expires FROM tokens
     WHERE "user" = ?1 AND confirmed IS NOT NULL AND replaces IS NULL"#;
pub const STOPS_OF_DEVICE: &str = r#"SELECT disabled, expires FROM tokens
     WHERE "user" = ?1 AND device = ?2 AND confirmed IS NOT NULL"#;
/// The device name a pending replacement takes when confirmed.
pub const REPLACES: &str = r#"SELECT "user", replaces FROM tokens WHERE id = ?1"#;
/// A user's earlier pending replacement (a second `reset` drops the first).
pub const DELETE_PENDING_REPLACEMENT: &str = r#"DELETE FROM tokens
     WHERE "user" = ?1 AND replaces IS NOT NULL AND confirmed IS NULL"#;
/// The user's tokens but one (a confirmed replacement's predecessors).
pub const DELETE_OTHER_TOKENS: &str = r#"DELETE FROM tokens WHERE "user" = ?1 AND id <> ?2"#;
/// A confirmed replacement takes its device name, with its key sealed
/// again for that name (`?3`).
pub const TAKE_DEVICE_NAME: &str =
    "UPDATE tokens SET device = ?2, replaces = NULL, secret = ?3 WHERE id = ?1";
/// A user's device, answering the row as it was when deleted (a claim
/// that committed meanwhile included), for `SqlStore::delete_passing_on`.
pub const DELETE_DEVICE_RETURNING: &str =
    r#"DELETE FROM tokens WHERE "user" = ?1 AND device = ?2 RETURNING id, last_step"#;
/// A step or counter a device about to go used, kept on a twin of it
/// (`SqlStore::delete_passing_on`): only ever forward.
pub const RAISE_USED_STEP: &str =
    "UPDATE tokens SET last_step = ?2 WHERE id = ?1 AND (last_step IS NULL OR last_step < ?2)";
/// `totp remove-device`: one statement, so two racing removals cannot take
/// the user's last two usable devices: a row goes only while another
/// confirmed, not disabled token of the user remains (`?3`: now, for
/// expiry).
pub const DELETE_DEVICE_UNLESS_LAST: &str = r#"DELETE FROM tokens WHERE "user" = ?1 AND device = ?2 AND EXISTS (SELECT 1 FROM tokens AS other WHERE other."user" = ?1 AND other.device <> ?2 AND other.confirmed IS NOT NULL AND other.disabled IS NULL AND (other.expires IS NULL OR other.expires > ?3)) RETURNING id, last_step"#;
pub const ALL_KEYS: &str = r#"SELECT id, "user", device, secret FROM tokens ORDER BY id"#;
/// The oldest key stored sealed, if any (`?1`: the sealed format's first
/// four bytes, `seal::MAGIC`), with its row's user and device: a store
/// that recorded no key file (`SqlStore::check_sealing`) but holds sealed
/// keys takes no plain key, and records a key file only if that key opens
/// with it. The oldest token first, so that a row the checking transaction
/// just wrote (the newest id) answers only when no other is sealed.
pub const ONE_SEALED_KEY: &str = r#"SELECT "user", device, secret FROM (
         SELECT 0 AS kept, id, "user", device, secret FROM tokens
         WHERE substr(secret, 1, 4) = ?1
         UNION ALL SELECT 1, id, "user", device, secret FROM retired_keys
         WHERE substr(secret, 1, 4) = ?1) AS sealed
     ORDER BY kept, id LIMIT 1"#;
pub const SET_KEY: &str = "UPDATE tokens SET secret = ?2 WHERE id = ?1";

// Deleted tokens' used steps (`retired_keys`, written by the schema's
// `tokens_retire` trigger on every delete of a used token, with the key as
// the token held it; `SqlStore::mark_retired` then replaces the key by its
// mark, `otp::key_mark`, in the deleting transaction: `secret` is then
// empty and `key_mark` set).

/// A user's deleted keys not yet past their time (`?2`: now) in the shape
/// of `TOKENS_OF_USER` (their ids are `retired_keys` ids; `created` as
/// `confirmed`; no administrator's settings; the key empty once marked),
/// then `key_mark`, for the used step a key enrolled again counts from.
/// Read only: an enrollment takes no lock on `retired_keys` before it
/// writes its token (see `Hold::AllKeys`).
pub const RETIRED_KEYS_OF_USER: &str = r#"SELECT id, "user", device, kind, algorithm, digits,
     period, created, created, last_step, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
     CAST(NULL AS TEXT), secret, key_mark FROM retired_keys
     WHERE "user" = ?1 AND (keep_until IS NULL OR keep_until >= ?2)"#;
/// Every deleted key not past its time (`?1`: now) in that shape, and its
/// `keep_until`, for `dump`.
pub const ALL_RETIRED_KEYS: &str = r#"SELECT id, "user", device, kind, algorithm, digits,
     period, created, created, last_step, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT),
     CAST(NULL AS TEXT), secret, key_mark, keep_until FROM retired_keys
     WHERE keep_until IS NULL OR keep_until >= ?1 ORDER BY id"#;
/// A user's deleted keys past their time (`?2`: now), in a transaction
/// that holds the user (no other user's records are locked).
pub const PRUNE_RETIRED_KEYS_OF_USER: &str =
    r#"DELETE FROM retired_keys WHERE "user" = ?1 AND keep_until < ?2"#;
/// Every deleted key past its time (`?1`: now): `totpctl prune`, `rekey`,
/// each in a transaction of its own or holding every key.
pub const PRUNE_RETIRED_KEYS: &str = "DELETE FROM retired_keys WHERE keep_until < ?1";
/// A deleted key carried over by `load`: its mark, never the key.
pub const INSERT_RETIRED_KEY: &str = r#"INSERT INTO retired_keys
     ("user", device, kind, secret, key_mark, algorithm, digits, period, created, last_step,
      keep_until)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"#;
/// Deleted keys still held as keys (not yet marked), for `rekey`.
pub const ALL_RETIRED_SECRETS: &str =
    r#"SELECT id, "user", device, secret FROM retired_keys WHERE length(secret) > 0 ORDER BY id"#;
pub const SET_RETIRED_KEY: &str = "UPDATE retired_keys SET secret = ?2 WHERE id = ?1";
/// A user's deleted keys still held as keys: id, user, device, algorithm,
/// key, in id order (as every marking takes them).
pub const RETIRED_SECRETS_OF_USER: &str = r#"SELECT id, "user", device, algorithm, secret
     FROM retired_keys WHERE "user" = ?1 AND length(secret) > 0 ORDER BY id"#;
/// Every deleted key still held as a key (`totpctl prune`), in that shape.
pub const RETIRED_SECRETS: &str = r#"SELECT id, "user", device, algorithm, secret
     FROM retired_keys WHERE length(secret) > 0 ORDER BY id"#;
/// A deleted key replaced by its mark (`?2`) and `?3`, the empty key.
pub const MARK_RETIRED_KEY: &str =
    "UPDATE retired_keys SET key_mark = ?2, secret = ?3 WHERE id = ?1";

/// Every token of a user (`totp replace`'s confirmed new phone retires
/// them all in its own transaction).
pub const DELETE_TOKENS_OF_USER: &str = r#"DELETE FROM tokens WHERE "user" = ?1"#;
/// Everything the store holds about a user, tokens first (its row count
/// is what `delete` reports). Grace entries and staged grants go with the
/// user: nothing granted outlives the tokens it was granted for.
pub const DELETE_USER: [&str; 8] = [
    DELETE_TOKENS_OF_USER,
    DELETE_RECOVERY_OF_USER,
    CLOSE_WINDOW,
    DELETE_FAILURES_OF_USER,
    DELETE_GUESSES_OF_USER,
    DELETE_GRACE_OF_USER,
    DELETE_KEY_GRACE_OF_USER,
    r#"DELETE FROM staged WHERE "user" = ?1"#,
];

// Recovery codes.

pub const DELETE_RECOVERY_OF_USER: &str = r#"DELETE FROM recovery_codes WHERE "user" = ?1"#;
pub const INSERT_RECOVERY: &str = r#"INSERT INTO recovery_codes ("user", lookup, hash, created, used)
     VALUES (?1, ?2, ?3, ?4, ?5)"#;
pub const RECOVERY_CANDIDATES: &str = r#"SELECT id, hash FROM recovery_codes
     WHERE "user" = ?1 AND lookup = ?2 AND used IS NULL ORDER BY id"#;
/// A recovery code is used once: the `used IS NULL` decides between racers.
/// Also only while the user has a token that logs in at `?2` (confirmed,
/// not disabled, not expired), in the same write: a `disable` racing a
/// recovery-code login wins or loses whole, as it does against a code.
/// The code is named by its id and the hash it was checked against (`?3`).
pub const BURN_RECOVERY: &str = r#"UPDATE recovery_codes SET used = ?2
     WHERE id = ?1 AND hash = ?3 AND used IS NULL
       AND EXISTS (SELECT 1 FROM tokens WHERE tokens."user" = recovery_codes."user"
                   AND confirmed IS NOT NULL AND disabled IS NULL
                   AND (expires IS NULL OR expires > ?2))"#;
pub const RECOVERY_COUNT: &str = r#"SELECT COUNT(CASE WHEN used IS NULL THEN 1 END),
            COUNT(CASE WHEN used IS NOT NULL THEN 1 END)
     FROM recovery_codes WHERE "user" = ?1"#;
pub const ALL_RECOVERY: &str =
    r#"SELECT "user", lookup, hash, created, used FROM recovery_codes ORDER BY id"#;

// Enroll windows.

pub const OPEN_WINDOW: &str = r#"INSERT INTO enroll_windows ("user", until, opened_by) VALUES (?1, ?2, ?3)
     ON CONFLICT ("user") DO UPDATE SET until = excluded.until, opened_by = excluded.opened_by"#;
pub const WINDOW_UNTIL: &str =
    r#"SELECT until FROM enroll_windows WHERE "user" = ?1 AND until > ?2"#;
pub const CLOSE_WINDOW: &str = r#"DELETE FROM enroll_windows WHERE "user" = ?1"#;
pub const ALL_WINDOWS: &str =
    r#"SELECT "user", until, opened_by FROM enroll_windows ORDER BY "user""#;

// Failed codes: `failures` is the back-off of one (user, source), `guesses`
// the user's failures for the ceiling (see `ratelimit::Failures::new`).

/// The source's back-off row (count, last) and each of the user's
/// failures (NULL, at), in no particular order: the guess reservation
/// reads them under the user's hold and counts in Rust (`ratelimit`'s
/// window up to the latest failure), which SQLite prepares in well under
/// half the instructions of the same counts as aggregates over a join.
pub const FAILURE_ROWS: &str = r#"SELECT count, last FROM failures WHERE "user" = ?1 AND rhost = ?2
     UNION ALL SELECT NULL, at FROM guesses WHERE "user" = ?1"#;
pub const COUNT_SOURCE_FAILURE: &str = r#"INSERT INTO failures ("user", rhost, count, last) VALUES (?1, ?2, 1, ?3)
     ON CONFLICT ("user", rhost) DO UPDATE SET count = failures.count + 1, last = excluded.last"#;
/// `COUNT_SOURCE_FAILURE` when the reservation read the source's row
/// (0 rows if it went meanwhile: then the upsert runs).
pub const ADD_SOURCE_FAILURE: &str =
    r#"UPDATE failures SET count = count + 1, last = ?3 WHERE "user" = ?1 AND rhost = ?2"#;
/// `COUNT_SOURCE_FAILURE` when the reservation read no row for the source
/// (0 rows if one came meanwhile: then the upsert runs).
pub const FIRST_SOURCE_FAILURE: &str = r#"INSERT INTO failures ("user", rhost, count, last) VALUES (?1, ?2, 1, ?3)
     ON CONFLICT DO NOTHING"#;
/// Failures too old to matter to the ceiling (two windows back).
pub const DROP_OLD_GUESSES: &str = r#"DELETE FROM guesses WHERE "user" = ?1 AND at <= ?2"#;
pub const INSERT_GUESS: &str = r#"INSERT INTO guesses ("user", at) VALUES (?1, ?2)"#;
/// The guess of a right code, given back: one row of that time.
pub const RELEASE_GUESS: &str = r#"DELETE FROM guesses WHERE id =
     (SELECT id FROM guesses WHERE "user" = ?1 AND at = ?2 LIMIT 1)"#;
pub const CLEAR_SOURCE: &str = r#"DELETE FROM failures WHERE "user" = ?1 AND rhost = ?2"#;
/// What a source's failure counted and then given back leaves on its row
/// (`SqlStore::settle_given_back`): the time, not the count.
pub const TOUCH_SOURCE: &str =
    r#"UPDATE failures SET last = ?3 WHERE "user" = ?1 AND rhost = ?2 AND count > 0"#;
pub const UNCOUNT_SOURCE_FAILURE: &str =
    r#"UPDATE failures SET count = count - 1 WHERE "user" = ?1 AND rhost = ?2"#;
pub const DROP_EMPTY_SOURCE: &str =
    r#"DELETE FROM failures WHERE "user" = ?1 AND rhost = ?2 AND count <= 0"#;
pub const DELETE_GUESSES_OF_USER: &str = r#"DELETE FROM guesses WHERE "user" = ?1"#;
pub const DELETE_FAILURES_OF_USER: &str = r#"DELETE FROM failures WHERE "user" = ?1"#;
pub const FAILURE_SOURCES: &str =
    r#"SELECT rhost, count, last FROM failures WHERE "user" = ?1 ORDER BY last DESC"#;
pub const ALL_FAILURES: &str =
    r#"SELECT "user", rhost, count, last FROM failures ORDER BY "user", rhost"#;
pub const INSERT_FAILURE: &str =
    r#"INSERT INTO failures ("user", rhost, count, last) VALUES (?1, ?2, ?3, ?4)"#;
/// `?3` guesses of `?1` at `?2` (a migrated failure count).
pub const INSERT_GUESSES: &str = r#"WITH RECURSIVE n(i) AS
         (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < CAST(?3 AS BIGINT))
     INSERT INTO guesses ("user", at) SELECT CAST(?1 AS TEXT), CAST(?2 AS BIGINT) FROM n"#;

// Grace periods.

pub const GRANT_GRACE: &str = r#"INSERT INTO grace ("user", ip, until) VALUES (?1, ?2, ?3)
     ON CONFLICT ("user", ip) DO UPDATE SET until = excluded.until"#;
pub const GRACE_UNTIL: &str =
    r#"SELECT until FROM grace WHERE "user" = ?1 AND ip = ?2 AND until > ?3"#;
pub const DELETE_GRACE_OF_USER: &str = r#"DELETE FROM grace WHERE "user" = ?1"#;
/// A user's grace periods still running at `?2`, the longest first.
pub const GRACES_OF_USER: &str =
    r#"SELECT ip, until FROM grace WHERE "user" = ?1 AND until > ?2 ORDER BY until DESC, ip"#;

// Grace periods per SSH key (`grace_key=`), by fingerprint.

pub const GRANT_KEY_GRACE: &str = r#"INSERT INTO key_grace ("user", fingerprint, until) VALUES (?1, ?2, ?3)
     ON CONFLICT ("user", fingerprint) DO UPDATE SET until = excluded.until"#;
pub const KEY_GRACE_UNTIL: &str =
    r#"SELECT until FROM key_grace WHERE "user" = ?1 AND fingerprint = ?2 AND until > ?3"#;
/// A user's key graces running at `?2`, latest end first.
pub const KEY_GRACES_OF_USER: &str = r#"SELECT fingerprint, until FROM key_grace
     WHERE "user" = ?1 AND until > ?2 ORDER BY until DESC, fingerprint"#;
pub const DELETE_KEY_GRACE_OF_USER: &str = r#"DELETE FROM key_grace WHERE "user" = ?1"#;
/// Graces a login staged and has not committed yet: ended with the stored
/// ones, or a login already past its code would bring them back.
pub const DELETE_STAGED_GRACE_OF_USER: &str =
    r#"DELETE FROM staged WHERE "user" = ?1 AND what = 'grace'"#;
/// A staged grace that names this key (the address grace staged with it
/// goes too: ending less than asked is the one thing not allowed).
pub const DELETE_STAGED_KEY_GRACE: &str =
    r#"DELETE FROM staged WHERE "user" = ?1 AND what = 'grace' AND fingerprint = ?2"#;
/// Everything that ends a user's graces (`forget`, `unlock`, a reset, a
/// replacement, a removed device): address and key graces, stored and
/// staged. The first two counts are what `forget` reports.
pub const END_GRACES_OF_USER: [&str; 3] = [
    DELETE_GRACE_OF_USER,
    DELETE_KEY_GRACE_OF_USER,
    DELETE_STAGED_GRACE_OF_USER,
];
pub const DELETE_KEY_GRACE: &str =
    r#"DELETE FROM key_grace WHERE "user" = ?1 AND fingerprint = ?2"#;

// Automation grants (`totpctl allow-automation`): kept after they end
// (revoked or expired) as the record of what was allowed.

macro_rules! automation_columns {
    () => {
        r#"id, "user", fingerprint, networks, until, reason, created, created_by, revoked"#
    };
}

pub const INSERT_AUTOMATION: &str = r#"INSERT INTO automation
         ("user", fingerprint, networks, until, reason, created, created_by)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id"#;
/// Every grant for one key of one user, in force or not (the login logs a
/// grant that has ended).
pub const AUTOMATION_FOR_KEY: &str = concat!(
    "SELECT ",
    automation_columns!(),
    r#" FROM automation WHERE "user" = ?1 AND fingerprint = ?2 ORDER BY id"#
);
pub const ALL_AUTOMATION: &str = concat!(
    "SELECT ",
    automation_columns!(),
    " FROM automation ORDER BY id"
);
pub const AUTOMATION_OF_USER: &str = concat!(
    "SELECT ",
    automation_columns!(),
    r#" FROM automation WHERE "user" = ?1 ORDER BY id"#
);
/// Ends one grant now (once: a revoked grant stays as it was revoked).
pub const REVOKE_AUTOMATION: &str = concat!(
    "UPDATE automation SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL RETURNING ",
    automation_columns!()
);
pub const REVOKE_AUTOMATION_OF_USER: &str =
    r#"UPDATE automation SET revoked = ?2 WHERE "user" = ?1 AND revoked IS NULL"#;

// Grants staged until the whole auth stack has succeeded.

pub const DROP_EXPIRED_STAGED: &str = "DELETE FROM staged WHERE expires <= ?1";
pub const STAGE_ENROLL: &str = r#"INSERT INTO staged (nonce, "user", expires, what, device, kind, secret,
         algorithm, digits, period, created, step, recovery)
     VALUES (?1, ?2, ?3, 'enroll', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"#;
/// An address grace (`ip`, `until`), a key grace (`fingerprint`,
/// `key_until`), or both, from one login.
pub const STAGE_GRACE: &str = r#"INSERT INTO staged (nonce, "user", expires, what, ip, until,
         fingerprint, key_until)
     VALUES (?1, ?2, ?3, 'grace', ?4, ?5, ?6, ?7)"#;
/// Takes a staged row: read and removed in one statement, so it is taken
/// once. The first thirteen columns have the shape of `token_columns` (id
/// 0, `created` as `confirmed`, the confirming step as `last_step`, no
/// administrator's settings).
pub const TAKE_STAGED: &str = r#"DELETE FROM staged WHERE nonce = ?1
     RETURNING CAST(0 AS BIGINT), "user", device, kind, algorithm, digits, period, created,
               created, step, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT), CAST(NULL AS TEXT),
               secret, what, ip, until, expires, recovery, fingerprint, key_until"#;

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[&str] = &[
        TOKENS_OF_USER,
        ALL_TOKENS_WITH_KEYS,
        ALL_TOKENS,
        COUNT_TOKENS,
        COUNT_TOKENS_OF_USER,
        CLAIM_STEP,
        CLAIM_AND_SETTLE,
        TOKEN_KEYS_OF_USER,
        CONFIRM,
        INSERT_TOKEN,
        RAISE_USED_STEP,
        DELETE_DEVICE_RETURNING,
        DELETE_DEVICE_UNLESS_LAST,
        ALL_KEYS,
        ONE_SEALED_KEY,
        SET_KEY,
        RETIRED_KEYS_OF_USER,
        ALL_RETIRED_KEYS,
        PRUNE_RETIRED_KEYS_OF_USER,
        PRUNE_RETIRED_KEYS,
        INSERT_RETIRED_KEY,
        ALL_RETIRED_SECRETS,
        SET_RETIRED_KEY,
        DELETE_RECOVERY_OF_USER,
        INSERT_RECOVERY,
        RECOVERY_CANDIDATES,
        BURN_RECOVERY,
        RECOVERY_COUNT,
        ALL_RECOVERY,
        OPEN_WINDOW,
        WINDOW_UNTIL,
        CLOSE_WINDOW,
        ALL_WINDOWS,
        FAILURE_ROWS,
        COUNT_SOURCE_FAILURE,
        ADD_SOURCE_FAILURE,
        FIRST_SOURCE_FAILURE,
        DROP_OLD_GUESSES,
        INSERT_GUESS,
        RELEASE_GUESS,
        CLEAR_SOURCE,
        TOUCH_SOURCE,
        UNCOUNT_SOURCE_FAILURE,
        DROP_EMPTY_SOURCE,
        DELETE_GUESSES_OF_USER,
        DELETE_FAILURES_OF_USER,
        FAILURE_SOURCES,
        ALL_FAILURES,
        INSERT_FAILURE,
        INSERT_GUESSES,
        GRANT_GRACE,
        GRACE_UNTIL,
        DELETE_GRACE_OF_USER,
        GRACES_OF_USER,
        GRANT_KEY_GRACE,
        KEY_GRACE_UNTIL,
        KEY_GRACES_OF_USER,
        DELETE_KEY_GRACE_OF_USER,
        DELETE_STAGED_GRACE_OF_USER,
        DELETE_STAGED_KEY_GRACE,
        DELETE_KEY_GRACE,
        INSERT_AUTOMATION,
        AUTOMATION_FOR_KEY,
        ALL_AUTOMATION,
        AUTOMATION_OF_USER,
        REVOKE_AUTOMATION,
        REVOKE_AUTOMATION_OF_USER,
        DROP_EXPIRED_STAGED,
        STAGE_ENROLL,
        STAGE_GRACE,
        TAKE_STAGED,
        SET_DISABLED_USER,
        SET_DISABLED_DEVICE,
        PRUNE_PENDING,
        REPLACES,
        DELETE_OTHER_TOKENS,
        DELETE_TOKENS_OF_USER,
        TAKE_DEVICE_NAME,
        DELETE_PENDING_REPLACEMENT,
        DELETE_ORPHAN_RECOVERY,
        STOPS_OF_USER,
        STOPS_OF_DEVICE,
    ];

    /// What the PostgreSQL driver's rewrite relies on: `?` only as a
    /// numbered placeholder, no `$`, and `user` never bare (in PostgreSQL
    /// a bare `user` is the current role's name, not the column).
    #[test]
    fn statements_stay_in_the_shared_dialect() {
        for sql in ALL.iter().chain(DELETE_USER.iter()) {
            assert!(!sql.contains('$'), "{sql}");
            let bytes = sql.as_bytes();
            for (i, b) in bytes.iter().enumerate() {
                if *b == b'?' {
                    assert!(
                        bytes.get(i + 1).is_some_and(u8::is_ascii_digit),
                        "a bare ? in {sql}"
                    );
                }
            }
            let words: Vec<&str> = sql
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '"'))
                .collect();
            assert!(!words.contains(&"user"), "bare user in {sql}");
        }
    }
}
