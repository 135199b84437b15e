//! Hand-made histories: the violations the checker must reject and the valid histories
//! (concurrency, unknown outcomes) it must accept.

use lincheck::{
    CheckOptions, OpKind, Operation, Outcome, Output, Verdict, check, parse_history,
    write_operation,
};

fn op(client: u64, kind: OpKind, key: &str, call: u64, return_: u64) -> Operation {
    Operation {
        client,
        op: kind,
        key: key.to_owned(),
        value: None,
        expected: None,
        output: None,
        outcome: Outcome::Ok,
        call,
        return_: Some(return_),
    }
}

fn put(client: u64, value: &str, call: u64, return_: u64) -> Operation {
    Operation {
        value: Some(value.to_owned()),
        ..op(client, OpKind::Put, "k", call, return_)
    }
}

fn get(client: u64, seen: Option<&str>, call: u64, return_: u64) -> Operation {
    Operation {
        output: Some(Output::Value(seen.map(str::to_owned))),
        ..op(client, OpKind::Get, "k", call, return_)
    }
}

fn delete(client: u64, call: u64, return_: u64) -> Operation {
    op(client, OpKind::Delete, "k", call, return_)
}

fn cas(
    client: u64,
    expected: Option<&str>,
    new: &str,
    took: bool,
    call: u64,
    return_: u64,
) -> Operation {
    Operation {
        value: Some(new.to_owned()),
        expected: expected.map(str::to_owned),
        output: Some(Output::Bool(took)),
        ..op(client, OpKind::Cas, "k", call, return_)
    }
}

fn unknown(mut operation: Operation) -> Operation {
    operation.outcome = Outcome::Unknown;
    operation.output = None;
    operation.return_ = None;
    operation
}

fn failed(mut operation: Operation) -> Operation {
    operation.outcome = Outcome::Fail;
    operation
}

fn verdict(ops: &[Operation]) -> Verdict {
    check(ops, &CheckOptions::default())
}

#[track_caller]
fn assert_linearizable(ops: &[Operation]) {
    let verdict = verdict(ops);
    assert_eq!(verdict, Verdict::Linearizable, "{ops:#?}");
}

#[track_caller]
fn assert_violation(ops: &[Operation]) -> lincheck::Violation {
    match verdict(ops) {
        Verdict::NotLinearizable(violation) => {
            assert!(!violation.operations.is_empty());
            assert!(!violation.explanation.is_empty());
            violation
        }
        other => panic!("expected a violation, got {other:?} for {ops:#?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&[
        get(1, None, 0, 10),
        put(1, "a", 20, 30),
        get(2, Some("a"), 40, 50),
        cas(2, Some("a"), "b", true, 60, 70),
        cas(1, Some("a"), "c", false, 80, 90),
        get(1, Some("b"), 100, 110),
        delete(2, 120, 130),
        get(1, None, 140, 150),
        cas(1, None, "d", true, 160, 170),
        get(2, Some("d"), 180, 190),
    ]);
}

#[test]
fn stale_read_is_rejected() {
    // Client 3 reads "a" after the put of "b" completed.
    let violation = assert_violation(&[
        put(1, "a", 0, 10),
        put(2, "b", 20, 30),
        get(3, Some("a"), 40, 50),
    ]);
    assert_eq!(violation.key, "k");
    // The blocking read is named last, after the write that set the register.
    assert_eq!(
        violation.operations.last(),
        Some(&get(3, Some("a"), 40, 50))
    );
    assert_eq!(violation.operations.first(), Some(&put(2, "b", 20, 30)));
}

#[test]
fn lost_acknowledged_write_is_rejected() {
    // The acknowledged put of "b" vanished: a later read still sees "a".
    assert_violation(&[
        put(1, "a", 0, 10),
        get(1, Some("a"), 15, 18),
        put(1, "b", 20, 30),
        get(2, Some("a"), 40, 50),
    ]);
    // Also when the register was absent before.
    assert_violation(&[put(1, "a", 0, 10), get(2, None, 20, 30)]);
}

#[test]
fn cas_succeeding_twice_from_one_value_is_rejected() {
    assert_violation(&[
        put(1, "a", 0, 10),
        cas(2, Some("a"), "b", true, 20, 40),
        cas(3, Some("a"), "c", true, 25, 45),
    ]);
}

