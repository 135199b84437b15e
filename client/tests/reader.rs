//! A live notice is a doorbell: the [`Reader`] shows what the cluster committed, once,
//! whatever notices (forged, repeated, out of order) come in.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use client::fake::{FakeCluster, FakeConfig};
use client::live::Reader;
use client::{CallOptions, Connection};
use proto::client::{ChatMessage, Target};
use proto::{Consistency, Op, Reply};

fn notice(channel: &str, id: u64) -> ChatMessage {
    ChatMessage {
        id,
        from: String::new(),
        to: Target::Channel(channel.into()),
        text: String::new(),
        slot: 0,
        lamport: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_repeated_notices_show_nothing_the_cluster_did_not_commit() {
    let fake = FakeCluster::start(FakeConfig::default()).await.unwrap();
    let connection = Connection::open(fake.frontend_endpoint()).await.unwrap();
    let options = CallOptions::default();
    let mut ann = connection.session();
    ann.login("ann", "ann-pw", &options).await.unwrap();
    let create = Op::CreateChannel {
        channel: "general".into(),
    };
    ann.call(create, Consistency::Linearizable, &options)
        .await
        .unwrap();
    let mut post = async |text: &str| {
        let op = Op::Publish {
            user: "ann".into(),
            channel: "general".into(),
            text: text.into(),
        };
        match ann
            .call(op, Consistency::Linearizable, &options)
            .await
            .unwrap()
            .reply
        {
            Reply::Posted { id } => id,
            other => panic!("{other:?}"),
        }
    };
    let first = post("one").await;
    let mut anyone = connection.session();
    let mut reader = Reader::new();
    // A forged notice of a message that does not exist shows nothing.
    let forged = reader
        .read(&mut anyone, &notice("general", first + 50), &options)
        .await
        .unwrap();
    assert!(forged.is_empty(), "{forged:?}");
    // The real one shows the committed message, with its author and text.
    let shown = reader
        .read(&mut anyone, &notice("general", first), &options)
        .await
        .unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(
        (shown[0].from.as_str(), shown[0].text.as_str()),
        ("ann", "one")
    );
    // Again (the other proxy's copy): nothing.
    assert!(
        reader
            .read(&mut anyone, &notice("general", first), &options)
            .await
            .unwrap()
            .is_empty()
    );
    // A notice lost on the way: the next one brings both messages.
    let second = post("two").await;
    let third = post("three").await;
    assert_eq!(third, second + 1);
    let both = reader
        .read(&mut anyone, &notice("general", third), &options)
        .await
        .unwrap();
    let texts: Vec<&str> = both.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["two", "three"]);
    fake.stop().await;
}
