//! Snapshots (compact MessagePack, for catch-up and log truncation) and the `store.json`
//! document (for people, and for recovery at start).
//!
//! Both carry the digest of the state they hold. Loading recomputes it and refuses a
//! mismatch, then checks the state's internal consistency, so a corrupted file is an error
//! and never a silently different replica. Loading never panics, whatever the bytes.

use std::collections::BTreeMap;

use proto::client::{ChatMessage, ClientId, Target};
use proto::limits::{MAX_KEY_BYTES, MAX_PASSWORD_HASH_BYTES, MAX_VALUE_BYTES, SESSION_KEY_BYTES};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::{ConfigError, StoreConfig};
use crate::digest::{Digest, digest_of, legacy_digest_of};
use crate::state::{Channel, ChatSession, Inbox, Keys, Session, State, Users};
use crate::{Slot, Store};

/// Version of the snapshot encoding; a snapshot of another version is refused.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// A snapshot or `store.json` that cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SnapshotError {
    /// The bytes do not decode, or the state they hold is not consistent.
    #[error("malformed store snapshot: {0}")]
    Malformed(String),
    /// The state decodes but its digest is not the one recorded with it.
    #[error("store snapshot digest mismatch: recorded {expected}, state hashes to {actual}")]
    DigestMismatch {
        /// The digest recorded in the snapshot.
        expected: Digest,
        /// The digest of the state found in it.
        actual: Digest,
    },
    /// A snapshot of an encoding version this build does not read.
    #[error("store snapshot format {found} is not supported (this build reads {supported})")]
    Format {
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The configuration to load it with is not valid.
    #[error("invalid store configuration: {0}")]
    Config(#[from] ConfigError),
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: u32,
    digest: Digest,
    state: &'a State,
}

#[derive(Deserialize)]
struct SnapshotIn {
    format: u32,
    digest: Digest,
    state: State,
}

/// `store.json` as written: the fields in the documented order.
#[derive(Serialize)]
struct JsonOut<'a> {
    node: &'a str,
    applied_slot: Slot,
    lamport: u64,
    digest: Digest,
    keys: &'a Keys,
    users: &'a Users,
    channels: &'a BTreeMap<String, Channel>,
    inboxes: &'a BTreeMap<String, Inbox>,
    sessions: &'a BTreeMap<ClientId, Session>,
    chat_sessions: &'a BTreeMap<String, ChatSession>,
}

/// `store.json` as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonIn {
    node: String,
    applied_slot: Slot,
    lamport: u64,
    digest: Digest,
    keys: Keys,
    users: Users,
    channels: BTreeMap<String, Channel>,
    inboxes: BTreeMap<String, Inbox>,
    sessions: BTreeMap<ClientId, Session>,
    /// Absent from documents written before passwords.
    #[serde(default)]
    chat_sessions: BTreeMap<String, ChatSession>,
}

impl Store {
    /// The applied state as a compact MessagePack snapshot, with its applied slot and
    /// digest. Load it with [`Store::restore`].
    pub fn snapshot(&self) -> Vec<u8> {
        let out = SnapshotOut {
            format: SNAPSHOT_FORMAT,
            digest: self.digest(),
            state: &self.state,
        };
        match rmp_serde::to_vec(&out) {
            Ok(bytes) => bytes,
            // Every type in the state has a MessagePack encoding and a Vec cannot fail.
            Err(error) => panic!("encoding a store snapshot failed: {error}"),
        }
    }

    /// Loads a [`Store::snapshot`]: decodes it, recomputes the digest and compares it with
    /// the recorded one, and checks the state's consistency.
    pub fn restore(bytes: &[u8], config: StoreConfig) -> Result<Store, SnapshotError> {
        config.validate()?;
        let snapshot: SnapshotIn = rmp_serde::from_slice(bytes)
            .map_err(|error| SnapshotError::Malformed(error.to_string()))?;
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format {
                found: snapshot.format,
                supported: SNAPSHOT_FORMAT,
            });
        }
        Store::load(snapshot.state, snapshot.digest, config)
    }

    /// The `store.json` document of this replica: pretty JSON with a stable key order,
    /// `{"node", "applied_slot", "lamport", "digest", "keys", "users", "channels",
    /// "inboxes", "sessions", "chat_sessions"}` (users by name with their password hash;
    /// chat sessions by the SHA-256 of their credential). It round-trips exactly through [`Store::from_json`].
    pub fn to_json(&self, node: &str) -> Vec<u8> {
        let state = &self.state;
        let out = JsonOut {
            node,
            applied_slot: state.applied_slot,
            lamport: state.lamport,
            digest: self.digest(),
            keys: &state.keys,
            users: &state.users,
            channels: &state.channels,
            inboxes: &state.inboxes,
            sessions: &state.sessions,
            chat_sessions: &state.chat_sessions,
        };
        let mut bytes = match serde_json::to_vec_pretty(&out) {
            Ok(bytes) => bytes,
            // Only strings, integers, sequences and maps with string or integer keys.
            Err(error) => panic!("encoding store.json failed: {error}"),
        };
        bytes.push(b'\n');
        bytes
    }

    /// Loads a `store.json` document: returns the node name it names and the store. A
    /// document whose state does not hash to its `digest` is
    /// [`SnapshotError::DigestMismatch`]; one that does not parse is
    /// [`SnapshotError::Malformed`].
    pub fn from_json(bytes: &[u8], config: StoreConfig) -> Result<(String, Store), SnapshotError> {
        config.validate()?;
        let doc: JsonIn = serde_json::from_slice(bytes)
            .map_err(|error| SnapshotError::Malformed(error.to_string()))?;
        let state = State {
            applied_slot: doc.applied_slot,
            lamport: doc.lamport,
            keys: doc.keys,
            users: doc.users,
            channels: doc.channels,
            inboxes: doc.inboxes,
            sessions: doc.sessions,
            chat_sessions: doc.chat_sessions,
        };
        let store = Store::load(state, doc.digest, config)?;
        Ok((doc.node, store))
    }

    fn load(state: State, expected: Digest, config: StoreConfig) -> Result<Store, SnapshotError> {
        let actual = digest_of(&state);
        // A state written before passwords carries the digest of that encoding.
        if actual != expected && legacy_digest_of(&state) != Some(expected) {
            return Err(SnapshotError::DigestMismatch { expected, actual });
        }
        check_consistent(&state, &config).map_err(SnapshotError::Malformed)?;
        Ok(Store::from_parts(config, state))
    }
}

