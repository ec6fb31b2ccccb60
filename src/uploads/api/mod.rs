//! HTTP handlers for audio, by concern: the original's multipart upload
//! ([`multipart`]), chunked (resumable) uploads ([`chunked`]), and downloading
//! a recording's audio with `Range` ([`download`]). The sequences live in the
//! `Uploads` service; these extract, call it, and shape the answer.

pub mod chunked;
pub mod download;
pub mod multipart;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{SessionState, Stored, UploadError, Uploads};
use crate::audio::AudioError;
use crate::error::ApiError;
use crate::recordings::{Recording, RecordingStore};
use crate::validation::ValidationIssue;

/// The audio routes (their bodies are limited by `PWA_MAX_UPLOAD_MB`, not axum's default).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Uploads: FromRef<S>,
    Arc<dyn RecordingStore>: FromRef<S>,
    crate::recordings::Reads: FromRef<S>,
{
    Router::new()
        .route(
            "/api/v1/recordings/upload",
            post(multipart::upload_recording),
        )
        .route(
            "/api/v1/recordings/{recording_id}/audio",
            get(download::download_audio),
        )
        .route("/api/v1/uploads", post(chunked::start_upload))
        .route(
            "/api/v1/uploads/{local_storage_key}",
            get(chunked::upload_status)
                .head(chunked::upload_status)
                .put(chunked::upload_chunk),
        )
        .layer(DefaultBodyLimit::disable())
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::Audio(AudioError::TooLarge { limit }) => {
                Self::PayloadTooLarge(usize::try_from(limit).unwrap_or(usize::MAX))
            }
            UploadError::Audio(AudioError::NotAudio) => {
                Self::UnsupportedMediaType(AudioError::NotAudio.to_string())
            }
            UploadError::Audio(AudioError::Empty) => Self::invalid(ValidationIssue::new(
                "value_error",
                vec![json!("body"), json!("audio")],
                "Value error, the audio file is empty",
                Value::Null,
            )),
            UploadError::Audio(AudioError::Interrupted(e)) => {
                Self::BadRequest(format!("The upload was interrupted: {e}"))
            }
            UploadError::Audio(AudioError::Fs(e)) if e.is_storage_full() => Self::StorageFull,
            UploadError::Audio(AudioError::Fs(e)) => Self::Internal(e.into()),
            UploadError::Audio(AudioError::Remote(e)) => {
                tracing::error!(error = %e, "audio store failed");
                Self::Unavailable("The audio store is not available; retry shortly".into())
            }
            UploadError::Store(e) => e.into(),
            e @ (UploadError::DifferentAudio { .. } | UploadError::Conflict(_)) => {
                Self::Conflict(e.to_string())
            }
            UploadError::Busy => Self::ConflictRetry(UploadError::Busy.to_string()),
            UploadError::NoSession => Self::NotFound(
                "No upload in progress for this local_storage_key: start one with POST /api/v1/uploads",
            ),
        }
    }
}

/// A stored upload's answer: the recording and `"durable": true` (the client
/// may now delete its copy); 201 when created, 200 when an earlier attempt did.
fn stored_response(stored: Stored) -> Result<Response, ApiError> {
    let status = if stored.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(durable_json(&stored.recording)?)).into_response())
}

fn durable_json(recording: &Recording) -> Result<Value, ApiError> {
    let mut body = serde_json::to_value(recording).map_err(|e| ApiError::Internal(e.into()))?;
    if let Some(object) = body.as_object_mut() {
        object.insert("durable".into(), Value::Bool(true));
    }
    Ok(body)
}

/// Where a chunked upload stands, with `Upload-Offset` and `Upload-Length`.
fn session_response(status: StatusCode, state: &SessionState) -> Result<Response, ApiError> {
    let mut body = json!({
        "local_storage_key": state.key,
        "total_bytes": state.total_bytes,
        "received_bytes": state.received_bytes,
        "complete": state.recording.is_some(),
    });
    if let Some(r) = &state.recording {
        body["recording"] = durable_json(r)?;
    }
    let mut response = (status, Json(body)).into_response();
    for (name, value) in [
        ("upload-offset", state.received_bytes),
        ("upload-length", state.total_bytes),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            response.headers_mut().insert(name, v);
        }
    }
    Ok(response)
}
