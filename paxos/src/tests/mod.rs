//! Unit tests of the acceptor rules, phase 1, batching and catch-up, on hand-made
//! messages. Whole-cluster behaviour is tested in `tests/` (scenarios and simulator).

use std::sync::Arc;

use proto::paxos::{DecidedEntry, MAX_PROMISE_ENTRIES, PromiseEntry};
use proto::{Command, ErrorCode, Op};

use crate::*;

fn config(rank: Rank, members: &[Rank]) -> Config {
    Config {
        rank,
        members: members.to_vec(),
        heartbeat_interval_ticks: 2,
        election_timeout_ticks: 10,
        retransmit_ticks: 3,
        window_slots: 4,
        max_pending_commands: 8,
        log_retain_slots: 0,
        seed: u64::from(rank),
        ..Config::default()
    }
}

fn replica(rank: Rank) -> Replica {
    Replica::new(config(rank, &[1, 2, 3]), Persisted::default()).unwrap()
}

fn put(seq: u64) -> Command {
    Command {
        client_id: 1,
        seq,
        op: Op::Put {
            key: "k".into(),
            value: format!("v{seq}"),
        },
        session: None,
    }
}

fn value(tag: u64) -> Value {
    Value {
        lamport: tag,
        commands: vec![put(tag)],
    }
}

fn env(from: Rank, message: Message) -> Envelope {
    Envelope {
        from,
        to: None,
        lamport: 0,
        message,
    }
}

/// Leader `from`'s `Accept` of `value(slot)` in `ballot`.
fn accept_from(from: Rank, ballot: Ballot, slot: Slot, decided_upto: Slot) -> Envelope {
    env(
        from,
        Message::Accept {
            ballot,
            slot,
            value: value(slot),
            decided_upto,
        },
    )
}

/// One turn of a driver whose disk is instant: the turn's records are reported durable
/// at once, and the outputs that waited for them come out in the same `Ready`.
fn turn(r: &mut Replica) -> Ready {
    let mut ready = r.ready();
    if let Some(group) = &ready.persist {
        r.persisted(group.number);
        let released = r.ready();
        assert!(released.persist.is_none(), "{released:?}");
        ready.messages.extend(released.messages);
        if released.install_snapshot.is_some() {
            ready.install_snapshot = released.install_snapshot;
        }
        ready.decided.extend(released.decided);
        ready.rejected.extend(released.rejected);
    }
    ready
}

fn only_message(ready: &Ready) -> &Message {
    assert_eq!(ready.messages.len(), 1, "{:?}", ready.messages);
    &ready.messages[0].message
}

#[test]
fn acceptor_promises_a_higher_ballot_durably() {
    let mut r = replica(1);
    r.step(env(
        3,
        Message::Prepare {
            ballot: Ballot::new(2, 3),
            from_slot: 1,
        },
    ));
    let ready = turn(&mut r);
    assert_eq!(
        ready.records(),
        vec![Record::Promise {
            ballot: Ballot::new(2, 3)
        }]
    );
    assert!(matches!(
        only_message(&ready),
        Message::Promise { ballot, next_slot: None, .. } if *ballot == Ballot::new(2, 3)
    ));
    assert_eq!(ready.messages[0].to, Some(3));
}

#[test]
fn acceptor_never_goes_back_on_a_promise() {
    let mut r = replica(1);
    r.step(env(
        3,
        Message::Prepare {
            ballot: Ballot::new(5, 3),
            from_slot: 1,
        },
    ));
    let _ = turn(&mut r);
    // A lower Prepare and a lower Accept are refused with the promise.
    r.step(env(
        2,
        Message::Prepare {
            ballot: Ballot::new(4, 2),
            from_slot: 1,
        },
    ));
    r.step(env(
        2,
        Message::Accept {
            ballot: Ballot::new(5, 2),
            slot: 1,
            value: value(1),
            decided_upto: 0,
        },
    ));
    let ready = turn(&mut r);
    assert!(ready.records().is_empty());
    assert_eq!(ready.messages.len(), 2);
    for m in &ready.messages {
        assert!(
            matches!(m.message, Message::Nack { promised, .. } if promised == Ballot::new(5, 3))
        );
    }
    assert_eq!(r.status().promised, Ballot::new(5, 3));
}

