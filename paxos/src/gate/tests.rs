//! The gate's rules, one test each, on hand-made turns.

use super::*;
use crate::{Ballot, Rank};
use proto::paxos::DecidedEntry;

const BALLOT: Ballot = Ballot { round: 1, rank: 1 };

fn accept_record(slot: Slot) -> Record {
    Record::Accept {
        slot,
        ballot: BALLOT,
        value: Value::noop(1),
    }
}

fn decide_record(slot: Slot) -> Record {
    Record::Decide {
        slot,
        value: Value::noop(1),
    }
}

fn envelope(to: Option<Rank>, message: Message) -> Envelope {
    Envelope {
        from: 1,
        to,
        lamport: 1,
        message,
    }
}

fn phase2a(slot: Slot) -> Envelope {
    envelope(
        None,
        Message::Accept {
            ballot: BALLOT,
            slot,
            value: Value::noop(1),
            decided_upto: 0,
        },
    )
}

fn accepted(slot: Slot) -> Envelope {
    envelope(
        Some(1),
        Message::Accepted {
            ballot: BALLOT,
            slot,
        },
    )
}

fn decide(slot: Slot) -> Envelope {
    envelope(
        None,
        Message::Decide {
            slot,
            ballot: BALLOT,
        },
    )
}

fn turn(persist: Vec<Record>, messages: Vec<Envelope>, decided: &[Slot]) -> Turn {
    Turn {
        persist,
        messages,
        decided: decided.iter().map(|&s| (s, Value::noop(1))).collect(),
        ..Turn::default()
    }
}

fn kinds(ready: &Ready) -> Vec<&'static str> {
    ready.messages.iter().map(|e| e.message.name()).collect()
}

fn admit(gate: &mut Gate, turn: Turn) -> Ready {
    gate.admit(turn, Breaks::default())
}

#[test]
fn an_acceptors_answer_waits_for_its_own_record() {
    let mut gate = Gate::default();
    let ready = admit(
        &mut gate,
        turn(vec![accept_record(1)], vec![accepted(1)], &[]),
    );
    let group = ready.persist.as_ref().unwrap();
    assert_eq!((group.number, group.sync), (1, true));
    assert!(ready.messages.is_empty(), "held: {:?}", kinds(&ready));
    assert!(gate.vote_held());
    gate.persisted(1);
    let ready = admit(&mut gate, Turn::default());
    assert_eq!(kinds(&ready), ["accepted"]);
    assert!(!gate.vote_held());
    assert!(gate.is_idle());
}

#[test]
fn a_later_turn_waits_for_the_records_of_earlier_ones() {
    let mut gate = Gate::default();
    let _ = admit(&mut gate, turn(vec![accept_record(1)], vec![], &[]));
    // A retransmitted Accepted, no records of its own: it vouches for group 1.
    let ready = admit(&mut gate, turn(vec![], vec![accepted(1)], &[]));
    assert!(ready.persist.is_none() && ready.messages.is_empty());
    gate.persisted(1);
    assert_eq!(kinds(&admit(&mut gate, Turn::default())), ["accepted"]);
}

#[test]
fn decide_and_truncate_records_gate_nothing_and_need_no_fsync() {
    let mut gate = Gate::default();
    let _ = admit(&mut gate, turn(vec![accept_record(1)], vec![], &[]));
    gate.persisted(1);
    let ready = admit(
        &mut gate,
        turn(
            vec![decide_record(1), Record::Truncate { upto: 0 }],
            vec![decide(1)],
            &[1],
        ),
    );
    let group = ready.persist.as_ref().unwrap();
    assert_eq!((group.number, group.sync), (2, false));
    assert_eq!(kinds(&ready), ["decide"]);
    assert_eq!(ready.decided.len(), 1);
}

#[test]
fn forwards_leave_at_once() {
    let mut gate = Gate::default();
    let forward = envelope(Some(3), Message::Forward { commands: vec![] });
    let ready = admit(
        &mut gate,
        turn(vec![accept_record(1)], vec![accepted(1), forward], &[]),
    );
    assert_eq!(kinds(&ready), ["forward"]);
}

