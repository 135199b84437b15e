//! Scenario tests: the classic traps of Multi-Paxos, one per test, on a deterministic
//! cluster ([`cluster::Cluster`]) where the test decides which messages are lost.

mod cluster;

use cluster::{Cluster, put};
use paxos::{Ballot, Envelope, Message, Role};
use proto::{Command, Op, Reply};

/// Every live replica applied the same slots (agreement is checked on every apply).
fn assert_converged(cluster: &Cluster, ranks: &[u32]) {
    let slot = cluster.store(ranks[0]).applied_slot();
    let digest = cluster.store(ranks[0]).digest();
    for &r in ranks {
        assert_eq!(cluster.store(r).applied_slot(), slot, "node {r}");
        assert_eq!(cluster.store(r).digest(), digest, "node {r}");
    }
}

#[test]
fn the_highest_rank_leads_and_commands_are_applied_everywhere() {
    let mut c = Cluster::new(3);
    assert_eq!(c.settle(100), 3);
    c.propose(1, put(1, 1, "a", "x"));
    c.propose(2, put(2, 1, "b", "y"));
    c.ticks(5);
    for r in 1..=3 {
        assert_eq!(c.store(r).get("a"), Some("x"));
        assert_eq!(c.store(r).get("b"), Some("y"));
    }
    assert_converged(&c, &[1, 2, 3]);
}

#[test]
fn leader_change_with_slots_in_flight() {
    let mut c = Cluster::new(3);
    assert_eq!(c.settle(100), 3);
    // The followers accept, but their Accepted votes reach nobody: three slots are
    // accepted by a majority and decided by nobody when the leader crashes.
    c.drop_when(|_, _, m| matches!(m, Message::Accepted { .. }));
    let commands: Vec<Command> = (1..=3)
        .map(|seq| put(1, seq, &format!("k{seq}"), &format!("v{seq}")))
        .collect();
    for command in &commands {
        c.propose(3, command.clone());
    }
    assert_eq!(c.status(3).in_flight_slots, 3);
    assert_eq!(c.status(1).decided_upto, 0);
    c.crash(3);
    c.heal();
    assert_eq!(c.settle(100), 2);
    // The new leader re-proposed every in-flight slot: each command decided exactly once.
    for command in &commands {
        assert_eq!(c.slots_of(command).len(), 1, "{command:?}");
    }
    for r in 1..=2 {
        assert_eq!(c.store(r).get("k3"), Some("v3"));
    }
    // The old leader returns and catches up.
    c.restart(3);
    c.ticks(30);
    assert_eq!(c.leader(), Some(2));
    assert_converged(&c, &[1, 2, 3]);
}

#[test]
fn a_new_leader_fills_holes_with_noops() {
    let mut c = Cluster::new(3);
    assert_eq!(c.settle(100), 3);
    // Slot 2's Accept is lost everywhere; slots 1 and 3 are accepted by node 2 (a
    // majority with the leader), whose Accepted are lost: nothing is decided.
    c.drop_when(|from, to, m| match m {
        Message::Accept { slot, .. } => from == 3 && (*slot == 2 || to == 1),
        Message::Accepted { .. } => true,
        _ => false,
    });
    let commands: Vec<Command> = (1..=3)
        .map(|seq| put(1, seq, "k", &format!("v{seq}")))
        .collect();
    for command in &commands {
        c.propose(3, command.clone());
    }
    assert!(c.chosen(1).is_none());
    c.crash(3);
    c.heal();
    assert_eq!(c.settle(100), 2);
    // Phase 1 found slots 1 and 3; slot 2 became a no-op, and new commands come after.
    assert_eq!(c.slots_of(&commands[0]), vec![1]);
    assert!(c.chosen(2).unwrap().is_noop());
    assert_eq!(c.slots_of(&commands[2]), vec![3]);
    assert!(c.slots_of(&commands[1]).is_empty());
    let next = put(1, 4, "k", "v4");
    c.propose(1, next.clone());
    c.ticks(5);
    assert_eq!(c.slots_of(&next), vec![4]);
}

