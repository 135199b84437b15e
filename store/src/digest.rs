//! [`Digest`]: a short fingerprint of the replicated state, equal on every replica that
//! applied the same slots.

use std::fmt;
use std::io::{BufWriter, Write};
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::state::State;

/// Bytes in a [`Digest`].
pub const DIGEST_BYTES: usize = 16;

/// Prefix hashed before the state, so that a change of the encoding can be made visible by
/// changing it, and a digest of something else can never be mistaken for a store's.
/// v2: users with their password hash, and the chat sessions.
const DIGEST_DOMAIN: &[u8] = b"paxos-zmq store digest v2\0";

/// The prefix of states written before passwords ([`legacy_digest_of`]).
const LEGACY_DIGEST_DOMAIN: &[u8] = b"paxos-zmq store digest v1\0";

/// Buffer between the MessagePack encoder (many writes of a few bytes) and SHA-256.
const DIGEST_BUFFER_BYTES: usize = 64 * 1024;

/// SHA-256 of the canonical MessagePack encoding of the replicated state, truncated to 16
/// bytes. Shown (and stored in `store.json`) as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; DIGEST_BYTES]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A string that is not 32 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("a digest is {expected} hex characters, got {text:?}")]
pub struct DigestParseError {
    /// The text that failed to parse (at most 64 characters of it).
    pub text: String,
    /// How many hex characters a digest has.
    pub expected: usize,
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = || DigestParseError {
            text: text.chars().take(64).collect(),
            expected: DIGEST_BYTES * 2,
        };
        let bytes = text.as_bytes();
        if bytes.len() != DIGEST_BYTES * 2 {
            return Err(fail());
        }
        let mut out = [0u8; DIGEST_BYTES];
        for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let high = hex_value(pair[0]).ok_or_else(fail)?;
            let low = hex_value(pair[1]).ok_or_else(fail)?;
            *slot = (high << 4) | low;
        }
        Ok(Digest(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Hex text in human-readable formats (JSON), 16 raw bytes in MessagePack.
impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DigestVisitor;

        impl<'de> Visitor<'de> for DigestVisitor {
            type Value = Digest;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "{DIGEST_BYTES} bytes or {} hex characters",
                    DIGEST_BYTES * 2
                )
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Digest, E> {
                text.parse().map_err(E::custom)
            }

            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Digest, E> {
                <[u8; DIGEST_BYTES]>::try_from(bytes)
                    .map(Digest)
                    .map_err(|_| E::invalid_length(bytes.len(), &self))
            }
        }

        if deserializer.is_human_readable() {
            deserializer.deserialize_str(DigestVisitor)
        } else {
            deserializer.deserialize_bytes(DigestVisitor)
        }
    }
}

/// Feeds everything written into SHA-256.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The digest of a state. MessagePack of `BTreeMap`s / `BTreeSet`s / `VecDeque`s is
/// canonical: one state has exactly one encoding, so equal states give equal digests.
pub(crate) fn digest_of(state: &State) -> Digest {
    hash(DIGEST_DOMAIN, state)
}

/// The digest a build from before passwords gave this state, if such a build could have
/// held it: no user with a password, no chat session. A `store.json` written by that
/// build records this digest; [`crate::Store::from_json`] accepts it, once.
pub(crate) fn legacy_digest_of(state: &State) -> Option<Digest> {
    /// The state as it was then: users were a set of names, there were no chat sessions.
    #[derive(Serialize)]
    struct Legacy<'a> {
        applied_slot: u64,
        lamport: u64,
        keys: &'a crate::state::Keys,
        users: Vec<&'a String>,
        channels: &'a std::collections::BTreeMap<String, crate::state::Channel>,
        inboxes: &'a std::collections::BTreeMap<String, crate::state::Inbox>,
        sessions: &'a std::collections::BTreeMap<u64, crate::state::Session>,
    }
    let passwords = state.users.0.values().any(|u| u.password_hash.is_some());
    if passwords || !state.chat_sessions.is_empty() {
        return None;
    }
    let legacy = Legacy {
        applied_slot: state.applied_slot,
        lamport: state.lamport,
        keys: &state.keys,
        users: state.users.0.keys().collect(),
        channels: &state.channels,
        inboxes: &state.inboxes,
        sessions: &state.sessions,
    };
    Some(hash(LEGACY_DIGEST_DOMAIN, &legacy))
}

fn hash(domain: &[u8], state: &impl Serialize) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(domain);
    let mut writer = BufWriter::with_capacity(DIGEST_BUFFER_BYTES, HashWriter(hasher));
    // The writer cannot fail and every type in `State` has a MessagePack encoding (no
    // sequence of unknown length, no non-string map key that rmp refuses): an error here is
    // a bug, not an operating condition.
    if let Err(error) = rmp_serde::encode::write(&mut writer, state) {
        panic!("encoding the store state for its digest failed: {error}");
    }
    let hasher = match writer.into_inner() {
        Ok(HashWriter(hasher)) => hasher,
        Err(error) => panic!("flushing into SHA-256 failed: {}", error.error()),
    };
    let full = hasher.finalize();
    let mut out = [0u8; DIGEST_BYTES];
    out.copy_from_slice(&full[..DIGEST_BYTES]);
    Digest(out)
}
