//! # broker — the round-robin request router of paxos-zmq
//!
//! Clients (the `client` CLI, the bots) connect DEALER sockets to the **frontend** ROUTER;
//! nodes connect DEALER sockets to the **backend** ROUTER (zguide names). The broker hands
//! each client request to the next **live** node in round-robin order and returns each
//! reply to the client it names.
//!
//! ```text
//! client DEALER  [body]  →  frontend ROUTER [client_id, body]
//!                           backend ROUTER  [route, client_id, body]  →  node DEALER [client_id, body]
//! client DEALER  [body]  ←  frontend ROUTER [client_id, body]
//!                           backend ROUTER  [route, client_id, body]  ←  node DEALER [client_id, body]
//! node control:             backend ROUTER  [route, NodeToBroker]     ←  node DEALER [NodeToBroker]
//!                           backend ROUTER  [route, challenge]        →  node DEALER [challenge]
//! ```
//!
//! A node's `route` is the routing id the backend ROUTER gave its connection. A READY
//! (or a heartbeat from a connection the broker does not route to) is answered with a
//! challenge; the node's sealed proof of it makes that connection the node's route
//! ([`challenge`]). A stranger who replays a recorded, authentic READY from its own
//! connection gets a challenge it cannot answer, and no request.
//!
//! ## Layout
//! - [`ring`]: the live nodes and whose turn is next — a plain data structure, time
//!   passed in, unit-tested without sockets.
//! - [`Broker`]: what to do with one message from either socket — also without sockets;
//!   it returns the message to send.
//! - [`run`]: the only code that owns the sockets and the clock; `main.rs` only parses
//!   flags, binds and calls it, so tests bind port 0 and run the real thing in-process.
//! - The status port ([`service::http`]): `/status` (a [`BrokerReport`] taken by the loop
//!   between two batches), `/readyz` (ready while at least one node is live), `/livez`,
//!   `/metrics` ([`metrics`]: requests per node, replies, `unavailable` answers, malformed
//!   messages by reason, live nodes). `--name` tells the brokers of a pair apart there and
//!   in the logs.
//! - [`health`]: the probe behind `broker health` (docker healthchecks).
//!
//! ## Invariants kept here
//! - **Never queue forever.** With no live node a request is answered `unavailable` at
//!   once; the broker keeps no pending request at all, so the only queues are the bounded
//!   transport channels and libzmq pipes ([`transport::CHANNEL_CAPACITY`], the
//!   high-water marks) and one receive batch ([`RECV_BATCH_MAX`]).
//! - **A silent node gets nothing.** Only live nodes get requests: a node silent longer
//!   than [`Config::liveness_timeout`] is skipped at once and leaves the ring; a READY or
//!   heartbeat brings it back.
//! - **Bad input never crashes the broker.** A malformed message (wrong frame count,
//!   oversize frame, undecodable body) is counted, logged at most once per
//!   [`Config::malformed_log_interval`], and answered `bad_request` where a reply address
//!   exists. No input reaches an `unwrap` or an unchecked index.
//! - **The hot path does not decode requests.** A request is checked lightly (layout,
//!   size, version byte) and forwarded as it came; only an answer the broker writes itself
//!   (`unavailable`, `bad_request`) decodes the body, to echo its `seq`. The node decodes
//!   and validates every request in full.

pub mod challenge;
mod config;
mod health;
pub mod metrics;
pub mod ring;
mod run;

pub use config::{Config, ConfigError};
pub use health::{HealthError, health};
pub use run::{bind, run};

use std::time::{Duration, Instant};

use proto::codec::PROTOCOL_VERSION;
use proto::fabric::{BROKER_PING, NodeToBroker, broker_challenge, broker_pong};
use proto::limits::{MAX_FRAME_BYTES, MAX_ROUTING_FRAME_BYTES};
use proto::report::{AuthReport, BrokerReport};
use proto::seal::{Keyring, SealError};
use proto::{Error, ErrorCode, Request, Response};
use serde::{Deserialize, Serialize};
use transport::{Multipart, TransportError};

use crate::challenge::Challenges;
use crate::metrics::{Malformed, Metrics};
use crate::ring::{Liveness, Ring};
use service::RateLimitedLog;

