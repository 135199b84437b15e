//! Elections: following a leader and hearing its heartbeats, running for a ballot when
//! it goes silent (phase 1: `Prepare`, `Promise`, `Nack`), and taking over its slots.

// A room of the replica: its types, fields and imports are this file's too.
use super::*;

impl Replica {
    pub(super) fn quorum(&self) -> usize {
        self.config.quorum()
    }

    pub(super) fn is_live(&self, peer: &Peer) -> bool {
        peer.silent_ticks
            .is_some_and(|t| t <= self.config.election_timeout_ticks)
    }

    /// Follows `rank`, which showed it leads with `ballot` — not below our promise, as
    /// the caller checked (a replica never follows a ballot it would refuse).
    pub(super) fn follow(&mut self, rank: Rank, ballot: Ballot) {
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

    pub(super) fn on_heartbeat(&mut self, from: Rank, ballot: Ballot, leader: Option<Rank>) {
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

    pub(super) fn on_nack(&mut self, ballot: Ballot, promised: Ballot) {
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

    pub(super) fn step_down(&mut self) {
        if let State::Leader(_) | State::Candidate(_) = self.state {
            self.state = State::Follower;
            if self.leader.is_some_and(|(r, _)| r == self.config.rank) {
                self.leader = None;
            }
            self.leaderless_ticks = 0;
            self.backoff_ticks = self.rng.random_range(0..self.config.election_timeout_ticks);
        }
    }

    pub(super) fn tick_follower(&mut self) {
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

    pub(super) fn tick_candidate(&mut self) {
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

    pub(super) fn on_promise(
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
    pub(super) fn try_finish_phase1(&mut self) {
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
}
