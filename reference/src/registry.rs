//! The registry: node names, their stable ranks, and who is alive.
//!
//! A plain data structure: no socket, no file, no clock. Every method that needs the
//! time takes a [`Now`], so the unit tests below drive time by hand.
//!
//! Invariants:
//! - A name keeps its rank for good: once given, a rank is never given to another name,
//!   even after the member expired (it is *gone*, `alive: false`, not forgotten). The ranks
//!   and names are what [`Registry::persisted`] returns for the caller to store, so they
//!   also survive a restart.
//! - A new name gets the smallest free rank in `1..=MAX_MEMBERS`; there are at most
//!   [`MAX_MEMBERS`] names.
//! - The registry knows which names are on disk: restored ones, and those in a
//!   [`Persisted`] the caller saved ([`Registry::mark_saved`]). A new name is not, until
//!   then; if the save fails, [`Registry::forget_unsaved`] takes it back, with its rank.
//!   The caller announces a rank only once it is on disk, so a rank taken back was never
//!   given (see the crate's *Stable ranks*).
//! - The epoch increases with every change of the member list or of anyone's liveness,
//!   and never goes back, across restarts too (it is persisted, and a restart is a change).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proto::fabric::{Member, MembershipEvent, Stamp, check_node_name};
use proto::report::MemberReport;
use serde::{Deserialize, Serialize};

/// Most names the registry holds: the ranks run from 1 to this.
pub const MAX_MEMBERS: usize = proto::limits::MAX_MEMBERS;
/// Longest `status_addr` kept for a member (as `RefRequest::validate` enforces).
pub const MAX_STATUS_ADDR_BYTES: usize = 256;
/// Version of the persisted format.
pub const PERSISTED_FORMAT: u32 = 1;

/// A node's stable rank, 1..=[`MAX_MEMBERS`]; the highest live rank leads the cluster.
pub type Rank = u32;

/// The current time, both ways the registry needs it: a monotonic instant for expiry
/// (immune to clock steps) and wall-clock milliseconds for what it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// For measuring silences.
    pub instant: Instant,
    /// Unix time in milliseconds, for `last_heartbeat_unix_ms`.
    pub unix_ms: u64,
}

impl Now {
    /// The system's time.
    pub fn system() -> Now {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Now {
            instant: Instant::now(),
            unix_ms,
        }
    }

    /// `duration` later.
    pub fn after(self, duration: Duration) -> Now {
        Now {
            instant: self.instant + duration,
            unix_ms: self
                .unix_ms
                .saturating_add(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Every rank is taken by a name.
    #[error("all {MAX_MEMBERS} ranks are taken")]
    Full,
    /// The name or the status address breaks a limit.
    #[error("invalid registration: {0}")]
    Invalid(#[from] proto::LimitError),
    /// Not newer than a request already taken from that node: replayed (or the node's
    /// clock went back further than the time between its two starts).
    #[error(
        "a stale request: not newer than one already taken from this node (replayed, or \
         its clock went back across a restart)"
    )]
    Stale,
}

/// What survives a restart: names, their ranks and status addresses, and the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    /// [`PERSISTED_FORMAT`].
    pub format: u32,
    /// The epoch when this was written.
    pub epoch: u64,
    /// Every name ever registered, by rank.
    pub members: Vec<PersistedMember>,
}

/// One name in [`Persisted`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedMember {
    /// Node name.
    pub node: String,
    /// Its rank.
    pub rank: Rank,
    /// Where it serves `/status`.
    #[serde(default)]
    pub status_addr: String,
    /// The stamp of its last registration taken: after a restart of the reference, a
    /// recorded older registration is still refused (and heartbeats never revive a
    /// member, so recorded heartbeats do nothing until it registers again).
    #[serde(default)]
    pub stamp: Stamp,
}

