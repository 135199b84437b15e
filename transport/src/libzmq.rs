//! The libzmq backend: sockets driven by the tokio task that uses them.
//!
//! Each libzmq socket exposes a signalling descriptor (`ZMQ_FD`) that becomes readable
//! when the socket may have become readable or writable. It is registered with tokio's
//! reactor ([`AsyncFd`]); tasks send and receive with `ZMQ_DONTWAIT` on the calling
//! thread and park on the descriptor only when libzmq says `EAGAIN`. So a message costs
//! no thread hop of ours: between the task and the network there is only libzmq's own
//! I/O thread.
//!
//! libzmq sockets are not thread-safe: the socket sits behind a mutex, and every call
//! is one complete libzmq call made under it (the mutex also gives the full memory
//! barrier libzmq asks for when a socket moves between threads, as tokio tasks do).
//!
//! The descriptor is edge-triggered, and every libzmq call on the socket may consume an
//! edge (it processes pending commands). So after each operation the socket wakes the
//! tasks parked on the *other* side, if any, when libzmq reports the socket ready for
//! them (`ZMQ_EVENTS`). Parked tasks register their notification before they try, so a
//! wake-up can never fall between a failed try and the wait.
//!
//! Inbound messages are read only when the user asks for one, so a slow user pushes
//! back on libzmq, whose high-water marks then push back on (or drop for) the peers.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use crate::{Kind, Mode, Options, TransportError};
type Multipart = crate::Multipart;

mod forward;
pub(crate) use forward::forward;

fn context() -> &'static zmq::Context {
    static CONTEXT: OnceLock<zmq::Context> = OnceLock::new();
    CONTEXT.get_or_init(zmq::Context::new)
}

fn zmq_kind(kind: Kind) -> zmq::SocketType {
    match kind {
        Kind::Router => zmq::ROUTER,
        Kind::Dealer => zmq::DEALER,
        Kind::Pub => zmq::PUB,
        Kind::Sub => zmq::SUB,
        Kind::XPub => zmq::XPUB,
        Kind::XSub => zmq::XSUB,
    }
}

fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

/// Creates, configures and binds or connects one libzmq socket.
fn open(
    kind: Kind,
    mode: Mode,
    endpoint: &str,
    options: &Options,
) -> Result<(zmq::Socket, String), TransportError> {
    let socket = create(kind, endpoint, options)?;
    let resolved = attach_endpoint(&socket, kind, mode, endpoint)?;
    Ok((socket, resolved))
}

fn setup_error<'a>(
    action: &'static str,
    kind: Kind,
    endpoint: &'a str,
) -> impl Fn(zmq::Error) -> TransportError + 'a {
    move |e| TransportError::Setup {
        action,
        kind,
        endpoint: endpoint.to_owned(),
        reason: e.to_string(),
    }
}

/// Creates and configures one libzmq socket (`endpoint` is only for error messages).
fn create(kind: Kind, endpoint: &str, options: &Options) -> Result<zmq::Socket, TransportError> {
    let socket = context()
        .socket(zmq_kind(kind))
        .map_err(setup_error("create", kind, endpoint))?;
    let configure = || -> Result<(), zmq::Error> {
        socket.set_sndhwm(options.send_hwm)?;
        socket.set_rcvhwm(options.recv_hwm)?;
        socket.set_maxmsgsize(i64::try_from(options.max_msg_bytes).unwrap_or(i64::MAX))?;
        socket.set_linger(millis(crate::LINGER))?;
        socket.set_reconnect_ivl(millis(options.reconnect_interval))?;
        socket.set_reconnect_ivl_max(millis(options.reconnect_interval_max))?;
        socket.set_heartbeat_ivl(millis(options.heartbeat_interval))?;
        socket.set_heartbeat_timeout(millis(options.heartbeat_timeout))?;
        socket.set_heartbeat_ttl(millis(options.heartbeat_timeout))?;
        // Kernel keepalives too, so that idle connections survive NAT and load balancers
        // (Docker Swarm's IPVS forgets idle flows after 15 minutes).
        socket.set_tcp_keepalive(1)?;
        socket.set_tcp_keepalive_idle(60)?;
        if let Some(identity) = &options.identity {
            socket.set_identity(identity)?;
        }
        if kind == Kind::Router && options.router_handover {
            socket.set_router_handover(true)?;
        }
        if kind == Kind::Sub {
            for prefix in &options.subscriptions {
                socket.set_subscribe(prefix)?;
            }
        }
        Ok(())
    };
    configure().map_err(setup_error("configure", kind, endpoint))?;
    Ok(socket)
}

