//! The check worker: with an extraction engine elsewhere (`openai`), each
//! note's text is checked in a `verify` job of the durable queue, queued with
//! the text (a transcript stored, a clinician's correction). The worker
//! claims a job with a lease, asks the engine, and stores the check with the
//! note; a text changed meanwhile queues the job again, so a check of an old
//! text is never stored. Failures are retried with backoff up to the
//! queue's attempts; then the embedded engine checks the text instead, so
//! that no note is left unchecked.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{ExtractError, Guardrails, fhir};
use crate::jobs::model::backoff;
use crate::jobs::{CheckEnd, ClaimedCheck, JobKind, JobStore};

/// How often an idle worker looks for work.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// How `verify` jobs are retried (the queue's settings).
#[derive(Debug, Clone, Copy)]
pub struct CheckSettings {
    /// Attempts before the embedded engine checks instead.
    pub max_attempts: u32,
    /// How long a job stays claimed without a heartbeat.
    pub lease: Duration,
    /// The wait after the first failed attempt, doubled after each.
    pub backoff: Duration,
}

/// One worker.
#[derive(Debug, Clone)]
pub struct CheckWorker {
    jobs: Arc<dyn JobStore>,
    guardrails: Guardrails,
    settings: CheckSettings,
    owner: String,
}

impl CheckWorker {
    /// The check worker of `instance` (named in its leases).
    pub fn new(
        jobs: Arc<dyn JobStore>,
        guardrails: Guardrails,
        settings: CheckSettings,
        instance: &str,
    ) -> Self {
        Self {
            jobs,
            guardrails,
            settings,
            owner: format!("{instance}/check"),
        }
    }

    /// Takes and does `verify` jobs until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            match self
                .jobs
                .claim_check(&self.owner, self.settings.lease)
                .await
            {
                Ok(Some(job)) => {
                    let (id, attempt) = (job.recording_id, job.attempt);
                    let work = async {
                        tokio::select! {
                            // Stopping: the lease runs out and another takes the job.
                            () = stop.cancelled() => "interrupted",
                            () = self.hold_lease(&job) => "lost_lease",
                            outcome = self.process(&job) => outcome,
                        }
                    };
                    let outcome = crate::jobs::attempt(
                        "verify",
                        attempt,
                        job.trace_parent.as_deref(),
                        work,
                        |outcome| *outcome,
                    )
                    .await;
                    tracing::info!(recording = %id, attempt, outcome, "verify job");
                }
                Ok(None) => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(POLL_INTERVAL) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim a verify job; retrying");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(POLL_INTERVAL) => {}
                    }
                }
            }
        }
    }

    /// Checks the job's text and ends the job; what happened, for the log
    /// and `clinscribe_jobs_finished_total{outcome}`.
    async fn process(&self, job: &ClaimedCheck) -> &'static str {
        let Some(text) = job.text.as_deref() else {
            return self
                .end(job, CheckEnd::NothingToCheck, "nothing_to_check")
                .await;
        };
        let subject = fhir::Subject {
            recording_id: job.recording_id,
            patient_id: &job.patient_id,
            on: job
                .recorded_on
                .unwrap_or_else(|| time::OffsetDateTime::now_utc().date()),
        };
        let max = self.settings.max_attempts;
        let failure = match self.guardrails.check_recording(text, &subject).await {
            Ok(check) => return self.end(job, CheckEnd::Checked(&check), "checked").await,
            Err(e) => e,
        };
        let (message, retry_after, transient) = match failure {
            ExtractError::Transient {
                message,
                retry_after,
            } => (message, retry_after, true),
            ExtractError::Permanent(message) => (message, None, false),
        };
        if transient && job.attempt < max {
            let delay = backoff(job.attempt, self.settings.backoff, MAX_BACKOFF, retry_after);
            let why = format!(
                "attempt {} of {max} failed: {message}; retrying in {} s",
                job.attempt,
                delay.as_secs()
            );
            return self
                .end(job, CheckEnd::RetryLater(&why, delay), "retry_later")
                .await;
        }
        let why = if transient {
            format!(
                "{} failed after {max} attempts: {message}",
                self.guardrails.describe()
            )
        } else {
            format!("{} failed: {message}", self.guardrails.describe())
        };
        match self
            .guardrails
            .check_recording_in_process(text, &subject, &why)
        {
            Ok(check) => {
                self.end(
                    job,
                    CheckEnd::CheckedInstead(&check, &why),
                    "checked_instead",
                )
                .await
            }
            Err(e) => {
                tracing::warn!(recording = %job.recording_id, error = %e, "cannot check a note");
                "failed"
            }
        }
    }

    async fn end(
        &self,
        job: &ClaimedCheck,
        end: CheckEnd<'_>,
        outcome: &'static str,
    ) -> &'static str {
        match self
            .jobs
            .end_check(job.recording_id, &self.owner, end)
            .await
        {
            Ok(true) => outcome,
            // The text changed (its check was queued again) or another took over.
            Ok(false) => "lost_lease",
            Err(e) => {
                tracing::warn!(recording = %job.recording_id, error = %e, "cannot store a check");
                "interrupted"
            }
        }
    }

    /// Renews the lease while the work runs; returns when it is lost.
    async fn hold_lease(&self, job: &ClaimedCheck) {
        crate::jobs::lease::hold(
            self.jobs.as_ref(),
            job.recording_id,
            JobKind::Verify,
            &self.owner,
            self.settings.lease,
        )
        .await;
    }
}
