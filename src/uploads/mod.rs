//! Audio uploads that are never lost and never duplicated: the server side of
//! the offline sync queue.
//!
//! A dictation is identified by the client's `local_storage_key` (a UUID it
//! makes when recording starts). Whatever the number of attempts — lost
//! responses, a tab closed mid-upload, retries hours later, two at once — it
//! becomes exactly one recording: the first upload to commit creates it, every
//! later one with the same audio gets it back (200), one with different audio
//! is refused (409).
//!
//! An upload is acknowledged only once both the audio (fsynced, renamed,
//! directory fsynced) and the row (a synced commit) are on disk; the response
//! says `"durable": true`, the client's signal that it may delete its copy.
//!
//! Long dictations go in chunks ([`api`]): a session per dictation records how
//! many bytes the server holds; a dropped connection loses nothing that arrived.

pub mod api;
mod chunked;
pub mod model;
pub mod store;

pub use crate::audit::{AuditAction, AuditContext, Audited};
use chunked::{ChunkOutcome, SessionState};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::audio::receiving::Received;
use crate::audio::storage::AudioStore;
use crate::audio::{AudioError, OpenError};
use crate::config::UploadSettings;
use crate::db::Database;
use crate::files::FsError;
use crate::idempotency::Idempotency;
use crate::recordings::model::UploadDetails;
use crate::recordings::{Recording, RecordingStatus, RecordingStore, StoreError};
use crate::timestamp::Timestamp;
use store::{SessionStore, UploadSession};

/// The metadata that comes with a dictation's audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadMeta {
    /// The patient.
    pub patient_id: String,
    /// Length in seconds.
    pub duration_seconds: i64,
    /// The client's id for the dictation.
    pub local_storage_key: Option<Uuid>,
    /// The device's draft transcript.
    pub draft_transcript: Option<String>,
}

/// A stored upload: the recording, and whether this request created it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The recording (new, or the one an earlier attempt created).
    pub recording: Recording,
    /// `true`: created now (201); `false`: an earlier attempt's (200).
    pub created: bool,
}

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The audio itself (too large, not audio, empty, interrupted, disk).
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The dictation was stored before with different audio.
    #[error(
        "local_storage_key {key} already belongs to a recording with different audio (sha256 {stored}); a new dictation needs a new key"
    )]
    DifferentAudio {
        /// The dictation.
        key: Uuid,
        /// The stored audio's SHA-256.
        stored: String,
    },
    /// A chunked upload's session does not match the request.
    #[error("{0}")]
    Conflict(String),
    /// No session for a chunk.
    #[error(
        "no upload in progress for this local_storage_key: start one with POST /api/v1/uploads"
    )]
    NoSession,
    /// Another request of this process is writing this dictation's chunk.
    #[error("another request is uploading this dictation right now; retry shortly")]
    Busy,
}

impl From<FsError> for UploadError {
    fn from(e: FsError) -> Self {
        Self::Audio(AudioError::Fs(e))
    }
}

/// The upload service: audio store, recordings, chunked-upload sessions.
#[derive(Debug, Clone)]
pub struct Uploads {
    recordings: Arc<dyn RecordingStore>,
    sessions: Arc<dyn SessionStore>,
    idempotency: Idempotency,
    audio: AudioStore,
    settings: UploadSettings,
    /// Dictations whose chunk is being written by this process: one writer each.
    writing: Arc<Mutex<HashSet<(String, Uuid)>>>,
    /// Objects modified up to this time (µs since the epoch) have been checked
    /// for a row: later sweeps look only at newer ones (None: check them all).
    orphans_checked_until: Arc<Mutex<Option<i64>>>,
}

/// Releases a dictation's write slot when dropped.
struct WriteSlot {
    writing: Arc<Mutex<HashSet<(String, Uuid)>>>,
    key: (String, Uuid),
}

impl Drop for WriteSlot {
    fn drop(&mut self) {
        if let Ok(mut writing) = self.writing.lock() {
            writing.remove(&self.key);
        }
    }
}