#[test]
fn read_of_a_never_written_value_is_rejected() {
    let violation = assert_violation(&[put(1, "a", 0, 10), get(2, Some("zzz"), 20, 30)]);
    assert!(
        violation.explanation.contains("zzz"),
        "{}",
        violation.explanation
    );
}

#[test]
fn cas_failure_that_saw_the_expected_value_is_rejected() {
    // Nothing else writes: the cas must have found "a", so it cannot have failed.
    assert_violation(&[put(1, "a", 0, 10), cas(2, Some("a"), "b", false, 20, 30)]);
}

#[test]
fn read_after_a_completed_delete_is_rejected() {
    assert_violation(&[
        put(1, "a", 0, 10),
        delete(1, 20, 30),
        get(2, Some("a"), 40, 50),
    ]);
}

#[test]
fn reads_concurrent_with_a_write_may_see_either_value() {
    assert_linearizable(&[
        put(1, "a", 0, 10),
        put(2, "b", 20, 100),
        get(3, Some("a"), 30, 40),
        get(4, Some("b"), 50, 60),
    ]);
    // But not "b" then "a" from sequential reads (no new-old inversion).
    assert_violation(&[
        put(1, "a", 0, 10),
        put(2, "b", 20, 100),
        get(3, Some("b"), 30, 40),
        get(4, Some("a"), 50, 60),
    ]);
}

#[test]
fn concurrent_cas_one_wins() {
    assert_linearizable(&[
        put(1, "a", 0, 10),
        cas(2, Some("a"), "b", true, 20, 40),
        cas(3, Some("a"), "c", false, 25, 45),
        get(1, Some("b"), 50, 60),
    ]);
}

#[test]
fn calls_and_returns_at_the_same_instant_count_as_concurrent() {
    assert_linearizable(&[put(1, "a", 0, 10), get(2, None, 10, 20)]);
}

#[test]
fn unknown_put_observed_later_is_accepted() {
    assert_linearizable(&[unknown(put(1, "x", 0, 0)), get(2, Some("x"), 50, 60)]);
}

#[test]
fn unknown_put_never_observed_is_accepted() {
    assert_linearizable(&[
        put(1, "a", 0, 5),
        unknown(put(2, "x", 10, 0)),
        get(3, Some("a"), 50, 60),
        get(3, Some("a"), 70, 80),
    ]);
}

#[test]
fn unknown_put_takes_effect_after_its_call_only() {
    // The read ended before the unknown put was called: it cannot have seen its value.
    assert_violation(&[get(2, Some("x"), 0, 10), unknown(put(1, "x", 20, 0))]);
}

#[test]
fn unknown_put_takes_effect_at_most_once() {
    // Seen, overwritten, then seen again: that would need the put to happen twice.
    assert_violation(&[
        unknown(put(1, "x", 0, 0)),
        get(2, Some("x"), 10, 20),
        put(3, "y", 30, 40),
        get(2, Some("x"), 50, 60),
    ]);
}

#[test]
fn unknown_cas_may_or_may_not_take_effect() {
    let base = [
        put(1, "a", 0, 10),
        unknown(cas(2, Some("a"), "b", true, 20, 0)),
    ];
    let mut took = base.to_vec();
    took.push(get(3, Some("b"), 30, 40));
    assert_linearizable(&took);
    let mut did_not = base.to_vec();
    did_not.push(get(3, Some("a"), 30, 40));
    assert_linearizable(&did_not);
}

#[test]
fn unknown_get_is_ignored() {
    let mut lost_read = get(2, Some("never"), 20, 30);
    lost_read = unknown(lost_read);
    assert_linearizable(&[put(1, "a", 0, 10), lost_read]);
}

#[test]
fn failed_operations_took_no_effect() {
    assert_linearizable(&[failed(put(1, "x", 0, 10)), get(2, None, 20, 30)]);
    assert_violation(&[failed(put(1, "x", 0, 10)), get(2, Some("x"), 20, 30)]);
}

#[test]
fn keys_are_independent_and_the_violating_key_is_named() {
    let mut other = put(1, "a", 0, 10);
    other.key = "other".to_owned();
    let mut other_read = get(2, Some("a"), 20, 30);
    other_read.key = "other".to_owned();
    // "k" is fine on its own, "z" has a read of a value only written to "other".
    let mut bad = get(3, Some("a"), 40, 50);
    bad.key = "z".to_owned();
    let violation = assert_violation(&[other, other_read, get(4, None, 0, 5), bad]);
    assert_eq!(violation.key, "z");
}

