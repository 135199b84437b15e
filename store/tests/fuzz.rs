//! Property tests: loading never panics on any bytes, a corrupted snapshot or document is
//! either refused or loads the very same state, and replicas fed the same slots agree
//! whether or not one of them went through a snapshot or store.json on the way.

use proptest::prelude::*;
use proto::client::{Command, Op, Target};
use store::{Store, StoreConfig};

fn small_config() -> StoreConfig {
    StoreConfig {
        history_per_channel: 4,
        history_per_user: 3,
        max_sessions: 5,
        max_chat_sessions: 2,
        max_users: 2,
    }
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["ann", "bob", "cy", "bad name", ""]).prop_map(str::to_owned)
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", ""]).prop_map(str::to_owned)
}

fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["1", "2", "3"]).prop_map(str::to_owned)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        key().prop_map(|key| Op::Get { key }),
        (key(), value()).prop_map(|(key, value)| Op::Put { key, value }),
        key().prop_map(|key| Op::Delete { key }),
        (key(), prop::option::of(value()), value()).prop_map(|(key, expected, new)| Op::Cas {
            key,
            expected,
            new
        }),
        name().prop_map(|user| Op::Login {
            user,
            password: String::new()
        }),
        name().prop_map(|user| Op::Register {
            user,
            password_hash: "$argon2id$stand-in".into()
        }),
        name().prop_map(|user| Op::OpenSession { user }),
        name().prop_map(|channel| Op::CreateChannel { channel }),
        (name(), name()).prop_map(|(user, channel)| Op::Subscribe { user, channel }),
        (name(), name(), value()).prop_map(|(user, channel, text)| Op::Publish {
            user,
            channel,
            text
        }),
        (name(), name(), value()).prop_map(|(from, to, text)| Op::PrivateMessage {
            from,
            to,
            text
        }),
        Just(Op::ListUsers),
        Just(Op::ListChannels),
        (name(), 0u64..4).prop_map(|(c, since)| Op::History {
            target: Target::Channel(c),
            since
        }),
        (name(), 0u64..4).prop_map(|(u, since)| Op::History {
            target: Target::User(u),
            since
        }),
        Just(Op::Noop),
    ]
}

/// Slots of commands from a few clients (client 0 = internal) with small, often repeated,
/// sometimes going-back request numbers: duplicates, stale requests and evictions.
fn slots() -> impl Strategy<Value = Vec<Vec<Command>>> {
    // A few credentials, shared between clients: sessions opened, used as someone else,
    // evicted.
    let session = prop::option::of(prop::sample::select(vec!["one", "two", "three"]))
        .prop_map(|c| c.map(proto::client::session_key));
    let command =
        (0u64..8, 0u64..6, op(), session).prop_map(|(client_id, seq, op, session)| Command {
            client_id,
            seq,
            op,
            session,
        });
    prop::collection::vec(prop::collection::vec(command, 0..4), 1..40)
}

fn feed(store: &mut Store, slots: &[Vec<Command>], from_slot: u64) {
    for (index, commands) in slots.iter().enumerate() {
        let slot = from_slot + index as u64;
        store.apply(slot, slot * 2, commands);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn restore_never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Store::restore(&bytes, StoreConfig::default());
    }

    #[test]
    fn from_json_never_panics_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Store::from_json(&bytes, StoreConfig::default());
    }

    #[test]
    fn from_json_never_panics_on_garbage_text(text in "[{}\\[\\]\":,0-9a-z ]{0,300}") {
        let _ = Store::from_json(text.as_bytes(), StoreConfig::default());
    }

    /// A snapshot with a few bytes changed is refused, or holds exactly the same state
    /// (MessagePack has several encodings of one integer).
    #[test]
    fn corrupted_snapshot_is_refused_or_identical(
        slots in slots(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut store = Store::new(small_config());
        feed(&mut store, &slots, 1);
        let mut bytes = store.snapshot();
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        if let Ok(loaded) = Store::restore(&bytes, small_config()) {
            prop_assert_eq!(loaded.digest(), store.digest());
            prop_assert_eq!(loaded.snapshot(), store.snapshot());
        }
    }

    /// Same for store.json: refused, or the same state (the node name is not replicated).
    #[test]
    fn corrupted_json_is_refused_or_identical(
        slots in slots(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut store = Store::new(small_config());
        feed(&mut store, &slots, 1);
        let mut bytes = store.to_json("n");
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        if let Ok((_, loaded)) = Store::from_json(&bytes, small_config()) {
            prop_assert_eq!(loaded.digest(), store.digest());
            prop_assert_eq!(loaded.snapshot(), store.snapshot());
        }
    }

    /// Two replicas fed the same slots hold the same digest, whether one went through a
    /// snapshot and the other through store.json halfway; truncated snapshots are refused.
    #[test]
    fn replicas_agree_through_snapshots(first in slots(), second in slots()) {
        let mut straight = Store::new(small_config());
        feed(&mut straight, &first, 1);
        let middle = straight.applied_slot();

        let bytes = straight.snapshot();
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            prop_assert!(Store::restore(&bytes[..cut], small_config()).is_err());
        }
        let mut via_snapshot = Store::restore(&bytes, small_config()).unwrap();
        let (_, mut via_json) = Store::from_json(&straight.to_json("n"), small_config()).unwrap();

        feed(&mut straight, &second, middle + 1);
        feed(&mut via_snapshot, &second, middle + 1);
        feed(&mut via_json, &second, middle + 1);
        prop_assert_eq!(straight.digest(), via_snapshot.digest());
        prop_assert_eq!(straight.digest(), via_json.digest());
        prop_assert!(straight.stats().sessions <= small_config().max_sessions);
    }
}
