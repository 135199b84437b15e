//! The `bots` command line.
//!
//! Exit codes: `load` 0 when the run completed with at least one answered operation, 1
//! otherwise (setup or history failure, nothing answered); `check` 0 linearizable, 1 not,
//! 2 unreadable or inconclusive; `chat` 0, or 1 when the bots could not start.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use client::args::{Endpoints, Timeouts};
use tokio_util::sync::CancellationToken;

use crate::chat::{ChatConfig, Say, run_chat};
use crate::load::{LoadConfig, run_load};
use crate::mix::{DEFAULT_MIX, Mix, Rate};

/// Load generator, history checker and chat bots for a paxos-zmq cluster.
#[derive(Debug, Parser)]
#[command(
    name = "bots",
    version,
    after_help = "Examples:\n  \
        bots load --clients 64 --duration 30s --history /tmp/h.jsonl\n  \
        bots check /tmp/h.jsonl\n  \
        bots chat --bots 2 --rate 2/s --channels 3"
)]
pub struct Cli {
    /// Cluster addresses.
    #[command(flatten)]
    pub endpoints: Endpoints,
    /// Request deadlines.
    #[command(flatten)]
    pub timeouts: Timeouts,
    /// Logging.
    #[command(flatten)]
    pub log: service::LogArgs,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Concurrent clients for a duration, then throughput and latency percentiles.
    Load(LoadArgs),
    /// Check a history file for linearizability (exit 0 yes, 1 no, 2 inconclusive).
    Check {
        /// The history file (one JSON operation per line).
        file: PathBuf,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Chat bots: log in, join channels, post and send private messages.
    Chat(ChatArgs),
}

/// `bots load` flags.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Concurrent client sessions.
    #[arg(long, env = "BOTS_CLIENTS", default_value_t = 64)]
    pub clients: usize,
    /// How long to run (e.g. 30s, 5m); without it, until Ctrl-C or SIGTERM.
    #[arg(long, env = "BOTS_DURATION", value_parser = service::parse_duration)]
    pub duration: Option<Duration>,
    /// Operation weights: put, get, cas, delete, publish.
    #[arg(long, env = "BOTS_MIX", default_value = DEFAULT_MIX)]
    pub mix: Mix,
    /// Distinct keys (PREFIX0 .. PREFIX<N-1>).
    #[arg(long, env = "BOTS_KEYS", default_value_t = 1000)]
    pub keys: u64,
    /// Keys are PREFIX0, PREFIX1...; default `key-`, or a fresh `run-<random>-` with
    /// --history (a history assumes its keys start absent and untouched by others).
    #[arg(long, env = "BOTS_KEY_PREFIX")]
    pub key_prefix: Option<String>,
    /// Bytes of each written value.
    #[arg(long, env = "BOTS_VALUE_SIZE", default_value_t = 256)]
    pub value_size: usize,
    /// Record every key operation to this file (history format), for `bots check`.
    #[arg(long, env = "BOTS_HISTORY")]
    pub history: Option<PathBuf>,
    /// Total operations per second (e.g. 200/s); without it, as fast as answered.
    #[arg(long, env = "BOTS_RATE")]
    pub rate: Option<Rate>,
    /// DEALER connections the clients share.
    #[arg(long, env = "BOTS_CONNECTIONS", default_value_t = 1)]
    pub connections: usize,
    /// Print the report as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// `bots chat` flags.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// How many bots.
    #[arg(long, env = "BOTS_CHAT_BOTS", default_value_t = 2)]
    pub bots: usize,
    /// Actions per second of each bot (e.g. 2/s, 30/m).
    #[arg(long, env = "BOTS_CHAT_RATE", default_value = "1/s")]
    pub rate: Rate,
    /// How many channels.
    #[arg(long, env = "BOTS_CHAT_CHANNELS", default_value_t = 3)]
    pub channels: usize,
    /// How long to run; without it, until Ctrl-C or SIGTERM.
    #[arg(long, env = "BOTS_DURATION", value_parser = service::parse_duration)]
    pub duration: Option<Duration>,
}

