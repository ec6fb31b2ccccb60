//! Engines that are servers elsewhere: `openai` (any OpenAI-compatible
//! `POST {base}/v1/audio/transcriptions`: OpenAI, faster-whisper servers,
//! whisper.cpp's server, vLLM, LocalAI) and `whisper-service` (the original's
//! container: `POST {WHISPER_URL}/transcribe`, multipart field `audio`).
//!
//! Both stream the audio from its file. A connection that fails, a timeout,
//! a 429 (with its `Retry-After`), a 5xx and an unreadable answer are
//! transient (the job is retried); any other refusal is permanent.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::multipart::{Form, Part};
use serde::Deserialize;

use super::engine::{
    AudioInput, EngineError, Transcript, TranscriptionEngine, confidence_from_avg_logprob,
};
use crate::http::outbound::{self, Refusal};
use crate::recordings::model::Segment;

impl From<Refusal> for EngineError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Transient {
                message,
                retry_after,
            } => Self::Transient {
                message,
                retry_after,
            },
            Refusal::Permanent(message) => Self::Permanent(message),
        }
    }
}

/// A segment as both APIs return it (OpenAI's `verbose_json`, and
/// openai-whisper's `transcribe()` result, which the original's container passes on).
#[derive(Debug, Deserialize)]
struct RemoteSegment {
    start: f64,
    end: f64,
    text: String,
    avg_logprob: Option<f64>,
}

/// The answer of either API (`model` only from the original's container).
#[derive(Debug, Deserialize)]
struct RemoteTranscript {
    text: String,
    language: Option<String>,
    #[serde(default)]
    segments: Vec<RemoteSegment>,
    model: Option<String>,
}

impl RemoteTranscript {
    fn into_transcript(self, default_model: &str) -> Transcript {
        Transcript {
            text: self.text.trim().to_owned(),
            language: self.language,
            segments: self
                .segments
                .into_iter()
                .map(|s| Segment {
                    start: s.start,
                    end: s.end,
                    text: s.text.trim().to_owned(),
                    confidence: s.avg_logprob.map(confidence_from_avg_logprob),
                })
                .collect(),
            model: self.model.unwrap_or_else(|| default_model.to_owned()),
        }
    }
}

/// An HTTP client with the engine timeout.
fn client(timeout: Duration) -> Result<reqwest::Client, EngineError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| EngineError::Permanent(format!("cannot build an HTTP client: {e}")))
}

/// The audio file as a streamed multipart part.
async fn audio_part(audio: &AudioInput) -> Result<Part, EngineError> {
    let file = tokio::fs::File::open(&audio.path)
        .await
        .map_err(|e| EngineError::transient(format!("cannot open the audio: {e}")))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| EngineError::transient(format!("cannot read the audio: {e}")))?
        .len();
    Part::stream_with_length(reqwest::Body::from(file), len)
        .file_name(audio.file_name.clone())
        .mime_str(&audio.content_type)
        .map_err(|e| EngineError::Permanent(format!("bad audio type: {e}")))
}

/// Sends `request` and reads the transcript, classifying every failure.
async fn send(
    what: &str,
    request: reqwest::RequestBuilder,
) -> Result<RemoteTranscript, EngineError> {
    let response = outbound::send(what, "the audio", request).await?;
    let body = response
        .bytes()
        .await
        .map_err(|e| EngineError::transient(format!("{what}'s answer broke off: {e}")))?;
    serde_json::from_slice(&body).map_err(|e| {
        EngineError::transient(format!(
            "{what} answered something that is not a transcript: {e}"
        ))
    })
}

/// `openai`: an OpenAI-compatible transcription server.
#[derive(Debug)]
pub struct OpenAiEngine {
    client: reqwest::Client,
    endpoint: String,
    model: String,
    api_key: Option<String>,
}

impl OpenAiEngine {
    /// The server at `base_url` (e.g. `https://api.openai.com`), `model` on it.
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, EngineError> {
        Ok(Self {
            client: client(timeout)?,
            endpoint: format!("{}/v1/audio/transcriptions", base_url.trim_end_matches('/')),
            model: model.to_owned(),
            api_key,
        })
    }
}

#[async_trait]
impl TranscriptionEngine for OpenAiEngine {
    fn describe(&self) -> String {
        format!("openai ({}, model {})", self.endpoint, self.model)
    }

    async fn transcribe(&self, audio: &AudioInput) -> Result<Transcript, EngineError> {
        let form = Form::new()
            .part("file", audio_part(audio).await?)
            .text("model", self.model.clone())
            .text("response_format", "verbose_json");
        let mut request = self.client.post(&self.endpoint).multipart(form);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        Ok(send("the transcription server", request)
            .await?
            .into_transcript(&self.model))
    }
}

/// `whisper-service`: the original's Whisper container.
#[derive(Debug)]
pub struct WhisperServiceEngine {
    client: reqwest::Client,
    endpoint: String,
}

impl WhisperServiceEngine {
    /// The container at `url` (`WHISPER_URL`).
    pub fn new(url: &str, timeout: Duration) -> Result<Self, EngineError> {
        Ok(Self {
            client: client(timeout)?,
            endpoint: format!("{}/transcribe", url.trim_end_matches('/')),
        })
    }
}

#[async_trait]
impl TranscriptionEngine for WhisperServiceEngine {
    fn describe(&self) -> String {
        format!("whisper-service ({})", self.endpoint)
    }

    async fn transcribe(&self, audio: &AudioInput) -> Result<Transcript, EngineError> {
        let form = Form::new().part("audio", audio_part(audio).await?);
        let request = self.client.post(&self.endpoint).multipart(form);
        Ok(send("the Whisper service", request)
            .await?
            .into_transcript("whisper"))
    }
}
