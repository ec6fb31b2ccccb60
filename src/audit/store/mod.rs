//! The `audit_events` table. Events are appended by the stores of the tables
//! they audit, inside the transaction of the change ([`sqlite::append`],
//! [`postgres::append`]); [`AuditStore`] reads them, and appends events that
//! change nothing else (an export). The table keeps every value as text on
//! both backends, so the SQL is written once, here.

pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::{Stream, TryStreamExt};
use uuid::Uuid;

use super::model::{AuditEvent, BrokenLink, ChainCheck, NewAuditEvent, StoredEvent};
use crate::db::{Database, StoreError};
use crate::timestamp::Timestamp;

/// Reads the audit trail and appends events of their own.
#[async_trait]
pub trait AuditStore: Send + Sync + std::fmt::Debug {
    /// Appends an event in a transaction of its own.
    async fn append(&self, event: &NewAuditEvent) -> Result<AuditEvent, StoreError>;

    /// Appends `events`, in order, in one transaction of their own (the
    /// [`AuditLog`](crate::audit::AuditLog)'s batch).
    async fn append_batch(&self, events: &[&NewAuditEvent]) -> Result<(), StoreError>;

    /// A recording's events, oldest first.
    async fn history(&self, recording_id: Uuid) -> Result<Vec<AuditEvent>, StoreError>;

    /// Events at or after `since` and before `until`, of one patient if
    /// given, oldest first.
    async fn export(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        patient_id: Option<&str>,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Recomputes the whole chain: how many events, and the first broken link.
    async fn verify(&self) -> Result<(i64, Option<BrokenLink>), StoreError>;
}

/// The store for `db`.
pub fn open(db: &Database) -> Arc<dyn AuditStore> {
    match db {
        Database::Sqlite(db) => Arc::new(sqlite::SqliteAudit::new(db.clone())),
        Database::Postgres(db) => Arc::new(postgres::PgAudit::new(db.clone())),
    }
}

/// SQL both backends run as it is.
mod sql {
    /// The chain's last event.
    pub const LAST: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";
    /// One event.
    pub const INSERT: &str = "INSERT INTO audit_events (seq, at, actor, action, recording_id, \
        patient_id, changes, request_id, client_addr, prev_hash, hash) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
    /// The columns, in [`StoredEvent`](crate::audit::model::StoredEvent) order.
    macro_rules! columns {
        () => {
            "seq, at, actor, action, recording_id, patient_id, changes, request_id, client_addr, prev_hash, hash"
        };
    }
    /// A recording's events.
    pub const HISTORY: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM audit_events WHERE recording_id = $1 ORDER BY seq"
    );
    /// Events in a time range, of a patient if given.
    pub const EXPORT: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM audit_events WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at < $2) \
         AND ($3 IS NULL OR patient_id = $3) ORDER BY seq"
    );
    /// Every event, in chain order.
    pub const ALL: &str = concat!("SELECT ", columns!(), " FROM audit_events ORDER BY seq");
}

impl From<StoredEvent> for AuditEvent {
    /// `changes` that are not JSON (edited by hand) become a string (shown as
    /// such; verification, which hashes the stored text, reports the event).
    fn from(row: StoredEvent) -> Self {
        Self {
            seq: row.seq,
            at: row.at,
            actor: row.actor,
            action: row.action,
            recording_id: row.recording_id,
            patient_id: row.patient_id,
            changes: serde_json::from_str(&row.changes)
                .unwrap_or(serde_json::Value::String(row.changes)),
            request_id: row.request_id,
            client_addr: row.client_addr,
            prev_hash: row.prev_hash,
            hash: row.hash,
        }
    }
}

/// `events` chained, in order, after the chain's last event (`(seq, hash)`,
/// None when the chain is empty).
fn chain_after(events: &[&NewAuditEvent], last: Option<(i64, String)>) -> Vec<AuditEvent> {
    let (mut seq, mut prev) = last.unwrap_or((0, super::model::GENESIS_HASH.to_owned()));
    let mut chained = Vec::with_capacity(events.len());
    for event in events {
        seq += 1;
        let next = AuditEvent::chain(event, seq, &prev);
        prev.clone_from(&next.hash);
        chained.push(next);
    }
    chained
}

/// Binds an event to [`sql::INSERT`].
fn bind_event<'q, DB: sqlx::Database>(
    q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    e: &'q AuditEvent,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    q.bind(e.seq)
        .bind(e.at.as_str())
        .bind(e.actor.as_str())
        .bind(e.action.as_str())
        .bind(e.recording_id.as_deref())
        .bind(e.patient_id.as_deref())
        .bind(e.changes.to_string())
        .bind(e.request_id.as_deref())
        .bind(e.client_addr.as_deref())
        .bind(e.prev_hash.as_str())
        .bind(e.hash.as_str())
}

/// Recomputes the chain over `rows` (every event, in `seq` order): how many
/// events verified, and the first broken link.
async fn verify_rows(
    rows: impl Stream<Item = Result<StoredEvent, sqlx::Error>>,
) -> Result<(i64, Option<BrokenLink>), StoreError> {
    let mut check = ChainCheck::default();
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.try_next().await? {
        if let Err(broken) = check.next(&row) {
            return Ok((check.count(), Some(broken)));
        }
    }
    Ok((check.count(), None))
}
