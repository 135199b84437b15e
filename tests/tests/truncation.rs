//! The disk stays bounded: with small segments and frequent snapshots, every node's WAL
//! is truncated behind its store.json while writes go on. A follower that was down while
//! the others truncated their logs catches up by a snapshot transfer and converges.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::fs;
use std::time::{Duration, Instant};

use e2e::{Client, Cluster, ClusterOptions, Load, lost_writes, runtime, wait_for};

/// Bytes of a node's WAL folder.
fn wal_bytes(cluster: &Cluster, id: u32) -> u64 {
    fs::read_dir(cluster.node_dir(id).join("wal"))
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn logs_are_truncated_and_a_lagging_node_gets_a_snapshot() {
    let rt = runtime();
    let options = ClusterOptions {
        node_args: [
            "--wal-segment-bytes",
            "65536",
            "--snapshot-every-slots",
            "200",
            "--log-retain-slots",
            "50",
        ]
        .map(str::to_owned)
        .to_vec(),
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start(options);
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids);
    let client = rt.block_on(Client::connect(&cluster.endpoints.broker_frontend));
    let load = Load::start(&rt, &client, 8, "trunc");
    load.wait_more_acks(300, Duration::from_secs(60));

    // A follower goes down while the others write and truncate far past it.
    let lagging = ids.iter().copied().find(|&id| id != leader).unwrap();
    cluster.kill(&format!("node-{lagging}"));
    let down_at = cluster.status(leader).unwrap().decided_slot;
    let others: Vec<u32> = ids.iter().copied().filter(|&id| id != lagging).collect();
    wait_for(
        "the others to truncate past the lagging node",
        Duration::from_secs(120),
        || {
            others
                .iter()
                .all(|&id| {
                    cluster
                        .status(id)
                        .is_some_and(|s| s.truncated_slot > down_at + 100)
                })
                .then_some(())
        },
    );
    // Much more was written than one segment holds, yet the logs stay small.
    load.wait_more_acks(3000, Duration::from_secs(120));
    for &id in &others {
        let bytes = wal_bytes(&cluster, id);
        assert!(bytes < 1024 * 1024, "node-{id} WAL holds {bytes} bytes");
    }

    cluster.start_node(lagging, &[]);
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
    let (slot, _) = cluster.wait_converged(&ids, 1);
    let log = cluster.log(&format!("node-{lagging}"));
    assert!(
        log.contains("installed a snapshot"),
        "the lagging node did not catch up by snapshot:\n{log}"
    );
    println!(
        "truncation: WALs stayed under 1 MiB for {} writes; node-{lagging} caught up by snapshot to slot {slot}",
        acked.len()
    );
}
