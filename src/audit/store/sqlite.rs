//! The audit trail on SQLite: one writer at a time, so the chain's last
//! event, read in the writing transaction, is the one to follow.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use uuid::Uuid;

use super::{AuditRow, AuditStore, bind_event, next_event, sql};
use crate::audit::model::{AuditEvent, BrokenLink, ChainCheck, NewAuditEvent, StoredEvent};
use crate::db::{SqliteDatabase, StoreError};
use crate::timestamp::Timestamp;

/// Appends `event` to the chain inside the caller's write transaction.
pub async fn append(
    conn: &mut sqlx::SqliteConnection,
    event: &NewAuditEvent,
) -> Result<AuditEvent, StoreError> {
    let last: Option<(i64, String)> = sqlx::query_as(sql::LAST).fetch_optional(&mut *conn).await?;
    let chained = next_event(event, last);
    bind_event(sqlx::query(sql::INSERT), &chained)
        .execute(&mut *conn)
        .await?;
    Ok(chained)
}

/// Reads and appends audit events in SQLite.
#[derive(Debug, Clone)]
pub struct SqliteAudit {
    db: SqliteDatabase,
}

impl SqliteAudit {
    /// A store over `db`.
    pub fn new(db: SqliteDatabase) -> Self {
        Self { db }
    }
}

#[async_trait]
impl AuditStore for SqliteAudit {
    async fn append(&self, event: &NewAuditEvent) -> Result<AuditEvent, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let chained = append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(chained)
    }

    async fn history(&self, recording_id: Uuid) -> Result<Vec<AuditEvent>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(sql::HISTORY)
            .bind(recording_id.hyphenated().to_string())
            .fetch_all(self.db.readers())
            .await?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }

    async fn export(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        patient_id: Option<&str>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let rows: Vec<AuditRow> = sqlx::query_as(sql::EXPORT)
            .bind(since.map(|t| t.to_string()))
            .bind(until.map(|t| t.to_string()))
            .bind(patient_id)
            .fetch_all(self.db.readers())
            .await?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }

    async fn verify(&self) -> Result<(i64, Option<BrokenLink>), StoreError> {
        let mut check = ChainCheck::default();
        let mut rows = sqlx::query_as::<_, StoredEvent>(sql::ALL).fetch(self.db.readers());
        while let Some(row) = rows.try_next().await? {
            if let Err(broken) = check.next(&row) {
                return Ok((check.count(), Some(broken)));
            }
        }
        Ok((check.count(), None))
    }
}
