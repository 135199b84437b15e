//! Unit tests of the store: every op with its error paths, sessions, bounds, digest,
//! snapshots and store.json.

use proto::client::{ChannelInfo, Command, Op, Target};

use super::*;
use crate::state::{Session, SessionResult};

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn get(key: &str) -> Op {
    Op::Get { key: key.into() }
}

fn cas(key: &str, expected: Option<&str>, new: &str) -> Op {
    Op::Cas {
        key: key.into(),
        expected: expected.map(Into::into),
        new: new.into(),
    }
}

/// Registers `user` (what a node proposes for a first login); [`cmd`] gives it the
/// user's session.
fn login(user: &str) -> Op {
    Op::Register {
        user: user.into(),
        password_hash: TEST_HASH.into(),
    }
}

/// A PHC string stand-in: the store keeps hashes, it never computes or checks one.
const TEST_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g";

/// The credential the tests' `user` logs in with.
fn credential_of(user: &str) -> String {
    format!("credential-of-{user}-0123456789abcdef0123456789abcdef")
}

/// The session key of `user`'s test credential.
fn key_of(user: &str) -> String {
    proto::client::session_key(&credential_of(user))
}

/// The user an op speaks for, whose session [`cmd`] attaches.
fn acting_user(op: &Op) -> Option<&str> {
    match op {
        Op::Register { user, .. }
        | Op::OpenSession { user }
        | Op::Subscribe { user, .. }
        | Op::Publish { user, .. }
        | Op::PrivateMessage { from: user, .. }
        | Op::History {
            target: Target::User(user),
            ..
        } => Some(user),
        _ => None,
    }
}

fn create(channel: &str) -> Op {
    Op::CreateChannel {
        channel: channel.into(),
    }
}

fn subscribe(user: &str, channel: &str) -> Op {
    Op::Subscribe {
        user: user.into(),
        channel: channel.into(),
    }
}

fn publish(user: &str, channel: &str, text: &str) -> Op {
    Op::Publish {
        user: user.into(),
        channel: channel.into(),
        text: text.into(),
    }
}

fn dm(from: &str, to: &str, text: &str) -> Op {
    Op::PrivateMessage {
        from: from.into(),
        to: to.into(),
        text: text.into(),
    }
}

fn history(target: Target, since: u64) -> Op {
    Op::History { target, since }
}

fn channel(name: &str) -> Target {
    Target::Channel(name.into())
}

fn user(name: &str) -> Target {
    Target::User(name.into())
}

/// A command of `client_id`, with the session of the user `op` speaks for (if any).
fn cmd(client_id: u64, seq: u64, op: Op) -> Command {
    let session = acting_user(&op).map(key_of);
    Command {
        client_id,
        seq,
        op,
        session,
    }
}

/// A command with exactly this session key (or none).
fn cmd_as(client_id: u64, seq: u64, op: Op, session: Option<String>) -> Command {
    Command {
        client_id,
        seq,
        op,
        session,
    }
}

/// A store with a helper that applies one internal command per slot.
struct Harness {
    store: Store,
    lamport: u64,
}

impl Harness {
    fn new() -> Self {
        Harness::with(StoreConfig::default())
    }

    fn with(config: StoreConfig) -> Self {
        Harness {
            store: Store::new(config),
            lamport: 0,
        }
    }

    /// Applies `commands` in the next slot.
    fn slot(&mut self, commands: &[Command]) -> Applied {
        self.lamport += 10;
        let slot = self.store.applied_slot() + 1;
        self.store.apply(slot, self.lamport, commands)
    }

    /// Applies one internal (session-less) command in its own slot and returns its result.
    fn run(&mut self, op: Op) -> Result<Reply, Error> {
        let mut applied = self.slot(&[cmd(INTERNAL_CLIENT_ID, 0, op)]);
        assert_eq!(applied.replies.len(), 1);
        applied.replies.remove(0).result
    }

    /// Applies one command of a client in its own slot.
    fn client(&mut self, client_id: u64, seq: u64, op: Op) -> AppliedReply {
        self.slot(&[cmd(client_id, seq, op)]).replies.remove(0)
    }
}

fn code(result: Result<Reply, Error>) -> ErrorCode {
    match result {
        Err(error) => error.code,
        Ok(reply) => panic!("expected an error, got {reply:?}"),
    }
}

fn messages(result: Result<Reply, Error>) -> Vec<ChatMessage> {
    match result {
        Ok(Reply::Messages(messages)) => messages,
        other => panic!("expected messages, got {other:?}"),
    }
}

fn ids(result: Result<Reply, Error>) -> Vec<u64> {
    messages(result).iter().map(|m| m.id).collect()
}

// ---------------------------------------------------------------- keys

#[test]
fn put_get_delete() {
    let mut h = Harness::new();
    assert_eq!(code(h.run(get("k"))), ErrorCode::NotFound);
    assert_eq!(h.run(put("k", "v")), Ok(Reply::Done));
    assert_eq!(h.run(get("k")), Ok(Reply::Value("v".into())));
    assert_eq!(h.store.get("k"), Some("v"));
    assert_eq!(h.run(put("k", "w")), Ok(Reply::Done));
    assert_eq!(h.store.get("k"), Some("w"));
    assert_eq!(h.run(Op::Delete { key: "k".into() }), Ok(Reply::Done));
    assert_eq!(h.store.get("k"), None);
    // Deleting an absent key is fine.
    assert_eq!(h.run(Op::Delete { key: "k".into() }), Ok(Reply::Done));
    assert_eq!(code(h.run(get("k"))), ErrorCode::NotFound);
    assert_eq!(h.store.applied_slot(), 7);
}

