//! The seeded fault simulator.
//!
//! A discrete-event simulation of `replicas` [`Replica`]s, each with its own [`Store`],
//! over a network that loses, duplicates, delays and reorders messages and can be
//! partitioned (asymmetrically too), with crashes that lose everything not yet durable
//! and restarts from what was. Half the crashes and half the isolations of one node
//! strike the leader. A few clients send `put`/`get`/`cas`/`delete` on a few
//! keys to random replicas (gets mostly as read-index reads, [`Replica::read`]), time out and retry with the same `(client_id, seq)`, and
//! record a history for the linearizability checker.
//!
//! Everything random comes from one ChaCha generator seeded by the run's seed, and events
//! at the same instant run in the order they were scheduled, so a seed replays exactly.
//!
//! ## The driver modelled here (what the node process does)
//! The simulator drives each replica through the same API and the same durability gate
//! as the node ([`paxos::gate`]): every [`paxos::Ready`] is carried out at once — its
//! records appended to the node's [`disk::Disk`], its messages sent, its decided slots
//! applied to the store (answering the clients waiting at that replica) — and the disk's
//! writer rounds report groups durable with [`Replica::persisted`] after a seeded
//! latency, which releases what the gate held. Seeds differ in how slow the disk is next
//! to the network (an fsync from 1 to 80 time units, a message from 1 to 50), so
//! decisions race their own votes' records. A crash keeps a random prefix of what was
//! appended and not fsynced — it cuts between an append and its fsync at every point —
//! and sometimes strikes right after an fsync, before the replica hears of it; the
//! store and the waiting clients are lost; a restart folds the durable records
//! ([`paxos::Persisted::apply`]) and restores the last durable snapshot.
//!
//! ## Checked after every event
//! agreement (one value per slot, over all replicas), one value per ballot and slot among
//! the `Accept`s sent, a replica's promise never below a ballot it already announced in
//! a message nor its durable votes missing one it sent (across restarts), nor its
//! promise decreasing while it runs, every applied slot durably held by a quorum at the
//! moment it is applied (the gate's whole point), in-order apply without gaps, equal
//! digests at equal applied slots, exactly-once effects (a `(client, seq)` takes effect
//! at one slot). At the end the faults stop, every client must finish and every replica
//! converge; then the history must be linearizable.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Once};

use lincheck::{CheckOptions, OpKind, Operation, Outcome, Output, Verdict};
use paxos::{Ballot, Config, Envelope, Message, Replica, Role, Slot, Value};
use proto::{Command, Error, ErrorCode, Op, Reply};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use store::{Digest, Store, StoreConfig};

mod clients;
mod disk;
mod driver;
mod events;
use disk::Disk;

/// Simulated time units per replica tick.
const TICK_UNITS: u64 = 10;
/// A run that has not finished after this many events has a livelock.
const MAX_EVENTS: u64 = 3_000_000;
/// Most ticks a replica is down for.
const MAX_DOWNTIME_UNITS: u64 = 1_500;
/// How long a client waits for an answer before it retries.
const CLIENT_TIMEOUT_UNITS: u64 = 300;

/// A safety rule to break on purpose, one at a time, to show the checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SimBug {
    /// The driver reports a group durable as soon as it is appended, before its fsync:
    /// the gate then releases a promise or a vote that a crash can still lose.
    AckBeforeFsync,
    /// A core bug ([`paxos::Bug`]): the gate, or the leader, breaks one rule.
    Core(paxos::Bug),
    /// A replica that believes it leads answers linearizable reads at once from its
    /// applied state, without a quorum round — it may have been deposed.
    StaleLeaderRead,
}

/// The shape of a run.
#[derive(Debug, Clone)]
pub(crate) struct SimConfig {
    /// Cluster size.
    pub replicas: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Operations per client.
    pub ops_per_client: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Length of the faulty phase; then everything heals.
    pub fault_units: u64,
    /// After the heal, the deadline to finish and converge.
    pub settle_units: u64,
    /// The rule to break, if any.
    pub bug: Option<SimBug>,
    /// The share of gets sent through the log as commands; the rest are read-index
    /// reads ([`Replica::read`]).
    pub log_reads: f64,
    /// Whether the durability invariants are checked directly: a restarted replica's
    /// promise, round and votes against what it announced before the crash, and every
    /// applied slot durably held by a quorum. Off, a broken gate shows only through its
    /// consequences (disagreement, divergence, a non-linearizable history).
    pub check_invariants: bool,
}

impl SimConfig {
    /// The default schedule for `replicas` replicas.
    pub(crate) fn new(replicas: usize) -> Self {
        SimConfig {
            replicas,
            clients: 4,
            ops_per_client: 100,
            keys: 3,
            fault_units: 15_000,
            settle_units: 30_000,
            bug: None,
            log_reads: 1.0 / 3.0,
            check_invariants: true,
        }
    }
}

