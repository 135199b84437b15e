//! Runs the fake cluster (one `store::Store` behind a ROUTER, a PUB for live messages,
//! `/status` ports) as its own process, to try the client and the bots without a real
//! cluster, or to measure the client side alone:
//!
//! ```text
//! cargo run --release -p client --features fake-cluster --example fake_cluster
//! client --broker <frontend> --proxy <publisher> --nodes <status,...> put k v
//! ```
//!
//! Prints the endpoints as `KEY=value` lines (shell-friendly), then serves until Ctrl-C.
//! Faults are off unless `FAKE_DROP_REPLY_PERCENT`, `FAKE_SWALLOW_PERCENT`,
//! `FAKE_UNAVAILABLE_PERCENT`, `FAKE_DROP_REQUEST_PERCENT` or `FAKE_MAX_REPLY_DELAY_MS`
//! are set.

use std::time::Duration;

use client::fake::{FakeCluster, FakeConfig};

fn percent(name: &str) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = FakeConfig {
        drop_request_percent: percent("FAKE_DROP_REQUEST_PERCENT"),
        unavailable_percent: percent("FAKE_UNAVAILABLE_PERCENT"),
        drop_reply_percent: percent("FAKE_DROP_REPLY_PERCENT"),
        swallow_percent: percent("FAKE_SWALLOW_PERCENT"),
        max_reply_delay: Duration::from_millis(u64::from(percent("FAKE_MAX_REPLY_DELAY_MS"))),
        ..FakeConfig::default()
    };
    let fake = match FakeCluster::start(config).await {
        Ok(fake) => fake,
        Err(error) => {
            eprintln!("error: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("BROKER={}", fake.frontend_endpoint());
    println!("PROXY_BACKEND={}", fake.publisher_endpoint());
    println!("NODES={}", fake.status_addrs().join(","));
    let shutdown = service::shutdown_token();
    shutdown.cancelled().await;
    let stats = fake.stats();
    eprintln!("{stats:?}");
    fake.stop().await;
    std::process::ExitCode::SUCCESS
}
