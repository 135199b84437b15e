//! # store — the replicated state machine of paxos-zmq
//!
//! Every replica applies the commands Multi-Paxos decided, slot after slot, to one
//! [`Store`]: a key-value map, users, chat channels with a bounded history, private
//! inboxes, and the **session table** that makes a retried request take effect once.
//!
//! ```text
//! decided slot ──► Store::apply(slot, lamport, commands) ──► Applied { replies, posted }
//!                        │
//!                        ├─ digest()            fingerprint of the replicated state
//!                        ├─ snapshot()/restore  compact MessagePack (catch-up, log truncation)
//!                        └─ to_json/from_json   data/<node>/store.json, for people and recovery
//! ```
//!
//! ## Invariants kept here
//! - **In-order, deterministic apply** (DESIGN.md invariant 5): [`Store::apply`] asserts
//!   that slots come strictly in order without gaps. Applying depends on nothing but the
//!   commands, the slot, its Lamport clock and the state: no clock, no randomness, no I/O,
//!   and only ordered containers, so replicas that applied the same slots hold equal
//!   states and equal [`Digest`]s (invariant 6).
//! - **Exactly once** (invariant 4): per client, the session table keeps the last request
//!   number and its result. A retry of that number gets the same result without effect;
//!   an older number gets [`ErrorCode::StaleRequest`].
//!   Commands of client 0 are internal and have no session. The table holds at most
//!   [`StoreConfig::max_sessions`] entries; beyond it the session applied in the oldest
//!   slot (ties: the smallest client id) is evicted, the same one on every replica.
//! - **Bounded** (invariant 7): a channel keeps [`StoreConfig::history_per_channel`]
//!   messages and an inbox [`StoreConfig::history_per_user`]; list and history replies hold
//!   at most [`proto::limits::MAX_LIST_ITEMS`] items and about [`MAX_REPLY_BYTES`] bytes,
//!   so that any reply fits in a frame. Session results of reads are not kept (see
//!   below), so the session table stays small.
//! - **No silent divergence** (invariant 6): a snapshot or `store.json` carries the digest
//!   of the state it holds; [`Store::restore`] and [`Store::from_json`] recompute it and
//!   refuse a mismatch, and they never panic on any input.
//!
//! ## Choices worth knowing
//! - A retried **read** is executed again at the slot of the retry instead of returning a
//!   cached reply: its reply may be up to half a frame, and caching it for every session
//!   would not be bounded memory. The retry is applied after the client's first call and
//!   before its final reply, so the answer is still linearizable. Retried writes get their
//!   cached reply.
//! - [`AppliedReply::duplicate`] is true whenever the session table answered a command
//!   *without effect*: a retry of the last request, and also a stale request (older than
//!   the last), so that a consumer can rely on "duplicate == false" meaning "applied here".
//! - [`Store::lamport`] is the largest Lamport clock of the applied slots (a clock never
//!   goes back); each chat message records the Lamport clock of its own slot.
//!
//! ## Chat users and their sessions
//! A user is registered with the Argon2id hash of a password (a PHC string, salt
//! included), hashed by the node that took the `login` before it proposed
//! [`Op::Register`]: applying stores the string and never hashes, so it stays
//! deterministic. A login opens a **chat session**, keyed by the SHA-256 of the random
//! credential the client drew ([`proto::client::session_key`]); `subscribe`, `publish`,
//! `dm` and `history @user` act only for the user of the command's session
//! ([`ErrorCode::Unauthenticated`] otherwise). At most
//! [`StoreConfig::max_chat_sessions`] sessions are open; beyond it the one opened in the
//! oldest slot is evicted, the same one on every replica; and at most
//! [`MAX_CHAT_SESSIONS_PER_USER`] per user (its own oldest goes first). A user from a state written
//! before passwords has none: the next `login` of that name sets it.

mod config;
mod digest;
mod read;
mod snapshot;
mod state;
#[cfg(test)]
mod tests;
mod users;

use std::collections::BTreeSet;
use std::fmt;

use proto::client::{ChatMessage, ClientId, Command, Op, Reply, Seq, Target};
use proto::{Error, ErrorCode, LimitError};