#[test]
fn a_value_a_majority_accepted_is_reproposed_by_a_leader_that_never_saw_it() {
    let mut c = Cluster::new(5);
    assert_eq!(c.settle(100), 5);
    // V reaches nodes 1 and 2 only: with the leader that is 3 of 5, so V is chosen,
    // though nobody knows it yet.
    c.drop_when(|from, to, m| {
        (from == 5 && (to == 3 || to == 4) && matches!(m, Message::Accept { .. }))
            || matches!(m, Message::Accepted { .. })
    });
    let v = put(7, 1, "key", "V");
    c.propose(5, v.clone());
    assert_eq!(c.status(1).decided_upto, 0);
    c.crash(5);
    c.heal();
    // Node 4, which never saw V, leads now; its phase 1 must find V (any majority holds
    // one of nodes 1 and 2) and re-propose it in the same slot.
    assert_eq!(c.settle(100), 4);
    assert_eq!(c.slots_of(&v), vec![1]);
    for r in 1..=4 {
        assert_eq!(c.store(r).get("key"), Some("V"), "node {r}");
    }
}

#[test]
fn a_value_only_a_minority_accepted_may_be_replaced_but_consistently() {
    let mut c = Cluster::new(5);
    assert_eq!(c.settle(100), 5);
    // V reaches node 1 only: 2 of 5 accepted it, it cannot have been chosen.
    c.drop_when(|from, to, m| from == 5 && to != 1 && matches!(m, Message::Accept { .. }));
    let v = put(7, 1, "key", "V");
    c.propose(5, v.clone());
    c.crash(5);
    // Node 1 is slow to answer the new leader: its phase 1 quorum is {2, 3, 4}, which
    // knows nothing of slot 1 — so slot 1 is free for the new leader's next command.
    c.heal();
    c.drop_when(|from, _, m| from == 1 && matches!(m, Message::Promise { .. }));
    assert_eq!(c.settle(100), 4);
    c.heal();
    let w = put(8, 1, "key", "W");
    c.propose(2, w.clone());
    c.ticks(20);
    assert_eq!(c.slots_of(&w), vec![1]);
    assert!(c.slots_of(&v).is_empty());
    // Node 1 accepted V, but accepts W in a higher ballot and applies it like everyone.
    for r in 1..=4 {
        assert_eq!(c.store(r).get("key"), Some("W"), "node {r}");
    }
    assert_converged(&c, &[1, 2, 3, 4]);
}

#[test]
fn a_deposed_leader_on_the_minority_side_decides_nothing_once_healed() {
    let mut c = Cluster::new(5);
    assert_eq!(c.settle(100), 5);
    c.propose(1, put(1, 1, "k", "before"));
    // Nobody hears node 5 any more, and node 4 (the next leader) cannot reach it: node 5
    // still hears a majority, so it keeps believing it leads.
    for other in 1..=4 {
        c.cut(5, other);
    }
    c.cut(4, 5);
    let x = put(2, 1, "k", "from-the-deposed-leader");
    c.propose(5, x.clone());
    let new_leader = c.settle_without(5, 100);
    assert_eq!(new_leader, 4);
    assert_eq!(c.status(5).role, Role::Leader, "node 5 does not know yet");
    let y = put(3, 1, "k", "from-the-majority");
    c.propose(1, y.clone());
    c.ticks(5);
    assert_eq!(c.store(1).get("k"), Some("from-the-majority"));
    // Heal: node 5's retransmitted Accepts carry its old ballot and are refused; it steps
    // down and learns the majority's log. X is never decided.
    c.heal();
    c.ticks(30);
    assert_eq!(c.status(5).role, Role::Follower);
    assert_eq!(c.status(5).leader, Some(4));
    assert!(c.slots_of(&x).is_empty());
    assert_eq!(c.slots_of(&y).len(), 1);
    for r in 1..=5 {
        assert_eq!(c.store(r).get("k"), Some("from-the-majority"), "node {r}");
    }
    assert_converged(&c, &[1, 2, 3, 4, 5]);
}

