//! `GET /api/v1/health`: is the service, and its database, usable?
//!
//! A check that only reads cannot see a full disk: reads keep working while
//! every write fails. So health also learns from the writes themselves
//! ([`StorageHealth`]): a write refused for lack of space starts an *episode*
//! (logged once) during which the database is reported `degraded`; it ends with
//! the next successful write, or when a small probe file can be written again
//! beside the database and the audio (SQLite), or 30 s after the last refusal
//! (PostgreSQL, whose disk is not ours to probe).

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use std::sync::Arc;

use axum::extract::FromRef;

use crate::db::Database;

/// How long the database may take to answer before the service counts as unhealthy.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a database check stays valid: load balancers and monitors may poll
/// health many times a second, which should not turn into as many queries.
const DATABASE_CHECK_TTL: Duration = Duration::from_secs(1);

/// The last database check, shared by all requests.
#[derive(Debug, Default)]
pub struct HealthProbe {
    last: Mutex<Option<(Instant, Option<String>, f64)>>,
    last_queue: Mutex<Option<(Instant, String)>>,
}

impl HealthProbe {
    /// The queue component, read at most once per [`DATABASE_CHECK_TTL`].
    async fn queue(&self, jobs: &dyn crate::jobs::JobStore) -> String {
        if let Ok(last) = self.last_queue.lock()
            && let Some((at, said)) = last.as_ref()
            && at.elapsed() < DATABASE_CHECK_TTL
        {
            return said.clone();
        }
        let said = match jobs.queue_stats().await {
            Ok(stats) => queue_component(&stats),
            Err(e) => format!("down: cannot read the queue: {e}"),
        };
        if let Ok(mut last) = self.last_queue.lock() {
            *last = Some((Instant::now(), said.clone()));
        }
        said
    }

    /// `(problem, latency_ms)`: a fresh check at most once per [`DATABASE_CHECK_TTL`].
    async fn database(&self, db: &crate::db::Database) -> (Option<String>, f64) {
        if db.is_closed() {
            return (Some("database error: the database is closed".into()), 0.0);
        }
        if let Ok(last) = self.last.lock()
            && let Some((at, problem, latency)) = last.as_ref()
            && at.elapsed() < DATABASE_CHECK_TTL
        {
            return (problem.clone(), *latency);
        }
        let started = Instant::now();
        let outcome = tokio::time::timeout(DATABASE_CHECK_TIMEOUT, db.ping()).await;
        let latency = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        let problem = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("database error: {e}")),
            Err(_) => Some(format!(
                "database did not answer within {} s",
                DATABASE_CHECK_TIMEOUT.as_secs()
            )),
        };
        if let Ok(mut last) = self.last.lock() {
            *last = Some((Instant::now(), problem.clone(), latency));
        }
        (problem, latency)
    }
}

/// How long a PostgreSQL disk-full episode lasts after its last refusal
/// without a successful write.
const REMOTE_FULL_EPISODE: Duration = Duration::from_secs(30);
/// At most one probe write per this long.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Bytes written by a probe: a few SQLite pages and WAL frames.
const PROBE_BYTES: usize = 256 * 1024;

/// Whether writes are being refused for lack of storage space.
#[derive(Debug, Default)]
pub struct StorageHealth {
    episode: Mutex<Option<FullEpisode>>,
    /// Whether `episode` is Some: successful writes, the common case, check
    /// this instead of taking the lock.
    in_episode: AtomicBool,
    /// Directories to probe for space (the database's and the audio's); none
    /// when the storage is not local (PostgreSQL).
    probe_dirs: Vec<PathBuf>,
}

#[derive(Debug)]
struct FullEpisode {
    started: Instant,
    last_refusal: Instant,
    refused: u64,
    last_probe: Option<Instant>,
}

impl StorageHealth {
    /// Space is probed in `probe_dirs` (empty: storage that is not local).
    pub fn new(probe_dirs: Vec<PathBuf>) -> Self {
        Self {
            episode: Mutex::default(),
            in_episode: AtomicBool::new(false),
            probe_dirs,
        }
    }