#[test]
fn cas_matches_value_or_absence() {
    let mut h = Harness::new();
    // Expected absent, key absent: takes effect.
    assert_eq!(h.run(cas("k", None, "a")), Ok(Reply::Done));
    assert_eq!(h.store.get("k"), Some("a"));
    // Expected absent, key present: mismatch naming the current value.
    let error = h.run(cas("k", None, "b")).unwrap_err();
    assert_eq!(error.code, ErrorCode::CasMismatch);
    assert!(error.message.contains("\"a\""), "{error}");
    // Expected the current value: takes effect.
    assert_eq!(h.run(cas("k", Some("a"), "b")), Ok(Reply::Done));
    assert_eq!(h.store.get("k"), Some("b"));
    // Expected another value: mismatch, no effect.
    let error = h.run(cas("k", Some("a"), "c")).unwrap_err();
    assert_eq!(error.code, ErrorCode::CasMismatch);
    assert!(error.message.contains("current value is \"b\""), "{error}");
    assert_eq!(h.store.get("k"), Some("b"));
    // Expected a value, key absent: the message says so.
    let error = h.run(cas("other", Some("x"), "y")).unwrap_err();
    assert_eq!(error.code, ErrorCode::CasMismatch);
    assert!(error.message.contains("absent"), "{error}");
    assert_eq!(h.store.get("other"), None);
}

#[test]
fn cas_mismatch_message_stays_small_for_large_values() {
    let mut h = Harness::new();
    let big = "x".repeat(60_000);
    h.run(put("k", &big)).unwrap();
    let error = h.run(cas("k", Some("y"), "z")).unwrap_err();
    assert_eq!(error.code, ErrorCode::CasMismatch);
    assert!(error.message.len() < 300, "{} bytes", error.message.len());
    assert!(error.message.contains("60000 bytes"), "{error}");
}

#[test]
fn invalid_commands_are_refused_deterministically() {
    let mut h = Harness::new();
    assert_eq!(code(h.run(put("", "v"))), ErrorCode::BadRequest);
    let key = "k".repeat(proto::limits::MAX_KEY_BYTES + 1);
    assert_eq!(code(h.run(put(&key, "v"))), ErrorCode::TooLarge);
    let value = "v".repeat(proto::limits::MAX_VALUE_BYTES + 1);
    assert_eq!(code(h.run(put("k", &value))), ErrorCode::TooLarge);
    assert_eq!(code(h.run(login("two words"))), ErrorCode::BadRequest);
    assert_eq!(code(h.run(login(""))), ErrorCode::BadRequest);
    assert_eq!(code(h.run(get(""))), ErrorCode::BadRequest);
    let text = "t".repeat(proto::limits::MAX_TEXT_BYTES + 1);
    h.run(login("ann")).unwrap();
    h.run(create("c")).unwrap();
    assert_eq!(code(h.run(publish("ann", "c", &text))), ErrorCode::TooLarge);
    assert_eq!(h.store.stats().keys, 0);
    // An invalid command of a client is part of its session like any other.
    let reply = h.client(9, 1, put("", "v"));
    assert_eq!(code(reply.result), ErrorCode::BadRequest);
    let retry = h.client(9, 1, put("", "v"));
    assert!(retry.duplicate);
    assert_eq!(code(retry.result), ErrorCode::BadRequest);
}

// ---------------------------------------------------------------- chat

#[test]
fn logins_and_channels_are_listed_sorted() {
    let mut h = Harness::new();
    for name in ["zoe", "ann", "bob"] {
        assert_eq!(h.run(login(name)), Ok(Reply::Done));
    }
    // A second login of a registered user opens a session; it registers no one.
    let again = Op::OpenSession { user: "ann".into() };
    assert_eq!(h.run(again), Ok(Reply::Done));
    assert_eq!(
        h.run(Op::ListUsers),
        Ok(Reply::Users(vec!["ann".into(), "bob".into(), "zoe".into()]))
    );
    for name in ["rust", "go", "rust"] {
        assert_eq!(h.run(create(name)), Ok(Reply::Done));
    }
    h.run(subscribe("zoe", "rust")).unwrap();
    h.run(subscribe("ann", "rust")).unwrap();
    h.run(subscribe("ann", "rust")).unwrap();
    assert_eq!(
        h.run(Op::ListChannels),
        Ok(Reply::Channels(vec![
            ChannelInfo {
                name: "go".into(),
                subscribers: vec![],
            },
            ChannelInfo {
                name: "rust".into(),
                subscribers: vec!["ann".into(), "zoe".into()],
            },
        ]))
    );
}

#[test]
fn creating_a_channel_again_keeps_its_history() {
    let mut h = Harness::new();
    h.run(login("ann")).unwrap();
    h.run(create("c")).unwrap();
    h.run(publish("ann", "c", "hello")).unwrap();
    h.run(create("c")).unwrap();
    assert_eq!(ids(h.run(history(channel("c"), 0))), vec![1]);
}

#[test]
fn subscribe_needs_user_and_channel() {
    let mut h = Harness::new();
    h.run(create("c")).unwrap();
    let error = h.run(subscribe("ann", "c")).unwrap_err();
    assert_eq!(error.code, ErrorCode::Unauthenticated);
    assert!(error.message.contains("log in"), "{error}");
    h.run(login("ann")).unwrap();
    let error = h.run(subscribe("ann", "nope")).unwrap_err();
    assert_eq!(error.code, ErrorCode::NotFound);
    assert!(error.message.contains("channel"), "{error}");
    assert_eq!(h.run(subscribe("ann", "c")), Ok(Reply::Done));
}

#[test]
fn publish_numbers_messages_per_channel_and_reports_them_for_delivery() {
    let mut h = Harness::new();
    assert_eq!(
        code(h.run(publish("ann", "c", "x"))),
        ErrorCode::Unauthenticated
    );
    h.run(login("ann")).unwrap();
    assert_eq!(code(h.run(publish("ann", "c", "x"))), ErrorCode::NotFound);
    h.run(create("c")).unwrap();
    h.run(create("d")).unwrap();
    let applied = h.slot(&[
        cmd(1, 1, publish("ann", "c", "one")),
        cmd(2, 1, publish("ann", "d", "other")),
        cmd(3, 1, publish("ann", "c", "two")),
    ]);
    let slot = h.store.applied_slot();
    let results: Vec<_> = applied.replies.iter().map(|r| r.result.clone()).collect();
    assert_eq!(
        results,
        vec![
            Ok(Reply::Posted { id: 1 }),
            Ok(Reply::Posted { id: 1 }),
            Ok(Reply::Posted { id: 2 }),
        ]
    );
    assert_eq!(applied.posted.len(), 3);
    assert_eq!(applied.posted[0].text, "one");
    assert_eq!(applied.posted[0].to, channel("c"));
    assert_eq!(applied.posted[0].slot, slot);
    assert_eq!(applied.posted[0].lamport, h.lamport);
    assert_eq!(applied.posted[2].id, 2);
    let stored = messages(h.run(history(channel("c"), 0)));
    assert_eq!(
        stored,
        vec![applied.posted[0].clone(), applied.posted[2].clone()]
    );
    assert_eq!(ids(h.run(history(channel("c"), 1))), vec![2]);
    assert_eq!(ids(h.run(history(channel("c"), 2))), Vec::<u64>::new());
    assert_eq!(
        code(h.run(history(channel("nope"), 0))),
        ErrorCode::NotFound
    );
}

