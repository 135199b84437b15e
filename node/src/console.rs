//! The web console every node serves at `/` (seed 001's node page, grown up): the cluster
//! as this node sees it, live charts, the recent Paxos events, the node's log and the
//! chat channels. Its page, style and script are compiled into the binary
//! (`console/index.html`, `console.css`, `console.js`: no CDN, it works offline) and it
//! updates itself by polling three JSON documents every two seconds:
//!
//! | path | answer |
//! |---|---|
//! | `/` , `/console.css`, `/console.js` | the page |
//! | `/cluster` | this node's `/status`, and every peer's, asked by this node at the address the reference gave (so a browser that reaches one node sees them all, in Docker too) |
//! | `/logs?after=N` | `{next_seq, lines}`: the node's log lines after line `N` ([`service::recent`]) |
//! | `/metrics` | the Prometheus text, which the page turns into rates and percentiles |
//!
//! It stays cheap: a poll costs the node one status report, at most `cluster_size - 1`
//! small HTTP requests to its peers ([`PEER_TIMEOUT`] each, in parallel), the metrics
//! text and a few log lines. The page keeps the last [`HISTORY`] samples itself.

use std::net::ToSocketAddrs;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::http::{AppState, StatusReport, ask, http_get};

/// How long `/cluster` waits for a peer's `/status`.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(800);
/// How long one round of asking the peers serves every `/cluster` (a page polls every
/// 2 s; several pages, or a flood, share a round instead of each starting one).
pub const PEER_VIEW_TTL: Duration = Duration::from_secs(1);
/// How long a round of asking the peers may take in all (name lookups included).
pub const PEER_ROUND_TIMEOUT: Duration = Duration::from_secs(2);

/// The last round of asking the peers. One round at a time: the lock is held while it
/// runs, so at most `cluster_size - 1` blocking threads ask peers at once, whatever the
/// number of pages or requests.
#[derive(Debug, Default)]
pub(crate) struct PeerViews(tokio::sync::Mutex<Option<(std::time::Instant, Vec<PeerView>)>>);
/// How many samples the page keeps (five minutes at one per two seconds); said here so
/// the docs and the page agree.
pub const HISTORY: usize = 150;

const INDEX: &str = include_str!("console/index.html");
const STYLE: &str = include_str!("console/console.css");
const SCRIPT: &str = include_str!("console/console.js");
/// Only the page's own files run: no inline script, nothing from elsewhere.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'";

/// The console's routes, to merge into the status port's router.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console.css", get(style))
        .route("/console.js", get(script))
        .route("/cluster", get(cluster))
        .route("/logs", get(logs))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// A peer as `/cluster` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeerView {
    rank: u32,
    node: Option<String>,
    status_addr: Option<String>,
    /// Its own `/status`, when it answered.
    status: Option<StatusReport>,
    /// Why it did not, otherwise.
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct ClusterView {
    /// This node's `/status`.
    this: StatusReport,
    peers: Vec<PeerView>,
}

async fn cluster(State(state): State<AppState>) -> Response {
    let Some(this) = ask(&state).await else {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response();
    };
    let mut last = state.peer_views.0.lock().await;
    let fresh = last
        .as_ref()
        .filter(|(at, _)| at.elapsed() < PEER_VIEW_TTL)
        .map(|(_, views)| views.clone());
    let peers = match fresh {
        Some(views) => views,
        None => {
            let views = ask_peers(&this).await;
            *last = Some((std::time::Instant::now(), views.clone()));
            views
        }
    };
    drop(last);
    axum::Json(ClusterView { this, peers }).into_response()
}

/// Asks every peer's `/status` at once (each on a blocking thread), within
/// [`PEER_ROUND_TIMEOUT`] in all; a peer that did not answer in time says so.
async fn ask_peers(this: &StatusReport) -> Vec<PeerView> {
    let asks: Vec<_> = this
        .peers
        .iter()
        .map(|peer| {
            let addr = peer.status_addr.clone();
            let view = PeerView {
                rank: peer.rank,
                node: peer.node.clone(),
                status_addr: addr.clone(),
                status: None,
                error: None,
            };
            let task = addr.map(|addr| tokio::spawn(peer_status(addr)));
            (view, task)
        })
        .collect();
    let deadline = tokio::time::Instant::now() + PEER_ROUND_TIMEOUT;
    let mut views = Vec::with_capacity(asks.len());
    for (mut view, task) in asks {
        match task {
            None => view.error = Some("no status address known yet".to_owned()),
            Some(task) => match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(status))) => view.status = Some(status),
                Ok(Ok(Err(e))) => view.error = Some(e),
                Ok(Err(e)) => view.error = Some(e.to_string()),
                Err(_) => view.error = Some("no answer in time".to_owned()),
            },
        }
        views.push(view);
    }
    views
}

/// A peer's `/status`, asked on a blocking thread (the tiny client is blocking).
async fn peer_status(addr: String) -> Result<StatusReport, String> {
    let task = tokio::task::spawn_blocking(move || {
        let socket = addr
            .to_socket_addrs()
            .map_err(|e| format!("{addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr}: no address"))?;
        let (code, body) = http_get(socket, "/status", PEER_TIMEOUT).map_err(|e| e.to_string())?;
        if code != 200 {
            return Err(format!("{addr} answered {code}"));
        }
        serde_json::from_str::<StatusReport>(&body).map_err(|e| format!("{addr}: {e}"))
    });
    task.await.map_err(|e| e.to_string())?
}

async fn logs(RawQuery(query): RawQuery) -> Response {
    let after = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("after="))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    #[derive(Serialize)]
    struct Logs {
        /// The number the next line will get (lower than what the page has seen: the
        /// node restarted, and the page starts again from 0).
        next_seq: u64,
        lines: Vec<service::recent::LogLine>,
    }
    let lines = service::recent::lines_after(after);
    let next_seq = service::recent::next_seq();
    axum::Json(Logs { next_seq, lines }).into_response()
}
