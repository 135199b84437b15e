//! The status port of a fabric process (broker, proxy, reference): a small HTTP server
//! written once, and [`get`], the tiny client its tests and probes use.
//!
//! | path | answer |
//! |---|---|
//! | `/livez` | 200 `ok` while the process runs (the server answers: the runtime is alive) |
//! | `/readyz` | 200 `ready` when the service says it is ready, 503 otherwise |
//! | `/status` | the service's report as JSON; 503 when its loop does not answer in time |
//! | `/metrics` | the service's Prometheus [`Registry`] in the OpenMetrics text format |
//! | anything else | 404 |
//!
//! ## Who answers
//! The handlers never touch a service's state. `/status` and `/readyz` send a
//! [`StatusQuery`] over a bounded channel to the service's loop, which answers with its
//! report between two turns ([`StatusQueries::recv`] is one more branch of its
//! `select!`), so the report is one consistent view and the loop needs no lock. Whether
//! the service is ready is a function of that same report, given by the service
//! ([`status_port`]). `/metrics` encodes the registry directly: its metrics are atomics.
//!
//! ## Limits
//! - At most [`MAX_STATUS_QUERIES`] queries wait for the loop; beyond it, and after
//!   [`STATUS_TIMEOUT`], the answer is 503 `busy`.
//! - At most [`Limits::max_connections`] connections at once ([`MAX_CONNECTIONS`]); more
//!   wait in the kernel's accept queue. A connection that neither sends nor takes a byte
//!   for [`Limits::idle_timeout`] ([`IDLE_TIMEOUT`]) is closed, so idle or half-sent
//!   requests cannot hold the slots for good.
//! - Stopping waits at most [`SHUTDOWN_GRACE`] for requests in flight.
//!
//! The port binds wherever it is told (`127.0.0.1` by default in every binary): the
//! documents and metrics are for operators and tools, not for the public.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get as route_get;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// Status queries waiting for the service's loop; beyond it the handler answers 503.
pub const MAX_STATUS_QUERIES: usize = 64;
/// How long a handler waits for the service's loop before answering 503.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once, by default.
pub const MAX_CONNECTIONS: usize = 32;
/// A connection silent both ways for this long is closed, by default. Longer than
/// Prometheus' usual scrape interval (15 s), so a scraper keeps its connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long stopping waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Largest HTTP answer [`get`] reads.
pub const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;
/// The content type of `/metrics` (OpenMetrics text, which Prometheus negotiates).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A `/status` or `/readyz` query, for the service's loop to answer with its report.
#[derive(Debug)]
pub struct StatusQuery<R>(oneshot::Sender<R>);

impl<R> StatusQuery<R> {
    /// Answers the query. An asker that gave up meanwhile is not an error.
    pub fn answer(self, report: R) {
        let _ = self.0.send(report);
    }
}

/// The loop's end of the query channel.
#[derive(Debug)]
pub struct StatusQueries<R>(mpsc::Receiver<StatusQuery<R>>);

impl<R> StatusQueries<R> {
    /// The next query; `None` once the server has stopped. Cancel-safe, for `select!`
    /// (match `Some(query)`, so that the branch turns off when the server is gone).
    pub async fn recv(&mut self) -> Option<StatusQuery<R>> {
        self.0.recv().await
    }
}

/// Connection limits of the server (see the module's *Limits*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// A connection with no byte either way for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// What the server needs from a service: where to ask for its report, how to tell
/// readiness from it, and its metrics. Made by [`status_port`].
pub struct StatusPort<R> {
    queries: mpsc::Sender<StatusQuery<R>>,
    ready: fn(&R) -> bool,
    metrics: Arc<Registry>,
    limits: Limits,
}

impl<R> Clone for StatusPort<R> {
    fn clone(&self) -> Self {
        StatusPort {
            queries: self.queries.clone(),
            ready: self.ready,
            metrics: self.metrics.clone(),
            limits: self.limits,
        }
    }
}

impl<R> std::fmt::Debug for StatusPort<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusPort")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<R> StatusPort<R> {
    /// Other connection limits than the defaults (tests use short ones).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// The server's half ([`StatusPort`], for [`serve`]) and the loop's half
/// ([`StatusQueries`]) of a status port. `ready` tells from a report whether the service
/// is ready (`/readyz`); `metrics` is what `/metrics` shows.
pub fn status_port<R>(
    metrics: Arc<Registry>,
    ready: fn(&R) -> bool,
) -> (StatusPort<R>, StatusQueries<R>) {
    let (queries, receiver) = mpsc::channel(MAX_STATUS_QUERIES);
    let port = StatusPort {
        queries,
        ready,
        metrics,
        limits: Limits::default(),
    };
    (port, StatusQueries(receiver))
}

/// The status port could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind the status port {addr}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// Binds the status port's listener (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

async fn ask<R>(port: &StatusPort<R>) -> Option<R> {
    let (reply, answer) = oneshot::channel();
    port.queries.try_send(StatusQuery(reply)).ok()?;
    tokio::time::timeout(STATUS_TIMEOUT, answer)
        .await
        .ok()?
        .ok()
}