/// What a successful run did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RunStats {
    /// Events processed.
    pub events: u64,
    /// Slots decided.
    pub slots: u64,
    /// Client operations recorded.
    pub ops: usize,
    /// Of those, given up on (outcome unknown).
    pub unknown: usize,
    /// Crashes.
    pub crashes: u64,
    /// Times a replica became leader.
    pub elections: u64,
    /// Snapshots installed from a peer.
    pub installs: u64,
}

impl std::ops::AddAssign for RunStats {
    fn add_assign(&mut self, other: RunStats) {
        self.events += other.events;
        self.slots += other.slots;
        self.ops += other.ops;
        self.unknown += other.unknown;
        self.crashes += other.crashes;
        self.elections += other.elections;
        self.installs += other.installs;
    }
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}
static HOOK: Once = Once::new();

/// Runs one seed. A broken check, a panic (the core's and the store's asserts), a
/// livelock or a non-linearizable history is an `Err` with a description.
pub(crate) fn run(seed: u64, config: &SimConfig) -> Result<RunStats, String> {
    // Panics are reported as failures of the seed: keep the default hook's output for
    // panics outside a simulation only.
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = catch_unwind(AssertUnwindSafe(|| Sim::new(seed, config.clone()).run()));
    QUIET.with(|q| q.set(false));
    match result {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Err(format!("panic: {message}"))
        }
    }
}

#[derive(Debug)]
enum Event {
    Tick(usize),
    Deliver(usize, Envelope),
    /// A writer round of `node` (in `incarnation`) completes.
    Fsync(usize, u64),
    Crash,
    Restart(usize),
    NetChange,
    Snapshot,
    Heal,
    ClientStart(usize),
    ClientArrive {
        node: usize,
        client: usize,
        command: Command,
    },
    ClientReply {
        client: usize,
        seq: u64,
        result: Result<Reply, Error>,
    },
    ClientTimeout {
        client: usize,
        seq: u64,
        attempt: u32,
    },
}

struct Scheduled {
    at: u64,
    order: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

struct Node {
    replica: Option<Replica>,
    incarnation: u64,
    disk: Disk,
    store: Store,
    /// Client requests received here, answered when their command is applied.
    waiting: BTreeMap<(u64, u64), usize>,
    /// Linearizable reads taken by the replica ([`Replica::read`]): who asked what.
    reads: BTreeMap<paxos::ReadId, (usize, u64, Op)>,
    /// Slot where each `(client, seq)` took effect here.
    effects: BTreeMap<(u64, u64), Slot>,
    /// Highest ballot this replica has stated it promised, in a message sent.
    announced: Ballot,
    /// Highest round this replica ran for leader with, in a message sent.
    announced_round: u64,
    /// For every slot, the highest ballot of an `Accepted` this replica sent: its
    /// durable state must still vouch for it after a crash.
    votes: BTreeMap<Slot, Ballot>,
    /// Its promise after the last event (within one incarnation).
    last_promised: Ballot,
    /// Its role after the last event.
    last_role: Role,
}

struct Pending {
    seq: u64,
    op: Op,
    call: u64,
    attempt: u32,
    max_attempts: u32,
}

struct Client {
    client_id: u64,
    issued: usize,
    pending: Option<Pending>,
    done: bool,
}

struct Sim {
    seed: u64,
    config: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    order: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    history: Vec<Operation>,
    written: BTreeMap<String, Vec<String>>,
    // Network.
    blocked: BTreeSet<(usize, usize)>,
    loss: f64,
    duplicate: f64,
    max_delay: u64,
    /// Longest fsync, in time units (per seed: a fast, a slow or a very slow disk).
    max_fsync: u64,
    /// Chance that a node crashes right after an fsync, before it reports it.
    crash_after_fsync: f64,
    healed: bool,
    // Global checks.
    chosen: BTreeMap<Slot, Value>,
    /// The value of every `Accept` sent, by ballot and slot: a ballot names one value.
    proposals: BTreeMap<(Ballot, Slot), Value>,
    digests: BTreeMap<Slot, Digest>,
    effects: BTreeMap<(u64, u64), Slot>,
    /// The last read id handed to a replica (unique over the run).
    next_read: paxos::ReadId,
    stats: RunStats,
}

impl Sim {
    fn new(seed: u64, config: SimConfig) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let loss = if rng.random_bool(0.2) {
            0.0
        } else {
            rng.random_range(0.0..0.3)
        };
        let duplicate = rng.random_range(0.0..0.1);
        let max_delay = rng.random_range(1..=50);
        let max_fsync = [5, 20, 80][rng.random_range(0..3)];
        let crash_after_fsync = if rng.random_bool(0.5) { 0.0 } else { 0.02 };
        let nodes = (0..config.replicas)
            .map(|_| Node {
                replica: None,
                incarnation: 0,
                disk: Disk::default(),
                store: Store::new(StoreConfig::default()),
                waiting: BTreeMap::new(),
                reads: BTreeMap::new(),
                effects: BTreeMap::new(),
                announced: Ballot::default(),
                announced_round: 0,
                votes: BTreeMap::new(),
                last_promised: Ballot::default(),
                last_role: Role::Follower,
            })
            .collect();
        let clients = (0..config.clients)
            .map(|i| Client {
                client_id: i as u64 + 1,
                issued: 0,
                pending: None,
                done: false,
            })
            .collect();
        Sim {
            seed,
            config,
            rng,
            now: 0,
            order: 0,
            queue: BinaryHeap::new(),
            nodes,
            clients,
            history: Vec::new(),
            written: BTreeMap::new(),
            blocked: BTreeSet::new(),
            loss,
            duplicate,
            max_delay,
            max_fsync,
            crash_after_fsync,
            healed: false,
            chosen: BTreeMap::new(),
            proposals: BTreeMap::new(),
            digests: BTreeMap::new(),
            effects: BTreeMap::new(),
            next_read: 0,
            stats: RunStats::default(),
        }
    }