#[test]
fn private_messages_go_to_the_recipients_inbox() {
    let mut h = Harness::new();
    h.run(login("ann")).unwrap();
    assert_eq!(code(h.run(dm("ann", "bob", "hi"))), ErrorCode::NotFound);
    assert_eq!(
        code(h.run(dm("bob", "ann", "hi"))),
        ErrorCode::Unauthenticated
    );
    h.run(login("bob")).unwrap();
    // A logged-in user without messages has an empty inbox.
    assert_eq!(ids(h.run(history(user("bob"), 0))), Vec::<u64>::new());
    assert_eq!(
        code(h.run(history(user("carl"), 0))),
        ErrorCode::Unauthenticated
    );
    assert_eq!(h.run(dm("ann", "bob", "hi")), Ok(Reply::Posted { id: 1 }));
    assert_eq!(
        h.run(dm("ann", "bob", "again")),
        Ok(Reply::Posted { id: 2 })
    );
    assert_eq!(h.run(dm("bob", "ann", "yo")), Ok(Reply::Posted { id: 1 }));
    let inbox = messages(h.run(history(user("bob"), 0)));
    assert_eq!(inbox.len(), 2);
    assert_eq!(inbox[0].from, "ann");
    assert_eq!(inbox[0].to, user("bob"));
    assert_eq!(inbox[1].text, "again");
    assert_eq!(ids(h.run(history(user("bob"), 1))), vec![2]);
    assert_eq!(ids(h.run(history(user("ann"), 0))), vec![1]);
}

#[test]
fn chat_history_is_bounded_dropping_the_oldest() {
    let mut h = Harness::with(StoreConfig {
        history_per_channel: 3,
        history_per_user: 2,
        ..StoreConfig::default()
    });
    h.run(login("ann")).unwrap();
    h.run(login("bob")).unwrap();
    h.run(create("c")).unwrap();
    for i in 1..=5 {
        assert_eq!(
            h.run(publish("ann", "c", &format!("m{i}"))),
            Ok(Reply::Posted { id: i })
        );
        h.run(dm("ann", "bob", &format!("d{i}"))).unwrap();
    }
    assert_eq!(ids(h.run(history(channel("c"), 0))), vec![3, 4, 5]);
    assert_eq!(ids(h.run(history(channel("c"), 3))), vec![4, 5]);
    assert_eq!(ids(h.run(history(user("bob"), 0))), vec![4, 5]);
    // Ids keep counting after the drops.
    assert_eq!(
        h.run(publish("ann", "c", "m6")),
        Ok(Reply::Posted { id: 6 })
    );
}

#[test]
fn history_pages_by_item_count() {
    let total = proto::limits::MAX_LIST_ITEMS + 500;
    let mut h = Harness::with(StoreConfig {
        history_per_channel: total,
        ..StoreConfig::default()
    });
    h.run(login("ann")).unwrap();
    h.run(create("c")).unwrap();
    let commands: Vec<Command> = (0..total)
        .map(|i| cmd(INTERNAL_CLIENT_ID, 0, publish("ann", "c", &i.to_string())))
        .collect();
    h.slot(&commands);
    let first = ids(h.run(history(channel("c"), 0)));
    assert_eq!(first.len(), proto::limits::MAX_LIST_ITEMS);
    assert_eq!(first[0], 1);
    let last = *first.last().unwrap();
    let rest = ids(h.run(history(channel("c"), last)));
    assert_eq!(rest.len(), 500);
    assert_eq!(rest[0], last + 1);
}

#[test]
fn big_replies_stay_within_a_frame() {
    let mut h = Harness::new();
    h.run(login("ann")).unwrap();
    h.run(create("c")).unwrap();
    let text = "t".repeat(proto::limits::MAX_TEXT_BYTES);
    let commands: Vec<Command> = (0..500)
        .map(|_| cmd(INTERNAL_CLIENT_ID, 0, publish("ann", "c", &text)))
        .collect();
    h.slot(&commands);
    let result = h.run(history(channel("c"), 0));
    let page = messages(result.clone());
    assert!(
        !page.is_empty() && page.len() < 500,
        "{} messages",
        page.len()
    );
    let response = proto::Response {
        seq: 1,
        result,
        node: "node-1".into(),
        applied_slot: 1,
    };
    let encoded = rmp_serde::to_vec(&response).unwrap();
    assert!(encoded.len() <= MAX_REPLY_BYTES, "{} bytes", encoded.len());
    // The next page starts right after.
    let next = ids(h.run(history(channel("c"), page.last().unwrap().id)));
    assert_eq!(next[0], page.last().unwrap().id + 1);

    // One channel with more subscribers than fit: listed, cut.
    let names: Vec<Command> = (0..3000)
        .map(|i| cmd(INTERNAL_CLIENT_ID, 0, login(&format!("user-{i:0>58}"))))
        .collect();
    h.slot(&names);
    let subscribes: Vec<Command> = (0..3000)
        .map(|i| {
            cmd(
                INTERNAL_CLIENT_ID,
                0,
                subscribe(&format!("user-{i:0>58}"), "c"),
            )
        })
        .collect();
    h.slot(&subscribes);
    let listed = h.run(Op::ListChannels);
    let encoded = rmp_serde::to_vec(&listed).unwrap();
    assert!(encoded.len() <= MAX_REPLY_BYTES, "{} bytes", encoded.len());
    let Ok(Reply::Channels(channels)) = listed else {
        panic!("{listed:?}")
    };
    assert_eq!(channels.len(), 1);
    assert!(!channels[0].subscribers.is_empty());
    let users = h.run(Op::ListUsers);
    let Ok(Reply::Users(users)) = users else {
        panic!("{users:?}")
    };
    assert_eq!(users.len(), proto::limits::MAX_LIST_ITEMS);
}

