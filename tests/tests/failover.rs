//! `kill -9` of the leader under load: writes resume (the longest gap without an
//! acknowledged write is measured and printed), no acknowledged write is lost, and the
//! killed node restarts, catches up and converges.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::time::{Duration, Instant};

use e2e::{Client, Cluster, ClusterOptions, Load, lost_writes, runtime};

#[test]
fn kill_the_leader_under_load() {
    let rt = runtime();
    // `FAILOVER_NODE_ARGS` tries other timings, e.g. `--election-timeout-ticks 30`.
    let node_args = std::env::var("FAILOVER_NODE_ARGS")
        .map(|args| args.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut cluster = Cluster::start(ClusterOptions {
        node_args,
        ..ClusterOptions::default()
    });
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids);
    let client = rt.block_on(Client::connect(&cluster.endpoints.broker_frontend));
    let load = Load::start(&rt, &client, 16, "failover");
    load.wait_more_acks(300, Duration::from_secs(60));

    let killed_at = Instant::now();
    cluster.kill(&format!("node-{leader}"));
    let survivors: Vec<u32> = ids.iter().copied().filter(|&id| id != leader).collect();
    load.wait_more_acks(300, Duration::from_secs(60));
    let new_leader = cluster.wait_for_leader(&survivors);
    assert_ne!(new_leader, leader);
    let gap = load.longest_gap_after(killed_at);
    println!(
        "failover: node-{leader} killed, node-{new_leader} leads; longest gap without an acknowledged write: {gap:?}"
    );

    // The old leader comes back, catches up and follows.
    cluster.start_node(leader, &[]);
    load.wait_more_acks(300, Duration::from_secs(60));
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
    let (slot, _) = cluster.wait_converged(&ids, 1);
    assert!(
        acked.len() >= 900,
        "only {} writes acknowledged",
        acked.len()
    );
    println!(
        "failover: {} acknowledged writes all read back; converged at slot {slot}",
        acked.len()
    );
}
