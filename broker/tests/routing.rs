//! The broker's behaviour over loopback, with stand-in nodes and clients: round-robin,
//! liveness, `unavailable`, reply routing, node restarts, health and shutdown. The
//! functional tests run over every transport backend compiled in
//! (`cargo test -p broker --features transport/zeromq-rs` adds the pure-Rust one).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{DEADLINE, TestBroker, wait_until};
use proto::{ErrorCode, Reply};
use transport::Backend;

const HEARTBEAT: Duration = Duration::from_millis(50);

fn config(liveness_timeout: Duration) -> broker::Config {
    broker::Config {
        liveness_timeout,
        ..broker::Config::default()
    }
}

/// Which node answered.
fn answered_by(response: &proto::Response) -> String {
    match &response.result {
        Ok(Reply::Value(node)) => node.clone(),
        other => panic!("not a node's answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_300_requests_over_3_nodes() {
    for transport in Backend::all() {
        let broker = TestBroker::start(transport, config(Duration::from_secs(1))).await;
        let nodes = [
            broker.node("node-1", HEARTBEAT).await,
            broker.node("node-2", HEARTBEAT).await,
            broker.node("node-3", HEARTBEAT).await,
        ];
        let mut client = broker.client().await;
        // Until all three are in the ring, some answers are `unavailable` or miss a node.
        wait_until("every node has answered", async || {
            let _ = client.call().await;
            nodes.iter().all(|n| n.received() > 0)
        })
        .await;
        let mut counts: HashMap<String, u32> = HashMap::new();
        for _ in 0..300 {
            let response = client.call().await;
            *counts.entry(answered_by(&response)).or_default() += 1;
        }
        assert_eq!(counts.len(), 3, "{transport:?}: {counts:?}");
        for (node, count) in &counts {
            assert!(
                (90..=110).contains(count),
                "{transport:?}: {node} got {count} of 300: {counts:?}"
            );
        }
        for node in nodes {
            node.stop().await;
        }
        let stats = broker.stop().await;
        assert!(stats.requests >= 300 && stats.replies >= 300, "{stats:?}");
        assert_eq!(stats.malformed, 0, "{stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_go_back_to_the_client_that_asked() {
    for transport in Backend::all() {
        let broker = TestBroker::start(transport, config(Duration::from_secs(1))).await;
        let node = broker.node("node-1", HEARTBEAT).await;
        let mut first = broker.client().await;
        wait_until("the node is in the ring", async || {
            first.call().await.result.is_ok()
        })
        .await;
        let mut clients = vec![first];
        for _ in 0..3 {
            clients.push(broker.client().await);
        }
        // Every client has many requests in flight at once; each gets exactly its own.
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                tokio::spawn(async move {
                    let mut sent = Vec::new();
                    for _ in 0..50 {
                        let request = client.request(proto::Op::Noop);
                        sent.push(request.seq);
                        let body = proto::encode(&request).unwrap();
                        client.socket.send(vec![body]).await.unwrap();
                    }
                    let mut got = Vec::new();
                    while got.len() < sent.len() {
                        let message = tokio::time::timeout(DEADLINE, client.socket.recv())
                            .await
                            .unwrap()
                            .unwrap();
                        let response: proto::Response = proto::decode(&message[0]).unwrap();
                        got.push(response.seq);
                    }
                    got.sort_unstable();
                    assert_eq!(got, sent);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        node.stop().await;
        broker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_receives_nothing_until_it_heartbeats_again() {
    // Far above the heartbeat interval, so that only the silenced node ever lapses, even
    // on a busy machine.
    let liveness_timeout = Duration::from_secs(1);
    let broker = TestBroker::start(Backend::default(), config(liveness_timeout)).await;
    let nodes = [
        broker.node("node-1", HEARTBEAT).await,
        broker.node("node-2", HEARTBEAT).await,
        broker.node("node-3", HEARTBEAT).await,
    ];
    let mut client = broker.client().await;
    wait_until("every node has answered", async || {
        let _ = client.call().await;
        nodes.iter().all(|n| n.received() > 0)
    })
    .await;

    nodes[2].set_beating(false);
    // Requests sent before the timeout may still reach node-3: wait until a run of them
    // all goes to the others.
    wait_until("node-3 has left the ring", async || {
        let before = nodes[2].received();
        for _ in 0..30 {
            client.call().await;
        }
        nodes[2].received() == before
    })
    .await;
    // Never early: the broker saw the last heartbeat after the node sent it.
    let last_heartbeat = nodes[2].last_heartbeat().unwrap();
    assert!(
        last_heartbeat.elapsed() >= liveness_timeout,
        "left the ring {:?} after its last heartbeat",
        last_heartbeat.elapsed()
    );
    // From now on node-3 receives nothing, and every request is still served.
    let before = nodes[2].received();
    let mut served = 0;
    for _ in 0..300 {
        let response = client.call().await;
        assert_ne!(answered_by(&response), "node-3");
        served += 1;
    }
    assert_eq!(served, 300);
    assert_eq!(nodes[2].received(), before, "a silent node got requests");

    nodes[2].set_beating(true);
    wait_until("node-3 is back in the ring", async || {
        client.call().await;
        nodes[2].received() > before
    })
    .await;
    for node in nodes {
        node.stop().await;
    }
    let stats = broker.stop().await;
    // Three first joins and one return (whether or not the expiry tick removed it first).
    assert!(stats.joined >= 4, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_live_node_the_client_gets_unavailable_at_once() {
    for transport in Backend::all() {
        let liveness_timeout = Duration::from_millis(200);
        let broker = TestBroker::start(transport, config(liveness_timeout)).await;
        let mut client = broker.client().await;
        // The first round trip includes connecting: not measured.
        let first = client.call().await;
        assert_eq!(first.result.unwrap_err().code, ErrorCode::Unavailable);
        let mut round_trips = Vec::new();
        for _ in 0..9 {
            let start = Instant::now();
            let response = client.call().await;
            round_trips.push(start.elapsed());
            let error = response.result.unwrap_err();
            assert_eq!(error.code, ErrorCode::Unavailable, "{error}");
            assert_eq!(response.node, broker::BROKER_NAME);
        }
        round_trips.sort_unstable();
        assert!(
            round_trips[4] < Duration::from_millis(100),
            "{transport:?}: median {:?} of {round_trips:?}",
            round_trips[4]
        );

        // A node that comes and goes away again leaves the broker answering `unavailable`.
        let node = broker.node("node-1", HEARTBEAT).await;
        wait_until("the node serves", async || {
            client.call().await.result.is_ok()
        })
        .await;
        node.set_beating(false);
        wait_until("unavailable again", async || {
            client
                .call()
                .await
                .result
                .is_err_and(|e| e.code == ErrorCode::Unavailable)
        })
        .await;
        node.stop().await;
        let stats = broker.stop().await;
        assert!(stats.unavailable >= 11, "{stats:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_routed_on_its_new_connection() {
    let broker = TestBroker::start(Backend::default(), config(Duration::from_secs(1))).await;
    let mut client = broker.client().await;
    let node = broker.node("node-1", HEARTBEAT).await;
    wait_until("the node serves", async || {
        client.call().await.result.is_ok()
    })
    .await;
    // Restart: a new connection, before the old one timed out; it proves itself and is
    // the node's route from then on.
    node.stop().await;
    let restarted = broker.node("node-1", HEARTBEAT).await;
    wait_until("the restarted node serves", async || {
        client.try_call(Duration::from_millis(200)).await.is_some() && restarted.received() > 0
    })
    .await;
    restarted.stop().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_client_messages_get_bad_request_and_the_broker_goes_on() {
    let broker = TestBroker::start(Backend::default(), config(Duration::from_secs(1))).await;
    let node = broker.node("node-1", HEARTBEAT).await;
    let mut client = broker.client().await;
    wait_until("the node serves", async || {
        client.call().await.result.is_ok()
    })
    .await;
    let valid = proto::encode(&client.request(proto::Op::Noop)).unwrap();
    for message in [
        vec![b"\x07not ours".to_vec()],
        vec![Vec::new()],
        vec![valid.clone(), valid.clone()],
    ] {
        client.socket.send(message).await.unwrap();
        let reply = tokio::time::timeout(DEADLINE, client.socket.recv())
            .await
            .unwrap()
            .unwrap();
        let response: proto::Response = proto::decode(&reply[0]).unwrap();
        assert_eq!(response.result.unwrap_err().code, ErrorCode::BadRequest);
    }
    assert!(client.call().await.result.is_ok());
    node.stop().await;
    let stats = broker.stop().await;
    assert_eq!(stats.malformed, 3, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_when_a_broker_runs_and_fails_when_none_does() {
    let broker = TestBroker::start(Backend::default(), config(Duration::from_secs(1))).await;
    // No node: the broker's own `unavailable` counts as healthy.
    let response = broker::health(&broker.frontend, DEADLINE).await.unwrap();
    assert_eq!(response.node, broker::BROKER_NAME);
    let node = broker.node("node-1", HEARTBEAT).await;
    let mut client = broker.client().await;
    wait_until("the node serves", async || {
        client.call().await.result.is_ok()
    })
    .await;
    let response = broker::health(&broker.frontend, DEADLINE).await.unwrap();
    assert_eq!(response.node, "node-1");
    node.stop().await;
    let frontend = broker.frontend.clone();
    broker.stop().await;
    let start = Instant::now();
    let error = broker::health(&frontend, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(error, broker::HealthError::Timeout(_)), "{error}");
    assert!(start.elapsed() < DEADLINE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authentic_ready_replayed_from_another_connection_earns_no_request() {
    let broker = TestBroker::start(Backend::default(), config(Duration::from_secs(1))).await;
    let mut client = broker.client().await;
    let node = broker.node("node-1", HEARTBEAT).await;
    wait_until("the node serves", async || {
        client.call().await.result.is_ok()
    })
    .await;
    // A stranger replays sealed READY and heartbeat frames of node-1 (as recorded on the
    // wire) from its own connection, under node-1's name as its identity too.
    let stranger = transport::Socket::open(
        transport::Kind::Dealer,
        transport::Mode::Connect,
        &broker.backend,
        transport::Options::default().identity(b"node-1".to_vec()),
    )
    .await
    .unwrap();
    let (tx, mut rx) = stranger.split();
    let keys = common::keys();
    let recorded = |message: &proto::fabric::NodeToBroker| {
        keys.seal(&[broker::CONTROL], &proto::encode(message).unwrap())
    };
    let node_1 = "node-1".to_owned();
    let ready = recorded(&proto::fabric::NodeToBroker::Ready {
        node: node_1.clone(),
    });
    let heartbeat = recorded(&proto::fabric::NodeToBroker::Heartbeat { node: node_1 });
    let (mut challenges, mut requests) = (0, 0);
    for round in 0..20 {
        let body = if round == 0 { &ready } else { &heartbeat };
        tx.send(vec![body.clone()]).await.unwrap();
        assert!(client.call().await.result.is_ok());
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_millis(20), rx.recv()).await
        {
            match message.as_slice() {
                [frame] if proto::fabric::parse_broker_challenge(frame).is_some() => {
                    challenges += 1
                }
                _ => requests += 1,
            }
        }
    }
    assert_eq!(requests, 0, "the stranger was handed requests");
    assert!(challenges >= 10, "{challenges} challenges");
    assert!(
        node.received() >= 21,
        "a request did not reach the real node-1"
    );
    node.stop().await;
    let stats = broker.stop().await;
    assert_eq!(stats.joined, 1, "{stats:?}");
}
