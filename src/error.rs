//! The HTTP error boundary: every error a handler returns is an [`ApiError`],
//! turned into a response in one place, in FastAPI's shape:
//!
//! - `{"detail": "<message>"}` for everything but validation;
//! - `{"detail": [{"type", "loc", "msg", "input", ...}, ...]}` with status 422
//!   for validation, one entry per problem (see [`ValidationIssue`]).
//!
//! Use the variant that says what went wrong for the *client*. Each domain
//! converts its own errors where its HTTP handlers live (`recordings::api`,
//! `uploads::api`), so this module knows no domain: a missing row becomes 404,
//! a busy database 503, a full disk 507, anything else a logged 500 that never
//! leaks internals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::validation::ValidationIssue;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: the request did not validate.
    #[error("validation failed")]
    Validation(Vec<ValidationIssue>),
    /// 400 with a message.
    #[error("{0}")]
    BadRequest(String),
    /// 401 with `WWW-Authenticate: Bearer`: no valid credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: refused whoever asks (e.g. a missing CSRF token).
    #[error("{0}")]
    Forbidden(String),
    /// 429 with `Retry-After` (seconds).
    #[error("{detail}")]
    TooManyRequests {
        /// What happened.
        detail: String,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// 404 with a message, e.g. "Recording not found".
    #[error("{0}")]
    NotFound(&'static str),
    /// 405.
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    /// 409: the request conflicts with what is stored.
    #[error("{0}")]
    Conflict(String),
    /// 409 with `Retry-After`: another request holds what this one needs; retry shortly.
    #[error("{0}")]
    ConflictRetry(String),
    /// 412: the resource changed since the version the client named; the
    /// body carries the current one (`{"detail", "current"}`) and its `ETag`.
    #[error("{message}")]
    Stale {
        /// What happened, for people.
        message: String,
        /// The current resource, as JSON.
        current: String,
        /// Its `ETag`.
        etag: HeaderValue,
    },
    /// 428: a write must name the version it changes (`If-Match`).
    #[error("{0}")]
    PreconditionRequired(String),
    /// 413: the body is larger than the limit (bytes).
    #[error("Request body too large: the limit is {0} bytes")]
    PayloadTooLarge(usize),
    /// 415: the body is not of a supported type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 416: a `Range` beyond the end of the resource (its length).
    #[error("Range not satisfiable: the audio is {0} bytes long")]
    RangeNotSatisfiable(u64),
    /// 503: a dependency (the database) cannot serve requests now.
    #[error("{0}")]
    Unavailable(String),
    /// 507 with `Retry-After`: the storage (database or audio) is full; nothing
    /// was stored.
    #[error(
        "The server's storage is full, so nothing was stored; retry later (an administrator must free space)"
    )]
    StorageFull,
    /// 500: a bug or an unexpected failure; logged, never shown.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Seconds a client waits before retrying a write refused for lack of space:
/// freeing space takes a person, so sooner would only add load.
pub const STORAGE_FULL_RETRY_AFTER: &str = "30";

#[derive(Serialize)]
struct ValidationBody<'a> {
    detail: &'a [ValidationIssue],
}

impl ApiError {
    /// A 422 with a single issue.
    pub fn invalid(issue: ValidationIssue) -> Self {
        Self::Validation(vec![issue])
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) | Self::ConflictRetry(_) => StatusCode::CONFLICT,
            Self::Stale { .. } => StatusCode::PRECONDITION_FAILED,
            Self::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            // Through a struct, not `json!`, to keep pydantic's key order.
            Self::Validation(issues) => {
                return (status, axum::Json(ValidationBody { detail: issues })).into_response();
            }
            Self::Internal(err) => {
                tracing::error!(error = format!("{err:#}"), "internal error");
                json!({ "detail": "Internal Server Error" })
            }
            Self::Stale {
                message,
                current,
                etag,
            } => {
                // The current resource as stored, spliced in unparsed.
                let detail = serde_json::to_string(message).unwrap_or_default();
                let body = format!("{{\"detail\":{detail},\"current\":{current}}}");
                let mut response =
                    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
                response.headers_mut().insert(header::ETAG, etag.clone());
                return response;
            }
            other => json!({ "detail": other.to_string() }),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE || matches!(self, Self::ConflictRetry(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::TooManyRequests { retry_after, .. } = &self
            && let Ok(value) = HeaderValue::from_str(&retry_after.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if matches!(self, Self::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, Self::StorageFull) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(STORAGE_FULL_RETRY_AFTER),
            );
        }
        if let Self::RangeNotSatisfiable(len) = self
            && let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}"))
        {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        response
    }
}
