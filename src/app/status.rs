//! The operations view: `GET /api/v1/status`, what an administrator needs at
//! a glance (the queue, the recordings by status, the last backup, disk
//! space, the engines, sessions, the process), which the web app's status
//! page shows. It reads through the services and stores, the same figures a
//! Prometheus scrape reports ([`snapshot`]); it holds no patient data.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::db::Database;
use crate::error::ApiError;
use crate::identity::Principal;
use crate::timestamp::Timestamp;

/// What this instance knows of its backups: the scheduled ones it made, and
/// the newest file in the backup directory (which `clinscribe backup` fills too).
#[derive(Debug, Default)]
pub struct BackupLog {
    /// Where backups go, and how often this instance makes one.
    schedule: Option<(PathBuf, Duration)>,
    last: Mutex<LastBackups>,
}

#[derive(Debug, Default, Clone)]
struct LastBackups {
    success: Option<(Timestamp, Duration)>,
    failure: Option<(Timestamp, String)>,
}

impl BackupLog {
    /// A log of backups made into `dir` every `every`.
    pub fn scheduled(dir: PathBuf, every: Duration) -> Self {
        Self {
            schedule: Some((dir, every)),
            last: Mutex::default(),
        }
    }

    /// A backup succeeded, taking `took`.
    pub fn succeeded(&self, took: Duration) {
        if let Ok(mut last) = self.last.lock() {
            last.success = Some((Timestamp::now(), took));
        }
    }

    /// A backup failed, for `why`.
    pub fn failed(&self, why: String) {
        if let Ok(mut last) = self.last.lock() {
            last.failure = Some((Timestamp::now(), why));
        }
    }

    fn report(&self) -> BackupStatus {
        let last = self.last.lock().map(|l| l.clone()).unwrap_or_default();
        let newest = self
            .schedule
            .as_ref()
            .and_then(|(dir, _)| newest_backup(dir));
        BackupStatus {
            directory: self.schedule.as_ref().map(|(d, _)| d.display().to_string()),
            every_seconds: self.schedule.as_ref().map(|(_, e)| e.as_secs()),
            last_success_at: last.success.as_ref().map(|(at, _)| at.to_string()),
            last_duration_seconds: last.success.map(|(_, took)| took.as_secs_f64()),
            last_failure_at: last.failure.as_ref().map(|(at, _)| at.to_string()),
            last_failure: last.failure.map(|(_, why)| why),
            newest_file: newest,
        }
    }
}

/// The newest backup file in `dir`, whoever made it.
fn newest_backup(dir: &std::path::Path) -> Option<BackupFile> {
    let path = crate::db::sqlite::backup::newest(dir)?;
    let meta = std::fs::metadata(&path).ok()?;
    Some(BackupFile {
        name: path.file_name()?.to_string_lossy().into_owned(),
        bytes: meta.len(),
        modified_at: Timestamp::from_datetime(time::OffsetDateTime::from(meta.modified().ok()?))
            .to_string(),
    })
}

/// `GET /api/v1/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// clinscribe's version.
    #[schema(example = "0.1.0")]
    pub version: &'static str,
    /// How long this instance has been serving, in seconds.
    pub uptime_seconds: u64,
    /// `sqlite` or `postgres`.
    #[schema(example = "sqlite")]
    pub backend: &'static str,
    /// The engines: transcription and extraction, as health names them.
    pub engines: Engines,
    /// Recordings per status (deleted ones left out).
    pub recordings: Vec<StatusCount>,
    /// Jobs per kind and state, with the longest wait of a due one.
    pub jobs: Vec<QueueRow>,
    /// Backups (scheduled by this instance, or files in its backup directory).
    pub backup: BackupStatus,
    /// The volumes of the database and the audio (SQLite; none on PostgreSQL).
    pub disk: Vec<Volume>,
    /// Browser sessions active now.
    pub sessions_active: Option<i64>,
    /// Chunked uploads under way.
    pub upload_sessions_open: Option<i64>,
    /// SQLite's write-ahead log, in bytes.
    pub wal_bytes: Option<u64>,
    /// This process's resident memory, in bytes.
    pub resident_memory_bytes: Option<u64>,
    /// File descriptors this process has open.
    pub open_fds: Option<u64>,
}

/// The engines this instance runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct Engines {
    /// The transcription engine and model, `no model (…)` or `no engine`.
    pub transcription: String,
    /// The extraction engine of the clinical checks.
    pub extraction: String,
}

/// A count of recordings in one status.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusCount {
    /// `queued`, `processing`, `completed` or `error`.
    pub status: String,
    /// How many.
    pub count: i64,
}

