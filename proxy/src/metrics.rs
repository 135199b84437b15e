//! The proxy's Prometheus metrics (`/metrics`), read from the forwarder's counters at
//! each scrape.
//!
//! The forwarder already counts everything in atomics of its own
//! ([`transport::ForwardStats`], written by its thread on the hot path); a second set of
//! prometheus counters would cost every message a second set of increments. So the
//! registry holds a [`Collector`] that turns a snapshot of those atomics into metrics
//! when `/metrics` is asked for, and the hot path pays nothing for it.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `proxy_forwarded_messages_total{kind}` | counter | messages forwarded downstream, by the kind of their topic ([`proto::topic::Kind`]: a fixed set of 15) |
//! | `proxy_forwarded_bytes_total` | counter | bytes of those messages |
//! | `proxy_subscription_messages_total` | counter | (un)subscriptions forwarded upstream |
//! | `proxy_dropped_messages_total` | counter | messages read that the other socket refused |
//! | `proxy_publishers` | gauge | publishers connected to the frontend now |
//! | `proxy_subscribers` | gauge | subscribers connected to the backend now |
//!
//! The `kind` label comes from [`proto::topic::Kind::of`], never from the topic itself:
//! topics are chosen by any publisher and their suffixes are unbounded. Every kind is
//! always shown, zero or not, so a dashboard's series never appear out of nowhere.
//!
//! What is not counted: the copies an XPUB drops for a subscriber whose pipe is full.
//! libzmq drops them without telling (`ZMQ_XPUB_NODROP` would make the send fail
//! instead, but then the forwarder must wait or drop for *every* subscriber, and a slow
//! subscriber would again slow the others), and it keeps no counter of them.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use proto::topic::Kind;
use transport::ForwardStats;

/// A registry (prefix `proxy`) whose metrics are read from `stats` at each scrape.
pub fn registry(stats: Arc<ForwardStats>) -> Registry {
    let mut registry = Registry::with_prefix("proxy");
    registry.register_collector(Box::new(ForwarderCollector(stats)));
    registry
}

#[derive(Debug)]
struct ForwarderCollector(Arc<ForwardStats>);

impl Collector for ForwarderCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let stats = &self.0;
        {
            let mut family = encoder.encode_descriptor(
                "forwarded_messages",
                "Messages forwarded from publishers to subscribers, by the kind of their topic",
                None,
                MetricType::Counter,
            )?;
            for kind in Kind::ALL {
                let labels = [("kind", kind.name())];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(stats.of_kind(kind)).encode(metric)?;
            }
        }
        let (_, bytes, subscriptions) = stats.snapshot();
        let (publishers, subscribers) = stats.connected();
        counter(
            &mut encoder,
            "forwarded_bytes",
            "Bytes of the messages forwarded",
            bytes,
        )?;
        counter(
            &mut encoder,
            "subscription_messages",
            "Subscription and unsubscription messages forwarded upstream",
            subscriptions,
        )?;
        counter(
            &mut encoder,
            "dropped_messages",
            "Messages the forwarder read and could not pass on (not the copies an XPUB drops for a full subscriber, which libzmq does not count)",
            stats.dropped(),
        )?;
        gauge(
            &mut encoder,
            "publishers",
            "Publishers connected to the frontend (XSUB) now",
            publishers,
        )?;
        gauge(
            &mut encoder,
            "subscribers",
            "Subscribers connected to the backend (XPUB) now",
            subscribers,
        )
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let metric = ConstCounter::new(value);
    let descriptor = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(descriptor)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    let descriptor = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(descriptor)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;

    #[test]
    fn every_kind_is_shown_and_counts_are_read_at_scrape_time() {
        let stats = Arc::new(ForwardStats::default());
        let registry = registry(stats.clone());
        stats.by_kind[Kind::PaxosAccept.index()].store(7, Relaxed);
        stats.bytes.store(700, Relaxed);
        stats.publishers.store(3, Relaxed);
        stats.subscribers.store(4, Relaxed);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "proxy_forwarded_messages_total{kind=\"paxos_accept\"} 7",
            "proxy_forwarded_messages_total{kind=\"other\"} 0",
            "proxy_forwarded_bytes_total 700",
            "proxy_subscription_messages_total 0",
            "proxy_dropped_messages_total 0",
            "proxy_publishers 3",
            "proxy_subscribers 4",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert_eq!(
            text.matches("proxy_forwarded_messages_total{").count(),
            Kind::COUNT
        );
        // Read again at the next scrape.
        stats.publishers.store(1, Relaxed);
        let mut again = String::new();
        prometheus_client::encoding::text::encode(&mut again, &registry).unwrap();
        assert!(again.contains("proxy_publishers 1"), "{again}");
    }
}