/// Binds or connects a created socket; returns the endpoint with a port 0 resolved.
fn attach_endpoint(
    socket: &zmq::Socket,
    kind: Kind,
    mode: Mode,
    endpoint: &str,
) -> Result<String, TransportError> {
    Ok(match mode {
        Mode::Bind => {
            socket
                .bind(endpoint)
                .map_err(setup_error("bind", kind, endpoint))?;
            match socket.get_last_endpoint() {
                Ok(Ok(resolved)) => resolved,
                _ => endpoint.to_owned(),
            }
        }
        Mode::Connect => {
            for one in crate::endpoints(endpoint) {
                socket
                    .connect(one)
                    .map_err(setup_error("connect", kind, endpoint))?;
            }
            endpoint.to_owned()
        }
    })
}

/// The ZeroMQ socket's signalling descriptor (`ZMQ_FD`), registered with tokio's reactor.
/// libzmq owns it; it is only watched here, never read.
struct SignalFd(RawFd);

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Counts the tasks parked on one side of a socket while they are parked.
struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Parked(counter)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// libzmq's queue for the peer is full (or there is no peer yet): wait for readiness.
pub(crate) struct Full;

/// One libzmq socket shared by its [`crate::Sender`]s and its [`crate::Receiver`]. The
/// socket is closed when the last of them is dropped.
pub(crate) struct Shared {
    // Field order is drop order: the descriptor leaves the reactor before libzmq closes it.
    signal: AsyncFd<SignalFd>,
    socket: Mutex<zmq::Socket>,
    kind: Kind,
    /// Tasks waiting to receive / to send, and the notifications that re-arm them when
    /// another operation consumed the readiness edge they wait for.
    readers: AtomicUsize,
    writers: AtomicUsize,
    readable: Notify,
    writable: Notify,
    /// Whether to note the sender's address of each message ([`Options::peer_address`]).
    note_peer: bool,
    /// The address of the peer the last message came from, when noted.
    last_peer: Mutex<Option<String>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("kind", &self.kind).finish()
    }
}

