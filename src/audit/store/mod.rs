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
    async fn append(&self, event: &NewAuditEvent) -> Result<AuditEvent, StoreError> {
        let mut chained = self.append_batch(&[event]).await?;
        chained
            .pop()
            .map(AuditEvent::from)
            .ok_or(StoreError::Corrupt("no event appended".into()))
    }

    /// Appends `events`, in order, in one transaction of their own (the
    /// [`AuditLog`](crate::audit::AuditLog)'s batch); returns them as stored.
    async fn append_batch(&self, events: &[&NewAuditEvent])
    -> Result<Vec<StoredEvent>, StoreError>;

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

/// SQL both backends run as it is (but for the one marked SQLite's).
mod sql {
    /// The chain's last event.
    pub const LAST: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";
    /// The columns, in [`StoredEvent`](crate::audit::model::StoredEvent) order.
    macro_rules! columns {
        () => {
            "seq, at, actor, action, recording_id, patient_id, changes, request_id, client_addr, prev_hash, hash"
        };
    }
    /// A recording's events, oldest first (a spooled read enters the chain
    /// after changes made in the next few milliseconds: see `audit::spool`).
    pub const HISTORY: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM audit_events WHERE recording_id = $1 ORDER BY at, seq"
    );
    /// [`HISTORY`] on SQLite, whose index of a recording's events is by
    /// block of 16,384 positions first (migration
    /// `20261207000012_audit_history_by_block`): one lookup per block, each
    /// an index search (the expression must stay the index's `seq >> 14`).
    pub const HISTORY_BY_BLOCK: &str = concat!(
        "WITH RECURSIVE block(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM block \
         WHERE n < (SELECT max(seq) >> 14 FROM audit_events)) SELECT ",
        columns!(),
        " FROM block JOIN audit_events ON seq >> 14 = block.n AND recording_id = $1 \
         ORDER BY at, seq"
    );
    /// Events in a time range, of a patient if given.
    pub const EXPORT: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM audit_events WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at < $2) \
         AND ($3 IS NULL OR patient_id = $3) ORDER BY seq"
    );
    /// The events of a range of positions, in chain order (PostgreSQL's
    /// `verify`; SQLite's reads a range as one JSON row).
    pub const RANGE: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM audit_events WHERE seq >= $1 AND seq <= $2 ORDER BY seq"
    );
    /// The last event before a position.
    pub const BEFORE: &str =
        "SELECT seq, hash FROM audit_events WHERE seq < $1 ORDER BY seq DESC LIMIT 1";
    /// The chain's last position.
    pub const MAX_SEQ: &str = "SELECT max(seq) FROM audit_events";
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
fn chain_after(events: &[&NewAuditEvent], last: Option<(i64, String)>) -> Vec<StoredEvent> {
    let (mut seq, mut prev) = last.unwrap_or((0, super::model::GENESIS_HASH.to_owned()));
    let mut chained = Vec::with_capacity(events.len());
    for event in events {
        seq += 1;
        let next = StoredEvent::chain(event, seq, &prev);
        prev.clone_from(&next.hash);
        chained.push(next);
    }
    chained
}

/// Recomputes the chain over `rows` (the events after `last`, in `seq`
/// order): how many events verified, and the first broken link.
async fn verify_rows(
    last: Option<(i64, String)>,
    rows: impl Stream<Item = Result<StoredEvent, sqlx::Error>>,
) -> Result<(i64, Option<BrokenLink>), StoreError> {
    let mut check = ChainCheck::after(last);
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.try_next().await? {
        if let Err(broken) = check.next(&row) {
            return Ok((check.count(), Some(broken)));
        }
    }
    Ok((check.count(), None))
}

/// Positions per range of a parallel verification.
pub(crate) const VERIFY_RANGE: i64 = 50_000;

/// Recomputes the chain up to `max_seq` in ranges checked side by side, one
/// per core: each link concerns only an event and the one before it, so a
/// range needs only the hash of the event before it (`verify_range(lo, hi)`
/// checks positions `lo..=hi`). The answer is the sequential one: the events
/// verified before the first broken link, and that link.
async fn verify_in_ranges<F, Fut>(
    max_seq: Option<i64>,
    range_len: i64,
    verify_range: F,
) -> Result<(i64, Option<BrokenLink>), StoreError>
where
    F: Fn(i64, i64) -> Fut,
    Fut: std::future::Future<Output = Result<(i64, Option<BrokenLink>), StoreError>>,
{
    use futures_util::StreamExt;
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let ranges = (0..(max_seq.unwrap_or(0) + range_len - 1) / range_len)
        .map(|i| (i * range_len + 1, (i + 1) * range_len))
        .map(|(lo, hi)| verify_range(lo, hi));
    let mut results = std::pin::pin!(futures_util::stream::iter(ranges).buffered(parallel));
    let mut verified = 0;
    while let Some(result) = results.next().await {
        let (count, broken) = result?;
        verified += count;
        if broken.is_some() {
            return Ok((verified, broken));
        }
    }
    Ok((verified, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::model::{AuditAction, GENESIS_HASH};

    fn chain(n: i64) -> Vec<StoredEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let event = StoredEvent::chain(
                    &NewAuditEvent {
                        at: Timestamp::parse("2026-12-01T10:00:00.000001Z").unwrap(),
                        actor: "dr-a".into(),
                        action: AuditAction::Update,
                        recording_id: None,
                        patient_id: Some(format!("p-{seq}")),
                        changes: serde_json::json!({"final_transcript": [null, seq]}),
                        request_id: None,
                        client_addr: None,
                    },
                    seq,
                    &prev,
                );
                prev.clone_from(&event.hash);
                event
            })
            .collect()
    }

    fn sequential(rows: &[StoredEvent]) -> (i64, Option<BrokenLink>) {
        let mut check = ChainCheck::default();
        for row in rows {
            if let Err(broken) = check.next(row) {
                return (check.count(), Some(broken));
            }
        }
        (check.count(), None)
    }

    async fn in_ranges(rows: &[StoredEvent], range_len: i64) -> (i64, Option<BrokenLink>) {
        let max = rows.iter().map(|r| r.seq).max();
        verify_in_ranges(max, range_len, |lo, hi| async move {
            let last = rows
                .iter()
                .rev()
                .find(|r| r.seq < lo)
                .map(|r| (r.seq, r.hash.clone()));
            let range: Vec<Result<StoredEvent, sqlx::Error>> = rows
                .iter()
                .filter(|r| (lo..=hi).contains(&r.seq))
                .cloned()
                .map(Ok)
                .collect();
            verify_rows(last, futures_util::stream::iter(range)).await
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn ranges_side_by_side_answer_as_the_sequential_check_does() {
        let intact = chain(10);
        assert_eq!(in_ranges(&intact, 3).await, (10, None));
        for at in 0..intact.len() {
            let mut edited = intact.clone();
            edited[at].actor = "mallory".into();
            let mut removed = intact.clone();
            removed.remove(at);
            let mut rehashed = intact.clone();
            rehashed[at].changes = "{}".into();
            rehashed[at].hash = rehashed[at].expected_hash();
            for tampered in [edited, removed, rehashed] {
                let expected = sequential(&tampered);
                assert!(expected.1.is_some() || at == intact.len() - 1);
                for range_len in [1, 2, 3, 4, 10, 50] {
                    assert_eq!(
                        in_ranges(&tampered, range_len).await,
                        expected,
                        "event {at}, ranges of {range_len}"
                    );
                }
            }
        }
    }
}
