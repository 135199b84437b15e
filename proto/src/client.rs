//! What clients (the `client` CLI, the bots) and nodes say to each other through the
//! broker: a [`Request`] carrying one [`Op`], and a [`Response`] carrying its result.
//!
//! ## Who a chat request speaks for
//! Key-value operations are open to any client. Chat operations that act as a user
//! (`subscribe`, `publish`, `dm`, `history @user`) act only for the user whose session
//! the request's [`Request::credential`] opens: the client draws a random credential,
//! proves its password once with [`Op::Login`], and sends the credential with every
//! later request. The receiving node turns the credential into its [`session_key`]
//! (SHA-256) before proposing, so the log, the WAL and `store.json` never hold a
//! credential or a password ([`Op::Register`] and [`Op::OpenSession`] carry a salted
//! hash and nothing else).

use serde::{Deserialize, Serialize};

use crate::LimitError;
use crate::limits::{
    MAX_CREDENTIAL_BYTES, MAX_KEY_BYTES, MAX_LIST_ITEMS, MAX_NAME_BYTES, MAX_PASSWORD_BYTES,
    MAX_PASSWORD_HASH_BYTES, MAX_TEXT_BYTES, MAX_VALUE_BYTES, MIN_CREDENTIAL_BYTES,
    SESSION_KEY_BYTES,
};

/// Identifies one client session; chosen at random by the client, unique per process run.
pub type ClientId = u64;
/// A client's request number, strictly increasing within one [`ClientId`]. A retry reuses
/// the same number, which is what makes it take effect once.
pub type Seq = u64;

/// One client request, sent as the body frame to the broker frontend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Session of the sender.
    pub client_id: ClientId,
    /// Request number within the session (retries keep it).
    pub seq: Seq,
    /// What to do.
    pub op: Op,
    /// How fresh a read must be; ignored by writes.
    #[serde(default)]
    pub consistency: Consistency,
    /// The chat session this request speaks for: the random token the client drew for
    /// its `login` ([`MIN_CREDENTIAL_BYTES`]..=[`MAX_CREDENTIAL_BYTES`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// How a read is served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// The read takes effect at one instant between call and reply (through consensus).
    #[default]
    Linearizable,
    /// Answered at once from the receiving replica's applied state (Read-One of ROWA);
    /// may be stale, and the reply says which replica and slot it came from.
    Local,
}

/// Where a chat history query looks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A public channel.
    Channel(String),
    /// The private messages sent to or by a user.
    User(String),
}

/// Every command of the replicated store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Read a key.
    Get {
        /// The key.
        key: String,
    },
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Remove a key (a no-op when it is absent).
    Delete {
        /// The key.
        key: String,
    },
    /// Compare-and-set: write `new` only if the key currently holds `expected`
    /// (`None`: only if the key is absent).
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold now.
        expected: Option<String>,
        /// The value to write.
        new: String,
    },
    /// Open a chat session for `user`, whose password is `password`: the first login
    /// of a name registers it with that password. The request's credential becomes the
    /// session's. A node never proposes this op with a password in it: it checks or
    /// hashes the password first and proposes [`Op::OpenSession`] or [`Op::Register`]
    /// (a `Login` in the log is one from before passwords: it registers the name
    /// without one).
    Login {
        /// User name.
        user: String,
        /// The password (empty only in logs written before passwords).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        password: String,
    },
    /// Internal (proposed by a node, refused from clients): register `user` with this
    /// salted password hash, or give a user from before passwords this one, and open
    /// the command's session for them.
    Register {
        /// User name.
        user: String,
        /// The PHC string of the password's Argon2id hash (salt included).
        password_hash: String,
    },
    /// Internal (proposed by a node, refused from clients): the node checked `user`'s
    /// password against the stored hash; open the command's session for them.
    OpenSession {
        /// User name.
        user: String,
    },
    /// Create a channel (idempotent).
    CreateChannel {
        /// Channel name.
        channel: String,
    },
    /// Make `user` a subscriber of `channel`.
    Subscribe {
        /// A logged-in user.
        user: String,
        /// An existing channel.
        channel: String,
    },
    /// Post `text` on `channel` as `user`.
    Publish {
        /// A logged-in user.
        user: String,
        /// An existing channel.
        channel: String,
        /// The message.
        text: String,
    },
    /// Send `text` from `from` to `to`.
    PrivateMessage {
        /// A logged-in sender.
        from: String,
        /// A logged-in recipient.
        to: String,
        /// The message.
        text: String,
    },
    /// List the users.
    ListUsers,
    /// List the channels.
    ListChannels,
    /// Messages of a channel or a user with an id greater than `since`.
    History {
        /// Channel or user.
        target: Target,
        /// Only messages with a larger id.
        since: u64,
    },
    /// Does nothing; fills holes in the log and confirms leadership.
    Noop,
}

