//! The replica: acceptor, learner and (when elected) leader, in one deterministic state
//! machine. See the crate page for the protocol and its invariants.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use proto::paxos::{
    DecidedEntry, MAX_DECIDED_ENTRIES, MAX_ENTRIES_BYTES, MAX_PROMISE_ENTRIES, MAX_SNAPSHOT_BYTES,
    MAX_SNAPSHOT_CHUNK_BYTES, PromiseEntry, command_size_bytes,
};
use proto::{Command, Error, ErrorCode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::gate::{Breaks, Gate, Ready, Turn};
use crate::reads::{Ask, Confirmations, LocalReads, Read, ReadId, may_confirm};
use crate::{
    Ballot, Config, ConfigError, Envelope, Message, Persisted, Rank, Record, Round, Slot, Ticks,
    Value,
};

/// What a replica is doing in the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Runs phase 1 for its ballot.
    Candidate,
    /// Completed phase 1: proposes values.
    Leader,
}

impl Role {
    /// A short stable name for logs and status pages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        }
    }
}

/// A safety rule to break on purpose, to show that the simulator catches it. Exists only
/// with the `bug-injection` feature, which only this crate's tests enable.
#[cfg(feature = "bug-injection")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bug {
    /// After phase 1, re-propose the *lowest*-ballot accepted value of each slot instead
    /// of the highest.
    AdoptLowestBallot,
    /// The gate lets a `Promise` leave before its record is durable.
    PromiseBeforeDurable,
    /// The gate lets an `Accepted` leave before its record is durable.
    AcceptedBeforeDurable,
    /// The gate lets a candidate's `Prepare` and then its `Accept`s leave before the
    /// `Round`/`Promise` records of its ballot are durable: after a crash it may run the
    /// same ballot again and propose other values in it. (Breaking only one of the two
    /// rules is harmless, and no tooth could catch it: a leader's `Accept`s follow
    /// promises that answer its `Prepare`, so either rule alone keeps the ballot durable
    /// before any value is proposed in it.)
    BallotBeforeDurable,
    /// The gate releases decisions (`Decide`, applied slots, replies) without waiting
    /// for this replica's own votes that they count.
    DecisionBeforeOwnVote,
    /// A leader answers read-index asks (its own and its followers') at once, without
    /// the quorum round that confirms it still leads: a deposed leader serves stale
    /// reads.
    ReadWithoutConfirmation,
}

/// What a replica knows of one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's rank.
    pub rank: Rank,
    /// Ticks since its last message; `None` if never heard from since start.
    pub silent_ticks: Option<Ticks>,
    /// The decided prefix it last reported.
    pub decided_upto: Slot,
}

/// A replica's state for status pages and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node's rank.
    pub rank: Rank,
    /// Its role.
    pub role: Role,
    /// Turns whose outputs wait for the disk (at most [`crate::MAX_HELD_GROUPS`] while
    /// the driver respects [`Replica::held_groups`]).
    pub held_groups: usize,
    /// The leader it follows (itself when it leads), if any.
    pub leader: Option<Rank>,
    /// Its ballot as candidate or leader, else the ballot of the leader it follows.
    pub ballot: Option<Ballot>,
    /// The highest ballot its acceptor promised.
    pub promised: Ballot,
    /// The highest round it used as a candidate (never reused, across restarts too).
    pub round: Round,
    /// Every slot up to here is decided and has been handed out to be applied.
    pub decided_upto: Slot,
    /// Its log starts after this slot (covered by a snapshot).
    pub truncated_upto: Slot,
    /// Its Lamport clock.
    pub lamport: u64,
    /// Client commands buffered here.
    pub pending_commands: usize,
    /// Linearizable reads waiting here for their index or for the state to reach it.
    pub pending_reads: usize,
    /// Slots it proposed that are not decided yet (leader only).
    pub in_flight_slots: usize,
    /// What it knows of its peers.
    pub peers: Vec<PeerStatus>,
}

#[derive(Debug)]
struct Pending {
    command: Command,
    queued_at_tick: u64,
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    silent_ticks: Option<Ticks>,
    decided_upto: Slot,
}

/// How far one acceptor's promise report has come.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Slots from here on are not reported yet.
    next_slot: Slot,
    complete: bool,
    truncated_upto: Slot,
}

#[derive(Debug)]
struct Candidate {
    ballot: Ballot,
    from_slot: Slot,
    promises: BTreeMap<Rank, Progress>,
    /// For every reported slot, the value to re-propose (the highest-ballot one).
    reported: BTreeMap<Slot, (Ballot, Value)>,
    elapsed_ticks: Ticks,
    retransmit_in_ticks: Ticks,
}

#[derive(Debug)]
struct Proposal {
    value: Value,
    accepted_by: BTreeSet<Rank>,
    retransmit_in_ticks: Ticks,
}

#[derive(Debug)]
struct Leader {
    ballot: Ballot,
    next_slot: Slot,
    in_flight: BTreeMap<Slot, Proposal>,
    /// Read-index asks and the rounds that confirm this leadership.
    confirmations: Confirmations,
}

#[derive(Debug)]
enum State {
    Follower,
    Candidate(Candidate),
    Leader(Leader),
}

#[derive(Debug)]
struct IncomingSnapshot {
    from: Rank,
    slot: Slot,
    total_len: u64,
    data: Vec<u8>,
}

/// One Multi-Paxos replica. See the crate page.
#[derive(Debug)]
pub struct Replica {
    config: Config,
    rng: ChaCha8Rng,
    now_ticks: u64,
    lamport: u64,

    // Acceptor.
    promised: Ballot,
    /// Accepted values of slots not known to be decided.
    accepted: BTreeMap<Slot, (Ballot, Value)>,

    // Learner.
    /// Peers' `Accepted` votes for slots accepted here and not decided yet, in the ballot
    /// of the value accepted here (cleared when that value changes; bounded by
    /// `accepted`, which it follows).
    votes: BTreeMap<Slot, BTreeSet<Rank>>,
    /// Decided values after `truncated_upto` (the log).
    decided: BTreeMap<Slot, Value>,
    /// Every slot up to here is decided and handed out in `Ready::decided`.
    decided_upto: Slot,
    truncated_upto: Slot,
    snapshot: Option<(Slot, Arc<Vec<u8>>)>,
    incoming: Option<IncomingSnapshot>,
    fetch_wait_ticks: Ticks,

    // Proposer and election.
    round: Round,
    state: State,
    leader: Option<(Rank, Ballot)>,
    leader_silent_ticks: Ticks,
    leaderless_ticks: Ticks,
    backoff_ticks: Ticks,
    heartbeat_in_ticks: Ticks,
    peers: BTreeMap<Rank, Peer>,
    pending: VecDeque<Pending>,
    /// Linearizable reads waiting here ([`crate::reads`]).
    reads: LocalReads,

