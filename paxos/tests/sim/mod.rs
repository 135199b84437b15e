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

mod disk;
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

    // ------------------------------------------------------------------ events

    fn handle(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Tick(node) => {
                if let Some(replica) = self.nodes[node].replica.as_mut() {
                    replica.tick();
                    self.process_ready(node)?;
                }
                self.schedule(TICK_UNITS, Event::Tick(node));
            }
            Event::Deliver(node, envelope) => {
                if let Some(replica) = self.nodes[node].replica.as_mut() {
                    replica.step(envelope);
                    self.process_ready(node)?;
                }
            }
            Event::Fsync(node, incarnation) => self.fsync(node, incarnation)?,
            Event::Crash => {
                if !self.healed {
                    // Half the time the leader: failover is where the protocol is tested.
                    let node = self.leader_half_the_time();
                    self.crash(node);
                    let after = self.rng.random_range(200..1_500);
                    self.schedule(after, Event::Crash);
                }
            }
            Event::Restart(node) => {
                if self.nodes[node].replica.is_none() {
                    self.restart(node)?;
                }
            }
            Event::NetChange => {
                if !self.healed {
                    self.change_network();
                    let after = self.rng.random_range(100..1_000);
                    self.schedule(after, Event::NetChange);
                }
            }
            Event::Snapshot => {
                let node = self.rng.random_range(0..self.config.replicas);
                self.take_snapshot(node)?;
                if !self.healed {
                    let after = self.rng.random_range(50..600);
                    self.schedule(after, Event::Snapshot);
                }
            }
            Event::Heal => {
                self.healed = true;
                self.blocked.clear();
                self.loss = 0.0;
                self.duplicate = 0.0;
                for node in 0..self.config.replicas {
                    if self.nodes[node].replica.is_none() {
                        self.restart(node)?;
                    }
                }
            }
            Event::ClientStart(client) => self.client_start(client),
            Event::ClientArrive {
                node,
                client,
                command,
            } => self.client_arrive(node, client, command)?,
            Event::ClientReply {
                client,
                seq,
                result,
            } => self.client_reply(client, seq, result)?,
            Event::ClientTimeout {
                client,
                seq,
                attempt,
            } => self.client_timeout(client, seq, attempt),
        }
        Ok(())
    }

    /// The node that leads (if one does, as far as it knows) half the time; otherwise
    /// any node.
    fn leader_half_the_time(&mut self) -> usize {
        let leader = self.nodes.iter().position(|n| {
            n.replica
                .as_ref()
                .is_some_and(|r| r.status().role == Role::Leader)
        });
        match leader {
            Some(leader) if self.rng.random_bool(0.5) => leader,
            _ => self.rng.random_range(0..self.config.replicas),
        }
    }

    fn change_network(&mut self) {
        let n = self.config.replicas;
        self.blocked.clear();
        match self.rng.random_range(0..5) {
            // Heal for a while.
            0 => {}
            // Isolate one node both ways; half the time the leader, which clients still
            // reach: a deposed leader that does not know it yet is where stale reads hide.
            1 => {
                let x = self.leader_half_the_time();
                for y in (0..n).filter(|&y| y != x) {
                    self.blocked.insert((x, y));
                    self.blocked.insert((y, x));
                }
            }
            // Split into two random sides.
            2 => {
                let side: Vec<bool> = (0..n).map(|_| self.rng.random_bool(0.5)).collect();
                for x in 0..n {
                    for y in 0..n {
                        if side[x] != side[y] {
                            self.blocked.insert((x, y));
                        }
                    }
                }
            }
            // One node hears nobody but is heard (or the reverse).
            3 => {
                let x = self.rng.random_range(0..n);
                let deaf = self.rng.random_bool(0.5);
                for y in (0..n).filter(|&y| y != x) {
                    self.blocked.insert(if deaf { (y, x) } else { (x, y) });
                }
            }
            // Random one-way link cuts.
            _ => {
                for x in 0..n {
                    for y in 0..n {
                        if x != y && self.rng.random_bool(0.3) {
                            self.blocked.insert((x, y));
                        }
                    }
                }
            }
        }
    }

    fn crash(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if n.replica.is_none() {
            return;
        }
        n.replica = None;
        n.incarnation += 1;
        n.disk.crash(&mut self.rng);
        n.waiting.clear();
        n.reads.clear();
        self.stats.crashes += 1;
        let after = self.rng.random_range(50..MAX_DOWNTIME_UNITS);
        self.schedule(after, Event::Restart(node));
    }

    fn restart(&mut self, node: usize) -> Result<(), String> {
        let config = self.replica_config(node);
        let n = &mut self.nodes[node];
        let mut persisted = n.disk.durable.clone();
        n.store = match &n.disk.snapshot {
            Some((slot, bytes)) => {
                persisted.restore_snapshot(*slot, bytes.clone());
                Store::restore(bytes, StoreConfig::default())
                    .map_err(|e| format!("node {}: durable snapshot unreadable: {e}", node + 1))?
            }
            None => Store::new(StoreConfig::default()),
        };
        persisted.observe_lamport(n.store.lamport());
        let mut replica = Replica::new(config, persisted).map_err(|e| e.to_string())?;
        if let Some(SimBug::Core(bug)) = self.config.bug {
            replica.inject_bug(bug);
        }
        let status = replica.status();
        let promised = status.promised;
        if self.config.check_invariants {
            if status.round < n.announced_round {
                return Err(format!(
                    "node {} restarted with round {} below the round {} it ran for leader with",
                    node + 1,
                    status.round,
                    n.announced_round
                ));
            }
            if promised < n.announced {
                return Err(format!(
                    "node {} restarted with promise {promised} below the ballot {} it announced",
                    node + 1,
                    n.announced
                ));
            }
            if let Some((slot, ballot)) = n
                .votes
                .iter()
                .find(|&(&slot, &ballot)| !n.disk.holds_vote(slot, ballot))
            {
                return Err(format!(
                    "node {} restarted without its vote for slot {slot} in ballot {ballot}, \
                     which it had sent",
                    node + 1
                ));
            }
        }
        n.last_promised = promised;
        n.last_role = Role::Follower;
        n.replica = Some(replica);
        self.process_ready(node)
    }

    fn take_snapshot(&mut self, node: usize) -> Result<(), String> {
        let n = &mut self.nodes[node];
        let Some(replica) = n.replica.as_mut() else {
            return Ok(());
        };
        let slot = n.store.applied_slot();
        if slot == 0 {
            return Ok(());
        }
        let bytes = Arc::new(n.store.snapshot());
        // The node's snapshot file is durable before the core hears of it.
        n.disk.snapshot = Some((slot, bytes.clone()));
        n.votes = n.votes.split_off(&(slot + 1));
        replica.snapshot_taken(slot, bytes);
        self.process_ready(node)
    }

    /// Starts a writer round of `node`'s disk if one is due.
    fn start_fsync(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        let incarnation = n.incarnation;
        let Some(round) = n.disk.start_round() else {
            return;
        };
        // A round that only writes (no record asks for an fsync) is quick.
        let after = if round.sync {
            self.rng.random_range(1..=self.max_fsync)
        } else {
            1
        };
        self.schedule(after, Event::Fsync(node, incarnation));
    }

    /// A writer round completes: its records are durable, and the replica hears so.
    fn fsync(&mut self, node: usize, incarnation: u64) -> Result<(), String> {
        let n = &mut self.nodes[node];
        if n.incarnation != incarnation || n.replica.is_none() {
            return Ok(());
        }
        let Some(upto) = n.disk.finish_round() else {
            return Ok(());
        };
        if !self.healed && self.rng.random_bool(self.crash_after_fsync) {
            // Durable, but the node dies before it hears so: nothing held is released.
            self.crash(node);
            return Ok(());
        }
        let n = &mut self.nodes[node];
        if let Some(replica) = n.replica.as_mut() {
            replica.persisted(upto);
        }
        self.process_ready(node)?;
        self.start_fsync(node);
        Ok(())
    }

    // ------------------------------------------------------------------ driver

    /// Carries out one `Ready` of `node`, as the node's driver does: append the records,
    /// send the messages, apply the decided slots, answer the clients.
    fn process_ready(&mut self, node: usize) -> Result<(), String> {
        let bug = self.config.bug;
        let n = &mut self.nodes[node];
        let Some(replica) = n.replica.as_mut() else {
            return Ok(());
        };
        let ready = replica.ready();
        let status = replica.status();
        if status.role == Role::Leader && n.last_role != Role::Leader {
            self.stats.elections += 1;
        }
        n.last_role = status.role;
        let promised = status.promised;
        if promised < n.last_promised {
            return Err(format!(
                "node {}: promise went back from {} to {promised}",
                node + 1,
                n.last_promised
            ));
        }
        n.last_promised = promised;

        let mut lied = false;
        if let Some(group) = ready.persist {
            let number = group.number;
            n.disk.append(group);
            if bug == Some(SimBug::AckBeforeFsync) {
                replica.persisted(number);
                lied = true;
            }
        }
        self.check_durable_quorum(node, &ready.decided)?;

        let n = &mut self.nodes[node];
        if let Some((slot, bytes)) = ready.install_snapshot {
            self.stats.installs += 1;
            n.store = Store::restore(&bytes, StoreConfig::default())
                .map_err(|e| format!("node {}: snapshot at {slot} unreadable: {e}", node + 1))?;
            if n.store.applied_slot() != slot {
                return Err(format!(
                    "node {}: snapshot for slot {slot} holds slot {}",
                    node + 1,
                    n.store.applied_slot()
                ));
            }
        }
        let mut replies = Vec::new();
        let applied_any = !ready.decided.is_empty();
        for (slot, value) in ready.decided {
            if slot != n.store.applied_slot() + 1 {
                return Err(format!(
                    "node {}: slot {slot} handed out after applied slot {} (gap or repeat)",
                    node + 1,
                    n.store.applied_slot()
                ));
            }
            match self.chosen.get(&slot) {
                Some(known) if *known != value => {
                    return Err(format!(
                        "agreement violated: slot {slot} is {known:?} elsewhere and {value:?} at node {}",
                        node + 1
                    ));
                }
                Some(_) => {}
                None => {
                    self.chosen.insert(slot, value.clone());
                }
            }
            let applied = n.store.apply(slot, value.lamport, &value.commands);
            for reply in applied.replies {
                let key = (reply.client_id, reply.seq);
                if !reply.duplicate {
                    if let Some(other) = n.effects.insert(key, slot)
                        && other != slot
                    {
                        return Err(format!(
                            "exactly-once violated: client {} seq {} took effect at slots {other} and {slot} on node {}",
                            key.0,
                            key.1,
                            node + 1
                        ));
                    }
                    if let Some(&other) = self.effects.get(&key) {
                        if other != slot {
                            return Err(format!(
                                "exactly-once violated: client {} seq {} took effect at slot {other} on one node and {slot} on node {}",
                                key.0,
                                key.1,
                                node + 1
                            ));
                        }
                    } else {
                        self.effects.insert(key, slot);
                    }
                }
                if let Some(client) = n.waiting.remove(&key) {
                    replies.push((client, reply.seq, reply.result));
                }
            }
        }
        if applied_any
            || n.store.applied_slot() > 0 && !self.digests.contains_key(&n.store.applied_slot())
        {
            let slot = n.store.applied_slot();
            let digest = n.store.digest();
            match self.digests.get(&slot) {
                Some(known) if *known != digest => {
                    return Err(format!(
                        "divergence: digest {digest} at slot {slot} on node {}, {known} elsewhere",
                        node + 1
                    ));
                }
                Some(_) => {}
                None => {
                    self.digests.insert(slot, digest);
                }
            }
        }
        for (command, error) in ready.rejected {
            if let Some(client) = n.waiting.remove(&(command.client_id, command.seq)) {
                replies.push((client, command.seq, Err(error)));
            }
        }
        // Reads are served from the state just applied, as the node does.
        for id in ready.reads {
            if let Some((client, seq, op)) = n.reads.remove(&id) {
                replies.push((client, seq, n.store.read_local(&op, None)));
            }
        }
        for (id, error) in ready.rejected_reads {
            if let Some((client, seq, _)) = n.reads.remove(&id) {
                replies.push((client, seq, Err(error)));
            }
        }
        for envelope in ready.messages {
            self.send(node, envelope)?;
        }
        for (client, seq, result) in replies {
            self.reply_to_client(client, seq, result);
        }
        self.start_fsync(node);
        if lied {
            // What the lie released comes out of the next ready().
            self.process_ready(node)?;
        }
        Ok(())
    }

    /// Every slot handed out to be applied must be durably held — accepted with its
    /// value, decided, or under a durable snapshot — by a quorum of replicas at this
    /// moment: otherwise a crash of some of them could lose a value a client may
    /// already have been told about. This is what the durability gate exists for.
    fn check_durable_quorum(&self, node: usize, decided: &[(Slot, Value)]) -> Result<(), String> {
        if !self.config.check_invariants {
            return Ok(());
        }
        let quorum = self.config.replicas / 2 + 1;
        for (slot, value) in decided {
            let holders = self
                .nodes
                .iter()
                .filter(|n| n.disk.holds(*slot, value))
                .count();
            if holders < quorum {
                return Err(format!(
                    "node {} applies slot {slot}, which only {holders} replica(s) hold durably \
                     (a quorum is {quorum})",
                    node + 1
                ));
            }
        }
        Ok(())
    }

    fn send(&mut self, from: usize, envelope: Envelope) -> Result<(), String> {
        let n = &mut self.nodes[from];
        let announced = match &envelope.message {
            Message::Promise { ballot, .. } | Message::Accepted { ballot, .. } => Some(*ballot),
            Message::Nack { promised, .. } => Some(*promised),
            _ => None,
        };
        if let Some(ballot) = announced {
            n.announced = n.announced.max(ballot);
        }
        let own_ballot = match &envelope.message {
            Message::Prepare { ballot, .. } | Message::Accept { ballot, .. } => Some(*ballot),
            _ => None,
        };
        if let Some(ballot) = own_ballot.filter(|b| b.rank as usize == from + 1) {
            n.announced_round = n.announced_round.max(ballot.round);
        }
        match &envelope.message {
            Message::Accepted { ballot, slot } => {
                let vote = n.votes.entry(*slot).or_default();
                *vote = (*vote).max(*ballot);
            }
            Message::Accept {
                ballot,
                slot,
                value,
                ..
            } => match self.proposals.get(&(*ballot, *slot)) {
                Some(known) if known != value => {
                    return Err(format!(
                        "ballot {ballot} proposed two values for slot {slot}: {known:?} and \
                         {value:?} (node {})",
                        from + 1
                    ));
                }
                Some(_) => {}
                None => {
                    self.proposals.insert((*ballot, *slot), value.clone());
                }
            },
            _ => {}
        }
        let targets: Vec<usize> = match envelope.to {
            Some(rank) => vec![rank as usize - 1],
            None => (0..self.config.replicas).filter(|&t| t != from).collect(),
        };
        for to in targets {
            if self.blocked.contains(&(from, to)) || self.rng.random_bool(self.loss) {
                continue;
            }
            let copies = if self.rng.random_bool(self.duplicate) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay = self.rng.random_range(1..=self.max_delay);
                self.schedule(delay, Event::Deliver(to, envelope.clone()));
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ clients

    fn client_start(&mut self, client: usize) {
        let c = &mut self.clients[client];
        if c.pending.is_some() || c.done {
            return;
        }
        if c.issued == self.config.ops_per_client {
            c.done = true;
            return;
        }
        c.issued += 1;
        let client_id = c.client_id;
        let seq = c.issued as u64;
        let key = format!("k{}", self.rng.random_range(0..self.config.keys));
        let value = format!("c{client_id}s{seq}");
        let op = match self.rng.random_range(0..20) {
            0..=6 => Op::Put { key, value },
            7..=13 => Op::Get { key },
            14..=17 => {
                let known = self.written.get(&key).cloned().unwrap_or_default();
                let expected = if known.is_empty() || self.rng.random_bool(0.2) {
                    None
                } else {
                    // Mostly the latest value written, so that some CAS succeed.
                    let i = if self.rng.random_bool(0.7) {
                        known.len() - 1
                    } else {
                        self.rng.random_range(0..known.len())
                    };
                    Some(known[i].clone())
                };
                Op::Cas {
                    key,
                    expected,
                    new: value,
                }
            }
            _ => Op::Delete { key },
        };
        if let Op::Put { key, value }
        | Op::Cas {
            key, new: value, ..
        } = &op
        {
            self.written
                .entry(key.clone())
                .or_default()
                .push(value.clone());
        }
        let max_attempts = self.rng.random_range(2..=5);
        self.clients[client].pending = Some(Pending {
            seq,
            op,
            call: self.now,
            attempt: 0,
            max_attempts,
        });
        self.client_send(client);
    }

    fn client_send(&mut self, client: usize) {
        let client_id = self.clients[client].client_id;
        let Some(p) = self.clients[client].pending.as_mut() else {
            return;
        };
        p.attempt += 1;
        let command = Command {
            client_id,
            seq: p.seq,
            op: p.op.clone(),
            session: None,
        };
        let (seq, attempt) = (p.seq, p.attempt);
        let node = self.rng.random_range(0..self.config.replicas);
        if !self.rng.random_bool(self.loss) {
            let delay = self.rng.random_range(1..=self.max_delay);
            self.schedule(
                delay,
                Event::ClientArrive {
                    node,
                    client,
                    command,
                },
            );
        }
        self.schedule(
            CLIENT_TIMEOUT_UNITS,
            Event::ClientTimeout {
                client,
                seq,
                attempt,
            },
        );
    }

    fn client_arrive(
        &mut self,
        node: usize,
        client: usize,
        command: Command,
    ) -> Result<(), String> {
        let bug = self.config.bug;
        let n = &mut self.nodes[node];
        let Some(replica) = n.replica.as_mut() else {
            return Ok(());
        };
        if bug == Some(SimBug::StaleLeaderRead)
            && matches!(command.op, Op::Get { .. })
            && replica.status().role == Role::Leader
        {
            let result = n.store.read_local(&command.op, command.session.as_deref());
            self.reply_to_client(client, command.seq, result);
            return Ok(());
        }
        // Linearizable reads take the read-index path, without a log slot — but some
        // (`SimConfig::log_reads`) go through the log, as a read-only command the core still takes: both
        // paths must be linearizable together, and log reads make more slots for the
        // durability bugs to show in.
        let through_log =
            self.config.log_reads >= 1.0 || self.rng.random_bool(self.config.log_reads);
        if matches!(command.op, Op::Get { .. }) && !through_log {
            self.next_read += 1;
            let id = self.next_read;
            return match replica.read(id) {
                Ok(()) => {
                    n.reads.insert(id, (client, command.seq, command.op));
                    self.process_ready(node)
                }
                Err(error) => {
                    self.reply_to_client(client, command.seq, Err(error));
                    Ok(())
                }
            };
        }
        let key = (command.client_id, command.seq);
        match replica.propose(command) {
            Ok(()) => {
                n.waiting.insert(key, client);
                self.process_ready(node)
            }
            Err(error) => {
                self.reply_to_client(client, key.1, Err(error));
                Ok(())
            }
        }
    }

    fn reply_to_client(&mut self, client: usize, seq: u64, result: Result<Reply, Error>) {
        if self.rng.random_bool(self.loss) {
            return;
        }
        let delay = self.rng.random_range(1..=self.max_delay);
        self.schedule(
            delay,
            Event::ClientReply {
                client,
                seq,
                result,
            },
        );
    }

    fn client_reply(
        &mut self,
        client: usize,
        seq: u64,
        result: Result<Reply, Error>,
    ) -> Result<(), String> {
        let c = &mut self.clients[client];
        if c.pending.as_ref().is_none_or(|p| p.seq != seq) {
            return Ok(());
        }
        if let Err(e) = &result
            && e.code.certainly_not_applied()
        {
            // Not an answer: the command never reached the log from there. The timeout
            // retries it.
            return Ok(());
        }
        let Some(p) = c.pending.take() else {
            return Ok(());
        };
        let client_id = c.client_id;
        let unexpected = |result: &Result<Reply, Error>| {
            format!(
                "client {client_id} seq {seq}: unexpected answer {result:?} to {:?}",
                p.op
            )
        };
        let (kind, key, value, expected, output) = match &p.op {
            Op::Put { key, value } => {
                if result.is_err() {
                    return Err(unexpected(&result));
                }
                (OpKind::Put, key, Some(value.clone()), None, None)
            }
            Op::Delete { key } => {
                if result.is_err() {
                    return Err(unexpected(&result));
                }
                (OpKind::Delete, key, None, None, None)
            }
            Op::Get { key } => {
                let output = match &result {
                    Ok(Reply::Value(v)) => Some(v.clone()),
                    Err(e) if e.code == ErrorCode::NotFound => None,
                    _ => return Err(unexpected(&result)),
                };
                (OpKind::Get, key, None, None, Some(Output::Value(output)))
            }
            Op::Cas { key, expected, new } => {
                let swapped = match &result {
                    Ok(_) => true,
                    Err(e) if e.code == ErrorCode::CasMismatch => false,
                    _ => return Err(unexpected(&result)),
                };
                (
                    OpKind::Cas,
                    key,
                    Some(new.clone()),
                    expected.clone(),
                    Some(Output::Bool(swapped)),
                )
            }
            _ => return Err(unexpected(&result)),
        };
        self.history.push(Operation {
            client: client_id,
            op: kind,
            key: key.clone(),
            value,
            expected,
            output,
            outcome: Outcome::Ok,
            call: p.call,
            return_: Some(self.now),
        });
        let think = self.rng.random_range(0..50);
        self.schedule(think, Event::ClientStart(client));
        Ok(())
    }

    fn client_timeout(&mut self, client: usize, seq: u64, attempt: u32) {
        let healed = self.healed;
        let c = &mut self.clients[client];
        let Some(p) = c.pending.as_ref() else {
            return;
        };
        if p.seq != seq || p.attempt != attempt {
            return;
        }
        if !healed && p.attempt >= p.max_attempts {
            // Give up: the operation may or may not take effect, now or later.
            let Some(p) = c.pending.take() else {
                return;
            };
            let (kind, key, value, expected) = match p.op {
                Op::Put { key, value } => (OpKind::Put, key, Some(value), None),
                Op::Get { key } => (OpKind::Get, key, None, None),
                Op::Delete { key } => (OpKind::Delete, key, None, None),
                Op::Cas { key, expected, new } => (OpKind::Cas, key, Some(new), expected),
                _ => return,
            };
            self.history.push(Operation {
                client: c.client_id,
                op: kind,
                key,
                value,
                expected,
                output: None,
                outcome: Outcome::Unknown,
                call: p.call,
                return_: None,
            });
            self.schedule(0, Event::ClientStart(client));
            return;
        }
        self.client_send(client);
    }
}
