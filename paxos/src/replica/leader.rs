//! The leader's phase 2: proposing values in slots (`Accept`), counting `Accepted`
//! votes until a quorum decides a slot (`Decide`), and its heartbeats.

// A room of the replica: its types, fields and imports are this file's too.
use super::*;

impl Replica {
    pub(super) fn propose_at(&mut self, slot: Slot, value: Value) {
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
        // The leader's own vote, to every node. The `Accept` above vouches for nothing (it
        // leaves while the record is written); this leaves once the record is durable
        // (the gate holds it until then). With it a follower learns the slot as soon as its
        // own vote is durable too — a quorum of three — instead of waiting two hops more
        // for the other follower's `Accepted` or the leader's `Decide`.
        self.send(None, Message::Accepted { ballot, slot });
        self.check_chosen(slot);
    }

    pub(super) fn on_accepted(&mut self, from: Rank, ballot: Ballot, slot: Slot) {
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

    pub(super) fn tick_leader(&mut self) {
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
}
