//! Control messages of the fabric: node ↔ broker (READY, heartbeat) and node ↔
//! reference (register, heartbeat, members), and the membership event the reference
//! publishes on the proxy.

use serde::{Deserialize, Serialize};

use crate::LimitError;
use crate::limits::{MAX_MEMBERS, MAX_NAME_BYTES};

/// Sent by a node on its DEALER to the broker backend, as a single body frame (replies to
/// clients carry a routing frame in front, so the broker tells them apart by frame count).
///
/// A broker routes requests for a node only to the connection that answered a
/// [`broker_challenge`] with a [`NodeToBroker::Proof`] sealed under the cluster key: a
/// READY or heartbeat, even an authentic one replayed by a stranger from its own
/// connection, only earns that connection a challenge it cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeToBroker {
    /// The node is up and takes requests. Sent at start; the broker answers with a
    /// challenge.
    Ready {
        /// Node name, e.g. `node-1`.
        node: String,
    },
    /// The node is still alive. From the connection the broker routes to, it keeps the
    /// node live; from any other (the node reconnected, or the broker restarted and
    /// knows no route), the broker answers with a challenge.
    Heartbeat {
        /// Node name.
        node: String,
    },
    /// The answer to a [`broker_challenge`]: the broker routes to this connection from
    /// now on.
    Proof {
        /// Node name.
        node: String,
        /// The challenge's nonce, as the broker sent it.
        nonce: Vec<u8>,
    },
}

impl NodeToBroker {
    /// The node's name.
    pub fn node(&self) -> &str {
        match self {
            NodeToBroker::Ready { node }
            | NodeToBroker::Heartbeat { node }
            | NodeToBroker::Proof { node, .. } => node,
        }
    }

    /// Checks the name and the nonce against the limits.
    pub fn validate(&self) -> Result<(), LimitError> {
        if let NodeToBroker::Proof { nonce, .. } = self
            && nonce.len() != CHALLENGE_NONCE_BYTES
        {
            return Err(LimitError::TooLong {
                field: "nonce",
                len: nonce.len(),
                max: CHALLENGE_NONCE_BYTES,
            });
        }
        check_node_name(self.node())
    }
}

/// The first bytes of a broker's challenge to a node's connection ([`broker_challenge`]).
/// Its first byte, 0, is never a protocol version.
pub const BROKER_CHALLENGE: &[u8] = b"\0challenge";
/// Random bytes in a challenge.
pub const CHALLENGE_NONCE_BYTES: usize = 16;

/// A broker's challenge to one backend connection: [`BROKER_CHALLENGE`] and a fresh nonce,
/// one frame, in clear (it proves nothing by itself; the sealed answer does).
pub fn broker_challenge(nonce: &[u8; CHALLENGE_NONCE_BYTES]) -> Vec<u8> {
    let mut frame = BROKER_CHALLENGE.to_vec();
    frame.extend_from_slice(nonce);
    frame
}

/// The nonce of a [`broker_challenge`] frame; `None` for any other frame.
pub fn parse_broker_challenge(frame: &[u8]) -> Option<[u8; CHALLENGE_NONCE_BYTES]> {
    frame.strip_prefix(BROKER_CHALLENGE)?.try_into().ok()
}

/// How the reference's refusal of a request not newer than the last it took from that
/// node begins (a node at start retries on it instead of stopping: its clock may be
/// behind its previous start).
pub const STALE_REQUEST: &str = "a stale request";

/// Orders the sealed requests one node sends the reference, so that the reference takes
/// each at most once: a replayed request is not newer than the last one it took from that
/// node. `boot_us` is when the sender started (Unix µs), so a restarted node's requests
/// are newer than its previous run's; `seq` counts its requests within a run.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp {
    /// When the sender started, in Unix microseconds.
    pub boot_us: u64,
    /// Its requests so far in this run.
    pub seq: u64,
}

