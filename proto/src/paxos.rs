//! Node ↔ node messages of Multi-Paxos, carried over the proxy.
//!
//! One [`Envelope`] per published message: who sent it, to whom (`None` = every node),
//! the sender's Lamport clock, and one [`Message`]. The vocabulary is the paper's:
//! phase 1 is [`Message::Prepare`] / [`Message::Promise`], phase 2 is
//! [`Message::Accept`] / [`Message::Accepted`], a refusal is [`Message::Nack`] carrying
//! the higher ballot, and a chosen value is announced with [`Message::Decide`]. The rest
//! is liveness and catch-up: heartbeats, forwarded client commands, fetching decided
//! slots, and snapshot transfer in chunks.
//!
//! ## Limits
//! Every list in a message is bounded by a named constant here or in
//! [`crate::limits`], so that a decoded envelope always fits in one frame
//! ([`crate::limits::MAX_FRAME_BYTES`]) and [`Wire::validate`] can refuse anything
//! bigger. Producers (the `paxos` core) cut their messages with the same constants and
//! the same size estimate ([`command_size_bytes`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::LimitError;
use crate::client::Command;
use crate::codec::Wire;
use crate::limits::{MAX_BATCH_BYTES, MAX_BATCH_COMMANDS, MAX_MEMBERS};

/// A position in the replicated log. Slot 0 is "nothing yet"; the first command goes to
/// slot 1.
pub type Slot = u64;
/// The round part of a [`Ballot`]; a candidate picks one higher than any it has seen.
pub type Round = u64;
/// A node's rank in the cluster (its stable id from the reference service). The live
/// node with the highest rank leads.
pub type Rank = u32;

/// Most entries in one [`Message::Promise`]; a longer answer is cut and continued by
/// another `Prepare` from the slot it names.
pub const MAX_PROMISE_ENTRIES: usize = 256;
/// Most entries in one [`Message::Decided`] answer to a [`Message::Fetch`].
pub const MAX_DECIDED_ENTRIES: usize = 256;
/// Most estimated command bytes ([`command_size_bytes`]) of all values in one
/// `Promise` or `Decided` message, except that one entry is always allowed (a single
/// value is at most [`MAX_BATCH_BYTES`]). Half a frame, like a batch.
pub const MAX_ENTRIES_BYTES: usize = MAX_BATCH_BYTES;
/// Largest piece of a snapshot in one [`Message::SnapshotChunk`].
pub const MAX_SNAPSHOT_CHUNK_BYTES: usize = 512 * 1024;
/// Largest snapshot a node accepts to assemble from chunks: bounds the memory a peer can
/// make us reserve.
pub const MAX_SNAPSHOT_BYTES: u64 = 1024 * 1024 * 1024;

/// A proposal number: `(round, rank)`, ordered lexicographically (round first), so that
/// ballots of different nodes never collide. `Ballot::default()` (round 0) is below every
/// ballot a candidate uses.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    /// Compared first.
    pub round: Round,
    /// Breaks ties between nodes that picked the same round.
    pub rank: Rank,
}

impl Ballot {
    /// A ballot of `rank` in `round`.
    pub fn new(round: Round, rank: Rank) -> Self {
        Ballot { round, rank }
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.rank)
    }
}

/// What one slot holds: a batch of client commands, stamped with the proposing leader's
/// Lamport clock. An empty batch is a no-op (it fills a hole in the log).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Value {
    /// Lamport clock of the leader when it proposed this value; recorded by the store in
    /// the applied entries.
    pub lamport: u64,
    /// The commands, applied in this order. Empty = no-op.
    pub commands: Vec<Command>,
}

impl Value {
    /// A no-op value (fills a hole).
    pub fn noop(lamport: u64) -> Self {
        Value {
            lamport,
            commands: Vec::new(),
        }
    }

    /// Whether this is a no-op.
    pub fn is_noop(&self) -> bool {
        self.commands.is_empty()
    }

    /// Estimated encoded size of the commands ([`command_size_bytes`] summed).
    pub fn size_bytes(&self) -> usize {
        self.commands.iter().map(command_size_bytes).sum()
    }

    fn validate(&self) -> Result<(), LimitError> {
        check_count("commands", self.commands.len(), MAX_BATCH_COMMANDS)?;
        check_bytes("commands", self.size_bytes(), MAX_BATCH_BYTES)?;
        self.commands.iter().try_for_each(|c| c.validate())
    }
}

