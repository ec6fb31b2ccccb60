//! HTTP handlers for audio: the original's multipart upload, chunked
//! (resumable) uploads, and downloading a recording's audio with `Range`.
//!
//! Chunked uploads, for long dictations and bad networks:
//! 1. `POST /api/v1/uploads` with the dictation's metadata and `total_bytes`
//!    starts a session (or returns the one in progress: same key, same answer);
//! 2. `PUT /api/v1/uploads/{local_storage_key}` with
//!    `Content-Range: bytes START-END/TOTAL` sends the bytes from `START`, which
//!    must be where the server stands (`received_bytes`; otherwise 409 with it);
//!    `202` while incomplete, `201` (or `200` if the dictation was stored
//!    before) with the recording when the last byte arrives;
//! 3. `HEAD` or `GET /api/v1/uploads/{local_storage_key}` says how many bytes
//!    the server holds (`Upload-Offset`), after a dropped connection.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use super::{Stored, UploadError, UploadMeta, Uploads};
use crate::audio::sniff::{SNIFF_LEN, audio_content_type};
use crate::audio::storage::{AudioError, AudioStore};
use crate::error::ApiError;
use crate::http::AppState;
use crate::http::extract::{JsonBody, RecordingId};
use crate::identity::CurrentClinician;
use crate::recordings::model::{
    FREE_TEXT_PATTERN, free_text_issue, non_negative_int, patient_id_schema,
};
use crate::recordings::{NewRecording, Recording};
use crate::validation::ValidationIssue;

/// Text form fields are small; this bounds what one may hold.
const TEXT_FIELD_LIMIT: usize = 1024 * 1024;
/// Slack for the multipart framing and text fields around the audio.
const FORM_OVERHEAD: u64 = 2 * TEXT_FIELD_LIMIT as u64;

/// The audio routes (their bodies are limited by `PWA_MAX_UPLOAD_MB`, not axum's default).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/recordings/upload", post(upload_recording))
        .route(
            "/api/v1/recordings/{recording_id}/audio",
            get(download_audio),
        )
        .route("/api/v1/uploads", post(start_upload))
        .route(
            "/api/v1/uploads/{local_storage_key}",
            get(upload_status).head(upload_status).put(upload_chunk),
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

/// The multipart form of an upload (for the API description: the handler
/// streams the form field by field).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct UploadForm {
    /// The audio: WebM/Matroska, Ogg, WAV, MP4/M4A, MP3 or FLAC (recognised by
    /// its content, not its name or type).
    #[schema(value_type = String, format = Binary, min_length = 1)]
    audio: Vec<u8>,
    #[schema(schema_with = patient_id_schema)]
    patient_id: String,
    /// Length in seconds (≥ 0).
    #[schema(minimum = 0)]
    duration_seconds: i64,
    /// The client's id for the dictation: the same key always yields the same recording.
    local_storage_key: Option<Uuid>,
    #[schema(schema_with = draft_transcript_schema)]
    draft_transcript: Option<String>,
}

/// The body that starts (or resumes) a chunked upload.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct StartUpload {
    /// The client's id for the dictation.
    local_storage_key: Uuid,
    #[schema(schema_with = patient_id_schema)]
    patient_id: String,
    #[schema(schema_with = crate::recordings::model::duration_schema)]
    duration_seconds: i64,
    /// The audio's whole length in bytes (at most PWA_MAX_UPLOAD_MB).
    #[schema(minimum = 1)]
    total_bytes: i64,
    #[schema(schema_with = draft_transcript_schema)]
    draft_transcript: Option<String>,
}

/// Where a chunked upload stands.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct UploadSession {
    local_storage_key: Uuid,
    /// The audio's whole length in bytes.
    total_bytes: i64,
    /// How many bytes the server holds: send from here.
    received_bytes: i64,
    /// Whether the dictation is stored (then `recording` is present).
    complete: bool,
    /// The stored recording, with `"durable": true`, once complete.
    recording: Option<Recording>,
}

