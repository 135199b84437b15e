//! The durability gate: which outputs may leave before which records are on disk.
//!
//! "Persist before you send" is protocol knowledge, so it lives here, in the core, and
//! every driver — the node over its WAL, the simulator over its simulated disk — runs
//! exactly these rules. A driver never decides what may leave; it only:
//!
//! 1. appends a [`Ready`]'s records as one **group** ([`Group::number`]), and makes them
//!    durable with an fsync when [`Group::sync`] says so;
//! 2. tells the replica how far the groups are durable ([`crate::Replica::persisted`]);
//! 3. carries out everything else a [`Ready`] holds at once: the gate only puts into a
//!    `Ready` what may go now, and keeps the rest inside the replica until the disk
//!    allows it.
//!
//! ## The rules
//! Every output of one turn (one [`crate::Replica::ready`]) is in one of three classes:
//!
//! | class | waits until | which outputs |
//! |---|---|---|
//! | **now** | nothing | a follower's `Forward` of client commands; heartbeats; the read-index messages (`ReadIndex`, `ReadIndexed`, `Confirm`, `Confirmed`); the leader's phase-2a `Accept` broadcast once its ballot is durable |
//! | **earlier groups** | every gating record of the groups *before* this turn's is durable | the turn's decisions: `Decide`/`Decided` messages, the snapshot to install, the slots to apply (and so the client replies), the reads to serve, the rejected commands and reads |
//! | **own group** | every gating record up to this turn's group is durable | everything else: `Promise`, `Accepted`, `Nack`, `Prepare`, fetches |
//!
//! *Gating* records ([`Record::gates_outputs`]) are what an acceptor vouches for:
//! `Promise`, `Round` and `Accept`. `Decide` and `Truncate` records gate nothing (a
//! decided value is already durably accepted by a quorum; a truncation only lets a
//! durable snapshot replace log), so a group of only those needs no fsync of its own.
//!
//! Why each refinement is safe:
//! - **The leader's `Accept` leaves while its own record is written** (Ongaro's thesis,
//!   §10.2.1, "leader writes in parallel"): an `Accept` vouches for nothing the leader's
//!   acceptor stored; it depends only on the ballot, whose `Round`/`Promise` records
//!   must be durable first (checked: not in this group, and every group holding one is
//!   acknowledged). What the leader's own vote is worth is protected where it counts:
//!   the decision that counts it comes in a later turn, and waits for this group; and
//!   the `Accepted` that tells the others of that vote is an own-group output like any
//!   other vote.
//! - **Decisions wait for the earlier groups, not their own.** The leader decides slot
//!   *n* and cuts slot *n+1* in the same turn, so that turn's group holds the Accept
//!   record of *n+1*; its decisions vouch for a quorum's votes on *n* — this replica's
//!   own vote among them, written by an earlier group — not for *n+1*. When the group
//!   itself holds a ballot record, or an Accept record of a slot it decides (a replica
//!   that counts a vote of this very turn), the decisions wait for it as well.
//! - Outputs are released **in order**: a later turn's outputs never overtake an earlier
//!   turn's held ones (slots are applied in order; a message may depend on a record of
//!   an earlier turn, e.g. a retransmitted `Accepted`).
//!
//! The simulator (`tests/sim`) runs these rules with crashes that cut between an append
//! and its fsync, and its `teeth_*` tests break each rule on purpose (`Bug`) to show
//! the checkers catch it.

use std::collections::VecDeque;
use std::sync::Arc;

use proto::{Command, Error};

use crate::reads::ReadId;
use crate::{Envelope, Message, Record, Slot, Value};

/// Most turns whose outputs wait for the disk at once. A driver stops feeding the
/// replica peer messages and client commands while [`crate::Replica::held_groups`] is at
/// this limit, until the disk catches up (back-pressure instead of growing memory).
pub const MAX_HELD_GROUPS: usize = 1024;

