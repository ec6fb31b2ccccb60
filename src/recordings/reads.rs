//! Reads of patient data: each answer's audit event (who read what, from
//! where) is recorded through the [`AuditLog`] before the data leaves (in
//! SQLite's audit spool, or committed). A read the trail cannot record fails
//! with the trail's error (503, or 507 on a full disk) and reveals nothing.
//!
//! An answer that carries no patient data is not a read: a 304 (the client's
//! copy is current), a 404.

use std::sync::Arc;

use uuid::Uuid;

use super::model::Recording;
use super::store::{Change, ListQuery, Page, RecordingJson, RecordingStore, StoreError};
use crate::audit::{AuditContext, AuditEvent, AuditLog, AuditStore, ReadOf};
use crate::auth::policy;

/// Why a read was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Another clinician's list, asked by someone who is not an administrator.
    #[error("Only an administrator lists another clinician's recordings")]
    NotYours,
    /// The database (or the trail) refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One recording, or that the client's copy is current.
#[derive(Debug)]
pub enum Read {
    /// The recording's JSON (its read recorded).
    Recording(RecordingJson),
    /// The client holds this version already (nothing read).
    NotModified(i64),
}

/// The reading service: the stores, and the trail each read goes into.
#[derive(Debug, Clone)]
pub struct Reads {
    recordings: Arc<dyn RecordingStore>,
    audit: Arc<dyn AuditStore>,
    log: AuditLog,
}

impl Reads {
    /// Reads over these stores, recording each read in `log`.
    pub fn new(
        recordings: Arc<dyn RecordingStore>,
        audit: Arc<dyn AuditStore>,
        log: AuditLog,
    ) -> Self {
        Self {
            recordings,
            audit,
            log,
        }
    }

    /// Recording `id`, unless `is_current(version)` says the client has it.
    pub async fn recording(
        &self,
        context: &AuditContext,
        id: Uuid,
        is_current: impl FnOnce(i64) -> bool,
    ) -> Result<Read, StoreError> {
        let recording = self.recordings.get_json(id).await?;
        if !policy::may_read(&context.actor, context.role, &recording.clinician_id) {
            return Err(not_found());
        }
        if is_current(recording.version) {
            return Ok(Read::NotModified(recording.version));
        }
        self.log
            .record(context.read(ReadOf::Recording, id, &recording.patient_id))
            .await?;
        Ok(Read::Recording(recording))
    }

    /// A page of the recordings of `clinician` (None: the actor's own).
    pub async fn list(
        &self,
        context: &AuditContext,
        clinician: Option<&str>,
        query: ListQuery,
    ) -> Result<Page, ReadError> {
        let clinician = clinician.unwrap_or(&context.actor);
        if !policy::may_list(&context.actor, context.role, clinician) {
            return Err(ReadError::NotYours);
        }
        let page = self.recordings.list_for_clinician(clinician, query).await?;
        if !page.ids.is_empty() {
            self.log
                .record(context.read_many(ReadOf::List, &page.ids))
                .await?;
        }
        Ok(page)
    }

    /// The acting clinician's changes after `since`.
    pub async fn changes(
        &self,
        context: &AuditContext,
        since: i64,
        limit: u32,
    ) -> Result<Vec<Change>, StoreError> {
        let changes = self
            .recordings
            .changes(&context.actor, since, limit)
            .await?;
        // A deletion reveals only an id the client had; what it returns whole is read.
        let read: Vec<Uuid> = changes
            .iter()
            .filter(|c| c.recording.is_some())
            .map(|c| c.id)
            .collect();
        if !read.is_empty() {
            self.log
                .record(context.read_many(ReadOf::Changes, &read))
                .await?;
        }
        Ok(changes)
    }

    /// Recording `id`'s audit history, oldest first.
    pub async fn history(
        &self,
        context: &AuditContext,
        id: Uuid,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        // A recording that is not there (or was deleted) has no history to show.
        let recording = self.recordings.get(id).await?;
        if !policy::may_read(&context.actor, context.role, &recording.clinician_id) {
            return Err(not_found());
        }
        let events = self.audit.history(id).await?;
        self.log
            .record(context.read(ReadOf::History, id, &recording.patient_id))
            .await?;
        Ok(events)
    }

    /// Recording `id`, whose audio the actor is about to download (not yet a
    /// read: [`Reads::audio`] records it once the audio is found).
    pub async fn audio_source(
        &self,
        context: &AuditContext,
        id: Uuid,
    ) -> Result<Recording, StoreError> {
        let recording = self.recordings.get(id).await?;
        if !policy::may_download(&context.actor, context.role, &recording.clinician_id) {
            return Err(not_found());
        }
        Ok(recording)
    }

    /// Records that the audio of `recording` is being sent.
    pub async fn audio(
        &self,
        context: &AuditContext,
        recording: &Recording,
    ) -> Result<(), StoreError> {
        self.log
            .record(context.read(ReadOf::Audio, recording.id, &recording.patient_id))
            .await
    }
}

/// What a recording the actor may not see answers: the same as one that does
/// not exist.
fn not_found() -> StoreError {
    StoreError::NotFound(super::store::RECORDING_NOT_FOUND)
}
