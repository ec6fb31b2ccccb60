//! Chunked (resumable) uploads, for long dictations and bad networks: the
//! sequences behind `POST /api/v1/uploads` (start or resume a session),
//! `HEAD`/`GET /api/v1/uploads/{key}` (where it stands) and
//! `PUT /api/v1/uploads/{key}` (append a chunk; the last one stores the
//! dictation, exactly once).

use crate::audit::AuditContext;
use axum::body::Bytes;
use futures_util::Stream;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use super::model::{ChunkRange, StartUpload};
use super::store::{NewSession, UploadSession};
use super::{Stored, UploadError, Uploads};
use crate::audio::AudioError;
use crate::audio::sniff::{SNIFF_LEN, audio_content_type};
use crate::recordings::Recording;

/// Where a chunked upload stands.
#[derive(Debug, Clone)]
pub struct SessionState {
    /// The dictation.
    pub key: Uuid,
    /// Its whole length in bytes.
    pub total_bytes: i64,
    /// How many bytes the server holds: the client sends from here.
    pub received_bytes: i64,
    /// The stored recording, once the dictation is complete.
    pub recording: Option<Recording>,
}

impl SessionState {
    fn in_progress(key: Uuid, session: &UploadSession) -> Self {
        Self {
            key,
            total_bytes: session.total_bytes,
            received_bytes: session.received_bytes,
            recording: None,
        }
    }

    fn complete(key: Uuid, recording: Recording, size: i64) -> Self {
        Self {
            key,
            total_bytes: size,
            received_bytes: size,
            recording: Some(recording),
        }
    }
}

/// What one chunk did.
#[derive(Debug)]
pub enum ChunkOutcome {
    /// Stored; more to come.
    Partial(SessionState),
    /// The last byte arrived: the dictation is stored (or an earlier attempt stored it).
    Stored(Stored),
    /// No session, but the dictation was stored before: a retry of the last
    /// chunk whose answer was lost.
    AlreadyStored(Recording),
    /// The chunk does not start where the server stands: send from this offset.
    SendFrom(i64),
}

impl Uploads {
    /// Starts (or resumes) the chunked upload `start` describes; `true` when
    /// this call created the session. A dictation stored before answers as complete.
    pub async fn start_session(
        &self,
        clinician_id: &str,
        start: StartUpload,
    ) -> Result<(SessionState, bool), UploadError> {
        let limit = self.settings.max_bytes;
        if u64::try_from(start.total_bytes).unwrap_or(u64::MAX) > limit {
            return Err(AudioError::TooLarge { limit }.into());
        }
        let key = start.local_storage_key;
        if let Some(existing) = self
            .recordings
            .find_by_local_storage_key(clinician_id, key)
            .await?
        {
            let size = existing.audio_file_size.unwrap_or(start.total_bytes);
            return Ok((SessionState::complete(key, existing, size), false));
        }
        let (session, created) = self
            .sessions
            .start(NewSession {
                clinician_id,
                key,
                patient_id: &start.patient_id,
                duration_seconds: start.duration_seconds,
                draft_transcript: start.draft_transcript.as_deref(),
                total_bytes: start.total_bytes,
            })
            .await?;
        if session.total_bytes != start.total_bytes
            || session.patient_id != start.patient_id
            || session.duration_seconds != start.duration_seconds
        {
            return Err(UploadError::Conflict(format!(
                "an upload of local_storage_key {key} is in progress with other metadata ({} bytes for patient {}); finish it or wait for it to expire",
                session.total_bytes, session.patient_id
            )));
        }
        Ok((SessionState::in_progress(key, &session), created))
    }

    /// Where the chunked upload of `key` stands (complete, with its
    /// recording, once stored).
    pub async fn session_state(
        &self,
        clinician_id: &str,
        key: Uuid,
    ) -> Result<SessionState, UploadError> {
        if let Some(session) = self.sessions.get(clinician_id, key).await? {
            return Ok(SessionState::in_progress(key, &session));
        }
        match self
            .recordings
            .find_by_local_storage_key(clinician_id, key)
            .await?
        {
            Some(recording) => {
                let size = recording.audio_file_size.unwrap_or(0);
                Ok(SessionState::complete(key, recording, size))
            }
            None => Err(UploadError::NoSession),
        }
    }

    /// Appends the bytes of `range` from `body` to the upload of `key`. What
    /// arrived is kept (fsynced) even when the client breaks off; the last
    /// byte stores the dictation.
    pub async fn append_chunk<S, E>(
        &self,
        context: &AuditContext,
        key: Uuid,
        range: ChunkRange,
        body: S,
    ) -> Result<ChunkOutcome, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let clinician_id = context.actor.as_str();
        let Some(session) = self.sessions.get(clinician_id, key).await? else {
            return match self
                .recordings
                .find_by_local_storage_key(clinician_id, key)
                .await?
            {
                Some(recording) => Ok(ChunkOutcome::AlreadyStored(recording)),
                None => Err(UploadError::NoSession),
            };
        };
        if range.total != session.total_bytes {
            return Err(UploadError::Conflict(format!(
                "this upload is {} bytes long, not {}",
                session.total_bytes, range.total
            )));
        }
        if range.start != session.received_bytes {
            return Ok(ChunkOutcome::SendFrom(session.received_bytes));
        }
        let Some(_slot) = self.write_slot(clinician_id, key) else {
            return Err(UploadError::Busy);
        };
        let path = self.audio.partial_path(clinician_id, key);
        // The bytes received so far are on the disk of the instance that took them:
        // if they are not here (another instance without a shared PWA_AUDIO_DIR, or
        // lost), start this dictation again from byte 0 here rather than store a gap.
        let on_disk = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
        if on_disk < u64::try_from(session.received_bytes).unwrap_or(0) {
            let _ = tokio::fs::remove_file(&path).await;
            self.sessions.set_received(clinician_id, key, 0).await?;
            return Ok(ChunkOutcome::SendFrom(0));
        }
        let chunk_end = u64::try_from(range.end + 1).unwrap_or(0);
        let start = u64::try_from(range.start).unwrap_or(0);
        let (written, outcome) = self.audio.append(&path, start, chunk_end, body).await;
        let written = i64::try_from(written).unwrap_or(0);
        self.sessions
            .set_received(clinician_id, key, written)
            .await?;
        outcome?;
        if range.start == 0 && written >= SNIFF_LEN as i64 || written == range.total {
            self.refuse_unless_audio(clinician_id, key, &path).await?;
        }
        if written < range.total {
            return Ok(ChunkOutcome::Partial(SessionState {
                key,
                total_bytes: range.total,
                received_bytes: written,
                recording: None,
            }));
        }
        Ok(ChunkOutcome::Stored(
            self.complete(context, &session, key).await?,
        ))
    }

    /// Ends a chunked upload whose first bytes are not audio, deleting it.
    async fn refuse_unless_audio(
        &self,
        clinician_id: &str,
        key: Uuid,
        path: &std::path::Path,
    ) -> Result<(), UploadError> {
        let mut prefix = vec![0u8; SNIFF_LEN];
        let n = match tokio::fs::File::open(path).await {
            Ok(mut file) => file.read(&mut prefix).await.unwrap_or(0),
            Err(_) => 0,
        };
        if audio_content_type(&prefix[..n]).is_some() {
            return Ok(());
        }
        let _ = tokio::fs::remove_file(path).await;
        self.sessions.delete(clinician_id, key).await?;
        Err(AudioError::NotAudio.into())
    }
}
