//! Helpers shared by the broker's integration tests: an in-process broker on free ports,
//! stand-in nodes and clients.

#![allow(dead_code)] // each test file uses a different part of this module

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::fabric::NodeToBroker;
use proto::{Consistency, Op, Reply, Request, Response};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use transport::{Backend, Kind, Mode, Options, Socket};

/// Longest wait for anything that should happen; only reached when a test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

pub(crate) struct TestBroker {
    pub(crate) frontend: String,
    pub(crate) backend: String,
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: JoinHandle<Result<broker::Stats, broker::BrokerError>>,
    pub(crate) transport: Backend,
}

impl TestBroker {
    pub(crate) async fn start(transport: Backend, config: broker::Config) -> TestBroker {
        let frontend = Socket::open_with(
            transport,
            Kind::Router,
            Mode::Bind,
            "tcp://127.0.0.1:0",
            Options::default(),
        )
        .await
        .unwrap();
        let backend = Socket::open_with(
            transport,
            Kind::Router,
            Mode::Bind,
            "tcp://127.0.0.1:0",
            Options::default().router_handover(),
        )
        .await
        .unwrap();
        let (frontend_ep, backend_ep) = (
            frontend.endpoint().to_owned(),
            backend.endpoint().to_owned(),
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(broker::run(frontend, backend, config, shutdown.clone()));
        TestBroker {
            frontend: frontend_ep,
            backend: backend_ep,
            shutdown,
            task,
            transport,
        }
    }

    /// Stops the broker and returns its counters; fails if it crashed or errored.
    pub(crate) async fn stop(self) -> broker::Stats {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the broker stops on shutdown")
            .expect("the broker task did not panic")
            .expect("the broker returned its counters")
    }

    pub(crate) async fn client(&self) -> Client {
        Client::connect(self.transport, &self.frontend).await
    }

    pub(crate) async fn node(&self, name: &str, heartbeat_interval: Duration) -> StandInNode {
        StandInNode::start(self.transport, &self.backend, name, heartbeat_interval).await
    }
}

/// A node that announces READY, heartbeats while `beating`, and answers every request
/// with its own name.
pub(crate) struct StandInNode {
    pub(crate) name: String,
    pub(crate) received: Arc<AtomicU64>,
    pub(crate) beating: Arc<AtomicBool>,
    last_heartbeat: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl StandInNode {
    pub(crate) async fn start(
        transport: Backend,
        backend: &str,
        name: &str,
        heartbeat_interval: Duration,
    ) -> StandInNode {
        let socket = Socket::open_with(
            transport,
            Kind::Dealer,
            Mode::Connect,
            backend,
            Options::default().identity(name.as_bytes().to_vec()),
        )
        .await
        .unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let beating = Arc::new(AtomicBool::new(true));
        let last_heartbeat = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(
            socket,
            name.to_owned(),
            heartbeat_interval,
            received.clone(),
            (beating.clone(), last_heartbeat.clone()),
            stop.clone(),
        ));
        StandInNode {
            name: name.to_owned(),
            received,
            beating,
            last_heartbeat,
            stop,
            task,
        }
    }

    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// When the node last sent a heartbeat (or READY).
    pub(crate) fn last_heartbeat(&self) -> Option<Instant> {
        *self.last_heartbeat.lock().unwrap()
    }

    pub(crate) fn set_beating(&self, beating: bool) {
        self.beating.store(beating, Ordering::SeqCst);
    }

    /// Closes the node's socket.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

async fn serve(
    socket: Socket,
    name: String,
    heartbeat_interval: Duration,
    received: Arc<AtomicU64>,
    (beating, last_heartbeat): (Arc<AtomicBool>, Arc<Mutex<Option<Instant>>>),
    stop: CancellationToken,
) {
    let (tx, mut rx) = socket.split();
    let ready = proto::encode(&NodeToBroker::Ready { node: name.clone() }).unwrap();
    *last_heartbeat.lock().unwrap() = Some(Instant::now());
    tx.send(vec![ready]).await.unwrap();
    let heartbeat = proto::encode(&NodeToBroker::Heartbeat { node: name.clone() }).unwrap();
    let mut ticker = tokio::time::interval(heartbeat_interval);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {
                if beating.load(Ordering::SeqCst) {
                    *last_heartbeat.lock().unwrap() = Some(Instant::now());
                    tx.send(vec![heartbeat.clone()]).await.unwrap();
                }
            }
            message = rx.recv() => {
                let Some(message) = message else { return };
                let [client, body] = message.as_slice() else { continue };
                let Ok(request) = proto::decode::<Request>(body) else { continue };
                received.fetch_add(1, Ordering::SeqCst);
                let response = Response {
                    seq: request.seq,
                    result: Ok(Reply::Value(name.clone())),
                    node: name.clone(),
                    applied_slot: 0,
                };
                tx.send(vec![client.clone(), proto::encode(&response).unwrap()]).await.unwrap();
            }
        }
    }
}

/// A client DEALER on the broker frontend.
pub(crate) struct Client {
    pub(crate) socket: Socket,
    pub(crate) client_id: u64,
    next_seq: u64,
}

