//! `jobs` on PostgreSQL: instances claim side by side, each skipping the rows
//! another has locked, so no job is claimed twice at the same time.

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    BeforeWork, CheckedText, ClaimedAudio, JobEnd, JobStore, Work, check_event, claimed,
    claimed_check, counts_from, lease_until, shared_sql, work_event,
};
use crate::audit::store::postgres as audit;
use crate::db::StoreError;
use crate::db::postgres::PgDatabase;
use crate::jobs::model::{
    CheckEnd, ClaimedCheck, ClaimedJob, JobCounts, JobKind, JobResult, StoredCheck,
};
use crate::timestamp::Timestamp;

type PgQueryOf<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// As SQLite's [`super::sqlite::bind_check`]: a check's values in the order
/// every statement that stores one takes them.
pub fn bind_check<'q>(query: PgQueryOf<'q>, check: Option<&StoredCheck>) -> PgQueryOf<'q> {
    query
        .bind(check.map(|c| c.results_json.clone()))
        .bind(check.map(|c| c.score))
        .bind(check.map(|c| c.started_at.to_string()))
        .bind(check.map(|c| c.completed_at.to_string()))
        .bind(check.and_then(|c| c.model.clone()))
        .bind(check.map(|c| c.fhir_json.clone()))
}

/// As SQLite's [`super::sqlite::ENQUEUE`], with PostgreSQL's types.
pub const ENQUEUE: &str = "INSERT INTO jobs (recording_id, kind, state, attempts, run_after, \
    created_at, updated_at, trace_parent) VALUES ($1::uuid, 'transcribe', 'queued', 0, \
    $2::timestamptz, $2::timestamptz, $2::timestamptz, $3) \
    ON CONFLICT (recording_id, kind) DO UPDATE SET state = 'queued', attempts = 0, \
    run_after = excluded.run_after, lease_owner = NULL, lease_expires_at = NULL, \
    last_error = NULL, updated_at = excluded.updated_at, trace_parent = excluded.trace_parent";

/// As SQLite's [`super::sqlite::ENQUEUE_VERIFY`], with PostgreSQL's types.
pub const ENQUEUE_VERIFY: &str = "INSERT INTO jobs (recording_id, kind, state, attempts, run_after, \
    created_at, updated_at, trace_parent) VALUES ($1::uuid, 'verify', 'queued', 0, \
    $2::timestamptz, $2::timestamptz, $2::timestamptz, $3) \
    ON CONFLICT (recording_id, kind) DO UPDATE SET state = 'queued', attempts = 0, \
    run_after = excluded.run_after, lease_owner = NULL, lease_expires_at = NULL, \
    last_error = NULL, updated_at = excluded.updated_at, trace_parent = excluded.trace_parent";

/// The job of kind `$4` due first: queued and due, or running with an
/// expired lease; rows another instance has locked are skipped, not waited for.
const CLAIM: &str = "WITH next AS ( \
        SELECT recording_id, kind FROM jobs \
        WHERE kind = $4 AND ((state = 'queued' AND run_after <= $3::timestamptz) \
           OR (state = 'running' AND lease_expires_at < $3::timestamptz)) \
        ORDER BY run_after LIMIT 1 FOR UPDATE SKIP LOCKED) \
    UPDATE jobs SET state = 'running', attempts = jobs.attempts + 1, lease_owner = $1, \
        lease_expires_at = $2::timestamptz, updated_at = $3::timestamptz \
    FROM next WHERE jobs.recording_id = next.recording_id AND jobs.kind = next.kind \
    RETURNING jobs.recording_id::text, jobs.attempts, jobs.trace_parent";
const START_PROCESSING: &str = "UPDATE recordings SET status = 'processing', version = version + 1, \
    transcription_started_at = $2::timestamptz, updated_at = $2::timestamptz \
    WHERE id = $1::uuid RETURNING audio_file_path, audio_content_type, audio_sha256, \
    ((created_at AT TIME ZONE 'UTC')::date)::text, patient_id";