/// The schema of a draft transcript: see [`FREE_TEXT_PATTERN`].
fn draft_transcript_schema() -> utoipa::openapi::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some(FREE_TEXT_PATTERN))
        .description(Some(
            "The transcript the device drafted, if any: no control characters but tab and line breaks",
        ))
        .build()
}

/// Upload a dictation's audio with its metadata (multipart form; the original's
/// endpoint). Exactly one recording per `local_storage_key`.
#[utoipa::path(
    post,
    path = "/api/v1/recordings/upload",
    tag = "uploads",
    request_body(content_type = "multipart/form-data", content = UploadForm),
    responses(
        (status = 201, description = "Stored: the recording (status `queued`) with `\"durable\": true`", body = Recording),
        (status = 200, description = "This dictation was stored before with the same audio: that recording", body = Recording),
        (status = 400, description = "The form could not be read (malformed multipart, a field that is not UTF-8), or the upload was interrupted", body = crate::http::openapi::ErrorDetail),
        (status = 409, description = "This local_storage_key holds different audio", body = crate::http::openapi::ErrorDetail),
        (status = 413, description = "Larger than PWA_MAX_UPLOAD_MB", body = crate::http::openapi::ErrorDetail),
        (status = 415, description = "Not a supported audio format", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Missing or invalid fields", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn upload_recording(
    State(state): State<AppState>,
    clinician: CurrentClinician,
    request: Request,
) -> Result<Response, ApiError> {
    let uploads = &state.uploads;
    let limit = uploads.settings().max_bytes;
    if content_length(request.headers()).is_some_and(|len| len > limit + FORM_OVERHEAD) {
        return Err(ApiError::PayloadTooLarge(
            usize::try_from(limit).unwrap_or(usize::MAX),
        ));
    }
    let Ok(mut form) = Multipart::from_request(request, &state).await else {
        return Err(missing_fields(&["audio", "patient_id", "duration_seconds"]));
    };
    let mut text: HashMap<String, String> = HashMap::new();
    let mut audio = None;
    let outcome = async {
        while let Some(field) = form.next_field().await.map_err(|e| {
            ApiError::BadRequest(format!("There was an error parsing the body: {e}"))
        })? {
            let name = field.name().unwrap_or_default().to_owned();
            if name == "audio" {
                if audio.is_none() {
                    audio = Some(
                        uploads
                            .audio()
                            .receive(field, limit)
                            .await
                            .map_err(UploadError::from)?,
                    );
                }
            } else if matches!(
                name.as_str(),
                "patient_id" | "duration_seconds" | "local_storage_key" | "draft_transcript"
            ) {
                text.insert(name, read_text_field(field).await?);
            }
        }
        Ok::<_, ApiError>(())
    }
    .await;
    let parsed = outcome.and_then(|()| upload_meta(&text, audio.is_some()));
    match (parsed, audio) {
        (Ok(meta), Some(received)) => {
            stored_response(uploads.store(clinician.id(), meta, received).await?)
        }
        (Ok(_), None) => Err(missing_fields(&["audio"])),
        (Err(e), received) => {
            if let Some(received) = received {
                uploads.audio().discard(received).await;
            }
            Err(e)
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn missing_fields(fields: &[&str]) -> ApiError {
    ApiError::Validation(
        fields
            .iter()
            .map(|f| {
                ValidationIssue::new(
                    "missing",
                    vec![json!("body"), json!(f)],
                    "Field required",
                    Value::Null,
                )
            })
            .collect(),
    )
}

async fn read_text_field(
    mut field: axum::extract::multipart::Field<'_>,
) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| ApiError::BadRequest(format!("There was an error parsing the body: {e}")))?
    {
        if bytes.len() + chunk.len() > TEXT_FIELD_LIMIT {
            return Err(ApiError::PayloadTooLarge(TEXT_FIELD_LIMIT));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes)
        .map_err(|_| ApiError::BadRequest("There was an error parsing the body".into()))
}

/// Validates the text fields as the JSON create does (same rules, same issues).
fn upload_meta(text: &HashMap<String, String>, has_audio: bool) -> Result<UploadMeta, ApiError> {
    let mut object = serde_json::Map::new();
    for field in ["patient_id", "duration_seconds"] {
        if let Some(value) = text.get(field) {
            object.insert(field.into(), Value::String(value.clone()));
        }
    }
    let mut issues = Vec::new();
    if !has_audio {
        issues.push(ValidationIssue::new(
            "missing",
            vec![json!("body"), json!("audio")],
            "Field required",
            Value::Null,
        ));
    }
    let new = match NewRecording::from_json(&Value::Object(object)) {
        Ok(new) => Some(new),
        Err(mut found) => {
            issues.append(&mut found);
            None
        }
    };
    let local_storage_key = match text.get("local_storage_key").map(|s| s.trim()) {
        None | Some("") => None,
        Some(raw) => match Uuid::parse_str(raw) {
            Ok(key) => Some(key),
            Err(e) => {
                issues.push(key_issue(
                    vec![json!("body"), json!("local_storage_key")],
                    raw,
                    &e,
                ));
                None
            }
        },
    };
    let draft = text.get("draft_transcript").filter(|s| !s.is_empty());
    if let Some(draft) = draft {
        issues.extend(free_text_issue(
            vec![json!("body"), json!("draft_transcript")],
            draft,
        ));
    }
    match new {
        Some(new) if issues.is_empty() => Ok(UploadMeta {
            patient_id: new.patient_id,
            duration_seconds: new.duration_seconds,
            local_storage_key,
            draft_transcript: draft.cloned(),
        }),
        _ => Err(ApiError::Validation(issues)),
    }
}

fn key_issue(loc: Vec<Value>, raw: &str, e: &uuid::Error) -> ValidationIssue {
    ValidationIssue::new(
        "uuid_parsing",
        loc,
        format!("Input should be a valid UUID, {e}"),
        Value::String(raw.to_owned()),
    )
}

/// The `local_storage_key` in a path.
fn path_key(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|e| {
        ApiError::invalid(key_issue(
            vec![json!("path"), json!("local_storage_key")],
            raw,
            &e,
        ))
    })
}

// ---------------------------------------------------------------- chunked uploads

/// Where a chunked upload stands.
fn session_json(
    key: Uuid,
    total: i64,
    received: i64,
    recording: Option<&Recording>,
) -> Result<Value, ApiError> {
    let mut body = json!({
        "local_storage_key": key,
        "total_bytes": total,
        "received_bytes": received,
        "complete": recording.is_some(),
    });
    if let Some(r) = recording {
        body["recording"] = durable_json(r)?;
    }
    Ok(body)
}

fn with_offset(status: StatusCode, body: Value, offset: i64, total: i64) -> Response {
    let mut response = (status, Json(body)).into_response();
    for (name, value) in [("upload-offset", offset), ("upload-length", total)] {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            response.headers_mut().insert(name, v);
        }
    }
    response
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
    State(state): State<AppState>,
    clinician: CurrentClinician,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let uploads = &state.uploads;
    let mut issues = Vec::new();
    let new = NewRecording::from_json(&body)
        .map_err(|mut found| issues.append(&mut found))
        .ok();
    let key = match body.get("local_storage_key") {
        Some(Value::String(raw)) => match Uuid::parse_str(raw) {
            Ok(key) => Some(key),
            Err(e) => {
                issues.push(key_issue(
                    vec![json!("body"), json!("local_storage_key")],
                    raw,
                    &e,
                ));
                None
            }
        },
        other => {
            issues.push(ValidationIssue::new(
                if other.is_none() {
                    "missing"
                } else {
                    "string_type"
                },
                vec![json!("body"), json!("local_storage_key")],
                if other.is_none() {
                    "Field required"
                } else {
                    "Input should be a valid string"
                },
                other.cloned().unwrap_or(Value::Null),
            ));
            None
        }
    };
    let mut total_issues = Vec::new();
    let total = match body
        .get("total_bytes")
        // A number (12.0 counts, as in JSON Schema), not a numeric string.
        .filter(|v| v.is_number())
        .and_then(|v| non_negative_int("total_bytes", v, &mut total_issues))
    {
        Some(n) if n > 0 => Some(n),
        _ => {
            issues.push(
                ValidationIssue::new(
                    "greater_than",
                    vec![json!("body"), json!("total_bytes")],
                    "Input should be a whole number of bytes greater than 0",
                    body.get("total_bytes").cloned().unwrap_or(Value::Null),
                )
                .with_ctx(json!({"gt": 0})),
            );
            None
        }
    };
    let draft = match body.get("draft_transcript") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            issues.extend(free_text_issue(
                vec![json!("body"), json!("draft_transcript")],
                s,
            ));
            Some(s.clone())
        }
        Some(other) => {
            issues.push(ValidationIssue::new(
                "string_type",
                vec![json!("body"), json!("draft_transcript")],
                "Input should be a valid string",
                other.clone(),
            ));
            None
        }
    };
    let (Some(new), Some(key), Some(total), true) = (new, key, total, issues.is_empty()) else {
        return Err(ApiError::Validation(issues));
    };
    let limit = uploads.settings().max_bytes;
    if u64::try_from(total).unwrap_or(u64::MAX) > limit {
        return Err(ApiError::PayloadTooLarge(
            usize::try_from(limit).unwrap_or(usize::MAX),
        ));
    }
    if let Some(existing) = state
        .recordings
        .find_by_local_storage_key(clinician.id(), key)
        .await?
    {
        let size = existing.audio_file_size.unwrap_or(total);
        return Ok(with_offset(
            StatusCode::OK,
            session_json(key, size, size, Some(&existing))?,
            size,
            size,
        ));
    }
    let (session, created) = uploads
        .sessions()
        .start(
            clinician.id(),
            key,
            &new.patient_id,
            new.duration_seconds,
            draft.as_deref(),
            total,
        )
        .await?;
    if session.total_bytes != total
        || session.patient_id != new.patient_id
        || session.duration_seconds != new.duration_seconds
    {
        return Err(UploadError::Conflict(format!(
            "an upload of local_storage_key {key} is in progress with other metadata ({} bytes for patient {}); finish it or wait for it to expire",
            session.total_bytes, session.patient_id
        ))
        .into());
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_offset(
        status,
        session_json(key, session.total_bytes, session.received_bytes, None)?,
        session.received_bytes,
        session.total_bytes,
    ))
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
    State(state): State<AppState>,
    clinician: CurrentClinician,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let key = path_key(&raw)?;
    if let Some(session) = state.uploads.sessions().get(clinician.id(), key).await? {
        let body = session_json(key, session.total_bytes, session.received_bytes, None)?;
        return Ok(with_offset(
            StatusCode::OK,
            body,
            session.received_bytes,
            session.total_bytes,
        ));
    }
    match state
        .recordings
        .find_by_local_storage_key(clinician.id(), key)
        .await?
    {
        Some(r) => {
            let size = r.audio_file_size.unwrap_or(0);
            Ok(with_offset(
                StatusCode::OK,
                session_json(key, size, size, Some(&r))?,
                size,
                size,
            ))
        }
        None => Err(UploadError::NoSession.into()),
    }
}

