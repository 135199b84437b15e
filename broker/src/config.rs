//! The broker's settings ([`Config`]) and what makes them unworkable ([`ConfigError`]).

use std::time::Duration;

use crate::DEFAULT_NAME;
#[cfg(doc)]
use crate::{ring::Ring, run};

/// Settings of [`run`]. The sockets are passed in already bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Which broker this is (`broker-1`), in `/status` and the logs.
    pub name: String,
    /// A node silent for longer than this leaves the ring.
    pub liveness_timeout: Duration,
    /// How often the counters are logged (at info).
    pub stats_interval: Duration,
    /// At most one malformed-message warning per this interval.
    pub malformed_log_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: DEFAULT_NAME.to_owned(),
            liveness_timeout: Duration::from_secs(1),
            stats_interval: Duration::from_secs(10),
            malformed_log_interval: Duration::from_secs(5),
        }
    }
}

/// A [`Config`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A duration is zero.
    #[error("{0} must be more than zero")]
    Zero(&'static str),
    /// The name is empty, too long or has characters that are not allowed.
    #[error("invalid name {name:?}: {reason}")]
    Name {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: proto::LimitError,
    },
}

impl Config {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("liveness timeout", self.liveness_timeout),
            ("stats interval", self.stats_interval),
            ("malformed log interval", self.malformed_log_interval),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        // The same rules as a node's name: short, printable, no spaces.
        proto::fabric::check_node_name(&self.name).map_err(|reason| ConfigError::Name {
            name: self.name.clone(),
            reason,
        })
    }

    /// How often stale nodes are removed from the ring (and logged as gone). Requests
    /// never wait for it: [`Ring::next`] skips stale nodes by itself.
    pub(crate) fn expire_interval(&self) -> Duration {
        (self.liveness_timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
    }
}