    /// This turn's outputs, sorted by the gate in [`Replica::ready`].
    out: Turn,
    /// What may leave before which records are durable, and the outputs held for them.
    gate: Gate,
    #[cfg(feature = "bug-injection")]
    bug: Option<Bug>,
}

impl Replica {
    /// A replica with `config`, resuming from what it persisted (`Persisted::default()`
    /// for a new node).
    pub fn new(config: Config, persisted: Persisted) -> Result<Replica, ConfigError> {
        config.validate()?;
        let snapshot_slot = persisted.snapshot.as_ref().map_or(0, |(slot, _)| *slot);
        let mut decided = persisted.decided;
        // Entries the restored snapshot already covers are not handed out again.
        decided = decided.split_off(&(snapshot_slot + 1));
        let mut accepted = persisted.accepted;
        accepted = accepted.split_off(&(snapshot_slot + 1));
        // The clock restarts above every value this node persisted, so a value it
        // proposes next is stamped later than those.
        let lamport = persisted.lamport;
        let peers = config
            .members
            .iter()
            .filter(|&&r| r != config.rank)
            .map(|&r| {
                (
                    r,
                    Peer {
                        silent_ticks: None,
                        decided_upto: 0,
                    },
                )
            })
            .collect();
        // Read batch ids start at a random point per incarnation (see `LocalReads`), from
        // a generator of their own so that the election's draws stay as they were.
        let first_batch = ChaCha8Rng::seed_from_u64(!config.seed ^ config.incarnation)
            .random::<u64>()
            ^ lamport.rotate_left(32);
        let mut replica = Replica {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            now_ticks: 0,
            lamport,
            promised: persisted.promised,
            accepted,
            decided,
            decided_upto: snapshot_slot,
            truncated_upto: persisted.truncated_upto.max(snapshot_slot),
            snapshot: persisted.snapshot,
            incoming: None,
            fetch_wait_ticks: 0,
            round: persisted.round.max(persisted.promised.round),
            state: State::Follower,
            leader: None,
            leader_silent_ticks: 0,
            leaderless_ticks: 0,
            backoff_ticks: 0,
            heartbeat_in_ticks: 1,
            peers,
            pending: VecDeque::new(),
            reads: LocalReads::new(first_batch),
            votes: BTreeMap::new(),
            out: Turn::default(),
            gate: Gate::default(),
            #[cfg(feature = "bug-injection")]
            bug: None,
            config,
        };
        replica.deliver();
        Ok(replica)
    }

    /// Breaks one safety rule on purpose (tests of the simulator only).
    #[cfg(feature = "bug-injection")]
    pub fn inject_bug(&mut self, bug: Bug) {
        self.bug = Some(bug);
    }