/// Associated data of a node's READY, heartbeat or proof.
pub use proto::fabric::BROKER_CONTROL as CONTROL;
/// Associated data of a node's reply (with the client's routing frame).
pub use proto::fabric::BROKER_REPLY as REPLY;
/// Associated data of a request sealed for a node (with the client's routing frame).
pub use proto::fabric::BROKER_REQUEST as REQUEST;

/// Where clients connect, by default.
pub const DEFAULT_FRONTEND: &str = "tcp://127.0.0.1:5555";
/// Where nodes connect, by default.
pub const DEFAULT_BACKEND: &str = "tcp://127.0.0.1:5556";
/// Where the status port listens, by default (the second broker of a local pair is
/// given 7092 by the scripts).
pub const DEFAULT_STATUS_ADDR: &str = "127.0.0.1:7091";
/// The broker's `--name`, by default.
pub const DEFAULT_NAME: &str = "broker";
/// Most messages taken from one socket before the other gets a turn.
pub const RECV_BATCH_MAX: usize = 256;
/// The `node` field of the answers the broker writes itself.
pub const BROKER_NAME: &str = "broker";
/// The `client_id` of health probes (no real session uses 0: clients pick theirs at random).
pub const HEALTH_CLIENT_ID: proto::client::ClientId = 0;

/// Counters of one run of the broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests forwarded to a node.
    pub requests: u64,
    /// Replies returned to a client.
    pub replies: u64,
    /// Requests answered `unavailable` (no live node).
    pub unavailable: u64,
    /// Malformed messages, on either socket.
    pub malformed: u64,
    /// READY, heartbeat and proof messages taken.
    pub control: u64,
    /// Challenges sent to backend connections.
    pub challenges: u64,
    /// Nodes that joined the ring (first proof, or back after expiry).
    pub joined: u64,
    /// Nodes that left the ring (silent too long).
    pub left: u64,
    /// Liveness probes of clients answered.
    pub pings: u64,
    /// Backend messages that did not open under the cluster key.
    pub auth_rejected: u64,
}

