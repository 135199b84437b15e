//! ReadIndex wired to the replica's messages: a replica's batch asks the leader
//! (`ReadIndex`), a leader confirms it still leads (`Confirm` → `Confirmed`, unless the
//! ask and its own acceptor are a quorum already) and answers (`ReadIndexed`). A round
//! rides with the answers of its turn when they reach a quorum, and a follower confirms
//! it with its next ask. The bookkeeping and the safety argument are in [`crate::reads`].

// A room of the replica: its types, fields and imports are this file's too.
use super::*;

impl Replica {
    /// Takes a linearizable read, which the driver will serve from its applied state
    /// when a later [`Ready::reads`] hands `id` back ([`crate::reads`]: the leader makes
    /// sure a quorum promised nothing above its ballot after the read arrived, and this
    /// replica applies up to the index it gives). The driver picks unique ids and keeps
    /// what each read asks for.
    /// A read that no leader confirms within [`Config::pending_timeout_ticks`] comes
    /// back in [`Ready::rejected_reads`] as `unavailable`.
    ///
    /// Errors: `overloaded` when [`Config::max_pending_commands`] reads already wait.
    pub fn read(&mut self, id: ReadId) -> Result<(), Error> {
        if self.reads.len() >= self.config.max_pending_commands {
            return Err(Error::new(
                ErrorCode::Overloaded,
                format!("{} reads already wait at this replica", self.reads.len()),
            ));
        }
        self.reads.arrive(Read {
            id,
            arrived_tick: self.now_ticks,
        });
        Ok(())
    }

    /// Asks for the index of this replica's read batch: of itself when it leads, else of
    /// the leader it follows (none yet: the tick asks again).
    fn ask_read_index(&mut self, batch: u64) {
        match (&self.state, self.leader) {
            (State::Leader(_), _) => self.on_read_ask(self.config.rank, batch, None, None),
            (State::Follower, Some((leader, _))) if leader != self.config.rank => {
                let promised = self.promised;
                // A round that rode here from this leader is confirmed by the ask
                // itself, which leaves after it arrived (one that the promise no longer
                // allows is refused at the end of the turn).
                let confirms = self
                    .owed_confirmation
                    .take_if(|(to, c)| *to == leader && may_confirm(c.ballot, promised))
                    .map(|(_, c)| c);
                self.send(
                    Some(leader),
                    Message::ReadIndex {
                        batch,
                        promised: Some(promised),
                        confirms,
                    },
                );
            }
            _ => {}
        }
    }

    /// A read-index ask arrived at this leader (from a follower, with the ballot it had
    /// promised when it asked; or its own, `None`): every write acknowledged before now
    /// is at or below `next_slot - 1`, provided a quorum of acceptors promised nothing
    /// above this leader's ballot at some moment after the reads arrived.
    ///
    /// The follower's ask is one such confirmation (it left after its reads arrived, and
    /// promises only grow), and this leader's acceptor is another (it leads, so it
    /// promised its own ballot and nothing higher: a higher promise deposes it). When
    /// those two are a quorum — two or three replicas — the ask is answered at once, two
    /// message delays instead of four. Otherwise it waits for a confirmation round. The
    /// answer covers the writes acknowledged before the batch's reads arrived, which is
    /// all its reads need (a batch takes no reads after its first ask).
    ///
    /// An ask that `confirms` a round which rode to the follower with an earlier answer
    /// is that round's `Confirmed` as well: it left after the round arrived, promising
    /// nothing above this ballot.
    pub(super) fn on_read_ask(
        &mut self,
        from: Rank,
        batch: u64,
        promised: Option<Ballot>,
        confirms: Option<ConfirmRound>,
    ) {
        let (decided_upto, own, quorum) = (self.decided_upto, self.config.rank, self.quorum());
        let State::Leader(l) = &mut self.state else {
            return; // not the leader (any more): the asker asks again
        };
        let slot = l.next_slot.saturating_sub(1).max(decided_upto);
        let ask = Ask { from, batch, slot };
        let vouches = from != own && promised.is_some_and(|p| may_confirm(l.ballot, p));
        let mut done = match confirms {
            Some(c) if vouches && c.ballot == l.ballot => {
                l.confirmations.confirmed(from, c.round, quorum)
            }
            _ => Vec::new(),
        };
        if 1 + usize::from(vouches) >= quorum {
            done.push(ask);
        } else {
            // A full table drops the ask; its retransmission comes back.
            l.confirmations.ask(ask);
        }
        self.answer_read_asks(done);
    }

    /// The leader answered batch `batch`; a round that rode with the answer is owed a
    /// confirmation (the next ask, or a `Confirmed` at the end of the turn).
    pub(super) fn on_read_indexed(
        &mut self,
        from: Rank,
        batch: u64,
        slot: Slot,
        confirm: Option<ConfirmRound>,
    ) {
        self.reads.indexed(batch, slot);
        let Some(round) = confirm else {
            return;
        };
        // One confirmation is owed at a time: the newest round of a leader covers its
        // older ones (an answer reordered behind a newer one changes nothing), and a
        // round of another leader replaces it (the one left out is sent again).
        let older = matches!(
            self.owed_confirmation,
            Some((to, owed)) if to == from && owed.ballot == round.ballot && owed.round > round.round
        );
        if !older {
            self.owed_confirmation = Some((from, round));
        }
    }

