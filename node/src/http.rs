//! The status port: `/status` (JSON), `/metrics` (Prometheus text), `/livez` and
//! `/readyz`, and the web console ([`crate::console`]: `/`, `/cluster`, `/logs`), served
//! with axum; and [`http_get`], the tiny client the `health` subcommand, the console's
//! `/cluster` and the end-to-end tests use.
//!
//! The handlers never touch the replica: `/status` and `/readyz` ask the driver loop for
//! a [`StatusReport`] over a bounded channel, so the report is one consistent view taken
//! between two turns of the loop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Status queries waiting for the driver loop; beyond it the handler answers 503.
pub const MAX_STATUS_QUERIES: usize = 64;
/// How long a handler waits for the driver loop before answering 503.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest HTTP answer [`http_get`] reads.
pub const MAX_HTTP_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

/// What a peer looks like from this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// Its rank.
    pub rank: u32,
    /// Its name, if known.
    pub node: Option<String>,
    /// Milliseconds since its last message (a heartbeat at least every heartbeat
    /// interval); `None` if never heard since start.
    pub last_heartbeat_ms_ago: Option<u64>,
    /// Whether it was heard within the election timeout.
    pub alive: bool,
    /// The decided prefix it last reported.
    pub decided_slot: u64,
    /// Where it serves `/status`, as the reference said (the web console asks it there).
    #[serde(default)]
    pub status_addr: Option<String>,
}

/// A broker as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerLink {
    /// Its backend endpoint.
    pub endpoint: String,
    /// Milliseconds since a client request last came through it; `None` if none since
    /// start.
    pub last_request_ms_ago: Option<u64>,
}

/// A chat channel as the web console shows it: public, like its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelReport {
    /// Channel name.
    pub name: String,
    /// How many users subscribe to it.
    pub subscribers: usize,
    /// Its latest messages, oldest first.
    pub messages: Vec<proto::client::ChatMessage>,
}

/// The `/status` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// `--id`.
    pub id: u32,
    /// Node name.
    pub node: String,
    /// Paxos rank.
    pub rank: u32,
    /// `follower`, `candidate` or `leader`.
    pub role: String,
    /// Rank of the leader it follows (itself when leading).
    pub leader: Option<u32>,
    /// Name of that leader, if known.
    pub leader_node: Option<String>,
    /// Current ballot (`round.rank`).
    pub ballot: Option<String>,
    /// Highest ballot promised.
    pub promised: String,
    /// Every slot up to here is decided.
    pub decided_slot: u64,
    /// Every slot up to here is applied to the store.
    pub applied_slot: u64,
    /// Digest of the applied state.
    pub digest: String,
    /// Lamport clock of the Paxos core.
    pub lamport: u64,
    /// Berkeley clock offset in milliseconds.
    pub clock_offset_ms: i64,
    /// The proxy this node publishes through (its probes come back through it).
    #[serde(default)]
    pub proxy: String,
    /// The log starts after this slot.
    pub truncated_slot: u64,
    /// Slot of the last store.json written.
    pub snapshot_slot: u64,
    /// Client requests waiting for their command.
    pub pending_requests: usize,
    /// Commands buffered in the core.
    pub pending_commands: usize,
    /// Slots in flight (leader).
    pub in_flight_slots: usize,
    /// Output groups waiting for the disk.
    pub waiting_for_disk: usize,
    /// Whether the reference service registered this node (and answers).
    pub registered: bool,
    /// Milliseconds since the reference last answered; `None` if never.
    pub reference_last_reply_ms_ago: Option<u64>,
    /// Knows a leader and is caught up (`/readyz`).
    pub ready: bool,
    /// The other members.
    pub peers: Vec<PeerReport>,
    /// The cluster key held (its ids), and the frames refused for not opening under it.
    #[serde(default)]
    pub auth: proto::report::AuthReport,
    /// Every proxy's endpoint (`proxy` is the one in use).
    #[serde(default)]
    pub proxies: Vec<String>,
    /// The brokers, and when each last brought a request.
    #[serde(default)]
    pub brokers: Vec<BrokerLink>,
    /// The chat channels with the latest messages (at most
    /// [`crate::report::REPORT_CHANNELS`], each with its last
    /// [`crate::report::REPORT_MESSAGES_PER_CHANNEL`] messages).
    #[serde(default)]
    pub channels: Vec<ChannelReport>,
}

/// A `/status` query to the driver loop.
pub type StatusQuery = oneshot::Sender<StatusReport>;

