//! The driver loop: the one place that owns the replica, the store and the sockets.
//!
//! Each turn it takes every input that is waiting (peer messages, client requests,
//! reference answers, ticks), steps them all into the Paxos core, calls `ready()` once,
//! hands the records to the WAL thread as one group, and releases the outputs of every
//! group the disk has made durable — in order:
//!
//! ```text
//!   inputs ─▶ step/propose/tick ─▶ ready() ─┬─▶ WAL thread: append + one fdatasync
//!                                           └─▶ held until durable ─▶ send, apply, reply
//! ```
//!
//! ## What waits for the disk
//! A group is *released* (its messages sent, its decided slots applied, its clients
//! answered) once every **gating** record ([`crate::wal::gates_messages`]: promises,
//! rounds, accepted values) of that group and of every earlier group is durable. So an
//! acceptor's `Promise` and `Accepted` never leave before what they vouch for is on disk,
//! and a client hears "done" only after a quorum durably accepted its command.
//!
//! One refinement keeps a write at one fsync of latency instead of two: the leader's
//! own `Accept` broadcasts (phase 2a) leave at once, while its own Accept record is
//! being written. An `Accept` vouches for nothing the leader's acceptor stored; it
//! depends only on the ballot, whose `Round`/`Promise` records were durable before its
//! `Prepare` left (and we check that no such record is still in flight). What the
//! leader's vote is worth is protected where it counts: the `Decide`, the apply and the
//! reply come in a later group, held until the leader's Accept record is durable. This is
//! the leader-writes-in-parallel optimisation of Raft (Ongaro's thesis, §10.2.1).
//! `Decide` records gate nothing: a decided value is already durably accepted by a
//! quorum.
//!
//! A second refinement keeps the reply from waiting for the *next* slot's fsync: the
//! leader decides slot *n* and cuts slot *n+1* in the same turn, so that group holds the
//! Accept record of *n+1*. The group's decisions — `Decide`/`Decided` messages, applies,
//! replies, rejections — vouch for a quorum's votes on *n*, the leader's own among them,
//! which an earlier group wrote; they need every **earlier** group durable, not this
//! one ([`crate::gate::Admission::decisions_need_seq`]). When the group itself holds the
//! ballot or an accepted value of a slot it decides (one replica deciding alone, a new
//! ballot), the decisions wait for the group as before.
//!
//! ## Who answers, who publishes
//! The node that received a client request answers it when the command is applied here
//! (`(client_id, seq)` matched in the store's replies), or when the core rejects it. A
//! committed chat message is published once, by the node that is **leader** when it
//! applies the slot: exactly one node leads a ballot, so duplicates can only come from
//! an overlap during a change of leader, and subscribers drop them by message id.
//!
//! ## Names
//! Paxos messages are published as `[topic, sender name, body(Envelope)]`: the sender's
//! name travels with every message, so a node learns rank → name from its peers'
//! heartbeats as well as from the reference's membership, and keeps the map in
//! `node.json`. A message for a rank whose name is not known yet goes on the `repl`
//! broadcast topic (every node's core ignores envelopes addressed to another rank).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use paxos::{Envelope, Message, Rank, Ready, Record, Replica, Role, Slot, Value};
use proto::client::{ChatMessage, Command, Target};
use proto::fabric::{MembershipEvent, NodeToBroker, RefReply, RefRequest};
use proto::limits::MAX_ROUTING_FRAMES;
use proto::{Error, ErrorCode, LimitError, Request, Response, Wire, topic};
use serde::{Deserialize, Serialize};
use store::{Digest, Store};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use transport::{Multipart, Receiver, Sender};

use crate::NodeError;
use crate::clock::{Berkeley, ClockMessage};
use crate::config::{Config, CrashPoint, Crasher};
use crate::files::{FileError, Identity, write_atomically};
use crate::gate::Gate;
use crate::http::{PeerReport, StatusQuery, StatusReport};
use crate::metrics::{Metrics, RequestLabels};
use crate::pending::PendingRequests;
use crate::wal::{WalProgress, WalRequest};

/// Most messages taken from one socket per turn, so that one busy input cannot starve
/// the others or delay the tick.
pub const MAX_DRAIN_PER_TURN: usize = 1024;
/// Most output groups held for the disk; past it the loop stops reading peers and
/// clients until the WAL catches up.
pub const MAX_HELD_GROUPS: usize = 1024;
/// A replica this many slots behind the best peer it hears is not ready (`/readyz`).
pub const READY_MAX_LAG_SLOTS: u64 = 64;
/// Most phase-2 start times remembered (for the latency histogram); at least the window.
pub const MAX_TRACKED_PROPOSALS: usize = 2 * paxos::MAX_WINDOW_SLOTS;
/// How long the leader collects clock readings after a poll.
pub const CLOCK_COLLECT: Duration = Duration::from_millis(500);

/// A chat message as published on the proxy: `[topic, body(LiveMessage)]`. The same
/// encoding as [`ChatMessage`]; this wrapper gives it the codec's validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LiveMessage(pub ChatMessage);

impl Wire for LiveMessage {
    fn validate(&self) -> Result<(), LimitError> {
        let too_long = |field, len: usize, max| {
            if len > max {
                Err(LimitError::TooLong { field, len, max })
            } else {
                Ok(())
            }
        };
        too_long("from", self.0.from.len(), proto::limits::MAX_NAME_BYTES)?;
        too_long("text", self.0.text.len(), proto::limits::MAX_TEXT_BYTES)
    }
}

/// The topic of a chat message's live delivery.
pub fn live_topic(message: &ChatMessage) -> String {
    match &message.to {
        Target::Channel(name) => topic::channel(name),
        Target::User(name) => topic::user(name),
    }
}