/// The records of one turn, to append to the log as one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The group's number: 1, 2, 3… in the order the replica hands them out (from 1
    /// again after every restart). Report durability with
    /// [`crate::Replica::persisted`]`(number)`.
    pub number: u64,
    /// The records, to append in this order.
    pub records: Vec<Record>,
    /// Whether the group must be fsynced before it is acknowledged: it holds a gating
    /// record. A group without one may be acknowledged once written (a later fsync
    /// covers it).
    pub sync: bool,
}

/// What the replica hands its driver in one turn. Everything here may be carried out
/// **now**, the disk's part and the rest in either order:
/// - append `persist` (if any) to the log, and fsync it if [`Group::sync`];
///   acknowledge it with [`crate::Replica::persisted`] once done — from the same thread
///   or later, the replica only needs to hear it eventually. Nothing else in this
///   `Ready` waits for it, so a driver that fsyncs on its own thread does it last;
/// - send `messages` (`to: None` = to every other member);
/// - install `install_snapshot` if any, then apply every entry of `decided` in order,
///   then serve the linearizable reads of `reads` from the state just applied;
/// - answer the clients of `rejected` and `rejected_reads`.
///
/// What must wait for the disk is not in this `Ready`: the replica keeps it and hands it
/// out in a later one, once `persisted` covers what it depends on (see the module page).
#[derive(Debug, Default)]
#[must_use = "append the records, send the messages, apply the decided slots"]
pub struct Ready {
    /// Records to append (and make durable) as one group.
    pub persist: Option<Group>,
    /// Messages to send now.
    pub messages: Vec<Envelope>,
    /// Replace the state machine with this snapshot of the applied state at this slot;
    /// comes before `decided`.
    pub install_snapshot: Option<(Slot, Arc<Vec<u8>>)>,
    /// Decided slots to apply, strictly in slot order without gaps, continuing from the
    /// last slot handed out (or from `install_snapshot`'s slot).
    pub decided: Vec<(Slot, Value)>,
    /// Client commands this replica gave up on before they reached the log (they
    /// certainly took no effect): answer their clients with the error.
    pub rejected: Vec<(Command, Error)>,
    /// Linearizable reads ([`crate::Replica::read`]) to serve now, from the state after
    /// `decided` is applied ([`crate::reads`]).
    pub reads: Vec<ReadId>,
    /// Reads this replica gave up on (no leader confirmed them in time): answer with the
    /// error; the client may retry anywhere.
    pub rejected_reads: Vec<(ReadId, Error)>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.persist.is_none()
            && self.messages.is_empty()
            && self.install_snapshot.is_none()
            && self.decided.is_empty()
            && self.rejected.is_empty()
            && self.reads.is_empty()
            && self.rejected_reads.is_empty()
    }

    /// The records to append (empty when there are none).
    pub fn records(&self) -> &[Record] {
        self.persist.as_ref().map_or(&[], |g| g.records.as_slice())
    }
}

/// What one turn of the replica produced, before the gate sorts it.
#[derive(Debug, Default)]
pub(crate) struct Turn {
    pub(crate) persist: Vec<Record>,
    pub(crate) messages: Vec<Envelope>,
    pub(crate) install_snapshot: Option<(Slot, Arc<Vec<u8>>)>,
    pub(crate) decided: Vec<(Slot, Value)>,
    pub(crate) rejected: Vec<(Command, Error)>,
    pub(crate) reads: Vec<ReadId>,
    pub(crate) rejected_reads: Vec<(ReadId, Error)>,
}

/// A rule broken on purpose (the `bug-injection` feature; tests only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Breaks {
    /// `Promise` messages leave before their records are durable.
    pub(crate) promise_early: bool,
    /// `Accepted` messages leave before their records are durable.
    pub(crate) accepted_early: bool,
    /// `Prepare` messages, and the leader's `Accept`s, leave before the records of
    /// their ballot are durable.
    pub(crate) ballot_early: bool,
    /// Decisions leave without waiting for this replica's own votes.
    pub(crate) decisions_early: bool,
}