#[test]
fn acceptor_persists_an_accept_before_answering_it() {
    let mut r = replica(1);
    let accept = Message::Accept {
        ballot: Ballot::new(1, 3),
        slot: 1,
        value: value(1),
        decided_upto: 0,
    };
    r.step(env(3, accept.clone()));
    // The answer waits for the records: the first Ready holds only them.
    let ready = r.ready();
    assert!(ready.messages.is_empty());
    let group = ready.persist.as_ref().map_or(0, |g| g.number);
    assert_eq!(
        ready.records(),
        vec![
            Record::Promise {
                ballot: Ballot::new(1, 3)
            },
            Record::Accept {
                slot: 1,
                ballot: Ballot::new(1, 3),
                value: value(1)
            }
        ]
    );
    r.persisted(group);
    assert!(matches!(
        only_message(&r.ready()),
        Message::Accepted { slot: 1, .. }
    ));
    // A retransmitted Accept is answered again without a new record.
    r.step(env(3, accept));
    let ready = turn(&mut r);
    assert!(ready.records().is_empty());
    assert!(matches!(
        only_message(&ready),
        Message::Accepted { slot: 1, .. }
    ));
    assert_eq!(r.status().leader, Some(3));
}

#[test]
fn a_promise_raised_by_an_unrecorded_accept_is_still_durable() {
    // Found by the simulator (seed 14846): an Accept in a higher ballot for a slot that is
    // already decided raises the promise but records no Accept; the promise must still be
    // recorded, since the next Promise or Nack states it.
    let mut r = replica(1);
    r.step(env(
        3,
        Message::Decided {
            entries: vec![DecidedEntry {
                slot: 1,
                value: value(1),
            }],
        },
    ));
    let _ = turn(&mut r);
    r.step(env(
        2,
        Message::Accept {
            ballot: Ballot::new(4, 2),
            slot: 1,
            value: value(1),
            decided_upto: 1,
        },
    ));
    let ready = turn(&mut r);
    let persisted = Persisted::from_records(ready.records());
    assert_eq!(persisted.promised, Ballot::new(4, 2));
}

#[test]
fn promise_reports_accepted_and_decided_values() {
    let mut r = replica(1);
    r.step(env(
        3,
        Message::Accept {
            ballot: Ballot::new(1, 3),
            slot: 2,
            value: value(2),
            decided_upto: 0,
        },
    ));
    r.step(env(
        3,
        Message::Decided {
            entries: vec![DecidedEntry {
                slot: 1,
                value: value(1),
            }],
        },
    ));
    let ready = turn(&mut r);
    assert_eq!(ready.decided, vec![(1, value(1))]);
    r.step(env(
        2,
        Message::Prepare {
            ballot: Ballot::new(2, 2),
            from_slot: 1,
        },
    ));
    let ready = turn(&mut r);
    let Message::Promise {
        entries,
        decided_upto,
        ..
    } = only_message(&ready)
    else {
        panic!("not a promise");
    };
    assert_eq!(*decided_upto, 1);
    assert_eq!(
        entries,
        &vec![
            PromiseEntry {
                slot: 1,
                ballot: None,
                value: value(1)
            },
            PromiseEntry {
                slot: 2,
                ballot: Some(Ballot::new(1, 3)),
                value: value(2)
            },
        ]
    );
}

