//! Unit tests of `peers.rs`.

use super::*;
use paxos::{Ballot, Value};
use proto::fabric::Member;

fn seal() -> Seal {
    let keys = proto::seal::Keyring::parse(KEY).unwrap();
    Seal::new(keys, Metrics::new())
}

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A peer frame as a node with the cluster key publishes it.
fn frames(topic: &str, sender: &str, body: Vec<u8>) -> Vec<Vec<u8>> {
    let sealed = seal().seal(&[PEER_FRAME, topic.as_bytes(), sender.as_bytes()], &body);
    vec![
        topic.as_bytes().to_vec(),
        sender.as_bytes().to_vec(),
        sealed,
    ]
}

fn decode(
    frames: &[Vec<u8>],
    own_name: &str,
    topics: &[Vec<u8>],
) -> Result<Option<Inbound>, &'static str> {
    super::decode(frames, own_name, topics, &seal())
}

fn accept() -> Envelope {
    Envelope {
        from: 3,
        to: None,
        lamport: 1,
        message: Message::Accept {
            ballot: Ballot::new(1, 3),
            slot: 1,
            value: Value::noop(1),
            decided_upto: 0,
        },
    }
}

#[test]
fn broadcast_topics() {
    let prepare = Message::Prepare {
        ballot: Ballot::new(1, 1),
        from_slot: 1,
    };
    assert_eq!(broadcast_topic(&prepare, 2), "paxos.prepare.2");
    let heartbeat = Message::Heartbeat {
        ballot: Ballot::new(1, 1),
        leader: None,
        decided_upto: 0,
        truncated_upto: 0,
    };
    assert_eq!(broadcast_topic(&heartbeat, 3), "heartbeat.3");
    let fetch = Message::Fetch {
        from_slot: 1,
        to_slot: 2,
    };
    assert_eq!(broadcast_topic(&fetch, 2), topic::REPL);
}

#[test]
fn a_node_listens_to_its_peers_broadcasts_not_its_own() {
    let topics = paxos_topics("node-2", 2, 3);
    let has = |t: &str| topics.iter().any(|x| x == t.as_bytes());
    for kind in topic::RANKED_BROADCASTS {
        assert!(has(&topic::from_rank(kind, 1)));
        assert!(has(&topic::from_rank(kind, 3)));
        assert!(!has(&topic::from_rank(kind, 2)), "its own {kind}");
    }
    assert!(has("to.node-2") && has(topic::REPL) && !has("to.node-1"));
    // Exact topics: rank 1's subscription prefix also matches rank 10's topics.
    let ten = topic::from_rank(topic::PAXOS_ACCEPT, 10);
    assert!(!has(&ten));
}

#[test]
fn peer_frames_are_checked_before_they_are_decoded() {
    let topics = paxos_topics("node-1", 1, 3);
    let body = proto::encode(&accept()).unwrap();
    let decoded = decode(
        &frames("paxos.accept.3", "node-3", body.clone()),
        "node-1",
        &topics,
    );
    assert!(matches!(
        decoded,
        Ok(Some(Inbound::Paxos { ref sender, .. })) if sender == "node-3"
    ));
    // Its own broadcast, and a prefix match for another node: nothing, no error.
    let own = decode(
        &frames("paxos.accept.3", "node-1", body.clone()),
        "node-1",
        &topics,
    );
    assert_eq!(own, Ok(None));
    let other = decode(
        &frames("to.node-10", "node-3", body.clone()),
        "node-1",
        &topics,
    );
    assert_eq!(other, Ok(None));
    // Malformed frames are refused with a reason.
    let two = vec![b"paxos.accept.3".to_vec(), body.clone()];
    assert_eq!(decode(&two, "node-1", &topics), Err("bad_layout"));
    let bad_name = decode(&frames("paxos.accept.3", "no de", body), "node-1", &topics);
    assert_eq!(bad_name, Err("bad_sender"));
    let junk = decode(
        &frames("paxos.accept.3", "node-3", vec![1, 2, 3]),
        "node-1",
        &topics,
    );
    assert_eq!(junk, Err("bad_envelope"));
    let clock = decode(&frames("clock", "node-3", vec![0xff]), "node-1", &topics);
    assert_eq!(clock, Err("bad_clock"));
}

