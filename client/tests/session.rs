//! Sessions against the fake cluster: retries keep `(client_id, seq)` so that commands
//! take effect once, lost answers become unknown outcomes, refusals become certain ones.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::time::Duration;

use client::fake::{FakeCluster, FakeConfig};
use client::{CallError, CallOptions, Connection};
use proto::{Consistency, ErrorCode, Op, Reply};

const FAST: CallOptions = CallOptions {
    attempt_timeout: Duration::from_millis(50),
    timeout: Duration::from_secs(10),
};

/// Reads the counter, adds one with a CAS; loops on mismatch. Returns the increments
/// this session made.
async fn increment(connection: Connection, times: u32) -> u32 {
    let mut session = connection.session();
    let key = "counter".to_owned();
    let mut done = 0;
    while done < times {
        let current = match session
            .call(
                Op::Get { key: key.clone() },
                Consistency::Linearizable,
                &FAST,
            )
            .await
        {
            Ok(answer) => match answer.reply {
                Reply::Value(value) => Some(value),
                other => panic!("a get answered {other:?}"),
            },
            Err(error) if error.code() == Some(ErrorCode::NotFound) => None,
            Err(error) => panic!("get failed: {error}"),
        };
        let next = current.as_deref().map_or(0, |v| v.parse::<u32>().unwrap()) + 1;
        let op = Op::Cas {
            key: key.clone(),
            expected: current,
            new: next.to_string(),
        };
        match session.call(op, Consistency::Linearizable, &FAST).await {
            Ok(_) => done += 1,
            Err(error) if error.code() == Some(ErrorCode::CasMismatch) => {}
            Err(error) => panic!("cas failed: {error}"),
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_take_effect_exactly_once() {
    // A third of the replies are lost, the rest are delayed and reordered: every lost
    // CAS reply is retried with the same seq and must get the cached answer, not a
    // mismatch for its own earlier effect.
    let fake = FakeCluster::start(FakeConfig {
        drop_reply_percent: 30,
        max_reply_delay: Duration::from_millis(5),
        seed: 7,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let connection = Connection::open(fake.frontend_endpoint()).await.unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(increment(connection.clone(), 25)))
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(total, 100);
    let store = fake.store();
    assert_eq!(store.get("counter"), Some("100"));
    let stats = fake.stats();
    assert!(stats.dropped_replies > 0, "{stats:?}");
    assert!(stats.requests > stats.replies, "{stats:?}");
    assert!(connection.stats().bad_frames == 0);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_is_an_unknown_outcome() {
    let fake = FakeCluster::start(FakeConfig {
        swallow_percent: 100,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let connection = Connection::open(fake.frontend_endpoint()).await.unwrap();
    let mut session = connection.session();
    let options = CallOptions {
        attempt_timeout: Duration::from_millis(30),
        timeout: Duration::from_millis(200),
    };
    let op = Op::Put {
        key: "k".into(),
        value: "v".into(),
    };
    let error = session
        .call(op, Consistency::Linearizable, &options)
        .await
        .unwrap_err();
    assert!(
        matches!(error, CallError::Timeout { attempts, .. } if attempts >= 2),
        "{error:?}"
    );
    assert!(!error.certainly_not_applied());
    // And indeed it did take effect, once, though nobody heard of it.
    assert_eq!(fake.store().get("k"), Some("v"));
    assert_eq!(fake.store().stats().sessions, 1);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_until_the_deadline_are_certain_failures() {
    let fake = FakeCluster::start(FakeConfig {
        unavailable_percent: 100,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let connection = Connection::open(fake.frontend_endpoint()).await.unwrap();
    let mut session = connection.session();
    let options = CallOptions {
        attempt_timeout: Duration::from_millis(500),
        timeout: Duration::from_millis(300),
    };
    let op = Op::Put {
        key: "k".into(),
        value: "v".into(),
    };
    let error = session
        .call(op, Consistency::Linearizable, &options)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CallError::Unavailable { attempts, .. } if *attempts >= 2),
        "{error:?}"
    );
    assert!(error.certainly_not_applied());
    assert_eq!(fake.store().get("k"), None);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_not_sent() {
    let fake = FakeCluster::start(FakeConfig::default()).await.unwrap();
    let connection = Connection::open(fake.frontend_endpoint()).await.unwrap();
    let mut session = connection.session();
    let error = session
        .call(
            Op::Get { key: String::new() },
            Consistency::Linearizable,
            &FAST,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, CallError::Invalid(_)), "{error:?}");
    assert!(error.certainly_not_applied());
    assert_eq!(fake.stats().requests, 0);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_distinct_and_pipelined_over_one_connection() {
    let fake = FakeCluster::start(FakeConfig {
        max_reply_delay: Duration::from_millis(3),
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let connection = Connection::open(fake.frontend_endpoint()).await.unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|n| {
            let mut session = connection.session();
            tokio::spawn(async move {
                for i in 0..20 {
                    let op = Op::Put {
                        key: format!("s{n}"),
                        value: format!("{i}"),
                    };
                    session
                        .call(op, Consistency::Linearizable, &FAST)
                        .await
                        .unwrap();
                }
                session.client_id()
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap());
    }
    assert_eq!(ids.len(), 32);
    assert!(!ids.contains(&0));
    let store = fake.store();
    assert_eq!(store.stats().sessions, 32);
    for n in 0..32 {
        assert_eq!(store.get(&format!("s{n}")), Some("19"));
    }
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_costs_no_error_and_under_a_second() {
    // Two brokers in front of one store; one of them stops reading (SIGSTOP) while
    // calls run: its calls fail over to the other, with the same seq, at once.
    let fake = FakeCluster::start(FakeConfig {
        brokers: 2,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let connection = Connection::open(fake.frontend_endpoint()).await.unwrap();
    let options = CallOptions::default();
    let mut session = connection.session();
    let mut longest = Duration::ZERO;
    for i in 0..200u32 {
        if i == 50 {
            fake.pause_broker(0, true);
        }
        if i == 150 {
            fake.pause_broker(0, false);
        }
        let started = std::time::Instant::now();
        let op = Op::Put {
            key: format!("k{i}"),
            value: "v".into(),
        };
        session
            .call(op, Consistency::Linearizable, &options)
            .await
            .unwrap();
        longest = longest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("longest call {longest:?}, {:?}", connection.stats());
    assert!(longest < Duration::from_secs(1), "longest call {longest:?}");
    assert!(connection.stats().failovers > 0, "{:?}", connection.stats());
    // Every put took effect once (the store counts each key once).
    assert_eq!(fake.store().get("k199"), Some("v"));
    // The resumed broker is used again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(connection.brokers_up().len(), 2);
    fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_broker_down_a_call_fails_clearly_and_recovers_after() {
    let fake = FakeCluster::start(FakeConfig {
        brokers: 2,
        ..FakeConfig::default()
    })
    .await
    .unwrap();
    let connection = Connection::open(fake.frontend_endpoint()).await.unwrap();
    let mut session = connection.session();
    let put = |i: u32| Op::Put {
        key: format!("k{i}"),
        value: "v".into(),
    };
    let short = CallOptions {
        attempt_timeout: Duration::from_millis(200),
        timeout: Duration::from_millis(800),
    };
    session
        .call(put(1), Consistency::Linearizable, &short)
        .await
        .unwrap();
    fake.pause_broker(0, true);
    fake.pause_broker(1, true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let error = session
        .call(put(2), Consistency::Linearizable, &short)
        .await
        .unwrap_err();
    assert!(
        matches!(error, CallError::NoBroker { sent: false, .. }),
        "{error}"
    );
    assert_eq!(error.kind(), "unavailable");
    assert!(error.certainly_not_applied());
    assert!(started.elapsed() < Duration::from_secs(2), "never a hang");
    // One broker returns: calls succeed again, with no action of the caller.
    fake.pause_broker(1, false);
    session
        .call(put(3), Consistency::Linearizable, &CallOptions::default())
        .await
        .unwrap();
    fake.stop().await;
}
