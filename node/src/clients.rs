//! The node's side of the brokers: client requests in, answers out.
//!
//! The node has a DEALER on every broker's backend, announces READY and heartbeats on
//! each, and answers each broker's challenge with a sealed proof (the broker routes to a
//! connection only once it proved it holds the cluster key: see the broker's
//! `challenge` module), so that every broker keeps it in its round-robin ring;
//! an answer goes back through the broker its request came from ([`Route`]). A client
//! whose broker died sends the request again through another one, with the same
//! `(client_id, seq)`: the table then points at the new route. A request
//! arrives as `[routing frames…, body(Request)]`; [`decode`] checks the layout and the
//! body and answers a bad one at once (`bad_request`, or `too_large`). A good one is
//! remembered in the [`PendingRequests`] table under its `(client_id, seq)`, to be
//! answered when its command is applied here or rejected by the core — or `overloaded`
//! at once when the table is full.

use std::time::Instant;

use proto::client::Command;
use proto::fabric::{
    BROKER_CONTROL, BROKER_REPLY, BROKER_REQUEST, NodeToBroker, parse_broker_challenge,
};
use proto::limits::MAX_ROUTING_FRAMES;
use proto::{Error, ErrorCode, LimitError, Reply, Request, Response};
use transport::{Multipart, Sender};

use crate::auth::{Seal, Source};
use crate::metrics::{Metrics, RequestLabels};
use crate::pending::{Full, PendingRequests, Route, Waiting};

/// A client request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Incoming {
    /// Where the answer goes.
    pub(crate) route: Route,
    /// The request.
    pub(crate) request: Request,
}

/// Why a request was refused before it reached the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No routing frame, or too many: nobody to answer (counted, dropped).
    Layout,
    /// The body does not open under the cluster key: not from a broker of this cluster,
    /// or altered on the way (counted by [`crate::auth`], dropped unanswered).
    Unsealed,
    /// A body that does not decode or breaks a limit: answered with this error, for the
    /// request number and op it carried (0 and `invalid` when it does not decode).
    Body(Route, u64, &'static str, Error),
}

/// The associated data of a body sealed between a broker and a node: `label` and the
/// client's routing frames, so that a sealed body opens only for the client it is for.
fn route_aad<'a>(label: &'a [u8], routing: &'a [Vec<u8>]) -> Vec<&'a [u8]> {
    std::iter::once(label)
        .chain(routing.iter().map(Vec::as_slice))
        .collect()
}

/// Checks and opens one frame set from broker number `broker`.
pub(crate) fn decode(
    broker: usize,
    mut frames: Multipart,
    seal: &Seal,
) -> Result<Incoming, Refused> {
    let routing = frames.len().saturating_sub(1);
    if routing == 0 || routing > MAX_ROUTING_FRAMES {
        return Err(Refused::Layout);
    }
    let sealed = frames.pop().ok_or(Refused::Layout)?;
    // Formatted only when the frame is refused: this runs for every request.
    let who = std::fmt::from_fn(|f| {
        let client = String::from_utf8_lossy(&frames[0]);
        write!(f, "broker {broker} for client {client:?}")
    });
    let body = seal
        .open(
            Source::Broker,
            &who,
            &route_aad(BROKER_REQUEST, &frames),
            &sealed,
        )
        .ok_or(Refused::Unsealed)?;
    let route = Route { broker, frames };
    let refused = |route, seq, op, e: proto::DecodeError| {
        let code = match e {
            proto::DecodeError::TooLarge { .. }
            | proto::DecodeError::Invalid(LimitError::TooLong { .. })
            | proto::DecodeError::Invalid(LimitError::TooMany { .. }) => ErrorCode::TooLarge,
            _ => ErrorCode::BadRequest,
        };
        Err(Refused::Body(
            route,
            seq,
            op,
            Error::new(code, e.to_string()),
        ))
    };
    // Decoded first, checked second: a request over a limit is answered under its own
    // number, so that its client hears why instead of waiting for its deadline.
    match proto::codec::decode_unvalidated::<Request>(&body) {
        Ok(request) => match proto::Wire::validate(&request) {
            Ok(()) => Ok(Incoming { route, request }),
            Err(e) => refused(route, request.seq, request.op.name(), e.into()),
        },
        Err(e) => refused(route, 0, "invalid", e),
    }
}

