//! The client requests this node received and has not answered yet: who to answer (the
//! broker's routing frames) once the command is applied or rejected.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use proto::client::{ClientId, Command, Seq};

/// Most client requests waiting for their command at one node; beyond it new requests
/// are answered `overloaded` at once.
pub const MAX_PENDING_REQUESTS: usize = 65_536;
/// A request unanswered this long is forgotten: its client has long retried (the retry
/// may have reached another node) and the entry must not live forever.
pub const PENDING_REQUEST_TTL: Duration = Duration::from_secs(60);

/// Where an answer goes: back through the broker the request came from, with the
/// routing frames it put in front (the client's identity there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The broker, by its place in `--broker`.
    pub broker: usize,
    /// The routing frames.
    pub frames: Vec<Vec<u8>>,
}

/// One waiting request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Where the answer goes.
    pub route: Route,
    /// The command, to hand to the cluster again when the leader changes (a follower's
    /// forward to a leader that died is lost).
    pub command: Command,
    /// The op's name, for metrics.
    pub op: &'static str,
    /// When the request (or its latest retry) arrived.
    pub since: Instant,
}

/// Waiting requests by `(client_id, seq)`, bounded, oldest forgotten first.
#[derive(Debug)]
pub struct PendingRequests {
    /// Most requests held (at most [`MAX_PENDING_REQUESTS`]).
    limit: usize,
    waiting: HashMap<(ClientId, Seq), Waiting>,
    /// Arrival order, for expiry: `(key, arrival)`; an entry whose arrival no longer
    /// matches the map (answered, or refreshed by a retry) is skipped.
    order: VecDeque<((ClientId, Seq), Instant)>,
}

/// The map is full: the request's route comes back, to answer it `overloaded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full(pub Route);

impl Default for PendingRequests {
    fn default() -> Self {
        PendingRequests::new()
    }
}

impl PendingRequests {
    /// An empty map holding at most [`MAX_PENDING_REQUESTS`].
    pub fn new() -> PendingRequests {
        PendingRequests::with_limit(MAX_PENDING_REQUESTS)
    }

    /// An empty map holding at most `limit` requests (capped at
    /// [`MAX_PENDING_REQUESTS`]).
    pub fn with_limit(limit: usize) -> PendingRequests {
        PendingRequests {
            limit: limit.min(MAX_PENDING_REQUESTS),
            waiting: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Remembers a request; a retry of one already waiting replaces its route (the
    /// client's newest path — maybe through another broker — is the one still
    /// listening). Returns whether it was a retry.
    pub fn insert(&mut self, route: Route, command: Command, now: Instant) -> Result<bool, Full> {
        let key = (command.client_id, command.seq);
        if let Some(waiting) = self.waiting.get_mut(&key) {
            waiting.route = route;
            return Ok(true);
        }
        if self.waiting.len() >= self.limit {
            return Err(Full(route));
        }
        self.waiting.insert(
            key,
            Waiting {
                route,
                op: command.op.name(),
                command,
                since: now,
            },
        );
        self.order.push_back((key, now));
        Ok(false)
    }

    /// The commands of every waiting request.
    pub fn commands(&self) -> impl Iterator<Item = &Command> {
        self.waiting.values().map(|w| &w.command)
    }

    /// The command of the request waiting for `key`, if any.
    pub fn command(&self, key: (ClientId, Seq)) -> Option<&Command> {
        self.waiting.get(&key).map(|w| &w.command)
    }

    /// Whether a request waits for `key`.
    pub fn contains(&self, key: (ClientId, Seq)) -> bool {
        self.waiting.contains_key(&key)
    }

    /// Takes the request waiting for `key`, if any.
    pub fn take(&mut self, key: (ClientId, Seq)) -> Option<Waiting> {
        self.waiting.remove(&key)
    }

    /// Forgets requests older than [`PENDING_REQUEST_TTL`]; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while let Some(&(key, arrived)) = self.order.front() {
            if now.saturating_duration_since(arrived) < PENDING_REQUEST_TTL {
                break;
            }
            self.order.pop_front();
            if self.waiting.get(&key).is_some_and(|w| w.since == arrived) {
                self.waiting.remove(&key);
                expired += 1;
            }
        }
        // Keys answered long ago leave stale order entries; keep the queue bounded.
        if self.order.len() > 2 * self.limit {
            let waiting = &self.waiting;
            self.order
                .retain(|(key, arrived)| waiting.get(key).is_some_and(|w| w.since == *arrived));
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Op;

    fn route(frames: Vec<Vec<u8>>) -> Route {
        Route { broker: 0, frames }
    }

    fn cmd(client_id: ClientId, seq: Seq) -> Command {
        Command {
            client_id,
            seq,
            op: Op::Noop,
            session: None,
        }
    }

    #[test]
    fn a_retry_updates_the_route() {
        let now = Instant::now();
        let mut pending = PendingRequests::new();
        assert_eq!(
            pending.insert(route(vec![b"a".to_vec()]), cmd(1, 1), now),
            Ok(false)
        );
        assert_eq!(
            pending.insert(route(vec![b"b".to_vec()]), cmd(1, 1), now),
            Ok(true)
        );
        assert_eq!(pending.len(), 1);
        assert_eq!(
            pending.take((1, 1)).unwrap().route.frames,
            vec![b"b".to_vec()]
        );
        assert!(pending.take((1, 1)).is_none());
        assert!(pending.is_empty());
    }

    #[test]
    fn old_requests_expire_and_answered_ones_do_not_count() {
        let start = Instant::now();
        let mut pending = PendingRequests::new();
        pending.insert(route(vec![]), cmd(1, 1), start).unwrap();
        pending.insert(route(vec![]), cmd(2, 1), start).unwrap();
        pending.take((2, 1));
        let later = start + PENDING_REQUEST_TTL / 2;
        pending.insert(route(vec![]), cmd(3, 1), later).unwrap();
        assert_eq!(pending.expire(start + PENDING_REQUEST_TTL), 1);
        assert!(pending.take((1, 1)).is_none());
        assert!(pending.take((3, 1)).is_some());
    }

    #[test]
    fn the_map_is_bounded() {
        let now = Instant::now();
        let mut pending = PendingRequests::with_limit(4);
        for seq in 0..4 {
            pending.insert(route(vec![]), cmd(1, seq), now).unwrap();
        }
        // The refused request's route comes back, to answer it.
        assert_eq!(
            pending.insert(route(vec![b"r".to_vec()]), cmd(2, 0), now),
            Err(Full(route(vec![b"r".to_vec()])))
        );
        // A retry of a waiting request is still taken.
        assert_eq!(pending.insert(route(vec![]), cmd(1, 3), now), Ok(true));
        assert_eq!(
            PendingRequests::with_limit(usize::MAX).limit,
            MAX_PENDING_REQUESTS
        );
    }
}
