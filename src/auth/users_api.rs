//! HTTP for administrators: list, add and disable users (what `clinscribe
//! user` does on the command line, for sites whose people sign in through
//! single sign-on and whose administrators have no shell). Each change is an
//! audit event by the administrator.

use axum::Router;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::model::{AccountError, NewUserRequest, User};
use super::{AccountCommandError, Authenticator, policy};
use crate::audit::{AuditAction, AuditContext, AuditLog};
use crate::error::ApiError;
use crate::http::extract::JsonBody;

/// The routes (mounted behind `auth::api::require_sign_in`).
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Authenticator: FromRef<S>,
    AuditLog: FromRef<S>,
{
    Router::new()
        .route("/api/v1/users", get(list_users).post(add_user))
        .route("/api/v1/users/{user_id}/disable", post(disable_user))
}

/// A user, as an administrator sees them (never a password or its hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserJson {
    /// The id: the `clinician_id` of their recordings.
    id: String,
    /// Their name.
    display_name: String,
    /// `clinician` or `admin`.
    role: String,
    /// When the account was made (RFC 3339).
    created_at: String,
    /// When it was disabled, if it was.
    disabled_at: Option<String>,
    /// Whether it signs in with a password.
    password: bool,
    /// Whether it is linked to the single sign-on provider.
    single_sign_on: bool,
}

impl From<User> for UserJson {
    fn from(user: User) -> Self {
        Self {
            role: user.role.as_str().to_owned(),
            created_at: user.created_at.to_string(),
            disabled_at: user.disabled_at.map(|t| t.to_string()),
            password: user.has_password,
            single_sign_on: user.oidc_subject.is_some(),
            id: user.id,
            display_name: user.display_name,
        }
    }
}

/// The body of `POST /api/v1/users` (its schema; read by `NewUserRequest`).
#[derive(ToSchema)]
#[allow(dead_code)]
struct NewUserBody {
    /// The user id: 1 to 64 letters, digits or `.`, `_`, `-`, `@`.
    #[schema(min_length = 1)]
    id: String,
    /// Their name (1 to 200 characters).
    #[schema(min_length = 1)]
    display_name: String,
    /// `clinician` (the default) or `admin`.
    #[schema(pattern = "^(clinician|admin)$")]
    role: Option<String>,
    /// A password (15 to 1024 characters), for a local account.
    #[schema(min_length = 1, format = Password)]
    password: Option<String>,
    /// The single sign-on provider's subject (`sub`) to link the account to.
    #[schema(min_length = 1)]
    oidc_subject: Option<String>,
}

fn administrators_only(context: &AuditContext) -> Result<(), ApiError> {
    if policy::may_manage_users(context.role) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "Only an administrator manages users".to_owned(),
        ))
    }
}

/// An account command's refusal, as HTTP.
fn refused(err: AccountCommandError) -> ApiError {
    match err {
        AccountCommandError::Refused(AccountError::NoSuchUser(_)) => {
            ApiError::NotFound("User not found")
        }
        AccountCommandError::Refused(
            e @ (AccountError::UserExists(_) | AccountError::SubjectLinked(_)),
        ) => ApiError::Conflict(e.to_string()),
        AccountCommandError::Refused(e) => ApiError::BadRequest(e.to_string()),
        AccountCommandError::Hash(e) => ApiError::Internal(e.into()),
        AccountCommandError::Store(e) => e.into(),
    }
}

/// Every user, by id (administrators only).
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    responses(
        (status = 200, description = "Every user, by id", body = Vec<UserJson>),
        (status = 403, description = "The caller is not an administrator", body = crate::http::openapi::ErrorDetail),
    )
)]
pub async fn list_users(
    State(auth): State<Authenticator>,
    context: AuditContext,
) -> Result<Response, ApiError> {
    administrators_only(&context)?;
    let users: Vec<UserJson> = auth.users().await?.into_iter().map(Into::into).collect();
    Ok(axum::Json(users).into_response())
}

/// Add a user (administrators only): a clinician unless `role` says admin,
/// with a password for a local account, and/or linked to the single
/// sign-on provider's subject.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "users",
    request_body(content = NewUserBody),
    responses(
        (status = 201, description = "The user", body = UserJson),
        (status = 400, description = "The body is not JSON, or the id, name, password or subject is refused (says why)", body = crate::http::openapi::ErrorDetail),
        (status = 403, description = "The caller is not an administrator", body = crate::http::openapi::ErrorDetail),
        (status = 409, description = "The id is taken, or the subject is linked to another user", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "A field missing or of the wrong type", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn add_user(
    State(auth): State<Authenticator>,
    State(log): State<AuditLog>,
    context: AuditContext,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    administrators_only(&context)?;
    let request = NewUserRequest::from_json(&body).map_err(ApiError::Validation)?;
    auth.add_user(
        &request.id,
        &request.display_name,
        request.role,
        request.password.as_deref(),
        request.oidc_subject.as_deref(),
    )
    .await
    .map_err(refused)?;
    let changes = json!({
        "user": request.id,
        "role": request.role.as_str(),
        "password": request.password.is_some(),
        "single_sign_on": request.oidc_subject.is_some(),
    });
    log.record(context.event(AuditAction::UserAdd, None, None, changes))
        .await?;
    let user = auth
        .user(&request.id)
        .await?
        .ok_or(ApiError::NotFound("User not found"))?;
    Ok((StatusCode::CREATED, axum::Json(UserJson::from(user))).into_response())
}

/// Disable a user (administrators only): they cannot sign in, and their
/// sessions and API tokens stop working at once (within a second on every
/// instance). An administrator cannot disable their own account.
#[utoipa::path(
    post,
    path = "/api/v1/users/{user_id}/disable",
    tag = "users",
    params(("user_id" = String, Path, description = "The user id")),
    responses(
        (status = 200, description = "The user, disabled", body = UserJson),
        (status = 403, description = "The caller is not an administrator", body = crate::http::openapi::ErrorDetail),
        (status = 404, description = "No such user", body = crate::http::openapi::ErrorDetail),
        (status = 409, description = "The administrator's own account", body = crate::http::openapi::ErrorDetail),
    )
)]
pub async fn disable_user(
    State(auth): State<Authenticator>,
    State(log): State<AuditLog>,
    context: AuditContext,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    administrators_only(&context)?;
    if user_id == context.actor {
        return Err(ApiError::Conflict(
            "You cannot disable your own account; another administrator can".to_owned(),
        ));
    }
    auth.disable(&user_id).await.map_err(refused)?;
    log.record(context.event(
        AuditAction::UserDisable,
        None,
        None,
        json!({"user": user_id}),
    ))
    .await?;
    let user = auth
        .user(&user_id)
        .await?
        .ok_or(ApiError::NotFound("User not found"))?;
    Ok(axum::Json(UserJson::from(user)).into_response())
}
