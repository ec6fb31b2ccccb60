//! Who is calling. The one place that decides the clinician of a request.
//!
//! The original service had no authentication and attributed everything to the
//! fixed clinician `current-clinician`; we keep that until authentication lands,
//! which replaces this extractor and nothing else.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;

/// The clinician the original attributed every request to.
pub const DEFAULT_CLINICIAN: &str = "current-clinician";

/// The authenticated clinician making the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentClinician(pub String);

impl CurrentClinician {
    /// The clinician's id.
    pub fn id(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentClinician {
    type Rejection = ApiError;

    async fn from_request_parts(_parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(DEFAULT_CLINICIAN.to_owned()))
    }
}
