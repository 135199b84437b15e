//! The challenges a broker sends backend connections before it routes to them.
//!
//! A node's READY or heartbeat is sealed under the cluster key, but a sealed frame can be
//! replayed: a stranger who recorded one could send it from its own connection. So a
//! connection earns requests only by answering a fresh challenge: the broker sends it a
//! random nonce ([`proto::fabric::broker_challenge`]), and the node answers with a sealed
//! [`proto::fabric::NodeToBroker::Proof`] naming it. A proof opens only under the key, and
//! matches only the nonce this broker sent this connection, once: no recording answers it.
//!
//! Plain data with time passed in; at most [`MAX_PENDING_CHALLENGES`] wait at once (a
//! stranger replaying READYs from many connections fills the table, and the oldest go).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::fabric::CHALLENGE_NONCE_BYTES;

use crate::ring::{NodeId, RouteId};

/// Most challenges waiting for a proof at once.
pub const MAX_PENDING_CHALLENGES: usize = 1024;

/// A nonce sent to one connection.
pub type Nonce = [u8; CHALLENGE_NONCE_BYTES];

#[derive(Debug, Clone)]
struct Pending {
    node: NodeId,
    nonce: Nonce,
    issued: Instant,
}

/// The challenges sent and not answered yet, by connection.
#[derive(Debug, Clone)]
pub struct Challenges {
    pending: HashMap<RouteId, Pending>,
    /// A challenge older than this is no longer answered.
    ttl: Duration,
}

impl Challenges {
    /// No challenge yet; each is answerable for `ttl`.
    pub fn new(ttl: Duration) -> Challenges {
        Challenges {
            pending: HashMap::new(),
            ttl,
        }
    }

    /// A challenge for connection `route`, which says it is `node`: the one it was sent
    /// already while that one is fresh (a heartbeat may cross the proof on the wire), else
    /// a new one that replaces it.
    pub fn issue(&mut self, route: &[u8], node: &[u8], now: Instant) -> Nonce {
        if let Some(pending) = self.pending.get(route)
            && pending.node == node
            && now.saturating_duration_since(pending.issued) <= self.ttl
        {
            return pending.nonce;
        }
        if self.pending.len() >= MAX_PENDING_CHALLENGES && !self.pending.contains_key(route) {
            let ttl = self.ttl;
            self.pending
                .retain(|_, p| now.saturating_duration_since(p.issued) <= ttl);
            if self.pending.len() >= MAX_PENDING_CHALLENGES
                && let Some(oldest) = self
                    .pending
                    .iter()
                    .min_by_key(|(_, p)| p.issued)
                    .map(|(route, _)| route.clone())
            {
                self.pending.remove(&oldest);
            }
        }
        let nonce: Nonce = rand::random();
        self.pending.insert(
            route.to_vec(),
            Pending {
                node: node.to_vec(),
                nonce,
                issued: now,
            },
        );
        nonce
    }

    /// Whether `nonce` answers the challenge this broker sent connection `route` for
    /// `node`, in time. A challenge is answered at most once.
    pub fn answer(&mut self, route: &[u8], node: &[u8], nonce: &[u8], now: Instant) -> bool {
        let matches = self.pending.get(route).is_some_and(|p| {
            p.node == node
                && p.nonce.as_slice() == nonce
                && now.saturating_duration_since(p.issued) <= self.ttl
        });
        if matches {
            self.pending.remove(route);
        }
        matches
    }

    /// How many wait for an answer.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    #[test]
    fn a_challenge_is_answered_once_by_its_connection_for_its_node() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(TTL);
        let nonce = challenges.issue(b"r1", b"node-1", t0);
        assert!(
            !challenges.answer(b"r2", b"node-1", &nonce, t0),
            "another connection"
        );
        assert!(
            !challenges.answer(b"r1", b"node-2", &nonce, t0),
            "another node"
        );
        assert!(
            !challenges.answer(b"r1", b"node-1", &[0; 16], t0),
            "another nonce"
        );
        assert!(challenges.answer(b"r1", b"node-1", &nonce, t0));
        assert!(!challenges.answer(b"r1", b"node-1", &nonce, t0), "replayed");
        assert!(challenges.is_empty());
    }

    #[test]
    fn a_fresh_challenge_is_sent_again_a_stale_one_replaced_and_a_late_answer_refused() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(TTL);
        let first = challenges.issue(b"r1", b"node-1", t0);
        assert_eq!(challenges.issue(b"r1", b"node-1", t0 + TTL), first);
        let other_name = challenges.issue(b"r1", b"node-2", t0 + TTL);
        assert_ne!(other_name, first);
        let late = t0 + TTL * 3;
        let renewed = challenges.issue(b"r1", b"node-2", late);
        assert_ne!(renewed, other_name);
        assert!(!challenges.answer(b"r1", b"node-2", &other_name, late));
        assert!(!challenges.answer(b"r1", b"node-2", &renewed, late + TTL * 2));
    }

    #[test]
    fn the_table_is_bounded_and_the_oldest_go_first() {
        let t0 = Instant::now();
        let mut challenges = Challenges::new(TTL);
        let first = challenges.issue(b"first", b"n", t0);
        for i in 0..MAX_PENDING_CHALLENGES + 10 {
            let at = t0 + Duration::from_micros(1 + i as u64);
            challenges.issue(format!("r{i}").as_bytes(), b"n", at);
        }
        assert_eq!(challenges.len(), MAX_PENDING_CHALLENGES);
        assert!(!challenges.answer(b"first", b"n", &first, t0));
    }
}
