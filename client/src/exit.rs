//! The client's exit status, documented in `client --help`: 0 ok, 1 error, 2 not found,
//! 3 CAS mismatch, 4 unauthenticated. Shared by the one-shot commands ([`crate::cli`]) and the menu
//! ([`crate::menu`]).

use proto::ErrorCode;

use crate::session::CallError;

/// The process exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Ok,
    /// Failed (see the message).
    Error,
    /// The key, user or channel does not exist.
    NotFound,
    /// A compare-and-set found another value.
    CasMismatch,
    /// A chat request without a valid login (wrong password, no or stale credential,
    /// another user's).
    Unauthenticated,
}

impl Exit {
    /// The numeric exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::NotFound => 2,
            Exit::CasMismatch => 3,
            Exit::Unauthenticated => 4,
        }
    }

    /// The exit status a failed call means.
    pub fn of_error(error: &CallError) -> Exit {
        match error.code() {
            Some(ErrorCode::NotFound) => Exit::NotFound,
            Some(ErrorCode::CasMismatch) => Exit::CasMismatch,
            Some(ErrorCode::Unauthenticated) => Exit::Unauthenticated,
            _ => Exit::Error,
        }
    }
}
