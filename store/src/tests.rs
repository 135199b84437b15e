//! Unit tests of the store: every op with its error paths, sessions, bounds, digest,
//! snapshots and store.json.

use proto::client::{Command, Op};

use super::*;

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn cmd(client_id: u64, seq: u64, op: Op) -> Command {
    Command { client_id, seq, op }
}

#[test]
fn put_then_get() {
    let mut store = Store::new(StoreConfig::default());
    let applied = store.apply(1, 7, &[cmd(1, 1, put("k", "v"))]);
    assert_eq!(applied.replies[0].result, Ok(Reply::Done));
    assert_eq!(store.get("k"), Some("v"));
    assert_eq!(store.applied_slot(), 1);
    assert_eq!(store.lamport(), 7);
}
