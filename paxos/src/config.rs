//! The replica's configuration and its validation.

use proto::limits::{MAX_BATCH_BYTES, MAX_BATCH_COMMANDS, MAX_MEMBERS};

use crate::{Rank, Ticks};

/// Most slots a leader may keep in flight (proposed, not yet decided), whatever the
/// configuration says: bounds the leader's proposal table and its retransmissions.
pub const MAX_WINDOW_SLOTS: usize = 1024;
/// Most client commands a replica buffers (before they are proposed or forwarded),
/// whatever the configuration says.
pub const MAX_PENDING_COMMANDS: usize = 65_536;

/// How one replica behaves. Time is counted in ticks; the driver decides how long a tick
/// is (the node uses [`Config::default`]'s values with a 10 ms tick).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This node's rank (its id in the core). The live node with the highest rank leads.
    pub rank: Rank,
    /// Every member of the cluster, this node included. A quorum is a strict majority.
    pub members: Vec<Rank>,
    /// Every node broadcasts a heartbeat this often.
    pub heartbeat_interval_ticks: Ticks,
    /// A leader not heard from for this long is presumed dead; a peer not heard from for
    /// this long is not live. Must be well above the heartbeat interval.
    pub election_timeout_ticks: Ticks,
    /// Unanswered `Prepare`, `Accept`, `Fetch` and snapshot requests are sent again this
    /// often (pub/sub drops messages).
    pub retransmit_ticks: Ticks,
    /// Most commands the leader puts into one slot (at most
    /// [`proto::limits::MAX_BATCH_COMMANDS`]).
    pub max_batch_commands: usize,
    /// Most estimated command bytes in one slot (at most
    /// [`proto::limits::MAX_BATCH_BYTES`]).
    pub max_batch_bytes: usize,
    /// Most slots the leader keeps in flight at once (at most [`MAX_WINDOW_SLOTS`]).
    pub window_slots: usize,
    /// Most client commands buffered at this replica (at most [`MAX_PENDING_COMMANDS`]);
    /// `propose` answers `overloaded` beyond it.
    pub max_pending_commands: usize,
    /// A command buffered this long without a leader to take it is rejected
    /// (`unavailable`: it certainly took no effect), so clients learn early.
    pub pending_timeout_ticks: Ticks,
    /// When the driver reports a snapshot at slot `s`, the log is truncated up to
    /// `s - log_retain_slots`, so that a peer lagging a little catches up from the log
    /// instead of by a snapshot transfer.
    pub log_retain_slots: u64,
    /// Seed of the replica's random generator (election back-off). Give each node and
    /// each run its own.
    pub seed: u64,
    /// Different at every start of this node, even with the same `seed` (the node uses
    /// its start time in µs): read batch ids start from it, so that an answer to an ask
    /// of an earlier run finds no batch of this one ([`crate::reads`]).
    pub incarnation: u64,
}

impl Default for Config {
    /// A three-node cluster seen by node 1, with timings for a 10 ms tick.
    fn default() -> Self {
        Config {
            rank: 1,
            members: vec![1, 2, 3],
            heartbeat_interval_ticks: 5,
            election_timeout_ticks: 50,
            retransmit_ticks: 10,
            max_batch_commands: MAX_BATCH_COMMANDS,
            max_batch_bytes: MAX_BATCH_BYTES,
            window_slots: 32,
            max_pending_commands: 8192,
            pending_timeout_ticks: 300,
            log_retain_slots: 1000,
            seed: 0,
            incarnation: 0,
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `members` is empty, too long, or repeats a rank.
    #[error("members must be 1..={max} distinct ranks, got {members:?}")]
    Members {
        /// The configured members.
        members: Vec<Rank>,
        /// The limit.
        max: usize,
    },
    /// `rank` is not one of `members`.
    #[error("rank {rank} is not a member of {members:?}")]
    NotAMember {
        /// This node's rank.
        rank: Rank,
        /// The configured members.
        members: Vec<Rank>,
    },
    /// A timing is zero, or the election timeout is not above twice the heartbeat
    /// interval (a single lost heartbeat would start an election).
    #[error(
        "timings must be positive and election_timeout_ticks ({election}) > 2 * heartbeat_interval_ticks ({heartbeat})"
    )]
    Timing {
        /// Configured election timeout.
        election: Ticks,
        /// Configured heartbeat interval.
        heartbeat: Ticks,
    },
    /// A bound is zero or over its hard limit.
    #[error("{field} must be in 1..={max}, got {value}")]
    Bound {
        /// The field.
        field: &'static str,
        /// Its value.
        value: usize,
        /// The hard limit.
        max: usize,
    },
}

impl Config {
    /// Checks the fields and the relations between them.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut sorted = self.members.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if self.members.is_empty()
            || self.members.len() > MAX_MEMBERS
            || sorted.len() != self.members.len()
        {
            return Err(ConfigError::Members {
                members: self.members.clone(),
                max: MAX_MEMBERS,
            });
        }
        if !self.members.contains(&self.rank) {
            return Err(ConfigError::NotAMember {
                rank: self.rank,
                members: self.members.clone(),
            });
        }
        if self.heartbeat_interval_ticks == 0
            || self.retransmit_ticks == 0
            || self.pending_timeout_ticks == 0
            || self.election_timeout_ticks <= self.heartbeat_interval_ticks.saturating_mul(2)
        {
            return Err(ConfigError::Timing {
                election: self.election_timeout_ticks,
                heartbeat: self.heartbeat_interval_ticks,
            });
        }
        for (field, value, max) in [
            (
                "max_batch_commands",
                self.max_batch_commands,
                MAX_BATCH_COMMANDS,
            ),
            ("max_batch_bytes", self.max_batch_bytes, MAX_BATCH_BYTES),
            ("window_slots", self.window_slots, MAX_WINDOW_SLOTS),
            (
                "max_pending_commands",
                self.max_pending_commands,
                MAX_PENDING_COMMANDS,
            ),
        ] {
            if value == 0 || value > max {
                return Err(ConfigError::Bound { field, value, max });
            }
        }
        Ok(())
    }

    /// How many members make a quorum (a strict majority).
    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
        assert_eq!(Config::default().quorum(), 2);
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        let config = |n: u32| Config {
            members: (1..=n).collect(),
            ..Config::default()
        };
        assert_eq!(config(1).quorum(), 1);
        assert_eq!(config(4).quorum(), 3);
        assert_eq!(config(5).quorum(), 3);
    }

    #[test]
    fn bad_configs_are_refused() {
        let ok = Config::default();
        let bad = [
            Config {
                members: vec![],
                ..ok.clone()
            },
            Config {
                members: vec![1, 1, 2],
                ..ok.clone()
            },
            Config {
                rank: 9,
                ..ok.clone()
            },
            Config {
                election_timeout_ticks: 10,
                heartbeat_interval_ticks: 5,
                ..ok.clone()
            },
            Config {
                retransmit_ticks: 0,
                ..ok.clone()
            },
            Config {
                window_slots: 0,
                ..ok.clone()
            },
            Config {
                max_batch_commands: MAX_BATCH_COMMANDS + 1,
                ..ok.clone()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
