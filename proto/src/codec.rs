//! The one frame layout of every socket, and the MessagePack codec of its body.
//!
//! A ZeroMQ message is zero or more *routing frames* (ROUTER identities, or a pub/sub
//! topic) followed by exactly one *body frame*. A body frame is one version byte
//! ([`PROTOCOL_VERSION`]) then the message in MessagePack (`rmp-serde`, fields by name so
//! that old and new peers can add optional fields).
//!
//! Decoding never panics and never trusts a length: the frame is checked against
//! [`MAX_FRAME_BYTES`] first, `rmp-serde` bounds its pre-allocation by the input size,
//! and every decoded message is validated against the named limits ([`Wire::validate`]).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::LimitError;
use crate::limits::{MAX_FRAME_BYTES, MAX_ROUTING_FRAME_BYTES, MAX_ROUTING_FRAMES};

/// First byte of every body frame. Bumped on an incompatible change of the wire types.
pub const PROTOCOL_VERSION: u8 = 1;

/// A message type that travels in a body frame.
pub trait Wire: Serialize + DeserializeOwned {
    /// Checks the decoded message against the named limits.
    fn validate(&self) -> Result<(), LimitError>;
}

/// Why a frame could not be decoded. Every variant is an operating error: the process
/// logs it, counts it, answers `bad_request` where it can, and goes on.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame is empty.
    #[error("empty frame")]
    Empty,
    /// The frame is over [`MAX_FRAME_BYTES`].
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// Frame length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The version byte is not ours.
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    Version(u8),
    /// The body is not valid MessagePack for the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message decoded but breaks a limit.
    #[error("invalid message: {0}")]
    Invalid(#[from] LimitError),
    /// The multipart message does not have the expected shape.
    #[error("bad frame layout: {0}")]
    Layout(String),
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded message would be over [`MAX_FRAME_BYTES`].
    #[error("encoded message of {len} bytes is over the frame limit of {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Serialisation failed (a bug in a type's `Serialize`).
    #[error("cannot encode: {0}")]
    Serialize(String),
}

/// Encodes a message into a body frame.
pub fn encode<T: Wire>(message: &T) -> Result<Vec<u8>, EncodeError> {
    let mut frame = Vec::with_capacity(64);
    frame.push(PROTOCOL_VERSION);
    rmp_serde::encode::write_named(&mut frame, message)
        .map_err(|e| EncodeError::Serialize(e.to_string()))?;
    if frame.len() > MAX_FRAME_BYTES {
        return Err(EncodeError::TooLarge {
            len: frame.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    Ok(frame)
}

/// Decodes and validates a body frame.
pub fn decode<T: Wire>(frame: &[u8]) -> Result<T, DecodeError> {
    let message: T = decode_unvalidated(frame)?;
    message.validate()?;
    Ok(message)
}

/// Decodes a body frame (size, version, MessagePack) without checking the named limits,
/// for a receiver that must know who to answer before it refuses a message that breaks
/// one (a request's sequence number). Call [`Wire::validate`] before using it.
pub fn decode_unvalidated<T: Wire>(frame: &[u8]) -> Result<T, DecodeError> {
    let (&version, body) = frame.split_first().ok_or(DecodeError::Empty)?;
    if frame.len() > MAX_FRAME_BYTES {
        return Err(DecodeError::TooLarge {
            len: frame.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version(version));
    }
    rmp_serde::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// Splits a multipart message into its routing frames and its body frame, checking the
/// layout: between `routing` (exact count) routing frames, each at most
/// [`MAX_ROUTING_FRAME_BYTES`], then one body frame.
pub fn split<F: AsRef<[u8]>>(frames: &[F], routing: usize) -> Result<(&[F], &[u8]), DecodeError> {
    debug_assert!(routing <= MAX_ROUTING_FRAMES);
    if frames.len() != routing + 1 {
        return Err(DecodeError::Layout(format!(
            "expected {} frame(s), got {}",
            routing + 1,
            frames.len()
        )));
    }
    let (body, head) = frames.split_last().ok_or(DecodeError::Empty)?;
    if let Some(frame) = head
        .iter()
        .find(|f| f.as_ref().len() > MAX_ROUTING_FRAME_BYTES)
    {
        return Err(DecodeError::Layout(format!(
            "routing frame of {} bytes is over {MAX_ROUTING_FRAME_BYTES}",
            frame.as_ref().len()
        )));
    }
    Ok((head, body.as_ref()))
}
