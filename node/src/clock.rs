//! Berkeley clock synchronisation: the leader polls the nodes' wall clocks, averages
//! them (discarding outliers) and sends each node the correction that brings it to the
//! average. A node never touches the system clock: it keeps an **offset** that it adds
//! to its wall clock, and reports it on `/status`.
//!
//! The messages travel on the `clock` topic ([`proto::topic::CLOCK`]) as
//! `[topic, sender name, body(ClockMessage)]`. [`Berkeley`] is the leader's side of one
//! round and [`ClockSync`] a node's whole part (its offset, the rounds it runs as leader,
//! its answers), both plain data with the time passed in, so they are tested without
//! sockets or clocks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proto::LimitError;
use proto::codec::Wire;
use proto::limits::{MAX_MEMBERS, MAX_NAME_BYTES};
use serde::{Deserialize, Serialize};

/// Readings further than this from the median are outliers: they get a correction but do
/// not move the average (a node whose clock is badly off must not drag the others).
pub const MAX_CLOCK_DEVIATION_MS: i64 = 1000;
/// Readings that took longer than this to come back are ignored: the round-trip error
/// would dominate.
pub const MAX_READING_RTT_MS: i64 = 1000;

/// A clock synchronisation message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockMessage {
    /// The leader asks every node for its clock.
    Poll {
        /// Round number (the leader's; answers name it).
        round: u64,
    },
    /// A node's answer: its corrected wall clock when it answered.
    Reading {
        /// The round answered.
        round: u64,
        /// The leader that asked.
        leader: String,
        /// Wall clock plus current offset, in Unix milliseconds.
        time_ms: i64,
    },
    /// The leader's verdict: each node adds its correction to its offset.
    Adjust {
        /// The round.
        round: u64,
        /// Node name and correction in milliseconds.
        corrections: Vec<(String, i64)>,
    },
}

impl Wire for ClockMessage {
    fn validate(&self) -> Result<(), LimitError> {
        match self {
            ClockMessage::Poll { .. } => Ok(()),
            ClockMessage::Reading { leader, .. } => proto::fabric::check_node_name(leader),
            ClockMessage::Adjust { corrections, .. } => {
                if corrections.len() > MAX_MEMBERS {
                    return Err(LimitError::TooMany {
                        field: "corrections",
                        len: corrections.len(),
                        max: MAX_MEMBERS,
                    });
                }
                corrections.iter().try_for_each(|(node, _)| {
                    if node.len() > MAX_NAME_BYTES {
                        return Err(LimitError::TooLong {
                            field: "node",
                            len: node.len(),
                            max: MAX_NAME_BYTES,
                        });
                    }
                    proto::fabric::check_node_name(node)
                })
            }
        }
    }
}

/// The leader's side of one Berkeley round.
#[derive(Debug, Clone)]
pub struct Berkeley {
    round: u64,
    polled_at_ms: i64,
    /// Node name -> its clock minus the leader's, in ms (round trip compensated).
    offsets: BTreeMap<String, i64>,
}

impl Berkeley {
    /// Starts round `round`; `now_ms` is the leader's (corrected) clock when it polls.
    /// The leader itself takes part with offset 0.
    pub fn start(round: u64, leader: &str, now_ms: i64) -> Berkeley {
        let mut offsets = BTreeMap::new();
        offsets.insert(leader.to_owned(), 0);
        Berkeley {
            round,
            polled_at_ms: now_ms,
            offsets,
        }
    }

    /// This round's number.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Takes a node's reading `time_ms`, received when the leader's clock said `now_ms`.
    /// The node read its clock about half a round trip before `now_ms`.
    pub fn reading(&mut self, round: u64, node: &str, time_ms: i64, now_ms: i64) {
        let rtt_ms = now_ms - self.polled_at_ms;
        if round != self.round
            || !(0..=MAX_READING_RTT_MS).contains(&rtt_ms)
            || self.offsets.len() >= MAX_MEMBERS
        {
            return;
        }
        let offset = time_ms + rtt_ms / 2 - now_ms;
        self.offsets.insert(node.to_owned(), offset);
    }

    /// Ends the round: the fault-tolerant average of the offsets (those within
    /// [`MAX_CLOCK_DEVIATION_MS`] of the median), and for every node that answered the
    /// correction that moves it to that average.
    pub fn finish(self) -> Vec<(String, i64)> {
        let mut sorted: Vec<i64> = self.offsets.values().copied().collect();
        sorted.sort_unstable();
        let median = sorted[sorted.len() / 2];
        let kept: Vec<i64> = sorted
            .into_iter()
            .filter(|o| (o - median).abs() <= MAX_CLOCK_DEVIATION_MS)
            .collect();
        let average = kept.iter().sum::<i64>() / kept.len() as i64;
        self.offsets
            .into_iter()
            .map(|(node, offset)| (node, average - offset))
            .collect()
    }
}

