//! Requests to the broker that take effect once, whatever is lost on the way.
//!
//! A [`Connection`] is one DEALER socket connected to the broker frontend; it sends
//! `[body(Request)]` and receives `[body(Response)]`. Many [`Session`]s share it: each has
//! its own random `client_id`, and the connection hands out request numbers (`seq`) from
//! one counter, so that a reply — which carries only its `seq` — finds its caller, and the
//! numbers of every session still strictly increase.
//!
//! [`Session::call`] sends the request, waits up to [`CallOptions::attempt_timeout`] for
//! the answer, and sends the **same** request again (same `client_id` and `seq`) when the
//! answer is late or says "retry" (`unavailable`, `not_leader`, `overloaded`, `timeout`),
//! until an answer or the overall [`CallOptions::timeout`]. The cluster's session table
//! applies the request once and answers every attempt alike.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use proto::client::{ClientId, Seq};
use proto::{Consistency, EncodeError, Error, ErrorCode, LimitError, Op, Reply, Request, Response};
use rand::Rng;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use transport::{Kind, Mode, Options, Receiver, Sender, Socket, TransportError};

/// Most calls in flight on one connection; more wait for a slot. Also bounds the table
/// of callers waiting for a reply.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Default wait for the answer to one attempt before it is sent again.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default overall deadline of one call: long enough to ride out a leader election.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// First pause before retrying after a "retry later" answer.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between retries (the pause doubles up to this).
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);

/// How long a call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    /// Wait for one attempt's answer before sending the request again.
    pub attempt_timeout: Duration,
    /// Overall deadline from the first attempt; then the call gives up.
    pub timeout: Duration,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A successful call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What the cluster answered.
    pub reply: Reply,
    /// The replica that answered.
    pub node: String,
    /// That replica's applied slot when it answered.
    pub applied_slot: u64,
    /// Attempts sent (1 when nothing was retried).
    pub attempts: u32,
    /// The request number of the call.
    pub seq: Seq,
}

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request breaks a limit; it was not sent.
    #[error("invalid request: {0}")]
    Invalid(#[from] LimitError),
    /// The request could not be encoded; it was not sent.
    #[error("cannot encode the request: {0}")]
    Encode(#[from] EncodeError),
    /// The cluster answered with an error that retrying would not change.
    #[error("{error}")]
    Rejected {
        /// The error.
        error: Error,
        /// The replica that answered.
        node: String,
        /// Attempts sent.
        attempts: u32,
        /// An earlier attempt got no answer (it may have taken effect before this one
        /// was answered).
        earlier_unanswered: bool,
    },
    /// Every attempt was answered "retry later" with a code that guarantees no effect,
    /// until the deadline: the request certainly did not take effect.
    #[error("gave up after {attempts} attempts: {error}; the request did not take effect")]
    Unavailable {
        /// The last answer.
        error: Error,
        /// Attempts sent.
        attempts: u32,
    },
    /// No conclusive answer before the deadline: the request may or may not have taken
    /// effect (outcome unknown).
    #[error(
        "no answer within {timeout:?} ({attempts} attempts{}); the request may or may not have taken effect",
        last_error.as_ref().map(|e| format!(", last answer: {e}")).unwrap_or_default()
    )]
    Timeout {
        /// Attempts sent.
        attempts: u32,
        /// The last "retry later" answer, if any.
        last_error: Option<Error>,
        /// The overall deadline that passed.
        timeout: Duration,
    },
    /// The connection's socket closed.
    #[error("connection to the broker closed")]
    Closed {
        /// Whether an attempt had been sent (then the outcome is unknown).
        sent: bool,
    },
}

impl CallError {
    /// Whether the request certainly took no effect, so that a history may record it as
    /// `fail`. False whenever some attempt went unanswered.
    pub fn certainly_not_applied(&self) -> bool {
        match self {
            CallError::Invalid(_) | CallError::Encode(_) | CallError::Unavailable { .. } => true,
            CallError::Rejected {
                error,
                earlier_unanswered,
                ..
            } => error.code.certainly_not_applied() && !earlier_unanswered,
            CallError::Timeout { .. } => false,
            CallError::Closed { sent } => !sent,
        }
    }

    /// The cluster's error code, when the cluster answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CallError::Rejected { error, .. } | CallError::Unavailable { error, .. } => {
                Some(error.code)
            }
            CallError::Invalid(_)
            | CallError::Encode(_)
            | CallError::Timeout { .. }
            | CallError::Closed { .. } => None,
        }
    }

    /// A short stable name for counters and JSON output: the error code's name, or
    /// `timeout`, `invalid`, `closed`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Invalid(_) | CallError::Encode(_) => "invalid",
            CallError::Rejected { error, .. } | CallError::Unavailable { error, .. } => {
                error.code.as_str()
            }
            CallError::Timeout { .. } => "timeout",
            CallError::Closed { .. } => "closed",
        }
    }
}

/// Answers that mean "try again": the request either certainly did not take effect
/// (`unavailable`, `not_leader`, `overloaded`) or is still pending (`timeout`); in both
/// cases sending the same `(client_id, seq)` again is safe.
fn is_retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unavailable | ErrorCode::NotLeader | ErrorCode::Overloaded | ErrorCode::Timeout
    )
}

/// Counters of a connection, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionStats {
    /// Replies that found no caller (answers to an attempt already answered, or to a
    /// call that gave up).
    pub stray_replies: u64,
    /// Frames that did not decode as a `Response`.
    pub bad_frames: u64,
}

