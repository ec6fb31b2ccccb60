//! Review: a clinician's changes to a recording, guarded by its version so
//! that no one's change is lost. A change is made only to the version the
//! clinician saw (`If-Match`); otherwise they get the current recording back
//! and decide.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::model::{
    Acknowledgement, Amendment, AmendmentRequest, Recording, RecordingPatch, RecordingStatus,
    SignRequest,
};
use super::store::{RecordingStore, Signature, StoreError};
use crate::audit::{AuditAction, AuditContext, Audited};
use crate::auth::Role;
use crate::auth::policy;
use crate::guardrails::{CheckUpdate, Guardrails, StoredCheck, fhir};
use crate::jobs::JobStore;
use crate::timestamp::Timestamp;

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
    /// A change to a signed note's text, patient or existence.
    #[error(
        "This note was signed at {signed_at} by {signed_by} and cannot change; \
         add an amendment instead (POST /api/v1/recordings/{{id}}/amendments)"
    )]
    Signed {
        /// When it was signed.
        signed_at: Timestamp,
        /// Who signed it.
        signed_by: String,
    },
    /// Signing a recording that is not `completed`.
    #[error("Only a completed recording can be signed; this one is '{0}'")]
    NotSignable(RecordingStatus),
    /// Signing a recording whose text was cleared.
    #[error("There is no text to sign: final_transcript is empty")]
    NothingToSign,
    /// Amending a note that is not signed (it can simply be patched).
    #[error("Only a signed note takes amendments; change this one with PATCH")]
    NotSigned,
    /// Signing while the note's text is still being checked elsewhere.
    #[error(
        "The guardrails are still checking this note's text; sign it once its \
         verification_results are in (the change feed shows them)"
    )]
    CheckPending,
    /// Signing without acknowledging every critical alert.
    #[error(
        "Every critical alert must be acknowledged with a reason before signing \
         (acknowledgements: [{{\"alert_id\", \"reason\"}}]); not acknowledged: {0}"
    )]
    Unacknowledged(String),
    /// An acknowledgement of an alert the note's check does not have.
    #[error(
        "The note's check has no alert '{0}' (its text may have changed): read the \
         recording again and acknowledge the alerts it lists"
    )]
    UnknownAlert(String),
    /// The guardrails could not check the corrected text.
    #[error(transparent)]
    Check(#[from] crate::guardrails::ExtractError),
    /// The database refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies `patch` to recording `id` if it is at version `if_match`; returns
/// the recording as it is afterwards (unchanged, with the same version, when
/// the patch changes nothing). A change to the text is checked by the
/// guardrails and stored with its check, in the same write: the version the
/// clinician gets back already holds the check of what they wrote.
pub async fn patch_recording(
    store: &dyn RecordingStore,
    guardrails: &Guardrails,
    id: Uuid,
    if_match: i64,
    patch: &RecordingPatch,
    context: &AuditContext,
) -> Result<Recording, ReviewError> {
    let current = current_at(store, id, if_match, context, policy::may_change).await?;
    let changes = patch.changes_to(&current);
    if changes.is_empty() {
        return Ok(current);
    }
    refuse_if_signed(&current)?;
    if let Some(to) = changes.status {
        check_move(current.status, to)?;
    }
    // The check is of the text, and its FHIR bundle names the patient:
    // either changing makes it again.
    let note = match &changes.final_transcript {
        // Cleared: the engine's text is the note again.
        Some(text) => text.as_deref().or(current.transcript.as_deref()),
        None => current
            .upload
            .final_transcript
            .as_deref()
            .or(current.transcript.as_deref()),
    };
    let rechecked = changes.final_transcript.is_some() || changes.patient_id.is_some();
    let stored: Option<StoredCheck>;
    let check = match note {
        _ if !rechecked => CheckUpdate::Keep,
        None => CheckUpdate::Clear,
        Some(_) if !guardrails.checks_in_process() => CheckUpdate::Later,
        Some(text) => {
            let subject = fhir::Subject {
                recording_id: id,
                patient_id: changes.patient_id.as_deref().unwrap_or(&current.patient_id),
                on: current.created_at.date(),
            };
            stored = Some(guardrails.check_recording(text, &subject).await?);
            stored
                .as_ref()
                .map_or(CheckUpdate::Clear, CheckUpdate::Store)
        }
    };
    let audited = audited(context, AuditAction::Update, &current);
    written(
        store,
        id,
        if_match,
        store.patch(id, if_match, &changes, check, &audited).await?,
    )
    .await
}

/// Puts a recording in `error` back in the transcription queue
/// (`POST …/retry`): the change a patch to `{"status": "queued"}` makes,
/// at whatever version the recording is.
pub async fn retry(
    store: &dyn RecordingStore,
    id: Uuid,
    context: &AuditContext,
) -> Result<Recording, ReviewError> {
    let to_queue = RecordingPatch {
        status: Some(RecordingStatus::Queued),
        ..RecordingPatch::default()
    };
    loop {
        let current = get_allowed(store, id, context, policy::may_change).await?;
        if current.status != RecordingStatus::Error {
            return Err(ReviewError::NotRetryable(current.status));
        }
        let audited = audited(context, AuditAction::Retry, &current);
        if let Some(queued) = store
            .patch(id, current.version, &to_queue, CheckUpdate::Keep, &audited)
            .await?
        {
            return Ok(queued);
        }
        // Changed between the read and the write: look again.
    }
}

/// Signs a completed note at version `if_match` for the clinician acting: from then
/// on its text is final, and the SHA-256 of that text is kept with it. Every
/// critical alert of the note's check must be acknowledged with a reason in
/// `request`; the acknowledgements are kept with the signature. A note whose
/// text is still being checked elsewhere cannot be signed yet; one that was
/// never checked (a recording from the original) is checked now.
pub async fn sign(
    store: &dyn RecordingStore,
    jobs: &dyn JobStore,
    guardrails: &Guardrails,
    id: Uuid,
    if_match: i64,
    context: &AuditContext,
    request: SignRequest,
) -> Result<Recording, ReviewError> {
    let current = current_at(store, id, if_match, context, policy::may_change).await?;
    refuse_if_signed(&current)?;
    if current.status != RecordingStatus::Completed {
        return Err(ReviewError::NotSignable(current.status));
    }
    let text = current
        .upload
        .final_transcript
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .ok_or(ReviewError::NothingToSign)?;
    let alerts = match current
        .verification_results
        .as_ref()
        .and_then(crate::guardrails::model::stored_alerts)
    {
        Some(alerts) => alerts,
        None if jobs.check_pending(id).await? => return Err(ReviewError::CheckPending),
        None => {
            let on = current.created_at.date();
            crate::guardrails::model::stored_alerts(&guardrails.verify_in_process(text, on))
                .unwrap_or_default()
        }
    };
    let at = Timestamp::now();
    let acknowledgements = acknowledged(&alerts, request, &context.actor, at)?;
    let signature = Signature {
        at,
        by: context.actor.clone(),
        sha256: crate::digest::hex(&Sha256::digest(text.as_bytes())),
        acknowledgements,
    };
    let audited = audited(context, AuditAction::Sign, &current);
    written(
        store,
        id,
        if_match,
        store.sign(id, if_match, &signature, &audited).await?,
    )
    .await
}

/// Adds an amendment to a signed note at version `if_match`, by the clinician acting.
pub async fn amend(
    store: &dyn RecordingStore,
    id: Uuid,
    if_match: i64,
    context: &AuditContext,
    request: AmendmentRequest,
) -> Result<Recording, ReviewError> {
    let current = current_at(store, id, if_match, context, policy::may_change).await?;
    if current.signoff.signed_at.is_none() {
        return Err(ReviewError::NotSigned);
    }
    let amendment = Amendment {
        text: request.text,
        reason: request.reason,
        author: context.actor.clone(),
        created_at: Timestamp::now(),
    };
    let audited = audited(context, AuditAction::Amend, &current);
    written(
        store,
        id,
        if_match,
        store.amend(id, if_match, &amendment, &audited).await?,
    )
    .await
}

/// Deletes a recording at version `if_match`: it becomes a tombstone that
/// the change feed reports, and its audio is purged after the retention
/// period. A signed note cannot be deleted.
pub async fn delete(
    store: &dyn RecordingStore,
    id: Uuid,
    if_match: i64,
    context: &AuditContext,
) -> Result<(), ReviewError> {
    let current = current_at(store, id, if_match, context, policy::may_delete).await?;
    refuse_if_signed(&current)?;
    let audited = audited(context, AuditAction::Delete, &current);
    match store
        .delete(id, if_match, Timestamp::now(), &audited)
        .await?
    {
        Some(_) => Ok(()),
        None => Err(stale(if_match, get(store, id).await?)),
    }
}

/// The recording, if `rule` lets the actor act on it and it is at version `if_match`.
async fn current_at(
    store: &dyn RecordingStore,
    id: Uuid,
    if_match: i64,
    context: &AuditContext,
    rule: fn(&str, Role, &str) -> bool,
) -> Result<Recording, ReviewError> {
    let current = get_allowed(store, id, context, rule).await?;
    if current.version != if_match {
        return Err(stale(if_match, current));
    }
    Ok(current)
}

/// The outcome of a conditional write: the recording written, or, when it
/// changed (or was deleted) between the read and the write, the 412 (or 404).
async fn written(
    store: &dyn RecordingStore,
    id: Uuid,
    if_match: i64,
    outcome: Option<Recording>,
) -> Result<Recording, ReviewError> {
    match outcome {
        Some(recording) => Ok(recording),
        None => Err(stale(if_match, get(store, id).await?)),
    }
}

fn audited<'a>(context: &'a AuditContext, action: AuditAction, before: &Recording) -> Audited<'a> {
    Audited::new(context, action, before.id, &before.patient_id, before)
}