pub use config::{
    ConfigError, DEFAULT_HISTORY_PER_CHANNEL, DEFAULT_HISTORY_PER_USER, DEFAULT_MAX_CHAT_SESSIONS,
    DEFAULT_MAX_SESSIONS, DEFAULT_MAX_USERS, MAX_CHAT_SESSIONS_LIMIT, MAX_CHAT_SESSIONS_PER_USER,
    MAX_HISTORY_LIMIT, MAX_SESSIONS_LIMIT, MAX_USERS_LIMIT, StoreConfig,
};
pub use digest::{DIGEST_BYTES, Digest, DigestParseError};
pub use snapshot::{SNAPSHOT_FORMAT, SnapshotError};
pub use users::Password;
use users::authenticate;

use state::{Session, SessionResult, State};

/// A position in the Paxos log; slot 1 is the first decided one, 0 means "none".
pub type Slot = u64;

/// The client id of internal commands (no-ops filling holes, leadership probes): they
/// have no session.
pub const INTERNAL_CLIENT_ID: ClientId = 0;

/// Budget of a list or history reply, well under a frame
/// ([`proto::limits::MAX_FRAME_BYTES`]) so that the envelope around it always fits.
pub const MAX_REPLY_BYTES: usize = proto::limits::MAX_FRAME_BYTES / 2;

/// What one item of a list reply is assumed to cost in MessagePack besides its strings
/// (markers, lengths, integers); generous so that [`MAX_REPLY_BYTES`] is an upper bound.
const ITEM_OVERHEAD_BYTES: usize = 64;

/// At most this many bytes of a key or value are quoted in an error message, so that a
/// cached error stays small.
const QUOTE_MAX_BYTES: usize = 64;

/// The answer to one command of an applied slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedReply {
    /// The client the answer is for ([`INTERNAL_CLIENT_ID`] for internal commands).
    pub client_id: ClientId,
    /// The request number it answers.
    pub seq: Seq,
    /// The result.
    pub result: Result<Reply, Error>,
    /// True when the session table answered without any effect: a retry of the session's
    /// last request (its cached result, or a read executed again) or a stale request.
    pub duplicate: bool,
}

/// What applying one slot produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// One reply per command, in the order of the commands.
    pub replies: Vec<AppliedReply>,
    /// The chat messages this slot committed, in order, for live delivery.
    pub posted: Vec<ChatMessage>,
}

/// Sizes of the state, for metrics and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Keys in the key-value map.
    pub keys: usize,
    /// Logged-in users.
    pub users: usize,
    /// Channels.
    pub channels: usize,
    /// Client sessions.
    pub sessions: usize,
    /// Open chat sessions (logins).
    pub chat_sessions: usize,
}

/// The replicated state machine. See the crate documentation for its invariants.
#[derive(Clone)]
pub struct Store {
    config: StoreConfig,
    state: State,
    /// Eviction order of the sessions: `(slot, client_id)` of every session, derived from
    /// `state.sessions` (not replicated itself; rebuilt on restore).
    session_order: BTreeSet<(Slot, ClientId)>,
    /// Eviction order of the chat sessions, `(slot, key)`, derived like `session_order`.
    chat_session_order: BTreeSet<(Slot, String)>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("applied_slot", &self.state.applied_slot)
            .field("lamport", &self.state.lamport)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// An empty store (applied slot 0).
    ///
    /// # Panics
    /// If `config` is not valid; check it with [`StoreConfig::validate`] first, or use
    /// [`Store::try_new`].
    pub fn new(config: StoreConfig) -> Store {
        if let Err(error) = config.validate() {
            panic!("invalid store configuration: {error}");
        }
        Store::from_parts(config, State::default())
    }

    /// An empty store, or the reason `config` cannot be used.
    pub fn try_new(config: StoreConfig) -> Result<Store, ConfigError> {
        config.validate()?;
        Ok(Store::from_parts(config, State::default()))
    }

