//! The acceptor: promises (`Prepare` → `Promise`) and votes (`Accept` → `Accepted`),
//! each only once what it answers for is on the disk (the gate holds the answer).

// A room of the replica: its types, fields and imports are this file's too.
use super::*;

impl Replica {
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

    pub(super) fn on_prepare(&mut self, from: Rank, ballot: Ballot, from_slot: Slot) {
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

    pub(super) fn on_accept(&mut self, from: Rank, ballot: Ballot, slot: Slot, value: Value) {
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
    pub(super) fn on_peer_vote(&mut self, from: Rank, ballot: Ballot, slot: Slot) {
        if slot <= self.decided_upto || self.decided.contains_key(&slot) {
            return;
        }
        let Some((accepted, value)) = self.accepted.get(&slot) else {
            return;
        };
        if *accepted != ballot {
            return;
        }
        let (voted_in, voters) = self
            .votes
            .entry(slot)
            .or_insert_with(|| (ballot, BTreeSet::new()));
        if *voted_in != ballot {
            // Votes of an earlier ballot, perhaps for the same value: they do not add up
            // with these (a value is chosen by a quorum of one ballot).
            *voted_in = ballot;
            voters.clear();
        }
        if from != self.config.rank {
            voters.insert(from);
        }
        if voters.len() + 1 >= self.quorum() {
            let value = value.clone();
            if matches!(self.state, State::Follower) {
                self.learnt_ahead_of_decide = Some((ballot, slot));
            }
            self.learn(slot, value);
        }
    }
}