#[test]
fn noop_and_read_local() {
    let mut h = Harness::new();
    assert_eq!(h.run(Op::Noop), Ok(Reply::Done));
    h.run(put("k", "v")).unwrap();
    let before = h.store.digest();
    assert_eq!(
        h.store.read_local(&get("k"), None),
        Ok(Reply::Value("v".into()))
    );
    assert_eq!(h.store.read_local(&Op::Noop, None), Ok(Reply::Done));
    assert_eq!(
        h.store.read_local(&Op::ListUsers, None),
        Ok(Reply::Users(vec![]))
    );
    assert_eq!(
        h.store.read_local(&get(""), None).unwrap_err().code,
        ErrorCode::BadRequest
    );
    for write in [
        put("k", "w"),
        Op::Delete { key: "k".into() },
        cas("k", None, "x"),
        login("ann"),
        create("c"),
        subscribe("ann", "c"),
        publish("ann", "c", "t"),
        dm("ann", "bob", "t"),
    ] {
        let error = h.store.read_local(&write, None).unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest, "{write:?}");
    }
    assert_eq!(h.store.digest(), before);
    assert_eq!(h.store.get("k"), Some("v"));
}

// ---------------------------------------------------------------- sessions

#[test]
fn retried_write_is_answered_from_the_session_without_effect() {
    let mut h = Harness::new();
    let first = h.client(1, 1, put("k", "a"));
    assert_eq!(first.result, Ok(Reply::Done));
    assert!(!first.duplicate);
    h.client(2, 1, put("k", "b"));
    let retry = h.client(1, 1, put("k", "a"));
    assert!(retry.duplicate);
    assert_eq!(retry.result, Ok(Reply::Done));
    assert_eq!((retry.client_id, retry.seq), (1, 1));
    // The retry did not write again.
    assert_eq!(h.store.get("k"), Some("b"));
}

#[test]
fn retried_cas_returns_its_first_answer_even_when_it_would_now_differ() {
    let mut h = Harness::new();
    let first = h.client(1, 1, cas("k", Some("x"), "y"));
    assert_eq!(code(first.result.clone()), ErrorCode::CasMismatch);
    h.client(2, 1, put("k", "x"));
    let retry = h.client(1, 1, cas("k", Some("x"), "y"));
    assert!(retry.duplicate);
    assert_eq!(retry.result, first.result);
    assert_eq!(h.store.get("k"), Some("x"));
}

#[test]
fn retried_publish_posts_once() {
    let mut h = Harness::new();
    h.run(login("ann")).unwrap();
    h.run(create("c")).unwrap();
    let first = h.slot(&[cmd(1, 1, publish("ann", "c", "hi"))]);
    assert_eq!(first.posted.len(), 1);
    // The retry lands in the same slot as well as a later one.
    let retry = h.slot(&[
        cmd(1, 1, publish("ann", "c", "hi")),
        cmd(1, 1, publish("ann", "c", "hi")),
    ]);
    assert!(retry.posted.is_empty());
    for reply in &retry.replies {
        assert!(reply.duplicate);
        assert_eq!(reply.result, Ok(Reply::Posted { id: 1 }));
    }
    assert_eq!(ids(h.run(history(channel("c"), 0))), vec![1]);
}

#[test]
fn stale_request_has_no_effect() {
    let mut h = Harness::new();
    h.client(1, 5, put("k", "five"));
    let stale = h.client(1, 4, put("k", "four"));
    assert!(stale.duplicate);
    assert_eq!(code(stale.result), ErrorCode::StaleRequest);
    assert_eq!(h.store.get("k"), Some("five"));
    assert_eq!(h.store.last_seq(1), Some(5));
    // Seq numbers may skip; a newer one applies.
    let next = h.client(1, 9, put("k", "nine"));
    assert!(!next.duplicate);
    assert_eq!(h.store.get("k"), Some("nine"));
}

#[test]
fn retried_read_is_executed_again() {
    let mut h = Harness::new();
    let first = h.client(1, 1, get("k"));
    assert_eq!(code(first.result), ErrorCode::NotFound);
    h.client(2, 1, put("k", "v"));
    let retry = h.client(1, 1, get("k"));
    assert!(retry.duplicate);
    assert_eq!(retry.result, Ok(Reply::Value("v".into())));
    // Only a marker is kept for the read.
    assert_eq!(
        h.store.state.sessions.get(&1).map(|s| &s.result),
        Some(&SessionResult::Read)
    );
}

#[test]
fn internal_commands_have_no_session() {
    let mut h = Harness::new();
    h.run(put("k", "a")).unwrap();
    h.run(put("k", "b")).unwrap();
    let applied = h.slot(&[cmd(INTERNAL_CLIENT_ID, 0, put("k", "c"))]);
    assert!(!applied.replies[0].duplicate);
    assert_eq!(h.store.get("k"), Some("c"));
    assert_eq!(h.store.stats().sessions, 0);
    assert_eq!(h.store.last_seq(INTERNAL_CLIENT_ID), None);
}

#[test]
fn sessions_evict_the_least_recently_applied_then_smallest_client() {
    let config = StoreConfig {
        max_sessions: 3,
        ..StoreConfig::default()
    };
    let mut h = Harness::with(config);
    // Clients 10, 5 and 7 in slot 1 (ties), client 8 in slot 2: 5 goes (smallest id).
    h.slot(&[
        cmd(10, 1, put("a", "1")),
        cmd(5, 1, put("b", "1")),
        cmd(7, 1, put("c", "1")),
    ]);
    h.slot(&[cmd(8, 1, put("d", "1"))]);
    assert_eq!(h.store.last_seq(5), None);
    assert_eq!(h.store.stats().sessions, 3);
    // Client 7 applies again: now 10 is the least recently applied.
    h.slot(&[cmd(7, 2, put("c", "2"))]);
    // A duplicate does not count as applied.
    h.slot(&[cmd(10, 1, put("a", "1"))]);
    h.slot(&[cmd(11, 1, put("e", "1"))]);
    assert_eq!(h.store.last_seq(10), None);
    let mut kept: Vec<u64> = h.store.state.sessions.keys().copied().collect();
    kept.sort_unstable();
    assert_eq!(kept, vec![7, 8, 11]);
    // An evicted client's retry is applied again: the documented cost of the bound.
    let again = h.client(5, 1, put("b", "again"));
    assert!(!again.duplicate);
    assert_eq!(h.store.get("b"), Some("again"));
}

