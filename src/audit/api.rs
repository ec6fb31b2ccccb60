//! HTTP for the audit trail: what a recording's history answers (served by
//! `recordings::api::history`). Who acts in a request (the `AuditContext`
//! extractor) is `auth::api`'s.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

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
