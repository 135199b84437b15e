//! `status` — the consistency report behind `./status.sh`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use status::{Report, fabric, gather, render};

/// Reports whether the replicas of a paxos-zmq cluster agree.
///
/// Reads every node's /status endpoint (node-N serves on HOST:7000+N unless --node names
/// it) and every data/node-*/store.json (of the cluster that runs, when ./on.sh recorded
/// its size), then prints a table and a verdict, and the fabric (the reference, each
/// broker and proxy: up or down, what it carries) with a warning when it is degraded:
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
    /// Brokers and proxies to show (1 or 2) [default: as `./on.sh` recorded it in
    /// <data-dir>/run/fabric-size, else 2].
    #[arg(long, env = "STATUS_FABRIC_SIZE")]
    fabric: Option<u32>,
    /// A fabric status address: `broker-2=host:port`, `proxy-1=host:port`,
    /// `reference=host:port` (default: HOST and the ports `./on.sh` uses: reference 7090,
    /// brokers 7091-7092, proxies 7093-7094).
    #[arg(
        long = "fabric-addr",
        env = "STATUS_FABRIC_ADDRS",
        value_delimiter = ','
    )]
    fabric_addresses: Vec<String>,
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
    let (targets, skipped) =
        gather::targets(&args.data_dir, args.nodes, &args.host, &args.addresses);
    let size = args
        .fabric
        .or_else(|| gather::fabric_size(&args.data_dir))
        .unwrap_or(2);
    let fabric_targets = fabric::targets(size as usize, &args.host, &args.fabric_addresses);
    let (observations, fabric) = std::thread::scope(|scope| {
        let nodes: Vec<_> = targets
            .iter()
            .map(|t| scope.spawn(move || gather::observe(t, args.timeout)))
            .collect();
        let fabric: Vec<_> = fabric_targets
            .iter()
            .map(|t| scope.spawn(move || fabric::observe(t, args.timeout)))
            .collect();
        let observations: Vec<_> = nodes.into_iter().filter_map(|h| h.join().ok()).collect();
        let rows: Vec<_> = fabric
            .into_iter()
            .filter_map(|h| h.join().ok())
            .map(|(name, seen)| fabric::FabricRow::build(&name, &seen))
            .collect();
        (observations, rows)
    });
    Report::build(observations)
        .with_fabric(fabric)
        .with_skipped(skipped)
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
