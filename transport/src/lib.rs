//! # transport — the only code of paxos-zmq that touches ZeroMQ
//!
//! A [`Socket`] is one ZeroMQ socket of a [`Kind`] (ROUTER, DEALER, PUB, SUB, XPUB,
//! XSUB) whose multipart messages are sent and received from tokio tasks.
//! [`Forwarder`] is the XSUB/XPUB device of the proxy; its [`ForwardStats`] count what
//! it moves and, with libzmq, the peers connected to it (socket monitors; see
//! `docs/transport.md`).
//!
//! ## Backends
//! - [`Backend::Libzmq`] (default, feature `libzmq`): libzmq through the `zmq` crate,
//!   built from source and linked statically. The socket's signalling descriptor
//!   (`ZMQ_FD`) is registered with tokio's reactor and the calling task sends and
//!   receives with `ZMQ_DONTWAIT` on its own thread, behind a mutex (libzmq sockets are
//!   not thread-safe): no thread of ours between a task and libzmq's I/O thread.
//! - [`Backend::ZeromqRs`] (feature `zeromq-rs`): the pure-Rust `zeromq` crate, driven
//!   by a tokio task behind bounded channels. It passes the functional tests but has
//!   known limits that make it
//!   unfit for servers (no frame-size limit, unbounded PUB queues, no reconnect); see
//!   `docs/transport.md`.
//!
//! ## Invariants kept here
//! - Every queue is bounded: the ZeroMQ pipes by the high-water marks, inbound frames
//!   by `ZMQ_MAXMSGSIZE` ([`proto::limits::MAX_FRAME_BYTES`]), the `zeromq-rs` channels
//!   by [`Options::channel_capacity`]. A full outbound pipe makes `send` wait (or
//!   `try_send` fail); a PUB/XPUB socket drops for the slow subscriber only.
//! - A libzmq socket needs a tokio runtime with its I/O driver (`enable_io`/`enable_all`)
//!   and is closed when both of its halves are dropped.
//! - A peer cannot crash the process: a bad frame is dropped by libzmq, a closed peer is
//!   reconnected with the named intervals, and ZMTP heartbeats detect dead connections.

use std::fmt;
use std::time::Duration;

#[cfg(feature = "zeromq-rs")]
use tokio::sync::mpsc;

mod forwarder;
#[cfg(feature = "libzmq")]
mod libzmq;
mod probe;
pub use forwarder::{ForwardStats, Forwarder};
pub use probe::{ProbeError, probe};
#[cfg(feature = "zeromq-rs")]
mod zeromq_rs;

#[cfg(not(any(feature = "libzmq", feature = "zeromq-rs")))]
compile_error!("transport needs a backend: enable feature `libzmq` or `zeromq-rs`");

/// One ZeroMQ message: its frames in order.
pub type Multipart = Vec<Vec<u8>>;

/// Messages buffered between a `zeromq-rs` socket's task and its user, each way.
pub const CHANNEL_CAPACITY: usize = 4096;
/// ZeroMQ send high-water mark, in messages per peer.
pub const SEND_HWM: i32 = 10_000;
/// ZeroMQ receive high-water mark, in messages per peer.
pub const RECV_HWM: i32 = 10_000;
/// First reconnect delay after a connection is lost.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);
/// Longest reconnect delay (exponential back-off up to this).
pub const RECONNECT_INTERVAL_MAX: Duration = Duration::from_secs(1);
/// Interval of ZMTP PING heartbeats on every connection.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A connection that answers no PING for this long is closed (and reconnected).
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long closing a socket may wait to flush queued messages.
pub const LINGER: Duration = Duration::from_millis(200);
/// Most messages the forwarder moves one way before it serves the other way.
pub const BATCH_MAX: usize = 256;

/// The ZeroMQ socket kinds paxos-zmq uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Addressed replies: the first frame of every message is the peer's identity.
    Router,
    /// Round-robin out, fair-queued in.
    Dealer,
    /// Publish: the first frame is the topic; drops for slow subscribers.
    Pub,
    /// Subscribe by topic prefix.
    Sub,
    /// Publish side of a proxy: also receives the subscriptions of its subscribers.
    XPub,
    /// Subscribe side of a proxy: subscriptions are sent as messages.
    XSub,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Router => "ROUTER",
            Kind::Dealer => "DEALER",
            Kind::Pub => "PUB",
            Kind::Sub => "SUB",
            Kind::XPub => "XPUB",
            Kind::XSub => "XSUB",
        })
    }
}

/// Which ZeroMQ implementation carries the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// libzmq through the `zmq` crate (the default).
    #[cfg(feature = "libzmq")]
    Libzmq,
    /// The pure-Rust `zeromq` crate (see `docs/transport.md` for its limits).
    #[cfg(feature = "zeromq-rs")]
    ZeromqRs,
}