/// An upper-bound estimate of a command's MessagePack size with named fields: a fixed
/// allowance for the map keys, tags and integers, plus every string's bytes and header.
/// Cheap enough to run on every proposal; used to cut batches and catch-up messages so
/// that they fit in a frame.
pub fn command_size_bytes(command: &Command) -> usize {
    use crate::client::{Op, Target};
    const FIXED_BYTES: usize = 96;
    const STRING_HEADER_BYTES: usize = 5;
    let s = |text: &str| text.len() + STRING_HEADER_BYTES;
    FIXED_BYTES
        + command.session.as_deref().map_or(0, s)
        + match &command.op {
            Op::Get { key } | Op::Delete { key } => s(key),
            Op::Put { key, value } => s(key) + s(value),
            Op::Cas { key, expected, new } => s(key) + expected.as_deref().map_or(1, s) + s(new),
            Op::Login { user, password } => s(user) + s(password),
            Op::Register {
                user,
                password_hash,
            } => s(user) + s(password_hash),
            Op::OpenSession { user } => s(user),
            Op::CreateChannel { channel } => s(channel),
            Op::Subscribe { user, channel } => s(user) + s(channel),
            Op::Publish {
                user,
                channel,
                text,
            } => s(user) + s(channel) + s(text),
            Op::PrivateMessage { from, to, text } => s(from) + s(to) + s(text),
            Op::History { target, .. } => match target {
                Target::Channel(name) | Target::User(name) => s(name),
            },
            Op::ListUsers | Op::ListChannels | Op::Noop => 0,
        }
}

/// One slot an acceptor reports in a [`Message::Promise`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromiseEntry {
    /// The slot.
    pub slot: Slot,
    /// The ballot the acceptor accepted `value` in; `None` when the acceptor knows the
    /// slot is decided with `value` (it keeps decided values instead of accepted ones).
    pub ballot: Option<Ballot>,
    /// The value.
    pub value: Value,
}

/// One decided slot, in a [`Message::Decided`] answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecidedEntry {
    /// The slot.
    pub slot: Slot,
    /// Its decided value.
    pub value: Value,
}