impl Op {
    /// Whether only a node may propose this op ([`Op::Register`], [`Op::OpenSession`]):
    /// a client request carrying one is refused.
    pub fn is_internal(&self) -> bool {
        matches!(self, Op::Register { .. } | Op::OpenSession { .. })
    }

    /// Whether the command leaves the replicated state as it was. Read-only commands may
    /// be served with `consistency = local` from a replica's applied state.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Op::Get { .. } | Op::ListUsers | Op::ListChannels | Op::History { .. } | Op::Noop
        )
    }

    /// A short stable name for logs and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Get { .. } => "get",
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
            Op::Cas { .. } => "cas",
            Op::Login { .. } => "login",
            Op::Register { .. } => "register",
            Op::OpenSession { .. } => "open_session",
            Op::CreateChannel { .. } => "create_channel",
            Op::Subscribe { .. } => "subscribe",
            Op::Publish { .. } => "publish",
            Op::PrivateMessage { .. } => "private_message",
            Op::ListUsers => "list_users",
            Op::ListChannels => "list_channels",
            Op::History { .. } => "history",
            Op::Noop => "noop",
        }
    }

    /// Checks every field against the named limits.
    pub fn validate(&self) -> Result<(), LimitError> {
        match self {
            Op::Get { key } | Op::Delete { key } => check_key(key),
            Op::Put { key, value } => {
                check_key(key)?;
                check_len("value", value, MAX_VALUE_BYTES)
            }
            Op::Cas { key, expected, new } => {
                check_key(key)?;
                if let Some(expected) = expected {
                    check_len("expected", expected, MAX_VALUE_BYTES)?;
                }
                check_len("new", new, MAX_VALUE_BYTES)
            }
            Op::Login { user, password } => {
                check_name("user", user)?;
                check_len("password", password, MAX_PASSWORD_BYTES)
            }
            Op::Register {
                user,
                password_hash,
            } => {
                check_name("user", user)?;
                if password_hash.is_empty() {
                    return Err(LimitError::Empty {
                        field: "password_hash",
                    });
                }
                check_len("password_hash", password_hash, MAX_PASSWORD_HASH_BYTES)
            }
            Op::OpenSession { user } => check_name("user", user),
            Op::CreateChannel { channel } => check_name("channel", channel),
            Op::Subscribe { user, channel } => {
                check_name("user", user)?;
                check_name("channel", channel)
            }
            Op::Publish {
                user,
                channel,
                text,
            } => {
                check_name("user", user)?;
                check_name("channel", channel)?;
                check_len("text", text, MAX_TEXT_BYTES)
            }
            Op::PrivateMessage { from, to, text } => {
                check_name("from", from)?;
                check_name("to", to)?;
                check_len("text", text, MAX_TEXT_BYTES)
            }
            Op::History { target, .. } => match target {
                Target::Channel(name) => check_name("channel", name),
                Target::User(name) => check_name("user", name),
            },
            Op::ListUsers | Op::ListChannels | Op::Noop => Ok(()),
        }
    }
}

fn check_key(key: &str) -> Result<(), LimitError> {
    if key.is_empty() {
        return Err(LimitError::Empty { field: "key" });
    }
    check_len("key", key, MAX_KEY_BYTES)
}

fn check_name(field: &'static str, name: &str) -> Result<(), LimitError> {
    if name.is_empty() {
        return Err(LimitError::Empty { field });
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(LimitError::BadName { field });
    }
    check_len(field, name, MAX_NAME_BYTES)
}

/// Checks a session credential against [`MIN_CREDENTIAL_BYTES`] and
/// [`MAX_CREDENTIAL_BYTES`]; it must be printable ASCII without spaces.
pub fn check_credential(credential: &str) -> Result<(), LimitError> {
    let field = "credential";
    if credential.len() < MIN_CREDENTIAL_BYTES {
        return Err(LimitError::TooShort {
            field,
            len: credential.len(),
            min: MIN_CREDENTIAL_BYTES,
        });
    }
    check_len(field, credential, MAX_CREDENTIAL_BYTES)?;
    if !credential.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(LimitError::BadName { field });
    }
    Ok(())
}

