//! `users`, `api_tokens` and `sessions` on PostgreSQL.

use crate::db::postgres::PgDatabase;

/// The three tables in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgAuthStore {
    db: PgDatabase,
}

impl PgAuthStore {
    /// The store over `db`.
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }
}

super::stores!(PgAuthStore, write: pool, read: pool);
