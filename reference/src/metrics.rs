//! The reference's Prometheus metrics (`/metrics`), with `prometheus-client`.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `reference_members` | gauge | names that hold a rank |
//! | `reference_members_alive` | gauge | of them, alive now |
//! | `reference_expirations_total` | counter | members that went silent longer than the expiry timeout |
//! | `reference_registrations_total` | counter | registrations answered with a rank (new names and returning ones) |
//! | `reference_refused_registrations_total{reason}` | counter | registrations refused, by [`Refused`] reason (`full`, `invalid`, `not_saved`) |
//! | `reference_requests_total` | counter | requests answered (register, heartbeat, members) |
//! | `reference_malformed_requests_total` | counter | malformed requests |
//! | `reference_registry_saves_total` | counter | registry file writes |
//! | `reference_registry_save_failures_total` | counter | registry file writes that failed |
//! | `reference_membership_events_total` | counter | membership events published |
//! | `reference_auth_rejected_total{reason}` | counter | requests that do not open under the cluster key (`malformed`, `unknown_key`, `forged`), refused before decoding |
//!
//! Labels come from fixed sets only: a node name is never a label (any peer can pick
//! one, and the registry already bounds how many hold a rank).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a registration was refused: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refused {
    /// Every rank is taken.
    Full,
    /// The name or the status address breaks a limit.
    Invalid,
    /// A new name while the registry cannot be saved (its rank could not be put on disk
    /// before it is announced).
    NotSaved,
}

impl Refused {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Full => "full",
            Refused::Invalid => "invalid",
            Refused::NotSaved => "not_saved",
        }
    }
}

/// Labels of `reference_refused_registrations_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// [`Refused::label`].
    pub reason: &'static str,
}

/// Labels of `reference_auth_rejected_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// [`proto::seal::SealError::as_str`].
    pub reason: &'static str,
}

/// Every metric of the reference.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Names that hold a rank.
    pub members: Gauge,
    /// Of them, alive now.
    pub members_alive: Gauge,
    /// Members that went silent too long.
    pub expirations: Counter,
    /// Registrations answered with a rank.
    pub registrations: Counter,
    /// Registrations refused, by reason (count one with [`Metrics::refused`]).
    pub refused_by_reason: Family<RefusedLabels, Counter>,
    /// Requests answered.
    pub requests: Counter,
    /// Malformed requests.
    pub malformed: Counter,
    /// Registry file writes.
    pub saves: Counter,
    /// Registry file writes that failed.
    pub save_failures: Counter,
    /// Membership events published.
    pub events: Counter,
    /// Requests that do not open under the cluster key, by reason.
    pub auth_rejected: Family<AuthLabels, Counter>,
    /// Sealed registrations and heartbeats not newer than one already taken from their
    /// node (replayed): they change nothing.
    pub stale: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set, registered under the `reference_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("reference");
        let metrics = Metrics {
            registry: Arc::new(Registry::default()),
            members: Gauge::default(),
            members_alive: Gauge::default(),
            expirations: Counter::default(),
            registrations: Counter::default(),
            refused_by_reason: Family::default(),
            requests: Counter::default(),
            malformed: Counter::default(),
            saves: Counter::default(),
            save_failures: Counter::default(),
            events: Counter::default(),
            auth_rejected: Family::default(),
            stale: Counter::default(),
        };
        registry.register("members", "Names that hold a rank", metrics.members.clone());
        registry.register(
            "members_alive",
            "Members alive now (heard within the expiry timeout)",
            metrics.members_alive.clone(),
        );
        registry.register(
            "stale_requests",
            "Registrations and heartbeats not newer than one already taken from their node \
             (replayed): they change nothing",
            metrics.stale.clone(),
        );
        registry.register(
            "expirations",
            "Members that went silent longer than the expiry timeout",
            metrics.expirations.clone(),
        );
        registry.register(
            "registrations",
            "Registrations answered with a rank",
            metrics.registrations.clone(),
        );
        registry.register(
            "refused_registrations",
            "Registrations refused, by reason",
            metrics.refused_by_reason.clone(),
        );
        registry.register("requests", "Requests answered", metrics.requests.clone());
        registry.register(
            "malformed_requests",
            "Malformed requests",
            metrics.malformed.clone(),
        );
        registry.register(
            "registry_saves",
            "Registry file writes",
            metrics.saves.clone(),
        );
        registry.register(
            "registry_save_failures",
            "Registry file writes that failed",
            metrics.save_failures.clone(),
        );
        registry.register(
            "membership_events",
            "Membership events published",
            metrics.events.clone(),
        );
        registry.register(
            "auth_rejected",
            "Requests that do not open under the cluster key, by reason",
            metrics.auth_rejected.clone(),
        );
        // Every reason has its series from the start: a refusal shows as a rise, not as
        // a new series.
        for reason in [Refused::Full, Refused::Invalid, Refused::NotSaved] {
            let _created = metrics.refused_by_reason.get_or_create(&RefusedLabels {
                reason: reason.label(),
            });
        }
        Metrics {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    /// The registry `/metrics` shows.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// A registration was refused for `reason`.
    pub fn refused(&self, reason: Refused) {
        self.refused_by_reason
            .get_or_create(&RefusedLabels {
                reason: reason.label(),
            })
            .inc();
    }

    /// Sets the member gauges.
    pub fn set_members(&self, members: usize, alive: usize) {
        self.members.set(i64::try_from(members).unwrap_or(i64::MAX));
        self.members_alive
            .set(i64::try_from(alive).unwrap_or(i64::MAX));
    }
}
