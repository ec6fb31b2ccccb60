//! Prometheus metrics: what an operator alerts on. Every name, type, label
//! and meaning is in docs/OPERATIONS.md ("Metrics").
//!
//! Counters and histograms are recorded where things happen, through the
//! functions below (one line at each call site), into the `metrics` facade;
//! without `PWA_METRICS_BIND` no recorder is installed and each call does
//! nothing. Gauges of stored state (the queue, the pools, the WAL, the
//! process) are read when Prometheus scrapes ([`scrape`]).
//!
//! Labels are bounded sets: route *templates*, methods, status classes,
//! kinds, outcomes, rule ids and severities. Never a path, an id or text, so
//! no patient id can reach a label.

pub mod process;
pub mod server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Seconds: from a millisecond to ten minutes (requests, commits, jobs).
const SECONDS_BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 600.0,
];
/// Processing time per second of audio.
const SPEED_BUCKETS: [f64; 11] = [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0];
/// Transactions per commit.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

pub const HTTP_REQUESTS: &str = "clinscribe_http_requests_total";
pub const HTTP_DURATION: &str = "clinscribe_http_request_duration_seconds";
pub const HTTP_IN_FLIGHT: &str = "clinscribe_http_requests_in_flight";
pub const CONNECTIONS_OPEN: &str = "clinscribe_http_connections_open";
pub const CONNECTIONS_REFUSED: &str = "clinscribe_http_connections_refused_total";
pub const DB_POOL: &str = "clinscribe_db_pool_connections";
pub const DB_COMMIT_BATCH: &str = "clinscribe_db_commit_batch_size";
pub const DB_COMMIT_DURATION: &str = "clinscribe_db_commit_duration_seconds";
pub const DB_WAL_BYTES: &str = "clinscribe_db_wal_bytes";
pub const DB_ERRORS: &str = "clinscribe_db_errors_total";
pub const BACKUP_LAST_SUCCESS: &str = "clinscribe_backup_last_success_timestamp_seconds";
pub const BACKUP_DURATION: &str = "clinscribe_backup_duration_seconds";
pub const BACKUP_FAILURES: &str = "clinscribe_backup_failures_total";
pub const UPLOAD_BYTES: &str = "clinscribe_upload_bytes_total";
pub const UPLOADS_COMPLETED: &str = "clinscribe_uploads_completed_total";
pub const UPLOADS_DEDUPLICATED: &str = "clinscribe_uploads_deduplicated_total";
pub const UPLOAD_SESSIONS_OPEN: &str = "clinscribe_upload_sessions_open";
pub const JOBS: &str = "clinscribe_jobs";
pub const JOBS_OLDEST_DUE: &str = "clinscribe_jobs_oldest_due_age_seconds";
pub const JOB_ATTEMPTS: &str = "clinscribe_job_attempts_total";
pub const JOBS_FINISHED: &str = "clinscribe_jobs_finished_total";
pub const JOB_DURATION: &str = "clinscribe_job_duration_seconds";
pub const TRANSCRIPTION_SPEED: &str = "clinscribe_transcription_seconds_per_audio_second";
pub const CHECKS: &str = "clinscribe_checks_total";
pub const CHECK_ALERTS: &str = "clinscribe_check_alerts_total";
pub const SIGN_INS: &str = "clinscribe_sign_ins_total";
pub const SIGN_INS_RATE_LIMITED: &str = "clinscribe_sign_ins_rate_limited_total";
pub const SESSIONS_ACTIVE: &str = "clinscribe_sessions_active";
pub const BUILD_INFO: &str = "clinscribe_build_info";

/// Whether a recorder is installed: labels that must be copied into owned
/// strings (a route, a rule id) are not made for nothing on every request.
static RECORDING: AtomicBool = AtomicBool::new(false);

