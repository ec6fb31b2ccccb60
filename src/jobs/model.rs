//! What the queue hands out and takes back.

use std::time::Duration;

use uuid::Uuid;

/// The clinical guardrails' check of a recording's text as the recording
/// keeps it — `verification_results`, `verification_score`, `verified_at`,
/// `extraction_started_at`, `llm_model`, `fhir_bundle` — made by
/// `guardrails` and stored by whoever writes the text, or by a `verify` job.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCheck {
    /// The [`crate::guardrails::Verification`], as JSON.
    pub results_json: String,
    /// Its score.
    pub score: f64,
    /// When the extraction began.
    pub started_at: crate::timestamp::Timestamp,
    /// When the check ended (`verified_at`, `extraction_completed_at`).
    pub completed_at: crate::timestamp::Timestamp,
    /// The language model that extracted, if one did.
    pub model: Option<String>,
    /// The facts as a FHIR R4 Bundle (`fhir_bundle`), as JSON.
    pub fhir_json: String,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// Transcribe a stored dictation.
    Transcribe,
    /// Check a note's text with an extraction engine elsewhere.
    Verify,
}

impl JobKind {
    /// Its name in `jobs.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transcribe => "transcribe",
            Self::Verify => "verify",
        }
    }
}

/// A job a worker holds the lease of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// The recording to work on.
    pub recording_id: Uuid,
    /// This claim's attempt number (1 for the first).
    pub attempt: u32,
    /// Where the server stored the recording's audio (its object key), if it did.
    pub audio_key: Option<String>,
    /// The stored audio's MIME type.
    pub audio_content_type: Option<String>,
    /// The day the recording was made (relative dates in it are read
    /// against it).
    pub recorded_on: Option<time::Date>,
    /// The recording's patient (for the FHIR bundle's subject).
    pub patient_id: String,
    /// The W3C `traceparent` of the request that queued the job, if traced.
    pub trace_parent: Option<String>,
}

/// A `verify` job a worker holds the lease of: the text to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedCheck {
    /// The recording whose note is checked.
    pub recording_id: Uuid,
    /// This claim's attempt number (1 for the first).
    pub attempt: u32,
    /// The note's text as it is now (`final_transcript`, else `transcript`).
    pub text: Option<String>,
    /// The recording's patient (for the FHIR bundle's subject).
    pub patient_id: String,
    /// The day the recording was made.
    pub recorded_on: Option<time::Date>,
    /// The W3C `traceparent` of the request that queued the job, if traced.
    pub trace_parent: Option<String>,
}

/// How a `verify` job ends.
#[derive(Debug, Clone, Copy)]
pub enum CheckEnd<'a> {
    /// The check is stored with the note.
    Checked(&'a StoredCheck),
    /// The engine failed for good (the reason); the check stored is the
    /// embedded engine's.
    CheckedInstead(&'a StoredCheck, &'a str),
    /// Nothing to check (no text): the job ends.
    NothingToCheck,
    /// An attempt failed (the reason); the job is due again after the delay.
    RetryLater(&'a str, Duration),
}

/// A finished transcription, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct JobResult {
    /// The engine's text (stored as `transcript`, and as `final_transcript`
    /// unless a clinician has already written one).
    pub text: String,
    /// The language the engine heard.
    pub language: Option<String>,
    /// The timed segments as a JSON array.
    pub segments_json: String,
    /// The model that transcribed it (stored as `whisper_model`).
    pub model: String,
    /// The guardrails' check of the text, stored with it when the text
    /// becomes the note (no clinician has written one yet).
    pub check: Option<StoredCheck>,
    /// Whether the text, if it becomes the note, is checked by a `verify`
    /// job (an extraction engine elsewhere) queued with it.
    pub check_later: bool,
}

/// Jobs per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct JobCounts {
    /// Waiting (including those waiting to be retried).
    pub queued: i64,
    /// Held by a worker.
    pub running: i64,
    /// Finished.
    pub done: i64,
    /// Given up (the recording is in `error`).
    pub failed: i64,
}

/// The delay before attempt `attempt + 1` after attempt `attempt` failed:
/// `base` doubled per attempt, at most `max`, at least what the engine asked
/// for (`Retry-After`).
pub fn backoff(attempt: u32, base: Duration, max: Duration, asked: Option<Duration>) -> Duration {
    let doubled = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    doubled.min(max).max(asked.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_retry_after() {
        let s = Duration::from_secs;
        assert_eq!(backoff(1, s(5), s(600), None), s(5));
        assert_eq!(backoff(2, s(5), s(600), None), s(10));
        assert_eq!(backoff(4, s(5), s(600), None), s(40));
        assert_eq!(backoff(40, s(5), s(600), None), s(600));
        assert_eq!(backoff(1, s(5), s(600), Some(s(30))), s(30));
    }
}