#[test]
fn a_client_retry_landing_after_a_leader_change_executes_once() {
    let mut c = Cluster::new(3);
    assert_eq!(c.settle(100), 3);
    // A compare-and-set that succeeds once and would fail if executed twice.
    let cas = Command {
        client_id: 9,
        seq: 1,
        op: Op::Cas {
            key: "k".into(),
            expected: None,
            new: "once".into(),
        },
        session: None,
    };
    // The command is accepted by a majority, but the leader crashes before deciding (and
    // the votes reach no other learner).
    c.drop_when(|_, _, m| matches!(m, Message::Accepted { .. }));
    c.propose(1, cas.clone());
    c.crash(3);
    c.heal();
    // Node 2 takes over and re-proposes the command it accepted; then the client, which
    // timed out, retries at node 2.
    assert_eq!(c.settle(100), 2);
    c.propose(2, cas.clone());
    c.ticks(10);
    // The command is in the log twice (the re-proposal and the retry)...
    assert_eq!(c.slots_of(&cas).len(), 2);
    // ...and took effect once: the second application is a duplicate with the same reply.
    let at_2: Vec<_> = c
        .answers
        .iter()
        .filter(|a| a.node == 2 && a.client_id == 9)
        .collect();
    assert_eq!(at_2.len(), 2);
    assert!(!at_2[0].duplicate);
    assert!(at_2[1].duplicate);
    assert_eq!(at_2[0].result, Ok(Reply::Done));
    assert_eq!(at_2[1].result, at_2[0].result);
    assert_eq!(c.store(2).get("k"), Some("once"));
}

#[test]
fn a_restarted_acceptor_keeps_its_promise() {
    let mut c = Cluster::new(3);
    assert_eq!(c.settle(100), 3);
    let promised = c.status(1).promised;
    assert_eq!(promised.rank, 3);
    c.crash(1);
    c.restart(1);
    assert_eq!(c.status(1).promised, promised);
    // A lower ballot, in phase 1 or phase 2, is refused with the promise.
    let lower = Ballot::new(promised.round, 2);
    for message in [
        Message::Prepare {
            ballot: lower,
            from_slot: 1,
        },
        Message::Accept {
            ballot: lower,
            slot: 1,
            value: paxos::Value::noop(1),
            decided_upto: 0,
        },
    ] {
        let out = c.inject(
            1,
            Envelope {
                from: 2,
                to: Some(1),
                lamport: 1,
                message,
            },
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].message,
            Message::Nack {
                ballot: lower,
                promised
            }
        );
    }
}

#[test]
fn a_returning_node_does_not_take_over_from_a_healthy_leader() {
    let mut c = Cluster::new(3);
    assert_eq!(c.settle(100), 3);
    c.crash(3);
    assert_eq!(c.settle(100), 2);
    c.propose(1, put(1, 1, "k", "v"));
    c.restart(3);
    c.ticks(200);
    assert_eq!(c.leader(), Some(2));
    assert_eq!(c.status(3).role, Role::Follower);
    assert_eq!(c.status(3).leader, Some(2));
    assert_eq!(c.store(3).get("k"), Some("v"));
}

#[test]
fn duelling_candidates_settle_on_one_leader() {
    // Nodes 2 and 3 cannot hear each other, so each believes it is the highest live node
    // and runs; their ballots keep cancelling each other at node 1 until the seeded
    // back-off separates them... and then the cut heals and node 3 wins for good.
    let mut c = Cluster::new(3);
    c.cut(2, 3);
    c.cut(3, 2);
    c.ticks(100);
    let leader = c.leader().expect("a leader despite the duel");
    c.propose(1, put(1, 1, "k", "v"));
    assert_eq!(c.store(1).get("k"), Some("v"));
    c.heal();
    c.ticks(50);
    assert!(c.leader() == Some(leader) || c.leader() == Some(3));
    c.propose(1, put(1, 2, "k", "w"));
    c.ticks(10);
    for r in 1..=3 {
        assert_eq!(c.store(r).get("k"), Some("w"));
    }
}
