//! The libzmq backend: one I/O thread per socket.
//!
//! libzmq sockets must not be used from two threads at once, and tokio tasks move
//! between threads, so each socket is owned by one OS thread that polls the socket and a
//! wake-up pipe. Senders push into a bounded channel and write one byte into the pipe only
//! when the thread is (about to be) asleep, so a busy socket costs no system call per
//! message. Inbound messages are read only while the inbound channel has room
//! (`try_reserve`), so a slow user pushes back on libzmq, whose high-water marks then
//! push back on (or drop for) the peers.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{ForwardStats, Kind, Mode, Multipart, Options, Outbound, TransportError, Wake};

/// Longest sleep of an idle I/O thread: how soon it notices that its socket was dropped.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Sleep while the inbound channel is full, before trying again.
const FULL_POLL: Duration = Duration::from_millis(1);

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
    let setup = |action: &'static str, e: zmq::Error| TransportError::Setup {
        action,
        kind,
        endpoint: endpoint.to_owned(),
        reason: e.to_string(),
    };
    let socket = context()
        .socket(zmq_kind(kind))
        .map_err(|e| setup("create", e))?;
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
    configure().map_err(|e| setup("configure", e))?;
    let resolved = match mode {
        Mode::Bind => {
            socket.bind(endpoint).map_err(|e| setup("bind", e))?;
            match socket.get_last_endpoint() {
                Ok(Ok(resolved)) => resolved,
                _ => endpoint.to_owned(),
            }
        }
        Mode::Connect => {
            socket.connect(endpoint).map_err(|e| setup("connect", e))?;
            endpoint.to_owned()
        }
    };
    Ok((socket, resolved))
}

/// Wakes the I/O thread through a socket pair, only when it sleeps.
struct PipeWaker {
    writer: UnixStream,
    sleeping: AtomicBool,
}

impl Wake for PipeWaker {
    fn wake(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            // WouldBlock means the pipe already holds a wake-up: nothing is lost.
            let _ = (&self.writer).write(&[1]);
        }
    }
}

fn wake_pipe() -> std::io::Result<(Arc<PipeWaker>, UnixStream)> {
    let (reader, writer) = UnixStream::pair()?;
    reader.set_nonblocking(true)?;
    writer.set_nonblocking(true)?;
    Ok((
        Arc::new(PipeWaker {
            writer,
            sleeping: AtomicBool::new(false),
        }),
        reader,
    ))
}

/// Starts the I/O thread of one socket.
pub(crate) fn spawn(
    kind: Kind,
    mode: Mode,
    endpoint: &str,
    options: &Options,
    out_rx: mpsc::Receiver<Outbound>,
    in_tx: mpsc::Sender<Multipart>,
) -> Result<(String, Arc<dyn Wake>), TransportError> {
    let (socket, resolved) = open(kind, mode, endpoint, options)?;
    let io_error = |e: std::io::Error| TransportError::Setup {
        action: "start",
        kind,
        endpoint: endpoint.to_owned(),
        reason: e.to_string(),
    };
    let (waker, wake_reader) = wake_pipe().map_err(io_error)?;
    let thread_waker = waker.clone();
    let name = format!("zmq-{}", kind.to_string().to_lowercase());
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut io = IoLoop {
                socket,
                kind,
                out_rx,
                in_tx,
                waker: thread_waker,
                wake_reader,
                stalled_out: None,
            };
            io.run();
        })
        .map_err(io_error)?;
    Ok((resolved, waker))
}

struct IoLoop {
    socket: zmq::Socket,
    kind: Kind,
    out_rx: mpsc::Receiver<Outbound>,
    in_tx: mpsc::Sender<Multipart>,
    waker: Arc<PipeWaker>,
    wake_reader: UnixStream,
    /// A message libzmq refused with EAGAIN (peer pipe full, or no peer yet): it is sent
    /// first once the socket is writable, and nothing else is taken from the channel
    /// meanwhile, so the bounded channel pushes back on the senders.
    stalled_out: Option<Multipart>,
}

impl IoLoop {
    fn run(&mut self) {
        let mut out_open = true;
        loop {
            if out_open {
                out_open = self.send_ready();
            }
            let inbound_full = self.receive_ready();
            if !out_open && self.in_tx.is_closed() {
                break;
            }
            self.sleep(inbound_full, out_open);
        }
        tracing::trace!(kind = %self.kind, "socket closed");
    }