/// What the reader task and the callers share.
#[derive(Debug)]
struct Shared {
    /// Callers waiting for the reply to their `seq`.
    waiting: Mutex<HashMap<Seq, oneshot::Sender<Response>>>,
    next_seq: AtomicU64,
    stray_replies: AtomicU64,
    bad_frames: AtomicU64,
}

impl Shared {
    /// The waiting table. A poisoned lock only means a caller panicked while inserting or
    /// removing one entry; the map itself is still consistent.
    fn waiting(&self) -> MutexGuard<'_, HashMap<Seq, oneshot::Sender<Response>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct Inner {
    sender: Sender,
    shared: Arc<Shared>,
    in_flight: Semaphore,
    endpoint: String,
    /// Stops the reader task (and so closes the socket) when the last handle is dropped.
    _stop: DropGuard,
}

/// One DEALER connection to the broker frontend, shared by any number of [`Session`]s.
/// Cheap to clone; the socket closes when the last clone and session are dropped.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl Connection {
    /// Connects a DEALER to the broker frontend `endpoint` (e.g. `tcp://127.0.0.1:5555`).
    /// ZeroMQ connects in the background: this succeeds before the broker is up, and
    /// calls wait for it within their deadline. Must be called inside a tokio runtime.
    pub async fn open(endpoint: &str) -> Result<Connection, TransportError> {
        let socket =
            Socket::open(Kind::Dealer, Mode::Connect, endpoint, Options::default()).await?;
        Ok(Connection::from_socket(socket))
    }

    /// Wraps an already connected DEALER socket.
    ///
    /// # Panics
    /// If the socket is not a DEALER: replies would not be matched.
    pub fn from_socket(socket: Socket) -> Connection {
        assert!(
            socket.kind() == Kind::Dealer,
            "a client connection is a DEALER socket, not {}",
            socket.kind()
        );
        let endpoint = socket.endpoint().to_owned();
        let (sender, receiver) = socket.split();
        let shared = Arc::new(Shared {
            waiting: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(1),
            stray_replies: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(read_replies(receiver, shared.clone(), stop.clone()));
        Connection {
            inner: Arc::new(Inner {
                sender,
                shared,
                in_flight: Semaphore::new(MAX_IN_FLIGHT),
                endpoint,
                _stop: stop.drop_guard(),
            }),
        }
    }

    /// A new session with a random non-zero client id.
    pub fn session(&self) -> Session {
        Session {
            inner: self.inner.clone(),
            client_id: random_client_id(),
        }
    }

    /// The broker endpoint.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The connection's counters now.
    pub fn stats(&self) -> ConnectionStats {
        let shared = &self.inner.shared;
        ConnectionStats {
            stray_replies: shared.stray_replies.load(Ordering::Relaxed),
            bad_frames: shared.bad_frames.load(Ordering::Relaxed),
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

/// Hands each decoded reply to the caller waiting for its `seq`.
async fn read_replies(mut receiver: Receiver, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => break,
            message = receiver.recv() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let response =
            proto::codec::split(&message, 0).and_then(|(_, body)| proto::decode::<Response>(body));
        match response {
            Ok(response) => {
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
}

impl Session {
    /// The session's client id.
    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    /// Sends `op` and waits for its answer, retrying with the same `(client_id, seq)` on
    /// a late answer or a "retry later" answer until [`CallOptions::timeout`].
    pub async fn call(
        &mut self,
        op: Op,
        consistency: Consistency,
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
            let (reply_tx, reply_rx) = oneshot::channel();
            shared.waiting().insert(seq, reply_tx);
            match tokio::time::timeout_at(deadline, self.inner.sender.send(vec![frame.clone()]))
                .await
            {
                Ok(Ok(())) => attempts += 1,
                Ok(Err(_closed)) => return Err(CallError::Closed { sent: attempts > 0 }),
                // The outbound queue stayed full until the deadline: this attempt never
                // left, but earlier ones may have.
                Err(_elapsed) => break,
            }
            let attempt_deadline = deadline.min(Instant::now() + options.attempt_timeout);
            match tokio::time::timeout_at(attempt_deadline, reply_rx).await {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: ErrorCode) -> Error {
        Error::new(code, "test")
    }

    #[test]
    fn outcomes_are_certain_only_without_unanswered_attempts() {
        let rejected = |code, earlier_unanswered| CallError::Rejected {
            error: error(code),
            node: String::new(),
            attempts: 1,
            earlier_unanswered,
        };
        assert!(rejected(ErrorCode::BadRequest, false).certainly_not_applied());
        assert!(!rejected(ErrorCode::BadRequest, true).certainly_not_applied());
        assert!(!rejected(ErrorCode::Internal, false).certainly_not_applied());
        assert!(!rejected(ErrorCode::NotFound, false).certainly_not_applied());
        let timeout = CallError::Timeout {
            attempts: 3,
            last_error: Some(error(ErrorCode::Unavailable)),
            timeout: Duration::from_secs(1),
        };
        assert!(!timeout.certainly_not_applied());
        assert_eq!(timeout.kind(), "timeout");
        let unavailable = CallError::Unavailable {
            error: error(ErrorCode::NotLeader),
            attempts: 3,
        };
        assert!(unavailable.certainly_not_applied());
        assert_eq!(unavailable.kind(), "not_leader");
        assert!(CallError::Closed { sent: false }.certainly_not_applied());
        assert!(!CallError::Closed { sent: true }.certainly_not_applied());
    }

    #[test]
    fn client_ids_are_never_zero() {
        for _ in 0..1000 {
            assert_ne!(random_client_id(), 0);
        }
    }
}
