//! The audit trail on SQLite: one writer at a time, so the chain's last
//! event, read in the writing transaction, is the one to follow. Also the
//! moves of the audit spool's events into the chain (`audit::spool`), each
//! with the spool's position in the same transaction.

use std::path::Path;

use async_trait::async_trait;
use uuid::Uuid;

use super::{AuditStore, chain_after, sql, verify_in_ranges, verify_rows};
use crate::audit::model::{AuditEvent, BrokenLink, NewAuditEvent, StoredEvent};
use crate::audit::spool_file::{self, Position, io_error, read_pending, remove_segments_before};
use crate::db::{SqliteDatabase, StoreError};
use crate::timestamp::Timestamp;

/// Appends `event` to the chain inside the caller's write transaction.
pub async fn append(
    conn: &mut sqlx::SqliteConnection,
    event: &NewAuditEvent,
) -> Result<(), StoreError> {
    append_many(conn, &[event]).await.map(drop)
}

/// Appends `events` to the chain, in order, inside the caller's write
/// transaction: one read of the chain's end and multi-row INSERTs (the group
/// commit's batch; one statement per event would cost a round trip to
/// SQLite's thread each).
pub async fn append_many(
    conn: &mut sqlx::SqliteConnection,
    events: &[&NewAuditEvent],
) -> Result<Vec<StoredEvent>, StoreError> {
    if events.is_empty() || crate::audit::UNAUDITED {
        return Ok(Vec::new());
    }
    let last: Option<(i64, String)> = sqlx::query_as(sql::LAST).fetch_optional(&mut *conn).await?;
    let chained = chain_after(events, last);
    // Statements of a few fixed sizes, so that few are prepared and cached;
    // powers of two, so that a group commit's batch (up to its number of
    // waiting clients) takes few statements, each a round trip.
    const SIZES: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];
    static SQL: [std::sync::OnceLock<String>; SIZES.len()] =
        [const { std::sync::OnceLock::new() }; SIZES.len()];
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

/// Binds one event's values to its row of [`insert_rows_sql`].
fn bind_event<'q>(q: SqliteQuery<'q>, e: &'q StoredEvent) -> SqliteQuery<'q> {
    q.bind(e.seq)
        .bind(e.at.as_str())
        .bind(e.actor.as_str())
        .bind(e.action.as_str())
        .bind(e.recording_id.as_deref())
        .bind(e.patient_id.as_deref())
        .bind(e.changes.as_str())
        .bind(e.request_id.as_deref())
        .bind(e.client_addr.as_deref())
        .bind(e.prev_hash.as_str())
        .bind(e.hash.as_str())
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// `INSERT OR FAIL INTO audit_events … VALUES (…), (…)` for `rows` events.
///
/// `OR FAIL` rather than the default `ABORT`: a failed row fails the whole
/// transaction or savepoint anyway (every caller rolls it back), and only with `ABORT`
/// does SQLite copy each page a multi-row statement touches into a statement
/// journal first, about a fifth of a spool move's work (docs/BENCHMARKS.md).
fn insert_rows_sql(rows: usize) -> String {
    let one = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let mut sql = String::from(
        "INSERT OR FAIL INTO audit_events (seq, at, actor, action, recording_id, patient_id, changes, \
         request_id, client_addr, prev_hash, hash) VALUES ",
    );
    sql.push_str(&vec![one; rows].join(", "));
    sql
}

// ---------------------------------------------------------------- the spool's moves

/// The most events one move's transaction appends (bounds how long a move
/// holds the writer that creates wait for).
pub const MAX_EVENTS_PER_MOVE: usize = 2_048;

/// Moves every event the spool of `db` holds into the chain, in as many
/// transactions as needed; how many moved. Nothing is written when nothing
/// is pending.
pub async fn move_pending(db: &SqliteDatabase) -> Result<usize, StoreError> {
    let dir = spool_file::dir_of(db.path());
    if !dir.is_dir() {
        return Ok(0);
    }
    // A look without the write lock first: readers of the trail move before
    // reading, and mostly find nothing to move. No row: this database never
    // spooled (files there are another's).
    let Some(seen) = position(db.readers()).await? else {
        return Ok(0);
    };
    if !spool_file::has_pending(&dir, &seen).map_err(io_error)? {
        return Ok(0);
    }
    move_all(db, &dir).await
}

/// Moves every event in the spool `dir` of `db` into the chain, in
/// transactions of at most [`MAX_EVENTS_PER_MOVE`]; how many moved.
pub async fn move_all(db: &SqliteDatabase, dir: &Path) -> Result<usize, StoreError> {
    let mut moved = 0;
    loop {
        let mut tx = db.begin_write().await?;
        let Some(from) = position(&mut *tx).await? else {
            return Ok(moved);
        };
        let batch = read_pending(dir, &from, MAX_EVENTS_PER_MOVE).map_err(io_error)?;
        if batch.to == (from.segment, from.position) {
            return Ok(moved);
        }
        let events: Vec<&NewAuditEvent> = batch.events.iter().collect();
        append_many(&mut tx, &events).await?;
        sqlx::query("UPDATE audit_spool SET segment = ?1, position = ?2")
            .bind(to_i64(batch.to.0))
            .bind(to_i64(batch.to.1))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        moved += events.len();
        if batch.to.0 > from.segment {
            remove_segments_before(dir, &from.spool_id, batch.to.0);
        }
        if !batch.more {
            return Ok(moved);
        }
    }
}

/// The row, None until the database's first spooled event.
async fn position<'c, E>(conn: E) -> Result<Option<Position>, StoreError>
where
    E: sqlx::SqliteExecutor<'c>,
{
    let row: Option<(String, i64, i64)> =
        sqlx::query_as("SELECT spool_id, segment, position FROM audit_spool")
            .fetch_optional(conn)
            .await?;
    let Some((spool_id, segment, position)) = row else {
        return Ok(None);
    };
    let unsigned = |n: i64| {
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("audit_spool holds {n}")))
    };
    Ok(Some(Position {
        spool_id,
        segment: unsigned(segment)?,
        position: unsigned(position)?,
    }))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The spool's row, written with a new spool id when this database first
