//! A stand-in for broker + nodes + proxy, for tests (feature `fake-cluster`).
//!
//! [`FakeCluster`] binds a ROUTER on `tcp://127.0.0.1:0` that clients treat as the
//! broker frontend. It decodes each [`Request`] and answers it from one real
//! [`store::Store`] (so sessions, exactly-once retries, CAS and chat behave as on a
//! cluster), one command per slot. It publishes committed chat messages on a PUB socket
//! (clients treat it as the proxy backend) and serves `GET /status` on one HTTP port per
//! pretend node. Faults are injected with a seeded RNG ([`FakeConfig`]): dropped
//! requests, dropped or delayed replies, `unavailable` answers, and requests that are
//! applied but never answered at all, so that callers see unknown outcomes.
//!
//! Linearizability holds by construction — one store, commands applied in arrival order,
//! each between its send and its answer — so a client history recorded against it must
//! check as linearizable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use proto::client::{Command, Op, session_key};
use proto::live::LiveMessage;
use proto::{Consistency, Error, ErrorCode, Request, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use store::{Store, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use transport::{Kind, Sender, Socket, TransportError};

/// The command a request proposes, as a node makes it: a `login` checks its password
/// (here a SHA-256 stands in for Argon2: the fake needs no slow hash) and becomes
/// `OpenSession` or `Register`; internal ops are refused.
fn fake_login(store: &Store, request: &Request) -> Result<Command, Error> {
    let unauthenticated = |message: &str| Error::new(ErrorCode::Unauthenticated, message);
    if request.op.is_internal() {
        return Err(Error::new(ErrorCode::BadRequest, "fake: internal op"));
    }
    let Op::Login { user, password } = &request.op else {
        return Ok(Command::from(request));
    };
    if password.is_empty() || request.credential.is_none() {
        return Err(Error::new(
            ErrorCode::BadRequest,
            "fake: login needs a password and a credential",
        ));
    }
    let hashed = format!("$fake${}", session_key(password));
    let op = match store.password(user) {
        store::Password::Hash(stored) if stored == hashed => Op::OpenSession { user: user.clone() },
        store::Password::Hash(_) => return Err(unauthenticated("fake: wrong password")),
        store::Password::Unset | store::Password::Unknown => Op::Register {
            user: user.clone(),
            password_hash: hashed,
        },
    };
    let login = Request {
        op,
        ..request.clone()
    };
    Ok(Command::from(&login))
}

/// Largest HTTP request head the status servers read.
const MAX_HTTP_REQUEST_BYTES: usize = 8 * 1024;

/// Which faults to inject. Percentages are of requests (or of replies), 0–100.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// Names the replies claim to come from, in round-robin order (one status port each).
    pub node_names: Vec<String>,
    /// Requests dropped on arrival: not applied, not answered.
    pub drop_request_percent: u32,
    /// Requests answered `unavailable` without being applied.
    pub unavailable_percent: u32,
    /// Replies lost after the command was applied.
    pub drop_reply_percent: u32,
    /// `(client_id, seq)` pairs whose command is applied but never answered, on any
    /// attempt: the caller's outcome is unknown. Chosen by a hash, so every retry of one
    /// request meets the same fate. Key operations only (`put`, `get`, `cas`,
    /// `delete`: those a history records): a real cluster answers every retry in the
    /// end, and a load's setup — its login, its channel — must get through to test
    /// anything.
    pub swallow_percent: u32,
    /// Each reply is delayed by a uniform random time up to this (replies reorder).
    pub max_reply_delay: Duration,
    /// Seed of the fault RNG.
    pub seed: u64,
    /// Broker frontends in front of the one store (a pair, to test failover); at least 1.
    pub brokers: usize,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            node_names: (1..=3).map(|n| format!("node-{n}")).collect(),
            drop_request_percent: 0,
            unavailable_percent: 0,
            drop_reply_percent: 0,
            swallow_percent: 0,
            max_reply_delay: Duration::ZERO,
            seed: 1,
            brokers: 1,
        }
    }
}

/// What the fake did, for assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FakeStats {
    /// Requests received (every attempt).
    pub requests: u64,
    /// Commands applied to the store (duplicates of a retried request included: the
    /// store's session table makes them no-ops).
    pub applied: u64,
    /// Replies sent.
    pub replies: u64,
    /// Requests dropped on arrival.
    pub dropped_requests: u64,
    /// Replies dropped.
    pub dropped_replies: u64,
    /// Requests answered `unavailable`.
    pub unavailable: u64,
    /// Replies withheld because the request is swallowed.
    pub swallowed: u64,
    /// Frames that did not decode.
    pub bad_frames: u64,
    /// Chat messages published.
    pub published: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    applied: AtomicU64,
    replies: AtomicU64,
    dropped_requests: AtomicU64,
    dropped_replies: AtomicU64,
    unavailable: AtomicU64,
    swallowed: AtomicU64,
    bad_frames: AtomicU64,
    published: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