/// Outputs held for the disk.
#[derive(Debug, Default)]
struct Held {
    /// Released once every group up to this one is durable.
    needs: u64,
    messages: Vec<Envelope>,
    install_snapshot: Option<(Slot, Arc<Vec<u8>>)>,
    decided: Vec<(Slot, Value)>,
    rejected: Vec<(Command, Error)>,
    reads: Vec<ReadId>,
    rejected_reads: Vec<(ReadId, Error)>,
    /// Holds an `Accepted` (the follower's forwarding policy asks).
    vote: bool,
}

impl Held {
    /// Whether it holds outputs of the decision class (which are carried out in turn
    /// order among themselves: slots are applied in order).
    fn decides(&self) -> bool {
        self.install_snapshot.is_some()
            || !self.decided.is_empty()
            || !self.rejected.is_empty()
            || !self.reads.is_empty()
            || !self.rejected_reads.is_empty()
            || self.messages.iter().any(|e| decision_slot(e).is_some())
    }

    fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.install_snapshot.is_none()
            && self.decided.is_empty()
            && self.rejected.is_empty()
            && self.reads.is_empty()
            && self.rejected_reads.is_empty()
    }
}

/// The group numbers and how far they are durable, and the outputs waiting for them.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// Last group handed out.
    last_group: u64,
    /// Last group with a gating record.
    gating_group: u64,
    /// Last group with a `Round` or `Promise` record.
    ballot_group: u64,
    /// Every group up to here is durable (acknowledged by the driver).
    durable_group: u64,
    held: VecDeque<Held>,
}

/// A follower's `Forward` of client commands vouches for nothing this replica stored;
/// nor do the read-index messages: a `Confirmed`, or the ballot a `ReadIndex` carries,
/// says the acceptor promised nothing higher — a promise whose record a crash could lose
/// never left in a `Promise` either ([`crate::reads`]).
///
/// Nor does a heartbeat: a leader's ballot was durable before its `Prepare` left, and
/// nobody takes a follower's heartbeat for a promise. Held behind a slow fsync, a
/// leader's heartbeats would let its followers' election timeout run out.
fn leaves_now(envelope: &Envelope) -> bool {
    matches!(
        envelope.message,
        Message::Forward { .. }
            | Message::Heartbeat { .. }
            | Message::ReadIndex { .. }
            | Message::ReadIndexed { .. }
            | Message::Confirm { .. }
            | Message::Confirmed { .. }
    )
}

/// The leader's phase-2a broadcast.
fn is_phase2a(envelope: &Envelope) -> bool {
    envelope.to.is_none() && matches!(envelope.message, Message::Accept { .. })
}

/// The highest slot a message announces as decided (`Decide`, `Decided`).
fn decision_slot(envelope: &Envelope) -> Option<Slot> {
    match &envelope.message {
        Message::Decide { slot, .. } => Some(*slot),
        Message::Decided { entries } => entries.iter().map(|e| e.slot).max(),
        _ => None,
    }
}

