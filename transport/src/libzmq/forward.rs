//! The XSUB/XPUB device on libzmq: a thread of its own that moves messages between the
//! two sockets without copying them, and counts the connections each side has through
//! libzmq's socket monitors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use proto::topic::Kind as TopicKind;

use super::{attach_endpoint, context, create, millis, setup_error};
use crate::{ForwardStats, Kind, Mode, Options, TransportError};

/// Longest sleep of the forwarder's thread: how soon it notices that it should stop.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Starts the XSUB/XPUB device on its own thread.
pub(crate) fn forward(
    frontend_endpoint: &str,
    backend_endpoint: &str,
    options: &Options,
    stats: Arc<ForwardStats>,
    stop: CancellationToken,
    done: oneshot::Sender<()>,
) -> Result<(String, String), TransportError> {
    let frontend = create(Kind::XSub, frontend_endpoint, options)?;
    let backend = create(Kind::XPub, backend_endpoint, options)?;
    // Pass every subscription upstream, not only the first of a topic: the counters then
    // count subscribers, and a publisher that reconnects hears all of them again.
    backend.set_xpub_verbose(true).map_err(setup_error(
        "configure",
        Kind::XPub,
        backend_endpoint,
    ))?;
    // Monitors before the binds, so that no connection is accepted unseen (its later
    // disconnection would then be counted against another peer).
    let monitors = [
        Monitor::start(&frontend, Kind::XSub, frontend_endpoint)?,
        Monitor::start(&backend, Kind::XPub, backend_endpoint)?,
    ];
    let frontend_resolved = attach_endpoint(&frontend, Kind::XSub, Mode::Bind, frontend_endpoint)?;
    let backend_resolved = attach_endpoint(&backend, Kind::XPub, Mode::Bind, backend_endpoint)?;
    std::thread::Builder::new()
        .name("zmq-forwarder".into())
        .spawn(move || {
            forward_loop(&frontend, &backend, &monitors, &stats, &stop);
            // The monitors are turned off before anything closes (see `Monitor::stop`).
            monitors[0].stop(&frontend, &stats.publishers);
            monitors[1].stop(&backend, &stats.subscribers);
            drop((frontend, backend));
            drop(monitors);
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

/// Events taken from one monitor each turn of the forwarder, at most.
const MONITOR_BATCH_MAX: usize = 256;
/// Receive high-water mark of the forwarder's end of a monitor pipe, in events. libzmq's
/// I/O thread *waits* when a monitor pipe is full (it sends events without
/// `ZMQ_DONTWAIT`), so the forwarder drains both monitors every turn, and this leaves
/// room for a burst of connections between two turns.
const MONITOR_RECV_HWM: i32 = 10_000;

/// The forwarder's end of a libzmq socket monitor (`zmq_socket_monitor`): a PAIR socket
/// that receives an event per accepted and per closed connection of one bound socket.
/// libzmq counts no connections itself; this is how the forwarder knows how many peers
/// it has.
struct Monitor {
    events: zmq::Socket,
    kind: Kind,
}

/// A fresh `inproc` address for a monitor.
fn monitor_address() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "inproc://forwarder-monitor-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Monitor {
    fn start(socket: &zmq::Socket, kind: Kind, endpoint: &str) -> Result<Monitor, TransportError> {
        let address = monitor_address();
        let wanted = zmq::SocketEvent::ACCEPTED.to_raw() | zmq::SocketEvent::DISCONNECTED.to_raw();
        let setup = setup_error("monitor", kind, endpoint);
        socket
            .monitor(&address, i32::from(wanted))
            .map_err(&setup)?;
        let events = context().socket(zmq::PAIR).map_err(&setup)?;
        events.set_rcvhwm(MONITOR_RECV_HWM).map_err(&setup)?;
        events.set_linger(0).map_err(&setup)?;
        events.connect(&address).map_err(&setup)?;
        Ok(Monitor { events, kind })
    }

    /// Turns the monitor of `socket` off; call it before the socket or this end closes.
    ///
    /// libzmq's monitor socket is a PAIR that sends without `ZMQ_DONTWAIT`: once this end
    /// is gone, the next event (a peer leaving a socket that is still lingering, say)
    /// blocks libzmq's I/O thread for good, and with it every socket of the process. The
    /// `zmq` crate cannot pass the NULL endpoint that stops a monitor, so the monitor is
    /// replaced by one that reports no event at all (an event mask of 0), which libzmq
    /// does after closing the old one; the replacement is closed with the socket.
    fn stop(&self, socket: &zmq::Socket, connected: &std::sync::atomic::AtomicU64) {
        // Room in the pipe, so that the I/O thread is not waiting on it while it holds the
        // monitor's lock that the replacement needs.
        self.drain(connected);
        if let Err(error) = socket.monitor(&monitor_address(), 0) {
            tracing::warn!(kind = %self.kind, %error, "cannot stop a socket monitor");
        }
    }

    /// Counts the events waiting: +1 per accepted connection, -1 per closed one.
    fn drain(&self, connected: &std::sync::atomic::AtomicU64) {
        use std::sync::atomic::Ordering::Relaxed;
        for _ in 0..MONITOR_BATCH_MAX {
            let Ok(event) = self.events.recv_multipart(zmq::DONTWAIT) else {
                return;
            };
            // Frame 1: the event (u16) and a value (u32), in the machine's byte order;
            // frame 2: the endpoint. Written by libzmq, not by a peer.
            let Some(&[low, high, ..]) = event.first().map(Vec::as_slice) else {
                continue;
            };
            let id = u16::from_ne_bytes([low, high]);
            if id == zmq::SocketEvent::ACCEPTED.to_raw() {
                connected.fetch_add(1, Relaxed);
            } else if id == zmq::SocketEvent::DISCONNECTED.to_raw() {
                // Every closed connection was accepted after the monitor started: the
                // count cannot go below zero; saturate all the same.
                let _ = connected.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
            } else {
                tracing::debug!(kind = %self.kind, id, "unexpected monitor event");
            }
        }
    }
}

fn forward_loop(
    frontend: &zmq::Socket,
    backend: &zmq::Socket,
    monitors: &[Monitor; 2],
    stats: &ForwardStats,
    stop: &CancellationToken,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while !stop.is_cancelled() {
        let mut items = [
            frontend.as_poll_item(zmq::POLLIN),
            backend.as_poll_item(zmq::POLLIN),
            monitors[0].events.as_poll_item(zmq::POLLIN),
            monitors[1].events.as_poll_item(zmq::POLLIN),
        ];
        if zmq::poll(&mut items, i64::from(millis(IDLE_POLL))).is_err() {
            continue;
        }
        if items[2].is_readable() {
            monitors[0].drain(&stats.publishers);
        }
        if items[3].is_readable() {
            monitors[1].drain(&stats.subscribers);
        }
        if items[0].is_readable() {
            for _ in 0..crate::BATCH_MAX {
                // XPUB never blocks: a subscriber whose pipe is full misses this message,
                // the others get it.
                match move_message(frontend, backend) {
                    None => break,
                    Some(Ok((bytes, kind))) => stats.forwarded(kind, bytes),
                    Some(Err(e)) => {
                        stats.dropped.fetch_add(1, Relaxed);
                        tracing::debug!(error = %e, "forward dropped");
                    }
                }
            }
        }
        if items[1].is_readable() {
            for _ in 0..crate::BATCH_MAX {
                match move_message(backend, frontend) {
                    None => break,
                    Some(Ok(_)) => {
                        stats.subscriptions.fetch_add(1, Relaxed);
                    }
                    Some(Err(e)) => {
                        stats.dropped.fetch_add(1, Relaxed);
                        tracing::debug!(error = %e, "subscription dropped");
                    }
                }
            }
        }
    }
}

/// Moves one multipart message from `from` to `to`, frame by frame, without copying a
/// byte (libzmq hands each frame's buffer over). `None` when nothing waits; otherwise its
/// size and the kind of its first frame as a topic, or why it was dropped (the rest of a
/// dropped message is read and dropped too, so the next message starts on its first
/// frame).
fn move_message(
    from: &zmq::Socket,
    to: &zmq::Socket,
) -> Option<Result<(usize, TopicKind), zmq::Error>> {
    let mut bytes = 0;
    let mut first = true;
    let mut kind = TopicKind::Other;
    loop {
        let mut frame = zmq::Message::new();
        match from.recv(&mut frame, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) if first => return None,
            // libzmq delivers a message's frames together: no other error is expected
            // here, and nothing more can be read of it.
            Err(e) => return Some(Err(e)),
        }
        if first {
            // A byte-prefix match on the topic: a few comparisons, no copy.
            kind = TopicKind::of(&frame);
        }
        first = false;
        bytes += frame.len();
        let more = frame.get_more();
        let flags = zmq::DONTWAIT | if more { zmq::SNDMORE } else { 0 };
        if let Err(e) = to.send(frame, flags) {
            let mut more = more;
            while more {
                let mut rest = zmq::Message::new();
                if from.recv(&mut rest, zmq::DONTWAIT).is_err() {
                    break;
                }
                more = rest.get_more();
            }
            return Some(Err(e));
        }
        if !more {
            return Some(Ok((bytes, kind)));
        }
    }
}
