//! Unit tests of `paxos.rs`.

use super::*;
use crate::client::Op;
use crate::codec::{decode, encode};

fn put(i: u64, value_len: usize) -> Command {
    Command {
        client_id: 7,
        seq: i,
        op: Op::Put {
            key: format!("k{i}"),
            value: "v".repeat(value_len),
        },
        session: None,
    }
}

#[test]
fn ballots_order_by_round_then_rank() {
    assert!(Ballot::new(1, 9) < Ballot::new(2, 1));
    assert!(Ballot::new(2, 1) < Ballot::new(2, 2));
    assert!(Ballot::default() < Ballot::new(1, 0));
}

#[test]
fn envelope_round_trips_through_the_codec() {
    let envelope = Envelope {
        from: 2,
        to: None,
        lamport: 42,
        message: Message::Accept {
            ballot: Ballot::new(3, 2),
            slot: 9,
            value: Value {
                lamport: 41,
                commands: vec![put(1, 10), put(2, 20)],
            },
            decided_upto: 8,
        },
    };
    let frame = encode(&envelope).unwrap();
    assert_eq!(decode::<Envelope>(&frame).unwrap(), envelope);
}

#[test]
fn snapshot_chunk_is_encoded_as_bin() {
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let envelope = Envelope {
        from: 1,
        to: Some(2),
        lamport: 1,
        message: Message::SnapshotChunk {
            slot: 5,
            offset: 0,
            total_len: 100_000,
            data,
        },
    };
    let frame = encode(&envelope).unwrap();
    // An array of integers would take ~1.5 bytes per byte here.
    assert!(frame.len() < 100_200, "frame is {} bytes", frame.len());
    assert_eq!(decode::<Envelope>(&frame).unwrap(), envelope);
}

#[test]
fn a_full_batch_fits_in_a_frame() {
    // The largest values a batch may hold, in the largest message that carries one.
    let mut commands = Vec::new();
    let mut bytes = 0;
    loop {
        let command = put(commands.len() as u64, 60 * 1024);
        if bytes + command_size_bytes(&command) > MAX_BATCH_BYTES {
            break;
        }
        bytes += command_size_bytes(&command);
        commands.push(command);
    }
    let envelope = Envelope {
        from: 1,
        to: None,
        lamport: 1,
        message: Message::Accept {
            ballot: Ballot::new(1, 1),
            slot: 1,
            value: Value {
                lamport: 1,
                commands,
            },
            decided_upto: 0,
        },
    };
    let frame = encode(&envelope).unwrap();
    assert!(decode::<Envelope>(&frame).is_ok());
}

#[test]
fn oversized_lists_are_refused() {
    let envelope = Envelope {
        from: 1,
        to: None,
        lamport: 1,
        message: Message::Forward {
            commands: (0..=MAX_BATCH_COMMANDS as u64).map(|i| put(i, 1)).collect(),
        },
    };
    let frame = encode(&envelope).unwrap();
    assert!(matches!(
        decode::<Envelope>(&frame),
        Err(crate::DecodeError::Invalid(LimitError::TooMany { .. }))
    ));
    let chunk = Message::SnapshotChunk {
        slot: 1,
        offset: 10,
        total_len: 5,
        data: vec![0; 10],
    };
    assert!(chunk.validate().is_err());
}

#[test]
fn a_read_index_ask_of_an_earlier_version_confirms_nothing() {
    // The shape a peer without `promised` sends.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "snake_case")]
    enum Earlier {
        ReadIndex { batch: u64 },
        ReadIndexed { batch: u64, slot: u64 },
    }
    #[derive(serde::Serialize)]
    struct EarlierEnvelope {
        from: u32,
        to: Option<u32>,
        lamport: u64,
        message: Earlier,
    }
    let earlier = EarlierEnvelope {
        from: 2,
        to: Some(1),
        lamport: 5,
        message: Earlier::ReadIndex { batch: 9 },
    };
    let mut frame = vec![crate::codec::PROTOCOL_VERSION];
    frame.extend(rmp_serde::to_vec_named(&earlier).unwrap());
    let envelope = decode::<Envelope>(&frame).unwrap();
    assert_eq!(
        envelope.message,
        Message::ReadIndex {
            batch: 9,
            promised: None,
            confirms: None,
        }
    );
    // Nor does its answer carry a round.
    let answer = EarlierEnvelope {
        message: Earlier::ReadIndexed { batch: 9, slot: 4 },
        ..earlier
    };
    let mut frame = vec![crate::codec::PROTOCOL_VERSION];
    frame.extend(rmp_serde::to_vec_named(&answer).unwrap());
    assert_eq!(
        decode::<Envelope>(&frame).unwrap().message,
        Message::ReadIndexed {
            batch: 9,
            slot: 4,
            confirm: None,
        }
    );
    // And this version's ask and answer round-trip with their ballot and round.
    let round = ConfirmRound {
        ballot: Ballot::new(3, 2),
        round: 7,
    };
    let ask = Envelope {
        message: Message::ReadIndex {
            batch: 9,
            promised: Some(Ballot::new(3, 2)),
            confirms: Some(round),
        },
        ..envelope.clone()
    };
    assert_eq!(decode::<Envelope>(&encode(&ask).unwrap()).unwrap(), ask);
    let answer = Envelope {
        message: Message::ReadIndexed {
            batch: 9,
            slot: 4,
            confirm: Some(round),
        },
        ..envelope
    };
    assert_eq!(
        decode::<Envelope>(&encode(&answer).unwrap()).unwrap(),
        answer
    );
}
