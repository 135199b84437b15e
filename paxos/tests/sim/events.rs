//! The simulator's events: what happens to a replica (a message, a tick, a crash, a
//! restart, an fsync) and to the network (partitions healed and cut).

use super::*;

impl Sim {
    pub(super) fn handle(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Tick(node) => {
                if let Some(replica) = self.nodes[node].replica.as_mut() {
                    replica.tick();
                    self.process_ready(node)?;
                }
                self.schedule(TICK_UNITS, Event::Tick(node));
            }
            Event::Deliver(node, envelope) => {
                if let Some(replica) = self.nodes[node].replica.as_mut() {
                    replica.step(envelope);
                    self.process_ready(node)?;
                }
            }
            Event::Fsync(node, incarnation) => self.fsync(node, incarnation)?,
            Event::Crash => {
                if !self.healed {
                    // Half the time the leader: failover is where the protocol is tested.
                    let node = self.leader_half_the_time();
                    self.crash(node);
                    let after = self.rng.random_range(200..1_500);
                    self.schedule(after, Event::Crash);
                }
            }
            Event::Restart(node) => {
                if self.nodes[node].replica.is_none() {
                    self.restart(node)?;
                }
            }
            Event::NetChange => {
                if !self.healed {
                    self.change_network();
                    let after = self.rng.random_range(100..1_000);
                    self.schedule(after, Event::NetChange);
                }
            }
            Event::Snapshot => {
                let node = self.rng.random_range(0..self.config.replicas);
                self.take_snapshot(node)?;
                if !self.healed {
                    let after = self.rng.random_range(50..600);
                    self.schedule(after, Event::Snapshot);
                }
            }
            Event::Heal => {
                self.healed = true;
                self.blocked.clear();
                self.loss = 0.0;
                self.duplicate = 0.0;
                for node in 0..self.config.replicas {
                    if self.nodes[node].replica.is_none() {
                        self.restart(node)?;
                    }
                }
            }
            Event::ClientStart(client) => self.client_start(client),
            Event::ClientArrive {
                node,
                client,
                command,
            } => self.client_arrive(node, client, command)?,
            Event::ClientReply {
                client,
                seq,
                result,
            } => self.client_reply(client, seq, result)?,
            Event::ClientTimeout {
                client,
                seq,
                attempt,
            } => self.client_timeout(client, seq, attempt),
        }
        Ok(())
    }

    /// The node that leads (if one does, as far as it knows) half the time; otherwise
    /// any node.
    pub(super) fn leader_half_the_time(&mut self) -> usize {
        let leader = self.nodes.iter().position(|n| {
            n.replica
                .as_ref()
                .is_some_and(|r| r.status().role == Role::Leader)
        });
        match leader {
            Some(leader) if self.rng.random_bool(0.5) => leader,
            _ => self.rng.random_range(0..self.config.replicas),
        }
    }

    pub(super) fn change_network(&mut self) {
        let n = self.config.replicas;
        self.blocked.clear();
        match self.rng.random_range(0..5) {
            // Heal for a while.
            0 => {}
            // Isolate one node both ways; half the time the leader, which clients still
            // reach: a deposed leader that does not know it yet is where stale reads hide.
            1 => {
                let x = self.leader_half_the_time();
                for y in (0..n).filter(|&y| y != x) {
                    self.blocked.insert((x, y));
                    self.blocked.insert((y, x));
                }
            }
            // Split into two random sides.
            2 => {
                let side: Vec<bool> = (0..n).map(|_| self.rng.random_bool(0.5)).collect();
                for x in 0..n {
                    for y in 0..n {
                        if side[x] != side[y] {
                            self.blocked.insert((x, y));
                        }
                    }
                }
            }
            // One node hears nobody but is heard (or the reverse).
            3 => {
                let x = self.rng.random_range(0..n);
                let deaf = self.rng.random_bool(0.5);
                for y in (0..n).filter(|&y| y != x) {
                    self.blocked.insert(if deaf { (y, x) } else { (x, y) });
                }
            }
            // Random one-way link cuts.
            _ => {
                for x in 0..n {
                    for y in 0..n {
                        if x != y && self.rng.random_bool(0.3) {
                            self.blocked.insert((x, y));
                        }
                    }
                }
            }
        }
    }

    pub(super) fn crash(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if n.replica.is_none() {
            return;
        }
        n.replica = None;
        n.incarnation += 1;
        n.disk.crash(&mut self.rng);
        n.waiting.clear();
        n.reads.clear();
        self.stats.crashes += 1;
        let after = self.rng.random_range(50..MAX_DOWNTIME_UNITS);
        self.schedule(after, Event::Restart(node));
    }

    pub(super) fn restart(&mut self, node: usize) -> Result<(), String> {
        let config = self.replica_config(node);
        let n = &mut self.nodes[node];
        let mut persisted = n.disk.durable.clone();
        n.store = match &n.disk.snapshot {
            Some((slot, bytes)) => {
                persisted.restore_snapshot(*slot, bytes.clone());
                Store::restore(bytes, StoreConfig::default())
                    .map_err(|e| format!("node {}: durable snapshot unreadable: {e}", node + 1))?
            }
            None => Store::new(StoreConfig::default()),
        };
        persisted.observe_lamport(n.store.lamport());
        let mut replica = Replica::new(config, persisted).map_err(|e| e.to_string())?;
        if let Some(SimBug::Core(bug)) = self.config.bug {
            replica.inject_bug(bug);
        }
        let status = replica.status();
        let promised = status.promised;
        if self.config.check_invariants {
            if status.round < n.announced_round {
                return Err(format!(
                    "node {} restarted with round {} below the round {} it ran for leader with",
                    node + 1,
                    status.round,
                    n.announced_round
                ));
            }
            if promised < n.announced {
                return Err(format!(
                    "node {} restarted with promise {promised} below the ballot {} it announced",
                    node + 1,
                    n.announced
                ));
            }
            if let Some((slot, ballot)) = n
                .votes
                .iter()
                .find(|&(&slot, &ballot)| !n.disk.holds_vote(slot, ballot))
            {
                return Err(format!(
                    "node {} restarted without its vote for slot {slot} in ballot {ballot}, \
                     which it had sent",
                    node + 1
                ));
            }
        }
        n.last_promised = promised;
        n.last_role = Role::Follower;
        n.replica = Some(replica);
        self.process_ready(node)
    }

    pub(super) fn take_snapshot(&mut self, node: usize) -> Result<(), String> {
        let n = &mut self.nodes[node];
        let Some(replica) = n.replica.as_mut() else {
            return Ok(());
        };
        let slot = n.store.applied_slot();
        if slot == 0 {
            return Ok(());
        }
        let bytes = Arc::new(n.store.snapshot());
        // The node's snapshot file is durable before the core hears of it.
        n.disk.snapshot = Some((slot, bytes.clone()));
        n.votes = n.votes.split_off(&(slot + 1));
        replica.snapshot_taken(slot, bytes);
        self.process_ready(node)
    }

    /// Starts a writer round of `node`'s disk if one is due.
    pub(super) fn start_fsync(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        let incarnation = n.incarnation;
        let Some(round) = n.disk.start_round() else {
            return;
        };
        // A round that only writes (no record asks for an fsync) is quick.
        let after = if round.sync {
            self.rng.random_range(1..=self.max_fsync)
        } else {
            1
        };
        self.schedule(after, Event::Fsync(node, incarnation));
    }

    /// A writer round completes: its records are durable, and the replica hears so.
    pub(super) fn fsync(&mut self, node: usize, incarnation: u64) -> Result<(), String> {
        let n = &mut self.nodes[node];
        if n.incarnation != incarnation || n.replica.is_none() {
            return Ok(());
        }
        let Some(upto) = n.disk.finish_round() else {
            return Ok(());
        };
        if !self.healed && self.rng.random_bool(self.crash_after_fsync) {
            // Durable, but the node dies before it hears so: nothing held is released.
            self.crash(node);
            return Ok(());
        }
        let n = &mut self.nodes[node];
        if let Some(replica) = n.replica.as_mut() {
            replica.persisted(upto);
        }
        self.process_ready(node)?;
        self.start_fsync(node);
        Ok(())
    }
}
