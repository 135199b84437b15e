//! # node — one replica of paxos-zmq
//!
//! `node --id N` runs one member of the cluster: it registers with the reference service
//! (and keeps its rank in `data/node-N/node.json`), takes client requests from the
//! broker, agrees with its peers on one order of commands with the sans-I/O Multi-Paxos
//! core ([`paxos::Replica`]) over the ZeroMQ proxy, makes every acceptor decision
//! durable in a write-ahead log before anything that depends on it leaves, applies the
//! decided slots to the [`store::Store`], answers its clients, and serves its status.
//!
//! ## Layout
//! - [`config`]: the flags ([`Config`]), their validation, and the `--crash-at` points.
//! - [`wal`]: the write-ahead log (segments of CRC32C-checked MessagePack records, group
//!   commit on its own thread, truncation behind snapshots, recovery).
//! - [`files`]: `node.json` and `store.json`, written atomically.
//! - [`driver`]: the loop that owns the replica, the store and the sockets.
//! - [`gate`]: which outputs wait for which WAL records (persist before send).
//! - [`pending`]: client requests waiting for their command.
//! - [`clock`]: Berkeley clock synchronisation.
//! - [`http`]: `/status`, `/metrics`, `/livez`, `/readyz`, and a tiny HTTP client for
//!   health checks.
//! - [`metrics`]: the Prometheus metrics.
//!
//! ## On disk (`data/node-N/`)
//! ```text
//! LOCK        held while the node runs (two processes never share a folder)
//! node.json   name, rank, peers' names
//! wal/        segment files of the write-ahead log
//! store.json  applied state (every --snapshot-every-slots / --snapshot-interval, and
//!             at shutdown; never once per commit)
//! ```
//! Recovery = `store.json` (its digest verified) + the WAL records after it: the core is
//! told the snapshot's slot ([`paxos::Persisted::restore_snapshot`]) and hands out only
//! the decided slots after it, so every slot is applied exactly once.
//!
//! ## Invariants kept here
//! - **Persist before send**: an acceptor's promise, round and accepted values are
//!   fsynced before any message or client reply that depends on them (see [`driver`] for
//!   the one message that may leave earlier, and why that is safe).
//! - **In-order apply**: decided slots are applied in the order the core hands them out,
//!   after the records they depend on are durable; `Store::apply` asserts no gap.
//! - **No silent divergence**: a damaged WAL record in the middle of the log or a
//!   store.json whose digest does not match stops the node with an error naming the file
//!   (or, with `--rebuild-from-peers`, the folder is moved aside and the node catches up).
//! - **Bounded**: every queue has a named limit ([`driver::MAX_HELD_GROUPS`],
//!   [`wal::MAX_WAL_QUEUE`], [`pending::MAX_PENDING_REQUESTS`], ...), and the log is
//!   truncated behind snapshots.
//! - **Quorums are fixed**: the Paxos members are ranks `1..=--cluster-size`; the
//!   reference's membership is only used for names and liveness.

pub mod clock;
pub mod config;
pub mod driver;
pub mod files;
pub mod gate;
pub mod http;
pub mod metrics;
pub mod pending;
pub mod wal;

use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use paxos::{Rank, Replica};
use proto::fabric::{RefReply, RefRequest};
use proto::topic;
use store::Store;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use transport::{Kind, Mode, Options, Socket, TransportError};

pub use config::{Config, CrashAt, CrashPoint};
pub use http::{StatusReport, http_get};

use crate::driver::{Driver, Inputs, Senders};
use crate::files::{FileError, Identity};
use crate::metrics::Metrics;
use crate::wal::WalError;

/// How long one registration attempt waits for the reference before asking again.
pub const REGISTER_RETRY: Duration = Duration::from_secs(1);

/// Why the node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(#[from] config::ConfigError),
    /// A socket could not be opened.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The status port could not be bound.
    #[error("cannot serve status on {addr}: {source}")]
    Status {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The WAL cannot be read or written.
    #[error(transparent)]
    WalFile(#[from] WalError),
    /// The WAL writer failed while running.
    #[error("WAL writer failed: {0}")]
    Wal(String),
    /// node.json or store.json cannot be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// Another process runs on this node's folder.
    #[error("{0} is locked: another node process runs on this folder")]
    Locked(String),
    /// The rank is not a member of the configured cluster.
    #[error(
        "rank {rank} is not a member of a cluster of {cluster_size} (ranks 1..={cluster_size})"
    )]
    Rank {
        /// The rank.
        rank: Rank,
        /// `--cluster-size`.
        cluster_size: u32,
    },
    /// The reference refused to register this node.
    #[error("the reference refused to register this node: {0}")]
    Refused(String),
    /// A bug or an unexpected stop of an internal part.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The node's sockets, opened (or bound) before [`run`], so that tests can pick ports.
