//! Histories generated from a real sequential execution of a register, with random
//! overlapping call/return intervals around each operation's instant: they are
//! linearizable by construction, and a single corrupted output must be caught.

use std::collections::HashMap;
use std::time::Instant;

use lincheck::{CheckOptions, OpKind, Operation, Outcome, Output, Verdict, check};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Shape of a generated history.
struct Shape {
    clients: u64,
    ops_per_client: usize,
    keys: usize,
    /// Chance that an operation's outcome is unknown (a lost reply).
    unknown_probability: f64,
}

/// Each client runs its operations one after the other; each operation takes effect at a
/// random instant inside its own random interval. Applying them in the order of those
/// instants to a map gives every output, so the history is linearizable.
fn generate(shape: &Shape, seed: u64) -> Vec<Operation> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // (instant, operation index)
    let mut instants = Vec::new();
    let mut ops = Vec::new();
    // Whether an unknown operation took effect after all.
    let mut unknown_took = Vec::new();
    for client in 0..shape.clients {
        let mut now: u64 = rng.random_range(0..1_000);
        for i in 0..shape.ops_per_client {
            let call = now + rng.random_range(0..200);
            let return_ = call + rng.random_range(1..2_000);
            let instant = rng.random_range(call..=return_);
            let key = format!("key-{}", rng.random_range(0..shape.keys));
            let value = format!("c{client}-{i}");
            let kind = match rng.random_range(0..10) {
                0..=3 => OpKind::Get,
                4..=6 => OpKind::Put,
                7..=8 => OpKind::Cas,
                _ => OpKind::Delete,
            };
            let unknown = kind != OpKind::Get && rng.random_bool(shape.unknown_probability);
            ops.push(Operation {
                client,
                op: kind,
                key,
                value: matches!(kind, OpKind::Put | OpKind::Cas).then_some(value),
                expected: None,
                output: None,
                outcome: if unknown {
                    Outcome::Unknown
                } else {
                    Outcome::Ok
                },
                call,
                return_: (!unknown).then_some(return_),
            });
            unknown_took.push(unknown && rng.random_bool(0.5));
            instants.push((instant, ops.len() - 1));
            // A client whose reply was lost moves on at once, as the bots do.
            now = return_;
        }
    }
    instants.sort_unstable();
    let mut registers: HashMap<String, Option<String>> = HashMap::new();
    // Every value ever written per key, to pick a plausible (sometimes wrong) `expected`.
    let mut written: HashMap<String, Vec<String>> = HashMap::new();
    for (_, index) in instants {
        let op = &mut ops[index];
        let current = registers.entry(op.key.clone()).or_default();
        let takes_effect = op.outcome == Outcome::Ok || unknown_took[index];
        match op.op {
            OpKind::Get => op.output = Some(Output::Value(current.clone())),
            OpKind::Put => {
                if takes_effect {
                    *current = op.value.clone();
                    written
                        .entry(op.key.clone())
                        .or_default()
                        .push(current.clone().unwrap_or_default());
                }
            }
            OpKind::Delete => {
                if takes_effect {
                    *current = None;
                }
            }
            OpKind::Cas => {
                let history = written.entry(op.key.clone()).or_default();
                op.expected = if rng.random_bool(0.6) || history.is_empty() {
                    current.clone()
                } else {
                    Some(history[rng.random_range(0..history.len())].clone())
                };
                let matches = op.expected == *current;
                if op.outcome == Outcome::Ok {
                    op.output = Some(Output::Bool(matches));
                }
                if matches && takes_effect {
                    *current = op.value.clone();
                    history.push(current.clone().unwrap_or_default());
                }
            }
        }
    }
    ops
}

#[test]
fn generated_histories_are_linearizable() {
    let shape = Shape {
        clients: 8,
        ops_per_client: 50,
        keys: 2,
        unknown_probability: 0.05,
    };
    for seed in 0..40 {
        let ops = generate(&shape, seed);
        assert_eq!(
            check(&ops, &CheckOptions::default()),
            Verdict::Linearizable,
            "seed {seed}"
        );
    }
}

#[test]
fn one_corrupted_read_is_caught() {
    let shape = Shape {
        clients: 8,
        ops_per_client: 50,
        keys: 2,
        unknown_probability: 0.05,
    };
    for seed in 0..40 {
        let mut ops = generate(&shape, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed + 1_000);
        let gets: Vec<usize> = (0..ops.len())
            .filter(|&i| ops[i].op == OpKind::Get && ops[i].outcome == Outcome::Ok)
            .collect();
        let victim = gets[rng.random_range(0..gets.len())];
        ops[victim].output = Some(Output::Value(Some("never-written".to_owned())));
        match check(&ops, &CheckOptions::default()) {
            Verdict::NotLinearizable(violation) => {
                assert_eq!(violation.key, ops[victim].key, "seed {seed}");
                assert!(violation.operations.contains(&ops[victim]), "seed {seed}");
            }
            other => panic!("seed {seed}: corrupted read not caught: {other:?}"),
        }
    }
}

