//! `POST /api/v1/recordings/upload`: the original's multipart upload.

use crate::audit::AuditContext;
use std::collections::HashMap;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde_json::{Value, json};
use uuid::Uuid;

use super::stored_response;
use crate::audio::receiving::Received;
use crate::error::ApiError;
use crate::recordings::model::{free_text_issue, patient_id_schema};
use crate::recordings::{NewRecording, Recording};
use crate::uploads::model::{draft_transcript_schema, key_issue};
use crate::uploads::{UploadError, UploadMeta, Uploads};
use crate::validation::ValidationIssue;

/// Text form fields are small; this bounds what one may hold.
const TEXT_FIELD_LIMIT: usize = 1024 * 1024;
/// Slack for the multipart framing and text fields around the audio.
const FORM_OVERHEAD: u64 = 2 * TEXT_FIELD_LIMIT as u64;

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
    State(uploads): State<Uploads>,
    context: AuditContext,
    request: Request,
) -> Result<Response, ApiError> {
    let uploads = &uploads;
    let limit = uploads.max_bytes();
    if content_length(request.headers()).is_some_and(|len| len > limit + FORM_OVERHEAD) {
        return Err(ApiError::PayloadTooLarge(
            usize::try_from(limit).unwrap_or(usize::MAX),
        ));
    }
    let Ok(form) = Multipart::from_request(request, &()).await else {
        return Err(missing_fields(&["audio", "patient_id", "duration_seconds"]));
    };
    let (meta, received) = read_form(uploads, form).await?;
    stored_response(uploads.store(&context, meta, received).await?)
}

/// Reads the form: its audio into a temporary file (deleted if the form is
/// refused, when `Received` drops), its text fields validated as the JSON
/// create's, every issue reported at once.
async fn read_form(
    uploads: &Uploads,
    mut form: Multipart,
) -> Result<(UploadMeta, Received), ApiError> {
    let mut text: HashMap<String, String> = HashMap::new();
    let mut audio = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::BadRequest(format!("There was an error parsing the body: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "audio" {
            if audio.is_none() {
                audio = Some(uploads.receive(field).await.map_err(UploadError::from)?);
            }
        } else if matches!(
            name.as_str(),
            "patient_id" | "duration_seconds" | "local_storage_key" | "draft_transcript"
        ) {
            text.insert(name, read_text_field(field).await?);
        }
    }
    let meta = upload_meta(&text, audio.is_some())?;
    let received = audio.ok_or_else(|| missing_fields(&["audio"]))?;
    Ok((meta, received))
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
