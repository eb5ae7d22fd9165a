//! The seam between the statements (`sql`, written once) and a database.
//!
//! A backend implements `Driver`: run a statement, read rows, open and end a
//! transaction, and say how it keeps commits. Everything the store does is
//! written once on top of it (`SqlStore`); a backend keeps only what is
//! truly its own: connecting, schema creation and migration, durability
//! settings and locking.
//!
//! Statements use SQLite's numbered placeholders (`?1`, `?2`, …) and
//! double-quoted identifiers; a backend with another placeholder syntax
//! rewrites them (`placeholders_as_dollars`).

use zeroize::Zeroizing;

use super::StoreError;

/// One statement parameter.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Int(i64),
    /// An integer column that may be NULL.
    OptInt(Option<i64>),
    Text(&'a str),
    /// A text column that may be NULL.
    OptText(Option<&'a str>),
    Blob(&'a [u8]),
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Param::OptText(v)
    }
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}

impl From<u32> for Param<'_> {
    fn from(v: u32) -> Self {
        Param::Int(i64::from(v))
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        Param::OptInt(v)
    }
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Param<'a> {
    fn from(v: &'a [u8]) -> Self {
        Param::Blob(v)
    }
}

/// `params![a, b, …]`: a statement's parameters, each converted with `Param::from`.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        &[$($crate::store::driver::Param::from($value)),*]
    };
}
pub(crate) use params;

/// One value read from a row. Blobs are token keys: wiped when dropped.
#[derive(Debug)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Zeroizing<Vec<u8>>),
    /// A value of a type no column of the schema has (every reader refuses it).
    Unsupported(&'static str),
}

/// One result row, read by column index.
#[derive(Debug)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, column: usize) -> Result<&Value, StoreError> {
        self.0.get(column).ok_or(StoreError::Column {
            column,
            expected: "a column",
        })
    }

    fn mismatch(column: usize, expected: &'static str) -> StoreError {
        StoreError::Column { column, expected }
    }

    pub fn int(&self, column: usize) -> Result<i64, StoreError> {
        match self.at(column)? {
            Value::Int(v) => Ok(*v),
            _ => Err(Self::mismatch(column, "an integer")),
        }
    }

    pub fn opt_int(&self, column: usize) -> Result<Option<i64>, StoreError> {
        match self.at(column)? {
            Value::Int(v) => Ok(Some(*v)),
            Value::Null => Ok(None),
            _ => Err(Self::mismatch(column, "an integer or NULL")),
        }
    }

    pub fn text(&self, column: usize) -> Result<String, StoreError> {
        match self.at(column)? {
            Value::Text(v) => Ok(v.clone()),
            _ => Err(Self::mismatch(column, "text")),
        }
    }

    pub fn opt_text(&self, column: usize) -> Result<Option<String>, StoreError> {
        match self.at(column)? {
            Value::Text(v) => Ok(Some(v.clone())),
            Value::Null => Ok(None),
            _ => Err(Self::mismatch(column, "text or NULL")),
        }
    }

    /// Takes the blob out of the row if it is not NULL.
    pub fn take_opt_blob(
        &mut self,
        column: usize,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        match self.0.get_mut(column) {
            Some(Value::Null) => Ok(None),
            Some(Value::Blob(v)) => Ok(Some(std::mem::take(v))),
            _ => Err(Self::mismatch(column, "a blob or NULL")),
        }
    }

    /// Takes the blob out of the row (it is a key: no copy is left behind).
    pub fn take_blob(&mut self, column: usize) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        match self.0.get_mut(column) {
            Some(Value::Blob(v)) => Ok(std::mem::take(v)),
            _ => Err(Self::mismatch(column, "a blob")),
        }
    }
}

/// What a write transaction holds against every other writer while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold<'a> {
    /// Only the rows it changes (each statement's own row locks).
    Rows,
    /// Like `Rows`, for a write whose loss in a crash only makes the store
    /// stricter (a right code's guess given back: lost, it stays counted as
    /// a failure). PostgreSQL commits it without waiting for the WAL flush
    /// (`SET LOCAL synchronous_commit = off`); the SQLite login connection
    /// commits every such write lazily anyway (`synchronous=NORMAL`).
    RowsLazily,
    /// Everything one user's decision of this kind reads: no other
    /// transaction holding the same (user, purpose) runs at the same time,
    /// on any node of a pool. Reads inside see every commit before it.
    User(&'a str, Purpose),
    /// A consistent read-only view of the whole store (`totpctl migrate`).
    Snapshot,
    /// Every stored key held still (`totpctl rekey`): no token or deleted
    /// key is added, changed or removed by anyone else until it ends, so
    /// what it read is all there is when it commits. Logins' claims wait
    /// for it (PostgreSQL: `tokens` and `retired_keys` locked EXCLUSIVE,
    /// reads go on; SQLite: every writer waits anyway).
    AllKeys,
}

