//! The `jobs` table (and the columns of `recordings` a job's end sets). One
//! implementation per backend behind [`JobStore`]: the claim differs (SQLite
//! has one writer; PostgreSQL's instances skip each other's locked rows), and
//! PostgreSQL's columns are typed.

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::model::{ClaimedJob, JobCounts, JobResult};
use crate::audit::{AuditAction, NewAuditEvent};
use crate::db::{Database, StoreError};
use crate::timestamp::Timestamp;

/// Reads and writes `jobs`. Every method that ends or changes a claimed job
/// takes its `owner` and does nothing (answers `false`) when that owner no
/// longer holds the lease.
#[async_trait]
pub trait JobStore: Send + Sync + std::fmt::Debug {
    /// Takes the job that is due first (queued and due, or running with an
    /// expired lease) for `owner` until `lease` from now; the recording
    /// becomes `processing`. None when there is nothing to do.
    async fn claim(&self, owner: &str, lease: Duration) -> Result<Option<ClaimedJob>, StoreError>;

    /// Extends `owner`'s lease on a job; false when it lost it.
    async fn heartbeat(&self, id: Uuid, owner: &str, lease: Duration) -> Result<bool, StoreError>;

    /// Stores a transcript and ends the job, in one transaction; the recording
    /// becomes `completed`. False (nothing stored) when `owner` lost the lease.
    async fn complete(&self, id: Uuid, owner: &str, result: &JobResult)
    -> Result<bool, StoreError>;

    /// Puts a failed attempt's job back in the queue, due after `delay`; the
    /// recording is `queued` again with the failure as its `error_message`.
    async fn retry_later(
        &self,
        id: Uuid,
        owner: &str,
        error: &str,
        delay: Duration,
    ) -> Result<bool, StoreError>;

    /// Gives a job up; the recording becomes `error` with `error`.
    async fn fail(&self, id: Uuid, owner: &str, error: &str) -> Result<bool, StoreError>;

    /// Jobs per state.
    async fn counts(&self) -> Result<JobCounts, StoreError>;
}

/// The store for `db`.
pub fn open(db: &Database) -> Arc<dyn JobStore> {
    match db {
        Database::Sqlite(db) => Arc::new(sqlite::SqliteJobs::new(db.clone())),
        Database::Postgres(db) => Arc::new(postgres::PgJobs::new(db.clone())),
    }
}

/// The fields of a recording a worker changes, as they were before, read in
/// the worker's transaction (for its audit event).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BeforeWork {
    patient_id: String,
    status: String,
    transcript: Option<String>,
    final_transcript: Option<String>,
    error_message: Option<String>,
    transcript_language: Option<String>,
    whisper_model: String,
}

/// What a worker does to a recording.
#[derive(Debug, Clone)]
pub enum Work<'a> {
    /// Takes it: `processing`.
    Start,
    /// Stores its transcript: `completed`.
    Transcribed(&'a JobResult),
    /// An attempt failed: `queued` again or `error`, with the reason.
    Failed {
        /// The new status.
        status: &'a str,
        /// The reason.
        error: &'a str,
    },
}

impl Work<'_> {
    /// The job's state after this work ends it.
    fn job_state(&self) -> &'static str {
        match self {
            Self::Start => "running",
            Self::Transcribed(_) => "done",
            Self::Failed {
                status: "queued", ..
            } => "queued",
            Self::Failed { .. } => "failed",
        }
    }

    /// The job's `last_error` after it.
    fn job_error(&self) -> Option<&str> {
        match self {
            Self::Failed { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The audit event of `work` on recording `id` (`system:transcription`,
/// action `transcribe`): every field it changes, before and after. The
/// segments are left out (the transcript says what they hold).
fn work_event(id: Uuid, before: &BeforeWork, work: &Work<'_>) -> NewAuditEvent {
    let mut changes = Map::new();
    let mut change = |field: &str, old: Value, new: Value| {
        if old != new {
            changes.insert(field.to_owned(), json!([old, new]));
        }
    };
    match work {
        Work::Start => change("status", json!(before.status), json!("processing")),
        Work::Transcribed(result) => {
            change("status", json!(before.status), json!("completed"));
            change("transcript", json!(before.transcript), json!(result.text));
            change(
                "final_transcript",
                json!(before.final_transcript),
                json!(before.final_transcript.as_deref().unwrap_or(&result.text)),
            );
            change(
                "transcript_language",
                json!(before.transcript_language),
                json!(result.language),
            );
            change(
                "whisper_model",
                json!(before.whisper_model),
                json!(result.model),
            );
            change("error_message", json!(before.error_message), Value::Null);
        }
        Work::Failed { status, error } => {
            change("status", json!(before.status), json!(status));
            change("error_message", json!(before.error_message), json!(error));
        }
    }
    NewAuditEvent {
        at: Timestamp::now(),
        actor: "system:transcription".into(),
        action: AuditAction::Transcribe,
        recording_id: Some(id),
        patient_id: Some(before.patient_id.clone()),
        changes: Value::Object(changes),
        request_id: None,
        client_addr: None,
    }
}

/// The end of a lease taken now.
fn lease_until(lease: Duration) -> String {
    Timestamp::after(lease).to_string()
}

/// `(state, count)` rows as [`JobCounts`].
fn counts_from(rows: Vec<(String, i64)>) -> JobCounts {
    let mut counts = JobCounts::default();
    for (state, n) in rows {
        match state.as_str() {
            "queued" => counts.queued = n,
            "running" => counts.running = n,
            "done" => counts.done = n,
            "failed" => counts.failed = n,
            _ => {}
        }
    }
    counts
}

/// What the claim reads of the recording: audio key, content type, sha256
/// and the day it was made (`YYYY-MM-DD`).
type ClaimedAudio = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The claimed job from the recording's id and attempts, and what the
/// claim read of the recording.
fn claimed(id: String, attempts: i64, audio: ClaimedAudio) -> Result<ClaimedJob, StoreError> {
    let (key, content_type, sha256, day) = audio;
    Ok(ClaimedJob {
        recording_id: Uuid::parse_str(&id)
            .map_err(|e| StoreError::Corrupt(format!("job {id}: {e}")))?,
        attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
        // Only audio the server stored itself (it has a checksum) is ours to open.
        audio_key: key.filter(|_| sha256.is_some()),
        audio_content_type: content_type,
        recorded_on: day.as_deref().and_then(crate::timestamp::parse_date),
    })
}

/// SQL both backends run as it is.
mod shared_sql {
    pub const COUNTS: &str = "SELECT state, count(*) FROM jobs GROUP BY state";
}
