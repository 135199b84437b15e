//! What a replica makes durable, and the fold that rebuilds its state from it.
//!
//! The core emits [`Record`]s in [`crate::Ready::persist`]; the driver appends them to
//! its write-ahead log and reports them durable ([`crate::Replica::persisted`]); the
//! core's gate holds back every output that depends on them until then. At
//! start the driver folds the records it finds into a [`Persisted`] with
//! [`Persisted::apply`] — the same fold the simulator uses for a crash-restart, so the
//! recovery path is the tested path.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Ballot, Round, Slot, Value};

/// One durable fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// The acceptor promised `ballot`: it will accept nothing lower.
    Promise {
        /// The promised ballot.
        ballot: Ballot,
    },
    /// The acceptor accepted `value` for `slot` in `ballot`.
    Accept {
        /// The slot.
        slot: Slot,
        /// The ballot.
        ballot: Ballot,
        /// The value.
        value: Value,
    },
    /// `slot` is decided with `value`.
    Decide {
        /// The slot.
        slot: Slot,
        /// The value.
        value: Value,
    },
    /// This node used `round` as a candidate: it must never use it again (a ballot
    /// names exactly one value per slot).
    Round {
        /// The round.
        round: Round,
    },
    /// Slots up to `upto` are covered by a durable snapshot of the driver: their log
    /// entries may be dropped.
    Truncate {
        /// Last slot covered.
        upto: Slot,
    },
}

impl Record {
    /// Whether outputs must wait for this record to be durable: promises, rounds and
    /// accepted values are what an acceptor vouches for. A `Decide` is not (a decided
    /// value was durably accepted by a quorum already, and a replica that loses the
    /// record learns it again), nor is a `Truncate` (it only lets log that a durable
    /// snapshot covers be dropped). See [`crate::gate`].
    pub fn gates_outputs(&self) -> bool {
        matches!(
            self,
            Record::Promise { .. } | Record::Accept { .. } | Record::Round { .. }
        )
    }
}

/// The durable state of a replica: promises, accepted and decided values, and the
/// snapshot the driver restored. `Persisted::default()` is a fresh node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Persisted {
    /// Highest ballot promised (never decreases).
    pub promised: Ballot,
    /// Highest round used as a candidate.
    pub round: Round,
    /// Accepted values of slots not known to be decided.
    pub accepted: BTreeMap<Slot, (Ballot, Value)>,
    /// Decided values after `truncated_upto`.
    pub decided: BTreeMap<Slot, Value>,
    /// Log entries up to here were dropped behind a snapshot.
    pub truncated_upto: Slot,
    /// Highest Lamport clock of any value folded in. A driver that restores a snapshot
    /// raises it to the snapshot's clock ([`Persisted::restore_snapshot`]), so that a
    /// restarted node's clock never runs behind the values it applied.
    pub lamport: u64,
    /// The snapshot the driver restored its state machine from, if any: `(applied slot,
    /// bytes)`. The core resumes applying after that slot and serves it to peers that
    /// need slots it no longer has.
    pub snapshot: Option<(Slot, Arc<Vec<u8>>)>,
}

