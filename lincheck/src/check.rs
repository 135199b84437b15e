//! The per-key linearizability search (Wing & Gong with Lowe's memoisation, as Porcupine).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::history::{OpKind, Operation, Outcome, Output, ParseError, parse_history};

/// Default [`CheckOptions::max_steps_per_key`]: tens of seconds of search at worst, far
/// more than any correct history of the bots or the simulator needs.
pub const DEFAULT_MAX_STEPS_PER_KEY: u64 = 50_000_000;

/// Memory the memo of one key's search may take (estimated) before the verdict is
/// [`Verdict::Inconclusive`]: the step budget alone would let a hard history fill the
/// machine's memory first.
pub const MAX_MEMO_BYTES_PER_KEY: usize = 256 * 1024 * 1024;

/// Histories shorter than this are checked on the calling thread.
const PARALLEL_MIN_OPERATIONS: usize = 2_000;

/// How hard to search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Search steps allowed per key before the verdict is [`Verdict::Inconclusive`].
    pub max_steps_per_key: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_steps_per_key: DEFAULT_MAX_STEPS_PER_KEY,
        }
    }
}

/// The answer of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's operations can be ordered so that each takes effect between its call
    /// and its return and every output is explained.
    Linearizable,
    /// No such order exists for some key (the first such key in key order).
    NotLinearizable(Violation),
    /// No key is proven wrong, but one could not be decided: its search went over budget,
    /// or one of its operations is not well formed.
    Inconclusive {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Why a key's history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: String,
    /// The operations at the point where the search got stuck, at the deepest point it
    /// reached: the last operation that wrote the register (if any), then the pending
    /// operations none of which could take effect next, the blocking one last.
    pub operations: Vec<Operation>,
    /// A sentence for people.
    pub explanation: String,
}

/// Checks a whole history: keys are independent registers, checked in parallel.
/// Operations with outcome [`Outcome::Fail`] are ignored.
pub fn check(ops: &[Operation], options: &CheckOptions) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let keys: Vec<(&str, Vec<&Operation>)> = by_key.into_iter().collect();
    let results: Mutex<Vec<Option<KeyResult>>> = Mutex::new(vec![None; keys.len()]);
    let next = AtomicUsize::new(0);
    // Threads only pay off on big histories; the simulator checks many small ones.
    let workers = if ops.len() < PARALLEL_MIN_OPERATIONS {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(keys.len())
            .max(1)
    };
    let work = || {
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some((key, key_ops)) = keys.get(index) else {
                return;
            };
            let result = check_key(key, key_ops, options);
            // A poisoned lock means another worker panicked; the scope re-raises that
            // panic, so this result no longer matters.
            if let Ok(mut results) = results.lock() {
                results[index] = Some(result);
            }
        }
    };
    if workers == 1 {
        work();
    } else {
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(work);
            }
        });
    }
    let results = match results.into_inner() {
        Ok(results) => results,
        Err(poisoned) => poisoned.into_inner(),
    };
    let mut inconclusive = None;
    for (result, (key, _)) in results.into_iter().zip(&keys) {
        match result {
            Some(KeyResult::Linearizable) => {}
            Some(KeyResult::Violation(violation)) => return Verdict::NotLinearizable(violation),
            Some(KeyResult::Inconclusive(reason)) => {
                inconclusive.get_or_insert_with(|| Verdict::Inconclusive {
                    key: (*key).to_owned(),
                    reason,
                });
            }
            None => unreachable!("every key is checked by a worker"),
        }
    }
    inconclusive.unwrap_or(Verdict::Linearizable)
}

/// Reads a history file ([`parse_history`]) and checks it with the default options.
pub fn check_file(path: impl AsRef<Path>) -> Result<Verdict, ParseError> {
    let file = std::fs::File::open(path)?;
    let ops = parse_history(std::io::BufReader::new(file))?;
    Ok(check(&ops, &CheckOptions::default()))
}

#[derive(Clone, Debug)]
enum KeyResult {
    Linearizable,
    Violation(Violation),
    Inconclusive(String),
}

/// Register values are interned per key: 0 is "absent", other numbers stand for strings.
type Value = u32;
const ABSENT: Value = 0;

