//! The pure-Rust `zeromq` backend: one tokio task per socket.
//!
//! The user talks to the task through bounded channels. The crate below has no
//! `ZMQ_MAXMSGSIZE`, no high-water marks, no ZMTP heartbeats and no reconnect after a
//! peer restarts; `docs/transport.md` lists these limits with a reproduction for each.
//! Use it only where a C++ compiler is not available.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use zeromq::{Socket as _, SocketOptions, SocketRecv, SocketSend, ZmqMessage};

use crate::{ForwardStats, Kind, Mode, Multipart, Options, Outbound, TransportError};

/// How long `connect` waits for the peer before it gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn to_zmq(message: Multipart) -> Option<ZmqMessage> {
    let frames: Vec<Bytes> = message.into_iter().map(Bytes::from).collect();
    ZmqMessage::try_from(frames).ok()
}

fn from_zmq(message: ZmqMessage) -> Multipart {
    message
        .into_vec()
        .into_iter()
        .map(|frame| frame.to_vec())
        .collect()
}

fn socket_options(options: &Options) -> SocketOptions {
    let mut zmq_options = SocketOptions::default();
    zmq_options.connect_timeout(CONNECT_TIMEOUT);
    if let Some(identity) = &options.identity
        && let Ok(identity) = zeromq::util::PeerIdentity::try_from(identity.as_slice())
    {
        zmq_options.peer_identity(identity);
    }
    zmq_options
}

async fn attach<S: zeromq::Socket>(
    socket: &mut S,
    kind: Kind,
    mode: Mode,
    endpoint: &str,
) -> Result<String, TransportError> {
    let setup = |action: &'static str, e: zeromq::ZmqError| TransportError::Setup {
        action,
        kind,
        endpoint: endpoint.to_owned(),
        reason: e.to_string(),
    };
    match mode {
        Mode::Bind => {
            let resolved = socket.bind(endpoint).await.map_err(|e| setup("bind", e))?;
            Ok(resolved.to_string())
        }
        Mode::Connect => {
            for one in crate::endpoints(endpoint) {
                socket.connect(one).await.map_err(|e| setup("connect", e))?;
            }
            Ok(endpoint.to_owned())
        }
    }
}

/// Creates the socket and starts its task.
pub(crate) async fn spawn(
    kind: Kind,
    mode: Mode,
    endpoint: &str,
    options: &Options,
    out_rx: mpsc::Receiver<Outbound>,
    in_tx: mpsc::Sender<Multipart>,
) -> Result<String, TransportError> {
    let zmq_options = socket_options(options);
    let resolved = match kind {
        Kind::Router => {
            let mut socket = zeromq::RouterSocket::with_options(zmq_options);
            let resolved = attach(&mut socket, kind, mode, endpoint).await?;
            tokio::spawn(duplex(socket, out_rx, in_tx));
            resolved
        }
        Kind::Dealer => {
            let mut socket = zeromq::DealerSocket::with_options(zmq_options);
            let resolved = attach(&mut socket, kind, mode, endpoint).await?;
            tokio::spawn(duplex(socket, out_rx, in_tx));
            resolved
        }
        Kind::XPub => {
            let mut socket = zeromq::XPubSocket::with_options(zmq_options);
            let resolved = attach(&mut socket, kind, mode, endpoint).await?;
            tokio::spawn(duplex(socket, out_rx, in_tx));
            resolved
        }
        Kind::XSub => {
            let mut socket = zeromq::XSubSocket::with_options(zmq_options);
            let resolved = attach(&mut socket, kind, mode, endpoint).await?;
            tokio::spawn(duplex(socket, out_rx, in_tx));
            resolved
        }
        Kind::Pub => {
            let mut socket = zeromq::PubSocket::with_options(zmq_options);
            let resolved = attach(&mut socket, kind, mode, endpoint).await?;
            tokio::spawn(publisher(socket, out_rx));
            resolved
        }
        Kind::Sub => {
            let mut socket = zeromq::SubSocket::with_options(zmq_options);
            for prefix in &options.subscriptions {
                let prefix = String::from_utf8_lossy(prefix).into_owned();
                socket
                    .subscribe(&prefix)
                    .await
                    .map_err(|e| TransportError::Setup {
                        action: "subscribe",
                        kind,
                        endpoint: endpoint.to_owned(),
                        reason: e.to_string(),
                    })?;
            }
            let resolved = attach(&mut socket, kind, mode, endpoint).await?;
            tokio::spawn(subscriber(socket, out_rx, in_tx));
            resolved
        }
    };
    Ok(resolved)
}

