//! The store's configuration: the bounds that keep the replicated state finite.

use thiserror::Error;

/// Default for [`StoreConfig::history_per_channel`].
pub const DEFAULT_HISTORY_PER_CHANNEL: usize = 1000;
/// Default for [`StoreConfig::history_per_user`].
pub const DEFAULT_HISTORY_PER_USER: usize = 1000;
/// Default for [`StoreConfig::max_sessions`].
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
/// Default for [`StoreConfig::max_users`].
pub const DEFAULT_MAX_USERS: usize = 100_000;
/// Largest accepted [`StoreConfig::max_users`].
pub const MAX_USERS_LIMIT: usize = 10_000_000;
/// Default for [`StoreConfig::max_chat_sessions`].
pub const DEFAULT_MAX_CHAT_SESSIONS: usize = 10_000;
/// Open chat sessions of one user: a login beyond it closes that user's oldest session
/// (never another user's), so that nobody can evict everyone else by logging in again and
/// again.
pub const MAX_CHAT_SESSIONS_PER_USER: usize = 16;
/// Largest accepted [`StoreConfig::max_chat_sessions`].
pub const MAX_CHAT_SESSIONS_LIMIT: usize = 1_000_000;
/// Largest accepted value of the two history bounds: a sanity cap so that a typo in a
/// flag cannot make a channel's history grow without practical limit.
pub const MAX_HISTORY_LIMIT: usize = 1_000_000;
/// Largest accepted [`StoreConfig::max_sessions`], for the same reason.
pub const MAX_SESSIONS_LIMIT: usize = 10_000_000;

/// Bounds of the replicated state.
///
/// Every replica of a cluster must run with the same values: they decide which messages
/// and sessions are dropped, which is part of the deterministic apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Chat messages kept per channel; the oldest are dropped beyond it.
    pub history_per_channel: usize,
    /// Private messages kept per recipient; the oldest are dropped beyond it.
    pub history_per_user: usize,
    /// Client sessions kept for exactly-once replies; the least recently applied one is
    /// evicted beyond it.
    pub max_sessions: usize,
    /// Open chat sessions (logins); the one opened in the oldest slot is evicted beyond
    /// it, and its credential stops working.
    pub max_chat_sessions: usize,
    /// Registered users; a registration beyond it is refused (`too_large`). Users are
    /// never evicted: a name is an identity.
    pub max_users: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history_per_channel: DEFAULT_HISTORY_PER_CHANNEL,
            history_per_user: DEFAULT_HISTORY_PER_USER,
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_chat_sessions: DEFAULT_MAX_CHAT_SESSIONS,
            max_users: DEFAULT_MAX_USERS,
        }
    }
}

/// A [`StoreConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// A bound is zero: nothing could be kept.
    #[error("{field} must be at least 1")]
    Zero {
        /// The field.
        field: &'static str,
    },
    /// A bound is over its sanity cap.
    #[error("{field} is {value}, over the limit of {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// Its value.
        value: usize,
        /// The cap.
        max: usize,
    },
}

impl StoreConfig {
    /// Checks every bound: at least 1 and at most its sanity cap.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fields = [
            (
                "history_per_channel",
                self.history_per_channel,
                MAX_HISTORY_LIMIT,
            ),
            ("history_per_user", self.history_per_user, MAX_HISTORY_LIMIT),
            ("max_sessions", self.max_sessions, MAX_SESSIONS_LIMIT),
            (
                "max_chat_sessions",
                self.max_chat_sessions,
                MAX_CHAT_SESSIONS_LIMIT,
            ),
            ("max_users", self.max_users, MAX_USERS_LIMIT),
        ];
        for (field, value, max) in fields {
            if value == 0 {
                return Err(ConfigError::Zero { field });
            }
            if value > max {
                return Err(ConfigError::TooLarge { field, value, max });
            }
        }
        Ok(())
    }
}
