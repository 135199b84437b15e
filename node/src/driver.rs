//! The loop: the one place that owns the replica and the store, and routes between them
//! and the rooms.
//!
//! Each turn it waits for an [`Event`], hands it to the room it concerns, steps what the
//! peers and clients sent into the Paxos core (draining whatever else waits, so that one
//! turn makes one slot and one WAL group), then asks the core for its [`Ready`] and
//! carries it out — in order:
//!
//! ```text
//!   inputs ─▶ step / propose / tick ─▶ ready() ─┬─▶ peers: send the messages
//!                                               ├─▶ store: install, apply the decided slots
//!                                               ├─▶ clients: answer
//!                                               └─▶ disk: append the group (fsync if asked)
//!   WAL progress ─▶ persisted(group) ─▶ the next ready() releases what waited for it
//! ```
//!
//! The group goes last because, while the WAL thread is idle, the loop commits it
//! itself ([`crate::wal::LoopCommit`]): the messages of the turn must not wait for that
//! fsync, and what waited for the group is released by another `ready()` in the same
//! turn.
//!
//! The core alone decides what may leave before which fsync ([`paxos::gate`]); the loop
//! never holds anything back itself.
//!
//! ## Who answers, who publishes
//! The node that received a client request answers it when the command is applied here
//! (`(client_id, seq)` matched in the store's replies), or when the core rejects it.
//! A linearizable read (`get`, `history`, `list_*`) takes no slot: the core releases it
//! ([`Ready::reads`]) once the leader confirmed it still leads after the read arrived
//! and this node applied up to the index it gave ([`paxos::reads`]); the node then reads
//! its own store. A
//! committed chat message is published once, by the node that is **leader** when it
//! applies the slot: exactly one node leads a ballot, so duplicates can only come from
//! an overlap during a change of leader, and subscribers drop them by message id.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use std::collections::HashMap;

use paxos::{MAX_HELD_GROUPS, ReadId, Ready, Replica, Slot, Value};
use proto::client::{Command, Op, session_key};
use proto::{Consistency, Error, ErrorCode, Reply};
use store::Store;
use tokio_util::sync::CancellationToken;
use transport::Multipart;

use crate::clients::{Clients, Incoming};
use crate::clock::ClockSync;
use crate::config::Config;
use crate::crash::{CrashPoint, Crasher};
use crate::disk::{Disk, Durable};
use crate::error::NodeError;
use crate::files::write_atomically;
use crate::http::StatusReport;
use crate::inputs::{Event, Inputs};
use crate::logins::{Logins, Refusal};
use crate::metrics::Metrics;
use crate::observe::Observer;
use crate::peers::{Inbound, Peers};
use crate::reference::ReferenceLink;
use crate::report::{Facts, Reporter};
use crate::snapshots::Snapshots;

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The rooms the loop routes between.
#[derive(Debug)]
pub(crate) struct Rooms {
    /// The proxy: Paxos, clock and chat messages out; what the peers sent, in.
    pub(crate) peers: Peers,
    /// The broker: requests in, answers out.
    pub(crate) clients: Clients,
    /// Chat logins: passwords checked or hashed before the proposal.
    pub(crate) logins: Logins,
    /// The WAL writer.
    pub(crate) disk: Disk,
    /// Registration and heartbeats at the reference.
    pub(crate) reference: ReferenceLink,
    /// The Berkeley clock.
    pub(crate) clock: ClockSync,
    /// store.json.
    pub(crate) snapshots: Snapshots,
    /// `/status`.
    pub(crate) reporter: Reporter,
    /// Role changes and phase timings.
    pub(crate) observer: Observer,
    /// `--crash-at`.
    pub(crate) crasher: Crasher,
}

/// The loop's state: the core, the state machine, and the rooms.
#[derive(Debug)]
pub(crate) struct Driver {
    config: Config,
    replica: Replica,
    store: Store,
    rooms: Rooms,
    metrics: Metrics,
    /// Linearizable reads the core holds: the `(client_id, seq)` of the waiting request
    /// (which holds the command), by the id the core will hand back; bounded by the core's
    /// limit on waiting reads (every id comes back once: served or rejected).
    reads: HashMap<ReadId, (u64, u64)>,
    next_read: ReadId,
}

impl Driver {
    /// A loop over `replica` and `store`.
    pub(crate) fn new(
        config: Config,
        replica: Replica,
        store: Store,
        rooms: Rooms,
        metrics: Metrics,
    ) -> Driver {
        Driver {
            config,
            replica,
            store,
            rooms,
            metrics,
            reads: HashMap::new(),
            next_read: 0,
        }
    }