/// One operation as the model sees it.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Put (ok or unknown).
    Put(Value),
    /// Delete (ok or unknown).
    Delete,
    /// Get that observed a value.
    Get(Value),
    /// Cas that succeeded, or an unknown cas taking effect (an unknown cas that found
    /// another value changed nothing: the same as never linearizing it).
    CasTakes { expected: Value, new: Value },
    /// Cas that reported failure: it observed another value than `expected`.
    CasRefused { expected: Value },
}

impl Step {
    /// The register after this step from `state`, or `None` if the step cannot happen
    /// there.
    fn apply(self, state: Value) -> Option<Value> {
        match self {
            Step::Put(value) => Some(value),
            Step::Delete => Some(ABSENT),
            Step::Get(seen) => (state == seen).then_some(state),
            Step::CasTakes { expected, new } => (state == expected).then_some(new),
            Step::CasRefused { expected } => (state != expected).then_some(state),
        }
    }

    fn writes(self) -> bool {
        matches!(self, Step::Put(_) | Step::Delete | Step::CasTakes { .. })
    }
}

/// One call or return event in the doubly linked list of the search.
#[derive(Clone, Copy, Debug)]
struct Event {
    /// Index into the key's operations.
    op: usize,
    /// For a call: the index of its return event.
    matching: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// The sentinel head of the event list; events are stored from index 1 on.
const HEAD: usize = 0;
/// "No event" in `next` links.
const NONE: usize = usize::MAX;

/// The key's operations prepared for the search.
struct Prepared<'a> {
    ops: Vec<&'a Operation>,
    steps: Vec<Step>,
    /// Whether the operation may stay unlinearized (outcome unknown).
    optional: Vec<bool>,
    /// Interned values, for explanations.
    values: Vec<Option<&'a str>>,
}

fn prepare<'a>(key_ops: &[&'a Operation]) -> Result<Prepared<'a>, String> {
    let mut interned: HashMap<&'a str, Value> = HashMap::new();
    let mut values: Vec<Option<&'a str>> = vec![None];
    let mut intern = |value: Option<&'a str>| -> Value {
        match value {
            None => ABSENT,
            Some(text) => *interned.entry(text).or_insert_with(|| {
                values.push(Some(text));
                Value::try_from(values.len() - 1).unwrap_or(Value::MAX)
            }),
        }
    };
    let mut prepared = Prepared {
        ops: Vec::new(),
        steps: Vec::new(),
        optional: Vec::new(),
        values: Vec::new(),
    };
    for op in key_ops {
        if op.outcome == Outcome::Fail {
            continue;
        }
        op.validate().map_err(|reason| {
            format!(
                "client {}'s {} called at {}: {reason}",
                op.client,
                op.op_name(),
                op.call
            )
        })?;
        let unknown = op.outcome == Outcome::Unknown;
        let value = op.value.as_deref();
        let step = match (op.op, unknown) {
            // Validated: put and cas have a value.
            (OpKind::Put, _) => Step::Put(intern(value)),
            (OpKind::Delete, _) => Step::Delete,
            // An unknown get observed nothing anyone knows of.
            (OpKind::Get, true) => continue,
            (OpKind::Get, false) => match &op.output {
                Some(Output::Value(seen)) => Step::Get(intern(seen.as_deref())),
                _ => unreachable!("validated: an ok get has a value output"),
            },
            (OpKind::Cas, _) if unknown || op.output == Some(Output::Bool(true)) => {
                Step::CasTakes {
                    expected: intern(op.expected.as_deref()),
                    new: intern(value),
                }
            }
            (OpKind::Cas, _) => Step::CasRefused {
                expected: intern(op.expected.as_deref()),
            },
        };
        prepared.ops.push(op);
        prepared.steps.push(step);
        prepared.optional.push(unknown);
    }
    if values.len() > Value::MAX as usize {
        return Err("more distinct values than the checker can number".to_owned());
    }
    prepared.values = values;
    Ok(prepared)
}