/// Opens a socket and registers its signalling descriptor with the current tokio runtime
/// (which must have its I/O driver enabled).
pub(crate) fn attach(
    kind: Kind,
    mode: Mode,
    endpoint: &str,
    options: &Options,
) -> Result<(String, Arc<Shared>), TransportError> {
    let (socket, resolved) = open(kind, mode, endpoint, options)?;
    let setup = |reason: String| TransportError::Setup {
        action: "register",
        kind,
        endpoint: endpoint.to_owned(),
        reason,
    };
    let fd = socket.get_fd().map_err(|e| setup(e.to_string()))?;
    // tokio 1.54 deprecated its safe constructors (they take a raw descriptor without
    // proof that it stays open) in favour of an `unsafe` one, and this workspace forbids
    // unsafe code. The contract of `register_with_interest` holds here: the descriptor is
    // libzmq's, open until the socket is closed, and `Shared` drops the `AsyncFd` first.
    #[allow(deprecated)]
    let signal = AsyncFd::with_interest(SignalFd(fd), Interest::READABLE).map_err(|e| {
        setup(format!(
            "{e} (is a tokio runtime with I/O enabled running?)"
        ))
    })?;
    Ok((
        resolved,
        Arc::new(Shared {
            signal,
            socket: Mutex::new(socket),
            kind,
            readers: AtomicUsize::new(0),
            writers: AtomicUsize::new(0),
            readable: Notify::new(),
            writable: Notify::new(),
            note_peer: options.peer_address,
            last_peer: Mutex::new(None),
        }),
    ))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, zmq::Socket> {
        // A panic while holding the lock cannot leave a libzmq socket half-updated in a
        // way that matters here: every call below is one complete libzmq call.
        self.socket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// After an operation of one side, wakes the parked tasks of the other side if the
    /// socket is ready for them: the operation may have consumed the edge of `ZMQ_FD`
    /// they wait for (libzmq processes its pending commands inside every call).
    fn rearm(&self, socket: &zmq::Socket, for_readers: bool, for_writers: bool) {
        let readers = for_readers && self.readers.load(Ordering::SeqCst) > 0;
        let writers = for_writers && self.writers.load(Ordering::SeqCst) > 0;
        if !readers && !writers {
            return;
        }
        let Ok(events) = socket.get_events() else {
            // A broken socket: let everyone look for themselves.
            self.readable.notify_waiters();
            self.writable.notify_waiters();
            return;
        };
        if readers && events.contains(zmq::POLLIN) {
            self.readable.notify_waiters();
        }
        if writers && events.contains(zmq::POLLOUT) {
            self.writable.notify_waiters();
        }
    }

    /// Sends now, or says that the queue is full. A send that fails otherwise
    /// (`EHOSTUNREACH` and the like: the peer is gone) is dropped, as PUB and ROUTER drop:
    /// the protocols above retry.
    pub(crate) fn try_send(&self, message: &Multipart) -> Result<(), Full> {
        let socket = self.lock();
        let send = || socket.send_multipart(message.iter().map(Vec::as_slice), zmq::DONTWAIT);
        let mut result = send();
        if matches!(result, Err(zmq::Error::EAGAIN))
            && socket.get_events().is_ok_and(|e| e.contains(zmq::POLLOUT))
        {
            // A non-blocking send processes libzmq's pending commands only every so often
            // (it is throttled by the CPU's clock), so a pipe may have been re-opened by a
            // command still waiting in the mailbox, whose descriptor edge is already
            // spent. ZMQ_EVENTS processes them all: one more try is then exact, and any
            // later command makes a new edge.
            result = send();
        }
        self.rearm(&socket, true, false);
        match result {
            Ok(()) => Ok(()),
            Err(zmq::Error::EAGAIN) => Err(Full),
            Err(e) => {
                tracing::debug!(kind = %self.kind, error = %e, "send dropped");
                Ok(())
            }
        }
    }

    /// Sends, waiting while libzmq's queue for the peer is full (or no peer is there).
    pub(crate) async fn send(&self, message: &Multipart) -> Result<(), TransportError> {
        let _parked = Parked::new(&self.writers);
        loop {
            let notified = self.writable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.try_send(message).is_ok() {
                return Ok(());
            }
            self.wait(notified).await?;
        }
    }

    /// Receives a message if one is there now; `Err` if the socket is broken.
    pub(crate) fn try_recv(&self) -> Result<Option<Multipart>, zmq::Error> {
        let socket = self.lock();
        let result = if self.note_peer {
            self.recv_noting_peer(&socket)
        } else {
            socket.recv_multipart(zmq::DONTWAIT)
        };
        self.rearm(&socket, false, true);
        match result {
            Ok(message) => Ok(Some(message)),
            Err(zmq::Error::EAGAIN) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Receives a whole message and notes the address of the peer that sent it (the
    /// `Peer-Address` property of its first frame).
    fn recv_noting_peer(&self, socket: &zmq::Socket) -> Result<Multipart, zmq::Error> {
        let mut first = socket.recv_msg(zmq::DONTWAIT)?;
        let peer = first.gets("Peer-Address").map(str::to_owned);
        let mut message = vec![first.to_vec()];
        while socket.get_rcvmore()? {
            message.push(socket.recv_bytes(zmq::DONTWAIT)?);
        }
        *self
            .last_peer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = peer;
        Ok(message)
    }

    /// The address of the peer the last message came from, when the socket notes it.
    pub(crate) fn last_peer(&self) -> Option<String> {
        self.last_peer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The next message; `None` if the socket is broken.
    pub(crate) async fn recv(&self) -> Option<Multipart> {
        let _parked = Parked::new(&self.readers);
        loop {
            let notified = self.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_recv() {
                Ok(Some(message)) => return Some(message),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(kind = %self.kind, error = %e, "receive failed");
                    return None;
                }
            }
            // EAGAIN: that call processed every pending libzmq command, so only a new
            // edge of ZMQ_FD, or another task's operation (which re-arms us), can bring
            // a message.
            if self.wait(notified).await.is_err() {
                return None;
            }
        }
    }

    /// Waits for a new edge of `ZMQ_FD` or a re-arming notification.
    async fn wait(
        &self,
        notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) -> Result<(), TransportError> {
        tokio::select! {
            biased;
            () = notified => Ok(()),
            ready = self.signal.readable() => match ready {
                Ok(mut guard) => {
                    // Cleared before the caller's next try, which processes every command
                    // that arrived so far; a later edge sets readiness again.
                    guard.clear_ready();
                    Ok(())
                }
                Err(e) => {
                    tracing::debug!(kind = %self.kind, error = %e, "reactor failed");
                    Err(TransportError::Closed)
                }
            },
        }
    }

    /// Adds or removes a subscription (SUB).
    pub(crate) fn set_subscription(
        &self,
        prefix: &[u8],
        subscribe: bool,
    ) -> Result<(), TransportError> {
        let socket = self.lock();
        let result = if subscribe {
            socket.set_subscribe(prefix)
        } else {
            socket.set_unsubscribe(prefix)
        };
        self.rearm(&socket, true, true);
        result.map_err(|e| TransportError::Unsupported(format!("subscription failed: {e}")))
    }
}
