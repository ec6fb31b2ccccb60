//! The `upload_sessions` table: chunked uploads in progress. One
//! implementation per backend behind [`SessionStore`]; the SQL text is the
//! same on both (the table keeps ids and timestamps as text), so it is here.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::db::{Database, StoreError};
use crate::timestamp::Timestamp;

/// A chunked upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    /// Whose.
    pub clinician_id: String,
    /// The dictation.
    pub local_storage_key: Uuid,
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
    pub created_at: Timestamp,
    /// When bytes last arrived.
    pub updated_at: Timestamp,
}

/// What a new session records.
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    /// Whose.
    pub clinician_id: &'a str,
    /// The dictation.
    pub key: Uuid,
    /// Metadata for the recording it becomes.
    pub patient_id: &'a str,
    /// Metadata for the recording it becomes.
    pub duration_seconds: i64,
    /// Metadata for the recording it becomes.
    pub draft_transcript: Option<&'a str>,
    /// The announced size.
    pub total_bytes: i64,
}

/// Reads and writes `upload_sessions`.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// Starts a session, or returns the one already started for this dictation.
    /// `true` when it was created by this call.
    async fn start(&self, new: NewSession<'_>) -> Result<(UploadSession, bool), StoreError>;

    /// The session of a dictation, if any. Read where writes land (SQLite:
    /// the writer), so that a session written a moment ago is seen.
    async fn get(&self, clinician_id: &str, key: Uuid)
    -> Result<Option<UploadSession>, StoreError>;

    /// Records how many bytes are stored.
    async fn set_received(
        &self,
        clinician_id: &str,
        key: Uuid,
        received: i64,
    ) -> Result<(), StoreError>;

    /// Ends a session (completed, refused or expired).
    async fn delete(&self, clinician_id: &str, key: Uuid) -> Result<(), StoreError>;

    /// Sessions that received nothing since `cutoff`.
    async fn idle_since(&self, cutoff: &Timestamp) -> Result<Vec<UploadSession>, StoreError>;

    /// Sessions open (for the metrics).
    async fn count(&self) -> Result<i64, StoreError>;
}

/// The store for `db`.
pub fn open(db: &Database) -> Arc<dyn SessionStore> {
    match db {
        Database::Sqlite(db) => Arc::new(sqlite::SqliteSessions::new(db.clone())),
        Database::Postgres(db) => Arc::new(postgres::PgSessions::new(db.clone())),
    }
}

/// The statements, in the `$n` parameter style both backends accept.
mod sql {
    pub const START: &str = "INSERT INTO upload_sessions (clinician_id, local_storage_key, \
        patient_id, duration_seconds, draft_transcript, total_bytes, received_bytes, created_at, \
        updated_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7) \
        ON CONFLICT (clinician_id, local_storage_key) DO NOTHING";
    pub const GET: &str = "SELECT clinician_id, local_storage_key, patient_id, \
        duration_seconds, draft_transcript, total_bytes, received_bytes, created_at, updated_at \
        FROM upload_sessions WHERE clinician_id = $1 AND local_storage_key = $2";
    pub const SET_RECEIVED: &str = "UPDATE upload_sessions SET received_bytes = $3, \
        updated_at = $4 WHERE clinician_id = $1 AND local_storage_key = $2";
    pub const DELETE: &str =
        "DELETE FROM upload_sessions WHERE clinician_id = $1 AND local_storage_key = $2";
    pub const IDLE_SINCE: &str = "SELECT clinician_id, local_storage_key, patient_id, \
        duration_seconds, draft_transcript, total_bytes, received_bytes, created_at, updated_at \
        FROM upload_sessions WHERE updated_at < $1";
    pub const COUNT: &str = "SELECT count(*) FROM upload_sessions";
}

/// A row as both backends return it, before parsing the key and times.
#[derive(sqlx::FromRow)]
struct SessionRow {
    clinician_id: String,
    local_storage_key: String,
    patient_id: String,
    duration_seconds: i64,
    draft_transcript: Option<String>,
    total_bytes: i64,
    received_bytes: i64,
    created_at: String,
    updated_at: String,
}

impl TryFrom<SessionRow> for UploadSession {
    type Error = StoreError;

    fn try_from(row: SessionRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!(
                "upload session {}: {what}: {e}",
                row.local_storage_key
            ))
        };
        let time = |s: &str| Timestamp::parse(s).map_err(|e| corrupt("timestamp", &e));
        Ok(Self {
            local_storage_key: Uuid::parse_str(&row.local_storage_key)
                .map_err(|e| corrupt("local_storage_key", &e))?,
            created_at: time(&row.created_at)?,
            updated_at: time(&row.updated_at)?,
            clinician_id: row.clinician_id,
            patient_id: row.patient_id,
            duration_seconds: row.duration_seconds,
            draft_transcript: row.draft_transcript,
            total_bytes: row.total_bytes,
            received_bytes: row.received_bytes,
        })
    }
}
