//! `broker health`: the probe docker's healthchecks run against a broker's frontend.

use std::time::Duration;

use proto::{Consistency, Op, Request, Response};

use crate::HEALTH_CLIENT_ID;

/// Why a health probe failed.
pub type HealthError = transport::ProbeError;

/// Asks the broker at `endpoint` (a `*` or `0.0.0.0` host means this machine) for a
/// `Noop` read and returns its answer. Any [`Response`] counts as healthy, even
/// `unavailable`: the broker itself is up.
pub async fn health(endpoint: &str, timeout: Duration) -> Result<Response, HealthError> {
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
    transport::probe(endpoint, body, timeout, |frame| {
        let response = proto::decode::<Response>(frame).map_err(|e| e.to_string())?;
        Ok((response.seq == seq).then_some(response))
    })
    .await
}
