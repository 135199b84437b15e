//! Linearizable reads without a log slot: **ReadIndex** (Ongaro's thesis, §6.4), in
//! Paxos terms.
//!
//! A read must see every write acknowledged before it arrived. Such a write is in a slot
//! decided before then, and a leader that still leads when the read arrives knows every
//! such slot is at most its `next_slot - 1`: slots decided in earlier ballots were
//! reported to it in phase 1 (a chosen value is held by a quorum, which meets its
//! promise quorum), and it proposed every slot of its own ballot. "Still leads" is what
//! the leader must confirm, *after* the read arrived: it broadcasts
//! [`Message::Confirm`](crate::Message::Confirm) `{ ballot, round }` and waits for a
//! quorum of acceptors to answer [`Message::Confirmed`](crate::Message::Confirmed) —
//! each answers only while it promised nothing above `ballot`. A higher ballot that
//! could have decided something before the read arrived completed phase 1 with a quorum
//! that meets this one, and the acceptor in both would have refused. The serving replica
//! then waits until it has applied that far, and reads its own state.
//!
//! One confirmation round serves every read that arrived before it was sent (rounds are
//! numbered; a quorum for round *r* confirms every ask of rounds ≤ *r*), and a follower
//! asks once ([`Message::ReadIndex`](crate::Message::ReadIndex)) for all the reads that
//! arrived at it since its last ask: a read costs a fraction of a few message delays and
//! no fsync, at any replica.
//!
//! **A follower's ask confirms too.** What the leader needs is a quorum of acceptors
//! that promised nothing above its ballot at some moment *after* the reads arrived — not
//! necessarily after the leader took the index. A follower's ask leaves after its reads
//! arrived and carries the ballot it had promised then (promises only grow, so it had
//! promised nothing higher before either); the leader's own acceptor promised exactly
//! its ballot while it leads. With two or three replicas those two are a quorum: the
//! leader answers a follower's ask when it arrives, two message delays in all instead of
//! four, and sends rounds only for its own reads. (An asker that promised higher than
//! the leader's ballot would not count; a follower drops a leader whose ballot is below
//! its promise, so that check is a second line of defence.) With five, an ask waits for
//! a round as the leader's own reads do.
//!
//! **A round rides with the answers.** The leader's own reads still need a round, and a
//! `Confirm` broadcast costs the fabric a message in and one out per subscriber, then a
//! `Confirmed` each way. When the turn that sends a round also answers asks of enough
//! followers to make a quorum with the leader, the round goes with those answers instead
//! (`ReadIndexed { confirm }`), and each of those followers confirms it with its next ask
//! (`ReadIndex { confirms }`) — under load it asks again at once, since its reads wait
//! for the answer — or with a `Confirmed` at the end of its turn when it has nothing to
//! ask. The ask is as good a confirmation as a `Confirmed`: it leaves after the round
//! arrived, and the leader credits it only when the round's ballot is its current one
//! (rounds are numbered from 1 again in every leadership, and every leadership has a
//! new ballot) and the ask's `promised` is not above it (the follower sends a `Nack`
//! instead when its promise no longer allows it). Fewer messages, not fewer delays: the
//! round still takes two. What it gives up is spare confirmations: a broadcast reaches
//! every follower and any quorum of them will do, a riding round reaches only its
//! riders (one, with three replicas), so one lost answer or one paused rider holds it.
//! A riding round unconfirmed after [`RIDING_ROUND_PATIENCE_TICKS`] is therefore sent
//! again as a broadcast (a round sent again never rides), instead of after the
//! `retransmit_ticks` a lost broadcast waits. A follower of an earlier version ignores a
//! riding round: during a rolling upgrade the leader's own reads may wait those ticks.
//!
//! **What an answer covers.** The index covers the writes acknowledged before the
//! *batch's reads arrived*, not every write acknowledged before the answer left: a
//! deposed leader that has not heard of it may still answer an ask that left before its
//! asker promised the new ballot. So a batch never takes reads after its first ask
//! (`take_open` closes it), and an answer serves exactly the batch it names — both are
//! what makes an immediate answer safe.
//!
//! **One at a time.** A replica keeps one ask in flight, and a leader one round: reads
//! that arrive meanwhile wait for the next, which leaves as soon as the answer comes (or
//! after `retransmit_ticks`, when it was lost). A read that finds no ask in flight waits
//! for nothing; under load a batch grows to whatever arrived in one round trip, instead
//! of whatever arrived in one turn of the driver — 64 clients reading made 0.78 fabric
//! messages per read when every turn asked, 0.31 now. Waiting is always safe: an index
//! taken later than the read arrived is only higher. (etcd's ReadIndex loop works the
//! same way.) The price: a batch whose ask or round was lost holds the reads behind it
//! until its retransmission, `retransmit_ticks` later. A replica that knows no leader
//! asks nobody (its reads wait open), and one that learns of a new leader asks it again
//! at once for the batches it asked of the old one.
//!
//! Why not leases: a lease is cheaper (no round) but trusts every node's clock to drift
//! less than a bound; the project runs on shared, noisy machines where a paused process
//! (`SIGSTOP`, a stalled VM) breaks that assumption silently. ReadIndex trusts only
//! messages, as the rest of the core does.
//!
//! This module holds the bookkeeping: `LocalReads` (the reads waiting at this replica,
//! any role) and `Confirmations` (a leader's asks and rounds); `replica/read_index.rs`
//! wires them to the replica's messages.

