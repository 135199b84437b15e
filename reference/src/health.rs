//! `reference health`: the probe docker's healthchecks run against the ROUTER.

use std::time::Duration;

use proto::fabric::{REFERENCE_REPLY, REFERENCE_REQUEST, RefReply, RefRequest};
use proto::seal::Keyring;

/// Why a health probe failed.
pub type HealthError = transport::ProbeError;

/// Asks the reference at `endpoint` (a `*` or `0.0.0.0` host means this machine) for
/// the member list and returns it.
pub async fn health(
    endpoint: &str,
    timeout: Duration,
    keys: Option<&Keyring>,
) -> Result<Health, HealthError> {
    let body =
        proto::encode(&RefRequest::Members).map_err(|e| HealthError::Unexpected(e.to_string()))?;
    let body = match keys {
        Some(keys) => keys.seal(&[REFERENCE_REQUEST], &body),
        None => body,
    };
    transport::probe(endpoint, body, timeout, |frame| {
        let opened = match keys {
            Some(keys) => keys
                .open(&[REFERENCE_REPLY], frame)
                .map_err(|e| format!("the reply does not open: {e}"))?,
            None => frame.to_vec(),
        };
        match proto::decode::<RefReply>(&opened) {
            Ok(RefReply::Members(members)) => Ok(Some(Health::Members(members))),
            // Without the key, a refusal that says why is the answer of a live reference.
            Ok(RefReply::Error(error))
                if keys.is_none() && error.message.starts_with("unauthenticated") =>
            {
                Ok(Some(Health::Refused))
            }
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

/// What a health probe learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The member list (a probe with the cluster key).
    Members(Vec<proto::fabric::Member>),
    /// The reference answered a probe without the key, refusing it as it should.
    Refused,
}