    /// Runs until `shutdown`, then flushes: every record synced, every held output
    /// released, store.json written.
    pub(crate) async fn run(
        mut self,
        mut inputs: Inputs,
        shutdown: CancellationToken,
    ) -> Result<(), NodeError> {
        self.rooms.clients.announce(true);
        self.rooms.reference.register();
        // Slots recovered from the WAL beyond store.json come out of the first ready().
        self.turn().await?;
        let mut buffer = Vec::new();
        let mut requests = Vec::new();
        loop {
            let reading = self.replica.held_groups() < MAX_HELD_GROUPS;
            let event = inputs.next(&shutdown, reading).await;
            if matches!(event, Event::Shutdown) {
                break;
            }
            self.route(event).await?;
            if reading {
                // What arrived meanwhile joins this turn: one ready(), one slot, one group.
                inputs.drain_peers(&mut buffer);
                for frames in buffer.drain(..) {
                    self.on_peer(&frames);
                }
                inputs.drain_clients(&mut requests);
                for (broker, frames) in requests.drain(..) {
                    self.on_client(broker, frames);
                }
            }
            self.turn().await?;
        }
        self.shutdown().await
    }

    /// Hands one event to the room it concerns.
    async fn route(&mut self, event: Event) -> Result<(), NodeError> {
        let now = Instant::now();
        match event {
            Event::Shutdown => {}
            Event::Closed(what) => {
                return Err(NodeError::Internal(format!("{what} closed unexpectedly")));
            }
            Event::Durable(progress) => {
                let durable = self.rooms.disk.progress(&progress)?;
                self.persisted(durable);
            }
            Event::Tick => {
                self.replica.tick();
                if self.rooms.peers.tick(now) {
                    // The core retransmits its own messages; a follower's forwards of
                    // client commands are not, and some may have died in the old proxy.
                    self.propose_waiting_again();
                }
                self.rooms.clients.expire(now);
                if let Some(adjust) = self.rooms.clock.tick(now) {
                    self.rooms.peers.send_clock(&adjust);
                    self.note_clock();
                }
            }
            Event::BrokerHeartbeat => self.rooms.clients.announce(false),
            Event::ReferenceHeartbeat => self.rooms.reference.beat(now),
            Event::ClockRound => {
                if self.rooms.observer.leads() {
                    for message in self.rooms.clock.start_round(now, wall_ms()) {
                        self.rooms.peers.send_clock(&message);
                    }
                    self.note_clock();
                }
            }
            Event::Status(query) => {
                let _ = query.send(self.report(now));
            }
            Event::Snapshot(written) => {
                if let Some((slot, bytes)) = self.rooms.snapshots.written(written) {
                    self.rooms.crasher.reached(CrashPoint::AfterSnapshot);
                    // The core serves these bytes to lagging peers and truncates its log.
                    self.replica.snapshot_taken(slot, bytes);
                }
            }
            Event::Reference(frames) => {
                for (rank, name, status_addr) in self.rooms.reference.receive(&frames, now) {
                    self.rooms.peers.learn_member(rank, &name, &status_addr);
                }
            }
            Event::Login(checked) => match self.rooms.logins.finish(checked, now) {
                Ok((route, command)) => self.propose_for(route, command, now),
                Err(refusal) => self.refuse(refusal),
            },
            Event::Peer(frames) => self.on_peer(&frames),
            Event::Client(broker, frames) => self.on_client(broker, frames),
        }
        Ok(())
    }

    fn on_peer(&mut self, frames: &[Vec<u8>]) {
        match self.rooms.peers.receive(frames) {
            Some(Inbound::Paxos { envelope, .. }) => self.replica.step(envelope),
            Some(Inbound::Clock { sender, message }) => {
                let leader = self.replica.status().leader;
                let leader = leader.and_then(|r| self.rooms.peers.name_of(r));
                let leader = leader.map(str::to_owned);
                let answer =
                    self.rooms
                        .clock
                        .on_message(&sender, message, leader.as_deref(), wall_ms());
                if let Some(answer) = answer {
                    self.rooms.peers.send_clock(&answer);
                }
                self.note_clock();
            }
            Some(Inbound::Members { .. } | Inbound::Probe(_)) | None => {}
        }
    }

    fn on_client(&mut self, broker: usize, frames: Multipart) {
        let applied = self.store.applied_slot();
        let incoming = self.rooms.clients.receive(broker, frames, applied);
        let Some(Incoming { route, request }) = incoming else {
            return;
        };
        let now = Instant::now();
        if request.op.is_internal() {
            let error = Error::new(
                ErrorCode::BadRequest,
                format!(
                    "{} is proposed by nodes only; a client sends login",
                    request.op.name()
                ),
            );
            let op = request.op.name();
            self.rooms
                .clients
                .reply(route, op, request.seq, Err(error), applied);
            return;
        }
        if matches!(request.op, Op::Login { .. }) {
            let store = &self.store;
            let started = self
                .rooms
                .logins
                .start(route, request, |user| store.password(user), now);
            if let Err(refusal) = started {
                self.refuse(refusal);
            }
            return;
        }
        if request.consistency == Consistency::Local && request.op.is_read_only() {
            let session = request.credential.as_deref().map(session_key);
            let result = self.store.read_local(&request.op, session.as_deref());
            let op = request.op.name();
            self.rooms
                .clients
                .reply(route, op, request.seq, result, applied);
            return;
        }
        let command = Command::from(&request);
        if is_read_index_read(&command) {
            self.read_for(route, command, now);
        } else {
            self.propose_for(route, command, now);
        }
    }

