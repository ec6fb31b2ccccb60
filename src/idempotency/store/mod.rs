//! The `idempotency_keys` table. One implementation per backend behind
//! [`IdempotencyStore`]; the SQL text is the same on both (the table keeps
//! timestamps as text, see its migration), so it is here.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::db::{Database, StoreError};
use crate::timestamp::Timestamp;

/// A remembered key.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredKey {
    /// The fingerprint of the first request's body.
    pub request_sha256: String,
    /// The answer's status, once answered.
    pub status_code: Option<i64>,
    /// The answer's body, once answered.
    pub response_body: Option<String>,
    /// When the key was claimed (RFC 3339 text: compared as stored).
    pub created_at: String,
}

/// Reads and writes `idempotency_keys`. Every statement runs where writes
/// land (SQLite: the writer): a claim is read right after it is written.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + std::fmt::Debug {
    /// Records a claim of `key`; false when the key is already there.
    async fn insert_claim(
        &self,
        clinician_id: &str,
        key: &str,
        fingerprint: &str,
        now: &Timestamp,
    ) -> Result<bool, StoreError>;

    /// The key's record, if any.
    async fn find(&self, clinician_id: &str, key: &str) -> Result<Option<StoredKey>, StoreError>;

    /// Takes over an unanswered claim made at `claimed_at` (as stored); false
    /// when someone else changed it meanwhile.
    async fn take_over(
        &self,
        clinician_id: &str,
        key: &str,
        claimed_at: &str,
        now: &Timestamp,
    ) -> Result<bool, StoreError>;

    /// Stores the answer of a claimed key.
    async fn complete(
        &self,
        clinician_id: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError>;

    /// Forgets an unanswered claim.
    async fn release(&self, clinician_id: &str, key: &str) -> Result<(), StoreError>;

    /// Forgets keys claimed before `cutoff`; returns how many.
    async fn forget_before(&self, cutoff: &Timestamp) -> Result<u64, StoreError>;
}

/// The store for `db`.
pub fn open(db: &Database) -> Arc<dyn IdempotencyStore> {
    match db {
        Database::Sqlite(db) => Arc::new(sqlite::SqliteIdempotencyKeys::new(db.clone())),
        Database::Postgres(db) => Arc::new(postgres::PgIdempotencyKeys::new(db.clone())),
    }
}

/// The statements, in the `$n` parameter style both backends accept.
mod sql {
    pub const INSERT_CLAIM: &str = "INSERT INTO idempotency_keys \
        (clinician_id, key, request_sha256, created_at) VALUES ($1, $2, $3, $4) \
        ON CONFLICT (clinician_id, key) DO NOTHING";
    pub const FIND: &str = "SELECT request_sha256, CAST(status_code AS BIGINT) AS status_code, \
        response_body, created_at FROM idempotency_keys WHERE clinician_id = $1 AND key = $2";
    pub const TAKE_OVER: &str = "UPDATE idempotency_keys SET created_at = $3 \
        WHERE clinician_id = $1 AND key = $2 AND status_code IS NULL AND created_at = $4";
    pub const COMPLETE: &str = "UPDATE idempotency_keys SET status_code = $3, \
        response_body = $4 WHERE clinician_id = $1 AND key = $2";
    pub const RELEASE: &str = "DELETE FROM idempotency_keys \
        WHERE clinician_id = $1 AND key = $2 AND status_code IS NULL";
    pub const FORGET_BEFORE: &str = "DELETE FROM idempotency_keys WHERE created_at < $1";
}
