//! The `reference` binary: flags, then open the registry, bind and [`reference::run`], or
//! `reference health`, on the skeleton of [`service::Program`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use service::{Flavor, Program};
use tokio_util::sync::CancellationToken;

// One event loop and nothing to spread over threads (see `Flavor::CurrentThread`).
const REFERENCE: Program = Program::new("reference", Flavor::CurrentThread);

/// Reference service of paxos-zmq: node names, their stable ranks, heartbeats and
/// membership.
///
/// Nodes register (and get a rank 1..N that stays theirs, across restarts of this service
/// too: ranks are kept in --data-dir), heartbeat, and ask for the member list. A member
/// silent for longer than --expiry-timeout is reported as gone but keeps its rank.
/// Membership is published on the proxy topic `membership` on every change and every
/// --publish-interval. A corrupt registry file stops the service with an error naming
/// it; a registry file that cannot be written (a full disk) does not: new names are then
/// refused with `unavailable` until a save succeeds (retried every second), and the rest
/// goes on. Requests, replies and events are sealed with the cluster key (--key-file): a
/// process without it is refused and given no rank. The status port serves /status
/// (JSON), /metrics (Prometheus), /livez and /readyz.
/// Stops cleanly on Ctrl-C or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "reference", version, about, long_about)]
struct Cli {
    /// ROUTER endpoint for nodes (bind; `tcp://*:5559` for every interface). `health`
    /// connects to it.
    #[arg(long, visible_alias = "reference", env = "REFERENCE_BIND", default_value = reference::DEFAULT_ENDPOINT, global = true)]
    endpoint: String,
    /// The proxies' XSUB frontends, separated by commas, where membership events are
    /// published (connect to each).
    #[arg(long, visible_alias = "proxy-frontend", env = "PROXY_FRONTEND", default_value = reference::DEFAULT_PROXY_FRONTEND)]
    proxy: String,
    /// HTTP status port: /status, /metrics, /livez, /readyz (port 0 picks a free one).
    #[arg(long, env = "REFERENCE_STATUS_ADDR", default_value = reference::DEFAULT_STATUS_ADDR)]
    status_addr: SocketAddr,
    /// Folder of the registry file (created if missing).
    #[arg(long, env = "REFERENCE_DATA_DIR", default_value = reference::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// A member silent for longer than this is reported as gone.
    #[arg(long, env = "REFERENCE_EXPIRY_TIMEOUT", default_value = "5s", value_parser = service::parse_duration)]
    expiry_timeout: Duration,
    /// Membership is published at least this often (pub/sub may drop a message).
    #[arg(long, env = "REFERENCE_PUBLISH_INTERVAL", default_value = "1s", value_parser = service::parse_duration)]
    publish_interval: Duration,
    /// At most one warning about malformed requests per this interval.
    #[arg(long, env = "REFERENCE_MALFORMED_LOG_INTERVAL", default_value = "5s", value_parser = service::parse_duration)]
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
    /// Run the reference service (the default).
    Run,
    /// Exit 0 if the reference on --endpoint answers a member-list request within
    /// --timeout (sealed with the cluster key when one is given; without it, a refusal
    /// that says why counts); for container healthchecks.
    Health {
        /// How long to wait for the answer.
        #[arg(long, env = "REFERENCE_HEALTH_TIMEOUT", default_value = "1s", value_parser = service::parse_duration)]
        timeout: Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Health { timeout }) => REFERENCE.health(&cli.log, async {
            let keys = match &cli.key.key_file {
                Some(_) => Some(cli.key.load().map_err(|e| e.to_string())?),
                None => None,
            };
            let health = reference::health(&cli.endpoint, timeout, keys.as_ref()).await;
            health
                .map_err(|e| e.to_string())
                .map(|health| match health {
                    reference::Health::Members(members) => {
                        let alive = members.iter().filter(|m| m.alive).count();
                        format!("{} members, {alive} alive", members.len())
                    }
                    reference::Health::Refused => {
                        "answers (a probe without the cluster key is refused)".to_owned()
                    }
                })
        }),
        None | Some(Command::Run) => REFERENCE.run(
            &cli.log,
            |shutdown| serve(&cli, shutdown),
            |error| tracing::error!(%error, "reference failed"),
        ),
    }
}

async fn serve(cli: &Cli, shutdown: CancellationToken) -> Result<(), reference::ReferenceError> {
    let config = reference::Config {
        expiry_timeout: cli.expiry_timeout,
        publish_interval: cli.publish_interval,
        malformed_log_interval: cli.malformed_log_interval,
    };
    config.validate()?;
    let keys = cli.key.load()?;
    let status = service::http::bind(cli.status_addr).await?;
    let (registry, store) = reference::open_registry(&cli.data_dir, config.expiry_timeout)?;
    let (router, publisher) = reference::bind(&cli.endpoint, &cli.proxy).await?;
    let sockets = reference::Sockets {
        router,
        publisher,
        status,
    };
    reference::run(sockets, registry, store, config, keys, shutdown).await?;
    Ok(())
}