impl Backend {
    /// Every backend compiled into this build, default first.
    pub fn all() -> Vec<Backend> {
        vec![
            #[cfg(feature = "libzmq")]
            Backend::Libzmq,
            #[cfg(feature = "zeromq-rs")]
            Backend::ZeromqRs,
        ]
    }
}

impl Default for Backend {
    fn default() -> Self {
        #[cfg(feature = "libzmq")]
        return Backend::Libzmq;
        #[cfg(not(feature = "libzmq"))]
        return Backend::ZeromqRs;
    }
}

/// Socket options. `Options::default()` holds the named constants above.
#[derive(Debug, Clone)]
pub struct Options {
    /// The identity a ROUTER peer sees (DEALER); `None`: chosen by ZeroMQ.
    pub identity: Option<Vec<u8>>,
    /// Topic prefixes a SUB socket subscribes to at creation.
    pub subscriptions: Vec<Vec<u8>>,
    /// Capacity of each bridging channel (`zeromq-rs` backend; libzmq queues only up to
    /// its high-water marks).
    pub channel_capacity: usize,
    /// ZeroMQ send high-water mark.
    pub send_hwm: i32,
    /// ZeroMQ receive high-water mark.
    pub recv_hwm: i32,
    /// Largest inbound frame; larger ones close the connection.
    pub max_msg_bytes: usize,
    /// ZMTP heartbeat interval.
    pub heartbeat_interval: Duration,
    /// ZMTP heartbeat timeout.
    pub heartbeat_timeout: Duration,
    /// Reconnect delay, first and longest.
    pub reconnect_interval: Duration,
    /// Longest reconnect delay.
    pub reconnect_interval_max: Duration,
    /// ROUTER: a new connection with an identity already in use takes it over (a
    /// restarted node that reconnects before its old connection timed out). libzmq only.
    pub router_handover: bool,
    /// Note the address of the peer each message comes from
    /// ([`Receiver::last_peer_address`]), to name a peer that sends something wrong.
    /// Costs a property lookup per message; libzmq only.
    pub peer_address: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            identity: None,
            subscriptions: Vec::new(),
            channel_capacity: CHANNEL_CAPACITY,
            send_hwm: SEND_HWM,
            recv_hwm: RECV_HWM,
            max_msg_bytes: proto::limits::MAX_FRAME_BYTES,
            heartbeat_interval: HEARTBEAT_INTERVAL,
            heartbeat_timeout: HEARTBEAT_TIMEOUT,
            reconnect_interval: RECONNECT_INTERVAL,
            reconnect_interval_max: RECONNECT_INTERVAL_MAX,
            router_handover: false,
            peer_address: false,
        }
    }
}

impl Options {
    /// Sets the identity (DEALER).
    pub fn identity(mut self, identity: impl Into<Vec<u8>>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    /// Notes the address of the peer of each message received.
    pub fn peer_address(mut self) -> Self {
        self.peer_address = true;
        self
    }

    /// Lets a reconnecting peer take over its identity (ROUTER).
    pub fn router_handover(mut self) -> Self {
        self.router_handover = true;
        self
    }

    /// Adds a subscription (SUB).
    pub fn subscribe(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.subscriptions.push(prefix.into());
        self
    }
}

/// Operating errors of the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Creating, binding or connecting the socket failed.
    #[error("cannot {action} {kind} socket on {endpoint}: {reason}")]
    Setup {
        /// What was being done.
        action: &'static str,
        /// Socket kind.
        kind: Kind,
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The socket's I/O thread or task has stopped.
    #[error("socket closed")]
    Closed,
    /// The outbound channel is full (only from `try_send`).
    #[error("send queue full")]
    Full,
    /// The operation does not exist for this kind of socket.
    #[error("{0}")]
    Unsupported(String),
}

/// Whether the socket binds or connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Listen on the endpoint.
    Bind,
    /// Connect to the endpoint (and reconnect when the peer returns).
    Connect,
}

/// What the user of a socket asks a `zeromq-rs` socket's task to do.
#[cfg(feature = "zeromq-rs")]
#[derive(Debug)]
pub(crate) enum Outbound {
    Message(Multipart),
    Subscribe(Vec<u8>),
    Unsubscribe(Vec<u8>),
}

/// How a [`Sender`] reaches its socket.
#[derive(Clone)]
enum SendHalf {
    /// libzmq: the socket itself, used on the caller's thread.
    #[cfg(feature = "libzmq")]
    Libzmq(std::sync::Arc<libzmq::Shared>),
    /// zeromq-rs: a bounded channel to the socket's task.
    #[cfg(feature = "zeromq-rs")]
    Channel(mpsc::Sender<Outbound>),
}