/// The broadcast topic of an envelope from `rank` addressed to every node: the Paxos
/// broadcasts name their sender ([`topic::from_rank`]), so that it does not receive them
/// back; the rare others go on `repl`.
pub fn broadcast_topic(message: &Message, rank: Rank) -> String {
    let kind = match message {
        Message::Prepare { .. } => topic::PAXOS_PREPARE,
        Message::Accept { .. } => topic::PAXOS_ACCEPT,
        Message::Accepted { .. } => topic::PAXOS_ACCEPTED,
        Message::Decide { .. } => topic::PAXOS_DECIDE,
        Message::Heartbeat { .. } => topic::HEARTBEAT,
        _ => return topic::REPL.to_owned(),
    };
    topic::from_rank(kind, rank)
}

/// Every topic whose messages the core should see, given this node's name and rank:
/// the peers' ranked broadcasts, `repl`, `election` and `to.<name>`. Compared whole:
/// SUB filters by prefix, so `to.node-1` also lets `to.node-10` through.
pub fn paxos_topics(name: &str, rank: Rank, cluster_size: u32) -> Vec<Vec<u8>> {
    let mut topics: Vec<Vec<u8>> = topic::peer_broadcasts(rank, cluster_size)
        .into_iter()
        .map(String::into_bytes)
        .collect();
    topics.push(topic::REPL.as_bytes().to_vec());
    topics.push(topic::ELECTION.as_bytes().to_vec());
    topics.push(topic::to(name).into_bytes());
    topics
}

/// Whether a message may leave before the records of its group are durable: the
/// leader's phase-2a `Accept` (see the module page; only once its ballot is durable).
pub fn may_leave_early(envelope: &Envelope) -> bool {
    envelope.to.is_none() && matches!(envelope.message, Message::Accept { .. })
}

/// Whether a message never waits for the disk: a follower's `Forward` of client commands
/// vouches for nothing this replica stored, and the leader cuts its next batch when the
/// `Accepted` it travels with arrives, so it must not arrive later than that `Accepted`.
pub fn never_waits(envelope: &Envelope) -> bool {
    matches!(envelope.message, Message::Forward { .. })
}

/// The highest slot a message announces as decided (`Decide`, `Decided`); `None` for
/// the others. Such messages vouch for a quorum's votes, not for this replica's newest
/// records (see [`crate::gate`]).
pub fn decision_slot(envelope: &Envelope) -> Option<Slot> {
    match &envelope.message {
        Message::Decide { slot, .. } => Some(*slot),
        Message::Decided { entries } => entries.iter().map(|e| e.slot).max(),
        _ => None,
    }
}

/// The outputs of one `Ready`, waiting for the disk.
#[derive(Debug, Default)]
struct Held {
    /// Released once `durable_seq >= needs_seq`.
    needs_seq: u64,
    messages: Vec<Envelope>,
    install_snapshot: Option<(Slot, Arc<Vec<u8>>)>,
    decided: Vec<(Slot, Value)>,
    rejected: Vec<(Command, Error)>,
    /// The group held an Accept record (crash points).
    accept_record: bool,
}

/// The three sockets the loop sends on.
#[derive(Debug)]
pub(crate) struct Senders {
    pub(crate) publisher: Sender,
    pub(crate) broker: Sender,
    pub(crate) reference: Sender,
}

/// The inputs the loop waits on.
#[derive(Debug)]
pub(crate) struct Inputs {
    pub(crate) subscriber: Receiver,
    pub(crate) broker: Receiver,
    pub(crate) reference: Receiver,
    pub(crate) status: mpsc::Receiver<StatusQuery>,
    pub(crate) wal_progress: watch::Receiver<WalProgress>,
}

/// Everything the loop owns.
pub(crate) struct Driver {
    pub(crate) config: Config,
    pub(crate) name: String,
    pub(crate) rank: Rank,
    pub(crate) replica: Replica,
    pub(crate) store: Store,
    pub(crate) identity: Identity,
    pub(crate) senders: Senders,
    pub(crate) wal: mpsc::Sender<WalRequest>,
    pub(crate) metrics: Metrics,
    pub(crate) crasher: Crasher,

    pending: PendingRequests,
    held: VecDeque<Held>,
    /// WAL group numbers and how far they are durable.
    gate: Gate,
    request_in_flight: bool,

    role: Role,
    /// The leader the core followed at the end of the last turn.
    leader: Option<Rank>,
    candidacy_started: Option<Instant>,
    proposed_at: BTreeMap<Slot, Instant>,

    registered: bool,
    reference_last_reply: Option<Instant>,

    clock_offset_ms: i64,
    clock_round: Option<(Berkeley, Instant)>,
    clock_rounds: u64,

    snapshot_slot: Slot,
    snapshot_at: Instant,
    snapshot_in_flight: bool,
    snapshot_now: bool,
    snapshot_tx: mpsc::Sender<SnapshotDone>,
    snapshot_rx: Option<mpsc::Receiver<SnapshotDone>>,

    digest_cache: Option<(Slot, Digest)>,
    /// [`paxos_topics`] of this node.
    paxos_topics: Vec<Vec<u8>>,
}

/// A written store.json: its slot and the snapshot bytes to serve to peers.
type SnapshotDone = Result<(Slot, Vec<u8>), FileError>;