    /// A write was refused because the storage is full.
    pub fn record_full(&self) {
        let Ok(mut episode) = self.episode.lock() else {
            return;
        };
        let now = Instant::now();
        match episode.as_mut() {
            Some(e) => {
                e.refused += 1;
                e.last_refusal = now;
            }
            None => {
                tracing::error!(
                    "storage full: writes are refused with 507 until space is freed (reads still work)"
                );
                *episode = Some(FullEpisode {
                    started: now,
                    last_refusal: now,
                    refused: 1,
                    last_probe: None,
                });
                self.in_episode.store(true, Ordering::Release);
            }
        }
    }

    /// A write succeeded: an episode, if any, is over.
    pub fn record_write_ok(&self) {
        if !self.in_episode.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut episode) = self.episode.lock() {
            self.end(&mut episode);
        }
    }

    /// Ends the episode, if any, saying so once.
    fn end(&self, episode: &mut Option<FullEpisode>) {
        if let Some(e) = episode.take() {
            self.in_episode.store(false, Ordering::Release);
            tracing::warn!(
                refused = e.refused,
                lasted_s = e.started.elapsed().as_secs(),
                "storage writable again: accepting writes"
            );
        }
    }

    /// Why writes fail now, if they do (probing for space at most once a second).
    pub async fn problem(&self) -> Option<String> {
        let probe_due = {
            let mut episode = self.episode.lock().ok()?;
            let e = episode.as_mut()?;
            if self.probe_dirs.is_empty() {
                if e.last_refusal.elapsed() >= REMOTE_FULL_EPISODE {
                    self.end(&mut episode);
                    return None;
                }
                false
            } else if e.last_probe.is_none_or(|at| at.elapsed() >= PROBE_EVERY) {
                e.last_probe = Some(Instant::now());
                true
            } else {
                false
            }
        };
        if probe_due {
            let dirs = self.probe_dirs.clone();
            let writable =
                tokio::task::spawn_blocking(move || dirs.iter().all(|d| probe(d).is_ok()))
                    .await
                    .unwrap_or(false);
            if writable {
                self.record_write_ok();
                return None;
            }
        }
        self.problem_now()
    }
}

/// Below this much free space on the database's or the audio's volume,
/// health says the disk is `degraded` (writes still work, for now).
pub const LOW_DISK_BYTES: u64 = 1 << 30;

impl StorageHealth {
    /// The volumes of the database and the audio: `(directory, free bytes,
    /// size in bytes)` of each that can be read.
    pub fn volumes(&self) -> Vec<(PathBuf, u64, u64)> {
        self.probe_dirs
            .iter()
            .filter_map(|dir| {
                let stat = rustix::fs::statvfs(dir).ok()?;
                Some((
                    dir.clone(),
                    stat.f_bavail.saturating_mul(stat.f_frsize),
                    stat.f_blocks.saturating_mul(stat.f_frsize),
                ))
            })
            .collect()
    }

    /// The disk component when writes are not being refused: `ok (… free)`,
    /// or `degraded: …` when a volume has less than [`LOW_DISK_BYTES`] free.
    pub fn free_space(&self) -> String {
        match self.volumes().iter().min_by_key(|(_, free, _)| *free) {
            None => "ok".into(),
            Some((dir, free, _)) if *free < LOW_DISK_BYTES => {
                format!("degraded: {} MiB free in {}", free >> 20, dir.display())
            }
            Some((_, free, _)) => format!("ok ({} MiB free)", free >> 20),
        }
    }

    /// The refusal episode under way, if any (without probing).
    fn problem_now(&self) -> Option<String> {
        if !self.in_episode.load(Ordering::Acquire) {
            return None;
        }
        let episode = self.episode.lock().ok()?;
        episode.as_ref().map(|e| {
            format!(
                "degraded: writes refused for lack of storage space for {} s ({} refused); reads work",
                e.started.elapsed().as_secs(),
                e.refused
            )
        })
    }
}

/// How long a due job may wait before health says the queue is `degraded`
/// (the example backlog alert's threshold, docs/alerts.yml).
pub const QUEUE_WAIT_LIMIT: Duration = Duration::from_secs(15 * 60);

