//! The read-index path at one replica: who asks, when a leader answers at once, when it
//! waits for a confirmation round, and how a round rides with the answers.

use proto::paxos::ConfirmRound;

use super::*;

/// Replica 3 leading ballot 1.3 of `members`, after promises from the next ranks down.
fn leader_of(members: &[Rank]) -> Replica {
    let mut r = Replica::new(config(3, members), Persisted::default()).unwrap();
    for _ in 0..10 {
        r.tick();
    }
    let _ = turn(&mut r);
    let quorum = members.len() / 2 + 1;
    for from in members.iter().copied().filter(|&m| m != 3).take(quorum - 1) {
        r.step(promise(from, vec![]));
    }
    assert_eq!(r.status().role, Role::Leader);
    let _ = turn(&mut r);
    r
}

fn read_index(batch: u64, promised: Ballot) -> Message {
    Message::ReadIndex {
        batch,
        promised: Some(promised),
        confirms: None,
    }
}

/// An ask that also confirms `round` of ballot 1.3.
fn read_index_confirming(batch: u64, promised: Ballot, ballot: Ballot, round: u64) -> Message {
    Message::ReadIndex {
        batch,
        promised: Some(promised),
        confirms: Some(ConfirmRound { ballot, round }),
    }
}

/// The rounds riding with `ReadIndexed` answers: addressee, batch, round.
fn riding(ready: &Ready) -> Vec<(Option<Rank>, u64, ConfirmRound)> {
    ready
        .messages
        .iter()
        .filter_map(|e| match e.message {
            Message::ReadIndexed {
                batch,
                confirm: Some(round),
                ..
            } => Some((e.to, batch, round)),
            _ => None,
        })
        .collect()
}

/// A follower's asks: addressee, batch, the round it confirms.
fn asks(ready: &Ready) -> Vec<(Option<Rank>, u64, Option<ConfirmRound>)> {
    ready
        .messages
        .iter()
        .filter_map(|e| match e.message {
            Message::ReadIndex {
                batch, confirms, ..
            } => Some((e.to, batch, confirms)),
            _ => None,
        })
        .collect()
}

fn answers(ready: &Ready) -> Vec<(Option<Rank>, u64)> {
    indexed(ready)
        .into_iter()
        .map(|(to, batch, _)| (to, batch))
        .collect()
}

/// The `ReadIndexed` answers: addressee, batch, index.
fn indexed(ready: &Ready) -> Vec<(Option<Rank>, u64, Slot)> {
    ready
        .messages
        .iter()
        .filter_map(|e| match e.message {
            Message::ReadIndexed { batch, slot, .. } => Some((e.to, batch, slot)),
            _ => None,
        })
        .collect()
}

fn rounds(ready: &Ready) -> Vec<u64> {
    ready
        .messages
        .iter()
        .filter_map(|e| match e.message {
            Message::Confirm { round, .. } => Some(round),
            _ => None,
        })
        .collect()
}

#[test]
fn a_follower_asks_with_the_ballot_it_promised() {
    let ballot = Ballot::new(1, 3);
    let mut follower = replica(1);
    follower.step(accept_from(3, ballot, 1, 0));
    let _ = turn(&mut follower);
    follower.read(1).unwrap();
    let ready = turn(&mut follower);
    let asks: Vec<_> = ready
        .messages
        .iter()
        .filter_map(|e| match e.message {
            Message::ReadIndex { promised, .. } => Some((e.to, promised)),
            _ => None,
        })
        .collect();
    assert_eq!(asks, vec![(Some(3), Some(ballot))]);
}

#[test]
fn with_three_replicas_a_follower_ask_is_answered_without_a_round() {
    let mut leader = leader_of(&[1, 2, 3]);
    // Slot 1 is proposed, not decided: the index covers it all the same (a write in it
    // may be acknowledged before the read is served).
    leader.propose(put(1)).unwrap();
    let _ = turn(&mut leader);
    leader.step(env(2, read_index(7, Ballot::new(1, 3))));
    let ready = turn(&mut leader);
    assert_eq!(
        indexed(&ready),
        vec![(Some(2), 7, 1)],
        "the ask and the leader: two of three; the index is the last slot proposed"
    );
    assert!(rounds(&ready).is_empty(), "no round: {:?}", ready.messages);
}

#[test]
fn a_replica_that_no_longer_leads_answers_no_ask() {
    let mut leader = leader_of(&[1, 2, 3]);
    leader.step(env(
        1,
        Message::Nack {
            ballot: Ballot::new(1, 3),
            promised: Ballot::new(2, 1),
        },
    ));
    assert_ne!(leader.status().role, Role::Leader);
    leader.step(env(2, read_index(7, Ballot::new(1, 3))));
    let ready = turn(&mut leader);
    assert!(answers(&ready).is_empty(), "{:?}", ready.messages);
    assert!(rounds(&ready).is_empty());
}