/// How a [`Receiver`] reaches its socket.
enum ReceiveHalf {
    #[cfg(feature = "libzmq")]
    Libzmq(std::sync::Arc<libzmq::Shared>),
    #[cfg(feature = "zeromq-rs")]
    Channel(mpsc::Receiver<Multipart>),
}

/// The sending half of a [`Socket`]; cheap to clone.
#[derive(Clone)]
pub struct Sender {
    half: SendHalf,
    kind: Kind,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("kind", &self.kind).finish()
    }
}

impl Sender {
    /// Sends a message, waiting while the socket's outbound queue (libzmq's high-water
    /// mark, or the channel of the `zeromq-rs` backend) is full.
    pub async fn send(&self, message: Multipart) -> Result<(), TransportError> {
        match &self.half {
            #[cfg(feature = "libzmq")]
            SendHalf::Libzmq(shared) => shared.send(&message).await,
            #[cfg(feature = "zeromq-rs")]
            SendHalf::Channel(tx) => tx
                .send(Outbound::Message(message))
                .await
                .map_err(|_| TransportError::Closed),
        }
    }

    /// Sends a message if there is room now.
    pub fn try_send(&self, message: Multipart) -> Result<(), TransportError> {
        match &self.half {
            #[cfg(feature = "libzmq")]
            SendHalf::Libzmq(shared) => shared
                .try_send(&message)
                .map_err(|libzmq::Full| TransportError::Full),
            #[cfg(feature = "zeromq-rs")]
            SendHalf::Channel(tx) => tx
                .try_send(Outbound::Message(message))
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => TransportError::Full,
                    mpsc::error::TrySendError::Closed(_) => TransportError::Closed,
                }),
        }
    }

    /// Adds a topic prefix to a SUB socket.
    pub async fn subscribe(&self, prefix: impl Into<Vec<u8>>) -> Result<(), TransportError> {
        self.subscription(prefix.into(), true).await
    }

    /// Removes a topic prefix from a SUB socket.
    pub async fn unsubscribe(&self, prefix: impl Into<Vec<u8>>) -> Result<(), TransportError> {
        self.subscription(prefix.into(), false).await
    }

    async fn subscription(&self, prefix: Vec<u8>, subscribe: bool) -> Result<(), TransportError> {
        if self.kind != Kind::Sub {
            return Err(TransportError::Unsupported(format!(
                "subscriptions are for SUB sockets, not {}",
                self.kind
            )));
        }
        match &self.half {
            #[cfg(feature = "libzmq")]
            SendHalf::Libzmq(shared) => shared.set_subscription(&prefix, subscribe),
            #[cfg(feature = "zeromq-rs")]
            SendHalf::Channel(tx) => {
                let command = if subscribe {
                    Outbound::Subscribe(prefix)
                } else {
                    Outbound::Unsubscribe(prefix)
                };
                tx.send(command).await.map_err(|_| TransportError::Closed)
            }
        }
    }
}

/// The receiving half of a [`Socket`].
pub struct Receiver {
    half: ReceiveHalf,
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

impl Receiver {
    /// The next message; `None` once the socket is closed or broken.
    ///
    /// Cancel-safe: a message is taken from the socket only in the poll that returns it.
    pub async fn recv(&mut self) -> Option<Multipart> {
        match &mut self.half {
            #[cfg(feature = "libzmq")]
            ReceiveHalf::Libzmq(shared) => shared.recv().await,
            #[cfg(feature = "zeromq-rs")]
            ReceiveHalf::Channel(rx) => rx.recv().await,
        }
    }

    /// Up to `limit` messages at once (at least one unless closed): fewer wake-ups under load.
    pub async fn recv_many(&mut self, buffer: &mut Vec<Multipart>, limit: usize) -> usize {
        if limit == 0 {
            return 0;
        }
        let Some(first) = self.recv().await else {
            return 0;
        };
        buffer.push(first);
        let mut received = 1;
        while received < limit {
            match self.try_recv() {
                Some(message) => {
                    buffer.push(message);
                    received += 1;
                }
                None => break,
            }
        }
        received
    }

    /// The address (`ip:port`) of the peer the last message received came from, when the
    /// socket was opened with [`Options::peer_address`] (libzmq backend; `None` else).
    pub fn last_peer_address(&self) -> Option<String> {
        match &self.half {
            #[cfg(feature = "libzmq")]
            ReceiveHalf::Libzmq(shared) => shared.last_peer(),
            #[cfg(feature = "zeromq-rs")]
            ReceiveHalf::Channel(_) => None,
        }
    }

