//! The node's side of the proxy: publishing and topics, and what comes in from the
//! peers.
//!
//! - **Out**: Paxos envelopes are published as `[topic, sender name, body]`. Broadcasts
//!   name their sender's rank in the topic ([`broadcast_topic`]: `paxos.accept.3`), so
//!   that a node, subscribed to its peers' ranks only, never receives its own back; a
//!   message to one peer goes on `to.<name>` — or on `repl` while that name is unknown
//!   (every core ignores an envelope addressed to another rank). Clock messages go on
//!   `clock`, committed chat messages on `chan.<channel>` / `user.<name>`.
//! - **In**: [`decode`] checks a SUB frame's layout, sender and exact topic (SUB filters
//!   by prefix: `to.node-1` also lets `to.node-10` through) before the body is decoded;
//!   what fails is counted by reason and dropped. Peers' names are learned from the
//!   sender frame of their envelopes and from the reference's membership, and kept in
//!   `node.json` so that a node restarts while the reference is down.
//!
//! PUB drops messages for slow or absent subscribers; the protocol retransmits on ticks.
//!
//! The choice of proxy to publish through, and its probes, live in [`crate::proxies`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use paxos::{Envelope, Message, Rank};
use proto::client::ChatMessage;
use proto::fabric::{MEMBERSHIP_EVENT, MembershipEvent, PEER_FRAME};
use proto::live::LiveMessage;
use proto::topic;
use transport::{Multipart, Sender};

use crate::auth::{Seal, Source};
use crate::clock::ClockMessage;
use crate::files::Identity;
use crate::metrics::Metrics;
use crate::proxies::ProxyChoice;

/// The broadcast topic of an envelope from `rank` addressed to every node: the Paxos
/// broadcasts name their sender ([`topic::from_rank`]), so that it does not receive them
/// back; the rare others go on `repl`.
pub fn broadcast_topic(message: &Message, rank: Rank) -> String {
    let kind = match message {
        Message::Prepare { .. } => topic::PAXOS_PREPARE,
        Message::Accept { .. } => topic::PAXOS_ACCEPT,
        Message::Accepted { .. } => topic::PAXOS_ACCEPTED,
        Message::Decide { .. } => topic::PAXOS_DECIDE,
        Message::Heartbeat { .. } => topic::HEARTBEAT,
        _ => return topic::REPL.to_owned(),
    };
    topic::from_rank(kind, rank)
}

/// Every topic whose messages the core should see, given this node's name and rank:
/// the peers' ranked broadcasts, `repl`, `election` and `to.<name>`. Compared whole.
pub fn paxos_topics(name: &str, rank: Rank, cluster_size: u32) -> Vec<Vec<u8>> {
    let mut topics: Vec<Vec<u8>> = topic::peer_broadcasts(rank, cluster_size)
        .into_iter()
        .map(String::into_bytes)
        .collect();
    topics.push(topic::REPL.as_bytes().to_vec());
    topics.push(topic::ELECTION.as_bytes().to_vec());
    topics.push(topic::to(name).into_bytes());
    topics
}

/// What a peer frame carries, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// A Paxos envelope for the core, from the node named `sender`.
    Paxos {
        /// The sender's name (from the frame).
        sender: String,
        /// The envelope.
        envelope: Envelope,
    },
    /// A Berkeley clock message from the node named `sender`.
    Clock {
        /// The sender's name.
        sender: String,
        /// The message.
        message: ClockMessage,
    },
    /// The reference's membership: names by rank.
    Members {
        /// The reference's epoch when it published them.
        epoch: u64,
        /// Their ranks, names and status addresses.
        members: Vec<(Rank, String, String)>,
    },
    /// One of this node's own proxy probes, back.
    Probe(Vec<u8>),
}

/// The reason under which a frame that does not open under the cluster key is dropped
/// (it is also counted by [`crate::auth`]).
pub(crate) const UNSEALED: &str = "unsealed";

