//! Requests to the brokers that take effect once, whatever is lost on the way.
//!
//! A [`Connection`] talks to one or more brokers (a pair, by default), each through its
//! own DEALER socket: it sends `[body(Request)]` and receives `[body(Response)]`. Many
//! [`Session`]s share it: each has its own random `client_id`, and the connection hands
//! out request numbers (`seq`) from one counter, so that a reply — which carries only its
//! `seq` — finds its caller, and the numbers of every session still strictly increase.
//!
//! ## Which broker (the zguide's Freelance pattern, client side)
//! The connection pings every broker every [`PING_INTERVAL`]; a broker answers at once
//! with how many nodes it can route to ([`proto::fabric::broker_pong`]). A broker is
//! **up** once it answered, until it has been silent (no pong, no reply) for
//! [`DOWN_AFTER`] — dead or paused alike. Requests go to the **first** up broker of the
//! list (one with live nodes first): the second of a pair is a hot standby, which costs
//! nothing while the first serves (spreading the requests over both made every write
//! cost more wake-ups in two processes: 15–25 % fewer writes/s on two cores). When a
//! broker goes down, every call waiting on it sends its
//! request again at once through another broker, with the **same** `(client_id, seq)`,
//! so a request that was inside the dead broker costs about [`DOWN_AFTER`], not a retry
//! timeout, and still takes effect once. With no broker up, a call waits for one until
//! its deadline, then fails with [`CallError::NoBroker`].
//!
//! [`Session::call`] sends the request, waits up to [`CallOptions::attempt_timeout`] for
//! the answer, and sends the **same** request again (same `client_id` and `seq`) when the
//! answer is late or says "retry" (`unavailable`, `not_leader`, `overloaded`, `timeout`),
//! until an answer or the overall [`CallOptions::timeout`]. The cluster's session table
//! applies the request once and answers every attempt alike.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use proto::client::{ClientId, Seq};
use proto::fabric::{BROKER_PING, parse_broker_pong};
use proto::{Consistency, Error, ErrorCode, Op, Request, Response};
use rand::Rng;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use transport::{Kind, Mode, Options, Receiver, Sender, Socket, TransportError};

mod call;
use call::is_retryable;
pub use call::{Answer, CallError, CallOptions};

/// Most calls in flight on one connection; more wait for a slot. Also bounds the table
/// of callers waiting for a reply.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Most brokers one connection talks to.
pub const MAX_BROKERS: usize = 8;
/// Default wait for the answer to one attempt before it is sent again.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default overall deadline of one call: long enough to ride out a leader election.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause before retrying after a "retry later" answer.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between retries (the pause doubles up to this).
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// How often every broker is pinged.
pub const PING_INTERVAL: Duration = Duration::from_millis(100);
/// A broker silent this long (no pong, no reply) is down: its calls go elsewhere.
pub const DOWN_AFTER: Duration = Duration::from_millis(300);
/// How often a call with no broker up looks again.
const NO_BROKER_POLL: Duration = Duration::from_millis(10);

/// Counters of a connection, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionStats {
    /// Replies that found no caller (answers to an attempt already answered, or to a
    /// call that gave up).
    pub stray_replies: u64,
    /// Frames that did not decode as a `Response`.
    pub bad_frames: u64,
    /// Attempts sent again at once because their broker went down.
    pub failovers: u64,
    /// `overloaded` answers (a node's table of waiting requests was full; the attempt
    /// took no effect and was retried).
    pub overloaded: u64,
}

/// What the reader task and the callers share.
#[derive(Debug)]
struct Shared {
    /// Callers waiting for the reply to their `seq`.
    waiting: Mutex<HashMap<Seq, oneshot::Sender<Response>>>,
    next_seq: AtomicU64,
    stray_replies: AtomicU64,
    bad_frames: AtomicU64,
    failovers: AtomicU64,
    overloaded: AtomicU64,
}

impl Shared {
    /// The waiting table. A poisoned lock only means a caller panicked while inserting or
    /// removing one entry; the map itself is still consistent.
    fn waiting(&self) -> MutexGuard<'_, HashMap<Seq, oneshot::Sender<Response>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the connection knows of one broker, shared by its reader, the pinger and the
/// calls.
#[derive(Debug)]
struct Link {
    endpoint: String,
    sender: Sender,
    /// Milliseconds since the connection opened when the broker was last heard (a pong or
    /// a reply); 0: never.
    heard_ms: AtomicU64,
    /// Answered a ping and not silent for [`DOWN_AFTER`] since.
    up: AtomicBool,
    /// Live nodes in its ring, as its last pong said.
    live_nodes: AtomicU8,
    /// Counts the times it went down: calls waiting on it watch this.
    downs: watch::Sender<u64>,
}

impl Link {
    fn heard(&self, opened: Instant) {
        let ms = opened.elapsed().as_millis() as u64;
        self.heard_ms.store(ms.max(1), Ordering::Relaxed);
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::debug!(broker = %self.endpoint, "broker up");
        }
    }
}

