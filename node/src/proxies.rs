//! Which of the proxies a node publishes through, and when it moves on.
//!
//! The node has a PUB for every proxy and a SUB connected to all of them. It publishes
//! through **one** proxy at a time ([`ProxyChoice`]), so the pair costs nothing next to
//! a single proxy: every message crosses one forwarder, once. Its peers hear it whichever
//! proxy it uses. To notice a proxy that died or was paused, the node publishes a probe
//! (`probe.<name>`) through it every [`PROBE_INTERVAL`] and listens for it; when no probe
//! has come back for [`PROBE_TIMEOUT`], it moves to the next proxy (and on, round the
//! list, while none answers). What was published into the dead proxy meanwhile is lost,
//! as pub/sub may lose anything: the Paxos core retransmits on its ticks.

use std::time::{Duration, Instant};

/// How often a node sends a probe through the proxy it publishes through.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(25);
/// A proxy through which no probe came back for this long is given up for the next.
/// Well under the default election timeout (200 ms): the leader must be heard through
/// the other proxy before its followers give up on it, or every proxy failover would
/// change the leader.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(100);

/// Which proxy a node publishes through, and when to move on: plain data, time passed
/// in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxyChoice {
    count: usize,
    active: usize,
    /// When `active` was chosen.
    since: Instant,
    /// When a probe sent through `active` last came back.
    last_back: Option<Instant>,
    /// When the last probe was sent.
    last_probe: Option<Instant>,
    probes: u64,
}

impl ProxyChoice {
    /// A choice among `count` proxies (at least one), starting with the first.
    pub(crate) fn new(count: usize, now: Instant) -> ProxyChoice {
        assert!(count > 0, "a node needs a proxy");
        ProxyChoice {
            count,
            active: 0,
            since: now,
            last_back: None,
            last_probe: None,
            probes: 0,
        }
    }

    /// The proxy to publish through.
    pub(crate) fn active(&self) -> usize {
        self.active
    }

    /// A probe to send now through [`ProxyChoice::active`], if one is due: its body.
    pub(crate) fn probe(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self
            .last_probe
            .is_some_and(|t| now.saturating_duration_since(t) < PROBE_INTERVAL)
        {
            return None;
        }
        self.last_probe = Some(now);
        self.probes += 1;
        let mut body = vec![u8::try_from(self.active).unwrap_or(u8::MAX)];
        body.extend_from_slice(&self.probes.to_le_bytes());
        Some(body)
    }

    /// A probe came back; only one sent through the proxy in use counts.
    pub(crate) fn back(&mut self, body: &[u8], now: Instant) {
        if body.len() == 9 && usize::from(body[0]) == self.active {
            self.last_back = Some(now);
        }
    }

    /// Moves to the next proxy when the one in use has been silent for
    /// [`PROBE_TIMEOUT`]; returns `(from, to)` when it did.
    pub(crate) fn check(&mut self, now: Instant) -> Option<(usize, usize)> {
        let heard = self.last_back.unwrap_or(self.since).max(self.since);
        if self.count < 2 || now.saturating_duration_since(heard) < PROBE_TIMEOUT {
            return None;
        }
        let from = self.active;
        self.active = (self.active + 1) % self.count;
        self.since = now;
        Some((from, self.active))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_proxy_is_given_up_for_the_next() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut choice = ProxyChoice::new(2, start);
        let probe = choice.probe(at(0)).unwrap();
        assert!(choice.probe(at(10)).is_none(), "one per interval");
        choice.back(&probe, at(1));
        assert_eq!(choice.check(at(90)), None, "heard 89 ms ago");
        // Nothing back for the timeout: the next proxy.
        assert_eq!(choice.check(at(110)), Some((0, 1)));
        assert_eq!(choice.active(), 1);
        // A late probe of the old proxy does not count for the new one.
        choice.back(&probe, at(120));
        assert_eq!(choice.check(at(220)), Some((1, 0)), "round the list");
        // A single proxy is never given up.
        let mut one = ProxyChoice::new(1, start);
        assert_eq!(one.check(at(10_000)), None);
    }
}
