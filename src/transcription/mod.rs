//! Transcription: workers take jobs from the queue ([`crate::jobs`]), hand the
//! stored audio to the configured engine, and store what it heard.
//!
//! Engines sit behind one trait ([`engine::TranscriptionEngine`]), chosen with
//! `PWA_TRANSCRIBE_ENGINE`: `openai` (any OpenAI-compatible
//! `/v1/audio/transcriptions` server) and `whisper-service` (the original's
//! Whisper container) are in [`remote`]; with `none`, dictations wait in the
//! queue and health says so.

pub mod ct2;
pub mod embedded;
pub mod engine;
pub mod ggml;
pub mod models;
pub mod remote;
pub mod worker;

pub use engine::{EngineError, Transcript, TranscriptionEngine};

use std::sync::Arc;

use crate::config::{EngineChoice, TranscribeSettings};

/// The engine the settings choose; None for `none`.
pub fn engine_for(
    settings: &TranscribeSettings,
) -> Result<Option<Arc<dyn TranscriptionEngine>>, EngineError> {
    Ok(match &settings.engine {
        EngineChoice::None => None,
        EngineChoice::OpenAi {
            base_url,
            model,
            api_key,
        } => Some(Arc::new(remote::OpenAiEngine::new(
            base_url,
            model,
            api_key.clone(),
            settings.timeout,
        )?)),
        EngineChoice::WhisperService { url } => Some(Arc::new(remote::WhisperServiceEngine::new(
            url,
            settings.timeout,
        )?)),
        EngineChoice::Embedded {
            model,
            model_dir,
            fetch,
            options,
        } => Some(Arc::new(embedded::ModelLoader::new(
            model,
            model_dir,
            *fetch,
            options.clone(),
        ))),
    })
}
