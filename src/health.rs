//! `GET /api/v1/health`: is the service, and its database, usable?

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::AppState;

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

/// The health report. `status` is `healthy` or `unhealthy`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    #[schema(example = "healthy")]
    pub status: &'static str,
    /// Each component: `ok`, or what is wrong with it.
    pub components: Components,
    /// Which database backend serves the data.
    #[schema(example = "sqlite")]
    pub backend: &'static str,
    /// How long the database took to answer the latest check (at most 1 s old), in milliseconds.
    pub database_latency_ms: f64,
    /// Why the service is unhealthy (absent when healthy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Component states.
#[derive(Debug, Serialize, ToSchema)]
pub struct Components {
    /// The web service itself: always `ok` when it answers.
    pub pwa: &'static str,
    /// `ok`, or the reason the database is unusable.
    pub database: String,
}

/// The health route.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/health", get(health))
}

/// Report whether the service and its database are usable (200) or not (503).
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "health",
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 503, description = "The database is unusable", body = Health),
    )
)]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let (problem, latency) = state.health.database(&state.db).await;
    let status = if problem.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let health = Health {
        status: if problem.is_some() {
            "unhealthy"
        } else {
            "healthy"
        },
        components: Components {
            pwa: "ok",
            database: problem.clone().unwrap_or_else(|| "ok".into()),
        },
        backend: state.db.backend(),
        database_latency_ms: latency,
        detail: problem,
    };
    (status, Json(health))
}
