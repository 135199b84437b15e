//! What the node watches of its own core between turns, for people and for metrics:
//! role changes (elections started, leaderships won, phase 1 durations), a newly known
//! leader (then the commands of waiting clients are handed to it again), and phase 2
//! durations at the leader (from its `Accept` broadcast to the slot's apply).

use std::collections::BTreeMap;
use std::time::Instant;

use paxos::{Envelope, Message, Rank, Role, Slot, Status};

use crate::metrics::Metrics;

/// Most phase-2 start times remembered; at least the largest window.
pub const MAX_TRACKED_PROPOSALS: usize = 2 * paxos::MAX_WINDOW_SLOTS;

/// The core's role and leader as of the last turn, and the proposals being timed.
#[derive(Debug)]
pub(crate) struct Observer {
    role: Role,
    leader: Option<Rank>,
    candidacy_started: Option<Instant>,
    proposed_at: BTreeMap<Slot, Instant>,
    metrics: Metrics,
}

impl Observer {
    /// An observer of a core that starts as a follower with no leader.
    pub(crate) fn new(metrics: Metrics) -> Observer {
        Observer {
            role: Role::Follower,
            leader: None,
            candidacy_started: None,
            proposed_at: BTreeMap::new(),
            metrics,
        }
    }

    /// Whether the core led at the end of the last turn.
    pub(crate) fn leads(&self) -> bool {
        self.role == Role::Leader
    }

    /// Takes the core's status after a turn. Returns `true` when a (new) leader became
    /// known.
    pub(crate) fn after_turn(&mut self, status: &Status, now: Instant) -> bool {
        let new_leader = status.leader != self.leader && status.leader.is_some();
        self.leader = status.leader;
        if status.role != self.role {
            match status.role {
                Role::Candidate => {
                    self.metrics.elections.inc();
                    self.candidacy_started = Some(now);
                }
                Role::Leader => {
                    self.metrics.leaderships.inc();
                    if let Some(started) = self.candidacy_started.take() {
                        let phase1 = now.saturating_duration_since(started);
                        self.metrics.phase1_seconds.observe(phase1.as_secs_f64());
                    }
                    tracing::info!(rank = status.rank, "leading");
                }
                Role::Follower => {
                    if self.role == Role::Leader {
                        tracing::info!("no longer leading");
                    }
                }
            }
            self.role = status.role;
        }
        new_leader
    }

    /// Messages left: the leader's `Accept` broadcasts start their slots' phase 2.
    pub(crate) fn sent(&mut self, messages: &[Envelope], now: Instant) {
        for envelope in messages {
            if let (None, Message::Accept { slot, .. }) = (envelope.to, &envelope.message) {
                self.proposed_at.entry(*slot).or_insert(now);
            }
        }
        while self.proposed_at.len() > MAX_TRACKED_PROPOSALS {
            self.proposed_at.pop_first();
        }
    }

    /// `slot` was applied: ends its phase 2 if it was proposed here.
    pub(crate) fn applied(&mut self, slot: Slot, now: Instant) {
        if let Some(started) = self.proposed_at.remove(&slot) {
            let phase2 = now.saturating_duration_since(started);
            self.metrics.phase2_seconds.observe(phase2.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxos::{Ballot, Value};

    fn status(role: Role, leader: Option<Rank>) -> Status {
        Status {
            rank: 1,
            role,
            held_groups: 0,
            leader,
            ballot: None,
            promised: Ballot::default(),
            round: 0,
            decided_upto: 0,
            truncated_upto: 0,
            lamport: 0,
            pending_commands: 0,
            pending_reads: 0,
            in_flight_slots: 0,
            peers: vec![],
        }
    }

    #[test]
    fn elections_leaderships_and_new_leaders_are_noticed() {
        let metrics = Metrics::new();
        let mut observer = Observer::new(metrics.clone());
        let now = Instant::now();
        assert!(!observer.after_turn(&status(Role::Follower, None), now));
        assert!(observer.after_turn(&status(Role::Follower, Some(3)), now));
        assert!(
            !observer.after_turn(&status(Role::Follower, Some(3)), now),
            "known"
        );
        assert!(!observer.after_turn(&status(Role::Candidate, None), now));
        assert!(observer.after_turn(&status(Role::Leader, Some(1)), now));
        assert!(observer.leads());
        let text = metrics.encode();
        assert!(text.contains("paxos_elections_total 1"), "{text}");
        assert!(text.contains("paxos_leaderships_total 1"), "{text}");
    }

    #[test]
    fn phase_two_is_timed_from_the_accept_broadcast_to_the_apply() {
        let metrics = Metrics::new();
        let mut observer = Observer::new(metrics.clone());
        let accept = Envelope {
            from: 1,
            to: None,
            lamport: 1,
            message: Message::Accept {
                ballot: Ballot::new(1, 1),
                slot: 4,
                value: Value::noop(1),
                decided_upto: 3,
            },
        };
        let now = Instant::now();
        observer.sent(&[accept], now);
        observer.applied(3, now);
        observer.applied(4, now);
        assert!(metrics.encode().contains("paxos_phase2_seconds_count 1"));
    }
}
