//! The operation mix (`put=40,get=40,cas=10,publish=10`) and rates (`2/s`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The default `--mix`.
pub const DEFAULT_MIX: &str = "put=40,get=40,cas=10,publish=10";
/// Largest weight of one operation in a mix (keeps the sum far from overflow).
pub const MAX_WEIGHT: u32 = 1_000_000;
/// Fastest accepted `--rate`, per second.
pub const MAX_RATE_PER_SECOND: f64 = 1_000_000.0;

/// The operations a load client issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LoadOp {
    /// Write a unique value.
    Put,
    /// Read.
    Get,
    /// Compare-and-set from the last value seen to a unique value.
    Cas,
    /// Delete.
    Delete,
    /// Post on the load channel (not a key operation: not in the history).
    Publish,
}

impl LoadOp {
    /// The name used in `--mix` and reports.
    pub fn name(self) -> &'static str {
        match self {
            LoadOp::Put => "put",
            LoadOp::Get => "get",
            LoadOp::Cas => "cas",
            LoadOp::Delete => "delete",
            LoadOp::Publish => "publish",
        }
    }

    fn parse(name: &str) -> Option<LoadOp> {
        Some(match name {
            "put" => LoadOp::Put,
            "get" => LoadOp::Get,
            "cas" => LoadOp::Cas,
            "delete" | "del" => LoadOp::Delete,
            "publish" => LoadOp::Publish,
            _ => return None,
        })
    }
}

/// Weights of the operations; an operation is drawn with probability weight / total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(LoadOp, u32)>,
    total: u32,
}

/// A `--mix` or `--rate` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

impl FromStr for Mix {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Mix, ParseError> {
        let mut weights: Vec<(LoadOp, u32)> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| ParseError(format!("{part:?} is not op=weight")))?;
            let op = LoadOp::parse(name.trim()).ok_or_else(|| {
                ParseError(format!(
                    "unknown operation {name:?} (known: put, get, cas, delete, publish)"
                ))
            })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| ParseError(format!("weight of {name} is not a whole number")))?;
            if weight > MAX_WEIGHT {
                return Err(ParseError(format!("weight of {name} is over {MAX_WEIGHT}")));
            }
            if weights.iter().any(|(known, _)| *known == op) {
                return Err(ParseError(format!("{name} is given twice")));
            }
            if weight > 0 {
                weights.push((op, weight));
            }
        }
        let total = weights.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return Err(ParseError(
                "the mix has no operation with a weight above 0".into(),
            ));
        }
        Ok(Mix { weights, total })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(op, w)| format!("{}={w}", op.name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Mix {
    /// Sum of the weights: draw a number in `0..total()` for [`Mix::pick`].
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The operation of a draw in `0..total()`.
    ///
    /// # Panics
    /// If `draw >= total()`.
    pub fn pick(&self, mut draw: u32) -> LoadOp {
        assert!(draw < self.total, "draw {draw} outside 0..{}", self.total);
        for (op, weight) in &self.weights {
            if draw < *weight {
                return *op;
            }
            draw -= weight;
        }
        unreachable!("the weights sum to the total")
    }

    /// Whether the mix can draw `op`.
    pub fn has(&self, op: LoadOp) -> bool {
        self.weights.iter().any(|(known, _)| *known == op)
    }
}

/// A rate of events: `2/s`, `120/m`, `0.5/s`, or a bare number per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_second: f64,
}

impl FromStr for Rate {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Rate, ParseError> {
        let text = text.trim();
        let (number, unit_seconds) = match text.split_once('/') {
            None => (text, 1.0),
            Some((number, unit)) => {
                let seconds = match unit.trim() {
                    "s" | "sec" | "second" => 1.0,
                    "m" | "min" | "minute" => 60.0,
                    "h" | "hour" => 3600.0,
                    other => return Err(ParseError(format!("unknown rate unit {other:?}"))),
                };
                (number, seconds)
            }
        };
        let count: f64 = number
            .trim()
            .parse()
            .map_err(|_| ParseError(format!("{text:?} is not a rate like 2/s")))?;
        let per_second = count / unit_seconds;
        if !(per_second.is_finite() && per_second > 0.0 && per_second <= MAX_RATE_PER_SECOND) {
            return Err(ParseError(format!(
                "rate must be above 0 and at most {MAX_RATE_PER_SECOND}/s"
            )));
        }
        Ok(Rate { per_second })
    }
}

impl Rate {
    /// Events per second.
    pub fn per_second(self) -> f64 {
        self.per_second
    }

    /// Time between events when the rate is shared by `sharers` equal parties.
    pub fn interval(self, sharers: usize) -> Duration {
        Duration::from_secs_f64(sharers.max(1) as f64 / self.per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_pick_by_weight() {
        let mix: Mix = DEFAULT_MIX.parse().unwrap();
        assert_eq!(mix.total(), 100);
        assert_eq!(mix.to_string(), DEFAULT_MIX);
        let mut counts = std::collections::BTreeMap::new();
        for draw in 0..mix.total() {
            *counts.entry(mix.pick(draw)).or_insert(0) += 1;
        }
        assert_eq!(counts[&LoadOp::Put], 40);
        assert_eq!(counts[&LoadOp::Get], 40);
        assert_eq!(counts[&LoadOp::Cas], 10);
        assert_eq!(counts[&LoadOp::Publish], 10);
        assert!(!mix.has(LoadOp::Delete));
        let mix: Mix = "get=0, del=3".parse().unwrap();
        assert_eq!(mix.pick(2), LoadOp::Delete);
        assert!(!mix.has(LoadOp::Get));
    }

    #[test]
    fn bad_mixes_are_refused() {
        for bad in [
            "",
            "put",
            "put=x",
            "fly=3",
            "put=1,put=2",
            "get=0",
            "put=2000000",
        ] {
            assert!(bad.parse::<Mix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rates() {
        let rate: Rate = "2/s".parse().unwrap();
        assert_eq!(rate.per_second(), 2.0);
        assert_eq!(rate.interval(1), Duration::from_millis(500));
        assert_eq!(rate.interval(4), Duration::from_secs(2));
        assert_eq!("120/m".parse::<Rate>().unwrap().per_second(), 2.0);
        assert_eq!("10".parse::<Rate>().unwrap().per_second(), 10.0);
        for bad in ["0/s", "-1/s", "x/s", "2/fortnight", "inf"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }
}