#[test]
fn an_ask_from_a_follower_that_promised_higher_waits_for_a_round() {
    let mut leader = leader_of(&[1, 2, 3]);
    leader.step(env(2, read_index(7, Ballot::new(2, 1))));
    let ready = turn(&mut leader);
    assert!(answers(&ready).is_empty(), "the ask vouches for nothing");
    assert_eq!(rounds(&ready), vec![1]);
    leader.step(env(
        1,
        Message::Confirmed {
            ballot: Ballot::new(1, 3),
            round: 1,
        },
    ));
    assert_eq!(answers(&turn(&mut leader)), vec![(Some(2), 7)]);
}

#[test]
fn the_leaders_own_reads_wait_for_a_round() {
    let mut leader = leader_of(&[1, 2, 3]);
    leader.read(5).unwrap();
    let ready = turn(&mut leader);
    assert!(ready.reads.is_empty(), "its own acceptor is not a quorum");
    assert_eq!(rounds(&ready), vec![1]);
    leader.step(env(
        2,
        Message::Confirmed {
            ballot: Ballot::new(1, 3),
            round: 1,
        },
    ));
    assert_eq!(turn(&mut leader).reads, vec![5]);
}

#[test]
fn with_five_replicas_a_follower_ask_still_waits_for_a_round() {
    let mut leader = leader_of(&[1, 2, 3, 4, 5]);
    leader.step(env(2, read_index(7, Ballot::new(1, 3))));
    let ready = turn(&mut leader);
    assert!(answers(&ready).is_empty(), "two of five are not a quorum");
    assert_eq!(rounds(&ready), vec![1]);
    let confirmed = |from| {
        env(
            from,
            Message::Confirmed {
                ballot: Ballot::new(1, 3),
                round: 1,
            },
        )
    };
    leader.step(confirmed(4));
    assert!(answers(&turn(&mut leader)).is_empty(), "two of five");
    leader.step(confirmed(5));
    assert_eq!(answers(&turn(&mut leader)), vec![(Some(2), 7)]);
}

/// Leader 3 of three (ballot 1.3) with read 5 of its own and follower 2's ask of batch
/// 7 in one turn, and what that turn handed out.
fn leader_reading_with_an_ask() -> (Replica, Ready) {
    let mut leader = leader_of(&[1, 2, 3]);
    leader.read(5).unwrap();
    leader.step(env(2, read_index(7, Ballot::new(1, 3))));
    let ready = turn(&mut leader);
    (leader, ready)
}

#[test]
fn the_leaders_round_rides_with_an_answer_and_the_next_ask_confirms_it() {
    let ballot = Ballot::new(1, 3);
    let (mut leader, ready) = leader_reading_with_an_ask();
    assert!(ready.reads.is_empty(), "its own acceptor is not a quorum");
    assert!(
        rounds(&ready).is_empty(),
        "no broadcast: {:?}",
        ready.messages
    );
    let round = ConfirmRound { ballot, round: 1 };
    assert_eq!(riding(&ready), vec![(Some(2), 7, round)]);
    leader.step(env(2, read_index_confirming(8, ballot, ballot, 1)));
    let ready = turn(&mut leader);
    assert_eq!(ready.reads, vec![5], "the ask confirmed round 1");
    assert_eq!(answers(&ready), vec![(Some(2), 8)]);
}

#[test]
fn an_ask_confirms_no_round_of_another_ballot_nor_above_its_promise() {
    let ballot = Ballot::new(1, 3);
    let (mut leader, _) = leader_reading_with_an_ask();
    // Round 1 of an earlier leadership of this rank: not this round 1.
    leader.step(env(
        2,
        read_index_confirming(8, ballot, Ballot::new(0, 3), 1),
    ));
    assert!(turn(&mut leader).reads.is_empty());
    // The asker promised a higher ballot since: it confirms nothing.
    let higher = Ballot::new(2, 1);
    leader.step(env(2, read_index_confirming(9, higher, ballot, 1)));
    assert!(turn(&mut leader).reads.is_empty());
    leader.step(env(1, Message::Confirmed { ballot, round: 1 }));
    assert_eq!(
        turn(&mut leader).reads,
        vec![5],
        "a real confirmation still counts"
    );
}