#[test]
fn a_frame_that_does_not_open_is_refused_before_it_is_decoded() {
    let topics = paxos_topics("node-1", 1, 3);
    let body = proto::encode(&accept()).unwrap();
    // The forger's way: a well-formed envelope in clear, and one under another key.
    let clear = vec![b"paxos.accept.3".to_vec(), b"node-3".to_vec(), body.clone()];
    assert_eq!(decode(&clear, "node-1", &topics), Err(UNSEALED));
    let other = proto::seal::Keyring::parse(&proto::seal::Keyring::generate_line()).unwrap();
    let mut foreign = clear.clone();
    foreign[2] = other.seal(&[PEER_FRAME, b"paxos.accept.3", b"node-3"], &body);
    assert_eq!(decode(&foreign, "node-1", &topics), Err(UNSEALED));
    // An authentic frame moved to another sender or topic, or with a bit flipped.
    let good = frames("paxos.accept.3", "node-3", body);
    let mut moved = good.clone();
    moved[1] = b"node-2".to_vec();
    assert_eq!(decode(&moved, "node-1", &topics), Err(UNSEALED));
    let mut retopic = good.clone();
    retopic[0] = b"paxos.accept.2".to_vec();
    assert_eq!(decode(&retopic, "node-1", &topics), Err(UNSEALED));
    let mut flipped = good.clone();
    let last = flipped[2].len() - 1;
    flipped[2][last] ^= 1;
    assert_eq!(decode(&flipped, "node-1", &topics), Err(UNSEALED));
    // A membership event in clear names nobody.
    let event = MembershipEvent {
        epoch: 1,
        members: vec![],
    };
    let clear = vec![
        topic::MEMBERSHIP.as_bytes().to_vec(),
        proto::encode(&event).unwrap(),
    ];
    assert_eq!(decode(&clear, "node-1", &[]), Err(UNSEALED));
}

#[test]
fn a_probe_comes_back_to_its_sender_only() {
    let probe = frames("probe.node-1", "node-1", vec![0; 9]);
    assert_eq!(
        decode(&probe, "node-1", &[]),
        Ok(Some(Inbound::Probe(vec![0; 9])))
    );
    // Another node's probe (the SUB prefix `probe.node-1` lets `probe.node-10` in).
    let other = frames("probe.node-10", "node-10", vec![0; 9]);
    assert_eq!(decode(&other, "node-1", &[]), Ok(None));
}

#[test]
fn membership_names_the_members() {
    let event = MembershipEvent {
        epoch: 1,
        members: vec![Member {
            node: "node-2".to_owned(),
            rank: 2,
            status_addr: String::new(),
            last_heartbeat_unix_ms: 0,
            alive: true,
        }],
    };
    let body = proto::encode(&event).unwrap();
    let topic = topic::MEMBERSHIP.as_bytes();
    let sealed = seal().seal(&[MEMBERSHIP_EVENT, topic], &body);
    let frames = vec![topic.to_vec(), sealed];
    assert_eq!(
        decode(&frames, "node-1", &[]),
        Ok(Some(Inbound::Members {
            epoch: 1,
            members: vec![(2, "node-2".to_owned(), String::new())]
        }))
    );
}

#[test]
fn an_older_membership_epoch_is_a_replay_and_names_nobody() {
    let mut newest = MembershipEpoch::default();
    assert!(newest.take(5));
    assert!(newest.take(5), "the same epoch, published again");
    assert!(newest.take(7));
    assert!(!newest.take(6), "a recorded event, replayed");
    assert!(!newest.take(1));
    assert!(newest.take(8));
}