/// Builds the event list: calls and returns in time order, a call before a return at the
/// same instant (the two operations count as concurrent), unknown returns at the end.
fn build_events(prepared: &Prepared<'_>) -> Vec<Event> {
    // (time, 0 = call / 1 = return, op)
    let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(prepared.ops.len() * 2);
    for (index, op) in prepared.ops.iter().enumerate() {
        order.push((op.call, 0, index));
        let return_ = if prepared.optional[index] {
            u64::MAX
        } else {
            op.return_.unwrap_or(u64::MAX)
        };
        order.push((return_, 1, index));
    }
    order.sort_unstable();
    let mut events = Vec::with_capacity(order.len() + 1);
    events.push(Event {
        op: usize::MAX,
        matching: NONE,
        is_call: false,
        prev: NONE,
        next: if order.is_empty() { NONE } else { 1 },
    });
    let mut return_of = vec![NONE; prepared.ops.len()];
    for (position, &(_, kind, op)) in order.iter().enumerate() {
        let index = position + 1;
        if kind == 1 {
            return_of[op] = index;
        }
        events.push(Event {
            op,
            matching: NONE,
            is_call: kind == 0,
            prev: index - 1,
            next: if index == order.len() {
                NONE
            } else {
                index + 1
            },
        });
    }
    for event in events.iter_mut().skip(1) {
        if event.is_call {
            event.matching = return_of[event.op];
        }
    }
    events
}

/// A set of linearized operations.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }
    fn set(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }
    fn clear(&mut self, index: usize) {
        self.0[index / 64] &= !(1 << (index % 64));
    }
}

/// Where the search got furthest before being stuck, for the report.
struct Stuck {
    depth: usize,
    state: Value,
    last_writer: Option<usize>,
    pending: Vec<usize>,
    blocking: usize,
}

fn check_key(key: &str, key_ops: &[&Operation], options: &CheckOptions) -> KeyResult {
    let prepared = match prepare(key_ops) {
        Ok(prepared) => prepared,
        Err(reason) => return KeyResult::Inconclusive(reason),
    };
    let mut events = build_events(&prepared);

    let lift = |events: &mut Vec<Event>, call: usize| {
        let ret = events[call].matching;
        let (prev, next) = (events[call].prev, events[call].next);
        events[prev].next = next;
        if next != NONE {
            events[next].prev = prev;
        }
        let (prev, next) = (events[ret].prev, events[ret].next);
        events[prev].next = next;
        if next != NONE {
            events[next].prev = prev;
        }
    };
    // Undo of `lift`, in reverse order: the return event first, then the call.
    let unlift = |events: &mut Vec<Event>, call: usize| {
        let ret = events[call].matching;
        let (prev, next) = (events[ret].prev, events[ret].next);
        events[prev].next = ret;
        if next != NONE {
            events[next].prev = ret;
        }
        let (prev, next) = (events[call].prev, events[call].next);
        events[prev].next = call;
        if next != NONE {
            events[next].prev = call;
        }
    };

    let mut linearized = Bits::new(prepared.ops.len());
    // A memo entry: the bit words, the value, and the hash table's own overhead.
    let memo_entry_bytes = linearized.0.len() * 8 + 64;
    let mut seen: HashSet<(Bits, Value)> = HashSet::new();
    // (call event, register before it) of every linearized operation, in order.
    let mut stack: Vec<(usize, Value)> = Vec::new();
    let mut state = ABSENT;
    let mut stuck: Option<Stuck> = None;
    let mut cursor = events[HEAD].next;
    let mut steps: u64 = 0;

    while cursor != NONE {
        steps += 1;
        if steps > options.max_steps_per_key {
            return KeyResult::Inconclusive(format!(
                "search over its budget of {} steps ({} operations, {} configurations seen)",
                options.max_steps_per_key,
                prepared.ops.len(),
                seen.len()
            ));
        }
        if seen.len().saturating_mul(memo_entry_bytes) > MAX_MEMO_BYTES_PER_KEY {
            return KeyResult::Inconclusive(format!(
                "search memo over {MAX_MEMO_BYTES_PER_KEY} bytes ({} operations, {} configurations seen)",
                prepared.ops.len(),
                seen.len()
            ));
        }
        let event = events[cursor];
        if event.is_call {
            if let Some(next_state) = prepared.steps[event.op].apply(state) {
                let mut next_linearized = linearized.clone();
                next_linearized.set(event.op);
                if seen.insert((next_linearized, next_state)) {
                    stack.push((cursor, state));
                    linearized.set(event.op);
                    state = next_state;
                    lift(&mut events, cursor);
                    cursor = events[HEAD].next;
                    continue;
                }
            }
            cursor = event.next;
        } else {
            if prepared.optional[event.op] {
                // The first return left is an infinite one: every operation that had to
                // take effect did; the unknown ones left over never took effect.
                return KeyResult::Linearizable;
            }
            if stuck.as_ref().is_none_or(|s| stack.len() > s.depth) {
                stuck = Some(Stuck {
                    depth: stack.len(),
                    state,
                    last_writer: stack
                        .iter()
                        .rev()
                        .map(|&(call, _)| events[call].op)
                        .find(|&op| prepared.steps[op].writes()),
                    pending: pending_before(&events, cursor),
                    blocking: event.op,
                });
            }
            let Some((call, previous)) = stack.pop() else {
                break;
            };
            let op = events[call].op;
            linearized.clear(op);
            state = previous;
            unlift(&mut events, call);
            cursor = events[call].next;
        }
    }
    if events[HEAD].next == NONE {
        // Every operation was linearized.
        return KeyResult::Linearizable;
    }
    match stuck {
        Some(stuck) => KeyResult::Violation(explain(key, &prepared, &stuck)),
        None => unreachable!("the search only gives up at a return event, which records it"),
    }
}

