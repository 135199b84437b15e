//! Topic names on the proxy. The first frame of every published message is its topic.
//!
//! SUB sockets filter by *prefix*, so `to.node-1` would also let `to.node-10` through:
//! receivers compare the whole topic with [`is`] before they trust a message.
//!
//! The Paxos broadcasts (`Prepare`, `Accept`, `Accepted`, `Decide`, heartbeats) are
//! published under [`from_rank`]`(kind, sender's rank)`, and each node subscribes to its
//! peers' ranks only: the proxy never sends a node's own broadcasts back to it (a leader
//! would otherwise receive and drop a copy of every `Accept` and `Decide` it sends).

/// Phase 1a: a leader candidate's `Prepare`, to every node.
pub const PAXOS_PREPARE: &str = "paxos.prepare";
/// Phase 2a: the leader's `Accept`, to every node.
pub const PAXOS_ACCEPT: &str = "paxos.accept";
/// Phase 2b: an acceptor's `Accepted` vote, to every node (the leader decides on a
/// quorum of them, and so can every other learner).
pub const PAXOS_ACCEPTED: &str = "paxos.accepted";
/// Commit: the leader's `Decide`, to every node.
pub const PAXOS_DECIDE: &str = "paxos.decide";
/// Catch-up requests (`Fetch`), to every node.
pub const REPL: &str = "repl";
/// Leader announcements (Bully election), to every node.
pub const ELECTION: &str = "election";
/// Peer heartbeats, to every node.
pub const HEARTBEAT: &str = "heartbeat";
/// Berkeley clock polls and corrections.
pub const CLOCK: &str = "clock";
/// Membership changes, from the reference service.
pub const MEMBERSHIP: &str = "membership";

/// Topic of messages addressed to one node (promise, accepted, nack, forwarded
/// requests, catch-up answers).
pub fn to(node: &str) -> String {
    format!("to.{node}")
}

/// Topic of a broadcast of `kind` ([`RANKED_BROADCASTS`]) sent by the node of rank
/// `rank`: `paxos.accept.3`.
pub fn from_rank(kind: &str, rank: u32) -> String {
    format!("{kind}.{rank}")
}

/// The broadcast kinds published under [`from_rank`].
pub const RANKED_BROADCASTS: [&str; 5] = [
    PAXOS_PREPARE,
    PAXOS_ACCEPT,
    PAXOS_ACCEPTED,
    PAXOS_DECIDE,
    HEARTBEAT,
];

/// Every broadcast topic of the peers of the node of rank `rank` in a cluster of ranks
/// `1..=cluster_size` (its own excluded): what that node subscribes to.
pub fn peer_broadcasts(rank: u32, cluster_size: u32) -> Vec<String> {
    (1..=cluster_size)
        .filter(|&peer| peer != rank)
        .flat_map(|peer| RANKED_BROADCASTS.map(|kind| from_rank(kind, peer)))
        .collect()
}

/// Topic of a node's proxy probes: it publishes them through the proxy it uses and
/// listens for them, to notice when that proxy stops forwarding (dead or paused).
pub fn probe(node: &str) -> String {
    format!("probe.{node}")
}

/// Topic of a channel's live messages.
pub fn channel(name: &str) -> String {
    format!("chan.{name}")
}

/// Topic of a user's live private messages.
pub fn user(name: &str) -> String {
    format!("user.{name}")
}

/// Whether a received topic frame is exactly `topic` (not merely prefixed by it).
pub fn is(frame: &[u8], topic: &str) -> bool {
    frame == topic.as_bytes()
}