/// What the handlers share: the way to the driver loop, and the metrics.
#[derive(Clone)]
pub(crate) struct AppState {
    queries: mpsc::Sender<StatusQuery>,
    metrics: Metrics,
    /// The console's last round of asking the peers (`/cluster`).
    pub(crate) peer_views: std::sync::Arc<crate::console::PeerViews>,
}

/// This node's report, from the driver loop (`None`: busy, or stopping).
pub(crate) async fn ask(state: &AppState) -> Option<StatusReport> {
    let (reply, answer) = oneshot::channel();
    state.queries.try_send(reply).ok()?;
    tokio::time::timeout(STATUS_TIMEOUT, answer)
        .await
        .ok()?
        .ok()
}

async fn status(State(state): State<AppState>) -> Response {
    match ask(&state).await {
        Some(report) => axum::Json(report).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    match ask(&state).await {
        Some(report) if report.ready => (StatusCode::OK, "ready\n").into_response(),
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response(),
    }
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Serves the status port on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    queries: mpsc::Sender<StatusQuery>,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/status", get(status))
        .route("/readyz", get(readyz))
        .route("/livez", get(livez))
        .route("/metrics", get(self::metrics))
        .merge(crate::console::routes())
        .with_state(AppState {
            queries,
            metrics,
            peer_views: Default::default(),
        });
    // Bounded like the fabric's status ports: at most MAX_CONNECTIONS at once, idle ones
    // closed (an open console holds one or two).
    let listener = service::http::limited(listener, service::http::Limits::default());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Why [`http_get`] failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting, writing or reading failed.
    #[error("HTTP request to {addr} failed: {source}")]
    Io {
        /// The server.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The answer is not HTTP.
    #[error("malformed HTTP answer from {0}")]
    Malformed(SocketAddr),
}

/// `GET path` on `addr` (HTTP/1.0, `Connection: close`): `(status code, body)`. Blocking,
/// with `timeout` on connect, read and write; for health checks and tests.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    let io = |source| HttpError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_HTTP_RESPONSE_BYTES)
        .read_to_end(&mut raw)
        .map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(HttpError::Malformed(addr))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(HttpError::Malformed(addr))?;
    Ok((code, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StatusReport {
        StatusReport {
            id: 1,
            node: "node-1".to_owned(),
            rank: 1,
            role: "leader".to_owned(),
            leader: Some(1),
            leader_node: Some("node-1".to_owned()),
            ballot: Some("1.1".to_owned()),
            promised: "1.1".to_owned(),
            decided_slot: 5,
            applied_slot: 5,
            digest: "00".repeat(16),
            lamport: 9,
            clock_offset_ms: 0,
            proxy: "tcp://127.0.0.1:5557".to_owned(),
            truncated_slot: 0,
            snapshot_slot: 0,
            pending_requests: 0,
            pending_commands: 0,
            in_flight_slots: 0,
            waiting_for_disk: 0,
            registered: true,
            reference_last_reply_ms_ago: Some(3),
            ready: true,
            peers: vec![],
            auth: proto::report::AuthReport::default(),
            proxies: vec![],
            brokers: vec![],
            channels: vec![],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_status_metrics_livez_and_readyz() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (queries, mut rx) = mpsc::channel::<StatusQuery>(MAX_STATUS_QUERIES);
        let metrics = Metrics::new();
        metrics.proposals.inc();
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(listener, queries, metrics, shutdown.clone()));
        let mut ready = true;
        let driver = tokio::spawn(async move {
            while let Some(query) = rx.recv().await {
                let mut r = report();
                r.ready = ready;
                ready = false;
                let _ = query.send(r);
            }
        });
        let get = |path: &'static str| {
            tokio::task::spawn_blocking(move || {
                http_get(addr, path, Duration::from_secs(5)).unwrap()
            })
        };
        let (code, body) = get("/status").await.unwrap();
        assert_eq!(code, 200);
        let parsed: StatusReport = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed.node, "node-1");
        let (code, _) = get("/readyz").await.unwrap();
        assert_eq!(code, 503, "the second report says not ready");
        assert_eq!(get("/livez").await.unwrap(), (200, "ok\n".to_owned()));
        let (code, body) = get("/metrics").await.unwrap();
        assert_eq!(code, 200);
        assert!(body.contains("paxos_proposals_total 1"));
        assert_eq!(get("/nothing").await.unwrap().0, 404);
        shutdown.cancel();
        server.await.unwrap().unwrap();
        driver.abort();
    }
}