/// A node's clock as Berkeley synchronisation sets it: its wall clock plus a skew (for
/// drills) plus the offset the leader's rounds correct; and, while it leads, the round
/// it runs.
#[derive(Debug)]
pub struct ClockSync {
    name: String,
    skew_ms: i64,
    offset_ms: i64,
    /// How long a round collects readings.
    collect: Duration,
    /// The round this node runs as leader, and when it ends.
    round: Option<(Berkeley, Instant)>,
    /// The number of the last round this node started. Rounds start from the process's
    /// start time in µs, so a restarted leader's rounds are newer than its earlier ones.
    rounds: u64,
    /// The newest round whose correction this node took, by leader: an `Adjust` of an
    /// older or the same round (a sealed frame recorded on the proxy and replayed) is not
    /// applied again. At most [`MAX_MEMBERS`] leaders are remembered.
    adjusted: BTreeMap<String, u64>,
}

impl ClockSync {
    /// The clock of node `name`, skewed by `skew_ms`; a round it runs collects readings
    /// for `collect`.
    pub fn new(name: &str, skew_ms: i64, collect: Duration) -> ClockSync {
        ClockSync {
            name: name.to_owned(),
            skew_ms,
            offset_ms: 0,
            collect,
            round: None,
            rounds: proto::fabric::Stamp::next_of_process().boot_us,
            adjusted: BTreeMap::new(),
        }
    }

    /// The correction Berkeley applied so far, in ms.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// This node's corrected clock, given the wall clock `wall_ms` (Unix ms).
    pub fn now_ms(&self, wall_ms: i64) -> i64 {
        wall_ms + self.skew_ms + self.offset_ms
    }

    /// Starts a round (this node leads): an open one is finished first. Returns what to
    /// publish, in order.
    pub fn start_round(&mut self, now: Instant, wall_ms: i64) -> Vec<ClockMessage> {
        let mut out: Vec<ClockMessage> = self.finish().into_iter().collect();
        self.rounds += 1;
        let round = self.rounds;
        let berkeley = Berkeley::start(round, &self.name, self.now_ms(wall_ms));
        self.round = Some((berkeley, now + self.collect));
        out.push(ClockMessage::Poll { round });
        out
    }

    /// Ends the open round once its collection time is over: the corrections to
    /// publish (this node's own is applied at once).
    pub fn tick(&mut self, now: Instant) -> Option<ClockMessage> {
        let due = self.round.as_ref().is_some_and(|(_, ends)| now >= *ends);
        if due { self.finish() } else { None }
    }

    fn finish(&mut self) -> Option<ClockMessage> {
        let (round, _) = self.round.take()?;
        let number = round.round();
        let corrections = round.finish();
        if let Some((_, own)) = corrections.iter().find(|(n, _)| *n == self.name) {
            self.adjust(*own);
        }
        Some(ClockMessage::Adjust {
            round: number,
            corrections,
        })
    }

    /// Whether `round` of `leader` is newer than every round of it taken so far;
    /// remembers it if so.
    fn take_round(&mut self, leader: &str, round: u64) -> bool {
        if self
            .adjusted
            .get(leader)
            .is_some_and(|newest| round <= *newest)
        {
            return false;
        }
        if !self.adjusted.contains_key(leader)
            && self.adjusted.len() >= MAX_MEMBERS
            && let Some(oldest) = self
                .adjusted
                .iter()
                .min_by_key(|(_, round)| **round)
                .map(|(leader, _)| leader.clone())
        {
            self.adjusted.remove(&oldest);
        }
        self.adjusted.insert(leader.to_owned(), round);
        true
    }

    fn adjust(&mut self, correction_ms: i64) {
        self.offset_ms += correction_ms;
        if correction_ms != 0 {
            tracing::debug!(correction_ms, offset_ms = self.offset_ms, "clock adjusted");
        }
    }