/// Which per-user decision a `Hold::User` serialises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Enrolling the first token (enrollment at login).
    Enrollment = 0,
    /// Reserving a guess against the rate limits.
    Guesses = 1,
}

/// What a backend does; see the module documentation.
pub trait Driver {
    /// Runs a statement; returns the number of rows it changed.
    fn execute(&self, sql: &'static str, params: &[Param<'_>]) -> Result<u64, StoreError>;
    /// Runs a write whose row count the caller does not need. Inside a
    /// transaction a backend may send it with the next statement that needs
    /// an answer, or with the commit; an error of it then comes back from
    /// that statement or that commit (which never succeeds after a failed
    /// write). Outside a transaction it runs at once.
    fn execute_later(&self, sql: &'static str, params: &[Param<'_>]) -> Result<(), StoreError> {
        self.execute(sql, params).map(|_| ())
    }
    /// Whether a write transaction keeps every other writer out until it
    /// ends (SQLite's `BEGIN IMMEDIATE`), so what it read stays true. Not
    /// so on PostgreSQL, where `Hold::User` holds out only the same hold.
    fn holds_out_every_writer(&self) -> bool {
        false
    }
    /// Runs a transaction's last statement and commits it: its row count,
    /// only once the commit is done. The transaction is over either way
    /// (after an error, rolled back). A backend may send the statement and
    /// the `COMMIT` together (one round trip).
    fn execute_and_commit(
        &self,
        sql: &'static str,
        params: &[Param<'_>],
    ) -> Result<u64, StoreError> {
        let changed = self.execute(sql, params)?;
        self.commit()?;
        Ok(changed)
    }
    /// Whether one statement's `WITH` may hold writes that read what
    /// another of them returned (PostgreSQL), so a write and what depends
    /// on its outcome can go out as one statement.
    fn writes_in_with(&self) -> bool {
        false
    }
    /// Runs a statement and returns every row.
    fn query(&self, sql: &'static str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError>;
    /// Starts a transaction holding `hold`.
    fn begin(&self, hold: Hold<'_>) -> Result<(), StoreError>;
    fn commit(&self) -> Result<(), StoreError>;
    /// Ends a failed transaction (errors are ignored: the first error is
    /// the one that is reported, and an unfinished transaction is rolled
    /// back by the database when the connection closes anyway).
    fn rollback(&self);
    /// Runs `work` so that its writes are on disk before it returns, for
    /// what never expires (an HOTP counter, a recovery code, an enrollment).
    fn durably<T>(&self, work: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError>;
    /// Whether a TOTP step claim is on disk when it returns (if not, the
    /// login path fences the steps of before the last boot).
    fn claims_durable(&self) -> bool;
    /// The schema version of the store (0: no schema yet).
    fn schema_version(&self) -> Result<i64, StoreError>;
    /// The id of the key file the store's keys are sealed with
    /// (`seal::Sealer::id`), 0 when none is recorded; read in the open
    /// transaction.
    fn sealing_id(&self) -> Result<i64, StoreError>;
    /// Records `id` as the key file the store's keys are sealed with, in
    /// the open transaction (`rekey`: over any recorded one).
    fn set_sealing_id(&self, id: i64) -> Result<(), StoreError>;
    /// Records `id` unless a key file is recorded already, in the open
    /// transaction; the one recorded after. Two first sealed writes at
    /// once record one key file: the other reads it (found by an attack:
    /// on PostgreSQL both recorded theirs, the second over the first).
    fn record_sealing_id(&self, id: i64) -> Result<i64, StoreError>;
    /// The store's name in messages (a path or a URL without password).
    fn name(&self) -> &str;
}

/// `?N` placeholders as `$N` (PostgreSQL). Statements are this crate's
/// own constants: no string literal in them holds a `?`.
pub fn placeholders_as_dollars(sql: &str) -> String {
    sql.replace('?', "$")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_by_type_and_blobs_leave_nothing() {
        let mut row = Row(vec![
            Value::Int(7),
            Value::Null,
            Value::Text("bob".into()),
            Value::Blob(Zeroizing::new(vec![1, 2])),
        ]);
        assert_eq!(row.int(0).unwrap(), 7);
        assert_eq!(row.opt_int(1).unwrap(), None);
        assert_eq!(row.opt_text(1).unwrap(), None);
        assert_eq!(row.text(2).unwrap(), "bob");
        assert!(row.int(2).is_err());
        assert!(row.text(9).is_err());
        assert_eq!(row.take_blob(3).unwrap().as_slice(), &[1, 2]);
        assert!(matches!(&row.0[3], Value::Blob(b) if b.is_empty()));
    }

    #[test]
    fn placeholders_are_renumbered_for_postgres() {
        assert_eq!(
            placeholders_as_dollars(r#"UPDATE t SET a = ?2 WHERE "user" = ?1"#),
            r#"UPDATE t SET a = $2 WHERE "user" = $1"#
        );
    }
}
