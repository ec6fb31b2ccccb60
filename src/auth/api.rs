//! HTTP for authentication: the middleware every API route but the health
//! check and sign-in runs behind, the [`Principal`] extractor handlers and the
//! audit context read the caller from, and the sign-in, sign-out, "who am I"
//! and first-run endpoints.

use axum::Router;
use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use utoipa::ToSchema;

use super::model::{Role, SetupRequest, SignInRequest};
use super::{
    AuthError, Authenticator, CSRF_HEADER, Caller, Credentials, Principal, SESSION_COOKIE, SignedIn,
};
use crate::audit::{AuditAction, AuditContext, AuditLog};
use crate::error::ApiError;
use crate::http::extract::{ClientAddr, JsonBody};

/// Routes that need no signed-in user: signing in, and the first run.
pub fn public_routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Authenticator: FromRef<S>,
    AuditLog: FromRef<S>,
{
    Router::new()
        .route("/api/v1/auth/login", post(sign_in))
        .route("/api/v1/auth/setup", post(set_up))
}

/// Routes of a signed-in user (mounted behind [`require_sign_in`]).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Authenticator: FromRef<S>,
    AuditLog: FromRef<S>,
{
    Router::new()
        .route("/api/v1/auth/me", get(me))
        .route("/api/v1/auth/logout", post(sign_out))
        .route("/api/v1/auth/logout-all", post(sign_out_everywhere))
}

/// Refuses a request without valid credentials (401, or 403 for a
/// cookie-borne change without its CSRF token); otherwise puts its
/// [`Caller`] where the extractors find it.
pub async fn require_sign_in(
    State(auth): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    let credentials = Credentials {
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        session: session_cookie(headers),
        csrf: headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()),
        state_changing: !matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        ),
    };
    let caller = auth.authenticate(credentials).await?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// The session cookie's value, if the request carries it.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Missing => Self::Unauthorized("Not authenticated"),
            AuthError::Invalid => Self::Unauthorized("Invalid authentication credentials"),
            AuthError::BadSignIn => Self::Unauthorized("Incorrect username or password"),
            e @ AuthError::Csrf => Self::Forbidden(e.to_string()),
            e @ AuthError::BadSetupCode => Self::Forbidden(e.to_string()),
            e @ AuthError::TooManyFailures(wait) => Self::TooManyRequests {
                detail: e.to_string(),
                retry_after: wait.as_secs().max(1),
            },
            AuthError::Account(e) => Self::BadRequest(e.to_string()),
            AuthError::Hash(e) => Self::Internal(e.into()),
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
            .get::<Caller>()
            .map(|caller| caller.principal.clone())
            .ok_or(ApiError::Unauthorized("Not authenticated"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized("Not authenticated"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let Ok(ClientAddr(client)) = ClientAddr::from_request_parts(parts, state).await;
        Ok(request_context(
            &parts.headers,
            client,
            &principal.id,
            principal.role,
        ))
    }
}

/// The body of `POST /api/v1/auth/login` (its schema; read by `SignInRequest`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct SignInBody {
    /// The user id.
    #[schema(min_length = 1)]
    username: String,
    /// The password.
    #[schema(min_length = 1, format = Password)]
    password: String,
}

/// The body of `POST /api/v1/auth/setup` (its schema; read by `SetupRequest`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct SetupBody {
    /// The one-time code `serve` printed in the setup link.
    #[schema(min_length = 1)]
    code: String,
    /// The administrator's user id.
    #[schema(min_length = 1)]
    username: String,
    /// Their name.
    #[schema(min_length = 1)]
    display_name: String,
    /// Their password (15 to 1024 characters).
    #[schema(min_length = 1, format = Password)]
    password: String,
}

/// The signed-in user, and the session's CSRF token (for a page).
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// The user id (the `clinician_id` of their recordings).
    id: String,
    /// Their name.
    display_name: String,
    /// `clinician` or `admin`.
    role: String,
    /// Send it in `X-CSRF-Token` with every state-changing request made
    /// with the session cookie; absent for an API token.
    csrf_token: Option<String>,
}

/// Sign in with a password: sets the session cookie (`HttpOnly`,
/// `SameSite=Strict`, `Secure` over HTTPS) and answers the user and the
/// session's CSRF token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body(content = SignInBody),
    responses(
        (status = 200, description = "Signed in; `Set-Cookie` holds the session", body = Me),
        (status = 400, description = "The body is not JSON", body = crate::http::openapi::ErrorDetail),
        (status = 401, description = "Incorrect username or password (which of the two is not said)", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "A field missing or not a string", body = crate::http::openapi::ValidationErrorBody),
        (status = 429, description = "Too many failed sign-ins from this address or to this account; `Retry-After` says when to retry", body = crate::http::openapi::ErrorDetail),
    )
)]
pub async fn sign_in(
    State(auth): State<Authenticator>,
    State(log): State<AuditLog>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request = SignInRequest::from_json(&body).map_err(ApiError::Validation)?;
    let address = client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let signed_in = auth
        .sign_in(&request.username, &request.password, &address)
        .await?;
    audit_sign_in(&auth, &log, &headers, client, &signed_in, "password").await?;
    Ok(session_response(&headers, signed_in))
}

