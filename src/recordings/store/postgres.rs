//! The `recordings` SQL for PostgreSQL.
//!
//! Rows come back in the same text form as from SQLite (ids hyphenated,
//! timestamps `2026-11-27T23:53:30.306917Z`), so both backends share
//! `RecordingRow` and its checks; values go in as text and are cast to the
//! native types (`uuid`, `timestamptz`, `jsonb`) by the statements.

use crate::guardrails::CheckUpdate;
use crate::jobs::store::postgres as jobs_sql;
use uuid::Uuid;

use async_trait::async_trait;

use super::{
    Change, ChangeRow, Cursor, ListQuery, Page, RECORDING_NOT_FOUND, RecordingJson, RecordingRow,
    RecordingStore, Signature, StoreError, parse_ids, shared_sql,
};
use crate::audit::store::postgres as audit;
use crate::audit::{AuditContext, Audited, NewAuditEvent};
use crate::db::postgres::PgDatabase;
use crate::recordings::model::{Amendment, Recording, RecordingPatch, RecordingStatus};
use crate::timestamp::Timestamp;

/// A `timestamptz` column as the API's text (UTC, microseconds, `Z`).
macro_rules! ts {
    ($col:literal) => {
        concat!(
            "to_char(",
            $col,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )
    };
}

/// The 37 columns as text, in [`RecordingRow`] order.
macro_rules! columns {
    () => {
        concat!(
            "id::text AS id, patient_id, clinician_id, audio_file_path, audio_file_size, \
             duration_seconds, status, error_message, retry_count, ",
            ts!("created_at"),
            " AS created_at, ",
            ts!("updated_at"),
            " AS updated_at, ",
            ts!("uploaded_at"),
            " AS uploaded_at, ",
            ts!("processed_at"),
            " AS processed_at, transcript, verification_results::text AS verification_results, \
             local_storage_key::text AS local_storage_key, draft_transcript, final_transcript, \
             upload_attempts, audio_sha256, audio_content_type, whisper_model, ",
            ts!("transcription_started_at"),
            " AS transcription_started_at, ",
            ts!("transcription_completed_at"),
            " AS transcription_completed_at, transcript_language, \
             transcript_segments::text AS transcript_segments, fhir_bundle::text AS fhir_bundle, \
             llm_model, ",
            ts!("extraction_started_at"),
            " AS extraction_started_at, ",
            ts!("extraction_completed_at"),
            " AS extraction_completed_at, verification_score, ",
            ts!("verified_at"),
            " AS verified_at, ",
            ts!("signed_at"),
            " AS signed_at, signed_by, signed_sha256, amendments::text AS amendments, \
             acknowledgements::text AS acknowledgements, version"
        )
    };
}

/// A clinician's page: the filter's own parameters come after the clinician,
/// the limit last.
macro_rules! list_sql {
    ($filter:literal, $limit:literal) => {
        concat!(
            "SELECT ",
            columns!(),
            " FROM recordings WHERE clinician_id = $1 AND deleted_at IS NULL",
            $filter,
            // Qualified: a bare `created_at` here would be the text column of
            // the select list, and sorting by it cannot use the index.
            " ORDER BY recordings.created_at DESC, recordings.id DESC LIMIT ",
            $limit
        )
    };
}

