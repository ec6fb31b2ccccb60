//! `idempotency_keys` on SQLite.

use async_trait::async_trait;

use super::{IdempotencyStore, StoredKey, sql};
use crate::db::{SqliteDatabase, StoreError};
use crate::timestamp::Timestamp;

/// `idempotency_keys` in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteIdempotencyKeys {
    db: SqliteDatabase,
}

impl SqliteIdempotencyKeys {
    /// The store over `db`.
    pub fn new(db: SqliteDatabase) -> Self {
        Self { db }
    }
}

#[async_trait]
impl IdempotencyStore for SqliteIdempotencyKeys {
    #[tracing::instrument(name = "idempotency_keys.insert_claim", skip_all)]
    async fn insert_claim(
        &self,
        clinician_id: &str,
        key: &str,
        fingerprint: &str,
        now: &Timestamp,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(sql::INSERT_CLAIM)
            .bind(clinician_id)
            .bind(key)
            .bind(fingerprint)
            .bind(now.to_string())
            .execute(self.db.writer())
            .await?
            .rows_affected();
        Ok(inserted == 1)
    }

    #[tracing::instrument(name = "idempotency_keys.find", skip_all)]
    async fn find(&self, clinician_id: &str, key: &str) -> Result<Option<StoredKey>, StoreError> {
        Ok(sqlx::query_as(sql::FIND)
            .bind(clinician_id)
            .bind(key)
            .fetch_optional(self.db.writer())
            .await?)
    }

    #[tracing::instrument(name = "idempotency_keys.take_over", skip_all)]
    async fn take_over(
        &self,
        clinician_id: &str,
        key: &str,
        claimed_at: &str,
        now: &Timestamp,
    ) -> Result<bool, StoreError> {
        let taken = sqlx::query(sql::TAKE_OVER)
            .bind(clinician_id)
            .bind(key)
            .bind(now.to_string())
            .bind(claimed_at)
            .execute(self.db.writer())
            .await?
            .rows_affected();
        Ok(taken == 1)
    }

    #[tracing::instrument(name = "idempotency_keys.complete", skip_all)]
    async fn complete(
        &self,
        clinician_id: &str,
        key: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::COMPLETE)
            .bind(clinician_id)
            .bind(key)
            .bind(i64::from(status))
            .bind(body)
            .execute(self.db.writer())
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "idempotency_keys.release", skip_all)]
    async fn release(&self, clinician_id: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query(sql::RELEASE)
            .bind(clinician_id)
            .bind(key)
            .execute(self.db.writer())
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "idempotency_keys.forget_before", skip_all)]
    async fn forget_before(&self, cutoff: &Timestamp) -> Result<u64, StoreError> {
        Ok(sqlx::query(sql::FORGET_BEFORE)
            .bind(cutoff.to_string())
            .execute(self.db.writer())
            .await?
            .rows_affected())
    }
}
