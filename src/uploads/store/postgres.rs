//! `upload_sessions` on PostgreSQL.

use async_trait::async_trait;
use uuid::Uuid;

use super::{NewSession, SessionRow, SessionStore, UploadSession, sql};
use crate::db::StoreError;
use crate::db::postgres::PgDatabase;
use crate::timestamp::Timestamp;

/// `upload_sessions` in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgSessions {
    db: PgDatabase,
}

impl PgSessions {
    /// The store over `db`.
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }
}

#[async_trait]
impl SessionStore for PgSessions {
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
            .execute(self.db.pool())
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
            .fetch_optional(self.db.pool())
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
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "upload_sessions.delete", skip_all)]
    async fn delete(&self, clinician_id: &str, key: Uuid) -> Result<(), StoreError> {
        sqlx::query(sql::DELETE)
            .bind(clinician_id)
            .bind(key.hyphenated().to_string())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "upload_sessions.idle_since", skip_all)]
    async fn idle_since(&self, cutoff: &Timestamp) -> Result<Vec<UploadSession>, StoreError> {
        let rows: Vec<SessionRow> = sqlx::query_as(sql::IDLE_SINCE)
            .bind(cutoff.to_string())
            .fetch_all(self.db.pool())
            .await?;
        rows.into_iter().map(UploadSession::try_from).collect()
    }

    #[tracing::instrument(name = "upload_sessions.count", skip_all)]
    async fn count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(sql::COUNT)
            .fetch_one(self.db.pool())
            .await?)
    }
}
