//! The learner: votes and decisions, the decided log handed out in slot order, and
//! catching up — fetching missed slots, or a snapshot when they were truncated away.

// A room of the replica: its types, fields and imports are this file's too.
use super::*;

impl Replica {
    /// `from` decided `slot` with its value of `ballot`. Learnt at once when that is the
    /// value accepted here; otherwise (its `Accept` was lost, or is late) the slot is
    /// fetched from `from` by the catch-up.
    pub(super) fn on_decide(&mut self, from: Rank, slot: Slot, ballot: Ballot) {
        if self
            .learnt_ahead_of_decide
            .is_some_and(|(b, s)| b == ballot && s <= slot)
        {
            self.learnt_ahead_of_decide = None;
        }
        if slot <= self.decided_upto || self.decided.contains_key(&slot) {
            return;
        }
        match self.accepted.get(&slot) {
            Some((accepted, value)) if *accepted == ballot => {
                let value = value.clone();
                self.learn(slot, value);
            }
            // The sender may not have every earlier slot decided: a fetch up to `slot`
            // returns what it has and is asked again for the rest.
            _ => self.note_peer_decided(from, slot),
        }
    }

    /// Records that `slot` is decided with `value`, and hands out what became contiguous.
    pub(super) fn learn(&mut self, slot: Slot, value: Value) {
        if slot <= self.decided_upto {
            if let Some(known) = self.decided.get(&slot) {
                assert!(
                    *known == value,
                    "agreement violated at replica {}: slot {slot} decided twice with different values",
                    self.config.rank
                );
            }
            return;
        }
        if let Some(known) = self.decided.get(&slot) {
            assert!(
                *known == value,
                "agreement violated at replica {}: slot {slot} decided twice with different values",
                self.config.rank
            );
            return;
        }
        self.accepted.remove(&slot);
        self.votes.remove(&slot);
        self.decided.insert(slot, value.clone());
        self.persist(Record::Decide { slot, value });
        if let State::Leader(l) = &mut self.state {
            l.in_flight.remove(&slot);
        }
        self.deliver();
    }

    /// Hands out every decided slot that directly follows `decided_upto`.
    pub(super) fn deliver(&mut self) {
        while let Some(value) = self.decided.get(&(self.decided_upto + 1)) {
            self.decided_upto += 1;
            self.out.decided.push((self.decided_upto, value.clone()));
        }
    }

