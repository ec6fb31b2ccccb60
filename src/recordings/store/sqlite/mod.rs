//! The `recordings` SQL for SQLite.

use crate::guardrails::CheckUpdate;
use crate::jobs::store::sqlite as jobs_sql;
use std::sync::Arc;

use uuid::Uuid;

mod insert_queue;

use async_trait::async_trait;
use insert_queue::InsertQueue;

use super::{
    Change, ChangeRow, Cursor, ListQuery, Page, RECORDING_NOT_FOUND, RecordingJson, RecordingRow,
    RecordingStore, Signature, StoreError, parse_ids, shared_sql,
};
use crate::audit::store::sqlite as audit;
use crate::audit::{AuditContext, Audited, NewAuditEvent};
use crate::db::{self, SqliteDatabase};
use crate::recordings::model::{Amendment, Recording, RecordingPatch, RecordingStatus};
use crate::timestamp::Timestamp;

/// The 37 columns, in [`RecordingRow`] order, prepended to a static SQL tail
/// (static strings only: sqlx refuses SQL built at run time, and rightly so).
macro_rules! recording_sql {
    ($head:literal, $tail:literal) => {
        concat!(
            $head,
            " id, patient_id, clinician_id, audio_file_path, audio_file_size, \
             duration_seconds, status, error_message, retry_count, created_at, updated_at, \
             uploaded_at, processed_at, transcript, verification_results, local_storage_key, \
             draft_transcript, final_transcript, upload_attempts, audio_sha256, audio_content_type, \
             whisper_model, transcription_started_at, transcription_completed_at, \
             transcript_language, transcript_segments, fhir_bundle, llm_model, \
             extraction_started_at, extraction_completed_at, verification_score, verified_at, \
             signed_at, signed_by, signed_sha256, amendments, acknowledgements, version ",
            $tail
        )
    };
}

/// A recording as the API's JSON object, built by SQLite from the columns of
/// `recordings` (or of a CTE with the same columns). Keys in the order of the
/// serde model; `tests/store.rs` checks that both give the same JSON.
macro_rules! recording_json {
    () => {
        "json_object('id', id, 'patient_id', patient_id, 'clinician_id', clinician_id, \
         'audio_file_path', audio_file_path, 'audio_file_size', audio_file_size, \
         'duration_seconds', duration_seconds, 'status', status, 'error_message', error_message, \
         'retry_count', retry_count, 'created_at', created_at, 'updated_at', updated_at, \
         'uploaded_at', uploaded_at, 'processed_at', processed_at, 'transcript', transcript, \
         'verification_results', json(verification_results), \
         'local_storage_key', local_storage_key, 'draft_transcript', draft_transcript, \
         'final_transcript', final_transcript, 'upload_attempts', upload_attempts, \
         'audio_sha256', audio_sha256, 'audio_content_type', audio_content_type, \
         'whisper_model', whisper_model, 'transcription_started_at', transcription_started_at, \
         'transcription_completed_at', transcription_completed_at, \
         'transcript_language', transcript_language, \
         'transcript_segments', json(transcript_segments), 'fhir_bundle', json(fhir_bundle), \
         'llm_model', llm_model, 'extraction_started_at', extraction_started_at, \
         'extraction_completed_at', extraction_completed_at, \
         'verification_score', verification_score, 'verified_at', verified_at, \
         'signed_at', signed_at, 'signed_by', signed_by, 'signed_sha256', signed_sha256, \
         'amendments', json(amendments), 'acknowledgements', json(acknowledgements), \
         'version', version)"
    };
}

/// A page of a clinician's list as one JSON array (`[` `]` added by the caller),
/// its row count, the position of its last row (`created_at id`, which
/// sorts as the pair does: both parts are fixed-width), and its ids (comma
/// separated, in the page's order, for the read's audit event). Parameters, in order:
/// clinician, the filter's own, `limit`.
///
/// The subquery reads the page through the list index, in order, and the
/// aggregate concatenates in the order it receives rows: SQLite never flattens a
/// subquery with a LIMIT into an aggregate. (`group_concat(... ORDER BY ...)`
/// would say so explicitly, at the cost of re-sorting the page: a third slower.)
/// The ordering tests in tests/it/store.rs and tests/it/api.rs guard this.
///
/// `LIMIT ? + 0`, not `LIMIT ?`: SQLite plans around the value of a bare LIMIT
/// parameter and so re-prepares the statement every time it is re-bound (a
/// third of the query's cost); an expression keeps one plan for all values.
macro_rules! list_json_sql {
    ($filter:literal) => {
        concat!(
            "SELECT coalesce(group_concat(doc, ','), ''), count(*), \
             min(created_at || ' ' || id), coalesce(group_concat(id, ','), '') \
             FROM (SELECT created_at, id, ",
            recording_json!(),
            " AS doc FROM recordings WHERE clinician_id = ? AND deleted_at IS NULL",
            $filter,
            " ORDER BY created_at DESC, id DESC LIMIT ? + 0)"
        )
    };
}