const TEXT_TO_CHECK: &str = "SELECT coalesce(final_transcript, transcript), patient_id, \
    ((created_at AT TIME ZONE 'UTC')::date)::text FROM recordings \
    WHERE id = $1::uuid AND deleted_at IS NULL";
const HEARTBEAT: &str = "UPDATE jobs SET lease_expires_at = $3::timestamptz \
    WHERE recording_id = $1::uuid AND kind = $4 AND state = 'running' \
    AND lease_owner = $2";
const END: &str = "UPDATE jobs SET state = $3, last_error = $4, \
    run_after = coalesce($5::timestamptz, run_after), \
    lease_expires_at = NULL, updated_at = $6::timestamptz \
    WHERE recording_id = $1::uuid AND kind = $7 AND state = 'running' \
    AND lease_owner = $2";
const STORE_CHECK: &str = "UPDATE recordings SET version = version + 1, updated_at = $2::timestamptz, \
    verification_results = $3::jsonb, verification_score = $4::float8, \
    extraction_started_at = $5::timestamptz, extraction_completed_at = $6::timestamptz, \
    verified_at = $6::timestamptz, llm_model = $7, fhir_bundle = $8::jsonb \
    WHERE id = $1::uuid AND deleted_at IS NULL AND signed_at IS NULL RETURNING patient_id";
const QUEUE_STATS: &str = "SELECT kind, state, count(*), \
    max(CASE WHEN state = 'queued' AND run_after <= $1::timestamptz \
        THEN extract(epoch FROM $1::timestamptz - run_after)::float8 END) \
    FROM jobs GROUP BY kind, state";
const PENDING_CHECK: &str = "SELECT count(*) FROM jobs WHERE recording_id = $1::uuid \
    AND kind = 'verify' AND state IN ('queued', 'running')";
const STORE_TRANSCRIPT: &str = "UPDATE recordings SET status = 'completed', version = version + 1, \
    error_message = NULL, transcript = $2, final_transcript = coalesce(final_transcript, $2), transcript_language = $3, \
    transcript_segments = $4::jsonb, whisper_model = $5, \
    transcription_completed_at = $6::timestamptz, processed_at = $6::timestamptz, \
    updated_at = $6::timestamptz, \
    verification_results = CASE WHEN final_transcript IS NULL AND $7 THEN $8::jsonb ELSE verification_results END, \
    verification_score = CASE WHEN final_transcript IS NULL AND $7 THEN $9::float8 ELSE verification_score END, \
    extraction_started_at = CASE WHEN final_transcript IS NULL AND $7 THEN $10::timestamptz ELSE extraction_started_at END, \
    extraction_completed_at = CASE WHEN final_transcript IS NULL AND $7 THEN $11::timestamptz ELSE extraction_completed_at END, \
    verified_at = CASE WHEN final_transcript IS NULL AND $7 THEN $11::timestamptz ELSE verified_at END, \
    llm_model = CASE WHEN final_transcript IS NULL AND $7 THEN $12 ELSE llm_model END, \
    fhir_bundle = CASE WHEN final_transcript IS NULL AND $7 THEN $13::jsonb ELSE fhir_bundle END \
    WHERE id = $1::uuid";
const SET_FAILED_STATE: &str = "UPDATE recordings SET status = $2, error_message = $3, version = version + 1, \
    updated_at = $4::timestamptz, \
    processed_at = CASE WHEN $2 = 'error' THEN $4::timestamptz ELSE processed_at END \
    WHERE id = $1::uuid";

/// A recording's fields as a worker finds them (see [`BeforeWork`]).
const BEFORE_WORK: &str = "SELECT patient_id, status, transcript, final_transcript, error_message, \
    transcript_language, whisper_model FROM recordings WHERE id = $1::uuid";

/// `jobs` in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgJobs {
    db: PgDatabase,
}

