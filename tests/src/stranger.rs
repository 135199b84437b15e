//! A stranger without the cluster key, on every port of a running cluster: what
//! `tests/tests/attack.rs` runs against local processes and the `stranger` binary against
//! the compose deployment (tests/docker.sh).
//!
//! It tries what issue 13 found possible before frames were sealed:
//! - publishing forged `Prepare`, `Accept`, `Accepted`, `Decide` and `Promise` envelopes
//!   on the proxies in the names and ranks of the real nodes ([`forgeries`]), in clear
//!   and sealed under a key of its own ([`sealed_under`]);
//! - announcing READY and heartbeats on a broker's backend as a node ([`pose_as_node`]);
//! - replaying a real node's authentic, sealed READY, heartbeat and proof frames (as a
//!   recording of the wire would hold them) from its own connection ([`replay_as_node`]),
//!   and its registration and heartbeat at the reference ([`replay_to_reference`]);
//! - registering at the reference ([`register`]);
//! - reading every topic on the proxies ([`Listener`], [`examine`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::fabric::{
    BROKER_CONTROL, NodeToBroker, PEER_FRAME, REFERENCE_REQUEST, RefReply, RefRequest,
};
use proto::paxos::{Ballot, Envelope, Message, PromiseEntry, Value};
use proto::seal::{Keyring, SEALED};
use proto::{Command, Op, topic};
use serde::Serialize;
use transport::{Kind, Mode, Multipart, Options, Receiver, Socket, TransportError};

/// The stranger's ballot round: far above anything a real election reaches.
pub const FORGED_ROUND: u64 = 1_000_000_000_000;
/// The stranger's Lamport clock.
pub const FORGED_LAMPORT: u64 = 1 << 40;
/// The key the stranger tries to write.
pub const FORGED_KEY: &str = "forged-by-a-stranger";
/// The name the stranger poses as on a broker's backend.
pub const IMPOSTOR: &str = "node-9";
/// Most frames a [`Listener`] keeps.
pub const CAPTURE_LIMIT: usize = 20_000;

/// A real node as the stranger impersonates it.
#[derive(Debug, Clone)]
pub struct Victim {
    /// Its name (`node-1`).
    pub name: String,
    /// Its rank.
    pub rank: u32,
    /// Its decided slot: the forged slots are a little ahead.
    pub decided: u64,
}

/// Every forged message, as `[topic, sender, body]` with a clear body: for each victim, a
/// `Prepare`, an `Accept` of a write of [`FORGED_KEY`], its `Accepted` and `Decide` in
/// the victim's name on the victim's broadcast topics, and a `Promise` to every other
/// node on its `to.<name>` topic.
pub fn forgeries(victims: &[Victim]) -> Vec<Multipart> {
    let mut frames = Vec::new();
    let encode = |envelope: &Envelope| proto::encode(envelope).unwrap_or_default();
    for victim in victims {
        let ballot = Ballot::new(FORGED_ROUND, victim.rank);
        let slot = victim.decided + 5;
        let value = Value {
            lamport: FORGED_LAMPORT,
            commands: vec![Command {
                client_id: 666,
                seq: 1,
                op: Op::Put {
                    key: FORGED_KEY.to_owned(),
                    value: format!("written by a stranger as {}", victim.name),
                },
                session: None,
            }],
        };
        let broadcast = |message: Message| Envelope {
            from: victim.rank,
            to: None,
            lamport: FORGED_LAMPORT,
            message,
        };
        let messages = [
            (
                topic::PAXOS_PREPARE,
                broadcast(Message::Prepare {
                    ballot,
                    from_slot: 1,
                }),
            ),
            (
                topic::PAXOS_ACCEPT,
                broadcast(Message::Accept {
                    ballot,
                    slot,
                    value: value.clone(),
                    decided_upto: victim.decided,
                }),
            ),
            (
                topic::PAXOS_ACCEPTED,
                broadcast(Message::Accepted { ballot, slot }),
            ),
            (
                topic::PAXOS_DECIDE,
                broadcast(Message::Decide { slot, ballot }),
            ),
        ];
        for (kind, envelope) in messages {
            frames.push(vec![
                topic::from_rank(kind, victim.rank).into_bytes(),
                victim.name.clone().into_bytes(),
                encode(&envelope),
            ]);
        }
        for other in victims.iter().filter(|o| o.rank != victim.rank) {
            let promise = Envelope {
                from: victim.rank,
                to: Some(other.rank),
                lamport: FORGED_LAMPORT,
                message: Message::Promise {
                    ballot: Ballot::new(FORGED_ROUND, other.rank),
                    from_slot: 1,
                    entries: vec![PromiseEntry {
                        slot,
                        ballot: Some(ballot),
                        value: value.clone(),
                    }],
                    next_slot: None,
                    decided_upto: slot,
                    truncated_upto: 0,
                },
            };
            frames.push(vec![
                topic::to(&other.name).into_bytes(),
                victim.name.clone().into_bytes(),
                encode(&promise),
            ]);
        }
    }
    frames
}

