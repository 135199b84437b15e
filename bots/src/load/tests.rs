use super::*;
use lincheck::{Outcome, Output};
use proto::{Error, ErrorCode};

fn stats() -> ClientStats {
    ClientStats::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap())
}

fn rejected(code: ErrorCode) -> CallError {
    CallError::Rejected {
        error: Error::new(code, "test"),
        node: "node-1".into(),
        attempts: 1,
        earlier_unanswered: false,
    }
}

#[test]
fn values_are_unique_and_sized() {
    let mut rng = StdRng::seed_from_u64(3);
    let a = unique_value(1, 2, &mut rng, 64);
    let b = unique_value(1, 3, &mut rng, 64);
    assert_eq!(a.len(), 64);
    assert!(a.starts_with("c1-s2-"));
    assert_ne!(a, b);
    // A tiny size never cuts the unique tag.
    assert!(unique_value(1, 2, &mut rng, 1).starts_with("c1-s2-"));
}

#[test]
fn outcomes_map_to_the_history_format() {
    let get = Op::Get { key: "k".into() };
    let cas = Op::Cas {
        key: "k".into(),
        expected: None,
        new: "v".into(),
    };
    let put = Op::Put {
        key: "k".into(),
        value: "v".into(),
    };
    let latency = Duration::from_millis(2);

    // A get of an absent key: ok with output null.
    let ended = classify(
        &get,
        Err(rejected(ErrorCode::NotFound)),
        &mut stats(),
        latency,
    );
    let line = history_operation(0, &get, &ended, 10, 20).unwrap();
    assert_eq!(line.outcome, Outcome::Ok);
    assert_eq!(line.output, Some(Output::Value(None)));
    assert_eq!(line.return_, Some(20));

    // A CAS mismatch: ok with output false, expected recorded.
    let ended = classify(
        &cas,
        Err(rejected(ErrorCode::CasMismatch)),
        &mut stats(),
        latency,
    );
    let line = history_operation(0, &cas, &ended, 10, 20).unwrap();
    assert_eq!(
        (line.outcome, line.output),
        (Outcome::Ok, Some(Output::Bool(false)))
    );
    assert_eq!(line.expected, None);
    assert_eq!(line.value.as_deref(), Some("v"));

    // A timeout: unknown, without a return.
    let timeout = CallError::Timeout {
        attempts: 3,
        last_error: None,
        timeout: Duration::from_secs(1),
    };
    let ended = classify(&put, Err(timeout), &mut stats(), latency);
    let line = history_operation(0, &put, &ended, 10, 20).unwrap();
    assert_eq!((line.outcome, line.return_), (Outcome::Unknown, None));

    // Certainly not applied: fail.
    let unavailable = CallError::Unavailable {
        error: Error::new(ErrorCode::Unavailable, "no node"),
        attempts: 5,
    };
    let ended = classify(&put, Err(unavailable), &mut stats(), latency);
    assert_eq!(
        history_operation(0, &put, &ended, 10, 20).unwrap().outcome,
        Outcome::Fail
    );

    // An internal error proves nothing: unknown.
    let ended = classify(
        &put,
        Err(rejected(ErrorCode::Internal)),
        &mut stats(),
        latency,
    );
    assert_eq!(
        history_operation(0, &put, &ended, 10, 20).unwrap().outcome,
        Outcome::Unknown
    );

    // Publishes are not key operations.
    let publish = Op::Publish {
        user: "u".into(),
        channel: "c".into(),
        text: "t".into(),
    };
    assert!(history_operation(0, &publish, &Ended::Answered(None), 1, 2).is_none());
}

#[test]
fn recorded_runs_get_fresh_keys() {
    assert_eq!(key_prefix_for(None, false), KEY_PREFIX);
    assert_eq!(key_prefix_for(Some("x-".into()), true), "x-");
    let a = key_prefix_for(None, true);
    let b = key_prefix_for(None, true);
    assert!(a.starts_with("run-") && a.ends_with('-'), "{a}");
    assert_ne!(a, b);
}

#[test]
fn cas_cache_is_bounded() {
    let cache = CasCache::new(CAS_CACHE_BYTES / 2);
    cache.set(1, Some("a".into()));
    cache.set(2, Some("b".into()));
    cache.set(3, Some("c".into()));
    let held = (1..=3).filter(|k| cache.get(*k).is_some()).count();
    assert_eq!(held, 2);
    assert_eq!(cache.get(3).as_deref(), Some("c"));
    cache.set(3, None);
    assert_eq!(cache.get(3), None);
}

#[test]
fn configs_are_checked() {
    let config = LoadConfig {
        broker: "tcp://127.0.0.1:1".into(),
        clients: 0,
        connections: 1,
        duration: None,
        mix: crate::mix::DEFAULT_MIX.parse().unwrap(),
        keys: 10,
        key_prefix: KEY_PREFIX.into(),
        value_size: 8,
        history: None,
        rate: None,
        options: CallOptions::default(),
        progress: false,
    };
    assert!(config.validate().is_err());
    assert!(
        LoadConfig {
            clients: 1,
            ..config.clone()
        }
        .validate()
        .is_ok()
    );
    assert!(
        LoadConfig {
            clients: 1,
            value_size: MAX_VALUE_BYTES + 1,
            ..config
        }
        .validate()
        .is_err()
    );
}