/// What apply guarantees about a state, checked on a loaded one: a state that passes
/// could have been produced by applying slots.
fn check_consistent(state: &State, config: &StoreConfig) -> Result<(), String> {
    for (key, value) in state.keys.iter() {
        if key.is_empty() || key.len() > MAX_KEY_BYTES || value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "a key of {} bytes or its value of {} bytes is out of limits",
                key.len(),
                value.len()
            ));
        }
    }
    for (name, channel) in &state.channels {
        if let Some(user) = channel
            .subscribers
            .iter()
            .find(|u| !state.users.contains(u))
        {
            return Err(format!(
                "channel {name:?} has subscriber {user:?} who never logged in"
            ));
        }
        check_history(
            &channel.messages,
            channel.next_id,
            state.applied_slot,
            |to| matches!(to, Target::Channel(c) if c == name),
        )
        .map_err(|e| format!("channel {name:?}: {e}"))?;
    }
    for (user, inbox) in &state.inboxes {
        if !state.users.contains(user) {
            return Err(format!("inbox of {user:?} who never logged in"));
        }
        check_history(
            &inbox.messages,
            inbox.next_id,
            state.applied_slot,
            |to| matches!(to, Target::User(u) if u == user),
        )
        .map_err(|e| format!("inbox of {user:?}: {e}"))?;
    }
    for (name, user) in &state.users.0 {
        if let Some(hash) = &user.password_hash
            && (hash.is_empty() || hash.len() > MAX_PASSWORD_HASH_BYTES)
        {
            return Err(format!(
                "user {name:?} has a password hash of {} bytes",
                hash.len()
            ));
        }
    }
    if state.chat_sessions.len() > config.max_chat_sessions {
        return Err(format!(
            "{} chat sessions, over max_chat_sessions {}",
            state.chat_sessions.len(),
            config.max_chat_sessions
        ));
    }
    for (key, session) in &state.chat_sessions {
        let registered = state
            .users
            .0
            .get(&session.user)
            .is_some_and(|u| u.password_hash.is_some());
        if key.len() != SESSION_KEY_BYTES
            || !registered
            || session.slot == 0
            || session.slot > state.applied_slot
        {
            return Err(format!(
                "chat session of {:?} opened in slot {} of {} is not one a login opens",
                session.user, session.slot, state.applied_slot
            ));
        }
    }
    if state.sessions.len() > config.max_sessions {
        return Err(format!(
            "{} sessions, over max_sessions {}",
            state.sessions.len(),
            config.max_sessions
        ));
    }
    for (client_id, session) in &state.sessions {
        if *client_id == crate::INTERNAL_CLIENT_ID
            || session.slot == 0
            || session.slot > state.applied_slot
        {
            return Err(format!(
                "session of client {client_id} applied in slot {} of {}",
                session.slot, state.applied_slot
            ));
        }
    }
    Ok(())
}

fn check_history(
    messages: &std::collections::VecDeque<ChatMessage>,
    next_id: u64,
    applied_slot: Slot,
    addressed_here: impl Fn(&Target) -> bool,
) -> Result<(), String> {
    let mut previous_id = 0;
    for message in messages {
        if message.id <= previous_id || message.id >= next_id {
            return Err(format!(
                "message id {} out of order (next id {next_id})",
                message.id
            ));
        }
        if message.slot == 0 || message.slot > applied_slot || !addressed_here(&message.to) {
            return Err(format!("message {} is not from this history", message.id));
        }
        previous_id = message.id;
    }
    if next_id == 0 {
        return Err("next id 0".to_owned());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A snapshot of `store` that claims another format version.
    pub(crate) fn with_format(store: &Store, format: u32) -> Vec<u8> {
        let out = SnapshotOut {
            format,
            digest: store.digest(),
            state: &store.state,
        };
        rmp_serde::to_vec(&out).unwrap()
    }
}
