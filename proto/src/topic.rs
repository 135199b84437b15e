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
/// Direct messages: `to.<node>` ([`to`]).
pub const TO: &str = "to";
/// A channel's live messages: `chan.<channel>` ([`channel`]).
pub const CHANNEL: &str = "chan";
/// A user's live private messages: `user.<user>` ([`user`]).
pub const USER: &str = "user";
/// Liveness probes of the fabric's processes (reserved: nothing in this tree publishes
/// them yet; the redundant fabric's checks will).
pub const PROBE: &str = "probe";
/// The proxy's own round-trip probes (`proxy health`: `health.<pid>.<nonce>`).
pub const HEALTH: &str = "health";

/// Topic of messages addressed to one node (promise, accepted, nack, forwarded
/// requests, catch-up answers).
pub fn to(node: &str) -> String {
    format!("{TO}.{node}")
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
    format!("{CHANNEL}.{name}")
}

/// Topic of a user's live private messages.
pub fn user(name: &str) -> String {
    format!("{USER}.{name}")
}

/// Whether a received topic frame is exactly `topic` (not merely prefixed by it).
pub fn is(frame: &[u8], topic: &str) -> bool {
    frame == topic.as_bytes()
}

/// What a topic is for, from a small fixed set: the label the proxy counts forwarded
/// messages by. A topic frame comes from any publisher and its suffixes (ranks, names)
/// are unbounded, so it is never a label itself; [`Kind::of`] folds it into one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// [`PAXOS_PREPARE`] broadcasts.
    PaxosPrepare,
    /// [`PAXOS_ACCEPT`] broadcasts.
    PaxosAccept,
    /// [`PAXOS_ACCEPTED`] broadcasts.
    PaxosAccepted,
    /// [`PAXOS_DECIDE`] broadcasts.
    PaxosDecide,
    /// [`HEARTBEAT`] broadcasts.
    Heartbeat,
    /// Direct messages to one node ([`TO`]).
    To,
    /// Catch-up requests ([`REPL`]).
    Repl,
    /// Leader announcements ([`ELECTION`]).
    Election,
    /// Berkeley clock rounds ([`CLOCK`]).
    Clock,
    /// The reference's membership events ([`MEMBERSHIP`]).
    Membership,
    /// Live channel messages ([`CHANNEL`]).
    Chan,
    /// Live private messages ([`USER`]).
    User,
    /// Fabric liveness probes ([`PROBE`]).
    Probe,
    /// The proxy's health probes ([`HEALTH`]).
    Health,
    /// Anything else (not ours, or malformed).
    Other,
}

impl Kind {
    /// How many kinds there are.
    pub const COUNT: usize = 15;

    /// Every kind, in the order of [`Kind::index`].
    pub const ALL: [Kind; Kind::COUNT] = [
        Kind::PaxosPrepare,
        Kind::PaxosAccept,
        Kind::PaxosAccepted,
        Kind::PaxosDecide,
        Kind::Heartbeat,
        Kind::To,
        Kind::Repl,
        Kind::Election,
        Kind::Clock,
        Kind::Membership,
        Kind::Chan,
        Kind::User,
        Kind::Probe,
        Kind::Health,
        Kind::Other,
    ];