/// The DEALERs to the brokers and the requests waiting for an answer.
#[derive(Debug)]
pub(crate) struct Clients {
    /// One per broker, in `--broker` order.
    brokers: Vec<Sender>,
    /// Each broker's endpoint and when a request last came through it (the console
    /// shows a broker that went quiet).
    heard: Vec<(String, Option<Instant>)>,
    name: String,
    pending: PendingRequests,
    seal: Seal,
    metrics: Metrics,
}

impl Clients {
    /// The clients of node `name`, reached through `brokers`; at most
    /// `max_pending_requests` wait at once.
    pub(crate) fn new(
        brokers: Vec<(String, Sender)>,
        name: String,
        max_pending_requests: usize,
        seal: Seal,
        metrics: Metrics,
    ) -> Clients {
        let (endpoints, brokers): (Vec<String>, Vec<Sender>) = brokers.into_iter().unzip();
        Clients {
            brokers,
            heard: endpoints.into_iter().map(|e| (e, None)).collect(),
            name,
            pending: PendingRequests::with_limit(max_pending_requests),
            seal,
            metrics,
        }
    }

    /// Announces this node to every broker (`first`: READY, else a heartbeat).
    pub(crate) fn announce(&mut self, first: bool) {
        let node = self.name.clone();
        let message = if first {
            NodeToBroker::Ready { node }
        } else {
            NodeToBroker::Heartbeat { node }
        };
        if let Some(sealed) = self.control(&message) {
            for broker in 0..self.brokers.len() {
                self.send(broker, vec![sealed.clone()]);
            }
        }
    }