/// The queue component from the jobs' counts: `ok (N queued)`, or
/// `degraded: …` when a due job has waited longer than [`QUEUE_WAIT_LIMIT`].
pub fn queue_component(stats: &[crate::jobs::store::QueueStat]) -> String {
    let queued: i64 = stats
        .iter()
        .filter(|(_, state, _, _)| state == "queued")
        .map(|(_, _, n, _)| n)
        .sum();
    let late = stats
        .iter()
        .filter_map(|(kind, _, _, wait)| Some((kind, (*wait)?)))
        .filter(|(_, wait)| *wait > QUEUE_WAIT_LIMIT.as_secs_f64())
        .max_by(|a, b| a.1.total_cmp(&b.1));
    match late {
        Some((kind, wait)) => format!(
            "degraded: a {kind} job has waited {} min since it was due ({queued} queued)",
            (wait / 60.0).floor()
        ),
        None => format!("ok ({queued} queued)"),
    }
}

/// Writes, syncs and deletes a small file in `dir`: is there room to write?
fn probe(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = dir.join(".clinscribe-space-probe");
    let written = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&[0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    written
}

/// The health report. `status` is `healthy`, `degraded` (reads work, writes
/// are refused: the disk is full) or `unhealthy`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `healthy`, `degraded` or `unhealthy`.
    #[schema(example = "healthy")]
    pub status: &'static str,
    /// Each component: `ok`, or what is wrong with it.
    pub components: Components,
    /// Which database backend serves the data.
    #[schema(example = "sqlite")]
    pub backend: &'static str,
    /// How long the database took to answer the latest check (at most 1 s old), in milliseconds.
    pub database_latency_ms: f64,
    /// What is wrong (absent when healthy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Component states.
#[derive(Debug, Serialize, ToSchema)]
pub struct Components {
    /// The web service itself: always `ok` when it answers.
    pub pwa: &'static str,
    /// `ok`, `degraded: …` (writes refused for lack of space), or the reason
    /// the database is unusable.
    pub database: String,
    /// The engine transcribing dictations, or `no engine` (dictations wait in
    /// the queue). Not part of the status: the service serves without it.
    #[schema(example = "no engine")]
    pub transcription: String,
    /// The engine extracting the facts the guardrails check: `embedded`, or
    /// `openai (<endpoint>, model <name>)`.
    #[schema(example = "embedded")]
    pub extraction: String,
    /// The job queue: `ok (N queued)`, or `degraded: …` when a due job has
    /// waited more than 15 minutes.
    #[schema(example = "ok (0 queued)")]
    pub queue: String,
    /// Free space where the database and the audio are: `ok (N MiB free)`,
    /// or `degraded: …` below 1 GiB or while writes are refused for lack of
    /// space.
    #[schema(example = "ok (51200 MiB free)")]
    pub disk: String,
}

/// Which transcription engine this instance runs, for health.
#[derive(Debug, Clone, Default)]
pub struct TranscriptionStatus {
    /// The engine; None when there is none.
    pub engine: Option<Arc<dyn crate::transcription::TranscriptionEngine>>,
}

impl TranscriptionStatus {
    /// The engine and its model as health names them, or `no engine`.
    pub fn describe(&self) -> String {
        self.engine
            .as_ref()
            .map_or_else(|| "no engine".to_owned(), |e| e.describe())
    }
}

/// The health route.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Database: FromRef<S>,
    Arc<HealthProbe>: FromRef<S>,
    Arc<StorageHealth>: FromRef<S>,
    TranscriptionStatus: FromRef<S>,
    crate::guardrails::Guardrails: FromRef<S>,
    Arc<dyn crate::jobs::JobStore>: FromRef<S>,
{
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/health/live", get(live))
        .route("/api/v1/health/ready", get(ready))
}

/// Report whether the service and its database are usable (200) or not (503).
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "health",
    responses(
        (status = 200, description = "Healthy, or degraded (reads work; writes are refused because the storage is full)", body = Health),
        (status = 503, description = "The database is unusable", body = Health),
    )
)]
pub async fn health(
    State(db): State<Database>,
    State(probe): State<Arc<HealthProbe>>,
    State(storage): State<Arc<StorageHealth>>,
    State(transcription): State<TranscriptionStatus>,
    State(guardrails): State<crate::guardrails::Guardrails>,
    State(jobs): State<Arc<dyn crate::jobs::JobStore>>,
) -> (StatusCode, Json<Health>) {
    let (problem, latency) = probe.database(&db).await;
    let full = match problem {
        Some(_) => None,
        None => storage.problem().await,
    };
    let queue = match problem {
        Some(_) => "down: the database is unusable".to_owned(),
        None => probe.queue(jobs.as_ref()).await,
    };
    let disk = full.clone().unwrap_or_else(|| storage.free_space());
    let transcription = transcription.describe();
    // What else makes the service degraded: a model missing, a backlog, little space.
    let other = [
        transcription
            .starts_with("no model")
            .then(|| format!("transcription: {transcription}")),
        queue
            .starts_with("degraded")
            .then(|| format!("queue: {queue}")),
        (full.is_none() && disk.starts_with("degraded")).then(|| format!("disk: {disk}")),
    ]
    .into_iter()
    .flatten()
    .next();
    let (status, word) = match (&problem, &full, &other) {
        (Some(_), _, _) => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
        (None, Some(_), _) | (None, None, Some(_)) => (StatusCode::OK, "degraded"),
        (None, None, None) => (StatusCode::OK, "healthy"),
    };
    let database = problem
        .clone()
        .or(full.clone())
        .unwrap_or_else(|| "ok".into());
    let detail = problem.or(full).or(other);
    let health = Health {
        status: word,
        components: Components {
            pwa: "ok",
            database,
            transcription,
            extraction: guardrails.describe(),
            queue,
            disk,
        },
        backend: db.backend(),
        database_latency_ms: latency,
        detail,
    };
    (status, Json(health))
}

