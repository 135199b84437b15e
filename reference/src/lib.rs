//! # reference — ranks, heartbeats and membership of paxos-zmq
//!
//! Nodes connect DEALER sockets to the reference's ROUTER and send
//! [`RefRequest`]s: `Register` (join, or join again, and learn the node's stable rank),
//! `Heartbeat` (still alive) and `Members` (the member list). Every change of the member
//! list or of anyone's liveness, and every [`Config::publish_interval`] anyway (pub/sub
//! drops messages), the reference publishes a [`proto::fabric::MembershipEvent`] on the
//! proxy topic [`proto::topic::MEMBERSHIP`]. It is not on the data path: if it is down, the
//! cluster keeps serving with the membership it last knew.
//!
//! ## Layout
//! - [`registry`]: names, ranks, liveness — a plain data structure, time passed in,
//!   unit-tested without sockets or files.
//! - [`store`]: the registry file, written atomically.
//! - [`run`]: the only code that owns the sockets, the clock and the file; `main.rs` only
//!   parses flags, opens the store, binds and calls it.
//! - The status port ([`service::http`]): `/status` (a [`ReferenceReport`] taken by the
//!   loop between two batches), `/readyz` (ready as soon as [`run`] answers: it is handed
//!   the loaded registry), `/livez`, `/metrics` ([`metrics`]: members, alive members,
//!   expirations, registrations and refusals by reason, malformed requests, saves and
//!   failed saves).
//! - [`health`]: the probe behind `reference health`.
//!
//! ## Invariants kept here
//! - **Stable ranks.** A name's rank never changes and is never given to another name; it
//!   is on disk before anything that announces it (a `Registered` reply, a member list, a
//!   membership event) leaves the process, so a restarted reference gives a
//!   re-registering node its old rank. Replies wait for the save of their batch
//!   ([`Reference::take`], then [`Reference::answer`]).
//! - **A full disk stops nobody.** When the registry cannot be written (ENOSPC, a
//!   read-only file system), the reference logs it (at most once per
//!   [`SAVE_ERROR_LOG_INTERVAL`]), keeps its members in memory and keeps serving
//!   heartbeats, member lists, re-registrations of names already on disk and the
//!   membership events. What it cannot do is give a **new** rank: a rank it did not save
//!   would be forgotten by a restart and given to another name. So the names of the
//!   failed batch are taken back ([`registry::Registry::forget_unsaved`]) and answered
//!   `unavailable` ("registry not saved: <reason>"), and every new name after them too,
//!   until a save succeeds. Saves are tried again at every change and every
//!   [`SAVE_RETRY_INTERVAL`]; `/status` shows `registry_saved: false` and the error
//!   meanwhile.
//! - **Monotone epochs.** Every published event carries a higher epoch than the one
//!   before, and a restart moves past the last saved epoch. One exception: events
//!   published while the registry could not be saved carry epochs that are not on disk,
//!   so a reference restarted then may publish those epochs again. No consumer compares
//!   epochs (nodes take each member list as it comes), and ranks are not affected.
//! - **Bounded.** At most [`registry::MAX_MEMBERS`] names; one receive batch
//!   ([`RECV_BATCH_MAX`]); the transport's bounded queues. A malformed request is counted,
//!   logged at most once per interval and answered with a `bad_request` error.
//!
//! ## Known limits
//! - Anyone who can reach the ROUTER can register names, and a rank is never given back:
//!   64 bogus names exhaust the ranks for good (until the operator edits or removes the
//!   registry file). The reference trusts its network, like the rest of the cluster.

mod health;
pub mod metrics;
pub mod registry;
mod run;
pub mod store;

pub use health::{Health, HealthError, health};
pub use run::{Sockets, bind, run};

use std::time::{Duration, Instant};

use proto::fabric::{
    MEMBERSHIP_EVENT, REFERENCE_REPLY, REFERENCE_REQUEST, RefReply, RefRequest, Stamp,
};
use proto::limits::MAX_ROUTING_FRAME_BYTES;
use proto::report::{AuthReport, ReferenceReport};
use proto::seal::Keyring;
use proto::{Error, ErrorCode};
use transport::{Multipart, TransportError};

