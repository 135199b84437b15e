//! Unit tests of `report.rs`.

use super::*;
use serde_json::json;

fn live(role: &str, slot: u64, digest: &str) -> LiveStatus {
    LiveStatus {
        rank: 1,
        role: role.into(),
        applied_slot: slot,
        digest: digest.into(),
        ..LiveStatus::default()
    }
}

fn file(slot: u64, digest: &str, ok: bool, keys: serde_json::Value) -> FileState {
    FileState {
        applied_slot: slot,
        lamport: 1,
        digest: digest.into(),
        digest_ok: ok,
        document: json!({"applied_slot": slot, "digest": digest, "keys": keys, "users": ["ana"]}),
    }
}

fn observe(node: &str, live: Option<LiveStatus>, file: Option<FileState>) -> Observation {
    Observation {
        node: node.into(),
        live,
        file,
        ..Observation::default()
    }
}

#[test]
fn equal_digests_at_equal_slots_are_consistent_and_laggards_are_listed() {
    let report = Report::build(vec![
        observe("node-1", Some(live("follower", 10, "aa")), None),
        observe("node-2", Some(live("leader", 12, "bb")), None),
        observe("node-3", Some(live("follower", 12, "bb")), None),
    ]);
    assert_eq!(report.verdict, Verdict::Consistent);
    assert_eq!(report.lagging, vec![("node-1".to_owned(), 2)]);
    assert_eq!(report.verdict.exit_code(), 0);
}

#[test]
fn different_digests_at_one_slot_are_inconsistent_with_the_first_key() {
    let report = Report::build(vec![
        observe(
            "node-1",
            None,
            Some(file(5, "aa", true, json!({"a": "1", "b": "2"}))),
        ),
        observe(
            "node-2",
            None,
            Some(file(5, "ab", true, json!({"a": "1", "b": "3"}))),
        ),
        observe(
            "node-3",
            None,
            Some(file(5, "aa", true, json!({"a": "1", "b": "2"}))),
        ),
    ]);
    assert_eq!(report.verdict, Verdict::Inconsistent);
    assert_eq!(report.verdict.exit_code(), 1);
    let difference = &report.differences[0];
    assert_eq!(difference.slot, Some(5));
    assert!(difference.nodes.contains(&"node-2".to_owned()));
    assert_eq!(difference.first_key.as_deref(), Some("keys/b"));
}

#[test]
fn an_edited_store_json_is_inconsistent_and_named() {
    let report = Report::build(vec![
        observe("node-1", None, Some(file(7, "aa", true, json!({"k": "v"})))),
        observe(
            "node-2",
            None,
            Some(file(7, "aa", false, json!({"k": "edited"}))),
        ),
    ]);
    assert_eq!(report.verdict, Verdict::Inconsistent);
    let difference = &report.differences[0];
    assert_eq!(difference.nodes[0], "node-2");
    assert_eq!(difference.first_key.as_deref(), Some("keys/k"));
    assert!(report.nodes[1].errors.iter().any(|e| e.contains("digest")));
}

#[test]
fn live_checkpoints_are_compared_too() {
    let mut one = live("leader", 20, "cc");
    one.checkpoints = vec![Checkpoint {
        slot: 10,
        digest: "aa".into(),
    }];
    let report = Report::build(vec![
        observe("node-1", Some(one), None),
        observe("node-2", Some(live("follower", 10, "ab")), None),
    ]);
    assert_eq!(report.verdict, Verdict::Inconsistent);
    assert_eq!(report.differences[0].slot, Some(10));
}

#[test]
fn nothing_readable_is_unreachable() {
    let report = Report::build(vec![Observation {
        node: "node-1".into(),
        live_error: Some("connection refused".into()),
        ..Observation::default()
    }]);
    assert_eq!(report.verdict, Verdict::Unreachable);
    assert_eq!(report.verdict.exit_code(), 2);
    assert_eq!(report.nodes[0].role, "down");
}

#[test]
fn a_down_node_reports_from_its_file() {
    let report = Report::build(vec![
        observe("node-1", Some(live("leader", 9, "dd")), None),
        observe("node-2", None, Some(file(4, "ee", true, json!({})))),
    ]);
    assert_eq!(report.verdict, Verdict::Consistent);
    let down = &report.nodes[1];
    assert_eq!(
        (
            down.role.as_str(),
            down.alive,
            down.applied_slot,
            down.behind
        ),
        ("down", false, Some(4), Some(5))
    );
}

#[test]
fn nodes_sort_naturally() {
    let report = Report::build(vec![
        observe("node-10", Some(live("follower", 1, "a")), None),
        observe("node-9", Some(live("leader", 1, "a")), None),
    ]);
    assert_eq!(report.nodes[0].node, "node-9");
}

#[test]
fn first_difference_walks_sections_in_order() {
    let a = json!({"keys": {"a": "1"}, "users": ["ana", "bob"]});
    let b = json!({"keys": {"a": "1"}, "users": ["ana", "carl"]});
    assert_eq!(first_difference(&a, &b).as_deref(), Some("users/bob"));
    assert_eq!(first_difference(&a, &a), None);
    let c = json!({"keys": {"a": "1", "z": "2"}});
    assert_eq!(
        first_difference(&json!({"keys": {"a": "1"}}), &c).as_deref(),
        Some("keys/z")
    );
}
