//! The response bodies of errors, as the OpenAPI document describes them
//! (the document itself is assembled in `crate::app::openapi`).

use serde::Serialize;
use utoipa::ToSchema;

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
    pub detail: Vec<crate::validation::ValidationIssue>,
}