impl Client {
    pub(crate) async fn connect(transport: Backend, frontend: &str) -> Client {
        let socket = Socket::open_with(
            transport,
            Kind::Dealer,
            Mode::Connect,
            frontend,
            Options::default(),
        )
        .await
        .unwrap();
        Client {
            socket,
            client_id: rand::random::<u64>() | 1,
            next_seq: 1,
        }
    }

    pub(crate) fn request(&mut self, op: Op) -> Request {
        let seq = self.next_seq;
        self.next_seq += 1;
        Request {
            client_id: self.client_id,
            seq,
            op,
            consistency: Consistency::Linearizable,
        }
    }

    /// Sends a `Get` and waits for the response with its seq (skipping stale ones).
    pub(crate) async fn call(&mut self) -> Response {
        self.try_call(DEADLINE).await.expect("a response in time")
    }

    pub(crate) async fn try_call(&mut self, within: Duration) -> Option<Response> {
        let request = self.request(Op::Get { key: "k".into() });
        self.socket
            .send(vec![proto::encode(&request).unwrap()])
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.recv())
                .await
                .ok()??;
            assert_eq!(message.len(), 1, "a client receives one body frame");
            let response: Response = proto::decode(&message[0]).unwrap();
            if response.seq == request.seq {
                return Some(response);
            }
        }
    }
}

/// Polls `condition` every few milliseconds until it holds; panics with `what` at the
/// deadline.
pub(crate) async fn wait_until(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !condition().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Resident memory of this process, from /proc/self/status.
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Seed of the random frames: `FUZZ_SEED` to replay a failure, else from the clock.
pub(crate) fn fuzz_seed() -> u64 {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("FUZZ_SEED={seed}");
    seed
}

/// One hostile multipart message: a random number of frames, each random bytes, empty,
/// oversized for a routing frame, a valid body, or a mutated valid body.
pub(crate) fn hostile_message(rng: &mut impl rand::Rng, valid: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let count = match rng.random_range(0..20) {
        0 => rng.random_range(7..=32),
        1..=8 => 1,
        n => n % 6 + 1,
    };
    (0..count).map(|_| hostile_frame(rng, valid)).collect()
}

fn hostile_frame(rng: &mut impl rand::Rng, valid: &[Vec<u8>]) -> Vec<u8> {
    let pick = |rng: &mut dyn rand::RngCore| {
        let index = rand::Rng::random_range(rng, 0..valid.len());
        valid[index].clone()
    };
    match rng.random_range(0..10) {
        0 => Vec::new(),
        1 => random_bytes(rng, 0..=64),
        2 => random_bytes(rng, 256..=4096),
        3 => {
            // Our version byte, then garbage: passes the broker's light checks.
            let mut frame = random_bytes(rng, 0..=128);
            frame.insert(0, proto::codec::PROTOCOL_VERSION);
            frame
        }
        4 => pick(rng),
        _ => {
            let mut frame = pick(rng);
            for _ in 0..rng.random_range(1..=4) {
                mutate(rng, &mut frame);
            }
            frame
        }
    }
}

fn random_bytes(rng: &mut impl rand::Rng, len: std::ops::RangeInclusive<usize>) -> Vec<u8> {
    let mut bytes = vec![0u8; rng.random_range(len)];
    rng.fill(&mut bytes[..]);
    bytes
}

fn mutate(rng: &mut impl rand::Rng, frame: &mut Vec<u8>) {
    if frame.is_empty() {
        frame.push(rng.random());
        return;
    }
    let at = rng.random_range(0..frame.len());
    match rng.random_range(0..6) {
        0 => frame[at] ^= 1 << rng.random_range(0..8),
        1 => frame[at] = rng.random(),
        2 => frame.truncate(at),
        3 => frame.insert(at, rng.random()),
        4 => {
            let tail = frame[at..].to_vec();
            frame.extend(tail);
        }
        _ => {
            // A MessagePack length prefix that claims far more than the frame holds.
            frame.insert(at, 0xdb);
            frame.splice(at + 1..at + 1, [0xff, 0xff, 0xff, 0x7f]);
        }
    }
}

/// A ZMTP 3.0 greeting (NULL mechanism) and READY command of a DEALER, then the 9-byte
/// header of a frame that claims to be 1 TiB long (as in transport/tests/hostile.rs).
pub(crate) fn one_tebibyte_frame_header() -> Vec<u8> {
    let mut bytes = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 3, 0];
    let mut mechanism = b"NULL".to_vec();
    mechanism.resize(20, 0);
    bytes.extend(mechanism);
    bytes.push(0); // as-server
    bytes.extend([0u8; 31]); // filler
    let mut ready = vec![5];
    ready.extend(b"READY");
    ready.push(11);
    ready.extend(b"Socket-Type");
    ready.extend(6u32.to_be_bytes());
    ready.extend(b"DEALER");
    bytes.push(0x04); // command, short
    bytes.push(u8::try_from(ready.len()).unwrap());
    bytes.extend(ready);
    bytes.push(0x02); // message frame, long size, last
    bytes.extend((1u64 << 40).to_be_bytes());
    bytes
}

/// `tcp://127.0.0.1:1234` → `127.0.0.1:1234`.
pub(crate) fn tcp_address(endpoint: &str) -> String {
    endpoint.trim_start_matches("tcp://").to_owned()
}
