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
}

impl HealthProbe {
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
}

/// Which transcription engine this instance runs, for health.
#[derive(Debug, Clone, Default)]
pub struct TranscriptionStatus {
    /// The engine; None when there is none.
    pub engine: Option<Arc<dyn crate::transcription::TranscriptionEngine>>,
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
{
    Router::new().route("/api/v1/health", get(health))
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
) -> (StatusCode, Json<Health>) {
    let (problem, latency) = probe.database(&db).await;
    let degraded = match problem {
        Some(_) => None,
        None => storage.problem().await,
    };
    let (status, word) = match (&problem, &degraded) {
        (Some(_), _) => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
        (None, Some(_)) => (StatusCode::OK, "degraded"),
        (None, None) => (StatusCode::OK, "healthy"),
    };
    let detail = problem.or(degraded);
    let health = Health {
        status: word,
        components: Components {
            pwa: "ok",
            database: detail.clone().unwrap_or_else(|| "ok".into()),
            transcription: transcription
                .engine
                .as_ref()
                .map_or_else(|| "no engine".to_owned(), |e| e.describe()),
            extraction: guardrails.describe(),
        },
        backend: db.backend(),
        database_latency_ms: latency,
        detail,
    };
    (status, Json(health))
}