const GET: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM recordings WHERE id = $1::uuid AND deleted_at IS NULL"
);
/// A clinician's first page (public, like the others below, for the query-plan test).
pub const LIST: &str = list_sql!("", "$2");
/// A clinician's first page of one status.
pub const LIST_BY_STATUS: &str = list_sql!(" AND status = $2", "$3");
/// A clinician's page after a cursor.
pub const LIST_AFTER: &str = list_sql!(" AND (created_at, id) < ($2::timestamptz, $3::uuid)", "$4");
/// A clinician's page of one status after a cursor.
pub const LIST_BY_STATUS_AFTER: &str = list_sql!(
    " AND status = $2 AND (created_at, id) < ($3::timestamptz, $4::uuid)",
    "$5"
);
/// A clinician's patch at an expected version, returning the updated row.
const PATCH: &str = concat!(
    "UPDATE recordings SET patient_id = coalesce($1, patient_id), \
     final_transcript = CASE WHEN $2 THEN $3 ELSE final_transcript END, \
     status = coalesce($4, status), \
     error_message = CASE WHEN $4 = 'queued' THEN NULL ELSE error_message END, \
     retry_count = retry_count + CASE WHEN $4 = 'queued' THEN 1 ELSE 0 END, \
     verification_results = CASE WHEN $8 THEN $9::jsonb ELSE verification_results END, \
     verification_score = CASE WHEN $8 THEN $10::float8 ELSE verification_score END, \
     extraction_started_at = CASE WHEN $8 THEN $11::timestamptz ELSE extraction_started_at END, \
     extraction_completed_at = CASE WHEN $8 THEN $12::timestamptz ELSE extraction_completed_at END, \
     verified_at = CASE WHEN $8 THEN $12::timestamptz ELSE verified_at END, \
     llm_model = CASE WHEN $8 THEN $13 ELSE llm_model END, \
     fhir_bundle = CASE WHEN $8 THEN $14::jsonb ELSE fhir_bundle END, \
     updated_at = $5::timestamptz, version = version + 1 \
     WHERE id = $6::uuid AND version = $7 AND deleted_at IS NULL RETURNING ",
    columns!()
);
const SIGN: &str = concat!(
    "UPDATE recordings SET signed_at = $1::timestamptz, signed_by = $2, signed_sha256 = $3, \
     acknowledgements = $6::jsonb, updated_at = $1::timestamptz, version = version + 1 \
     WHERE id = $4::uuid AND version = $5 AND deleted_at IS NULL RETURNING ",
    columns!()
);
const AMEND: &str = concat!(
    "UPDATE recordings SET amendments = amendments || jsonb_build_array($1::jsonb), \
     updated_at = $2::timestamptz, version = version + 1 \
     WHERE id = $3::uuid AND version = $4 AND deleted_at IS NULL RETURNING ",
    columns!()
);
const DELETE: &str = "UPDATE recordings SET deleted_at = $1::timestamptz, updated_at = $1::timestamptz, \
     version = version + 1 WHERE id = $2::uuid AND version = $3 AND deleted_at IS NULL RETURNING version";
const END_JOB_OF_DELETED: &str = "UPDATE jobs SET state = 'failed', \
     last_error = 'the recording was deleted', lease_owner = NULL, lease_expires_at = NULL, \
     updated_at = $1::timestamptz WHERE recording_id = $2::uuid AND state IN ('queued', 'running')";
const CHANGES: &str = concat!(
    "SELECT change_seq, deleted_at IS NOT NULL AS deleted, ",
    columns!(),
    " FROM recordings WHERE clinician_id = $1 AND change_seq > $2 ORDER BY change_seq LIMIT $3"
);
const DELETED_WITH_AUDIO: &str = "SELECT id::text, audio_content_type FROM recordings \
     WHERE deleted_at IS NOT NULL AND deleted_at < $1::timestamptz AND audio_content_type IS NOT NULL \
     LIMIT $2";
const FORGET_AUDIO: &str = "UPDATE recordings SET audio_content_type = NULL, version = version + 1 \
     WHERE id = $1::uuid AND deleted_at IS NOT NULL AND audio_content_type IS NOT NULL \
     RETURNING patient_id";
const REASSIGN: &str = "UPDATE recordings SET clinician_id = $2, updated_at = $3::timestamptz, \
     version = version + 1 WHERE clinician_id = $1 RETURNING id::text, patient_id";