impl Uploads {
    /// The service over `db`, storing audio in `audio`.
    pub fn new(
        db: Database,
        recordings: Arc<dyn RecordingStore>,
        audio: AudioStore,
        settings: UploadSettings,
    ) -> Result<Self, OpenError> {
        Ok(Self {
            audio,
            sessions: store::open(&db),
            idempotency: Idempotency::new(&db),
            recordings,
            settings,
            writing: Arc::default(),
            orphans_checked_until: Arc::default(),
        })
    }

    /// Chunked upload sessions open (for the metrics).
    pub async fn open_sessions(&self) -> Result<i64, StoreError> {
        self.sessions.count().await
    }

    /// The largest audio accepted, in bytes (`PWA_MAX_UPLOAD_MB`).
    pub fn max_bytes(&self) -> u64 {
        self.settings.max_bytes
    }

    /// Receives a multipart upload's audio into a temporary file (at most
    /// [`Uploads::max_bytes`]; deleted unless stored).
    pub async fn receive<S, E>(&self, body: S) -> Result<Received, AudioError>
    where
        S: futures_util::Stream<Item = Result<axum::body::Bytes, E>>,
        E: std::fmt::Display,
    {
        self.audio.receive(body, self.settings.max_bytes).await
    }

    /// The length of a recording's stored audio (`key` from [`AudioStore::object_key`]).
    pub async fn audio_len(&self, key: &str) -> std::io::Result<u64> {
        self.audio.object_len(key).await
    }

    /// `count` bytes of a recording's stored audio from `start`, as a stream.
    pub async fn audio_stream(
        &self,
        key: &str,
        start: u64,
        count: u64,
    ) -> std::io::Result<futures_util::stream::BoxStream<'static, std::io::Result<axum::body::Bytes>>>
    {
        self.audio.object_stream(key, start, count).await
    }

    /// Stores received audio as the dictation `meta` describes: exactly one
    /// recording per `local_storage_key`, durable before this returns.
    pub async fn store(
        &self,
        context: &AuditContext,
        meta: UploadMeta,
        received: Received,
    ) -> Result<Stored, UploadError> {
        let clinician_id = context.actor.as_str();
        crate::metrics::upload_bytes(received.size);
        if let Some(key) = meta.local_storage_key
            && let Some(existing) = self
                .recordings
                .find_by_local_storage_key(clinician_id, key)
                .await?
        {
            let sha256 = received.sha256.clone();
            self.audio.discard(received).await;
            return self.repeat(context, existing, key, &sha256).await;
        }
        let id = Uuid::now_v7();
        let object = match self.audio.keep(&received, id).await {
            Ok(object) => object,
            Err(e) => {
                self.audio.discard(received).await;
                return Err(e.into());
            }
        };
        let now = Timestamp::now();
        let recording = Recording {
            id,
            patient_id: meta.patient_id,
            clinician_id: clinician_id.to_owned(),
            audio_file_path: Some(object.clone()),
            audio_file_size: i64::try_from(received.size).ok(),
            duration_seconds: Some(meta.duration_seconds),
            status: RecordingStatus::Queued,
            error_message: None,
            retry_count: 0,
            created_at: now,
            updated_at: now,
            uploaded_at: Some(now),
            processed_at: None,
            transcript: None,
            verification_results: None,
            processing: Default::default(),
            version: 1,
            signoff: Default::default(),
            upload: UploadDetails {
                local_storage_key: meta.local_storage_key,
                draft_transcript: meta.draft_transcript,
                final_transcript: None,
                upload_attempts: 1,
                audio_sha256: Some(received.sha256.clone()),
                audio_content_type: Some(received.content_type.to_owned()),
            },
        };
        let event = context.creation(AuditAction::Upload, id, &recording.patient_id, &recording);
        match self.recordings.insert_durable(&recording, &event).await {
            Ok(()) => {
                crate::metrics::upload_completed();
                Ok(Stored {
                    recording,
                    created: true,
                })
            }
            // The same dictation committed by a concurrent attempt (another
            // request, or another instance) between our lookup and our insert.
            Err(StoreError::Duplicate(_)) => {
                self.audio.remove(&object).await;
                let key = meta.local_storage_key.ok_or(StoreError::NotFound(
                    crate::recordings::store::RECORDING_NOT_FOUND,
                ))?;
                let existing = self
                    .recordings
                    .find_by_local_storage_key(clinician_id, key)
                    .await?
                    .ok_or(StoreError::NotFound(
                        crate::recordings::store::RECORDING_NOT_FOUND,
                    ))?;
                self.repeat(context, existing, key, &received.sha256).await
            }
            Err(e) => {
                self.audio.remove(&object).await;
                Err(e.into())
            }
        }
    }