type SharedStore = Arc<Mutex<Store>>;

fn lock(store: &SharedStore) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running fake cluster; stops when dropped or with [`FakeCluster::stop`].
#[derive(Debug)]
pub struct FakeCluster {
    frontend: String,
    frontends: Vec<String>,
    /// One flag per broker frontend: while set, it reads nothing (as if SIGSTOPped).
    paused: Vec<Arc<AtomicBool>>,
    publisher: String,
    status_addrs: Vec<String>,
    counters: Arc<Counters>,
    store: SharedStore,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeCluster {
    /// Binds the sockets on free loopback ports and starts serving.
    ///
    /// # Panics
    /// If `config.node_names` is empty.
    pub async fn start(config: FakeConfig) -> Result<FakeCluster, TransportError> {
        assert!(
            !config.node_names.is_empty(),
            "a fake cluster needs a node name"
        );
        let mut frontends = Vec::new();
        for _ in 0..config.brokers.max(1) {
            frontends.push(Socket::bind(Kind::Router, "tcp://127.0.0.1:0").await?);
        }
        let publisher = Socket::bind(Kind::Pub, "tcp://127.0.0.1:0").await?;
        let endpoints: Vec<String> = frontends.iter().map(|f| f.endpoint().to_owned()).collect();
        let publisher_endpoint = publisher.endpoint().to_owned();
        let store: SharedStore = Arc::new(Mutex::new(Store::new(StoreConfig::default())));
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut status_addrs = Vec::new();
        for (index, name) in config.node_names.iter().enumerate() {
            let listener =
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| TransportError::Setup {
                        action: "bind",
                        kind: Kind::Router,
                        endpoint: "127.0.0.1:0 (status)".into(),
                        reason: e.to_string(),
                    })?;
            let address = listener.local_addr().map_err(|e| TransportError::Setup {
                action: "bind",
                kind: Kind::Router,
                endpoint: "127.0.0.1:0 (status)".into(),
                reason: e.to_string(),
            })?;
            status_addrs.push(address.to_string());
            tasks.push(tokio::spawn(serve_status(
                listener,
                name.clone(),
                index,
                store.clone(),
                stop.clone(),
            )));
        }
        let mut paused = Vec::new();
        for (index, frontend) in frontends.into_iter().enumerate() {
            let flag = Arc::new(AtomicBool::new(false));
            let config = FakeConfig {
                seed: config.seed.wrapping_add(index as u64),
                ..config.clone()
            };
            tasks.push(tokio::spawn(serve_requests(
                frontend,
                publisher.sender.clone(),
                config,
                flag.clone(),
                store.clone(),
                counters.clone(),
                stop.clone(),
            )));
            paused.push(flag);
        }
        Ok(FakeCluster {
            frontend: endpoints.join(","),
            frontends: endpoints,
            paused,
            publisher: publisher_endpoint,
            status_addrs,
            counters,
            store,
            stop,
            tasks,
        })
    }

    /// The "broker frontends" clients connect to, separated by commas.
    pub fn frontend_endpoint(&self) -> &str {
        &self.frontend
    }

    /// Each broker frontend.
    pub fn frontend_endpoints(&self) -> &[String] {
        &self.frontends
    }

    /// Pauses (or resumes) broker frontend `index`: it reads nothing meanwhile, as a
    /// SIGSTOPped broker.
    pub fn pause_broker(&self, index: usize, paused: bool) {
        if let Some(flag) = self.paused.get(index) {
            flag.store(paused, Ordering::Relaxed);
        }
    }

    /// The "proxy backend" where chat messages are published.
    pub fn publisher_endpoint(&self) -> &str {
        &self.publisher
    }

    /// The `host:port` of each pretend node's `/status`.
    pub fn status_addrs(&self) -> &[String] {
        &self.status_addrs
    }

    /// The counters now.
    pub fn stats(&self) -> FakeStats {
        let c = &*self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        FakeStats {
            requests: load(&c.requests),
            applied: load(&c.applied),
            replies: load(&c.replies),
            dropped_requests: load(&c.dropped_requests),
            dropped_replies: load(&c.dropped_replies),
            unavailable: load(&c.unavailable),
            swallowed: load(&c.swallowed),
            bad_frames: load(&c.bad_frames),
            published: load(&c.published),
        }
    }

    /// A copy of the store now.
    pub fn store(&self) -> Store {
        lock(&self.store).clone()
    }