    fn from_parts(config: StoreConfig, state: State) -> Store {
        let session_order = state
            .sessions
            .iter()
            .map(|(client_id, session)| (session.slot, *client_id))
            .collect();
        let chat_session_order = state
            .chat_sessions
            .iter()
            .map(|(key, session)| (session.slot, key.clone()))
            .collect();
        Store {
            config,
            state,
            session_order,
            chat_session_order,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The last applied slot; 0 when nothing was applied.
    pub fn applied_slot(&self) -> Slot {
        self.state.applied_slot
    }

    /// The largest Lamport clock among the applied slots.
    pub fn lamport(&self) -> u64 {
        self.state.lamport
    }

    /// Sizes of the state.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.state.keys.len(),
            users: self.state.users.0.len(),
            channels: self.state.channels.len(),
            sessions: self.state.sessions.len(),
            chat_sessions: self.state.chat_sessions.len(),
        }
    }

    /// The `channels` channels with the latest messages, newest first, each with its
    /// subscriber count and its last `per_channel` messages (oldest first): what a web
    /// console shows. Channels are public (anyone may read their history); private
    /// messages are never part of it.
    pub fn recent_channels(
        &self,
        channels: usize,
        per_channel: usize,
    ) -> Vec<(String, usize, Vec<ChatMessage>)> {
        let newest_first = |(_, channel): &(&String, &state::Channel)| {
            std::cmp::Reverse(channel.messages.back().map_or(0, |m| m.slot))
        };
        let mut active: Vec<(&String, &state::Channel)> = self.state.channels.iter().collect();
        // Only the first `channels` are sorted: a status page must not sort them all.
        if channels < active.len() {
            active.select_nth_unstable_by_key(channels, newest_first);
            active.truncate(channels);
        }
        active.sort_by_key(newest_first);
        active
            .into_iter()
            .take(channels)
            .map(|(name, channel)| {
                let skip = channel.messages.len().saturating_sub(per_channel);
                let latest = channel.messages.iter().skip(skip).cloned().collect();
                (name.clone(), channel.subscribers.len(), latest)
            })
            .collect()
    }

