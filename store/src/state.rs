//! The replicated state: everything the digest covers, with one canonical encoding.
//!
//! Only ordered containers (`BTreeMap`, `BTreeSet`, `VecDeque` in append order) appear
//! here, so that serialising the state (for the digest, the snapshot and `store.json`)
//! gives the same bytes on every replica that applied the same slots.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proto::client::{ChatMessage, ClientId, Reply, Seq};
use serde::{Deserialize, Serialize};

use crate::Slot;

/// Id of the first message of a channel or inbox; `History { since: 0 }` returns all.
pub(crate) const FIRST_MESSAGE_ID: u64 = 1;

/// The replicated state of the store.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct State {
    /// Last slot applied; 0 before the first.
    pub(crate) applied_slot: Slot,
    /// Largest Lamport clock of an applied slot.
    pub(crate) lamport: u64,
    /// The key-value store.
    pub(crate) keys: BTreeMap<String, String>,
    /// Logged-in users.
    pub(crate) users: BTreeSet<String>,
    /// Channels by name.
    pub(crate) channels: BTreeMap<String, Channel>,
    /// Private messages by recipient; an inbox exists once a message was sent to it.
    pub(crate) inboxes: BTreeMap<String, Inbox>,
    /// Client sessions for exactly-once replies.
    pub(crate) sessions: BTreeMap<ClientId, Session>,
}

/// One chat channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Channel {
    /// Subscribed users.
    pub(crate) subscribers: BTreeSet<String>,
    /// Id the next message will get.
    pub(crate) next_id: u64,
    /// The most recent messages, oldest first, ids strictly increasing.
    pub(crate) messages: VecDeque<ChatMessage>,
}

impl Default for Channel {
    fn default() -> Self {
        Channel {
            subscribers: BTreeSet::new(),
            next_id: FIRST_MESSAGE_ID,
            messages: VecDeque::new(),
        }
    }
}

/// The private messages sent to one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Inbox {
    /// Id the next message will get.
    pub(crate) next_id: u64,
    /// The most recent messages, oldest first, ids strictly increasing.
    pub(crate) messages: VecDeque<ChatMessage>,
}

impl Default for Inbox {
    fn default() -> Self {
        Inbox {
            next_id: FIRST_MESSAGE_ID,
            messages: VecDeque::new(),
        }
    }
}

/// The last request of one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Session {
    /// The client's last applied request number.
    pub(crate) seq: Seq,
    /// The slot that applied it (orders eviction).
    pub(crate) slot: Slot,
    /// Its result, given again to a retry.
    pub(crate) result: SessionResult,
}

/// What a session remembers of its last request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SessionResult {
    /// A write succeeded with this reply.
    Ok(Reply),
    /// A write failed with this error (an invalid write included).
    Err(proto::Error),
    /// A read-only command. Its reply is not kept: a list or history reply can be up to half
    /// a frame, and `max_sessions` of them would not be bounded memory. A retry of a read
    /// is executed again at the retry's slot, which still lies between the client's first
    /// call and its final reply, so the answer stays linearizable.
    Read,
}
