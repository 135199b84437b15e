//! The proxy's device: an XSUB frontend for publishers, an XPUB backend for subscribers,
//! and the counters of what passes, run by the chosen [`Backend`].

#[cfg(feature = "libzmq")]
use crate::libzmq;
#[cfg(feature = "zeromq-rs")]
use crate::zeromq_rs;
use crate::{Backend, Options, TransportError};

/// Counters of a [`Forwarder`], written by its thread (or task) and read by anyone.
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Messages forwarded from publishers to subscribers.
    pub messages: std::sync::atomic::AtomicU64,
    /// Bytes of those messages.
    pub bytes: std::sync::atomic::AtomicU64,
    /// Subscription messages forwarded upstream.
    pub subscriptions: std::sync::atomic::AtomicU64,
    /// Publishers connected to the frontend now: TCP connections from accept to close, as
    /// a libzmq socket monitor reports them (a connection that never completes the ZMTP
    /// handshake counts too, until it closes). Always 0 with the `zeromq-rs` backend,
    /// which reports no connections.
    pub publishers: std::sync::atomic::AtomicU64,
    /// Subscribers connected to the backend now (as `publishers`).
    pub subscribers: std::sync::atomic::AtomicU64,
    /// Messages forwarded, by the kind of their topic (first frame), indexed by
    /// [`proto::topic::Kind::index`]. They add up to `messages`.
    pub by_kind: [std::sync::atomic::AtomicU64; proto::topic::Kind::COUNT],
    /// Messages (either way) the forwarder read and the other socket refused. Copies an
    /// XPUB drops for a subscriber whose pipe is full are not among them: libzmq drops
    /// those silently and counts nothing.
    pub dropped: std::sync::atomic::AtomicU64,
}

impl ForwardStats {
    /// `(messages, bytes, subscriptions)` now.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.messages.load(Relaxed),
            self.bytes.load(Relaxed),
            self.subscriptions.load(Relaxed),
        )
    }

    /// `(publishers, subscribers)` connected now.
    pub fn connected(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.publishers.load(Relaxed),
            self.subscribers.load(Relaxed),
        )
    }

    /// Messages forwarded under topics of `kind`.
    pub fn of_kind(&self, kind: proto::topic::Kind) -> u64 {
        self.by_kind[kind.index()].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Messages the forwarder could not pass on (the `dropped` field).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one forwarded message of `bytes` under `kind` (the forwarder's thread or
    /// task only).
    pub(crate) fn forwarded(&self, kind: proto::topic::Kind, bytes: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.messages.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
        self.by_kind[kind.index()].fetch_add(1, Relaxed);
    }
}

/// The XSUB/XPUB device: publishers connect to its frontend (XSUB), subscribers to its
/// backend (XPUB). Subscriptions flow upstream; messages flow downstream; a stalled
/// subscriber loses its own messages once its high-water mark is reached and never slows
/// the others (libzmq backend).
pub struct Forwarder {
    frontend: String,
    backend: String,
    stats: std::sync::Arc<ForwardStats>,
    stop: tokio_util::sync::CancellationToken,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Forwarder {
    /// Binds both sockets and starts forwarding.
    pub async fn start(
        backend: Backend,
        frontend_endpoint: &str,
        backend_endpoint: &str,
        options: Options,
    ) -> Result<Forwarder, TransportError> {
        let stats = std::sync::Arc::new(ForwardStats::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let (frontend, backend_ep) = match backend {
            #[cfg(feature = "libzmq")]
            Backend::Libzmq => libzmq::forward(
                frontend_endpoint,
                backend_endpoint,
                &options,
                stats.clone(),
                stop.clone(),
                done_tx,
            )?,
            #[cfg(feature = "zeromq-rs")]
            Backend::ZeromqRs => {
                zeromq_rs::forward(
                    frontend_endpoint,
                    backend_endpoint,
                    &options,
                    stats.clone(),
                    stop.clone(),
                    done_tx,
                )
                .await?
            }
        };
        Ok(Forwarder {
            frontend,
            backend: backend_ep,
            stats,
            stop,
            done,
        })
    }

    /// The XSUB endpoint publishers connect to.
    pub fn frontend_endpoint(&self) -> &str {
        &self.frontend
    }

    /// The XPUB endpoint subscribers connect to.
    pub fn backend_endpoint(&self) -> &str {
        &self.backend
    }

    /// The live counters.
    pub fn stats(&self) -> std::sync::Arc<ForwardStats> {
        self.stats.clone()
    }

    /// Stops forwarding and waits until both sockets are closed.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.done.await;
    }
}