/// Checks, opens and decodes one frame set from the SUB socket. `Ok(None)`: nothing for
/// this node (its own broadcast, or a prefix match for another topic). `Err(reason)`: a
/// malformed frame, or one that does not open ([`UNSEALED`]), to count under `reason`.
/// Nothing of a body is decoded before it opened.
pub(crate) fn decode(
    frames: &[Vec<u8>],
    own_name: &str,
    topics: &[Vec<u8>],
    seal: &Seal,
) -> Result<Option<Inbound>, &'static str> {
    let Some(topic) = frames.first() else {
        return Err("bad_layout");
    };
    if topic::is(topic, topic::MEMBERSHIP) {
        let [topic, sealed] = frames else {
            return Err("bad_membership");
        };
        let body = seal
            .open(
                Source::Reference,
                &"the reference's membership event",
                &[MEMBERSHIP_EVENT, topic],
                sealed,
            )
            .ok_or(UNSEALED)?;
        let event = proto::decode::<MembershipEvent>(&body).map_err(|_| "bad_membership")?;
        let members = event
            .members
            .into_iter()
            .map(|m| (m.rank, m.node, m.status_addr));
        return Ok(Some(Inbound::Members {
            epoch: event.epoch,
            members: members.collect(),
        }));
    }
    let [topic, sender, sealed] = frames else {
        return Err("bad_layout");
    };
    let own_probe = sender.as_slice() == own_name.as_bytes()
        && topic.strip_prefix(b"probe.") == Some(own_name.as_bytes());
    if sender.as_slice() == own_name.as_bytes() && !own_probe {
        return Ok(None); // our own broadcast, back through the proxy
    }
    let sender = std::str::from_utf8(sender).map_err(|_| "bad_sender")?;
    proto::fabric::check_node_name(sender).map_err(|_| "bad_sender")?;
    let clock = topic::is(topic, topic::CLOCK);
    if !own_probe && !clock && !topics.iter().any(|t| t == topic) {
        return Ok(None); // a prefix match for someone else (`to.node-10` for `to.node-1`)
    }
    // Formatted only when the frame is refused: this runs for every peer message.
    let who =
        std::fmt::from_fn(|f| write!(f, "{sender:?} on {:?}", String::from_utf8_lossy(topic)));
    let body = seal
        .open(
            Source::Peer,
            &who,
            &[PEER_FRAME, topic, sender.as_bytes()],
            sealed,
        )
        .ok_or(UNSEALED)?;
    if own_probe {
        return Ok(Some(Inbound::Probe(body)));
    }
    if clock {
        let message = proto::decode::<ClockMessage>(&body).map_err(|_| "bad_clock")?;
        return Ok(Some(Inbound::Clock {
            sender: sender.to_owned(),
            message,
        }));
    }
    let envelope = proto::decode::<Envelope>(&body).map_err(|_| "bad_envelope")?;
    Ok(Some(Inbound::Paxos {
        sender: sender.to_owned(),
        envelope,
    }))
}

/// The PUB socket, this node's place in the topics, and its peers' names.
#[derive(Debug)]
pub(crate) struct Peers {
    /// One PUB per proxy.
    publishers: Vec<Sender>,
    /// Their endpoints, for logs and `/status`.
    proxies: Vec<String>,
    choice: ProxyChoice,
    name: String,
    rank: Rank,
    cluster_size: u32,
    /// Names by rank, saved in `node.json`.
    identity: Identity,
    identity_path: PathBuf,
    /// [`paxos_topics`] of this node.
    topics: Vec<Vec<u8>>,
    /// The newest membership epoch taken: an older event (a replay) names nobody.
    membership: MembershipEpoch,
    /// Where the other members serve `/status`, by rank (at most `cluster_size`).
    status_addrs: BTreeMap<Rank, String>,
    seal: Seal,
    metrics: Metrics,
}

/// The newest membership epoch a node took. The reference publishes each epoch again
/// periodically, so an equal epoch is taken (it says the same); an older one is a replay
/// of a sealed event recorded on the proxy, and changes nothing. (A reference that lost
/// its registry file starts its epochs again from 1: its events are ignored until they
/// pass the last one taken, and names are still learned from the peers' own frames.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MembershipEpoch(Option<u64>);