/// Runs the command; returns the exit status. Results go to `out`, diagnostics to stderr.
pub async fn run(cli: Cli, shutdown: CancellationToken, out: &mut dyn Write) -> u8 {
    let result = match cli.command {
        Command::Check { file, json } => {
            // The search is CPU-bound and may take seconds: off the async threads.
            let checked = tokio::task::spawn_blocking(move || {
                let mut buffer = Vec::new();
                crate::check::run(&file, json, &mut buffer).map(|exit| (exit, buffer))
            })
            .await;
            match checked {
                Ok(Ok((exit, buffer))) => out.write_all(&buffer).map(|()| exit),
                Ok(Err(error)) => Err(error),
                Err(error) => Err(std::io::Error::other(error.to_string())),
            }
        }
        Command::Load(args) => {
            let config = LoadConfig {
                broker: cli.endpoints.broker,
                clients: args.clients,
                connections: args.connections,
                duration: args.duration,
                mix: args.mix,
                keys: args.keys,
                key_prefix: crate::load::key_prefix_for(args.key_prefix, args.history.is_some()),
                value_size: args.value_size,
                history: args.history,
                rate: args.rate,
                options: cli.timeouts.call_options(),
                progress: !args.quiet,
            };
            match run_load(config, shutdown).await {
                Ok(report) => {
                    let written = if args.json {
                        writeln!(out, "{}", report.json())
                    } else {
                        write!(out, "{}", report.table())
                    };
                    written.map(|()| u8::from(report.ops == 0))
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    Ok(1)
                }
            }
        }
        Command::Chat(args) => {
            let config = ChatConfig {
                broker: cli.endpoints.broker,
                proxy: cli.endpoints.proxy,
                bots: args.bots,
                rate: args.rate,
                channels: args.channels,
                duration: args.duration,
                options: cli.timeouts.call_options(),
            };
            let say: Say = Arc::new(|line| println!("{line}"));
            match run_chat(config, say, shutdown).await {
                Ok(report) => writeln!(out, "{report}").map(|()| 0),
                Err(error) => {
                    eprintln!("error: {error}");
                    Ok(1)
                }
            }
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: writing the output: {error}");
        1
    })
}

#[cfg(test)]
mod tests {
    //! `bots check` through the command-line code path, on hand-made histories.

    use super::*;