    pub(super) fn on_confirm(&mut self, from: Rank, ballot: Ballot, round: u64) {
        if may_confirm(ballot, self.promised) {
            self.send(Some(from), Message::Confirmed { ballot, round });
        } else {
            let promised = self.promised;
            self.send(Some(from), Message::Nack { ballot, promised });
        }
    }

    pub(super) fn on_confirmed(&mut self, from: Rank, ballot: Ballot, round: u64) {
        let quorum = self.quorum();
        let State::Leader(l) = &mut self.state else {
            return;
        };
        if l.ballot != ballot {
            return;
        }
        let done = l.confirmations.confirmed(from, round, quorum);
        self.answer_read_asks(done);
    }

    /// The asks a quorum confirmed: this replica's own batches get their index, the
    /// followers' get a `ReadIndexed` at the end of the turn.
    fn answer_read_asks(&mut self, asks: Vec<Ask>) {
        for ask in asks {
            if ask.from == self.config.rank {
                self.reads.indexed(ask.batch, ask.slot);
            } else {
                self.read_answers.push(ask);
            }
        }
    }

    /// Sends this turn's answers to the followers' asks, with the round `confirm` riding
    /// on them.
    fn send_read_answers(&mut self, confirm: Option<ConfirmRound>) {
        for Ask { from, batch, slot } in std::mem::take(&mut self.read_answers) {
            let answer = Message::ReadIndexed {
                batch,
                slot,
                confirm,
            };
            self.send(Some(from), answer);
        }
    }

    /// A follower's answer to a round that rode to it and that no ask confirmed this
    /// turn, as to a `Confirm`.
    fn settle_owed_confirmation(&mut self) {
        if let Some((to, c)) = self.owed_confirmation.take() {
            self.on_confirm(to, c.ballot, c.round);
        }
    }

    /// Once per turn: the reads that arrived ask together, the leader sends one
    /// confirmation round for every ask that arrived since its last, and the reads whose
    /// index is applied are released (after this turn's decided slots).
    pub(super) fn flush_reads(&mut self) {
        if let Some(again) = self.reads.ask_of(self.leader, self.now_ticks) {
            for batch in again {
                self.ask_read_index(batch);
            }
            if let Some(batch) = self.reads.take_open(self.now_ticks) {
                self.ask_read_index(batch);
            }
        }
        #[cfg(feature = "bug-injection")]
        if self.bug == Some(Bug::ReadWithoutConfirmation)
            && let State::Leader(l) = &mut self.state
        {
            let asks = l.confirmations.take_all();
            self.answer_read_asks(asks);
        }
        let now = self.now_ticks;
        let mut riding = None;
        if let State::Leader(l) = &mut self.state
            && let Some(round) = l.confirmations.round_to_send(now)
        {
            riding = self.send_round(round, true);
        }
        self.send_read_answers(riding);
        self.settle_owed_confirmation();
        let servable = self.reads.servable(self.decided_upto);
        self.out.reads.extend(servable);
    }

    /// Sends confirmation round `round` of this leader's ballot: with this turn's
    /// answers when it `may_ride` and they go to enough followers to make a quorum with
    /// this replica (no message of its own; each confirms with its next ask), else as a
    /// broadcast. Returns the round when it is to ride with the answers.
    fn send_round(&mut self, round: u64, may_ride: bool) -> Option<ConfirmRound> {
        let (rank, quorum) = (self.config.rank, self.quorum());
        let State::Leader(l) = &mut self.state else {
            return None;
        };
        let ballot = l.ballot;
        // Its own acceptor promised this very ballot: it confirms as the round leaves.
        let done = l.confirmations.confirmed(rank, round, quorum);
        let riders: BTreeSet<Rank> = self.read_answers.iter().map(|a| a.from).collect();
        let rides = may_ride && 1 + riders.len() >= quorum;
        l.confirmations.sent_as(rides);
        if !rides {
            self.send(None, Message::Confirm { ballot, round });
        }
        self.answer_read_asks(done);
        rides.then_some(ConfirmRound { ballot, round })
    }

    /// Reads too old are given up on; batches unanswered for a while ask again; a
    /// leader's asks left unconfirmed get a new round.
    pub(super) fn tick_reads(&mut self) {
        let timeout = u64::from(self.config.pending_timeout_ticks);
        for id in self.reads.expire(self.now_ticks, timeout) {
            self.out.rejected_reads.push((
                id,
                Error::new(
                    ErrorCode::Unavailable,
                    "the read was not confirmed by a leader and applied here in time",
                ),
            ));
        }
        let every = u64::from(self.config.retransmit_ticks);
        for batch in self.reads.due_again(self.now_ticks, every) {
            self.ask_read_index(batch);
        }
        let now = self.now_ticks;
        if let State::Leader(l) = &mut self.state
            && let Some(round) = l.confirmations.round_due(now, every)
        {
            // A round sent again reaches every follower: the riders of the last one
            // may be the reason it went unconfirmed.
            let _broadcast = self.send_round(round, false);
        }
    }
}