    /// A repeated upload of a stored dictation: the same audio gets the
    /// recording back (counting the attempt), other audio is refused.
    async fn repeat(
        &self,
        context: &AuditContext,
        existing: Recording,
        key: Uuid,
        sha256: &str,
    ) -> Result<Stored, UploadError> {
        match existing.upload.audio_sha256.as_deref() {
            Some(stored) if stored == sha256 => {
                crate::metrics::upload_deduplicated();
                let audited = Audited::new(
                    context,
                    AuditAction::Upload,
                    existing.id,
                    &existing.patient_id,
                    &existing,
                );
                Ok(Stored {
                    recording: self
                        .recordings
                        .record_upload_attempt(existing.id, &audited)
                        .await?,
                    created: false,
                })
            }
            stored => Err(UploadError::DifferentAudio {
                key,
                stored: stored.unwrap_or("none").to_owned(),
            }),
        }
    }

    /// Takes the right to write chunks of a dictation in this process; None
    /// while another request holds it.
    fn write_slot(&self, clinician_id: &str, key: Uuid) -> Option<WriteSlot> {
        let slot = (clinician_id.to_owned(), key);
        let mut writing = self.writing.lock().ok()?;
        writing.insert(slot.clone()).then(|| WriteSlot {
            writing: self.writing.clone(),
            key: slot,
        })
    }

    /// Completes a session whose bytes have all arrived: the recording is
    /// created (or found) exactly once and the session ends.
    async fn complete(
        &self,
        context: &AuditContext,
        session: &UploadSession,
        key: Uuid,
    ) -> Result<Stored, UploadError> {
        let path = self.audio.partial_path(&session.clinician_id, key);
        let received = match self.audio.receive_partial(&path).await {
            Ok(r) => r,
            Err(e) => {
                // Not audio, or empty: the session cannot succeed; start again.
                self.sessions.delete(&session.clinician_id, key).await?;
                return Err(e.into());
            }
        };
        let meta = UploadMeta {
            patient_id: session.patient_id.clone(),
            duration_seconds: session.duration_seconds,
            local_storage_key: Some(key),
            draft_transcript: session.draft_transcript.clone(),
        };
        let stored = self.store(context, meta, received).await?;
        self.sessions.delete(&session.clinician_id, key).await?;
        Ok(stored)
    }

    /// Deletes what expired: idle chunked uploads, temporary files of uploads
    /// cut off by a crash, audio objects whose row was never committed, and
    /// idempotency keys past their 24 hours.
    pub async fn sweep(&self) -> Result<SweepReport, UploadError> {
        let grace = self.settings.expiry;
        let mut report = SweepReport::default();
        let cutoff = Timestamp::ago(grace);
        for session in self.sessions.idle_since(&cutoff).await? {
            let key = session.local_storage_key;
            let path = self.audio.partial_path(&session.clinician_id, key);
            let _ = tokio::fs::remove_file(&path).await;
            self.sessions.delete(&session.clinician_id, key).await?;
            report.sessions += 1;
        }
        report.temporary_files = self.audio.sweep_temporary(grace).await;
        report.orphaned_objects = self.sweep_orphans(cutoff.unix_micros()).await?;
        report.idempotency_keys = self.idempotency.forget_expired().await?;
        report.deleted_audio = self.purge_deleted_audio().await?;
        Ok(report)
    }