/// spools.
pub async fn spool_position(db: &SqliteDatabase) -> Result<Position, StoreError> {
    let new_id = Uuid::new_v4().simple().to_string()[..16].to_owned();
    sqlx::query(
        "INSERT INTO audit_spool (singleton, spool_id, segment, position) \
         VALUES (1, ?1, 0, 0) ON CONFLICT DO NOTHING",
    )
    .bind(new_id)
    .execute(db.writer())
    .await?;
    position(db.writer())
        .await?
        .ok_or(StoreError::Corrupt("audit_spool has no row".into()))
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
    #[tracing::instrument(name = "audit_events.append_batch", skip_all)]
    async fn append_batch(
        &self,
        events: &[&NewAuditEvent],
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut tx = self.db.begin_write().await?;
        let chained = append_many(&mut tx, events).await?;
        tx.commit().await?;
        Ok(chained)
    }

    #[tracing::instrument(name = "audit_events.history", skip_all)]
    async fn history(&self, recording_id: Uuid) -> Result<Vec<AuditEvent>, StoreError> {
        move_pending(&self.db).await?;
        let rows: Vec<StoredEvent> = sqlx::query_as(sql::HISTORY_BY_BLOCK)
            .bind(recording_id.hyphenated().to_string())
            .fetch_all(self.db.readers())
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
        move_pending(&self.db).await?;
        let rows: Vec<StoredEvent> = sqlx::query_as(sql::EXPORT)
            .bind(since.map(|t| t.to_string()))
            .bind(until.map(|t| t.to_string()))
            .bind(patient_id)
            .fetch_all(self.db.readers())
            .await?;
        Ok(rows.into_iter().map(AuditEvent::from).collect())
    }

    #[tracing::instrument(name = "audit_events.verify", skip_all)]
    async fn verify(&self) -> Result<(i64, Option<BrokenLink>), StoreError> {
        move_pending(&self.db).await?;
        let pool = self.db.readers();
        let max_seq: Option<i64> = sqlx::query_scalar(sql::MAX_SEQ).fetch_one(pool).await?;
        verify_in_ranges(max_seq, RANGE_ROWS, |lo, hi| async move {
            let last = sqlx::query_as(sql::BEFORE)
                .bind(lo)
                .fetch_optional(pool)
                .await?;
            let range: String = sqlx::query_scalar(RANGE_AS_JSON)
                .bind(lo)
                .bind(hi)
                .fetch_one(pool)
                .await?;
            let rows: Vec<RowFields> = serde_json::from_str(&range)
                .map_err(|e| StoreError::Corrupt(format!("audit events {lo}-{hi}: {e}")))?;
            let rows = rows.into_iter().map(|row| Ok(StoredEvent::from(row)));
            verify_rows(last, futures_util::stream::iter(rows)).await
        })
        .await
    }
}

/// Positions per range of a verification: each range is one row.
const RANGE_ROWS: i64 = 4_096;

/// A range of events as one JSON array of arrays (in `seq` order, the
/// subquery's: SQLite aggregates rows in the order it receives them). One
/// row per range rather than one per event: handing each row from SQLite's
/// thread to ours costs more than SQLite's JSON and serde's parsing together.
/// Every text is carried as a JSON string, `changes` too: exactly as stored.
const RANGE_AS_JSON: &str = "SELECT coalesce(json_group_array(json_array(seq, at, actor, \
     action, recording_id, patient_id, changes, request_id, client_addr, prev_hash, hash)), '[]') \
     FROM (SELECT * FROM audit_events WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq)";

/// The fields of [`RANGE_AS_JSON`]'s arrays, in [`StoredEvent`] order.
type RowFields = (
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
);

impl From<RowFields> for StoredEvent {
    fn from(f: RowFields) -> Self {
        Self {
            seq: f.0,
            at: f.1,
            actor: f.2,
            action: f.3,
            recording_id: f.4,
            patient_id: f.5,
            changes: f.6,
            request_id: f.7,
            client_addr: f.8,
            prev_hash: f.9,
            hash: f.10,
        }
    }
}