    /// The kind's position in [`Kind::ALL`], `0..Kind::COUNT` (for arrays of counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The kind's label value: `paxos_accept`, `to`, `other`...
    pub fn name(self) -> &'static str {
        match self {
            Kind::PaxosPrepare => "paxos_prepare",
            Kind::PaxosAccept => "paxos_accept",
            Kind::PaxosAccepted => "paxos_accepted",
            Kind::PaxosDecide => "paxos_decide",
            Kind::Heartbeat => "heartbeat",
            Kind::To => "to",
            Kind::Repl => "repl",
            Kind::Election => "election",
            Kind::Clock => "clock",
            Kind::Membership => "membership",
            Kind::Chan => "chan",
            Kind::User => "user",
            Kind::Probe => "probe",
            Kind::Health => "health",
            Kind::Other => "other",
        }
    }

    /// The kind of a topic frame: a topic belongs to a kind when it is the kind's name or
    /// starts with it and a dot (`paxos.accept.3` is an accept, `paxos.acceptedx` is
    /// other). The forwarder calls this on every message, so it only compares a few
    /// bytes: one match on the first byte, then at most five prefix comparisons of at
    /// most 14 bytes, no allocation.
    pub fn of(topic: &[u8]) -> Kind {
        let under =
            |name: &str| matches!(topic.strip_prefix(name.as_bytes()), Some([] | [b'.', ..]));
        match topic.first() {
            Some(b'p') => {
                if under(PAXOS_ACCEPT) {
                    Kind::PaxosAccept
                } else if under(PAXOS_ACCEPTED) {
                    Kind::PaxosAccepted
                } else if under(PAXOS_DECIDE) {
                    Kind::PaxosDecide
                } else if under(PAXOS_PREPARE) {
                    Kind::PaxosPrepare
                } else if under(PROBE) {
                    Kind::Probe
                } else {
                    Kind::Other
                }
            }
            Some(b'h') if under(HEARTBEAT) => Kind::Heartbeat,
            Some(b'h') if under(HEALTH) => Kind::Health,
            Some(b't') if under(TO) => Kind::To,
            Some(b'r') if under(REPL) => Kind::Repl,
            Some(b'e') if under(ELECTION) => Kind::Election,
            Some(b'c') if under(CLOCK) => Kind::Clock,
            Some(b'c') if under(CHANNEL) => Kind::Chan,
            Some(b'm') if under(MEMBERSHIP) => Kind::Membership,
            Some(b'u') if under(USER) => Kind::User,
            _ => Kind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_we_publish_has_its_kind() {
        let cases = [
            (from_rank(PAXOS_PREPARE, 3), Kind::PaxosPrepare),
            (from_rank(PAXOS_ACCEPT, 12), Kind::PaxosAccept),
            (from_rank(PAXOS_ACCEPTED, 1), Kind::PaxosAccepted),
            (from_rank(PAXOS_DECIDE, 2), Kind::PaxosDecide),
            (from_rank(HEARTBEAT, 5), Kind::Heartbeat),
            (to("node-1"), Kind::To),
            (REPL.to_owned(), Kind::Repl),
            (ELECTION.to_owned(), Kind::Election),
            (CLOCK.to_owned(), Kind::Clock),
            (MEMBERSHIP.to_owned(), Kind::Membership),
            (channel("general"), Kind::Chan),
            (user("alice"), Kind::User),
            ("probe.broker-1".to_owned(), Kind::Probe),
            ("health.123.456".to_owned(), Kind::Health),
            (PAXOS_ACCEPT.to_owned(), Kind::PaxosAccept),
        ];
        for (topic, kind) in cases {
            assert_eq!(Kind::of(topic.as_bytes()), kind, "{topic}");
        }
    }

    #[test]
    fn look_alikes_and_garbage_are_other() {
        for topic in [
            &b""[..],
            b"paxos",
            b"paxos.",
            b"paxos.acceptedx",
            b"paxos.acceptx.1",
            b"tomato",
            b"to",
            b"channel",
            b"users.x",
            b"membershipx",
            b"heart",
            b"\xff\x00",
            b"x",
        ] {
            let kind = Kind::of(topic);
            // `to` alone is the kind's name: a direct message with no node.
            let expected = if topic == b"to" {
                Kind::To
            } else {
                Kind::Other
            };
            assert_eq!(kind, expected, "{:?}", String::from_utf8_lossy(topic));
        }
    }

    #[test]
    fn kinds_are_indexed_in_order_with_distinct_names() {
        for (i, kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
        let names: std::collections::BTreeSet<_> = Kind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), Kind::COUNT);
    }
}