#[derive(Debug)]
pub struct Sockets {
    /// PUB, connected to the proxy's XSUB frontend.
    pub publisher: Socket,
    /// SUB, connected to the proxy's XPUB backend, subscribed to this node's topics.
    pub subscriber: Socket,
    /// DEALER (identity = node name), connected to the broker backend.
    pub broker: Socket,
    /// DEALER, connected to the reference service.
    pub reference: Socket,
    /// The status port.
    pub status: tokio::net::TcpListener,
}

impl Sockets {
    /// Opens every socket at the addresses of `config`.
    pub async fn open(config: &Config) -> Result<Sockets, NodeError> {
        let name = config.name();
        let mut sub_options = Options::default();
        // The peers' Paxos broadcasts are subscribed to by [`run`], once the rank is
        // known (`topic::from_rank`): a node's own never come back.
        for prefix in [
            topic::REPL,
            topic::ELECTION,
            topic::CLOCK,
            topic::MEMBERSHIP,
        ] {
            sub_options = sub_options.subscribe(prefix);
        }
        sub_options = sub_options.subscribe(topic::to(&name));
        let publisher = Socket::open(
            Kind::Pub,
            Mode::Connect,
            &config.proxy_frontend,
            Options::default(),
        )
        .await?;
        let subscriber =
            Socket::open(Kind::Sub, Mode::Connect, &config.proxy_backend, sub_options).await?;
        let broker = Socket::open(
            Kind::Dealer,
            Mode::Connect,
            &config.broker,
            Options::default().identity(name.clone()),
        )
        .await?;
        let reference = Socket::open(
            Kind::Dealer,
            Mode::Connect,
            &config.reference,
            Options::default(),
        )
        .await?;
        let addr = config.status_addr();
        let status = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Status { addr, source })?;
        Ok(Sockets {
            publisher,
            subscriber,
            broker,
            reference,
            status,
        })
    }
}

/// Runs the node until `shutdown` is cancelled (then flushes the WAL, writes store.json
/// and returns `Ok`), or until an error stops it.
pub async fn run(
    config: Config,
    sockets: Sockets,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    config.validate()?;
    let name = config.name();
    let node_dir = config.node_dir();
    fs::create_dir_all(&node_dir).map_err(|source| FileError::Io {
        path: node_dir.clone(),
        source,
    })?;
    let _lock = lock(&node_dir)?;
    let metrics = Metrics::new();

    // Both halves of every socket stay alive until the end: a socket closes when both
    // are dropped.
    let (publisher, _publisher_rx) = sockets.publisher.split();
    let (sub_tx, sub_rx) = sockets.subscriber.split();
    let (broker_tx, broker_rx) = sockets.broker.split();
    let (reference_tx, mut reference_rx) = sockets.reference.split();
    // Keep the SUB's sending half (subscriptions; dropping it would close the socket).
    let sub_control = sub_tx;

    // Who we are: node.json, or a first registration with the reference.
    let identity_path = node_dir.join("node.json");
    let identity = match Identity::load(&identity_path)? {
        Some(identity) => {
            tracing::info!(rank = identity.rank, "rank from node.json");
            identity
        }
        None => {
            let Some(identity) =
                register(&config, &reference_tx, &mut reference_rx, &shutdown).await?
            else {
                return Ok(());
            };
            identity.save(&identity_path)?;
            identity
        }
    };
    let rank = identity.rank;
    if rank == 0 || rank > config.cluster_size {
        return Err(NodeError::Rank {
            rank,
            cluster_size: config.cluster_size,
        });
    }
    for prefix in topic::peer_broadcasts(rank, config.cluster_size) {
        sub_control.subscribe(prefix).await?;
    }

    // State: store.json, then the WAL after it.
    let (store, recovery) = match recover(&config, &name) {
        Ok(state) => state,
        Err(error) if config.rebuild_from_peers && is_corruption(&error) => {
            let aside = move_aside(&node_dir)?;
            tracing::warn!(
                %error,
                moved_to = %aside.display(),
                "--rebuild-from-peers: state moved aside; catching up from the peers"
            );
            recover(&config, &name)?
        }
        Err(error) => return Err(error),
    };
    if let Some(torn) = &recovery.torn {
        tracing::warn!(
            file = %torn.path.display(),
            offset = torn.offset,
            discarded_bytes = torn.discarded_bytes,
            reason = %torn.reason,
            "cut off a torn record at the end of the WAL"
        );
    }
    let mut persisted = recovery.persisted.clone();
    if store.applied_slot() > 0 {
        persisted.restore_snapshot(store.applied_slot(), std::sync::Arc::new(store.snapshot()));
    }
    tracing::info!(
        node = %name,
        rank,
        snapshot_slot = store.applied_slot(),
        wal_records = recovery.records,
        wal_segments = recovery.segments.len(),
        promised = %persisted.promised,
        decided_in_log = persisted.decided.len(),
        "recovered"
    );
    let writer = wal::WalWriter::open(&node_dir.join("wal"), &recovery, config.wal_segment_bytes)?;
    let wal_handle = wal::spawn(writer, metrics.clone())?;

    let seed = config.seed.unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ (u64::from(config.id) << 48)
    });
    let replica = Replica::new(config.paxos_config(rank, seed), persisted)
        .map_err(|e| NodeError::Config(config::ConfigError::Paxos(e)))?;

    let (status_tx, status_rx) = mpsc::channel(http::MAX_STATUS_QUERIES);
    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(
        sockets.status,
        status_tx,
        metrics.clone(),
        http_stop.clone(),
    ));

    let driver = Driver::new(
        config,
        rank,
        replica,
        store,
        identity,
        Senders {
            publisher,
            broker: broker_tx,
            reference: reference_tx,
        },
        wal_handle.requests.clone(),
        metrics,
    );
    let inputs = Inputs {
        subscriber: sub_rx,
        broker: broker_rx,
        reference: reference_rx,
        status: status_rx,
        wal_progress: wal_handle.progress.clone(),
    };
    tracing::info!("running");
    let result = driver.run(inputs, shutdown).await;
    http_stop.cancel();
    let _ = http_task.await;
    // Closing the queue ends the writer thread once it has written what it holds.
    drop(wal_handle.requests);
    let _ = tokio::task::spawn_blocking(move || wal_handle.thread.join()).await;
    result
}