    fn schedule(&mut self, after: u64, event: Event) {
        self.order += 1;
        self.queue.push(Reverse(Scheduled {
            at: self.now + after,
            order: self.order,
            event,
        }));
    }

    fn replica_config(&self, node: usize) -> Config {
        Config {
            rank: node as u32 + 1,
            members: (1..=self.config.replicas as u32).collect(),
            heartbeat_interval_ticks: 2,
            election_timeout_ticks: 10,
            retransmit_ticks: 3,
            max_batch_commands: 4,
            max_batch_bytes: proto::limits::MAX_BATCH_BYTES,
            window_slots: 4,
            max_pending_commands: 64,
            pending_timeout_ticks: 40,
            log_retain_slots: self.seed % 4,
            seed: self.seed ^ ((node as u64) << 40) ^ self.nodes[node].incarnation,
            incarnation: self.nodes[node].incarnation,
        }
    }

    fn run(mut self) -> Result<RunStats, String> {
        for node in 0..self.config.replicas {
            self.restart(node)?;
            let offset = self.rng.random_range(0..TICK_UNITS);
            self.schedule(offset, Event::Tick(node));
        }
        for client in 0..self.config.clients {
            let after = self.rng.random_range(0..200);
            self.schedule(after, Event::ClientStart(client));
        }
        let after = self.rng.random_range(100..1_000);
        self.schedule(after, Event::Crash);
        let after = self.rng.random_range(100..1_000);
        self.schedule(after, Event::NetChange);
        let after = self.rng.random_range(50..500);
        self.schedule(after, Event::Snapshot);
        self.schedule(self.config.fault_units, Event::Heal);
        let deadline = self.config.fault_units + self.config.settle_units;

        while let Some(Reverse(next)) = self.queue.pop() {
            self.now = next.at;
            self.stats.events += 1;
            if self.stats.events > MAX_EVENTS || self.now > deadline {
                return Err(format!(
                    "no progress: clients or replicas not done by t={} ({} events)\n{}",
                    self.now,
                    self.stats.events,
                    self.describe()
                ));
            }
            self.handle(next.event)?;
            if self.healed && self.clients.iter().all(|c| c.done) && self.converged() {
                break;
            }
        }
        self.stats.slots = self.chosen.len() as u64;
        self.stats.ops = self.history.len();
        self.stats.unknown = self
            .history
            .iter()
            .filter(|o| o.outcome == Outcome::Unknown)
            .count();
        match lincheck::check(&self.history, &CheckOptions::default()) {
            Verdict::Linearizable => Ok(self.stats),
            Verdict::NotLinearizable(violation) => Err(format!(
                "history not linearizable on key {}: {}\n{:#?}",
                violation.key, violation.explanation, violation.operations
            )),
            Verdict::Inconclusive { key, reason } => Err(format!(
                "linearizability check inconclusive on {key}: {reason}"
            )),
        }
    }

    fn describe(&self) -> String {
        let mut out = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            match &node.replica {
                Some(r) => {
                    let s = r.status();
                    out += &format!(
                        "  node {}: {} leader={:?} promised={} decided={} applied={} pending={} in_flight={}\n",
                        i + 1,
                        s.role.as_str(),
                        s.leader,
                        s.promised,
                        s.decided_upto,
                        node.store.applied_slot(),
                        s.pending_commands,
                        s.in_flight_slots
                    );
                }
                None => out += &format!("  node {}: down\n", i + 1),
            }
        }
        for c in &self.clients {
            out += &format!(
                "  client {}: issued {} done {} pending seq {:?}\n",
                c.client_id,
                c.issued,
                c.done,
                c.pending.as_ref().map(|p| p.seq)
            );
        }
        out
    }

    fn converged(&self) -> bool {
        let Some(first) = self.nodes.first() else {
            return true;
        };
        let slot = first.store.applied_slot();
        if self.nodes.iter().any(|n| {
            n.replica.as_ref().is_none_or(|r| !r.is_durable())
                || n.store.applied_slot() != slot
                || !n.disk.is_idle()
        }) {
            return false;
        }
        if self.chosen.keys().next_back().is_some_and(|&s| s > slot) {
            return false;
        }
        let digest = first.store.digest();
        self.nodes.iter().all(|n| n.store.digest() == digest)
    }
}
