//! Records and scratch WALs shared by the tests of the three files, so each test module
//! builds its fixtures the same way.

use std::fs;
use std::path::PathBuf;

use paxos::{Ballot, Record, Slot, Value};
use proto::{Command, Op};

use super::{DEFAULT_SEGMENT_BYTES, WalWriter, recover};

pub(super) fn value(tag: u64) -> Value {
    Value {
        lamport: tag,
        commands: vec![Command {
            client_id: 1,
            seq: tag,
            op: Op::Put {
                key: format!("k{tag}"),
                value: "v".repeat(100),
            },
            session: None,
        }],
    }
}

pub(super) fn accept(slot: Slot) -> Record {
    Record::Accept {
        slot,
        ballot: Ballot::new(1, 1),
        value: value(slot),
    }
}

pub(super) fn decide(slot: Slot) -> Record {
    Record::Decide {
        slot,
        value: value(slot),
    }
}

pub(super) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "node-wal-test-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `records` into a fresh WAL and returns the folder and its single data
/// segment.
pub(super) fn wal_with(name: &str, records: &[Record]) -> (PathBuf, PathBuf) {
    let dir = temp_dir(name);
    let recovery = recover(&dir).unwrap();
    let mut writer = WalWriter::open(&dir, &recovery, DEFAULT_SEGMENT_BYTES).unwrap();
    writer.append(records).unwrap();
    writer.sync().unwrap();
    let path = writer.segments().last().unwrap().path.clone();
    (dir, path)
}
