//! The driver the simulator models: a `Ready` carried out as the node carries it out,
//! checked as it goes, and the network that delivers its messages.

use super::*;

impl Sim {
    /// Carries out one `Ready` of `node`, as the node's driver does: append the records,
    /// send the messages, apply the decided slots, answer the clients. The node appends
    /// last (it may fsync on its loop); here a `Ready` is carried out at once, with no
    /// crash or delivery between its parts, so the order is not observable.
    pub(super) fn process_ready(&mut self, node: usize) -> Result<(), String> {
        let bug = self.config.bug;
        let n = &mut self.nodes[node];
        let Some(replica) = n.replica.as_mut() else {
            return Ok(());
        };
        let ready = replica.ready();
        let status = replica.status();
        if status.role == Role::Leader && n.last_role != Role::Leader {
            self.stats.elections += 1;
        }
        n.last_role = status.role;
        let promised = status.promised;
        if promised < n.last_promised {
            return Err(format!(
                "node {}: promise went back from {} to {promised}",
                node + 1,
                n.last_promised
            ));
        }
        n.last_promised = promised;

        let mut lied = false;
        if let Some(group) = ready.persist {
            let number = group.number;
            n.disk.append(group);
            if bug == Some(SimBug::AckBeforeFsync) {
                replica.persisted(number);
                lied = true;
            }
        }
        self.check_durable_quorum(node, &ready.decided)?;

        let n = &mut self.nodes[node];
        if let Some((slot, bytes)) = ready.install_snapshot {
            self.stats.installs += 1;
            n.store = Store::restore(&bytes, StoreConfig::default())
                .map_err(|e| format!("node {}: snapshot at {slot} unreadable: {e}", node + 1))?;
            if n.store.applied_slot() != slot {
                return Err(format!(
                    "node {}: snapshot for slot {slot} holds slot {}",
                    node + 1,
                    n.store.applied_slot()
                ));
            }
        }
        let mut replies = Vec::new();
        let applied_any = !ready.decided.is_empty();
        for (slot, value) in ready.decided {
            if slot != n.store.applied_slot() + 1 {
                return Err(format!(
                    "node {}: slot {slot} handed out after applied slot {} (gap or repeat)",
                    node + 1,
                    n.store.applied_slot()
                ));
            }
            match self.chosen.get(&slot) {
                Some(known) if *known != value => {
                    return Err(format!(
                        "agreement violated: slot {slot} is {known:?} elsewhere and {value:?} at node {}",
                        node + 1
                    ));
                }
                Some(_) => {}
                None => {
                    self.chosen.insert(slot, value.clone());
                }
            }
            let applied = n.store.apply(slot, value.lamport, &value.commands);
            for reply in applied.replies {
                let key = (reply.client_id, reply.seq);
                if !reply.duplicate {
                    if let Some(other) = n.effects.insert(key, slot)
                        && other != slot
                    {
                        return Err(format!(
                            "exactly-once violated: client {} seq {} took effect at slots {other} and {slot} on node {}",
                            key.0,
                            key.1,
                            node + 1
                        ));
                    }
                    if let Some(&other) = self.effects.get(&key) {
                        if other != slot {
                            return Err(format!(
                                "exactly-once violated: client {} seq {} took effect at slot {other} on one node and {slot} on node {}",
                                key.0,
                                key.1,
                                node + 1
                            ));
                        }
                    } else {
                        self.effects.insert(key, slot);
                    }
                }
                if let Some(client) = n.waiting.remove(&key) {
                    replies.push((client, reply.seq, reply.result));
                }
            }
        }
        if applied_any
            || n.store.applied_slot() > 0 && !self.digests.contains_key(&n.store.applied_slot())
        {
            let slot = n.store.applied_slot();
            let digest = n.store.digest();
            match self.digests.get(&slot) {
                Some(known) if *known != digest => {
                    return Err(format!(
                        "divergence: digest {digest} at slot {slot} on node {}, {known} elsewhere",
                        node + 1
                    ));
                }
                Some(_) => {}
                None => {
                    self.digests.insert(slot, digest);
                }
            }
        }
        for (command, error) in ready.rejected {
            if let Some(client) = n.waiting.remove(&(command.client_id, command.seq)) {
                replies.push((client, command.seq, Err(error)));
            }
        }
        // Reads are served from the state just applied, as the node does.
        for id in ready.reads {
            if let Some((client, seq, op)) = n.reads.remove(&id) {
                replies.push((client, seq, n.store.read_local(&op, None)));
            }
        }
        for (id, error) in ready.rejected_reads {
            if let Some((client, seq, _)) = n.reads.remove(&id) {
                replies.push((client, seq, Err(error)));
            }
        }
        for envelope in ready.messages {
            self.send(node, envelope)?;
        }
        for (client, seq, result) in replies {
            self.reply_to_client(client, seq, result);
        }
        self.start_fsync(node);
        if lied {
            // What the lie released comes out of the next ready().
            self.process_ready(node)?;
        }
        Ok(())
    }

