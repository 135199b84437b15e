//! A small deterministic cluster for scenario tests: no randomness in the network, every
//! record durable at once, messages delivered in order unless a link is cut or a filter
//! drops them. Each replica applies its decided slots to its own [`Store`]; the cluster
//! checks agreement across replicas on every applied slot.

// A test harness: a panic here is a failed test, which is what an unwrap should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use paxos::{Config, Envelope, Message, Persisted, Rank, Replica, Role, Slot, Status, Value};
use proto::{Command, Error, Op, Reply};
use store::{Store, StoreConfig};

/// Decides whether a message from `from` to `to` is dropped.
type Filter = Box<dyn FnMut(Rank, Rank, &Message) -> bool>;

/// One answer a replica gave to a client command it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The replica that applied it.
    pub(crate) node: Rank,
    /// Slot it was applied in.
    pub(crate) slot: Slot,
    /// The command's session coordinates.
    pub(crate) client_id: u64,
    pub(crate) seq: u64,
    /// The store's reply.
    pub(crate) result: Result<Reply, Error>,
    /// Whether the session table answered it without effect.
    pub(crate) duplicate: bool,
}

pub(crate) struct Cluster {
    size: u32,
    replicas: BTreeMap<Rank, Replica>,
    durable: BTreeMap<Rank, Persisted>,
    stores: BTreeMap<Rank, Store>,
    network: VecDeque<(Rank, Envelope)>,
    blocked: BTreeSet<(Rank, Rank)>,
    filter: Option<Filter>,
    chosen: BTreeMap<Slot, Value>,
    /// Every answer of every replica, in order.
    pub(crate) answers: Vec<Answer>,
    incarnation: u64,
}

pub(crate) fn config(rank: Rank, size: u32, seed: u64) -> Config {
    Config {
        rank,
        members: (1..=size).collect(),
        heartbeat_interval_ticks: 2,
        election_timeout_ticks: 10,
        retransmit_ticks: 3,
        window_slots: 8,
        max_pending_commands: 64,
        log_retain_slots: 0,
        seed,
        ..Config::default()
    }
}

pub(crate) fn put(client_id: u64, seq: u64, key: &str, value: &str) -> Command {
    Command {
        client_id,
        seq,
        op: Op::Put {
            key: key.into(),
            value: value.into(),
        },
        session: None,
    }
}

impl Cluster {
    pub(crate) fn new(size: u32) -> Cluster {
        let mut cluster = Cluster {
            size,
            replicas: BTreeMap::new(),
            durable: BTreeMap::new(),
            stores: BTreeMap::new(),
            network: VecDeque::new(),
            blocked: BTreeSet::new(),
            filter: None,
            chosen: BTreeMap::new(),
            answers: Vec::new(),
            incarnation: 0,
        };
        for rank in 1..=size {
            cluster.durable.insert(rank, Persisted::default());
            cluster.restart(rank);
        }
        cluster
    }

    /// Starts (or restarts) `rank` from its durable records, with an empty store that
    /// replays the decided log.
    pub(crate) fn restart(&mut self, rank: Rank) {
        self.incarnation += 1;
        let persisted = self.durable[&rank].clone();
        let replica = Replica::new(config(rank, self.size, self.incarnation), persisted).unwrap();
        self.replicas.insert(rank, replica);
        self.stores.insert(rank, Store::new(StoreConfig::default()));
        self.drain(rank);
    }

    /// Stops `rank`; it keeps only its durable records (here: all of them).
    pub(crate) fn crash(&mut self, rank: Rank) {
        self.replicas.remove(&rank);
        self.stores.remove(&rank);
        self.network.retain(|(to, _)| *to != rank);
    }

    /// Cuts the link from `from` to `to` (one direction only).
    pub(crate) fn cut(&mut self, from: Rank, to: Rank) {
        self.blocked.insert((from, to));
    }

    /// Restores every link and removes the filter.
    pub(crate) fn heal(&mut self) {
        self.blocked.clear();
        self.filter = None;
    }

    /// Drops every message for which `filter(from, to, message)` is true.
    pub(crate) fn drop_when(&mut self, filter: impl FnMut(Rank, Rank, &Message) -> bool + 'static) {
        self.filter = Some(Box::new(filter));
    }

    /// Hands a client command to `rank`.
    pub(crate) fn propose(&mut self, rank: Rank, command: Command) {
        self.replicas
            .get_mut(&rank)
            .expect("node is up")
            .propose(command)
            .unwrap();
        self.drain(rank);
        self.deliver_all();
    }

    /// Injects a message as if `envelope.from` had sent it.
    pub(crate) fn inject(&mut self, to: Rank, envelope: Envelope) -> Vec<Envelope> {
        let replica = self.replicas.get_mut(&to).expect("node is up");
        replica.step(envelope);
        let mut messages = Vec::new();
        // An instant disk: the records are durable at once, and what waited for them
        // comes out of the next ready().
        loop {
            let ready = replica.ready();
            messages.extend(ready.messages);
            let Some(group) = ready.persist else {
                break;
            };
            if let Some(durable) = self.durable.get_mut(&to) {
                group.records.iter().for_each(|r| durable.apply(r));
            }
            replica.persisted(group.number);
        }
        messages
    }

