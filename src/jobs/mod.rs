//! The durable job queue: the work still to do on stored dictations
//! (`transcribe` them; `verify` a note's text when the extraction engine is a
//! server elsewhere), in the database, so that none is lost or done twice.
//! A recording has at most one job of each kind.
//!
//! - A job is written in the same transaction that makes a recording
//!   `queued` (its upload completing; a retry after `error`).
//! - A worker *claims* a job with a lease (the job becomes `running`, the
//!   recording `processing`) and extends the lease while it works. On
//!   PostgreSQL several instances claim side by side (`FOR UPDATE SKIP
//!   LOCKED`); on SQLite one server holds the database.
//! - A job whose worker died (kill -9, a lost instance) is claimed again once
//!   its lease expires; every claim counts as an attempt.
//! - The result is stored only by the holder of the lease, in one transaction
//!   with the job's end: a worker that lost its lease (it stalled, another took
//!   over) stores nothing, so a transcript is stored exactly once.
//! - A failure that may pass (a server error, a timeout) is retried with
//!   exponential backoff up to the configured attempts; then, or at once for
//!   one that cannot pass (undecodable audio), the recording goes to `error`
//!   with the reason.

pub mod lease;
pub mod model;
pub mod store;

pub use model::{CheckEnd, ClaimedCheck, ClaimedJob, JobCounts, JobKind, JobResult};
pub use store::JobStore;

/// One attempt at a claimed job of `kind`, as every worker makes it: `work`
/// runs in the attempt's trace span (the child of the request that queued
/// the job, when `trace_parent` names it), and the attempt is counted and
/// timed in the metrics under its outcome's name (`outcome`).
pub async fn attempt<O>(
    kind: &'static str,
    attempt: u32,
    trace_parent: Option<&str>,
    work: impl Future<Output = O>,
    outcome: impl Fn(&O) -> &'static str,
) -> O {
    use tracing::Instrument as _;
    let span = crate::telemetry::job_span(kind, attempt, trace_parent);
    crate::metrics::job_claimed(kind);
    let started = std::time::Instant::now();
    let done = work.instrument(span.clone()).await;
    let name = outcome(&done);
    span.record("job.outcome", name);
    crate::metrics::job_finished(kind, name, started.elapsed());
    done
}