/// `Content-Range: bytes START-END/TOTAL` → (START, END inclusive, TOTAL).
fn content_range(headers: &HeaderMap) -> Result<(i64, i64, i64), ApiError> {
    let bad = || {
        ApiError::BadRequest(
            "Expected a Content-Range header such as `bytes 0-1048575/52428800`".into(),
        )
    };
    let value = headers
        .get(header::CONTENT_RANGE)
        .ok_or_else(bad)?
        .to_str()
        .map_err(|_| bad())?;
    let rest = value.trim().strip_prefix("bytes ").ok_or_else(bad)?;
    let (range, total) = rest.split_once('/').ok_or_else(bad)?;
    let (start, end) = range.split_once('-').ok_or_else(bad)?;
    let parse = |s: &str| s.trim().parse::<i64>().map_err(|_| bad());
    let (start, end, total) = (parse(start)?, parse(end)?, parse(total)?);
    if start < 0 || end < start || end >= total {
        return Err(bad());
    }
    Ok((start, end, total))
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
    State(state): State<AppState>,
    clinician: CurrentClinician,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let uploads = &state.uploads;
    let key = path_key(&raw)?;
    let (start, end, total) = content_range(&headers)?;
    let Some(session) = uploads.sessions().get(clinician.id(), key).await? else {
        // A retry of the last chunk whose answer was lost: the dictation is stored.
        return match state
            .recordings
            .find_by_local_storage_key(clinician.id(), key)
            .await?
        {
            Some(r) => Ok((StatusCode::OK, Json(durable_json(&r)?)).into_response()),
            None => Err(UploadError::NoSession.into()),
        };
    };
    if total != session.total_bytes {
        return Err(UploadError::Conflict(format!(
            "this upload is {} bytes long, not {total}",
            session.total_bytes
        ))
        .into());
    }
    let conflict_at = |offset: i64| {
        let mut response = ApiError::Conflict(format!(
            "the server holds {offset} bytes of this upload: send from byte {offset}"
        ))
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&offset.to_string()) {
            response.headers_mut().insert("upload-offset", v);
        }
        response
    };
    if start != session.received_bytes {
        return Ok(conflict_at(session.received_bytes));
    }
    let Some(_slot) = uploads.write_slot(clinician.id(), key) else {
        return Err(ApiError::ConflictRetry(
            "another request is uploading this dictation right now; retry shortly".into(),
        ));
    };
    let path = uploads.audio().partial_path(clinician.id(), key);
    // The bytes received so far are on the disk of the instance that took them:
    // if they are not here (another instance without a shared PWA_AUDIO_DIR, or
    // lost), start this dictation again from byte 0 here rather than store a gap.
    let on_disk = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
    if on_disk < u64::try_from(session.received_bytes).unwrap_or(0) {
        let _ = tokio::fs::remove_file(&path).await;
        uploads
            .sessions()
            .set_received(clinician.id(), key, 0)
            .await?;
        return Ok(conflict_at(0));
    }
    let chunk_end = u64::try_from(end + 1).unwrap_or(0);
    let (written, outcome) = uploads
        .audio()
        .append(
            &path,
            u64::try_from(start).unwrap_or(0),
            chunk_end,
            body.into_data_stream(),
        )
        .await;
    let written = i64::try_from(written).unwrap_or(0);
    uploads
        .sessions()
        .set_received(clinician.id(), key, written)
        .await?;
    outcome.map_err(UploadError::from)?;
    if start == 0 && written >= SNIFF_LEN as i64 || written == total {
        refuse_unless_audio(uploads, &session.clinician_id, key, &path).await?;
    }
    if written < total {
        let body = session_json(key, total, written, None)?;
        return Ok(with_offset(StatusCode::ACCEPTED, body, written, total));
    }
    stored_response(uploads.complete(&session, key).await?)
}

