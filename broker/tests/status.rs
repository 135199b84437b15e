//! The broker's status port over loopback: `/status` parses back and follows the ring,
//! `/readyz` turns ready with the first live node, `/metrics` counts the traffic,
//! `/livez`, and a 404.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

mod common;

use std::time::Duration;

use common::{DEADLINE, TestBroker, wait_until};
use proto::report::BrokerReport;
use transport::Backend;

const HEARTBEAT: Duration = Duration::from_millis(50);

async fn get(broker: &TestBroker, path: &str) -> (u16, String) {
    service::http::get(broker.status, path, DEADLINE)
        .await
        .unwrap()
}

async fn report(broker: &TestBroker) -> BrokerReport {
    let (code, body) = get(broker, "/status").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_the_ring_and_readyz_the_live_nodes() {
    let config = broker::Config {
        name: "broker-1".into(),
        liveness_timeout: Duration::from_millis(300),
        ..broker::Config::default()
    };
    let broker = TestBroker::start(Backend::default(), config).await;
    assert_eq!(get(&broker, "/livez").await, (200, "ok\n".into()));
    assert_eq!(get(&broker, "/readyz").await.0, 503, "no node yet");
    assert_eq!(get(&broker, "/nothing").await.0, 404);
    let empty = report(&broker).await;
    assert_eq!(empty.name, "broker-1");
    assert_eq!(empty.frontend, broker.frontend);
    assert_eq!(empty.backend, broker.backend);
    assert!(empty.live_nodes.is_empty());
    // With no node: `unavailable`. And a malformed request (a foreign version byte).
    let mut client = broker.client().await;
    let answer = client.call().await;
    assert!(answer.result.is_err(), "{answer:?}");
    client
        .socket
        .send(vec![b"\x09not ours".to_vec()])
        .await
        .unwrap();

    let nodes = [
        broker.node("node-1", HEARTBEAT).await,
        broker.node("node-2", HEARTBEAT).await,
    ];
    wait_until("both nodes are live", async || {
        report(&broker).await.live_nodes.len() == 2
    })
    .await;
    assert_eq!(get(&broker, "/readyz").await, (200, "ready\n".into()));
    for _ in 0..10 {
        client.call().await;
    }
    let busy = report(&broker).await;
    assert!(busy.requests >= 10 && busy.replies >= 10, "{busy:?}");
    assert!(busy.uptime_ms >= empty.uptime_ms);
    let (code, metrics) = get(&broker, "/metrics").await;
    assert_eq!(code, 200);
    for name in [
        "broker_requests_total{node=\"node-1\"}",
        "broker_requests_total{node=\"node-2\"}",
        "broker_replies_total",
        "broker_unavailable_total 1",
        "broker_malformed_messages_total{socket=\"frontend\",reason=\"version\"} 1",
        "broker_control_messages_total",
        "broker_ring_joins_total 2",
        "broker_ring_leaves_total 0",
        "broker_live_nodes 2",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }

    // A node that stops heartbeating leaves the report with the ring.
    nodes[1].set_beating(false);
    wait_until("node-2 is no longer live", async || {
        report(&broker).await.live_nodes == ["node-1"]
    })
    .await;
    nodes[0].set_beating(false);
    wait_until("no node is live", async || {
        get(&broker, "/readyz").await.0 == 503
    })
    .await;
    for node in nodes {
        node.stop().await;
    }
    broker.stop().await;
}