    /// A control message for the brokers, sealed.
    fn control(&self, message: &NodeToBroker) -> Option<Vec<u8>> {
        match proto::encode(message) {
            Ok(body) => Some(self.seal.seal(&[BROKER_CONTROL], &body)),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a broker message");
                None
            }
        }
    }

    /// Takes a frame set from broker number `broker`: a checked request, or `None` when
    /// it was refused (and answered, when there is someone to answer).
    pub(crate) fn receive(
        &mut self,
        broker: usize,
        frames: Multipart,
        applied_slot: u64,
    ) -> Option<Incoming> {
        if let [frame] = frames.as_slice()
            && let Some(nonce) = parse_broker_challenge(frame)
        {
            // The broker asks this connection to prove it holds the key before it routes
            // requests to it.
            let proof = NodeToBroker::Proof {
                node: self.name.clone(),
                nonce: nonce.to_vec(),
            };
            if let Some(sealed) = self.control(&proof) {
                self.send(broker, vec![sealed]);
            }
            return None;
        }
        match decode(broker, frames, &self.seal) {
            Ok(incoming) => {
                if let Some((_, heard)) = self.heard.get_mut(broker) {
                    *heard = Some(Instant::now());
                }
                Some(incoming)
            }
            Err(Refused::Layout) => {
                self.metrics.drop("bad_client_layout");
                None
            }
            Err(Refused::Unsealed) => None,
            Err(Refused::Body(route, seq, op, error)) => {
                self.reply(route, op, seq, Err(error), applied_slot);
                None
            }
        }
    }

    /// Remembers a request whose command goes to the cluster. A full table answers it
    /// `overloaded` at once (it certainly took no effect) and returns `false`.
    pub(crate) fn wait_for(
        &mut self,
        route: Route,
        command: &Command,
        now: Instant,
        applied_slot: u64,
    ) -> bool {
        match self.pending.insert(route, command.clone(), now) {
            Ok(_) => true,
            Err(Full(route)) => {
                let error = Error::new(
                    ErrorCode::Overloaded,
                    format!(
                        "{} requests already wait at {}",
                        self.pending.len(),
                        self.name
                    ),
                );
                self.reply(
                    route,
                    command.op.name(),
                    command.seq,
                    Err(error),
                    applied_slot,
                );
                false
            }
        }
    }

    /// Answers the client waiting here for `(client_id, seq)`, if any; returns whether
    /// one was.
    pub(crate) fn answer(
        &mut self,
        client_id: u64,
        seq: u64,
        result: Result<Reply, Error>,
        now: Instant,
        applied_slot: u64,
    ) -> bool {
        let Some(Waiting {
            route, op, since, ..
        }) = self.pending.take((client_id, seq))
        else {
            return false;
        };
        self.metrics
            .request_seconds
            .observe(now.duration_since(since).as_secs_f64());
        self.reply(route, op, seq, result, applied_slot);
        true
    }

    /// The command a client waits here for, if any.
    pub(crate) fn waiting_command(&self, client_id: u64, seq: u64) -> Option<&Command> {
        self.pending.command((client_id, seq))
    }

    /// Whether a client waits here for `(client_id, seq)`.
    pub(crate) fn is_waiting(&self, client_id: u64, seq: u64) -> bool {
        self.pending.contains((client_id, seq))
    }

    /// Sends an answer along `route`.
    pub(crate) fn reply(
        &mut self,
        route: Route,
        op: &'static str,
        seq: u64,
        result: Result<Reply, Error>,
        applied_slot: u64,
    ) {
        let code = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        self.metrics
            .requests
            .get_or_create(&RequestLabels { op, result: code })
            .inc();
        let response = Response {
            seq,
            result,
            node: self.name.clone(),
            applied_slot,
        };
        let body = match proto::encode(&response) {
            Ok(body) => body,
            Err(e) => {
                // Only an over-large reply can fail; the client gets the error instead.
                let error = Error::new(ErrorCode::TooLarge, e.to_string());
                let fallback = Response {
                    result: Err(error),
                    ..response
                };
                match proto::encode(&fallback) {
                    Ok(body) => body,
                    Err(_) => return,
                }
            }
        };
        let Route { broker, mut frames } = route;
        let sealed = self.seal.seal(&route_aad(BROKER_REPLY, &frames), &body);
        frames.push(sealed);
        self.send(broker, frames);
    }

    /// The commands of every waiting request (handed to a new leader).
    pub(crate) fn waiting_commands(&self) -> Vec<Command> {
        self.pending.commands().cloned().collect()
    }

    /// Each broker's endpoint and the milliseconds since a request last came through it
    /// (`None`: none since start).
    pub(crate) fn brokers_heard(&self, now: Instant) -> Vec<(String, Option<u64>)> {
        self.heard
            .iter()
            .map(|(endpoint, heard)| {
                let ago = heard.map(|t| now.saturating_duration_since(t).as_millis() as u64);
                (endpoint.clone(), ago)
            })
            .collect()
    }

    /// Requests waiting.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Forgets requests unanswered for too long (their clients have retried).
    pub(crate) fn expire(&mut self, now: Instant) {
        let expired = self.pending.expire(now);
        if expired > 0 {
            tracing::debug!(expired, "forgot unanswered client requests");
        }
    }

    fn send(&mut self, broker: usize, frames: Multipart) {
        let Some(sender) = self.brokers.get(broker) else {
            return;
        };
        if sender.try_send(frames).is_err() {
            self.metrics.drop("broker_queue_full");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Consistency, Op};

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn seal() -> Seal {
        Seal::new(proto::seal::Keyring::parse(KEY).unwrap(), Metrics::new())
    }

    /// A request as the broker hands it to a node: sealed for the client's route.
    fn request_frames(body: Vec<u8>) -> Multipart {
        let sealed = seal().seal(&[BROKER_REQUEST, b"client-7"], &body);
        vec![b"client-7".to_vec(), sealed]
    }

    fn decode(broker: usize, frames: Multipart) -> Result<Incoming, Refused> {
        super::decode(broker, frames, &seal())
    }

    #[test]
    fn requests_are_checked_before_they_reach_the_cluster() {
        let request = Request {
            client_id: 9,
            seq: 1,
            op: Op::Get { key: "k".into() },
            consistency: Consistency::Linearizable,
            credential: None,
        };
        let body = proto::encode(&request).unwrap();
        let incoming = decode(1, request_frames(body.clone())).unwrap();
        assert_eq!(incoming.route.frames, vec![b"client-7".to_vec()]);
        assert_eq!(
            incoming.route.broker, 1,
            "answered through the broker it came from"
        );
        assert_eq!(incoming.request, request);
        // No routing frame: nobody to answer.
        assert_eq!(decode(0, vec![body]), Err(Refused::Layout));
        // Junk: answered bad_request on the client's route.
        match decode(0, request_frames(vec![0xc1])) {
            Err(Refused::Body(route, seq, _, error)) => {
                assert_eq!((route.frames, seq), (vec![b"client-7".to_vec()], 0));
                assert_eq!(error.code, ErrorCode::BadRequest);
            }
            other => panic!("{other:?}"),
        }
        // A key over its limit: too_large.
        let huge = Request {
            seq: 5,
            op: Op::Get {
                key: "k".repeat(proto::limits::MAX_KEY_BYTES + 1),
            },
            ..request
        };
        let body = rmp_serde::to_vec_named(&huge).unwrap();
        let mut framed = vec![proto::codec::PROTOCOL_VERSION];
        framed.extend(body);
        match decode(0, request_frames(framed)) {
            // Answered under its own number, so its client hears why.
            Err(Refused::Body(_, seq, op, error)) => {
                assert_eq!((seq, op, error.code), (5, "get", ErrorCode::TooLarge));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_that_does_not_open_is_dropped_unanswered() {
        let request = Request {
            client_id: 9,
            seq: 1,
            op: Op::Put {
                key: "k".into(),
                value: "v".into(),
            },
            consistency: Consistency::Linearizable,
            credential: None,
        };
        let body = proto::encode(&request).unwrap();
        // In clear (a peer that announced READY without the key would be handed these
        // only if the broker took it; a node never takes them either way).
        let clear = vec![b"client-7".to_vec(), body.clone()];
        assert_eq!(decode(0, clear), Err(Refused::Unsealed));
        // Sealed for another client, or with a bit flipped.
        let mut moved = request_frames(body.clone());
        moved[0] = b"client-8".to_vec();
        assert_eq!(decode(0, moved), Err(Refused::Unsealed));
        let mut flipped = request_frames(body);
        flipped[1][40] ^= 0x80;
        assert_eq!(decode(0, flipped), Err(Refused::Unsealed));
    }

    #[tokio::test]
    async fn replies_and_announcements_are_sealed_for_the_broker() {
        // A ROUTER standing in for the broker's backend.
        let endpoint = "inproc://clients-sealed";
        let router = transport::Socket::open(
            transport::Kind::Router,
            transport::Mode::Bind,
            endpoint,
            transport::Options::default(),
        )
        .await
        .unwrap();
        let dealer = transport::Socket::open(
            transport::Kind::Dealer,
            transport::Mode::Connect,
            endpoint,
            transport::Options::default(),
        )
        .await
        .unwrap();
        let (to_broker, _keep) = dealer.split();
        let (router_tx, mut inbox) = router.split();
        let mut clients = Clients::new(
            vec![(endpoint.to_owned(), to_broker)],
            "node-1".into(),
            8,
            seal(),
            Metrics::new(),
        );
        clients.announce(true);
        let ready = inbox.recv().await.unwrap();
        let open = |frame: &[u8]| {
            let body = seal()
                .open(Source::Broker, &"t", &[BROKER_CONTROL], frame)
                .unwrap();
            proto::decode::<NodeToBroker>(&body).unwrap()
        };
        assert_eq!(
            open(&ready[1]),
            NodeToBroker::Ready {
                node: "node-1".into()
            }
        );
        // The broker's challenge is answered with a sealed proof of its nonce.
        let nonce = [9u8; proto::fabric::CHALLENGE_NONCE_BYTES];
        router_tx
            .send(vec![
                ready[0].clone(),
                proto::fabric::broker_challenge(&nonce),
            ])
            .await
            .unwrap();
        let (_, mut from_broker) = (0, _keep);
        let challenge = from_broker.recv().await.unwrap();
        assert!(clients.receive(0, challenge, 0).is_none());
        let proof = inbox.recv().await.unwrap();
        assert_eq!(
            open(&proof[1]),
            NodeToBroker::Proof {
                node: "node-1".into(),
                nonce: nonce.to_vec()
            }
        );
        let route = Route {
            broker: 0,
            frames: vec![b"client-7".to_vec()],
        };
        clients.reply(route, "get", 3, Ok(Reply::Done), 0);
        let reply = inbox.recv().await.unwrap();
        assert_eq!(reply[1], b"client-7");
        let body = seal()
            .open(
                Source::Broker,
                &"t",
                &[BROKER_REPLY, b"client-7"],
                &reply[2],
            )
            .unwrap();
        assert_eq!(proto::decode::<Response>(&body).unwrap().seq, 3);
    }
}