impl MembershipEpoch {
    /// Whether an event of `epoch` is current; remembers it if so.
    pub(crate) fn take(&mut self, epoch: u64) -> bool {
        if self.0.is_some_and(|newest| epoch < newest) {
            return false;
        }
        self.0 = Some(epoch);
        true
    }
}

impl Peers {
    /// The peers of the node `identity`, published to on `publisher`; names learned are
    /// saved to `identity_path`.
    pub(crate) fn new(
        publishers: Vec<(String, Sender)>,
        identity: Identity,
        identity_path: PathBuf,
        cluster_size: u32,
        seal: Seal,
        metrics: Metrics,
    ) -> Peers {
        let topics = paxos_topics(&identity.node, identity.rank, cluster_size);
        let (proxies, publishers): (Vec<String>, Vec<Sender>) = publishers.into_iter().unzip();
        Peers {
            choice: ProxyChoice::new(publishers.len(), Instant::now()),
            publishers,
            proxies,
            name: identity.node.clone(),
            rank: identity.rank,
            cluster_size,
            identity,
            identity_path,
            topics,
            membership: MembershipEpoch::default(),
            status_addrs: BTreeMap::new(),
            seal,
            metrics,
        }
    }

    /// Every proxy's endpoint, in `--proxy` order.
    pub(crate) fn proxies(&self) -> &[String] {
        &self.proxies
    }

    /// The proxy this node publishes through.
    pub(crate) fn proxy(&self) -> &str {
        &self.proxies[self.choice.active()]
    }

    /// One tick: sends a probe through the proxy in use when one is due, and moves to
    /// the next proxy when the probes stopped coming back. Returns whether it moved:
    /// what this node published lately may have died in the old proxy.
    pub(crate) fn tick(&mut self, now: Instant) -> bool {
        let moved = self.choice.check(now);
        if let Some((from, to)) = moved {
            tracing::warn!(
                silent = %self.proxies[from],
                now_through = %self.proxies[to],
                "the proxy forwards nothing of ours: publishing through the next one"
            );
            self.metrics.proxy_switches.inc();
        }
        if let Some(body) = self.choice.probe(now) {
            self.publish_sealed(topic::probe(&self.name), &body);
        }
        moved.is_some()
    }

    /// The cluster key held and what did not open under it (shared by every room).
    pub(crate) fn auth_report(&self) -> proto::report::AuthReport {
        self.seal.report()
    }

    /// This node's name.
    pub(crate) fn own_name(&self) -> &str {
        &self.name
    }

    /// The name of the member of rank `rank` (this node's too), if known.
    pub(crate) fn name_of(&self, rank: Rank) -> Option<&str> {
        if rank == self.rank {
            return Some(&self.name);
        }
        self.identity.peers.get(&rank).map(String::as_str)
    }

    /// Checks and decodes one frame set from the SUB socket; learns names on the way.
    /// Envelopes and clock messages are returned for the driver to route.
    pub(crate) fn receive(&mut self, frames: &[Vec<u8>]) -> Option<Inbound> {
        match decode(frames, &self.name, &self.topics, &self.seal) {
            Ok(Some(Inbound::Members { epoch, members })) => {
                if !self.membership.take(epoch) {
                    self.metrics.drop("stale_membership");
                    return None;
                }
                for (rank, name, status_addr) in members {
                    self.learn_member(rank, &name, &status_addr);
                }
                None
            }
            Ok(Some(Inbound::Probe(body))) => {
                self.choice.back(&body, Instant::now());
                None
            }
            Ok(Some(Inbound::Paxos { sender, envelope })) => {
                self.metrics.messages_in.inc();
                self.metrics.protocol.received(&envelope.message);
                self.learn_name(envelope.from, &sender);
                Some(Inbound::Paxos { sender, envelope })
            }
            Ok(other) => other,
            Err(reason) => {
                self.metrics.drop(reason);
                None
            }
        }
    }

