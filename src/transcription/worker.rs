//! A transcription worker: claims a job, holds its lease while the engine
//! works, and stores the transcript or the failure. `PWA_TRANSCRIBE_CONCURRENCY`
//! of them run under the server's supervisor.

use crate::guardrails::Guardrails;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::engine::{AudioInput, EngineError, TranscriptionEngine};
use crate::audio::sniff::extension;
use crate::audio::storage::AudioStore;
use crate::config::TranscribeSettings;
use crate::jobs::model::backoff;
use crate::jobs::{ClaimedJob, JobResult, JobStore};

/// How often an idle worker looks for work.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often a transcript the database refused is offered again.
const STORE_RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// One worker.
#[derive(Debug, Clone)]
pub struct Worker {
    jobs: Arc<dyn JobStore>,
    audio: AudioStore,
    engine: Arc<dyn TranscriptionEngine>,
    settings: TranscribeSettings,
    /// Checks each transcript before it is stored.
    guardrails: Guardrails,
    /// Names this worker in leases: which instance and which worker.
    owner: String,
}

/// How one job ended, for the log and the metrics.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Completed,
    RetryLater,
    Failed,
    /// Another worker took the job over meanwhile: nothing was stored.
    LostLease,
    /// The server is stopping: the job goes back to the queue.
    Interrupted,
}

impl Outcome {
    /// Its name in `clinscribe_jobs_finished_total{outcome}`.
    fn as_str(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::RetryLater => "retry_later",
            Self::Failed => "failed",
            Self::LostLease => "lost_lease",
            Self::Interrupted => "interrupted",
        }
    }
}

impl Worker {
    /// Worker number `n` of this instance.
    pub fn new(
        jobs: Arc<dyn JobStore>,
        audio: AudioStore,
        engine: Arc<dyn TranscriptionEngine>,
        settings: TranscribeSettings,
        guardrails: Guardrails,
        instance: &str,
        n: usize,
    ) -> Self {
        Self {
            jobs,
            audio,
            engine,
            settings,
            guardrails,
            owner: format!("{instance}/{n}"),
        }
    }