#[derive(Debug)]
struct Inner {
    links: Vec<Arc<Link>>,
    shared: Arc<Shared>,
    in_flight: Semaphore,
    endpoints: String,
    /// Stops the reader and pinger tasks (and so closes the sockets) when the last
    /// handle is dropped.
    _stop: DropGuard,
}

impl Inner {
    /// The broker to use: the first up one in the list, one with live nodes first;
    /// `None` when no broker is up.
    fn pick(&self) -> Option<&Arc<Link>> {
        let up = |l: &&Arc<Link>| l.up.load(Ordering::Relaxed);
        self.links
            .iter()
            .find(|l| up(l) && l.live_nodes.load(Ordering::Relaxed) > 0)
            .or_else(|| self.links.iter().find(up))
    }
}

/// One connection to the brokers (one DEALER each), shared by any number of
/// [`Session`]s. Cheap to clone; the sockets close when the last clone and session are
/// dropped.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl Connection {
    /// Connects to the brokers' frontends `endpoints`: one, or several separated by
    /// commas (`tcp://127.0.0.1:5555,tcp://127.0.0.1:5565`). ZeroMQ connects in the
    /// background: this succeeds before any broker is up, and calls wait for one within
    /// their deadline. Must be called inside a tokio runtime.
    pub async fn open(endpoints: &str) -> Result<Connection, TransportError> {
        let list: Vec<&str> = transport::endpoints(endpoints).collect();
        if list.is_empty() || list.len() > MAX_BROKERS {
            return Err(TransportError::Setup {
                action: "connect",
                kind: Kind::Dealer,
                endpoint: endpoints.to_owned(),
                reason: format!("give 1 to {MAX_BROKERS} broker endpoints, separated by commas"),
            });
        }
        let shared = Arc::new(Shared {
            waiting: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(1),
            stray_replies: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let opened = Instant::now();
        let mut links = Vec::with_capacity(list.len());
        for endpoint in list {
            let socket =
                Socket::open(Kind::Dealer, Mode::Connect, endpoint, Options::default()).await?;
            let (sender, receiver) = socket.split();
            let link = Arc::new(Link {
                endpoint: endpoint.to_owned(),
                sender,
                heard_ms: AtomicU64::new(0),
                up: AtomicBool::new(false),
                live_nodes: AtomicU8::new(0),
                downs: watch::Sender::new(0),
            });
            tokio::spawn(read_replies(
                receiver,
                link.clone(),
                shared.clone(),
                opened,
                stop.clone(),
            ));
            links.push(link);
        }
        tokio::spawn(ping(links.clone(), opened, stop.clone()));
        Ok(Connection {
            inner: Arc::new(Inner {
                links,
                shared,
                in_flight: Semaphore::new(MAX_IN_FLIGHT),
                endpoints: endpoints.to_owned(),
                _stop: stop.drop_guard(),
            }),
        })
    }

    /// A new session with a random non-zero client id.
    pub fn session(&self) -> Session {
        Session {
            inner: self.inner.clone(),
            client_id: random_client_id(),
            credential: None,
        }
    }

    /// The broker endpoints, as given.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoints
    }

    /// The brokers that are up now.
    pub fn brokers_up(&self) -> Vec<String> {
        let links = self.inner.links.iter();
        links
            .filter(|l| l.up.load(Ordering::Relaxed))
            .map(|l| l.endpoint.clone())
            .collect()
    }

    /// The connection's counters now.
    pub fn stats(&self) -> ConnectionStats {
        let shared = &self.inner.shared;
        ConnectionStats {
            stray_replies: shared.stray_replies.load(Ordering::Relaxed),
            bad_frames: shared.bad_frames.load(Ordering::Relaxed),
            failovers: shared.failovers.load(Ordering::Relaxed),
            overloaded: shared.overloaded.load(Ordering::Relaxed),
        }
    }
}

