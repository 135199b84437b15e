//! The node's Prometheus metrics (`/metrics`), with `prometheus-client`.
//!
//! Every metric is an atomic behind an `Arc`, so the driver, the WAL thread and the HTTP
//! handler share one [`Metrics`] by cloning it. Label sets are small and fixed (op
//! names and result codes), so the families stay bounded.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of the request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The op name ([`proto::Op::name`]).
    pub op: &'static str,
    /// `ok` or the error code.
    pub result: &'static str,
}

/// Labels of the dropped-message counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// Why it was dropped.
    pub reason: &'static str,
}

/// Labels of the refused-frame counter ([`crate::auth`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// `peer`, `broker` or `reference`.
    pub from: &'static str,
    /// [`proto::seal::SealError::as_str`].
    pub reason: &'static str,
}

/// Labels of the login counter ([`crate::logins`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    /// `checked` (password verified), `hashed` (a new password), `wrong_password`,
    /// `locked` (too many wrong passwords), `overloaded`, `failed`.
    pub result: &'static str,
}

/// Labels of the per-kind Paxos message counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// `in` (from a peer) or `out` (published).
    pub direction: &'static str,
    /// [`proto::paxos::Message::name`].
    pub kind: &'static str,
}

/// The kinds of Paxos messages counted apart (every [`proto::paxos::Message::name`]).
pub const PROTOCOL_KINDS: [&str; 16] = [
    "prepare",
    "promise",
    "accept",
    "accepted",
    "decide",
    "nack",
    "heartbeat",
    "forward",
    "fetch",
    "decided",
    "fetch_snapshot",
    "snapshot_chunk",
    "read_index",
    "read_indexed",
    "confirm",
    "confirmed",
];

/// Paxos messages by direction and kind: each series created once, so counting one on
/// the hot path is an atomic add, not a map lookup.
#[derive(Debug, Clone)]
pub struct ProtocolCounters {
    inbound: Vec<Counter>,
    outbound: Vec<Counter>,
}

impl ProtocolCounters {
    fn new(family: &Family<ProtocolLabels, Counter>) -> ProtocolCounters {
        let series = |direction| {
            PROTOCOL_KINDS
                .iter()
                .map(|kind| {
                    family
                        .get_or_create(&ProtocolLabels { direction, kind })
                        .clone()
                })
                .collect()
        };
        ProtocolCounters {
            inbound: series("in"),
            outbound: series("out"),
        }
    }

    fn index(message: &proto::paxos::Message) -> Option<usize> {
        let name = message.name();
        PROTOCOL_KINDS.iter().position(|kind| *kind == name)
    }

    /// Counts a message received from a peer.
    pub fn received(&self, message: &proto::paxos::Message) {
        if let Some(counter) = Self::index(message).and_then(|i| self.inbound.get(i)) {
            counter.inc();
        }
    }

