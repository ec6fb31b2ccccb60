//! The audit trail on PostgreSQL: several instances append to one chain, so
//! an appender first takes a transaction-scoped advisory lock; the chain's
//! last event, read after it, is then the one to follow, and stays so until
//! the appender commits.

use async_trait::async_trait;
use uuid::Uuid;

use super::{AuditStore, bind_event, next_event, sql, verify_rows};
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
) -> Result<AuditEvent, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *conn)
        .await?;
    let last: Option<(i64, String)> = sqlx::query_as(sql::LAST).fetch_optional(&mut *conn).await?;
    let chained = next_event(event, last);
    bind_event(sqlx::query(sql::INSERT), &chained)
        .execute(&mut *conn)
        .await?;
    Ok(chained)
}

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
    async fn append(&self, event: &NewAuditEvent) -> Result<AuditEvent, StoreError> {
        let mut tx = self.db.pool().begin().await?;
        let chained = append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(chained)
    }

    async fn history(&self, recording_id: Uuid) -> Result<Vec<AuditEvent>, StoreError> {
        let rows: Vec<StoredEvent> = sqlx::query_as(sql::HISTORY)
            .bind(recording_id.hyphenated().to_string())
            .fetch_all(self.db.pool())
            .await?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }

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

    async fn verify(&self) -> Result<(i64, Option<BrokenLink>), StoreError> {
        verify_rows(sqlx::query_as::<_, StoredEvent>(sql::ALL).fetch(self.db.pool())).await
    }
}
