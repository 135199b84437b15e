//! What a call is given and gives back: its time limits ([`CallOptions`]), its answer
//! ([`Answer`]) and why it failed ([`CallError`]), with which answers mean "try again".

use std::time::Duration;

use proto::client::Seq;
use proto::{EncodeError, Error, ErrorCode, LimitError, Reply};

use super::{DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_TIMEOUT};

/// How long a call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    /// Wait for one attempt's answer before sending the request again.
    pub attempt_timeout: Duration,
    /// Overall deadline from the first attempt; then the call gives up.
    pub timeout: Duration,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A successful call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// What the cluster answered.
    pub reply: Reply,
    /// The replica that answered.
    pub node: String,
    /// That replica's applied slot when it answered.
    pub applied_slot: u64,
    /// Attempts sent (1 when nothing was retried).
    pub attempts: u32,
    /// The request number of the call.
    pub seq: Seq,
}

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request breaks a limit; it was not sent.
    #[error("invalid request: {0}")]
    Invalid(#[from] LimitError),
    /// The request could not be encoded; it was not sent.
    #[error("cannot encode the request: {0}")]
    Encode(#[from] EncodeError),
    /// The cluster answered with an error that retrying would not change.
    #[error("{error}")]
    Rejected {
        /// The error.
        error: Error,
        /// The replica that answered.
        node: String,
        /// Attempts sent.
        attempts: u32,
        /// An earlier attempt got no answer (it may have taken effect before this one
        /// was answered).
        earlier_unanswered: bool,
    },
    /// Every attempt was answered "retry later" with a code that guarantees no effect,
    /// until the deadline: the request certainly did not take effect.
    #[error("gave up after {attempts} attempts: {error}; the request did not take effect")]
    Unavailable {
        /// The last answer.
        error: Error,
        /// Attempts sent.
        attempts: u32,
    },
    /// No conclusive answer before the deadline: the request may or may not have taken
    /// effect (outcome unknown).
    #[error(
        "no answer within {timeout:?} ({attempts} attempts{}); the request may or may not have taken effect",
        last_error.as_ref().map(|e| format!(", last answer: {e}")).unwrap_or_default()
    )]
    Timeout {
        /// Attempts sent.
        attempts: u32,
        /// The last "retry later" answer, if any.
        last_error: Option<Error>,
        /// The overall deadline that passed.
        timeout: Duration,
    },
    /// No broker answered its pings until the deadline.
    #[error(
        "no broker answers ({brokers}){}",
        if *sent { "; the request may or may not have taken effect" } else { "" }
    )]
    NoBroker {
        /// The brokers tried.
        brokers: String,
        /// Whether an attempt had been sent (then the outcome is unknown).
        sent: bool,
    },
    /// The connection's socket closed.
    #[error("connection to the broker closed")]
    Closed {
        /// Whether an attempt had been sent (then the outcome is unknown).
        sent: bool,
    },
}

impl CallError {
    /// Whether the request certainly took no effect, so that a history may record it as
    /// `fail`. False whenever some attempt went unanswered.
    pub fn certainly_not_applied(&self) -> bool {
        match self {
            CallError::Invalid(_) | CallError::Encode(_) | CallError::Unavailable { .. } => true,
            CallError::Rejected {
                error,
                earlier_unanswered,
                ..
            } => error.code.certainly_not_applied() && !earlier_unanswered,
            CallError::Timeout { .. } => false,
            CallError::NoBroker { sent, .. } | CallError::Closed { sent } => !sent,
        }
    }

    /// The cluster's error code, when the cluster answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CallError::Rejected { error, .. } | CallError::Unavailable { error, .. } => {
                Some(error.code)
            }
            CallError::Invalid(_)
            | CallError::Encode(_)
            | CallError::Timeout { .. }
            | CallError::NoBroker { .. }
            | CallError::Closed { .. } => None,
        }
    }

    /// A short stable name for counters and JSON output: the error code's name, or
    /// `timeout`, `invalid`, `closed`; no broker up is `unavailable`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Invalid(_) | CallError::Encode(_) => "invalid",
            CallError::Rejected { error, .. } | CallError::Unavailable { error, .. } => {
                error.code.as_str()
            }
            CallError::Timeout { .. } => "timeout",
            CallError::NoBroker { .. } => "unavailable",
            CallError::Closed { .. } => "closed",
        }
    }
}

/// Answers that mean "try again": the request either certainly did not take effect
/// (`unavailable`, `not_leader`, `overloaded`) or is still pending (`timeout`); in both
/// cases sending the same `(client_id, seq)` again is safe.
pub(super) fn is_retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unavailable | ErrorCode::NotLeader | ErrorCode::Overloaded | ErrorCode::Timeout
    )
}