    /// Counts a message published.
    pub fn sent(&self, message: &proto::paxos::Message) {
        if let Some(counter) = Self::index(message).and_then(|i| self.outbound.get(i)) {
            counter.inc();
        }
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Every metric of a node.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Client commands this node handed to the Paxos core.
    pub proposals: Counter,
    /// Phase 1 (candidacy to leadership) durations.
    pub phase1_seconds: Histogram,
    /// Phase 2 durations at the leader (value proposed to decided).
    pub phase2_seconds: Histogram,
    /// Slots applied.
    pub decided_slots: Counter,
    /// The last applied slot.
    pub applied_slot: Gauge,
    /// Commands per applied slot.
    pub batch_commands: Histogram,
    /// `fdatasync` latency of the WAL.
    pub wal_fsync_seconds: Histogram,
    /// Records per synced WAL group.
    pub wal_group_records: Histogram,
    /// Records written to the WAL.
    pub wal_records: Counter,
    /// Bytes written to the WAL.
    pub wal_bytes: Counter,
    /// WAL fsyncs the loop made itself, the writer thread being idle
    /// ([`crate::wal::LoopCommit`]).
    pub wal_loop_fsyncs: Counter,
    /// Client requests answered by this node, by op and result.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from receiving a client request to answering it.
    pub request_seconds: Histogram,
    /// Candidacies this node started.
    pub elections: Counter,
    /// Times this node became leader.
    pub leaderships: Counter,
    /// store.json snapshots written.
    pub snapshots: Counter,
    /// store.json write latency.
    pub snapshot_seconds: Histogram,
    /// Messages dropped (undecodable, full queues), by reason.
    pub dropped: Family<DropLabels, Counter>,
    /// Frames that did not open under the cluster key, by source and reason.
    pub auth_rejected: Family<AuthLabels, Counter>,
    /// Paxos messages received from peers.
    pub messages_in: Counter,
    /// Paxos messages published.
    pub messages_out: Counter,
    /// Paxos messages by direction and kind.
    pub protocol: ProtocolCounters,
    /// Clock offset applied by Berkeley synchronisation, in milliseconds.
    pub clock_offset_ms: Gauge,
    /// Times this node moved to another proxy because its probes stopped coming back.
    pub proxy_switches: Counter,
    /// Chat logins this node took, by what came of the password.
    pub logins: Family<LoginLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set, registered under the `paxos_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("paxos");
        let proposals = Counter::default();
        let phase1_seconds = latency_histogram();
        let phase2_seconds = latency_histogram();
        let decided_slots = Counter::default();
        let applied_slot = Gauge::default();
        let batch_commands = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        let wal_fsync_seconds = latency_histogram();
        let wal_group_records = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let wal_records = Counter::default();
        let wal_bytes = Counter::default();
        let wal_loop_fsyncs = Counter::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = latency_histogram();
        let elections = Counter::default();
        let leaderships = Counter::default();
        let snapshots = Counter::default();
        let snapshot_seconds = latency_histogram();
        let dropped = Family::<DropLabels, Counter>::default();
        let auth_rejected = Family::<AuthLabels, Counter>::default();
        let messages_in = Counter::default();
        let messages_out = Counter::default();
        let protocol_family = Family::<ProtocolLabels, Counter>::default();
        let protocol = ProtocolCounters::new(&protocol_family);
        let clock_offset_ms = Gauge::default();
        let proxy_switches = Counter::default();
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register(
            "logins",
            "Chat logins taken, by what came of the password",
            logins.clone(),
        );
        registry.register(
            "proposals",
            "Client commands handed to the Paxos core",
            proposals.clone(),
        );
        registry.register(
            "phase1_seconds",
            "Phase 1 duration, from candidacy to leadership",
            phase1_seconds.clone(),
        );
        registry.register(
            "phase2_seconds",
            "Phase 2 duration at the leader, from proposal to decision",
            phase2_seconds.clone(),
        );
        registry.register("decided_slots", "Slots applied", decided_slots.clone());
        registry.register("applied_slot", "Last applied slot", applied_slot.clone());
        registry.register(
            "batch_commands",
            "Commands per applied slot",
            batch_commands.clone(),
        );
        registry.register(
            "wal_fsync_seconds",
            "WAL fdatasync latency",
            wal_fsync_seconds.clone(),
        );
        registry.register(
            "wal_group_records",
            "Records per synced WAL group (group commit)",
            wal_group_records.clone(),
        );
        registry.register(
            "wal_records",
            "Records written to the WAL",
            wal_records.clone(),
        );
        registry.register("wal_bytes", "Bytes written to the WAL", wal_bytes.clone());
        registry.register(
            "wal_loop_fsyncs",
            "WAL fsyncs the node's loop made itself, the writer thread being idle",
            wal_loop_fsyncs.clone(),
        );
        registry.register(
            "requests",
            "Client requests answered, by op and result",
            requests.clone(),
        );
        registry.register(
            "request_seconds",
            "Time from receiving a client request to answering it",
            request_seconds.clone(),
        );
        registry.register("elections", "Candidacies started", elections.clone());
        registry.register(
            "leaderships",
            "Times this node became leader",
            leaderships.clone(),
        );
        registry.register(
            "snapshots",
            "store.json snapshots written",
            snapshots.clone(),
        );
        registry.register(
            "snapshot_seconds",
            "store.json write duration",
            snapshot_seconds.clone(),
        );
        registry.register("dropped", "Messages dropped, by reason", dropped.clone());
        registry.register(
            "auth_rejected",
            "Frames refused because they did not open under the cluster key, by source and reason",
            auth_rejected.clone(),
        );
        registry.register(
            "messages_in",
            "Paxos messages received",
            messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Paxos messages published",
            messages_out.clone(),
        );
        registry.register(
            "protocol_messages",
            "Paxos messages by direction (in, out) and kind (prepare, promise, accept, ...)",
            protocol_family,
        );
        registry.register(
            "clock_offset_ms",
            "Clock offset from Berkeley synchronisation, in milliseconds",
            clock_offset_ms.clone(),
        );
        registry.register(
            "proxy_switches",
            "Times this node moved to another proxy (its probes stopped coming back)",
            proxy_switches.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            proposals,
            phase1_seconds,
            phase2_seconds,
            decided_slots,
            applied_slot,
            batch_commands,
            wal_fsync_seconds,
            wal_group_records,
            wal_records,
            wal_bytes,
            wal_loop_fsyncs,
            requests,
            request_seconds,
            elections,
            leaderships,
            snapshots,
            snapshot_seconds,
            dropped,
            auth_rejected,
            messages_in,
            messages_out,
            protocol,
            clock_offset_ms,
            proxy_switches,
            logins,
        }
    }

    /// Counts a dropped message.
    pub fn drop(&self, reason: &'static str) {
        self.dropped.get_or_create(&DropLabels { reason }).inc();
    }

    /// Counts a frame that did not open under the cluster key.
    pub fn auth_rejected(&self, from: &'static str, reason: &'static str) {
        self.auth_rejected
            .get_or_create(&AuthLabels { from, reason })
            .inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_prometheus_text_format() {
        let metrics = Metrics::new();
        metrics.proposals.inc();
        metrics
            .requests
            .get_or_create(&RequestLabels {
                op: "put",
                result: "ok",
            })
            .inc();
        metrics.wal_fsync_seconds.observe(0.004);
        let text = metrics.encode();
        assert!(text.contains("paxos_proposals_total 1"), "{text}");
        assert!(
            text.contains(r#"paxos_requests_total{op="put",result="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains("paxos_wal_fsync_seconds_count 1"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