    /// Remembers member `rank`: its name ([`Peers::learn_name`]) and where it serves
    /// `/status` (for the web console's view of the cluster), as the reference says.
    pub(crate) fn learn_member(&mut self, rank: Rank, name: &str, status_addr: &str) {
        self.learn_name(rank, name);
        if rank == self.rank || rank == 0 || rank > self.cluster_size || status_addr.is_empty() {
            return;
        }
        self.status_addrs.insert(rank, status_addr.to_owned());
    }

    /// Where the other members serve `/status`, by rank (as far as the reference said).
    pub(crate) fn status_addrs(&self) -> &BTreeMap<Rank, String> {
        &self.status_addrs
    }

    /// Remembers that `rank` is called `name` (a member other than this node), and saves
    /// `node.json` when that is news.
    pub(crate) fn learn_name(&mut self, rank: Rank, name: &str) {
        if rank == self.rank || rank == 0 || rank > self.cluster_size || name == self.name {
            return;
        }
        if self.identity.peers.get(&rank).map(String::as_str) == Some(name) {
            return;
        }
        tracing::info!(rank, node = name, "peer name learned");
        self.identity.peers.insert(rank, name.to_owned());
        if let Err(e) = self.identity.save(&self.identity_path) {
            tracing::warn!(error = %e, "cannot save node.json");
        }
    }

    /// Publishes a Paxos envelope.
    pub(crate) fn send(&mut self, envelope: &Envelope) {
        let topic = match envelope.to {
            None => broadcast_topic(&envelope.message, self.rank),
            Some(rank) => match self.identity.peers.get(&rank) {
                Some(name) => topic::to(name),
                None => topic::REPL.to_owned(),
            },
        };
        match proto::encode(envelope) {
            Ok(body) => {
                self.metrics.messages_out.inc();
                self.metrics.protocol.sent(&envelope.message);
                self.publish_sealed(topic, &body);
            }
            Err(e) => {
                tracing::error!(error = %e, message = envelope.message.name(), "cannot encode");
                self.metrics.drop("encode");
            }
        }
    }

    /// Publishes a clock message.
    pub(crate) fn send_clock(&mut self, message: &ClockMessage) {
        if let Ok(body) = proto::encode(message) {
            self.publish_sealed(topic::CLOCK.to_owned(), &body);
        }
    }

    /// Publishes `[topic, sender, body sealed to both]`: only a holder of the cluster key
    /// reads it, and it opens only under this topic and this sender.
    fn publish_sealed(&mut self, topic: String, body: &[u8]) {
        let sender = self.name.as_bytes();
        let sealed = self
            .seal
            .seal(&[PEER_FRAME, topic.as_bytes(), sender], body);
        let sender = sender.to_vec();
        self.publish(vec![topic.into_bytes(), sender, sealed]);
    }

    /// Publishes a committed chat message for its live subscribers. These go in clear:
    /// the live feed is a doorbell for chat clients, which hold no cluster key
    /// (docs/architecture.md, "Who may speak").
    /// Publishes a committed chat message for live delivery: a channel's message whole,
    /// a private message as a notice only ([`LiveMessage::notice`]): the proxies carry
    /// it in clear, and a private message is read with its recipient's credential.
    pub(crate) fn send_live(&mut self, message: ChatMessage) {
        let message = LiveMessage::for_delivery(message);
        let topic = message.topic();
        match proto::encode(&message) {
            Ok(body) => self.publish(vec![topic.into_bytes(), body]),
            Err(e) => tracing::warn!(error = %e, "cannot encode a chat message"),
        }
    }

    fn publish(&mut self, frames: Multipart) {
        // PUB drops for slow subscribers anyway; the protocol retransmits on ticks.
        if self.publishers[self.choice.active()]
            .try_send(frames)
            .is_err()
        {
            self.metrics.drop("pub_queue_full");
        }
    }
}

#[cfg(test)]
mod tests;