/// Whether a clinician's list goes on after a position (same filters as the page).
macro_rules! list_more_sql {
    ($filter:literal) => {
        concat!(
            "SELECT EXISTS (SELECT 1 FROM recordings WHERE clinician_id = ? AND deleted_at IS NULL",
            $filter,
            " AND (created_at, id) < (?, ?))"
        )
    };
}

/// The store's SQL, public so that tests can check each statement's query plan.
pub mod sql {
    /// One recording by id.
    pub const GET: &str = recording_sql!(
        "SELECT",
        "FROM recordings WHERE id = ?1 AND deleted_at IS NULL"
    );
    /// One recording as the API's JSON object.
    pub const GET_JSON: &str = concat!(
        "SELECT version, patient_id, clinician_id, ",
        recording_json!(),
        " FROM recordings WHERE id = ?1 AND deleted_at IS NULL"
    );
    // Four static list shapes rather than `(? IS NULL OR status = ?)`, which
    // would stop SQLite from using the (clinician_id, status, created_at, id) index.
    /// A clinician's first page.
    pub const LIST: &str = list_json_sql!("");
    /// A clinician's first page of one status.
    pub const LIST_BY_STATUS: &str = list_json_sql!(" AND status = ?");
    /// A clinician's page after a cursor.
    pub const LIST_AFTER: &str = list_json_sql!(" AND (created_at, id) < (?, ?)");
    /// A clinician's page of one status after a cursor.
    pub const LIST_BY_STATUS_AFTER: &str =
        list_json_sql!(" AND status = ? AND (created_at, id) < (?, ?)");
    /// Whether a clinician's list goes on after a position.
    pub const LIST_MORE: &str = list_more_sql!("");
    /// Whether a clinician's list of one status goes on after a position.
    pub const LIST_BY_STATUS_MORE: &str = list_more_sql!(" AND status = ?");
    /// A clinician's recording of one dictation.
    pub const BY_LOCAL_STORAGE_KEY: &str = recording_sql!(
        "SELECT",
        "FROM recordings WHERE clinician_id = ?1 AND local_storage_key = ?2 AND deleted_at IS NULL"
    );
    /// One more upload attempt, returning the row.
    pub const RECORD_UPLOAD_ATTEMPT: &str = recording_sql!(
        "UPDATE recordings SET upload_attempts = upload_attempts + 1, version = version + 1 WHERE id = ?1 AND deleted_at IS NULL RETURNING",
        ""
    );
    /// A clinician's patch at an expected version, returning the updated row.
    pub const PATCH: &str = recording_sql!(
        "UPDATE recordings SET patient_id = coalesce(?1, patient_id), \
         final_transcript = CASE WHEN ?2 THEN ?3 ELSE final_transcript END, \
         status = coalesce(?4, status), \
         error_message = CASE WHEN ?4 = 'queued' THEN NULL ELSE error_message END, \
         retry_count = retry_count + CASE WHEN ?4 = 'queued' THEN 1 ELSE 0 END, \
         verification_results = CASE WHEN ?8 THEN ?9 ELSE verification_results END, \
         verification_score = CASE WHEN ?8 THEN ?10 ELSE verification_score END, \
         extraction_started_at = CASE WHEN ?8 THEN ?11 ELSE extraction_started_at END, \
         extraction_completed_at = CASE WHEN ?8 THEN ?12 ELSE extraction_completed_at END, \
         verified_at = CASE WHEN ?8 THEN ?12 ELSE verified_at END, \
         llm_model = CASE WHEN ?8 THEN ?13 ELSE llm_model END, \
         fhir_bundle = CASE WHEN ?8 THEN ?14 ELSE fhir_bundle END, \
         updated_at = ?5, version = version + 1 WHERE id = ?6 AND version = ?7 AND deleted_at IS NULL RETURNING",
        ""
    );
    /// A signature at an expected version, returning the updated row.
    pub const SIGN: &str = recording_sql!(
        "UPDATE recordings SET signed_at = ?1, signed_by = ?2, signed_sha256 = ?3, updated_at = ?1, \
         acknowledgements = ?6, version = version + 1 \
         WHERE id = ?4 AND version = ?5 AND deleted_at IS NULL RETURNING",
        ""
    );
    /// An amendment (JSON) appended at an expected version, returning the updated row.
    pub const AMEND: &str = recording_sql!(
        "UPDATE recordings SET amendments = json_insert(amendments, '$[#]', json(?1)), \
         updated_at = ?2, version = version + 1 \
         WHERE id = ?3 AND version = ?4 AND deleted_at IS NULL RETURNING",
        ""
    );
    /// A recording made a tombstone at an expected version, returning its version.
    pub const DELETE: &str = "UPDATE recordings SET deleted_at = ?1, updated_at = ?1, \
         version = version + 1 WHERE id = ?2 AND version = ?3 AND deleted_at IS NULL RETURNING version";
    /// The pending job of a deleted recording, ended (a worker holding it
    /// loses its lease, so its result is dropped).
    pub const END_JOB_OF_DELETED: &str = "UPDATE jobs SET state = 'failed', \
         last_error = 'the recording was deleted', lease_owner = NULL, lease_expires_at = NULL, \
         updated_at = ?1 WHERE recording_id = ?2 AND state IN ('queued', 'running')";
    /// A clinician's rows changed after a change number, in change order.
    pub const CHANGES: &str = recording_sql!(
        "SELECT change_seq, deleted_at IS NOT NULL AS deleted,",
        "FROM recordings WHERE clinician_id = ?1 AND change_seq > ?2 ORDER BY change_seq LIMIT ?3"
    );
    /// Tombstones deleted before a time whose audio is still kept.
    pub const DELETED_WITH_AUDIO: &str = "SELECT id, audio_content_type FROM recordings \
         WHERE deleted_at IS NOT NULL AND deleted_at < ?1 AND audio_content_type IS NOT NULL LIMIT ?2";
    /// A tombstone's audio is gone.
    pub const FORGET_AUDIO: &str = "UPDATE recordings SET audio_content_type = NULL, \
         version = version + 1 WHERE id = ?1 AND deleted_at IS NOT NULL AND audio_content_type IS NOT NULL \
         RETURNING patient_id";
    pub const REASSIGN: &str = "UPDATE recordings SET clinician_id = ?2, updated_at = ?3, \
         version = version + 1 WHERE clinician_id = ?1 RETURNING id, patient_id";
    /// Status change, returning the updated row.
    pub const UPDATE_STATUS: &str = recording_sql!(
        "UPDATE recordings SET status = ?1, error_message = ?2, updated_at = ?3, version = version + 1, \
         processed_at = CASE WHEN ?4 THEN ?3 ELSE processed_at END \
         WHERE id = ?5 AND deleted_at IS NULL RETURNING",
        ""
    );
}