    /// Deletes the audio of recordings deleted more than
    /// `PWA_DELETED_RETENTION` ago; the tombstone then forgets it. An object
    /// that cannot be deleted is kept in the list and tried at the next sweep.
    async fn purge_deleted_audio(&self) -> Result<usize, UploadError> {
        const BATCH: u32 = 100;
        let cutoff = Timestamp::ago(self.settings.deleted_retention);
        let mut purged = 0;
        loop {
            let batch = self.recordings.deleted_with_audio(cutoff, BATCH).await?;
            let mut progressed = false;
            for (id, content_type) in &batch {
                let key = AudioStore::object_key(*id, content_type);
                match self.audio.delete(&key).await {
                    Ok(()) => {
                        self.recordings
                            .forget_audio(*id, content_type, &AuditContext::system("cleanup"))
                            .await?;
                        purged += 1;
                        progressed = true;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot purge a deleted recording's audio; retrying later")
                    }
                }
            }
            if batch.len() < BATCH as usize || !progressed {
                return Ok(purged);
            }
        }
    }

    /// Deletes objects older than `until` whose row was never committed. The
    /// first sweep looks at every object (what a crash left); later ones only
    /// at objects modified since the previous `until`, looking back one more
    /// expiry period (an object store may report a modification time a little
    /// before the object became visible, e.g. truncated to the second), so a
    /// sweep does not query the database for every stored dictation.
    async fn sweep_orphans(&self, until: i64) -> Result<usize, UploadError> {
        let look_back = i64::try_from(self.settings.expiry.as_micros()).unwrap_or(i64::MAX);
        let after = self
            .orphans_checked_until
            .lock()
            .ok()
            .and_then(|c| *c)
            .map(|checked| checked.saturating_sub(look_back));
        let candidates = self.audio.objects_modified(after, until).await;
        let ids: Vec<Uuid> = candidates.iter().map(|(id, _)| *id).collect();
        let existing = self.recordings.existing_ids(&ids).await?;
        let mut deleted = 0;
        for (id, key) in &candidates {
            if !existing.contains(id) {
                self.audio.remove(key).await;
                deleted += 1;
            }
        }
        if let Ok(mut checked) = self.orphans_checked_until.lock() {
            *checked = Some(until);
        }
        Ok(deleted)
    }

    /// Runs [`Uploads::sweep`] now and then every so often, until `stop`.
    pub async fn sweep_periodically(self, stop: crate::tasks::CancellationToken) {
        let every = (self.settings.expiry.min(self.settings.deleted_retention) / 4)
            .clamp(Duration::from_secs(1), Duration::from_secs(600));
        loop {
            if stop.is_cancelled() {
                return;
            }
            match self.sweep().await {
                Ok(r) if r != SweepReport::default() => tracing::info!(
                    sessions = r.sessions,
                    temporary_files = r.temporary_files,
                    orphaned_objects = r.orphaned_objects,
                    idempotency_keys = r.idempotency_keys,
                    deleted_audio = r.deleted_audio,
                    "upload cleanup"
                ),
                Ok(_) => {}
                Err(UploadError::Store(StoreError::Closed)) => return,
                Err(e) => tracing::warn!(error = %e, "upload cleanup failed; retrying later"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// What a sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Idle chunked uploads.
    pub sessions: usize,
    /// Temporary files of interrupted uploads.
    pub temporary_files: usize,
    /// Audio without a recording.
    pub orphaned_objects: usize,
    /// Expired idempotency keys.
    pub idempotency_keys: u64,
    /// Audio of recordings deleted longer ago than `PWA_DELETED_RETENTION`.
    pub deleted_audio: usize,
}
