//! What a `bots load` run reports: the table people read and the JSON scripts read
//! (`--json`; `bench/compare.sh` reads it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// The result of a run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Clients that ran.
    pub clients: usize,
    /// The mix.
    pub mix: String,
    /// Distinct keys.
    pub keys: u64,
    /// Their prefix.
    pub key_prefix: String,
    /// Operations answered.
    pub ops: u64,
    /// Answered operations by kind.
    pub by_op: BTreeMap<&'static str, u64>,
    /// From the first operation to the last answer.
    pub elapsed: Duration,
    /// Latency of answered operations, microseconds.
    pub latency_us: Histogram<u64>,
    /// Failed operations by kind (`timeout`, `unavailable`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Failed operations that may have taken effect.
    pub unknown: u64,
    /// Gets of an absent key (answered; not errors).
    pub not_found: u64,
    /// CASes that found another value (answered; not errors).
    pub cas_mismatch: u64,
    /// Answered operations that needed more than one attempt.
    pub retried: u64,
    /// Attempts sent again at once because their broker went down (dead or paused).
    pub failovers: u64,
    /// `overloaded` answers: a node's table of waiting requests was full (the attempt took
    /// no effect and was retried; counted apart from errors and timeouts).
    pub overloaded: u64,
    /// The history file and how many operations it holds.
    pub history: Option<(PathBuf, u64)>,
}

impl LoadReport {
    /// Failed operations.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Answered operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.ops as f64 / seconds
        } else {
            0.0
        }
    }

    /// A latency quantile in milliseconds (0 without samples).
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// The largest latency in milliseconds.
    pub fn max_ms(&self) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.max() as f64 / 1000.0
    }

    /// The report for people.
    pub fn table(&self) -> String {
        let mut rows = vec![
            vec!["clients".to_owned(), self.clients.to_string()],
            vec!["mix".to_owned(), self.mix.clone()],
            vec![
                "keys".to_owned(),
                format!(
                    "{} ({}0 .. {}{})",
                    self.keys,
                    self.key_prefix,
                    self.key_prefix,
                    self.keys.saturating_sub(1)
                ),
            ],
            vec![
                "duration".to_owned(),
                format!("{:.1} s", self.elapsed.as_secs_f64()),
            ],
            vec!["ops".to_owned(), self.ops.to_string()],
            vec!["ops/s".to_owned(), format!("{:.0}", self.ops_per_sec())],
        ];
        for (label, quantile) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
            rows.push(vec![
                format!("{label} latency"),
                format!("{:.2} ms", self.quantile_ms(quantile)),
            ]);
        }
        rows.push(vec![
            "max latency".into(),
            format!("{:.2} ms", self.max_ms()),
        ]);
        rows.push(vec!["retried".into(), self.retried.to_string()]);
        rows.push(vec!["broker failovers".into(), self.failovers.to_string()]);
        rows.push(vec![
            "overloaded answers (retried)".into(),
            self.overloaded.to_string(),
        ]);
        rows.push(vec!["get not found".into(), self.not_found.to_string()]);
        rows.push(vec!["cas mismatch".into(), self.cas_mismatch.to_string()]);
        rows.push(vec!["errors".into(), self.error_count().to_string()]);
        for (kind, count) in &self.errors {
            rows.push(vec![format!("  {kind}"), count.to_string()]);
        }
        rows.push(vec!["unknown outcome".into(), self.unknown.to_string()]);
        if let Some((path, count)) = &self.history {
            rows.push(vec![
                "history".into(),
                format!("{count} operations in {}", path.display()),
            ]);
        }
        client::table::render(&["METRIC", "VALUE"], &rows)
    }

    /// The report as JSON: `ops`, `ops_per_sec`, `p50_ms`, `p99_ms`, `p999_ms`, `errors`,
    /// `unknown`, and more.
    pub fn json(&self) -> Value {
        json!({
            "ops": self.ops,
            "ops_per_sec": self.ops_per_sec(),
            "p50_ms": self.quantile_ms(0.5),
            "p90_ms": self.quantile_ms(0.9),
            "p99_ms": self.quantile_ms(0.99),
            "p999_ms": self.quantile_ms(0.999),
            "max_ms": self.max_ms(),
            "errors": self.error_count(),
            "unknown": self.unknown,
            "errors_by_kind": self.errors,
            "not_found": self.not_found,
            "cas_mismatch": self.cas_mismatch,
            "retried": self.retried,
            "failovers": self.failovers,
            "overloaded": self.overloaded,
            "by_op": self.by_op,
            "clients": self.clients,
            "mix": self.mix,
            "keys": self.keys,
            "key_prefix": self.key_prefix,
            "duration_s": self.elapsed.as_secs_f64(),
            "history": self.history.as_ref().map(|(path, count)| json!({
                "path": path.display().to_string(),
                "operations": count,
            })),
        })
    }
}
