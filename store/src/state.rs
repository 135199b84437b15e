//! The replicated state: everything the digest covers, with one canonical encoding.
//!
//! Serialising the state (for the digest, the snapshot and `store.json`) gives the same
//! bytes on every replica that applied the same slots: every container is ordered
//! (`BTreeMap`, `BTreeSet`, `VecDeque` in append order), or, for the one that every write
//! touches, [`Keys`], a hash map that serialises its entries sorted.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

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
    pub(crate) keys: Keys,
    /// Registered users.
    pub(crate) users: Users,
    /// Channels by name.
    pub(crate) channels: BTreeMap<String, Channel>,
    /// Private messages by recipient; an inbox exists once a message was sent to it.
    pub(crate) inboxes: BTreeMap<String, Inbox>,
    /// Client sessions for exactly-once replies.
    pub(crate) sessions: BTreeMap<ClientId, Session>,
    /// Open chat sessions by session key (the SHA-256 of the credential a client drew).
    /// Absent from states written before passwords.
    #[serde(default)]
    pub(crate) chat_sessions: BTreeMap<String, ChatSession>,
}

/// The registered users by name. Written as a map of [`User`]s; read from that or, for
/// states written before passwords, from a list of names (users without a password).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub(crate) struct Users(pub(crate) BTreeMap<String, User>);

impl<'de> Deserialize<'de> for Users {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Records(BTreeMap<String, User>),
            Names(BTreeSet<String>),
        }
        Ok(match Stored::deserialize(deserializer)? {
            Stored::Records(users) => Users(users),
            Stored::Names(names) => Users(
                names
                    .into_iter()
                    .map(|name| (name, User::default()))
                    .collect(),
            ),
        })
    }
}

impl Users {
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// One registered user.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct User {
    /// The PHC string of the password's Argon2id hash; `None` for a user registered
    /// before passwords, whose next login sets one.
    pub(crate) password_hash: Option<String>,
    /// For a user from before passwords, the slot whose login set the password: the
    /// private messages committed up to it are not shown to `history @user` (they were
    /// sent to whoever held the name before; the first login only claims the name).
    #[serde(default)]
    pub(crate) claimed_at: Slot,
}

/// One open chat session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChatSession {
    /// The user it speaks for.
    pub(crate) user: String,
    /// The slot that opened it (orders eviction).
    pub(crate) slot: Slot,
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

/// The key-value map. Every `Put` inserts into it, and in a `BTreeMap` of strings each of
/// the ~log2(n) comparisons on the way down follows a pointer to a key on the heap (a
/// cache miss apiece, 5 % of a node's CPU at ten thousand keys); a hash map finds the slot
/// with one hash and one comparison. The canonical order is kept where it is needed —
/// serialisation writes the entries sorted by key, byte for byte what the `BTreeMap` wrote
/// (so digests and files did not change) — at the price of a sort per snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub(crate) struct Keys(HashMap<String, String>);

impl Keys {
    pub(crate) fn get(&self, key: &str) -> Option<&String> {
        self.0.get(key)
    }

    pub(crate) fn insert(&mut self, key: String, value: String) {
        self.0.insert(key, value);
    }

    pub(crate) fn remove(&mut self, key: &str) {
        self.0.remove(key);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The entries, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    /// The entries in key order.
    pub(crate) fn sorted(&self) -> Vec<(&String, &String)> {
        let mut entries: Vec<_> = self.0.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        entries
    }
}

impl Serialize for Keys {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.sorted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_serialise_exactly_as_the_sorted_map_did() {
        let entries = [("b", "2"), ("a", "1"), ("ab", "3"), ("", "e"), ("é", "4")];
        let mut keys = Keys::default();
        let mut sorted = BTreeMap::new();
        for (k, v) in entries {
            keys.insert(k.to_owned(), v.to_owned());
            sorted.insert(k.to_owned(), v.to_owned());
        }
        assert_eq!(
            rmp_serde::to_vec(&keys).unwrap(),
            rmp_serde::to_vec(&sorted).unwrap()
        );
        assert_eq!(
            serde_json::to_string(&keys).unwrap(),
            serde_json::to_string(&sorted).unwrap()
        );
        let back: Keys = serde_json::from_str(&serde_json::to_string(&keys).unwrap()).unwrap();
        assert_eq!(back, keys);
    }
}
