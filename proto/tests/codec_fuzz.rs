//! Decoding never panics and never trusts a length: random bytes and mutated valid
//! frames, for every message type on the wire, give a value or a typed error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use proptest::prelude::*;
use proto::client::{ChatMessage, Target};
use proto::fabric::{Member, MembershipEvent, NodeToBroker, RefReply, RefRequest};
use proto::paxos::{Ballot, Envelope, Message, Value};
use proto::{
    Command, Consistency, DecodeError, Error, ErrorCode, Op, Reply, Request, Response, Wire,
};
use proto::{codec, decode, encode, limits};

/// Tries every wire type on one frame; none may panic.
fn decode_all(frame: &[u8]) {
    let _ = decode::<Request>(frame);
    let _ = decode::<Response>(frame);
    let _ = decode::<NodeToBroker>(frame);
    let _ = decode::<RefRequest>(frame);
    let _ = decode::<RefReply>(frame);
    let _ = decode::<MembershipEvent>(frame);
    let _ = decode::<Envelope>(frame);
}

fn valid_frames() -> Vec<Vec<u8>> {
    let command = Command {
        client_id: 7,
        seq: 3,
        op: Op::Put {
            key: "k".into(),
            value: "v".repeat(40),
        },
        session: None,
    };
    let mut frames = vec![
        encode(&Request {
            client_id: 1,
            seq: 2,
            op: command.op.clone(),
            consistency: Consistency::Local,
            credential: None,
        })
        .unwrap(),
        encode(&Request {
            client_id: 1,
            seq: 2,
            op: Op::Cas {
                key: "k".into(),
                expected: None,
                new: "n".into(),
            },
            consistency: Consistency::Linearizable,
            credential: None,
        })
        .unwrap(),
        encode(&Response {
            seq: 9,
            result: Ok(Reply::Messages(vec![ChatMessage {
                id: 1,
                from: "ana".into(),
                to: Target::Channel("general".into()),
                text: "olá".into(),
                slot: 4,
                lamport: 12,
            }])),
            node: "node-1".into(),
            applied_slot: 4,
        })
        .unwrap(),
        encode(&Response {
            seq: 9,
            result: Err(Error::new(ErrorCode::CasMismatch, "was x")),
            node: String::new(),
            applied_slot: 0,
        })
        .unwrap(),
        encode(&NodeToBroker::Ready {
            node: "node-1".into(),
        })
        .unwrap(),
        encode(&RefRequest::Register {
            stamp: proto::fabric::Stamp::next_of_process(),
            node: "node-2".into(),
            status_addr: "127.0.0.1:7002".into(),
        })
        .unwrap(),
        encode(&RefReply::Registered {
            rank: 2,
            members: vec![Member {
                node: "node-2".into(),
                rank: 2,
                status_addr: String::new(),
                last_heartbeat_unix_ms: 1,
                alive: true,
            }],
        })
        .unwrap(),
    ];
    let value = Value {
        lamport: 5,
        commands: vec![command],
    };
    for message in [
        Message::Accept {
            ballot: Ballot { round: 3, rank: 1 },
            slot: 10,
            value: value.clone(),
            decided_upto: 9,
        },
        Message::Decided {
            entries: vec![proto::paxos::DecidedEntry { slot: 10, value }],
        },
        Message::Decide {
            slot: 10,
            ballot: Ballot { round: 3, rank: 1 },
        },
    ] {
        if let Ok(frame) = encode(&Envelope {
            from: 1,
            to: None,
            lamport: 44,
            message,
        }) {
            frames.push(frame);
        }
    }
    frames
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
        let mut versioned = vec![codec::PROTOCOL_VERSION];
        versioned.extend(&bytes);
        decode_all(&versioned);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        pick in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let frames = valid_frames();
        let mut frame = frames[pick.index(frames.len())].clone();
        for (at, byte) in flips {
            let i = at.index(frame.len());
            frame[i] = byte;
        }
        if truncate {
            frame.truncate(cut.index(frame.len() + 1));
        }
        decode_all(&frame);
    }
}

#[test]
fn every_valid_frame_round_trips() {
    for frame in valid_frames() {
        let decoded = [
            decode::<Request>(&frame).is_ok(),
            decode::<Response>(&frame).is_ok(),
            decode::<NodeToBroker>(&frame).is_ok(),
            decode::<RefRequest>(&frame).is_ok(),
            decode::<RefReply>(&frame).is_ok(),
            decode::<Envelope>(&frame).is_ok(),
        ];
        assert!(
            decoded.iter().any(|ok| *ok),
            "a valid frame decodes as its type"
        );
    }
}

