//! The OpenAPI document, generated from the handlers' annotations.

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// `{"detail": "<message>"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong.
    pub detail: String,
}

/// FastAPI's validation error body: one entry per problem.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationErrorBody {
    /// The problems.
    pub detail: Vec<ValidationIssueSchema>,
}

/// One validation problem.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationIssueSchema {
    /// Kind, e.g. `missing`, `int_parsing`, `enum`, `uuid_parsing`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Location: `["body", "patient_id"]`, `["query", "status"]`, ...
    #[schema(value_type = Vec<Object>)]
    pub loc: Vec<serde_json::Value>,
    /// Message.
    pub msg: String,
    /// The offending input.
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    /// Constraint details.
    #[schema(value_type = Option<Object>)]
    pub ctx: Option<serde_json::Value>,
}

/// The API description served at `/openapi.json` and rendered at `/docs`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "clinscribe",
        description = "Clinical dictation service: recordings, uploads and their processing state. \
                       Wire-compatible with the original PWA service.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        crate::health::health,
        crate::recordings::api::create_recording,
        crate::recordings::api::list_recordings,
        crate::recordings::api::get_recording,
        crate::uploads::api::upload_recording,
        crate::uploads::api::download_audio,
        crate::uploads::api::start_upload,
        crate::uploads::api::upload_status,
        crate::uploads::api::upload_chunk,
    ),
    components(schemas(ErrorDetail, ValidationErrorBody, ValidationIssueSchema)),
    tags(
        (name = "health", description = "Service health"),
        (name = "recordings", description = "Clinical recordings"),
        (name = "uploads", description = "Audio: uploads that are never lost or duplicated, chunked uploads, download"),
    )
)]
pub struct ApiDoc;
