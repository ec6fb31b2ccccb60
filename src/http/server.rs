//! The listener: accepts connections, serves each with hyper (HTTP/1.1 and
//! HTTP/2), and protects the server from clients that hold connections without
//! using them.
//!
//! - **Header timeout** (`PWA_HEADER_TIMEOUT`): a request whose first bytes
//!   arrived but whose headers did not complete in time closes its connection
//!   (slowloris).
//! - **Body timeout** (`PWA_BODY_TIMEOUT`): a request body that sends nothing
//!   for this long fails (the handler sees an error and cleans up); a slow body
//!   that keeps moving is never cut off, however long it takes.
//! - **Idle timeout** (`PWA_IDLE_TIMEOUT`): a kept-alive connection with no
//!   request in flight and no traffic is closed.
//! - **Connection limit** (`PWA_MAX_CONNECTIONS`): beyond it, a new connection
//!   gets `503` with `Retry-After` and is closed; logged once per episode.
//! - **Shutdown** (`PWA_SHUTDOWN_TIMEOUT`): on the signal, the listener closes,
//!   idle connections close, requests in flight finish; whatever is still open
//!   after the bound is closed.
//!
//! hyper's own header timeout also runs between kept-alive requests, which
//! would make the idle timeout the header timeout; so both are enforced here,
//! by a watchdog per connection that sees its traffic (`WatchedIo`) and its
//! requests in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use crate::config::ConnectionSettings;

/// Serves `router` on `listener` until `shutdown` resolves, then drains the
/// connections within `settings.shutdown_timeout`.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    settings: ConnectionSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let limit_log = EpisodeLog::default();
    let accept_log = EpisodeLog::default();
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Reap finished connections so the set does not grow with every one.
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                if accept_log.end() {
                    tracing::info!("accepting connections again");
                }
                stream
            }
            Err(e) => {
                // EMFILE and the like: the process is out of file descriptors.
                // Waiting lets connections close; the log says why clients hang.
                if accept_log.begin() {
                    tracing::error!(
                        error = %e,
                        max_connections = settings.max_connections,
                        "cannot accept connections (lower PWA_MAX_CONNECTIONS or raise the open-file limit); retrying"
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            crate::metrics::connection_refused();
            if limit_log.begin() {
                tracing::warn!(
                    max_connections = settings.max_connections,
                    "connection limit reached (PWA_MAX_CONNECTIONS): refusing new connections with 503"
                );
            }
            if let Ok(slot) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(slot);
                });
            }
            continue;
        };
        if limit_log.end() {
            tracing::info!("connections below the limit again: accepting");
        }
        let router = router.clone();
        let builder = builder.clone();
        let stopped = stopped.clone();
        connections.spawn(async move {
            crate::metrics::connection_open(1.0);
            serve_one(stream, router, builder, settings, stopped).await;
            crate::metrics::connection_open(-1.0);
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let open = connections.len();
    if open > 0 {
        tracing::info!(open, "shutdown: waiting for open connections");
    }
    let drained = tokio::time::timeout(settings.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "shutdown: closing connections still open after PWA_SHUTDOWN_TIMEOUT"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Refusals answered at once; beyond that, a connection over the limit is
/// closed without an answer.
const REFUSALS_AT_ONCE: usize = 64;

/// The answer to a connection over the limit.
fn refusal() -> Vec<u8> {
    let body = r#"{"detail":"The server has too many open connections; retry shortly"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers a connection over the limit with 503 and closes it. The request is
/// read first (briefly), so that closing does not reset the connection before
/// the client has read the answer.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&refusal()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Whether a condition that is logged once per episode holds (the connection
/// limit, failing accepts).
#[derive(Debug, Default)]
struct EpisodeLog(AtomicBool);

impl EpisodeLog {
    /// Marks the episode as on; true when it was off (log its start).
    fn begin(&self) -> bool {
        !self.0.swap(true, Ordering::Relaxed)
    }

    /// Marks the episode as over; true when it was on (log its end).
    fn end(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// Serves one connection until it ends, its client stalls or idles past the
/// limits, or the server shuts down.
async fn serve_one(
    stream: TcpStream,
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    settings: ConnectionSettings,
    mut stopped: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    // The client's address, for the audit trail (axum's ConnectInfo).
    let peer = stream.peer_addr().ok();
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        activity: activity.clone(),
    });
    let service_activity = activity.clone();
    let body_timeout = settings.body_timeout;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = InFlight::start(&service_activity);
        // A request without a body (most GETs) needs no timer.
        let mut request = request.map(|body| {
            if hyper::body::Body::is_end_stream(&body) {
                Body::new(body)
            } else {
                Body::new(TimeoutBody::new(body_timeout, body))
            }
        });
        if let Some(peer) = peer {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
        }
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(in_flight);
            response
        }
    });
    let connection = builder.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let check_every = (settings.header_timeout.min(settings.idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut tick = tokio::time::interval(check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stopped.changed(), if !closing => {
                // Either the server stops, or it is gone: close gracefully.
                let _ = changed;
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tick.tick() => match activity.verdict(&settings) {
                Verdict::Keep => {}
                Verdict::HeadersStalled => {
                    tracing::debug!("closing a connection whose request headers stalled (PWA_HEADER_TIMEOUT)");
                    return;
                }
                Verdict::Idle if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                Verdict::Idle => {
                    // Asked to close and still idle: hyper is waiting for a
                    // client that sends nothing.
                    return;
                }
            },
        }
    }
}

/// What the watchdog does with a connection.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Keep,
    HeadersStalled,
    Idle,
}

/// A connection's traffic and requests, shared by its I/O, its service and
/// its watchdog. Times are milliseconds since `epoch`.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    /// Last byte read or written.
    last_io: AtomicU64,
    /// When bytes arrived with no request in flight (the start of the next
    /// request's headers), plus one; 0 when none did.
    unparsed_since: AtomicU64,
    /// Requests whose response has not been produced yet.
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_io: AtomicU64::new(0),
            unparsed_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn on_io(&self, read: bool) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if read && self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self.unparsed_since.compare_exchange(
                0,
                now + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    fn verdict(&self, settings: &ConnectionSettings) -> Verdict {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Verdict::Keep;
        }
        let now = self.now();
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let unparsed = self.unparsed_since.load(Ordering::Acquire);
        if unparsed > 0 && now.saturating_sub(unparsed - 1) >= millis(settings.header_timeout) {
            return Verdict::HeadersStalled;
        }
        if now.saturating_sub(self.last_io.load(Ordering::Relaxed)) >= millis(settings.idle_timeout)
        {
            return Verdict::Idle;
        }
        Verdict::Keep
    }
}

/// A request in flight on a connection (its headers have been read).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.unparsed_since.store(0, Ordering::Release);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_io.store(self.0.now(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A socket that records its traffic in an [`Activity`].
struct WatchedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_io(true);
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_io(false);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_io(false);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
