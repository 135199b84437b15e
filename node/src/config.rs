//! The node's configuration: one clap struct (every flag has an env-var twin) and its
//! [`Config::validate`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use paxos::{MAX_PENDING_COMMANDS, MAX_WINDOW_SLOTS, Rank, Ticks};
use proto::limits::{MAX_BATCH_BYTES, MAX_BATCH_COMMANDS, MAX_MEMBERS};

use crate::crash::CrashAt;
use crate::wal::{DEFAULT_SEGMENT_BYTES, MIN_SEGMENT_BYTES};

/// Base of the default status port: node N serves HTTP on `127.0.0.1:7000+N`.
pub const STATUS_PORT_BASE: u16 = 7000;
/// Largest node id (`--id`): names and ports must stay in range.
pub const MAX_NODE_ID: u32 = 999;
/// Shortest tick accepted: below it the timer costs more than the work.
pub const MIN_TICK: Duration = Duration::from_millis(1);
/// Longest tick accepted: above it failure detection is uselessly slow.
pub const MAX_TICK: Duration = Duration::from_secs(1);
/// Most brokers, and most proxies, one node connects to.
pub const MAX_FABRIC_PEERS: usize = 8;

fn duration(text: &str) -> Result<Duration, String> {
    service::parse_duration(text).map_err(|e| e.to_string())
}