impl Persisted {
    /// Checks what was read back: our format, valid and unique names, unique ranks in
    /// range. Anything else means the file was damaged or written by something else.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != PERSISTED_FORMAT {
            return Err(format!(
                "format {} (this build reads {PERSISTED_FORMAT})",
                self.format
            ));
        }
        if self.members.len() > MAX_MEMBERS {
            return Err(format!(
                "{} members, over the limit of {MAX_MEMBERS}",
                self.members.len()
            ));
        }
        let mut ranks = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for member in &self.members {
            check_node_name(&member.node).map_err(|e| format!("member {:?}: {e}", member.node))?;
            if member.rank == 0 || member.rank as usize > MAX_MEMBERS {
                return Err(format!(
                    "member {:?} has rank {}, outside 1..={MAX_MEMBERS}",
                    member.node, member.rank
                ));
            }
            if member.status_addr.len() > MAX_STATUS_ADDR_BYTES {
                return Err(format!("member {:?}: status_addr too long", member.node));
            }
            if !ranks.insert(member.rank) {
                return Err(format!("rank {} is given twice", member.rank));
            }
            if !names.insert(member.node.as_str()) {
                return Err(format!("member {:?} is listed twice", member.node));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Entry {
    rank: Rank,
    status_addr: String,
    /// The last READY/heartbeat: monotonic, and wall-clock for reports. `None` until the
    /// member registers in this run of the process.
    last_heartbeat: Option<(Instant, u64)>,
    /// Whether it was alive at the last [`Registry::expire`] or registration: the
    /// transitions of this flag are the changes that bump the epoch.
    alive: bool,
    /// Whether the name and its rank are on disk (restored, or saved since).
    saved: bool,
    /// The newest request taken from it in this run of the reference: an older or equal
    /// one is a replay and changes nothing.
    stamp: Stamp,
}

/// Names, ranks and liveness of the cluster's members.
#[derive(Debug, Clone)]
pub struct Registry {
    members: BTreeMap<String, Entry>,
    expiry_timeout: Duration,
    epoch: u64,
    /// Whether something to persist changed since [`Registry::take_dirty`].
    dirty: bool,
}

impl Registry {
    /// An empty registry whose members are gone after `expiry_timeout` of silence.
    pub fn new(expiry_timeout: Duration) -> Registry {
        Registry {
            members: BTreeMap::new(),
            expiry_timeout,
            epoch: 0,
            dirty: false,
        }
    }

    /// The registry as persisted before a restart: every name keeps its rank, nobody is
    /// alive until it registers again, and the epoch moves past the persisted one.
    pub fn restore(persisted: &Persisted, expiry_timeout: Duration) -> Result<Registry, String> {
        persisted.validate()?;
        let members = persisted
            .members
            .iter()
            .map(|m| {
                let entry = Entry {
                    rank: m.rank,
                    status_addr: m.status_addr.clone(),
                    last_heartbeat: None,
                    alive: false,
                    saved: true,
                    stamp: m.stamp,
                };
                (m.node.clone(), entry)
            })
            .collect();
        Ok(Registry {
            members,
            expiry_timeout,
            // The restart is a change: everyone is gone until they come back.
            epoch: persisted.epoch.saturating_add(1),
            dirty: true,
        })
    }

    /// What must survive a restart.
    pub fn persisted(&self) -> Persisted {
        let mut members: Vec<PersistedMember> = self
            .members
            .iter()
            .map(|(node, e)| PersistedMember {
                node: node.clone(),
                rank: e.rank,
                status_addr: e.status_addr.clone(),
                stamp: e.stamp,
            })
            .collect();
        members.sort_by_key(|m| m.rank);
        Persisted {
            format: PERSISTED_FORMAT,
            epoch: self.epoch,
            members,
        }
    }

    /// Whether something changed that must be persisted (and published) since the last
    /// call; clears the flag.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Increases with every change.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// How long a member may be silent before it is gone.
    pub fn expiry_timeout(&self) -> Duration {
        self.expiry_timeout
    }

    fn changed(&mut self) {
        self.epoch += 1;
        self.dirty = true;
    }

    /// Registers `node` (or registers it again) and returns its rank: the rank it always
    /// had, or the smallest free one for a new name. The member is alive from `now`.
    /// `stamp` must be newer than every request taken from `node` before
    /// ([`RegistryError::Stale`] otherwise: a replay changes nothing).
    pub fn register(
        &mut self,
        node: &str,
        status_addr: &str,
        stamp: Stamp,
        now: Now,
    ) -> Result<Rank, RegistryError> {
        check_node_name(node)?;
        if status_addr.len() > MAX_STATUS_ADDR_BYTES {
            return Err(RegistryError::Invalid(proto::LimitError::TooLong {
                field: "status_addr",
                len: status_addr.len(),
                max: MAX_STATUS_ADDR_BYTES,
            }));
        }
        let timeout = self.expiry_timeout;
        if let Some(entry) = self.members.get_mut(node) {
            if stamp <= entry.stamp {
                return Err(RegistryError::Stale);
            }
            entry.stamp = stamp;
            // Saved before the node hears its rank: a restarted reference still refuses
            // a recording of this registration.
            self.dirty = true;
            let rank = entry.rank;
            // Gone, whether or not `expire` has flagged it yet: coming back is a change.
            let returned = !(entry.alive && is_fresh(entry, now, timeout));
            let moved = entry.status_addr != status_addr;
            entry.alive = true;
            entry.last_heartbeat = Some((now.instant, now.unix_ms));
            if moved {
                entry.status_addr = status_addr.to_owned();
            }
            if returned || moved {
                self.changed();
            }
            return Ok(rank);
        }
        let rank = self.free_rank().ok_or(RegistryError::Full)?;
        self.members.insert(
            node.to_owned(),
            Entry {
                rank,
                status_addr: status_addr.to_owned(),
                last_heartbeat: Some((now.instant, now.unix_ms)),
                alive: true,
                saved: false,
                stamp,
            },
        );
        self.changed();
        Ok(rank)
    }

    /// The rank `node` holds, if any.
    pub fn rank(&self, node: &str) -> Option<Rank> {
        self.members.get(node).map(|e| e.rank)
    }

    /// Whether `node` holds a rank that is on disk.
    pub fn is_saved(&self, node: &str) -> bool {
        self.members.get(node).is_some_and(|e| e.saved)
    }

    /// The caller wrote `persisted` durably: its names and ranks are on disk.
    pub fn mark_saved(&mut self, persisted: &Persisted) {
        for member in &persisted.members {
            if let Some(entry) = self.members.get_mut(&member.node)
                && entry.rank == member.rank
            {
                entry.saved = true;
            }
        }
    }

    /// Takes back every name whose rank is not on disk (a save failed) and returns them:
    /// their ranks are free again. Only the caller's promise to announce no rank before
    /// it is saved makes this safe, so nobody has heard of them.
    pub fn forget_unsaved(&mut self) -> Vec<String> {
        let unsaved: Vec<String> = self
            .members
            .iter()
            .filter(|(_, e)| !e.saved)
            .map(|(node, _)| node.clone())
            .collect();
        for node in &unsaved {
            self.members.remove(node);
        }
        if !unsaved.is_empty() {
            // The member list changed (in memory: it never held them on disk).
            self.changed();
        }
        unsaved
    }

    fn free_rank(&self) -> Option<Rank> {
        let taken: std::collections::HashSet<Rank> =
            self.members.values().map(|e| e.rank).collect();
        (1..=MAX_MEMBERS as Rank).find(|rank| !taken.contains(rank))
    }

    /// A heartbeat from `node`. Returns whether it is a current (alive) member; `false`
    /// asks it to register again: it is unknown, or it was gone (expired, or this
    /// reference restarted since it registered). A heartbeat never revives a member, and
    /// one whose `stamp` is not newer than the last request taken from `node` (a replay)
    /// changes nothing ([`RegistryError::Stale`]).
    pub fn heartbeat(&mut self, node: &str, stamp: Stamp, now: Now) -> Result<bool, RegistryError> {
        let timeout = self.expiry_timeout;
        match self.members.get_mut(node) {
            Some(entry) if stamp <= entry.stamp => Err(RegistryError::Stale),
            Some(entry) if entry.alive && is_fresh(entry, now, timeout) => {
                entry.stamp = stamp;
                entry.last_heartbeat = Some((now.instant, now.unix_ms));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Marks the members silent for longer than the expiry timeout as gone. Returns how
    /// many went (if any, the epoch moved on).
    pub fn expire(&mut self, now: Now) -> usize {
        let timeout = self.expiry_timeout;
        let mut gone = 0;
        for entry in self.members.values_mut() {
            if entry.alive && !is_fresh(entry, now, timeout) {
                entry.alive = false;
                gone += 1;
            }
        }
        if gone > 0 {
            self.changed();
        }
        gone
    }

    /// Every member by rank, alive or gone, as of `now`.
    pub fn members(&self, now: Now) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .members
            .iter()
            .map(|(node, e)| Member {
                node: node.clone(),
                rank: e.rank,
                status_addr: e.status_addr.clone(),
                last_heartbeat_unix_ms: e.last_heartbeat.map_or(0, |(_, unix_ms)| unix_ms),
                alive: e.alive && is_fresh(e, now, self.expiry_timeout),
            })
            .collect();
        members.sort_by_key(|m| m.rank);
        members
    }

    /// Every member by rank as `/status` shows it, as of `now`.
    pub fn report(&self, now: Now) -> Vec<MemberReport> {
        let mut members: Vec<MemberReport> = self
            .members
            .iter()
            .map(|(node, e)| MemberReport {
                node: node.clone(),
                rank: e.rank,
                alive: e.alive && is_fresh(e, now, self.expiry_timeout),
                last_heartbeat_ms_ago: e.last_heartbeat.map(|(at, _)| {
                    let ago = now.instant.saturating_duration_since(at);
                    u64::try_from(ago.as_millis()).unwrap_or(u64::MAX)
                }),
            })
            .collect();
        members.sort_by_key(|m| m.rank);
        members
    }

    /// The event published on the `membership` topic.
    pub fn event(&self, now: Now) -> MembershipEvent {
        MembershipEvent {
            epoch: self.epoch,
            members: self.members(now),
        }
    }
}

fn is_fresh(entry: &Entry, now: Now, timeout: Duration) -> bool {
    entry
        .last_heartbeat
        .is_some_and(|(at, _)| now.instant.saturating_duration_since(at) <= timeout)
}

#[cfg(test)]
mod tests;