#[test]
fn huge_length_prefixes_are_refused_without_allocating() {
    // A MessagePack array32 header claiming 4 billion elements, and a str32 claiming 4 GiB.
    for header in [
        [0xddu8, 0xff, 0xff, 0xff, 0xff],
        [0xdb, 0xff, 0xff, 0xff, 0xff],
    ] {
        let mut frame = vec![codec::PROTOCOL_VERSION];
        frame.extend(header);
        assert!(decode::<Request>(&frame).is_err());
        assert!(decode::<Envelope>(&frame).is_err());
    }
}

#[test]
fn oversized_frames_and_fields_are_typed_errors() {
    let frame = vec![codec::PROTOCOL_VERSION; limits::MAX_FRAME_BYTES + 1];
    assert!(matches!(
        decode::<Request>(&frame),
        Err(DecodeError::TooLarge { .. })
    ));
    assert!(matches!(decode::<Request>(&[]), Err(DecodeError::Empty)));
    assert!(matches!(
        decode::<Request>(&[99, 0x90]),
        Err(DecodeError::Version(99))
    ));
    let huge_key = Request {
        client_id: 1,
        seq: 1,
        op: Op::Get {
            key: "k".repeat(limits::MAX_KEY_BYTES + 1),
        },
        consistency: Consistency::Linearizable,
        credential: None,
    };
    let frame = encode(&huge_key).unwrap();
    assert!(matches!(
        decode::<Request>(&frame),
        Err(DecodeError::Invalid(_))
    ));
    let huge_value = Op::Put {
        key: "k".into(),
        value: "v".repeat(limits::MAX_FRAME_BYTES),
    };
    let request = Request {
        client_id: 1,
        seq: 1,
        op: huge_value,
        consistency: Consistency::Linearizable,
        credential: None,
    };
    assert!(
        encode(&request).is_err(),
        "the encoder refuses what no peer would accept"
    );
    assert!(huge_key.validate().is_err());
}

#[test]
fn frame_layout_is_checked() {
    let body = encode(&NodeToBroker::Heartbeat {
        node: "node-1".into(),
    })
    .unwrap();
    let frames = vec![b"node-1".to_vec(), body.clone()];
    let (routing, found) = codec::split(&frames, 1).unwrap();
    assert_eq!(routing, &[b"node-1".to_vec()]);
    assert_eq!(found, body.as_slice());
    assert!(codec::split(&frames, 2).is_err());
    assert!(
        codec::split(&[vec![0u8; 300], body], 1).is_err(),
        "oversized routing frame"
    );
    let empty: Vec<Vec<u8>> = Vec::new();
    assert!(codec::split(&empty, 0).is_err());
}

#[test]
fn names_are_validated() {
    assert!(
        decode::<NodeToBroker>(
            &encode(&NodeToBroker::Ready {
                node: "bad name".into()
            })
            .unwrap_or_default()
        )
        .is_err()
    );
    let bad_login = Request {
        client_id: 1,
        seq: 1,
        op: Op::Login {
            user: String::new(),
            password: "pw".into(),
        },
        consistency: Consistency::Linearizable,
        credential: None,
    };
    assert!(decode::<Request>(&encode(&bad_login).unwrap()).is_err());
}

#[test]
fn passwords_and_credentials_are_bounded() {
    let login = |password: String, credential: Option<String>| Request {
        client_id: 1,
        seq: 1,
        op: Op::Login {
            user: "ann".into(),
            password,
        },
        consistency: Consistency::Linearizable,
        credential,
    };
    let good = login("pw".into(), Some("c".repeat(limits::MIN_CREDENTIAL_BYTES)));
    assert!(decode::<Request>(&encode(&good).unwrap()).is_ok());
    for bad in [
        login("p".repeat(limits::MAX_PASSWORD_BYTES + 1), None),
        login(
            "pw".into(),
            Some("c".repeat(limits::MIN_CREDENTIAL_BYTES - 1)),
        ),
        login(
            "pw".into(),
            Some("c".repeat(limits::MAX_CREDENTIAL_BYTES + 1)),
        ),
        login("pw".into(), Some(format!("{} x", "c".repeat(40)))),
    ] {
        let frame = encode(&bad).unwrap();
        assert!(
            matches!(decode::<Request>(&frame), Err(DecodeError::Invalid(_))),
            "{bad:?}"
        );
    }
}