impl Stamp {
    /// The next stamp of this process: its start time, then a counter shared by every
    /// caller in it (several nodes in one test process still each send increasing stamps).
    pub fn next_of_process() -> Stamp {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static BOOT_US: OnceLock<u64> = OnceLock::new();
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let boot_us = *BOOT_US.get_or_init(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        });
        Stamp {
            boot_us,
            seq: SEQ.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }
}

/// A client's liveness probe of a broker (Freelance pattern): a single body frame that
/// the broker answers at once with [`broker_pong`], without involving a node. Its first
/// byte, 0, is never a protocol version, so no request can be mistaken for it.
pub const BROKER_PING: &[u8] = b"\0ping";
/// The first bytes of a broker's answer to [`BROKER_PING`]; one more byte follows.
pub const BROKER_PONG: &[u8] = b"\0pong";

/// A broker's answer to [`BROKER_PING`]: [`BROKER_PONG`] and the number of live nodes in
/// its ring (saturating at 255), so that a client prefers a broker that can route.
pub fn broker_pong(live_nodes: usize) -> Vec<u8> {
    let mut frame = BROKER_PONG.to_vec();
    frame.push(u8::try_from(live_nodes).unwrap_or(u8::MAX));
    frame
}

/// The live-node count of a [`broker_pong`] frame; `None` for any other frame.
pub fn parse_broker_pong(frame: &[u8]) -> Option<u8> {
    match frame.strip_prefix(BROKER_PONG) {
        Some([live]) => Some(*live),
        _ => None,
    }
}

/// Associated data of a client request the broker seals for a node (with the client's
/// routing frames).
pub const BROKER_REQUEST: &[u8] = b"broker request";
/// Associated data of a node's reply through the broker (with the client's routing frames).
pub const BROKER_REPLY: &[u8] = b"broker reply";
/// Associated data of a node's READY, heartbeat or proof to the broker.
pub const BROKER_CONTROL: &[u8] = b"broker control";
/// Associated data of a node's frame on the proxy (with its topic and sender frames):
/// Paxos envelopes, clock messages and proxy probes.
pub const PEER_FRAME: &[u8] = b"peer frame";

/// Associated data of a request to the reference, sealed with the cluster key
/// ([`crate::seal`]).
pub const REFERENCE_REQUEST: &[u8] = b"reference request";
/// Associated data of the reference's reply.
pub const REFERENCE_REPLY: &[u8] = b"reference reply";
/// Associated data of a membership event on the proxy (with its topic frame).
pub const MEMBERSHIP_EVENT: &[u8] = b"membership event";

/// A request to the reference service (DEALER → ROUTER, one body frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefRequest {
    /// Join (or re-join) the cluster; the answer is a stable rank.
    Register {
        /// Node name.
        node: String,
        /// Where the node serves `/status`, for tools.
        #[serde(default)]
        status_addr: String,
        /// Newer than every request the reference took from this node before.
        #[serde(default)]
        stamp: Stamp,
    },
    /// Still alive.
    Heartbeat {
        /// Node name.
        node: String,
        /// Newer than every request the reference took from this node before.
        #[serde(default)]
        stamp: Stamp,
    },
    /// Ask for the member list.
    Members,
}

impl RefRequest {
    /// Checks names against the limits.
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            RefRequest::Register {
                node, status_addr, ..
            } => {
                check_node_name(node)?;
                if status_addr.len() > 256 {
                    return Err(LimitError::TooLong {
                        field: "status_addr",
                        len: status_addr.len(),
                        max: 256,
                    });
                }
                Ok(())
            }
            RefRequest::Heartbeat { node, .. } => check_node_name(node),
            RefRequest::Members => Ok(()),
        }
    }
}