/// The acknowledgements of a signature: each names an alert of the check,
/// and every critical alert has one.
fn acknowledged(
    alerts: &[crate::guardrails::model::Alert],
    request: SignRequest,
    by: &str,
    at: Timestamp,
) -> Result<Vec<Acknowledgement>, ReviewError> {
    let mut acknowledgements = Vec::new();
    for given in request.acknowledgements {
        let alert = alerts
            .iter()
            .find(|a| a.id == given.alert_id)
            .ok_or_else(|| ReviewError::UnknownAlert(given.alert_id.clone()))?;
        acknowledgements.push(Acknowledgement {
            alert_id: alert.id.clone(),
            rule_id: alert.rule_id.clone(),
            severity: alert.severity.as_str().to_owned(),
            message: alert.message.clone(),
            reason: given.reason,
            by: by.to_owned(),
            at,
        });
    }
    let missing: Vec<String> = alerts
        .iter()
        .filter(|a| a.severity == crate::guardrails::model::Severity::Critical)
        .filter(|a| !acknowledgements.iter().any(|k| k.alert_id == a.id))
        .map(|a| format!("{} ({})", a.id, a.message))
        .collect();
    if !missing.is_empty() {
        return Err(ReviewError::Unacknowledged(missing.join("; ")));
    }
    Ok(acknowledgements)
}

fn refuse_if_signed(current: &Recording) -> Result<(), ReviewError> {
    match (&current.signoff.signed_at, &current.signoff.signed_by) {
        (Some(at), by) => Err(ReviewError::Signed {
            signed_at: *at,
            signed_by: by.clone().unwrap_or_default(),
        }),
        (None, _) => Ok(()),
    }
}

/// The recording, if `rule` (of `auth::policy`) lets the actor act on it;
/// one it may not is not found, as if it did not exist.
async fn get_allowed(
    store: &dyn RecordingStore,
    id: Uuid,
    context: &AuditContext,
    rule: fn(&str, Role, &str) -> bool,
) -> Result<Recording, ReviewError> {
    let recording = get(store, id).await?;
    if !rule(&context.actor, context.role, &recording.clinician_id) {
        return Err(ReviewError::NotFound);
    }
    Ok(recording)
}

/// The recording (for an actor already allowed to act on it).
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
