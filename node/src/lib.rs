//! # node — one replica of paxos-zmq
//!
//! `node --id N` runs one member of the cluster: it agrees with its peers on one order of
//! client commands with the sans-I/O Multi-Paxos core ([`paxos::Replica`]), keeps what
//! its acceptor promised and accepted in a write-ahead log, applies the decided slots to
//! the [`store::Store`], answers its clients, and shows its state.
//!
//! ## A tour of the rooms
//! The node is a loop that owns the core and the store, and rooms around it, each with
//! one concern, its own state and its own tests:
//!
//! ```text
//!                      ┌──────────── driver (the loop: route, step, ready, carry out) ───────────┐
//!   inputs ──events──▶ │  paxos::Replica (decides what may leave before which fsync)   store    │
//!                      └──┬────────┬─────────┬───────────┬──────────┬──────────┬──────────┬─────┘
//!                       peers   clients     disk      reference    clock    snapshots   report
//!                      (proxy)  (broker)  (WAL thread)                    (store.json) (/status)
//! ```
//!
//! - [`boot`]: before the loop — lock the folder, learn who we are (`node.json`, or a
//!   first registration with the reference), recover `store.json` and the WAL (or move a
//!   corrupt state aside with `--rebuild-from-peers`).
//! - [`inputs`]: what the loop waits on, in which order, and back-pressure while the core
//!   holds too many turns for the disk.
//! - [`driver`]: the loop. It routes each event to its room, steps peer messages and
//!   client commands into the core, and carries out each `Ready`: messages to the
//!   peers, decided slots to the store, answers to the clients, records to the disk. It
//!   never holds anything back itself: the core's gate ([`paxos::gate`]) already did.
//! - [`peers`]: publishing and topics on the proxy; checking and decoding what the peers
//!   publish; the peers' names.
//! - [`clients`]: the broker link — READY and heartbeats, requests checked and
//!   remembered ([`pending`]) until their command is applied, answers.
//! - [`logins`]: chat logins — wrong passwords bounded, the password checked or hashed
//!   (Argon2id) off the loop, and the `Register` / `OpenSession` proposed instead.
//! - [`disk`]: the groups of records to the WAL writer, durability back to the core;
//!   [`wal`] is the log itself (format, recovery, the writer, group commit).
//! - [`reference`]: registration and heartbeats at the reference service (off the data
//!   path).
//! - [`clock`]: Berkeley clock synchronisation.
//! - [`snapshots`]: when to write `store.json` ([`files`]), off the loop.
//! - [`report`] and [`http`]: the `/status` report, and the status port (`/status`,
//!   `/metrics` from [`metrics`], `/livez`, `/readyz`).
//! - [`observe`]: role changes and phase timings, for people and metrics.
//! - [`crash`]: the `--crash-at` points of the failure drills.
//! - [`config`], [`sockets`], [`error`]: flags, sockets, and why a node stops.
//!
//! ## On disk (`data/node-N/`)
//! ```text
//! LOCK        held while the node runs (two processes never share a folder)
//! node.json   name, rank, peers' names
//! wal/        segment files of the write-ahead log
//! store.json  applied state (every --snapshot-every-slots / --snapshot-interval, and
//!             at shutdown; never once per commit)
//! ```
//!
//! ## Invariants kept here
//! - **Persist before send**: nothing leaves that depends on a record before the record
//!   is durable — the core's gate holds it until the node reports the record's group
//!   durable ([`paxos::Replica::persisted`]), and the node reports only what the WAL
//!   writer fsynced.
//! - **In-order apply**: decided slots are applied in the order the core hands them out;
//!   `Store::apply` asserts no gap.
//! - **No silent divergence**: a damaged WAL record in the middle of the log or a
//!   store.json whose digest does not match stops the node with an error naming the file
//!   (or, with `--rebuild-from-peers`, the folder is moved aside and the node catches up).
//! - **Bounded**: every queue has a named limit ([`paxos::MAX_HELD_GROUPS`],
//!   [`wal::MAX_WAL_QUEUE`], [`pending::MAX_PENDING_REQUESTS`],
//!   [`inputs::MAX_DRAIN_PER_TURN`], [`logins::MAX_LOGINS_IN_FLIGHT`], ...), and the log is truncated behind snapshots.
//! - **Quorums are fixed**: the Paxos members are ranks `1..=--cluster-size`; the
//!   reference's membership is only used for names and liveness.

pub mod auth;
pub mod boot;
pub mod clients;
pub mod clock;
pub mod config;
pub mod console;
pub mod crash;
pub mod disk;
pub mod driver;
pub mod error;
pub mod files;
pub mod http;
pub mod inputs;
pub mod logins;
pub mod metrics;
pub mod observe;
pub mod peers;
pub mod pending;
pub mod proxies;
pub mod reference;
pub mod report;
pub mod snapshots;
pub mod sockets;
pub mod wal;

use std::time::{SystemTime, UNIX_EPOCH};

use paxos::Replica;
use proto::seal::Keyring;
use proto::topic;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use crash::{CrashAt, CrashPoint};
pub use error::NodeError;
pub use http::{StatusReport, http_get};
pub use sockets::Sockets;

use crate::auth::Seal;
use crate::clients::Clients;
use crate::clock::ClockSync;
use crate::crash::Crasher;
use crate::disk::Disk;
use crate::driver::{Driver, Rooms};
use crate::inputs::{Inputs, Timers};
use crate::logins::Logins;
use crate::metrics::Metrics;
use crate::observe::Observer;
use crate::peers::Peers;
use crate::reference::ReferenceLink;
use crate::report::Reporter;
use crate::snapshots::Snapshots;

