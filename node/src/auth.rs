//! The node's seal: every frame it sends to another cluster process is sealed with the
//! cluster key, and every frame it takes from one must open before it is decoded
//! ([`proto::seal`], docs/architecture.md "Who may speak").
//!
//! One [`Seal`] is shared (cloned) by the rooms that talk to the fabric — the peers
//! through the proxies, the clients through the brokers, the reference link — so that
//! refusals are counted in one place: in `/metrics` by source and reason
//! (`paxos_auth_rejected_total{from,reason}`), in `/status` (`auth`), and in the log at
//! most once per [`LOG_INTERVAL`] per source, naming who the frame claimed to be from.
//!
//! A frame that does not open is dropped before any of it is decoded: a process without
//! the key cannot make this node apply, answer, or learn anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use proto::report::AuthReport;
use proto::seal::{Keyring, SealError};
use service::RateLimitedLog;

use crate::metrics::Metrics;

/// At most one log line per source in this interval (the rest are counted).
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);
/// Longest description of a refused frame kept for `/status`.
pub const MAX_LAST_REFUSAL_BYTES: usize = 300;

/// Where a refused frame came from (a label of the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// A peer, through a proxy.
    Peer,
    /// A broker's backend.
    Broker,
    /// The reference (its replies and its membership events).
    Reference,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Peer => "peer",
            Source::Broker => "broker",
            Source::Reference => "reference",
        }
    }
}

#[derive(Debug, Default)]
struct Refusals {
    count: u64,
    last: Option<String>,
    logs: HashMap<Source, RateLimitedLog>,
}

/// The cluster's keys, and the account of the frames that did not open.
#[derive(Debug, Clone)]
pub(crate) struct Seal {
    keys: Keyring,
    metrics: Metrics,
    refusals: Arc<Mutex<Refusals>>,
}

impl Seal {
    /// A seal with `keys`, counting refusals in `metrics`.
    pub(crate) fn new(keys: Keyring, metrics: Metrics) -> Seal {
        Seal {
            keys,
            metrics,
            refusals: Arc::default(),
        }
    }

    /// Seals `body` bound to `aad`.
    pub(crate) fn seal(&self, aad: &[&[u8]], body: &[u8]) -> Vec<u8> {
        self.keys.seal(aad, body)
    }

    /// Opens `frame` bound to `aad`; a frame that does not open is counted and logged
    /// (`who`: what it claimed to be, for the log) and `None` returned.
    pub(crate) fn open(
        &self,
        from: Source,
        who: &dyn std::fmt::Display,
        aad: &[&[u8]],
        frame: &[u8],
    ) -> Option<Vec<u8>> {
        match self.keys.open(aad, frame) {
            Ok(body) => Some(body),
            Err(error) => {
                self.refuse(from, who, error);
                None
            }
        }
    }

    fn refuse(&self, from: Source, who: &dyn std::fmt::Display, error: SealError) {
        self.metrics.auth_rejected(from.as_str(), error.as_str());
        let mut text = format!("{} frame from {who}: {error}", from.as_str());
        if text.len() > MAX_LAST_REFUSAL_BYTES {
            let mut end = MAX_LAST_REFUSAL_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        refusals.count += 1;
        refusals
            .logs
            .entry(from)
            .or_insert_with(|| RateLimitedLog::new(LOG_INTERVAL))
            .warn(Instant::now(), "cluster key (authentication)", &text);
        refusals.last = Some(text);
    }

    /// The `auth` part of `/status`.
    pub(crate) fn report(&self) -> AuthReport {
        let refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        AuthReport {
            key_ids: self.keys.key_ids(),
            rejected: refusals.count,
            last_rejected: refusals.last.clone(),
        }
    }
}

#[cfg(all(test, not(paxos_insecure_unsealed)))]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_by_source_and_reason_and_reported() {
        let metrics = Metrics::new();
        let ours = Keyring::parse(&Keyring::generate_line()).unwrap();
        let theirs = Keyring::parse(&Keyring::generate_line()).unwrap();
        let seal = Seal::new(ours.clone(), metrics.clone());
        let good = seal.seal(&[b"t"], b"body");
        assert_eq!(
            seal.open(Source::Peer, &"node-2", &[b"t"], &good).unwrap(),
            b"body"
        );
        let foreign = theirs.seal(&[b"t"], b"body");
        assert!(
            seal.open(Source::Peer, &"node-9", &[b"t"], &foreign)
                .is_none()
        );
        assert!(
            seal.open(Source::Broker, &"broker", &[b"u"], &good)
                .is_none()
        );
        let report = seal.report();
        assert_eq!(report.key_ids, ours.key_ids());
        assert_eq!(report.rejected, 2);
        let last = report.last_rejected.unwrap();
        assert!(last.contains("broker frame from broker"), "{last}");
        let text = metrics.encode();
        assert!(
            text.contains(r#"auth_rejected_total{from="peer",reason="unknown_key"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"auth_rejected_total{from="broker",reason="forged"} 1"#));
    }
}