/// The operations whose call events come before the return event `at` in the list.
fn pending_before(events: &[Event], at: usize) -> Vec<usize> {
    let mut pending = Vec::new();
    let mut cursor = events[HEAD].next;
    while cursor != NONE && cursor != at {
        if events[cursor].is_call {
            pending.push(events[cursor].op);
        }
        cursor = events[cursor].next;
    }
    pending
}

fn explain(key: &str, prepared: &Prepared<'_>, stuck: &Stuck) -> Violation {
    let show_value = |value: Value| match prepared.values.get(value as usize).copied().flatten() {
        Some(text) => format!("{text:?}"),
        None => "absent".to_owned(),
    };
    let show_op = |index: usize| {
        let op = prepared.ops[index];
        let mut text = format!("client {}'s {}", op.client, op.op_name());
        match (op.op, &op.output) {
            (OpKind::Get, Some(Output::Value(seen))) => {
                text += &format!(
                    " that read {}",
                    seen.as_deref()
                        .map_or("absent".to_owned(), |s| format!("{s:?}"))
                );
            }
            (OpKind::Cas, Some(output)) => {
                let expected = op
                    .expected
                    .as_deref()
                    .map_or("absent".to_owned(), |s| format!("{s:?}"));
                let verb = if *output == Output::Bool(true) {
                    "succeeded"
                } else {
                    "failed"
                };
                text += &format!(" expecting {expected} that {verb}");
            }
            (OpKind::Put, _) => {
                text += &format!(" of {:?}", op.value.as_deref().unwrap_or_default());
            }
            _ => {}
        }
        text += &format!(
            " [{}, {}]",
            op.call,
            op.return_.map_or("?".to_owned(), |r| r.to_string())
        );
        text
    };
    let mut operations = Vec::new();
    let writer = match stuck.last_writer {
        Some(writer) => {
            operations.push(prepared.ops[writer].clone());
            format!("written by {}", show_op(writer))
        }
        None => "never written".to_owned(),
    };
    let mut pending: Vec<usize> = stuck.pending.clone();
    pending.retain(|&op| op != stuck.blocking);
    operations.extend(pending.iter().map(|&op| prepared.ops[op].clone()));
    operations.push(prepared.ops[stuck.blocking].clone());
    let others = if pending.is_empty() {
        String::new()
    } else {
        format!(
            ", nor can any of the {} other pending operations ({}) come first and explain it",
            pending.len(),
            pending
                .iter()
                .map(|&op| show_op(op))
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    let explanation = format!(
        "key {key:?}: at best {} of {} operations linearize; the register then holds {} ({writer}), \
         and {} must take effect before it returns but cannot{others}",
        stuck.depth,
        prepared.ops.len(),
        show_value(stuck.state),
        show_op(stuck.blocking),
    );
    Violation {
        key: key.to_owned(),
        operations,
        explanation,
    }
}