    /// Every slot handed out to be applied must be durably held — accepted with its
    /// value, decided, or under a durable snapshot — by a quorum of replicas at this
    /// moment: otherwise a crash of some of them could lose a value a client may
    /// already have been told about. This is what the durability gate exists for.
    pub(super) fn check_durable_quorum(
        &self,
        node: usize,
        decided: &[(Slot, Value)],
    ) -> Result<(), String> {
        if !self.config.check_invariants {
            return Ok(());
        }
        let quorum = self.config.replicas / 2 + 1;
        for (slot, value) in decided {
            let holders = self
                .nodes
                .iter()
                .filter(|n| n.disk.holds(*slot, value))
                .count();
            if holders < quorum {
                return Err(format!(
                    "node {} applies slot {slot}, which only {holders} replica(s) hold durably \
                     (a quorum is {quorum})",
                    node + 1
                ));
            }
        }
        Ok(())
    }

    pub(super) fn send(&mut self, from: usize, envelope: Envelope) -> Result<(), String> {
        let n = &mut self.nodes[from];
        let announced = match &envelope.message {
            Message::Promise { ballot, .. } | Message::Accepted { ballot, .. } => Some(*ballot),
            Message::Nack { promised, .. } => Some(*promised),
            _ => None,
        };
        if let Some(ballot) = announced {
            n.announced = n.announced.max(ballot);
        }
        let own_ballot = match &envelope.message {
            Message::Prepare { ballot, .. } | Message::Accept { ballot, .. } => Some(*ballot),
            _ => None,
        };
        if let Some(ballot) = own_ballot.filter(|b| b.rank as usize == from + 1) {
            n.announced_round = n.announced_round.max(ballot.round);
        }
        match &envelope.message {
            Message::Accepted { ballot, slot } => {
                let vote = n.votes.entry(*slot).or_default();
                *vote = (*vote).max(*ballot);
            }
            Message::Accept {
                ballot,
                slot,
                value,
                ..
            } => match self.proposals.get(&(*ballot, *slot)) {
                Some(known) if known != value => {
                    return Err(format!(
                        "ballot {ballot} proposed two values for slot {slot}: {known:?} and \
                         {value:?} (node {})",
                        from + 1
                    ));
                }
                Some(_) => {}
                None => {
                    self.proposals.insert((*ballot, *slot), value.clone());
                }
            },
            _ => {}
        }
        let targets: Vec<usize> = match envelope.to {
            Some(rank) => vec![rank as usize - 1],
            None => (0..self.config.replicas).filter(|&t| t != from).collect(),
        };
        for to in targets {
            if self.blocked.contains(&(from, to)) || self.rng.random_bool(self.loss) {
                continue;
            }
            let copies = if self.rng.random_bool(self.duplicate) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay = self.rng.random_range(1..=self.max_delay);
                self.schedule(delay, Event::Deliver(to, envelope.clone()));
            }
        }
        Ok(())
    }
}
