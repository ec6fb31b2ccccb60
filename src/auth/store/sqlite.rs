//! `users`, `api_tokens` and `sessions` on SQLite: writes on the writer, reads on the
//! readers (a token created by the CLI is seen by the next lookup: the
//! readers see every committed write).

use crate::db::SqliteDatabase;

/// The three tables in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteAuthStore {
    db: SqliteDatabase,
}

impl SqliteAuthStore {
    /// The store over `db`.
    pub fn new(db: SqliteDatabase) -> Self {
        Self { db }
    }
}

super::stores!(SqliteAuthStore, write: writer, read: readers);