    /// Takes and does jobs until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            if !self.engine.ready() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(POLL_INTERVAL) => continue,
                }
            }
            match self.jobs.claim(&self.owner, self.settings.lease).await {
                Ok(Some(job)) => {
                    let id = job.recording_id;
                    let attempt = job.attempt;
                    let trace_parent = job.trace_parent.clone();
                    let outcome = crate::jobs::attempt(
                        "transcribe",
                        attempt,
                        trace_parent.as_deref(),
                        self.process(job, &stop),
                        Outcome::as_str,
                    )
                    .await;
                    tracing::info!(recording = %id, attempt, outcome = ?outcome, "transcription job");
                }
                Ok(None) => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(POLL_INTERVAL) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim a transcription job; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(POLL_INTERVAL) => {}
                    }
                }
            }
        }
    }

    /// Does one claimed job.
    async fn process(&self, job: ClaimedJob, stop: &CancellationToken) -> Outcome {
        let id = job.recording_id;
        let max = self.settings.max_attempts;
        if job.attempt > max {
            return self
                .fail(
                    id,
                    &format!(
                        "transcription failed after {max} attempts: the worker transcribing it stopped"
                    ),
                )
                .await;
        }
        let Some(key) = job.audio_key.clone() else {
            return self
                .fail(id, "no audio was stored on this server for this recording")
                .await;
        };
        let local = match self.audio.local_file(&key).await {
            Ok(local) => local,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self
                    .fail(id, "the recording's audio is missing from the audio store")
                    .await;
            }
            Err(e) => {
                return self
                    .after_error(
                        &job,
                        EngineError::transient(format!("cannot read the audio: {e}")),
                    )
                    .await;
            }
        };
        let content_type = job
            .audio_content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        let input = AudioInput {
            path: local.path().to_path_buf(),
            file_name: format!("{id}.{}", extension(&content_type)),
            content_type,
        };

        // The engine works while the lease is renewed; whichever ends first wins.
        let engine_started = std::time::Instant::now();
        let transcribing = self
            .engine
            .transcribe(&input)
            .instrument(tracing::info_span!("transcription"));
        let heartbeat = self.hold_lease(&job);
        let transcript = tokio::select! {
            result = transcribing => result,
            () = heartbeat => return Outcome::LostLease,
            () = stop.cancelled() => {
                let _ = self
                    .jobs
                    .retry_later(id, &self.owner, "interrupted: the server stopped", Duration::ZERO)
                    .await;
                return Outcome::Interrupted;
            }
        };
        drop(local);
        match transcript {
            Ok(transcript) => {
                let heard = transcript
                    .segments
                    .iter()
                    .map(|s| s.end)
                    .fold(0.0, f64::max);
                if heard > 0.0 {
                    crate::metrics::transcription_speed(
                        engine_started.elapsed().as_secs_f64() / heard,
                    );
                }
                let segments_json = match serde_json::to_string(&transcript.segments) {
                    Ok(json) => json,
                    Err(e) => {
                        return self
                            .fail(id, &format!("cannot encode the segments: {e}"))
                            .await;
                    }
                };
                let on = job
                    .recorded_on
                    .unwrap_or_else(|| time::OffsetDateTime::now_utc().date());
                let subject = crate::guardrails::fhir::Subject {
                    recording_id: id,
                    patient_id: &job.patient_id,
                    on,
                };
                // The embedded engine checks now, and the check is stored
                // with the text; an engine elsewhere checks in a `verify` job
                // queued with it. A check that fails leaves the transcript to
                // be stored unchecked (the clinician's first correction checks it).
                let check_later = !self.guardrails.checks_in_process();
                let check = if check_later {
                    None
                } else {
                    match self
                        .guardrails
                        .check_recording(&transcript.text, &subject)
                        .await
                    {
                        Ok(check) => Some(check),
                        Err(e) => {
                            tracing::warn!(recording = %id, error = %e, "the guardrails could not check a transcript");
                            None
                        }
                    }
                };
                let result = JobResult {
                    text: transcript.text,
                    language: transcript.language,
                    segments_json,
                    model: transcript.model,
                    check,
                    check_later,
                };
                self.store(id, &result, stop).await
            }
            Err(e) => self.after_error(&job, e).await,
        }
    }

    /// Stores a transcript with the job's end, in one transaction. While the
    /// database cannot take it (a full disk, a lost connection), the worker
    /// keeps the transcript and tries again: work already done is not thrown
    /// away, and the job stays this worker's unless another claims it after
    /// the lease, in which case nothing is stored twice.
    async fn store(&self, id: uuid::Uuid, result: &JobResult, stop: &CancellationToken) -> Outcome {
        let mut warned = false;
        loop {
            match self.jobs.complete(id, &self.owner, result).await {
                Ok(true) => {
                    if warned {
                        tracing::info!(recording = %id, "transcript stored after all");
                    }
                    return Outcome::Completed;
                }
                Ok(false) => return Outcome::LostLease,
                Err(e) if e.is_temporary() => {
                    if !warned {
                        tracing::warn!(recording = %id, error = %e, "cannot store a transcript yet; retrying");
                        warned = true;
                    }
                    tokio::select! {
                        // The lease runs out and the job is done again: nothing half-stored.
                        () = stop.cancelled() => return Outcome::Interrupted,
                        () = tokio::time::sleep(STORE_RETRY_INTERVAL) => {}
                    }
                }
                Err(e) => {
                    return self
                        .fail(id, &format!("cannot store the transcript: {e}"))
                        .await;
                }
            }
        }
    }

    /// Renews the lease while the work runs; returns when it is lost.
    async fn hold_lease(&self, job: &ClaimedJob) {
        crate::jobs::lease::hold(
            self.jobs.as_ref(),
            job.recording_id,
            crate::jobs::JobKind::Transcribe,
            &self.owner,
            self.settings.lease,
        )
        .await;
    }

    /// Retries a transient failure while attempts remain; otherwise gives up.
    async fn after_error(&self, job: &ClaimedJob, error: EngineError) -> Outcome {
        let max = self.settings.max_attempts;
        match error {
            EngineError::Transient {
                message,
                retry_after,
            } if job.attempt < max => {
                let delay = backoff(job.attempt, self.settings.backoff, MAX_BACKOFF, retry_after);
                let message = format!(
                    "attempt {} of {max} failed: {message}; retrying in {} s",
                    job.attempt,
                    delay.as_secs()
                );
                match self
                    .jobs
                    .retry_later(job.recording_id, &self.owner, &message, delay)
                    .await
                {
                    Ok(true) => Outcome::RetryLater,
                    Ok(false) => Outcome::LostLease,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot requeue a transcription job");
                        Outcome::Interrupted
                    }
                }
            }
            EngineError::Transient { message, .. } => {
                self.fail(
                    job.recording_id,
                    &format!("transcription failed after {max} attempts: {message}"),
                )
                .await
            }
            EngineError::Permanent(message) => {
                self.fail(
                    job.recording_id,
                    &format!("transcription failed: {message}"),
                )
                .await
            }
        }
    }

    async fn fail(&self, id: uuid::Uuid, message: &str) -> Outcome {
        match self.jobs.fail(id, &self.owner, message).await {
            Ok(true) => Outcome::Failed,
            Ok(false) => Outcome::LostLease,
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a failed transcription job");
                Outcome::Interrupted
            }
        }
    }
}
