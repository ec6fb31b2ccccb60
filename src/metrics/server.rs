//! The metrics listener (`PWA_METRICS_BIND`): `GET /metrics` in Prometheus's
//! text format, on its own address so that patient-facing clients, who
//! reach only the public port, cannot read it. Nothing else is served there.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::Snapshot;

/// Reads the stored state a scrape reports.
pub type Snapshotter =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Snapshot> + Send>> + Send + Sync>;

#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    snapshot: Snapshotter,
}

/// Serves `/metrics` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    snapshot: Snapshotter,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(Scrape { handle, snapshot });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "the metrics listener stopped");
    }
}

async fn metrics(State(scrape): State<Scrape>) -> Response {
    super::scrape(&(scrape.snapshot)().await);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        scrape.handle.render(),
    )
        .into_response()
}