const UPDATE_STATUS: &str = concat!(
    "UPDATE recordings SET status = $1, error_message = $2, updated_at = $3::timestamptz, version = version + 1, \
     processed_at = CASE WHEN $4 THEN $3::timestamptz ELSE processed_at END \
     WHERE id = $5::uuid AND deleted_at IS NULL RETURNING ",
    columns!()
);
const BY_LOCAL_STORAGE_KEY: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM recordings WHERE clinician_id = $1 AND local_storage_key = $2::uuid AND deleted_at IS NULL"
);
const RECORD_UPLOAD_ATTEMPT: &str = concat!(
    "UPDATE recordings SET upload_attempts = upload_attempts + 1, version = version + 1 WHERE id = $1::uuid AND deleted_at IS NULL RETURNING ",
    columns!()
);
/// Many rows in one statement: one array per column, unnested into rows.
const INSERT_MANY: &str = "INSERT INTO recordings (id, patient_id, clinician_id, audio_file_path, \
     audio_file_size, duration_seconds, status, error_message, retry_count, created_at, \
     updated_at, uploaded_at, processed_at, transcript, verification_results, local_storage_key, \
     draft_transcript, final_transcript, upload_attempts, audio_sha256, audio_content_type) \
     SELECT id::uuid, patient_id, clinician_id, audio_file_path, audio_file_size, \
     duration_seconds, status, error_message, retry_count, created_at::timestamptz, \
     updated_at::timestamptz, uploaded_at::timestamptz, processed_at::timestamptz, transcript, \
     verification_results::jsonb, local_storage_key::uuid, draft_transcript, final_transcript, \
     upload_attempts, audio_sha256, audio_content_type \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], \
     $7::text[], $8::text[], $9::int8[], $10::text[], $11::text[], $12::text[], $13::text[], \
     $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::int8[], $20::text[], \
     $21::text[]) AS r(id, patient_id, clinician_id, audio_file_path, \
     audio_file_size, duration_seconds, status, error_message, retry_count, created_at, \
     updated_at, uploaded_at, processed_at, transcript, verification_results, local_storage_key, \
     draft_transcript, final_transcript, upload_attempts, audio_sha256, audio_content_type)";

/// Ends a conditional write: with the row written, its audit event and the
/// commit; without (another version), nothing.
async fn audited_write(
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    row: Option<RecordingRow>,
    audited: &Audited<'_>,
) -> Result<Option<Recording>, StoreError> {
    let Some(row) = row else {
        return Ok(None);
    };
    let after = Recording::try_from(row)?;
    audit::append(&mut tx, &audited.event(&after)).await?;
    tx.commit().await?;
    Ok(Some(after))
}

/// Reads and writes recordings in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgRecordings {
    db: PgDatabase,
}

impl PgRecordings {
    /// A store over `db`.
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }
}

#[async_trait]
impl RecordingStore for PgRecordings {
    /// Inserts one complete recording (PostgreSQL batches concurrent commits itself).
    #[tracing::instrument(name = "recordings.insert", skip_all)]
    async fn insert(&self, r: &Recording) -> Result<(), StoreError> {
        self.insert_batch(std::slice::from_ref(r)).await
    }