/// The same peer frames with their bodies sealed under `keys` (not the cluster's).
pub fn sealed_under(keys: &Keyring, frames: &[Multipart]) -> Vec<Multipart> {
    frames
        .iter()
        .filter(|f| f.len() == 3)
        .map(|f| {
            let body = keys.seal(&[PEER_FRAME, &f[0], &f[1]], &f[2]);
            vec![f[0].clone(), f[1].clone(), body]
        })
        .collect()
}

/// A SUB on every topic of the given proxies' backends, keeping what it reads (up to
/// [`CAPTURE_LIMIT`] messages) until stopped.
#[derive(Debug, Clone, Default)]
pub struct Listener {
    /// What it read, in order.
    pub captured: Arc<Mutex<Vec<Multipart>>>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    /// Subscribes to everything on `proxy_backends` (a comma-separated list) and reads in
    /// a task of the current runtime.
    pub async fn start(proxy_backends: &str) -> Result<Listener, TransportError> {
        let socket = Socket::open(
            Kind::Sub,
            Mode::Connect,
            proxy_backends,
            Options::default().subscribe(Vec::new()),
        )
        .await?;
        let listener = Listener::default();
        let (captured, stop) = (listener.captured.clone(), listener.stop.clone());
        let (sender, mut receiver) = socket.split();
        tokio::spawn(async move {
            let _sender = sender;
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(frames)) =
                    tokio::time::timeout(Duration::from_millis(100), receiver.recv()).await
                else {
                    continue;
                };
                let mut captured = captured.lock().unwrap_or_else(|e| e.into_inner());
                if captured.len() < CAPTURE_LIMIT {
                    captured.push(frames);
                }
            }
        });
        Ok(listener)
    }

    /// Stops reading.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// A copy of what it read so far.
    pub fn frames(&self) -> Vec<Multipart> {
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What the stranger could make of what it read on the proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Findings {
    /// Messages read that it did not publish itself.
    pub seen: usize,
    /// Of these, the live chat feed (`chan.*`, `user.*`): published in clear for chat
    /// clients, which hold no cluster key (docs/architecture.md, "Who may speak"); not
    /// counted as unsealed.
    pub live_chat: usize,
    /// Of these, the proxies' health probes (`health.*`): `proxy health` sends a probe
    /// through the proxy it checks, carrying nothing but its own name; not counted as
    /// unsealed.
    pub health_probes: usize,
    /// Of these, messages whose body is not sealed.
    pub unsealed: usize,
    /// Of these, messages whose body decodes as a Paxos envelope.
    pub envelopes: usize,
    /// Of these, messages in which `secret` (a prefix of the data written) appears.
    pub readable: usize,
    /// The topic of the first unsealed or readable message, if any.
    pub example: Option<String>,
}

/// Looks at `frames` read on the proxies, skipping bodies in `own` (what the stranger
/// published itself, which comes back to its SUB).
pub fn examine(frames: &[Multipart], own: &HashSet<Vec<u8>>, secret: &[u8]) -> Findings {
    let mut findings = Findings::default();
    for message in frames {
        let Some(body) = message.last() else { continue };
        if own.contains(body) {
            continue;
        }
        findings.seen += 1;
        let topic = message.first().map(Vec::as_slice).unwrap_or_default();
        let chat = [topic::CHANNEL, topic::USER]
            .iter()
            .any(|kind| topic.starts_with(format!("{kind}.").as_bytes()));
        let probe = topic.starts_with(format!("{}.", topic::HEALTH).as_bytes());
        findings.live_chat += usize::from(chat);
        findings.health_probes += usize::from(probe);
        let unsealed = !chat && !probe && body.first() != Some(&SEALED);
        let envelope = proto::decode::<Envelope>(body).is_ok();
        let readable = !secret.is_empty()
            && message
                .iter()
                .any(|f| f.windows(secret.len()).any(|w| w == secret));
        findings.unsealed += usize::from(unsealed);
        findings.envelopes += usize::from(envelope);
        findings.readable += usize::from(readable);
        if (unsealed || envelope || readable) && findings.example.is_none() {
            let topic = message
                .first()
                .map(|t| String::from_utf8_lossy(t).into_owned());
            findings.example = topic;
        }
    }
    findings
}

/// Poses as node [`IMPOSTOR`] on a broker's backend: READY, then a heartbeat every
/// 100 ms, each in clear and sealed under `keys`, until `stop`. Returns the number of
/// client requests the broker handed it (there should be none).
pub async fn pose_as_node(
    broker_backend: &str,
    keys: &Keyring,
    stop: Arc<AtomicBool>,
) -> Result<u64, TransportError> {
    let dealer = Socket::open(
        Kind::Dealer,
        Mode::Connect,
        broker_backend,
        Options::default().identity(IMPOSTOR),
    )
    .await?;
    let (sender, mut receiver) = dealer.split();
    let node = IMPOSTOR.to_owned();
    let ready = proto::encode(&NodeToBroker::Ready { node: node.clone() }).unwrap_or_default();
    let heartbeat = proto::encode(&NodeToBroker::Heartbeat { node }).unwrap_or_default();
    let mut handed = 0;
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let body = if first { &ready } else { &heartbeat };
        first = false;
        sender.send(vec![body.clone()]).await?;
        let sealed = keys.seal(&[BROKER_CONTROL], body);
        sender.send(vec![sealed]).await?;
        handed += requests_within(&mut receiver, Duration::from_millis(100)).await;
    }
    Ok(handed)
}