/// What woke the loop.
enum Event {
    Shutdown,
    Peer(Multipart),
    Client(Multipart),
    Reference(Multipart),
    Tick,
    BrokerHeartbeat,
    ReferenceHeartbeat,
    ClockRound,
    Status(StatusQuery),
    Durable,
    Snapshot(SnapshotDone),
    Closed(&'static str),
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Config,
        rank: Rank,
        replica: Replica,
        store: Store,
        identity: Identity,
        senders: Senders,
        wal: mpsc::Sender<WalRequest>,
        metrics: Metrics,
    ) -> Driver {
        let (snapshot_tx, snapshot_rx) = mpsc::channel(1);
        let crasher = Crasher::new(config.crash_at);
        let snapshot_slot = store.applied_slot();
        let topics = paxos_topics(&config.name(), rank, config.cluster_size);
        Driver {
            name: config.name(),
            config,
            rank,
            replica,
            store,
            identity,
            senders,
            wal,
            metrics,
            crasher,
            pending: PendingRequests::new(),
            held: VecDeque::new(),
            gate: Gate::new(),
            request_in_flight: false,
            role: Role::Follower,
            leader: None,
            candidacy_started: None,
            proposed_at: BTreeMap::new(),
            registered: false,
            reference_last_reply: None,
            clock_offset_ms: 0,
            clock_round: None,
            clock_rounds: 0,
            snapshot_slot,
            snapshot_at: Instant::now(),
            snapshot_in_flight: false,
            snapshot_now: false,
            snapshot_tx,
            snapshot_rx: Some(snapshot_rx),
            digest_cache: None,
            paxos_topics: topics,
        }
    }