/// Installs the Prometheus recorder for this process; the handle renders
/// the exposition text.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(TRANSCRIPTION_SPEED.into()), &SPEED_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(DB_COMMIT_BATCH.into()), &BATCH_BUCKETS)?
        .install_recorder()?;
    RECORDING.store(true, Ordering::Relaxed);
    describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status class"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request, by route template and method"
    );
    describe_gauge!(HTTP_IN_FLIGHT, "HTTP requests being answered now");
    describe_gauge!(CONNECTIONS_OPEN, "Client connections open now");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections closed at once because PWA_MAX_CONNECTIONS were open"
    );
    describe_gauge!(
        DB_POOL,
        "Database connections by pool and state (idle, in_use)"
    );
    describe_histogram!(
        DB_COMMIT_BATCH,
        "Writes committed together by SQLite's group commit"
    );
    describe_histogram!(
        DB_COMMIT_DURATION,
        Unit::Seconds,
        "Time of one group commit on SQLite"
    );
    describe_gauge!(
        DB_WAL_BYTES,
        Unit::Bytes,
        "Size of SQLite's write-ahead log"
    );
    describe_counter!(
        DB_ERRORS,
        "Database failures answered to a client, by cause (disk_full, busy: locked or timed out, closed, other)"
    );
    describe_gauge!(
        BACKUP_LAST_SUCCESS,
        Unit::Seconds,
        "When the last scheduled backup succeeded (Unix time)"
    );
    describe_histogram!(BACKUP_DURATION, Unit::Seconds, "Time of a scheduled backup");
    describe_counter!(BACKUP_FAILURES, "Scheduled backups that failed");
    describe_counter!(
        UPLOAD_BYTES,
        Unit::Bytes,
        "Audio bytes of complete uploads received (new dictations and repeats)"
    );
    describe_counter!(
        UPLOADS_COMPLETED,
        "Uploads (multipart, or a chunked upload's last chunk) that stored a new dictation"
    );
    describe_counter!(
        UPLOADS_DEDUPLICATED,
        "Uploads answered with the recording an earlier one stored"
    );
    describe_gauge!(UPLOAD_SESSIONS_OPEN, "Chunked upload sessions not finished");
    describe_gauge!(JOBS, "Jobs by kind and state");
    describe_gauge!(
        JOBS_OLDEST_DUE,
        Unit::Seconds,
        "How long the job waiting longest since it was due has waited, by kind"
    );
    describe_counter!(
        JOB_ATTEMPTS,
        "Jobs taken by a worker (each claim is an attempt), by kind"
    );
    describe_counter!(JOBS_FINISHED, "Attempts finished, by kind and outcome");
    describe_histogram!(JOB_DURATION, Unit::Seconds, "Time of one attempt, by kind");
    describe_histogram!(
        TRANSCRIPTION_SPEED,
        "Transcription time per second of audio (below 1: faster than real time)"
    );
    describe_counter!(
        CHECKS,
        "Texts checked by the guardrails, by engine and result (passed)"
    );
    describe_counter!(
        CHECK_ALERTS,
        "Alerts the guardrails raised, by rule and severity"
    );
    describe_counter!(
        SIGN_INS,
        "Sign-ins, by method (password, oidc) and outcome (success, failure)"
    );
    describe_counter!(
        SIGN_INS_RATE_LIMITED,
        "Password sign-ins refused for too many failures"
    );
    describe_gauge!(SESSIONS_ACTIVE, "Browser sessions not ended or expired");
    describe_gauge!(BUILD_INFO, "1, labelled with the version of this build");
    process::describe();
}

/// `2xx`, `4xx`, …
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// An HTTP request answered (`route`: the template, or `<unmatched>`).
pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    if !RECORDING.load(Ordering::Relaxed) {
        return;
    }
    let (method, route) = (method.to_owned(), route.to_owned());
    counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status_class" => status_class(status))
        .increment(1);
    histogram!(HTTP_DURATION, "method" => method, "route" => route).record(elapsed.as_secs_f64());
}

/// A request begins (+1) or ends (-1).
pub fn http_in_flight(delta: f64) {
    gauge!(HTTP_IN_FLIGHT).increment(delta);
}

/// A connection opens (+1) or closes (-1).
pub fn connection_open(delta: f64) {
    gauge!(CONNECTIONS_OPEN).increment(delta);
}

/// A connection refused at the limit.
pub fn connection_refused() {
    counter!(CONNECTIONS_REFUSED).increment(1);
}

/// A group commit of `batch` writes that took `elapsed`.
pub fn commit(batch: usize, elapsed: Duration) {
    histogram!(DB_COMMIT_BATCH).record(batch as f64);
    histogram!(DB_COMMIT_DURATION).record(elapsed.as_secs_f64());
}

/// A database failure answered to a client, for `cause`.
pub fn db_error(cause: &'static str) {
    counter!(DB_ERRORS, "cause" => cause).increment(1);
}