use std::collections::{BTreeMap, VecDeque};

use crate::{Ballot, Rank, Slot};

/// A read the driver serves from its applied state once the core releases it
/// ([`crate::Ready::reads`]). The driver picks the ids; the core only hands them back.
pub type ReadId = u64;

/// A read waiting at this replica.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Read {
    pub(crate) id: ReadId,
    pub(crate) arrived_tick: u64,
}

/// Reads that asked together for one index.
#[derive(Debug)]
struct Batch {
    reads: Vec<Read>,
    asked_tick: u64,
}

/// The reads waiting at this replica: not asked yet, asked, or indexed and waiting to be
/// applied that far.
#[derive(Debug)]
pub(crate) struct LocalReads {
    /// Arrived since the last ask.
    open: Vec<Read>,
    /// Asked, not answered; by batch id.
    asked: BTreeMap<u64, Batch>,
    /// Answered: served once this replica applied the slot.
    indexed: BTreeMap<Slot, Vec<Read>>,
    /// The next batch id. Ids start at a random point per incarnation, so that an
    /// answer to an ask of an earlier incarnation (which may predate a read of this one)
    /// finds no batch.
    next_batch: u64,
    len: usize,
    /// The leader (rank and ballot) the batches in `asked` were last asked of.
    asked_of: Option<(Rank, Ballot)>,
}

impl LocalReads {
    pub(crate) fn new(first_batch: u64) -> LocalReads {
        LocalReads {
            open: Vec::new(),
            asked: BTreeMap::new(),
            indexed: BTreeMap::new(),
            next_batch: first_batch,
            len: 0,
            asked_of: None,
        }
    }

    /// Whom to ask now, given the leader this replica knows: `None` while it knows none
    /// (the reads wait open, instead of being asked of nobody and held until their
    /// retransmission). When the leader changed since the batches in flight were asked
    /// (or was unknown for a while), they are to be asked again at once: the returned
    /// ids, their retransmission counted from `now_tick`.
    pub(crate) fn ask_of(
        &mut self,
        leader: Option<(Rank, Ballot)>,
        now_tick: u64,
    ) -> Option<Vec<u64>> {
        let Some(leader) = leader else {
            self.asked_of = None;
            return None;
        };
        if self.asked_of == Some(leader) {
            return Some(Vec::new());
        }
        self.asked_of = Some(leader);
        Some(self.due_again(now_tick, 0))
    }