    /// Remembers who waits for the read and hands it to the core's read-index path.
    fn read_for(&mut self, route: crate::pending::Route, command: Command, now: Instant) {
        let applied = self.store.applied_slot();
        if !self.rooms.clients.wait_for(route, &command, now, applied) {
            return;
        }
        self.next_read = self.next_read.wrapping_add(1);
        let id = self.next_read;
        match self.replica.read(id) {
            Ok(()) => {
                self.reads.insert(id, (command.client_id, command.seq));
            }
            Err(error) => self.answer(command.client_id, command.seq, Err(error), now),
        }
    }

    /// Answers a request refused before it reached the core.
    fn refuse(&mut self, refusal: Refusal) {
        let Refusal { route, seq, error } = refusal;
        let applied = self.store.applied_slot();
        self.rooms
            .clients
            .reply(route, "login", seq, Err(error), applied);
    }

    /// Remembers who waits for `command` and hands it to the core.
    fn propose_for(&mut self, route: crate::pending::Route, command: Command, now: Instant) {
        let applied = self.store.applied_slot();
        let (client_id, seq) = (command.client_id, command.seq);
        if !self.rooms.clients.wait_for(route, &command, now, applied) {
            return;
        }
        match self.replica.propose(command) {
            Ok(()) => {
                self.metrics.proposals.inc();
                self.rooms.crasher.request_taken();
            }
            Err(error) => self.answer(client_id, seq, Err(error), now),
        }
    }

    /// Tells the core how far its groups are durable.
    fn persisted(&mut self, durable: Durable) {
        if durable.accept_record {
            self.rooms.crasher.reached(CrashPoint::AfterAcceptPersist);
        }
        self.replica.persisted(durable.group);
    }

    /// Takes the core's [`Ready`] and carries it out — again while the group it wrote
    /// was committed on the loop, so what waited for that group leaves in this turn;
    /// then looks at what changed.
    async fn turn(&mut self) -> Result<(), NodeError> {
        loop {
            let ready = self.replica.ready();
            match self.carry_out(ready).await? {
                Some(durable) => self.persisted(durable),
                None => break,
            }
        }
        let now = Instant::now();
        let status = self.replica.status();
        if self.rooms.observer.after_turn(&status, now) {
            self.propose_waiting_again();
        }
        self.rooms.snapshots.maybe_start(&self.store, now);
        Ok(())
    }

    /// Carries out a `Ready`: everything in it may happen now, in this order, the
    /// group last: when the WAL thread is idle the loop commits it itself, and nothing
    /// of this turn waits for that (the gate put here only what needs no such wait).
    /// Returns how far the groups are durable when it was committed here.
    async fn carry_out(&mut self, ready: Ready) -> Result<Option<Durable>, NodeError> {
        if ready.is_empty() {
            return Ok(None);
        }
        let Ready {
            persist,
            messages,
            install_snapshot,
            decided,
            rejected,
            reads,
            rejected_reads,
        } = ready;
        let now = Instant::now();
        for envelope in &messages {
            self.rooms.peers.send(envelope);
        }
        self.rooms.observer.sent(&messages, now);
        self.rooms.crasher.sent(&messages);
        if let Some((slot, bytes)) = install_snapshot {
            let store = Store::restore(&bytes, self.config.store_config()).map_err(|e| {
                NodeError::Internal(format!("snapshot of slot {slot} from a peer: {e}"))
            })?;
            assert!(
                store.applied_slot() == slot,
                "a snapshot of slot {slot} holds applied slot {}",
                store.applied_slot()
            );
            tracing::info!(slot, "installed a snapshot from a peer");
            self.store = store;
            // The WAL does not hold the slots the snapshot covers: make it durable soon.
            self.rooms.snapshots.soon();
        }
        let leads = self.rooms.observer.leads();
        for (slot, value) in decided {
            self.apply(slot, value, leads, now);
        }
        for id in reads {
            // A request forgotten meanwhile (expired, or answered already) has nobody
            // left to answer; and only a read may be served here (a client that reused
            // its seq for a write finds the write in the table: that one takes a slot).
            let Some((client_id, seq)) = self.reads.remove(&id) else {
                continue;
            };
            let Some(command) = self.rooms.clients.waiting_command(client_id, seq) else {
                continue;
            };
            if !is_read_index_read(command) {
                continue;
            }
            let result = self
                .store
                .read_local(&command.op, command.session.as_deref());
            self.answer(client_id, seq, result, now);
        }
        for (command, error) in rejected {
            self.answer(command.client_id, command.seq, Err(error), now);
        }
        for (id, error) in rejected_reads {
            if let Some((client_id, seq)) = self.reads.remove(&id) {
                self.answer(client_id, seq, Err(error), now);
            }
        }
        match persist {
            Some(group) => self.rooms.disk.append(group).await,
            None => Ok(None),
        }
    }

