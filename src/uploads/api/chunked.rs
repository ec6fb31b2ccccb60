//! Chunked (resumable) uploads, for long dictations and bad networks:
//! 1. `POST /api/v1/uploads` with the dictation's metadata and `total_bytes`
//!    starts a session (or returns the one in progress: same key, same answer);
//! 2. `PUT /api/v1/uploads/{local_storage_key}` with
//!    `Content-Range: bytes START-END/TOTAL` sends the bytes from `START`, which
//!    must be where the server stands (`received_bytes`; otherwise 409 with it);
//!    `202` while incomplete, `201` (or `200` if the dictation was stored
//!    before) with the recording when the last byte arrives;
//! 3. `HEAD` or `GET /api/v1/uploads/{local_storage_key}` says how many bytes
//!    the server holds (`Upload-Offset`), after a dropped connection.

use crate::audit::AuditContext;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{durable_json, session_response, stored_response};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::extract::JsonBody;
use crate::recordings::Recording;
use crate::uploads::model::{ChunkRange, StartUpload, path_key};
use crate::uploads::{ChunkOutcome, Uploads};

/// Where a chunked upload stands (the schema of its answers).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct UploadSession {
    local_storage_key: uuid::Uuid,
    /// The audio's whole length in bytes.
    total_bytes: i64,
    /// How many bytes the server holds: send from here.
    received_bytes: i64,
    /// Whether the dictation is stored (then `recording` is present).
    complete: bool,
    /// The stored recording, with `"durable": true`, once complete.
    recording: Option<Recording>,
}

/// Start (or resume) a chunked upload of one dictation.
#[utoipa::path(
    post,
    path = "/api/v1/uploads",
    tag = "uploads",
    request_body(content = StartUpload),
    responses(
        (status = 201, description = "Session started: `received_bytes` is 0", body = UploadSession),
        (status = 200, description = "Session in progress (resume from `received_bytes`), or the dictation is already stored (`complete`, with its `recording`)", body = UploadSession),
        (status = 400, description = "The body is not UTF-8", body = crate::http::openapi::ErrorDetail),
        (status = 409, description = "A session for this key with other metadata", body = crate::http::openapi::ErrorDetail),
        (status = 413, description = "total_bytes above PWA_MAX_UPLOAD_MB", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Invalid fields", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn start_upload(
    State(uploads): State<Uploads>,
    clinician: Principal,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let start = StartUpload::from_json(&body).map_err(ApiError::Validation)?;
    let (session, created) = uploads.start_session(&clinician.id, start).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    session_response(status, &session)
}

/// How many bytes of a chunked upload the server holds (`Upload-Offset`).
#[utoipa::path(
    get,
    path = "/api/v1/uploads/{local_storage_key}",
    tag = "uploads",
    params(("local_storage_key" = uuid::Uuid, Path, description = "The dictation's UUID")),
    responses(
        (status = 200, description = "The session's state (`Upload-Offset`, `Upload-Length` headers too); `complete` with the recording once stored", body = UploadSession),
        (status = 404, description = "No upload of this dictation", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Malformed key", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn upload_status(
    State(uploads): State<Uploads>,
    clinician: Principal,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let key = path_key(&raw).map_err(ApiError::Validation)?;
    let session = uploads.session_state(&clinician.id, key).await?;
    session_response(StatusCode::OK, &session)
}

/// Send bytes of a chunked upload, from where the server stands.
#[utoipa::path(
    put,
    path = "/api/v1/uploads/{local_storage_key}",
    tag = "uploads",
    params(
        ("local_storage_key" = uuid::Uuid, Path, description = "The dictation's UUID"),
        ("Content-Range" = String, Header, pattern = r"^bytes [0-9]+-[0-9]+/[0-9]+$", description = "`bytes START-END/TOTAL`; START must equal the server's received_bytes"),
    ),
    request_body(content_type = "application/octet-stream", content = Vec<u8>, description = "The bytes START..=END"),
    responses(
        (status = 202, description = "Stored; more to come (`Upload-Offset`)", body = UploadSession),
        (status = 201, description = "Last byte: the recording, `\"durable\": true`", body = Recording),
        (status = 200, description = "The dictation was stored before: its recording", body = Recording),
        (status = 400, description = "Missing or malformed Content-Range", body = crate::http::openapi::ErrorDetail),
        (status = 404, description = "No upload of this dictation", body = crate::http::openapi::ErrorDetail),
        (status = 409, description = "START is not the server's offset (see `Upload-Offset`), another request is writing this dictation, or the total differs", body = crate::http::openapi::ErrorDetail),
        (status = 413, description = "More bytes than the upload's total", body = crate::http::openapi::ErrorDetail),
        (status = 415, description = "The bytes are not audio", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Malformed key", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn upload_chunk(
    State(uploads): State<Uploads>,
    context: AuditContext,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = path_key(&raw).map_err(ApiError::Validation)?;
    let range = headers
        .get(header::CONTENT_RANGE)
        .map(|v| v.to_str().unwrap_or(""));
    let range = ChunkRange::parse(range).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let outcome = uploads
        .append_chunk(&context, key, range, body.into_data_stream())
        .await?;
    match outcome {
        ChunkOutcome::Partial(session) => session_response(StatusCode::ACCEPTED, &session),
        ChunkOutcome::Stored(stored) => stored_response(stored),
        ChunkOutcome::AlreadyStored(recording) => {
            Ok((StatusCode::OK, Json(durable_json(&recording)?)).into_response())
        }
        ChunkOutcome::SendFrom(offset) => {
            let mut response = ApiError::Conflict(format!(
                "the server holds {offset} bytes of this upload: send from byte {offset}"
            ))
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&offset.to_string()) {
                response.headers_mut().insert("upload-offset", v);
            }
            Ok(response)
        }
    }
}