/// The reference service's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefReply {
    /// Registered with this rank; the current members follow.
    Registered {
        /// Stable rank, 1..N.
        rank: u32,
        /// Current members.
        members: Vec<Member>,
    },
    /// A heartbeat was taken. `known = false` asks the node to register again (the
    /// reference expired it or lost its memory).
    HeartbeatAck {
        /// Whether the node is a current member.
        known: bool,
    },
    /// The member list.
    Members(Vec<Member>),
    /// The request was refused.
    Error(crate::client::Error),
}

/// One member of the cluster as the reference sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// Node name.
    pub node: String,
    /// Stable rank, 1..N; the highest live rank leads.
    pub rank: u32,
    /// Where the node serves `/status`.
    #[serde(default)]
    pub status_addr: String,
    /// Unix time of its last heartbeat, in milliseconds.
    pub last_heartbeat_unix_ms: u64,
    /// Whether it heartbeated within the expiry timeout.
    pub alive: bool,
}

/// Published by the reference on the `membership` topic whenever a member joins, returns
/// or expires (and periodically, since pub/sub may drop a message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipEvent {
    /// Increases with every change.
    pub epoch: u64,
    /// All members, alive or not.
    pub members: Vec<Member>,
}

impl MembershipEvent {
    /// Checks the member count.
    pub fn validate(&self) -> Result<(), LimitError> {
        if self.members.len() > MAX_MEMBERS {
            return Err(LimitError::TooMany {
                field: "members",
                len: self.members.len(),
                max: MAX_MEMBERS,
            });
        }
        self.members
            .iter()
            .try_for_each(|m| check_node_name(&m.node))
    }
}

/// Checks a node name: non-empty, at most [`MAX_NAME_BYTES`], no whitespace, and usable
/// as a topic suffix.
pub fn check_node_name(node: &str) -> Result<(), LimitError> {
    if node.is_empty() {
        return Err(LimitError::Empty { field: "node" });
    }
    if node.len() > MAX_NAME_BYTES {
        return Err(LimitError::TooLong {
            field: "node",
            len: node.len(),
            max: MAX_NAME_BYTES,
        });
    }
    if !node
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(LimitError::BadName { field: "node" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pong_carries_the_live_nodes_and_nothing_else_parses_as_one() {
        assert_eq!(parse_broker_pong(&broker_pong(3)), Some(3));
        assert_eq!(parse_broker_pong(&broker_pong(1000)), Some(u8::MAX));
        assert_eq!(parse_broker_pong(BROKER_PONG), None);
        assert_eq!(parse_broker_pong(BROKER_PING), None);
        assert_eq!(parse_broker_pong(&[1, 2, 3]), None);
        // A ping is never a versioned body frame.
        assert_ne!(BROKER_PING[0], crate::codec::PROTOCOL_VERSION);
    }

    #[test]
    fn a_challenge_parses_back_and_nothing_else_does() {
        let nonce = [7u8; CHALLENGE_NONCE_BYTES];
        assert_eq!(
            parse_broker_challenge(&broker_challenge(&nonce)),
            Some(nonce)
        );
        assert_eq!(parse_broker_challenge(BROKER_CHALLENGE), None);
        assert_eq!(parse_broker_challenge(&broker_pong(1)), None);
        let mut long = broker_challenge(&nonce);
        long.push(0);
        assert_eq!(parse_broker_challenge(&long), None);
        assert_ne!(BROKER_CHALLENGE[0], crate::codec::PROTOCOL_VERSION);
        // A proof with a nonce of the wrong size is refused.
        let proof = NodeToBroker::Proof {
            node: "node-1".into(),
            nonce: vec![1; 3],
        };
        assert!(proof.validate().is_err());
    }

    #[test]
    fn stamps_of_a_process_increase_and_a_later_start_is_newer() {
        let (a, b) = (Stamp::next_of_process(), Stamp::next_of_process());
        assert!(b > a);
        let restarted = Stamp {
            boot_us: a.boot_us + 1,
            seq: 1,
        };
        assert!(
            restarted > b,
            "a restart's first stamp beats the run before it"
        );
    }
}
