//! # etcd-load — `bots load`'s load, against etcd
//!
//! The comparison benchmark (`bench/compare.sh`) runs the same load against paxos-zmq
//! (`bots load`) and against an etcd cluster on the same machine, in turns. This is the
//! etcd side: `--clients` concurrent clients, each waiting for its answer before its
//! next request (closed loop, like `bots load`), spread over one HTTP/2 connection per
//! endpoint; puts of `--value-size`-byte values and **linearizable** gets (etcd's
//! default `Range`, not `serializable`) on `--keys` keys, mixed by `--mix`; latency
//! recorded per request in an HDR histogram; `--json` prints the same fields as
//! `bots load --json` (`ops_per_sec`, `p50_ms`, `p99_ms`, `p999_ms`, `errors`).
//!
//! It speaks etcd's gRPC API with two hand-written messages (`Put`, `Range`) through
//! tonic's generic client, so no `protoc` is needed to build it. It is not a member of
//! the project's workspace: only the benchmark builds it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::codec::ProstCodec;
use tonic::transport::{Channel, Endpoint};

/// Highest latency recorded (µs); slower answers count as this.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Deadline of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// etcd's `PutRequest`, the fields used.
#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// etcd's `PutResponse` (its header is skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {}

/// etcd's `RangeRequest` for one key: `serializable` false is a linearizable read.
#[derive(Clone, PartialEq, prost::Message)]
struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bool, tag = "7")]
    serializable: bool,
}

/// etcd's `RangeResponse`, the fields used.
#[derive(Clone, PartialEq, prost::Message)]
struct RangeResponse {
    #[prost(message, repeated, tag = "2")]
    kvs: Vec<KeyValue>,
}

/// etcd's `mvccpb.KeyValue`, the fields used.
#[derive(Clone, PartialEq, prost::Message)]
struct KeyValue {
    #[prost(bytes = "vec", tag = "5")]
    value: Vec<u8>,
}

/// Runs `bots load`'s closed-loop load against etcd and reports throughput and latency.
#[derive(Debug, Parser)]
#[command(name = "etcd-load", version)]
struct Args {
    /// etcd client URLs, separated by commas (one connection each; clients spread over
    /// them in turn).
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        default_value = "http://127.0.0.1:2379,http://127.0.0.1:22379,http://127.0.0.1:32379"
    )]
    endpoints: String,
    /// Concurrent clients.
    #[arg(long, env = "BOTS_CLIENTS", default_value_t = 64)]
    clients: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Operation weights, e.g. `put=100`, `get=100`, `put=40,get=60`.
    #[arg(long, env = "BOTS_MIX", default_value = "put=50,get=50")]
    mix: String,
    /// Bytes of each written value.
    #[arg(long, env = "BOTS_VALUE_SIZE", default_value_t = 256)]
    value_size: usize,
    /// Distinct keys.
    #[arg(long, env = "BOTS_KEYS", default_value_t = 1000)]
    keys: u64,
    /// Print the report as one JSON document.
    #[arg(long)]
    json: bool,
}

/// Share of puts out of 100 parsed from `put=P,get=G`.
fn put_share(mix: &str) -> Result<(u32, u32), String> {
    let (mut put, mut get) = (0u32, 0u32);
    for part in mix.split(',').filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected op=weight"))?;
        let weight: u32 = weight
            .parse()
            .map_err(|_| format!("`{part}`: the weight is not a number"))?;
        match name {
            "put" => put = weight,
            "get" => get = weight,
            other => return Err(format!("`{other}`: etcd-load runs put and get only")),
        }
    }
    if put + get == 0 {
        return Err("the mix has no weight".into());
    }
    Ok((put, put + get))
}

