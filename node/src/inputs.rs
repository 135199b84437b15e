//! Everything the loop waits on, and the order it looks at them in.
//!
//! [`Inputs::next`] waits for the next [`Event`]: shutdown, the WAL's progress, the
//! timers (the core's tick, heartbeats to the broker and the reference, clock rounds),
//! `/status` queries, finished snapshots, and messages from the reference, the peers
//! and the clients. It is `biased`: the rare events come first, so that a steady stream
//! of peer and client messages can never starve them (a missed broker heartbeat would
//! take this node out of the ring). Peer and client messages are not read while the
//! core holds [`paxos::MAX_HELD_GROUPS`] turns for the disk: back-pressure reaches
//! libzmq's queues instead of growing memory. Once woken, the loop drains what else
//! waits ([`Inputs::drain_peers`], [`Inputs::drain_clients`], at most
//! [`MAX_DRAIN_PER_TURN`] each), so that one `ready()` — one slot, one WAL group —
//! covers everything that arrived together. Client requests come from every broker of
//! the pair, each on its own DEALER.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use transport::{Multipart, Receiver};

use crate::http::StatusQuery;
use crate::logins::Checked;
use crate::snapshots::Written;
use crate::wal::WalProgress;

/// Most messages taken from one socket per turn, so that one busy input cannot starve
/// the others or delay the tick.
pub const MAX_DRAIN_PER_TURN: usize = 1024;

/// What woke the loop.
#[derive(Debug)]
pub(crate) enum Event {
    /// SIGINT or SIGTERM.
    Shutdown,
    /// The WAL writer reported progress.
    Durable(WalProgress),
    /// The core's tick.
    Tick,
    /// Time to heartbeat the broker.
    BrokerHeartbeat,
    /// Time to heartbeat the reference.
    ReferenceHeartbeat,
    /// Time for a Berkeley round (if leading).
    ClockRound,
    /// A `/status` query.
    Status(StatusQuery),
    /// store.json was written (or not).
    Snapshot(Written),
    /// A login's password was checked or hashed.
    Login(Checked),
    /// A frame set from the reference.
    Reference(Multipart),
    /// A frame set from the proxy.
    Peer(Multipart),
    /// A frame set from broker number `.0`.
    Client(usize, Multipart),
    /// An input closed: a bug or a dead thread; the node stops.
    Closed(&'static str),
}

/// The timers of the loop.
#[derive(Debug)]
pub(crate) struct Timers {
    tick: Interval,
    broker_heartbeat: Interval,
    reference_heartbeat: Interval,
    clock_round: Interval,
}

fn interval(period: Duration) -> Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

impl Timers {
    /// Timers with these periods; each fires once at once.
    pub(crate) fn new(
        tick: Duration,
        broker_heartbeat: Duration,
        reference_heartbeat: Duration,
        clock_round: Duration,
    ) -> Timers {
        Timers {
            tick: interval(tick),
            broker_heartbeat: interval(broker_heartbeat),
            reference_heartbeat: interval(reference_heartbeat),
            clock_round: interval(clock_round),
        }
    }
}

/// The receivers the loop waits on.
#[derive(Debug)]
pub(crate) struct Inputs {
    /// SUB, from the proxy.
    pub(crate) subscriber: Receiver,
    /// One DEALER per broker, in `--broker` order.
    pub(crate) brokers: Vec<Receiver>,
    /// DEALER, from the reference.
    pub(crate) reference: Receiver,
    /// `/status` queries from the HTTP task.
    pub(crate) status: mpsc::Receiver<StatusQuery>,
    /// The WAL writer's progress.
    pub(crate) wal_progress: watch::Receiver<WalProgress>,
    /// Snapshots written.
    pub(crate) snapshots: mpsc::Receiver<Written>,
    /// Logins whose password was checked or hashed.
    pub(crate) logins: mpsc::Receiver<Checked>,
    /// The timers.
    pub(crate) timers: Timers,
}

impl Inputs {
    /// Waits for the next event; peer and client messages only while `reading`.
    pub(crate) async fn next(&mut self, shutdown: &CancellationToken, reading: bool) -> Event {
        let timers = &mut self.timers;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Event::Shutdown,
            changed = self.wal_progress.changed() => match changed {
                Ok(()) => Event::Durable(self.wal_progress.borrow_and_update().clone()),
                Err(_) => Event::Closed("WAL writer"),
            },
            _ = timers.tick.tick() => Event::Tick,
            _ = timers.broker_heartbeat.tick() => Event::BrokerHeartbeat,
            _ = timers.reference_heartbeat.tick() => Event::ReferenceHeartbeat,
            _ = timers.clock_round.tick() => Event::ClockRound,
            Some(query) = self.status.recv() => Event::Status(query),
            Some(written) = self.snapshots.recv() => Event::Snapshot(written),
            Some(checked) = self.logins.recv() => Event::Login(checked),
            message = self.reference.recv() => match message {
                Some(m) => Event::Reference(m),
                None => Event::Closed("reference socket"),
            },
            message = self.subscriber.recv(), if reading => match message {
                Some(m) => Event::Peer(m),
                None => Event::Closed("SUB socket"),
            },
            message = recv_any(&mut self.brokers), if reading => match message {
                (broker, Some(m)) => Event::Client(broker, m),
                (_, None) => Event::Closed("broker socket"),
            },
        }
    }

    /// Takes the peer messages waiting now (at most [`MAX_DRAIN_PER_TURN`]).
    pub(crate) fn drain_peers(&mut self, buffer: &mut Vec<Multipart>) {
        drain(&mut self.subscriber, buffer);
    }

    /// Takes the client messages waiting now (at most [`MAX_DRAIN_PER_TURN`] from each
    /// broker), with the number of the broker each came from.
    pub(crate) fn drain_clients(&mut self, buffer: &mut Vec<(usize, Multipart)>) {
        for (broker, receiver) in self.brokers.iter_mut().enumerate() {
            let start = buffer.len();
            while buffer.len() - start < MAX_DRAIN_PER_TURN {
                match receiver.try_recv() {
                    Some(message) => buffer.push((broker, message)),
                    None => break,
                }
            }
        }
    }
}

/// The next message of any of `receivers`, with its index (`None` when that socket
/// closed). Never resolves for an empty list. `Receiver::recv` is cancel-safe, so the
/// futures of the others are simply dropped.
async fn recv_any(receivers: &mut [Receiver]) -> (usize, Option<Multipart>) {
    let mut pending: Vec<_> = receivers
        .iter_mut()
        .map(|receiver| Box::pin(receiver.recv()))
        .collect();
    std::future::poll_fn(|cx| {
        for (index, future) in pending.iter_mut().enumerate() {
            if let std::task::Poll::Ready(message) = future.as_mut().poll(cx) {
                return std::task::Poll::Ready((index, message));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

fn drain(receiver: &mut Receiver, buffer: &mut Vec<Multipart>) {
    while buffer.len() < MAX_DRAIN_PER_TURN {
        match receiver.try_recv() {
            Some(message) => buffer.push(message),
            None => break,
        }
    }
}
