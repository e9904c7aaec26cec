//! The servers: the HTTPS webhook (`/mutate`, `/healthz`, `/readyz`, `/metrics`) and the plain-HTTP
//! health port (`/healthz`, `/readyz`, `/metrics`, never asking for a client certificate, for the
//! kubelet's probes and Prometheus when mTLS is on), each an accept loop with bounded connections,
//! handshake and header-read timeouts, and graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::webhook::metrics::Metrics;
use crate::webhook::service::AdmissionService;

/// Bodies above this get 413: a Deployment is far smaller, and the API server's own limit is 3 MiB.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    /// Must stay below the webhook's `timeoutSeconds` (5 s) so the API server gets our answer.
    pub request_timeout: Duration,
    /// After SIGTERM, how long to keep serving while endpoints drop this pod.
    pub drain_delay: Duration,
    /// Then, how long in-flight requests may take to finish.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(4),
            drain_delay: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

pub struct AppState {
    pub service: AdmissionService,
    pub metrics: Arc<Metrics>,
    pub shutting_down: AtomicBool,
    pub request_timeout: Duration,
    /// `--status-page`: the rows behind `GET /status`.
    pub status_page: Option<crate::webhook::status_page::StatusSource>,
}

/// The webhook port's routes: admission, and health and metrics as on the health port.
pub fn router(state: Arc<AppState>) -> Router {
    let status_page = state.status_page.clone();
    let router = health_router(state.clone()).merge(
        Router::new()
            .route("/mutate", post(mutate))
            .with_state(state),
    );
    match status_page {
        Some(source) => router.merge(crate::webhook::status_page::router(
            source,
            STATUS_PAGE_REFRESH_SECONDS,
        )),
        None => router,
    }
}

/// The health port's routes: what the kubelet and Prometheus read.
fn health_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// How often the served status page reloads itself.
const STATUS_PAGE_REFRESH_SECONDS: u32 = 10;

async fn mutate(State(state): State<Arc<AppState>>, request: Request<Body>) -> Response {
    let body = match read_body_in_time(request.into_body(), state.request_timeout).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {MAX_BODY_BYTES} bytes\n"),
            )
                .into_response()
        }
        Err(BodyError::Read(error)) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {error}\n"),
            )
                .into_response()
        }
        Err(BodyError::TimedOut) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n",
            )
                .into_response()
        }
    };
    match state.service.review(&body).await {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    }
}

enum BodyError {
    TooLarge,
    Read(axum::Error),
    TimedOut,
}

