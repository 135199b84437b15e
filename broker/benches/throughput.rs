//! Throughput and latency through the broker: `cargo bench -p broker`.
//!
//! In one process: the broker (`broker::run` on loopback), 3 echo nodes (DEALER named
//! `node-N`: READY, heartbeats, and a `Response` for every `Request`, decoded and encoded
//! as a real node would) and client DEALERs that keep a fixed number of requests in flight
//! between them. After a warm-up it measures for a while and prints requests/s and
//! latency percentiles. Not a test: it asserts nothing and its figures depend on the
//! machine. Settings (environment):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `BENCH_SECONDS` | 5 | measured time |
//! | `BENCH_CLIENTS` | 4 | client DEALER sockets |
//! | `BENCH_IN_FLIGHT` | 64 | requests in flight, over all clients |
//! | `BENCH_NODES` | 3 | echo nodes |

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench that cannot run should stop loudly

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use proto::fabric::NodeToBroker;
use proto::{Consistency, Op, Reply, Request, Response};
use tokio_util::sync::CancellationToken;
use transport::{Kind, Mode, Options, Socket};

const WARM_UP: Duration = Duration::from_secs(1);
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
const BATCH: usize = 256;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful either.
    let seconds = setting("BENCH_SECONDS", 5);
    let clients = setting("BENCH_CLIENTS", 4).max(1) as usize;
    let in_flight = setting("BENCH_IN_FLIGHT", 64).max(1) as usize;
    let nodes = setting("BENCH_NODES", 3).max(1) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(
        Duration::from_secs(seconds),
        clients,
        in_flight,
        nodes,
    ));
}

async fn bench(measure: Duration, clients: usize, in_flight: usize, nodes: usize) {
    let (frontend, backend) = broker::bind("tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
        .await
        .unwrap();
    let (frontend_ep, backend_ep) = (
        frontend.endpoint().to_owned(),
        backend.endpoint().to_owned(),
    );
    let shutdown = CancellationToken::new();
    let broker_task = tokio::spawn(broker::run(
        frontend,
        backend,
        broker::Config::default(),
        shutdown.clone(),
    ));
    let stop_nodes = CancellationToken::new();
    let mut node_tasks = Vec::new();
    for n in 1..=nodes {
        node_tasks.push(tokio::spawn(echo_node(
            backend_ep.clone(),
            format!("node-{n}"),
            stop_nodes.clone(),
        )));
    }
    // Wait until every node is in the ring: a probe answered by each.
    let mut seen = std::collections::HashSet::new();
    let mut probe = Socket::open(
        Kind::Dealer,
        Mode::Connect,
        &frontend_ep,
        Options::default(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    while seen.len() < nodes {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nodes never joined"
        );
        let body = proto::encode(&request(1, 1)).unwrap();
        probe.send(vec![body]).await.unwrap();
        let message = probe.recv().await.unwrap();
        let response: Response = proto::decode(&message[0]).unwrap();
        if response.result.is_ok() {
            seen.insert(response.node);
        }
    }
    drop(probe);

    let warm_up_end = Instant::now() + WARM_UP;
    let end = warm_up_end + measure;
    let mut client_tasks = Vec::new();
    for c in 0..clients {
        // Spread the window over the clients; the first ones take the remainder.
        let window = in_flight / clients + usize::from(c < in_flight % clients);
        if window == 0 {
            continue;
        }
        client_tasks.push(tokio::spawn(client(
            frontend_ep.clone(),
            c as u64 + 1,
            window,
            warm_up_end,
            end,
        )));
    }
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut completed = 0u64;
    let mut errors = 0u64;
    for task in client_tasks {
        let (histogram, done, failed) = task.await.unwrap();
        latency_us.add(histogram).unwrap();
        completed += done;
        errors += failed;
    }
    stop_nodes.cancel();
    for task in node_tasks {
        task.await.unwrap();
    }
    shutdown.cancel();
    let stats = broker_task.await.unwrap().unwrap();

    let per_second = completed as f64 / measure.as_secs_f64();
    let ms = |q: f64| latency_us.value_at_quantile(q) as f64 / 1000.0;
    println!();
    println!(
        "broker throughput ({:?} transport, {} cores)",
        transport::Backend::default(),
        cores()
    );
    println!(
        "| nodes | clients | in flight | seconds | requests | requests/s | p50 ms | p99 ms | p99.9 ms | max ms | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {nodes} | {clients} | {in_flight} | {} | {completed} | {per_second:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {errors} |",
        measure.as_secs(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        latency_us.max() as f64 / 1000.0,
    );
    println!("broker counters: {stats:?}");
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn request(client_id: u64, seq: u64) -> Request {
    Request {
        client_id,
        seq,
        op: Op::Get {
            key: "bench".into(),
        },
        consistency: Consistency::Linearizable,
    }
}

/// A node that answers every request at once.
async fn echo_node(backend: String, name: String, stop: CancellationToken) {
    let socket = Socket::open(
        Kind::Dealer,
        Mode::Connect,
        &backend,
        Options::default().identity(name.as_bytes().to_vec()),
    )
    .await
    .unwrap();
    let (tx, mut rx) = socket.split();
    tx.send(vec![
        proto::encode(&NodeToBroker::Ready { node: name.clone() }).unwrap(),
    ])
    .await
    .unwrap();
    let heartbeat = proto::encode(&NodeToBroker::Heartbeat { node: name.clone() }).unwrap();
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => tx.send(vec![heartbeat.clone()]).await.unwrap(),
            received = rx.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    return;
                }
                for mut message in batch.drain(..) {
                    let Some(body) = message.pop() else { continue };
                    let Ok(request) = proto::decode::<Request>(&body) else { continue };
                    let response = Response {
                        seq: request.seq,
                        result: Ok(Reply::Done),
                        node: name.clone(),
                        applied_slot: 0,
                    };
                    message.push(proto::encode(&response).unwrap());
                    tx.send(message).await.unwrap();
                }
            }
        }
    }
}

