//! Every `--crash-at` point: the node aborts exactly there (its log names the point),
//! comes back, and the cluster stays consistent and loses nothing acknowledged.
//!
//! Drills that a follower reaches (accepting, answering clients, forwarding, writing
//! store.json) crash a follower under load. `after-decide` is the leader's: the drill
//! makes the node with the highest rank lead (Bully) while it carries the flag.
//! `after-promise` (fail3 of the seeds) is a follower's during an election: the drill
//! gives the flag to the lowest-ranked node and kills the leader. The tests of this file
//! run one at a time (they share the machine's two cores).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::sync::Mutex;
use std::time::{Duration, Instant};

use e2e::{Client, Cluster, ClusterOptions, Load, lost_writes, runtime, wait_for};

static SERIAL: Mutex<()> = Mutex::new(());

fn name(id: u32) -> String {
    format!("node-{id}")
}

/// `(id, rank)` of every node, in rank order.
fn by_rank(cluster: &Cluster) -> Vec<(u32, u32)> {
    let mut ranks: Vec<(u32, u32)> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.status(id).expect("status").rank))
        .collect();
    ranks.sort_by_key(|&(_, rank)| rank);
    ranks
}

/// Restarts node `id` with `args` and waits until it follows some leader.
fn restart_with(cluster: &mut Cluster, id: u32, args: &[&str]) {
    cluster.kill(&name(id));
    cluster.start_node(id, args);
}

/// Waits for node `id` to abort at `point`.
fn expect_crash(cluster: &mut Cluster, id: u32, point: &str) {
    let status = cluster.wait_exit(&name(id), Duration::from_secs(90));
    assert!(!status.success(), "node-{id} exited with {status}");
    let log = cluster.log(&name(id));
    assert!(
        log.contains(&format!("crash-at {point}")),
        "node-{id} did not crash at {point}:\n{log}"
    );
}

/// Restarts every node in `ids` normally, then checks that writes go on, that every
/// acknowledged write reads back, and that all nodes converge.
fn recover_and_check(
    cluster: &mut Cluster,
    rt: &tokio::runtime::Runtime,
    client: &Client,
    load: Load,
    restart: &[u32],
    point: &str,
) {
    for &id in restart {
        cluster.kill(&name(id));
        cluster.start_node(id, &[]);
    }
    let ids = cluster.ids();
    cluster.wait_for_leader(&ids);
    load.wait_more_acks(100, Duration::from_secs(60));
    let acked = load.stop(rt);
    let lost = rt.block_on(lost_writes(
        client,
        &acked,
        Instant::now() + Duration::from_secs(120),
    ));
    assert!(
        lost.is_empty(),
        "{point}: {} acknowledged writes lost: {lost:?}",
        lost.len()
    );
    let (slot, _) = cluster.wait_converged(&ids, 1);
    println!(
        "{point}: {} acknowledged writes kept, converged at slot {slot}",
        acked.len()
    );
}

/// A follower under load carries `--crash-at point:nth`.
fn follower_drill(point: &str, nth: u32, extra: &[&str]) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let mut cluster = Cluster::start(ClusterOptions::default());
    let ids = cluster.ids();
    let leader = cluster.wait_for_leader(&ids);
    let client = rt.block_on(Client::connect(&cluster.endpoints.broker_frontend));
    let load = Load::start(&rt, &client, 8, point);
    load.wait_more_acks(100, Duration::from_secs(60));
    let follower = ids.iter().copied().find(|&id| id != leader).unwrap();
    let flag = format!("{point}:{nth}");
    let mut args = vec!["--crash-at", flag.as_str()];
    args.extend_from_slice(extra);
    restart_with(&mut cluster, follower, &args);
    expect_crash(&mut cluster, follower, point);
    recover_and_check(&mut cluster, &rt, &client, load, &[follower], point);
}

#[test]
fn after_accept_persist() {
    follower_drill("after-accept-persist", 20, &[]);
}

#[test]
fn after_accept_send() {
    follower_drill("after-accept-send", 20, &[]);
}

#[test]
fn before_reply() {
    follower_drill("before-reply", 20, &[]);
}

#[test]
fn with_pending_request() {
    follower_drill("with-pending-request", 20, &[]);
}

#[test]
fn after_snapshot() {
    follower_drill("after-snapshot", 2, &["--snapshot-every-slots", "20"]);
}

/// fail3: a follower dies right after it promised in phase 1.
#[test]
fn after_promise() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let mut cluster = Cluster::start(ClusterOptions::default());
    let ids = cluster.ids();
    cluster.wait_for_leader(&ids);
    let client = rt.block_on(Client::connect(&cluster.endpoints.broker_frontend));
    let load = Load::start(&rt, &client, 8, "after-promise");
    load.wait_more_acks(100, Duration::from_secs(60));
    // The lowest rank never runs while a higher one lives: it promises.
    let (lowest, _) = by_rank(&cluster)[0];
    restart_with(&mut cluster, lowest, &["--crash-at", "after-promise"]);
    let leader = cluster.wait_for_leader(&ids);
    assert_ne!(leader, lowest, "a returning node does not take leadership");
    cluster.kill(&name(leader));
    expect_crash(&mut cluster, lowest, "after-promise");
    recover_and_check(
        &mut cluster,
        &rt,
        &client,
        load,
        &[lowest, leader],
        "after-promise",
    );
}

/// The leader dies right after it broadcast a Decide, before applying or answering.
#[test]
fn after_decide() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let mut cluster = Cluster::start(ClusterOptions::default());
    let ids = cluster.ids();
    cluster.wait_for_leader(&ids);
    let client = rt.block_on(Client::connect(&cluster.endpoints.broker_frontend));
    let load = Load::start(&rt, &client, 8, "after-decide");
    load.wait_more_acks(100, Duration::from_secs(60));
    // The highest rank carries the flag, then leads once the current leader is gone.
    let (highest, _) = *by_rank(&cluster).last().unwrap();
    restart_with(&mut cluster, highest, &["--crash-at", "after-decide:10"]);
    let others: Vec<u32> = ids.iter().copied().filter(|&id| id != highest).collect();
    let mut killed = Vec::new();
    wait_for(
        "the flagged node to lead and crash",
        Duration::from_secs(90),
        || {
            if !cluster.is_running(&name(highest)) {
                return Some(());
            }
            // Another node leads (it took over while the flagged one restarted): kill it, so
            // that the highest rank runs.
            if let Some(leader) = cluster.leader(&others) {
                cluster.kill(&name(leader));
                killed.push(leader);
            }
            None
        },
    );
    expect_crash(&mut cluster, highest, "after-decide");
    killed.push(highest);
    recover_and_check(&mut cluster, &rt, &client, load, &killed, "after-decide");
}
