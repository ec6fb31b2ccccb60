//! HTTP for authentication: the middleware every API route but the health
//! check runs behind, and the [`Principal`] extractor handlers and the audit
//! context read the caller from.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

use super::{AuthError, Authenticator, Principal};
use crate::error::ApiError;

/// Refuses a request without valid credentials (401); otherwise puts its
/// [`Principal`] where the extractor finds it.
pub async fn require_sign_in(
    State(auth): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = auth.authenticate(header).await?;
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Missing => Self::Unauthorized("Not authenticated"),
            AuthError::Invalid => Self::Unauthorized("Invalid authentication credentials"),
            AuthError::Store(e) => e.into(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    /// The principal `require_sign_in` found; a route mounted without it
    /// has none, and answers 401 rather than act for no one.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::Unauthorized("Not authenticated"))
    }
}
