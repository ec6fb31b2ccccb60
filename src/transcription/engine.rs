//! What every transcription engine does, and what it may answer.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::recordings::model::Segment;

/// The audio of one dictation, as a local file.
#[derive(Debug, Clone)]
pub struct AudioInput {
    /// Where the bytes are.
    pub path: PathBuf,
    /// Their MIME type (from the container's signature).
    pub content_type: String,
    /// A file name with the right extension (some servers go by it); never
    /// anything a client sent.
    pub file_name: String,
}

/// What an engine heard.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// The whole text.
    pub text: String,
    /// The language it heard, as the engine names it.
    pub language: Option<String>,
    /// Timed segments, each with the engine's confidence.
    pub segments: Vec<Segment>,
    /// The model that produced it.
    pub model: String,
}

/// Why an engine produced no transcript.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// May pass: the server is down, busy (429), failing (5xx), slow, or
    /// answered something unreadable. The job is retried.
    #[error("{message}")]
    Transient {
        /// What happened.
        message: String,
        /// How long the server asked us to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Will not pass by retrying (the audio cannot be decoded, the server
    /// refuses the request): the recording goes to `error` at once.
    #[error("{0}")]
    Permanent(String),
}

impl EngineError {
    /// A transient error without a `Retry-After`.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// A speech-to-text engine.
#[async_trait]
pub trait TranscriptionEngine: Send + Sync + std::fmt::Debug {
    /// What health and the logs call it (never a secret).
    fn describe(&self) -> String;

    /// Transcribes one dictation.
    async fn transcribe(&self, audio: &AudioInput) -> Result<Transcript, EngineError>;

    /// Whether it can transcribe now (an engine still obtaining its model
    /// cannot; workers leave the queue alone meanwhile).
    fn ready(&self) -> bool {
        true
    }

    /// Runs for the server's life beside the workers: gets the engine ready
    /// (e.g. obtains and loads a model), then waits for `stop`.
    async fn prepare(&self, stop: CancellationToken) {
        stop.cancelled().await;
    }
}

/// A confidence from 0 to 1 out of a Whisper segment's mean token
/// log-probability (`avg_logprob`): the geometric mean of its tokens'
/// probabilities.
pub fn confidence_from_avg_logprob(avg_logprob: f64) -> f64 {
    avg_logprob.exp().clamp(0.0, 1.0)
}