/// Whether the process answers (for an orchestrator's liveness probe).
#[derive(Debug, Serialize, ToSchema)]
pub struct Probe {
    /// `alive`, `ready` or `not ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
    /// Why not ready (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Liveness: the process answers. Always 200; restart the instance when it
/// does not answer at all.
#[utoipa::path(
    get,
    path = "/api/v1/health/live",
    tag = "health",
    responses((status = 200, description = "The process answers", body = Probe))
)]
pub async fn live() -> Json<Probe> {
    Json(Probe {
        status: "alive",
        detail: None,
    })
}

/// Readiness: the instance can serve (its database answers). 503 while it
/// cannot: send it no traffic, but do not restart it for that.
#[utoipa::path(
    get,
    path = "/api/v1/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "The instance can serve", body = Probe),
        (status = 503, description = "The database is unusable", body = Probe),
    )
)]
pub async fn ready(
    State(db): State<Database>,
    State(probe): State<Arc<HealthProbe>>,
) -> (StatusCode, Json<Probe>) {
    match probe.database(&db).await.0 {
        None => (
            StatusCode::OK,
            Json(Probe {
                status: "ready",
                detail: None,
            }),
        ),
        Some(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Probe {
                status: "not ready",
                detail: Some(problem),
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(kind: &str, state: &str, n: i64, wait: Option<f64>) -> crate::jobs::store::QueueStat {
        (kind.into(), state.into(), n, wait)
    }

    #[test]
    fn the_queue_is_degraded_when_a_due_job_waited_more_than_fifteen_minutes() {
        assert_eq!(queue_component(&[]), "ok (0 queued)");
        let fresh = [
            stat("transcribe", "queued", 3, Some(60.0)),
            stat("transcribe", "done", 9, None),
        ];
        assert_eq!(queue_component(&fresh), "ok (3 queued)");
        let late = [
            stat("transcribe", "queued", 3, Some(20.0 * 60.0)),
            stat("verify", "queued", 1, Some(16.0 * 60.0)),
        ];
        assert_eq!(
            queue_component(&late),
            "degraded: a transcribe job has waited 20 min since it was due (4 queued)"
        );
    }
}