use crate::metrics::AuthLabels;
use crate::metrics::{Metrics, Refused};
use crate::registry::{Now, Registry, RegistryError};
use crate::store::{Store, StoreError};
use service::RateLimitedLog;

/// Where nodes connect, by default.
pub const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:5559";
/// The proxy frontend the membership events are published to, by default.
pub const DEFAULT_PROXY_FRONTEND: &str = "tcp://127.0.0.1:5557";
/// The data folder, by default (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "data/reference";
/// Where the status port listens, by default.
pub const DEFAULT_STATUS_ADDR: &str = "127.0.0.1:7090";
/// Most requests taken from the socket at once (and answered after one store write).
pub const RECV_BATCH_MAX: usize = 256;
/// While the registry cannot be saved, a save is tried again at least this often (and at
/// every change).
pub const SAVE_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// At most one failed-save error in the log per this interval.
pub const SAVE_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Settings of [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// A member silent for longer than this is reported as gone.
    pub expiry_timeout: Duration,
    /// The membership is published at least this often.
    pub publish_interval: Duration,
    /// At most one malformed-request warning per this interval.
    pub malformed_log_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            expiry_timeout: Duration::from_secs(5),
            publish_interval: Duration::from_secs(1),
            malformed_log_interval: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ReferenceError> {
        for (name, value) in [
            ("expiry timeout", self.expiry_timeout),
            ("publish interval", self.publish_interval),
            ("malformed log interval", self.malformed_log_interval),
        ] {
            if value.is_zero() {
                return Err(ReferenceError::Config(format!(
                    "{name} must be more than zero"
                )));
            }
        }
        Ok(())
    }

    /// How often silent members are looked for: a fraction of the timeout, so that a
    /// member is reported gone soon after it is.
    fn expire_interval(&self) -> Duration {
        (self.expiry_timeout / 10).clamp(Duration::from_millis(10), Duration::from_millis(500))
    }
}

/// Counters of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered.
    pub requests: u64,
    /// Malformed requests.
    pub malformed: u64,
    /// Membership events published.
    pub published: u64,
    /// Registry file writes that succeeded.
    pub saves: u64,
    /// Requests that did not open under the cluster key.
    pub auth_rejected: u64,
}

