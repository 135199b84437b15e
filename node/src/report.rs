//! The `/status` report: one consistent view of the node, taken between two turns of
//! the loop from the core's [`paxos::Status`], the store and the other rooms.
//!
//! The store's digest (a hash of the whole replicated state) is computed at most once
//! per applied slot: a monitoring loop polling `/status` must not rehash an idle store.

use paxos::{Rank, Slot, Status};
use store::{Digest, Store};

use crate::http::{BrokerLink, ChannelReport, PeerReport, StatusReport};

/// A replica this many slots behind the best peer it hears is not ready (`/readyz`).
pub const READY_MAX_LAG_SLOTS: u64 = 64;
/// Chat channels in a report: those with the latest messages.
pub const REPORT_CHANNELS: usize = 12;
/// Latest messages per channel in a report.
pub const REPORT_MESSAGES_PER_CHANNEL: usize = 3;

/// What the other rooms contribute to a report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// Client requests waiting here.
    pub(crate) pending_requests: usize,
    /// Slot of the last store.json written.
    pub(crate) snapshot_slot: Slot,
    /// Whether the reference registered this node and answers.
    pub(crate) registered: bool,
    /// Milliseconds since the reference last answered.
    pub(crate) reference_last_reply_ms_ago: Option<u64>,
    /// Berkeley clock offset.
    pub(crate) clock_offset_ms: i64,
    /// The proxy this node publishes through.
    pub(crate) proxy: String,
    /// The cluster key held, and the frames that did not open under it.
    pub(crate) auth: proto::report::AuthReport,
    /// Where the other members serve `/status`, by rank.
    pub(crate) status_addrs: std::collections::BTreeMap<Rank, String>,
    /// Every proxy's endpoint.
    pub(crate) proxies: Vec<String>,
    /// Every broker's endpoint, and the milliseconds since a request came through it.
    pub(crate) brokers: Vec<(String, Option<u64>)>,
}

/// Builds reports for one node.
#[derive(Debug)]
pub(crate) struct Reporter {
    id: u32,
    name: String,
    tick_ms: u64,
    election_timeout_ticks: u32,
    digest: Option<(Slot, Digest)>,
}

impl Reporter {
    /// Reports of node `id` named `name`, whose core ticks every `tick_ms` and counts a
    /// peer silent for `election_timeout_ticks` as dead.
    pub(crate) fn new(id: u32, name: String, tick_ms: u64, election_timeout_ticks: u32) -> Self {
        Reporter {
            id,
            name,
            tick_ms,
            election_timeout_ticks,
            digest: None,
        }
    }

    /// The report; `name_of` gives the members' names by rank.
    pub(crate) fn report<'a>(
        &mut self,
        status: &Status,
        store: &Store,
        name_of: impl Fn(Rank) -> Option<&'a str>,
        facts: Facts,
    ) -> StatusReport {
        let applied = store.applied_slot();
        let digest = match self.digest {
            Some((slot, digest)) if slot == applied => digest,
            _ => {
                let digest = store.digest();
                self.digest = Some((applied, digest));
                digest
            }
        };
        let timeout = self.election_timeout_ticks;
        let peers: Vec<PeerReport> = status
            .peers
            .iter()
            .map(|p| PeerReport {
                rank: p.rank,
                node: name_of(p.rank).map(str::to_owned),
                status_addr: facts.status_addrs.get(&p.rank).cloned(),
                last_heartbeat_ms_ago: p.silent_ticks.map(|t| u64::from(t) * self.tick_ms),
                alive: p.silent_ticks.is_some_and(|t| t <= timeout),
                decided_slot: p.decided_upto,
            })
            .collect();
        let best_peer = peers
            .iter()
            .filter(|p| p.alive)
            .map(|p| p.decided_slot)
            .max()
            .unwrap_or(0);
        let ready = status.leader.is_some()
            && applied == status.decided_upto
            && applied + READY_MAX_LAG_SLOTS >= best_peer;
        StatusReport {
            id: self.id,
            node: self.name.clone(),
            rank: status.rank,
            role: status.role.as_str().to_owned(),
            leader: status.leader,
            leader_node: status.leader.and_then(&name_of).map(str::to_owned),
            ballot: status.ballot.map(|b| b.to_string()),
            promised: status.promised.to_string(),
            decided_slot: status.decided_upto,
            applied_slot: applied,
            digest: digest.to_string(),
            lamport: status.lamport,
            clock_offset_ms: facts.clock_offset_ms,
            proxy: facts.proxy,
            truncated_slot: status.truncated_upto,
            snapshot_slot: facts.snapshot_slot,
            pending_requests: facts.pending_requests,
            pending_commands: status.pending_commands,
            in_flight_slots: status.in_flight_slots,
            waiting_for_disk: status.held_groups,
            registered: facts.registered,
            reference_last_reply_ms_ago: facts.reference_last_reply_ms_ago,
            ready,
            peers,
            auth: facts.auth,
            proxies: facts.proxies,
            brokers: facts
                .brokers
                .into_iter()
                .map(|(endpoint, last_request_ms_ago)| BrokerLink {
                    endpoint,
                    last_request_ms_ago,
                })
                .collect(),
            channels: store
                .recent_channels(REPORT_CHANNELS, REPORT_MESSAGES_PER_CHANNEL)
                .into_iter()
                .map(|(name, subscribers, messages)| ChannelReport {
                    name,
                    subscribers,
                    messages,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxos::{Ballot, PeerStatus, Role};
    use store::StoreConfig;

    fn status(leader: Option<Rank>, decided_upto: Slot, peer_decided: Slot) -> Status {
        Status {
            rank: 1,
            role: Role::Follower,
            held_groups: 2,
            leader,
            ballot: Some(Ballot::new(3, 2)),
            promised: Ballot::new(3, 2),
            round: 0,
            decided_upto,
            truncated_upto: 0,
            lamport: 7,
            pending_commands: 0,
            pending_reads: 0,
            in_flight_slots: 0,
            peers: vec![
                PeerStatus {
                    rank: 2,
                    silent_ticks: Some(1),
                    decided_upto: peer_decided,
                },
                PeerStatus {
                    rank: 3,
                    silent_ticks: None,
                    decided_upto: 0,
                },
            ],
        }
    }

    fn names(rank: Rank) -> Option<&'static str> {
        (rank == 2).then_some("node-2")
    }

    #[test]
    fn a_caught_up_follower_of_a_known_leader_is_ready() {
        let mut reporter = Reporter::new(1, "node-1".to_owned(), 10, 40);
        let store = Store::new(StoreConfig::default());
        let report = reporter.report(&status(Some(2), 0, 0), &store, names, Facts::default());
        assert!(report.ready);
        assert_eq!(report.leader_node.as_deref(), Some("node-2"));
        assert_eq!(report.waiting_for_disk, 2);
        assert_eq!(report.peers[0].last_heartbeat_ms_ago, Some(10));
        assert!(report.peers[0].alive && !report.peers[1].alive);
        // No leader, or decided but not applied, or far behind a live peer: not ready.
        let report = reporter.report(&status(None, 0, 0), &store, names, Facts::default());
        assert!(!report.ready);
        let report = reporter.report(&status(Some(2), 1, 0), &store, names, Facts::default());
        assert!(!report.ready);
        let behind = status(Some(2), 0, READY_MAX_LAG_SLOTS + 1);
        assert!(
            !reporter
                .report(&behind, &store, names, Facts::default())
                .ready
        );
    }
}
