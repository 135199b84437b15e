//! Overload gets an answer (issue 15, item 5): nodes whose table of waiting requests holds
//! one request (`--max-pending-requests 1`) under `bots load` with 12 clients answer the
//! requests beyond it `overloaded` at once — the clients hear it, count it apart and try
//! again — instead of leaving them to wait for their deadline. Every operation ends
//! answered: nothing times out, nothing fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a test

use std::process::{Command, Stdio};

use e2e::{Cluster, ClusterOptions, bin_dir};

#[test]
fn a_full_table_answers_overloaded_and_the_client_tries_again() {
    let cluster = Cluster::start(ClusterOptions {
        node_args: vec!["--max-pending-requests".into(), "1".into()],
        ..ClusterOptions::default()
    });
    cluster.wait_for_leader(&cluster.ids());
    let output = Command::new(bin_dir().join("bots"))
        .args([
            "load",
            "--clients",
            "12",
            "--duration",
            "6s",
            "--mix",
            "put=100",
            "--json",
            "--quiet",
        ])
        .env("BROKER", &cluster.endpoints.broker_frontend)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "bots load failed");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    println!("bots load: {report}");
    let overloaded = report["overloaded"].as_u64().unwrap();
    assert!(overloaded > 0, "no overloaded answer counted: {report}");
    assert!(report["ops"].as_u64().unwrap() > 100, "{report}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    assert_eq!(report["unknown"].as_u64(), Some(0), "{report}");
    // The nodes counted what they refused.
    let refused: f64 = cluster
        .ids()
        .into_iter()
        .filter_map(|id| cluster.node_get(id, "/metrics"))
        .flat_map(|text| {
            text.lines()
                .filter(|l| {
                    l.starts_with("paxos_requests_total") && l.contains("result=\"overloaded\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .sum();
    println!("overloaded answers: {overloaded} counted by the bots, {refused} by the nodes");
    assert!(refused > 0.0);
}
