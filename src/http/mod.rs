//! The HTTP server: shared state, the router, request logging, and the
//! server's life cycle (serve until a shutdown signal, then close the database).

pub mod extract;
pub mod openapi;

use std::future::Future;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::audio::storage::OpenError;
use crate::config::UploadSettings;
use crate::db::Database;
use crate::error::ApiError;
use crate::idempotency::IdempotencyStore;
use crate::recordings::RecordingStore;
use crate::uploads::Uploads;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Everything a handler may need, cloned cheaply into each request.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database (for health checks and shutdown).
    pub db: Database,
    /// Recordings.
    pub recordings: RecordingStore,
    /// Audio uploads and storage.
    pub uploads: Uploads,
    /// `Idempotency-Key` records.
    pub idempotency: IdempotencyStore,
    /// The cached database check behind `/api/v1/health`.
    pub health: std::sync::Arc<crate::health::HealthProbe>,
}

impl AppState {
    /// State over an opened (and migrated) database, with audio stored as
    /// `uploads` says (its directories are created).
    pub fn new(db: Database, uploads: UploadSettings) -> Result<Self, OpenError> {
        let recordings = RecordingStore::new(db.clone());
        Ok(Self {
            uploads: Uploads::new(db.clone(), recordings.clone(), uploads)?,
            idempotency: IdempotencyStore::new(db.clone()),
            recordings,
            health: Default::default(),
            db,
        })
    }
}

/// The whole application, ready to serve or to drive from tests.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::health::routes())
        .merge(crate::recordings::api::routes())
        .merge(crate::uploads::api::routes())
        .merge(crate::web::routes())
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi::ApiDoc::openapi()))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(not_found_or_redirect)
        .layer(middleware::from_fn(log_request))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Serves until `shutdown` resolves, lets in-flight requests finish, then
/// closes the database (checkpointing the WAL).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let db = state.db.clone();
    let listener = listener.tap_io(|tcp| {
        // Small JSON responses should not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
    });
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    db.close().await;
    result
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

/// One log line per request. The route *template* is logged, never the actual
/// path or query, so patient ids stay out of the logs.
async fn log_request(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let response = next.run(request).await;
    let route = matched.as_ref().map_or("<unmatched>", MatchedPath::as_str);
    tracing::info!(
        method = %method,
        route,
        status = response.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        request_id,
        "request"
    );
    response
}