/// One client's counts.
struct Stats {
    latency_us: Histogram<u64>,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn client(
    channel: Channel,
    index: usize,
    args: Arc<Args>,
    shares: (u32, u32),
    stop: Arc<AtomicBool>,
) -> Result<Stats, String> {
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut stats = Stats {
        latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| e.to_string())?,
        ops: 0,
        errors: 0,
        first_error: None,
    };
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut n = 0u64;
    let put_path = tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put");
    let range_path = tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Range");
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("key-{}", rng.random_range(0..args.keys)).into_bytes();
        let put = rng.random_range(0..shares.1) < shares.0;
        let started = Instant::now();
        if let Err(e) = grpc.ready().await {
            return Err(format!("etcd connection: {e}"));
        }
        let outcome = if put {
            let mut value = format!("c{index}n{n}-").into_bytes();
            value.resize(args.value_size.max(value.len()), b'x');
            let mut request = tonic::Request::new(PutRequest { key, value });
            request.set_timeout(REQUEST_TIMEOUT);
            grpc.unary::<_, PutResponse, _>(request, put_path.clone(), ProstCodec::default())
                .await
                .map(|_| ())
        } else {
            let mut request = tonic::Request::new(RangeRequest {
                key,
                serializable: false,
            });
            request.set_timeout(REQUEST_TIMEOUT);
            grpc.unary::<_, RangeResponse, _>(request, range_path.clone(), ProstCodec::default())
                .await
                .map(|_| ())
        };
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match outcome {
            Ok(()) => {
                stats.ops += 1;
                stats
                    .latency_us
                    .saturating_record(us.clamp(1, MAX_LATENCY_US));
            }
            Err(status) => {
                stats.errors += 1;
                stats
                    .first_error
                    .get_or_insert_with(|| status.message().to_owned());
            }
        }
    }
    Ok(stats)
}

async fn run(args: Args) -> Result<(), String> {
    let shares = put_share(&args.mix)?;
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    let mut channels = Vec::new();
    for url in args.endpoints.split(',').filter(|u| !u.is_empty()) {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("endpoint {url}: {e}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot reach etcd at {url}: {e}"))?;
        channels.push(channel);
    }
    if channels.is_empty() {
        return Err("no endpoint given".into());
    }
    let args = Arc::new(args);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|index| {
            let channel = channels[index % channels.len()].clone();
            tokio::spawn(client(channel, index, args.clone(), shares, stop.clone()))
        })
        .collect();
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs_f64(args.seconds)) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    stop.store(true, Ordering::Relaxed);
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).map_err(|e| e.to_string())?;
    let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
    for task in tasks {
        let stats = task.await.map_err(|e| format!("a client failed: {e}"))??;
        latency
            .add(&stats.latency_us)
            .map_err(|e| format!("histograms do not merge: {e}"))?;
        ops += stats.ops;
        errors += stats.errors;
        if first_error.is_none() {
            first_error = stats.first_error;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let ops_per_sec = ops as f64 / elapsed;
    if args.json {
        let report = serde_json::json!({
            "system": "etcd",
            "ops": ops,
            "ops_per_sec": ops_per_sec,
            "p50_ms": ms(0.5),
            "p90_ms": ms(0.9),
            "p99_ms": ms(0.99),
            "p999_ms": ms(0.999),
            "max_ms": latency.max() as f64 / 1000.0,
            "errors": errors,
            "first_error": first_error,
            "clients": args.clients,
            "mix": args.mix,
            "duration_s": elapsed,
        });
        println!("{report}");
    } else {
        println!("etcd          {}", args.endpoints);
        println!("clients       {}", args.clients);
        println!("mix           {}", args.mix);
        println!("ops/s         {ops_per_sec:.0}");
        println!("p50 latency   {:.2} ms", ms(0.5));
        println!("p99 latency   {:.2} ms", ms(0.99));
        println!("p99.9 latency {:.2} ms", ms(0.999));
        println!("errors        {errors}");
        if let Some(error) = first_error {
            println!("first error   {error}");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(error) = run(args).await {
        eprintln!("etcd-load: {error}");
        std::process::exit(1);
    }
}