/// The messages of Multi-Paxos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// Phase 1a: a candidate asks every acceptor to promise `ballot` for every slot from
    /// `from_slot` on, and to report what it accepted there. Also sent to one acceptor to
    /// continue a cut `Promise`.
    Prepare {
        /// The candidate's ballot.
        ballot: Ballot,
        /// First slot the candidate does not know to be decided.
        from_slot: Slot,
    },
    /// Phase 1b: the acceptor promised `ballot` and reports what it holds in
    /// `from_slot..`. When `next_slot` is set the report was cut at the entry limits:
    /// the slots from `next_slot` on are not covered yet.
    Promise {
        /// The promised ballot.
        ballot: Ballot,
        /// First slot this report covers (the `Prepare`'s `from_slot`).
        from_slot: Slot,
        /// Accepted (or decided) values in the covered slots, in slot order.
        entries: Vec<PromiseEntry>,
        /// `Some(n)`: slots `n..` are not covered; ask again from `n`.
        next_slot: Option<Slot>,
        /// All slots up to this one are decided at the acceptor.
        decided_upto: Slot,
        /// The acceptor's log starts after this slot (it is covered by a snapshot), so it
        /// cannot report slots up to here.
        truncated_upto: Slot,
    },
    /// Phase 2a: the leader asks every acceptor to accept `value` in `slot`.
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
        /// The proposed value.
        value: Value,
        /// All slots up to this one are decided at the leader (lets followers see gaps).
        decided_upto: Slot,
    },
    /// Phase 2b: the acceptor accepted (and persisted) the leader's value for `slot`.
    Accepted {
        /// The ballot accepted in.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
    },
    /// `slot` is decided with the value its leader proposed in `ballot` (a quorum
    /// accepted it). The value does not travel again: an acceptor that accepted in that
    /// ballot holds it (a leader proposes one value per slot in its ballot), and one
    /// that did not fetches it ([`Message::Fetch`]).
    Decide {
        /// The slot.
        slot: Slot,
        /// The ballot the value was proposed (and chosen) in.
        ballot: Ballot,
    },
    /// The acceptor refused `ballot` because it promised the higher `promised`.
    Nack {
        /// The refused ballot.
        ballot: Ballot,
        /// The acceptor's promise; the sender's next round must beat it.
        promised: Ballot,
    },
    /// Periodic liveness beacon of every node; the Bully election runs on these.
    Heartbeat {
        /// The sender's ballot when it leads, else the ballot it promised.
        ballot: Ballot,
        /// Who the sender follows (itself when it leads), if anyone.
        leader: Option<Rank>,
        /// All slots up to this one are decided at the sender.
        decided_upto: Slot,
        /// The sender's log starts after this slot.
        truncated_upto: Slot,
    },
    /// Client commands a follower hands to the leader.
    Forward {
        /// The commands, in arrival order.
        commands: Vec<Command>,
    },
    /// Ask for decided slots `from_slot..=to_slot`.
    Fetch {
        /// First slot wanted.
        from_slot: Slot,
        /// Last slot wanted.
        to_slot: Slot,
    },
    /// Decided slots, the answer to a [`Message::Fetch`].
    Decided {
        /// The entries, in slot order.
        entries: Vec<DecidedEntry>,
    },
    /// Ask for the piece of the sender's snapshot at `slot` that starts at `offset`.
    FetchSnapshot {
        /// The snapshot being assembled.
        slot: Slot,
        /// Bytes already received.
        offset: u64,
    },
    /// A piece of a snapshot of the applied state at `slot`, the answer to a `Fetch` of
    /// truncated slots or to a [`Message::FetchSnapshot`].
    SnapshotChunk {
        /// The snapshot's applied slot.
        slot: Slot,
        /// Where `data` starts.
        offset: u64,
        /// The snapshot's whole length.
        total_len: u64,
        /// The bytes (MessagePack `bin`, not an array of integers).
        #[serde(with = "bin")]
        data: Vec<u8>,
    },
    /// A follower asks the leader where the linearizable reads that arrived at it may be
    /// served (ReadIndex): the leader makes sure a quorum promised nothing above its
    /// ballot after the reads arrived, then answers with [`Message::ReadIndexed`].
    ReadIndex {
        /// The follower's batch of reads: the reads that arrived before its first ask.
        batch: u64,
        /// The highest ballot the follower had promised when it asked. Not above the
        /// leader's, the ask is itself one of those confirmations. Absent (a peer of an
        /// earlier version): the ask confirms nothing and waits for a round.
        #[serde(default)]
        promised: Option<Ballot>,
        /// The leader's confirmation round that reached the follower (riding with a
        /// [`Message::ReadIndexed`]) before this ask left: with `promised` not above
        /// that round's ballot, the ask answers it as a [`Message::Confirmed`] would.
        #[serde(default)]
        confirms: Option<ConfirmRound>,
    },
    /// The leader's answer to a [`Message::ReadIndex`]: every write acknowledged before
    /// the batch's reads arrived is at or below `slot` (not necessarily every write
    /// acknowledged before this answer left: a batch never takes reads after its first
    /// ask). The batch's reads may be served once `slot` is applied.
    ReadIndexed {
        /// The batch asked for.
        batch: u64,
        /// Serve the reads once this slot is applied.
        slot: Slot,
        /// A [`Message::Confirm`] riding with the answer: the follower confirms it with
        /// its next ask, or with a `Confirmed` when it has nothing to ask. Absent from a
        /// peer of an earlier version.
        #[serde(default)]
        confirm: Option<ConfirmRound>,
    },
    /// The leader asks every acceptor whether it still promised nothing above `ballot`;
    /// a quorum of [`Message::Confirmed`] confirms every read ask that arrived before
    /// `round` was sent.
    Confirm {
        /// The leader's ballot.
        ballot: Ballot,
        /// The confirmation round (1, 2, 3… per leadership).
        round: u64,
    },
    /// The acceptor promised nothing above `ballot` when `round` arrived.
    Confirmed {
        /// The leader's ballot.
        ballot: Ballot,
        /// The round confirmed.
        round: u64,
    },
}

/// A leader's confirmation round, named by its ballot (rounds count from 1 again in
/// every leadership).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConfirmRound {
    /// The leader's ballot.
    pub ballot: Ballot,
    /// The round.
    pub round: u64,
}

