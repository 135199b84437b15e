//! A replica's disk, as the node's WAL writer thread uses it.
//!
//! The node hands each [`paxos::Group`] to a writer thread, which takes every group that
//! waits, writes them, fsyncs once if any of them asks for it ([`paxos::Group::sync`]),
//! and then reports the last one durable; groups that arrive meanwhile wait for the next
//! round. (When that thread is idle the node's loop commits a group itself and reports
//! it at once: a round of one group with no latency, which the seeded latencies here
//! include.) Here:
//! - [`Disk::append`] puts a group's records in the page cache (`written`): a crash keeps
//!   a **random prefix** of them — nothing, everything, or a cut anywhere in between,
//!   as a torn write that recovery cuts off would leave — so crashes fall between an
//!   append and its fsync at every point;
//! - [`Disk::start_round`] begins a writer round over every group appended so far; the
//!   simulator completes it after a seeded latency with [`Disk::finish_round`], which
//!   makes the records durable (when the round synced) and says which group to report.

use std::sync::Arc;

use paxos::{Group, Persisted, Record, Slot};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// One writer round in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Round {
    /// The last group it covers.
    pub upto: u64,
    /// Whether it fsyncs (some group in it asked for it).
    pub sync: bool,
}

/// What survives a crash, and what is on its way.
#[derive(Debug, Default)]
pub(crate) struct Disk {
    /// The fold of every record that reached the platter.
    pub durable: Persisted,
    /// The last snapshot written (the node writes store.json durably before it tells the
    /// core).
    pub snapshot: Option<(Slot, Arc<Vec<u8>>)>,
    /// Records appended and not yet fsynced, with their group number, in order.
    written: Vec<(u64, Record)>,
    /// The last group appended.
    appended: u64,
    /// The last group appended that asked for an fsync.
    sync_upto: u64,
    /// The last group reported durable.
    reported: u64,
    /// The writer round in progress, if any.
    round: Option<Round>,
}

impl Disk {
    /// Appends a group to the page cache. A driver that lies about durability (the
    /// `AckBeforeFsync` tooth) may report it at once; the records still need an fsync.
    pub(crate) fn append(&mut self, group: Group) {
        assert_eq!(group.number, self.appended + 1, "groups come in order");
        self.appended = group.number;
        if group.sync {
            self.sync_upto = group.number;
        }
        self.written
            .extend(group.records.into_iter().map(|r| (group.number, r)));
    }

    /// Starts a writer round if none runs and a group waits for one.
    pub(crate) fn start_round(&mut self) -> Option<Round> {
        if self.round.is_some() || self.appended == self.reported {
            return None;
        }
        let round = Round {
            upto: self.appended,
            sync: self.sync_upto > self.reported,
        };
        self.round = Some(round);
        Some(round)
    }

    /// Completes the round in progress: its records are durable if it synced (an fsync
    /// covers everything written before it). Returns the group to report durable.
    pub(crate) fn finish_round(&mut self) -> Option<u64> {
        let round = self.round.take()?;
        if round.sync {
            let keep = self.written.partition_point(|(g, _)| *g <= round.upto);
            for (_, record) in self.written.drain(..keep) {
                self.durable.apply(&record);
            }
        }
        self.reported = self.reported.max(round.upto);
        Some(round.upto)
    }

    /// The process died: a random prefix of the unsynced records made it to the platter
    /// (the rest is lost), and the writer round in progress never finishes.
    pub(crate) fn crash(&mut self, rng: &mut ChaCha8Rng) {
        let kept = rng.random_range(0..=self.written.len());
        for (_, record) in self.written.drain(..).take(kept) {
            self.durable.apply(&record);
        }
        self.round = None;
        // A restarted replica numbers its groups from 1 again.
        self.appended = 0;
        self.sync_upto = 0;
        self.reported = 0;
    }

    /// Whether every group appended has been reported (records that need no fsync may
    /// still sit in the page cache).
    pub(crate) fn is_idle(&self) -> bool {
        self.round.is_none() && self.appended == self.reported
    }

    /// Whether the durable state holds `value`'s slot as accepted or decided with these
    /// commands, or a durable snapshot covers the slot.
    pub(crate) fn holds(&self, slot: Slot, value: &paxos::Value) -> bool {
        let covered = self.durable.truncated_upto >= slot
            || self.snapshot.as_ref().is_some_and(|(s, _)| *s >= slot);
        covered
            || self.durable.decided.get(&slot) == Some(value)
            || self
                .durable
                .accepted
                .get(&slot)
                .is_some_and(|(_, v)| v == value)
    }

    /// Whether the durable state still vouches for a vote in `ballot` for `slot`: an
    /// accepted value of that ballot or a later one, the decided value, or a snapshot.
    pub(crate) fn holds_vote(&self, slot: Slot, ballot: paxos::Ballot) -> bool {
        self.durable.truncated_upto >= slot
            || self.snapshot.as_ref().is_some_and(|(s, _)| *s >= slot)
            || self.durable.decided.contains_key(&slot)
            || self
                .durable
                .accepted
                .get(&slot)
                .is_some_and(|(b, _)| *b >= ballot)
    }
}