#[test]
fn eviction_is_the_same_after_a_restore() {
    let config = StoreConfig {
        max_sessions: 4,
        ..StoreConfig::default()
    };
    let mut a = Harness::with(config);
    for client in 1..=4 {
        a.client(client, 1, put("k", &client.to_string()));
    }
    let mut b = Harness::with(config);
    b.store = Store::restore(&a.store.snapshot(), config).unwrap();
    b.lamport = a.lamport;
    for client in 5..=7 {
        a.client(client, 1, put("k", &client.to_string()));
        b.client(client, 1, put("k", &client.to_string()));
    }
    assert_eq!(a.store.digest(), b.store.digest());
    assert_eq!(a.store.last_seq(4), Some(1));
    assert_eq!(a.store.last_seq(3), None);
}

// ---------------------------------------------------------------- apply order

#[test]
#[should_panic(expected = "in order without gaps")]
fn apply_refuses_a_gap() {
    let mut store = Store::new(StoreConfig::default());
    store.apply(2, 1, &[]);
}

#[test]
#[should_panic(expected = "in order without gaps")]
fn apply_refuses_a_repeat() {
    let mut store = Store::new(StoreConfig::default());
    store.apply(1, 1, &[]);
    store.apply(1, 1, &[]);
}

#[test]
fn lamport_is_the_largest_seen_and_messages_keep_their_slots() {
    let mut store = Store::new(StoreConfig::default());
    store.apply(1, 50, &[cmd(0, 0, login("ann"))]);
    store.apply(2, 40, &[cmd(0, 0, create("c"))]);
    let applied = store.apply(3, 45, &[cmd(0, 0, publish("ann", "c", "x"))]);
    assert_eq!(store.lamport(), 50);
    assert_eq!(applied.posted[0].lamport, 45);
    assert_eq!(applied.posted[0].slot, 3);
}

#[test]
fn config_is_validated() {
    assert_eq!(StoreConfig::default().validate(), Ok(()));
    let zero = StoreConfig {
        max_sessions: 0,
        ..StoreConfig::default()
    };
    assert!(matches!(
        zero.validate(),
        Err(ConfigError::Zero {
            field: "max_sessions"
        })
    ));
    assert!(Store::try_new(zero).is_err());
    let huge = StoreConfig {
        history_per_user: MAX_HISTORY_LIMIT + 1,
        ..StoreConfig::default()
    };
    assert!(matches!(huge.validate(), Err(ConfigError::TooLarge { .. })));
    assert!(matches!(
        Store::restore(&Store::new(StoreConfig::default()).snapshot(), huge),
        Err(SnapshotError::Config(_))
    ));
}

// ---------------------------------------------------------------- digest

/// A mixed workload touching every part of the state: in each round of nine slots a user
/// logs in, a channel is created, subscribed to and posted on, and keys are written.
fn workload(slots: u64) -> Vec<Vec<Command>> {
    (1..=slots)
        .map(|slot| {
            let client = slot % 7 + 1;
            let round = slot / 9;
            let user = format!("u{}", round % 4);
            let peer = format!("u{}", (round + 1) % 4);
            let channel = format!("c{}", round % 3);
            let key = format!("k{}", slot % 5);
            let op = match slot % 9 {
                0 => login(&user),
                1 => create(&channel),
                2 => subscribe(&user, &channel),
                3 => publish(&user, &channel, "hello"),
                4 => dm(&user, &peer, "psst"),
                5 => cas(&key, None, &slot.to_string()),
                6 => Op::Delete { key },
                7 => get(&key),
                _ => put(&key, &slot.to_string()),
            };
            vec![cmd(client, slot, op), cmd(client, slot, Op::Noop)]
        })
        .collect()
}

fn fed(slots: &[Vec<Command>]) -> Store {
    let mut store = Store::new(StoreConfig::default());
    for (index, commands) in slots.iter().enumerate() {
        let slot = index as u64 + 1;
        store.apply(slot, slot * 3, commands);
    }
    store
}

#[test]
fn same_slots_same_digest_different_slots_different_digest() {
    let slots = workload(200);
    let a = fed(&slots);
    let b = fed(&slots);
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.applied_slot(), 200);
    assert_eq!(
        Store::new(StoreConfig::default()).digest(),
        Store::new(StoreConfig::default()).digest()
    );

    // One different value somewhere in the middle.
    let mut changed = slots.clone();
    changed[100] = vec![cmd(99, 1, put("k1", "different"))];
    assert_ne!(fed(&changed).digest(), a.digest());

    // Same state, one more empty slot: the applied slot is part of the digest.
    let mut longer = fed(&slots);
    longer.apply(201, 0, &[]);
    assert_ne!(longer.digest(), a.digest());

    // Same commands, another Lamport clock.
    let mut c = fed(&slots[..199]);
    let mut d = fed(&slots[..199]);
    c.apply(200, 1_000, &slots[199]);
    d.apply(200, 1_001, &slots[199]);
    assert_ne!(c.digest(), d.digest());

    // Only a session differs.
    let mut e = fed(&slots);
    let mut f = fed(&slots);
    e.apply(201, 0, &[cmd(1, 1_000, Op::Noop)]);
    f.apply(201, 0, &[cmd(2, 1_000, Op::Noop)]);
    assert_ne!(e.digest(), f.digest());
}