    /// Reads waiting here, in every stage.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn arrive(&mut self, read: Read) {
        self.open.push(read);
        self.len += 1;
    }

    /// Makes the reads that arrived since the last ask one batch, and returns its id;
    /// none while an earlier batch waits for its answer (one ask in flight). A batch is
    /// closed from here on: its answer covers only reads that arrived before its first
    /// ask left (see the module page).
    pub(crate) fn take_open(&mut self, now_tick: u64) -> Option<u64> {
        if self.open.is_empty() || !self.asked.is_empty() {
            return None;
        }
        let id = self.next_batch;
        self.next_batch = self.next_batch.wrapping_add(1);
        let reads = std::mem::take(&mut self.open);
        self.asked.insert(
            id,
            Batch {
                reads,
                asked_tick: now_tick,
            },
        );
        Some(id)
    }

    /// Batches asked at least `every` ticks ago and not answered: ask again (the ask or
    /// its answer was lost, or the leader changed).
    pub(crate) fn due_again(&mut self, now_tick: u64, every: u64) -> Vec<u64> {
        let mut again = Vec::new();
        for (&id, batch) in self.asked.iter_mut() {
            if now_tick.saturating_sub(batch.asked_tick) >= every {
                batch.asked_tick = now_tick;
                again.push(id);
            }
        }
        again
    }

    /// The leader answered batch `id`: its reads wait until `slot` is applied. An
    /// unknown id (a duplicate, or an answer to another incarnation) is ignored.
    pub(crate) fn indexed(&mut self, id: u64, slot: Slot) {
        if let Some(batch) = self.asked.remove(&id) {
            self.indexed.entry(slot).or_default().extend(batch.reads);
        }
    }

    /// Reads whose index is applied (`applied_upto`): they may be served now.
    pub(crate) fn servable(&mut self, applied_upto: Slot) -> Vec<ReadId> {
        if self.indexed.is_empty() {
            return Vec::new(); // called every turn: a write-only load pays nothing
        }
        let later = self.indexed.split_off(&(applied_upto + 1));
        let ready = std::mem::replace(&mut self.indexed, later);
        let ids: Vec<ReadId> = ready.into_values().flatten().map(|r| r.id).collect();
        self.len -= ids.len();
        ids
    }

    /// Reads that arrived `timeout` ticks ago or earlier, in any stage: given up on.
    pub(crate) fn expire(&mut self, now_tick: u64, timeout: u64) -> Vec<ReadId> {
        if self.len == 0 {
            return Vec::new();
        }
        let old = |r: &Read| now_tick.saturating_sub(r.arrived_tick) >= timeout;
        let mut expired = Vec::new();
        let mut sweep = |reads: &mut Vec<Read>| {
            reads.retain(|r| {
                if old(r) {
                    expired.push(r.id);
                    false
                } else {
                    true
                }
            });
        };
        sweep(&mut self.open);
        for batch in self.asked.values_mut() {
            sweep(&mut batch.reads);
        }
        for reads in self.indexed.values_mut() {
            sweep(reads);
        }
        self.asked.retain(|_, b| !b.reads.is_empty());
        self.indexed.retain(|_, r| !r.is_empty());
        self.len -= expired.len();
        expired
    }
}

/// Most asks a leader holds for its confirmation rounds (its own batches and its
/// followers'); more are dropped and asked again by their retransmission.
pub const MAX_READ_ASKS: usize = 65_536;

/// An ask for a read index: who asked, its batch id, and the index the leader gave it
/// when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ask {
    pub(crate) from: Rank,
    pub(crate) batch: u64,
    pub(crate) slot: Slot,
}

/// Ticks a round that rode with read answers may go unconfirmed before a broadcast
/// round replaces it. A riding round reaches only its riders (with three replicas, one
/// follower), where a broadcast reaches every follower and any quorum of them will do:
/// one lost answer or one paused rider would otherwise hold the leader's reads for the
/// whole `retransmit_ticks`. Two ticks (10–20 ms at 10 ms a tick) is far above the
/// sub-millisecond a confirmation takes.
pub const RIDING_ROUND_PATIENCE_TICKS: u64 = 2;

/// A leader's confirmation rounds.
#[derive(Debug)]
pub(crate) struct Confirmations {
    /// The round the asks arriving now belong to; not sent yet.
    next_round: u64,
    /// The highest round each acceptor confirmed (this replica's own included).
    confirmed: BTreeMap<Rank, u64>,
    /// Asks by round, oldest first.
    asks: VecDeque<(u64, Ask)>,
    /// The highest round a quorum confirmed (0: none).
    settled: u64,
    /// When the last round left (ticks).
    sent_tick: u64,
    /// Whether the last round rode with read answers instead of a broadcast.
    rode: bool,
}

impl Confirmations {
    pub(crate) fn new() -> Confirmations {
        Confirmations {
            next_round: 1,
            confirmed: BTreeMap::new(),
            asks: VecDeque::new(),
            settled: 0,
            sent_tick: 0,
            rode: false,
        }
    }

    /// An ask arrived: it joins the next round. False when the table is full.
    pub(crate) fn ask(&mut self, ask: Ask) -> bool {
        if self.asks.len() >= MAX_READ_ASKS {
            return false;
        }
        self.asks.push_back((self.next_round, ask));
        true
    }

