//! The durability gate: which outputs of the Paxos core may leave, and when.
//!
//! Every `Ready` whose records go to the WAL gets a sequence number; the WAL thread
//! reports the highest group whose gating records ([`gates_messages`]) are durable. A
//! `Ready`'s outputs need every gating record of that group **and of every earlier
//! group** to be durable (a message may depend on a record of an earlier `Ready`: an
//! `Accepted` retransmitted a turn later vouches for an Accept record written before).
//! Two exceptions, argued in [`crate::driver`]:
//! - the leader's phase-2a `Accept` broadcast may leave at once provided no
//!   `Round`/`Promise` record — its ballot — is still on its way to the disk;
//! - a `Ready`'s **decisions** (its `Decide`/`Decided` messages, the slots it applies,
//!   the replies) need only the *earlier* groups, unless its own records include the
//!   ballot or an accepted value of a slot it decides. A decision vouches for a quorum's
//!   accepted values, not for what this group adds (typically the leader's Accept of
//!   the next slot, cut in the same turn), so it need not wait for this group's fsync.
//!
//! This is plain data with no I/O, so the rule is unit-tested here.

use paxos::{Record, Slot};

use crate::wal::gates_messages;

/// What the gate decided for one `Ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The WAL group number of its records, if it has any (send them with it).
    pub wal_seq: Option<u64>,
    /// Its outputs are released once the durable group number reaches this.
    pub needs_seq: u64,
    /// Whether the leader's `Accept` broadcasts of this `Ready` may leave now.
    pub accepts_may_leave_now: bool,
    /// Its decisions are released once the durable group number reaches this
    /// (`<= needs_seq`).
    pub decisions_need_seq: u64,
}

/// The sequence numbers of the WAL groups and how far they are durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    /// Last group handed to the WAL.
    wal_seq: u64,
    /// Last group with a gating record.
    gating_seq: u64,
    /// Last group with a `Round` or `Promise` record.
    ballot_seq: u64,
    /// Every gating record up to this group is durable.
    durable_seq: u64,
}

impl Gate {
    /// A gate with nothing written.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Admits the next `Ready`, whose records are `persist` and whose highest decided
    /// slot (applied, or announced in a message) is `decides_upto`.
    pub fn admit(&mut self, persist: &[Record], decides_upto: Option<Slot>) -> Admission {
        let ballot_record = persist
            .iter()
            .any(|r| matches!(r, Record::Round { .. } | Record::Promise { .. }));
        // A slot decided in this very turn may count this replica's own vote, whose
        // Accept record is then in this group: such decisions wait for it.
        let accepts_what_it_decides = decides_upto.is_some_and(|upto| {
            persist
                .iter()
                .any(|r| matches!(r, Record::Accept { slot, .. } if *slot <= upto))
        });
        let earlier_gating_seq = self.gating_seq;
        let wal_seq = if persist.is_empty() {
            None
        } else {
            self.wal_seq += 1;
            if persist.iter().any(gates_messages) {
                self.gating_seq = self.wal_seq;
            }
            if ballot_record {
                self.ballot_seq = self.wal_seq;
            }
            Some(self.wal_seq)
        };
        Admission {
            wal_seq,
            needs_seq: self.gating_seq,
            accepts_may_leave_now: !ballot_record && self.durable_seq >= self.ballot_seq,
            decisions_need_seq: if ballot_record || accepts_what_it_decides {
                self.gating_seq
            } else {
                earlier_gating_seq
            },
        }
    }

    /// The WAL thread made every gating record up to group `seq` durable.
    pub fn durable(&mut self, seq: u64) {
        self.durable_seq = self.durable_seq.max(seq);
    }

    /// Every group handed to the WAL is durable (after an explicit sync).
    pub fn all_durable(&mut self) {
        self.durable_seq = self.durable_seq.max(self.wal_seq);
    }

