//! The node's link to the reference service: registration, heartbeats, and the names
//! of the members it reports.
//!
//! The reference is off the data path: a node that does not hear it keeps serving with
//! the membership it last knew (quorums never come from it), says so in its log and on
//! `/status` (`registered: false`), and registers again when it answers. The first
//! registration, which gives a new node its rank, happens before the loop starts
//! ([`crate::boot`]); this room keeps the link alive afterwards.

use std::time::{Duration, Instant};

use paxos::Rank;
use proto::fabric::{RefReply, RefRequest};
use transport::Sender;

use crate::metrics::Metrics;

/// Heartbeats missed before the reference counts as silent.
pub const SILENT_AFTER_HEARTBEATS: u32 = 3;

/// The DEALER to the reference and what it last said.
#[derive(Debug)]
pub(crate) struct ReferenceLink {
    sender: Sender,
    name: String,
    rank: Rank,
    status_addr: String,
    heartbeat: Duration,
    registered: bool,
    last_reply: Option<Instant>,
    metrics: Metrics,
}

impl ReferenceLink {
    /// The link of node `name` (rank `rank`), which heartbeats every `heartbeat`.
    pub(crate) fn new(
        sender: Sender,
        name: String,
        rank: Rank,
        status_addr: String,
        heartbeat: Duration,
        metrics: Metrics,
    ) -> ReferenceLink {
        ReferenceLink {
            sender,
            name,
            rank,
            status_addr,
            heartbeat,
            registered: false,
            last_reply: None,
            metrics,
        }
    }

    /// Whether the reference registered this node and still answers.
    pub(crate) fn registered(&self) -> bool {
        self.registered
    }

    /// Milliseconds since the reference last answered, if ever.
    pub(crate) fn last_reply_ms_ago(&self, now: Instant) -> Option<u64> {
        self.last_reply
            .map(|t| now.saturating_duration_since(t).as_millis() as u64)
    }

    /// Registers (again).
    pub(crate) fn register(&mut self) {
        self.send(&RefRequest::Register {
            node: self.name.clone(),
            status_addr: self.status_addr.clone(),
        });
    }

    /// One heartbeat period passed: heartbeat, or register again while unregistered; a
    /// reference silent for [`SILENT_AFTER_HEARTBEATS`] periods counts as gone.
    pub(crate) fn beat(&mut self, now: Instant) {
        let silent = self.last_reply.is_none_or(|t| {
            now.saturating_duration_since(t) > SILENT_AFTER_HEARTBEATS * self.heartbeat
        });
        if silent && self.registered {
            tracing::warn!("the reference does not answer; serving with the last known membership");
            self.registered = false;
        }
        if self.registered {
            self.send(&RefRequest::Heartbeat {
                node: self.name.clone(),
            });
        } else {
            self.register();
        }
    }

    /// Takes a frame set from the reference; returns the members' names it reports.
    pub(crate) fn receive(&mut self, frames: &[Vec<u8>], now: Instant) -> Vec<(Rank, String)> {
        let [body] = frames else {
            self.metrics.drop("bad_reference_layout");
            return Vec::new();
        };
        let Ok(reply) = proto::decode::<RefReply>(body) else {
            self.metrics.drop("bad_reference_reply");
            return Vec::new();
        };
        self.last_reply = Some(now);
        let members = match reply {
            RefReply::Registered { rank, members } => {
                if rank != self.rank {
                    tracing::error!(
                        reference_rank = rank,
                        rank = self.rank,
                        "the reference gives this node another rank than the one in node.json; \
                         keeping the persisted rank (its promises are made under it)"
                    );
                }
                if !self.registered {
                    tracing::info!(rank, "registered with the reference");
                }
                self.registered = true;
                members
            }
            RefReply::HeartbeatAck { known } => {
                if !known {
                    tracing::info!("the reference forgot this node: registering again");
                    self.registered = false;
                    self.register();
                }
                Vec::new()
            }
            RefReply::Members(members) => members,
            RefReply::Error(error) => {
                tracing::warn!(%error, "the reference refused a request");
                Vec::new()
            }
        };
        members.into_iter().map(|m| (m.rank, m.node)).collect()
    }

    fn send(&mut self, request: &RefRequest) {
        if let Ok(body) = proto::encode(request)
            && self.sender.try_send(vec![body]).is_err()
        {
            self.metrics.drop("reference_queue_full");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::fabric::Member;
    use transport::{Kind, Mode, Options, Socket};

    async fn link() -> (ReferenceLink, transport::Receiver) {
        // A ROUTER standing in for the reference, to see what the link sends.
        let router = Socket::open(
            Kind::Router,
            Mode::Bind,
            "tcp://127.0.0.1:0",
            Options::default(),
        )
        .await
        .unwrap();
        let endpoint = router.endpoint().to_owned();
        let dealer = Socket::open(Kind::Dealer, Mode::Connect, &endpoint, Options::default())
            .await
            .unwrap();
        let (sender, _receiver) = dealer.split();
        let (_, inbox) = router.split();
        let link = ReferenceLink::new(
            sender,
            "node-2".to_owned(),
            2,
            "127.0.0.1:7002".to_owned(),
            Duration::from_secs(1),
            Metrics::new(),
        );
        (link, inbox)
    }

    async fn next_request(inbox: &mut transport::Receiver) -> RefRequest {
        let frames = inbox.recv().await.unwrap();
        proto::decode(frames.last().unwrap()).unwrap()
    }

    fn reply(reply: &RefReply) -> Vec<Vec<u8>> {
        vec![proto::encode(reply).unwrap()]
    }

    #[tokio::test]
    async fn registers_heartbeats_and_notices_silence() {
        let (mut link, mut inbox) = link().await;
        let start = Instant::now();
        link.beat(start);
        assert!(matches!(
            next_request(&mut inbox).await,
            RefRequest::Register { .. }
        ));
        let members = vec![Member {
            node: "node-1".to_owned(),
            rank: 1,
            status_addr: String::new(),
            last_heartbeat_unix_ms: 0,
            alive: true,
        }];
        let names = link.receive(&reply(&RefReply::Registered { rank: 2, members }), start);
        assert_eq!(names, vec![(1, "node-1".to_owned())]);
        assert!(link.registered());
        link.beat(start + Duration::from_secs(1));
        assert!(matches!(
            next_request(&mut inbox).await,
            RefRequest::Heartbeat { .. }
        ));
        // Three periods without an answer: unregistered, and it registers again.
        link.beat(start + Duration::from_secs(4));
        assert!(!link.registered());
        assert!(matches!(
            next_request(&mut inbox).await,
            RefRequest::Register { .. }
        ));
        assert_eq!(
            link.last_reply_ms_ago(start + Duration::from_secs(4)),
            Some(4000)
        );
    }

    #[tokio::test]
    async fn a_forgetful_reference_is_registered_with_again_and_junk_is_counted() {
        let (mut link, mut inbox) = link().await;
        let now = Instant::now();
        link.receive(&reply(&RefReply::HeartbeatAck { known: false }), now);
        assert!(matches!(
            next_request(&mut inbox).await,
            RefRequest::Register { .. }
        ));
        assert!(link.receive(&[vec![1, 2, 3]], now).is_empty());
        assert!(link.receive(&[], now).is_empty());
        let metrics = link.metrics.encode();
        assert!(metrics.contains("bad_reference_reply"), "{metrics}");
        assert!(metrics.contains("bad_reference_layout"), "{metrics}");
    }
}