/// The client requests among what a DEALER on a broker's backend receives within `wait`.
/// A request comes with the client's routing frame in front; the broker's one-frame
/// messages (its refusals, its challenges) are not requests.
async fn requests_within(receiver: &mut Receiver, wait: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + wait;
    let mut requests = 0;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, receiver.recv()).await {
        if message.len() > 1 {
            requests += 1;
        }
    }
    requests
}

/// Sends `recorded` (authentic sealed control frames of a real node, recorded on the wire)
/// to a broker's backend from a connection of its own, whose identity is `identity`, over
/// and over until `stop`; returns how many client requests the broker handed it (its
/// challenges, one frame each, are not requests: it cannot answer them).
pub async fn replay_as_node(
    broker_backend: &str,
    identity: &str,
    recorded: Vec<Vec<u8>>,
    stop: Arc<AtomicBool>,
) -> Result<u64, TransportError> {
    let dealer = Socket::open(
        Kind::Dealer,
        Mode::Connect,
        broker_backend,
        Options::default().identity(identity.as_bytes().to_vec()),
    )
    .await?;
    let (sender, mut receiver) = dealer.split();
    let mut handed = 0;
    while !stop.load(Ordering::Relaxed) {
        for body in &recorded {
            sender.send(vec![body.clone()]).await?;
        }
        handed += requests_within(&mut receiver, Duration::from_millis(100)).await;
    }
    Ok(handed)
}