/// Why the broker stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The settings cannot work.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A socket's I/O thread stopped.
    #[error("the {0} socket closed")]
    Closed(&'static str),
    /// Binding a socket failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The status port could not be bound.
    #[error(transparent)]
    StatusPort(#[from] service::http::BindError),
    /// The cluster key cannot be read.
    #[error(transparent)]
    Key(#[from] service::keyfile::KeyFileError),
}

/// Where a message produced by [`Broker`] goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// To a node, on the backend: `[node, client_id, body]`.
    Backend(Multipart),
    /// To a client, on the frontend: `[client_id, body]`.
    Frontend(Multipart),
    /// An answer on the backend to the peer that sent a bad control message:
    /// `[peer, body]`.
    BackendAnswer(Multipart),
    /// Nothing to send.
    Nothing,
}

/// Just the `seq` of a request, to echo it in an answer even when the rest of the
/// request is invalid (rmp-serde skips the other fields).
#[derive(Debug, Serialize, Deserialize)]
struct SeqOnly {
    seq: proto::client::Seq,
}

impl proto::Wire for SeqOnly {
    fn validate(&self) -> Result<(), proto::LimitError> {
        Ok(())
    }
}

/// The broker's state and its handling of one message, without sockets or clock: [`run`]
/// passes each received message and `now` in and sends what comes out.
#[derive(Debug)]
pub struct Broker {
    ring: Ring,
    /// Challenges sent to backend connections, not answered yet.
    challenges: Challenges,
    stats: Stats,
    malformed_log: RateLimitedLog,
    auth_log: RateLimitedLog,
    metrics: Metrics,
    /// The cluster's keys: the backend speaks only sealed frames.
    keys: Keyring,
    /// The last backend frame refused for not opening, for `/status`.
    last_rejected: Option<String>,
}

impl Broker {
    /// A broker with an empty ring, sealing its backend traffic with `keys`.
    pub fn new(config: &Config, keys: Keyring) -> Broker {
        Broker {
            ring: Ring::new(config.liveness_timeout),
            challenges: Challenges::new(config.liveness_timeout),
            stats: Stats::default(),
            malformed_log: RateLimitedLog::new(config.malformed_log_interval),
            auth_log: RateLimitedLog::new(config.malformed_log_interval),
            metrics: Metrics::new(),
            keys,
            last_rejected: None,
        }
    }

    /// Counts and logs (rate-limited, with the peer's address when known) a backend
    /// message that does not open under the cluster key; it is dropped undecoded.
    fn reject_unsealed(
        &mut self,
        now: Instant,
        kind: &'static str,
        identity: &[u8],
        peer: Option<&str>,
        error: SealError,
    ) {
        self.stats.auth_rejected += 1;
        self.metrics.auth_rejected(kind, error);
        let reason = format!(
            "{kind} from {:?} at {}: {error}",
            String::from_utf8_lossy(identity),
            peer.unwrap_or("an unknown address")
        );
        self.auth_log.warn(now, "backend (authentication)", &reason);
        self.last_rejected = Some(reason);
    }

    /// The Prometheus metrics (`/metrics`, see [`metrics`]).
    pub fn metrics(&self) -> std::sync::Arc<prometheus_client::registry::Registry> {
        self.metrics.registry()
    }

    /// The `/status` document as of `now`.
    pub fn report(&self, about: &About, now: Instant) -> BrokerReport {
        BrokerReport {
            name: about.name.clone(),
            frontend: about.frontend.clone(),
            backend: about.backend.clone(),
            live_nodes: self.ring.live(now).map(control_name).collect(),
            requests: self.stats.requests,
            replies: self.stats.replies,
            unavailable: self.stats.unavailable,
            malformed: self.stats.malformed,
            auth: AuthReport {
                key_ids: self.keys.key_ids(),
                rejected: self.stats.auth_rejected,
                last_rejected: self.last_rejected.clone(),
            },
            uptime_ms: millis(now.saturating_duration_since(about.started)),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The ring of nodes.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// A message from a client: `[client_id, body]`.
    pub fn on_frontend(&mut self, mut message: Multipart, now: Instant) -> Outgoing {
        if let [client, body] = &message[..]
            && body.as_slice() == BROKER_PING
        {
            // A client's liveness probe: answered at once, with how many nodes it can
            // route to (clients prefer a broker that has some).
            self.stats.pings += 1;
            let live = self.ring.live(now).count();
            return Outgoing::Frontend(vec![client.clone(), broker_pong(live)]);
        }
        if let Err((kind, reason)) = check_request_layout(&message) {
            return self.reject_frontend(message, now, kind, reason);
        }
        match self.ring.next(now) {
            Some((node, route)) => {
                self.stats.requests += 1;
                self.metrics.routed_to(node);
                // Sealed for the node, bound to the client's routing frame: only a
                // cluster node reads it, and its reply must name the same client. It goes
                // to the connection that last proved it holds the key.
                let route = route.to_vec();
                let sealed = self.keys.seal(&[REQUEST, &message[0]], &message[1]);
                message[1] = sealed;
                message.insert(0, route);
                Outgoing::Backend(message)
            }
            None => {
                // The client gets `unavailable` now: the command certainly did not take
                // effect and it may retry. Decoding is fine here; this is not the hot path.
                let (client, body) = (&message[0], &message[1]);
                match proto::decode::<Request>(body) {
                    Ok(request) => {
                        self.stats.unavailable += 1;
                        self.metrics.unavailable();
                        answer(
                            client,
                            request.seq,
                            ErrorCode::Unavailable,
                            "no live node: retry later",
                        )
                        .map_or(Outgoing::Nothing, Outgoing::Frontend)
                    }
                    Err(e) => {
                        self.reject_frontend(message, now, Malformed::Undecodable, e.to_string())
                    }
                }
            }
        }
    }

    /// Counts, logs (rate-limited) and answers `bad_request` to the sender of a malformed
    /// frontend message. The first frame is always the sender's identity (ROUTER).
    fn reject_frontend(
        &mut self,
        message: Multipart,
        now: Instant,
        kind: Malformed,
        reason: String,
    ) -> Outgoing {
        self.stats.malformed += 1;
        self.metrics.malformed("frontend", kind);
        self.malformed_log.warn(now, "frontend", &reason);
        let Some((client, rest)) = message.split_first() else {
            return Outgoing::Nothing;
        };
        if client.is_empty() || client.len() > MAX_ROUTING_FRAME_BYTES {
            return Outgoing::Nothing;
        }
        // Echo the seq of whichever frame holds the request, if any does (a client that
        // sent its request in several frames). Only a few frames are tried.
        let seq = rest
            .iter()
            .take(proto::limits::MAX_ROUTING_FRAMES + 1)
            .find_map(|frame| proto::decode::<SeqOnly>(frame).ok())
            .map_or(0, |s| s.seq);
        answer(client, seq, ErrorCode::BadRequest, &reason)
            .map_or(Outgoing::Nothing, Outgoing::Frontend)
    }

    /// A message from a node: a reply `[route, client_id, sealed body]` or a control
    /// message `[route, sealed NodeToBroker]` (`route`: the routing id the ROUTER gave the
    /// connection). Both must open under the cluster key (a reply bound to the client's
    /// routing frame): a process without it cannot join the ring nor answer a client. A
    /// connection is routed requests only once it answered a challenge ([`challenge`]),
    /// so a sealed READY replayed from another connection earns nothing. `peer` is the
    /// sender's address, for the log.
    pub fn on_backend(
        &mut self,
        mut message: Multipart,
        now: Instant,
        peer: Option<&str>,
    ) -> Outgoing {
        match message.len() {
            3 => {
                let client = &message[1];
                if client.is_empty() || client.len() > MAX_ROUTING_FRAME_BYTES {
                    self.reject_backend(
                        now,
                        Malformed::Identity,
                        "reply with a bad client identity frame",
                    );
                    return Outgoing::Nothing;
                }
                let body = match self.keys.open(&[REPLY, client], &message[2]) {
                    Ok(body) => body,
                    Err(error) => {
                        let identity = message[0].clone();
                        self.reject_unsealed(now, "reply", &identity, peer, error);
                        return Outgoing::Nothing;
                    }
                };
                // The reply goes to the client in clear (the client edge is open); a
                // client that is gone is dropped by the ROUTER (unknown identity).
                self.stats.replies += 1;
                self.metrics.replied();
                message[2] = body;
                message.remove(0);
                Outgoing::Frontend(message)
            }
            2 => {
                let identity = message[0].clone();
                match self.keys.open(&[CONTROL], &message[1]) {
                    Ok(body) => {
                        message[1] = body;
                        self.on_control(message, now)
                    }
                    Err(error) => {
                        self.reject_unsealed(now, "control", &identity, peer, error);
                        // Say why to whoever dialled the backend (a client by mistake, a
                        // node with another key); a node drops a one-frame message.
                        let reason = format!(
                            "unauthenticated: the backend takes only messages sealed with \
                             the cluster key ({error})"
                        );
                        answer(&identity, 0, ErrorCode::BadRequest, &reason)
                            .map_or(Outgoing::Nothing, Outgoing::BackendAnswer)
                    }
                }
            }
            count => {
                self.reject_backend(
                    now,
                    Malformed::Frames,
                    &format!("{count} frames from a node (2 or 3 expected)"),
                );
                Outgoing::Nothing
            }
        }
    }

    fn on_control(&mut self, message: Multipart, now: Instant) -> Outgoing {
        let (identity, body) = (&message[0], &message[1]);
        let control = match proto::decode::<NodeToBroker>(body) {
            Ok(control) => control,
            Err(e) => {
                let reason = format!("control message: {e}");
                self.reject_backend(now, Malformed::Undecodable, &reason);
                // Answer, so that a client that dialled the backend port by mistake learns
                // why; a node takes a one-frame message as malformed and drops it.
                return answer(identity, seq_of(body), ErrorCode::BadRequest, &reason)
                    .map_or(Outgoing::Nothing, Outgoing::BackendAnswer);
            }
        };
        self.stats.control += 1;
        self.metrics.control();
        let (route, node) = (identity.as_slice(), control.node().as_bytes());
        let result = match &control {
            NodeToBroker::Ready { .. } => return self.challenge(route, node, now),
            NodeToBroker::Heartbeat { .. } => match self.ring.heartbeat(node, route, now) {
                Some(liveness) => Ok(liveness),
                // Not the connection the node proved itself on: it reconnected, this
                // broker restarted, or a stranger replays a recorded heartbeat.
                None => return self.challenge(route, node, now),
            },
            NodeToBroker::Proof { nonce, .. } => {
                if self.challenges.answer(route, node, nonce, now) {
                    self.ring.ready(node, route, now)
                } else if let Some(liveness) = self.ring.heartbeat(node, route, now) {
                    // A second answer to a challenge sent twice (a heartbeat crossed the
                    // first proof), on the route it already proved: a heartbeat.
                    Ok(liveness)
                } else {
                    self.reject_backend(
                        now,
                        Malformed::Unproved,
                        &format!(
                            "a proof for {:?} that answers no challenge of its connection \
                             (replayed, or late)",
                            control.node()
                        ),
                    );
                    return Outgoing::Nothing;
                }
            }
        };
        match result {
            Ok(Liveness::Joined) => {
                self.stats.joined += 1;
                self.metrics.joined();
                self.metrics.set_live_nodes(self.ring.live(now).count());
                tracing::info!(
                    node = control.node(),
                    live = self.ring.live(now).count(),
                    "node joined the ring"
                );
            }
            Ok(Liveness::Refreshed) => {}
            Err(full) => self.reject_backend(now, Malformed::RingFull, &full.to_string()),
        }
        Outgoing::Nothing
    }

    /// Challenges connection `route`, which says it is `node`: it is routed requests
    /// only once it answers with a sealed proof.
    fn challenge(&mut self, route: &[u8], node: &[u8], now: Instant) -> Outgoing {
        let nonce = self.challenges.issue(route, node, now);
        self.stats.challenges += 1;
        self.metrics.challenged();
        Outgoing::BackendAnswer(vec![route.to_vec(), broker_challenge(&nonce)])
    }

    fn reject_backend(&mut self, now: Instant, kind: Malformed, reason: &str) {
        self.stats.malformed += 1;
        self.metrics.malformed("backend", kind);
        self.malformed_log.warn(now, "backend", &reason);
    }

    /// Removes the nodes that fell silent (they already get no request).
    pub fn expire(&mut self, now: Instant) {
        for node in self.ring.expire(now) {
            self.stats.left += 1;
            self.metrics.left();
            tracing::warn!(
                node = control_name(&node),
                timeout_ms = self.ring.liveness_timeout().as_millis() as u64,
                live = self.ring.live(now).count(),
                "node left the ring: silent too long"
            );
        }
        self.metrics.set_live_nodes(self.ring.live(now).count());
    }
}

fn control_name(identity: &[u8]) -> String {
    String::from_utf8_lossy(identity).into_owned()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// What a [`BrokerReport`] says beside the broker's state: who it is, where it listens,
/// and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct About {
    /// `--name`.
    pub name: String,
    /// The frontend endpoint as bound.
    pub frontend: String,
    /// The backend endpoint as bound.
    pub backend: String,
    /// When the broker started.
    pub started: Instant,
}

/// Light checks of a client request: `[client_id, body]`, sizes within the limits, our
/// protocol version. The body is not decoded.
fn check_request_layout(message: &Multipart) -> Result<(), (Malformed, String)> {
    let [client, body] = message.as_slice() else {
        return Err((
            Malformed::Frames,
            format!(
                "{} frame(s) from a client: send exactly one body frame",
                message.len().saturating_sub(1)
            ),
        ));
    };
    if client.is_empty() || client.len() > MAX_ROUTING_FRAME_BYTES {
        return Err((
            Malformed::Identity,
            format!("client identity of {} bytes", client.len()),
        ));
    }
    match body.first() {
        None => Err((Malformed::EmptyBody, "empty body frame".into())),
        Some(_) if body.len() > MAX_FRAME_BYTES => Err((
            Malformed::Oversize,
            format!(
                "body of {} bytes is over the limit of {MAX_FRAME_BYTES}",
                body.len()
            ),
        )),
        Some(&version) if version != PROTOCOL_VERSION => Err((
            Malformed::Version,
            format!(
                "unsupported protocol version {version} (this broker speaks {PROTOCOL_VERSION})"
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// The `seq` of a request body, or 0 when it has none.
fn seq_of(body: &[u8]) -> proto::client::Seq {
    proto::decode::<SeqOnly>(body).map_or(0, |s| s.seq)
}

/// `[to, Response { seq, Err(code) }]`, written by the broker itself.
fn answer(to: &[u8], seq: proto::client::Seq, code: ErrorCode, message: &str) -> Option<Multipart> {
    let response = Response {
        seq,
        result: Err(Error::new(code, message)),
        node: BROKER_NAME.to_owned(),
        applied_slot: 0,
    };
    match proto::encode(&response) {
        Ok(body) => Some(vec![to.to_vec(), body]),
        Err(e) => {
            // Cannot happen for a short error message; if it does, the client times out.
            tracing::error!(error = %e, "cannot encode an answer");
            None
        }
    }
}

#[cfg(test)]
mod tests;
