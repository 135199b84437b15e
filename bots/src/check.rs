//! `bots check FILE`: is a recorded history linearizable?
//!
//! Exit 0 when it is (with a summary: operations, keys, outcomes, time), 1 when it is not
//! (naming the key, the checker's explanation and the operations where the search got
//! stuck), 2 when the file cannot be read or parsed or the search was inconclusive.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use lincheck::{CheckOptions, Operation, Outcome, Verdict};
use serde_json::json;

/// Exit status: linearizable.
pub const EXIT_LINEARIZABLE: u8 = 0;
/// Exit status: not linearizable.
pub const EXIT_NOT_LINEARIZABLE: u8 = 1;
/// Exit status: unreadable history or inconclusive search.
pub const EXIT_INCONCLUSIVE: u8 = 2;

/// Counts of a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Operations.
    pub operations: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Outcome `ok`.
    pub ok: usize,
    /// Outcome `fail`.
    pub fail: usize,
    /// Outcome `unknown`.
    pub unknown: usize,
}

impl Summary {
    /// Counts `operations`.
    pub fn of(operations: &[Operation]) -> Summary {
        let keys: BTreeSet<&str> = operations.iter().map(|op| op.key.as_str()).collect();
        let count = |outcome| operations.iter().filter(|op| op.outcome == outcome).count();
        Summary {
            operations: operations.len(),
            keys: keys.len(),
            ok: count(Outcome::Ok),
            fail: count(Outcome::Fail),
            unknown: count(Outcome::Unknown),
        }
    }
}

/// Checks the history at `path` and reports to `out` (text, or one JSON document);
/// returns the exit status.
pub fn run(path: &Path, json_output: bool, out: &mut dyn Write) -> std::io::Result<u8> {
    let started = Instant::now();
    let operations = match File::open(path)
        .map_err(lincheck::ParseError::from)
        .and_then(|file| lincheck::parse_history(BufReader::new(file)))
    {
        Ok(operations) => operations,
        Err(error) => {
            let message = format!("{}: {error}", path.display());
            if json_output {
                writeln!(out, "{}", json!({"verdict": "error", "message": message}))?;
            } else {
                writeln!(out, "ERROR: cannot read the history {message}")?;
            }
            return Ok(EXIT_INCONCLUSIVE);
        }
    };
    let summary = Summary::of(&operations);
    let verdict = lincheck::check(&operations, &CheckOptions::default());
    report(&summary, &verdict, started.elapsed(), json_output, out)
}

fn report(
    summary: &Summary,
    verdict: &Verdict,
    elapsed: Duration,
    json_output: bool,
    out: &mut dyn Write,
) -> std::io::Result<u8> {
    let counts = format!(
        "{} operations ({} ok, {} fail, {} unknown) on {} keys, checked in {:.2} s",
        summary.operations,
        summary.ok,
        summary.fail,
        summary.unknown,
        summary.keys,
        elapsed.as_secs_f64()
    );
    let mut doc = json!({
        "operations": summary.operations,
        "keys": summary.keys,
        "ok": summary.ok,
        "fail": summary.fail,
        "unknown": summary.unknown,
        "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
    });
    let exit = match verdict {
        Verdict::Linearizable => {
            doc["verdict"] = json!("linearizable");
            if !json_output {
                writeln!(out, "LINEARIZABLE: {counts}")?;
            }
            EXIT_LINEARIZABLE
        }
        Verdict::NotLinearizable(violation) => {
            doc["verdict"] = json!("not_linearizable");
            doc["key"] = json!(violation.key);
            doc["explanation"] = json!(violation.explanation);
            doc["involved"] = json!(
                violation
                    .operations
                    .iter()
                    .map(|op| serde_json::to_value(op).unwrap_or_default())
                    .collect::<Vec<_>>()
            );
            if !json_output {
                writeln!(out, "NOT LINEARIZABLE: key {:?}", violation.key)?;
                writeln!(out, "{}", violation.explanation)?;
                writeln!(out, "operations involved:")?;
                for op in &violation.operations {
                    let line = serde_json::to_string(op).unwrap_or_default();
                    writeln!(out, "  {line}")?;
                }
                writeln!(out, "({counts})")?;
            }
            EXIT_NOT_LINEARIZABLE
        }
        Verdict::Inconclusive { key, reason } => {
            doc["verdict"] = json!("inconclusive");
            doc["key"] = json!(key);
            doc["reason"] = json!(reason);
            if !json_output {
                writeln!(out, "INCONCLUSIVE: key {key:?}: {reason} ({counts})")?;
            }
            EXIT_INCONCLUSIVE
        }
    };
    if json_output {
        writeln!(out, "{doc}")?;
    }
    Ok(exit)
}