/// Takes the folder's lock file, so that two processes never write one WAL.
fn lock(node_dir: &Path) -> Result<File, NodeError> {
    let path = node_dir.join("LOCK");
    let file = File::create(&path).map_err(|source| FileError::Io {
        path: path.clone(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(NodeError::Locked(node_dir.display().to_string())),
    }
}

/// Registers with the reference until it answers (or `shutdown`: `None`).
async fn register(
    config: &Config,
    sender: &transport::Sender,
    receiver: &mut transport::Receiver,
    shutdown: &CancellationToken,
) -> Result<Option<Identity>, NodeError> {
    let request = proto::encode(&RefRequest::Register {
        node: config.name(),
        status_addr: config.status_addr().to_string(),
    })
    .map_err(|e| NodeError::Internal(e.to_string()))?;
    let mut warned = false;
    loop {
        let _ = sender.try_send(vec![request.clone()]);
        let deadline = Instant::now() + REGISTER_RETRY;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let frames = tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                _ = tokio::time::sleep(remaining) => break,
                frames = receiver.recv() => frames,
            };
            let Some(frames) = frames else {
                return Err(NodeError::Internal("reference socket closed".to_owned()));
            };
            let Some(body) = frames.last().filter(|_| frames.len() == 1) else {
                continue;
            };
            match proto::decode::<RefReply>(body) {
                Ok(RefReply::Registered { rank, members }) => {
                    let peers = members
                        .into_iter()
                        .filter(|m| m.rank != rank && m.rank >= 1 && m.rank <= config.cluster_size)
                        .map(|m| (m.rank, m.node))
                        .collect();
                    tracing::info!(rank, "registered with the reference");
                    return Ok(Some(Identity {
                        node: config.name(),
                        rank,
                        peers,
                    }));
                }
                Ok(RefReply::Error(error)) => return Err(NodeError::Refused(error.to_string())),
                Ok(_) | Err(_) => continue,
            }
        }
        if !warned {
            tracing::warn!(
                reference = %config.reference,
                "no answer from the reference yet; a first start needs it for a rank"
            );
            warned = true;
        }
    }
}

/// Loads store.json and reads the WAL.
fn recover(config: &Config, name: &str) -> Result<(Store, wal::Recovery), NodeError> {
    let node_dir = config.node_dir();
    let store = files::load_store(&node_dir.join("store.json"), name, config.store_config())?
        .map_or_else(|| Store::try_new(config.store_config()), Ok)
        .map_err(|e| NodeError::Config(config::ConfigError::Store(e)))?;
    let recovery = wal::recover(&node_dir.join("wal"))?;
    Ok((store, recovery))
}

fn is_corruption(error: &NodeError) -> bool {
    matches!(
        error,
        NodeError::WalFile(WalError::Corrupt { .. }) | NodeError::File(FileError::Corrupt { .. })
    )
}

/// Moves `wal/` and `store.json` into `corrupt-<unix ms>/` (kept for inspection; node.json
/// stays: the rank is still ours).
fn move_aside(node_dir: &Path) -> Result<std::path::PathBuf, NodeError> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let aside = node_dir.join(format!("corrupt-{stamp}"));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FileError::Io { path, source }
    };
    fs::create_dir_all(&aside).map_err(io(&aside))?;
    for name in ["wal", "store.json"] {
        let from = node_dir.join(name);
        if from.exists() {
            fs::rename(&from, aside.join(name)).map_err(io(&from))?;
        }
    }
    wal::sync_dir(node_dir)?;
    Ok(aside)
}
