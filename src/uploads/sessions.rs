//! All SQL for the `upload_sessions` table: chunked uploads in progress.
//! Written once for both backends (the table keeps ids and timestamps as text).

use uuid::Uuid;

use crate::db::{Database, with_pool};
use crate::recordings::StoreError;
use crate::timestamp::Timestamp;

/// A chunked upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UploadSession {
    /// Whose.
    pub clinician_id: String,
    /// The dictation (hyphenated UUID).
    pub local_storage_key: String,
    /// Metadata for the recording it becomes.
    pub patient_id: String,
    /// Metadata for the recording it becomes.
    pub duration_seconds: i64,
    /// Metadata for the recording it becomes.
    pub draft_transcript: Option<String>,
    /// The announced size.
    pub total_bytes: i64,
    /// Bytes stored so far (fsynced).
    pub received_bytes: i64,
    /// When it began.
    pub created_at: String,
    /// When bytes last arrived.
    pub updated_at: String,
}

const COLUMNS: &str = "clinician_id, local_storage_key, patient_id, duration_seconds, \
    draft_transcript, total_bytes, received_bytes, created_at, updated_at";

/// The `upload_sessions` table.
#[derive(Debug, Clone)]
pub struct SessionStore {
    db: Database,
}

impl SessionStore {
    /// The store over `db`.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Starts a session, or returns the one already started for this dictation.
    /// `true` when it was created by this call.
    pub async fn start(
        &self,
        clinician_id: &str,
        key: Uuid,
        patient_id: &str,
        duration_seconds: i64,
        draft_transcript: Option<&str>,
        total_bytes: i64,
    ) -> Result<(UploadSession, bool), StoreError> {
        let now = Timestamp::now().to_string();
        let inserted = with_pool!(&self.db, write, |pool| {
            sqlx::query(
                "INSERT INTO upload_sessions (clinician_id, local_storage_key, patient_id, \
                 duration_seconds, draft_transcript, total_bytes, received_bytes, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7) \
                 ON CONFLICT (clinician_id, local_storage_key) DO NOTHING",
            )
            .bind(clinician_id)
            .bind(key.hyphenated().to_string())
            .bind(patient_id)
            .bind(duration_seconds)
            .bind(draft_transcript)
            .bind(total_bytes)
            .bind(&now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        let session = self
            .get(clinician_id, key)
            .await?
            .ok_or(StoreError::NotFound("Upload session not found"))?;
        Ok((session, inserted == 1))
    }

    /// The session of a dictation, if any. Read where writes land (SQLite:
    /// the writer), so that a session written a moment ago is seen.
    pub async fn get(
        &self,
        clinician_id: &str,
        key: Uuid,
    ) -> Result<Option<UploadSession>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM upload_sessions WHERE clinician_id = $1 AND local_storage_key = $2"
        );
        Ok(with_pool!(&self.db, write, |pool| {
            // Static column list and fixed text.
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(clinician_id)
                .bind(key.hyphenated().to_string())
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Records how many bytes are stored.
    pub async fn set_received(
        &self,
        clinician_id: &str,
        key: Uuid,
        received: i64,
    ) -> Result<(), StoreError> {
        let now = Timestamp::now().to_string();
        with_pool!(&self.db, write, |pool| {
            sqlx::query(
                "UPDATE upload_sessions SET received_bytes = $3, updated_at = $4 \
                 WHERE clinician_id = $1 AND local_storage_key = $2",
            )
            .bind(clinician_id)
            .bind(key.hyphenated().to_string())
            .bind(received)
            .bind(&now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Ends a session (completed, refused or expired).
    pub async fn delete(&self, clinician_id: &str, key: Uuid) -> Result<(), StoreError> {
        with_pool!(&self.db, write, |pool| {
            sqlx::query(
                "DELETE FROM upload_sessions WHERE clinician_id = $1 AND local_storage_key = $2",
            )
            .bind(clinician_id)
            .bind(key.hyphenated().to_string())
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }

    /// Sessions that received nothing since `cutoff`.
    pub async fn idle_since(&self, cutoff: &Timestamp) -> Result<Vec<UploadSession>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM upload_sessions WHERE updated_at < $1");
        Ok(with_pool!(&self.db, read, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(cutoff.to_string())
                .fetch_all(pool)
                .await?
        }))
    }
}