    /// This replica's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Takes a message from a peer. Messages from non-members, from itself, or addressed
    /// to another node are ignored; so are stale ones (the protocol tolerates loss,
    /// duplication and reordering).
    pub fn step(&mut self, envelope: Envelope) {
        let from = envelope.from;
        if from == self.config.rank
            || envelope.to.is_some_and(|to| to != self.config.rank)
            || !self.peers.contains_key(&from)
        {
            return;
        }
        self.lamport = self.lamport.max(envelope.lamport) + 1;
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.silent_ticks = Some(0);
        }
        match envelope.message {
            Message::Prepare { ballot, from_slot } => self.on_prepare(from, ballot, from_slot),
            Message::Promise {
                ballot,
                from_slot,
                entries,
                next_slot,
                decided_upto,
                truncated_upto,
            } => {
                self.note_peer_decided(from, decided_upto);
                self.on_promise(from, ballot, from_slot, entries, next_slot, truncated_upto);
            }
            Message::Accept {
                ballot,
                slot,
                value,
                decided_upto,
            } => {
                self.note_peer_decided(from, decided_upto);
                self.on_accept(from, ballot, slot, value);
            }
            Message::Accepted { ballot, slot } => self.on_accepted(from, ballot, slot),
            Message::Decide { slot, ballot } => self.on_decide(from, slot, ballot),
            Message::Nack { ballot, promised } => self.on_nack(ballot, promised),
            Message::Heartbeat {
                ballot,
                leader,
                decided_upto,
                truncated_upto: _,
            } => {
                self.note_peer_decided(from, decided_upto);
                self.on_heartbeat(from, ballot, leader);
            }
            Message::Forward { commands } => self.on_forward(commands),
            Message::Fetch { from_slot, to_slot } => self.on_fetch(from, from_slot, to_slot),
            Message::Decided { entries } => {
                for entry in entries {
                    self.learn(entry.slot, entry.value);
                }
            }
            Message::FetchSnapshot { slot, offset } => self.on_fetch_snapshot(from, slot, offset),
            Message::SnapshotChunk {
                slot,
                offset,
                total_len,
                data,
            } => self.on_snapshot_chunk(from, slot, offset, total_len, data),
            Message::ReadIndex { batch } => self.on_read_ask(from, batch),
            Message::ReadIndexed { batch, slot } => self.reads.indexed(batch, slot),
            Message::Confirm { ballot, round } => self.on_confirm(from, ballot, round),
            Message::Confirmed { ballot, round } => self.on_confirmed(from, ballot, round),
        }
        self.try_finish_phase1();
    }

    /// Lets one tick of time pass: heartbeats, retransmissions, election timeouts,
    /// catch-up requests, and expiry of commands waiting for a leader.
    pub fn tick(&mut self) {
        self.now_ticks += 1;
        for peer in self.peers.values_mut() {
            peer.silent_ticks = peer.silent_ticks.map(|t| t.saturating_add(1));
        }
        self.heartbeat_in_ticks = self.heartbeat_in_ticks.saturating_sub(1);
        if self.heartbeat_in_ticks == 0 {
            self.heartbeat_in_ticks = self.config.heartbeat_interval_ticks;
            self.broadcast_heartbeat();
        }
        match &self.state {
            State::Leader(_) => self.tick_leader(),
            State::Candidate(_) => self.tick_candidate(),
            State::Follower => self.tick_follower(),
        }
        self.tick_catch_up();
        self.tick_reads();
        self.expire_pending();
        self.try_finish_phase1();
    }

    /// Takes a client command. The leader batches it into a slot; a follower that knows
    /// the leader forwards it; without a leader it waits here (bounded, and rejected with
    /// `unavailable` after [`Config::pending_timeout_ticks`]).
    ///
    /// Errors: `too_large` when the command alone is over the batch size, `overloaded`
    /// when [`Config::max_pending_commands`] commands already wait.
    pub fn propose(&mut self, command: Command) -> Result<(), Error> {
        let size = command_size_bytes(&command);
        if size > self.config.max_batch_bytes {
            return Err(Error::new(
                ErrorCode::TooLarge,
                format!(
                    "command of ~{size} bytes is over the batch limit of {}",
                    self.config.max_batch_bytes
                ),
            ));
        }
        if self.pending.len() >= self.config.max_pending_commands {
            return Err(Error::new(
                ErrorCode::Overloaded,
                format!(
                    "{} commands already wait at this replica",
                    self.pending.len()
                ),
            ));
        }
        self.pending.push_back(Pending {
            command,
            queued_at_tick: self.now_ticks,
        });
        Ok(())
    }

    /// Takes a linearizable read, which the driver will serve from its applied state
    /// when a later [`Ready::reads`] hands `id` back ([`crate::reads`]: the leader
    /// confirms it still leads after the read arrived, and this replica applies up to the
    /// index it gives). The driver picks unique ids and keeps what each read asks for.
    /// A read that no leader confirms within [`Config::pending_timeout_ticks`] comes
    /// back in [`Ready::rejected_reads`] as `unavailable`.
    ///
    /// Errors: `overloaded` when [`Config::max_pending_commands`] reads already wait.
    pub fn read(&mut self, id: ReadId) -> Result<(), Error> {
        if self.reads.len() >= self.config.max_pending_commands {
            return Err(Error::new(
                ErrorCode::Overloaded,
                format!("{} reads already wait at this replica", self.reads.len()),
            ));
        }
        self.reads.arrive(Read {
            id,
            arrived_tick: self.now_ticks,
        });
        Ok(())
    }

    /// Drains the outputs accumulated by `step`, `tick` and `propose`, through the
    /// durability gate ([`crate::gate`]): the [`Ready`] holds this turn's records and
    /// everything that may be carried out now; what must wait for the disk stays here
    /// until [`Replica::persisted`] allows it. Commands proposed since the last call are
    /// batched here: a driver that calls `ready` once per loop turn gets one slot for
    /// everything that arrived in that turn.
    pub fn ready(&mut self) -> Ready {
        self.flush_reads();
        self.flush_pending();
        let turn = std::mem::take(&mut self.out);
        let breaks = self.breaks();
        self.gate.admit(turn, breaks)
    }

    /// The driver made every group up to `number` ([`crate::Group::number`]) durable:
    /// appended, and fsynced when the group asked for it. The outputs that waited for
    /// them come out of the next [`Replica::ready`]. Reporting a group that was never
    /// handed out is a bug of the driver and stops the replica.
    pub fn persisted(&mut self, number: u64) {
        self.gate.persisted(number);
    }

    /// Turns whose outputs wait for the disk. A driver stops stepping peer messages and
    /// proposing commands while this is at [`crate::MAX_HELD_GROUPS`].
    pub fn held_groups(&self) -> usize {
        self.gate.held_groups()
    }

    /// Whether every record handed out is durable and no output waits for the disk.
    pub fn is_durable(&self) -> bool {
        self.gate.is_idle() && self.out.persist.is_empty()
    }

    #[cfg(feature = "bug-injection")]
    fn breaks(&self) -> Breaks {
        Breaks {
            promise_early: self.bug == Some(Bug::PromiseBeforeDurable),
            accepted_early: self.bug == Some(Bug::AcceptedBeforeDurable),
            ballot_early: self.bug == Some(Bug::BallotBeforeDurable),
            decisions_early: self.bug == Some(Bug::DecisionBeforeOwnVote),
        }
    }

    #[cfg(not(feature = "bug-injection"))]
    fn breaks(&self) -> Breaks {
        Breaks::default()
    }

    /// The driver made a snapshot of its state machine at `slot` durable (it had applied
    /// every slot up to `slot`). The replica serves it to peers that need slots it no
    /// longer has, and drops its log up to `slot - log_retain_slots` (emitting
    /// [`Record::Truncate`]).
    pub fn snapshot_taken(&mut self, slot: Slot, bytes: Arc<Vec<u8>>) {
        assert!(
            slot <= self.decided_upto,
            "snapshot at slot {slot} is beyond the handed-out slot {}",
            self.decided_upto
        );
        if self.snapshot.as_ref().is_none_or(|(s, _)| *s < slot) {
            self.snapshot = Some((slot, bytes));
        }
        let upto = slot.saturating_sub(self.config.log_retain_slots);
        if upto > self.truncated_upto {
            self.truncate(upto);
            self.persist(Record::Truncate { upto });
        }
    }

    /// The replica's state, for status pages and tests.
    pub fn status(&self) -> Status {
        let (role, ballot, in_flight_slots) = match &self.state {
            State::Follower => (Role::Follower, self.leader.map(|(_, b)| b), 0),
            State::Candidate(c) => (Role::Candidate, Some(c.ballot), 0),
            State::Leader(l) => (Role::Leader, Some(l.ballot), l.in_flight.len()),
        };
        Status {
            rank: self.config.rank,
            role,
            held_groups: self.gate.held_groups(),
            leader: self.leader.map(|(r, _)| r),
            ballot,
            promised: self.promised,
            round: self.round,
            decided_upto: self.decided_upto,
            truncated_upto: self.truncated_upto,
            lamport: self.lamport,
            pending_commands: self.pending.len(),
            pending_reads: self.reads.len(),
            in_flight_slots,
            peers: self
                .peers
                .iter()
                .map(|(&rank, p)| PeerStatus {
                    rank,
                    silent_ticks: p.silent_ticks,
                    decided_upto: p.decided_upto,
                })
                .collect(),
        }
    }

    // ---------------------------------------------------------------- outputs

    fn send(&mut self, to: Option<Rank>, message: Message) {
        self.lamport += 1;
        self.out.messages.push(Envelope {
            from: self.config.rank,
            to,
            lamport: self.lamport,
            message,
        });
    }

    fn persist(&mut self, record: Record) {
        self.out.persist.push(record);
    }

    fn broadcast_heartbeat(&mut self) {
        let ballot = match &self.state {
            State::Leader(l) => l.ballot,
            _ => self.promised,
        };
        let message = Message::Heartbeat {
            ballot,
            leader: self.leader.map(|(r, _)| r),
            decided_upto: self.decided_upto,
            truncated_upto: self.truncated_upto,
        };
        self.send(None, message);
    }

    // ---------------------------------------------------------------- acceptor

    /// Raises the promise to `ballot`, which the caller checked is not below it (a
    /// promise never decreases). A candidate or leader whose own ballot is now beaten
    /// steps down: it could no longer accept its own proposals.
    fn promise(&mut self, ballot: Ballot) {
        assert!(
            ballot >= self.promised,
            "replica {} would promise {ballot} below its promise {}",
            self.config.rank,
            self.promised
        );
        if ballot > self.promised {
            self.promised = ballot;
            self.persist(Record::Promise { ballot });
        }
        let own = match &self.state {
            State::Candidate(c) => Some(c.ballot),
            State::Leader(l) => Some(l.ballot),
            State::Follower => None,
        };
        if own.is_some_and(|own| own < self.promised) {
            self.step_down();
        }
    }

    fn on_prepare(&mut self, from: Rank, ballot: Ballot, from_slot: Slot) {
        if ballot < self.promised {
            let promised = self.promised;
            self.send(Some(from), Message::Nack { ballot, promised });
            return;
        }
        if ballot > self.promised {
            // Someone is running an election: give it time before running our own.
            self.leader = None;
            self.leaderless_ticks = 0;
        }
        self.promise(ballot);
        let (entries, next_slot) = self.promise_entries(from_slot);
        let message = Message::Promise {
            ballot,
            from_slot,
            entries,
            next_slot,
            decided_upto: self.decided_upto,
            truncated_upto: self.truncated_upto,
        };
        self.send(Some(from), message);
    }

    /// What this acceptor holds from `from_slot` on — decided values (ballot `None`) and
    /// accepted ones — cut at the entry limits.
    fn promise_entries(&self, from_slot: Slot) -> (Vec<PromiseEntry>, Option<Slot>) {
        let start = from_slot.max(self.truncated_upto + 1);
        let decided = self
            .decided
            .range(start..)
            .map(|(&slot, value)| (slot, None, value));
        let accepted = self
            .accepted
            .range(start..)
            .map(|(&slot, (ballot, value))| (slot, Some(*ballot), value));
        let mut all: Vec<_> = decided.chain(accepted).collect();
        all.sort_by_key(|(slot, _, _)| *slot);
        let mut entries = Vec::new();
        let mut bytes = 0;
        for (slot, ballot, value) in all {
            let size = value.size_bytes();
            if entries.len() == MAX_PROMISE_ENTRIES
                || (!entries.is_empty() && bytes + size > MAX_ENTRIES_BYTES)
            {
                return (entries, Some(slot));
            }
            bytes += size;
            entries.push(PromiseEntry {
                slot,
                ballot,
                value: value.clone(),
            });
        }
        (entries, None)
    }

    fn on_accept(&mut self, from: Rank, ballot: Ballot, slot: Slot, value: Value) {
        if ballot < self.promised {
            let promised = self.promised;
            self.send(Some(from), Message::Nack { ballot, promised });
            return;
        }
        // Accepting in a ballot implies promising it. The promise gets its own record even
        // though an Accept record implies it: the Accept may not be recorded (slot already
        // decided or truncated), and every later Promise, Nack or Accepted states this
        // ballot — it must survive a crash whatever happens to the Accept.
        self.promise(ballot);
        self.follow(from, ballot);
        if slot <= self.truncated_upto {
            return;
        }
        if let Some(decided) = self.decided.get(&slot).cloned() {
            // Already decided here: tell the leader instead of accepting again.
            self.send(
                Some(from),
                Message::Decided {
                    entries: vec![DecidedEntry {
                        slot,
                        value: decided,
                    }],
                },
            );
            return;
        }
        if slot <= self.decided_upto {
            return;
        }
        let known = self
            .accepted
            .get(&slot)
            .is_some_and(|(b, v)| *b == ballot && *v == value);
        if !known {
            self.accepted.insert(slot, (ballot, value.clone()));
            self.votes.remove(&slot);
            self.persist(Record::Accept {
                slot,
                ballot,
                value,
            });
        }
        // To every node, not only the leader (`from`): the other acceptors learn the slot
        // from a quorum of votes as soon as the leader does, a message delay before its
        // `Decide` would reach them (Paxos Made Simple, §2.3: acceptors may inform every
        // learner).
        self.send(None, Message::Accepted { ballot, slot });
    }

    /// A peer's vote as a learner sees it: `from` durably accepted `slot` in `ballot`.
    /// With this replica's own vote for the same ballot (its value is the one the ballot
    /// proposed for the slot) and enough peers', a quorum accepted the value: it is
    /// chosen. Votes for a slot not accepted here in that ballot are ignored (the
    /// leader's `Decide`, or a fetch, brings it). Counting this replica's own vote before
    /// its Accept record is durable is safe only because the gate holds every decision
    /// until that record is ([`crate::gate`]: decisions wait for the earlier groups, and
    /// for their own when it holds a vote for a slot they decide).
    fn on_peer_vote(&mut self, from: Rank, ballot: Ballot, slot: Slot) {
        if slot <= self.decided_upto || self.decided.contains_key(&slot) {
            return;
        }
        let Some((accepted, value)) = self.accepted.get(&slot) else {
            return;
        };
        if *accepted != ballot {
            return;
        }
        let voters = self.votes.entry(slot).or_default();
        if from != self.config.rank {
            voters.insert(from);
        }
        if voters.len() + 1 >= self.quorum() {
            let value = value.clone();
            self.learn(slot, value);
        }
    }

    // ---------------------------------------------------------------- learner

    /// `from` decided `slot` with its value of `ballot`. Learnt at once when that is the
    /// value accepted here; otherwise (its `Accept` was lost, or is late) the slot is
    /// fetched from `from` by the catch-up.
    fn on_decide(&mut self, from: Rank, slot: Slot, ballot: Ballot) {
        if slot <= self.decided_upto || self.decided.contains_key(&slot) {
            return;
        }
        match self.accepted.get(&slot) {
            Some((accepted, value)) if *accepted == ballot => {
                let value = value.clone();
                self.learn(slot, value);
            }
            // The sender may not have every earlier slot decided: a fetch up to `slot`
            // returns what it has and is asked again for the rest.
            _ => self.note_peer_decided(from, slot),
        }
    }

    /// Records that `slot` is decided with `value`, and hands out what became contiguous.
    fn learn(&mut self, slot: Slot, value: Value) {
        if slot <= self.decided_upto {
            if let Some(known) = self.decided.get(&slot) {
                assert!(
                    *known == value,
                    "agreement violated at replica {}: slot {slot} decided twice with different values",
                    self.config.rank
                );
            }
            return;
        }
        if let Some(known) = self.decided.get(&slot) {
            assert!(
                *known == value,
                "agreement violated at replica {}: slot {slot} decided twice with different values",
                self.config.rank
            );
            return;
        }
        self.accepted.remove(&slot);
        self.votes.remove(&slot);
        self.decided.insert(slot, value.clone());
        self.persist(Record::Decide { slot, value });
        if let State::Leader(l) = &mut self.state {
            l.in_flight.remove(&slot);
        }
        self.deliver();
    }

    /// Hands out every decided slot that directly follows `decided_upto`.
    fn deliver(&mut self) {
        while let Some(value) = self.decided.get(&(self.decided_upto + 1)) {
            self.decided_upto += 1;
            self.out.decided.push((self.decided_upto, value.clone()));
        }
    }

    fn note_peer_decided(&mut self, from: Rank, decided_upto: Slot) {
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.decided_upto = peer.decided_upto.max(decided_upto);
        }
    }

    fn on_fetch(&mut self, from: Rank, from_slot: Slot, to_slot: Slot) {
        if from_slot <= self.truncated_upto {
            self.send_snapshot_chunk(from, 0);
            return;
        }
        let mut entries = Vec::new();
        let mut bytes = 0;
        for (&slot, value) in self.decided.range(from_slot..=to_slot.max(from_slot)) {
            let size = value.size_bytes();
            if entries.len() == MAX_DECIDED_ENTRIES
                || (!entries.is_empty() && bytes + size > MAX_ENTRIES_BYTES)
            {
                break;
            }
            bytes += size;
            entries.push(DecidedEntry {
                slot,
                value: value.clone(),
            });
        }
        if !entries.is_empty() {
            self.send(Some(from), Message::Decided { entries });
        }
    }

    fn on_fetch_snapshot(&mut self, from: Rank, slot: Slot, offset: u64) {
        let current = self.snapshot.as_ref().map(|(s, _)| *s);
        // A request for an older snapshot than ours restarts with ours.
        let offset = if current == Some(slot) { offset } else { 0 };
        self.send_snapshot_chunk(from, offset);
    }

    fn send_snapshot_chunk(&mut self, to: Rank, offset: u64) {
        let Some((slot, bytes)) = self.snapshot.clone() else {
            return;
        };
        let total_len = bytes.len() as u64;
        let Ok(start) = usize::try_from(offset.min(total_len)) else {
            return;
        };
        let end = (start + MAX_SNAPSHOT_CHUNK_BYTES).min(bytes.len());
        let message = Message::SnapshotChunk {
            slot,
            offset: start as u64,
            total_len,
            data: bytes[start..end].to_vec(),
        };
        self.send(Some(to), message);
    }

    fn on_snapshot_chunk(
        &mut self,
        from: Rank,
        slot: Slot,
        offset: u64,
        total_len: u64,
        data: Vec<u8>,
    ) {
        if slot <= self.decided_upto || total_len > MAX_SNAPSHOT_BYTES {
            return;
        }
        let restart = self.incoming.as_ref().is_none_or(|inc| inc.slot < slot);
        if restart {
            if offset != 0 {
                self.send(Some(from), Message::FetchSnapshot { slot, offset: 0 });
                return;
            }
            let capacity = usize::try_from(total_len.min(MAX_SNAPSHOT_CHUNK_BYTES as u64))
                .unwrap_or(MAX_SNAPSHOT_CHUNK_BYTES);
            self.incoming = Some(IncomingSnapshot {
                from,
                slot,
                total_len,
                data: Vec::with_capacity(capacity),
            });
        }
        let Some(inc) = self.incoming.as_mut() else {
            return;
        };
        if inc.slot != slot || inc.total_len != total_len || inc.data.len() as u64 != offset {
            // A duplicate or a piece of another transfer: the tick retries ours.
            return;
        }
        inc.from = from;
        inc.data.extend_from_slice(&data);
        self.fetch_wait_ticks = self.config.retransmit_ticks;
        if (inc.data.len() as u64) < inc.total_len {
            let offset = inc.data.len() as u64;
            if data.is_empty() {
                return;
            }
            self.send(Some(from), Message::FetchSnapshot { slot, offset });
            return;
        }
        if let Some(done) = self.incoming.take() {
            self.install_snapshot(done.slot, Arc::new(done.data));
        }
    }

    fn install_snapshot(&mut self, slot: Slot, bytes: Arc<Vec<u8>>) {
        assert!(slot > self.decided_upto);
        // Slots handed out earlier in this Ready are covered by the snapshot.
        self.out.decided.clear();
        self.out.install_snapshot = Some((slot, bytes.clone()));
        self.decided_upto = slot;
        self.truncate(slot);
        self.snapshot = Some((slot, bytes));
        if let State::Leader(l) = &mut self.state {
            l.in_flight = l.in_flight.split_off(&(slot + 1));
            l.next_slot = l.next_slot.max(slot + 1);
        }
        self.deliver();
    }

    fn truncate(&mut self, upto: Slot) {
        self.truncated_upto = self.truncated_upto.max(upto);
        self.accepted = self.accepted.split_off(&(upto + 1));
        self.votes = self.votes.split_off(&(upto + 1));
        self.decided = self.decided.split_off(&(upto + 1));
    }

    /// Asks a peer for what this replica misses: the next piece of a snapshot being
    /// assembled, or the decided slots after `decided_upto` that a peer reported.
    fn tick_catch_up(&mut self) {
        self.fetch_wait_ticks = self.fetch_wait_ticks.saturating_sub(1);
        if self.fetch_wait_ticks > 0 {
            return;
        }
        if let Some(inc) = &self.incoming {
            let (to, slot, offset) = (inc.from, inc.slot, inc.data.len() as u64);
            self.fetch_wait_ticks = self.config.retransmit_ticks;
            self.send(Some(to), Message::FetchSnapshot { slot, offset });
            return;
        }
        let timeout = self.config.election_timeout_ticks;
        let best = self
            .peers
            .iter()
            .filter(|(_, p)| p.silent_ticks.is_some_and(|t| t <= timeout))
            .max_by_key(|(_, p)| p.decided_upto)
            .map(|(&r, p)| (r, p.decided_upto));
        if let Some((to, target)) = best
            && target > self.decided_upto
        {
            self.fetch_wait_ticks = self.config.retransmit_ticks;
            let from_slot = self.decided_upto + 1;
            let to_slot = target.min(self.decided_upto + MAX_DECIDED_ENTRIES as u64);
            self.send(Some(to), Message::Fetch { from_slot, to_slot });
        }
    }

    // ---------------------------------------------------------------- election

    fn quorum(&self) -> usize {
        self.config.quorum()
    }

    fn is_live(&self, peer: &Peer) -> bool {
        peer.silent_ticks
            .is_some_and(|t| t <= self.config.election_timeout_ticks)
    }

    /// Follows `rank`, which showed it leads with `ballot` — not below our promise, as
    /// the caller checked (a replica never follows a ballot it would refuse).
    fn follow(&mut self, rank: Rank, ballot: Ballot) {
        assert!(
            ballot >= self.promised,
            "replica {} would follow {ballot} below its promise {}",
            self.config.rank,
            self.promised
        );
        if self.leader.is_none_or(|(_, b)| b <= ballot) {
            self.leader = Some((rank, ballot));
            self.leader_silent_ticks = 0;
            self.leaderless_ticks = 0;
        }
    }

    fn on_heartbeat(&mut self, from: Rank, ballot: Ballot, leader: Option<Rank>) {
        if leader == Some(from) {
            if ballot < self.promised {
                // A deposed leader that does not know it yet (e.g. back from the minority
                // side of a partition): tell it, so that it steps down.
                let promised = self.promised;
                self.send(Some(from), Message::Nack { ballot, promised });
                return;
            }
            let own = match &self.state {
                State::Candidate(c) => Some(c.ballot),
                State::Leader(l) => Some(l.ballot),
                State::Follower => None,
            };
            if own.is_some_and(|own| own < ballot) {
                self.step_down();
            }
            if matches!(self.state, State::Follower) {
                self.follow(from, ballot);
            }
        } else if self.leader.is_some_and(|(r, _)| r == from) {
            // Our leader no longer claims to lead.
            self.leader = None;
            self.leaderless_ticks = 0;
        }
    }

    fn on_nack(&mut self, ballot: Ballot, promised: Ballot) {
        let own = match &self.state {
            State::Candidate(c) => Some(c.ballot),
            State::Leader(l) => Some(l.ballot),
            State::Follower => None,
        };
        self.round = self.round.max(promised.round);
        if own == Some(ballot) && promised > ballot {
            self.step_down();
        }
    }

    fn step_down(&mut self) {
        if let State::Leader(_) | State::Candidate(_) = self.state {
            self.state = State::Follower;
            if self.leader.is_some_and(|(r, _)| r == self.config.rank) {
                self.leader = None;
            }
            self.leaderless_ticks = 0;
            self.backoff_ticks = self.rng.random_range(0..self.config.election_timeout_ticks);
        }
    }

    fn tick_follower(&mut self) {
        if self.leader.is_some() {
            self.leader_silent_ticks += 1;
            if self.leader_silent_ticks >= self.config.election_timeout_ticks {
                // It listened a whole timeout already, hearing no leader: the Bully rule
                // below may run it on the next tick. (A node that starts, or whose
                // leader stepped down, listens a timeout first instead.)
                self.leader = None;
                self.leaderless_ticks = self.config.election_timeout_ticks;
            }
            return;
        }
        self.leaderless_ticks = self.leaderless_ticks.saturating_add(1);
        if self.backoff_ticks > 0 {
            self.backoff_ticks -= 1;
            return;
        }
        let timeout = self.config.election_timeout_ticks;
        if self.leaderless_ticks < timeout {
            return;
        }
        // Bully: the live member with the highest rank runs. Should it fail to win for
        // long (it hears nobody, say), anyone runs, after a random back-off.
        let rank = self.config.rank;
        let higher_live = self.peers.iter().any(|(&r, p)| r > rank && self.is_live(p));
        if !higher_live || self.leaderless_ticks >= timeout.saturating_mul(3) {
            self.start_candidacy();
        }
    }

    fn start_candidacy(&mut self) {
        let round = self.round.max(self.promised.round) + 1;
        let rank = self.config.rank;
        let ballot = Ballot::new(round, rank);
        self.round = round;
        // The round is durable before any Prepare of it leaves: after a crash this node
        // never reuses a ballot, so a ballot names one value per slot.
        self.persist(Record::Round { round });
        self.promised = ballot;
        self.persist(Record::Promise { ballot });
        self.leader = None;
        let from_slot = self.decided_upto + 1;
        let mut reported = BTreeMap::new();
        for (&slot, (b, value)) in self.accepted.range(from_slot..) {
            reported.insert(slot, (*b, value.clone()));
        }
        let mut promises = BTreeMap::new();
        promises.insert(
            rank,
            Progress {
                next_slot: Slot::MAX,
                complete: true,
                truncated_upto: self.truncated_upto,
            },
        );
        self.state = State::Candidate(Candidate {
            ballot,
            from_slot,
            promises,
            reported,
            elapsed_ticks: 0,
            retransmit_in_ticks: self.config.retransmit_ticks,
        });
        self.send(None, Message::Prepare { ballot, from_slot });
        self.try_finish_phase1();
    }

    fn tick_candidate(&mut self) {
        let timeout = self.config.election_timeout_ticks;
        let retransmit = self.config.retransmit_ticks;
        let State::Candidate(c) = &mut self.state else {
            return;
        };
        c.elapsed_ticks += 1;
        if c.elapsed_ticks >= timeout {
            // No quorum in time: back off a random while, so that duelling candidates
            // stop cancelling each other.
            self.step_down();
            return;
        }
        c.retransmit_in_ticks = c.retransmit_in_ticks.saturating_sub(1);
        if c.retransmit_in_ticks > 0 {
            return;
        }
        c.retransmit_in_ticks = retransmit;
        let ballot = c.ballot;
        let asks: Vec<(Rank, Slot)> = self
            .config
            .members
            .iter()
            .filter(|r| c.promises.get(r).is_none_or(|p| !p.complete))
            .map(|r| (*r, c.promises.get(r).map_or(c.from_slot, |p| p.next_slot)))
            .collect();
        for (to, from_slot) in asks {
            self.send(Some(to), Message::Prepare { ballot, from_slot });
        }
    }

    fn on_promise(
        &mut self,
        from: Rank,
        ballot: Ballot,
        from_slot: Slot,
        entries: Vec<PromiseEntry>,
        next_slot: Option<Slot>,
        truncated_upto: Slot,
    ) {
        #[cfg(feature = "bug-injection")]
        let lowest = self.bug == Some(Bug::AdoptLowestBallot);
        #[cfg(not(feature = "bug-injection"))]
        let lowest = false;
        let State::Candidate(c) = &mut self.state else {
            return;
        };
        if ballot != c.ballot {
            return;
        }
        let progress = c.promises.entry(from).or_insert(Progress {
            next_slot: c.from_slot,
            complete: false,
            truncated_upto: 0,
        });
        if progress.complete || from_slot > progress.next_slot {
            // A duplicate, or a continuation that overtook its predecessor: the
            // retransmission of the Prepare sorts it out.
            return;
        }
        progress.truncated_upto = progress.truncated_upto.max(truncated_upto);
        let mut decided = Vec::new();
        for entry in entries {
            match entry.ballot {
                None => decided.push((entry.slot, entry.value)),
                Some(b) => {
                    let replace = c
                        .reported
                        .get(&entry.slot)
                        .is_none_or(|(known, _)| if lowest { b < *known } else { b > *known });
                    if replace {
                        c.reported.insert(entry.slot, (b, entry.value));
                    }
                }
            }
        }
        let mut ask = None;
        match next_slot {
            Some(n) if n > progress.next_slot => {
                progress.next_slot = n;
                ask = Some(n);
            }
            Some(_) => {}
            None => progress.complete = true,
        }
        if let Some(from_slot) = ask {
            self.send(Some(from), Message::Prepare { ballot, from_slot });
        }
        for (slot, value) in decided {
            self.learn(slot, value);
        }
    }

    /// Becomes leader once a quorum of acceptors reported every slot from `from_slot` on,
    /// and this replica knows every slot that one of them truncated (it cannot report
    /// those: they are decided, and we must learn them rather than propose there).
    fn try_finish_phase1(&mut self) {
        let State::Candidate(c) = &self.state else {
            return;
        };
        let complete: Vec<&Progress> = c.promises.values().filter(|p| p.complete).collect();
        if complete.len() < self.quorum() {
            return;
        }
        let needed = complete.iter().map(|p| p.truncated_upto).max().unwrap_or(0);
        if self.decided_upto < needed {
            return;
        }
        let State::Candidate(c) = std::mem::replace(&mut self.state, State::Follower) else {
            return;
        };
        self.become_leader(c);
    }

    fn become_leader(&mut self, c: Candidate) {
        let rank = self.config.rank;
        let last_reported = c.reported.keys().next_back().copied().unwrap_or(0);
        let last_decided = self.decided.keys().next_back().copied().unwrap_or(0);
        let last = last_reported.max(last_decided).max(self.decided_upto);
        self.state = State::Leader(Leader {
            ballot: c.ballot,
            next_slot: last + 1,
            in_flight: BTreeMap::new(),
            confirmations: Confirmations::new(),
        });
        self.leader = Some((rank, c.ballot));
        self.leaderless_ticks = 0;
        let mut reported = c.reported;
        // Phase 2 for every slot phase 1 covered: the highest-ballot value reported for
        // it (the only one that may have been chosen), else a no-op to fill the hole.
        for slot in self.decided_upto + 1..=last {
            if self.decided.contains_key(&slot) {
                continue;
            }
            let value = match reported.remove(&slot) {
                Some((_, value)) => value,
                None => {
                    self.lamport += 1;
                    Value::noop(self.lamport)
                }
            };
            self.propose_at(slot, value);
        }
        self.broadcast_heartbeat();
    }

    // ---------------------------------------------------------------- leader

    fn propose_at(&mut self, slot: Slot, value: Value) {
        let rank = self.config.rank;
        let retransmit = self.config.retransmit_ticks;
        let decided_upto = self.decided_upto;
        let State::Leader(l) = &mut self.state else {
            return;
        };
        let ballot = l.ballot;
        assert!(
            self.promised == ballot,
            "leader {rank} proposes in {ballot} but promised {}",
            self.promised
        );
        l.in_flight.insert(
            slot,
            Proposal {
                value: value.clone(),
                accepted_by: BTreeSet::from([rank]),
                retransmit_in_ticks: retransmit,
            },
        );
        self.accepted.insert(slot, (ballot, value.clone()));
        self.persist(Record::Accept {
            slot,
            ballot,
            value: value.clone(),
        });
        self.send(
            None,
            Message::Accept {
                ballot,
                slot,
                value,
                decided_upto,
            },
        );
        self.check_chosen(slot);
    }

    fn on_accepted(&mut self, from: Rank, ballot: Ballot, slot: Slot) {
        let State::Leader(l) = &mut self.state else {
            self.on_peer_vote(from, ballot, slot);
            return;
        };
        if l.ballot != ballot {
            return;
        }
        if let Some(p) = l.in_flight.get_mut(&slot) {
            p.accepted_by.insert(from);
        }
        self.check_chosen(slot);
    }

    fn check_chosen(&mut self, slot: Slot) {
        let quorum = self.quorum();
        let State::Leader(l) = &mut self.state else {
            return;
        };
        let chosen = l
            .in_flight
            .get(&slot)
            .is_some_and(|p| p.accepted_by.len() >= quorum);
        if !chosen {
            return;
        }
        let ballot = l.ballot;
        let Some(p) = l.in_flight.remove(&slot) else {
            return;
        };
        self.send(None, Message::Decide { slot, ballot });
        self.learn(slot, p.value);
    }

    fn tick_leader(&mut self) {
        let live = 1 + self.peers.values().filter(|p| self.is_live(p)).count();
        if live < self.quorum() {
            // Cut off from a majority: nothing can be decided here. Stop claiming to
            // lead, so that followers on this side look for a leader elsewhere.
            self.step_down();
            return;
        }
        let retransmit = self.config.retransmit_ticks;
        let decided_upto = self.decided_upto;
        let State::Leader(l) = &mut self.state else {
            return;
        };
        let ballot = l.ballot;
        let mut resend = Vec::new();
        for (&slot, p) in l.in_flight.iter_mut() {
            p.retransmit_in_ticks = p.retransmit_in_ticks.saturating_sub(1);
            if p.retransmit_in_ticks == 0 {
                p.retransmit_in_ticks = retransmit;
                resend.push((slot, p.value.clone()));
            }
        }
        for (slot, value) in resend {
            self.send(
                None,
                Message::Accept {
                    ballot,
                    slot,
                    value,
                    decided_upto,
                },
            );
        }
    }

    // ---------------------------------------------------------------- reads

    /// Asks for the index of this replica's read batch: of itself when it leads, else of
    /// the leader it follows (none yet: the tick asks again).
    fn ask_read_index(&mut self, batch: u64) {
        match (&self.state, self.leader) {
            (State::Leader(_), _) => self.on_read_ask(self.config.rank, batch),
            (State::Follower, Some((leader, _))) if leader != self.config.rank => {
                self.send(Some(leader), Message::ReadIndex { batch });
            }
            _ => {}
        }
    }

    /// A read-index ask arrived at this leader (from a follower, or its own): every write
    /// acknowledged before now is at or below `next_slot - 1`, provided a confirmation
    /// round sent after now finds it still leading.
    fn on_read_ask(&mut self, from: Rank, batch: u64) {
        let decided_upto = self.decided_upto;
        let State::Leader(l) = &mut self.state else {
            return; // not the leader (any more): the asker asks again
        };
        let slot = l.next_slot.saturating_sub(1).max(decided_upto);
        // A full table drops the ask; its retransmission comes back.
        l.confirmations.ask(Ask { from, batch, slot });
    }

    fn on_confirm(&mut self, from: Rank, ballot: Ballot, round: u64) {
        if may_confirm(ballot, self.promised) {
            self.send(Some(from), Message::Confirmed { ballot, round });
        } else {
            let promised = self.promised;
            self.send(Some(from), Message::Nack { ballot, promised });
        }
    }

    fn on_confirmed(&mut self, from: Rank, ballot: Ballot, round: u64) {
        let quorum = self.quorum();
        let State::Leader(l) = &mut self.state else {
            return;
        };
        if l.ballot != ballot {
            return;
        }
        let done = l.confirmations.confirmed(from, round, quorum);
        self.answer_read_asks(done);
    }

    /// The asks a quorum confirmed: this replica's own batches get their index, the
    /// followers' get a `ReadIndexed`.
    fn answer_read_asks(&mut self, asks: Vec<Ask>) {
        for Ask { from, batch, slot } in asks {
            if from == self.config.rank {
                self.reads.indexed(batch, slot);
            } else {
                self.send(Some(from), Message::ReadIndexed { batch, slot });
            }
        }
    }

    /// Once per turn: the reads that arrived ask together, the leader sends one
    /// confirmation round for every ask that arrived since its last, and the reads whose
    /// index is applied are released (after this turn's decided slots).
    fn flush_reads(&mut self) {
        if let Some(batch) = self.reads.take_open(self.now_ticks) {
            self.ask_read_index(batch);
        }
        #[cfg(feature = "bug-injection")]
        if self.bug == Some(Bug::ReadWithoutConfirmation)
            && let State::Leader(l) = &mut self.state
        {
            let asks = l.confirmations.take_all();
            self.answer_read_asks(asks);
        }
        let now = self.now_ticks;
        if let State::Leader(l) = &mut self.state
            && let Some(round) = l.confirmations.round_to_send(now)
        {
            self.send_round(round);
        }
        let servable = self.reads.servable(self.decided_upto);
        self.out.reads.extend(servable);
    }

    /// Broadcasts confirmation round `round` of this leader's ballot.
    fn send_round(&mut self, round: u64) {
        let (rank, quorum) = (self.config.rank, self.quorum());
        let State::Leader(l) = &mut self.state else {
            return;
        };
        let ballot = l.ballot;
        // Its own acceptor promised this very ballot: it confirms as the round leaves.
        let done = l.confirmations.confirmed(rank, round, quorum);
        self.send(None, Message::Confirm { ballot, round });
        self.answer_read_asks(done);
    }

    /// Reads too old are given up on; batches unanswered for a while ask again; a
    /// leader's asks left unconfirmed get a new round.
    fn tick_reads(&mut self) {
        let timeout = u64::from(self.config.pending_timeout_ticks);
        for id in self.reads.expire(self.now_ticks, timeout) {
            self.out.rejected_reads.push((
                id,
                Error::new(
                    ErrorCode::Unavailable,
                    "the read was not confirmed by a leader and applied here in time",
                ),
            ));
        }
        let every = u64::from(self.config.retransmit_ticks);
        for batch in self.reads.due_again(self.now_ticks, every) {
            self.ask_read_index(batch);
        }
        let now = self.now_ticks;
        if let State::Leader(l) = &mut self.state
            && let Some(round) = l.confirmations.round_due(now, every)
        {
            self.send_round(round);
        }
    }

    // ---------------------------------------------------------------- commands

    fn on_forward(&mut self, commands: Vec<Command>) {
        if matches!(self.state, State::Follower) {
            // Not (or no longer) the leader: the client will retry elsewhere.
            return;
        }
        for command in commands {
            if self.pending.len() >= self.config.max_pending_commands {
                break;
            }
            self.pending.push_back(Pending {
                command,
                queued_at_tick: self.now_ticks,
            });
        }
    }

    /// Takes the next batch off the pending queue: at least one command, then as many as
    /// fit in the batch limits.
    fn take_batch(&mut self, max_commands: usize, max_bytes: usize) -> Vec<Command> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(next) = self.pending.front() {
            let size = command_size_bytes(&next.command);
            if batch.len() == max_commands || (!batch.is_empty() && bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            if let Some(p) = self.pending.pop_front() {
                batch.push(p.command);
            }
        }
        batch
    }

    fn flush_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let (max_commands, max_bytes) =
            (self.config.max_batch_commands, self.config.max_batch_bytes);
        match &self.state {
            State::Leader(_) => loop {
                let State::Leader(l) = &self.state else {
                    return;
                };
                if l.in_flight.len() >= self.config.window_slots || self.pending.is_empty() {
                    return;
                }
                let slot = l.next_slot;
                let commands = self.take_batch(max_commands, max_bytes);
                self.lamport += 1;
                let value = Value {
                    lamport: self.lamport,
                    commands,
                };
                if let State::Leader(l) = &mut self.state {
                    l.next_slot += 1;
                }
                self.propose_at(slot, value);
            },
            State::Follower => {
                let Some((leader, ballot)) = self.leader else {
                    return;
                };
                if leader == self.config.rank {
                    return;
                }
                // The leader cuts its next batch when the first `Accepted` of a quorum
                // reaches it. While this follower's vote for the slot in flight is still
                // on its way to the disk, a command sent now arrives before the vote and
                // makes that batch: it goes at once. Once the vote has left, the cut has
                // been (or is being) made, so commands wait for the next `Accept` and
                // leave the moment it arrives — one message for them all instead of one
                // per turn, still ahead of this follower's next vote. With no slot in
                // flight they go at once, and a tick sends whatever waits (a lost
                // `Decide` must not hold them longer).
                let accepted_now = self
                    .out
                    .messages
                    .iter()
                    .any(|e| matches!(e.message, Message::Accepted { .. }));
                let leader_busy = self
                    .accepted
                    .range(self.decided_upto + 1..)
                    .any(|(_, (b, _))| *b == ballot);
                let waited_a_tick = self
                    .pending
                    .front()
                    .is_some_and(|p| p.queued_at_tick < self.now_ticks);
                if leader_busy && !accepted_now && !self.gate.vote_held() && !waited_a_tick {
                    return;
                }
                while !self.pending.is_empty() {
                    let commands = self.take_batch(
                        proto::limits::MAX_BATCH_COMMANDS,
                        proto::limits::MAX_BATCH_BYTES,
                    );
                    self.send(Some(leader), Message::Forward { commands });
                }
            }
            State::Candidate(_) => {}
        }
    }

    /// Commands that waited too long for a leader are rejected: they never left this
    /// replica, so they certainly took no effect, and the client hears so early.
    fn expire_pending(&mut self) {
        if !matches!(self.state, State::Follower) || self.leader.is_some() {
            return;
        }
        let timeout = u64::from(self.config.pending_timeout_ticks);
        while let Some(p) = self.pending.front() {
            if self.now_ticks - p.queued_at_tick < timeout {
                break;
            }
            if let Some(p) = self.pending.pop_front() {
                self.out.rejected.push((
                    p.command,
                    Error::new(ErrorCode::Unavailable, "no leader to take the command"),
                ));
            }
        }
    }
}
