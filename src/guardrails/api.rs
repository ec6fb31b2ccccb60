//! `POST /api/v1/verify`: the checks on a text given in the body, storing
//! nothing (for integrations, and for trying the rules).

use axum::Router;
use axum::extract::{FromRef, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::model::{Verification, VerifyRequest};
use super::{ExtractError, Guardrails};
use crate::error::ApiError;
use crate::http::extract::JsonBody;

/// The routes (mounted behind sign-in: the text may be patient data).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Guardrails: FromRef<S>,
{
    Router::new().route("/api/v1/verify", post(verify))
}

impl From<ExtractError> for ApiError {
    fn from(err: ExtractError) -> Self {
        match err {
            ExtractError::Transient { message: e, .. } | ExtractError::Permanent(e) => {
                ApiError::Unavailable(format!("The extraction engine failed: {e}"))
            }
        }
    }
}

/// The body of `POST /api/v1/verify` (its schema; read by `VerifyRequest`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct VerifyBody {
    /// The text to check (at most 200,000 characters).
    #[schema(max_length = 200000)]
    text: String,
    /// What is known of the patient besides; every key optional.
    context: Option<VerifyContext>,
}

/// The patient's context for a check. An unknown key is refused (422): a
/// misspelt `allergy` must not silently check nothing.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct VerifyContext {
    /// Known allergies ("penicillin", "sulfa", a drug's name).
    allergies: Option<Vec<String>>,
    /// Current medications (generic or brand names).
    medications: Option<Vec<String>>,
    /// The admission date (`YYYY-MM-DD`).
    #[schema(format = Date)]
    admission_date: Option<String>,
    /// The encounter's date (`YYYY-MM-DD`); relative dates ("yesterday")
    /// are read against it. Today (UTC) when absent.
    #[schema(format = Date)]
    encounter_date: Option<String>,
}

/// Extract the facts of a text and check them, storing nothing. The answer
/// is what a recording's `verification_results` holds; every alert's
/// evidence has offsets in Unicode code points into `text`.
#[utoipa::path(
    post,
    path = "/api/v1/verify",
    tag = "guardrails",
    request_body(content = VerifyBody),
    responses(
        (status = 200, description = "The result of the checks", body = Verification),
        (status = 400, description = "Body is not valid UTF-8", body = crate::http::openapi::ErrorDetail),
        (status = 413, description = "Body too large", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Not JSON, a field missing or of the wrong type, or a key unknown in `context`", body = crate::http::openapi::ValidationErrorBody),
        (status = 503, description = "The `openai` extraction engine failed: its server timed out, could not be reached, refused (429, 5xx), or answered something that is not the facts asked for", body = crate::http::openapi::ErrorDetail),
    )
)]
pub async fn verify(
    State(guardrails): State<Guardrails>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request = VerifyRequest::from_json(&body).map_err(ApiError::Validation)?;
    let verification = guardrails.verify(&request.text, &request.context).await?;
    Ok(axum::Json(verification).into_response())
}
