//! HTTP handlers for `/api/v1/recordings`: parse, call the store, answer.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{FromRef, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::model::{
    AmendmentRequest, NewRecording, Recording, RecordingPatch, RecordingStatus, SignRequest,
};
use super::reads::{Read, Reads};
use super::review::{self, ReviewError};
use super::store::{Cursor, ListQuery, RecordingJson, RecordingStore, StoreError};
use crate::audit::AuditContext;
use crate::audit::api::HistoryEntry;
use crate::error::ApiError;
use crate::guardrails::Guardrails;
use crate::http::conditional;
use crate::http::extract::{JsonBody, OptionalJsonBody, RecordingId};
use crate::idempotency::{self, Idempotency, IdempotencyKey, json_response};
use crate::jobs::JobStore;
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
    Reads: FromRef<S>,
    Idempotency: FromRef<S>,
    Guardrails: FromRef<S>,
    Arc<dyn JobStore>: FromRef<S>,
{
    Router::new()
        .route(
            "/api/v1/recordings",
            get(list_recordings).post(create_recording),
        )
        .route(
            "/api/v1/recordings/{recording_id}",
            get(get_recording)
                .patch(patch_recording)
                .delete(delete_recording),
        )
        .route(
            "/api/v1/recordings/{recording_id}/sign",
            post(sign_recording),
        )
        .route(
            "/api/v1/recordings/{recording_id}/amendments",
            post(amend_recording),
        )
        .route("/api/v1/changes", get(list_changes))
        .route("/api/v1/recordings/{recording_id}/history", get(history))
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
    context: AuditContext,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let recordings = &recordings;
    let context = &context;
    let clinician = context.actor.as_str();
    let body = &body;
    idempotency
        .respond_once(clinician, key.as_ref(), body, |key| async move {
            let new = NewRecording::from_json(body).map_err(ApiError::Validation)?;
            let recording = match key {
                None => recordings.create(context, new).await?,
                // The id follows from the key: should this request die after
                // creating the recording, a retry finds it instead of making another.
                Some(key) => {
                    let id = idempotency::recording_id(clinician, key.as_str());
                    match recordings.create_with_id(id, context, new).await {
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
    State(reads): State<Reads>,
    context: AuditContext,
    RecordingId(id): RecordingId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let read = reads
        .recording(&context, id, |version| {
            conditional::not_modified(&headers, version)
        })
        .await?;
    Ok(match read {
        Read::NotModified(version) => with_etag(StatusCode::NOT_MODIFIED.into_response(), version),
        Read::Recording(recording) => recording_response(StatusCode::OK, recording),
    })
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
    State(guardrails): State<crate::guardrails::Guardrails>,
    context: AuditContext,
    RecordingId(id): RecordingId,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let if_match = conditional::required_version(&headers)?;
    let patch = RecordingPatch::from_json(&body).map_err(ApiError::Validation)?;
    let recording = review::patch_recording(
        recordings.as_ref(),
        &guardrails,
        id,
        if_match,
        &patch,
        &context,
    )
    .await?;
    Ok(recording_response(
        StatusCode::OK,
        RecordingJson::of(&recording)?,
    ))
}

/// Sign a completed note: its text becomes final.
///
/// Keeps `signed_at`, `signed_by` and `signed_sha256` (the SHA-256 of
/// `final_transcript`); from then on the text and the patient cannot be
/// patched (409) and the note cannot be deleted: a correction is an amendment.
/// Every critical alert of the note's check (`verification_results.alerts`)
/// must be acknowledged with a reason in the body; the acknowledgements are
/// kept in `acknowledgements`. The body may be left out when there is none.
#[utoipa::path(
    post,
    path = "/api/v1/recordings/{recording_id}/sign",
    tag = "recordings",
    params(
        ("recording_id" = uuid::Uuid, Path, description = "Recording UUID"),
        ("If-Match" = String, Header, pattern = r#"^"[1-9][0-9]{0,17}"$"#, description = "The ETag of the version signed, e.g. `\"3\"`"),
    ),
    request_body(content = Option<SignRequest>, description = "The alerts acknowledged (optional)"),
    responses(
        (status = 200, description = "Signed: the recording", body = Recording,
            headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 404, description = "Recording not found", body = crate::http::openapi::ErrorDetail),
        (status = 400, description = "Body is not valid UTF-8", body = crate::http::openapi::ErrorDetail),
        (status = 409, description = "Not `completed`, no text, already signed, its text still being checked, a critical alert not acknowledged, or an acknowledgement of an alert the check does not have", body = crate::http::openapi::ErrorDetail),
        (status = 412, description = "The recording changed since the version in If-Match: `detail` and the `current` recording",
            body = super::model::StaleBody,
            headers(("ETag" = String, description = "The current version, quoted"))),
        (status = 413, description = "Body too large", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Malformed id, or a malformed body", body = crate::http::openapi::ValidationErrorBody),
        (status = 428, description = "If-Match missing, or not one ETag of a version", body = crate::http::openapi::ErrorDetail),
    )
)]
pub async fn sign_recording(
    State(recordings): State<Arc<dyn RecordingStore>>,
    State(jobs): State<Arc<dyn JobStore>>,
    State(guardrails): State<Guardrails>,
    context: AuditContext,
    RecordingId(id): RecordingId,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Response, ApiError> {
    let if_match = conditional::required_version(&headers)?;
    let request = SignRequest::from_json(body.as_ref()).map_err(ApiError::Validation)?;
    let recording = review::sign(
        recordings.as_ref(),
        jobs.as_ref(),
        &guardrails,
        id,
        if_match,
        &context,
        request,
    )
    .await?;
    Ok(recording_response(
        StatusCode::OK,
        RecordingJson::of(&recording)?,
    ))
}

/// Amend a signed note: a correction kept beside the signed text, with its
/// author, time and reason, never in its place.
#[utoipa::path(
    post,
    path = "/api/v1/recordings/{recording_id}/amendments",
    tag = "recordings",
    params(
        ("recording_id" = uuid::Uuid, Path, description = "Recording UUID"),
        ("If-Match" = String, Header, pattern = r#"^"[1-9][0-9]{0,17}"$"#, description = "The ETag of the version amended, e.g. `\"3\"`"),
    ),
    request_body = AmendmentRequest,
    responses(
        (status = 201, description = "Amended: the recording, its `amendments` ending with this one", body = Recording,
            headers(("ETag" = String, description = "The new version, quoted"))),
        (status = 400, description = "Body is not valid UTF-8", body = crate::http::openapi::ErrorDetail),
        (status = 404, description = "Recording not found", body = crate::http::openapi::ErrorDetail),
        (status = 409, description = "The note is not signed (patch it instead)", body = crate::http::openapi::ErrorDetail),
        (status = 412, description = "The recording changed since the version in If-Match: `detail` and the `current` recording",
            body = super::model::StaleBody,
            headers(("ETag" = String, description = "The current version, quoted"))),
        (status = 413, description = "Body too large", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Validation error", body = crate::http::openapi::ValidationErrorBody),
        (status = 428, description = "If-Match missing, or not one ETag of a version", body = crate::http::openapi::ErrorDetail),
    )
)]
pub async fn amend_recording(
    State(recordings): State<Arc<dyn RecordingStore>>,
    context: AuditContext,
    RecordingId(id): RecordingId,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let if_match = conditional::required_version(&headers)?;
    let request = AmendmentRequest::from_json(&body).map_err(ApiError::Validation)?;
    let recording = review::amend(recordings.as_ref(), id, if_match, &context, request).await?;
    Ok(recording_response(
        StatusCode::CREATED,
        RecordingJson::of(&recording)?,
    ))
}

/// Delete a recording (not a signed note).
///
/// The recording disappears from reads and lists (404) at once, stays in
/// the change feed as a deletion so that other devices drop it too, and its
/// audio is purged after `PWA_DELETED_RETENTION`.
#[utoipa::path(
    delete,
    path = "/api/v1/recordings/{recording_id}",
    tag = "recordings",
    params(
        ("recording_id" = uuid::Uuid, Path, description = "Recording UUID"),
        ("If-Match" = String, Header, pattern = r#"^"[1-9][0-9]{0,17}"$"#, description = "The ETag of the version deleted, e.g. `\"3\"`"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Recording not found", body = crate::http::openapi::ErrorDetail),
        (status = 409, description = "A signed note cannot be deleted", body = crate::http::openapi::ErrorDetail),
        (status = 412, description = "The recording changed since the version in If-Match: `detail` and the `current` recording",
            body = super::model::StaleBody,
            headers(("ETag" = String, description = "The current version, quoted"))),
        (status = 422, description = "Malformed id", body = crate::http::openapi::ValidationErrorBody),
        (status = 428, description = "If-Match missing, or not one ETag of a version", body = crate::http::openapi::ErrorDetail),
    )
)]
pub async fn delete_recording(
    State(recordings): State<Arc<dyn RecordingStore>>,
    context: AuditContext,
    RecordingId(id): RecordingId,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let if_match = conditional::required_version(&headers)?;
    review::delete(recordings.as_ref(), id, if_match, &context).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The change feed's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangesBody {
    /// Changes after `since`, in commit order: each recording at most once,
    /// as it is now.
    pub changes: Vec<ChangeBody>,
    /// Where the next request starts (`since`); the same as `since` when
    /// nothing is new.
    #[schema(example = "42")]
    pub next: String,
}

/// One change.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeBody {
    /// The recording's id.
    pub id: uuid::Uuid,
    /// Its version after the change.
    pub version: i64,
    /// Whether it was deleted (then `recording` is null).
    pub deleted: bool,
    /// The recording as it is now; null for a deletion.
    pub recording: Option<Recording>,
}

/// The current clinician's recordings created, changed or deleted after a
/// cursor, in commit order: an offline client stores `next` and asks again
/// with it, and sees every change exactly once (docs/API.md says why none
/// can be missed).
#[utoipa::path(
    get,
    path = "/api/v1/changes",
    tag = "recordings",
    params(
        ("since" = Option<String>, Query, pattern = r"^[0-9]{1,18}$", description = "`next` of the previous answer (absent: from the beginning)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most this many changes (default 100)"),
    ),
    responses(
        (status = 200, description = "Changes and the next cursor", body = ChangesBody),
        (status = 422, description = "Bad query parameter", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn list_changes(
    State(reads): State<Reads>,
    context: AuditContext,
    RawQuery(raw): RawQuery,
) -> Result<Json<ChangesBody>, ApiError> {
    let (since, limit) = parse_changes_query(raw.as_deref().unwrap_or(""))?;
    let changes = reads.changes(&context, since, limit).await?;
    let next = changes.last().map_or(since, |c| c.seq).to_string();
    Ok(Json(ChangesBody {
        changes: changes
            .into_iter()
            .map(|c| ChangeBody {
                id: c.id,
                version: c.version,
                deleted: c.recording.is_none(),
                recording: c.recording,
            })
            .collect(),
        next,
    }))
}

/// A recording's audit history, oldest first: every audited change with who
/// made it and when.
#[utoipa::path(
    get,
    path = "/api/v1/recordings/{recording_id}/history",
    tag = "recordings",
    params(("recording_id" = uuid::Uuid, Path, description = "Recording UUID")),
    responses(
        (status = 200, description = "The events, oldest first", body = Vec<crate::audit::api::HistoryEntry>),
        (status = 404, description = "Recording not found", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Malformed id", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn history(
    State(reads): State<Reads>,
    context: AuditContext,
    RecordingId(id): RecordingId,
) -> Result<Json<Vec<HistoryEntry>>, ApiError> {
    let events = reads.history(&context, id).await?;
    Ok(Json(
        events
            .into_iter()
            .map(|e| HistoryEntry {
                action: e.action,
                actor: e.actor,
                at: e.at,
                changes: e.changes,
            })
            .collect(),
    ))
}

impl From<ReviewError> for ApiError {
    fn from(err: ReviewError) -> Self {
        match err {
            ReviewError::NotFound => Self::NotFound(super::store::RECORDING_NOT_FOUND),
            e @ (ReviewError::IllegalTransition(_)
            | ReviewError::NotRetryable(_)
            | ReviewError::Signed { .. }
            | ReviewError::NotSignable(_)
            | ReviewError::NothingToSign
            | ReviewError::NotSigned
            | ReviewError::CheckPending
            | ReviewError::Unacknowledged(_)
            | ReviewError::UnknownAlert(_)) => Self::Conflict(e.to_string()),
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
            ReviewError::Check(e) => e.into(),
            ReviewError::Store(e) => e.into(),
        }
    }
}

/// List the current clinician's recordings, newest first, one page at a time
/// (an administrator may name another clinician with `clinician_id`).
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
        ("clinician_id" = Option<String>, Query, description = "Whose recordings (default: the signed-in user's); another clinician's only for an administrator"),
    ),
    responses(
        (status = 200, description = "A page of recordings, newest first", body = Vec<Recording>,
            headers(("Link" = String, description = "`<url>; rel=\"next\"` when there is a next page"))),
        (status = 403, description = "`clinician_id` names another clinician, and the caller is not an administrator", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Bad query parameter", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn list_recordings(
    State(reads): State<Reads>,
    context: AuditContext,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (query, clinician) = parse_list_query(raw.as_deref().unwrap_or(""))?;
    let page = reads.list(&context, clinician.as_deref(), query).await?;
    let mut response = json_response(StatusCode::OK, page.json);
    if let Some(next) = page.next {
        let mut pairs = vec![("limit", query.limit.to_string())];
        if let Some(status) = query.status {
            pairs.push(("status", status.as_str().to_owned()));
        }
        if let Some(clinician) = clinician {
            pairs.push(("clinician_id", clinician));
        }
        pairs.push(("cursor", next.encode()));
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        let url = format!("/api/v1/recordings?{query}");
        // Only ASCII goes in: the query is percent-encoded.
        if let Ok(link) = HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
            response.headers_mut().insert(header::LINK, link);
        }
    }
    Ok(response)
}

/// A query string's pairs, or 400 when it cannot be decoded.
fn query_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(raw)
        .map_err(|e| ApiError::BadRequest(format!("Malformed query string: {e}")))
}

/// The value of a parameter: the last one when repeated, as FastAPI takes it.
fn last<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn query_loc(name: &str) -> Vec<Value> {
    vec![json!("query"), json!(name)]
}

/// Reads `status`, `limit`, `cursor` and `clinician_id`; other parameters are
/// ignored, as in FastAPI.
fn parse_list_query(raw: &str) -> Result<(ListQuery, Option<String>), ApiError> {
    let pairs = query_pairs(raw)?;
    let last = |name: &str| last(&pairs, name);
    let loc = query_loc;
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

    let limit = page_size(last("limit"), &mut issues);

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

    let clinician = last("clinician_id").map(str::to_owned);
    if issues.is_empty() {
        let query = ListQuery {
            status,
            limit,
            after,
        };
        Ok((query, clinician))
    } else {
        Err(ApiError::Validation(issues))
    }
}

/// `limit`: 1 to [`MAX_PAGE_SIZE`], [`DEFAULT_PAGE_SIZE`] when absent.
fn page_size(value: Option<&str>, issues: &mut Vec<ValidationIssue>) -> u32 {
    match value {
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
                issues.push(
                    ValidationIssue::new(kind, query_loc("limit"), msg, json!(s)).with_ctx(ctx),
                );
                DEFAULT_PAGE_SIZE
            }
            Err(_) => {
                issues.push(ValidationIssue::new(
                    "int_parsing",
                    query_loc("limit"),
                    "Input should be a valid integer, unable to parse string as an integer",
                    json!(s),
                ));
                DEFAULT_PAGE_SIZE
            }
        },
    }
}

/// Reads the change feed's `since` and `limit`; other parameters are ignored.
fn parse_changes_query(raw: &str) -> Result<(i64, u32), ApiError> {
    let pairs = query_pairs(raw)?;
    let mut issues = Vec::new();
    let since = match last(&pairs, "since") {
        None => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 0 && s.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                issues.push(ValidationIssue::new(
                    "value_error",
                    query_loc("since"),
                    "Value error, invalid cursor: use `next` of the previous answer",
                    json!(s),
                ));
                0
            }
        },
    };
    let limit = page_size(last(&pairs, "limit"), &mut issues);
    if issues.is_empty() {
        Ok((since, limit))
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
    context: AuditContext,
    RecordingId(id): RecordingId,
) -> Result<Response, ApiError> {
    let recording = review::retry(recordings.as_ref(), id, &context).await?;
    Ok(recording_response(
        StatusCode::ACCEPTED,
        RecordingJson::of(&recording)?,
    ))
}

/// Storage errors at the HTTP boundary: a missing row is a 404 naming what
/// was missing, a busy or closed database a 503, a full disk a 507 (logged
/// once per episode by `StorageHealth`, not per request), a taken key a 409;
/// anything else a logged 500 that never leaks internals.
impl From<super::ReadError> for ApiError {
    fn from(err: super::ReadError) -> Self {
        match err {
            e @ super::ReadError::NotYours => Self::Forbidden(e.to_string()),
            super::ReadError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Busy(e) => {
                tracing::warn!(error = %e, "database busy");
                crate::metrics::db_error("busy");
                Self::Unavailable("The database is busy; retry shortly".into())
            }
            StoreError::Closed => {
                crate::metrics::db_error("closed");
                Self::Unavailable("The database is not available".into())
            }
            StoreError::Duplicate(_) => Self::Conflict("The recording already exists".into()),
            StoreError::DiskFull(_) => {
                crate::metrics::db_error("disk_full");
                Self::StorageFull
            }
            other => {
                crate::metrics::db_error("other");
                Self::Internal(other.into())
            }
        }
    }
}
