//! The loop: the only code that owns the broker's sockets and its clock. It binds the
//! two ROUTERs, takes what arrives on either (a batch at a time, so neither starves the
//! other), hands each message to [`Broker`] and sends what comes out; it also answers the
//! status port between two batches and logs the counters.

use std::time::Instant;

use proto::report::BrokerReport;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use transport::{Kind, Mode, Options, Socket, TransportError};

use crate::{About, Broker, BrokerError, Config, Outgoing, RECV_BATCH_MAX, Stats};
use proto::seal::Keyring;

/// `/readyz`: ready while at least one node is live (else every request is answered
/// `unavailable`).
pub(crate) fn is_ready(report: &BrokerReport) -> bool {
    !report.live_nodes.is_empty()
}

/// Binds the frontend and backend ROUTER sockets as [`run`] expects them. The backend
/// names each connection itself (nodes set no identity) and never hands a routing id
/// over to a new connection: a node is reached on the connection that answered its
/// challenge, which nobody else can take over.
pub async fn bind(frontend: &str, backend: &str) -> Result<(Socket, Socket), TransportError> {
    let frontend = Socket::open(Kind::Router, Mode::Bind, frontend, Options::default()).await?;
    let backend = Socket::open(
        Kind::Router,
        Mode::Bind,
        backend,
        Options::default().peer_address(),
    )
    .await?;
    Ok((frontend, backend))
}

/// Runs the broker on two bound ROUTER sockets, with its status port on `status`, until
/// `shutdown` is cancelled; returns the counters (the sockets as [`bind`] makes them).
pub async fn run(
    frontend: Socket,
    backend: Socket,
    status: TcpListener,
    config: Config,
    keys: Keyring,
    shutdown: CancellationToken,
) -> Result<Stats, BrokerError> {
    config.validate()?;
    let about = About {
        name: config.name.clone(),
        frontend: frontend.endpoint().to_owned(),
        backend: backend.endpoint().to_owned(),
        started: Instant::now(),
    };
    tracing::info!(
        name = about.name,
        frontend = about.frontend,
        backend = about.backend,
        status = %status.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        liveness_timeout_ms = config.liveness_timeout.as_millis() as u64,
        "broker running"
    );
    let (frontend_tx, mut frontend_rx) = frontend.split();
    let (backend_tx, mut backend_rx) = backend.split();
    let mut broker = Broker::new(&config, keys);
    let (port, mut queries) = service::http::status_port(broker.metrics(), is_ready);
    let http = service::http::spawn(status, port, &shutdown);
    let mut from_clients = Vec::with_capacity(RECV_BATCH_MAX);
    let mut expire_tick = tokio::time::interval(config.expire_interval());
    expire_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stats_tick = tokio::time::interval(config.stats_interval);
    stats_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    stats_tick.tick().await; // the first tick is immediate: nothing to report yet
    let mut last_stats = (Instant::now(), Stats::default());

    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            received = frontend_rx.recv_many(&mut from_clients, RECV_BATCH_MAX) => {
                if received == 0 {
                    return Err(BrokerError::Closed("frontend"));
                }
                let now = Instant::now();
                for message in from_clients.drain(..) {
                    send(&frontend_tx, &backend_tx, broker.on_frontend(message, now)).await?;
                }
            }
            message = backend_rx.recv() => {
                let Some(message) = message else {
                    return Err(BrokerError::Closed("backend"));
                };
                // One at a time, each with the address it came from (named in the log
                // when it fails authentication); what waits is taken in the same turn.
                let now = Instant::now();
                let mut next = Some(message);
                let mut taken = 0;
                while let Some(message) = next.take() {
                    let peer = backend_rx.last_peer_address();
                    let outgoing = broker.on_backend(message, now, peer.as_deref());
                    send(&frontend_tx, &backend_tx, outgoing).await?;
                    taken += 1;
                    if taken < RECV_BATCH_MAX {
                        next = backend_rx.try_recv();
                    }
                }
            }
            _ = expire_tick.tick() => broker.expire(Instant::now()),
            _ = stats_tick.tick() => {
                let now = Instant::now();
                log_stats(&broker, &about.name, last_stats, now);
                last_stats = (now, broker.stats());
            }
            Some(query) = queries.recv() => query.answer(broker.report(&about, Instant::now())),
        }
    }
    http.stop().await;
    let stats = broker.stats();
    tracing::info!(name = about.name, ?stats, "broker stopped");
    Ok(stats)
}

/// Sends what [`Broker`] produced. Waits only while libzmq's queue is full:
/// a ROUTER never blocks (libzmq drops for a peer over its high-water mark, or unknown).
async fn send(
    frontend: &transport::Sender,
    backend: &transport::Sender,
    outgoing: Outgoing,
) -> Result<(), BrokerError> {
    match outgoing {
        Outgoing::Backend(m) | Outgoing::BackendAnswer(m) => backend
            .send(m)
            .await
            .map_err(|_| BrokerError::Closed("backend")),
        Outgoing::Frontend(m) => frontend
            .send(m)
            .await
            .map_err(|_| BrokerError::Closed("frontend")),
        Outgoing::Nothing => Ok(()),
    }
}

fn log_stats(broker: &Broker, name: &str, (since, before): (Instant, Stats), now: Instant) {
    let stats = broker.stats();
    let seconds = now.saturating_duration_since(since).as_secs_f64().max(1e-3);
    tracing::info!(
        name,
        requests = stats.requests,
        replies = stats.replies,
        unavailable = stats.unavailable,
        malformed = stats.malformed,
        live_nodes = broker.ring().live(now).count(),
        requests_per_s = ((stats.requests - before.requests) as f64 / seconds).round() as u64,
        "broker counters"
    );
}
