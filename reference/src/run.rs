//! The loop: the only code that owns the reference's sockets, its clock and its file.
//! It takes requests a batch at a time, saves the registry before the replies that
//! depend on it leave, publishes membership events and answers the status port.

use std::time::Instant;

use proto::report::ReferenceReport;
use proto::seal::Keyring;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use transport::{Kind, Mode, Options, Socket, TransportError};

use crate::registry::{self, Now, Registry};
use crate::store::{self, Store, StoreError};
use crate::{Config, RECV_BATCH_MAX, Reference, ReferenceError, SAVE_RETRY_INTERVAL, Stats};

/// What [`run`] serves on: the ROUTER for requests, the PUB for membership events, the
/// HTTP status port.
#[derive(Debug)]
pub struct Sockets {
    /// ROUTER, bound (see [`bind`]).
    pub router: Socket,
    /// PUB, connected to the proxies.
    pub publisher: Socket,
    /// The status port.
    pub status: TcpListener,
}

/// Binds the ROUTER for requests and connects the PUB for membership events.
pub async fn bind(
    endpoint: &str,
    proxy_frontend: &str,
) -> Result<(Socket, Socket), TransportError> {
    let options = Options::default().peer_address();
    let router = Socket::open(Kind::Router, Mode::Bind, endpoint, options).await?;
    let publisher =
        Socket::open(Kind::Pub, Mode::Connect, proxy_frontend, Options::default()).await?;
    Ok((router, publisher))
}

/// `/readyz`: whoever answers runs on a loaded registry.
fn is_ready(_: &ReferenceReport) -> bool {
    true
}

/// Runs the reference on its [`Sockets`] until `shutdown` is cancelled; returns the counters. Every change is written
/// to `store` before the replies and the event that depend on it are sent.
pub async fn run(
    sockets: Sockets,
    registry: Registry,
    store: Store,
    config: Config,
    keys: Keyring,
    shutdown: CancellationToken,
) -> Result<Stats, ReferenceError> {
    config.validate()?;
    let Sockets {
        router,
        publisher,
        status,
    } = sockets;
    let started = Instant::now();
    let endpoint = router.endpoint().to_owned();
    tracing::info!(
        endpoint,
        proxy = publisher.endpoint(),
        status = %status.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        registry = %store.path().display(),
        members = registry.members(Now::system()).len(),
        expiry_timeout_ms = config.expiry_timeout.as_millis() as u64,
        "reference running"
    );
    let (router_tx, mut router_rx) = router.split();
    let (publisher_tx, _publisher_rx) = publisher.split();
    let mut reference = Reference::new(registry, &config, keys);
    let (port, mut queries) = service::http::status_port(reference.metrics.registry(), is_ready);
    let http = service::http::spawn(status, port, &shutdown);
    reference.update_gauges(Now::system());
    let mut replies = Vec::with_capacity(RECV_BATCH_MAX);
    let mut expire_tick = tokio::time::interval(config.expire_interval());
    expire_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut publish_tick = tokio::time::interval(config.publish_interval);
    publish_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Armed while the last save failed.
    let retry = tokio::time::sleep(SAVE_RETRY_INTERVAL);
    tokio::pin!(retry);

    loop {
        let mut publish = false;
        let mut retry_due = false;
        let unsaved = reference.save_error().is_some();
        tokio::select! {
            () = shutdown.cancelled() => break,
            message = router_rx.recv() => {
                let Some(message) = message else {
                    return Err(TransportError::Closed.into());
                };
                // One at a time, each with the address it came from (named in the log
                // when it fails authentication); what waits joins this turn.
                let now = Now::system();
                let mut next = Some(message);
                while let Some(message) = next.take() {
                    let address = router_rx.last_peer_address();
                    replies.extend(reference.take(message, now, address.as_deref()));
                    if replies.len() < RECV_BATCH_MAX {
                        next = router_rx.try_recv();
                    }
                }
            }
            // Wakes the loop to notice silent members soon (the expiry itself is below).
            _ = expire_tick.tick() => {}
            _ = publish_tick.tick() => publish = true,
            () = &mut retry, if unsaved => retry_due = true,
            Some(query) = queries.recv() => {
                query.answer(reference.report(&endpoint, started, Now::system()));
                continue;
            }
        }
        // Liveness as of now: a member that fell silent is gone in what is persisted,
        // answered and published next, with a new epoch.
        let now = Now::system();
        reference.expire(now);
        // Persist before anything that depends on the change leaves the process.
        let changed = reference.registry.take_dirty();
        if changed || retry_due {
            let persisted = reference.registry.persisted();
            match save(&store, persisted.clone()).await {
                Ok(()) => reference.saved(&persisted),
                Err(error) => {
                    // The replies below then say `unavailable` for the names not saved;
                    // the rest of the service goes on from memory.
                    reference.save_failed(&error, now.instant);
                    retry
                        .as_mut()
                        .reset(tokio::time::Instant::now() + SAVE_RETRY_INTERVAL);
                }
            }
            publish |= changed;
        }
        // The loop turns at least every expiry tick: the gauges are never older than that.
        reference.update_gauges(now);
        for pending in replies.drain(..) {
            if let Some(message) = reference.answer(pending, now) {
                router_tx.send(message).await?;
            }
        }
        if publish {
            match reference.event_frames(now) {
                Ok(frames) => {
                    // A PUB never blocks: with the proxy away, libzmq drops the event and
                    // the next interval sends it again.
                    publisher_tx.send(frames).await?;
                    reference.stats.published += 1;
                    reference.metrics.events.inc();
                }
                Err(e) => tracing::error!(error = %e, "cannot encode the membership event"),
            }
        }
    }
    http.stop().await;
    let stats = reference.stats();
    tracing::info!(?stats, "reference stopped");
    Ok(stats)
}

/// Writes the registry on a blocking thread (an fsync may take a while).
async fn save(store: &Store, persisted: registry::Persisted) -> Result<(), StoreError> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.save(&persisted)).await {
        Ok(result) => result,
        Err(join) => Err(StoreError::Io {
            path: std::path::PathBuf::from(store::FILE_NAME),
            source: std::io::Error::other(join.to_string()),
        }),
    }
}
