//! Berkeley clock synchronisation: a node whose wall clock is 3 s ahead (`--clock-skew-ms`,
//! the system clock is never touched) gets an offset of about -3 s from the leader's
//! rounds, and the others stay near 0; every node reports its offset in `/status`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test

use std::time::Duration;

use e2e::{Cluster, ClusterOptions, wait_for};

#[test]
fn a_skewed_clock_is_corrected() {
    let options = ClusterOptions {
        node_args: vec!["--clock-interval".into(), "300ms".into()],
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start(options);
    let ids = cluster.ids();
    // Restart node 2 with a clock 3 s ahead.
    cluster.kill("node-2");
    cluster.start_node(2, &["--clock-skew-ms", "3000"]);
    cluster.wait_for_leader(&ids);
    let offsets = wait_for(
        "the skewed clock to be corrected",
        Duration::from_secs(60),
        || {
            let offsets: Vec<i64> = ids
                .iter()
                .map(|&id| cluster.status(id).map(|s| s.clock_offset_ms))
                .collect::<Option<_>>()?;
            let skewed_ok = (offsets[1] + 3000).abs() <= 250;
            let others_ok = offsets[0].abs() <= 250 && offsets[2].abs() <= 250;
            (skewed_ok && others_ok).then_some(offsets)
        },
    );
    println!("clock offsets (ms) of nodes 1..3: {offsets:?}");
}