/// `read_body` within `within`. The API server's review almost always arrives with its headers,
/// and then the body is read at once, without arming (and cancelling) a timer per request.
async fn read_body_in_time(body: Body, within: Duration) -> Result<Bytes, BodyError> {
    let mut read = std::pin::pin!(read_body(body));
    if let Some(done) = futures::FutureExt::now_or_never(read.as_mut()) {
        return done;
    }
    tokio::time::timeout(within, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

/// Reads at most `MAX_BODY_BYTES`; a body of one chunk (the usual case) is kept without a copy.
/// Past the limit, the rest is read and discarded (up to a bound) so the client receives the 413
/// instead of a connection reset; it is never buffered.
async fn read_body(body: Body) -> Result<Bytes, BodyError> {
    const DISCARD_LIMIT: usize = 8 * MAX_BODY_BYTES;
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(BodyError::Read)?;
        seen = seen.saturating_add(chunk.len());
        if seen > DISCARD_LIMIT {
            break;
        } else if seen > MAX_BODY_BYTES {
            continue;
        }
        match &first {
            None => first = Some(chunk),
            Some(head) => {
                if rest.is_empty() {
                    rest.extend_from_slice(head);
                }
                rest.extend_from_slice(&chunk);
            }
        }
    }
    if seen > MAX_BODY_BYTES {
        Err(BodyError::TooLarge)
    } else if rest.is_empty() {
        Ok(first.unwrap_or_default())
    } else {
        Ok(Bytes::from(rest))
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.shutting_down.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if !state.service.backend.ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet\n").into_response()
    } else {
        "ok".into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// The sockets `serve` accepts on.
pub struct Listeners {
    /// HTTPS: `/mutate`, and health and metrics (behind the client-certificate check with mTLS).
    pub webhook: TcpListener,
    /// Plain HTTP: health and metrics only (`--health-listen`).
    pub health: Option<TcpListener>,
}

/// Serves until `shutdown` completes: then `/readyz` turns 503 on both ports, both keep serving
/// for the drain delay, stop accepting, and in-flight requests get up to the shutdown timeout.
pub async fn serve(
    listeners: Listeners,
    tls: Arc<ServerConfig>,
    state: Arc<AppState>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    // One drain for both listeners, so they stop accepting together.
    let (drained, stop) = watch::channel(false);
    let drain = {
        let state = state.clone();
        let delay = limits.drain_delay;
        async move {
            shutdown.await;
            state.shutting_down.store(true, Ordering::Relaxed);
            tracing::info!(drain_delay = ?delay, "shutdown requested: readiness off, still serving");
            tokio::time::sleep(delay).await;
            let _ = drained.send(true);
        }
    };
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        // An error means the sender is gone, which happens only after it sent `true`.
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let webhook = accept_loop(
        "webhook",
        listeners.webhook,
        TlsAcceptor::from(tls),
        router(state.clone()),
        state.metrics.clone(),
        &limits,
        stopped(stop.clone()),
    );
    let health = async {
        if let Some(listener) = listeners.health {
            let app = health_router(state.clone());
            let metrics = state.metrics.clone();
            accept_loop(
                "health",
                listener,
                Plain,
                app,
                metrics,
                &limits,
                stopped(stop),
            )
            .await;
        }
    };
    tokio::join!(drain, webhook, health);
}

/// The HTTPS accept loop for any router (the benchmark's ceiling reuses it). `shutdown`
/// completing starts the drain delay.
pub async fn serve_app(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    metrics: Arc<Metrics>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let stop = async {
        shutdown.await;
        tracing::info!(drain_delay = ?limits.drain_delay, "shutdown requested: still serving");
        tokio::time::sleep(limits.drain_delay).await;
    };
    let acceptor = TlsAcceptor::from(tls);
    accept_loop("webhook", listener, acceptor, app, metrics, &limits, stop).await
}

/// How an accepted connection becomes the stream HTTP is served on: TLS, or plain.
trait Transport: Clone + Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

impl Transport for TlsAcceptor {
    type Stream = tokio_rustls::server::TlsStream<TcpStream>;
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        self.accept(tcp)
    }
}

/// Plain HTTP: the health port.
#[derive(Clone, Copy)]
struct Plain;

impl Transport for Plain {
    type Stream = TcpStream;
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        std::future::ready(Ok(tcp))
    }
}

/// Accepts until `stop` completes, then closes the listener and gives in-flight requests up to
/// the shutdown timeout.
async fn accept_loop<T: Transport>(
    name: &'static str,
    listener: TcpListener,
    transport: T,
    app: Router,
    metrics: Arc<Metrics>,
    limits: &Limits,
    stop: impl Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());

    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(listener = name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let transport = transport.clone();
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let metrics = metrics.clone();
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(handshake_timeout, transport.handshake(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => return handshake_failed(&metrics, peer, &error.to_string()),
                    Err(_) => return handshake_failed(&metrics, peer, "handshake timed out"),
                };
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(listener = name, timeout = ?limits.shutdown_timeout, "stopped accepting; finishing in-flight requests");
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listener = name, "some connections did not finish in time");
    }
}

fn handshake_failed(metrics: &Metrics, peer: SocketAddr, reason: &str) {
    metrics.tls_handshake_failures.inc();
    tracing::debug!(%peer, reason, "TLS handshake failed");
}
