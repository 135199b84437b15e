//! The ring: which nodes are live, and whose turn is next.
//!
//! A plain data structure with no sockets and no clock: every method takes `now`, so the
//! unit tests below drive time by hand. A node is *live* while its last READY or heartbeat
//! is at most [`Ring::liveness_timeout`] old. [`Ring::next`] hands out live nodes in
//! round-robin order and skips stale ones even before [`Ring::expire`] has removed them,
//! so a silent node receives nothing once its timeout has passed, whatever the tick rate
//! of the caller.
//!
//! Each node has a **route**: the backend connection (its ROUTER routing id) that last
//! proved it holds the cluster key ([`Ring::ready`], after the broker's challenge). Only a
//! heartbeat from that connection keeps the node live ([`Ring::heartbeat`]); one from
//! any other connection does nothing here, and the broker challenges that connection.
//!
//! Invariants: at most [`MAX_NODES`] entries; every entry's name is unique; the cursor
//! always indexes an entry (or is 0 when the ring is empty).

use std::time::{Duration, Instant};

/// Most nodes the ring holds: as many as the reference service can rank.
pub const MAX_NODES: usize = proto::limits::MAX_MEMBERS;

/// A node's name, as it announces itself.
pub type NodeId = Vec<u8>;
/// A backend connection: the routing id the ROUTER gave it.
pub type RouteId = Vec<u8>;

/// What a READY or heartbeat did to the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The node was not in the ring and now is (first READY, or back after expiry).
    Joined,
    /// The node was in the ring; its liveness was refreshed.
    Refreshed,
}

/// A new node could not join because [`MAX_NODES`] live nodes are in the ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the ring is full ({MAX_NODES} live nodes)")]
pub struct RingFull;

#[derive(Debug, Clone)]
struct Entry {
    node: NodeId,
    route: RouteId,
    last_seen: Instant,
}

/// Live nodes in round-robin order.
#[derive(Debug, Clone)]
pub struct Ring {
    entries: Vec<Entry>,
    /// Index of the entry whose turn is next.
    cursor: usize,
    liveness_timeout: Duration,
}

impl Ring {
    /// An empty ring whose nodes stay live for `liveness_timeout` after each heartbeat.
    pub fn new(liveness_timeout: Duration) -> Ring {
        Ring {
            entries: Vec::with_capacity(MAX_NODES),
            cursor: 0,
            liveness_timeout,
        }
    }

    /// How long a node stays live after its last READY or heartbeat.
    pub fn liveness_timeout(&self) -> Duration {
        self.liveness_timeout
    }