/// Ends a chunked upload whose first bytes are not audio (415), deleting it.
async fn refuse_unless_audio(
    uploads: &Uploads,
    clinician_id: &str,
    key: Uuid,
    path: &std::path::Path,
) -> Result<(), ApiError> {
    let mut prefix = vec![0u8; SNIFF_LEN];
    let n = match tokio::fs::File::open(path).await {
        Ok(mut file) => file.read(&mut prefix).await.unwrap_or(0),
        Err(_) => 0,
    };
    if audio_content_type(&prefix[..n]).is_some() {
        return Ok(());
    }
    let _ = tokio::fs::remove_file(path).await;
    uploads.sessions().delete(clinician_id, key).await?;
    Err(UploadError::Audio(AudioError::NotAudio).into())
}

// ---------------------------------------------------------------- download

/// The recording's audio, with `Range` support for seeking in a player.
#[utoipa::path(
    get,
    path = "/api/v1/recordings/{recording_id}/audio",
    tag = "uploads",
    params(
        ("recording_id" = uuid::Uuid, Path, description = "Recording UUID"),
        ("Range" = Option<String>, Header, description = "`bytes=START-END`, `bytes=START-` or `bytes=-SUFFIX`"),
    ),
    responses(
        (status = 200, description = "The whole audio; `ETag` is its SHA-256", content_type = "audio/*"),
        (status = 206, description = "The requested range", content_type = "audio/*"),
        (status = 304, description = "`If-None-Match` matches the ETag"),
        (status = 404, description = "No such recording, or it has no audio", body = crate::http::openapi::ErrorDetail),
        (status = 416, description = "Range beyond the end", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Malformed id", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn download_audio(
    State(state): State<AppState>,
    _clinician: CurrentClinician,
    RecordingId(id): RecordingId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let recording = state.recordings.get(id).await?;
    // Only audio the server stored itself: a client's audio_file_path is never opened.
    let (Some(sha256), Some(content_type)) = (
        recording.upload.audio_sha256.as_deref(),
        recording.upload.audio_content_type.as_deref(),
    ) else {
        return Err(ApiError::NotFound("Recording has no audio"));
    };
    let etag = format!("\"{sha256}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let key = AudioStore::object_key(id, content_type);
    let audio = state.uploads.audio();
    let unreadable = |e: std::io::Error| {
        ApiError::Internal(anyhow::anyhow!(
            "audio of recording {id} is unreadable ({key}): {e}"
        ))
    };
    let len = audio.object_len(&key).await.map_err(unreadable)?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, len).transpose())
        .transpose()?;
    let (status, start, count) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        None => (StatusCode::OK, 0, len),
    };
    let stream = audio
        .object_stream(&key, start, count)
        .await
        .map_err(unreadable)?;
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    let h = response.headers_mut();
    let pairs = [
        (header::CONTENT_TYPE, content_type.to_owned()),
        (header::CONTENT_LENGTH, count.to_string()),
        (header::ETAG, etag),
        (header::ACCEPT_RANGES, "bytes".to_owned()),
    ];
    for (name, value) in pairs {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(response)
}

