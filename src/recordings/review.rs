//! Review: a clinician's changes to a recording, guarded by its version so
//! that no one's change is lost. A change is made only to the version the
//! clinician saw (`If-Match`); otherwise they get the current recording back
//! and decide.

use uuid::Uuid;

use super::model::{Recording, RecordingPatch, RecordingStatus};
use super::store::{RecordingStore, StoreError};

/// Why a patch was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// No such recording.
    #[error("Recording not found")]
    NotFound,
    /// The recording changed since the version the client saw: the current one.
    #[error("The recording has changed since version {seen}: it is at version {}", current.version)]
    Stale {
        /// The version the client sent.
        seen: i64,
        /// The recording as it is now.
        current: Box<Recording>,
    },
    /// A status move the state machine does not allow a clinician.
    #[error("{0}")]
    IllegalTransition(String),
    /// `POST …/retry` of a recording that is not in `error`.
    #[error("only a recording in status 'error' can be retried; this one is '{0}'")]
    NotRetryable(RecordingStatus),
    /// The database refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies `patch` to recording `id` if it is at version `if_match`; returns
/// the recording as it is afterwards (unchanged, with the same version, when
/// the patch changes nothing).
pub async fn patch_recording(
    store: &dyn RecordingStore,
    id: Uuid,
    if_match: i64,
    patch: &RecordingPatch,
) -> Result<Recording, ReviewError> {
    let current = get(store, id).await?;
    if current.version != if_match {
        return Err(stale(if_match, current));
    }
    let changes = patch.changes_to(&current);
    if changes.is_empty() {
        return Ok(current);
    }
    if let Some(to) = changes.status {
        check_move(current.status, to)?;
    }
    match store.patch(id, if_match, &changes).await? {
        Some(updated) => Ok(updated),
        // Changed (or deleted) between the read and the write.
        None => Err(stale(if_match, get(store, id).await?)),
    }
}

/// Puts a recording in `error` back in the transcription queue
/// (`POST …/retry`): the change a patch to `{"status": "queued"}` makes,
/// at whatever version the recording is.
pub async fn retry(store: &dyn RecordingStore, id: Uuid) -> Result<Recording, ReviewError> {
    let to_queue = RecordingPatch {
        status: Some(RecordingStatus::Queued),
        ..RecordingPatch::default()
    };
    loop {
        let current = get(store, id).await?;
        if current.status != RecordingStatus::Error {
            return Err(ReviewError::NotRetryable(current.status));
        }
        if let Some(queued) = store.patch(id, current.version, &to_queue).await? {
            return Ok(queued);
        }
        // Changed between the read and the write: look again.
    }
}

async fn get(store: &dyn RecordingStore, id: Uuid) -> Result<Recording, ReviewError> {
    match store.get(id).await {
        Err(StoreError::NotFound(_)) => Err(ReviewError::NotFound),
        other => Ok(other?),
    }
}

fn stale(seen: i64, current: Recording) -> ReviewError {
    ReviewError::Stale {
        seen,
        current: Box::new(current),
    }
}

/// Refuses a move a clinician may not make, naming the ones they may.
fn check_move(from: RecordingStatus, to: RecordingStatus) -> Result<(), ReviewError> {
    let allowed = from.clinician_moves();
    if allowed.contains(&to) {
        return Ok(());
    }
    let allowed = if allowed.is_empty() {
        "none".to_owned()
    } else {
        allowed
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(ReviewError::IllegalTransition(format!(
        "A recording cannot go from '{from}' to '{to}'; from '{from}' a clinician may move it to: {allowed}"
    )))
}
