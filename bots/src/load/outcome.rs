//! What one operation's end means: the counters it adds to, the value it leaves in the
//! CAS cache, and its line in the history.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use client::CallError;
use lincheck::{OpKind, Operation, Outcome, Output};
use proto::{ErrorCode, Op, Reply};

use super::{CAS_CACHE_BYTES, ClientStats, MAX_LATENCY_US};

/// Last value seen per key, for CAS expectations; bounded by [`CAS_CACHE_BYTES`].
#[derive(Debug)]
pub(super) struct CasCache {
    values: Mutex<HashMap<u64, String>>,
    capacity: usize,
}

impl CasCache {
    pub(super) fn new(value_size: usize) -> CasCache {
        CasCache {
            values: Mutex::new(HashMap::new()),
            capacity: (CAS_CACHE_BYTES / value_size.max(1)).max(1),
        }
    }

    pub(super) fn get(&self, key: u64) -> Option<String> {
        self.values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned()
    }

    pub(super) fn set(&self, key: u64, value: Option<String>) {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        match value {
            Some(value) => {
                if values.len() >= self.capacity && !values.contains_key(&key) {
                    // Any victim will do: the cache only makes CASes likelier to match.
                    if let Some(victim) = values.keys().next().copied() {
                        values.remove(&victim);
                    }
                }
                values.insert(key, value);
            }
            None => {
                values.remove(&key);
            }
        }
    }
}

/// How an operation ended, for the counters and the history.
pub(super) enum Ended {
    /// Answered, with the history output (`None` for put/delete/publish).
    Answered(Option<Output>),
    /// Failed.
    Failed(CallError),
}

/// Sorts an answer into answered / failed, counting what is neither an op nor an error.
pub(super) fn classify(
    op: &Op,
    result: Result<client::Answer, CallError>,
    stats: &mut ClientStats,
    latency: Duration,
) -> Ended {
    let answered = |stats: &mut ClientStats, attempts: u32| {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        stats
            .latency_us
            .saturating_record(us.clamp(1, MAX_LATENCY_US));
        if attempts > 1 {
            stats.retried += 1;
        }
    };
    match result {
        Ok(answer) => {
            answered(stats, answer.attempts);
            let output = match (op, answer.reply) {
                (Op::Get { .. }, Reply::Value(value)) => Some(Output::Value(Some(value))),
                (Op::Cas { .. }, _) => Some(Output::Bool(true)),
                _ => None,
            };
            Ended::Answered(output)
        }
        Err(CallError::Rejected {
            error, attempts, ..
        }) if error.code == ErrorCode::NotFound && matches!(op, Op::Get { .. }) => {
            answered(stats, attempts);
            stats.not_found += 1;
            Ended::Answered(Some(Output::Value(None)))
        }
        Err(CallError::Rejected {
            error, attempts, ..
        }) if error.code == ErrorCode::CasMismatch && matches!(op, Op::Cas { .. }) => {
            answered(stats, attempts);
            stats.cas_mismatch += 1;
            Ended::Answered(Some(Output::Bool(false)))
        }
        Err(error) => Ended::Failed(error),
    }
}

/// Remembers the value a key was seen holding, for later CAS expectations.
pub(super) fn update_cache(cache: &CasCache, key: u64, op: &Op, ended: &Ended) {
    let Ended::Answered(output) = ended else {
        return;
    };
    match (op, output) {
        (Op::Put { value, .. }, _) => cache.set(key, Some(value.clone())),
        (Op::Cas { new, .. }, Some(Output::Bool(true))) => cache.set(key, Some(new.clone())),
        // Another value is there; absence is as good a guess as any.
        (Op::Cas { .. }, _) | (Op::Delete { .. }, _) => cache.set(key, None),
        (Op::Get { .. }, Some(Output::Value(value))) => cache.set(key, value.clone()),
        _ => {}
    }
}

/// The history line of a key operation (`None` for other operations).
pub(super) fn history_operation(
    client: usize,
    op: &Op,
    ended: &Ended,
    call_ns: u64,
    return_ns: u64,
) -> Option<Operation> {
    let (kind, key, value, expected) = match op {
        Op::Put { key, value } => (OpKind::Put, key, Some(value.clone()), None),
        Op::Get { key } => (OpKind::Get, key, None, None),
        Op::Delete { key } => (OpKind::Delete, key, None, None),
        Op::Cas { key, expected, new } => (OpKind::Cas, key, Some(new.clone()), expected.clone()),
        _ => return None,
    };
    let (outcome, output, return_) = match ended {
        Ended::Answered(output) => (Outcome::Ok, output.clone(), Some(return_ns)),
        Ended::Failed(error) if error.certainly_not_applied() => {
            (Outcome::Fail, None, Some(return_ns))
        }
        // May have taken effect at any time after the call: no return.
        Ended::Failed(_) => (Outcome::Unknown, None, None),
    };
    Some(Operation {
        client: client as u64,
        op: kind,
        key: key.clone(),
        value,
        expected,
        output,
        outcome,
        call: call_ns,
        return_,
    })
}
