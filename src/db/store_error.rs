//! What a table's store answers when the database refuses: one error type for
//! every store, so that callers tell "busy, retry", "full", "duplicate" and
//! "not found" apart the same way whichever table they use.

use std::sync::Arc;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such row; says what was looked for (`"Recording not found"`).
    #[error("{0}")]
    NotFound(&'static str),
    /// The database is locked by someone else for longer than the busy timeout,
    /// or no connection became free in time.
    #[error("database busy: {0}")]
    Busy(sqlx::Error),
    /// The database has been closed (shutting down).
    #[error("database closed")]
    Closed,
    /// The storage is full (SQLite's SQLITE_FULL, PostgreSQL's disk_full):
    /// nothing was written; writes work again once space is freed.
    #[error("storage full: {0}")]
    DiskFull(sqlx::Error),
    /// A unique key is taken (e.g. a dictation's `local_storage_key`).
    #[error("duplicate key: {0}")]
    Duplicate(sqlx::Error),
    /// A stored row does not decode (hand-edited or corrupt data).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Any other database error.
    #[error(transparent)]
    Database(sqlx::Error),
    /// The shared transaction of a group commit failed (see `insert_queue`).
    #[error("group commit failed: {0}")]
    Batch(Arc<sqlx::Error>),
}

/// No free connection; SQLite's SQLITE_BUSY, SQLITE_LOCKED and their extended
/// codes; PostgreSQL's statement timeout, lock timeout, serialization failure
/// and deadlock: the request may succeed if retried.
fn is_busy(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            Some("5" | "6" | "261" | "517" | "57014" | "55P03" | "40001" | "40P01")
        ),
        _ => false,
    }
}

/// SQLite's SQLITE_FULL (13); PostgreSQL's disk_full (53100).
fn is_disk_full(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("13" | "53100")))
}

impl StoreError {
    /// Whether the same write may succeed later, unchanged: the database is
    /// busy, full, or unreachable for a while (not closed for good, and not
    /// refusing the data itself).
    pub fn is_temporary(&self) -> bool {
        match self {
            Self::Busy(_) | Self::DiskFull(_) => true,
            Self::Database(e) => matches!(
                e,
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_)
            ),
            Self::Batch(e) => matches!(e.as_ref(), sqlx::Error::Io(_)),
            Self::NotFound(_) | Self::Closed | Self::Duplicate(_) | Self::Corrupt(_) => false,
        }
    }

    /// The error each caller of a failed group commit receives.
    pub(crate) fn batch(err: &Arc<sqlx::Error>) -> Self {
        match err.as_ref() {
            sqlx::Error::PoolClosed => Self::Closed,
            e if is_busy(e) => Self::Busy(sqlx::Error::PoolTimedOut),
            e if is_disk_full(e) => Self::DiskFull(sqlx::Error::Protocol(e.to_string())),
            _ => Self::Batch(err.clone()),
        }
    }

    /// The same failure, for each of several callers that shared one
    /// transaction (sqlx's errors cannot be cloned).
    pub(crate) fn for_each_caller(&self) -> Self {
        match self {
            Self::NotFound(what) => Self::NotFound(what),
            Self::Busy(_) => Self::Busy(sqlx::Error::PoolTimedOut),
            Self::Closed => Self::Closed,
            Self::DiskFull(e) => Self::DiskFull(sqlx::Error::Protocol(e.to_string())),
            Self::Duplicate(e) => Self::Duplicate(sqlx::Error::Protocol(e.to_string())),
            Self::Corrupt(what) => Self::Corrupt(what.clone()),
            Self::Database(e) => Self::Batch(Arc::new(sqlx::Error::Protocol(e.to_string()))),
            Self::Batch(e) => Self::Batch(e.clone()),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => Self::NotFound("Not found"),
            sqlx::Error::PoolClosed => Self::Closed,
            e if is_busy(e) => Self::Busy(err),
            e if is_disk_full(e) => Self::DiskFull(err),
            sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
                Self::Duplicate(err)
            }
            _ => Self::Database(err),
        }
    }
}