#[test]
fn malformed_operation_is_inconclusive_not_a_verdict() {
    let mut broken = get(1, Some("a"), 0, 10);
    broken.output = None;
    assert!(matches!(
        verdict(&[broken]),
        Verdict::Inconclusive { key, .. } if key == "k"
    ));
}

#[test]
fn tiny_budget_gives_inconclusive() {
    let ops = [
        put(1, "a", 0, 100),
        put(2, "b", 0, 100),
        get(3, Some("b"), 0, 100),
    ];
    let verdict = check(
        &ops,
        &CheckOptions {
            max_steps_per_key: 1,
        },
    );
    assert!(
        matches!(verdict, Verdict::Inconclusive { .. }),
        "{verdict:?}"
    );
}

#[test]
fn history_round_trips_through_json_lines() {
    let ops = vec![
        put(1, "a", 0, 10),
        get(2, None, 11, 12),
        get(2, Some("a"), 13, 14),
        cas(3, None, "b", false, 15, 16),
        cas(3, Some("a"), "b", true, 17, 18),
        delete(1, 19, 20),
        unknown(put(4, "c", 21, 0)),
        failed(put(4, "d", 22, 23)),
    ];
    let mut text = Vec::new();
    for operation in &ops {
        write_operation(&mut text, operation).unwrap();
    }
    let text = String::from_utf8(text).unwrap();
    assert_eq!(text.lines().count(), ops.len());
    // A get of an absent key writes an explicit null output; a cas always names expected.
    assert!(
        text.contains(r#""op":"get","key":"k","output":null"#),
        "{text}"
    );
    assert!(text.contains(r#""expected":null"#), "{text}");
    assert!(!text.lines().nth(6).unwrap().contains("return"), "{text}");
    let parsed = parse_history(text.as_bytes()).unwrap();
    assert_eq!(parsed, ops);
}

#[test]
fn design_doc_example_line_parses() {
    let line = r#"{"client":3,"op":"cas","key":"k","value":"v","expected":"old","output":true,"outcome":"ok","call":123,"return":456}"#;
    let ops = parse_history(line.as_bytes()).unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].output, Some(Output::Bool(true)));
    assert_eq!(ops[0].expected.as_deref(), Some("old"));
    assert_eq!(ops[0].return_, Some(456));
}

#[test]
fn parse_errors_name_the_line() {
    let text = "\n{\"client\":1,\"op\":\"delete\",\"key\":\"k\",\"outcome\":\"ok\",\"call\":1,\"return\":2}\n\nnot json\n";
    match parse_history(text.as_bytes()) {
        Err(lincheck::ParseError::Line { line, .. }) => assert_eq!(line, 4),
        other => panic!("{other:?}"),
    }
    // Valid JSON but an ok get without output.
    let text = r#"{"client":1,"op":"get","key":"k","outcome":"ok","call":1,"return":2}"#;
    assert!(matches!(
        parse_history(text.as_bytes()),
        Err(lincheck::ParseError::Line { line: 1, .. })
    ));
    // Returns before its call.
    let text = r#"{"client":1,"op":"delete","key":"k","outcome":"ok","call":5,"return":2}"#;
    assert!(parse_history(text.as_bytes()).is_err());
    // Unknown field, unknown op.
    let text = r#"{"client":1,"op":"incr","key":"k","outcome":"ok","call":1,"return":2}"#;
    assert!(parse_history(text.as_bytes()).is_err());
    let text = r#"{"client":1,"op":"delete","key":"k","outcome":"ok","call":1,"return":2,"x":1}"#;
    assert!(parse_history(text.as_bytes()).is_err());
}

#[test]
fn overlong_line_is_refused() {
    let mut text = vec![b' '; lincheck::MAX_LINE_BYTES + 10];
    text.push(b'\n');
    assert!(matches!(
        parse_history(text.as_slice()),
        Err(lincheck::ParseError::Line { line: 1, .. })
    ));
}

#[test]
fn check_file_reads_a_history() {
    let dir = std::env::temp_dir().join(format!("lincheck-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("history.jsonl");
    let mut text = Vec::new();
    for operation in [put(1, "a", 0, 10), get(2, Some("b"), 20, 30)] {
        write_operation(&mut text, &operation).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    let verdict = lincheck::check_file(&path).unwrap();
    assert!(matches!(verdict, Verdict::NotLinearizable(_)));
    assert!(lincheck::check_file(dir.join("missing.jsonl")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