    /// The value of `key` in the applied state.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.state.keys.get(key).map(String::as_str)
    }

    /// The last request number applied for `client_id`, if it has a session. A node can
    /// use it to answer an obviously stale request early; the decision that counts is the
    /// one taken at apply.
    pub fn last_seq(&self, client_id: ClientId) -> Option<Seq> {
        self.state.sessions.get(&client_id).map(|s| s.seq)
    }

    /// The digest of the replicated state (keys, users, channels, messages, sessions,
    /// applied slot, Lamport clock). Computed on demand: it hashes the whole state (a few
    /// milliseconds for ten thousand keys), so call it when a snapshot is taken or a status
    /// is asked, not on every apply.
    pub fn digest(&self) -> Digest {
        digest::digest_of(&self.state)
    }

    /// Applies every command decided in `slot`, in order.
    ///
    /// `lamport` is the Lamport clock recorded in the slot's value; chat messages of the
    /// slot carry it.
    ///
    /// # Panics
    /// Unless `slot == self.applied_slot() + 1`: applying out of order or with a gap would
    /// let this replica diverge, so it stops instead (DESIGN.md invariant 5).
    pub fn apply(&mut self, slot: Slot, lamport: u64, commands: &[Command]) -> Applied {
        assert!(
            self.state.applied_slot.checked_add(1) == Some(slot),
            "store applies slots in order without gaps: applied {} then got {slot}",
            self.state.applied_slot,
        );
        let mut applied = Applied {
            replies: Vec::with_capacity(commands.len()),
            posted: Vec::new(),
        };
        for command in commands {
            let reply = self.apply_command(slot, lamport, command, &mut applied.posted);
            applied.replies.push(reply);
        }
        self.state.applied_slot = slot;
        self.state.lamport = self.state.lamport.max(lamport);
        applied
    }

    fn apply_command(
        &mut self,
        slot: Slot,
        lamport: u64,
        command: &Command,
        posted: &mut Vec<ChatMessage>,
    ) -> AppliedReply {
        let Command {
            client_id,
            seq,
            op,
            session: chat_key,
        } = command;
        let chat_key = chat_key.as_deref();
        let answer = |result, duplicate| AppliedReply {
            client_id: *client_id,
            seq: *seq,
            result,
            duplicate,
        };
        if *client_id == INTERNAL_CLIENT_ID {
            return answer(self.execute(slot, lamport, op, chat_key, posted), false);
        }
        if let Some(session) = self.state.sessions.get(client_id) {
            if *seq == session.seq {
                let result = match &session.result {
                    SessionResult::Ok(reply) => Ok(reply.clone()),
                    SessionResult::Err(error) => Err(error.clone()),
                    SessionResult::Read => self.read_checked(op, chat_key),
                };
                return answer(result, true);
            }
            if *seq < session.seq {
                let error = Error::new(
                    ErrorCode::StaleRequest,
                    format!(
                        "request {seq} of client {client_id} is older than its last request {}",
                        session.seq
                    ),
                );
                return answer(Err(error), true);
            }
        }
        let result = self.execute(slot, lamport, op, chat_key, posted);
        let cached = match &result {
            // Executing a read again is deterministic, invalid reads included.
            _ if op.is_read_only() => SessionResult::Read,
            Ok(reply) => SessionResult::Ok(reply.clone()),
            Err(error) => SessionResult::Err(error.clone()),
        };
        self.record_session(*client_id, *seq, slot, cached);
        answer(result, false)
    }

    /// Remembers `seq` as the last request of `client_id`, evicting the least recently
    /// applied session when the table is full.
    fn record_session(&mut self, client_id: ClientId, seq: Seq, slot: Slot, result: SessionResult) {
        let session = Session { seq, slot, result };
        match self.state.sessions.insert(client_id, session) {
            Some(old) => {
                self.session_order.remove(&(old.slot, client_id));
            }
            None => {
                // One new entry: evict at most one to stay within the bound.
                if self.state.sessions.len() > self.config.max_sessions
                    && let Some((_, victim)) = self.session_order.pop_first()
                {
                    self.state.sessions.remove(&victim);
                }
            }
        }
        self.session_order.insert((slot, client_id));
        assert!(
            self.state.sessions.len() == self.session_order.len()
                && self.state.sessions.len() <= self.config.max_sessions,
            "session table and its eviction order disagree",
        );
    }

    /// Executes one command against the state.
    fn execute(
        &mut self,
        slot: Slot,
        lamport: u64,
        op: &Op,
        session: Option<&str>,
        posted: &mut Vec<ChatMessage>,
    ) -> Result<Reply, Error> {
        op.validate().map_err(limit_error)?;
        match op {
            Op::Register {
                user,
                password_hash,
            } => return self.register(slot, user, password_hash, session, op),
            Op::OpenSession { user } => return self.open_session(slot, user, session, op),
            Op::Subscribe { user, .. }
            | Op::Publish { user, .. }
            | Op::PrivateMessage { from: user, .. } => {
                authenticate(&self.state.chat_sessions, session, user, op)?;
            }
            _ => {}
        }
        let state = &mut self.state;
        match op {
            Op::Put { key, value } => {
                state.keys.insert(key.clone(), value.clone());
                Ok(Reply::Done)
            }
            Op::Delete { key } => {
                state.keys.remove(key);
                Ok(Reply::Done)
            }
            Op::Cas { key, expected, new } => {
                let current = state.keys.get(key);
                if current.map(String::as_str) != expected.as_deref() {
                    return Err(cas_mismatch(
                        key,
                        expected.as_deref(),
                        current.map(String::as_str),
                    ));
                }
                state.keys.insert(key.clone(), new.clone());
                Ok(Reply::Done)
            }
            // A login from a log written before passwords: the name, without one. A node
            // never proposes a login with a password (it proposes Register/OpenSession).
            Op::Login { user, password } if password.is_empty() => {
                if !state.users.contains(user) {
                    self.room_for_a_user()?;
                }
                self.state.users.0.entry(user.clone()).or_default();
                Ok(Reply::Done)
            }
            Op::Login { .. } => Err(Error::new(
                ErrorCode::BadRequest,
                "a password never goes into the log: log in through a node",
            )),
            Op::Register { .. } | Op::OpenSession { .. } => {
                unreachable!("handled above")
            }
            Op::CreateChannel { channel } => {
                state.channels.entry(channel.clone()).or_default();
                Ok(Reply::Done)
            }
            Op::Subscribe { user, channel } => {
                require_user(&state.users, user)?;
                let channel = state
                    .channels
                    .get_mut(channel)
                    .ok_or_else(|| no_channel(channel))?;
                channel.subscribers.insert(user.clone());
                Ok(Reply::Done)
            }
            Op::Publish {
                user,
                channel: name,
                text,
            } => {
                require_user(&state.users, user)?;
                let channel = state
                    .channels
                    .get_mut(name)
                    .ok_or_else(|| no_channel(name))?;
                let message = ChatMessage {
                    id: channel.next_id,
                    from: user.clone(),
                    to: Target::Channel(name.clone()),
                    text: text.clone(),
                    slot,
                    lamport,
                };
                let id = append(
                    &mut channel.next_id,
                    &mut channel.messages,
                    message,
                    self.config.history_per_channel,
                    posted,
                );
                Ok(Reply::Posted { id })
            }
            Op::PrivateMessage { from, to, text } => {
                require_user(&state.users, from)?;
                require_user(&state.users, to)?;
                let inbox = state.inboxes.entry(to.clone()).or_default();
                let message = ChatMessage {
                    id: inbox.next_id,
                    from: from.clone(),
                    to: Target::User(to.clone()),
                    text: text.clone(),
                    slot,
                    lamport,
                };
                let id = append(
                    &mut inbox.next_id,
                    &mut inbox.messages,
                    message,
                    self.config.history_per_user,
                    posted,
                );
                Ok(Reply::Posted { id })
            }
            Op::Get { .. } | Op::ListUsers | Op::ListChannels | Op::History { .. } | Op::Noop => {
                self.read(op, session)
            }
        }
    }
}

