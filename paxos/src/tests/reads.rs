//! The read-index path at one replica: who asks, when a leader answers at once, and when
//! it waits for a confirmation round.

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
    }
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
            Message::ReadIndexed { batch, slot } => Some((e.to, batch, slot)),
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