/// Records a sign-in in the audit trail before its cookie is sent; a sign-in
/// the trail cannot record is refused (its session ended), as a read is.
async fn audit_sign_in(
    auth: &Authenticator,
    log: &AuditLog,
    headers: &HeaderMap,
    client: Option<std::net::IpAddr>,
    signed_in: &SignedIn,
    method: &str,
) -> Result<(), ApiError> {
    let context = request_context(headers, client, &signed_in.user.id, signed_in.user.role);
    let changes = serde_json::json!({"session": signed_in.session_id, "method": method});
    let event = context.event(AuditAction::SignIn, None, None, changes);
    if let Err(e) = log.record(event).await {
        auth.sign_out(&signed_in.session_id).await.ok();
        return Err(e.into());
    }
    Ok(())
}

/// Who acts in a request: `user`, with the request id (set or checked by
/// the edge middleware before any handler runs) and the client's address.
fn request_context(
    headers: &HeaderMap,
    client: Option<std::net::IpAddr>,
    user: &str,
    role: Role,
) -> AuditContext {
    AuditContext {
        actor: user.to_owned(),
        role,
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        client_addr: client.map(|ip| ip.to_string()),
    }
}

/// Create the first administrator with the one-time code `serve` printed
/// (only while no administrator exists), and sign them in.
#[utoipa::path(
    post,
    path = "/api/v1/auth/setup",
    tag = "auth",
    request_body(content = SetupBody),
    responses(
        (status = 200, description = "The administrator exists and is signed in", body = Me),
        (status = 400, description = "The body is not JSON, or the id, name or password is refused (says why)", body = crate::http::openapi::ErrorDetail),
        (status = 403, description = "The code is wrong or used, or an administrator exists", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "A field missing or not a string", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn set_up(
    State(auth): State<Authenticator>,
    State(log): State<AuditLog>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request = SetupRequest::from_json(&body).map_err(ApiError::Validation)?;
    let signed_in = auth
        .set_up(
            &request.code,
            &request.username,
            &request.display_name,
            &request.password,
        )
        .await?;
    tracing::warn!(user = %signed_in.user.id, "first run: the first administrator was created");
    audit_sign_in(&auth, &log, &headers, client, &signed_in, "setup").await?;
    Ok(session_response(&headers, signed_in))
}

/// The signed-in user.
#[utoipa::path(
    get,
    path = "/api/v1/auth/me",
    tag = "auth",
    responses(
        (status = 200, description = "Who is signed in (and the session's CSRF token)", body = Me),
        (status = 401, description = "Not signed in", body = crate::http::openapi::ErrorDetail),
    )
)]
pub async fn me(State(auth): State<Authenticator>, caller: Caller) -> Result<Response, ApiError> {
    let display_name = auth
        .user(&caller.principal.id)
        .await?
        .map_or_else(|| caller.principal.id.clone(), |u| u.display_name);
    Ok(axum::Json(Me {
        id: caller.principal.id,
        display_name,
        role: caller.principal.role.as_str().to_owned(),
        csrf_token: caller.session.map(|(_, csrf)| csrf),
    })
    .into_response())
}

/// Sign out: ends this session and clears the cookie.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Not signed in", body = crate::http::openapi::ErrorDetail),
    )
)]
pub async fn sign_out(
    State(auth): State<Authenticator>,
    State(log): State<AuditLog>,
    context: AuditContext,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ApiError> {
    if let Some((session, _)) = &caller.session {
        auth.sign_out(session).await?;
        let changes = serde_json::json!({"session": session});
        log.record(context.event(AuditAction::SignOut, None, None, changes))
            .await?;
    }
    Ok(cleared(&headers))
}

/// Sign out everywhere: ends every session of the user (API tokens stay).
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout-all",
    tag = "auth",
    responses(
        (status = 204, description = "Every session of the user ended"),
        (status = 401, description = "Not signed in", body = crate::http::openapi::ErrorDetail),
    )
)]
pub async fn sign_out_everywhere(
    State(auth): State<Authenticator>,
    State(log): State<AuditLog>,
    context: AuditContext,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ApiError> {
    let ended = auth.sign_out_everywhere(&caller.principal.id).await?;
    let changes = serde_json::json!({"sessions": ended});
    log.record(context.event(AuditAction::SignOut, None, None, changes))
        .await?;
    Ok(cleared(&headers))
}

/// Whether the client reached us over HTTPS (directly, or through a proxy
/// that says so): then the cookie is `Secure`.
fn over_https(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("proto=https"));
    forwarded_proto || forwarded
}

fn cookie(headers: &HeaderMap, value: &str, max_age: u64) -> Option<HeaderValue> {
    let secure = if over_https(headers) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .ok()
}

fn session_response(headers: &HeaderMap, signed_in: SignedIn) -> Response {
    let body = Me {
        id: signed_in.user.id,
        display_name: signed_in.user.display_name,
        role: signed_in.user.role.as_str().to_owned(),
        csrf_token: Some(signed_in.csrf_token),
    };
    let mut response = axum::Json(body).into_response();
    if let Some(value) = cookie(headers, &signed_in.secret, signed_in.max_age.as_secs()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn cleared(headers: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(value) = cookie(headers, "", 0) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