    /// A node proved, on connection `route`, that it holds the cluster key: requests for
    /// it go there from now on, and it is live.
    pub fn ready(&mut self, node: &[u8], route: &[u8], now: Instant) -> Result<Liveness, RingFull> {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.node == node) {
            // A stale entry that speaks again before `expire` removed it has returned.
            let was_live = is_live(entry, now, self.liveness_timeout);
            entry.last_seen = entry.last_seen.max(now);
            entry.route = route.to_vec();
            return Ok(if was_live {
                Liveness::Refreshed
            } else {
                Liveness::Joined
            });
        }
        if self.entries.len() >= MAX_NODES {
            self.expire(now);
            if self.entries.len() >= MAX_NODES {
                return Err(RingFull);
            }
        }
        // A newcomer joins just before the cursor: it gets its turn after everyone who was
        // already waiting, so joining does not make one node take two turns in a row.
        self.entries.insert(
            self.cursor,
            Entry {
                node: node.to_vec(),
                route: route.to_vec(),
                last_seen: now,
            },
        );
        self.cursor = (self.cursor + 1) % self.entries.len();
        Ok(Liveness::Joined)
    }

    /// A heartbeat of `node` on connection `route`: it keeps the node live only from the
    /// node's proven route (`None` otherwise: the caller challenges that connection).
    pub fn heartbeat(&mut self, node: &[u8], route: &[u8], now: Instant) -> Option<Liveness> {
        let timeout = self.liveness_timeout;
        let entry = self
            .entries
            .iter_mut()
            .find(|e| e.node == node && e.route == route)?;
        let was_live = is_live(entry, now, timeout);
        entry.last_seen = entry.last_seen.max(now);
        Some(if was_live {
            Liveness::Refreshed
        } else {
            Liveness::Joined
        })
    }

    /// The live node whose turn it is and its route, or `None` when no node is live.
    pub fn next(&mut self, now: Instant) -> Option<(&[u8], &[u8])> {
        let count = self.entries.len();
        for step in 0..count {
            let index = (self.cursor + step) % count;
            if is_live(&self.entries[index], now, self.liveness_timeout) {
                self.cursor = (index + 1) % count;
                let entry = &self.entries[index];
                return Some((&entry.node, &entry.route));
            }
        }
        None
    }

    /// Removes the nodes silent for longer than the liveness timeout and returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<NodeId> {
        let mut removed = Vec::new();
        let mut index = 0;
        while index < self.entries.len() {
            if is_live(&self.entries[index], now, self.liveness_timeout) {
                index += 1;
                continue;
            }
            removed.push(self.entries.remove(index).node);
            // Keep the cursor on the same next node.
            if index < self.cursor {
                self.cursor -= 1;
            }
        }
        if self.cursor >= self.entries.len() {
            self.cursor = 0;
        }
        removed
    }

    /// Whether `node` is live now.
    pub fn is_live(&self, node: &[u8], now: Instant) -> bool {
        self.entries
            .iter()
            .any(|e| e.node == node && is_live(e, now, self.liveness_timeout))
    }

    /// The live nodes now, in ring order.
    pub fn live(&self, now: Instant) -> impl Iterator<Item = &[u8]> + '_ {
        self.entries
            .iter()
            .filter(move |e| is_live(e, now, self.liveness_timeout))
            .map(|e| e.node.as_slice())
    }

    /// How many nodes are in the ring (live or not yet expired).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the ring holds no node.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn is_live(entry: &Entry, now: Instant, timeout: Duration) -> bool {
    now.saturating_duration_since(entry.last_seen) <= timeout
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn turns(ring: &mut Ring, now: Instant, count: usize) -> Vec<String> {
        (0..count)
            .map(|_| {
                ring.next(now)
                    .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_else(|| "-".into())
            })
            .collect()
    }

    #[test]
    fn empty_ring_has_no_next() {
        let mut ring = Ring::new(TIMEOUT);
        assert_eq!(ring.next(Instant::now()), None);
        assert!(ring.expire(Instant::now()).is_empty());
        assert!(ring.is_empty());
    }

    #[test]
    fn round_robin_over_live_nodes() {
        let t0 = Instant::now();
        let mut ring = Ring::new(TIMEOUT);
        for name in ["a", "b", "c"] {
            assert_eq!(
                ring.ready(name.as_bytes(), name.as_bytes(), t0),
                Ok(Liveness::Joined)
            );
        }
        let got = turns(&mut ring, t0, 9);
        // Every node exactly three times, never twice in a row.
        for name in ["a", "b", "c"] {
            assert_eq!(got.iter().filter(|n| *n == name).count(), 3, "{got:?}");
        }
        assert!(got.windows(2).all(|w| w[0] != w[1]), "{got:?}");
        // The order is a fixed cycle.
        assert_eq!(got[0..3], got[3..6]);
        assert_eq!(got[3..6], got[6..9]);
    }

    #[test]
    fn ready_twice_does_not_add_a_second_turn() {
        let t0 = Instant::now();
        let mut ring = Ring::new(TIMEOUT);
        ring.ready(b"a", b"a", t0).unwrap();
        ring.ready(b"b", b"b", t0).unwrap();
        assert_eq!(ring.ready(b"a", b"a", t0), Ok(Liveness::Refreshed));
        assert_eq!(ring.len(), 2);
        let got = turns(&mut ring, t0, 4);
        assert_eq!(got.iter().filter(|n| *n == "a").count(), 2, "{got:?}");
    }

    #[test]
    fn a_silent_node_gets_no_turn_after_the_timeout_even_before_expire() {
        let t0 = Instant::now();
        let mut ring = Ring::new(TIMEOUT);
        ring.ready(b"a", b"a", t0).unwrap();
        ring.ready(b"b", b"b", t0).unwrap();
        // `a` keeps heartbeating, `b` falls silent.
        let later = t0 + TIMEOUT + ms(1);
        ring.heartbeat(b"a", b"a", later).unwrap();
        assert_eq!(turns(&mut ring, later, 4), vec!["a"; 4]);
        assert!(!ring.is_live(b"b", later));
        assert_eq!(ring.len(), 2, "still there until expire");
        assert_eq!(ring.expire(later), vec![b"b".to_vec()]);
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn live_exactly_at_the_timeout_and_gone_just_after() {
        let t0 = Instant::now();
        let mut ring = Ring::new(TIMEOUT);
        ring.ready(b"a", b"a", t0).unwrap();
        assert!(ring.is_live(b"a", t0 + TIMEOUT));
        assert!(ring.expire(t0 + TIMEOUT).is_empty());
        assert!(!ring.is_live(b"a", t0 + TIMEOUT + ms(1)));
        assert_eq!(ring.next(t0 + TIMEOUT + ms(1)), None);
    }

    #[test]
    fn a_proof_brings_a_node_back() {
        let t0 = Instant::now();
        let mut ring = Ring::new(TIMEOUT);
        ring.ready(b"a", b"a", t0).unwrap();
        ring.ready(b"b", b"b", t0).unwrap();
        let t1 = t0 + ms(1500);
        ring.heartbeat(b"a", b"a", t1).unwrap();
        assert_eq!(ring.expire(t1), vec![b"b".to_vec()]);
        // Back after expiry: joins again.
        let t2 = t1 + ms(100);
        assert_eq!(
            ring.heartbeat(b"b", b"b", t2),
            None,
            "expired: it must prove itself again"
        );
        assert_eq!(ring.ready(b"b", b"b", t2), Ok(Liveness::Joined));
        let got = turns(&mut ring, t2, 4);
        assert_eq!(got.iter().filter(|n| *n == "b").count(), 2, "{got:?}");
    }

    #[test]
    fn a_stale_node_that_speaks_before_expire_counts_as_joined() {
        let t0 = Instant::now();
        let mut ring = Ring::new(TIMEOUT);
        ring.ready(b"a", b"a", t0).unwrap();
        assert_eq!(
            ring.heartbeat(b"a", b"a", t0 + ms(2000)),
            Some(Liveness::Joined),
            "it had left the ring in effect"
        );
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn only_the_proven_route_heartbeats_and_gets_requests() {
        let t0 = Instant::now();
        let mut ring = Ring::new(TIMEOUT);
        assert_eq!(ring.heartbeat(b"x", b"r1", t0), None, "unknown: no entry");
        assert!(ring.is_empty());
        ring.ready(b"x", b"r1", t0).unwrap();
        assert_eq!(ring.next(t0), Some((&b"x"[..], &b"r1"[..])));
        // Another connection naming x (a stranger's replay) refreshes nothing.
        let t1 = t0 + ms(900);
        assert_eq!(ring.heartbeat(b"x", b"r2", t1), None);
        assert!(
            !ring.is_live(b"x", t0 + ms(1100)),
            "the replay kept it live"
        );
        // x proved itself again on a new connection (it reconnected): that one is used.
        ring.ready(b"x", b"r3", t1).unwrap();
        assert_eq!(ring.next(t1), Some((&b"x"[..], &b"r3"[..])));
        assert_eq!(
            ring.heartbeat(b"x", b"r1", t1),
            None,
            "the old route is done"
        );
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn expire_keeps_the_rotation_going() {
        let t0 = Instant::now();
        let mut ring = Ring::new(TIMEOUT);
        for name in ["a", "b", "c", "d"] {
            ring.ready(name.as_bytes(), name.as_bytes(), t0).unwrap();
        }
        let first = turns(&mut ring, t0, 4);
        // Two nodes fall silent; the others keep their relative order.
        let t1 = t0 + ms(1500);
        ring.heartbeat(first[1].as_bytes(), first[1].as_bytes(), t1)
            .unwrap();
        ring.heartbeat(first[3].as_bytes(), first[3].as_bytes(), t1)
            .unwrap();
        assert_eq!(ring.expire(t1).len(), 2);
        let got = turns(&mut ring, t1, 4);
        assert_eq!(
            got,
            vec![
                first[1].clone(),
                first[3].clone(),
                first[1].clone(),
                first[3].clone()
            ]
        );
    }

    #[test]
    fn the_ring_is_bounded_and_makes_room_by_expiring() {
        let t0 = Instant::now();
        let mut ring = Ring::new(TIMEOUT);
        for i in 0..MAX_NODES {
            ring.ready(format!("n{i}").as_bytes(), format!("n{i}").as_bytes(), t0)
                .unwrap();
        }
        assert_eq!(ring.ready(b"late", b"late", t0), Err(RingFull));
        assert_eq!(ring.len(), MAX_NODES);
        // Once the others are stale, the newcomer gets in.
        let t1 = t0 + ms(1001);
        assert_eq!(ring.ready(b"late", b"late", t1), Ok(Liveness::Joined));
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn a_clock_going_backwards_does_not_age_a_node() {
        let t0 = Instant::now() + ms(5000);
        let mut ring = Ring::new(TIMEOUT);
        ring.ready(b"a", b"a", t0).unwrap();
        // An older `now` (callers read the clock in different tasks) is not a timeout.
        assert!(ring.is_live(b"a", t0 - ms(3000)));
        ring.heartbeat(b"a", b"a", t0 - ms(3000)).unwrap();
        assert!(
            ring.is_live(b"a", t0 + TIMEOUT),
            "last_seen never moves back"
        );
    }

    #[test]
    fn live_lists_live_nodes_only() {
        let t0 = Instant::now();
        let mut ring = Ring::new(TIMEOUT);
        ring.ready(b"a", b"a", t0).unwrap();
        ring.ready(b"b", b"b", t0 + ms(900)).unwrap();
        let live: Vec<&[u8]> = ring.live(t0 + ms(1200)).collect();
        assert_eq!(live, vec![&b"b"[..]]);
    }
}