/// One `Range: bytes=…` of a resource of `len` bytes → `(start, end)` inclusive.
/// Ok(None) when the header is not a single byte range (it is then ignored and
/// the whole audio sent, as RFC 9110 allows); 416 when it starts past the end.
fn parse_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let range = match (first.parse::<u64>().ok(), last.parse::<u64>().ok()) {
        (Some(start), Some(end)) if start <= end => (start, end.min(len.saturating_sub(1))),
        (Some(start), None) if last.is_empty() => (start, len.saturating_sub(1)),
        (None, Some(suffix)) if first.is_empty() && suffix > 0 => {
            (len.saturating_sub(suffix), len.saturating_sub(1))
        }
        _ => return Ok(None),
    };
    if range.0 >= len {
        return Err(ApiError::RangeNotSatisfiable(len));
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |v: &str| parse_range(v, 1000).map_err(|e| e.to_string());
        assert_eq!(r("bytes=0-99").unwrap(), Some((0, 99)));
        assert_eq!(r("bytes=900-").unwrap(), Some((900, 999)));
        assert_eq!(r("bytes=-100").unwrap(), Some((900, 999)));
        assert_eq!(r("bytes=-5000").unwrap(), Some((0, 999)));
        assert_eq!(r("bytes=990-5000").unwrap(), Some((990, 999)));
        assert!(r("bytes=1000-").is_err());
        assert_eq!(r("bytes=5-1").unwrap(), None);
        assert_eq!(r("bytes=0-1,5-6").unwrap(), None);
        assert_eq!(r("items=0-1").unwrap(), None);
    }
}