/// Why the reference stopped other than by shutdown, or could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The settings cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The registry file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A socket could not be opened, or closed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The status port could not be bound.
    #[error(transparent)]
    StatusPort(#[from] service::http::BindError),
    /// The cluster key cannot be read.
    #[error(transparent)]
    Key(#[from] service::keyfile::KeyFileError),
}

/// Opens the store in `data_dir` and restores the registry from it (an empty one when
/// there is no file yet). A corrupt file is an error that names it.
pub fn open_registry(
    data_dir: &std::path::Path,
    expiry_timeout: Duration,
) -> Result<(Registry, Store), StoreError> {
    let store = Store::open(data_dir)?;
    let registry = match store.load()? {
        Some(persisted) => {
            Registry::restore(&persisted, expiry_timeout).map_err(|reason| StoreError::Corrupt {
                path: store.path().to_owned(),
                reason,
            })?
        }
        None => Registry::new(expiry_timeout),
    };
    Ok((registry, store))
}

/// The reference's state and its handling of one request, without sockets, clock or
/// file: [`run`] passes each request and the time in and sends what comes out.
#[derive(Debug)]
pub struct Reference {
    registry: Registry,
    stats: Stats,
    malformed_log: RateLimitedLog,
    auth_log: RateLimitedLog,
    /// The cluster's keys: requests, replies and events are sealed.
    keys: Keyring,
    metrics: Metrics,
    /// Why the last save failed, while the registry on disk is behind this one.
    save_error: Option<String>,
    save_log: SaveLog,
    /// The last request refused for not opening, for `/status`.
    last_rejected: Option<String>,
}

/// A reply waiting for the save of its batch ([`Reference::take`]): what it says about
/// ranks and members is decided once the batch's changes are on disk, or taken back.
#[derive(Debug)]
pub struct Pending {
    peer: Vec<u8>,
    answer: Answer,
    /// Whether the request was sealed: its reply is too (a peer without the key is told
    /// why in clear, and learns nothing else).
    sealed: bool,
}

#[derive(Debug)]
enum Answer {
    /// Says nothing about ranks: the same whatever the save does.
    Now(RefReply),
    /// `Registered` with the node's rank, if it still holds one after the save.
    Registered(String),
    /// The member list after the save.
    Members,
}

/// The failed-save warning, logged at most once per [`SAVE_ERROR_LOG_INTERVAL`] with the
/// number of failures in between (a full disk fails every retry).
#[derive(Debug, Default)]
struct SaveLog {
    next_log: Option<Instant>,
    not_logged: u64,
    failures: u64,
}

impl Reference {
    /// A reference over a (restored) registry, sealing with `keys`.
    pub fn new(registry: Registry, config: &Config, keys: Keyring) -> Reference {
        Reference {
            registry,
            stats: Stats::default(),
            malformed_log: RateLimitedLog::new(config.malformed_log_interval),
            auth_log: RateLimitedLog::new(config.malformed_log_interval),
            keys,
            metrics: Metrics::new(),
            save_error: None,
            save_log: SaveLog::default(),
            last_rejected: None,
        }
    }

    /// Why the registry could not be saved, while the registry on disk is behind.
    pub fn save_error(&self) -> Option<&str> {
        self.save_error.as_deref()
    }

    /// The registry as `persisted` is on disk: its new names may be announced now.
    pub fn saved(&mut self, persisted: &registry::Persisted) {
        self.registry.mark_saved(persisted);
        self.stats.saves += 1;
        self.metrics.saves.inc();
        if let Some(error) = self.save_error.take() {
            tracing::warn!(
                failed_saves = self.save_log.failures,
                last_error = error,
                "the registry is saved again: new names are taken again"
            );
        }
        self.save_log = SaveLog::default();
    }

    /// Saving the registry failed: the names that are not on disk are taken back (their
    /// replies say `unavailable`), new names are refused until a save succeeds, and
    /// everything else goes on from memory.
    pub fn save_failed(&mut self, error: &StoreError, now: Instant) {
        self.metrics.save_failures.inc();
        let forgotten = self.registry.forget_unsaved();
        let log = &mut self.save_log;
        log.failures += 1;
        if log.next_log.is_some_and(|next| now < next) {
            log.not_logged += 1;
        } else {
            tracing::error!(
                %error,
                refused = ?forgotten,
                not_logged_since_last = log.not_logged,
                retry_in_ms = SAVE_RETRY_INTERVAL.as_millis() as u64,
                "cannot save the registry: serving from memory, refusing new names until it is saved"
            );
            log.not_logged = 0;
            log.next_log = Some(now + SAVE_ERROR_LOG_INTERVAL);
        }
        self.save_error = Some(error.to_string());
    }

    /// The Prometheus metrics (`/metrics`, see [`metrics`]).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Brings the member gauges up to `now`.
    pub fn update_gauges(&self, now: Now) {
        let members = self.registry.members(now);
        let alive = members.iter().filter(|m| m.alive).count();
        self.metrics.set_members(members.len(), alive);
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The `/status` document as of `now`; `endpoint` and `started` are the run's.
    pub fn report(&self, endpoint: &str, started: Instant, now: Now) -> ReferenceReport {
        let uptime = now.instant.saturating_duration_since(started);
        ReferenceReport {
            endpoint: endpoint.to_owned(),
            members: self.registry.report(now),
            epoch: self.registry.epoch(),
            registry_saved: self.save_error.is_none(),
            last_save_error: self.save_error.clone(),
            auth: AuthReport {
                key_ids: self.keys.key_ids(),
                rejected: self.stats.auth_rejected,
                last_rejected: self.last_rejected.clone(),
            },
            uptime_ms: u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// One message from the ROUTER, `[peer, body]`, answered at once: [`Reference::take`]
    /// then [`Reference::answer`], for a reference without a disk (the unit tests).
    pub fn on_request(&mut self, message: Multipart, now: Now) -> Option<Multipart> {
        let pending = self.take(message, now, None)?;
        self.answer(pending, now)
    }

    /// A membership event, sealed, as the frames to publish.
    pub fn event_frames(&self, now: Now) -> Result<Multipart, proto::EncodeError> {
        let body = proto::encode(&self.registry.event(now))?;
        let topic = proto::topic::MEMBERSHIP.as_bytes().to_vec();
        let sealed = self.keys.seal(&[MEMBERSHIP_EVENT, &topic], &body);
        Ok(vec![topic, sealed])
    }

    /// Takes one message from the ROUTER, `[peer, sealed body]`, into the registry;
    /// returns the reply to send once the registry is saved ([`Reference::answer`]), if
    /// any. A body that does not open under the cluster key is refused before it is
    /// decoded: without the key no name is registered and no rank given. `address` is
    /// the sender's, for the log.
    pub fn take(&mut self, message: Multipart, now: Now, address: Option<&str>) -> Option<Pending> {
        // Liveness as of now, so that what the reply reports went with an epoch change.
        self.expire(now);
        // A ROUTER always puts the peer's identity first: nothing to answer without it.
        let (peer, rest) = message.split_first()?;
        if peer.is_empty() || peer.len() > MAX_ROUTING_FRAME_BYTES {
            self.malformed(now.instant, &"bad peer identity frame");
            return None;
        }
        let pending = |answer, sealed| {
            Some(Pending {
                peer: peer.clone(),
                answer,
                sealed,
            })
        };
        let [body] = rest else {
            let reason = format!("{} body frames (1 expected)", rest.len());
            self.malformed(now.instant, &reason);
            return pending(Answer::Now(bad_request(reason)), false);
        };
        let body = match self.keys.open(&[REFERENCE_REQUEST], body) {
            Ok(body) => body,
            Err(error) => {
                self.stats.auth_rejected += 1;
                let labels = AuthLabels {
                    reason: error.as_str(),
                };
                self.metrics.auth_rejected.get_or_create(&labels).inc();
                let what = format!(
                    "request from {} does not open under the cluster key: {error}",
                    address.unwrap_or("an unknown address")
                );
                self.auth_log
                    .warn(now.instant, "router (authentication)", &what);
                self.last_rejected = Some(what);
                let refusal = format!(
                    "unauthenticated: the reference takes only requests sealed with the \
                     cluster key ({error})"
                );
                return pending(Answer::Now(bad_request(refusal)), false);
            }
        };
        let request = match proto::decode::<RefRequest>(&body) {
            Ok(request) => request,
            Err(e) => {
                self.malformed(now.instant, &e);
                return pending(Answer::Now(bad_request(e.to_string())), true);
            }
        };
        self.stats.requests += 1;
        self.metrics.requests.inc();
        let answer = match request {
            RefRequest::Register {
                node,
                status_addr,
                stamp,
            } => self.register(node, &status_addr, stamp, now),
            RefRequest::Heartbeat { node, stamp } => {
                match self.registry.heartbeat(&node, stamp, now) {
                    Ok(known) => Answer::Now(RefReply::HeartbeatAck { known }),
                    Err(e) => self.stale(&node, &e, now),
                }
            }
            RefRequest::Members => Answer::Members,
        };
        pending(answer, true)
    }

    /// A replayed registration or heartbeat: counted, logged (rate-limited), refused.
    fn stale(&mut self, node: &str, error: &RegistryError, now: Now) -> Answer {
        self.metrics.stale.inc();
        self.malformed_log
            .warn(now.instant, "request", &format!("{error} ({node})"));
        Answer::Now(RefReply::Error(Error::new(
            ErrorCode::BadRequest,
            error.to_string(),
        )))
    }

    fn register(&mut self, node: String, status_addr: &str, stamp: Stamp, now: Now) -> Answer {
        if let Some(reason) = &self.save_error
            && !self.registry.is_saved(&node)
        {
            // Its rank could not be put on disk before it is announced, and a restarted
            // reference would give that rank to another name: no new rank for now.
            self.metrics.refused(Refused::NotSaved);
            tracing::debug!(node, "registration refused: the registry is not saved");
            return Answer::Now(not_saved(reason));
        }
        match self.registry.register(&node, status_addr, stamp, now) {
            Ok(rank) => {
                tracing::debug!(node, rank, "registered");
                Answer::Registered(node)
            }
            Err(e @ RegistryError::Full) => {
                tracing::warn!(node, "registration refused: {e}");
                self.metrics.refused(Refused::Full);
                Answer::Now(RefReply::Error(Error::new(
                    ErrorCode::Overloaded,
                    e.to_string(),
                )))
            }
            Err(e @ RegistryError::Stale) => self.stale(&node, &e, now),
            Err(e @ RegistryError::Invalid(_)) => {
                self.metrics.refused(Refused::Invalid);
                Answer::Now(RefReply::Error(Error::new(
                    ErrorCode::BadRequest,
                    e.to_string(),
                )))
            }
        }
    }

    /// The reply of a [`Pending`], from the registry as it is now: after the save of the
    /// pending's batch, or after the names it could not save were taken back.
    pub fn answer(&mut self, pending: Pending, now: Now) -> Option<Multipart> {
        let answer = match pending.answer {
            Answer::Now(answer) => answer,
            Answer::Registered(node) => match self.registry.rank(&node) {
                Some(rank) => {
                    self.metrics.registrations.inc();
                    RefReply::Registered {
                        rank,
                        members: self.registry.members(now),
                    }
                }
                None => {
                    // Taken back: its save failed.
                    self.metrics.refused(Refused::NotSaved);
                    not_saved(self.save_error.as_deref().unwrap_or("save failed"))
                }
            },
            Answer::Members => RefReply::Members(self.registry.members(now)),
        };
        let keys = pending.sealed.then_some(&self.keys);
        reply(&pending.peer, &answer, keys)
    }

    fn malformed(&mut self, now: Instant, reason: &dyn std::fmt::Display) {
        self.stats.malformed += 1;
        self.metrics.malformed.inc();
        self.malformed_log.warn(now, "router", reason);
    }

    /// Marks silent members as gone; returns whether anyone went.
    pub fn expire(&mut self, now: Now) -> bool {
        let gone = self.registry.expire(now);
        let changed = gone > 0;
        if changed {
            self.metrics.expirations.inc_by(gone as u64);
            for member in self.registry.members(now).iter().filter(|m| !m.alive) {
                tracing::debug!(node = member.node, rank = member.rank, "member is gone");
            }
        }
        changed
    }
}

fn bad_request(message: String) -> RefReply {
    RefReply::Error(Error::new(ErrorCode::BadRequest, message))
}

/// The refusal of a new name while the registry cannot be saved.
fn not_saved(reason: &str) -> RefReply {
    RefReply::Error(Error::new(
        ErrorCode::Unavailable,
        format!("registry not saved: {reason}"),
    ))
}

/// The reply frames to `peer`: sealed when `keys` are given (the request was).
fn reply(peer: &[u8], answer: &RefReply, keys: Option<&Keyring>) -> Option<Multipart> {
    match proto::encode(answer) {
        Ok(body) => {
            let body = match keys {
                Some(keys) => keys.seal(&[REFERENCE_REPLY], &body),
                None => body,
            };
            Some(vec![peer.to_vec(), body])
        }
        Err(e) => {
            // Only a member list over the frame limit could do this, and MAX_MEMBERS
            // members are far below it.
            tracing::error!(error = %e, "cannot encode a reply");
            None
        }
    }
}

#[cfg(test)]
mod tests;