type PgQuery = sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl PgJobs {
    /// The store over `db`.
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }

    /// Ends `owner`'s job after `work` (its state and error follow from it),
    /// sets the recording, and audits the change: one transaction.
    async fn end(
        &self,
        id: Uuid,
        owner: &str,
        work: Work<'_>,
        due: Option<String>,
        recording: impl FnOnce(String, String) -> PgQuery + Send,
    ) -> Result<bool, StoreError> {
        let uuid = id;
        let id = id.hyphenated().to_string();
        let now = Timestamp::now().to_string();
        let mut tx = self.db.pool().begin().await?;
        let job = JobEnd {
            kind: JobKind::Transcribe,
            state: work.job_state(),
            error: work.job_error(),
            due,
        };
        if !end_job(&mut tx, &id, owner, &job, &now).await? {
            return Ok(false);
        }
        let before: Option<BeforeWork> = sqlx::query_as(BEFORE_WORK)
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
        if let (Work::Transcribed(result), Some(before)) = (&work, &before)
            && result.check_later
            && before.final_transcript.is_none()
        {
            sqlx::query(ENQUEUE_VERIFY)
                .bind(&id)
                .bind(&now)
                .bind(crate::telemetry::traceparent())
                .execute(&mut *tx)
                .await?;
        }
        recording(id, now).execute(&mut *tx).await?;
        if let Some(before) = before {
            audit::append(&mut tx, &work_event(uuid, &before, &work)).await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

#[async_trait]
impl JobStore for PgJobs {
    #[tracing::instrument(name = "jobs.claim", skip_all)]
    async fn claim(&self, owner: &str, lease: Duration) -> Result<Option<ClaimedJob>, StoreError> {
        let now = Timestamp::now().to_string();
        let mut tx = self.db.pool().begin().await?;
        let job: Option<(String, i64, Option<String>)> = sqlx::query_as(CLAIM)
            .bind(owner)
            .bind(lease_until(lease))
            .bind(&now)
            .bind(JobKind::Transcribe.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some((id, attempts, trace_parent)) = job else {
            return Ok(None);
        };
        let before: Option<BeforeWork> = sqlx::query_as(BEFORE_WORK)
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
        let audio: Option<ClaimedAudio> = sqlx::query_as(START_PROCESSING)
            .bind(&id)
            .bind(&now)
            .fetch_optional(&mut *tx)
            .await?;
        if let (Some(before), Ok(uuid)) = (before, Uuid::parse_str(&id)) {
            audit::append(&mut tx, &work_event(uuid, &before, &Work::Start)).await?;
        }
        tx.commit().await?;
        claimed(id, attempts, trace_parent, audio.unwrap_or_default()).map(Some)
    }

    #[tracing::instrument(name = "jobs.heartbeat", skip_all)]
    async fn heartbeat(
        &self,
        id: Uuid,
        kind: JobKind,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let extended = sqlx::query(HEARTBEAT)
            .bind(id.hyphenated().to_string())
            .bind(owner)
            .bind(lease_until(lease))
            .bind(kind.as_str())
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(extended == 1)
    }

    #[tracing::instrument(name = "jobs.complete", skip_all)]
    async fn complete(
        &self,
        id: Uuid,
        owner: &str,
        result: &JobResult,
    ) -> Result<bool, StoreError> {
        let work = Work::Transcribed(result);
        let result = result.clone();
        self.end(id, owner, work, None, move |id, now| {
            let query = sqlx::query(STORE_TRANSCRIPT)
                .bind(id)
                .bind(result.text)
                .bind(result.language)
                .bind(result.segments_json)
                .bind(result.model)
                .bind(now)
                .bind(result.check.is_some());
            bind_check(query, result.check.as_ref())
        })
        .await
    }

    #[tracing::instrument(name = "jobs.retry_later", skip_all)]
    async fn retry_later(
        &self,
        id: Uuid,
        owner: &str,
        error: &str,
        delay: Duration,
    ) -> Result<bool, StoreError> {
        let message = error.to_owned();
        self.end(
            id,
            owner,
            Work::Failed {
                status: "queued",
                error,
            },
            Some(Timestamp::after(delay).to_string()),
            move |id, now| {
                sqlx::query(SET_FAILED_STATE)
                    .bind(id)
                    .bind("queued")
                    .bind(message)
                    .bind(now)
            },
        )
        .await
    }

    #[tracing::instrument(name = "jobs.fail", skip_all)]
    async fn fail(&self, id: Uuid, owner: &str, error: &str) -> Result<bool, StoreError> {
        let message = error.to_owned();
        let work = Work::Failed {
            status: "error",
            error,
        };
        self.end(id, owner, work, None, move |id, now| {
            sqlx::query(SET_FAILED_STATE)
                .bind(id)
                .bind("error")
                .bind(message)
                .bind(now)
        })
        .await
    }

    #[tracing::instrument(name = "jobs.counts", skip_all)]
    async fn counts(&self) -> Result<JobCounts, StoreError> {
        let rows = sqlx::query_as(shared_sql::COUNTS)
            .fetch_all(self.db.pool())
            .await?;
        Ok(counts_from(rows))
    }

    #[tracing::instrument(name = "jobs.claim_check", skip_all)]
    async fn claim_check(
        &self,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedCheck>, StoreError> {
        let now = Timestamp::now().to_string();
        let mut tx = self.db.pool().begin().await?;
        let job: Option<(String, i64, Option<String>)> = sqlx::query_as(CLAIM)
            .bind(owner)
            .bind(lease_until(lease))
            .bind(&now)
            .bind(JobKind::Verify.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some((id, attempts, trace_parent)) = job else {
            return Ok(None);
        };
        let text: Option<CheckedText> = sqlx::query_as(TEXT_TO_CHECK)
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        let text = text.unwrap_or((None, String::new(), None));
        claimed_check(id, attempts, trace_parent, text).map(Some)
    }

    #[tracing::instrument(name = "jobs.end_check", skip_all)]
    async fn end_check(
        &self,
        id: Uuid,
        owner: &str,
        end: CheckEnd<'_>,
    ) -> Result<bool, StoreError> {
        let uuid = id;
        let id = id.hyphenated().to_string();
        let now = Timestamp::now().to_string();

        let mut tx = self.db.pool().begin().await?;
        if !end_job(&mut tx, &id, owner, &end.job_end(), &now).await? {
            return Ok(false);
        }
        if let Some(check) = end.stored() {
            let query = bind_check(sqlx::query(STORE_CHECK).bind(&id).bind(&now), Some(check));
            let patient_id: Option<String> = query
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| sqlx::Row::try_get(&row, 0))
                .transpose()?;
            if let Some(patient_id) = patient_id {
                audit::append(&mut tx, &check_event(uuid, &patient_id, &end)).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    #[tracing::instrument(name = "jobs.queue_stats", skip_all)]
    async fn queue_stats(&self) -> Result<Vec<super::QueueStat>, StoreError> {
        Ok(sqlx::query_as(QUEUE_STATS)
            .bind(Timestamp::now().to_string())
            .fetch_all(self.db.pool())
            .await?)
    }

    #[tracing::instrument(name = "jobs.check_pending", skip_all)]
    async fn check_pending(&self, id: Uuid) -> Result<bool, StoreError> {
        let pending: i64 = sqlx::query_scalar(PENDING_CHECK)
            .bind(id.hyphenated().to_string())
            .fetch_one(self.db.pool())
            .await?;
        Ok(pending > 0)
    }
}

/// Ends `owner`'s job as `job` says, in `conn`'s transaction; false when
/// `owner` no longer holds its lease.
async fn end_job(
    conn: &mut sqlx::PgConnection,
    id: &str,
    owner: &str,
    job: &JobEnd<'_>,
    now: &str,
) -> Result<bool, StoreError> {
    let ended = sqlx::query(END)
        .bind(id)
        .bind(owner)
        .bind(job.state)
        .bind(job.error)
        .bind(job.due.as_deref())
        .bind(now)
        .bind(job.kind.as_str())
        .execute(conn)
        .await?
        .rows_affected();
    Ok(ended == 1)
}