/// A scheduled backup ended after `elapsed`.
pub fn backup(succeeded: bool, elapsed: Duration) {
    histogram!(BACKUP_DURATION).record(elapsed.as_secs_f64());
    if succeeded {
        let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
        gauge!(BACKUP_LAST_SUCCESS).set(now);
    } else {
        counter!(BACKUP_FAILURES).increment(1);
    }
}

/// Audio bytes received.
pub fn upload_bytes(bytes: u64) {
    counter!(UPLOAD_BYTES).increment(bytes);
}

/// An upload stored a new dictation.
pub fn upload_completed() {
    counter!(UPLOADS_COMPLETED).increment(1);
}

/// An upload answered with the recording an earlier one stored.
pub fn upload_deduplicated() {
    counter!(UPLOADS_DEDUPLICATED).increment(1);
}

/// A worker took a job of `kind`.
pub fn job_claimed(kind: &'static str) {
    counter!(JOB_ATTEMPTS, "kind" => kind).increment(1);
}

/// An attempt of a job of `kind` ended with `outcome` after `elapsed`.
pub fn job_finished(kind: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!(JOBS_FINISHED, "kind" => kind, "outcome" => outcome).increment(1);
    histogram!(JOB_DURATION, "kind" => kind).record(elapsed.as_secs_f64());
}

/// A transcription took `seconds_per_audio_second`.
pub fn transcription_speed(seconds_per_audio_second: f64) {
    histogram!(TRANSCRIPTION_SPEED).record(seconds_per_audio_second);
}

/// A text checked by `engine`; its alerts' rules and severities.
pub fn checked<'a>(
    engine: &'static str,
    passed: bool,
    alerts: impl Iterator<Item = (&'a str, &'static str)>,
) {
    counter!(CHECKS, "engine" => engine, "passed" => if passed { "true" } else { "false" })
        .increment(1);
    if !RECORDING.load(Ordering::Relaxed) {
        return;
    }
    for (rule, severity) in alerts {
        counter!(CHECK_ALERTS, "rule" => rule.to_owned(), "severity" => severity).increment(1);
    }
}

/// A sign-in by `method` ended with `outcome`.
pub fn sign_in(method: &'static str, outcome: &'static str) {
    counter!(SIGN_INS, "method" => method, "outcome" => outcome).increment(1);
}

/// A password sign-in refused for too many failures.
pub fn sign_in_rate_limited() {
    counter!(SIGN_INS_RATE_LIMITED).increment(1);
}

/// Stored state read at a scrape.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `(kind, state, count, seconds)` of the jobs: for the queued ones, the
    /// longest wait of a due job.
    pub jobs: Vec<(String, String, i64, Option<f64>)>,
    /// `(pool, idle, in_use)`.
    pub pools: Vec<(&'static str, u32, u32)>,
    /// SQLite's WAL size.
    pub wal_bytes: Option<u64>,
    /// Browser sessions active.
    pub sessions: Option<i64>,
    /// Chunked upload sessions open.
    pub upload_sessions: Option<i64>,
}

/// Sets the gauges of stored state from `snapshot`, and the process's.
pub fn scrape(snapshot: &Snapshot) {
    for kind in ["transcribe", "verify"] {
        for state in ["queued", "running", "done", "failed"] {
            let n = snapshot
                .jobs
                .iter()
                .find(|(k, s, _, _)| k == kind && s == state)
                .map_or(0, |(_, _, n, _)| *n);
            gauge!(JOBS, "kind" => kind, "state" => state).set(n as f64);
        }
        let oldest = snapshot
            .jobs
            .iter()
            .filter(|(k, _, _, _)| k == kind)
            .find_map(|(_, _, _, wait)| *wait)
            .unwrap_or(0.0);
        gauge!(JOBS_OLDEST_DUE, "kind" => kind).set(oldest);
    }
    for (pool, idle, in_use) in &snapshot.pools {
        gauge!(DB_POOL, "pool" => *pool, "state" => "idle").set(f64::from(*idle));
        gauge!(DB_POOL, "pool" => *pool, "state" => "in_use").set(f64::from(*in_use));
    }
    if let Some(bytes) = snapshot.wal_bytes {
        gauge!(DB_WAL_BYTES).set(bytes as f64);
    }
    if let Some(n) = snapshot.upload_sessions {
        gauge!(UPLOAD_SESSIONS_OPEN).set(n as f64);
    }
    if let Some(n) = snapshot.sessions {
        gauge!(SESSIONS_ACTIVE).set(n as f64);
    }
    process::scrape();
}
