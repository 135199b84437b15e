//! One request, one answer: what the health probes of the broker and the reference ask
//! of a DEALER (docker's healthchecks run them).

use std::time::Duration;

use crate::{Kind, Mode, Options, Socket, TransportError, local_endpoint};

/// Why a health probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The probe socket could not be opened.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Something answered, but not what was probed.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// Sends `body` from a new DEALER connected to `endpoint` (a `*` or `0.0.0.0` host means
/// this machine) and hands each one-frame answer to `answer`, until it returns
/// `Ok(Some(_))` (the probe's result), fails (an unexpected answer), or `timeout` passes.
/// `Ok(None)` skips an answer that is not this probe's (an earlier probe's, say).
pub async fn probe<T>(
    endpoint: &str,
    body: Vec<u8>,
    timeout: Duration,
    mut answer: impl FnMut(&[u8]) -> Result<Option<T>, String>,
) -> Result<T, ProbeError> {
    let endpoint = local_endpoint(endpoint);
    let mut socket =
        Socket::open(Kind::Dealer, Mode::Connect, &endpoint, Options::default()).await?;
    socket.send(vec![body]).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.recv())
            .await
            .map_err(|_| ProbeError::Timeout(timeout))?
            .ok_or(ProbeError::Transport(TransportError::Closed))?;
        let [frame] = message.as_slice() else {
            return Err(ProbeError::Unexpected(format!("{} frames", message.len())));
        };
        if let Some(result) = answer(frame).map_err(ProbeError::Unexpected)? {
            return Ok(result);
        }
    }
}