    /// Stops serving and waits for the tasks.
    pub async fn stop(mut self) {
        self.stop.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

/// A 64-bit mix (SplitMix64's finaliser): the same request always gets the same fate.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn swallowed(config: &FakeConfig, request: &Request) -> bool {
    let key_op = matches!(
        request.op,
        Op::Put { .. } | Op::Get { .. } | Op::Cas { .. } | Op::Delete { .. }
    );
    if !key_op {
        return false;
    }
    let hash = mix64(config.seed ^ mix64(request.client_id ^ mix64(request.seq)));
    hash % 100 < u64::from(config.swallow_percent)
}

async fn serve_requests(
    mut frontend: Socket,
    publisher: Sender,
    config: FakeConfig,
    paused: Arc<AtomicBool>,
    store: SharedStore,
    counters: Arc<Counters>,
    stop: CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut next_node = 0usize;
    let percent = |rng: &mut StdRng, threshold: u32| rng.random_range(0..100) < threshold;
    loop {
        if paused.load(Ordering::Relaxed) {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(10)) => continue,
            }
        }
        let message = tokio::select! {
            () = stop.cancelled() => return,
            message = frontend.recv() => match message {
                Some(message) => message,
                None => return,
            },
        };
        let Ok((route, body)) = proto::codec::split(&message, 1) else {
            bump(&counters.bad_frames);
            continue;
        };
        let route = route.to_vec();
        if body == proto::fabric::BROKER_PING {
            // Like a broker: answered at once, with the nodes it routes to.
            let mut pong = route;
            pong.push(proto::fabric::broker_pong(config.node_names.len()));
            let _ = frontend.send(pong).await;
            continue;
        }
        let Ok(request) = proto::decode::<Request>(body) else {
            bump(&counters.bad_frames);
            continue;
        };
        bump(&counters.requests);
        if percent(&mut rng, config.drop_request_percent) {
            bump(&counters.dropped_requests);
            continue;
        }
        let result = if percent(&mut rng, config.unavailable_percent) {
            bump(&counters.unavailable);
            Err(Error::new(
                ErrorCode::Unavailable,
                "fake: injected unavailable",
            ))
        } else if request.consistency == Consistency::Local && request.op.is_read_only() {
            let session = request.credential.as_deref().map(session_key);
            lock(&store).read_local(&request.op, session.as_deref())
        } else {
            // Its own statement: the guard must be gone before the arm locks again.
            let command = fake_login(&lock(&store), &request);
            match command {
                Err(error) => Err(error),
                Ok(command) => {
                    let (applied, posted) = {
                        let mut store = lock(&store);
                        let slot = store.applied_slot() + 1;
                        let applied = store.apply(slot, slot, &[command]);
                        (applied.replies, applied.posted)
                    };
                    bump(&counters.applied);
                    for message in posted {
                        let live = LiveMessage::for_delivery(message);
                        let topic = live.topic().into_bytes();
                        if let Ok(frame) = proto::encode(&live) {
                            // A PUB socket drops for slow subscribers rather than block.
                            if publisher.try_send(vec![topic, frame]).is_ok() {
                                bump(&counters.published);
                            }
                        }
                    }
                    match applied.into_iter().next() {
                        Some(reply) => reply.result,
                        None => Err(Error::new(ErrorCode::Internal, "fake: no reply")),
                    }
                }
            }
        };
        if swallowed(&config, &request) {
            bump(&counters.swallowed);
            continue;
        }
        if percent(&mut rng, config.drop_reply_percent) {
            bump(&counters.dropped_replies);
            continue;
        }
        let response = Response {
            seq: request.seq,
            result,
            node: config.node_names[next_node % config.node_names.len()].clone(),
            applied_slot: lock(&store).applied_slot(),
        };
        next_node += 1;
        let Ok(frame) = proto::encode(&response) else {
            continue;
        };
        let mut reply = route;
        reply.push(frame);
        let delay_ms = config.max_reply_delay.as_millis();
        let delay = if delay_ms > 0 {
            Duration::from_millis(u64::try_from(rng.random_range(0..=delay_ms)).unwrap_or(0))
        } else {
            Duration::ZERO
        };
        bump(&counters.replies);
        if delay.is_zero() {
            let _ = frontend.send(reply).await;
        } else {
            let sender = frontend.sender.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = sender.send(reply).await;
            });
        }
    }
}

/// Answers every HTTP request with this pretend node's status JSON.
async fn serve_status(
    listener: TcpListener,
    name: String,
    index: usize,
    store: SharedStore,
    stop: CancellationToken,
) {
    loop {
        let (mut stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        let mut head = Vec::new();
        let mut buffer = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HTTP_REQUEST_BYTES {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buffer[..n]),
            }
        }
        let body = {
            let store = lock(&store);
            json!({
                "node": name,
                "rank": index + 1,
                "role": if index == 0 { "leader" } else { "follower" },
                "leader": "node-1",
                "applied_slot": store.applied_slot(),
                "digest": store.digest().to_string(),
                "lamport": store.lamport(),
                "clock_offset_ms": 0.0,
            })
            .to_string()
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}
