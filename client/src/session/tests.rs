//! Unit tests of `session.rs`.

use super::*;

fn error(code: ErrorCode) -> Error {
    Error::new(code, "test")
}

#[test]
fn outcomes_are_certain_only_without_unanswered_attempts() {
    let rejected = |code, earlier_unanswered| CallError::Rejected {
        error: error(code),
        node: String::new(),
        attempts: 1,
        earlier_unanswered,
    };
    assert!(rejected(ErrorCode::BadRequest, false).certainly_not_applied());
    assert!(!rejected(ErrorCode::BadRequest, true).certainly_not_applied());
    assert!(!rejected(ErrorCode::Internal, false).certainly_not_applied());
    assert!(!rejected(ErrorCode::NotFound, false).certainly_not_applied());
    let timeout = CallError::Timeout {
        attempts: 3,
        last_error: Some(error(ErrorCode::Unavailable)),
        timeout: Duration::from_secs(1),
    };
    assert!(!timeout.certainly_not_applied());
    assert_eq!(timeout.kind(), "timeout");
    let unavailable = CallError::Unavailable {
        error: error(ErrorCode::NotLeader),
        attempts: 3,
    };
    assert!(unavailable.certainly_not_applied());
    assert_eq!(unavailable.kind(), "not_leader");
    assert!(CallError::Closed { sent: false }.certainly_not_applied());
    assert!(!CallError::Closed { sent: true }.certainly_not_applied());
}

#[test]
fn client_ids_are_never_zero() {
    for _ in 0..1000 {
        assert_ne!(random_client_id(), 0);
    }
}