    pub(super) fn note_peer_decided(&mut self, from: Rank, decided_upto: Slot) {
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.decided_upto = peer.decided_upto.max(decided_upto);
        }
    }

    pub(super) fn on_fetch(&mut self, from: Rank, from_slot: Slot, to_slot: Slot) {
        if from_slot <= self.truncated_upto {
            self.send_snapshot_chunk(from, 0);
            return;
        }
        let mut entries = Vec::new();
        let mut bytes = 0;
        for (&slot, value) in self.decided.range(from_slot..=to_slot.max(from_slot)) {
            let size = value.size_bytes();
            if entries.len() == MAX_DECIDED_ENTRIES
                || (!entries.is_empty() && bytes + size > MAX_ENTRIES_BYTES)
            {
                break;
            }
            bytes += size;
            entries.push(DecidedEntry {
                slot,
                value: value.clone(),
            });
        }
        if !entries.is_empty() {
            self.send(Some(from), Message::Decided { entries });
        }
    }

    pub(super) fn on_fetch_snapshot(&mut self, from: Rank, slot: Slot, offset: u64) {
        let current = self.snapshot.as_ref().map(|(s, _)| *s);
        // A request for an older snapshot than ours restarts with ours.
        let offset = if current == Some(slot) { offset } else { 0 };
        self.send_snapshot_chunk(from, offset);
    }

    fn send_snapshot_chunk(&mut self, to: Rank, offset: u64) {
        let Some((slot, bytes)) = self.snapshot.clone() else {
            return;
        };
        let total_len = bytes.len() as u64;
        let Ok(start) = usize::try_from(offset.min(total_len)) else {
            return;
        };
        let end = (start + MAX_SNAPSHOT_CHUNK_BYTES).min(bytes.len());
        let message = Message::SnapshotChunk {
            slot,
            offset: start as u64,
            total_len,
            data: bytes[start..end].to_vec(),
        };
        self.send(Some(to), message);
    }

    pub(super) fn on_snapshot_chunk(
        &mut self,
        from: Rank,
        slot: Slot,
        offset: u64,
        total_len: u64,
        data: Vec<u8>,
    ) {
        if slot <= self.decided_upto || total_len > MAX_SNAPSHOT_BYTES {
            return;
        }
        let restart = self.incoming.as_ref().is_none_or(|inc| inc.slot < slot);
        if restart {
            if offset != 0 {
                self.send(Some(from), Message::FetchSnapshot { slot, offset: 0 });
                return;
            }
            let capacity = usize::try_from(total_len.min(MAX_SNAPSHOT_CHUNK_BYTES as u64))
                .unwrap_or(MAX_SNAPSHOT_CHUNK_BYTES);
            self.incoming = Some(IncomingSnapshot {
                from,
                slot,
                total_len,
                data: Vec::with_capacity(capacity),
            });
        }
        let Some(inc) = self.incoming.as_mut() else {
            return;
        };
        if inc.slot != slot || inc.total_len != total_len || inc.data.len() as u64 != offset {
            // A duplicate or a piece of another transfer: the tick retries ours.
            return;
        }
        inc.from = from;
        inc.data.extend_from_slice(&data);
        self.fetch_wait_ticks = self.config.retransmit_ticks;
        if (inc.data.len() as u64) < inc.total_len {
            let offset = inc.data.len() as u64;
            if data.is_empty() {
                return;
            }
            self.send(Some(from), Message::FetchSnapshot { slot, offset });
            return;
        }
        if let Some(done) = self.incoming.take() {
            self.install_snapshot(done.slot, Arc::new(done.data));
        }
    }

    fn install_snapshot(&mut self, slot: Slot, bytes: Arc<Vec<u8>>) {
        assert!(slot > self.decided_upto);
        // Slots handed out earlier in this Ready are covered by the snapshot.
        self.out.decided.clear();
        self.out.install_snapshot = Some((slot, bytes.clone()));
        self.decided_upto = slot;
        self.truncate(slot);
        self.snapshot = Some((slot, bytes));
        if let State::Leader(l) = &mut self.state {
            l.in_flight = l.in_flight.split_off(&(slot + 1));
            l.next_slot = l.next_slot.max(slot + 1);
        }
        self.deliver();
    }

    pub(super) fn truncate(&mut self, upto: Slot) {
        self.truncated_upto = self.truncated_upto.max(upto);
        self.accepted = self.accepted.split_off(&(upto + 1));
        self.votes = self.votes.split_off(&(upto + 1));
        self.decided = self.decided.split_off(&(upto + 1));
    }

    /// Asks a peer for what this replica misses: the next piece of a snapshot being
    /// assembled, or the decided slots after `decided_upto` that a peer reported.
    pub(super) fn tick_catch_up(&mut self) {
        self.fetch_wait_ticks = self.fetch_wait_ticks.saturating_sub(1);
        if self.fetch_wait_ticks > 0 {
            return;
        }
        if let Some(inc) = &self.incoming {
            let (to, slot, offset) = (inc.from, inc.slot, inc.data.len() as u64);
            self.fetch_wait_ticks = self.config.retransmit_ticks;
            self.send(Some(to), Message::FetchSnapshot { slot, offset });
            return;
        }
        let timeout = self.config.election_timeout_ticks;
        let best = self
            .peers
            .iter()
            .filter(|(_, p)| p.silent_ticks.is_some_and(|t| t <= timeout))
            .max_by_key(|(_, p)| p.decided_upto)
            .map(|(&r, p)| (r, p.decided_upto));
        if let Some((to, target)) = best
            && target > self.decided_upto
        {
            self.fetch_wait_ticks = self.config.retransmit_ticks;
            let from_slot = self.decided_upto + 1;
            let to_slot = target.min(self.decided_upto + MAX_DECIDED_ENTRIES as u64);
            self.send(Some(to), Message::Fetch { from_slot, to_slot });
        }
    }
}
