//! `status` — the consistency report behind `./status.sh`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use status::{Report, gather, render};

/// Reports whether the replicas of a paxos-zmq cluster agree.
///
/// Reads every node's /status endpoint (node-N serves on HOST:7000+N unless --node names
/// it) and every data/node-*/store.json, then prints a table and a verdict:
/// CONSISTENT (exit 0), INCONSISTENT naming the nodes and the first differing key (exit 1),
/// or UNREACHABLE when nothing could be read (exit 2). Works with the cluster off, from
/// the files alone.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Folder holding node-N/store.json.
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Also look for node-1..=N even without a data folder.
    #[arg(long, env = "STATUS_NODES")]
    nodes: Option<u32>,
    /// Host of the status endpoints.
    #[arg(long, env = "STATUS_HOST", default_value = "127.0.0.1")]
    host: String,
    /// A status address: `node-2=host:port`, or `host:port` for node-1, node-2... in order.
    #[arg(long = "node", env = "STATUS_ADDRS", value_delimiter = ',')]
    addresses: Vec<String>,
    /// Per-request timeout, e.g. 500ms.
    #[arg(long, env = "STATUS_TIMEOUT", default_value = "500ms", value_parser = service::parse_duration)]
    timeout: Duration,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Refresh every interval (e.g. 1s) until Ctrl-C.
    #[arg(long, num_args = 0..=1, default_missing_value = "1s", value_parser = service::parse_duration)]
    watch: Option<Duration>,
}

fn report(args: &Args) -> Report {
    let targets = gather::targets(&args.data_dir, args.nodes, &args.host, &args.addresses);
    let observations = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|t| scope.spawn(move || gather::observe(t, args.timeout)))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    Report::build(observations)
}

fn print(args: &Args, report: &Report) {
    if args.json {
        println!("{}", render::json(report));
    } else {
        print!("{}", render::table(report));
    }
}

fn main() {
    let args = Args::parse();
    match args.watch {
        None => {
            let report = report(&args);
            print(&args, &report);
            std::process::exit(report.verdict.exit_code());
        }
        Some(interval) => loop {
            let report = report(&args);
            // Clear the screen and go home, like `watch`.
            print!("\x1b[2J\x1b[H");
            println!("paxos-zmq status — every {interval:?}, Ctrl-C to stop\n");
            print(&args, &report);
            std::thread::sleep(interval);
        },
    }
}