    /// Runs until `shutdown`, then flushes: WAL synced, held outputs released, store.json
    /// written.
    pub(crate) async fn run(
        mut self,
        mut inputs: Inputs,
        shutdown: CancellationToken,
    ) -> Result<(), NodeError> {
        let mut snapshot_rx = self
            .snapshot_rx
            .take()
            .ok_or_else(|| NodeError::Internal("driver started twice".to_owned()))?;
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut broker_heartbeat = tokio::time::interval(self.config.broker_heartbeat);
        broker_heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reference_heartbeat = tokio::time::interval(self.config.reference_heartbeat);
        reference_heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut clock_timer = tokio::time::interval(self.config.clock_interval);
        clock_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        self.send_broker(NodeToBroker::Ready {
            node: self.name.clone(),
        });
        self.send_register();
        // Slots recovered from the WAL beyond store.json come out of the first ready().
        let ready = self.replica.ready();
        self.handle_ready(ready).await?;
        self.release()?;

        let mut buffer = Vec::with_capacity(MAX_DRAIN_PER_TURN);
        loop {
            let reading = self.held.len() < MAX_HELD_GROUPS;
            // `biased`: the rare events (timers, status, snapshots) come first, so that a
            // steady stream of peer and client messages can never starve them (a missed
            // broker heartbeat would take this node out of the ring).
            let event = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Event::Shutdown,
                changed = inputs.wal_progress.changed() => match changed {
                    Ok(()) => Event::Durable,
                    Err(_) => Event::Closed("WAL writer"),
                },
                _ = tick.tick() => Event::Tick,
                _ = broker_heartbeat.tick() => Event::BrokerHeartbeat,
                _ = reference_heartbeat.tick() => Event::ReferenceHeartbeat,
                _ = clock_timer.tick() => Event::ClockRound,
                Some(query) = inputs.status.recv() => Event::Status(query),
                Some(done) = snapshot_rx.recv() => Event::Snapshot(done),
                message = inputs.reference.recv() => match message {
                    Some(m) => Event::Reference(m),
                    None => Event::Closed("reference socket"),
                },
                message = inputs.subscriber.recv(), if reading => match message {
                    Some(m) => Event::Peer(m),
                    None => Event::Closed("SUB socket"),
                },
                message = inputs.broker.recv(), if reading => match message {
                    Some(m) => Event::Client(m),
                    None => Event::Closed("broker socket"),
                },
            };
            match event {
                Event::Shutdown => break,
                Event::Closed(what) => {
                    return Err(NodeError::Internal(format!("{what} closed unexpectedly")));
                }
                Event::Durable => {
                    let progress = inputs.wal_progress.borrow_and_update().clone();
                    if let Some(error) = progress.error {
                        return Err(NodeError::Wal(error));
                    }
                    self.gate.durable(progress.durable_seq);
                }
                Event::Tick => self.on_tick(),
                Event::Peer(message) => {
                    self.on_peer(message);
                    if reading {
                        drain(&mut inputs.subscriber, &mut buffer);
                        for message in buffer.drain(..) {
                            self.on_peer(message);
                        }
                    }
                }
                Event::Client(message) => {
                    self.on_client(message);
                    drain(&mut inputs.broker, &mut buffer);
                    for message in buffer.drain(..) {
                        self.on_client(message);
                    }
                }
                Event::Reference(message) => self.on_reference(message),
                Event::BrokerHeartbeat => self.send_broker(NodeToBroker::Heartbeat {
                    node: self.name.clone(),
                }),
                Event::ReferenceHeartbeat => self.reference_heartbeat(),
                Event::ClockRound => self.start_clock_round(),
                Event::Status(query) => {
                    let report = self.report();
                    let _ = query.send(report);
                }
                Event::Snapshot(done) => self.on_snapshot_written(done),
            }
            // Peers' messages and clients' requests that arrived meanwhile join this turn,
            // so one ready() (one slot, one WAL group) covers them all.
            if reading {
                drain(&mut inputs.subscriber, &mut buffer);
                for message in buffer.drain(..) {
                    self.on_peer(message);
                }
                drain(&mut inputs.broker, &mut buffer);
                for message in buffer.drain(..) {
                    self.on_client(message);
                }
            }
            let ready = self.replica.ready();
            self.handle_ready(ready).await?;
            self.release()?;
            self.after_turn();
        }
        self.shutdown(inputs).await
    }

    /// The graceful end: every appended record synced, every held output released,
    /// store.json written.
    async fn shutdown(mut self, mut inputs: Inputs) -> Result<(), NodeError> {
        tracing::info!("flushing the WAL and writing store.json");
        let ready = self.replica.ready();
        self.handle_ready(ready).await?;
        let (done, wait) = oneshot::channel();
        self.wal
            .send(WalRequest::Sync { done })
            .await
            .map_err(|_| NodeError::Wal("WAL writer stopped".to_owned()))?;
        wait.await
            .map_err(|_| NodeError::Wal("WAL writer stopped".to_owned()))?
            .map_err(NodeError::Wal)?;
        let progress = inputs.wal_progress.borrow_and_update().clone();
        self.gate.durable(progress.durable_seq);
        // The explicit sync covered every group handed over.
        self.gate.all_durable();
        self.release()?;
        let path = self.config.node_dir().join("store.json");
        write_atomically(&path, &self.store.to_json(&self.name))?;
        tracing::info!(
            applied_slot = self.store.applied_slot(),
            path = %path.display(),
            "store.json written; bye"
        );
        Ok(())
    }

    // ------------------------------------------------------------------ outputs

    /// Queues a `Ready`: its records go to the WAL thread, its outputs wait for them.
    async fn handle_ready(&mut self, ready: Ready) -> Result<(), NodeError> {
        if ready.is_empty() {
            return Ok(());
        }
        let Ready {
            persist,
            mut messages,
            install_snapshot,
            decided,
            rejected,
        } = ready;
        let accept_record = persist.iter().any(|r| matches!(r, Record::Accept { .. }));
        let decides_upto = decided
            .iter()
            .map(|(slot, _)| *slot)
            .chain(messages.iter().filter_map(decision_slot))
            .max();
        let admission = self.gate.admit(&persist, decides_upto);
        if let Some(seq) = admission.wal_seq {
            let sync = persist.iter().any(crate::wal::gates_messages);
            self.wal
                .send(WalRequest::Append {
                    seq,
                    sync,
                    records: persist,
                })
                .await
                .map_err(|_| NodeError::Wal("WAL writer stopped".to_owned()))?;
        }
        // Forwards leave now; the leader's Accepts too, unless their ballot is not
        // durable yet.
        let accepts_now = admission.accepts_may_leave_now;
        if accepts_now || messages.iter().any(never_waits) {
            let now = Instant::now();
            let (early, held): (Vec<Envelope>, Vec<Envelope>) = messages
                .into_iter()
                .partition(|m| never_waits(m) || (accepts_now && may_leave_early(m)));
            messages = held;
            for envelope in &early {
                self.note_proposal(envelope, now);
                self.publish_envelope(envelope);
            }
            if !early.is_empty() && self.request_in_flight {
                self.request_in_flight = false;
                self.crasher.reached(CrashPoint::WithPendingRequest);
            }
        }
        // The decisions go as soon as the earlier groups are durable (see the gate); the
        // rest waits for this group. Both stay in the one queue, in this order, so the
        // applies keep slot order (the next group's decisions need exactly what this
        // group's rest needs). A snapshot install keeps the whole group together.
        if admission.decisions_need_seq < admission.needs_seq && install_snapshot.is_none() {
            let (decisions, rest): (Vec<Envelope>, Vec<Envelope>) = messages
                .into_iter()
                .partition(|m| decision_slot(m).is_some());
            self.held.push_back(Held {
                needs_seq: admission.decisions_need_seq,
                messages: decisions,
                install_snapshot: None,
                decided,
                rejected,
                accept_record: false,
            });
            self.held.push_back(Held {
                needs_seq: admission.needs_seq,
                messages: rest,
                accept_record,
                ..Held::default()
            });
        } else {
            self.held.push_back(Held {
                needs_seq: admission.needs_seq,
                messages,
                install_snapshot,
                decided,
                rejected,
                accept_record,
            });
        }
        Ok(())
    }

    /// Releases, in order, every held group whose gating records are durable.
    fn release(&mut self) -> Result<(), NodeError> {
        while self
            .held
            .front()
            .is_some_and(|h| self.gate.releasable(h.needs_seq))
        {
            let Some(held) = self.held.pop_front() else {
                break;
            };
            self.release_one(held)?;
        }
        Ok(())
    }

    fn release_one(&mut self, held: Held) -> Result<(), NodeError> {
        if held.accept_record {
            self.crasher.reached(CrashPoint::AfterAcceptPersist);
        }
        let now = Instant::now();
        let mut promised = false;
        let mut decided_by_me = false;
        let mut voted = false;
        for envelope in &held.messages {
            promised |= matches!(envelope.message, Message::Promise { .. });
            voted |= matches!(envelope.message, Message::Accepted { .. });
            decided_by_me |=
                envelope.to.is_none() && matches!(envelope.message, Message::Decide { .. });
            self.note_proposal(envelope, now);
            self.publish_envelope(envelope);
        }
        if voted {
            self.replica.votes_sent();
        }
        if held.accept_record && !held.messages.is_empty() {
            self.crasher.reached(CrashPoint::AfterAcceptSend);
        }
        if promised {
            self.crasher.reached(CrashPoint::AfterPromise);
        }
        if decided_by_me {
            self.crasher.reached(CrashPoint::AfterDecide);
        }
        if !held.messages.is_empty() && self.request_in_flight {
            self.request_in_flight = false;
            self.crasher.reached(CrashPoint::WithPendingRequest);
        }
        if let Some((slot, bytes)) = held.install_snapshot {
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
            self.snapshot_now = true;
        }
        let leader = self.role == Role::Leader;
        for (slot, value) in held.decided {
            self.apply(slot, value, leader, now);
        }
        for (command, error) in held.rejected {
            self.answer(command.client_id, command.seq, Err(error), now);
        }
        Ok(())
    }

    fn apply(&mut self, slot: Slot, value: Value, leader: bool, now: Instant) {
        let applied = self.store.apply(slot, value.lamport, &value.commands);
        self.metrics.decided_slots.inc();
        self.metrics.applied_slot.set(slot as i64);
        self.metrics
            .batch_commands
            .observe(value.commands.len() as f64);
        if let Some(started) = self.proposed_at.remove(&slot) {
            self.metrics
                .phase2_seconds
                .observe(now.duration_since(started).as_secs_f64());
        }
        for reply in applied.replies {
            self.answer(reply.client_id, reply.seq, reply.result, now);
        }
        if leader {
            for message in applied.posted {
                let topic = live_topic(&message);
                match proto::encode(&LiveMessage(message)) {
                    Ok(body) => self.publish(vec![topic.into_bytes(), body]),
                    Err(e) => tracing::warn!(error = %e, "cannot encode a chat message"),
                }
            }
        }
    }

    /// Answers the client waiting here for `(client_id, seq)`, if any.
    fn answer(
        &mut self,
        client_id: u64,
        seq: u64,
        result: Result<proto::Reply, Error>,
        now: Instant,
    ) {
        let Some(waiting) = self.pending.take((client_id, seq)) else {
            return;
        };
        self.crasher.reached(CrashPoint::BeforeReply);
        self.metrics
            .request_seconds
            .observe(now.duration_since(waiting.since).as_secs_f64());
        self.reply(waiting.route, waiting.op, seq, result);
    }

    fn reply(
        &mut self,
        route: Vec<Vec<u8>>,
        op: &'static str,
        seq: u64,
        result: Result<proto::Reply, Error>,
    ) {
        let code = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        self.metrics
            .requests
            .get_or_create(&RequestLabels { op, result: code })
            .inc();
        let response = Response {
            seq,
            result,
            node: self.name.clone(),
            applied_slot: self.store.applied_slot(),
        };
        let body = match proto::encode(&response) {
            Ok(body) => body,
            Err(e) => {
                // Only an over-large reply can fail; the client gets the error instead.
                let error = Error::new(ErrorCode::TooLarge, e.to_string());
                let fallback = Response {
                    result: Err(error),
                    ..response
                };
                match proto::encode(&fallback) {
                    Ok(body) => body,
                    Err(_) => return,
                }
            }
        };
        let mut frames = route;
        frames.push(body);
        if self.senders.broker.try_send(frames).is_err() {
            self.metrics.drop("broker_queue_full");
        }
    }

    fn note_proposal(&mut self, envelope: &Envelope, now: Instant) {
        if let (None, Message::Accept { slot, .. }) = (envelope.to, &envelope.message) {
            self.proposed_at.entry(*slot).or_insert(now);
            while self.proposed_at.len() > MAX_TRACKED_PROPOSALS {
                self.proposed_at.pop_first();
            }
        }
    }

    fn publish_envelope(&mut self, envelope: &Envelope) {
        let topic = match envelope.to {
            None => broadcast_topic(&envelope.message, self.rank),
            Some(rank) => match self.identity.peers.get(&rank) {
                Some(name) => topic::to(name),
                // Unknown name: broadcast; the other cores ignore it (`to` is set).
                None => topic::REPL.to_owned(),
            },
        };
        match proto::encode(envelope) {
            Ok(body) => {
                self.metrics.messages_out.inc();
                self.publish(vec![
                    topic.into_bytes(),
                    self.name.as_bytes().to_vec(),
                    body,
                ]);
            }
            Err(e) => {
                tracing::error!(error = %e, message = envelope.message.name(), "cannot encode");
                self.metrics.drop("encode");
            }
        }
    }

    fn publish(&mut self, frames: Multipart) {
        // PUB drops for slow subscribers anyway; the protocol retransmits on ticks.
        if self.senders.publisher.try_send(frames).is_err() {
            self.metrics.drop("pub_queue_full");
        }
    }

    fn send_broker(&mut self, message: NodeToBroker) {
        match proto::encode(&message) {
            Ok(body) => {
                if self.senders.broker.try_send(vec![body]).is_err() {
                    self.metrics.drop("broker_queue_full");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode a broker message"),
        }
    }

    fn send_reference(&mut self, request: RefRequest) {
        if let Ok(body) = proto::encode(&request)
            && self.senders.reference.try_send(vec![body]).is_err()
        {
            self.metrics.drop("reference_queue_full");
        }
    }

    fn send_register(&mut self) {
        self.send_reference(RefRequest::Register {
            node: self.name.clone(),
            status_addr: self.config.status_addr().to_string(),
        });
    }

    // ------------------------------------------------------------------ inputs

    fn on_tick(&mut self) {
        self.replica.tick();
        let now = Instant::now();
        let expired = self.pending.expire(now);
        if expired > 0 {
            tracing::debug!(expired, "forgot unanswered client requests");
        }
        if let Some((_, deadline)) = &self.clock_round
            && now >= *deadline
        {
            self.finish_clock_round();
        }
    }

    fn on_peer(&mut self, frames: Multipart) {
        let Some(topic) = frames.first() else {
            return;
        };
        if topic::is(topic, topic::MEMBERSHIP) {
            self.on_membership(&frames);
            return;
        }
        if frames.len() != 3 {
            self.metrics.drop("bad_layout");
            return;
        }
        let (sender, body) = (&frames[1], &frames[2]);
        if sender.as_slice() == self.name.as_bytes() {
            return; // our own broadcast, back through the proxy
        }
        let Ok(sender) = std::str::from_utf8(sender) else {
            self.metrics.drop("bad_sender");
            return;
        };
        if proto::fabric::check_node_name(sender).is_err() {
            self.metrics.drop("bad_sender");
            return;
        }
        if topic::is(topic, topic::CLOCK) {
            match proto::decode::<ClockMessage>(body) {
                Ok(message) => self.on_clock(sender.to_owned(), message),
                Err(_) => self.metrics.drop("bad_clock"),
            }
            return;
        }
        if !self.paxos_topics.iter().any(|t| t == topic) {
            // A prefix match for someone else (`to.node-10` for `to.node-1`).
            return;
        }
        let envelope = match proto::decode::<Envelope>(body) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::debug!(error = %e, sender, "undecodable Paxos message");
                self.metrics.drop("bad_envelope");
                return;
            }
        };
        self.metrics.messages_in.inc();
        self.learn_name(envelope.from, sender);
        self.replica.step(envelope);
    }

    /// Remembers that `rank` is called `name` (a member other than us).
    fn learn_name(&mut self, rank: Rank, name: &str) {
        if rank == self.rank || rank == 0 || rank > self.config.cluster_size || name == self.name {
            return;
        }
        if self.identity.peers.get(&rank).map(String::as_str) != Some(name) {
            tracing::info!(rank, node = name, "peer name learned");
            self.identity.peers.insert(rank, name.to_owned());
            self.save_identity();
        }
    }

    fn save_identity(&mut self) {
        let path = self.config.node_dir().join("node.json");
        if let Err(e) = self.identity.save(&path) {
            tracing::warn!(error = %e, "cannot save node.json");
        }
    }

    fn on_membership(&mut self, frames: &Multipart) {
        let Some(body) = frames.last().filter(|_| frames.len() == 2) else {
            self.metrics.drop("bad_membership");
            return;
        };
        match proto::decode::<MembershipEvent>(body) {
            Ok(event) => {
                for member in event.members {
                    self.learn_name(member.rank, &member.node);
                }
            }
            Err(_) => self.metrics.drop("bad_membership"),
        }
    }

    fn on_client(&mut self, frames: Multipart) {
        let now = Instant::now();
        let routing = frames.len().saturating_sub(1);
        if routing == 0 || routing > MAX_ROUTING_FRAMES {
            self.metrics.drop("bad_client_layout");
            return;
        }
        let mut frames = frames;
        let Some(body) = frames.pop() else {
            return;
        };
        let route = frames;
        let request = match proto::decode::<Request>(&body) {
            Ok(request) => request,
            Err(e) => {
                let code = match e {
                    proto::DecodeError::TooLarge { .. }
                    | proto::DecodeError::Invalid(LimitError::TooLong { .. })
                    | proto::DecodeError::Invalid(LimitError::TooMany { .. }) => {
                        ErrorCode::TooLarge
                    }
                    _ => ErrorCode::BadRequest,
                };
                self.reply(route, "invalid", 0, Err(Error::new(code, e.to_string())));
                return;
            }
        };
        let op = request.op.name();
        if request.consistency == proto::Consistency::Local && request.op.is_read_only() {
            let result = self.store.read_local(&request.op);
            self.reply(route, op, request.seq, result);
            return;
        }
        let key = (request.client_id, request.seq);
        let command = Command::from(&request);
        match self.pending.insert(route, command.clone(), now) {
            Ok(_) => {}
            Err(_) => {
                let error = Error::new(ErrorCode::Overloaded, "too many requests wait here");
                if let Some(w) = self.pending.take(key) {
                    self.reply(w.route, op, request.seq, Err(error));
                }
                return;
            }
        }
        match self.replica.propose(command) {
            Ok(()) => {
                self.metrics.proposals.inc();
                self.request_in_flight = self.crasher.armed(CrashPoint::WithPendingRequest);
            }
            Err(error) => self.answer(request.client_id, request.seq, Err(error), now),
        }
    }

    fn on_reference(&mut self, frames: Multipart) {
        let Some(body) = frames.last().filter(|_| frames.len() == 1) else {
            self.metrics.drop("bad_reference_layout");
            return;
        };
        let reply = match proto::decode::<RefReply>(body) {
            Ok(reply) => reply,
            Err(_) => {
                self.metrics.drop("bad_reference_reply");
                return;
            }
        };
        self.reference_last_reply = Some(Instant::now());
        match reply {
            RefReply::Registered { rank, members } => {
                if rank != self.rank {
                    tracing::error!(
                        reference_rank = rank,
                        rank = self.rank,
                        "the reference gives this node another rank than the one in node.json; \
                         keeping the persisted rank (its promises are made under it)"
                    );
                }
                if !self.registered {
                    tracing::info!(rank, "registered with the reference");
                }
                self.registered = true;
                for member in members {
                    self.learn_name(member.rank, &member.node);
                }
            }
            RefReply::HeartbeatAck { known } => {
                if !known {
                    tracing::info!("the reference forgot this node: registering again");
                    self.registered = false;
                    self.send_register();
                }
            }
            RefReply::Members(members) => {
                for member in members {
                    self.learn_name(member.rank, &member.node);
                }
            }
            RefReply::Error(error) => tracing::warn!(%error, "the reference refused a request"),
        }
    }

    fn reference_heartbeat(&mut self) {
        let silent = self
            .reference_last_reply
            .is_none_or(|t| t.elapsed() > 3 * self.config.reference_heartbeat);
        if silent && self.registered {
            tracing::warn!("the reference does not answer; serving with the last known membership");
            self.registered = false;
        }
        if self.registered {
            self.send_reference(RefRequest::Heartbeat {
                node: self.name.clone(),
            });
        } else {
            self.send_register();
        }
    }

    // ------------------------------------------------------------------ clock

    /// This node's wall clock with its skew and Berkeley offset, in Unix ms.
    fn now_ms(&self) -> i64 {
        unix_ms() + self.config.clock_skew_ms + self.clock_offset_ms
    }

    fn publish_clock(&mut self, message: &ClockMessage) {
        if let Ok(body) = proto::encode(message) {
            self.publish(vec![
                topic::CLOCK.as_bytes().to_vec(),
                self.name.as_bytes().to_vec(),
                body,
            ]);
        }
    }

    fn start_clock_round(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if self.clock_round.is_some() {
            self.finish_clock_round();
        }
        self.clock_rounds += 1;
        let round = self.clock_rounds;
        self.clock_round = Some((
            Berkeley::start(round, &self.name, self.now_ms()),
            Instant::now() + CLOCK_COLLECT,
        ));
        self.publish_clock(&ClockMessage::Poll { round });
    }

    fn finish_clock_round(&mut self) {
        let Some((round, _)) = self.clock_round.take() else {
            return;
        };
        let number = round.round();
        let corrections = round.finish();
        if let Some((_, own)) = corrections.iter().find(|(n, _)| *n == self.name) {
            self.adjust_clock(*own);
        }
        self.publish_clock(&ClockMessage::Adjust {
            round: number,
            corrections,
        });
    }

    fn adjust_clock(&mut self, correction_ms: i64) {
        self.clock_offset_ms += correction_ms;
        self.metrics.clock_offset_ms.set(self.clock_offset_ms);
        if correction_ms != 0 {
            tracing::debug!(
                correction_ms,
                offset_ms = self.clock_offset_ms,
                "clock adjusted"
            );
        }
    }

    fn on_clock(&mut self, sender: String, message: ClockMessage) {
        match message {
            ClockMessage::Poll { round } => {
                let reading = ClockMessage::Reading {
                    round,
                    leader: sender,
                    time_ms: self.now_ms(),
                };
                self.publish_clock(&reading);
            }
            ClockMessage::Reading {
                round,
                leader,
                time_ms,
            } => {
                if leader != self.name {
                    return;
                }
                let now = self.now_ms();
                if let Some((berkeley, _)) = &mut self.clock_round {
                    berkeley.reading(round, &sender, time_ms, now);
                }
            }
            ClockMessage::Adjust { corrections, .. } => {
                // Only the leader we follow sets our clock.
                let leader = self.replica.status().leader;
                let from_leader = leader
                    .and_then(|r| self.identity.peers.get(&r))
                    .is_some_and(|name| *name == sender);
                if !from_leader {
                    return;
                }
                if let Some((_, correction)) = corrections.iter().find(|(n, _)| *n == self.name) {
                    self.adjust_clock(*correction);
                }
            }
        }
    }

    // ------------------------------------------------------------------ snapshots

    fn after_turn(&mut self) {
        let status = self.replica.status();
        if status.leader != self.leader {
            self.leader = status.leader;
            if self.leader.is_some() {
                self.propose_waiting_again();
            }
        }
        let role = status.role;
        if role != self.role {
            let now = Instant::now();
            match role {
                Role::Candidate => {
                    self.metrics.elections.inc();
                    self.candidacy_started = Some(now);
                }
                Role::Leader => {
                    self.metrics.leaderships.inc();
                    if let Some(started) = self.candidacy_started.take() {
                        self.metrics
                            .phase1_seconds
                            .observe(now.duration_since(started).as_secs_f64());
                    }
                    tracing::info!(rank = self.rank, "leading");
                }
                Role::Follower => {
                    if self.role == Role::Leader {
                        tracing::info!("no longer leading");
                    }
                }
            }
            self.role = role;
        }
        self.maybe_snapshot();
    }

    /// A new leader is known: hand it the commands of every client still waiting here.
    /// Those this node forwarded to a leader that died are lost otherwise until the
    /// client retries; those that did reach the log take effect once anyway (the store's
    /// session table answers the second copy with the first one's result).
    fn propose_waiting_again(&mut self) {
        let commands: Vec<Command> = self.pending.commands().cloned().collect();
        let mut proposed = 0usize;
        for command in commands {
            if self.replica.propose(command).is_err() {
                break; // full: the clients' own retries will do
            }
            proposed += 1;
        }
        if proposed > 0 {
            tracing::debug!(proposed, "handed waiting commands to the new leader");
        }
    }

    fn maybe_snapshot(&mut self) {
        if self.snapshot_in_flight {
            return;
        }
        let applied = self.store.applied_slot();
        let behind = applied.saturating_sub(self.snapshot_slot);
        let due = self.snapshot_now
            || behind >= self.config.snapshot_every_slots
            || (behind > 0 && self.snapshot_at.elapsed() >= self.config.snapshot_interval);
        if !due || applied == 0 {
            return;
        }
        self.snapshot_now = false;
        self.snapshot_in_flight = true;
        self.snapshot_at = Instant::now();
        // The store is cloned here (cheap next to encoding it) and written off the loop.
        let store = self.store.clone();
        let name = self.name.clone();
        let path = self.config.node_dir().join("store.json");
        let done = self.snapshot_tx.clone();
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = write_atomically(&path, &store.to_json(&name))
                .map(|()| (store.applied_slot(), store.snapshot()));
            metrics
                .snapshot_seconds
                .observe(started.elapsed().as_secs_f64());
            let _ = done.blocking_send(result);
        });
    }

    fn on_snapshot_written(&mut self, done: SnapshotDone) {
        self.snapshot_in_flight = false;
        match done {
            Ok((slot, bytes)) => {
                self.crasher.reached(CrashPoint::AfterSnapshot);
                self.metrics.snapshots.inc();
                self.snapshot_slot = slot;
                tracing::debug!(slot, bytes = bytes.len(), "store.json written");
                // The core serves these bytes to lagging peers and truncates its log.
                self.replica.snapshot_taken(slot, Arc::new(bytes));
            }
            Err(e) => tracing::error!(error = %e, "cannot write store.json; will retry"),
        }
    }

    // ------------------------------------------------------------------ status

    fn report(&mut self) -> StatusReport {
        let status = self.replica.status();
        let applied = self.store.applied_slot();
        let digest = match self.digest_cache {
            Some((slot, digest)) if slot == applied => digest,
            _ => {
                let digest = self.store.digest();
                self.digest_cache = Some((applied, digest));
                digest
            }
        };
        let tick_ms = self.config.tick.as_millis() as u64;
        let timeout = self.config.election_timeout_ticks;
        let peers: Vec<PeerReport> = status
            .peers
            .iter()
            .map(|p| PeerReport {
                rank: p.rank,
                node: self.identity.peers.get(&p.rank).cloned(),
                last_heartbeat_ms_ago: p.silent_ticks.map(|t| u64::from(t) * tick_ms),
                alive: p.silent_ticks.is_some_and(|t| t <= timeout),
                decided_slot: p.decided_upto,
            })
            .collect();
        let best_peer = peers
            .iter()
            .filter(|p| p.alive)
            .map(|p| p.decided_slot)
            .max()
            .unwrap_or(0);
        let leader_node = status.leader.and_then(|r| {
            if r == self.rank {
                Some(self.name.clone())
            } else {
                self.identity.peers.get(&r).cloned()
            }
        });
        let ready = status.leader.is_some()
            && applied == status.decided_upto
            && applied + READY_MAX_LAG_SLOTS >= best_peer;
        StatusReport {
            id: self.config.id,
            node: self.name.clone(),
            rank: self.rank,
            role: status.role.as_str().to_owned(),
            leader: status.leader,
            leader_node,
            ballot: status.ballot.map(|b| b.to_string()),
            promised: status.promised.to_string(),
            decided_slot: status.decided_upto,
            applied_slot: applied,
            digest: digest.to_string(),
            lamport: status.lamport,
            clock_offset_ms: self.clock_offset_ms,
            truncated_slot: status.truncated_upto,
            snapshot_slot: self.snapshot_slot,
            pending_requests: self.pending.len(),
            pending_commands: status.pending_commands,
            in_flight_slots: status.in_flight_slots,
            waiting_for_disk: self.held.len(),
            registered: self.registered,
            reference_last_reply_ms_ago: self
                .reference_last_reply
                .map(|t| t.elapsed().as_millis() as u64),
            ready,
            peers,
        }
    }
}

