//! `clinscribe serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;

use super::{POSTGRES_BACKUPS, sqlite_path};
use crate::config::{self, ConfigError, DatabaseSettings, UploadSettings};
use crate::db::Database;
use crate::db::backup::{self, BackupOptions};
use crate::db::lock::ServerLock;
use crate::http::{self, AppState};

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// Address to listen on (IP:PORT).
    #[arg(long, env = "PWA_BIND", default_value = config::DEFAULT_BIND)]
    bind: String,

    /// Take a hot backup every so often, e.g. `6h` or `30m` (off when unset).
    #[arg(long, env = "PWA_BACKUP_INTERVAL")]
    backup_interval: Option<String>,

    /// Where scheduled backups go.
    #[arg(long, env = "PWA_BACKUP_DIR", default_value = "./backups")]
    backup_dir: PathBuf,

    /// Keep only the newest N scheduled backups (all when unset).
    #[arg(long, env = "PWA_BACKUP_KEEP")]
    backup_keep: Option<String>,

    /// Where uploaded audio is stored (created if missing).
    #[arg(long, env = "PWA_AUDIO_DIR", default_value = config::DEFAULT_AUDIO_DIR)]
    audio_dir: String,

    /// Keep stored audio in an S3-compatible object store, e.g.
    /// `s3://bucket/prefix` (credentials, region and endpoint from the usual
    /// AWS_* variables); uploads are still received in --audio-dir.
    #[arg(long, env = "PWA_AUDIO_STORE")]
    audio_store: Option<String>,

    /// The largest audio upload accepted, in megabytes.
    #[arg(long, env = "PWA_MAX_UPLOAD_MB", default_value = config::DEFAULT_MAX_UPLOAD_MB)]
    max_upload_mb: String,

    /// Chunked uploads idle this long, and files left by uploads that a crash
    /// cut off, are deleted (e.g. `24h`).
    #[arg(long, env = "PWA_UPLOAD_EXPIRY", default_value = config::DEFAULT_UPLOAD_EXPIRY)]
    upload_expiry: String,
}

/// Validated `serve` settings.
#[derive(Debug)]
pub(super) struct ServeSettings {
    bind: SocketAddr,
    backups: Option<(Duration, BackupOptions)>,
    uploads: UploadSettings,
}

impl ServeArgs {
    pub(super) fn settings(&self) -> Result<ServeSettings, ConfigError> {
        let bind = config::parse_bind(&self.bind)?;
        let backups = match &self.backup_interval {
            None => None,
            Some(interval) => {
                let interval = config::parse_interval("PWA_BACKUP_INTERVAL", interval)?;
                let options =
                    super::backup::backup_options(&self.backup_dir, self.backup_keep.as_deref())?;
                Some((interval, options))
            }
        };
        let uploads = UploadSettings::parse(
            &self.audio_dir,
            self.audio_store.as_deref(),
            &self.max_upload_mb,
            &self.upload_expiry,
        )?;
        Ok(ServeSettings {
            bind,
            backups,
            uploads,
        })
    }
}

pub(super) async fn run(
    database: DatabaseSettings,
    settings: ServeSettings,
) -> anyhow::Result<ExitCode> {
    let db_path = sqlite_path(&database);
    let mut _lock = None;
    if let Some(db_path) = &db_path {
        if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create data directory {}", dir.display()))?;
        }
        // Held for the server's lifetime: `restore` and a second server see it.
        _lock = Some(ServerLock::acquire(db_path)?);
    } else if settings.backups.is_some() {
        anyhow::bail!("PWA_BACKUP_INTERVAL is set, but {POSTGRES_BACKUPS}");
    }
    let db = Database::open(&database)
        .await
        .context("opening the database")?;
    tracing::info!(database = %database.url, backend = db.backend(), "database ready");
    let listener = TcpListener::bind(settings.bind)
        .await
        .with_context(|| format!("cannot listen on {} (PWA_BIND)", settings.bind))?;
    let local = listener.local_addr()?;
    if let (Some((interval, options)), Some(db_path)) = (settings.backups, db_path) {
        tokio::spawn(scheduled_backups(db_path, interval, options));
    }
    let state = AppState::new(db, settings.uploads).context("preparing the audio directory")?;
    // At start (what a crash left behind) and then periodically.
    tokio::spawn(state.uploads.clone().sweep_periodically());
    // On stdout, so scripts (and tests) can find the port when binding to :0.
    out!("clinscribe listening on http://{local}");
    http::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("shut down cleanly");
    Ok(ExitCode::SUCCESS)
}

/// Backs up every `interval`; a failure is logged and retried at the next one.
async fn scheduled_backups(db_path: PathBuf, interval: Duration, options: BackupOptions) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match backup::backup(&db_path, &options, |_| {}).await {
            Ok(report) => tracing::info!(
                path = %report.path.display(),
                bytes = report.size_bytes,
                recordings = report.recordings,
                elapsed_ms = report.elapsed.as_millis() as u64,
                deleted = report.deleted.len(),
                "scheduled backup done"
            ),
            Err(e) => {
                tracing::error!(error = %e, "scheduled backup failed; retrying at the next interval")
            }
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}
