//! HTTP for the audit trail: who is acting in a request (the context every
//! audited change carries), and what a recording's history answers (served
//! by `recordings::api::history`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::model::AuditContext;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::extract::ClientAddr;

impl<S: Send + Sync> FromRequestParts<S> for AuditContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        Ok(Self {
            actor: principal.id,
            role: principal.role,
            // Set (or checked) by the edge middleware before any handler runs.
            request_id: parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            client_addr: ClientAddr::from_request_parts(parts, state)
                .await
                .ok()
                .and_then(|ClientAddr(ip)| ip)
                .map(|ip| ip.to_string()),
        })
    }
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