    /// One tick on every live node, then delivery until the network is quiet.
    pub(crate) fn tick(&mut self) {
        let ranks: Vec<Rank> = self.replicas.keys().copied().collect();
        for rank in ranks {
            if let Some(r) = self.replicas.get_mut(&rank) {
                r.tick();
            }
            self.drain(rank);
        }
        self.deliver_all();
    }

    pub(crate) fn ticks(&mut self, n: usize) {
        for _ in 0..n {
            self.tick();
        }
    }

    /// Ticks until some live node leads and every live node follows it, at most `max`
    /// ticks. Returns the leader.
    pub(crate) fn settle(&mut self, max: usize) -> Rank {
        self.settle_without(0, max)
    }

    /// Like [`Cluster::settle`], ignoring what node `excluded` believes.
    pub(crate) fn settle_without(&mut self, excluded: Rank, max: usize) -> Rank {
        for _ in 0..max {
            self.tick();
            let statuses: Vec<Status> = self
                .replicas
                .values()
                .map(|r| r.status())
                .filter(|s| s.rank != excluded)
                .collect();
            let leader = statuses
                .iter()
                .filter(|s| s.role == Role::Leader)
                .max_by_key(|s| s.ballot)
                .map(|s| s.rank);
            if let Some(leader) = leader
                && statuses.iter().all(|s| s.leader == Some(leader))
            {
                return leader;
            }
        }
        panic!("no leader after {max} ticks: {:#?}", self.statuses());
    }

    /// The live node that leads (the highest ballot, if two believe they do).
    pub(crate) fn leader(&self) -> Option<Rank> {
        self.replicas
            .values()
            .map(|r| r.status())
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.ballot)
            .map(|s| s.rank)
    }

    pub(crate) fn status(&self, rank: Rank) -> Status {
        self.replicas[&rank].status()
    }

    pub(crate) fn statuses(&self) -> Vec<Status> {
        self.replicas.values().map(|r| r.status()).collect()
    }

    pub(crate) fn store(&self, rank: Rank) -> &Store {
        &self.stores[&rank]
    }

    /// The value decided for `slot` (by any replica).
    pub(crate) fn chosen(&self, slot: Slot) -> Option<&Value> {
        self.chosen.get(&slot)
    }

    /// Slots whose value contains `command` (by client id and seq).
    pub(crate) fn slots_of(&self, command: &Command) -> Vec<Slot> {
        self.chosen
            .iter()
            .filter(|(_, v)| {
                v.commands
                    .iter()
                    .any(|c| c.client_id == command.client_id && c.seq == command.seq)
            })
            .map(|(s, _)| *s)
            .collect()
    }

    /// Handles `rank`'s outputs: records durable at once, messages onto the network,
    /// decided slots applied to its store.
    fn drain(&mut self, rank: Rank) {
        let Some(replica) = self.replicas.get_mut(&rank) else {
            return;
        };
        let ready = replica.ready();
        // Records are durable at once here: what waited for them comes out of the next
        // ready(), taken below before anything else happens.
        let durable = self.durable.get_mut(&rank).expect("known node");
        let wrote = ready.persist.is_some();
        if let Some(group) = &ready.persist {
            group.records.iter().for_each(|r| durable.apply(r));
            replica.persisted(group.number);
        }
        for envelope in ready.messages {
            let targets: Vec<Rank> = match envelope.to {
                Some(to) => vec![to],
                None => (1..=self.size).filter(|&t| t != rank).collect(),
            };
            for to in targets {
                self.network.push_back((to, envelope.clone()));
            }
        }
        let store = self.stores.get_mut(&rank).expect("store of a live node");
        if let Some((_, bytes)) = ready.install_snapshot {
            *store = Store::restore(&bytes, StoreConfig::default()).unwrap();
        }
        for (slot, value) in ready.decided {
            let known = self.chosen.entry(slot).or_insert_with(|| value.clone());
            assert_eq!(*known, value, "agreement violated at slot {slot}");
            let applied = store.apply(slot, value.lamport, &value.commands);
            for reply in applied.replies {
                self.answers.push(Answer {
                    node: rank,
                    slot,
                    client_id: reply.client_id,
                    seq: reply.seq,
                    result: reply.result,
                    duplicate: reply.duplicate,
                });
            }
        }
        if wrote {
            self.drain(rank);
        }
    }

    /// Delivers messages until none is left (bounded: a livelock fails the test).
    pub(crate) fn deliver_all(&mut self) {
        for _ in 0..100_000 {
            let Some((to, envelope)) = self.network.pop_front() else {
                return;
            };
            let from = envelope.from;
            if self.blocked.contains(&(from, to)) {
                continue;
            }
            if let Some(filter) = self.filter.as_mut()
                && filter(from, to, &envelope.message)
            {
                continue;
            }
            if let Some(replica) = self.replicas.get_mut(&to) {
                replica.step(envelope);
                self.drain(to);
            }
        }
        panic!("the network never went quiet");
    }
}