    /// Whether outputs admitted with `needs_seq` may be released.
    pub fn releasable(&self, needs_seq: u64) -> bool {
        needs_seq <= self.durable_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxos::{Ballot, Value};

    fn accept(slot: u64) -> Record {
        Record::Accept {
            slot,
            ballot: Ballot::new(1, 1),
            value: Value::noop(1),
        }
    }

    fn decide(slot: u64) -> Record {
        Record::Decide {
            slot,
            value: Value::noop(1),
        }
    }

    #[test]
    fn outputs_wait_for_their_own_records() {
        let mut gate = Gate::new();
        let a = gate.admit(&[accept(1)], None);
        assert_eq!(a.wal_seq, Some(1));
        assert!(!gate.releasable(a.needs_seq));
        gate.durable(1);
        assert!(gate.releasable(a.needs_seq));
    }

    #[test]
    fn outputs_wait_for_earlier_records_too() {
        let mut gate = Gate::new();
        let first = gate.admit(&[accept(1)], None);
        // A Ready with no records (say, a retransmitted Accepted) depends on the earlier
        // Accept record.
        let second = gate.admit(&[], None);
        assert_eq!(second.wal_seq, None);
        assert_eq!(second.needs_seq, first.needs_seq);
        assert!(!gate.releasable(second.needs_seq));
        gate.durable(1);
        assert!(gate.releasable(second.needs_seq));
    }

    #[test]
    fn decide_records_gate_nothing() {
        let mut gate = Gate::new();
        let a = gate.admit(&[accept(1)], None);
        gate.durable(1);
        // The Decide record is written (group 2) but nothing waits for it.
        let d = gate.admit(&[decide(1)], None);
        assert_eq!(d.wal_seq, Some(2));
        assert_eq!(d.needs_seq, a.needs_seq);
        assert!(gate.releasable(d.needs_seq));
    }

    #[test]
    fn accepts_leave_early_only_behind_a_durable_ballot() {
        let mut gate = Gate::new();
        // A candidacy: its Round and Promise records are in this very group.
        let candidacy = gate.admit(
            &[
                Record::Round { round: 1 },
                Record::Promise {
                    ballot: Ballot::new(1, 1),
                },
            ],
            None,
        );
        assert!(!candidacy.accepts_may_leave_now);
        // Leading already, but the ballot's records are not durable yet: wait.
        let proposal = gate.admit(&[accept(1)], None);
        assert!(!proposal.accepts_may_leave_now);
        gate.durable(1);
        // The ballot is durable: the next proposal's Accept leaves while its own record
        // is written, but its outputs (the Decide, the reply) still wait for it.
        let next = gate.admit(&[accept(2)], None);
        assert!(next.accepts_may_leave_now);
        assert!(!gate.releasable(next.needs_seq));
        gate.all_durable();
        assert!(gate.releasable(next.needs_seq));
    }

    #[test]
    fn decisions_need_only_the_earlier_groups() {
        let mut gate = Gate::new();
        let first = gate.admit(&[accept(1)], None);
        // The turn that decides slot 1 also proposes slot 2: the Decide, the apply and
        // the reply of slot 1 wait for slot 1's record, not for slot 2's.
        let second = gate.admit(&[accept(2), decide(1)], Some(1));
        assert_eq!(second.decisions_need_seq, first.needs_seq);
        assert!(second.decisions_need_seq < second.needs_seq);
        gate.durable(1);
        assert!(gate.releasable(second.decisions_need_seq));
        assert!(!gate.releasable(second.needs_seq));
    }

    #[test]
    fn a_decision_on_a_vote_of_this_group_waits_for_it() {
        let mut gate = Gate::new();
        gate.admit(&[accept(1)], None);
        gate.durable(1);
        // A single replica proposes and decides slot 2 in one turn: its own vote is in
        // this group.
        let both = gate.admit(&[accept(2), decide(2)], Some(2));
        assert_eq!(both.decisions_need_seq, both.needs_seq);
        assert!(!gate.releasable(both.decisions_need_seq));
        // A new ballot in this group: everything waits for it too.
        let ballot = gate.admit(
            &[
                Record::Promise {
                    ballot: Ballot::new(2, 1),
                },
                decide(2),
            ],
            Some(2),
        );
        assert_eq!(ballot.decisions_need_seq, ballot.needs_seq);
    }
}
