//! Client commands on their way to a slot: forwarded to the leader, batched into
//! values, expired when no slot takes them in time.

// A room of the replica: its types, fields and imports are this file's too.
use super::*;

impl Replica {
    pub(super) fn on_forward(&mut self, commands: Vec<Command>) {
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

    pub(super) fn flush_pending(&mut self) {
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
                // In flight: accepted here and not decided, or learnt here from votes
                // before the leader's `Decide` told that it decided (and cut anew).
                let leader_busy = self
                    .accepted
                    .range(self.decided_upto + 1..)
                    .any(|(_, (b, _))| *b == ballot)
                    || self
                        .learnt_ahead_of_decide
                        .is_some_and(|(b, _)| b == ballot);
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
    pub(super) fn expire_pending(&mut self) {
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
