//! The `broker` binary: flags, then bind and [`broker::run`], or `broker health`, on the
//! skeleton of [`service::Program`].

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use service::{Flavor, Program};
use tokio_util::sync::CancellationToken;

// One event loop and nothing to spread over threads (see `Flavor::CurrentThread`).
const BROKER: Program = Program::new("broker", Flavor::CurrentThread);

/// Round-robin request broker of paxos-zmq.
///
/// Clients (the `client` CLI, the bots) connect DEALER sockets to the frontend; nodes
/// connect DEALER sockets named after themselves to the backend and announce READY, then
/// heartbeat. Each request goes to the next live node in turn; a node silent for longer
/// than the liveness timeout gets nothing until it heartbeats again. With no live node a
/// request is answered `unavailable` at once. Everything on the backend is sealed with
/// the cluster key (--key-file): a process without it cannot join the ring, read a
/// request or answer one. The status port serves /status (JSON),
/// /metrics (Prometheus), /livez and /readyz (ready while a node is live). Stops cleanly
/// on Ctrl-C or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "broker", version, about, long_about)]
struct Cli {
    /// ROUTER endpoint for clients (bind; `tcp://*:5555` for every interface).
    #[arg(long, env = "BROKER_FRONTEND", default_value = broker::DEFAULT_FRONTEND, global = true)]
    frontend: String,
    /// ROUTER endpoint for nodes (bind).
    #[arg(long, env = "BROKER_BACKEND", default_value = broker::DEFAULT_BACKEND, global = true)]
    backend: String,
    /// HTTP status port: /status, /metrics, /livez, /readyz (port 0 picks a free one).
    #[arg(long, env = "BROKER_STATUS_ADDR", default_value = broker::DEFAULT_STATUS_ADDR)]
    status_addr: SocketAddr,
    /// Which broker this is (`broker-1` of a pair), shown in /status and the logs.
    #[arg(long, env = "BROKER_NAME", default_value = broker::DEFAULT_NAME)]
    name: String,
    /// A node silent (no READY or heartbeat) for longer than this leaves the ring.
    #[arg(long, env = "BROKER_LIVENESS_TIMEOUT", default_value = "1s", value_parser = service::parse_duration)]
    liveness_timeout: Duration,
    /// How often the counters are logged.
    #[arg(long, env = "BROKER_STATS_INTERVAL", default_value = "10s", value_parser = service::parse_duration)]
    stats_interval: Duration,
    /// At most one warning about malformed messages per this interval (the rest are counted).
    #[arg(long, env = "BROKER_MALFORMED_LOG_INTERVAL", default_value = "5s", value_parser = service::parse_duration)]
    malformed_log_interval: Duration,
    #[command(flatten)]
    key: service::keyfile::KeyArgs,
    #[command(flatten)]
    log: service::LogArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker (the default).
    Run,
    /// Exit 0 if a broker answers on --frontend within --timeout (any answer counts,
    /// even `unavailable`); for container healthchecks.
    Health {
        /// How long to wait for the answer.
        #[arg(long, env = "BROKER_HEALTH_TIMEOUT", default_value = "1s", value_parser = service::parse_duration)]
        timeout: Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Health { timeout }) => BROKER.health(&cli.log, async {
            let response = broker::health(&cli.frontend, timeout).await;
            response.map(|response| format!("{} answered seq {}", response.node, response.seq))
        }),
        None | Some(Command::Run) => BROKER.run(
            &cli.log,
            |shutdown| serve(&cli, shutdown),
            |error| tracing::error!(%error, "broker failed"),
        ),
    }
}

async fn serve(cli: &Cli, shutdown: CancellationToken) -> Result<(), broker::BrokerError> {
    let config = broker::Config {
        name: cli.name.clone(),
        liveness_timeout: cli.liveness_timeout,
        stats_interval: cli.stats_interval,
        malformed_log_interval: cli.malformed_log_interval,
    };
    config.validate()?;
    let keys = cli.key.load()?;
    let status = service::http::bind(cli.status_addr).await?;
    let (frontend, backend) = broker::bind(&cli.frontend, &cli.backend).await?;
    broker::run(frontend, backend, status, config, keys, shutdown).await?;
    Ok(())
}