/// Jobs of one kind in one state.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueRow {
    /// `transcribe` or `verify`.
    pub kind: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// How many.
    pub count: i64,
    /// For queued jobs: how long the one due longest has waited, in seconds.
    pub oldest_due_seconds: Option<f64>,
}

/// The backups.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupStatus {
    /// The backup directory, when this instance makes scheduled backups.
    pub directory: Option<String>,
    /// How often (`PWA_BACKUP_INTERVAL`), in seconds.
    pub every_seconds: Option<u64>,
    /// When this instance last made one (RFC 3339).
    pub last_success_at: Option<String>,
    /// How long that took, in seconds.
    pub last_duration_seconds: Option<f64>,
    /// When one last failed.
    pub last_failure_at: Option<String>,
    /// Why it failed.
    pub last_failure: Option<String>,
    /// The newest backup file in the directory (`clinical_YYYYMMDD_HHMMSS.db`), whoever made it.
    pub newest_file: Option<BackupFile>,
}

/// A backup file.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackupFile {
    /// Its name in the backup directory.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// When it was written (RFC 3339).
    pub modified_at: String,
}

/// A volume holding the database or the audio.
#[derive(Debug, Serialize, ToSchema)]
pub struct Volume {
    /// A directory on it.
    pub path: String,
    /// Free space, in bytes.
    pub free_bytes: u64,
    /// Its size, in bytes.
    pub total_bytes: u64,
}

/// What an administrator sees of this instance (administrators only; with
/// `PWA_AUTH=off`, which serves loopback only, the one clinician).
#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "health",
    responses(
        (status = 200, description = "The instance at a glance", body = Status),
        (status = 403, description = "The caller is not an administrator", body = crate::http::openapi::ErrorDetail),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Status>, ApiError> {
    if !crate::auth::policy::may_see_status(principal.role) {
        return Err(ApiError::Forbidden(
            "Only an administrator sees the instance's status".to_owned(),
        ));
    }
    Ok(Json(Status::of(&state).await?))
}

impl Status {
    /// The status of the instance `state` serves.
    async fn of(state: &AppState) -> Result<Self, crate::db::StoreError> {
        let snapshot = snapshot(state).await;
        let mut recordings: Vec<StatusCount> = state
            .recordings
            .status_counts()
            .await?
            .into_iter()
            .map(|(status, count)| StatusCount { status, count })
            .collect();
        recordings.sort_by(|a, b| a.status.cmp(&b.status));
        let jobs = snapshot
            .jobs
            .into_iter()
            .map(|(kind, state, count, wait)| QueueRow {
                kind,
                state,
                count,
                oldest_due_seconds: wait,
            })
            .collect();
        Ok(Self {
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: state.started.elapsed().as_secs(),
            backend: state.db.backend(),
            engines: Engines {
                transcription: state.transcription.describe(),
                extraction: state.guardrails.describe(),
            },
            recordings,
            jobs,
            backup: state.backups.report(),
            disk: state
                .storage
                .volumes()
                .into_iter()
                .map(|(path, free_bytes, total_bytes)| Volume {
                    path: path.display().to_string(),
                    free_bytes,
                    total_bytes,
                })
                .collect(),
            sessions_active: snapshot.sessions,
            upload_sessions_open: snapshot.upload_sessions,
            wal_bytes: snapshot.wal_bytes,
            resident_memory_bytes: crate::metrics::process::resident_bytes(),
            open_fds: crate::metrics::process::open_fds(),
        })
    }
}

/// The stored state a Prometheus scrape and the status page report; a part
/// that cannot be read is left out.
pub async fn snapshot(state: &AppState) -> crate::metrics::Snapshot {
    let pool = |name: &'static str, size: u32, idle: usize| {
        let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(size);
        (name, idle, size - idle)
    };
    let (pools, wal_bytes) = match &state.db {
        Database::Sqlite(db) => (
            vec![
                pool(
                    "sqlite_readers",
                    db.readers().size(),
                    db.readers().num_idle(),
                ),
                pool("sqlite_writer", db.writer().size(), db.writer().num_idle()),
            ],
            std::fs::metadata(crate::files::sibling(db.path(), "-wal"))
                .map(|m| m.len())
                .ok(),
        ),
        Database::Postgres(db) => (
            vec![pool("postgres", db.pool().size(), db.pool().num_idle())],
            None,
        ),
    };
    crate::metrics::Snapshot {
        // SQLite's julianday arithmetic can put a just-due job's wait a hair below zero.
        jobs: state
            .jobs
            .queue_stats()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(kind, state, count, wait)| (kind, state, count, wait.map(|w| w.max(0.0))))
            .collect(),
        pools,
        wal_bytes,
        sessions: state.auth.active_sessions().await.ok(),
        upload_sessions: state.uploads.open_sessions().await.ok(),
    }
}