#[test]
fn digest_text_form() {
    let digest = fed(&workload(10)).digest();
    let text = digest.to_string();
    assert_eq!(text.len(), 32);
    assert!(
        text.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(text.parse::<Digest>(), Ok(digest));
    assert_eq!(text.to_uppercase().parse::<Digest>(), Ok(digest));
    assert!("abc".parse::<Digest>().is_err());
    assert!("zz".repeat(16).parse::<Digest>().is_err());
    assert!(format!("{text}0").parse::<Digest>().is_err());
    assert_eq!(format!("{digest:?}"), format!("Digest({text})"));
}

// ---------------------------------------------------------------- snapshot & json

#[test]
fn snapshot_round_trip() {
    let slots = workload(300);
    let store = fed(&slots);
    let bytes = store.snapshot();
    let restored = Store::restore(&bytes, StoreConfig::default()).unwrap();
    assert_eq!(restored.digest(), store.digest());
    assert_eq!(restored.applied_slot(), 300);
    assert_eq!(restored.lamport(), store.lamport());
    assert_eq!(restored.state, store.state);
    assert_eq!(restored.snapshot(), bytes);
    // Applying on from there gives the same as never having snapshotted.
    let mut a = store.clone();
    let mut b = restored;
    let more = workload(330);
    for (index, commands) in more.iter().enumerate().skip(300) {
        let slot = index as u64 + 1;
        a.apply(slot, slot, commands);
        b.apply(slot, slot, commands);
    }
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn json_round_trip_is_exact_and_readable() {
    let store = fed(&workload(300));
    let json = store.to_json("node-2");
    let (node, loaded) = Store::from_json(&json, StoreConfig::default()).unwrap();
    assert_eq!(node, "node-2");
    assert_eq!(loaded.digest(), store.digest());
    assert_eq!(loaded.state, store.state);
    assert_eq!(loaded.to_json("node-2"), json);
    let text = String::from_utf8(json).unwrap();
    assert!(
        text.starts_with("{\n  \"node\": \"node-2\",\n  \"applied_slot\": 300,"),
        "{text}"
    );
    assert!(
        text.contains(&format!("\"digest\": \"{}\"", store.digest())),
        "{text}"
    );
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let object = value.as_object().unwrap();
    let fields: Vec<&str> = object.keys().map(String::as_str).collect();
    for field in [
        "node",
        "applied_slot",
        "lamport",
        "digest",
        "keys",
        "users",
        "channels",
        "inboxes",
        "sessions",
    ] {
        assert!(fields.contains(&field), "{field} missing from {fields:?}");
    }
    let channel = &value["channels"]["c1"];
    assert!(channel["subscribers"].is_array() && channel["next_id"].is_u64());
    assert!(channel["messages"][0]["text"].is_string());
    let session = value["sessions"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    assert!(session["seq"].is_u64() && session["slot"].is_u64());
    assert!(session.get("result").is_some());
}

fn mutate_json(store: &Store, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(&store.to_json("n")).unwrap();
    edit(&mut value);
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn corrupted_json_is_refused() {
    let store = fed(&workload(100));
    let config = StoreConfig::default();
    let digest_mismatch = |bytes: &[u8]| {
        matches!(
            Store::from_json(bytes, config),
            Err(SnapshotError::DigestMismatch { .. })
        )
    };
    let malformed = |bytes: &[u8]| {
        matches!(
            Store::from_json(bytes, config),
            Err(SnapshotError::Malformed(_))
        )
    };
    // A changed value, applied slot, session or message.
    assert!(digest_mismatch(
        &mutate_json(&store, |v| v["keys"]["k1"] = "forged".into())
    ));
    assert!(digest_mismatch(&mutate_json(
        &store,
        |v| v["applied_slot"] = 99.into()
    )));
    assert!(digest_mismatch(
        &mutate_json(&store, |v| v["lamport"] = 1.into())
    ));
    assert!(digest_mismatch(&mutate_json(&store, |v| {
        v["channels"]["c1"]["messages"][0]["text"] = "forged".into();
    })));
    assert!(digest_mismatch(&mutate_json(&store, |v| {
        v["sessions"]["1"]["seq"] = 12_345.into();
    })));
    // A changed digest.
    assert!(digest_mismatch(&mutate_json(&store, |v| {
        v["digest"] = "00000000000000000000000000000000".into();
    })));
    // Not a digest, a missing field, an unknown field, truncated text, not JSON.
    assert!(malformed(
        &mutate_json(&store, |v| v["digest"] = "xyz".into())
    ));
    assert!(malformed(&mutate_json(&store, |v| {
        v.as_object_mut().unwrap().remove("users");
    })));
    assert!(malformed(&mutate_json(&store, |v| v["extra"] = 1.into())));
    let json = store.to_json("n");
    assert!(malformed(&json[..json.len() / 2]));
    assert!(malformed(b"not json at all"));
    assert!(malformed(b""));
    // The node name is not part of the replicated state.
    let renamed = mutate_json(&store, |v| v["node"] = "other".into());
    let (node, loaded) = Store::from_json(&renamed, config).unwrap();
    assert_eq!((node.as_str(), loaded.digest()), ("other", store.digest()));
}

#[test]
fn corrupted_snapshot_is_refused() {
    let store = fed(&workload(100));
    let config = StoreConfig::default();
    let bytes = store.snapshot();
    assert!(matches!(
        Store::restore(&bytes[..bytes.len() - 1], config),
        Err(SnapshotError::Malformed(_))
    ));
    assert!(matches!(
        Store::restore(&[], config),
        Err(SnapshotError::Malformed(_))
    ));
    // Flip one byte inside the text of the last message: same shape, other state.
    let needle = b"psst";
    let at = bytes
        .windows(needle.len())
        .rposition(|w| w == needle)
        .unwrap();
    let mut flipped = bytes.clone();
    flipped[at] = b'P';
    assert!(matches!(
        Store::restore(&flipped, config),
        Err(SnapshotError::DigestMismatch { .. })
    ));
    // Another format version.
    let out = snapshot::tests_support::with_format(&store, SNAPSHOT_FORMAT + 1);
    assert!(matches!(
        Store::restore(&out, config),
        Err(SnapshotError::Format { found, .. }) if found == SNAPSHOT_FORMAT + 1
    ));
}

/// A change made to a state behind the store's back.
type StateEdit = dyn Fn(&mut State);

#[test]
fn inconsistent_state_with_a_correct_digest_is_refused() {
    let config = StoreConfig::default();
    let build = |edit: &dyn Fn(&mut State)| {
        let mut store = fed(&workload(50));
        edit(&mut store.state);
        store.snapshot()
    };
    let cases: Vec<(&str, Box<StateEdit>)> = vec![
        (
            "session from the future",
            Box::new(|s: &mut State| {
                s.sessions.insert(
                    3,
                    Session {
                        seq: 1,
                        slot: 51,
                        result: SessionResult::Read,
                    },
                );
            }),
        ),
        (
            "internal client session",
            Box::new(|s: &mut State| {
                s.sessions.insert(
                    0,
                    Session {
                        seq: 1,
                        slot: 1,
                        result: SessionResult::Read,
                    },
                );
            }),
        ),
        (
            "subscriber never logged in",
            Box::new(|s: &mut State| {
                s.channels
                    .get_mut("c1")
                    .unwrap()
                    .subscribers
                    .insert("ghost".into());
            }),
        ),
        (
            "message id not below next id",
            Box::new(|s: &mut State| {
                s.channels.get_mut("c1").unwrap().next_id = 1;
            }),
        ),
        (
            "inbox of a stranger",
            Box::new(|s: &mut State| {
                s.inboxes.insert("ghost".into(), Default::default());
            }),
        ),
        (
            "empty key",
            Box::new(|s: &mut State| {
                s.keys.insert(String::new(), "v".into());
            }),
        ),
    ];
    for (name, edit) in cases {
        let bytes = build(edit.as_ref());
        assert!(
            matches!(
                Store::restore(&bytes, config),
                Err(SnapshotError::Malformed(_))
            ),
            "{name}"
        );
    }
    // Too many sessions for this replica's bound.
    let small = StoreConfig {
        max_sessions: 2,
        ..config
    };
    assert!(matches!(
        Store::restore(&fed(&workload(50)).snapshot(), small),
        Err(SnapshotError::Malformed(_))
    ));
}

// ---------------------------------------------------------------- cost

/// Not a timed assertion: prints what apply and digest cost, for the report.
#[test]
fn cost_of_apply_and_digest() {
    let mut store = Store::new(StoreConfig::default());
    let value = "v".repeat(256);
    let started = std::time::Instant::now();
    let puts = 20_000u64;
    for slot in 1..=puts {
        let key = format!("key-{:05}", slot % 10_000);
        store.apply(slot, slot, &[cmd(slot % 64 + 1, slot, put(&key, &value))]);
    }
    let apply_us = started.elapsed().as_secs_f64() * 1e6 / puts as f64;
    let started = std::time::Instant::now();
    let digest = store.digest();
    let digest_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = std::time::Instant::now();
    let snapshot = store.snapshot();
    let snapshot_ms = started.elapsed().as_secs_f64() * 1e3;
    println!(
        "store: apply of a 256-byte put {apply_us:.2} µs; digest of {} keys {digest_ms:.2} ms; \
         snapshot {} bytes in {snapshot_ms:.2} ms",
        store.stats().keys,
        snapshot.len()
    );
    assert_eq!(store.stats().keys, 10_000);
    assert_eq!(
        Store::restore(&snapshot, StoreConfig::default())
            .unwrap()
            .digest(),
        digest
    );
}

// ---------------------------------------------------------------- who speaks

#[test]
fn chat_acts_only_for_the_user_of_the_session() {
    let mut h = Harness::new();
    h.run(login("ann")).unwrap();
    h.run(login("bob")).unwrap();
    h.run(create("c")).unwrap();
    let ann = Some(key_of("ann"));
    let as_ann = |h: &mut Harness, seq, op| {
        h.slot(&[cmd_as(1, seq, op, ann.clone())])
            .replies
            .remove(0)
            .result
    };
    // Ann's own requests go through.
    assert_eq!(
        as_ann(&mut h, 1, dm("ann", "bob", "hi")),
        Ok(Reply::Posted { id: 1 })
    );
    // With Ann's credential, nothing can be done as Bob, nor Bob's inbox read.
    for (seq, op) in [
        (2, publish("bob", "c", "forged")),
        (3, dm("bob", "ann", "forged")),
        (4, subscribe("bob", "c")),
        (5, history(user("bob"), 0)),
    ] {
        let error = as_ann(&mut h, seq, op).unwrap_err();
        assert_eq!(error.code, ErrorCode::Unauthenticated);
        assert!(error.message.contains("\"ann\"'s"), "{error}");
    }
    // Without a credential, or with one no login opened, neither.
    for session in [
        None,
        Some(proto::client::session_key("never-logged-in-credential")),
    ] {
        let reply = h.slot(&[cmd_as(2, 1, publish("ann", "c", "x"), session)]);
        assert_eq!(
            code(reply.replies[0].result.clone()),
            ErrorCode::Unauthenticated
        );
    }
    assert!(messages(h.run(history(channel("c"), 0))).is_empty());
    assert_eq!(h.store.stats().chat_sessions, 2);
}

#[test]
fn a_user_registered_before_passwords_gets_one_at_the_next_login() {
    let mut h = Harness::new();
    // What a log written before passwords holds.
    let legacy = Op::Login {
        user: "ann".into(),
        password: String::new(),
    };
    assert_eq!(h.run(legacy.clone()), Ok(Reply::Done));
    assert_eq!(h.store.password("ann"), Password::Unset);
    // Without a password there is nothing to check a login against.
    let open = Op::OpenSession { user: "ann".into() };
    assert_eq!(code(h.run(open.clone())), ErrorCode::Unauthenticated);
    // A message sent to the name before anyone claims it...
    h.run(login("bob")).unwrap();
    assert!(h.run(dm("bob", "ann", "for the old ann")).is_ok());
    // The next login sets it; the one after is refused as a registration.
    assert_eq!(h.run(login("ann")), Ok(Reply::Done));
    // ...is not shown to whoever claimed the name; later ones are.
    assert!(messages(h.run(history(user("ann"), 0))).is_empty());
    assert!(h.run(dm("bob", "ann", "for the new ann")).is_ok());
    let inbox = messages(h.run(history(user("ann"), 0)));
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].text, "for the new ann");
    assert_eq!(h.store.password("ann"), Password::Hash(TEST_HASH));
    assert_eq!(code(h.run(login("ann"))), ErrorCode::Unauthenticated);
    assert_eq!(h.run(open), Ok(Reply::Done));
    // A password never goes into the log.
    let with_password = Op::Login {
        user: "carl".into(),
        password: "secret".into(),
    };
    assert_eq!(code(h.run(with_password)), ErrorCode::BadRequest);
    assert_eq!(h.store.password("carl"), Password::Unknown);
}

#[test]
fn chat_sessions_are_bounded_and_the_oldest_is_evicted_everywhere() {
    let config = StoreConfig {
        max_chat_sessions: 2,
        ..StoreConfig::default()
    };
    let mut a = Harness::with(config);
    for name in ["ann", "bob", "cy"] {
        a.run(login(name)).unwrap();
    }
    a.run(create("c")).unwrap();
    assert_eq!(a.store.stats().chat_sessions, 2);
    // Ann's session, the oldest, was evicted: her credential no longer works.
    assert_eq!(
        code(a.run(publish("ann", "c", "x"))),
        ErrorCode::Unauthenticated
    );
    assert!(a.run(publish("cy", "c", "x")).is_ok());
    // A credential cannot open a second user's session.
    let stolen = cmd_as(
        5,
        1,
        Op::OpenSession { user: "bob".into() },
        Some(key_of("cy")),
    );
    assert_eq!(
        code(a.slot(&[stolen]).replies.remove(0).result),
        ErrorCode::Unauthenticated
    );
    // The state round-trips, sessions and their eviction order included.
    let (_, mut b) = Store::from_json(&a.store.to_json("n"), config).unwrap();
    assert_eq!(b.digest(), a.store.digest());
    let next = a.store.applied_slot() + 1;
    let relogin = [cmd(6, 1, Op::OpenSession { user: "ann".into() })];
    a.store.apply(next, 1000, &relogin);
    b.apply(next, 1000, &relogin);
    assert_eq!(b.digest(), a.store.digest());
    assert_eq!(a.store.stats().chat_sessions, 2);
}

#[test]
fn the_channels_with_the_latest_messages_come_first_with_their_last_messages() {
    let mut h = Harness::new();
    h.run(login("ann")).unwrap();
    for i in 0..20 {
        h.run(create(&format!("c{i}"))).unwrap();
    }
    for round in 0..3 {
        for i in [4, 17, 9, 12] {
            h.run(publish("ann", &format!("c{i}"), &format!("m{round}")))
                .unwrap();
        }
    }
    let recent = h.store.recent_channels(3, 2);
    let names: Vec<&str> = recent.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["c12", "c9", "c17"]);
    let texts: Vec<&str> = recent[0].2.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["m1", "m2"]);
    assert_eq!(h.store.recent_channels(50, 1).len(), 20);
}