#[test]
fn a_long_promise_is_cut_and_continued() {
    let mut r = replica(1);
    let n = MAX_PROMISE_ENTRIES as u64 + 10;
    for slot in 1..=n {
        r.step(env(
            3,
            Message::Accept {
                ballot: Ballot::new(1, 3),
                slot,
                value: value(slot),
                decided_upto: 0,
            },
        ));
    }
    let _ = turn(&mut r);
    r.step(env(
        2,
        Message::Prepare {
            ballot: Ballot::new(2, 2),
            from_slot: 1,
        },
    ));
    let ready = turn(&mut r);
    let Message::Promise {
        entries, next_slot, ..
    } = only_message(&ready)
    else {
        panic!("not a promise");
    };
    assert_eq!(entries.len(), MAX_PROMISE_ENTRIES);
    let next = next_slot.unwrap();
    assert_eq!(next, MAX_PROMISE_ENTRIES as u64 + 1);
    r.step(env(
        2,
        Message::Prepare {
            ballot: Ballot::new(2, 2),
            from_slot: next,
        },
    ));
    let ready = turn(&mut r);
    let Message::Promise {
        entries, next_slot, ..
    } = only_message(&ready)
    else {
        panic!("not a promise");
    };
    assert_eq!(entries.len(), 10);
    assert_eq!(*next_slot, None);
}

/// Makes replica 3 a candidate with ballot (1, 3) and returns it with its Prepare.
fn candidate() -> Replica {
    let mut r = replica(3);
    for _ in 0..10 {
        r.tick();
    }
    assert_eq!(r.status().role, Role::Candidate);
    let ready = turn(&mut r);
    // The round and the self-promise are durable before the Prepare leaves.
    assert_eq!(
        ready.records(),
        vec![
            Record::Round { round: 1 },
            Record::Promise {
                ballot: Ballot::new(1, 3)
            }
        ]
    );
    assert!(
        ready
            .messages
            .iter()
            .any(|m| matches!(m.message, Message::Prepare { from_slot: 1, .. }))
    );
    r
}

fn promise(from: Rank, entries: Vec<PromiseEntry>) -> Envelope {
    env(
        from,
        Message::Promise {
            ballot: Ballot::new(1, 3),
            from_slot: 1,
            entries,
            next_slot: None,
            decided_upto: 0,
            truncated_upto: 0,
        },
    )
}