impl Persisted {
    /// Folds one record in. Records may come in any order a WAL can hold them (a Decide
    /// after or before the Accept of the same slot, a Truncate anywhere): the fold keeps
    /// the maximum of every monotone field and never resurrects truncated entries.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Promise { ballot } => self.promised = self.promised.max(*ballot),
            Record::Accept {
                slot,
                ballot,
                value,
            } => {
                self.lamport = self.lamport.max(value.lamport);
                // Accepting in a ballot implies promising it.
                self.promised = self.promised.max(*ballot);
                if *slot <= self.truncated_upto || self.decided.contains_key(slot) {
                    return;
                }
                let newer = self
                    .accepted
                    .get(slot)
                    .is_none_or(|(accepted, _)| *accepted <= *ballot);
                if newer {
                    self.accepted.insert(*slot, (*ballot, value.clone()));
                }
            }
            Record::Decide { slot, value } => {
                self.lamport = self.lamport.max(value.lamport);
                if *slot <= self.truncated_upto {
                    return;
                }
                self.accepted.remove(slot);
                self.decided.insert(*slot, value.clone());
            }
            Record::Round { round } => self.round = self.round.max(*round),
            Record::Truncate { upto } => {
                if *upto > self.truncated_upto {
                    self.truncated_upto = *upto;
                    self.accepted = self.accepted.split_off(&(upto + 1));
                    self.decided = self.decided.split_off(&(upto + 1));
                }
            }
        }
    }

    /// Folds every record of `records`, in order.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a Record>) -> Self {
        let mut persisted = Persisted::default();
        records.into_iter().for_each(|r| persisted.apply(r));
        persisted
    }

    /// Tells the core that the driver restored its state machine from a snapshot taken at
    /// `slot`: the replica hands out decided slots from `slot + 1` on, and serves `bytes`
    /// to peers that need slots before its log. Decided entries up to `slot` in the log
    /// are not handed out again.
    pub fn restore_snapshot(&mut self, slot: Slot, bytes: Arc<Vec<u8>>) {
        self.snapshot = Some((slot, bytes));
    }

    /// Raises the Lamport clock the replica restarts with (e.g. to the restored store's
    /// clock, when the log entries that carried it were truncated).
    pub fn observe_lamport(&mut self, lamport: u64) {
        self.lamport = self.lamport.max(lamport);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Command, Op};

    fn value(tag: u64) -> Value {
        Value {
            lamport: tag,
            commands: vec![Command {
                client_id: 1,
                seq: tag,
                op: Op::Noop,
                session: None,
            }],
        }
    }

    #[test]
    fn what_an_acceptor_vouches_for_gates_outputs_and_nothing_else() {
        let ballot = Ballot::new(1, 1);
        assert!(Record::Promise { ballot }.gates_outputs());
        assert!(Record::Round { round: 1 }.gates_outputs());
        assert!(
            Record::Accept {
                slot: 1,
                ballot,
                value: value(1)
            }
            .gates_outputs()
        );
        assert!(
            !Record::Decide {
                slot: 1,
                value: value(1)
            }
            .gates_outputs()
        );
        assert!(!Record::Truncate { upto: 1 }.gates_outputs());
    }

    #[test]
    fn promise_and_round_never_decrease() {
        let p = Persisted::from_records(&[
            Record::Promise {
                ballot: Ballot::new(5, 1),
            },
            Record::Promise {
                ballot: Ballot::new(3, 2),
            },
            Record::Round { round: 7 },
            Record::Round { round: 2 },
        ]);
        assert_eq!(p.promised, Ballot::new(5, 1));
        assert_eq!(p.round, 7);
    }

    #[test]
    fn accept_keeps_the_highest_ballot_and_implies_a_promise() {
        let p = Persisted::from_records(&[
            Record::Accept {
                slot: 1,
                ballot: Ballot::new(2, 1),
                value: value(2),
            },
            Record::Accept {
                slot: 1,
                ballot: Ballot::new(1, 3),
                value: value(1),
            },
        ]);
        assert_eq!(p.accepted[&1], (Ballot::new(2, 1), value(2)));
        assert_eq!(p.promised, Ballot::new(2, 1));
    }

    #[test]
    fn decide_replaces_accept_in_either_order() {
        let accept = Record::Accept {
            slot: 4,
            ballot: Ballot::new(1, 1),
            value: value(4),
        };
        let decide = Record::Decide {
            slot: 4,
            value: value(4),
        };
        for records in [[accept.clone(), decide.clone()], [decide, accept]] {
            let p = Persisted::from_records(&records);
            assert!(p.accepted.is_empty());
            assert_eq!(p.decided[&4], value(4));
        }
    }

    #[test]
    fn truncate_drops_entries_and_they_stay_dropped() {
        let mut p = Persisted::default();
        for slot in 1..=6 {
            p.apply(&Record::Decide {
                slot,
                value: value(slot),
            });
        }
        p.apply(&Record::Accept {
            slot: 7,
            ballot: Ballot::new(1, 1),
            value: value(7),
        });
        p.apply(&Record::Truncate { upto: 4 });
        assert_eq!(p.decided.keys().copied().collect::<Vec<_>>(), vec![5, 6]);
        assert_eq!(p.truncated_upto, 4);
        // A late record below the truncation point (a WAL segment not yet deleted) does
        // not come back, and an older Truncate does not move the point back.
        p.apply(&Record::Decide {
            slot: 2,
            value: value(2),
        });
        p.apply(&Record::Truncate { upto: 1 });
        assert_eq!(p.truncated_upto, 4);
        assert!(!p.decided.contains_key(&2));
        assert!(p.accepted.contains_key(&7));
        // The clock remembers the truncated values too.
        assert_eq!(p.lamport, 7);
        p.observe_lamport(3);
        assert_eq!(p.lamport, 7);
    }

    #[test]
    fn records_round_trip_through_messagepack() {
        let record = Record::Accept {
            slot: 3,
            ballot: Ballot::new(2, 2),
            value: value(3),
        };
        let bytes = rmp_serde::to_vec_named(&record).unwrap();
        assert_eq!(rmp_serde::from_slice::<Record>(&bytes).unwrap(), record);
    }
}
