//! `upload_sessions` on SQLite. Every statement runs on the writer, reads
//! included: a session is read right after it was written.

use async_trait::async_trait;
use uuid::Uuid;

use super::{NewSession, SessionRow, SessionStore, UploadSession, sql};
use crate::db::{SqliteDatabase, StoreError};
use crate::timestamp::Timestamp;

/// `upload_sessions` in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteSessions {
    db: SqliteDatabase,
}

impl SqliteSessions {
    /// The store over `db`.
    pub fn new(db: SqliteDatabase) -> Self {
        Self { db }
    }
}

#[async_trait]
impl SessionStore for SqliteSessions {
    #[tracing::instrument(name = "upload_sessions.start", skip_all)]
    async fn start(&self, new: NewSession<'_>) -> Result<(UploadSession, bool), StoreError> {
        let inserted = sqlx::query(sql::START)
            .bind(new.clinician_id)
            .bind(new.key.hyphenated().to_string())
            .bind(new.patient_id)
            .bind(new.duration_seconds)
            .bind(new.draft_transcript)
            .bind(new.total_bytes)
            .bind(Timestamp::now().to_string())
            .execute(self.db.writer())
            .await?
            .rows_affected();
        let session = self
            .get(new.clinician_id, new.key)
            .await?
            .ok_or(StoreError::NotFound("Upload session not found"))?;
        Ok((session, inserted == 1))
    }

    #[tracing::instrument(name = "upload_sessions.get", skip_all)]
    async fn get(
        &self,
        clinician_id: &str,
        key: Uuid,
    ) -> Result<Option<UploadSession>, StoreError> {
        let row: Option<SessionRow> = sqlx::query_as(sql::GET)
            .bind(clinician_id)
            .bind(key.hyphenated().to_string())
            .fetch_optional(self.db.writer())
            .await?;
        row.map(UploadSession::try_from).transpose()
    }

    #[tracing::instrument(name = "upload_sessions.set_received", skip_all)]
    async fn set_received(
        &self,
        clinician_id: &str,
        key: Uuid,
        received: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::SET_RECEIVED)
            .bind(clinician_id)
            .bind(key.hyphenated().to_string())
            .bind(received)
            .bind(Timestamp::now().to_string())
            .execute(self.db.writer())
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "upload_sessions.delete", skip_all)]
    async fn delete(&self, clinician_id: &str, key: Uuid) -> Result<(), StoreError> {
        sqlx::query(sql::DELETE)
            .bind(clinician_id)
            .bind(key.hyphenated().to_string())
            .execute(self.db.writer())
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "upload_sessions.idle_since", skip_all)]
    async fn idle_since(&self, cutoff: &Timestamp) -> Result<Vec<UploadSession>, StoreError> {
        let rows: Vec<SessionRow> = sqlx::query_as(sql::IDLE_SINCE)
            .bind(cutoff.to_string())
            .fetch_all(self.db.readers())
            .await?;
        rows.into_iter().map(UploadSession::try_from).collect()
    }

    #[tracing::instrument(name = "upload_sessions.count", skip_all)]
    async fn count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(sql::COUNT)
            .fetch_one(self.db.readers())
            .await?)
    }
}