/// Sends `recorded` (authentic sealed requests of a real node, recorded on the wire) to
/// the reference from a connection of its own; the answers' bodies, in order (`None`
/// where none came within 5 s).
pub async fn replay_to_reference(
    reference: &str,
    recorded: &[Vec<u8>],
) -> Result<Vec<Option<Vec<u8>>>, TransportError> {
    let dealer = Socket::open(Kind::Dealer, Mode::Connect, reference, Options::default()).await?;
    let (sender, mut receiver) = dealer.split();
    let mut answers = Vec::new();
    for body in recorded {
        sender.send(vec![body.clone()]).await?;
        let answer = tokio::time::timeout(Duration::from_secs(5), receiver.recv())
            .await
            .ok()
            .flatten()
            .and_then(|mut frames| frames.pop());
        answers.push(answer);
    }
    Ok(answers)
}

/// Asks the reference for a rank as [`IMPOSTOR`], in clear and sealed under `keys`: its
/// answers (`None` where it gave none within 5 s).
pub async fn register(
    reference: &str,
    keys: &Keyring,
) -> Result<Vec<Option<RefReply>>, TransportError> {
    let dealer = Socket::open(Kind::Dealer, Mode::Connect, reference, Options::default()).await?;
    let (sender, mut receiver) = dealer.split();
    let register = proto::encode(&RefRequest::Register {
        stamp: proto::fabric::Stamp::next_of_process(),
        node: IMPOSTOR.to_owned(),
        status_addr: String::new(),
    })
    .unwrap_or_default();
    let sealed = keys.seal(&[REFERENCE_REQUEST], &register);
    let mut answers = Vec::new();
    for body in [register, sealed] {
        sender.send(vec![body]).await?;
        let answer = tokio::time::timeout(Duration::from_secs(5), receiver.recv())
            .await
            .ok()
            .flatten()
            .and_then(|frames| proto::decode::<RefReply>(frames.last()?).ok());
        answers.push(answer);
    }
    Ok(answers)
}

/// Whether the reference's answer is the refusal a process without the key gets.
pub fn is_refusal(answer: &Option<RefReply>) -> bool {
    matches!(answer, Some(RefReply::Error(e)) if e.message.starts_with("unauthenticated"))
}

/// Publishes `frames` through a PUB connected to `proxy_frontends`, `rounds` times,
/// `pause` apart. A PUB's first messages are lost until the proxy has it connected: it
/// waits 300 ms first.
pub async fn publish(
    proxy_frontends: &str,
    frames: &[Multipart],
    rounds: usize,
    pause: Duration,
) -> Result<(), TransportError> {
    let socket = Socket::open(
        Kind::Pub,
        Mode::Connect,
        proxy_frontends,
        Options::default(),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..rounds {
        for message in frames {
            socket.send(message.clone()).await?;
        }
        tokio::time::sleep(pause).await;
    }
    // Let the last messages leave before the socket closes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// A fresh key that is not the cluster's.
pub fn strangers_key() -> Keyring {
    let line = Keyring::generate_line();
    match Keyring::parse(&line) {
        Ok(keys) => keys,
        Err(e) => panic!("a generated key does not parse: {e}"),
    }
}

/// The bodies of every message in `sets`: what the stranger published, to tell it from
/// what it reads.
pub fn own_bodies(sets: &[&[Multipart]]) -> HashSet<Vec<u8>> {
    sets.iter()
        .flat_map(|frames| frames.iter())
        .filter_map(|f| f.last().cloned())
        .collect()
}
