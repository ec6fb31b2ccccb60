//! Request extractors that reject bad input the way FastAPI did: 422 with
//! pydantic-style issues, 400 for undecodable bodies, 413 for oversized ones.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::ApiError;
use crate::validation::ValidationIssue;

/// The client's address, when the server knows it (the accept loop records
/// it; a request made in-process has none).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

/// The largest JSON body accepted (recordings metadata is tiny; this is generous).
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;

/// A JSON request body, decoded but not yet validated against a model.
///
/// Like FastAPI: a missing content type is read as JSON; a non-JSON content type
/// is a `model_attributes_type` issue; an empty body or `null` is `missing`.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let is_json = is_json_content_type(req.headers());
        let bytes = read_limited(req.into_body(), JSON_BODY_LIMIT).await?;
        decode_json(is_json, &bytes)?.map(Self).ok_or_else(|| {
            ApiError::invalid(ValidationIssue::new(
                "missing",
                vec![json!("body")],
                "Field required",
                Value::Null,
            ))
        })
    }
}

/// A JSON request body that may be left out: None for an empty body (of any
/// content type) or JSON `null`; otherwise as [`JsonBody`].
#[derive(Debug)]
pub struct OptionalJsonBody(pub Option<Value>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let is_json = is_json_content_type(req.headers());
        let bytes = read_limited(req.into_body(), JSON_BODY_LIMIT).await?;
        if bytes.is_empty() {
            return Ok(Self(None));
        }
        decode_json(is_json, &bytes).map(Self)
    }
}

/// A body as JSON, refused as FastAPI refuses it; None for an empty body or
/// `null` (which a required body calls missing).
fn decode_json(is_json: bool, bytes: &[u8]) -> Result<Option<Value>, ApiError> {
    let body_loc = || vec![json!("body")];
    if !is_json {
        return Err(ApiError::invalid(ValidationIssue::new(
            "model_attributes_type",
            body_loc(),
            "Input should be a valid dictionary or object to extract fields from (send Content-Type: application/json)",
            Value::String(String::from_utf8_lossy(bytes).into_owned()),
        )));
    }
    if bytes.is_empty() {
        return Ok(None);
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::BadRequest(
            "There was an error parsing the body".into(),
        ));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Null) => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(e) => {
            let offset = byte_offset(bytes, e.line(), e.column());
            Err(ApiError::invalid(
                ValidationIssue::new(
                    "json_invalid",
                    vec![json!("body"), json!(offset)],
                    "JSON decode error",
                    json!({}),
                )
                .with_ctx(json!({ "error": e.to_string() })),
            ))
        }
    }
}

/// FastAPI reads the body as JSON when there is no content type, or a JSON one.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Reads a whole body, failing with 413 as soon as it exceeds `limit`.
pub async fn read_limited(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ApiError::PayloadTooLarge(limit)),
        Err(e) => Err(ApiError::BadRequest(format!(
            "Could not read the request body: {e}"
        ))),
    }
}

/// serde_json reports (line, column); FastAPI reported a character position.
fn byte_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let line_start: usize = bytes
        .split(|b| *b == b'\n')
        .take(line.saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    line_start + column.saturating_sub(1)
}

/// A recording id from the path, in any form `uuid` accepts (no hyphens, upper case).
#[derive(Debug, Clone, Copy)]
pub struct RecordingId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for RecordingId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        Uuid::parse_str(&raw).map(Self).map_err(|e| {
            ApiError::invalid(ValidationIssue::new(
                "uuid_parsing",
                vec![json!("path"), json!("recording_id")],
                format!("Input should be a valid UUID, {e}"),
                Value::String(raw),
            ))
        })
    }
}
