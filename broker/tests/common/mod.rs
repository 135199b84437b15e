//! Helpers shared by the broker's integration tests: an in-process broker on free ports,
//! stand-in nodes and clients.

#![allow(dead_code)] // each test file uses a different part of this module

pub(crate) mod hostile;

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

/// The cluster key of the tests' broker and stand-in nodes.
pub(crate) fn keys() -> proto::seal::Keyring {
    proto::seal::Keyring::parse(&"ab".repeat(32)).unwrap()
}

pub(crate) struct TestBroker {
    pub(crate) frontend: String,
    pub(crate) backend: String,
    /// The status port (HTTP).
    pub(crate) status: std::net::SocketAddr,
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
            Options::default().peer_address(),
        )
        .await
        .unwrap();
        let (frontend_ep, backend_ep) = (
            frontend.endpoint().to_owned(),
            backend.endpoint().to_owned(),
        );
        let status = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let status_addr = status.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(broker::run(
            frontend,
            backend,
            status,
            config,
            keys(),
            shutdown.clone(),
        ));
        TestBroker {
            frontend: frontend_ep,
            backend: backend_ep,
            status: status_addr,
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
            Options::default(),
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
    let keys = keys();
    let control =
        |message: &NodeToBroker| keys.seal(&[broker::CONTROL], &proto::encode(message).unwrap());
    let ready = control(&NodeToBroker::Ready { node: name.clone() });
    *last_heartbeat.lock().unwrap() = Some(Instant::now());
    tx.send(vec![ready]).await.unwrap();
    let heartbeat = control(&NodeToBroker::Heartbeat { node: name.clone() });
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
                if let [frame] = message.as_slice()
                    && let Some(nonce) = proto::fabric::parse_broker_challenge(frame)
                {
                    let proof = NodeToBroker::Proof { node: name.clone(), nonce: nonce.to_vec() };
                    tx.send(vec![control(&proof)]).await.unwrap();
                    continue;
                }
                let [client, body] = message.as_slice() else { continue };
                let Ok(body) = keys.open(&[broker::REQUEST, client], body) else { continue };
                let Ok(request) = proto::decode::<Request>(&body) else { continue };
                received.fetch_add(1, Ordering::SeqCst);
                let response = Response {
                    seq: request.seq,
                    result: Ok(Reply::Value(name.clone())),
                    node: name.clone(),
                    applied_slot: 0,
                };
                let reply = keys.seal(&[broker::REPLY, client], &proto::encode(&response).unwrap());
                tx.send(vec![client.clone(), reply]).await.unwrap();
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
            credential: None,
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
