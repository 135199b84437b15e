//! Three nodes with the fabric: 1,000 writes through the broker, then every store.json
//! (written at graceful shutdown) shows the same digest and applied slot.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::time::{Duration, Instant};

use e2e::{Client, Cluster, ClusterOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_writes_then_equal_store_json() {
    let mut cluster = Cluster::start(ClusterOptions::default());
    let ids = cluster.ids();
    let leader = tokio::task::block_in_place(|| cluster.wait_for_leader(&ids));
    eprintln!("leader: node-{leader}");

    let client = Client::connect(&cluster.endpoints.broker_frontend).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    // 1,000 writes from 20 concurrent sessions.
    let mut tasks = Vec::new();
    for worker in 0..20 {
        let mut session = client.session();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let key = format!("k-{worker}-{i}");
                session
                    .put(&key, &format!("v-{worker}-{i}"), deadline)
                    .await?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let mut session = client.session();
    assert_eq!(
        session.get("k-7-49", deadline).await.unwrap(),
        Some("v-7-49".to_owned())
    );

    let (slot, digest) = tokio::task::block_in_place(|| cluster.wait_converged(&ids, 1));
    eprintln!("converged at slot {slot} digest {digest}");
    for id in &ids {
        tokio::task::block_in_place(|| cluster.stop(&format!("node-{id}")));
    }
    let docs: Vec<serde_json::Value> = ids.iter().map(|&id| cluster.store_json(id)).collect();
    for doc in &docs {
        assert_eq!(doc["digest"], docs[0]["digest"]);
        assert_eq!(doc["applied_slot"], docs[0]["applied_slot"]);
        assert_eq!(doc["keys"].as_object().unwrap().len(), 1000);
    }
    assert_eq!(docs[0]["keys"]["k-3-17"], "v-3-17");
}
