//! The crash points of the failure drills: `--crash-at POINT[:N]` aborts the process the
//! N-th time it reaches a named protocol point, exactly as `kill -9` would at that
//! instant (no destructor, no flush). The end-to-end tests use them to show that no
//! acknowledged write is lost wherever a node dies.
//!
//! Which messages reach which point is a pure function ([`after_sending`]), tested here.

use std::str::FromStr;

use paxos::{Envelope, Message};

/// A named protocol point where `--crash-at` aborts the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// An acceptor sent a `Promise` (its promise is durable): fail3 of the seeds.
    AfterPromise,
    /// A group holding an `Accept` record is durable, before anything it held back
    /// leaves.
    AfterAcceptPersist,
    /// An acceptor's `Accepted` left (its Accept record is durable).
    AfterAcceptSend,
    /// The leader sent a `Decide`, before applying it or answering the client.
    AfterDecide,
    /// A client's command is applied, just before its reply is sent.
    BeforeReply,
    /// A client request was taken and handed to the cluster (proposed or forwarded),
    /// before it is decided: fail2 of the seeds.
    WithPendingRequest,
    /// store.json was written, before the log is truncated behind it.
    AfterSnapshot,
}

impl CrashPoint {
    /// Every point, for tests and help.
    pub const ALL: [CrashPoint; 7] = [
        CrashPoint::AfterPromise,
        CrashPoint::AfterAcceptPersist,
        CrashPoint::AfterAcceptSend,
        CrashPoint::AfterDecide,
        CrashPoint::BeforeReply,
        CrashPoint::WithPendingRequest,
        CrashPoint::AfterSnapshot,
    ];

    /// The point's flag name.
    pub fn as_str(self) -> &'static str {
        match self {
            CrashPoint::AfterPromise => "after-promise",
            CrashPoint::AfterAcceptPersist => "after-accept-persist",
            CrashPoint::AfterAcceptSend => "after-accept-send",
            CrashPoint::AfterDecide => "after-decide",
            CrashPoint::BeforeReply => "before-reply",
            CrashPoint::WithPendingRequest => "with-pending-request",
            CrashPoint::AfterSnapshot => "after-snapshot",
        }
    }
}

/// `--crash-at POINT[:N]`: abort the N-th time (default the first) `point` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashAt {
    /// The point.
    pub point: CrashPoint,
    /// Which time it is reached (1 = the first).
    pub nth: u64,
}

/// A `--crash-at` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown crash point {0:?}: use POINT or POINT:N with POINT one of {points}", points = CrashPoint::ALL.map(CrashPoint::as_str).join(", "))]
pub struct CrashAtError(String);

impl FromStr for CrashAt {
    type Err = CrashAtError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || CrashAtError(text.to_owned());
        let (name, nth) = match text.split_once(':') {
            Some((name, n)) => (name, n.parse::<u64>().map_err(|_| error())?),
            None => (text, 1),
        };
        let point = CrashPoint::ALL
            .into_iter()
            .find(|p| p.as_str() == name)
            .ok_or_else(error)?;
        if nth == 0 {
            return Err(error());
        }
        Ok(CrashAt { point, nth })
    }
}

/// Counts how often each point is reached and aborts at the configured one.
#[derive(Debug, Clone)]
pub struct Crasher {
    at: Option<CrashAt>,
    reached: u64,
    /// A client request was handed to the cluster since the last messages left.
    request_in_flight: bool,
}

impl Crasher {
    /// A crasher for `--crash-at` (or none).
    pub fn new(at: Option<CrashAt>) -> Crasher {
        Crasher {
            at,
            reached: 0,
            request_in_flight: false,
        }
    }

    /// Whether `point` is armed (lets the caller skip work to detect it).
    pub fn armed(&self, point: CrashPoint) -> bool {
        self.at.is_some_and(|at| at.point == point)
    }

    /// A client request was handed to the cluster (proposed or forwarded): the next
    /// messages to leave reach `with-pending-request`.
    pub fn request_taken(&mut self) {
        self.request_in_flight |= self.armed(CrashPoint::WithPendingRequest);
    }

    /// `messages` left the process: reaches every point they imply ([`after_sending`]).
    pub fn sent(&mut self, messages: &[Envelope]) {
        for point in after_sending(messages) {
            self.reached(point);
        }
        if !messages.is_empty() && self.request_in_flight {
            self.request_in_flight = false;
            self.reached(CrashPoint::WithPendingRequest);
        }
    }

    /// The process reached `point`: abort if this is the configured time. Abort, not
    /// exit: no destructor, no flush, exactly as a crash (`kill -9`) would leave things.
    pub fn reached(&mut self, point: CrashPoint) {
        let Some(at) = self.at else {
            return;
        };
        if at.point != point {
            return;
        }
        self.reached += 1;
        if self.reached == at.nth {
            tracing::error!(point = point.as_str(), nth = at.nth, "--crash-at: aborting");
            eprintln!("crash-at {}: aborting", point.as_str());
            std::process::abort();
        }
    }
}

/// The points a batch of messages reaches once sent: `after-promise` for a `Promise`,
/// `after-accept-send` for an acceptor's `Accepted`, `after-decide` for the leader's
/// `Decide` broadcast.
pub fn after_sending(messages: &[Envelope]) -> impl Iterator<Item = CrashPoint> + '_ {
    let has = move |f: fn(&Envelope) -> bool| messages.iter().any(f);
    [
        (
            CrashPoint::AfterPromise,
            has(|e| matches!(e.message, Message::Promise { .. })),
        ),
        (
            CrashPoint::AfterAcceptSend,
            has(|e| matches!(e.message, Message::Accepted { .. })),
        ),
        (
            CrashPoint::AfterDecide,
            has(|e| e.to.is_none() && matches!(e.message, Message::Decide { .. })),
        ),
    ]
    .into_iter()
    .filter_map(|(point, reached)| reached.then_some(point))
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxos::Ballot;

    #[test]
    fn crash_points_parse() {
        for point in CrashPoint::ALL {
            assert_eq!(
                point.as_str().parse::<CrashAt>().unwrap(),
                CrashAt { point, nth: 1 }
            );
        }
        assert_eq!(
            "before-reply:7".parse::<CrashAt>().unwrap(),
            CrashAt {
                point: CrashPoint::BeforeReply,
                nth: 7
            }
        );
        assert!("before-reply:0".parse::<CrashAt>().is_err());
        assert!("sometime".parse::<CrashAt>().is_err());
        let mut crasher = Crasher::new(Some("after-decide:3".parse().unwrap()));
        crasher.reached(CrashPoint::AfterDecide);
        crasher.reached(CrashPoint::AfterDecide);
        crasher.reached(CrashPoint::BeforeReply);
        assert!(crasher.armed(CrashPoint::AfterDecide));
        assert!(!crasher.armed(CrashPoint::BeforeReply));
    }

    #[test]
    fn messages_reach_their_points() {
        let envelope = |to, message| Envelope {
            from: 1,
            to,
            lamport: 1,
            message,
        };
        let ballot = Ballot::new(1, 1);
        let sent = [
            envelope(Some(2), Message::Accepted { ballot, slot: 1 }),
            envelope(None, Message::Decide { slot: 1, ballot }),
        ];
        let points: Vec<_> = after_sending(&sent).collect();
        assert_eq!(
            points,
            [CrashPoint::AfterAcceptSend, CrashPoint::AfterDecide]
        );
        // A Decide to one peer is an answer, not the leader's announcement.
        let sent = [envelope(Some(2), Message::Decide { slot: 1, ballot })];
        assert_eq!(after_sending(&sent).count(), 0);
    }
}
