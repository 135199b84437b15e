//! `SIGSTOP` of the leader for 5 s, then `SIGCONT`: another node leads meanwhile and
//! writes go on; the old leader decides nothing stale and follows; digests agree.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::time::{Duration, Instant};

use e2e::{Client, Cluster, ClusterOptions, Load, lost_writes, runtime, wait_for};

#[test]
fn stop_the_leader_for_five_seconds() {
    let rt = runtime();
    let mut cluster = Cluster::start(ClusterOptions::default());
    let ids = cluster.ids();
    let old = cluster.wait_for_leader(&ids);
    let client = rt.block_on(Client::connect(&cluster.endpoints.broker_frontend));
    let load = Load::start(&rt, &client, 8, "sigstop");
    load.wait_more_acks(200, Duration::from_secs(60));

    let stopped_at = Instant::now();
    cluster.signal(&format!("node-{old}"), "STOP");
    let others: Vec<u32> = ids.iter().copied().filter(|&id| id != old).collect();
    let new = wait_for("another node to lead", Duration::from_secs(30), || {
        cluster.leader(&others)
    });
    load.wait_more_acks(200, Duration::from_secs(30));
    // The scenario holds the leader stopped for 5 s (a duration of the drill, not a wait
    // for something to happen).
    let held = Duration::from_secs(5).saturating_sub(stopped_at.elapsed());
    std::thread::sleep(held);
    cluster.signal(&format!("node-{old}"), "CONT");
    let resumed = Instant::now();

    // The old leader learns of the higher ballot and follows the new one.
    let leader = cluster.wait_for_leader(&ids);
    let follows_after = resumed.elapsed();
    assert_eq!(
        leader, new,
        "the returning node does not take leadership back"
    );
    load.wait_more_acks(200, Duration::from_secs(60));
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
    let (slot, digest) = cluster.wait_converged(&ids, 1);
    println!(
        "sigstop: node-{old} stopped 5 s, node-{new} led meanwhile; every node followed it \
         {follows_after:?} after SIGCONT; converged at slot {slot} ({digest})"
    );
}