    /// Inserts a new recording and its audit event in one transaction.
    #[tracing::instrument(name = "recordings.insert_audited", skip_all)]
    async fn insert_audited(&self, r: &Recording, event: &NewAuditEvent) -> Result<(), StoreError> {
        let mut tx = self.db.pool().begin().await?;
        insert_rows(&mut *tx, std::slice::from_ref(r)).await?;
        audit::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Inserts many complete recordings in one statement: all or none.
    #[tracing::instrument(name = "recordings.insert_batch", skip_all)]
    async fn insert_batch(&self, recordings: &[Recording]) -> Result<(), StoreError> {
        insert_rows(self.db.pool(), recordings).await
    }

    /// The recording with this id.
    #[tracing::instrument(name = "recordings.get", skip_all)]
    async fn get(&self, id: Uuid) -> Result<Recording, StoreError> {
        let row: RecordingRow = sqlx::query_as(GET)
            .bind(id.hyphenated().to_string())
            .fetch_optional(self.db.pool())
            .await?
            .ok_or(StoreError::NotFound(RECORDING_NOT_FOUND))?;
        row.try_into()
    }

    /// The recording with this id as the API's JSON object.
    #[tracing::instrument(name = "recordings.get_json", skip_all)]
    async fn get_json(&self, id: Uuid) -> Result<RecordingJson, StoreError> {
        RecordingJson::of(&self.get(id).await?)
    }

    #[tracing::instrument(name = "recordings.patch", skip_all)]
    async fn patch(
        &self,
        id: Uuid,
        expected_version: i64,
        patch: &RecordingPatch,
        check: CheckUpdate<'_>,
        audited: &Audited<'_>,
    ) -> Result<Option<Recording>, StoreError> {
        let now = Timestamp::now().to_string();
        let id_text = id.hyphenated().to_string();
        let mut tx = self.db.pool().begin().await?;
        let query = sqlx::query(PATCH)
            .bind(patch.patient_id.as_deref())
            .bind(patch.final_transcript.is_some())
            .bind(patch.final_transcript.clone().flatten())
            .bind(patch.status.map(RecordingStatus::as_str))
            .bind(&now)
            .bind(&id_text)
            .bind(expected_version)
            .bind(check.writes());
        let row: Option<RecordingRow> = jobs_sql::bind_check(query, check.stored())
            .try_map(|row| <RecordingRow as sqlx::FromRow<_>>::from_row(&row))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        if patch.status == Some(RecordingStatus::Queued) {
            sqlx::query(jobs_sql::ENQUEUE)
                .bind(&id_text)
                .bind(&now)
                .bind(crate::telemetry::traceparent())
                .execute(&mut *tx)
                .await?;
        }
        if matches!(check, CheckUpdate::Later) {
            sqlx::query(jobs_sql::ENQUEUE_VERIFY)
                .bind(&id_text)
                .bind(&now)
                .bind(crate::telemetry::traceparent())
                .execute(&mut *tx)
                .await?;
        }
        audited_write(tx, Some(row), audited).await
    }

    #[tracing::instrument(name = "recordings.sign", skip_all)]
    async fn sign(
        &self,
        id: Uuid,
        expected_version: i64,
        signature: &Signature,
        audited: &Audited<'_>,
    ) -> Result<Option<Recording>, StoreError> {
        let mut tx = self.db.pool().begin().await?;
        let row: Option<RecordingRow> = sqlx::query_as(SIGN)
            .bind(signature.at.to_string())
            .bind(&signature.by)
            .bind(&signature.sha256)
            .bind(id.hyphenated().to_string())
            .bind(expected_version)
            .bind(signature.acknowledgements_json()?)
            .fetch_optional(&mut *tx)
            .await?;
        audited_write(tx, row, audited).await
    }

    #[tracing::instrument(name = "recordings.amend", skip_all)]
    async fn amend(
        &self,
        id: Uuid,
        expected_version: i64,
        amendment: &Amendment,
        audited: &Audited<'_>,
    ) -> Result<Option<Recording>, StoreError> {
        let json =
            serde_json::to_string(amendment).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.db.pool().begin().await?;
        let row: Option<RecordingRow> = sqlx::query_as(AMEND)
            .bind(json)
            .bind(amendment.created_at.to_string())
            .bind(id.hyphenated().to_string())
            .bind(expected_version)
            .fetch_optional(&mut *tx)
            .await?;
        audited_write(tx, row, audited).await
    }

    #[tracing::instrument(name = "recordings.delete", skip_all)]
    async fn delete(
        &self,
        id: Uuid,
        expected_version: i64,
        at: Timestamp,
        audited: &Audited<'_>,
    ) -> Result<Option<i64>, StoreError> {
        let event = audited.deletion(at);
        let (at, id) = (at.to_string(), id.hyphenated().to_string());
        let mut tx = self.db.pool().begin().await?;
        let version: Option<i64> = sqlx::query_scalar(DELETE)
            .bind(&at)
            .bind(&id)
            .bind(expected_version)
            .fetch_optional(&mut *tx)
            .await?;
        if version.is_some() {
            sqlx::query(END_JOB_OF_DELETED)
                .bind(&at)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            audit::append(&mut tx, &event).await?;
            tx.commit().await?;
        }
        Ok(version)
    }

    #[tracing::instrument(name = "recordings.changes", skip_all)]
    async fn changes(
        &self,
        clinician_id: &str,
        since: i64,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        let rows: Vec<ChangeRow> = sqlx::query_as(CHANGES)
            .bind(clinician_id)
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(self.db.pool())
            .await?;
        rows.into_iter().map(Change::try_from).collect()
    }

    #[tracing::instrument(name = "recordings.deleted_with_audio", skip_all)]
    async fn deleted_with_audio(
        &self,
        cutoff: Timestamp,
        limit: u32,
    ) -> Result<Vec<(Uuid, String)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(DELETED_WITH_AUDIO)
            .bind(cutoff.to_string())
            .bind(i64::from(limit))
            .fetch_all(self.db.pool())
            .await?;
        parse_ids(rows)
    }