#[test]
fn new_leader_reproposes_the_highest_ballot_value_and_fills_holes() {
    let mut r = candidate();
    // Two acceptors report different values for slot 3; nothing for slot 2.
    r.step(promise(
        1,
        vec![
            PromiseEntry {
                slot: 1,
                ballot: Some(Ballot::new(0, 2)),
                value: value(10),
            },
            PromiseEntry {
                slot: 3,
                ballot: Some(Ballot::new(0, 1)),
                value: value(31),
            },
        ],
    ));
    assert_eq!(r.status().role, Role::Leader);
    let mut r2 = candidate();
    r2.step(promise(
        2,
        vec![PromiseEntry {
            slot: 3,
            ballot: Some(Ballot::new(0, 2)),
            value: value(32),
        }],
    ));
    r2.step(promise(
        1,
        vec![PromiseEntry {
            slot: 3,
            ballot: Some(Ballot::new(0, 1)),
            value: value(31),
        }],
    ));
    // r2 became leader with the first promise (quorum of 2 with itself): slot 3 gets 32.
    let ready = turn(&mut r2);
    let accepts: Vec<(Slot, Value)> = ready
        .messages
        .iter()
        .filter_map(|m| match &m.message {
            Message::Accept { slot, value, .. } => Some((*slot, value.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(accepts.len(), 3);
    assert!(accepts[0].1.is_noop() && accepts[1].1.is_noop());
    assert_eq!(accepts[2], (3, value(32)));

    let ready = turn(&mut r);
    let accepts: Vec<(Slot, Value)> = ready
        .messages
        .iter()
        .filter_map(|m| match &m.message {
            Message::Accept { slot, value, .. } => Some((*slot, value.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(accepts[0], (1, value(10)));
    assert!(accepts[1].1.is_noop());
    assert_eq!(accepts[2], (3, value(31)));
}

#[test]
fn the_highest_ballot_wins_whatever_the_order_of_promises() {
    // Three-ballot race on one slot in a five-node cluster: the candidate needs two
    // promises besides its own, and must pick the highest ballot of all of them.
    let members = [1, 2, 3, 4, 5];
    let mut r = Replica::new(config(5, &members), Persisted::default()).unwrap();
    for _ in 0..10 {
        r.tick();
    }
    let ballot = r.status().ballot.unwrap();
    let _ = turn(&mut r);
    let entry = |b: Ballot, tag| PromiseEntry {
        slot: 1,
        ballot: Some(b),
        value: value(tag),
    };
    for (from, e) in [
        (2, entry(Ballot::new(0, 4), 4)),
        (1, entry(Ballot::new(0, 1), 1)),
    ] {
        r.step(env(
            from,
            Message::Promise {
                ballot,
                from_slot: 1,
                entries: vec![e],
                next_slot: None,
                decided_upto: 0,
                truncated_upto: 0,
            },
        ));
    }
    assert_eq!(r.status().role, Role::Leader);
    let ready = turn(&mut r);
    assert!(ready.messages.iter().any(
        |m| matches!(&m.message, Message::Accept { slot: 1, value: v, .. } if *v == value(4))
    ));
}

#[test]
fn a_nack_makes_the_leader_step_down_and_learn_the_round() {
    let mut r = candidate();
    r.step(promise(1, vec![]));
    assert_eq!(r.status().role, Role::Leader);
    r.step(env(
        2,
        Message::Nack {
            ballot: Ballot::new(1, 3),
            promised: Ballot::new(7, 2),
        },
    ));
    assert_eq!(r.status().role, Role::Follower);
    // Its next candidacy beats the ballot it was refused for.
    for _ in 0..100 {
        r.tick();
        if r.status().role == Role::Candidate {
            break;
        }
    }
    assert!(r.status().ballot.unwrap() > Ballot::new(7, 2));
}

#[test]
fn a_healthy_leader_is_followed_even_by_a_higher_rank() {
    let mut r = replica(3);
    for _ in 0..50 {
        r.step(env(
            2,
            Message::Heartbeat {
                ballot: Ballot::new(4, 2),
                leader: Some(2),
                decided_upto: 0,
                truncated_upto: 0,
            },
        ));
        r.tick();
    }
    let status = r.status();
    assert_eq!(status.role, Role::Follower);
    assert_eq!(status.leader, Some(2));
}

#[test]
fn the_highest_live_rank_runs_and_the_others_wait() {
    let mut low = replica(1);
    let mut high = replica(3);
    for _ in 0..12 {
        // Both hear rank 2 (and low hears high) but no leader.
        let hb = |from| {
            env(
                from,
                Message::Heartbeat {
                    ballot: Ballot::default(),
                    leader: None,
                    decided_upto: 0,
                    truncated_upto: 0,
                },
            )
        };
        low.step(hb(2));
        low.step(hb(3));
        high.step(hb(2));
        low.tick();
        high.tick();
    }
    assert_eq!(low.status().role, Role::Follower);
    assert_eq!(high.status().role, Role::Candidate);
}

#[test]
fn commands_are_batched_into_one_slot_per_ready() {
    let mut r = Replica::new(config(1, &[1]), Persisted::default()).unwrap();
    for _ in 0..10 {
        r.tick();
    }
    assert_eq!(r.status().role, Role::Leader);
    let _ = turn(&mut r);
    for seq in 1..=3 {
        r.propose(put(seq)).unwrap();
    }
    let ready = turn(&mut r);
    assert_eq!(ready.decided.len(), 1);
    assert_eq!(ready.decided[0].1.commands.len(), 3);
    // Bounded queue.
    for seq in 0..8 {
        r.propose(put(seq)).unwrap();
    }
    assert_eq!(r.propose(put(9)).unwrap_err().code, ErrorCode::Overloaded);
    let huge = Command {
        client_id: 1,
        seq: 1,
        op: Op::Put {
            key: "k".into(),
            value: "x".repeat(proto::limits::MAX_BATCH_BYTES),
        },
        session: None,
    };
    assert_eq!(r.propose(huge).unwrap_err().code, ErrorCode::TooLarge);
}

#[test]
fn restart_keeps_promise_and_replays_decided_slots() {
    let mut r = replica(1);
    r.step(env(
        3,
        Message::Accept {
            ballot: Ballot::new(3, 3),
            slot: 1,
            value: value(1),
            decided_upto: 0,
        },
    ));
    r.step(env(
        3,
        Message::Decided {
            entries: vec![DecidedEntry {
                slot: 1,
                value: value(1),
            }],
        },
    ));
    r.step(env(
        3,
        Message::Accept {
            ballot: Ballot::new(3, 3),
            slot: 2,
            value: value(2),
            decided_upto: 1,
        },
    ));
    let ready = turn(&mut r);
    let persisted = Persisted::from_records(ready.records());
    let mut again = Replica::new(config(1, &[1, 2, 3]), persisted).unwrap();
    assert_eq!(again.status().promised, Ballot::new(3, 3));
    assert!(
        again.status().lamport >= 2,
        "the clock restarts above the values it holds"
    );
    assert_eq!(turn(&mut again).decided, vec![(1, value(1))]);
    again.step(env(
        2,
        Message::Prepare {
            ballot: Ballot::new(2, 2),
            from_slot: 2,
        },
    ));
    let ready = turn(&mut again);
    assert!(matches!(only_message(&ready), Message::Nack { .. }));
}

#[test]
fn a_lagging_replica_installs_a_snapshot_from_a_truncated_peer() {
    let mut ahead = replica(2);
    for slot in 1..=5 {
        ahead.step(env(
            3,
            Message::Decided {
                entries: vec![DecidedEntry {
                    slot,
                    value: value(slot),
                }],
            },
        ));
    }
    let _ = turn(&mut ahead);
    let bytes = Arc::new(vec![7u8; proto::paxos::MAX_SNAPSHOT_CHUNK_BYTES + 100]);
    ahead.snapshot_taken(5, bytes.clone());
    assert_eq!(turn(&mut ahead).records(), [Record::Truncate { upto: 5 }]);
    let mut behind = replica(1);
    behind.step(env(
        2,
        Message::Heartbeat {
            ballot: Ballot::default(),
            leader: None,
            decided_upto: 5,
            truncated_upto: 5,
        },
    ));
    // Shuttle messages between the two until the snapshot is in.
    let mut installed = None;
    for _ in 0..20 {
        behind.tick();
        let ready = turn(&mut behind);
        if let Some(snapshot) = ready.install_snapshot {
            installed = Some(snapshot);
            break;
        }
        for m in ready.messages.into_iter().filter(|m| m.to == Some(2)) {
            ahead.step(m);
        }
        for m in turn(&mut ahead)
            .messages
            .into_iter()
            .filter(|m| m.to == Some(1))
        {
            behind.step(m);
        }
    }
    let (slot, got) = installed.expect("snapshot installed");
    assert_eq!(slot, 5);
    assert_eq!(got, bytes);
    assert_eq!(behind.status().decided_upto, 5);
}

#[test]
fn a_candidate_asks_for_the_rest_of_a_cut_promise_before_leading() {
    let mut r = candidate();
    let entry = |slot| PromiseEntry {
        slot,
        ballot: Some(Ballot::new(0, 1)),
        value: value(slot),
    };
    let chunk = |from_slot, entries, next_slot| {
        env(
            1,
            Message::Promise {
                ballot: Ballot::new(1, 3),
                from_slot,
                entries,
                next_slot,
                decided_upto: 0,
                truncated_upto: 0,
            },
        )
    };
    r.step(chunk(1, vec![entry(1)], Some(2)));
    // Not complete yet: it asks node 1 for the rest, and does not lead.
    assert_eq!(r.status().role, Role::Candidate);
    let ready = turn(&mut r);
    assert_eq!(ready.messages.len(), 1);
    assert_eq!(ready.messages[0].to, Some(1));
    assert!(matches!(
        ready.messages[0].message,
        Message::Prepare { from_slot: 2, .. }
    ));
    // A chunk that skips ahead of what was asked is ignored.
    r.step(chunk(5, vec![entry(5)], None));
    assert_eq!(r.status().role, Role::Candidate);
    r.step(chunk(2, vec![entry(2)], None));
    assert_eq!(r.status().role, Role::Leader);
    let ready = turn(&mut r);
    let accepts: Vec<Slot> = ready
        .messages
        .iter()
        .filter_map(|m| match &m.message {
            Message::Accept { slot, .. } => Some(*slot),
            _ => None,
        })
        .collect();
    assert_eq!(accepts, vec![1, 2]);
}

fn forwards(ready: &Ready) -> Vec<(Option<Rank>, Vec<u64>)> {
    ready
        .messages
        .iter()
        .filter_map(|e| match &e.message {
            Message::Forward { commands } => Some((e.to, commands.iter().map(|c| c.seq).collect())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_follower_forwards_ahead_of_its_vote_while_the_leader_is_busy() {
    let mut r = replica(1);
    let ballot = Ballot::new(1, 3);
    let accept = |slot: Slot| accept_from(3, ballot, slot, slot - 1);
    // Following 3, nothing in flight: a command goes to the leader at once.
    r.step(env(
        3,
        Message::Heartbeat {
            ballot,
            leader: Some(3),
            decided_upto: 0,
            truncated_upto: 0,
        },
    ));
    let _ = turn(&mut r);
    r.propose(put(1)).unwrap();
    assert_eq!(forwards(&turn(&mut r)), vec![(Some(3), vec![1])]);
    // Slot 1 in flight (accepted here, not decided), the vote still waiting for the
    // disk: a command goes at once, it reaches the leader before the vote does.
    r.step(accept(1));
    let voted = r.ready();
    assert!(voted.messages.is_empty(), "the vote waits for its record");
    r.propose(put(20)).unwrap();
    assert_eq!(forwards(&r.ready()), vec![(Some(3), vec![20])]);
    // Once the vote has left (its record is durable), commands wait...
    r.persisted(voted.persist.map_or(0, |g| g.number));
    let released = r.ready();
    assert!(matches!(
        only_message(&released),
        Message::Accepted { slot: 1, .. }
    ));
    r.propose(put(2)).unwrap();
    assert!(forwards(&turn(&mut r)).is_empty());
    r.propose(put(3)).unwrap();
    assert!(forwards(&turn(&mut r)).is_empty());
    // ... and leave in one message when the next Accept arrives, ahead of the vote for
    // it, which is when the leader cuts its next batch.
    r.step(env(3, Message::Decide { slot: 1, ballot }));
    r.step(accept(2));
    let ready = turn(&mut r);
    assert_eq!(forwards(&ready), vec![(Some(3), vec![2, 3])]);
    assert!(
        ready
            .messages
            .iter()
            .any(|e| matches!(e.message, Message::Accepted { slot: 2, .. }))
    );
    // Slot 2 in flight and its Decide lost: a command waits at most until the next tick.
    r.propose(put(4)).unwrap();
    assert!(forwards(&turn(&mut r)).is_empty());
    r.tick();
    assert_eq!(forwards(&turn(&mut r)), vec![(Some(3), vec![4])]);
    // Once the slot is decided here, nothing is in flight: at once again.
    r.step(env(3, Message::Decide { slot: 2, ballot }));
    let _ = turn(&mut r);
    r.propose(put(5)).unwrap();
    assert_eq!(forwards(&turn(&mut r)), vec![(Some(3), vec![5])]);
    // Slot 3 learnt from this vote and the leader's, before the leader's Decide: the
    // leader is cutting its next batch, so commands still wait for the next Accept...
    r.step(accept(3));
    r.step(env(3, Message::Accepted { ballot, slot: 3 }));
    assert_eq!(turn(&mut r).decided, vec![(3, value(3))]);
    r.propose(put(6)).unwrap();
    assert!(forwards(&turn(&mut r)).is_empty());
    // ... or for the Decide, which says the leader is done with it.
    r.step(env(3, Message::Decide { slot: 3, ballot }));
    assert_eq!(forwards(&turn(&mut r)), vec![(Some(3), vec![6])]);
}

#[test]
fn a_decide_names_the_ballot_and_the_value_accepted_in_it_is_learnt() {
    let mut r = replica(1);
    let accept = |ballot: Ballot, slot: Slot, tag: u64| {
        env(
            3,
            Message::Accept {
                ballot,
                slot,
                value: value(tag),
                decided_upto: 0,
            },
        )
    };
    // Slot 1 accepted in (1,3): a Decide in (1,3) hands it out with that value.
    r.step(accept(Ballot::new(1, 3), 1, 10));
    let _ = turn(&mut r);
    r.step(env(
        3,
        Message::Decide {
            slot: 1,
            ballot: Ballot::new(1, 3),
        },
    ));
    assert_eq!(turn(&mut r).decided, vec![(1, value(10))]);
    // Slot 2 accepted in an older ballot than the one it was decided in: the value here
    // may not be the chosen one, so nothing is learnt; the slot is fetched from the
    // leader on the next tick instead.
    r.step(accept(Ballot::new(1, 3), 2, 20));
    let _ = turn(&mut r);
    r.step(env(
        3,
        Message::Decide {
            slot: 2,
            ballot: Ballot::new(2, 3),
        },
    ));
    let ready = turn(&mut r);
    assert!(ready.decided.is_empty());
    r.tick();
    let ready = turn(&mut r);
    assert!(
        ready.messages.iter().any(|e| e.to == Some(3)
            && matches!(
                e.message,
                Message::Fetch {
                    from_slot: 2,
                    to_slot: 2
                }
            )),
        "{:?}",
        ready.messages
    );
    // The answer carries the value.
    r.step(env(
        3,
        Message::Decided {
            entries: vec![DecidedEntry {
                slot: 2,
                value: value(21),
            }],
        },
    ));
    assert_eq!(turn(&mut r).decided, vec![(2, value(21))]);
}

#[test]
fn a_follower_learns_from_a_quorum_of_votes_before_the_decide() {
    let ballot = Ballot::new(1, 3);
    let accept = |slot: Slot| accept_from(3, ballot, slot, 0);
    let vote =
        |from: Rank, ballot: Ballot, slot: Slot| env(from, Message::Accepted { ballot, slot });
    // Three replicas: this vote and one peer's are a quorum.
    let mut r = replica(1);
    r.step(accept(1));
    let ready = turn(&mut r);
    assert!(
        ready
            .messages
            .iter()
            .any(|e| e.to.is_none() && matches!(e.message, Message::Accepted { slot: 1, .. })),
        "the vote goes to every node: {:?}",
        ready.messages
    );
    // A vote of another ballot, or for a slot not accepted here, teaches nothing.
    r.step(vote(2, Ballot::new(1, 2), 1));
    r.step(vote(2, ballot, 2));
    assert!(turn(&mut r).decided.is_empty());
    r.step(vote(2, ballot, 1));
    assert_eq!(turn(&mut r).decided, vec![(1, value(1))]);
    // Five replicas: two peers' votes are needed, and a repeated one counts once.
    let mut r = Replica::new(config(1, &[1, 2, 3, 4, 5]), Persisted::default()).unwrap();
    r.step(accept(1));
    let _ = turn(&mut r);
    r.step(vote(2, ballot, 1));
    r.step(vote(2, ballot, 1));
    assert!(turn(&mut r).decided.is_empty());
    r.step(vote(4, ballot, 1));
    assert_eq!(turn(&mut r).decided, vec![(1, value(1))]);
}

#[test]
fn votes_of_an_earlier_ballot_do_not_count_in_a_newer_one() {
    // Five replicas, quorum three. Replica 5 accepts slot 1 in ballot 1.4 and hears one
    // peer's vote for it; then it leads ballot 2.5 itself, re-proposes the value, and is
    // deposed. A vote of 2.5 must not add up with the vote of 1.4: that is two votes of
    // one ballot (with its own), not a quorum.
    let members = [1, 2, 3, 4, 5];
    let mut r = Replica::new(config(5, &members), Persisted::default()).unwrap();
    let old = Ballot::new(1, 4);
    r.step(accept_from(4, old, 1, 0));
    let _ = turn(&mut r);
    r.step(env(
        1,
        Message::Accepted {
            ballot: old,
            slot: 1,
        },
    ));
    assert!(turn(&mut r).decided.is_empty(), "two votes of five");
    for _ in 0..100 {
        r.tick();
        if r.status().role == Role::Candidate {
            break;
        }
    }
    assert_eq!(r.status().role, Role::Candidate);
    let _ = turn(&mut r);
    let new = r.status().ballot.expect("a candidate has a ballot");
    for from in [2, 3] {
        r.step(env(
            from,
            Message::Promise {
                ballot: new,
                from_slot: 1,
                entries: vec![],
                next_slot: None,
                decided_upto: 0,
                truncated_upto: 0,
            },
        ));
    }
    assert_eq!(r.status().role, Role::Leader);
    let ready = turn(&mut r);
    assert!(
        ready.messages.iter().any(|e| matches!(
            &e.message,
            Message::Accept { slot: 1, ballot, value: v, .. } if *ballot == new && *v == value(1)
        )),
        "re-proposes the value it accepted: {:?}",
        ready.messages
    );
    r.step(env(
        2,
        Message::Nack {
            ballot: new,
            promised: Ballot::new(9, 3),
        },
    ));
    assert_eq!(r.status().role, Role::Follower);
    r.step(env(
        2,
        Message::Accepted {
            ballot: new,
            slot: 1,
        },
    ));
    assert!(
        turn(&mut r).decided.is_empty(),
        "a vote of 1.4 and one of {new} are not a quorum of either"
    );
    r.step(env(
        3,
        Message::Accepted {
            ballot: new,
            slot: 1,
        },
    ));
    assert_eq!(turn(&mut r).decided, vec![(1, value(1))]);
}

#[test]
fn the_leader_sends_its_own_vote_once_its_accept_is_durable() {
    let mut leader = candidate();
    leader.step(promise(1, vec![]));
    assert_eq!(leader.status().role, Role::Leader);
    let _ = turn(&mut leader);
    leader.propose(put(1)).unwrap();
    let ready = leader.ready();
    let group = ready.persist.clone().expect("the Accept record");
    let (slot, value) = ready
        .messages
        .iter()
        .find_map(|e| match &e.message {
            Message::Accept { slot, value, .. } => Some((*slot, value.clone())),
            _ => None,
        })
        .expect("the Accept leaves while its record is written");
    let votes = |ready: &Ready| {
        ready
            .messages
            .iter()
            .filter(|e| {
                e.to.is_none()
                    && matches!(e.message, Message::Accepted { slot: s, .. } if s == slot)
            })
            .count()
    };
    assert_eq!(votes(&ready), 0, "no vote before the record is durable");
    leader.persisted(group.number);
    assert_eq!(
        votes(&leader.ready()),
        1,
        "the vote, to every node, once it is"
    );

    // A follower learns the slot from its own vote and the leader's.
    let ballot = Ballot::new(1, 3);
    let mut follower = replica(1);
    follower.step(env(
        3,
        Message::Accept {
            ballot,
            slot,
            value: value.clone(),
            decided_upto: 0,
        },
    ));
    let _ = turn(&mut follower);
    follower.step(env(3, Message::Accepted { ballot, slot }));
    assert_eq!(turn(&mut follower).decided, vec![(slot, value)]);
}

mod reads;
