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
//! | `BENCH_CLIENTS` | 1,2,4 | client DEALER sockets: one row per count |
//! | `BENCH_IN_FLIGHT` | 64 | requests in flight, over all clients |
//! | `BENCH_NODES` | 3 | echo nodes |
//! | `BENCH_BROKER` | `in-process` | `process`: run the `broker` binary as its own process (as deployed) |
//!
//! Each row also shows where the CPU went during the measured window, by thread kind
//! (from `/proc/self/task/*/stat`): the broker's two ROUTER I/O threads, the DEALER I/O
//! threads of the nodes and clients, the tokio workers (the broker loop, the nodes and the
//! clients), and the rest (libzmq's own I/O thread). The transport gives every socket a
//! thread, so the more sockets live in this one process, the more wake-ups and context
//! switches each request costs on 2 cores: compare the rows.

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
    let clients: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    let in_flight = setting("BENCH_IN_FLIGHT", 64).max(1) as usize;
    let nodes = setting("BENCH_NODES", 3).max(1) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(
        Duration::from_secs(seconds),
        &clients,
        in_flight,
        nodes,
    ));
}

/// The broker being measured: in this process, or the `broker` binary.
enum BrokerUnderTest {
    InProcess {
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<Result<broker::Stats, broker::BrokerError>>,
    },
    Process(std::process::Child),
}

impl BrokerUnderTest {
    async fn start(as_process: bool) -> (BrokerUnderTest, String, String) {
        if as_process {
            let free = || {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                format!("tcp://{}", listener.local_addr().unwrap())
            };
            let (frontend, backend) = (free(), free());
            let key_file =
                std::env::temp_dir().join(format!("broker-bench-{}.key", std::process::id()));
            std::fs::write(&key_file, BENCH_KEY).unwrap();
            let child = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
                .args(["--frontend", &frontend, "--backend", &backend])
                .env("CLUSTER_KEY_FILE", &key_file)
                .args(["--status-addr", "127.0.0.1:0"])
                .env("RUST_LOG", "warn")
                .spawn()
                .unwrap();
            let start = Instant::now();
            while broker::health(&frontend, Duration::from_millis(200))
                .await
                .is_err()
            {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "the broker never answered"
                );
            }
            return (BrokerUnderTest::Process(child), frontend, backend);
        }
        let (frontend, backend) = broker::bind("tcp://127.0.0.1:0", "tcp://127.0.0.1:0")
            .await
            .unwrap();
        let endpoints = (
            frontend.endpoint().to_owned(),
            backend.endpoint().to_owned(),
        );
        let status = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(broker::run(
            frontend,
            backend,
            status,
            broker::Config::default(),
            bench_keys(),
            shutdown.clone(),
        ));
        (
            BrokerUnderTest::InProcess { shutdown, task },
            endpoints.0,
            endpoints.1,
        )
    }

    /// CPU ticks of the broker's own process, if it has one.
    fn process_ticks(&self) -> Option<u64> {
        let BrokerUnderTest::Process(child) = self else {
            return None;
        };
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).ok()?;
        Some(ticks_of(&stat))
    }

    async fn stop(self) {
        match self {
            BrokerUnderTest::InProcess { shutdown, task } => {
                shutdown.cancel();
                let stats = task.await.unwrap().unwrap();
                println!("broker counters: {stats:?}");
            }
            BrokerUnderTest::Process(mut child) => {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let _ = child.wait();
            }
        }
    }
}

async fn bench(measure: Duration, client_counts: &[usize], in_flight: usize, nodes: usize) {
    let as_process = std::env::var("BENCH_BROKER").is_ok_and(|v| v == "process");
    let (broker_under_test, frontend_ep, backend_ep) = BrokerUnderTest::start(as_process).await;
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

    println!();
    println!(
        "broker throughput ({:?} transport, broker {}, {} cores, {nodes} echo nodes, {in_flight} requests in flight, {} s per row)",
        transport::Backend::default(),
        if as_process {
            "in its own process"
        } else {
            "in-process"
        },
        cores(),
        measure.as_secs()
    );
    println!(
        "| clients | requests/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | CPU µs/request | CPU: broker (ROUTER threads, or its process) | DEALER threads | tokio workers | other (libzmq I/O) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &clients in client_counts {
        row(
            &broker_under_test,
            &frontend_ep,
            measure,
            clients,
            in_flight,
        )
        .await;
    }
    stop_nodes.cancel();
    for task in node_tasks {
        task.await.unwrap();
    }
    broker_under_test.stop().await;
}