    #[tracing::instrument(name = "recordings.forget_audio", skip_all)]
    async fn forget_audio(
        &self,
        id: Uuid,
        content_type: &str,
        context: &AuditContext,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.pool().begin().await?;
        let patient_id: Option<String> = sqlx::query_scalar(FORGET_AUDIO)
            .bind(id.hyphenated().to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(patient_id) = patient_id {
            let event = super::purge_event(context, id, patient_id, content_type);
            audit::append(&mut tx, &event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(name = "recordings.reassign", skip_all)]
    async fn reassign(
        &self,
        from: &str,
        to: &str,
        context: &AuditContext,
    ) -> Result<u64, StoreError> {
        let mut tx = self.db.pool().begin().await?;
        let moved: Vec<(String, String)> = sqlx::query_as(REASSIGN)
            .bind(from)
            .bind(to)
            .bind(Timestamp::now().to_string())
            .fetch_all(&mut *tx)
            .await?;
        let count = moved.len() as u64;
        let events = super::reassign_events(context, from, to, moved)?;
        audit::append_many(&mut tx, &events.iter().collect::<Vec<_>>()).await?;
        tx.commit().await?;
        Ok(count)
    }

    /// One page of a clinician's recordings, newest first.
    #[tracing::instrument(name = "recordings.list_for_clinician", skip_all)]
    async fn list_for_clinician(
        &self,
        clinician_id: &str,
        query: ListQuery,
    ) -> Result<Page, StoreError> {
        let sql = match (query.status.is_some(), query.after.is_some()) {
            (false, false) => LIST,
            (true, false) => LIST_BY_STATUS,
            (false, true) => LIST_AFTER,
            (true, true) => LIST_BY_STATUS_AFTER,
        };
        let mut q = sqlx::query_as::<_, RecordingRow>(sql).bind(clinician_id);
        if let Some(status) = query.status {
            q = q.bind(status.as_str());
        }
        if let Some(after) = query.after {
            q = q
                .bind(after.created_at.to_string())
                .bind(after.id.hyphenated().to_string());
        }
        // One row beyond the page says whether another page follows.
        let rows = q
            .bind(i64::from(query.limit) + 1)
            .fetch_all(self.db.pool())
            .await?;
        let mut recordings = rows
            .into_iter()
            .map(Recording::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let more = recordings.len() > query.limit as usize;
        recordings.truncate(query.limit as usize);
        let next = match recordings.last() {
            Some(last) if more => Some(Cursor {
                created_at: last.created_at,
                id: last.id,
            }),
            _ => None,
        };
        let json =
            serde_json::to_string(&recordings).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let ids = recordings.iter().map(|r| r.id).collect();
        Ok(Page { json, ids, next })
    }

    /// Sets a recording's status; see [`super::RecordingStore::update_status`].
    #[tracing::instrument(name = "recordings.update_status", skip_all)]
    async fn update_status(
        &self,
        id: Uuid,
        status: RecordingStatus,
        error_message: Option<&str>,
    ) -> Result<Recording, StoreError> {
        let row: RecordingRow = sqlx::query_as(UPDATE_STATUS)
            .bind(status.as_str())
            .bind(error_message)
            .bind(Timestamp::now().to_string())
            .bind(status.is_final())
            .bind(id.hyphenated().to_string())
            .fetch_optional(self.db.pool())
            .await?
            .ok_or(StoreError::NotFound(RECORDING_NOT_FOUND))?;
        row.try_into()
    }

    /// Inserts one recording; PostgreSQL's commit is durable (`synchronous_commit=on`).
    #[tracing::instrument(name = "recordings.insert_durable", skip_all)]
    async fn insert_durable(&self, r: &Recording, event: &NewAuditEvent) -> Result<(), StoreError> {
        let mut tx = self.db.pool().begin().await?;
        insert_rows(&mut *tx, std::slice::from_ref(r)).await?;
        if r.status == RecordingStatus::Queued {
            sqlx::query(crate::jobs::store::postgres::ENQUEUE)
                .bind(r.id.hyphenated().to_string())
                .bind(r.updated_at.to_string())
                .bind(crate::telemetry::traceparent())
                .execute(&mut *tx)
                .await?;
        }
        audit::append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The clinician's recording of the dictation `key`, if any.
    #[tracing::instrument(name = "recordings.find_by_local_storage_key", skip_all)]
    async fn find_by_local_storage_key(
        &self,
        clinician_id: &str,
        key: Uuid,
    ) -> Result<Option<Recording>, StoreError> {
        let row: Option<RecordingRow> = sqlx::query_as(BY_LOCAL_STORAGE_KEY)
            .bind(clinician_id)
            .bind(key.hyphenated().to_string())
            .fetch_optional(self.db.pool())
            .await?;
        row.map(Recording::try_from).transpose()
    }

    /// The ids among `ids` (hyphenated) that have a row.
    #[tracing::instrument(name = "recordings.existing_ids_of", skip_all)]
    async fn existing_ids_of(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id::text FROM recordings WHERE id = ANY($1::uuid[])")
                .bind(ids)
                .fetch_all(self.db.pool())
                .await?,
        )
    }

    /// Counts one more upload attempt; returns the recording.
    #[tracing::instrument(name = "recordings.record_upload_attempt", skip_all)]
    async fn record_upload_attempt(
        &self,
        id: Uuid,
        audited: &Audited<'_>,
    ) -> Result<Recording, StoreError> {
        let mut tx = self.db.pool().begin().await?;
        let row: Option<RecordingRow> = sqlx::query_as(RECORD_UPLOAD_ATTEMPT)
            .bind(id.hyphenated().to_string())
            .fetch_optional(&mut *tx)
            .await?;
        audited_write(tx, row, audited)
            .await?
            .ok_or(StoreError::NotFound(RECORDING_NOT_FOUND))
    }

    #[tracing::instrument(name = "recordings.status_counts", skip_all)]
    async fn status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(shared_sql::STATUS_COUNTS)
            .fetch_all(self.db.pool())
            .await?)
    }

    #[tracing::instrument(name = "recordings.clinician_counts", skip_all)]
    async fn clinician_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(shared_sql::CLINICIAN_COUNTS)
            .fetch_all(self.db.pool())
            .await?)
    }

