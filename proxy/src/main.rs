//! The `proxy` binary: flags, then bind and [`proxy::run`], or `proxy health`, on the
//! skeleton of [`service::Program`].

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use service::{Flavor, Program};
use tokio_util::sync::CancellationToken;

// One event loop and nothing to spread over threads (see `Flavor::CurrentThread`).
const PROXY: Program = Program::new("proxy", Flavor::CurrentThread);

/// XSUB/XPUB forwarder of paxos-zmq: the pub/sub bus of the Paxos messages, membership
/// and live chat.
///
/// Publishers connect PUB sockets to the frontend, subscribers connect SUB sockets to the
/// backend; subscriptions travel upstream so that publishers only send what somebody
/// wants. A subscriber that stops reading loses its own messages once its queue is full
/// and never slows the others. Counters (messages, bytes, subscriptions, msg/s, connected
/// publishers and subscribers) are logged every --stats-interval. The status port serves
/// /status (JSON), /metrics (Prometheus), /livez and /readyz. Stops cleanly on Ctrl-C or
/// SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "proxy", version, about, long_about)]
struct Cli {
    /// XSUB endpoint for publishers (bind; `tcp://*:5557` for every interface).
    #[arg(long, env = "PROXY_FRONTEND", default_value = proxy::DEFAULT_FRONTEND, global = true)]
    frontend: String,
    /// XPUB endpoint for subscribers (bind).
    #[arg(long, env = "PROXY_BACKEND", default_value = proxy::DEFAULT_BACKEND, global = true)]
    backend: String,
    /// HTTP status port: /status, /metrics, /livez, /readyz (port 0 picks a free one).
    #[arg(long, env = "PROXY_STATUS_ADDR", default_value = proxy::DEFAULT_STATUS_ADDR)]
    status_addr: SocketAddr,
    /// Which proxy this is (`proxy-1` of a pair), shown in /status and the logs.
    #[arg(long, env = "PROXY_NAME", default_value = proxy::DEFAULT_NAME)]
    name: String,
    /// How often the counters are logged.
    #[arg(long, env = "PROXY_STATS_INTERVAL", default_value = "10s", value_parser = service::parse_duration)]
    stats_interval: Duration,
    #[command(flatten)]
    log: service::LogArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Exit 0 if a message published on --frontend arrives on --backend within --timeout;
    /// for container healthchecks.
    Health {
        /// How long to wait for the round trip.
        #[arg(long, env = "PROXY_HEALTH_TIMEOUT", default_value = "2s", value_parser = service::parse_duration)]
        timeout: Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Health { timeout }) => PROXY.health(&cli.log, async {
            let round_trip = proxy::health(&cli.frontend, &cli.backend, timeout).await;
            round_trip.map(|round_trip| format!("PUB→SUB round trip in {round_trip:?}"))
        }),
        None | Some(Command::Run) => PROXY.run(
            &cli.log,
            |shutdown| serve(&cli, shutdown),
            |error| tracing::error!(%error, "proxy failed"),
        ),
    }
}

async fn serve(cli: &Cli, shutdown: CancellationToken) -> Result<(), proxy::ProxyError> {
    let config = proxy::Config {
        name: cli.name.clone(),
        stats_interval: cli.stats_interval,
    };
    config.validate()?;
    let status = service::http::bind(cli.status_addr).await?;
    let forwarder = proxy::start(&cli.frontend, &cli.backend).await?;
    proxy::run(forwarder, status, config, shutdown).await?;
    Ok(())
}