    /// Sends what is queued until the queue is empty, libzmq pushes back, or a batch is
    /// done. Returns false once every sender is gone.
    fn send_ready(&mut self) -> bool {
        for _ in 0..crate::BATCH_MAX {
            let message = match self.stalled_out.take() {
                Some(message) => message,
                None => match self.out_rx.try_recv() {
                    Ok(Outbound::Message(message)) => message,
                    Ok(Outbound::Subscribe(prefix)) => {
                        if let Err(e) = self.socket.set_subscribe(&prefix) {
                            tracing::warn!(error = %e, "subscribe failed");
                        }
                        continue;
                    }
                    Ok(Outbound::Unsubscribe(prefix)) => {
                        if let Err(e) = self.socket.set_unsubscribe(&prefix) {
                            tracing::warn!(error = %e, "unsubscribe failed");
                        }
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Empty) => return true,
                    Err(mpsc::error::TryRecvError::Disconnected) => return false,
                },
            };
            match self.socket.send_multipart(message.iter(), zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) => {
                    self.stalled_out = Some(message);
                    return true;
                }
                Err(e) => {
                    // EHOSTUNREACH and the like: the peer is gone; the protocol above
                    // retries, so the message is dropped here.
                    tracing::debug!(kind = %self.kind, error = %e, "send dropped");
                }
            }
        }
        true
    }

    /// Moves received messages into the inbound channel while it has room. Returns true
    /// when it stopped because the channel is full.
    fn receive_ready(&mut self) -> bool {
        for _ in 0..crate::BATCH_MAX {
            let permit = match self.in_tx.try_reserve() {
                Ok(permit) => Some(permit),
                Err(mpsc::error::TrySendError::Full(())) => return true,
                // Nobody reads: drain and drop, so that peers are not blocked forever.
                Err(mpsc::error::TrySendError::Closed(())) => None,
            };
            match self.socket.recv_multipart(zmq::DONTWAIT) {
                Ok(message) => {
                    if let Some(permit) = permit {
                        permit.send(message);
                    }
                }
                Err(zmq::Error::EAGAIN) => return false,
                Err(e) => {
                    tracing::debug!(kind = %self.kind, error = %e, "receive failed");
                    return false;
                }
            }
        }
        false
    }

    /// Waits for the socket or the wake-up pipe.
    fn sleep(&mut self, inbound_full: bool, out_open: bool) {
        self.waker.sleeping.store(true, Ordering::SeqCst);
        // A sender that queued after our last look but before `sleeping` was set did not
        // write to the pipe: look once more before sleeping.
        if out_open && self.stalled_out.is_none() && !self.out_rx.is_empty() {
            self.waker.sleeping.store(false, Ordering::SeqCst);
            return;
        }
        let mut events = zmq::PollEvents::empty();
        if !inbound_full {
            events |= zmq::POLLIN;
        }
        if self.stalled_out.is_some() {
            events |= zmq::POLLOUT;
        }
        let timeout = if inbound_full { FULL_POLL } else { IDLE_POLL };
        let mut items = [
            self.socket.as_poll_item(events),
            zmq::PollItem::from_fd(self.wake_reader.as_raw_fd(), zmq::POLLIN),
        ];
        let polled = zmq::poll(&mut items, i64::from(millis(timeout)));
        let woken = items[1].is_readable();
        self.waker.sleeping.store(false, Ordering::SeqCst);
        if let Err(e) = polled {
            tracing::debug!(kind = %self.kind, error = %e, "poll failed");
        }
        if woken {
            let mut buffer = [0u8; 64];
            while matches!((&self.wake_reader).read(&mut buffer), Ok(n) if n > 0) {}
        }
    }
}

/// Starts the XSUB/XPUB device on its own thread.
pub(crate) fn forward(
    frontend_endpoint: &str,
    backend_endpoint: &str,
    options: &Options,
    stats: Arc<ForwardStats>,
    stop: CancellationToken,
    done: oneshot::Sender<()>,
) -> Result<(String, String), TransportError> {
    let (frontend, frontend_resolved) = open(Kind::XSub, Mode::Bind, frontend_endpoint, options)?;
    let (backend, backend_resolved) = open(Kind::XPub, Mode::Bind, backend_endpoint, options)?;
    // Pass every subscription upstream, not only the first of a topic: the counters then
    // count subscribers, and a publisher that reconnects hears all of them again.
    backend
        .set_xpub_verbose(true)
        .map_err(|e| TransportError::Setup {
            action: "configure",
            kind: Kind::XPub,
            endpoint: backend_endpoint.to_owned(),
            reason: e.to_string(),
        })?;
    std::thread::Builder::new()
        .name("zmq-forwarder".into())
        .spawn(move || {
            forward_loop(&frontend, &backend, &stats, &stop);
            drop((frontend, backend));
            let _ = done.send(());
        })
        .map_err(|e| TransportError::Setup {
            action: "start",
            kind: Kind::XSub,
            endpoint: frontend_endpoint.to_owned(),
            reason: e.to_string(),
        })?;
    Ok((frontend_resolved, backend_resolved))
}

fn forward_loop(
    frontend: &zmq::Socket,
    backend: &zmq::Socket,
    stats: &ForwardStats,
    stop: &CancellationToken,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while !stop.is_cancelled() {
        let mut items = [
            frontend.as_poll_item(zmq::POLLIN),
            backend.as_poll_item(zmq::POLLIN),
        ];
        if zmq::poll(&mut items, i64::from(millis(IDLE_POLL))).is_err() {
            continue;
        }
        if items[0].is_readable() {
            for _ in 0..crate::BATCH_MAX {
                match frontend.recv_multipart(zmq::DONTWAIT) {
                    Ok(message) => {
                        let bytes: usize = message.iter().map(Vec::len).sum();
                        // XPUB never blocks: a subscriber whose pipe is full misses this
                        // message, the others get it.
                        match backend.send_multipart(message, zmq::DONTWAIT) {
                            Ok(()) => {
                                stats.messages.fetch_add(1, Relaxed);
                                stats.bytes.fetch_add(bytes as u64, Relaxed);
                            }
                            Err(e) => tracing::debug!(error = %e, "forward dropped"),
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        if items[1].is_readable() {
            for _ in 0..crate::BATCH_MAX {
                match backend.recv_multipart(zmq::DONTWAIT) {
                    Ok(subscription) => {
                        stats.subscriptions.fetch_add(1, Relaxed);
                        if let Err(e) = frontend.send_multipart(subscription, zmq::DONTWAIT) {
                            tracing::debug!(error = %e, "subscription dropped");
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
