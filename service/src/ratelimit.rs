//! A warning that is logged at most once per interval, however often it happens: a peer
//! sending garbage at line rate must not turn the log into the bottleneck (or fill the
//! disk). What is not logged is counted and reported with the next line.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// Logs at most once per `interval`, and says how many were left out in between.
#[derive(Debug)]
pub struct RateLimitedLog {
    interval: Duration,
    next_log: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    /// A log that writes at most one line per `interval`.
    pub fn new(interval: Duration) -> RateLimitedLog {
        RateLimitedLog {
            interval,
            next_log: None,
            suppressed: 0,
        }
    }

    /// Logs `reason` about `socket` now if the interval has passed since the last line, or counts it.
    pub fn warn(&mut self, now: Instant, socket: &'static str, reason: &dyn Display) {
        if self.next_log.is_some_and(|next| now < next) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            socket,
            %reason,
            not_logged_since_last = self.suppressed,
            "malformed message"
        );
        self.suppressed = 0;
        self.next_log = Some(now + self.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_it_does_not_log() {
        let t0 = Instant::now();
        let mut log = RateLimitedLog::new(Duration::from_secs(5));
        log.warn(t0, "frontend", &"first");
        assert_eq!(log.suppressed, 0);
        for _ in 0..1000 {
            log.warn(t0 + Duration::from_secs(1), "frontend", &"again");
        }
        assert_eq!(log.suppressed, 1000);
        log.warn(t0 + Duration::from_secs(5), "frontend", &"later");
        assert_eq!(log.suppressed, 0, "logged, with the count");
    }
}
