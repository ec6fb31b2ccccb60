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

use super::model::{CheckEnd, ClaimedCheck, ClaimedJob, JobCounts, JobKind, JobResult};
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

    /// Extends `owner`'s lease on a job of `kind`; false when it lost it.
    async fn heartbeat(
        &self,
        id: Uuid,
        kind: JobKind,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError>;

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

    /// Takes the `verify` job that is due first for `owner` until `lease`
    /// from now, with the text to check. None when there is nothing to do.
    async fn claim_check(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedCheck>, StoreError>;

    /// Ends `owner`'s `verify` job as `end` says, storing the check with the
    /// note (and its audit event) in the same transaction. False (nothing
    /// stored) when `owner` lost the lease: the text changed and was queued
    /// for checking again, or another worker took over.
    async fn end_check(&self, id: Uuid, owner: &str, end: CheckEnd<'_>)
    -> Result<bool, StoreError>;

    /// Whether the note of recording `id` waits for a `verify` job.
    async fn check_pending(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Jobs per kind and state, with, for queued ones, the longest a due
    /// job has waited since it was due (seconds): for the metrics.
    async fn queue_stats(&self) -> Result<Vec<QueueStat>, StoreError>;
}

/// `(kind, state, count, longest wait of a due job in seconds)`.
pub type QueueStat = (String, String, i64, Option<f64>);

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

/// The audit event of storing a check made elsewhere (`system:guardrails`,
/// action `verify`): the note's text went to that engine. The check's own
/// fields follow from the audited text and are named, not copied.
fn check_event(id: Uuid, patient_id: &str, end: &CheckEnd<'_>) -> NewAuditEvent {
    let (check, instead) = match end {
        CheckEnd::Checked(check) => (Some(*check), None),
        CheckEnd::CheckedInstead(check, why) => (Some(*check), Some(*why)),
        CheckEnd::NothingToCheck | CheckEnd::RetryLater(..) => (None, None),
    };
    let mut changes = Map::new();
    if let Some(check) = check {
        changes.insert(
            "verified_at".into(),
            json!([Value::Null, check.completed_at.to_string()]),
        );
        changes.insert("llm_model".into(), json!([Value::Null, check.model]));
    }
    if let Some(why) = instead {
        changes.insert("engine_error".into(), json!([Value::Null, why]));
    }
    NewAuditEvent {
        at: Timestamp::now(),
        actor: "system:guardrails".into(),
        action: AuditAction::Verify,
        recording_id: Some(id),
        patient_id: Some(patient_id.to_owned()),
        changes: Value::Object(changes),
        request_id: None,
        client_addr: None,
    }
}

/// How a claimed job ends: what the `END` statement of each backend sets.
struct JobEnd<'a> {
    kind: JobKind,
    /// Its new state.
    state: &'static str,
    /// Its `last_error`.
    error: Option<&'a str>,
    /// When it is due again (a retry).
    due: Option<String>,
}

impl CheckEnd<'_> {
    /// The `verify` job's end.
    fn job_end(&self) -> JobEnd<'_> {
        let (state, error, due) = match self {
            CheckEnd::Checked(_) | CheckEnd::NothingToCheck => ("done", None, None),
            CheckEnd::CheckedInstead(_, why) => ("failed", Some(*why), None),
            CheckEnd::RetryLater(why, delay) => (
                "queued",
                Some(*why),
                Some(Timestamp::after(*delay).to_string()),
            ),
        };
        JobEnd {
            kind: JobKind::Verify,
            state,
            error,
            due,
        }
    }

    /// The check to store with the note, if any.
    fn stored(&self) -> Option<&super::model::StoredCheck> {
        match self {
            CheckEnd::Checked(check) | CheckEnd::CheckedInstead(check, _) => Some(check),
            CheckEnd::NothingToCheck | CheckEnd::RetryLater(..) => None,
        }
    }
}

/// What a `verify` claim reads of the recording: the text, the patient and
/// the day it was made (`YYYY-MM-DD`).
type CheckedText = (Option<String>, String, Option<String>);

fn claimed_check(
    id: String,
    attempts: i64,
    trace_parent: Option<String>,
    text: CheckedText,
) -> Result<ClaimedCheck, StoreError> {
    let (text, patient_id, day) = text;
    Ok(ClaimedCheck {
        recording_id: Uuid::parse_str(&id)
            .map_err(|e| StoreError::Corrupt(format!("job {id}: {e}")))?,
        attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
        text,
        patient_id,
        recorded_on: day.as_deref().and_then(crate::timestamp::parse_date),
        trace_parent,
    })
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

/// What the claim reads of the recording: audio key, content type, sha256,
/// the day it was made (`YYYY-MM-DD`) and the patient.
type ClaimedAudio = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// The claimed job from the recording's id and attempts, and what the
/// claim read of the recording.
fn claimed(
    id: String,
    attempts: i64,
    trace_parent: Option<String>,
    audio: ClaimedAudio,
) -> Result<ClaimedJob, StoreError> {
    let (key, content_type, sha256, day, patient_id) = audio;
    Ok(ClaimedJob {
        recording_id: Uuid::parse_str(&id)
            .map_err(|e| StoreError::Corrupt(format!("job {id}: {e}")))?,
        attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
        // Only audio the server stored itself (it has a checksum) is ours to open.
        audio_key: key.filter(|_| sha256.is_some()),
        audio_content_type: content_type,
        recorded_on: day.as_deref().and_then(crate::timestamp::parse_date),
        patient_id,
        trace_parent,
    })
}

/// SQL both backends run as it is.
mod shared_sql {
    pub const COUNTS: &str = "SELECT state, count(*) FROM jobs GROUP BY state";
}
