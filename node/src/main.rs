//! The `node` binary: `node --id N` runs a replica; `node health` checks one (docker).
//! All logic is in the library (`node::run`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// One replica of paxos-zmq: Multi-Paxos over ZeroMQ with a write-ahead log, store.json
/// snapshots, and /status, /metrics, /livez, /readyz on its status port.
#[derive(Debug, Parser)]
#[command(name = "node", version, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Option<node::Config>,
    #[command(flatten)]
    log: service::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 if the node's /livez answers within the timeout (for healthchecks).
    Health {
        /// The node's status address.
        #[arg(long, env = "STATUS_ADDR", default_value = "127.0.0.1:7001")]
        status_addr: SocketAddr,
        /// How long to wait.
        #[arg(long, default_value = "2s", value_parser = |s: &str| service::parse_duration(s).map_err(|e| e.to_string()))]
        timeout: Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Health {
        status_addr,
        timeout,
    }) = cli.command
    {
        return match node::http_get(status_addr, "/livez", timeout) {
            Ok((200, _)) => ExitCode::SUCCESS,
            Ok((code, _)) => {
                eprintln!("node health: /livez answered {code}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("node health: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(config) = cli.config else {
        eprintln!("node: --id is required (see --help)");
        return ExitCode::from(2);
    };
    service::init_logging(&cli.log);
    // One thread drives the replica; the sockets and the WAL have their own threads.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        if let Err(error) = config.validate() {
            return Err(node::NodeError::from(error));
        }
        let shutdown = service::shutdown_token();
        let sockets = node::Sockets::open(&config).await?;
        node::run(config, sockets, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "node stopped");
            eprintln!("node: {error}");
            ExitCode::FAILURE
        }
    }
}
