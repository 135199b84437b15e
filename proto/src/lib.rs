//! # proto — the wire of paxos-zmq
//!
//! Every message that crosses a socket is a serde type in this crate, encoded by one
//! codec ([`codec`]) into one frame layout: routing frames, then one MessagePack body
//! frame with a version byte. Nothing here does I/O; the sockets live in `transport`.
//!
//! | module | who talks | messages |
//! |---|---|---|
//! | [`client`] | client/bots ↔ broker ↔ node | [`client::Request`], [`client::Response`], [`client::Command`] |
//! | [`fabric`] | node ↔ broker, node ↔ reference, reference → proxy | [`fabric::NodeToBroker`], [`fabric::RefRequest`], [`fabric::RefReply`], [`fabric::MembershipEvent`] |
//! | [`paxos`] | node ↔ node over the proxy | [`paxos::Envelope`] |
//! | [`live`] | node → proxy → client (live chat) | [`live::LiveMessage`] on [`live::topic_of`] |
//! | [`topic`] | pub/sub topic names | |
//! | [`seal`] | every frame between cluster processes | [`seal::Keyring`]: XChaCha20-Poly1305 per frame |
//! | [`report`] | broker, proxy, reference → tools (HTTP `/status`, JSON) | [`report::BrokerReport`], [`report::ProxyReport`], [`report::ReferenceReport`] |
//!
//! ## Invariants kept here
//! - Decoding any byte string returns a value or a typed [`codec::DecodeError`]; it never
//!   panics and never allocates more than the frame it was given (proptests in
//!   `tests/codec_fuzz.rs`).
//! - Every decoded message is checked against the named limits of [`limits`].

pub mod client;
pub mod codec;
pub mod fabric;
pub mod limits;
pub mod live;
pub mod paxos;
pub mod report;
pub mod seal;
pub mod topic;

pub use client::{Command, Consistency, Error, ErrorCode, Op, Reply, Request, Response};
pub use codec::{DecodeError, EncodeError, Wire, decode, encode};

/// A field over one of the named [`limits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A string is longer than allowed.
    #[error("{field} is {len} bytes, over the limit of {max}")]
    TooLong {
        /// Field name.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list has more items than allowed.
    #[error("{field} has {len} items, over the limit of {max}")]
    TooMany {
        /// Field name.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A required string is empty.
    #[error("{field} is empty")]
    Empty {
        /// Field name.
        field: &'static str,
    },
    /// A name has characters that are not allowed.
    #[error("{field} has characters that are not allowed (whitespace or control)")]
    BadName {
        /// Field name.
        field: &'static str,
    },
    /// A string is shorter than required.
    #[error("{field} is {len} bytes, under the minimum of {min}")]
    TooShort {
        /// Field name.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
}

impl Wire for Request {
    fn validate(&self) -> Result<(), LimitError> {
        if let Some(credential) = &self.credential {
            client::check_credential(credential)?;
        }
        self.op.validate()
    }
}

impl Wire for Response {
    fn validate(&self) -> Result<(), LimitError> {
        match &self.result {
            Ok(reply) => reply.validate(),
            Err(_) => Ok(()),
        }
    }
}

impl Wire for fabric::NodeToBroker {
    fn validate(&self) -> Result<(), LimitError> {
        fabric::NodeToBroker::validate(self)
    }
}

impl Wire for fabric::RefRequest {
    fn validate(&self) -> Result<(), LimitError> {
        fabric::RefRequest::validate(self)
    }
}

impl Wire for fabric::RefReply {
    fn validate(&self) -> Result<(), LimitError> {
        match self {
            fabric::RefReply::Registered { members, .. } | fabric::RefReply::Members(members) => {
                if members.len() > limits::MAX_MEMBERS {
                    return Err(LimitError::TooMany {
                        field: "members",
                        len: members.len(),
                        max: limits::MAX_MEMBERS,
                    });
                }
                Ok(())
            }
            fabric::RefReply::HeartbeatAck { .. } | fabric::RefReply::Error(_) => Ok(()),
        }
    }
}

impl Wire for fabric::MembershipEvent {
    fn validate(&self) -> Result<(), LimitError> {
        fabric::MembershipEvent::validate(self)
    }
}