impl Message {
    /// A short stable name for logs and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Prepare { .. } => "prepare",
            Message::Promise { .. } => "promise",
            Message::Accept { .. } => "accept",
            Message::Accepted { .. } => "accepted",
            Message::Decide { .. } => "decide",
            Message::Nack { .. } => "nack",
            Message::Heartbeat { .. } => "heartbeat",
            Message::Forward { .. } => "forward",
            Message::Fetch { .. } => "fetch",
            Message::Decided { .. } => "decided",
            Message::FetchSnapshot { .. } => "fetch_snapshot",
            Message::SnapshotChunk { .. } => "snapshot_chunk",
            Message::ReadIndex { .. } => "read_index",
            Message::ReadIndexed { .. } => "read_indexed",
            Message::Confirm { .. } => "confirm",
            Message::Confirmed { .. } => "confirmed",
        }
    }

    /// Checks every list and value against the limits.
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            Message::Promise { entries, .. } => {
                check_count("entries", entries.len(), MAX_PROMISE_ENTRIES)?;
                check_entries_bytes(entries.iter().map(|e| e.value.size_bytes()))?;
                entries.iter().try_for_each(|e| e.value.validate())
            }
            Message::Accept { value, .. } => value.validate(),
            Message::Forward { commands } => {
                check_count("commands", commands.len(), MAX_BATCH_COMMANDS)?;
                let bytes = commands.iter().map(command_size_bytes).sum();
                check_bytes("commands", bytes, MAX_BATCH_BYTES)?;
                commands.iter().try_for_each(|c| c.validate())
            }
            Message::Decided { entries } => {
                check_count("entries", entries.len(), MAX_DECIDED_ENTRIES)?;
                check_entries_bytes(entries.iter().map(|e| e.value.size_bytes()))?;
                entries.iter().try_for_each(|e| e.value.validate())
            }
            Message::SnapshotChunk {
                offset,
                total_len,
                data,
                ..
            } => {
                check_bytes("data", data.len(), MAX_SNAPSHOT_CHUNK_BYTES)?;
                if *total_len > MAX_SNAPSHOT_BYTES
                    || offset.saturating_add(data.len() as u64) > *total_len
                {
                    return Err(LimitError::TooLong {
                        field: "snapshot",
                        len: usize::try_from(*total_len).unwrap_or(usize::MAX),
                        max: usize::try_from(MAX_SNAPSHOT_BYTES).unwrap_or(usize::MAX),
                    });
                }
                Ok(())
            }
            Message::Prepare { .. }
            | Message::Accepted { .. }
            | Message::Decide { .. }
            | Message::Nack { .. }
            | Message::Heartbeat { .. }
            | Message::Fetch { .. }
            | Message::FetchSnapshot { .. }
            | Message::ReadIndex { .. }
            | Message::ReadIndexed { .. }
            | Message::Confirm { .. }
            | Message::Confirmed { .. } => Ok(()),
        }
    }
}

/// One Paxos message on the wire: sender, addressee, Lamport clock, message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Sender's rank.
    pub from: Rank,
    /// Addressee's rank; `None` = every node (published on a broadcast topic).
    pub to: Option<Rank>,
    /// The sender's Lamport clock when it sent this.
    pub lamport: u64,
    /// The message.
    pub message: Message,
}

impl Wire for Envelope {
    fn validate(&self) -> Result<(), LimitError> {
        for rank in [Some(self.from), self.to].into_iter().flatten() {
            if rank as usize > MAX_RANK {
                return Err(LimitError::TooLong {
                    field: "rank",
                    len: rank as usize,
                    max: MAX_RANK,
                });
            }
        }
        self.message.validate()
    }
}

/// Largest rank accepted on the wire. The reference service hands out ranks from 1 and
/// gives a returning node its old rank, so ranks stay near [`MAX_MEMBERS`]; the margin
/// leaves room for the ranks of members that expired for good.
pub const MAX_RANK: usize = MAX_MEMBERS * 1024;

fn check_count(field: &'static str, len: usize, max: usize) -> Result<(), LimitError> {
    if len > max {
        return Err(LimitError::TooMany { field, len, max });
    }
    Ok(())
}

fn check_bytes(field: &'static str, len: usize, max: usize) -> Result<(), LimitError> {
    if len > max {
        return Err(LimitError::TooLong { field, len, max });
    }
    Ok(())
}

/// One entry may be as large as a batch; more than one must fit in [`MAX_ENTRIES_BYTES`].
fn check_entries_bytes(sizes: impl Iterator<Item = usize>) -> Result<(), LimitError> {
    let (count, total) = sizes.fold((0usize, 0usize), |(n, t), s| (n + 1, t + s));
    if count > 1 {
        check_bytes("entries", total, MAX_ENTRIES_BYTES)?;
    }
    Ok(())
}

/// Serialises a byte vector as a MessagePack `bin` (serde's default for `Vec<u8>` is an
/// array of integers, up to twice as large), and accepts either form when decoding.
mod bin {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub(super) fn serialize<S: Serializer>(data: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(data)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // The decoder already bounds the input by the frame size; cap the reservation
            // by the chunk limit as well.
            let hint = seq
                .size_hint()
                .unwrap_or(0)
                .min(super::MAX_SNAPSHOT_CHUNK_BYTES);
            let mut data = Vec::with_capacity(hint);
            while let Some(byte) = seq.next_element::<u8>()? {
                if data.len() >= super::MAX_SNAPSHOT_CHUNK_BYTES {
                    return Err(A::Error::custom("snapshot chunk over the limit"));
                }
                data.push(byte);
            }
            Ok(data)
        }
    }
}

#[cfg(test)]
mod tests;
