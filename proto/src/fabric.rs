//! Control messages of the fabric: node ↔ broker (READY, heartbeat) and node ↔
//! reference (register, heartbeat, members), and the membership event the reference
//! publishes on the proxy.

use serde::{Deserialize, Serialize};

use crate::LimitError;
use crate::limits::{MAX_MEMBERS, MAX_NAME_BYTES};

/// Sent by a node on its DEALER to the broker backend, as a single body frame (replies to
/// clients carry a routing frame in front, so the broker tells them apart by frame count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeToBroker {
    /// The node is up and takes requests. Sent at start and after reconnecting.
    Ready {
        /// Node name, e.g. `node-1`.
        node: String,
    },
    /// The node is still alive. A heartbeat from an unknown node counts as READY, so a
    /// restarted broker learns its nodes without their help.
    Heartbeat {
        /// Node name.
        node: String,
    },
}

impl NodeToBroker {
    /// The node's name.
    pub fn node(&self) -> &str {
        match self {
            NodeToBroker::Ready { node } | NodeToBroker::Heartbeat { node } => node,
        }
    }

    /// Checks the name against the limits.
    pub fn validate(&self) -> Result<(), LimitError> {
        check_node_name(self.node())
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
/// Associated data of a node's READY or heartbeat to the broker (with the node's name,
/// its DEALER identity).
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
    },
    /// Still alive.
    Heartbeat {
        /// Node name.
        node: String,
    },
    /// Ask for the member list.
    Members,
}

impl RefRequest {
    /// Checks names against the limits.
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            RefRequest::Register { node, status_addr } => {
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
            RefRequest::Heartbeat { node } => check_node_name(node),
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
}