/// The size the brief asks for: 64 clients × 200 operations on 10 keys.
#[test]
fn large_history_checks_quickly() {
    let shape = Shape {
        clients: 64,
        ops_per_client: 200,
        keys: 10,
        unknown_probability: 0.01,
    };
    let ops = generate(&shape, 42);
    let started = Instant::now();
    let verdict = check(&ops, &CheckOptions::default());
    let elapsed = started.elapsed();
    println!(
        "lincheck: {} operations on {} keys checked in {:.1} ms",
        ops.len(),
        shape.keys,
        elapsed.as_secs_f64() * 1e3
    );
    assert_eq!(verdict, Verdict::Linearizable);
}

/// Every order of the operations that respects real time, every subset of the unknown
/// ones: the definition of linearizability, checked by enumeration.
fn brute_force_linearizable(ops: &[Operation]) -> bool {
    let candidates: Vec<&Operation> = ops
        .iter()
        .filter(|op| op.outcome != Outcome::Fail)
        .filter(|op| !(op.outcome == Outcome::Unknown && op.op == OpKind::Get))
        .collect();
    let unknown: Vec<usize> = (0..candidates.len())
        .filter(|&i| candidates[i].outcome == Outcome::Unknown)
        .collect();
    for mask in 0..(1u32 << unknown.len()) {
        let chosen: Vec<&Operation> = (0..candidates.len())
            .filter(|i| match unknown.iter().position(|u| u == i) {
                Some(bit) => mask & (1 << bit) != 0,
                None => true,
            })
            .map(|i| candidates[i])
            .collect();
        let mut order: Vec<usize> = (0..chosen.len()).collect();
        if permutations_any(&mut order, 0, &mut |order| legal(&chosen, order)) {
            return true;
        }
    }
    false
}

fn permutations_any(
    order: &mut Vec<usize>,
    from: usize,
    test: &mut impl FnMut(&[usize]) -> bool,
) -> bool {
    if from == order.len() {
        return test(order);
    }
    for i in from..order.len() {
        order.swap(from, i);
        if permutations_any(order, from + 1, test) {
            return true;
        }
        order.swap(from, i);
    }
    false
}

/// Whether executing `chosen` in `order` respects real time and explains every output.
fn legal(chosen: &[&Operation], order: &[usize]) -> bool {
    let returns = |op: &Operation| match op.outcome {
        Outcome::Ok => op.return_.unwrap_or(u64::MAX),
        _ => u64::MAX,
    };
    for (position, &a) in order.iter().enumerate() {
        for &b in &order[position + 1..] {
            // b comes after a, so b must not have returned before a was called.
            if returns(chosen[b]) < chosen[a].call {
                return false;
            }
        }
    }
    let mut register: Option<String> = None;
    for &index in order {
        let op = chosen[index];
        match op.op {
            OpKind::Put => register = op.value.clone(),
            OpKind::Delete => register = None,
            OpKind::Get => {
                if op.output != Some(Output::Value(register.clone())) {
                    return false;
                }
            }
            OpKind::Cas => {
                let matches = register == op.expected;
                if op.outcome == Outcome::Ok && op.output != Some(Output::Bool(matches)) {
                    return false;
                }
                if matches {
                    register = op.value.clone();
                }
            }
        }
    }
    true
}

fn random_small_history(rng: &mut ChaCha8Rng) -> Vec<Operation> {
    let values = [None, Some("1"), Some("2")];
    let pick = |rng: &mut ChaCha8Rng| values[rng.random_range(0..values.len())].map(str::to_owned);
    let count = rng.random_range(1..=6);
    (0..count)
        .map(|client| {
            let call = rng.random_range(0..20);
            let return_ = call + rng.random_range(0..10);
            let op =
                [OpKind::Put, OpKind::Get, OpKind::Cas, OpKind::Delete][rng.random_range(0..4)];
            let outcome = match rng.random_range(0..10) {
                0..=6 => Outcome::Ok,
                7..=8 => Outcome::Unknown,
                _ => Outcome::Fail,
            };
            let value = matches!(op, OpKind::Put | OpKind::Cas)
                .then(|| pick(rng).unwrap_or_else(|| "1".to_owned()));
            let output = match (op, outcome) {
                (OpKind::Get, Outcome::Ok) => Some(Output::Value(pick(rng))),
                (OpKind::Cas, Outcome::Ok) => Some(Output::Bool(rng.random_bool(0.5))),
                _ => None,
            };
            Operation {
                client,
                op,
                key: "k".to_owned(),
                value,
                expected: if op == OpKind::Cas { pick(rng) } else { None },
                output,
                outcome,
                call,
                return_: (outcome != Outcome::Unknown).then_some(return_),
            }
        })
        .collect()
}

#[test]
fn checker_agrees_with_brute_force_on_small_histories() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (mut linearizable, mut not) = (0, 0);
    for round in 0..3_000 {
        let ops = random_small_history(&mut rng);
        let expected = brute_force_linearizable(&ops);
        let verdict = check(&ops, &CheckOptions::default());
        match (&verdict, expected) {
            (Verdict::Linearizable, true) => linearizable += 1,
            (Verdict::NotLinearizable(_), false) => not += 1,
            _ => panic!(
                "round {round}: checker says {verdict:?}, enumeration says {expected}: {ops:#?}"
            ),
        }
    }
    // Both kinds of history were exercised.
    println!("lincheck vs enumeration: {linearizable} linearizable, {not} not");
    assert!(linearizable > 300 && not > 300, "{linearizable} / {not}");
}