    fn apply(&mut self, slot: Slot, value: Value, leads: bool, now: Instant) {
        let applied = self.store.apply(slot, value.lamport, &value.commands);
        self.metrics.decided_slots.inc();
        self.metrics.applied_slot.set(slot as i64);
        self.metrics
            .batch_commands
            .observe(value.commands.len() as f64);
        self.rooms.observer.applied(slot, now);
        for reply in applied.replies {
            self.answer(reply.client_id, reply.seq, reply.result, now);
        }
        if leads {
            for message in applied.posted {
                self.rooms.peers.send_live(message);
            }
        }
    }

    /// Answers the client waiting here for `(client_id, seq)`, if any.
    fn answer(&mut self, client_id: u64, seq: u64, result: Result<Reply, Error>, now: Instant) {
        if self.rooms.clients.is_waiting(client_id, seq) {
            self.rooms.crasher.reached(CrashPoint::BeforeReply);
        }
        let applied = self.store.applied_slot();
        self.rooms
            .clients
            .answer(client_id, seq, result, now, applied);
    }

    /// A new leader is known: hand it the commands of every client still waiting here.
    /// Those this node forwarded to a leader that died are lost otherwise until the
    /// client retries; those that did reach the log take effect once anyway (the store's
    /// session table answers the second copy with the first one's result).
    fn propose_waiting_again(&mut self) {
        let mut proposed = 0usize;
        let commands = self.rooms.clients.waiting_commands();
        // Reads are the core's to ask again, of the new leader.
        for command in commands.into_iter().filter(|c| !is_read_index_read(c)) {
            if self.replica.propose(command).is_err() {
                break; // full: the clients' own retries will do
            }
            proposed += 1;
        }
        if proposed > 0 {
            tracing::debug!(proposed, "handed waiting commands to the new leader");
        }
    }

    fn note_clock(&self) {
        self.metrics
            .clock_offset_ms
            .set(self.rooms.clock.offset_ms());
    }

    fn report(&mut self, now: Instant) -> StatusReport {
        let status = self.replica.status();
        let facts = Facts {
            pending_requests: self.rooms.clients.len(),
            snapshot_slot: self.rooms.snapshots.slot(),
            registered: self.rooms.reference.registered(),
            reference_last_reply_ms_ago: self.rooms.reference.last_reply_ms_ago(now),
            clock_offset_ms: self.rooms.clock.offset_ms(),
            proxy: self.rooms.peers.proxy().to_owned(),
            auth: self.rooms.peers.auth_report(),
            status_addrs: self.rooms.peers.status_addrs().clone(),
            proxies: self.rooms.peers.proxies().to_vec(),
            brokers: self.rooms.clients.brokers_heard(now),
        };
        let peers = &self.rooms.peers;
        self.rooms
            .reporter
            .report(&status, &self.store, |rank| peers.name_of(rank), facts)
    }

    /// The graceful end: every appended record synced, every held output released,
    /// store.json written.
    async fn shutdown(mut self) -> Result<(), NodeError> {
        tracing::info!("flushing the WAL and writing store.json");
        let ready = self.replica.ready();
        // A group committed on the loop here is covered by the sync below.
        let _committed_here = self.carry_out(ready).await?;
        let last = self.rooms.disk.sync().await?;
        self.replica.persisted(last);
        let released = self.replica.ready();
        // Nothing runs after this that would wait for the group it may write.
        let _committed_here = self.carry_out(released).await?;
        let path = self.config.node_dir().join("store.json");
        write_atomically(&path, &self.store.to_json(self.rooms.peers.own_name()))?;
        tracing::info!(
            applied_slot = self.store.applied_slot(),
            path = %path.display(),
            "store.json written; bye"
        );
        Ok(())
    }
}

/// Whether a client's command is served by the read-index path rather than a log slot:
/// every read-only op but `noop` (which a client sends to have a slot decided).
fn is_read_index_read(command: &Command) -> bool {
    command.op.is_read_only() && !matches!(command.op, Op::Noop)
}