/// `node --id N`: one replica of the cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// This node's id: its name is `node-<id>`, its folder `<data-dir>/node-<id>`.
    #[arg(long, env = "NODE_ID", value_parser = clap::value_parser!(u32).range(1..=MAX_NODE_ID as i64))]
    pub id: u32,
    /// The reference service (ROUTER) that hands out ranks.
    #[arg(long, env = "REFERENCE", default_value = "tcp://127.0.0.1:5559")]
    pub reference: String,
    /// The proxies' XSUB frontends, separated by commas, in the same order as
    /// `--proxy-backend`: this node publishes through one of them at a time and moves to
    /// the next when its own probes stop coming back.
    #[arg(
        long,
        env = "PROXY_FRONTEND",
        default_value = "tcp://127.0.0.1:5557,tcp://127.0.0.1:5567"
    )]
    pub proxy_frontend: String,
    /// The proxies' XPUB backends, separated by commas: this node's SUB listens to all.
    #[arg(
        long,
        env = "PROXY_BACKEND",
        default_value = "tcp://127.0.0.1:5558,tcp://127.0.0.1:5568"
    )]
    pub proxy_backend: String,
    /// The brokers' backends (ROUTER), separated by commas: this node takes client
    /// requests from every one (a DEALER each) and answers through the one a request
    /// came from.
    #[arg(
        long,
        env = "BROKER_BACKEND",
        default_value = "tcp://127.0.0.1:5556,tcp://127.0.0.1:5566"
    )]
    pub broker: String,
    /// Folder of every node's state; this node uses `<data-dir>/node-<id>`.
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Where the web console (`/`), `/status`, `/metrics`, `/livez` and `/readyz` are
    /// served [default: 127.0.0.1:7000+id].
    #[arg(long, env = "STATUS_ADDR")]
    pub status_addr: Option<SocketAddr>,
    /// Where the other nodes reach this node's status port (the web console asks them
    /// there), as registered with the reference, e.g. `node1:7001` in a container
    /// [default: the status address, or `node-N:port` when it binds 0.0.0.0].
    #[arg(long, env = "ADVERTISE_STATUS_ADDR")]
    pub advertise_status_addr: Option<String>,
    /// Number of Paxos members: ranks 1..=N, and a quorum is a majority of N. Fixed:
    /// the reference's membership only tells who is alive and their names.
    #[arg(long, env = "CLUSTER_SIZE", default_value_t = 3)]
    pub cluster_size: u32,
    /// Length of one tick of the Paxos core.
    #[arg(long, env = "TICK", default_value = "10ms", value_parser = duration)]
    pub tick: Duration,
    /// Heartbeat interval between nodes, in ticks.
    #[arg(long, env = "HEARTBEAT_TICKS", default_value_t = 5)]
    pub heartbeat_ticks: Ticks,
    /// A leader silent this long is presumed dead, in ticks; the highest-ranked live
    /// follower then runs at once, so a dead leader is replaced after about this long
    /// (20 ticks of 10 ms, four heartbeats: see the failover benchmark in the README).
    /// A node that starts listens this long before it may run.
    #[arg(long, env = "ELECTION_TIMEOUT_TICKS", default_value_t = 20)]
    pub election_timeout_ticks: Ticks,
    /// Unanswered Paxos requests are sent again this often, in ticks.
    #[arg(long, env = "RETRANSMIT_TICKS", default_value_t = 10)]
    pub retransmit_ticks: Ticks,
    /// A client command that finds no leader for this long is refused (unavailable),
    /// in ticks.
    #[arg(long, env = "PENDING_TIMEOUT_TICKS", default_value_t = 300)]
    pub pending_timeout_ticks: Ticks,
    /// Slots the leader keeps in flight at once. A small window makes the commands that
    /// arrive during a round trip wait for the next slot, so batches grow with the load
    /// and each command costs fewer messages and fsyncs (measured at 64 clients: 2 slots
    /// did ~1.7x the writes/s of 32 with a third of the p99, and 1 slot 10–20 % more than
    /// 2). Followers time their forwards to it: they send them with their `Accepted`,
    /// which is when a leader with a window of 1 cuts its next batch.
    #[arg(long, env = "WINDOW_SLOTS", default_value_t = 1)]
    pub window_slots: usize,
    /// Most commands in one slot.
    #[arg(long, env = "MAX_BATCH_COMMANDS", default_value_t = MAX_BATCH_COMMANDS)]
    pub max_batch_commands: usize,
    /// Decided slots kept in the log behind a snapshot, so that a peer lagging a little
    /// catches up from the log rather than by a snapshot transfer.
    #[arg(long, env = "LOG_RETAIN_SLOTS", default_value_t = 1000)]
    pub log_retain_slots: u64,
    /// Write store.json after this many applied slots...
    #[arg(long, env = "SNAPSHOT_EVERY_SLOTS", default_value_t = 10_000)]
    pub snapshot_every_slots: u64,
    /// ... or this long after the last one, if anything was applied since (and the first
    /// one as soon as a slot is applied, when the node starts without a store.json).
    #[arg(long, env = "SNAPSHOT_INTERVAL", default_value = "5s", value_parser = duration)]
    pub snapshot_interval: Duration,
    /// A WAL segment past this size is closed and a new one begun.
    #[arg(long, env = "WAL_SEGMENT_BYTES", default_value_t = DEFAULT_SEGMENT_BYTES)]
    pub wal_segment_bytes: u64,
    /// Commit a WAL group on the node's loop while the writer thread is idle (the loop
    /// blocks for the fsync instead of waking the thread and being woken back: a lone
    /// client's write skips two wake-ups). Groups handed over while the thread works, on
    /// a slow disk (last fsync over 10 ms), or that would close or grow a segment go to
    /// the thread. `--wal-loop-commit false` sends every group to the thread.
    #[arg(long, env = "WAL_LOOP_COMMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub wal_loop_commit: bool,
    /// READY/heartbeat interval towards the broker.
    #[arg(long, env = "BROKER_HEARTBEAT", default_value = "200ms", value_parser = duration)]
    pub broker_heartbeat: Duration,
    /// Heartbeat interval towards the reference service.
    #[arg(long, env = "REFERENCE_HEARTBEAT", default_value = "1s", value_parser = duration)]
    pub reference_heartbeat: Duration,
    /// How often the leader runs a Berkeley clock round.
    #[arg(long, env = "CLOCK_INTERVAL", default_value = "30s", value_parser = duration)]
    pub clock_interval: Duration,
    /// Skews this node's wall clock by this many ms (drills of the clock
    /// synchronisation; never touches the system clock).
    #[arg(
        long,
        env = "CLOCK_SKEW_MS",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub clock_skew_ms: i64,
    /// Chat messages kept per channel (same on every node).
    #[arg(long, env = "HISTORY_PER_CHANNEL", default_value_t = store::DEFAULT_HISTORY_PER_CHANNEL)]
    pub history_per_channel: usize,
    /// Private messages kept per user (same on every node).
    #[arg(long, env = "HISTORY_PER_USER", default_value_t = store::DEFAULT_HISTORY_PER_USER)]
    pub history_per_user: usize,
    /// Client sessions kept for exactly-once replies (same on every node).
    #[arg(long, env = "MAX_SESSIONS", default_value_t = store::DEFAULT_MAX_SESSIONS)]
    pub max_sessions: usize,
    /// Open chat sessions (logins) kept (same on every node); the oldest login is
    /// evicted beyond it and its credential stops working.
    #[arg(long, env = "MAX_CHAT_SESSIONS", default_value_t = store::DEFAULT_MAX_CHAT_SESSIONS)]
    pub max_chat_sessions: usize,
    /// Client requests waiting here for their command at once; a request beyond it is
    /// answered `overloaded` at once (it took no effect: the client may retry).
    #[arg(long, env = "MAX_PENDING_REQUESTS", default_value_t = crate::pending::MAX_PENDING_REQUESTS)]
    pub max_pending_requests: usize,
    /// Registered chat users (same on every node); a registration beyond it is refused.
    #[arg(long, env = "MAX_USERS", default_value_t = store::DEFAULT_MAX_USERS)]
    pub max_users: usize,
    /// Exit abruptly (abort) at a protocol point, to reproduce a failure exactly:
    /// `POINT` or `POINT:N` (the N-th time it is reached). Points: after-promise,
    /// after-accept-persist, after-accept-send, after-decide, before-reply,
    /// with-pending-request, after-snapshot.
    #[arg(long, env = "CRASH_AT")]
    pub crash_at: Option<CrashAt>,
    /// When the WAL or store.json is corrupt: move them aside (`corrupt-<time>/`) and
    /// catch up from the peers instead of refusing to start. The node forgets what its
    /// acceptor promised and accepted, as with a replaced disk: use it only while the
    /// other members are healthy (a value chosen with this node's vote and not yet
    /// learned elsewhere could otherwise be lost).
    #[arg(long, env = "REBUILD_FROM_PEERS")]
    pub rebuild_from_peers: bool,
    /// Seed of the election back-off [default: derived from the id and the time].
    #[arg(long, env = "SEED")]
    pub seed: Option<u64>,
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A value out of its range.
    #[error("{field} is {value}, must be in {range}")]
    Range {
        /// The flag.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        range: String,
    },
    /// The Paxos core refuses the timings or bounds.
    #[error("{0}")]
    Paxos(#[from] paxos::ConfigError),
    /// The store refuses its bounds.
    #[error("{0}")]
    Store(#[from] store::ConfigError),
}

impl Config {
    /// The node's name: `node-<id>`.
    pub fn name(&self) -> String {
        format!("node-{}", self.id)
    }

    /// This node's folder.
    pub fn node_dir(&self) -> PathBuf {
        self.data_dir.join(self.name())
    }

    /// The status address, defaulted from the id.
    pub fn status_addr(&self) -> SocketAddr {
        self.status_addr.unwrap_or_else(|| {
            let port = STATUS_PORT_BASE + self.id as u16;
            SocketAddr::from(([127, 0, 0, 1], port))
        })
    }

    /// Where the other nodes (and their web consoles) reach this node's status port, as
    /// registered with the reference: `--advertise-status-addr`, else the status address,
    /// or `node-N:port` when it binds every interface (`0.0.0.0`).
    pub fn advertised_status_addr(&self) -> String {
        if let Some(advertised) = &self.advertise_status_addr {
            return advertised.clone();
        }
        let addr = self.status_addr();
        if addr.ip().is_unspecified() {
            format!("{}:{}", self.name(), addr.port())
        } else {
            addr.to_string()
        }
    }

    /// The store's bounds.
    pub fn store_config(&self) -> store::StoreConfig {
        store::StoreConfig {
            history_per_channel: self.history_per_channel,
            history_per_user: self.history_per_user,
            max_sessions: self.max_sessions,
            max_chat_sessions: self.max_chat_sessions,
            max_users: self.max_users,
        }
    }

    /// The Paxos core's configuration for `rank`.
    pub fn paxos_config(&self, rank: Rank, seed: u64, incarnation: u64) -> paxos::Config {
        paxos::Config {
            rank,
            members: (1..=self.cluster_size).collect(),
            heartbeat_interval_ticks: self.heartbeat_ticks,
            election_timeout_ticks: self.election_timeout_ticks,
            retransmit_ticks: self.retransmit_ticks,
            max_batch_commands: self.max_batch_commands,
            max_batch_bytes: MAX_BATCH_BYTES,
            window_slots: self.window_slots,
            max_pending_commands: MAX_PENDING_COMMANDS.min(8192),
            pending_timeout_ticks: self.pending_timeout_ticks,
            log_retain_slots: self.log_retain_slots,
            seed,
            incarnation,
        }
    }

    /// Checks every field and the relations between them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let range = |field, value: String, range: String| ConfigError::Range {
            field,
            value,
            range,
        };
        if self.cluster_size == 0 || self.cluster_size as usize > MAX_MEMBERS {
            return Err(range(
                "cluster-size",
                self.cluster_size.to_string(),
                format!("1..={MAX_MEMBERS}"),
            ));
        }
        if !(MIN_TICK..=MAX_TICK).contains(&self.tick) {
            return Err(range(
                "tick",
                format!("{:?}", self.tick),
                format!("{MIN_TICK:?}..={MAX_TICK:?}"),
            ));
        }
        if self.window_slots == 0 || self.window_slots > MAX_WINDOW_SLOTS {
            return Err(range(
                "window-slots",
                self.window_slots.to_string(),
                format!("1..={MAX_WINDOW_SLOTS}"),
            ));
        }
        if self.max_pending_requests == 0
            || self.max_pending_requests > crate::pending::MAX_PENDING_REQUESTS
        {
            return Err(range(
                "max-pending-requests",
                self.max_pending_requests.to_string(),
                format!("1..={}", crate::pending::MAX_PENDING_REQUESTS),
            ));
        }
        if self.snapshot_every_slots == 0 {
            return Err(range(
                "snapshot-every-slots",
                "0".to_owned(),
                "1..".to_owned(),
            ));
        }
        if self.wal_segment_bytes < MIN_SEGMENT_BYTES {
            return Err(range(
                "wal-segment-bytes",
                self.wal_segment_bytes.to_string(),
                format!("{MIN_SEGMENT_BYTES}.."),
            ));
        }
        for (field, value) in [
            ("broker-heartbeat", self.broker_heartbeat),
            ("reference-heartbeat", self.reference_heartbeat),
            ("clock-interval", self.clock_interval),
            ("snapshot-interval", self.snapshot_interval),
        ] {
            if value < Duration::from_millis(10) {
                return Err(range(field, format!("{value:?}"), "10ms..".to_owned()));
            }
        }
        for (field, list) in [
            ("broker", &self.broker),
            ("proxy-frontend", &self.proxy_frontend),
            ("proxy-backend", &self.proxy_backend),
        ] {
            let count = transport::endpoints(list).count();
            if count == 0 || count > MAX_FABRIC_PEERS {
                return Err(range(
                    field,
                    list.clone(),
                    format!("1..={MAX_FABRIC_PEERS} endpoints separated by commas"),
                ));
            }
        }
        let frontends = transport::endpoints(&self.proxy_frontend).count();
        let backends = transport::endpoints(&self.proxy_backend).count();
        if frontends != backends {
            return Err(range(
                "proxy-frontend",
                self.proxy_frontend.clone(),
                format!("as many endpoints as --proxy-backend ({backends})"),
            ));
        }
        self.paxos_config(1, 0, 0).validate()?;
        self.store_config().validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn defaults_are_valid() {
        let cli = Cli::try_parse_from(["node", "--id", "2"]).unwrap();
        cli.config.validate().unwrap();
        assert_eq!(cli.config.name(), "node-2");
        assert_eq!(cli.config.status_addr().port(), 7002);
        assert_eq!(cli.config.node_dir(), PathBuf::from("data/node-2"));
        assert_eq!(cli.config.paxos_config(2, 0, 0).quorum(), 2);
        assert_eq!(cli.config.advertised_status_addr(), "127.0.0.1:7002");
        let containers =
            Cli::try_parse_from(["node", "--id", "3", "--status-addr", "0.0.0.0:7003"]).unwrap();
        assert_eq!(containers.config.advertised_status_addr(), "node-3:7003");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Cli::try_parse_from(["node", "--id", "0"]).is_err());
        let cli = Cli::try_parse_from(["node", "--id", "1", "--cluster-size", "0"]).unwrap();
        assert!(cli.config.validate().is_err());
        let cli = Cli::try_parse_from([
            "node",
            "--id",
            "1",
            "--heartbeat-ticks",
            "10",
            "--election-timeout-ticks",
            "15",
        ])
        .unwrap();
        assert!(matches!(
            cli.config.validate(),
            Err(ConfigError::Paxos(paxos::ConfigError::Timing { .. }))
        ));
        let cli = Cli::try_parse_from(["node", "--id", "1", "--tick", "5s"]).unwrap();
        assert!(cli.config.validate().is_err());
    }
}