/// A random client id; 0 is reserved for the cluster's internal commands.
fn random_client_id() -> ClientId {
    loop {
        let id: ClientId = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// Pings every broker every [`PING_INTERVAL`], and declares down a broker silent for
/// [`DOWN_AFTER`] (waking the calls that wait on it).
async fn ping(links: Vec<Arc<Link>>, opened: Instant, stop: CancellationToken) {
    let mut interval = tokio::time::interval(PING_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let now_ms = opened.elapsed().as_millis() as u64;
        for link in &links {
            // A full queue means the broker is not reading: the silence will tell.
            let _ = link.sender.try_send(vec![BROKER_PING.to_vec()]);
            let heard = link.heard_ms.load(Ordering::Relaxed);
            let silent = heard == 0 || now_ms.saturating_sub(heard) > DOWN_AFTER.as_millis() as u64;
            if silent && link.up.swap(false, Ordering::Relaxed) {
                tracing::debug!(broker = %link.endpoint, "broker down: its calls go elsewhere");
                link.downs.send_modify(|n| *n += 1);
            }
        }
    }
}

/// Takes one broker's frames: pongs mark it alive; each decoded reply goes to the caller
/// waiting for its `seq`.
async fn read_replies(
    mut receiver: Receiver,
    link: Arc<Link>,
    shared: Arc<Shared>,
    opened: Instant,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = receiver.recv() => match message {
                Some(message) => message,
                None => break,
            },
        };
        if let [frame] = &message[..]
            && let Some(live) = parse_broker_pong(frame)
        {
            link.live_nodes.store(live, Ordering::Relaxed);
            link.heard(opened);
            continue;
        }
        let response =
            proto::codec::split(&message, 0).and_then(|(_, body)| proto::decode::<Response>(body));
        match response {
            Ok(response) => {
                link.heard(opened);
                let waiter = shared.waiting().remove(&response.seq);
                match waiter {
                    // The caller may have given up meanwhile; then the reply is stray too.
                    Some(waiter) => {
                        if waiter.send(response).is_err() {
                            shared.stray_replies.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        shared.stray_replies.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(error) => {
                let count = shared.bad_frames.fetch_add(1, Ordering::Relaxed) + 1;
                // Logged for the first few only: a broken peer must not flood the log.
                if count <= 10 {
                    tracing::warn!(%error, count, "dropping a reply that does not decode");
                }
            }
        }
    }
    // Wake every caller: their calls end as `Closed` instead of waiting for the deadline.
    shared.waiting().clear();
}

/// Removes a call's entry from the waiting table however the call ends (even when its
/// future is dropped), so that the table only holds live calls.
struct WaitingEntry<'a> {
    shared: &'a Shared,
    seq: Seq,
}

impl Drop for WaitingEntry<'_> {
    fn drop(&mut self) {
        self.shared.waiting().remove(&self.seq);
    }
}

/// One client session: a random `client_id` and strictly increasing request numbers.
/// One call at a time (`call` takes `&mut self`), which is what the cluster's session
/// table needs to apply every request exactly once.
#[derive(Debug)]
pub struct Session {
    inner: Arc<Inner>,
    client_id: ClientId,
    /// The chat credential sent with every request once [`Session::login`] opened it.
    credential: Option<String>,
}

impl Session {
    /// The session's client id.
    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    /// Logs in as `user` with `password` (the first login of a name registers it): draws
    /// a fresh credential, proves the password with it, and from then on sends it with
    /// every request, so that chat requests act as `user`. A wrong password is
    /// [`ErrorCode::Unauthenticated`]. If another login gave the name a password at the
    /// same moment, the login is tried once more, against that password.
    pub async fn login(
        &mut self,
        user: &str,
        password: &str,
        options: &CallOptions,
    ) -> Result<Answer, CallError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let credential = proto::client::new_credential();
            let op = Op::Login {
                user: user.to_owned(),
                password: password.to_owned(),
            };
            match self
                .send(op, Consistency::Linearizable, Some(&credential), options)
                .await
            {
                Ok(answer) => {
                    self.credential = Some(credential);
                    return Ok(answer);
                }
                Err(error) if tries < 2 && is_registration_race(&error) => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// The credential of this session's login, if it logged in.
    pub fn credential(&self) -> Option<&str> {
        self.credential.as_deref()
    }

    /// Speaks with a credential opened elsewhere (another session's login, or one kept
    /// from `client login`).
    pub fn use_credential(&mut self, credential: Option<String>) {
        self.credential = credential;
    }

    /// Sends `op` and waits for its answer, retrying with the same `(client_id, seq)` on
    /// a late answer or a "retry later" answer until [`CallOptions::timeout`].
    pub async fn call(
        &mut self,
        op: Op,
        consistency: Consistency,
        options: &CallOptions,
    ) -> Result<Answer, CallError> {
        let credential = self.credential.clone();
        self.send(op, consistency, credential.as_deref(), options)
            .await
    }

    async fn send(
        &mut self,
        op: Op,
        consistency: Consistency,
        credential: Option<&str>,
        options: &CallOptions,
    ) -> Result<Answer, CallError> {
        op.validate()?;
        let shared = &*self.inner.shared;
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            client_id: self.client_id,
            seq,
            op,
            consistency,
            credential: credential.map(str::to_owned),
        };
        let frame = proto::encode(&request)?;
        let deadline = Instant::now() + options.timeout;
        let Ok(_permit) = self.inner.in_flight.acquire().await else {
            return Err(CallError::Closed { sent: false });
        };
        let _entry = WaitingEntry { shared, seq };
        let mut attempts: u32 = 0;
        let mut unanswered = false;
        let mut last_error: Option<Error> = None;
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            let Some(link) = self.broker_up(deadline).await else {
                return Err(CallError::NoBroker {
                    brokers: self.inner.endpoints.clone(),
                    sent: attempts > 0,
                });
            };
            // Watch the broker from before the send: a down after it wakes this call.
            let mut downs = link.downs.subscribe();
            let (reply_tx, reply_rx) = oneshot::channel();
            shared.waiting().insert(seq, reply_tx);
            match tokio::time::timeout_at(deadline, link.sender.send(vec![frame.clone()])).await {
                Ok(Ok(())) => attempts += 1,
                Ok(Err(_closed)) => return Err(CallError::Closed { sent: attempts > 0 }),
                // The outbound queue stayed full until the deadline: this attempt never
                // left, but earlier ones may have.
                Err(_elapsed) => break,
            }
            let attempt_deadline = deadline.min(Instant::now() + options.attempt_timeout);
            let answer = tokio::select! {
                answer = tokio::time::timeout_at(attempt_deadline, reply_rx) => answer,
                _ = downs.changed() => {
                    // The broker went down with the request inside: send it again now,
                    // through another one (same seq: it takes effect once).
                    shared.failovers.fetch_add(1, Ordering::Relaxed);
                    unanswered = true;
                    continue;
                }
            };
            match answer {
                Err(_elapsed) => unanswered = true,
                Ok(Err(_closed)) => return Err(CallError::Closed { sent: true }),
                Ok(Ok(response)) => match response.result {
                    Ok(reply) => {
                        return Ok(Answer {
                            reply,
                            node: response.node,
                            applied_slot: response.applied_slot,
                            attempts,
                            seq,
                        });
                    }
                    Err(error) if is_retryable(error.code) => {
                        if error.code == ErrorCode::Overloaded {
                            shared.overloaded.fetch_add(1, Ordering::Relaxed);
                        }
                        if !error.code.certainly_not_applied() {
                            unanswered = true;
                        }
                        last_error = Some(error);
                        let jitter_ms = rand::rng().random_range(0..=backoff.as_millis() / 2);
                        let jitter = Duration::from_millis(u64::try_from(jitter_ms).unwrap_or(0));
                        tokio::time::sleep_until(deadline.min(Instant::now() + backoff + jitter))
                            .await;
                        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                    }
                    Err(error) => {
                        return Err(CallError::Rejected {
                            error,
                            node: response.node,
                            attempts,
                            earlier_unanswered: unanswered,
                        });
                    }
                },
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        match last_error {
            Some(error) if !unanswered => Err(CallError::Unavailable { error, attempts }),
            last_error => Err(CallError::Timeout {
                attempts,
                last_error,
                timeout: options.timeout,
            }),
        }
    }

    /// A broker that is up, waiting for one until `deadline`.
    async fn broker_up(&self, deadline: Instant) -> Option<Arc<Link>> {
        loop {
            if let Some(link) = self.inner.pick() {
                return Some(link.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep_until(deadline.min(Instant::now() + NO_BROKER_POLL)).await;
        }
    }
}

/// Whether a login failed because another login registered the same name with a
/// password between this node's look at the state and the proposal's apply.
fn is_registration_race(error: &CallError) -> bool {
    matches!(error, CallError::Rejected { error, .. }
        if error.code == ErrorCode::Unauthenticated && error.message.contains("meanwhile"))
}

#[cfg(test)]
mod tests;
