//! The application: the state shared by every handler, and the router that
//! puts the domains' routes behind the edge middleware. The one module that
//! knows every domain; the domains know only the part of the state they use
//! (through [`FromRef`]).

pub mod openapi;
pub mod status;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::http::{StatusCode, Uri, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::audio::OpenError;
use crate::audio::storage::AudioStore;
use crate::audit::{AuditLog, AuditStore};
use crate::auth::{AuthMode, AuthSettings, Authenticator};
use crate::config::{ConnectionSettings, UploadSettings};
use crate::db::Database;
use crate::error::ApiError;
use crate::guardrails::Guardrails;
use crate::health::{HealthProbe, StorageHealth, TranscriptionStatus};
use crate::http::{edge, guard, server};
use crate::idempotency::Idempotency;
use crate::jobs::JobStore;
use crate::recordings::{Reads, RecordingStore};
use crate::uploads::Uploads;

/// Everything a handler may need, cloned cheaply into each request.
#[derive(Debug, Clone, FromRef)]
pub struct AppState {
    /// The database (for health checks and shutdown).
    pub db: Database,
    /// Recordings.
    pub recordings: Arc<dyn RecordingStore>,
    /// Audio uploads and storage.
    pub uploads: Uploads,
    /// `Idempotency-Key` records.
    pub idempotency: Idempotency,
    /// The cached database check behind `/api/v1/health`.
    pub health: Arc<HealthProbe>,
    /// Whether writes are being refused for lack of space.
    pub storage: Arc<StorageHealth>,
    /// The Host and Origin rules.
    pub guard: Arc<guard::RequestGuard>,
    /// Where audio is kept (the transcription workers read it).
    pub audio: AudioStore,
    /// The job queue.
    pub jobs: Arc<dyn JobStore>,
    /// The audit trail.
    pub audit: Arc<dyn AuditStore>,
    /// Reads of patient data, each recorded in the audit trail.
    pub reads: Reads,
    /// Which transcription engine runs here.
    pub transcription: TranscriptionStatus,
    /// Who is calling (every API route but the health check asks it).
    pub auth: Authenticator,
    /// The group commit of audit events that have no transaction of their
    /// own (reads, sign-ins).
    pub audit_log: AuditLog,
    /// The clinical checks.
    pub guardrails: Guardrails,
    /// The backups this instance made (for the status page).
    pub backups: Arc<status::BackupLog>,
    /// When this instance started serving.
    pub started: std::time::Instant,
}

/// Why the application state could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The audio directory or store.
    #[error(transparent)]
    Audio(#[from] OpenError),
    /// The built-in guardrails data.
    #[error(transparent)]
    Guardrails(#[from] crate::guardrails::DataError),
}

impl AppState {
    /// State over an opened (and migrated) database, with audio stored as
    /// `uploads` says (its directories are created).
    pub fn new(db: Database, uploads: UploadSettings) -> Result<Self, StateError> {
        let recordings = crate::recordings::store::open(&db.clone());
        let probe_dirs = match &db {
            Database::Sqlite(sqlite) => {
                let db_dir = sqlite
                    .path()
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."));
                vec![db_dir.to_path_buf(), uploads.audio_dir.clone()]
            }
            Database::Postgres(_) => Vec::new(),
        };
        let audio = AudioStore::open(&uploads.audio_dir, uploads.audio_store.as_deref())?;
        let audit = crate::audit::store::open(&db);
        let audit_log = AuditLog::start(&db, audit.clone());
        Ok(Self {
            reads: Reads::new(recordings.clone(), audit.clone(), audit_log.clone()),
            audit_log,
            uploads: Uploads::new(db.clone(), recordings.clone(), audio.clone(), uploads)?,
            audio,
            jobs: crate::jobs::store::open(&db),
            audit,
            transcription: TranscriptionStatus::default(),
            idempotency: Idempotency::new(&db),
            recordings,
            health: Default::default(),
            storage: Arc::new(StorageHealth::new(probe_dirs)),
            guard: Default::default(),
            auth: Authenticator::new(&db, AuthMode::Off),
            guardrails: Guardrails::built_in()?,
            backups: Arc::default(),
            started: std::time::Instant::now(),
            db,
        })
    }

    /// The same state, checking with these guardrails (`PWA_GUARDRAILS_DIR`).
    pub fn with_guardrails(mut self, guardrails: Guardrails) -> Self {
        self.guardrails = guardrails;
        self
    }

    /// The same state, authenticating requests as `mode` says (`new` leaves
    /// it off: tests and tools choose; `serve` follows `PWA_AUTH`).
    pub fn with_auth(self, mode: AuthMode) -> Self {
        self.with_auth_settings(AuthSettings::new(mode))
    }

    /// The same state, authenticating requests with these settings.
    pub fn with_auth_settings(mut self, settings: AuthSettings) -> Self {
        self.auth = Authenticator::with_settings(&self.db, settings);
        self
    }

    /// The same state, logging its scheduled backups in `backups`.
    pub fn with_backups(mut self, backups: Arc<status::BackupLog>) -> Self {
        self.backups = backups;
        self
    }

    /// The same state, with these Host and Origin rules.
    pub fn with_guard(mut self, guard: guard::RequestGuard) -> Self {
        self.guard = Arc::new(guard);
        self
    }
}

/// The whole application, ready to serve or to drive from tests.
pub fn router(state: AppState) -> Router {
    let edge = Arc::new(edge::Edge {
        guard: state.guard.clone(),
        storage: state.storage.clone(),
    });
    Router::new()
        .merge(crate::health::routes())
        .merge(crate::auth::api::public_routes())
        .merge(
            Router::new()
                .merge(crate::auth::api::routes())
                .merge(crate::auth::users_api::routes())
                .merge(crate::guardrails::api::routes())
                .merge(crate::recordings::api::routes())
                .merge(crate::uploads::api::routes())
                .route("/api/v1/status", axum::routing::get(status::status))
                .route_layer(middleware::from_fn_with_state(
                    state.auth.clone(),
                    crate::auth::api::require_sign_in,
                )),
        )
        .merge(crate::web::routes())
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi::ApiDoc::openapi()))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(not_found_or_redirect)
        .layer(middleware::from_fn_with_state(edge, edge::edge))
        .with_state(state)
}

/// Serves until `shutdown` resolves and the requests in flight have finished
/// (within `connections.shutdown_timeout`). The caller then stops the
/// background tasks and closes the database.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    connections: ConnectionSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    server::serve_connections(listener, router(state), connections, shutdown).await;
}

/// Like FastAPI: `/path/` redirects (307) to `/path`; anything else is a 404.
async fn not_found_or_redirect(uri: Uri) -> Response {
    let path = uri.path();
    if path.len() > 1 && path.ends_with('/') {
        let mut location = path.trim_end_matches('/').to_owned();
        if location.is_empty() {
            location.push('/');
        }
        if let Some(query) = uri.query() {
            location.push('?');
            location.push_str(query);
        }
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response();
    }
    ApiError::NotFound("Not Found").into_response()
}
