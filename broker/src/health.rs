//! `broker health`: the probe docker's healthchecks run against a broker's frontend.

use std::time::Duration;

use proto::{Consistency, Op, Request, Response};
use transport::{Kind, Mode, Options, Socket, TransportError};

use crate::HEALTH_CLIENT_ID;

/// Why a health probe failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The probe socket could not be opened.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Something answered, but not a broker.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// Asks the broker at `endpoint` (a `*` or `0.0.0.0` host means this machine) for a
/// `Noop` read and returns its answer. Any [`Response`] counts as healthy, even
/// `unavailable`: the broker itself is up.
pub async fn health(endpoint: &str, timeout: Duration) -> Result<Response, HealthError> {
    let endpoint = transport::local_endpoint(endpoint);
    let seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let request = Request {
        client_id: HEALTH_CLIENT_ID,
        seq,
        op: Op::Noop,
        // A local read is answered by the receiving node at once, never through the log.
        consistency: Consistency::Local,
        credential: None,
    };
    let body = proto::encode(&request).map_err(|e| HealthError::Unexpected(e.to_string()))?;
    let mut socket =
        Socket::open(Kind::Dealer, Mode::Connect, &endpoint, Options::default()).await?;
    socket.send(vec![body]).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.recv())
            .await
            .map_err(|_| HealthError::Timeout(timeout))?
            .ok_or(HealthError::Transport(TransportError::Closed))?;
        let [body] = message.as_slice() else {
            return Err(HealthError::Unexpected(format!("{} frames", message.len())));
        };
        let response =
            proto::decode::<Response>(body).map_err(|e| HealthError::Unexpected(e.to_string()))?;
        if response.seq == seq {
            return Ok(response);
        }
    }
}