#[test]
fn a_round_with_too_few_answers_for_a_quorum_is_broadcast() {
    let ballot = Ballot::new(1, 3);
    let mut leader = leader_of(&[1, 2, 3, 4, 5]);
    let confirmed = |from, round| env(from, Message::Confirmed { ballot, round });
    leader.step(env(2, read_index(7, ballot)));
    assert_eq!(rounds(&turn(&mut leader)), vec![1]);
    leader.step(confirmed(4, 1));
    leader.step(confirmed(5, 1));
    // Round 2 goes out in the turn that answers batch 7: one follower and the leader are
    // two of five, so it is broadcast, not ridden.
    leader.read(5).unwrap();
    let ready = turn(&mut leader);
    assert_eq!(answers(&ready), vec![(Some(2), 7)]);
    assert_eq!(rounds(&ready), vec![2]);
    assert!(riding(&ready).is_empty());
}

/// Follower 1 of leader 3 (ballot 1.3), with batch `asked` in flight.
fn follower_asking() -> (Replica, u64) {
    let mut follower = replica(1);
    follower.step(accept_from(3, Ballot::new(1, 3), 1, 0));
    let _ = turn(&mut follower);
    follower.read(1).unwrap();
    let ready = turn(&mut follower);
    let [(Some(3), asked, None)] = asks(&ready)[..] else {
        panic!("one ask of the leader: {:?}", ready.messages);
    };
    (follower, asked)
}

fn answer_riding(batch: u64, round: u64) -> Envelope {
    env(
        3,
        Message::ReadIndexed {
            batch,
            slot: 0,
            confirm: Some(ConfirmRound {
                ballot: Ballot::new(1, 3),
                round,
            }),
        },
    )
}

fn confirmations(ready: &Ready) -> Vec<(Option<Rank>, u64)> {
    ready
        .messages
        .iter()
        .filter_map(|e| match e.message {
            Message::Confirmed { round, .. } => Some((e.to, round)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_follower_confirms_a_riding_round_with_its_next_ask_or_a_confirmed() {
    let (mut follower, asked) = follower_asking();
    // Reads wait for the next ask: it carries the confirmation.
    follower.read(2).unwrap();
    follower.step(answer_riding(asked, 1));
    let ready = turn(&mut follower);
    assert_eq!(ready.reads, vec![1]);
    let round = ConfirmRound {
        ballot: Ballot::new(1, 3),
        round: 1,
    };
    let [(Some(3), next, Some(confirms))] = asks(&ready)[..] else {
        panic!("an ask that confirms: {:?}", ready.messages);
    };
    assert_eq!(confirms, round);
    assert!(confirmations(&ready).is_empty(), "{:?}", ready.messages);
    // Nothing to ask: a `Confirmed` of its own.
    follower.step(answer_riding(next, 2));
    let ready = turn(&mut follower);
    assert_eq!(ready.reads, vec![2]);
    assert!(asks(&ready).is_empty());
    assert_eq!(confirmations(&ready), vec![(Some(3), 2)]);
}

#[test]
fn a_follower_that_promised_higher_refuses_a_riding_round() {
    let (mut follower, asked) = follower_asking();
    follower.step(env(
        2,
        Message::Prepare {
            ballot: Ballot::new(2, 2),
            from_slot: 1,
        },
    ));
    follower.step(answer_riding(asked, 1));
    let ready = turn(&mut follower);
    assert!(confirmations(&ready).is_empty());
    assert!(
        ready.messages.iter().any(|e| e.to == Some(3)
            && matches!(e.message, Message::Nack { ballot, .. } if ballot == Ballot::new(1, 3))),
        "{:?}",
        ready.messages
    );
}

#[test]
fn a_riding_round_left_unconfirmed_is_broadcast_after_two_ticks() {
    let ballot = Ballot::new(1, 3);
    let (mut leader, ready) = leader_reading_with_an_ask();
    assert_eq!(riding(&ready).len(), 1);
    // Follower 2 never asks again (its answer was lost, or it paused): the other
    // follower is asked as a broadcast would have, two ticks on, not ten.
    leader.tick();
    assert!(
        rounds(&turn(&mut leader)).is_empty(),
        "one tick is not enough"
    );
    leader.tick();
    let ready = turn(&mut leader);
    assert_eq!(rounds(&ready), vec![2], "{:?}", ready.messages);
    leader.step(env(1, Message::Confirmed { ballot, round: 2 }));
    assert_eq!(turn(&mut leader).reads, vec![5]);
}

#[test]
fn a_follower_owes_the_newest_round_of_its_leader() {
    let (mut follower, asked) = follower_asking();
    // Round 2 arrives before round 1 (reordered): round 2 is confirmed, and covers 1.
    follower.step(answer_riding(asked, 2));
    follower.step(answer_riding(asked, 1));
    let ready = turn(&mut follower);
    assert_eq!(confirmations(&ready), vec![(Some(3), 2)]);
}
