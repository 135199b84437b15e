//! # service — what every paxos-zmq process does the same way
//!
//! - [`LogArgs`]: the `--log-format text|json` flag (env `LOG_FORMAT`) and `RUST_LOG`
//!   filtering, installed by [`init_logging`]. Logs go to stderr so that stdout stays for
//!   results (tables, JSON) that scripts read.
//! - [`shutdown_token`]: a [`CancellationToken`] cancelled on the first Ctrl-C (SIGINT)
//!   or SIGTERM, so that `run` functions finish their work (flush state, close sockets)
//!   and return. A second signal exits at once.
//! - [`parse_duration`]: `150ms`, `2s`, `1m` for duration flags.
//! - [`RateLimitedLog`]: a warning logged at most once per interval (malformed input at
//!   line rate must not flood the log).
//! - [`recent`]: the last log lines kept in memory, for the node's web console.
//!
//! ## The binaries' skeleton ([`program`])
//! Every `main` is the same few steps around a different `run`, so they are written once:
//! a `const` [`Program`] names the binary and its runtime [`Flavor`] (current-thread for
//! the one-loop services, multi-thread for the client and the bots), and
//! - [`Program::run`] installs logging, builds the runtime (threads named after the
//!   program), hands a [`shutdown_token`] to the run, waits for the runtime at exit
//!   ([`Program::with_shutdown_wait`] bounds that wait), and maps `Ok` to exit 0 and `Err`
//!   to exit 1 after the binary's closure has logged it;
//! - [`Program::run_with_status`] does the same for a run that returns its own exit code;
//! - [`Program::health`] runs a probe and [`report_health`] prints `healthy: <answer>`
//!   (stdout, exit 0) or `unhealthy: <reason>` (stderr, exit 1), the contract of the
//!   container healthchecks.
//!
//! What stays in a `main` is what differs: its flags, what it binds and runs, and how it
//! words a failure.
//!
//! ## The status port ([`http`])
//! The fabric's processes (broker, proxy, reference) serve `/livez`, `/readyz`, `/status`
//! and `/metrics` with one small server: [`http::serve`] on a listener bound by the
//! binary ([`http::bind`], so tests bind port 0), answering `/status` and `/readyz` from
//! the service's loop through a bounded query channel ([`http::status_port`]). The node
//! keeps its own server (`node/src/http.rs`), built the same way before this one.
//!
//! ## The cluster key ([`keyfile`])
//! `--key-file` (`CLUSTER_KEY_FILE`) for every process that seals its traffic: loading a
//! key file (a clear error when missing or malformed), and making one (`node keygen`).

use std::time::Duration;

pub mod http;
pub mod keyfile;
pub mod program;
mod ratelimit;
pub mod recent;
pub use program::{Flavor, HealthLabels, Program, exit_code, report_health};
pub use ratelimit::RateLimitedLog;

use tokio_util::sync::CancellationToken;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Logging flags shared by every binary (`#[command(flatten)]`).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format; the level is set with RUST_LOG (e.g. `RUST_LOG=debug`, default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Installs the global `tracing` subscriber: `RUST_LOG` filter (default `info`), stderr,
/// and the last lines kept in memory for a web console ([`recent`]).
pub fn init_logging(args: &LogArgs) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let text = (args.log_format == LogFormat::Text)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json = (args.log_format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
    });
    // A second install (tests calling `main`-like code twice) is harmless: ignore it.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(recent::RecentLines)
        .try_init();
}

/// A token cancelled on the first SIGINT or SIGTERM. A second signal exits the process
/// with status 130 at once (the operator insists). Must be called inside a tokio runtime.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let signalled = token.clone();
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let received = wait_for_signal().await;
            if first {
                tracing::info!(
                    signal = received,
                    "shutting down (send again to exit at once)"
                );
                signalled.cancel();
                first = false;
            } else {
                tracing::warn!(signal = received, "exiting at once");
                std::process::exit(130);
            }
        }
    });
    token
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut interrupt), Ok(mut terminate)) => tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        },
        _ => {
            // Without signal handlers the process can still be stopped with SIGKILL.
            std::future::pending::<()>().await;
            "none"
        }
    }
}

/// Why a duration flag could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid duration {0:?}: use a number with a unit, e.g. 150ms, 2s, 1m")]
pub struct DurationError(String);

/// Parses `150ms`, `2s`, `1.5s`, `1m`, `1h`; a bare number is milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| DurationError(text.to_owned()))?;
    let seconds = match unit.trim() {
        "" | "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(DurationError(text.to_owned())),
    };
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(DurationError(text.to_owned()));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("150ms").unwrap(), Duration::from_millis(150));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("250").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1parsec").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
