//! All SQL about the `recordings` table lives in this module: one file per
//! backend (`sqlite`, [`postgres`]) behind one [`RecordingStore`], so handlers
//! and services never know which database serves them.

pub mod postgres;
mod sqlite;

use crate::guardrails::CheckUpdate;
use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::FromRow;
use uuid::Uuid;

use super::model::{
    Acknowledgement, Amendment, NewRecording, Processing, Recording, RecordingPatch,
    RecordingStatus, SignOff, UploadDetails,
};
use crate::audit::{AuditAction, AuditContext, Audited, NewAuditEvent};
use crate::db::Database;
pub use crate::db::StoreError;
use crate::timestamp::Timestamp;

pub use sqlite::{BoundInserts, BulkLoader, sql};

/// What a missing recording answers.
pub const RECORDING_NOT_FOUND: &str = "Recording not found";

/// A position in a clinician's list, newest first: the last item of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last item returned.
    pub created_at: Timestamp,
    /// `id` of the last item returned (breaks ties between equal timestamps).
    pub id: Uuid,
}

/// A cursor string that was not produced by [`Cursor::encode`].
#[derive(Debug, thiserror::Error)]
#[error("invalid cursor")]
pub struct InvalidCursor;

impl Cursor {
    /// An opaque URL-safe token.
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(24);
        raw.extend_from_slice(&self.created_at.unix_micros().to_be_bytes());
        raw.extend_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Reads a token made by [`Cursor::encode`].
    pub fn decode(token: &str) -> Result<Self, InvalidCursor> {
        let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| InvalidCursor)?;
        let (micros, id) = raw.split_at_checked(8).ok_or(InvalidCursor)?;
        let micros = i64::from_be_bytes(micros.try_into().map_err(|_| InvalidCursor)?);
        Ok(Self {
            created_at: Timestamp::from_unix_micros(micros).ok_or(InvalidCursor)?,
            id: Uuid::from_slice(id).map_err(|_| InvalidCursor)?,
        })
    }
}

/// A recording as the API's JSON object, and its version (its `ETag`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingJson {
    /// The JSON object.
    pub json: String,
    /// `version`.
    pub version: i64,
    /// `patient_id` (whose data a read reveals).
    pub patient_id: String,
    /// `clinician_id` (whose recording it is).
    pub clinician_id: String,
}

impl RecordingJson {
    /// The JSON of a typed recording.
    pub fn of(recording: &Recording) -> Result<Self, StoreError> {
        Ok(Self {
            json: serde_json::to_string(recording)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            version: recording.version,
            patient_id: recording.patient_id.clone(),
            clinician_id: recording.clinician_id.clone(),
        })
    }
}

/// A signature: who signed, when, and the hash of the text signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// When.
    pub at: Timestamp,
    /// The clinician.
    pub by: String,
    /// SHA-256 (hex) of the signed text.
    pub sha256: String,
    /// The alerts acknowledged with it.
    pub acknowledgements: Vec<Acknowledgement>,
}

impl Signature {
    /// The acknowledgements as the JSON array stored.
    pub fn acknowledgements_json(&self) -> Result<String, StoreError> {
        serde_json::to_string(&self.acknowledgements)
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

/// The events of giving recordings `(id, patient_id)` of `from` to `to`.
fn reassign_events(
    context: &AuditContext,
    from: &str,
    to: &str,
    moved: Vec<(String, String)>,
) -> Result<Vec<NewAuditEvent>, StoreError> {
    moved
        .into_iter()
        .map(|(id, patient_id)| {
            let id = Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(context.event(
                AuditAction::Reassign,
                Some(id),
                Some(patient_id),
                serde_json::json!({ "clinician_id": [from, to] }),
            ))
        })
        .collect()
}

/// The event of purging the audio (of `content_type`) of recording `id` of `patient_id`.
fn purge_event(
    context: &AuditContext,
    id: Uuid,
    patient_id: String,
    content_type: &str,
) -> NewAuditEvent {
    context.event(
        AuditAction::Purge,
        Some(id),
        Some(patient_id),
        serde_json::json!({ "audio_content_type": [content_type, null] }),
    )
}

/// One entry of the change feed: a recording as it is now, or its tombstone.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Its change number (the feed's position after it).
    pub seq: i64,
    /// The recording's id.
    pub id: Uuid,
    /// Its version.
    pub version: i64,
    /// The recording; None for a deletion.
    pub recording: Option<Recording>,
}

/// A row of the change feed: the change number, whether it is a tombstone,
/// and the recording's columns.
#[derive(FromRow)]
struct ChangeRow {
    change_seq: i64,
    deleted: bool,
    #[sqlx(flatten)]
    row: RecordingRow,
}

impl TryFrom<ChangeRow> for Change {
    type Error = StoreError;