/// How long the leader collects clock readings after a poll.
pub const CLOCK_COLLECT: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs the node until `shutdown` is cancelled (then flushes the WAL, writes store.json
/// and returns `Ok`), or until an error stops it.
pub async fn run(
    config: Config,
    sockets: Sockets,
    keys: Keyring,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    config.validate()?;
    let metrics = Metrics::new();
    let seal = Seal::new(keys, metrics.clone());
    tracing::info!(key_ids = ?seal.report().key_ids, "cluster key loaded");
    let (mut links, status) = sockets.split();
    let reference = (&links.reference_tx, &mut links.reference_rx);
    let Some(booted) = boot::boot(&config, reference, &seal, &shutdown).await? else {
        return Ok(());
    };
    let _lock = booted.lock;
    let rank = booted.identity.rank;
    // A node's own broadcasts never come back: it subscribes to its peers' ranks only.
    for prefix in topic::peer_broadcasts(rank, config.cluster_size) {
        links.subscriptions.subscribe(prefix).await?;
    }
    let writer = wal::WalWriter::open(
        &config.node_dir().join("wal"),
        &booted.recovery,
        config.wal_segment_bytes,
    )?;
    let wal = wal::spawn(writer, metrics.clone(), config.wal_loop_commit)?;
    let replica = new_replica(&config, rank, booted.persisted)?;

    let (rooms, inputs, status_queries) = wire(
        &config,
        booted.identity,
        booted.store.applied_slot(),
        links,
        &wal,
        &seal,
        &metrics,
    );
    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(
        status,
        status_queries,
        metrics.clone(),
        http_stop.clone(),
    ));
    tracing::info!("running");
    let driver = Driver::new(config, replica, booted.store, rooms, metrics);
    let result = driver.run(inputs, shutdown).await;
    http_stop.cancel();
    let _ = http_task.await;
    // Closing the queue ends the writer thread once it has written what it holds (the
    // driver's own sender went with it).
    drop(wal.requests);
    let _ = tokio::task::spawn_blocking(move || wal.thread.join()).await;
    result
}

/// The core, from what the WAL and store.json hold, with this start's seed and
/// incarnation.
fn new_replica(
    config: &Config,
    rank: paxos::Rank,
    persisted: paxos::Persisted,
) -> Result<Replica, NodeError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let seed = config.seed.unwrap_or(nanos ^ (u64::from(config.id) << 48));
    // This start's own, even under a fixed --seed (read batch ids start from it).
    let incarnation = nanos / 1000;
    Replica::new(config.paxos_config(rank, seed, incarnation), persisted)
        .map_err(|e| NodeError::Config(config::ConfigError::Paxos(e)))
}

/// The rooms the driver routes between, the inputs its loop waits on, and the sending
/// end of one of them, the status queries' queue, for the HTTP server.
fn wire(
    config: &Config,
    identity: files::Identity,
    applied_slot: paxos::Slot,
    links: sockets::Links,
    wal: &wal::WalHandle,
    seal: &Seal,
    metrics: &Metrics,
) -> (Rooms, Inputs, mpsc::Sender<http::StatusQuery>) {
    let node_dir = config.node_dir();
    let name = identity.node.clone();
    let rank = identity.rank;
    let (snapshots, written) = Snapshots::new(
        node_dir.join("store.json"),
        name.clone(),
        applied_slot,
        config.snapshot_every_slots,
        config.snapshot_interval,
        metrics.clone(),
    );
    let (logins, checked_logins) = Logins::new(metrics.clone());
    let (status_tx, status_rx) = mpsc::channel(http::MAX_STATUS_QUERIES);
    let rooms = Rooms {
        logins,
        peers: Peers::new(
            links.publishers,
            identity,
            node_dir.join("node.json"),
            config.cluster_size,
            seal.clone(),
            metrics.clone(),
        ),
        clients: Clients::new(
            transport::endpoints(&config.broker)
                .map(str::to_owned)
                .zip(links.broker_tx)
                .collect(),
            name.clone(),
            config.max_pending_requests,
            seal.clone(),
            metrics.clone(),
        ),
        disk: Disk::new(wal.requests.clone(), wal.loop_commit.clone()),
        reference: ReferenceLink::new(
            links.reference_tx,
            name.clone(),
            rank,
            config.advertised_status_addr(),
            config.reference_heartbeat,
            seal.clone(),
            metrics.clone(),
        ),
        clock: ClockSync::new(&name, config.clock_skew_ms, CLOCK_COLLECT),
        snapshots,
        reporter: Reporter::new(
            config.id,
            name,
            config.tick.as_millis() as u64,
            config.election_timeout_ticks,
        ),
        observer: Observer::new(metrics.clone()),
        crasher: Crasher::new(config.crash_at),
    };
    let inputs = Inputs {
        subscriber: links.subscriber,
        brokers: links.broker_rx,
        reference: links.reference_rx,
        status: status_rx,
        wal_progress: wal.progress.clone(),
        snapshots: written,
        logins: checked_logins,
        timers: Timers::new(
            config.tick,
            config.broker_heartbeat,
            config.reference_heartbeat,
            config.clock_interval,
        ),
    };
    (rooms, inputs, status_tx)
}
