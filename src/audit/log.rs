//! Events that change nothing else: reads of patient data, sign-ins, users
//! added by hand.
//!
//! Such an event has no transaction of its own to carry it, so it gets one
//! here: concurrent callers queue their events; one task appends whatever
//! has gathered (up to [`MAX_BATCH`]) to the chain in a single transaction
//! and then answers each caller. Reads, the frequent kind, go instead to the
//! database's [`Spool`] on SQLite with `synchronous=normal` (the default): one
//! write to a file next to the database, moved into the chain in the
//! background. Either way a caller returns only once its event is as durable
//! as the database's commits, and sends its data only then: an access the
//! trail cannot record is refused (fail closed), never served unrecorded.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::model::{AuditAction, NewAuditEvent};
use super::spool::Spool;
use super::store::AuditStore;
use crate::config::SqliteSynchronous;
use crate::db::{Database, StoreError};

/// The most events one commit takes (bounds the time a batch holds the
/// chain's lock).
pub const MAX_BATCH: usize = 256;

struct Pending {
    event: NewAuditEvent,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Where events go; cloning shares it.
#[derive(Debug, Clone)]
pub struct AuditLog {
    /// To the appending task, which commits them.
    pending: mpsc::Sender<Pending>,
    /// Reads go to the database's spool instead, where there is one.
    spool: Option<Arc<Spool>>,
}

impl AuditLog {
    /// The log of `db`, whose trail `store` is: reads are spooled on SQLite
    /// with `synchronous=normal`; every other event (and every event
    /// elsewhere) is committed. The appending task runs on the current tokio
    /// runtime and ends when the last handle is dropped.
    pub fn start(db: &Database, store: Arc<dyn AuditStore>) -> Self {
        let (pending, receiver) = mpsc::channel(4 * MAX_BATCH);
        crate::tasks::spawn_watched("audit log", run(store, receiver), || true);
        let spool = match db {
            Database::Sqlite(sqlite) if sqlite.synchronous() == SqliteSynchronous::Normal => {
                Some(Arc::new(Spool::new(sqlite.clone())))
            }
            _ => None,
        };
        Self { pending, spool }
    }

    /// Records `event`; returns once it is as durable as a commit.
    pub async fn record(&self, event: NewAuditEvent) -> Result<(), StoreError> {
        if super::UNAUDITED {
            return Ok(());
        }
        if let Some(spool) = self
            .spool
            .as_ref()
            .filter(|_| event.action == AuditAction::Read)
        {
            return spool.append(&event).await;
        }
        let (done, answer) = oneshot::channel();
        self.pending
            .send(Pending { event, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Moves what the spool holds into the chain (at shutdown).
    pub async fn flush(&self) -> Result<(), StoreError> {
        match &self.spool {
            Some(spool) => spool.flush().await.map(drop),
            None => Ok(()),
        }
    }
}

async fn run(store: Arc<dyn AuditStore>, mut receiver: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let events: Vec<&NewAuditEvent> = batch.iter().map(|p| &p.event).collect();
        match store.append_batch(&events).await {
            Ok(_) => {
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Ok(()));
                }
            }
            Err(e) => {
                // One transaction for all: none of them was recorded.
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Err(e.for_each_caller()));
                }
            }
        }
    }
}