impl Gate {
    /// Sorts one turn's outputs: numbers its records as a group, keeps back what must
    /// wait, and returns a [`Ready`] with everything that may be carried out now — this
    /// turn's and earlier turns' outputs that the disk now allows, in order.
    pub(crate) fn admit(&mut self, turn: Turn, breaks: Breaks) -> Ready {
        let Turn {
            persist,
            messages,
            install_snapshot,
            decided,
            rejected,
            reads,
            rejected_reads,
        } = turn;
        let ballot_record = persist
            .iter()
            .any(|r| matches!(r, Record::Round { .. } | Record::Promise { .. }));
        // A slot decided in this very turn may count this replica's own vote, whose
        // Accept record is then in this group: such decisions wait for it.
        let decides_upto = decided
            .iter()
            .map(|(slot, _)| *slot)
            .chain(messages.iter().filter_map(decision_slot))
            .max();
        let votes_for_what_it_decides = decides_upto.is_some_and(|upto| {
            persist
                .iter()
                .any(|r| matches!(r, Record::Accept { slot, .. } if *slot <= upto))
        });
        let earlier = self.gating_group;
        let group = if persist.is_empty() {
            None
        } else {
            self.last_group += 1;
            let sync = persist.iter().any(Record::gates_outputs);
            if sync {
                self.gating_group = self.last_group;
            }
            if ballot_record {
                self.ballot_group = self.last_group;
            }
            Some(Group {
                number: self.last_group,
                records: persist,
                sync,
            })
        };
        let own = self.gating_group;
        let ballot_durable =
            breaks.ballot_early || (!ballot_record && self.durable_group >= self.ballot_group);

        let mut ready = Ready {
            persist: group,
            ..Ready::default()
        };
        let mut decisions = Held {
            needs: if ballot_record || votes_for_what_it_decides {
                own
            } else {
                earlier
            },
            install_snapshot,
            decided,
            rejected,
            reads,
            rejected_reads,
            ..Held::default()
        };
        if breaks.decisions_early {
            // Still behind earlier held decisions (slots apply in order), but neither
            // behind this replica's own votes nor behind the messages held for them (a
            // leader's own `Accepted`, say).
            decisions.needs = self
                .held
                .iter()
                .filter(|h| h.decides())
                .map(|h| h.needs)
                .max()
                .unwrap_or(0);
        }
        let mut rest = Held {
            needs: own,
            ..Held::default()
        };
        let mut now = Vec::new();
        for envelope in messages {
            let early = leaves_now(&envelope)
                || (is_phase2a(&envelope) && ballot_durable)
                || (breaks.promise_early && matches!(envelope.message, Message::Promise { .. }))
                || (breaks.accepted_early && matches!(envelope.message, Message::Accepted { .. }))
                || (breaks.ballot_early && matches!(envelope.message, Message::Prepare { .. }));
            if early {
                now.push(envelope);
            } else if decision_slot(&envelope).is_some() {
                decisions.messages.push(envelope);
            } else {
                rest.vote |= matches!(envelope.message, Message::Accepted { .. });
                rest.messages.push(envelope);
            }
        }
        // Held outputs need ever later groups, so releasing from the front keeps order.
        assert!(
            (breaks.decisions_early || self.held.back().is_none_or(|h| h.needs <= decisions.needs))
                && decisions.needs <= rest.needs,
            "held outputs out of order"
        );
        if !decisions.is_empty() {
            // At the back, unless a broken rule lets them overtake what waits for more.
            let at = self.held.partition_point(|h| h.needs <= decisions.needs);
            self.held.insert(at, decisions);
        }
        if !rest.is_empty() {
            self.held.push_back(rest);
        }
        self.release_into(&mut ready);
        ready.messages.extend(now);
        ready
    }

    /// Moves every held output the disk now allows into `ready`, oldest first.
    fn release_into(&mut self, ready: &mut Ready) {
        while let Some(front) = self.held.front() {
            if front.needs > self.durable_group {
                break;
            }
            // A snapshot comes before the slots of its own turn; slots of an earlier turn
            // already in this Ready must be applied before it: leave it for the next one.
            if front.install_snapshot.is_some()
                && (!ready.decided.is_empty() || ready.install_snapshot.is_some())
            {
                break;
            }
            let Some(held) = self.held.pop_front() else {
                break;
            };
            ready.messages.extend(held.messages);
            if held.install_snapshot.is_some() {
                ready.install_snapshot = held.install_snapshot;
            }
            ready.decided.extend(held.decided);
            ready.rejected.extend(held.rejected);
            ready.reads.extend(held.reads);
            ready.rejected_reads.extend(held.rejected_reads);
        }
    }

    /// The driver made every group up to `number` durable.
    pub(crate) fn persisted(&mut self, number: u64) {
        assert!(
            number <= self.last_group,
            "group {number} reported durable, but only {} were handed out",
            self.last_group
        );
        self.durable_group = self.durable_group.max(number);
    }

    /// Turns whose outputs wait for the disk.
    pub(crate) fn held_groups(&self) -> usize {
        self.held.len()
    }

    /// Whether an `Accepted` of this replica waits for the disk.
    pub(crate) fn vote_held(&self) -> bool {
        self.held.iter().any(|h| h.vote)
    }

    /// Whether every group handed out is durable and nothing is held.
    pub(crate) fn is_idle(&self) -> bool {
        self.durable_group == self.last_group && self.held.is_empty()
    }
}

#[cfg(test)]
mod tests;
