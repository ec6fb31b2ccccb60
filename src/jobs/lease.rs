//! Holding a claimed job's lease while its work runs.

use std::time::Duration;

use uuid::Uuid;

use super::{JobKind, JobStore};

/// Renews `owner`'s lease on the job of `kind` for recording `id` every third
/// of `lease`; returns when the lease is lost (another took the job over, or
/// it was queued again). A database hiccup is logged and tried again at the
/// next renewal: the lease still runs meanwhile.
pub async fn hold(jobs: &dyn JobStore, id: Uuid, kind: JobKind, owner: &str, lease: Duration) {
    let every = lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match jobs.heartbeat(id, kind, owner, lease).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, kind = kind.as_str(), "cannot renew a job's lease")
            }
        }
    }
}