    fn try_from(change: ChangeRow) -> Result<Self, Self::Error> {
        let recording = Recording::try_from(change.row)?;
        Ok(Self {
            seq: change.change_seq,
            id: recording.id,
            version: recording.version,
            recording: (!change.deleted).then_some(recording),
        })
    }
}

/// `(id, text)` rows with the ids parsed.
fn parse_ids(rows: Vec<(String, String)>) -> Result<Vec<(Uuid, String)>, StoreError> {
    rows.into_iter()
        .map(|(id, text)| {
            Uuid::parse_str(&id)
                .map(|id| (id, text))
                .map_err(|e| StoreError::Corrupt(format!("recording id {id:?}: {e}")))
        })
        .collect()
}

/// Which page of a clinician's recordings to list.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery {
    /// Only recordings in this status.
    pub status: Option<RecordingStatus>,
    /// At most this many items.
    pub limit: u32,
    /// Start after this position (None: the newest).
    pub after: Option<Cursor>,
}

/// One page of a list, and where the next one starts (None: this was the last).
#[derive(Debug, Clone)]
pub struct Page {
    /// The recordings, newest first, as a JSON array (the API's representation).
    pub json: String,
    /// Their ids, in the same order.
    pub ids: Vec<Uuid>,
    /// Cursor for the next page.
    pub next: Option<Cursor>,
}

