//! `kill -9` of every node at once, then a restart: every acknowledged write is still
//! there (the WAL made each one durable on a quorum before it was acknowledged).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::time::{Duration, Instant};

use e2e::{Client, Cluster, ClusterOptions, Load, lost_writes, runtime};

#[test]
fn kill_every_node_then_restart() {
    let rt = runtime();
    let mut cluster = Cluster::start(ClusterOptions::default());
    let ids = cluster.ids();
    cluster.wait_for_leader(&ids);
    let client = rt.block_on(Client::connect(&cluster.endpoints.broker_frontend));
    let load = Load::start(&rt, &client, 16, "killall");
    load.wait_more_acks(500, Duration::from_secs(60));
    for id in &ids {
        cluster.kill(&format!("node-{id}"));
    }
    // Writes in flight now time out (unknown outcome); the acknowledged ones count.
    let acked_before_restart = load.acked.all();
    for id in &ids {
        cluster.start_node(*id, &[]);
    }
    cluster.wait_for_leader(&ids);
    load.wait_more_acks(100, Duration::from_secs(60));
    let acked = load.stop(&rt);
    let lost = rt.block_on(lost_writes(
        &client,
        &acked,
        Instant::now() + Duration::from_secs(120),
    ));
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
    assert!(acked_before_restart.len() >= 500);
    cluster.wait_converged(&ids, 1);
    println!(
        "kill-all: {} writes acknowledged before the crash, {} in all, none lost",
        acked_before_restart.len(),
        acked.len()
    );
}
