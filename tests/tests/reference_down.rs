//! The reference service is not on the data path: with it down the cluster keeps
//! serving with the membership it last knew, a node restarts from its `node.json`, and
//! every node registers again when the reference returns.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::time::{Duration, Instant};

use e2e::{Client, Cluster, ClusterOptions, Load, lost_writes, runtime, wait_for};

#[test]
fn serve_without_the_reference_and_register_again() {
    let rt = runtime();
    let mut cluster = Cluster::start(ClusterOptions::default());
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids);
    wait_for("every node registered", Duration::from_secs(30), || {
        ids.iter()
            .all(|&id| cluster.status(id).is_some_and(|s| s.registered))
            .then_some(())
    });
    let client = rt.block_on(Client::connect(&cluster.endpoints.broker_frontend));
    let load = Load::start(&rt, &client, 8, "refdown");
    load.wait_more_acks(100, Duration::from_secs(60));

    cluster.kill("reference");
    wait_for(
        "the nodes to notice the reference is gone",
        Duration::from_secs(30),
        || {
            ids.iter()
                .all(|&id| cluster.status(id).is_some_and(|s| !s.registered))
                .then_some(())
        },
    );
    load.wait_more_acks(200, Duration::from_secs(60));
    // A follower restarts while the reference is down: its rank comes from node.json.
    let follower = ids.iter().copied().find(|&id| id != leader).unwrap();
    cluster.kill(&format!("node-{follower}"));
    cluster.start_node(follower, &[]);
    cluster.wait_for_leader(&ids);
    load.wait_more_acks(200, Duration::from_secs(60));

    cluster.start_reference();
    wait_for(
        "every node registered again",
        Duration::from_secs(30),
        || {
            ids.iter()
                .all(|&id| cluster.status(id).is_some_and(|s| s.registered))
                .then_some(())
        },
    );
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
    cluster.wait_converged(&ids, 1);
}
