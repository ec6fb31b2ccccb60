//! HTTP for the audit trail: who is acting in a request (the context every
//! audited change carries), and `GET /api/v1/recordings/{id}/history`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::routing::get;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::model::AuditContext;
use super::store::AuditStore;
use crate::error::ApiError;
use crate::http::extract::RecordingId;
use crate::identity::CurrentClinician;
use crate::recordings::store::{RECORDING_NOT_FOUND, RecordingStore, StoreError};

impl<S: Send + Sync> FromRequestParts<S> for AuditContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let clinician = CurrentClinician::from_request_parts(parts, state).await?;
        Ok(Self {
            actor: clinician.0,
            // Set (or checked) by the edge middleware before any handler runs.
            request_id: parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            client_addr: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip().to_string()),
        })
    }
}

/// The audit routes.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<dyn AuditStore>: FromRef<S>,
    Arc<dyn RecordingStore>: FromRef<S>,
{
    Router::new().route("/api/v1/recordings/{recording_id}/history", get(history))
}

/// One event of a recording's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    /// What: `update`, `sign`, `amend`, `delete`, `retry`, ….
    pub action: String,
    /// Who: a clinician id, or `system:<component>`.
    pub actor: String,
    /// When (RFC 3339 UTC).
    pub at: String,
    /// Every changed field: `{field: [before, after]}`.
    #[schema(value_type = Object)]
    pub changes: Value,
}

/// A recording's audit history, oldest first: every audited change with who
/// made it and when.
#[utoipa::path(
    get,
    path = "/api/v1/recordings/{recording_id}/history",
    tag = "recordings",
    params(("recording_id" = uuid::Uuid, Path, description = "Recording UUID")),
    responses(
        (status = 200, description = "The events, oldest first", body = Vec<HistoryEntry>),
        (status = 404, description = "Recording not found", body = crate::http::openapi::ErrorDetail),
        (status = 422, description = "Malformed id", body = crate::http::openapi::ValidationErrorBody),
    )
)]
pub async fn history(
    State(audit): State<Arc<dyn AuditStore>>,
    State(recordings): State<Arc<dyn RecordingStore>>,
    _clinician: CurrentClinician,
    RecordingId(id): RecordingId,
) -> Result<Json<Vec<HistoryEntry>>, ApiError> {
    // A recording that is not there (or was deleted) has no history to show.
    match recordings.get(id).await {
        Err(StoreError::NotFound(_)) => return Err(ApiError::NotFound(RECORDING_NOT_FOUND)),
        other => other?,
    };
    let events = audit.history(id).await?;
    Ok(Json(
        events
            .into_iter()
            .map(|e| HistoryEntry {
                action: e.action,
                actor: e.actor,
                at: e.at,
                changes: e.changes,
            })
            .collect(),
    ))
}
