//! The `proxy` binary: flags, logging, bind, [`proxy::run`]; or `proxy health`.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// XSUB/XPUB forwarder of paxos-zmq: the pub/sub bus of the Paxos messages, membership
/// and live chat.
///
/// Publishers connect PUB sockets to the frontend, subscribers connect SUB sockets to the
/// backend; subscriptions travel upstream so that publishers only send what somebody
/// wants. A subscriber that stops reading loses its own messages once its queue is full
/// and never slows the others. Counters (messages, bytes, subscriptions, msg/s) are logged
/// every --stats-interval. Stops cleanly on Ctrl-C or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "proxy", version, about, long_about)]
struct Cli {
    /// XSUB endpoint for publishers (bind; `tcp://*:5557` for every interface).
    #[arg(long, env = "PROXY_FRONTEND", default_value = proxy::DEFAULT_FRONTEND, global = true)]
    frontend: String,
    /// XPUB endpoint for subscribers (bind).
    #[arg(long, env = "PROXY_BACKEND", default_value = proxy::DEFAULT_BACKEND, global = true)]
    backend: String,
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

// One event loop and nothing to spread over threads: on a current-thread runtime the loop
// drives the I/O reactor itself, so a message wakes no second thread.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    service::init_logging(&cli.log);
    match cli.command {
        Some(Command::Health { timeout }) => {
            match proxy::health(&cli.frontend, &cli.backend, timeout).await {
                Ok(round_trip) => {
                    println!("healthy: PUB→SUB round trip in {round_trip:?}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None | Some(Command::Run) => {
            let config = proxy::Config {
                stats_interval: cli.stats_interval,
            };
            match serve(&cli.frontend, &cli.backend, config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "proxy failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(
    frontend: &str,
    backend: &str,
    config: proxy::Config,
) -> Result<(), proxy::ProxyError> {
    config.validate()?;
    let shutdown = service::shutdown_token();
    let forwarder = proxy::start(frontend, backend).await?;
    proxy::run(forwarder, config, shutdown).await?;
    Ok(())
}