impl Page {
    /// The items as typed recordings.
    pub fn recordings(&self) -> Result<Vec<Recording>, StoreError> {
        serde_json::from_str(&self.json).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

/// Reads and writes the `recordings` table. One implementation per backend
/// (`sqlite::SqliteRecordings`, [`postgres::PgRecordings`]); [`open`] picks
/// the one for a database. Services hold an `Arc<dyn RecordingStore>`.
#[async_trait]
pub trait RecordingStore: Send + Sync + std::fmt::Debug {
    /// Inserts a complete recording as given, without an audit event (rows
    /// that already existed elsewhere: tests, imports).
    async fn insert(&self, r: &Recording) -> Result<(), StoreError>;

    /// Inserts a new recording and its audit event in one transaction.
    async fn insert_audited(&self, r: &Recording, event: &NewAuditEvent) -> Result<(), StoreError>;

    /// Inserts many complete recordings in one transaction (seeding, imports):
    /// all or none.
    async fn insert_batch(&self, recordings: &[Recording]) -> Result<(), StoreError>;

    /// The recording with this id.
    async fn get(&self, id: Uuid) -> Result<Recording, StoreError>;

    /// The recording with this id as the API's JSON object.
    async fn get_json(&self, id: Uuid) -> Result<RecordingJson, StoreError>;

    /// Applies a clinician's patch (only fields that change) if the recording
    /// is still at `expected_version`, growing the version by one; None when
    /// it is not (or is gone). A move to `queued` counts a retry and writes
    /// the recording's job in the same transaction. `check` says what
    /// becomes of the guardrails' check (with [`CheckUpdate::Later`], its
    /// `verify` job is written in the same transaction too). Each of the clinician's
    /// changes below writes its audit event (`audited`) in its transaction.
    async fn patch(
        &self,
        id: Uuid,
        expected_version: i64,
        patch: &RecordingPatch,
        check: CheckUpdate<'_>,
        audited: &Audited<'_>,
    ) -> Result<Option<Recording>, StoreError>;

    /// Signs the recording if it is still at `expected_version` (None when
    /// it is not, or is gone).
    async fn sign(
        &self,
        id: Uuid,
        expected_version: i64,
        signature: &Signature,
        audited: &Audited<'_>,
    ) -> Result<Option<Recording>, StoreError>;

    /// Appends an amendment if the recording is still at `expected_version`
    /// (None when it is not, or is gone).
    async fn amend(
        &self,
        id: Uuid,
        expected_version: i64,
        amendment: &Amendment,
        audited: &Audited<'_>,
    ) -> Result<Option<Recording>, StoreError>;

    /// Makes the recording a tombstone (`deleted_at`) if it is still at
    /// `expected_version`, and ends its pending job in the same transaction;
    /// returns the tombstone's version (None when it is not at that version,
    /// or is gone).
    async fn delete(
        &self,
        id: Uuid,
        expected_version: i64,
        at: Timestamp,
        audited: &Audited<'_>,
    ) -> Result<Option<i64>, StoreError>;

    /// A clinician's recordings changed after change number `since`, in
    /// change order, at most `limit` (tombstones included).
    async fn changes(
        &self,
        clinician_id: &str,
        since: i64,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError>;

    /// Tombstones deleted before `cutoff` whose audio is still kept: `(id,
    /// audio_content_type)`, at most `limit`.
    async fn deleted_with_audio(
        &self,
        cutoff: Timestamp,
        limit: u32,
    ) -> Result<Vec<(Uuid, String)>, StoreError>;

    /// Records that a tombstone's audio is gone (`audio_content_type` null),
    /// with a `purge` event by `context`.
    async fn forget_audio(
        &self,
        id: Uuid,
        content_type: &str,
        context: &AuditContext,
    ) -> Result<(), StoreError>;

    /// Gives every recording of clinician `from` (deleted ones included, so
    /// that the feed's tombstones follow) to `to`, one audited change each;
    /// returns how many moved.
    async fn reassign(
        &self,
        from: &str,
        to: &str,
        context: &AuditContext,
    ) -> Result<u64, StoreError>;

    /// One page of a clinician's recordings, newest first, optionally of one
    /// status, as the JSON array the API answers.
    async fn list_for_clinician(
        &self,
        clinician_id: &str,
        query: ListQuery,
    ) -> Result<Page, StoreError>;

    /// Sets a recording's status (and error message), maintaining `updated_at`,
    /// and `processed_at` when processing ends (`completed` or `error`).
    async fn update_status(
        &self,
        id: Uuid,
        status: RecordingStatus,
        error_message: Option<&str>,
    ) -> Result<Recording, StoreError>;

    /// Inserts an uploaded recording, and its audit event in the same
    /// transaction, and answers only once its commit is on
    /// disk even through a power loss (SQLite: that commit with
    /// `synchronous=FULL`; PostgreSQL commits so by default). A taken
    /// `local_storage_key` is [`StoreError::Duplicate`].
    async fn insert_durable(&self, r: &Recording, event: &NewAuditEvent) -> Result<(), StoreError>;

    /// The clinician's recording of the dictation `local_storage_key`, if any.
    async fn find_by_local_storage_key(
        &self,
        clinician_id: &str,
        local_storage_key: Uuid,
    ) -> Result<Option<Recording>, StoreError>;

    /// Counts one more upload attempt of a recording (a retried upload), with
    /// its event; returns it.
    async fn record_upload_attempt(
        &self,
        id: Uuid,
        audited: &Audited<'_>,
    ) -> Result<Recording, StoreError>;

    /// Which of `ids` (at most 500, hyphenated) have a recording.
    async fn existing_ids_of(&self, ids: &[String]) -> Result<Vec<String>, StoreError>;

    /// Recordings per status, as `(status, count)` rows in any order.
    async fn status_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Recordings per clinician, as `(clinician_id, count)` rows in any order.
    async fn clinician_counts(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Number of recordings (all clinicians).
    async fn count(&self) -> Result<i64, StoreError>;

    /// Creates a `pending` recording for the clinician of `context`, audited.
    async fn create(
        &self,
        context: &AuditContext,
        new: NewRecording,
    ) -> Result<Recording, StoreError> {
        // Time-ordered ids keep inserts at the right edge of the primary-key index.
        self.create_with_id(Uuid::now_v7(), context, new).await
    }

    /// Creates a `pending` recording with a given id (an id taken is
    /// [`StoreError::Duplicate`]: see `Idempotency-Key`).
    async fn create_with_id(
        &self,
        id: Uuid,
        context: &AuditContext,
        new: NewRecording,
    ) -> Result<Recording, StoreError> {
        let clinician_id = context.actor.as_str();
        let now = Timestamp::now();
        let recording = Recording {
            id,
            patient_id: new.patient_id,
            clinician_id: clinician_id.to_owned(),
            audio_file_path: new.audio_file_path,
            audio_file_size: None,
            duration_seconds: Some(new.duration_seconds),
            status: RecordingStatus::Pending,
            error_message: None,
            retry_count: 0,
            created_at: now,
            updated_at: now,
            uploaded_at: None,
            processed_at: None,
            transcript: None,
            verification_results: None,
            processing: Default::default(),
            signoff: SignOff::default(),
            version: 1,
            upload: Default::default(),
        };
        let event = context.creation(AuditAction::Create, id, &recording.patient_id, &recording);
        self.insert_audited(&recording, &event).await?;
        Ok(recording)
    }

    /// Which of `ids` have a recording (one query per 500 ids).
    async fn existing_ids(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
        let mut found = HashSet::new();
        for chunk in ids.chunks(500) {
            let texts: Vec<String> = chunk.iter().map(|id| id.hyphenated().to_string()).collect();
            for id in self.existing_ids_of(&texts).await? {
                found.insert(Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?);
            }
        }
        Ok(found)
    }

    /// Recordings per status, in life-cycle order (statuses with none omitted).
    async fn count_by_status(&self) -> Result<Vec<(RecordingStatus, i64)>, StoreError> {
        let rows = self.status_counts().await?;
        Ok(RecordingStatus::ALL
            .into_iter()
            .filter_map(|status| {
                rows.iter()
                    .find(|(s, _)| s == status.as_str())
                    .map(|(_, n)| (status, *n))
            })
            .collect())
    }

    /// Recordings per clinician, by clinician id (byte order on both backends).
    async fn count_by_clinician(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut rows = self.clinician_counts().await?;
        rows.sort();
        Ok(rows)
    }
}

/// The store for `db` (on SQLite, starts its group-commit task on the current runtime).
pub fn open(db: &Database) -> Arc<dyn RecordingStore> {
    match db {
        Database::Sqlite(db) => Arc::new(sqlite::SqliteRecordings::new(db.clone())),
        Database::Postgres(db) => Arc::new(postgres::PgRecordings::new(db.clone())),
    }
}

/// SQL both backends run as it is.
pub(crate) mod shared_sql {
    /// `(status, count)` per status.
    pub const STATUS_COUNTS: &str =
        "SELECT status, count(*) FROM recordings WHERE deleted_at IS NULL GROUP BY status";
    /// `(clinician_id, count)` per clinician.
    pub const CLINICIAN_COUNTS: &str = "SELECT clinician_id, count(*) FROM recordings WHERE deleted_at IS NULL GROUP BY clinician_id";
    /// Number of rows (tombstones of deleted recordings included).
    pub const COUNT: &str = "SELECT count(*) FROM recordings";
}

/// A row as both backends return it (every value as text), before parsing ids,
/// statuses and timestamps.
#[derive(FromRow)]
struct RecordingRow {
    id: String,
    patient_id: String,
    clinician_id: String,
    audio_file_path: Option<String>,
    audio_file_size: Option<i64>,
    duration_seconds: Option<i64>,
    status: String,
    error_message: Option<String>,
    retry_count: i64,
    created_at: String,
    updated_at: String,
    uploaded_at: Option<String>,
    processed_at: Option<String>,
    transcript: Option<String>,
    verification_results: Option<String>,
    local_storage_key: Option<String>,
    draft_transcript: Option<String>,
    final_transcript: Option<String>,
    upload_attempts: i64,
    audio_sha256: Option<String>,
    audio_content_type: Option<String>,
    whisper_model: String,
    transcription_started_at: Option<String>,
    transcription_completed_at: Option<String>,
    transcript_language: Option<String>,
    transcript_segments: Option<String>,
    fhir_bundle: Option<String>,
    llm_model: Option<String>,
    extraction_started_at: Option<String>,
    extraction_completed_at: Option<String>,
    verification_score: Option<f64>,
    verified_at: Option<String>,
    signed_at: Option<String>,
    signed_by: Option<String>,
    signed_sha256: Option<String>,
    amendments: String,
    acknowledgements: String,
    version: i64,
}

impl TryFrom<RecordingRow> for Recording {
    type Error = StoreError;

    fn try_from(row: RecordingRow) -> Result<Self, Self::Error> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("recording {}: {what}: {e}", row.id))
        };
        let ts = |s: &str| Timestamp::parse(s).map_err(|e| corrupt("timestamp", &e));
        let opt_ts = |s: &Option<String>| s.as_deref().map(ts).transpose();
        fn json<T: serde::de::DeserializeOwned>(
            s: &Option<String>,
            corrupt: impl Fn(&str, &dyn std::fmt::Display) -> StoreError,
            what: &str,
        ) -> Result<Option<T>, StoreError> {
            s.as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt(what, &e))
        }
        Ok(Recording {
            id: Uuid::parse_str(&row.id).map_err(|e| corrupt("id", &e))?,
            status: row.status.parse().map_err(|e| corrupt("status", &e))?,
            created_at: ts(&row.created_at)?,
            updated_at: ts(&row.updated_at)?,
            uploaded_at: opt_ts(&row.uploaded_at)?,
            processed_at: opt_ts(&row.processed_at)?,
            verification_results: json(&row.verification_results, corrupt, "verification_results")?,
            processing: Processing {
                transcription_started_at: opt_ts(&row.transcription_started_at)?,
                transcription_completed_at: opt_ts(&row.transcription_completed_at)?,
                transcript_segments: json(
                    &row.transcript_segments,
                    corrupt,
                    "transcript_segments",
                )?,
                fhir_bundle: json(&row.fhir_bundle, corrupt, "fhir_bundle")?,
                extraction_started_at: opt_ts(&row.extraction_started_at)?,
                extraction_completed_at: opt_ts(&row.extraction_completed_at)?,
                verified_at: opt_ts(&row.verified_at)?,
                whisper_model: row.whisper_model,
                transcript_language: row.transcript_language,
                llm_model: row.llm_model,
                verification_score: row.verification_score,
            },
            upload: UploadDetails {
                local_storage_key: row
                    .local_storage_key
                    .as_deref()
                    .map(Uuid::parse_str)
                    .transpose()
                    .map_err(|e| corrupt("local_storage_key", &e))?,
                draft_transcript: row.draft_transcript,
                final_transcript: row.final_transcript,
                upload_attempts: row.upload_attempts,
                audio_sha256: row.audio_sha256,
                audio_content_type: row.audio_content_type,
            },
            signoff: SignOff {
                signed_at: opt_ts(&row.signed_at)?,
                signed_by: row.signed_by,
                signed_sha256: row.signed_sha256,
                amendments: serde_json::from_str(&row.amendments)
                    .map_err(|e| corrupt("amendments", &e))?,
                acknowledgements: serde_json::from_str(&row.acknowledgements)
                    .map_err(|e| corrupt("acknowledgements", &e))?,
            },
            patient_id: row.patient_id,
            clinician_id: row.clinician_id,
            audio_file_path: row.audio_file_path,
            audio_file_size: row.audio_file_size,
            duration_seconds: row.duration_seconds,
            error_message: row.error_message,
            retry_count: row.retry_count,
            transcript: row.transcript,
            version: row.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            created_at: Timestamp::parse("2026-11-27T23:53:30.306917Z").unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in ["", "abc", "!!!!", &URL_SAFE_NO_PAD.encode([0u8; 10])] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }
}
