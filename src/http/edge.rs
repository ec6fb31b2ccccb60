//! The one middleware every request passes: at the edge of the HTTP boundary,
//! in one function rather than a layer per concern, since each layer costs
//! every request a boxed future and a clone of the service below it.
//!
//! In order: the request id (the client's, if acceptable, or a new one), the
//! Host and Origin rules ([`RequestGuard`]), the handler, what the outcome
//! tells [`StorageHealth`] (a 507 starts or extends a full-disk episode, a
//! successful write ends it), the response headers, one log line, and the
//! request's metrics (by route template). The request runs in its trace
//! ([`crate::telemetry::RequestTrace`]).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::guard::{RequestGuard, RouteKind, acceptable_request_id, secure_headers};
use crate::health::StorageHealth;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the edge needs from the application state.
#[derive(Debug)]
pub struct Edge {
    /// The Host and Origin rules.
    pub guard: Arc<RequestGuard>,
    /// Whether writes are being refused for lack of space.
    pub storage: Arc<StorageHealth>,
}

/// The middleware (see the module documentation). The route *template* is
/// logged, never the actual path or query, so patient ids stay out of the logs.
pub async fn edge(
    State(edge): State<Arc<Edge>>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = match request.headers().get(&REQUEST_ID) {
        Some(id) if acceptable_request_id(id) => id.clone(),
        _ => {
            let id = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("-"));
            request.headers_mut().insert(REQUEST_ID, id.clone());
            id
        }
    };
    let method = request.method().clone();
    let kind = RouteKind::of(request.uri().path());
    let route = matched.as_ref().map_or("<unmatched>", MatchedPath::as_str);
    let trace = crate::telemetry::RequestTrace::start(
        method.as_str(),
        route,
        request_id.to_str().unwrap_or("-"),
        request.headers(),
    );
    crate::metrics::http_in_flight(1.0);
    let mut response = match edge.guard.check(&method, request.uri(), request.headers()) {
        Ok(()) => {
            let response = trace.run(next.run(request)).await;
            if response.status() == StatusCode::INSUFFICIENT_STORAGE {
                edge.storage.record_full();
            } else if response.status().is_success()
                && !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS)
            {
                edge.storage.record_write_ok();
            }
            response
        }
        Err(refusal) => {
            refusal.log();
            refusal.into_response()
        }
    };
    crate::metrics::http_in_flight(-1.0);
    trace.end(response.status().as_u16());
    secure_headers(response.headers_mut(), kind);
    crate::metrics::http_request(
        method.as_str(),
        route,
        response.status().as_u16(),
        started.elapsed(),
    );
    tracing::info!(
        method = %method,
        route,
        status = response.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        request_id = request_id.to_str().unwrap_or("-"),
        "request"
    );
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}