/// Appends `message` (whose id is `*next_id`) to a bounded history, dropping the oldest
/// beyond `bound`; returns its id.
fn append(
    next_id: &mut u64,
    messages: &mut std::collections::VecDeque<ChatMessage>,
    message: ChatMessage,
    bound: usize,
    posted: &mut Vec<ChatMessage>,
) -> u64 {
    let id = message.id;
    assert!(id == *next_id, "a message takes the next id of its history");
    *next_id += 1;
    posted.push(message.clone());
    messages.push_back(message);
    while messages.len() > bound {
        messages.pop_front();
    }
    id
}

fn require_user(users: &state::Users, user: &str) -> Result<(), Error> {
    if users.contains(user) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::NotFound,
            format!("no user {}", quote(user)),
        ))
    }
}

fn no_channel(channel: &str) -> Error {
    Error::new(
        ErrorCode::NotFound,
        format!("no channel {}", quote(channel)),
    )
}

fn cas_mismatch(key: &str, expected: Option<&str>, current: Option<&str>) -> Error {
    let expected = match expected {
        Some(value) => quote(value),
        None => "absence".to_owned(),
    };
    let current = match current {
        Some(value) => format!("the current value is {}", quote(value)),
        None => "the key is absent".to_owned(),
    };
    Error::new(
        ErrorCode::CasMismatch,
        format!(
            "cas on key {} expected {expected} but {current}",
            quote(key)
        ),
    )
}

/// A string in quotes for an error message, cut to [`QUOTE_MAX_BYTES`] (on a character
/// boundary) so that cached errors stay small.
fn quote(text: &str) -> String {
    if text.len() <= QUOTE_MAX_BYTES {
        return format!("{text:?}");
    }
    let mut end = QUOTE_MAX_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &text[..end], text.len())
}

/// Maps a limit violation of a command to the client-visible error.
fn limit_error(error: LimitError) -> Error {
    let code = match error {
        LimitError::TooLong { .. } | LimitError::TooMany { .. } => ErrorCode::TooLarge,
        LimitError::Empty { .. } | LimitError::BadName { .. } | LimitError::TooShort { .. } => {
            ErrorCode::BadRequest
        }
    };
    Error::new(code, error.to_string())
}
