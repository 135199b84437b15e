//! The `node` binary: `node --id N` runs a replica; `node health` checks one (docker);
//! `node keygen FILE` makes a cluster key file.
//! All logic is in the library (`node::run`); the skeleton is [`service::Program`].

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use service::{Flavor, HealthLabels, Program};

// One thread drives the replica; the sockets and the WAL have their own threads.
const NODE: Program = Program::new("node", Flavor::CurrentThread);

/// Quiet when healthy, `node health: <reason>` when not: the node's probe has always
/// printed only trouble (docker keeps the output of failed healthchecks).
const HEALTH_LABELS: HealthLabels = HealthLabels {
    healthy: None,
    unhealthy: "node health: ",
};

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
    key: service::keyfile::KeyArgs,
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
    /// Write a new cluster key file (one random key, mode 0600) and exit; an existing
    /// file is never overwritten. Every cluster process (node, broker, reference) is
    /// then given it with --key-file.
    Keygen {
        /// Where to write it.
        file: std::path::PathBuf,
    },
}

/// The subcommands alone. A node's environment (`DATA_DIR`, say, exported in a shell or
/// a container) fills the node's optional flag group, and clap then asks for `--id` even
/// before a subcommand that needs no node; parsed on their own first, `node keygen FILE`
/// and `node health` work whatever the environment holds.
#[derive(Debug, Parser)]
#[command(name = "node")]
struct Tool {
    #[command(subcommand)]
    command: Command,
}

fn main() -> ExitCode {
    let command = match Tool::try_parse() {
        Ok(tool) => Some(tool.command),
        // Not a subcommand (or --help, --version): the node's own parser says it all.
        Err(_) => Cli::parse().command,
    };
    if let Some(Command::Keygen { file }) = &command {
        return match service::keyfile::generate(file) {
            Ok(()) => {
                println!("cluster key written to {}", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("node keygen: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Health {
        status_addr,
        timeout,
    }) = command
    {
        // A plain blocking GET: no runtime and no logging for a probe.
        let outcome = match node::http_get(status_addr, "/livez", timeout) {
            Ok((200, _)) => Ok("/livez answered 200"),
            Ok((code, _)) => Err(format!("/livez answered {code}")),
            Err(e) => Err(e.to_string()),
        };
        return service::report_health(outcome, HEALTH_LABELS);
    }
    let cli = Cli::parse();
    let Some(config) = cli.config else {
        eprintln!("node: --id is required (see --help)");
        return ExitCode::from(2);
    };
    NODE.run(
        &cli.log,
        |shutdown| async move {
            config.validate()?;
            // A missing or bad key stops the node before it opens a socket.
            let keys = cli
                .key
                .load()
                .map_err(|e| node::NodeError::WrongKey(e.to_string()))?;
            let sockets = node::Sockets::open(&config).await?;
            node::run(config, sockets, keys, shutdown).await
        },
        |error: &node::NodeError| {
            tracing::error!(%error, "node stopped");
            // Also without a log reader (RUST_LOG=off, JSON logs): say why on stderr.
            eprintln!("node: {error}");
        },
    )
}