#[test]
fn one_user_logging_in_again_and_again_evicts_only_its_own_sessions() {
    let config = StoreConfig {
        max_chat_sessions: 20,
        ..StoreConfig::default()
    };
    let mut h = Harness::with(config);
    h.run(login("ann")).unwrap();
    h.run(login("mallory")).unwrap();
    h.run(create("c")).unwrap();
    // Mallory opens many more sessions than one user may hold.
    for i in 0..(MAX_CHAT_SESSIONS_PER_USER as u64 * 3) {
        let open = cmd_as(
            100 + i,
            1,
            Op::OpenSession {
                user: "mallory".into(),
            },
            Some(format!("{:064x}", 1000 + i)),
        );
        h.slot(&[open]);
    }
    assert_eq!(
        h.store.stats().chat_sessions,
        MAX_CHAT_SESSIONS_PER_USER + 1,
        "mallory's own oldest sessions went"
    );
    assert!(h.run(publish("ann", "c", "still here")).is_ok());
}

#[test]
fn a_store_json_written_before_passwords_loads_with_password_less_users() {
    let bytes = include_bytes!("../tests/data/store-before-passwords.json");
    let (node, store) = Store::from_json(bytes, StoreConfig::default()).unwrap();
    assert_eq!(node, "node-1");
    assert_eq!(store.applied_slot(), 7);
    assert_eq!(store.password("ann"), Password::Unset);
    assert_eq!(store.password("bob"), Password::Unset);
    assert_eq!(store.stats().chat_sessions, 0);
    // Written again, it is in today's format, with today's digest, and loads as such.
    let (_, again) = Store::from_json(&store.to_json("node-1"), StoreConfig::default()).unwrap();
    assert_eq!(again.digest(), store.digest());
    // A legacy digest is accepted only for the state it covers: tampering is refused.
    let tampered = String::from_utf8_lossy(bytes).replace("hi all", "hi ALL");
    assert!(matches!(
        Store::from_json(tampered.as_bytes(), StoreConfig::default()),
        Err(SnapshotError::DigestMismatch { .. })
    ));
}