async fn status<R: Serialize + Send + 'static>(State(port): State<StatusPort<R>>) -> Response {
    match ask(&port).await {
        Some(report) => axum::Json(report).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response(),
    }
}

async fn readyz<R: Send + 'static>(State(port): State<StatusPort<R>>) -> Response {
    match ask(&port).await {
        Some(report) if (port.ready)(&report) => (StatusCode::OK, "ready\n").into_response(),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response(),
    }
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn metrics<R>(State(port): State<StatusPort<R>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &port.metrics) {
        Ok(()) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}

/// Serves the status port on `listener` until `shutdown` is cancelled, then waits at most
/// [`SHUTDOWN_GRACE`] for requests in flight. Errors only if the server itself fails.
pub async fn serve<R: Serialize + Send + 'static>(
    listener: TcpListener,
    port: StatusPort<R>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = port.limits;
    let app = Router::new()
        .route("/status", route_get(status::<R>))
        .route("/readyz", route_get(readyz::<R>))
        .route("/livez", route_get(livez))
        .route("/metrics", route_get(metrics::<R>))
        .with_state(port);
    let listener = limited(listener, limits);
    let stopping = shutdown.clone();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopping.cancelled().await })
        .into_future();
    tokio::select! {
        result = server => result,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => Ok(()),
    }
}

/// A status port served by a task of its own (see [`spawn`]).
#[derive(Debug)]
pub struct Server {
    stop: tokio_util::sync::DropGuard,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Serves the status port on a task of its own until `shutdown` is cancelled, the
/// returned [`Server`] is dropped (a service that returns early leaves no server behind),
/// or [`Server::stop`] is called.
pub fn spawn<R: Serialize + Send + 'static>(
    listener: TcpListener,
    port: StatusPort<R>,
    shutdown: &CancellationToken,
) -> Server {
    let stop = shutdown.child_token();
    let task = tokio::spawn(serve(listener, port, stop.clone()));
    Server {
        stop: stop.drop_guard(),
        task,
    }
}

impl Server {
    /// Stops serving and waits for the server (at most about [`SHUTDOWN_GRACE`]).
    pub async fn stop(self) {
        let Server { stop, task } = self;
        drop(stop);
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the status port failed"),
            Err(error) => tracing::warn!(%error, "the status port's task failed"),
        }
    }
}

/// `listener`, serving at most `limits.max_connections` at once and closing connections
/// idle for `limits.idle_timeout` (for any axum server: the node's status port uses it).
pub fn limited(listener: TcpListener, limits: Limits) -> LimitedListener {
    LimitedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        idle_timeout: limits.idle_timeout,
    }
}

/// A listener that serves at most a number of connections at once and closes idle ones
/// (made by [`limited`]).
pub struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed; should it be, no connection is taken any more.
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return std::future::pending().await;
        };
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let idle = Box::pin(tokio::time::sleep(self.idle_timeout));
                    let stream = LimitedStream {
                        stream,
                        idle,
                        idle_timeout: self.idle_timeout,
                        _permit: permit,
                    };
                    return (stream, addr);
                }
                Err(error) => {
                    // Out of descriptors, or a connection reset before it was taken:
                    // wait a little rather than spin (as axum's own listener does).
                    tracing::debug!(%error, "status port: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that holds one of the listener's slots, and fails once it has been idle
/// for the timeout (hyper then closes it and the slot is free again).
pub struct LimitedStream {
    stream: TcpStream,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    _permit: OwnedSemaphorePermit,
}

impl LimitedStream {
    /// `Err` once the connection has been idle too long; registers the waker otherwise,
    /// so a connection that nobody polls still wakes up to be closed.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> Result<(), std::io::Error> {
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "status connection idle for too long",
            )),
            Poll::Pending => Ok(()),
        }
    }

    fn touched(&mut self) {
        let deadline = Instant::now() + self.idle_timeout;
        self.idle.as_mut().reset(deadline);
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.touched();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.check_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(Ok(written)) => {
                this.touched();
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.check_idle(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Why [`get`] failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// Connecting, writing or reading failed.
    #[error("HTTP request to {addr} failed: {source}")]
    Io {
        /// The server.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// No complete answer within the timeout.
    #[error("no HTTP answer from {addr} within {timeout:?}")]
    Timeout {
        /// The server.
        addr: SocketAddr,
        /// The timeout.
        timeout: Duration,
    },
    /// The answer is not HTTP.
    #[error("malformed HTTP answer from {0}")]
    Malformed(SocketAddr),
}

/// `GET path` on `addr` (HTTP/1.0, `Connection: close`): `(status code, body)`, read up
/// to [`MAX_RESPONSE_BYTES`], all within `timeout`. For tests, probes and tools.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), GetError> {
    let exchange = async {
        let io = |source| GetError::Io { addr, source };
        let mut stream = TcpStream::connect(addr).await.map_err(io)?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut raw)
            .await
            .map_err(io)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or(GetError::Malformed(addr))?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or(GetError::Malformed(addr))?;
        Ok((code, body.to_owned()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| GetError::Timeout { addr, timeout })?
}

#[cfg(test)]
mod tests;