/// Drives a socket that both sends and receives.
async fn duplex<S>(
    mut socket: S,
    mut out_rx: mpsc::Receiver<Outbound>,
    in_tx: mpsc::Sender<Multipart>,
) where
    S: SocketSend + SocketRecv + Send,
{
    loop {
        tokio::select! {
            outbound = out_rx.recv() => match outbound {
                Some(Outbound::Message(message)) => {
                    if let Some(message) = to_zmq(message)
                        && let Err(e) = socket.send(message).await
                    {
                        tracing::debug!(error = %e, "send dropped");
                    }
                }
                Some(Outbound::Subscribe(_) | Outbound::Unsubscribe(_)) => {}
                None if in_tx.is_closed() => break,
                None => {
                    // Senders are gone; keep receiving for the receiver.
                    while let Ok(message) = socket.recv().await {
                        if in_tx.send(from_zmq(message)).await.is_err() {
                            break;
                        }
                    }
                    break;
                }
            },
            inbound = socket.recv() => match inbound {
                Ok(message) => {
                    if in_tx.send(from_zmq(message)).await.is_err() && out_rx.is_closed() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "receive failed");
                    break;
                }
            },
        }
    }
}

async fn publisher(mut socket: zeromq::PubSocket, mut out_rx: mpsc::Receiver<Outbound>) {
    while let Some(outbound) = out_rx.recv().await {
        if let Outbound::Message(message) = outbound
            && let Some(message) = to_zmq(message)
            && let Err(e) = socket.send(message).await
        {
            tracing::debug!(error = %e, "publish dropped");
        }
    }
}

async fn subscriber(
    mut socket: zeromq::SubSocket,
    mut out_rx: mpsc::Receiver<Outbound>,
    in_tx: mpsc::Sender<Multipart>,
) {
    let mut control_open = true;
    loop {
        tokio::select! {
            control = out_rx.recv(), if control_open => match control {
                Some(Outbound::Subscribe(prefix)) => {
                    let prefix = String::from_utf8_lossy(&prefix).into_owned();
                    if let Err(e) = socket.subscribe(&prefix).await {
                        tracing::warn!(error = %e, "subscribe failed");
                    }
                }
                Some(Outbound::Unsubscribe(prefix)) => {
                    let prefix = String::from_utf8_lossy(&prefix).into_owned();
                    if let Err(e) = socket.unsubscribe(&prefix).await {
                        tracing::warn!(error = %e, "unsubscribe failed");
                    }
                }
                Some(Outbound::Message(_)) => {}
                None => control_open = false,
            },
            inbound = socket.recv() => match inbound {
                Ok(message) => {
                    if in_tx.send(from_zmq(message)).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "receive failed");
                    break;
                }
            },
        }
    }
}

/// Starts the XSUB/XPUB device as a task.
pub(crate) async fn forward(
    frontend_endpoint: &str,
    backend_endpoint: &str,
    options: &Options,
    stats: Arc<ForwardStats>,
    stop: CancellationToken,
    done: oneshot::Sender<()>,
) -> Result<(String, String), TransportError> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut frontend = zeromq::XSubSocket::with_options(socket_options(options));
    let frontend_resolved =
        attach(&mut frontend, Kind::XSub, Mode::Bind, frontend_endpoint).await?;
    let mut backend = zeromq::XPubSocket::with_options(socket_options(options));
    let backend_resolved = attach(&mut backend, Kind::XPub, Mode::Bind, backend_endpoint).await?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                message = frontend.recv() => match message {
                    Ok(message) => {
                        let bytes: usize = message.iter().map(|f| f.len()).sum();
                        let kind = message
                            .iter()
                            .next()
                            .map_or(proto::topic::Kind::Other, |topic| {
                                proto::topic::Kind::of(topic)
                            });
                        // This send waits for the slowest subscriber: the documented defect.
                        if backend.send(message).await.is_ok() {
                            stats.forwarded(kind, bytes);
                        } else {
                            stats.dropped.fetch_add(1, Relaxed);
                        }
                    }
                    Err(_) => break,
                },
                subscription = backend.recv() => match subscription {
                    Ok(subscription) => {
                        stats.subscriptions.fetch_add(1, Relaxed);
                        let _ = frontend.send(subscription).await;
                    }
                    Err(_) => break,
                },
            }
        }
        drop((frontend, backend));
        let _ = done.send(());
    });
    Ok((frontend_resolved, backend_resolved))
}
