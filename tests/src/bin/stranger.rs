//! `stranger`: a peer without the cluster key tries every fabric port of a running
//! cluster (tests/docker.sh runs it against the compose deployment). It publishes forged
//! Paxos envelopes on the proxies, poses as a node on the brokers' backends, registers at
//! the reference and reads every topic; then it prints what it achieved as JSON and exits
//! 0 only if it achieved nothing. Whether anything forged was applied is for the caller
//! to check in the replicas' state (the forged key is [`e2e::stranger::FORGED_KEY`]).

#![allow(clippy::print_stdout)] // its report is its output

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use e2e::stranger::{
    self, FORGED_KEY, Findings, Listener, Victim, forgeries, is_refusal, own_bodies, sealed_under,
};

/// A peer without the cluster key, against a running cluster.
#[derive(Debug, Parser)]
struct Cli {
    /// The proxies' frontends (publishers), comma-separated.
    #[arg(long, env = "PROXY_FRONTEND", default_value = "tcp://127.0.0.1:5557")]
    proxy_frontend: String,
    /// The proxies' backends (subscribers), comma-separated.
    #[arg(long, env = "PROXY_BACKEND", default_value = "tcp://127.0.0.1:5558")]
    proxy_backend: String,
    /// The brokers' backends (nodes), comma-separated: it poses as a node on each.
    #[arg(long, env = "BROKER_BACKEND", default_value = "tcp://127.0.0.1:5556")]
    broker_backend: String,
    /// The reference.
    #[arg(long, env = "REFERENCE", default_value = "tcp://127.0.0.1:5559")]
    reference: String,
    /// The nodes to impersonate, `name=rank@decided_slot`, comma-separated.
    #[arg(
        long,
        env = "STRANGER_VICTIMS",
        default_value = "node-1=1@0,node-2=2@0,node-3=3@0"
    )]
    victims: String,
    /// How long it publishes forgeries and listens.
    #[arg(long, env = "STRANGER_SECONDS", default_value_t = 5)]
    seconds: u64,
    /// A prefix of the data clients write: it must not be readable on the proxies.
    #[arg(long, env = "STRANGER_SECRET", default_value = "")]
    secret: String,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    forged_key: &'static str,
    forgeries_published: usize,
    broker_handed_requests: u64,
    reference_refused: bool,
    read: Findings,
}

fn victims(text: &str) -> Result<Vec<Victim>, String> {
    text.split(',')
        .map(|item| {
            let (name, rest) = item.split_once('=').ok_or(format!("{item}: no '='"))?;
            let (rank, decided) = rest.split_once('@').unwrap_or((rest, "0"));
            Ok(Victim {
                name: name.to_owned(),
                rank: rank.parse().map_err(|e| format!("{item}: {e}"))?,
                decided: decided.parse().map_err(|e| format!("{item}: {e}"))?,
            })
        })
        .collect()
}

async fn run(cli: Cli) -> Result<Report, String> {
    let victims = victims(&cli.victims)?;
    let keys = stranger::strangers_key();
    let clear = forgeries(&victims);
    let foreign = sealed_under(&keys, &clear);
    let own = own_bodies(&[&clear, &foreign]);
    let all: Vec<_> = clear.iter().chain(&foreign).cloned().collect();

    let listener = Listener::start(&cli.proxy_backend)
        .await
        .map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut impostors = Vec::new();
    for backend in transport::endpoints(&cli.broker_backend) {
        let (backend, keys, stop) = (backend.to_owned(), keys.clone(), stop.clone());
        impostors.push(tokio::spawn(async move {
            stranger::pose_as_node(&backend, &keys, stop).await
        }));
    }
    let rounds = usize::try_from(cli.seconds.saturating_mul(10)).unwrap_or(usize::MAX);
    stranger::publish(
        &cli.proxy_frontend,
        &all,
        rounds,
        Duration::from_millis(100),
    )
    .await
    .map_err(|e| e.to_string())?;
    let answers = stranger::register(&cli.reference, &keys)
        .await
        .map_err(|e| e.to_string())?;
    stop.store(true, Ordering::Relaxed);
    let mut handed = 0;
    for impostor in impostors {
        handed += impostor
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    listener.stop();
    Ok(Report {
        forged_key: FORGED_KEY,
        forgeries_published: all.len() * rounds,
        broker_handed_requests: handed,
        reference_refused: answers.iter().all(is_refusal),
        read: stranger::examine(&listener.frames(), &own, cli.secret.as_bytes()),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("stranger: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string(&report).unwrap_or_else(|e| e.to_string())
            );
            let nothing = report.broker_handed_requests == 0
                && report.reference_refused
                && report.read.seen > 0
                && report.read.unsealed == 0
                && report.read.envelopes == 0
                && report.read.readable == 0;
            if nothing {
                ExitCode::SUCCESS
            } else {
                eprintln!("stranger: it got in somewhere (see the report)");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("stranger: {e}");
            ExitCode::FAILURE
        }
    }
}
