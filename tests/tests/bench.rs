//! Benchmark (ignored by default; not a test of timing): writes/s and latency
//! percentiles at 1, 16, 64 and 256 concurrent clients, 256-byte values, 3 nodes.
//!
//! ```text
//! cargo test -p e2e --release --test bench -- --ignored --nocapture
//! ```
//! Optional: `BENCH_SECONDS` (default 10) per row, `BENCH_CLIENTS` (e.g. `64`),
//! `BENCH_NODE_ARGS` (extra node flags, e.g. `--window-slots 8`), `BENCH_FABRIC` (1: one
//! broker and one proxy; default 2, the pair `./on.sh` runs), `BENCH_BROKER` (a running
//! cluster's broker frontend, e.g. `tcp://127.0.0.1:5555`: load it instead of starting
//! one — to compare this harness and `bots load` on the same cluster).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic in a test is a failed test
#![allow(clippy::print_stdout)] // the table is the output

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{Client, Cluster, ClusterOptions, runtime};
use hdrhistogram::Histogram;
use proto::{Consistency, Op, Reply};

/// Keys each client cycles through (the state stays bounded, as in a real workload,
/// so that store.json snapshots cost the same at every row).
const KEYS_PER_CLIENT: u64 = 100;
/// Sessions multiplexed over one DEALER.
const SESSIONS_PER_SOCKET: usize = 32;

#[test]
#[ignore = "benchmark: run with --ignored --nocapture (release build)"]
fn bench_writes() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rows: Vec<usize> = match std::env::var("BENCH_CLIENTS") {
        Ok(list) => list
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect(),
        Err(_) => vec![1, 16, 64, 256],
    };
    let rt = runtime();
    let node_args = std::env::var("BENCH_NODE_ARGS")
        .map(|args| args.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let fabric = std::env::var("BENCH_FABRIC")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    // Keep the cluster alive until the end (None: loading a running one).
    let (broker, _cluster) = match std::env::var("BENCH_BROKER") {
        Ok(broker) => {
            println!("loading the running cluster at {broker}");
            (broker, None)
        }
        Err(_) => {
            let cluster = Cluster::start(ClusterOptions {
                log: "warn".to_owned(),
                node_args,
                fabric,
                ..ClusterOptions::default()
            });
            println!("fabric: {fabric} broker(s) and proxy(ies)");
            cluster.wait_for_leader(&cluster.ids());
            (cluster.endpoints.broker_frontend.clone(), Some(cluster))
        }
    };
    let value = "x".repeat(256);
    println!();
    println!("| clients | writes | writes/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |");
    println!("|--------:|-------:|---------:|-------:|-------:|---------:|-------:|-------:|");
    for clients in rows {
        let sockets = clients.div_ceil(SESSIONS_PER_SOCKET);
        let connections: Vec<Client> = (0..sockets)
            .map(|_| rt.block_on(Client::connect(&broker)))
            .collect();
        let histogram = Arc::new(Mutex::new(
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
        ));
        let errors = Arc::new(Mutex::new(0u64));
        // Warm-up: one write per client before the clock starts.
        let start = Instant::now() + Duration::from_millis(500);
        let end = start + Duration::from_secs(seconds);
        let tasks: Vec<_> = (0..clients)
            .map(|n| {
                let mut session = connections[n / SESSIONS_PER_SOCKET].session();
                let (histogram, errors, value) = (histogram.clone(), errors.clone(), value.clone());
                rt.spawn(async move {
                    let mut i = 0u64;
                    let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                    let mut failed = 0;
                    loop {
                        let now = Instant::now();
                        if now >= end {
                            break;
                        }
                        i += 1;
                        let op = Op::Put {
                            key: format!("b{n}-{}", i % KEYS_PER_CLIENT),
                            value: value.clone(),
                        };
                        let result = session
                            .call(op, Consistency::Linearizable, now + Duration::from_secs(10))
                            .await;
                        let ok = matches!(&result, Ok(r) if r.result == Ok(Reply::Done));
                        if now >= start {
                            if ok {
                                local.record(now.elapsed().as_micros() as u64).unwrap();
                            } else {
                                failed += 1;
                            }
                        }
                    }
                    histogram.lock().unwrap().add(&local).unwrap();
                    *errors.lock().unwrap() += failed;
                })
            })
            .collect();
        for task in tasks {
            rt.block_on(task).unwrap();
        }
        let h = histogram.lock().unwrap();
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "| {clients} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            h.len(),
            h.len() as f64 / seconds as f64,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0,
            errors.lock().unwrap()
        );
    }
}