    /// A message if one is waiting now.
    pub fn try_recv(&mut self) -> Option<Multipart> {
        match &mut self.half {
            #[cfg(feature = "libzmq")]
            ReceiveHalf::Libzmq(shared) => shared.try_recv().ok().flatten(),
            #[cfg(feature = "zeromq-rs")]
            ReceiveHalf::Channel(rx) => rx.try_recv().ok(),
        }
    }
}

/// A ZeroMQ socket bridged to tokio. Drop both halves to close it.
#[derive(Debug)]
pub struct Socket {
    /// Queue messages to send.
    pub sender: Sender,
    /// Messages received.
    pub receiver: Receiver,
    endpoint: String,
    kind: Kind,
}

impl Socket {
    /// Creates a socket of `kind` that binds (or connects) to `endpoint` with the default
    /// backend. Binding to port 0 picks a free port: see [`Socket::endpoint`]. A socket
    /// that connects may be given several endpoints, separated by commas ([`endpoints`]).
    pub async fn open(
        kind: Kind,
        mode: Mode,
        endpoint: &str,
        options: Options,
    ) -> Result<Socket, TransportError> {
        Socket::open_with(Backend::default(), kind, mode, endpoint, options).await
    }

    /// Binds a socket with the default backend and options.
    pub async fn bind(kind: Kind, endpoint: &str) -> Result<Socket, TransportError> {
        Socket::open(kind, Mode::Bind, endpoint, Options::default()).await
    }

    /// Connects a socket with the default backend and options.
    pub async fn connect(kind: Kind, endpoint: &str) -> Result<Socket, TransportError> {
        Socket::open(kind, Mode::Connect, endpoint, Options::default()).await
    }

    /// Like [`Socket::open`] with an explicit backend.
    pub async fn open_with(
        backend: Backend,
        kind: Kind,
        mode: Mode,
        endpoint: &str,
        options: Options,
    ) -> Result<Socket, TransportError> {
        let (endpoint, sender, receiver) = match backend {
            #[cfg(feature = "libzmq")]
            Backend::Libzmq => {
                let (endpoint, shared) = libzmq::attach(kind, mode, endpoint, &options)?;
                (
                    endpoint,
                    SendHalf::Libzmq(shared.clone()),
                    ReceiveHalf::Libzmq(shared),
                )
            }
            #[cfg(feature = "zeromq-rs")]
            Backend::ZeromqRs => {
                let (out_tx, out_rx) = mpsc::channel(options.channel_capacity.max(1));
                let (in_tx, in_rx) = mpsc::channel(options.channel_capacity.max(1));
                let endpoint =
                    zeromq_rs::spawn(kind, mode, endpoint, &options, out_rx, in_tx).await?;
                (
                    endpoint,
                    SendHalf::Channel(out_tx),
                    ReceiveHalf::Channel(in_rx),
                )
            }
        };
        Ok(Socket {
            sender: Sender { half: sender, kind },
            receiver: Receiver { half: receiver },
            endpoint,
            kind,
        })
    }

    /// The endpoint as bound or connected, with a port 0 resolved to the real port.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The socket kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Queues a message (see [`Sender::send`]).
    pub async fn send(&self, message: Multipart) -> Result<(), TransportError> {
        self.sender.send(message).await
    }

    /// Receives a message (see [`Receiver::recv`]).
    pub async fn recv(&mut self) -> Option<Multipart> {
        self.receiver.recv().await
    }

    /// Splits the socket so that sending and receiving can live in different tasks.
    pub fn split(self) -> (Sender, Receiver) {
        (self.sender, self.receiver)
    }
}

/// The endpoints of a list `tcp://a:1,tcp://b:2` (czmq's convention): a socket that
/// connects, connects to every one of them — a SUB to both proxies of a pair, say. Empty
/// items are skipped.
pub fn endpoints(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// The endpoint to connect to for a bind endpoint: `tcp://*:5555` and
/// `tcp://0.0.0.0:5555` mean this machine; any other endpoint is returned as it is.
pub fn local_endpoint(endpoint: &str) -> String {
    for wildcard in ["tcp://*:", "tcp://0.0.0.0:"] {
        if let Some(port) = endpoint.strip_prefix(wildcard) {
            return format!("tcp://127.0.0.1:{port}");
        }
    }
    endpoint.to_owned()
}

#[cfg(test)]
mod tests {
    use super::local_endpoint;

    #[test]
    fn endpoint_lists_split_on_commas() {
        let list: Vec<&str> = super::endpoints("tcp://a:1, tcp://b:2,,").collect();
        assert_eq!(list, ["tcp://a:1", "tcp://b:2"]);
        assert_eq!(super::endpoints("tcp://a:1").count(), 1);
    }

    #[test]
    fn wildcard_binds_are_reached_on_loopback() {
        assert_eq!(local_endpoint("tcp://*:5555"), "tcp://127.0.0.1:5555");
        assert_eq!(local_endpoint("tcp://0.0.0.0:5558"), "tcp://127.0.0.1:5558");
        assert_eq!(local_endpoint("tcp://broker:5555"), "tcp://broker:5555");
    }
}
