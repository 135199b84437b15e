//! The replica: acceptor, learner and (when elected) leader, in one deterministic state
//! machine. See the crate page for the protocol and its invariants.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use proto::paxos::{
    ConfirmRound, DecidedEntry, MAX_DECIDED_ENTRIES, MAX_ENTRIES_BYTES, MAX_PROMISE_ENTRIES,
    MAX_SNAPSHOT_BYTES, MAX_SNAPSHOT_CHUNK_BYTES, PromiseEntry, command_size_bytes,
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

mod acceptor;
mod commands;
mod election;
mod leader;
mod learner;
mod read_index;

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
    /// Peers' `Accepted` votes for slots accepted here and not decided yet, with the
    /// ballot they were cast in: only votes of the ballot accepted here count, and a set
    /// of an older ballot is dropped when a vote of a newer one comes (a leader that
    /// re-proposes a slot replaces its `accepted` entry without passing through
    /// `on_accept`). Bounded by `accepted`, which it follows.
    votes: BTreeMap<Slot, (Ballot, BTreeSet<Rank>)>,
    /// The last slot this follower learnt from votes before its leader's `Decide` came
    /// (ballot and slot): until that `Decide` (or one of a later slot), the leader is
    /// taken to be still cutting its next batch, so commands wait to ride the next
    /// `Accept`, as they do while the slot is in flight ([`Replica::flush_pending`]).
    learnt_ahead_of_decide: Option<(Ballot, Slot)>,
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
    /// A leader's answers to its followers' read asks, sent at the end of the turn so
    /// that a confirmation round can ride with them.
    read_answers: Vec<Ask>,
    /// A round that rode to this follower with an answer (and from whom): its next ask
    /// confirms it, or a `Confirmed` at the end of the turn.
    owed_confirmation: Option<(Rank, ConfirmRound)>,

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
        // a generator of their own so that the election's draws stay as they were. The
        // incarnation picks the generator's stream rather than being mixed into its seed:
        // a seed that already holds the incarnation (the simulator's) cannot cancel it.
        let mut batch_ids = ChaCha8Rng::seed_from_u64(!config.seed);
        batch_ids.set_stream(config.incarnation);
        let first_batch = batch_ids.random::<u64>() ^ lamport.rotate_left(32);
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
            read_answers: Vec::new(),
            owed_confirmation: None,
            votes: BTreeMap::new(),
            learnt_ahead_of_decide: None,
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
            Message::ReadIndex {
                batch,
                promised,
                confirms,
            } => self.on_read_ask(from, batch, promised, confirms),
            Message::ReadIndexed {
                batch,
                slot,
                confirm,
            } => self.on_read_indexed(from, batch, slot, confirm),
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
}