    #[tracing::instrument(name = "recordings.count", skip_all)]
    async fn count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(shared_sql::COUNT)
            .fetch_one(self.db.pool())
            .await?)
    }
}

/// Inserts recordings in one statement on `executor` (the pool, or a transaction).
async fn insert_rows(
    executor: impl sqlx::PgExecutor<'_>,
    recordings: &[Recording],
) -> Result<(), StoreError> {
    if recordings.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&Recording) -> Option<String>| recordings.iter().map(f).collect::<Vec<_>>();
    let int = |f: fn(&Recording) -> Option<i64>| recordings.iter().map(f).collect::<Vec<_>>();
    sqlx::query(INSERT_MANY)
        .bind(text(|r| Some(r.id.hyphenated().to_string())))
        .bind(text(|r| Some(r.patient_id.clone())))
        .bind(text(|r| Some(r.clinician_id.clone())))
        .bind(text(|r| r.audio_file_path.clone()))
        .bind(int(|r| r.audio_file_size))
        .bind(int(|r| r.duration_seconds))
        .bind(text(|r| Some(r.status.as_str().to_owned())))
        .bind(text(|r| r.error_message.clone()))
        .bind(int(|r| Some(r.retry_count)))
        .bind(text(|r| Some(r.created_at.to_string())))
        .bind(text(|r| Some(r.updated_at.to_string())))
        .bind(text(|r| r.uploaded_at.map(|t| t.to_string())))
        .bind(text(|r| r.processed_at.map(|t| t.to_string())))
        .bind(text(|r| r.transcript.clone()))
        .bind(text(|r| {
            r.verification_results.as_ref().map(|v| v.to_string())
        }))
        .bind(text(|r| {
            r.upload
                .local_storage_key
                .map(|k| k.hyphenated().to_string())
        }))
        .bind(text(|r| r.upload.draft_transcript.clone()))
        .bind(text(|r| r.upload.final_transcript.clone()))
        .bind(int(|r| Some(r.upload.upload_attempts)))
        .bind(text(|r| r.upload.audio_sha256.clone()))
        .bind(text(|r| r.upload.audio_content_type.clone()))
        .execute(executor)
        .await?;
    Ok(())
}