#[test]
fn the_leaders_accept_leaves_early_only_behind_a_durable_ballot() {
    let mut gate = Gate::default();
    // A candidacy: its ballot's records are in this very group.
    let ballot = vec![
        Record::Round { round: 1 },
        Record::Promise { ballot: BALLOT },
    ];
    let prepare = envelope(
        None,
        Message::Prepare {
            ballot: BALLOT,
            from_slot: 1,
        },
    );
    let ready = admit(&mut gate, turn(ballot, vec![prepare], &[]));
    assert!(ready.messages.is_empty());
    // Leading already (a one-node cluster), but the ballot is not durable: wait.
    let ready = admit(
        &mut gate,
        turn(vec![accept_record(1)], vec![phase2a(1)], &[]),
    );
    assert!(ready.messages.is_empty());
    gate.persisted(1);
    // Ballot durable: the next proposal's Accept leaves while its record is written.
    let ready = admit(
        &mut gate,
        turn(vec![accept_record(2)], vec![phase2a(2)], &[]),
    );
    assert_eq!(kinds(&ready), ["prepare", "accept"]);
    assert!(matches!(
        ready.messages[1].message,
        Message::Accept { slot: 2, .. }
    ));
    // The first proposal's Accept, held behind the ballot, follows with its group.
    gate.persisted(2);
    let ready = admit(&mut gate, Turn::default());
    assert!(matches!(
        ready.messages[..],
        [Envelope {
            message: Message::Accept { slot: 1, .. },
            ..
        }]
    ));
    // A retransmission to one acceptor is not the broadcast: it waits like the rest.
    let resend = envelope(
        Some(2),
        Message::Accept {
            ballot: BALLOT,
            slot: 2,
            value: Value::noop(1),
            decided_upto: 0,
        },
    );
    let ready = admit(&mut gate, turn(vec![], vec![resend], &[]));
    assert!(ready.messages.is_empty());
}

#[test]
fn decisions_need_only_the_earlier_groups() {
    let mut gate = Gate::default();
    let _ = admit(
        &mut gate,
        turn(vec![accept_record(1)], vec![phase2a(1)], &[]),
    );
    // The turn that decides slot 1 also proposes slot 2.
    let ready = admit(
        &mut gate,
        turn(
            vec![accept_record(2), decide_record(1)],
            vec![phase2a(2), decide(1)],
            &[1],
        ),
    );
    assert_eq!(ready.persist.as_ref().unwrap().number, 2);
    assert!(ready.decided.is_empty(), "slot 1's vote is not durable yet");
    gate.persisted(1);
    let ready = admit(&mut gate, Turn::default());
    assert_eq!(kinds(&ready), ["decide"]);
    assert_eq!(ready.decided.len(), 1, "group 2 need not be durable");
}

#[test]
fn a_decision_counting_a_vote_of_its_own_turn_waits_for_it() {
    let mut gate = Gate::default();
    let _ = admit(&mut gate, turn(vec![accept_record(1)], vec![], &[]));
    gate.persisted(1);
    // Accepted and learned from peers' votes in the same turn.
    let ready = admit(
        &mut gate,
        turn(vec![accept_record(2), decide_record(2)], vec![], &[2]),
    );
    assert!(ready.decided.is_empty());
    gate.persisted(2);
    assert_eq!(admit(&mut gate, Turn::default()).decided.len(), 1);
    // A new ballot in this group: the decisions wait for it too.
    let ready = admit(
        &mut gate,
        turn(
            vec![Record::Promise { ballot: BALLOT }],
            vec![envelope(
                Some(2),
                Message::Decided {
                    entries: vec![DecidedEntry {
                        slot: 1,
                        value: Value::noop(1),
                    }],
                },
            )],
            &[],
        ),
    );
    assert!(ready.messages.is_empty());
}

#[test]
fn outputs_are_released_in_order() {
    let mut gate = Gate::default();
    let _ = admit(
        &mut gate,
        turn(vec![accept_record(1)], vec![accepted(1)], &[]),
    );
    let _ = admit(
        &mut gate,
        turn(vec![accept_record(2)], vec![accepted(2)], &[]),
    );
    let _ = admit(&mut gate, turn(vec![decide_record(1)], vec![], &[1]));
    assert_eq!(gate.held_groups(), 3);
    gate.persisted(1);
    let ready = admit(&mut gate, Turn::default());
    assert_eq!(kinds(&ready), ["accepted"]);
    assert!(ready.decided.is_empty(), "behind group 2's held Accepted");
    gate.persisted(3);
    let ready = admit(&mut gate, Turn::default());
    assert_eq!(kinds(&ready), ["accepted"]);
    assert_eq!(ready.decided.len(), 1);
}

#[test]
fn a_snapshot_is_never_applied_after_a_later_turns_slots() {
    let mut gate = Gate::default();
    let _ = admit(&mut gate, turn(vec![accept_record(1)], vec![], &[]));
    let _ = admit(&mut gate, turn(vec![decide_record(1)], vec![], &[1]));
    let _ = admit(
        &mut gate,
        Turn {
            install_snapshot: Some((9, Arc::new(vec![]))),
            decided: vec![(10, Value::noop(1))],
            ..Turn::default()
        },
    );
    gate.persisted(2);
    let first = admit(&mut gate, Turn::default());
    assert_eq!(first.decided.len(), 1);
    assert!(first.install_snapshot.is_none());
    let second = admit(&mut gate, Turn::default());
    assert_eq!(second.install_snapshot.map(|(s, _)| s), Some(9));
    assert_eq!(second.decided[0].0, 10);
}

#[test]
#[should_panic(expected = "reported durable")]
fn a_durable_group_beyond_the_written_ones_stops_the_replica() {
    let mut gate = Gate::default();
    let _ = admit(&mut gate, turn(vec![accept_record(1)], vec![], &[]));
    gate.persisted(2);
}
