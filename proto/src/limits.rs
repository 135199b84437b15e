//! Named limits on everything that crosses a socket or lands in the log.
//!
//! Every decoder checks these before it trusts a length, so that no peer can make a
//! process allocate more than a frame's worth of memory.

/// Largest frame any socket accepts (`ZMQ_MAXMSGSIZE`) and the codec produces.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Largest key of the key-value store.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value of the key-value store.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Largest user or channel name.
pub const MAX_NAME_BYTES: usize = 64;
/// Largest chat message text.
pub const MAX_TEXT_BYTES: usize = 4 * 1024;
/// Most commands the leader puts into one Paxos slot.
pub const MAX_BATCH_COMMANDS: usize = 512;
/// Most encoded command bytes in one Paxos slot: a batch must fit in one frame with room
/// for the envelope around it.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Most routing frames (ROUTER identities) in front of a body frame.
pub const MAX_ROUTING_FRAMES: usize = 4;
/// Largest routing frame (a ZeroMQ identity is at most 255 bytes).
pub const MAX_ROUTING_FRAME_BYTES: usize = 255;
/// Most entries in one list reply (users, channels, history).
pub const MAX_LIST_ITEMS: usize = 1000;
/// Most members the reference service tracks.
pub const MAX_MEMBERS: usize = 64;
/// Longest chat password a client may send (`login`): hashing is deliberately slow and
/// memory-hard, so its input is bounded too.
pub const MAX_PASSWORD_BYTES: usize = 256;
/// Shortest session credential (the token a client draws for `login`): 32 bytes of hex
/// text or more, so that credentials cannot be guessed.
pub const MIN_CREDENTIAL_BYTES: usize = 32;
/// Longest session credential.
pub const MAX_CREDENTIAL_BYTES: usize = 128;
/// Longest stored password hash (a PHC string: `$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
pub const MAX_PASSWORD_HASH_BYTES: usize = 256;
/// Length of a session key: the hex SHA-256 of a credential, as the log keeps it.
pub const SESSION_KEY_BYTES: usize = 64;
