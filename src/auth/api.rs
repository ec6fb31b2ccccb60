//! HTTP for authentication: the middleware every API route but the health
//! check and sign-in runs behind, the [`Principal`] extractor handlers and the
//! audit context read the caller from, and the sign-in (password and single
//! sign-on), sign-out, "who am I" and first-run endpoints.

use axum::Router;
use axum::extract::{FromRef, FromRequestParts, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use utoipa::ToSchema;

use super::model::{Role, SetupRequest, SignInRequest};
use super::oidc::{self, AccountChange, Callback, OidcError};
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
        .route("/api/v1/auth/providers", get(providers))
        .route("/api/v1/auth/oidc/start", get(single_sign_on_start))
        .route(oidc::CALLBACK_PATH, get(single_sign_on_callback))
}

/// The cookie that ties a single sign-on's callback to the browser that began it.
const OIDC_STATE_COOKIE: &str = "clinscribe_oidc";

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
    request_cookie(headers, SESSION_COOKIE)
}

/// The value of the request's cookie `wanted`.
fn request_cookie<'h>(headers: &'h HeaderMap, wanted: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
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
) -> Result<(), crate::db::StoreError> {
    let context = request_context(headers, client, &signed_in.user.id, signed_in.user.role);
    let changes = serde_json::json!({"session": signed_in.session_id, "method": method});
    let event = context.event(AuditAction::SignIn, None, None, changes);
    if let Err(e) = log.record(event).await {
        auth.sign_out(&signed_in.session_id).await.ok();
        return Err(e);
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

/// A `Set-Cookie` value: `HttpOnly`, and `Secure` over HTTPS.
fn set_cookie(
    headers: &HeaderMap,
    name: &str,
    value: &str,
    attributes: &str,
    max_age: u64,
) -> Option<HeaderValue> {
    let secure = if over_https(headers) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; {attributes}; HttpOnly; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// The session cookie: `SameSite=Strict`, since only our own pages use it.
fn cookie(headers: &HeaderMap, value: &str, max_age: u64) -> Option<HeaderValue> {
    set_cookie(
        headers,
        SESSION_COOKIE,
        value,
        "Path=/; SameSite=Strict",
        max_age,
    )
}

/// The single sign-on state cookie: `SameSite=Lax`, since the provider's
/// redirect back is a navigation from its site, which a strict cookie would
/// not come with; sent only to the callback.
fn state_cookie(headers: &HeaderMap, value: &str, max_age: u64) -> Option<HeaderValue> {
    set_cookie(
        headers,
        OIDC_STATE_COOKIE,
        value,
        &format!("Path={}; SameSite=Lax", oidc::CALLBACK_PATH),
        max_age,
    )
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

/// How one may sign in here.
#[derive(Debug, Serialize, ToSchema)]
pub struct Providers {
    /// Whether a user id and password sign in (`POST /api/v1/auth/login`).
    password: bool,
    /// Single sign-on, when configured.
    single_sign_on: Option<SingleSignOnInfo>,
}

/// The single sign-on provider, as the sign-in page offers it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SingleSignOnInfo {
    /// The provider's name ("Sign in with …").
    name: String,
    /// Where the browser goes to begin (add `?next=/path` to come back there).
    start_url: String,
}

/// How one may sign in: password, and single sign-on when configured.
#[utoipa::path(
    get,
    path = "/api/v1/auth/providers",
    tag = "auth",
    responses(
        (status = 200, description = "The ways to sign in", body = Providers),
    )
)]
pub async fn providers(State(auth): State<Authenticator>) -> axum::Json<Providers> {
    axum::Json(Providers {
        password: true,
        single_sign_on: auth.single_sign_on().map(|sso| SingleSignOnInfo {
            name: sso.name().to_owned(),
            start_url: "/api/v1/auth/oidc/start".to_owned(),
        }),
    })
}

/// The first value of each parameter of a query string.
fn query_params(raw: Option<&str>) -> std::collections::HashMap<String, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw.unwrap_or_default()).unwrap_or_default();
    let mut params = std::collections::HashMap::new();
    for (name, value) in pairs {
        params.entry(name).or_insert(value);
    }
    params
}

/// A 303 to `location`, with `cookie` set.
fn see_other(location: &str, cookie: Option<HeaderValue>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Back to the sign-in page, which says why in a sentence of its own.
fn back_to_sign_in(headers: &HeaderMap, err: &OidcError) -> Response {
    tracing::warn!(reason = %err, "single sign-on refused");
    see_other(
        &format!("/signin?error={}", err.code()),
        state_cookie(headers, "", 0),
    )
}

/// The callback URL of this server as the browser reached it.
fn callback_url(headers: &HeaderMap) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ApiError::BadRequest("a Host header is required".to_owned()))?;
    let scheme = if over_https(headers) { "https" } else { "http" };
    Ok(format!("{scheme}://{host}{}", oidc::CALLBACK_PATH))
}

