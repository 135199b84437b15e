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
mod tests {
    use super::*;

    /// A stamp newer than every one before it.
    fn next() -> Stamp {
        Stamp::next_of_process()
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn alive(registry: &Registry, now: Now) -> Vec<(String, Rank, bool)> {
        registry
            .members(now)
            .into_iter()
            .map(|m| (m.node, m.rank, m.alive))
            .collect()
    }

    #[test]
    fn the_report_says_how_long_ago_each_member_spoke() {
        let t0 = Now::system();
        let mut registry = Registry::new(TIMEOUT);
        registry.register("node-2", "", next(), t0).unwrap();
        registry
            .register("node-1", "", next(), t0.after(ms(1000)))
            .unwrap();
        let report = registry.report(t0.after(ms(5500)));
        let seen: Vec<_> = report
            .iter()
            .map(|m| (m.node.as_str(), m.rank, m.alive, m.last_heartbeat_ms_ago))
            .collect();
        assert_eq!(
            seen,
            [
                ("node-2", 1, false, Some(5500)),
                ("node-1", 2, true, Some(4500))
            ]
        );
        let restored = Registry::restore(&registry.persisted(), TIMEOUT).unwrap();
        let report = restored.report(t0.after(ms(6000)));
        assert!(
            report
                .iter()
                .all(|m| !m.alive && m.last_heartbeat_ms_ago.is_none())
        );
    }

    #[test]
    fn a_new_name_is_unsaved_until_saved_and_can_be_taken_back() {
        let t0 = Now::system();
        let mut registry = Registry::new(TIMEOUT);
        assert_eq!(registry.register("node-1", "", next(), t0), Ok(1));
        assert!(!registry.is_saved("node-1"));
        registry.mark_saved(&registry.persisted());
        assert!(registry.is_saved("node-1"));
        assert_eq!(registry.register("node-2", "", next(), t0), Ok(2));
        assert_eq!(registry.register("node-3", "", next(), t0), Ok(3));
        // The save of node-2 and node-3 failed: they are taken back, node-1 stays.
        let epoch = registry.epoch();
        assert_eq!(registry.forget_unsaved(), ["node-2", "node-3"]);
        assert!(registry.epoch() > epoch);
        assert_eq!(alive(&registry, t0), vec![("node-1".into(), 1, true)]);
        assert!(registry.forget_unsaved().is_empty());
        // Their ranks were never on disk, so never given: the next name takes rank 2.
        assert_eq!(registry.register("node-9", "", next(), t0), Ok(2));
        // A restored registry is all on disk.
        registry.mark_saved(&registry.persisted());
        let restored = Registry::restore(&registry.persisted(), TIMEOUT).unwrap();
        assert!(restored.is_saved("node-1") && restored.is_saved("node-9"));
        assert!(!restored.is_saved("node-2"));
    }

    #[test]
    fn new_names_get_the_next_free_rank_and_keep_it() {
        let t0 = Now::system();
        let mut registry = Registry::new(TIMEOUT);
        assert_eq!(registry.register("node-1", "", next(), t0), Ok(1));
        assert_eq!(registry.register("node-2", "", next(), t0), Ok(2));
        assert_eq!(registry.register("node-3", "", next(), t0), Ok(3));
        assert_eq!(
            registry.register("node-2", "", next(), t0.after(ms(10))),
            Ok(2)
        );
        assert_eq!(registry.register("node-9", "", next(), t0), Ok(4));
    }

    #[test]
    fn an_expired_member_is_reported_as_gone_but_keeps_its_rank() {
        let t0 = Now::system();
        let mut registry = Registry::new(TIMEOUT);
        registry.register("node-1", "", next(), t0).unwrap();
        registry.register("node-2", "", next(), t0).unwrap();
        let t1 = t0.after(ms(4000));
        assert!(registry.heartbeat("node-1", next(), t1).unwrap());
        assert_eq!(registry.expire(t1), 0, "nobody is silent for 5 s yet");
        let t2 = t0.after(ms(5001));
        // Reported gone as soon as the timeout passed, before `expire` ran.
        assert_eq!(
            alive(&registry, t2),
            vec![("node-1".into(), 1, true), ("node-2".into(), 2, false)]
        );
        let epoch = registry.epoch();
        assert_eq!(registry.expire(t2), 1);
        assert_eq!(registry.epoch(), epoch + 1);
        assert_eq!(registry.expire(t2), 0, "gone once, not again");
        // A newcomer does not get the gone member's rank.
        assert_eq!(registry.register("node-3", "", next(), t2), Ok(3));
        // The gone member comes back with its rank.
        assert_eq!(registry.register("node-2", "", next(), t2), Ok(2));
        assert!(alive(&registry, t2).iter().all(|(_, _, alive)| *alive));
    }

    #[test]
    fn heartbeats_keep_members_alive_and_never_revive_them() {
        let t0 = Now::system();
        let mut registry = Registry::new(TIMEOUT);
        assert!(
            !registry.heartbeat("stranger", next(), t0).unwrap(),
            "unknown"
        );
        registry.register("node-1", "", next(), t0).unwrap();
        let mut now = t0;
        for _ in 0..10 {
            now = now.after(ms(3000));
            assert!(registry.heartbeat("node-1", next(), now).unwrap());
            assert_eq!(registry.expire(now), 0);
        }
        let late = now.after(ms(6000));
        assert!(
            !registry.heartbeat("node-1", next(), late).unwrap(),
            "silent too long: register again"
        );
        registry.expire(late);
        assert!(!registry.heartbeat("node-1", next(), late).unwrap());
        assert_eq!(registry.register("node-1", "", next(), late), Ok(1));
        assert!(
            registry
                .heartbeat("node-1", next(), late.after(ms(1)))
                .unwrap()
        );
    }

    #[test]
    fn members_report_heartbeat_times() {
        let t0 = Now::system();
        let mut registry = Registry::new(TIMEOUT);
        registry
            .register("node-1", "127.0.0.1:7001", next(), t0)
            .unwrap();
        registry
            .heartbeat("node-1", next(), t0.after(ms(1500)))
            .unwrap();
        let members = registry.members(t0.after(ms(1600)));
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].last_heartbeat_unix_ms, t0.unix_ms + 1500);
        assert_eq!(members[0].status_addr, "127.0.0.1:7001");
        assert!(members[0].alive);
    }

    #[test]
    fn the_registry_is_bounded() {
        let t0 = Now::system();
        let mut registry = Registry::new(TIMEOUT);
        for i in 0..MAX_MEMBERS {
            assert_eq!(
                registry.register(&format!("n{i}"), "", next(), t0),
                Ok(i as Rank + 1)
            );
        }
        assert_eq!(
            registry.register("one-too-many", "", next(), t0),
            Err(RegistryError::Full)
        );
        // Gone members still hold their ranks.
        let late = t0.after(ms(60_000));
        registry.expire(late);
        assert_eq!(
            registry.register("one-too-many", "", next(), late),
            Err(RegistryError::Full)
        );
        assert_eq!(registry.register("n7", "", next(), late), Ok(8));
    }

    #[test]
    fn bad_names_are_refused() {
        let t0 = Now::system();
        let mut registry = Registry::new(TIMEOUT);
        for name in ["", "has space", "slash/y", &"x".repeat(65)] {
            assert!(
                matches!(
                    registry.register(name, "", next(), t0),
                    Err(RegistryError::Invalid(_))
                ),
                "{name:?}"
            );
        }
        assert!(
            registry
                .register("ok", &"a".repeat(257), next(), t0)
                .is_err()
        );
        assert!(registry.members(t0).is_empty());
    }

    #[test]
    fn every_change_bumps_the_epoch_and_marks_dirty() {
        let t0 = Now::system();
        let mut registry = Registry::new(TIMEOUT);
        assert!(!registry.take_dirty());
        registry.register("node-1", "a", next(), t0).unwrap();
        assert_eq!(registry.epoch(), 1);
        assert!(registry.take_dirty());
        assert!(!registry.take_dirty(), "cleared");
        // Registering again unchanged changes no epoch (its stamp is saved); heartbeats
        // change nothing.
        registry.register("node-1", "a", next(), t0).unwrap();
        assert_eq!(registry.epoch(), 1);
        assert!(
            registry.take_dirty(),
            "the new registration's stamp is to be saved"
        );
        registry.heartbeat("node-1", next(), t0).unwrap();
        assert_eq!(registry.epoch(), 1);
        assert!(!registry.take_dirty());
        // A new status address is a change.
        registry.register("node-1", "b", next(), t0).unwrap();
        assert_eq!(registry.epoch(), 2);
        assert!(registry.take_dirty());
        assert_eq!(registry.event(t0).epoch, 2);
    }

    #[test]
    fn coming_back_before_expire_ran_is_still_a_change() {
        let t0 = Now::system();
        let mut registry = Registry::new(TIMEOUT);
        registry.register("node-1", "", next(), t0).unwrap();
        let epoch = registry.epoch();
        // Silent past the timeout, registering again before anyone called `expire`.
        registry
            .register("node-1", "", next(), t0.after(ms(6000)))
            .unwrap();
        assert_eq!(registry.epoch(), epoch + 1);
    }

    #[test]
    fn a_restored_registry_gives_old_names_their_ranks_and_moves_the_epoch_on() {
        let t0 = Now::system();
        let mut before = Registry::new(TIMEOUT);
        for name in ["node-1", "node-2", "node-3"] {
            before.register(name, "", next(), t0).unwrap();
        }
        before.expire(t0.after(ms(10_000)));
        let persisted = before.persisted();
        let t1 = Now::system();
        let mut after = Registry::restore(&persisted, TIMEOUT).unwrap();
        assert!(after.epoch() > before.epoch());
        // Nobody is alive until they register again; heartbeats are told to register.
        assert!(after.members(t1).iter().all(|m| !m.alive));
        assert!(!after.heartbeat("node-2", next(), t1).unwrap());
        assert_eq!(after.register("node-2", "", next(), t1), Ok(2));
        assert_eq!(after.register("node-4", "", next(), t1), Ok(4));
        assert_eq!(after.register("node-1", "", next(), t1), Ok(1));
    }

    #[test]
    fn a_damaged_persisted_state_is_refused() {
        let member = |node: &str, rank| PersistedMember {
            node: node.into(),
            rank,
            status_addr: String::new(),
            stamp: Stamp::default(),
        };
        let state = |members| Persisted {
            format: PERSISTED_FORMAT,
            epoch: 1,
            members,
        };
        for bad in [
            state(vec![member("a", 1), member("b", 1)]),
            state(vec![member("a", 1), member("a", 2)]),
            state(vec![member("a", 0)]),
            state(vec![member("a", MAX_MEMBERS as Rank + 1)]),
            state(vec![member("bad name", 1)]),
            Persisted {
                format: 99,
                epoch: 1,
                members: vec![],
            },
        ] {
            assert!(Registry::restore(&bad, TIMEOUT).is_err(), "{bad:?}");
        }
        assert!(Registry::restore(&state(vec![member("a", 3), member("b", 1)]), TIMEOUT).is_ok());
    }

    #[test]
    fn a_replayed_registration_or_heartbeat_changes_nothing() {
        let t0 = Now::system();
        let mut registry = Registry::new(TIMEOUT);
        let (first, second) = (next(), next());
        assert_eq!(registry.register("node-1", "a:1", first, t0), Ok(1));
        assert_eq!(registry.heartbeat("node-1", second, t0), Ok(true));
        // A recorded registration (with an old address) and heartbeat, replayed: refused.
        assert_eq!(
            registry.register("node-1", "old:1", first, t0),
            Err(RegistryError::Stale)
        );
        assert_eq!(
            registry.heartbeat("node-1", second, t0),
            Err(RegistryError::Stale)
        );
        assert_eq!(registry.members(t0)[0].status_addr, "a:1");
        // Once node-1 falls silent, replays do not keep it alive nor bring it back.
        let late = t0.after(TIMEOUT + ms(1));
        registry.expire(late);
        assert_eq!(
            registry.heartbeat("node-1", second, late),
            Err(RegistryError::Stale)
        );
        assert_eq!(
            registry.register("node-1", "a:1", first, late),
            Err(RegistryError::Stale)
        );
        assert!(!registry.members(late)[0].alive);
        // The node itself, with a newer stamp, comes back.
        assert_eq!(registry.register("node-1", "a:1", next(), late), Ok(1));
        assert!(registry.members(late)[0].alive);
    }

    #[test]
    fn the_stale_refusal_says_so_in_the_words_nodes_recognise() {
        assert!(
            RegistryError::Stale
                .to_string()
                .starts_with(proto::fabric::STALE_REQUEST)
        );
    }

    #[test]
    fn after_a_restart_a_recorded_registration_is_still_refused() {
        let t0 = Now::system();
        let mut before = Registry::new(TIMEOUT);
        let (old, taken) = (next(), next());
        assert_eq!(before.register("node-1", "a:1", old, t0), Ok(1));
        before.take_dirty();
        assert_eq!(before.register("node-1", "a:1", taken, t0), Ok(1));
        assert!(before.take_dirty(), "a registration's stamp is saved");
        let mut after = Registry::restore(&before.persisted(), TIMEOUT).unwrap();
        assert_eq!(
            after.register("node-1", "old:1", old, t0),
            Err(RegistryError::Stale)
        );
        // A recorded heartbeat does not bring it back either.
        assert_eq!(after.heartbeat("node-1", next(), t0), Ok(false));
        assert!(!after.members(t0)[0].alive);
        assert_eq!(after.register("node-1", "a:1", next(), t0), Ok(1));
    }
}
