//! Group commit for new recordings.
//!
//! Every commit costs SQLite a WAL write (and, with `synchronous=full`, an
//! fsync), whatever it holds. Concurrent creates therefore queue here, and one
//! task writes whatever has gathered — up to [`MAX_BATCH`] — in a single
//! transaction on the single writer connection, then answers each caller. A
//! caller is answered only after the commit that holds its row, so an
//! acknowledged recording is exactly as durable as before; under load, many
//! rows share one commit. Alone, a create is a batch of one.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::super::StoreError;
use super::{insert_many, insert_one};
use crate::audit::NewAuditEvent;
use crate::audit::store::sqlite as audit;
use crate::db::SqliteDatabase;
use crate::recordings::model::Recording;

/// The most rows one commit takes (bounds the time a batch holds the write lock).
pub const MAX_BATCH: usize = 256;

struct Job {
    recording: Recording,
    /// Its audit event, written in the same transaction (None: not audited,
    /// e.g. rows brought in by an import).
    event: Option<NewAuditEvent>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// A handle to the insert task; cloning shares the task.
#[derive(Debug, Clone)]
pub struct InsertQueue {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.recording.id)
            .finish()
    }
}

impl InsertQueue {
    /// Starts the insert task for `db` (on the current tokio runtime).
    pub fn start(db: SqliteDatabase) -> Self {
        let (jobs, receiver) = mpsc::channel(4 * MAX_BATCH);
        // Ends when every sender is gone (the store was dropped): expected.
        crate::tasks::spawn_watched("group commit", run(db, receiver), || true);
        Self { jobs }
    }

    /// Inserts `recording`; returns once the row is committed.
    pub async fn insert(
        &self,
        recording: Recording,
        event: Option<NewAuditEvent>,
    ) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                recording,
                event,
                done,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

fn is_constraint(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| !matches!(d.kind(), sqlx::error::ErrorKind::Other))
}

async fn run(db: SqliteDatabase, mut receiver: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write_batch(&db, &mut batch).await;
    }
}

/// One transaction for the whole batch, written with multi-row INSERTs inside a
/// savepoint. If one of them hits a constraint, the savepoint is rolled back
/// (undoing the statements that did succeed: a batch may take several) and the
/// rows go in one by one, so only the offending row fails; a failed commit
/// fails all.
async fn write_batch(db: &SqliteDatabase, batch: &mut Vec<Job>) {
    let started = std::time::Instant::now();
    let mut tx = match db.begin_write().await {
        Ok(tx) => tx,
        Err(e) => return fail_all(batch, e),
    };
    let rows: Vec<&Recording> = batch.iter().map(|job| &job.recording).collect();
    let all_at_once = match sqlx::Connection::begin(&mut *tx).await {
        Ok(mut savepoint) => match insert_with_events(&mut savepoint, &rows, batch).await {
            Ok(()) => savepoint.commit().await.map_err(StoreError::from),
            Err(e) => match savepoint.rollback().await {
                Ok(()) => Err(e),
                Err(rollback) => Err(StoreError::from(rollback)),
            },
        },
        Err(e) => Err(StoreError::from(e)),
    };
    let results: Vec<Result<(), StoreError>> = match all_at_once {
        Ok(()) => batch.iter().map(|_| Ok(())).collect(),
        Err(StoreError::Duplicate(_)) => row_by_row(&mut tx, batch).await,
        Err(StoreError::Database(e)) if is_constraint(&e) => row_by_row(&mut tx, batch).await,
        // Not the rows' fault: the transaction is unusable for all of them.
        Err(StoreError::Busy(e) | StoreError::Database(e) | StoreError::DiskFull(e)) => {
            drop(tx);
            return fail_all(batch, e);
        }
        Err(StoreError::Closed) => {
            drop(tx);
            return fail_all(batch, sqlx::Error::PoolClosed);
        }
        Err(other) => {
            drop(tx);
            return fail_all(batch, sqlx::Error::Protocol(other.to_string()));
        }
    };
    match tx.commit().await {
        Ok(()) => {
            crate::metrics::commit(batch.len(), started.elapsed());
            for (job, result) in batch.drain(..).zip(results) {
                let _ = job.done.send(result);
            }
        }
        Err(e) => fail_all(batch, e),
    }
}

/// Each row on its own (after a constraint failure): only offending rows fail.
async fn row_by_row(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    batch: &[Job],
) -> Vec<Result<(), StoreError>> {
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        // A savepoint per row: its event goes with it, or neither.
        let outcome = match sqlx::Connection::begin(&mut **tx).await {
            Ok(mut savepoint) => {
                let written = async {
                    insert_one(&mut savepoint, &job.recording).await?;
                    if let Some(event) = &job.event {
                        audit::append(&mut savepoint, event).await?;
                    }
                    Ok::<_, StoreError>(())
                }
                .await;
                match written {
                    Ok(()) => savepoint.commit().await.map_err(StoreError::from),
                    Err(e) => {
                        let _ = savepoint.rollback().await;
                        Err(e)
                    }
                }
            }
            Err(e) => Err(StoreError::from(e)),
        };
        results.push(outcome);
    }
    results
}

/// The batch's rows, then their audit events in the same order.
async fn insert_with_events(
    conn: &mut sqlx::SqliteConnection,
    rows: &[&Recording],
    batch: &[Job],
) -> Result<(), StoreError> {
    insert_many(conn, rows).await?;
    let events: Vec<&NewAuditEvent> = batch.iter().filter_map(|job| job.event.as_ref()).collect();
    audit::append_many(conn, &events).await?;
    Ok(())
}

fn fail_all(batch: &mut Vec<Job>, e: sqlx::Error) {
    let e = Arc::new(e);
    for job in batch.drain(..) {
        let _ = job.done.send(Err(StoreError::batch(&e)));
    }
}