#[test]
fn registrations_stop_at_max_users() {
    let config = StoreConfig {
        max_users: 2,
        ..StoreConfig::default()
    };
    let mut h = Harness::with(config);
    h.run(login("ann")).unwrap();
    h.run(login("bob")).unwrap();
    let error = h.run(login("cy")).unwrap_err();
    assert_eq!(error.code, ErrorCode::TooLarge);
    assert!(error.message.contains("--max-users"), "{error}");
    let legacy = Op::Login {
        user: "cy".into(),
        password: String::new(),
    };
    assert_eq!(code(h.run(legacy)), ErrorCode::TooLarge);
    // Those registered keep logging in.
    assert_eq!(
        h.run(Op::OpenSession { user: "ann".into() }),
        Ok(Reply::Done)
    );
    assert_eq!(h.store.stats().users, 2);
}

#[test]
fn a_login_refused_for_its_credential_changes_nothing() {
    let mut h = Harness::new();
    h.run(login("ann")).unwrap();
    let before = h.store.digest();
    // Ann's credential, used to register bob: refused, and bob does not exist.
    let stolen = cmd_as(
        3,
        1,
        Op::Register {
            user: "bob".into(),
            password_hash: TEST_HASH.into(),
        },
        Some(key_of("ann")),
    );
    let reply = h.slot(&[stolen]).replies.remove(0);
    assert_eq!(code(reply.result), ErrorCode::Unauthenticated);
    assert_eq!(h.store.password("bob"), Password::Unknown);
    assert_eq!(h.store.stats().users, 1);
    assert_ne!(
        h.store.digest(),
        before,
        "only the slot and the session table moved"
    );
}