/// One row of the table: `clients` DEALERs sharing `in_flight` requests.
async fn row(
    broker_under_test: &BrokerUnderTest,
    frontend: &str,
    measure: Duration,
    clients: usize,
    in_flight: usize,
) {
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
            frontend.to_owned(),
            c as u64 + 1,
            window,
            warm_up_end,
            end,
        )));
    }
    tokio::time::sleep_until(warm_up_end.into()).await;
    let (cpu_before, broker_before) = (cpu_by_thread_kind(), broker_under_test.process_ticks());
    tokio::time::sleep_until(end.into()).await;
    let (mut cpu_after, broker_after) = (cpu_by_thread_kind(), broker_under_test.process_ticks());
    if let (Some(before), Some(after)) = (broker_before, broker_after) {
        // The broker's own process: its CPU goes in the first column.
        cpu_after[0] += after.saturating_sub(before);
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
    let per_second = completed as f64 / measure.as_secs_f64();
    let ms = |q: f64| latency_us.value_at_quantile(q) as f64 / 1000.0;
    let cpu: Vec<f64> = cpu_after
        .iter()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before) as f64 / CLOCK_TICKS_PER_S)
        .collect();
    let total_cpu_s: f64 = cpu.iter().sum();
    let share = |i: usize| 100.0 * cpu[i] / measure.as_secs_f64();
    println!(
        "| {clients} | {per_second:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {errors} | {:.1} | {:.0} % | {:.0} % | {:.0} % | {:.0} % |",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        latency_us.max() as f64 / 1000.0,
        total_cpu_s * 1e6 / completed.max(1) as f64,
        share(0),
        share(1),
        share(2),
        share(3),
    );
}

/// Linux reports thread CPU time in clock ticks of 1/100 s (USER_HZ, fixed by the ABI).
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// CPU ticks used so far by this process's threads, by kind: [broker ROUTER I/O threads,
/// DEALER I/O threads, tokio workers, others].
fn cpu_by_thread_kind() -> [u64; 4] {
    let mut ticks = [0u64; 4];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return ticks;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let used = ticks_of(&std::fs::read_to_string(path.join("stat")).unwrap_or_default());
        let kind = match name.trim() {
            "zmq-router" => 0,
            "zmq-dealer" => 1,
            "tokio-rt-worker" => 2,
            _ => 3,
        };
        ticks[kind] += used;
    }
    ticks
}

/// User plus system CPU ticks from a `/proc/.../stat` line.
fn ticks_of(stat: &str) -> u64 {
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let Some((_, after_name)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum()
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
        credential: None,
    }
}

/// The cluster key of the benchmark's broker and echo nodes.
const BENCH_KEY: &str = "abababababababababababababababababababababababababababababababab";

fn bench_keys() -> proto::seal::Keyring {
    proto::seal::Keyring::parse(BENCH_KEY).unwrap()
}

/// A node that answers every request at once (opening and sealing as a node does).
async fn echo_node(backend: String, name: String, stop: CancellationToken) {
    let keys = bench_keys();
    let socket = Socket::open(Kind::Dealer, Mode::Connect, &backend, Options::default())
        .await
        .unwrap();
    let (tx, mut rx) = socket.split();
    let control =
        |message: &NodeToBroker| keys.seal(&[broker::CONTROL], &proto::encode(message).unwrap());
    tx.send(vec![control(&NodeToBroker::Ready { node: name.clone() })])
        .await
        .unwrap();
    let heartbeat = control(&NodeToBroker::Heartbeat { node: name.clone() });
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
                    if let [frame] = message.as_slice()
                        && let Some(nonce) = proto::fabric::parse_broker_challenge(frame)
                    {
                        let proof = NodeToBroker::Proof { node: name.clone(), nonce: nonce.to_vec() };
                        tx.send(vec![control(&proof)]).await.unwrap();
                        continue;
                    }
                    let Some(sealed) = message.pop() else { continue };
                    let Ok(body) = keys.open(&[broker::REQUEST, &message[..].concat()], &sealed)
                    else {
                        continue;
                    };
                    let Ok(request) = proto::decode::<Request>(&body) else { continue };
                    let response = Response {
                        seq: request.seq,
                        result: Ok(Reply::Done),
                        node: name.clone(),
                        applied_slot: 0,
                    };
                    let reply = keys.seal(&[broker::REPLY, &message[..].concat()], &proto::encode(&response).unwrap());
                    message.push(reply);
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
