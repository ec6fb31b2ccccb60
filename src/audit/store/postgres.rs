//! The audit trail on PostgreSQL: several instances append to one chain, so
//! an appender first takes a transaction-scoped advisory lock; the chain's
//! last event, read after it, is then the one to follow, and stays so until
//! the appender commits.

use async_trait::async_trait;
use uuid::Uuid;

use super::{AuditStore, chain_after, sql, verify_in_ranges, verify_rows};
use crate::audit::model::{AuditEvent, BrokenLink, NewAuditEvent, StoredEvent};
use crate::db::StoreError;
use crate::db::postgres::PgDatabase;
use crate::timestamp::Timestamp;

/// The advisory lock that serialises appends to the chain ("audit" in ASCII).
const CHAIN_LOCK: i64 = 0x0061_7564_6974;

/// Appends `event` to the chain inside the caller's transaction.
pub async fn append(
    conn: &mut sqlx::PgConnection,
    event: &NewAuditEvent,
) -> Result<(), StoreError> {
    append_many(conn, &[event]).await.map(drop)
}

/// Appends `events` to the chain, in order, inside the caller's transaction:
/// the lock, one read of the chain's end, one INSERT of them all.
pub async fn append_many(
    conn: &mut sqlx::PgConnection,
    events: &[&NewAuditEvent],
) -> Result<Vec<StoredEvent>, StoreError> {
    if events.is_empty() || crate::audit::UNAUDITED {
        return Ok(Vec::new());
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *conn)
        .await?;
    let last: Option<(i64, String)> = sqlx::query_as(sql::LAST).fetch_optional(&mut *conn).await?;
    let chained = chain_after(events, last);
    let column = |f: fn(&StoredEvent) -> Option<&str>| chained.iter().map(f).collect::<Vec<_>>();
    sqlx::query(INSERT_ROWS)
        .bind(chained.iter().map(|e| e.seq).collect::<Vec<_>>())
        .bind(column(|e| Some(e.at.as_str())))
        .bind(column(|e| Some(e.actor.as_str())))
        .bind(column(|e| Some(e.action.as_str())))
        .bind(column(|e| e.recording_id.as_deref()))
        .bind(column(|e| e.patient_id.as_deref()))
        .bind(column(|e| Some(e.changes.as_str())))
        .bind(column(|e| e.request_id.as_deref()))
        .bind(column(|e| e.client_addr.as_deref()))
        .bind(column(|e| Some(e.prev_hash.as_str())))
        .bind(column(|e| Some(e.hash.as_str())))
        .execute(&mut *conn)
        .await?;
    Ok(chained)
}

/// Many events in one statement: a column of values per parameter.
const INSERT_ROWS: &str = "INSERT INTO audit_events (seq, at, actor, action, recording_id, \
    patient_id, changes, request_id, client_addr, prev_hash, hash) \
    SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], \
    $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])";

/// Reads and appends audit events in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgAudit {
    db: PgDatabase,
}

impl PgAudit {
    /// A store over `db`.
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }
}

#[async_trait]
impl AuditStore for PgAudit {
    #[tracing::instrument(name = "audit_events.append_batch", skip_all)]
    async fn append_batch(
        &self,
        events: &[&NewAuditEvent],
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut tx = self.db.pool().begin().await?;
        let chained = append_many(&mut tx, events).await?;
        tx.commit().await?;
        Ok(chained)
    }

    #[tracing::instrument(name = "audit_events.history", skip_all)]
    async fn history(&self, recording_id: Uuid) -> Result<Vec<AuditEvent>, StoreError> {
        let rows: Vec<StoredEvent> = sqlx::query_as(sql::HISTORY)
            .bind(recording_id.hyphenated().to_string())
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }

    #[tracing::instrument(name = "audit_events.export", skip_all)]
    async fn export(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        patient_id: Option<&str>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let rows: Vec<StoredEvent> = sqlx::query_as(sql::EXPORT)
            .bind(since.map(|t| t.to_string()))
            .bind(until.map(|t| t.to_string()))
            .bind(patient_id)
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }

    #[tracing::instrument(name = "audit_events.verify", skip_all)]
    async fn verify(&self) -> Result<(i64, Option<BrokenLink>), StoreError> {
        let pool = self.db.pool();
        let max_seq: Option<i64> = sqlx::query_scalar(sql::MAX_SEQ).fetch_one(pool).await?;
        verify_in_ranges(max_seq, super::VERIFY_RANGE, |lo, hi| async move {
            let last = sqlx::query_as(sql::BEFORE)
                .bind(lo)
                .fetch_optional(pool)
                .await?;
            let rows = sqlx::query_as::<_, StoredEvent>(sql::RANGE)
                .bind(lo)
                .bind(hi)
                .fetch(pool);
            verify_rows(last, rows).await
        })
        .await
    }
}