    /// A clock message from the node `sender`; `leader` is the name of the leader this
    /// node follows (only it sets this clock). Returns an answer to publish.
    pub fn on_message(
        &mut self,
        sender: &str,
        message: ClockMessage,
        leader: Option<&str>,
        wall_ms: i64,
    ) -> Option<ClockMessage> {
        match message {
            ClockMessage::Poll { round } => Some(ClockMessage::Reading {
                round,
                leader: sender.to_owned(),
                time_ms: self.now_ms(wall_ms),
            }),
            ClockMessage::Reading {
                round,
                leader,
                time_ms,
            } => {
                if leader == self.name {
                    let now = self.now_ms(wall_ms);
                    if let Some((berkeley, _)) = &mut self.round {
                        berkeley.reading(round, sender, time_ms, now);
                    }
                }
                None
            }
            ClockMessage::Adjust { round, corrections } => {
                if leader == Some(sender)
                    && let Some((_, correction)) = corrections.iter().find(|(n, _)| *n == self.name)
                    && self.take_round(sender, round)
                {
                    self.adjust(*correction);
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_between_a_leader_and_a_follower() {
        let start = Instant::now();
        let collect = Duration::from_millis(500);
        let mut leader = ClockSync::new("node-3", 0, collect);
        let mut follower = ClockSync::new("node-1", 400, collect);
        let out = leader.start_round(start, 10_000);
        let [ClockMessage::Poll { round }] = out[..] else {
            panic!("{out:?}");
        };
        // The follower, 400 ms ahead, answers at once.
        let reading = follower
            .on_message(
                "node-3",
                ClockMessage::Poll { round },
                Some("node-3"),
                10_000,
            )
            .unwrap();
        assert!(
            leader
                .on_message("node-1", reading, Some("node-3"), 10_000)
                .is_none()
        );
        assert!(leader.tick(start).is_none(), "still collecting");
        let adjust = leader.tick(start + collect).unwrap();
        assert_eq!(leader.offset_ms(), 200, "the leader moves to the average");
        // Only the leader it follows sets the follower's clock.
        follower.on_message("node-2", adjust.clone(), Some("node-3"), 10_000);
        assert_eq!(follower.offset_ms(), 0);
        follower.on_message("node-3", adjust.clone(), Some("node-3"), 10_000);
        assert_eq!(follower.offset_ms(), -200);
        assert_eq!(follower.now_ms(10_000), leader.now_ms(10_000));
        // The same Adjust again (recorded on the proxy and replayed): not applied twice.
        follower.on_message("node-3", adjust.clone(), Some("node-3"), 10_000);
        assert_eq!(follower.offset_ms(), -200);
        // Nor an older round's, once a newer one was taken.
        let ClockMessage::Adjust { round, corrections } = adjust else {
            panic!("an adjust")
        };
        let older = ClockMessage::Adjust {
            round: round - 1,
            corrections: corrections.clone(),
        };
        follower.on_message("node-3", older, Some("node-3"), 10_000);
        assert_eq!(follower.offset_ms(), -200);
        // A newer round of the same leader is taken.
        let newer = ClockMessage::Adjust {
            round: round + 1,
            corrections,
        };
        follower.on_message("node-3", newer, Some("node-3"), 10_000);
        assert_eq!(follower.offset_ms(), -400);
    }

    #[test]
    fn corrections_bring_every_clock_to_the_average() {
        let mut round = Berkeley::start(1, "node-3", 10_000);
        // node-1 is 100 ms ahead, node-2 200 ms behind; answers arrive after 20 ms.
        round.reading(1, "node-1", 10_010 + 100, 10_020);
        round.reading(1, "node-2", 10_010 - 200, 10_020);
        let corrections: BTreeMap<_, _> = round.finish().into_iter().collect();
        // Offsets 0, +100, -200: average -33.
        assert_eq!(corrections["node-3"], -33);
        assert_eq!(corrections["node-1"], -133);
        assert_eq!(corrections["node-2"], 167);
    }

    #[test]
    fn an_outlier_is_corrected_but_does_not_move_the_average() {
        let mut round = Berkeley::start(7, "node-1", 0);
        round.reading(7, "node-2", 10, 10);
        round.reading(7, "node-3", 3_600_000, 10);
        let corrections: BTreeMap<_, _> = round.finish().into_iter().collect();
        // Offsets 0, +5 (10 ms read half a 10 ms round trip early) and ~+1 h: the
        // average of the first two is 2.
        assert_eq!(corrections["node-1"], 2);
        assert_eq!(corrections["node-2"], -3);
        assert_eq!(corrections["node-3"], 2 - 3_599_995);
    }

    #[test]
    fn stale_and_slow_readings_are_ignored() {
        let mut round = Berkeley::start(2, "node-1", 0);
        round.reading(1, "node-2", 50_000, 10);
        round.reading(2, "node-3", 50_000, MAX_READING_RTT_MS + 1);
        let corrections = round.finish();
        assert_eq!(corrections, vec![("node-1".to_owned(), 0)]);
    }

    #[test]
    fn messages_round_trip_and_are_validated() {
        let message = ClockMessage::Adjust {
            round: 3,
            corrections: vec![("node-1".to_owned(), -5)],
        };
        let frame = proto::encode(&message).unwrap();
        assert_eq!(proto::decode::<ClockMessage>(&frame).unwrap(), message);
        let bad = ClockMessage::Adjust {
            round: 3,
            corrections: vec![("no such node".to_owned(), 1)],
        };
        assert!(bad.validate().is_err());
    }
}
