//! HTTP handlers for `/api/v1/recordings`: parse, call the store, answer.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::model::{NewRecording, Recording, RecordingPatch, RecordingStatus};
use super::review::{self, ReviewError};
use super::store::{Cursor, ListQuery, RecordingJson, RecordingStore, StoreError};
use crate::error::ApiError;
use crate::http::conditional;
use crate::http::extract::{JsonBody, RecordingId};
use crate::idempotency::{self, Idempotency, IdempotencyKey, json_response};
use crate::identity::CurrentClinician;
use crate::validation::ValidationIssue;

/// Items per page when the client does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The most items a page may hold.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The recordings routes.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<dyn RecordingStore>: FromRef<S>,
    Idempotency: FromRef<S>,
{
    Router::new()
        .route(
            "/api/v1/recordings",
            get(list_recordings).post(create_recording),
        )
        .route(
            "/api/v1/recordings/{recording_id}",
            get(get_recording).patch(patch_recording),
        )
        .route(
            "/api/v1/recordings/{recording_id}/retry",
            post(retry_recording),
        )
}

/// Create a recording (status `pending`) for the current clinician.
///
/// With an `Idempotency-Key` header, a repeated request (same key, same body)
/// gets the first one's response instead of creating another recording.
#[utoipa::path(
    post,
    path = "/api/v1/recordings",
    tag = "recordings",
    request_body = NewRecording,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$", description = "Any unique string (e.g. a UUID), 1–255 visible ASCII characters; remembered 24 hours")),
    responses(
        (status = 201, description = "Created (or, for a repeated Idempotency-Key, the first response again, with `Idempotent-Replayed: true`)", body = Recording),
        (status = 400, description = "Body is not valid UTF-8", body = crate::http::openapi::ErrorDetail),
        (status = 409, description = "A request with this Idempotency-Key is still being processed", body = crate::http::openapi::ErrorDetail),
        (status = 413, description = "Body too large", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Validation error, or an Idempotency-Key reused with another body", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn create_recording(
    State(recordings): State<Arc<dyn RecordingStore>>,
    State(idempotency): State<Idempotency>,
    clinician: CurrentClinician,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let recordings = &recordings;
    let clinician = clinician.id();
    let body = &body;
    idempotency
        .respond_once(clinician, key.as_ref(), body, |key| async move {
            let new = NewRecording::from_json(body).map_err(ApiError::Validation)?;
            let recording = match key {
                None => recordings.create(clinician, new).await?,
                // The id follows from the key: should this request die after
                // creating the recording, a retry finds it instead of making another.
                Some(key) => {
                    let id = idempotency::recording_id(clinician, key.as_str());
                    match recordings.create_with_id(id, clinician, new).await {
                        Err(StoreError::Duplicate(_)) => recordings.get(id).await?,
                        other => other?,
                    }
                }
            };
            let json =
                serde_json::to_string(&recording).map_err(|e| ApiError::Internal(e.into()))?;
            Ok((StatusCode::CREATED, json))
        })
        .await
}

/// Get one recording by id (hyphens optional, any case).
///
/// The `ETag` is the recording's version; with `If-None-Match` naming it the
/// answer is 304 without a body.
#[utoipa::path(
    get,
    path = "/api/v1/recordings/{recording_id}",
    tag = "recordings",
    params(
        ("recording_id" = uuid::Uuid, Path, description = "Recording UUID"),
        ("If-None-Match" = Option<String>, Header, description = "ETags the client holds, e.g. `\"3\"`"),
    ),
    responses(
        (status = 200, description = "The recording", body = Recording,
            headers(("ETag" = String, description = "The version, quoted: `\"3\"`"))),
        (status = 304, description = "Not modified: the client's copy (`If-None-Match`) is current",
            headers(("ETag" = String, description = "The version, quoted"))),
        (status = 404, description = "Recording not found", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Malformed id", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn get_recording(
    State(recordings): State<Arc<dyn RecordingStore>>,
    _clinician: CurrentClinician,
    RecordingId(id): RecordingId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let recording = recordings.get_json(id).await?;
    if conditional::not_modified(&headers, recording.version) {
        return Ok(with_etag(
            StatusCode::NOT_MODIFIED.into_response(),
            recording.version,
        ));
    }
    Ok(recording_response(StatusCode::OK, recording))
}

/// A recording's JSON with its `ETag`.
fn recording_response(status: StatusCode, recording: RecordingJson) -> Response {
    with_etag(json_response(status, recording.json), recording.version)
}

fn with_etag(mut response: Response, version: i64) -> Response {
    response
        .headers_mut()
        .insert(header::ETAG, conditional::etag(version));
    response
}

/// Change a recording: a JSON merge patch (RFC 7396) of `final_transcript`
/// (the corrected text; `transcript` keeps the engine's), `patient_id`, or
/// `status` (only a move the life-cycle allows a clinician: see docs/API.md).
///
/// `If-Match` must name the version the change was made to; if the recording
/// has changed since, nothing is changed and the answer is 412 with the
/// current recording, so the client can show both.
#[utoipa::path(
    patch,
    path = "/api/v1/recordings/{recording_id}",
    tag = "recordings",
    params(
        ("recording_id" = uuid::Uuid, Path, description = "Recording UUID"),
        ("If-Match" = String, Header, pattern = r#"^"[1-9][0-9]{0,17}"$"#, description = "The ETag of the version changed, e.g. `\"3\"`"),
    ),
    request_body(content = super::model::RecordingPatchBody, content_type = "application/merge-patch+json",
        description = "Fields to change (`application/json` is accepted too)"),
    responses(
        (status = 200, description = "Changed (or nothing to change): the recording", body = Recording,
            headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 400, description = "Body is not valid UTF-8", body = crate::http::openapi::ErrorDetail),
        (status = 404, description = "Recording not found", body = crate::http::openapi::ErrorDetail),
        (status = 409, description = "A status move the life-cycle does not allow; the message names the allowed ones", body = crate::http::openapi::ErrorDetail),
        (status = 412, description = "The recording changed since the version in If-Match: `detail` and the `current` recording",
            body = super::model::StaleBody,
            headers(("ETag" = String, description = "The current version, quoted"))),
        (status = 413, description = "Body too large", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Validation error: a bad value, or a field that is unknown or read-only", body = crate::http::openapi::ValidationErrorBody),
        (status = 428, description = "If-Match missing, or not one ETag of a version", body = crate::http::openapi::ErrorDetail),
    )
)]
pub async fn patch_recording(
    State(recordings): State<Arc<dyn RecordingStore>>,
    _clinician: CurrentClinician,
    RecordingId(id): RecordingId,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let if_match = conditional::required_version(&headers)?;
    let patch = RecordingPatch::from_json(&body).map_err(ApiError::Validation)?;
    let recording = review::patch_recording(recordings.as_ref(), id, if_match, &patch).await?;
    Ok(recording_response(
        StatusCode::OK,
        RecordingJson::of(&recording)?,
    ))
}

impl From<ReviewError> for ApiError {
    fn from(err: ReviewError) -> Self {
        match err {
            ReviewError::NotFound => Self::NotFound(super::store::RECORDING_NOT_FOUND),
            e @ (ReviewError::IllegalTransition(_) | ReviewError::NotRetryable(_)) => {
                Self::Conflict(e.to_string())
            }
            ReviewError::Stale { seen, current } => match RecordingJson::of(&current) {
                Ok(current) => Self::Stale {
                    message: format!(
                        "The recording has changed since version {seen}: it is at version {}. \
                         Nothing was changed; `current` holds it as it is now.",
                        current.version
                    ),
                    etag: conditional::etag(current.version),
                    current: current.json,
                },
                Err(e) => e.into(),
            },
            ReviewError::Store(e) => e.into(),
        }
    }
}

/// List the current clinician's recordings, newest first, one page at a time.
///
/// The body is a plain JSON array; when more items exist, the `Link` header
/// carries the URL of the next page (`rel="next"`, RFC 8288).
#[utoipa::path(
    get,
    path = "/api/v1/recordings",
    tag = "recordings",
    params(
        ("status" = Option<RecordingStatus>, Query, description = "Only recordings in this status"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
        ("cursor" = Option<String>, Query, description = "Opaque cursor from a previous page's Link header"),
    ),
    responses(
        (status = 200, description = "A page of recordings, newest first", body = Vec<Recording>,
            headers(("Link" = String, description = "`<url>; rel=\"next\"` when there is a next page"))),
        (status = 422, description = "Bad query parameter", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn list_recordings(
    State(recordings): State<Arc<dyn RecordingStore>>,
    clinician: CurrentClinician,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = parse_list_query(raw.as_deref().unwrap_or(""))?;
    let page = recordings.list_for_clinician(clinician.id(), query).await?;
    let mut response = json_response(StatusCode::OK, page.json);
    if let Some(next) = page.next {
        let mut url = format!("/api/v1/recordings?limit={}", query.limit);
        if let Some(status) = query.status {
            url.push_str("&status=");
            url.push_str(status.as_str());
        }
        url.push_str("&cursor=");
        url.push_str(&next.encode());
        // Only ASCII goes in: the cursor is base64url and statuses are fixed words.
        if let Ok(link) = HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, link);
        }
    }
    Ok(response)
}

/// Reads `status`, `limit` and `cursor`; other parameters are ignored, as in FastAPI.
fn parse_list_query(raw: &str) -> Result<ListQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::BadRequest(format!("Malformed query string: {e}")))?;
    // FastAPI takes the last value of a repeated scalar parameter.
    let last = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let loc = |name: &str| vec![json!("query"), json!(name)];
    let mut issues = Vec::new();

    let status = last("status").and_then(|s| match s.parse::<RecordingStatus>() {
        Ok(status) => Some(status),
        Err(_) => {
            issues.push(RecordingStatus::issue(
                loc("status"),
                Value::String(s.to_owned()),
            ));
            None
        }
    });

    let limit = match last("limit") {
        None => DEFAULT_PAGE_SIZE,
        Some(s) => match s.trim().parse::<i64>() {
            Ok(n) if (1..=i64::from(MAX_PAGE_SIZE)).contains(&n) => n as u32,
            Ok(n) => {
                let (kind, msg, ctx) = if n < 1 {
                    (
                        "greater_than_equal",
                        "Input should be greater than or equal to 1",
                        json!({"ge": 1}),
                    )
                } else {
                    (
                        "less_than_equal",
                        "Input should be less than or equal to 1000",
                        json!({"le": MAX_PAGE_SIZE}),
                    )
                };
                issues.push(ValidationIssue::new(kind, loc("limit"), msg, json!(s)).with_ctx(ctx));
                DEFAULT_PAGE_SIZE
            }
            Err(_) => {
                issues.push(ValidationIssue::new(
                    "int_parsing",
                    loc("limit"),
                    "Input should be a valid integer, unable to parse string as an integer",
                    json!(s),
                ));
                DEFAULT_PAGE_SIZE
            }
        },
    };

    let after = last("cursor").and_then(|s| match Cursor::decode(s) {
        Ok(cursor) => Some(cursor),
        Err(_) => {
            issues.push(ValidationIssue::new(
                "value_error",
                loc("cursor"),
                "Value error, invalid cursor: use the URL from the Link header of the previous page",
                json!(s),
            ));
            None
        }
    });

    if issues.is_empty() {
        Ok(ListQuery {
            status,
            limit,
            after,
        })
    } else {
        Err(ApiError::Validation(issues))
    }
}

/// Put a recording whose processing failed back in the transcription queue.
///
/// Only a recording in `error` can be retried; its `retry_count` goes up by
/// one and it is `queued` again, with a fresh job, in one transaction.
#[utoipa::path(
    post,
    path = "/api/v1/recordings/{recording_id}/retry",
    tag = "recordings",
    params(("recording_id" = uuid::Uuid, Path, description = "Recording UUID")),
    responses(
        (status = 202, description = "Queued again", body = Recording,
            headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 404, description = "Recording not found", body = crate::http::openapi::ErrorDetail),
        (status = 409, description = "The recording is not in status `error`", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Malformed id", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn retry_recording(
    State(recordings): State<Arc<dyn RecordingStore>>,
    _clinician: CurrentClinician,
    RecordingId(id): RecordingId,
) -> Result<Response, ApiError> {
    let recording = review::retry(recordings.as_ref(), id).await?;
    Ok(recording_response(
        StatusCode::ACCEPTED,
        RecordingJson::of(&recording)?,
    ))
}

/// Storage errors at the HTTP boundary: a missing row is a 404 naming what
/// was missing, a busy or closed database a 503, a full disk a 507 (logged
/// once per episode by `StorageHealth`, not per request), a taken key a 409;
/// anything else a logged 500 that never leaks internals.
impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Busy(e) => {
                tracing::warn!(error = %e, "database busy");
                Self::Unavailable("The database is busy; retry shortly".into())
            }
            StoreError::Closed => Self::Unavailable("The database is not available".into()),
            StoreError::Duplicate(_) => Self::Conflict("The recording already exists".into()),
            StoreError::DiskFull(_) => Self::StorageFull,
            other => Self::Internal(other.into()),
        }
    }
}