    fn history_file(name: &str, lines: &[&str]) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("bots-check-{}-{name}.jsonl", std::process::id()));
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    fn check(name: &str, lines: &[&str]) -> (u8, String) {
        let path = history_file(name, lines);
        let cli = Cli::try_parse_from(["bots", "check", path.to_str().unwrap()]).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut out = Vec::new();
        let exit = runtime.block_on(run(cli, CancellationToken::new(), &mut out));
        std::fs::remove_file(&path).unwrap();
        (exit, String::from_utf8(out).unwrap())
    }

    #[test]
    fn stale_read_is_rejected() {
        // v2 replaced v1 before the read started, yet the read saw v1.
        let (exit, out) = check(
            "stale",
            &[
                r#"{"client":1,"op":"put","key":"k","value":"v1","outcome":"ok","call":0,"return":10}"#,
                r#"{"client":1,"op":"put","key":"k","value":"v2","outcome":"ok","call":20,"return":30}"#,
                r#"{"client":2,"op":"get","key":"k","output":"v1","outcome":"ok","call":40,"return":50}"#,
            ],
        );
        assert_eq!(exit, 1, "{out}");
        assert!(out.contains("NOT LINEARIZABLE: key \"k\""), "{out}");
        assert!(out.contains("\"v1\""), "{out}");
    }

    #[test]
    fn lost_write_is_rejected() {
        // An acknowledged write is not visible to a read that starts after it.
        let (exit, out) = check(
            "lost",
            &[
                r#"{"client":1,"op":"put","key":"a","value":"x1","outcome":"ok","call":0,"return":10}"#,
                r#"{"client":2,"op":"get","key":"a","output":null,"outcome":"ok","call":20,"return":30}"#,
            ],
        );
        assert_eq!(exit, 1, "{out}");
        assert!(out.contains("key \"a\""), "{out}");
    }

    #[test]
    fn cas_applied_twice_is_rejected() {
        // Two CASes from the same expected value both succeed: one must have failed.
        let (exit, out) = check(
            "cas-twice",
            &[
                r#"{"client":1,"op":"put","key":"c","value":"v0","outcome":"ok","call":0,"return":10}"#,
                r#"{"client":2,"op":"cas","key":"c","value":"v1","expected":"v0","output":true,"outcome":"ok","call":20,"return":30}"#,
                r#"{"client":3,"op":"cas","key":"c","value":"v2","expected":"v0","output":true,"outcome":"ok","call":40,"return":50}"#,
            ],
        );
        assert_eq!(exit, 1, "{out}");
        assert!(out.contains("key \"c\""), "{out}");
    }

    #[test]
    fn unknown_outcomes_are_accepted() {
        // A timed-out put may take effect late (seen by the second read) or never (the
        // first read), and a failed put never does.
        let (exit, out) = check(
            "unknown",
            &[
                r#"{"client":1,"op":"put","key":"k","value":"v1","outcome":"ok","call":0,"return":10}"#,
                r#"{"client":2,"op":"put","key":"k","value":"v2","outcome":"unknown","call":20}"#,
                r#"{"client":3,"op":"put","key":"k","value":"v3","outcome":"fail","call":21,"return":22}"#,
                r#"{"client":3,"op":"get","key":"k","output":"v1","outcome":"ok","call":30,"return":40}"#,
                r#"{"client":3,"op":"get","key":"k","output":"v2","outcome":"ok","call":50,"return":60}"#,
                r#"{"client":1,"op":"cas","key":"k","value":"v4","expected":"v1","output":false,"outcome":"ok","call":70,"return":80}"#,
                r#"{"client":1,"op":"get","key":"other","output":null,"outcome":"ok","call":1,"return":2}"#,
            ],
        );
        assert_eq!(exit, 0, "{out}");
        assert!(
            out.starts_with("LINEARIZABLE: 7 operations (5 ok, 1 fail, 1 unknown) on 2 keys"),
            "{out}"
        );
    }

    #[test]
    fn failed_write_that_was_read_is_rejected() {
        // `fail` means certainly not applied: reading its value is a violation.
        let (exit, out) = check(
            "fail-read",
            &[
                r#"{"client":1,"op":"put","key":"k","value":"v1","outcome":"fail","call":0,"return":10}"#,
                r#"{"client":2,"op":"get","key":"k","output":"v1","outcome":"ok","call":20,"return":30}"#,
            ],
        );
        assert_eq!(exit, 1, "{out}");
    }

    #[test]
    fn unreadable_histories_are_inconclusive() {
        let (exit, out) = check("garbage", &["{not json"]);
        assert_eq!(exit, 2, "{out}");
        assert!(out.contains("line 1"), "{out}");
        let cli =
            Cli::try_parse_from(["bots", "check", "/nonexistent/history.jsonl", "--json"]).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(
            runtime.block_on(run(cli, CancellationToken::new(), &mut out)),
            2
        );
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["verdict"], "error");
    }

    #[test]
    fn json_verdicts() {
        let path = history_file(
            "json",
            &[
                r#"{"client":1,"op":"put","key":"k","value":"v1","outcome":"ok","call":0,"return":10}"#,
            ],
        );
        let cli = Cli::try_parse_from(["bots", "check", path.to_str().unwrap(), "--json"]).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(
            runtime.block_on(run(cli, CancellationToken::new(), &mut out)),
            0
        );
        std::fs::remove_file(&path).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(doc["verdict"], "linearizable");
        assert_eq!(doc["operations"], 1);
    }

    #[test]
    fn load_flags_parse() {
        let cli = Cli::try_parse_from([
            "bots",
            "load",
            "--clients",
            "8",
            "--duration",
            "2s",
            "--mix",
            "put=1,get=1",
            "--keys",
            "5",
            "--value-size",
            "32",
            "--rate",
            "100/s",
            "--json",
        ])
        .unwrap();
        let Command::Load(args) = cli.command else {
            panic!("not load");
        };
        assert_eq!(args.clients, 8);
        assert_eq!(args.duration, Some(Duration::from_secs(2)));
        assert_eq!(args.mix.total(), 2);
        assert!(args.json);
        assert!(Cli::try_parse_from(["bots", "load", "--mix", "fly=1"]).is_err());
    }
}
