//! The audit trail on SQLite: one writer at a time, so the chain's last
//! event, read in the writing transaction, is the one to follow.

use async_trait::async_trait;
use uuid::Uuid;

use super::{AuditStore, bind_event, chain_after, sql, verify_rows};
use crate::audit::model::{AuditEvent, BrokenLink, NewAuditEvent, StoredEvent};
use crate::db::{SqliteDatabase, StoreError};
use crate::timestamp::Timestamp;

/// Appends `event` to the chain inside the caller's write transaction.
pub async fn append(
    conn: &mut sqlx::SqliteConnection,
    event: &NewAuditEvent,
) -> Result<AuditEvent, StoreError> {
    let mut chained = append_many(conn, &[event]).await?;
    chained
        .pop()
        .ok_or(StoreError::Corrupt("no event appended".into()))
}

/// Appends `events` to the chain, in order, inside the caller's write
/// transaction: one read of the chain's end and multi-row INSERTs (the group
/// commit's batch; one statement per event would cost a round trip to
/// SQLite's thread each).
pub async fn append_many(
    conn: &mut sqlx::SqliteConnection,
    events: &[&NewAuditEvent],
) -> Result<Vec<AuditEvent>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let last: Option<(i64, String)> = sqlx::query_as(sql::LAST).fetch_optional(&mut *conn).await?;
    let chained = chain_after(events, last);
    // Statements of a few fixed sizes, so that few are prepared and cached.
    const SIZES: [usize; 4] = [64, 16, 4, 1];
    static SQL: [std::sync::OnceLock<String>; 4] = [const { std::sync::OnceLock::new() }; 4];
    let mut rest = chained.as_slice();
    for (i, size) in crate::db::sqlite::fixed_size_chunks(rest.len(), &SIZES) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let statement = SQL[i].get_or_init(|| insert_rows_sql(size));
        // Made only of the static fragments in `insert_rows_sql`.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(statement.as_str()));
        for event in chunk {
            q = bind_event(q, event);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(chained)
}

/// `INSERT INTO audit_events … VALUES (…), (…)` for `rows` events.
fn insert_rows_sql(rows: usize) -> String {
    let one = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let mut sql = String::from(
        "INSERT INTO audit_events (seq, at, actor, action, recording_id, patient_id, changes, \
         request_id, client_addr, prev_hash, hash) VALUES ",
    );
    sql.push_str(&vec![one; rows].join(", "));
    sql
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

    async fn append_batch(&self, events: &[&NewAuditEvent]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write().await?;
        append_many(&mut tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn history(&self, recording_id: Uuid) -> Result<Vec<AuditEvent>, StoreError> {
        let rows: Vec<StoredEvent> = sqlx::query_as(sql::HISTORY)
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
        let rows: Vec<StoredEvent> = sqlx::query_as(sql::EXPORT)
            .bind(since.map(|t| t.to_string()))
            .bind(until.map(|t| t.to_string()))
            .bind(patient_id)
            .fetch_all(self.db.readers())
            .await?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }

    async fn verify(&self) -> Result<(i64, Option<BrokenLink>), StoreError> {
        verify_rows(sqlx::query_as::<_, StoredEvent>(sql::ALL).fetch(self.db.readers())).await
    }
}