/// Reads and writes recordings in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteRecordings {
    db: SqliteDatabase,
    inserts: InsertQueue,
}

impl SqliteRecordings {
    /// A store over `db`; starts its group-commit task on the current runtime.
    pub fn new(db: SqliteDatabase) -> Self {
        Self {
            inserts: InsertQueue::start(db.clone()),
            db,
        }
    }
}

#[async_trait]
impl RecordingStore for SqliteRecordings {
    /// Inserts a complete recording as given, through the group-commit queue.
    #[tracing::instrument(name = "recordings.insert", skip_all)]
    async fn insert(&self, r: &Recording) -> Result<(), StoreError> {
        self.inserts.insert(r.clone(), None).await
    }

    /// Inserts a new recording and its audit event, through the group-commit queue.
    #[tracing::instrument(name = "recordings.insert_audited", skip_all)]
    async fn insert_audited(&self, r: &Recording, event: &NewAuditEvent) -> Result<(), StoreError> {
        self.inserts.insert(r.clone(), Some(event.clone())).await
    }

    /// Inserts many complete recordings in one transaction: all or none.
    #[tracing::instrument(name = "recordings.insert_batch", skip_all)]
    async fn insert_batch(&self, recordings: &[Recording]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        insert_many(&mut tx, recordings).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The recording with this id.
    #[tracing::instrument(name = "recordings.get", skip_all)]
    async fn get(&self, id: Uuid) -> Result<Recording, StoreError> {
        let row: RecordingRow = sqlx::query_as(sql::GET)
            .bind(id.hyphenated().to_string())
            .fetch_optional(self.db.readers())
            .await?
            .ok_or(StoreError::NotFound(RECORDING_NOT_FOUND))?;
        row.try_into()
    }

    /// The recording with this id as the API's JSON object (built by SQLite).
    #[tracing::instrument(name = "recordings.get_json", skip_all)]
    async fn get_json(&self, id: Uuid) -> Result<RecordingJson, StoreError> {
        let (version, patient_id, clinician_id, json) = sqlx::query_as(sql::GET_JSON)
            .bind(id.hyphenated().to_string())
            .fetch_optional(self.db.readers())
            .await?
            .ok_or(StoreError::NotFound(RECORDING_NOT_FOUND))?;
        Ok(RecordingJson {
            json,
            version,
            patient_id,
            clinician_id,
        })
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
        let mut tx = self.db.begin_write().await?;
        let query = sqlx::query(sql::PATCH)
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
        let mut tx = self.db.begin_write().await?;
        let row: Option<RecordingRow> = sqlx::query_as(sql::SIGN)
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
        let mut tx = self.db.begin_write().await?;
        let row: Option<RecordingRow> = sqlx::query_as(sql::AMEND)
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
        let mut tx = self.db.begin_write().await?;
        let version: Option<i64> = sqlx::query_scalar(sql::DELETE)
            .bind(&at)
            .bind(&id)
            .bind(expected_version)
            .fetch_optional(&mut *tx)
            .await?;
        if version.is_some() {
            sqlx::query(sql::END_JOB_OF_DELETED)
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
        let rows: Vec<ChangeRow> = sqlx::query_as(sql::CHANGES)
            .bind(clinician_id)
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(self.db.readers())
            .await?;
        rows.into_iter().map(Change::try_from).collect()
    }

    #[tracing::instrument(name = "recordings.deleted_with_audio", skip_all)]
    async fn deleted_with_audio(
        &self,
        cutoff: Timestamp,
        limit: u32,
    ) -> Result<Vec<(Uuid, String)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(sql::DELETED_WITH_AUDIO)
            .bind(cutoff.to_string())
            .bind(i64::from(limit))
            .fetch_all(self.db.readers())
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
        let mut tx = self.db.begin_write().await?;
        let patient_id: Option<String> = sqlx::query_scalar(sql::FORGET_AUDIO)
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
        let mut tx = self.db.begin_write().await?;
        let moved: Vec<(String, String)> = sqlx::query_as(sql::REASSIGN)
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

    /// One page of a clinician's recordings, newest first, optionally of one
    /// status, as the JSON array the API answers (built by SQLite: no row is
    /// decoded into Rust and encoded again).
    #[tracing::instrument(name = "recordings.list_for_clinician", skip_all)]
    async fn list_for_clinician(
        &self,
        clinician_id: &str,
        query: ListQuery,
    ) -> Result<Page, StoreError> {
        let sql = match (query.status.is_some(), query.after.is_some()) {
            (false, false) => sql::LIST,
            (true, false) => sql::LIST_BY_STATUS,
            (false, true) => sql::LIST_AFTER,
            (true, true) => sql::LIST_BY_STATUS_AFTER,
        };
        let mut q =
            sqlx::query_as::<_, (String, i64, Option<String>, String)>(sql).bind(clinician_id);
        if let Some(status) = query.status {
            q = q.bind(status.as_str());
        }
        if let Some(after) = query.after {
            q = q
                .bind(after.created_at.to_string())
                .bind(after.id.hyphenated().to_string());
        }
        let (items, count, last, ids) = q
            .bind(i64::from(query.limit))
            .fetch_one(self.db.readers())
            .await?;
        let json = format!("[{items}]");
        let ids = ids
            .split(',')
            .filter(|id| !id.is_empty())
            .map(Uuid::parse_str)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Corrupt(format!("a listed id: {e}")))?;
        // A full page may be the last one: one index probe tells.
        let next = match last {
            Some(last) if count == i64::from(query.limit) => {
                let corrupt = |e: &dyn std::fmt::Display| {
                    StoreError::Corrupt(format!("list position {last:?}: {e}"))
                };
                let (created_at, id) = last
                    .split_once(' ')
                    .ok_or_else(|| corrupt(&"no separator"))?;
                let cursor = Cursor {
                    created_at: Timestamp::parse(created_at).map_err(|e| corrupt(&e))?,
                    id: Uuid::parse_str(id).map_err(|e| corrupt(&e))?,
                };
                let more_sql = if query.status.is_some() {
                    sql::LIST_BY_STATUS_MORE
                } else {
                    sql::LIST_MORE
                };
                let mut more = sqlx::query_scalar::<_, bool>(more_sql).bind(clinician_id);
                if let Some(status) = query.status {
                    more = more.bind(status.as_str());
                }
                let more = more
                    .bind(created_at)
                    .bind(id)
                    .fetch_one(self.db.readers())
                    .await?;
                more.then_some(cursor)
            }
            _ => None,
        };
        Ok(Page { json, ids, next })
    }

    /// Sets a recording's status (and error message), maintaining `updated_at`,
    /// and `processed_at` when processing ends (`completed` or `error`).
    #[tracing::instrument(name = "recordings.update_status", skip_all)]
    async fn update_status(
        &self,
        id: Uuid,
        status: RecordingStatus,
        error_message: Option<&str>,
    ) -> Result<Recording, StoreError> {
        let now = Timestamp::now().to_string();
        let mut tx = self.db.begin_write().await?;
        let row: Option<RecordingRow> = sqlx::query_as(sql::UPDATE_STATUS)
            .bind(status.as_str())
            .bind(error_message)
            .bind(&now)
            .bind(status.is_final())
            .bind(id.hyphenated().to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let row = row.ok_or(StoreError::NotFound(RECORDING_NOT_FOUND))?;
        tx.commit().await?;
        row.try_into()
    }

    /// Inserts one recording in a transaction of its own whose commit is
    /// fsynced (`synchronous=FULL` for that commit when the database runs `normal`).
    #[tracing::instrument(name = "recordings.insert_durable", skip_all)]
    async fn insert_durable(&self, r: &Recording, event: &NewAuditEvent) -> Result<(), StoreError> {
        use crate::config::SqliteSynchronous;
        let mut conn = self.db.writer().acquire().await?;
        let switch = self.db.synchronous() == SqliteSynchronous::Normal;
        if switch {
            sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut *conn)
                .await?;
        }
        let outcome = async {
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE").await?;
            insert_many(&mut tx, std::slice::from_ref(r)).await?;
            // A dictation stored is a dictation queued: its job in the same commit.
            if r.status == RecordingStatus::Queued {
                sqlx::query(crate::jobs::store::sqlite::ENQUEUE)
                    .bind(r.id.hyphenated().to_string())
                    .bind(r.updated_at.to_string())
                    .bind(crate::telemetry::traceparent())
                    .execute(&mut *tx)
                    .await?;
            }
            audit::append(&mut tx, event).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        }
        .await;
        if switch {
            // Back to the configured setting; should this fail, the connection
            // only stays slower, never less safe.
            let _ = sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await;
        }
        outcome
    }

    /// The clinician's recording of the dictation `key`, if any.
    #[tracing::instrument(name = "recordings.find_by_local_storage_key", skip_all)]
    async fn find_by_local_storage_key(
        &self,
        clinician_id: &str,
        key: Uuid,
    ) -> Result<Option<Recording>, StoreError> {
        let row: Option<RecordingRow> = sqlx::query_as(sql::BY_LOCAL_STORAGE_KEY)
            .bind(clinician_id)
            .bind(key.hyphenated().to_string())
            .fetch_optional(self.db.readers())
            .await?;
        row.map(Recording::try_from).transpose()
    }

    /// The ids among `ids` (hyphenated) that have a row.
    #[tracing::instrument(name = "recordings.existing_ids_of", skip_all)]
    async fn existing_ids_of(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        let ids = serde_json::to_string(ids).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(sqlx::query_scalar(
            "SELECT id FROM recordings WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(ids)
        .fetch_all(self.db.readers())
        .await?)
    }

    /// Counts one more upload attempt; returns the recording.
    #[tracing::instrument(name = "recordings.record_upload_attempt", skip_all)]
    async fn record_upload_attempt(
        &self,
        id: Uuid,
        audited: &Audited<'_>,
    ) -> Result<Recording, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let row: Option<RecordingRow> = sqlx::query_as(sql::RECORD_UPLOAD_ATTEMPT)
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
            .fetch_all(self.db.readers())
            .await?)
    }