/// Keeps `window` requests in flight until `end`; measures those that complete after
/// `measure_from`. Returns (latencies in µs, completed, errors).
async fn client(
    frontend: String,
    client_id: u64,
    window: usize,
    measure_from: Instant,
    end: Instant,
) -> (Histogram<u64>, u64, u64) {
    let socket = Socket::open(Kind::Dealer, Mode::Connect, &frontend, Options::default())
        .await
        .unwrap();
    let (tx, mut rx) = socket.split();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut sent_at: HashMap<u64, Instant> = HashMap::with_capacity(window * 2);
    let mut next_seq = 1u64;
    let (mut completed, mut errors) = (0u64, 0u64);
    for _ in 0..window {
        sent_at.insert(next_seq, Instant::now());
        tx.send(vec![proto::encode(&request(client_id, next_seq)).unwrap()])
            .await
            .unwrap();
        next_seq += 1;
    }
    let mut batch = Vec::with_capacity(BATCH);
    while !sent_at.is_empty() {
        let received =
            tokio::time::timeout(Duration::from_secs(5), rx.recv_many(&mut batch, BATCH))
                .await
                .expect("a reply within 5 s");
        assert!(received > 0, "socket closed");
        let now = Instant::now();
        for message in batch.drain(..) {
            let response: Response = proto::decode(&message[0]).unwrap();
            let Some(sent) = sent_at.remove(&response.seq) else {
                continue;
            };
            if now >= measure_from && now < end {
                if response.result.is_ok() {
                    completed += 1;
                    let us = now.saturating_duration_since(sent).as_micros() as u64;
                    histogram.record(us.max(1)).unwrap();
                } else {
                    errors += 1;
                }
            }
            if now < end {
                sent_at.insert(next_seq, Instant::now());
                tx.send(vec![proto::encode(&request(client_id, next_seq)).unwrap()])
                    .await
                    .unwrap();
                next_seq += 1;
            }
        }
    }
    (histogram, completed, errors)
}
