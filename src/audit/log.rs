//! Group commit for events that change nothing else: reads of patient data.
//!
//! A read has no transaction of its own to carry its event, so the event
//! gets one here. Concurrent readers queue their events; one task appends
//! whatever has gathered (up to [`MAX_BATCH`]) to the chain in a single
//! transaction and then answers each reader. A reader is answered only after
//! the commit that holds its event, and sends the data only then: an access
//! the trail cannot record is refused (fail closed), never served unrecorded.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::model::NewAuditEvent;
use super::store::AuditStore;
use crate::db::StoreError;

/// The most events one commit takes (bounds the time a batch holds the
/// chain's lock).
pub const MAX_BATCH: usize = 256;

struct Pending {
    event: NewAuditEvent,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// A handle to the appending task; cloning shares the task.
#[derive(Debug, Clone)]
pub struct AuditLog {
    pending: mpsc::Sender<Pending>,
}

impl AuditLog {
    /// Starts the appending task over `store` (on the current tokio runtime).
    /// It ends when the last handle is dropped.
    pub fn start(store: Arc<dyn AuditStore>) -> Self {
        let (pending, receiver) = mpsc::channel(4 * MAX_BATCH);
        crate::tasks::spawn_watched("audit log", run(store, receiver), || true);
        Self { pending }
    }

    /// Appends `event` to the chain; returns once it is committed.
    pub async fn record(&self, event: NewAuditEvent) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.pending
            .send(Pending { event, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
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