    #[tracing::instrument(name = "recordings.clinician_counts", skip_all)]
    async fn clinician_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(shared_sql::CLINICIAN_COUNTS)
            .fetch_all(self.db.readers())
            .await?)
    }

    #[tracing::instrument(name = "recordings.count", skip_all)]
    async fn count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(shared_sql::COUNT)
            .fetch_one(self.db.readers())
            .await?)
    }
}

/// Ends a conditional write: with the row written, its audit event and the
/// commit; without (another version), nothing.
async fn audited_write(
    mut tx: sqlx::Transaction<'static, sqlx::Sqlite>,
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

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// A bulk load of recordings into an SQLite file that nothing else has open
/// (`clinscribe seed --count` with no server running): one transaction on a
/// connection of its own ([`db::sqlite::connect_for_bulk_load`]: rollback journal, large
/// page cache) in which the table's secondary indexes are dropped, rows are
/// appended, and the indexes rebuilt at the end, since sorting once is far
/// cheaper than maintaining seven B-trees row by row.
///
/// CHECK constraints are not evaluated for the appended rows: they guard the
/// text formats of ids, timestamps and JSON against other writers, and cost
/// more than the rest of the insert (3.9 s against 1.5 s for 1,000,000 rows
/// in `benches/experiments/seed_breakdown.py`); the rows loaded here are
/// encoded by the same typed code as the API's. `PRAGMA integrity_check`
/// (`clinscribe check`) still verifies every CHECK, which the seed tests run.
///
/// Dropping the loader without [`BulkLoader::finish`] rolls everything back,
/// indexes included, and so does a crash.
pub struct BulkLoader {
    conn: sqlx::SqliteConnection,
    indexes: Vec<String>,
}

impl BulkLoader {
    /// Opens the file at `path` and starts the load (see [`BulkLoader`]).
    pub async fn open(path: &std::path::Path) -> Result<Self, db::DbError> {
        let mut conn = db::sqlite::connect_for_bulk_load(path).await?;
        sqlx::query("PRAGMA ignore_check_constraints = ON")
            .execute(&mut conn)
            .await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await?;
        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, sql FROM sqlite_master \
             WHERE type = 'index' AND tbl_name = 'recordings' AND sql IS NOT NULL",
        )
        .fetch_all(&mut conn)
        .await?;
        for (name, _) in &indexes {
            // The name comes from sqlite_master; quoted as an identifier.
            let sql = format!("DROP INDEX \"{}\"", name.replace('"', "\"\""));
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await?;
        }
        Ok(Self {
            conn,
            indexes: indexes.into_iter().map(|(_, sql)| sql).collect(),
        })
    }

    /// Appends recordings, bound beforehand (see [`BoundInserts`]).
    pub async fn push(&mut self, recordings: BoundInserts) -> Result<(), StoreError> {
        recordings.execute(&mut self.conn).await
    }

    /// Rebuilds the indexes, commits, and returns the file to WAL mode.
    pub async fn finish(mut self) -> Result<(), db::DbError> {
        for sql in &self.indexes {
            // Index definitions read back from sqlite_master.
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .execute(&mut self.conn)
                .await?;
        }
        sqlx::query("COMMIT").execute(&mut self.conn).await?;
        sqlx::query("PRAGMA ignore_check_constraints = OFF")
            .execute(&mut self.conn)
            .await?;
        db::sqlite::leave_bulk_load(self.conn).await?;
        Ok(())
    }
}