/// Takes what is waiting on `receiver` now, up to [`MAX_DRAIN_PER_TURN`].
fn drain(receiver: &mut Receiver, buffer: &mut Vec<Multipart>) {
    while buffer.len() < MAX_DRAIN_PER_TURN {
        match receiver.try_recv() {
            Some(message) => buffer.push(message),
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxos::Ballot;

    fn envelope(to: Option<Rank>, message: Message) -> Envelope {
        Envelope {
            from: 1,
            to,
            lamport: 1,
            message,
        }
    }

    #[test]
    fn only_the_leaders_accept_broadcast_leaves_early() {
        let accept = Message::Accept {
            ballot: Ballot::new(1, 1),
            slot: 1,
            value: Value::noop(1),
            decided_upto: 0,
        };
        assert!(may_leave_early(&envelope(None, accept.clone())));
        // A retransmission to one acceptor is still a proposer's message, but keep the
        // rule minimal: only broadcasts.
        assert!(!may_leave_early(&envelope(Some(2), accept)));
        let accepted = Message::Accepted {
            ballot: Ballot::new(1, 1),
            slot: 1,
        };
        assert!(!may_leave_early(&envelope(Some(2), accepted)));
        let promise = Message::Promise {
            ballot: Ballot::new(1, 1),
            from_slot: 1,
            entries: vec![],
            next_slot: None,
            decided_upto: 0,
            truncated_upto: 0,
        };
        assert!(!may_leave_early(&envelope(Some(2), promise)));
        let decide = Message::Decide {
            slot: 1,
            ballot: Ballot::new(1, 1),
        };
        assert!(!may_leave_early(&envelope(None, decide)));
    }

    #[test]
    fn broadcast_topics() {
        let prepare = Message::Prepare {
            ballot: Ballot::new(1, 1),
            from_slot: 1,
        };
        assert_eq!(broadcast_topic(&prepare, 2), "paxos.prepare.2");
        let heartbeat = Message::Heartbeat {
            ballot: Ballot::new(1, 1),
            leader: None,
            decided_upto: 0,
            truncated_upto: 0,
        };
        assert_eq!(broadcast_topic(&heartbeat, 3), "heartbeat.3");
        let fetch = Message::Fetch {
            from_slot: 1,
            to_slot: 2,
        };
        assert_eq!(broadcast_topic(&fetch, 2), topic::REPL);
    }

    #[test]
    fn a_node_listens_to_its_peers_broadcasts_not_its_own() {
        let topics = paxos_topics("node-2", 2, 3);
        let has = |t: &str| topics.iter().any(|x| x == t.as_bytes());
        for kind in topic::RANKED_BROADCASTS {
            assert!(has(&topic::from_rank(kind, 1)));
            assert!(has(&topic::from_rank(kind, 3)));
            assert!(!has(&topic::from_rank(kind, 2)), "its own {kind}");
        }
        assert!(has("to.node-2") && has(topic::REPL) && !has("to.node-1"));
        // Exact topics: rank 1's subscription prefix also matches rank 10's topics.
        let ten = topic::from_rank(topic::PAXOS_ACCEPT, 10);
        assert!(!has(&ten));
    }

    #[test]
    fn live_messages_use_the_chat_encoding() {
        let message = ChatMessage {
            id: 1,
            from: "ann".to_owned(),
            to: Target::Channel("general".to_owned()),
            text: "hi".to_owned(),
            slot: 3,
            lamport: 4,
        };
        assert_eq!(live_topic(&message), "chan.general");
        let body = proto::encode(&LiveMessage(message.clone())).unwrap();
        assert_eq!(proto::decode::<LiveMessage>(&body).unwrap().0, message);
    }
}
