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
use proto::fabric::{REFERENCE_REPLY, REFERENCE_REQUEST, RefReply, RefRequest, Stamp};
use transport::Sender;

use crate::auth::{Seal, Source};
use crate::metrics::Metrics;

/// Heartbeats missed before the reference counts as silent.
pub const SILENT_AFTER_HEARTBEATS: u32 = 3;

/// Why a reply from the reference was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BadReply {
    /// Not one body frame, or a body that does not decode.
    Malformed,
    /// It does not open under the cluster key. `refusal` is what the reference said in
    /// clear, if it said it refuses this node's key: shown to the operator, never trusted.
    Unsealed {
        /// The reference's words.
        refusal: Option<String>,
    },
}

/// Seals a request to the reference.
pub(crate) fn seal_request(seal: &Seal, request: &RefRequest) -> Option<Vec<u8>> {
    let body = proto::encode(request).ok()?;
    Some(seal.seal(&[REFERENCE_REQUEST], &body))
}

/// Opens and decodes a reply from the reference.
pub(crate) fn open_reply(seal: &Seal, frames: &[Vec<u8>]) -> Result<RefReply, BadReply> {
    let [frame] = frames else {
        return Err(BadReply::Malformed);
    };
    let Some(body) = seal.open(
        Source::Reference,
        &"the reference",
        &[REFERENCE_REPLY],
        frame,
    ) else {
        // A reference that cannot open our requests says so in clear (it has no key in
        // common with us to seal with).
        let refusal = match proto::decode::<RefReply>(frame) {
            Ok(RefReply::Error(error)) if error.message.starts_with("unauthenticated") => {
                Some(error.message)
            }
            _ => None,
        };
        return Err(BadReply::Unsealed { refusal });
    };
    proto::decode::<RefReply>(&body).map_err(|_| BadReply::Malformed)
}

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
    /// The reference said it cannot open our frames (logged once until it can).
    key_refused: bool,
    seal: Seal,
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
        seal: Seal,
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
            key_refused: false,
            seal,
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
            stamp: Stamp::next_of_process(),
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
                stamp: Stamp::next_of_process(),
            });
        } else {
            self.register();
        }
    }

    /// Takes a frame set from the reference; returns the members it reports: rank, name
    /// and status address.
    pub(crate) fn receive(
        &mut self,
        frames: &[Vec<u8>],
        now: Instant,
    ) -> Vec<(Rank, String, String)> {
        let reply = match open_reply(&self.seal, frames) {
            Ok(reply) => reply,
            Err(BadReply::Malformed) => {
                self.metrics.drop("bad_reference_reply");
                return Vec::new();
            }
            Err(BadReply::Unsealed { refusal }) => {
                if let Some(refusal) = refusal
                    && !std::mem::replace(&mut self.key_refused, true)
                {
                    tracing::error!(
                        %refusal,
                        key_ids = ?self.seal.report().key_ids,
                        "the reference refuses this node's cluster key: check --key-file"
                    );
                }
                return Vec::new();
            }
        };
        self.last_reply = Some(now);
        self.key_refused = false;
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
        members
            .into_iter()
            .map(|m| (m.rank, m.node, m.status_addr))
            .collect()
    }

    fn send(&mut self, request: &RefRequest) {
        if let Some(sealed) = seal_request(&self.seal, request)
            && self.sender.try_send(vec![sealed]).is_err()
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
            seal(),
            Metrics::new(),
        );
        (link, inbox)
    }

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn seal() -> Seal {
        Seal::new(proto::seal::Keyring::parse(KEY).unwrap(), Metrics::new())
    }

    /// The next request, opened as the reference does.
    async fn next_request(inbox: &mut transport::Receiver) -> RefRequest {
        let frames = inbox.recv().await.unwrap();
        let body = seal()
            .open(
                Source::Reference,
                &"t",
                &[REFERENCE_REQUEST],
                frames.last().unwrap(),
            )
            .unwrap();
        proto::decode(&body).unwrap()
    }

    /// A reply sealed as the reference seals it.
    fn reply(reply: &RefReply) -> Vec<Vec<u8>> {
        let body = proto::encode(reply).unwrap();
        vec![seal().seal(&[REFERENCE_REPLY], &body)]
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
            status_addr: "127.0.0.1:7001".to_owned(),
            last_heartbeat_unix_ms: 0,
            alive: true,
        }];
        let names = link.receive(&reply(&RefReply::Registered { rank: 2, members }), start);
        assert_eq!(
            names,
            vec![(1, "node-1".to_owned(), "127.0.0.1:7001".to_owned())]
        );
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
        assert_eq!(
            link.seal.report().rejected,
            1,
            "the junk frame did not open"
        );
    }

    #[tokio::test]
    async fn a_reply_in_clear_is_not_believed() {
        let (mut link, _inbox) = link().await;
        let forged = RefReply::Members(vec![Member {
            node: "node-9".to_owned(),
            rank: 1,
            status_addr: String::new(),
            last_heartbeat_unix_ms: 0,
            alive: true,
        }]);
        let clear = vec![proto::encode(&forged).unwrap()];
        assert!(link.receive(&clear, Instant::now()).is_empty());
        assert!(link.last_reply.is_none(), "not an answer of the reference");
        // The reference's refusal of our key, in clear: recognised (and logged), not taken.
        let refusal = RefReply::Error(proto::Error::new(
            proto::ErrorCode::BadRequest,
            "unauthenticated: wrong key",
        ));
        let clear = vec![proto::encode(&refusal).unwrap()];
        assert_eq!(
            open_reply(&seal(), &clear),
            Err(BadReply::Unsealed {
                refusal: Some("unauthenticated: wrong key".into())
            })
        );
    }
}