    /// The round to broadcast now, if asks wait for it and no earlier round is still
    /// unconfirmed (one round in flight): every ask in it arrived before it leaves.
    pub(crate) fn round_to_send(&mut self, now_tick: u64) -> Option<u64> {
        let waiting = self.asks.back().is_some_and(|(r, _)| *r == self.next_round);
        let in_flight = self.settled + 1 < self.next_round;
        (waiting && !in_flight).then(|| self.next_round(now_tick))
    }

    /// A new round for asks still unconfirmed `every` ticks after the last round left
    /// (its `Confirm` or the answers were lost, and no new ask may come to start one —
    /// the table may even be full), or [`RIDING_ROUND_PATIENCE_TICKS`] after it when it
    /// rode: it confirms every ask already here, and is to be broadcast.
    pub(crate) fn round_due(&mut self, now_tick: u64, every: u64) -> Option<u64> {
        let every = if self.rode {
            every.min(RIDING_ROUND_PATIENCE_TICKS)
        } else {
            every
        };
        let due = !self.asks.is_empty() && now_tick.saturating_sub(self.sent_tick) >= every;
        due.then(|| self.next_round(now_tick))
    }

    /// The round just sent rode with read answers (`true`) or was broadcast.
    pub(crate) fn sent_as(&mut self, rode: bool) {
        self.rode = rode;
    }

    fn next_round(&mut self, now_tick: u64) -> u64 {
        let round = self.next_round;
        self.next_round += 1;
        self.sent_tick = now_tick;
        round
    }

    /// `from` (this replica too, for its own acceptor) confirmed `round`. Returns the
    /// asks that a quorum has now confirmed.
    pub(crate) fn confirmed(&mut self, from: Rank, round: u64, quorum: usize) -> Vec<Ask> {
        if round >= self.next_round {
            return Vec::new(); // not a round this leader sent
        }
        let known = self.confirmed.entry(from).or_default();
        *known = (*known).max(round);
        let mut rounds: Vec<u64> = self.confirmed.values().copied().collect();
        rounds.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&upto) = rounds.get(quorum.saturating_sub(1)) else {
            return Vec::new();
        };
        self.settled = self.settled.max(upto);
        let mut done = Vec::new();
        while self.asks.front().is_some_and(|(r, _)| *r <= upto) {
            if let Some((_, ask)) = self.asks.pop_front() {
                done.push(ask);
            }
        }
        done
    }

    /// Every ask, confirmed or not (the bug-injection path serves them unconfirmed).
    #[cfg(feature = "bug-injection")]
    pub(crate) fn take_all(&mut self) -> Vec<Ask> {
        self.asks.drain(..).map(|(_, ask)| ask).collect()
    }
}