/// One INSERT on a transaction (the group-commit queue's fallback, row by row).
pub(crate) async fn insert_one(
    conn: &mut sqlx::SqliteConnection,
    r: &Recording,
) -> Result<(), StoreError> {
    insert_many(conn, std::slice::from_ref(r)).await
}

/// Multi-row INSERTs of `recordings` on a transaction.
pub(crate) async fn insert_many<R: std::borrow::Borrow<Recording>>(
    conn: &mut sqlx::SqliteConnection,
    recordings: &[R],
) -> Result<(), StoreError> {
    BoundInserts::new(recordings).execute(conn).await
}

/// Recordings bound to multi-row INSERT statements, ready to run.
///
/// Binding (formatting ids, timestamps and JSON, copying strings) is most of
/// the client's share of an insert; making it a value of its own lets a bulk
/// load bind the next rows on one core while SQLite writes these on the other.
/// Statements come in a few fixed sizes only, so that batches of every length
/// reuse the same handful of prepared statements instead of preparing (and
/// evicting from sqlx's statement cache) one per length.
pub struct BoundInserts(Vec<SqliteQuery<'static>>);

impl BoundInserts {
    /// Binds `recordings` (in order).
    pub fn new<R: std::borrow::Borrow<Recording>>(recordings: &[R]) -> Self {
        // The largest: 21 × 500 = 10,500 parameters, well under SQLite's 32,766.
        const SIZES: [usize; 5] = [500, 64, 16, 4, 1];
        static SQL: [std::sync::OnceLock<String>; 5] = [const { std::sync::OnceLock::new() }; 5];
        let mut statements = Vec::new();
        let mut rest = recordings;
        for (i, size) in db::sqlite::fixed_size_chunks(rest.len(), &SIZES) {
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            let sql = SQL[i].get_or_init(|| insert_sql(size));
            // The SQL is made only of the static fragments in `insert_sql`.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
            for r in chunk {
                q = bind_recording(q, r.borrow());
            }
            statements.push(q);
        }
        Self(statements)
    }

    /// Runs the INSERTs on `conn`, in order.
    async fn execute(self, conn: &mut sqlx::SqliteConnection) -> Result<(), StoreError> {
        for q in self.0 {
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// `INSERT ... VALUES (...), (...)` for `rows` recordings (21 parameters each).
fn insert_sql(rows: usize) -> String {
    let one = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let mut sql = String::from(
        "INSERT INTO recordings (id, patient_id, clinician_id, audio_file_path, audio_file_size, \
         duration_seconds, status, error_message, retry_count, created_at, updated_at, \
         uploaded_at, processed_at, transcript, verification_results, local_storage_key, \
         draft_transcript, final_transcript, upload_attempts, audio_sha256, audio_content_type) \
         VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(one);
    }
    sql
}

/// Binds one recording's 21 values, in [`insert_sql`] column order.
///
/// Text goes in as `Arc<str>`, which sqlx keeps as it is: a `String` would be
/// wrapped in an `Arc` of its own, two allocations per value instead of one,
/// each freed later on the connection's thread (see `docs/BENCHMARKS.md`,
/// "Seeding").
fn bind_recording<'q>(q: SqliteQuery<'q>, r: &Recording) -> SqliteQuery<'q> {
    let text = |s: &str| Arc::<str>::from(s);
    let time = |t: Timestamp| Arc::<str>::from(t.to_string());
    let id = |id: Uuid| text(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    q.bind(id(r.id))
        .bind(text(&r.patient_id))
        .bind(text(&r.clinician_id))
        .bind(r.audio_file_path.as_deref().map(text))
        .bind(r.audio_file_size)
        .bind(r.duration_seconds)
        .bind(text(r.status.as_str()))
        .bind(r.error_message.as_deref().map(text))
        .bind(r.retry_count)
        .bind(time(r.created_at))
        .bind(time(r.updated_at))
        .bind(r.uploaded_at.map(time))
        .bind(r.processed_at.map(time))
        .bind(r.transcript.as_deref().map(text))
        .bind(
            r.verification_results
                .as_ref()
                .map(|v| Arc::<str>::from(v.to_string())),
        )
        .bind(r.upload.local_storage_key.map(id))
        .bind(r.upload.draft_transcript.as_deref().map(text))
        .bind(r.upload.final_transcript.as_deref().map(text))
        .bind(r.upload.upload_attempts)
        .bind(r.upload.audio_sha256.as_deref().map(text))
        .bind(r.upload.audio_content_type.as_deref().map(text))
}