fn not_configured() -> ApiError {
    ApiError::NotFound("Single sign-on is not configured on this server")
}

/// Begin single sign-on: to the provider (authorization code flow with
/// PKCE, `state` and `nonce`), which sends the browser back to the callback.
#[utoipa::path(
    get,
    path = "/api/v1/auth/oidc/start",
    tag = "auth",
    params(("next" = Option<String>, Query, description = "A path of this site to go to once signed in (default `/`)")),
    responses(
        (status = 303, description = "To the provider's sign-in (`Location`); a cookie ties the callback to this browser. When the provider cannot be reached: to `/signin?error=provider`"),
        (status = 400, description = "No Host header to make the callback URL from", body = crate::http::openapi::ErrorDetail),
        (status = 404, description = "Single sign-on is not configured", body = crate::http::openapi::ErrorDetail),
    )
)]
pub async fn single_sign_on_start(
    State(auth): State<Authenticator>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let sso = auth.single_sign_on().ok_or_else(not_configured)?;
    let redirect_uri = match sso.redirect_url() {
        Some(url) => url.to_owned(),
        None => callback_url(&headers)?,
    };
    let params = query_params(raw.as_deref());
    let return_to = oidc::safe_return_path(params.get("next").map(String::as_str));
    Ok(match sso.start(&redirect_uri, &return_to).await {
        Ok(started) => {
            let cookie = state_cookie(&headers, &started.state, oidc::LOGIN_TTL.as_secs());
            see_other(&started.authorize_url, cookie)
        }
        Err(e) => back_to_sign_in(&headers, &e),
    })
}

/// Where the provider sends the browser back: checks the `state` against
/// this browser's cookie, exchanges the code, checks the ID token, finds or
/// creates the user, and signs them in.
#[utoipa::path(
    get,
    path = "/api/v1/auth/oidc/callback",
    tag = "auth",
    params(
        ("code" = Option<String>, Query, description = "The authorization code"),
        ("state" = Option<String>, Query, description = "The `state` of the request"),
        ("error" = Option<String>, Query, description = "The provider's error, when it refused"),
    ),
    responses(
        (status = 303, description = "Signed in: to the page asked for, with the session cookie set. Refused: to `/signin?error=CODE` (`expired`: no sign-in of this browser with that state; `refused`: the provider said no; `invalid`: the ID token failed a check; `unknown`: no account for this identity; `disabled`; `taken`: the user id belongs to another account; `provider`: the provider could not be reached; `unavailable`: the database could not answer)"),
        (status = 404, description = "Single sign-on is not configured", body = crate::http::openapi::ErrorDetail),
    )
)]
pub async fn single_sign_on_callback(
    State(auth): State<Authenticator>,
    State(log): State<AuditLog>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let sso = auth.single_sign_on().ok_or_else(not_configured)?;
    let params = query_params(raw.as_deref());
    let param = |name: &str| params.get(name).map(String::as_str);
    let callback = Callback {
        code: param("code"),
        state: param("state"),
        error: param("error"),
        cookie_state: request_cookie(&headers, OIDC_STATE_COOKIE),
    };
    let (identity, return_to) = match sso.finish(callback).await {
        Ok(found) => found,
        Err(e) => {
            crate::metrics::sign_in("oidc", "failure");
            return Ok(back_to_sign_in(&headers, &e));
        }
    };
    let (signed_in, change) = match auth.sign_in_external(&identity).await {
        Ok(done) => done,
        Err(e) => {
            crate::metrics::sign_in("oidc", "failure");
            return Ok(back_to_sign_in(&headers, &e));
        }
    };
    let user = &signed_in.user;
    let account_event = match change {
        AccountChange::None => None,
        AccountChange::Created => Some((
            AuditAction::UserAdd,
            serde_json::json!({"user": user.id, "role": user.role.as_str(), "single_sign_on": true}),
        )),
        AccountChange::RoleChanged(role) => Some((
            AuditAction::UserRole,
            serde_json::json!({"user": user.id, "role": role.as_str()}),
        )),
    };
    if let Some((action, changes)) = account_event {
        let context = request_context(&headers, client, &user.id, user.role);
        if let Err(e) = log.record(context.event(action, None, None, changes)).await {
            auth.sign_out(&signed_in.session_id).await.ok();
            return Ok(back_to_sign_in(&headers, &OidcError::Store(e)));
        }
    }
    if let Err(e) = audit_sign_in(&auth, &log, &headers, client, &signed_in, "oidc").await {
        return Ok(back_to_sign_in(&headers, &OidcError::Store(e)));
    }
    crate::metrics::sign_in("oidc", "success");
    let mut response = see_other(&return_to, state_cookie(&headers, "", 0));
    if let Some(value) = cookie(&headers, &signed_in.secret, signed_in.max_age.as_secs()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}