/// What the ballot of a `Confirm` says to an acceptor that promised `promised`.
pub(crate) fn may_confirm(ballot: Ballot, promised: Ballot) -> bool {
    // "I promised nothing above your ballot" is all a confirmation claims; an acceptor
    // that has not promised this ballot itself (it missed the Prepare) may say so too.
    ballot >= promised
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(id: ReadId, arrived_tick: u64) -> Read {
        Read { id, arrived_tick }
    }

    #[test]
    fn a_batch_is_served_only_once_its_index_is_applied() {
        let mut reads = LocalReads::new(100);
        reads.arrive(read(1, 0));
        reads.arrive(read(2, 0));
        let batch = reads.take_open(0).expect("a batch");
        assert_eq!(batch, 100);
        assert_eq!(reads.take_open(0), None, "nothing new arrived");
        reads.arrive(read(3, 0));
        assert_eq!(reads.take_open(0), None, "one ask in flight");
        reads.indexed(batch, 7);
        assert_eq!(
            reads.take_open(0),
            Some(101),
            "answered: the next batch asks"
        );
        assert!(reads.servable(6).is_empty());
        assert_eq!(reads.servable(7), vec![1, 2]);
        assert_eq!(reads.len(), 1);
    }

    #[test]
    fn an_answer_to_an_unknown_batch_serves_nothing() {
        let mut reads = LocalReads::new(100);
        reads.arrive(read(1, 0));
        let batch = reads.take_open(0).expect("a batch");
        reads.indexed(batch + 1, 0);
        reads.indexed(batch - 1, 0);
        assert!(reads.servable(u64::MAX - 1).is_empty());
        reads.indexed(batch, 3);
        reads.indexed(batch, 1); // a duplicate answer changes nothing
        assert!(reads.servable(2).is_empty());
        assert_eq!(reads.servable(3), vec![1]);
    }

    #[test]
    fn reads_wait_for_a_leader_and_a_new_leader_is_asked_at_once() {
        let (a, b) = ((1, Ballot::new(1, 1)), (2, Ballot::new(2, 2)));
        let mut reads = LocalReads::new(0);
        reads.arrive(read(1, 0));
        assert_eq!(reads.ask_of(None, 0), None, "no leader: nobody to ask");
        assert_eq!(reads.ask_of(Some(a), 0), Some(vec![]), "nothing asked yet");
        let batch = reads.take_open(0).expect("a batch");
        assert_eq!(reads.ask_of(Some(a), 1), Some(vec![]), "asked of this one");
        assert_eq!(reads.ask_of(Some(b), 2), Some(vec![batch]), "a new leader");
        assert_eq!(reads.ask_of(Some(b), 3), Some(vec![]), "once");
        assert!(reads.due_again(4, 3).is_empty(), "asked again at 2");
        assert_eq!(reads.ask_of(None, 5), None);
        assert_eq!(
            reads.ask_of(Some(b), 6),
            Some(vec![batch]),
            "the same leader after a while without one: asked again"
        );
        reads.indexed(batch, 0);
        assert_eq!(reads.servable(0), vec![1]);
    }

    #[test]
    fn unanswered_batches_are_asked_again_and_old_reads_expire() {
        let mut reads = LocalReads::new(0);
        reads.arrive(read(1, 0));
        let batch = reads.take_open(0).expect("a batch");
        assert!(reads.due_again(2, 3).is_empty());
        assert_eq!(reads.due_again(3, 3), vec![batch]);
        assert!(reads.due_again(4, 3).is_empty(), "asked again at 3");
        reads.arrive(read(2, 5));
        assert_eq!(reads.expire(10, 10), vec![1]);
        assert_eq!(reads.len(), 1);
        assert_eq!(reads.expire(15, 10), vec![2]);
        assert_eq!(reads.len(), 0);
    }

    #[test]
    fn a_quorum_for_a_round_confirms_every_ask_up_to_it() {
        let mut c = Confirmations::new();
        let ask = |batch| Ask {
            from: 2,
            batch,
            slot: 5,
        };
        assert!(c.ask(ask(1)));
        assert_eq!(c.round_to_send(0), Some(1));
        assert_eq!(c.round_to_send(0), None, "no ask waits");
        assert!(c.ask(ask(2)));
        assert_eq!(c.round_to_send(0), None, "round 1 is in flight");
        // The leader's own acceptor confirms what it sends; one peer more is a quorum
        // of three.
        assert!(c.confirmed(1, 1, 2).is_empty());
        assert!(c.confirmed(3, 2, 2).is_empty(), "round 2 was never sent");
        assert_eq!(c.confirmed(3, 1, 2), vec![ask(1)]);
        assert_eq!(c.round_to_send(0), Some(2), "round 1 settled");
        assert!(c.ask(ask(3)));
        assert!(c.confirmed(1, 2, 2).is_empty());
        assert_eq!(c.confirmed(2, 2, 2), vec![ask(2)]);
        assert!(c.confirmed(2, 2, 2).is_empty());
        assert_eq!(c.round_to_send(0), Some(3));
    }

    #[test]
    fn asks_left_unconfirmed_get_a_new_round_after_a_while() {
        let mut c = Confirmations::new();
        assert_eq!(c.round_due(100, 3), None, "no ask");
        assert!(c.ask(Ask {
            from: 1,
            batch: 7,
            slot: 0
        }));
        assert_eq!(c.round_to_send(10), Some(1));
        // Round 1 is lost: no new ask comes to start another.
        assert_eq!(c.round_due(12, 3), None);
        assert_eq!(c.round_due(13, 3), Some(2));
        assert!(
            c.confirmed(1, 2, 2).is_empty(),
            "the leader's own: not yet a quorum"
        );
        assert_eq!(
            c.confirmed(2, 2, 2).len(),
            1,
            "round 2 confirms the ask of round 1"
        );
        assert_eq!(c.round_due(20, 3), None, "nothing left to confirm");
    }

    #[test]
    fn a_confirmation_may_come_only_from_an_acceptor_that_promised_nothing_higher() {
        let b = |round, rank| Ballot::new(round, rank);
        assert!(may_confirm(b(2, 1), b(2, 1)));
        assert!(may_confirm(b(2, 1), b(1, 3)));
        assert!(!may_confirm(b(2, 1), b(2, 2)));
    }
}