/// The session key of a credential: its SHA-256 in lowercase hex
/// ([`SESSION_KEY_BYTES`] characters). The log and the replicated state hold this, never
/// the credential: reading them does not let anyone speak for a user.
pub fn session_key(credential: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(credential.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random credential: 32 bytes from the operating system's generator, in hex.
pub fn new_credential() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn check_len(field: &'static str, text: &str, max: usize) -> Result<(), LimitError> {
    if text.len() > max {
        return Err(LimitError::TooLong {
            field,
            len: text.len(),
            max,
        });
    }
    Ok(())
}

/// The answer to one [`Request`], sent back through the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The request number this answers.
    pub seq: Seq,
    /// What happened.
    pub result: Result<Reply, Error>,
    /// Which replica answered (for `local` reads and diagnostics).
    #[serde(default)]
    pub node: String,
    /// The applied slot of that replica when it answered.
    #[serde(default)]
    pub applied_slot: u64,
}

/// A successful result.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The command took effect (put, delete, successful cas, login, create, subscribe, noop).
    Done,
    /// The value of a key (get).
    Value(String),
    /// A message was stored; its id in the history of its channel or recipient.
    Posted {
        /// Message id.
        id: u64,
    },
    /// User names (list users).
    Users(Vec<String>),
    /// Channels with their subscribers (list channels).
    Channels(Vec<ChannelInfo>),
    /// Chat messages (history).
    Messages(Vec<ChatMessage>),
}

/// One channel as listed by [`Op::ListChannels`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// Channel name.
    pub name: String,
    /// Subscribed users.
    pub subscribers: Vec<String>,
}

/// One chat message as stored in the replicated state and delivered live on the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Id, increasing within its channel or recipient.
    pub id: u64,
    /// Author.
    pub from: String,
    /// Channel or recipient.
    pub to: Target,
    /// The text.
    pub text: String,
    /// Slot that committed it.
    pub slot: u64,
    /// Lamport clock of the slot that committed it.
    pub lamport: u64,
}

/// A failed request: a typed code for programs and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    /// What kind of failure.
    pub code: ErrorCode,
    /// Details for a person.
    pub message: String,
}

impl Error {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
        }
    }
}

/// The kinds of failure a client can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No replica can serve now (no live node, no leader, no quorum); retry later.
    /// The command certainly did not take effect.
    Unavailable,
    /// This replica is not the leader and cannot forward; retry.
    NotLeader,
    /// The request could not be decoded or is not valid.
    BadRequest,
    /// A frame, key, value or name is over its limit.
    TooLarge,
    /// No answer in time; the command may or may not have taken effect.
    Timeout,
    /// The key, user or channel does not exist.
    NotFound,
    /// A compare-and-set found another value.
    CasMismatch,
    /// The request number is older than the session's last one: a stale retry.
    StaleRequest,
    /// A queue is full; retry later. The command did not take effect.
    Overloaded,
    /// A chat request without a valid session for the user it acts as (no credential,
    /// an unknown or evicted one, another user's), or a login with a wrong password.
    /// The command did not take effect.
    Unauthenticated,
    /// A bug or an I/O error on the replica.
    Internal,
}

impl ErrorCode {
    /// The snake_case name used on the wire and in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotLeader => "not_leader",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Timeout => "timeout",
            ErrorCode::NotFound => "not_found",
            ErrorCode::CasMismatch => "cas_mismatch",
            ErrorCode::StaleRequest => "stale_request",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether a request that failed with this code certainly took no effect, so that a
    /// history may record it as `fail` rather than `unknown`.
    pub fn certainly_not_applied(self) -> bool {
        matches!(
            self,
            ErrorCode::Unavailable
                | ErrorCode::NotLeader
                | ErrorCode::BadRequest
                | ErrorCode::TooLarge
                | ErrorCode::Overloaded
                | ErrorCode::Unauthenticated
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Reply {
    /// Checks list lengths against [`MAX_LIST_ITEMS`].
    pub fn validate(&self) -> Result<(), LimitError> {
        let len = match self {
            Reply::Users(v) => v.len(),
            Reply::Channels(v) => v.len(),
            Reply::Messages(v) => v.len(),
            Reply::Done | Reply::Value(_) | Reply::Posted { .. } => 0,
        };
        if len > MAX_LIST_ITEMS {
            return Err(LimitError::TooMany {
                field: "items",
                len,
                max: MAX_LIST_ITEMS,
            });
        }
        Ok(())
    }
}

/// A client's command as it travels through the Paxos log: the op plus the session
/// coordinates that make a retry take effect once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Command {
    /// Session of the client.
    pub client_id: ClientId,
    /// Request number within the session.
    pub seq: Seq,
    /// What to do.
    pub op: Op,
    /// The [`session_key`] of the request's credential, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl Command {
    /// Checks the op and the session key against the named limits.
    pub fn validate(&self) -> Result<(), LimitError> {
        if let Some(session) = &self.session {
            check_len("session", session, SESSION_KEY_BYTES)?;
        }
        self.op.validate()
    }
}

impl From<&Request> for Command {
    /// The command a request proposes: its credential becomes a session key here, so
    /// that no credential ever reaches the log.
    fn from(request: &Request) -> Self {
        Command {
            client_id: request.client_id,
            seq: request.seq,
            op: request.op.clone(),
            session: request.credential.as_deref().map(session_key),
        }
    }
}
