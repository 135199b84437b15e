//! The skeleton of every binary's `main`, written once.
//!
//! A `main` parses its flags, then hands the rest to a [`Program`]: install logging,
//! build the runtime, make the [`shutdown_token`], run, wait for
//! the runtime at exit and turn the outcome into an [`ExitCode`]. What stays in the
//! binary is what differs: its flags, what `run` binds and calls, and how it words a
//! failure.
//!
//! ```no_run
//! use std::process::ExitCode;
//! use service::{Flavor, LogArgs, Program};
//!
//! const PROGRAM: Program = Program::new("example", Flavor::CurrentThread);
//!
//! # fn flags() -> LogArgs { LogArgs { log_format: service::LogFormat::Text } }
//! fn main() -> ExitCode {
//!     let log = flags();
//!     PROGRAM.run(
//!         &log,
//!         |shutdown| async move {
//!             shutdown.cancelled().await;
//!             Ok::<(), std::io::Error>(())
//!         },
//!         |error| tracing::error!(%error, "example failed"),
//!     )
//! }
//! ```
//!
//! The failure is logged by a closure of the binary, not here: a `tracing` event's
//! target is fixed where it is written, and the binaries' failures have always been
//! logged under their own target (`broker: broker failed ...`), which `RUST_LOG=broker=...`
//! selects.

use std::fmt::Display;
use std::future::Future;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use tokio::runtime::{Builder, Runtime};
use tokio_util::sync::CancellationToken;

use crate::{LogArgs, init_logging, shutdown_token};

/// Which tokio runtime a program runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// One event loop on the main thread. For the services with one loop and nothing to
    /// spread over threads (broker, proxy, reference, node): the loop drives the I/O
    /// reactor itself, so a message wakes no second thread.
    CurrentThread,
    /// A worker thread per core, for the programs that run many sessions at once (the
    /// client's menu and watch, the bots' load).
    MultiThread,
}

/// What a binary's `main` shares with the others: a name (of its runtime's threads and
/// in its messages), a runtime [`Flavor`], and how long the exit waits for the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    name: &'static str,
    flavor: Flavor,
    shutdown_wait: Option<Duration>,
}

impl Program {
    /// A program whose exit waits for everything its runtime still runs (spawned
    /// blocking work included), as dropping a tokio runtime does.
    pub const fn new(name: &'static str, flavor: Flavor) -> Program {
        Program {
            name,
            flavor,
            shutdown_wait: None,
        }
    }

    /// Waits at most `wait` for the runtime's threads at exit, for programs that may
    /// leave a thread blocked (on a terminal, say) that the exit must not wait for.
    pub const fn with_shutdown_wait(self, wait: Duration) -> Program {
        Program {
            shutdown_wait: Some(wait),
            ..self
        }
    }

    /// The program's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The runtime's flavor.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// How long the exit waits for the runtime; `None`: until its work is done.
    pub fn shutdown_wait(&self) -> Option<Duration> {
        self.shutdown_wait
    }

    /// Builds the program's runtime, with every driver enabled and its threads named
    /// after the program (they show in `top -H` and in debuggers).
    pub fn runtime(&self) -> io::Result<Runtime> {
        let mut builder = match self.flavor {
            Flavor::CurrentThread => Builder::new_current_thread(),
            Flavor::MultiThread => Builder::new_multi_thread(),
        };
        builder.enable_all().thread_name(self.name).build()
    }

    /// Installs logging, builds the runtime and runs `body` with the shutdown token to
    /// completion, then waits for the runtime (see [`Program::with_shutdown_wait`]).
    /// `Err` holds the exit status when the runtime could not start (already said on
    /// stderr).
    pub fn block_on<T, F, Fut>(&self, log: &LogArgs, body: F) -> Result<T, ExitCode>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = T>,
    {
        // The token is made inside the runtime: its signal handlers are tokio's.
        self.enter(log, async move { body(shutdown_token()).await })
    }

    /// [`Program::block_on`] for a run that returns a `Result`: success exits 0; an error
    /// is handed to `failed` (which logs it, in the binary's words) and exits 1.
    pub fn run<E, F, Fut>(&self, log: &LogArgs, body: F, failed: impl FnOnce(&E)) -> ExitCode
    where
        E: Display,
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        match self.block_on(log, body) {
            Ok(result) => exit_code(result, failed),
            Err(not_started) => not_started,
        }
    }

    /// [`Program::block_on`] for a run that returns its own exit status (the client's and
    /// the bots' documented codes).
    pub fn run_with_status<S, F, Fut>(&self, log: &LogArgs, body: F) -> ExitCode
    where
        S: Into<ExitCode>,
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = S>,
    {
        match self.block_on(log, body) {
            Ok(status) => status.into(),
            Err(not_started) => not_started,
        }
    }

    /// Installs logging, runs the health `check` on the program's runtime and reports it
    /// with [`report_health`] and [`HealthLabels::STANDARD`]. No shutdown token: a Ctrl-C
    /// during a check stops the process at once, as the operator expects of a probe.
    pub fn health<T, E, Fut>(&self, log: &LogArgs, check: Fut) -> ExitCode
    where
        T: Display,
        E: Display,
        Fut: Future<Output = Result<T, E>>,
    {
        match self.enter(log, check) {
            Ok(outcome) => report_health(outcome, HealthLabels::STANDARD),
            Err(not_started) => not_started,
        }
    }

    fn enter<T>(&self, log: &LogArgs, future: impl Future<Output = T>) -> Result<T, ExitCode> {
        init_logging(log);
        let runtime = match self.runtime() {
            Ok(runtime) => runtime,
            Err(error) => {
                eprintln!("{}: cannot start the async runtime: {error}", self.name);
                return Err(ExitCode::FAILURE);
            }
        };
        let output = runtime.block_on(future);
        match self.shutdown_wait {
            Some(wait) => runtime.shutdown_timeout(wait),
            None => drop(runtime),
        }
        Ok(output)
    }
}

/// The exit status of a run: 0 on success; on an error, `failed` reports it and the
/// status is 1.
pub fn exit_code<E>(result: Result<(), E>, failed: impl FnOnce(&E)) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            failed(&error);
            ExitCode::FAILURE
        }
    }
}

/// The words around a health check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthLabels {
    /// Printed on stdout before the answer of a healthy check; `None`: a healthy check
    /// prints nothing.
    pub healthy: Option<&'static str>,
    /// Printed on stderr before the reason of an unhealthy check.
    pub unhealthy: &'static str,
}

impl HealthLabels {
    /// `healthy: <answer>` on stdout, `unhealthy: <reason>` on stderr.
    pub const STANDARD: HealthLabels = HealthLabels {
        healthy: Some("healthy: "),
        unhealthy: "unhealthy: ",
    };
}

/// Prints a health check's verdict (the answer on stdout, or the reason on stderr) and
/// returns its exit status: 0 healthy, 1 not, which is what container healthchecks read.
pub fn report_health<T: Display, E: Display>(
    outcome: Result<T, E>,
    labels: HealthLabels,
) -> ExitCode {
    write_health(
        outcome,
        labels,
        &mut io::stdout().lock(),
        &mut io::stderr().lock(),
    )
}

fn write_health<T: Display, E: Display>(
    outcome: Result<T, E>,
    labels: HealthLabels,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> ExitCode {
    // A closed stdout or stderr must not change the verdict: the exit status is the
    // answer, the line is for people.
    match outcome {
        Ok(answer) => {
            if let Some(label) = labels.healthy {
                let _ = writeln!(out, "{label}{answer}");
            }
            ExitCode::SUCCESS
        }
        Err(reason) => {
            let _ = writeln!(err, "{}{reason}", labels.unhealthy);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Instant;

    use super::*;
    use crate::LogFormat;

    const LOG: LogArgs = LogArgs {
        log_format: LogFormat::Text,
    };

    fn health(outcome: Result<&str, &str>, labels: HealthLabels) -> (ExitCode, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = write_health(outcome, labels, &mut out, &mut err);
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        (code, text(out), text(err))
    }

    #[test]
    fn health_verdicts_are_printed_and_mapped() {
        let labels = HealthLabels::STANDARD;
        assert_eq!(
            health(Ok("node-1 answered seq 1"), labels),
            (
                ExitCode::SUCCESS,
                "healthy: node-1 answered seq 1\n".into(),
                String::new()
            )
        );
        assert_eq!(
            health(Err("no answer within 1s"), labels),
            (
                ExitCode::FAILURE,
                String::new(),
                "unhealthy: no answer within 1s\n".into()
            )
        );
    }

    #[test]
    fn quiet_health_prints_only_the_reason() {
        let labels = HealthLabels {
            healthy: None,
            unhealthy: "node health: ",
        };
        assert_eq!(
            health(Ok("ok"), labels),
            (ExitCode::SUCCESS, String::new(), String::new())
        );
        assert_eq!(
            health(Err("/livez answered 503"), labels),
            (
                ExitCode::FAILURE,
                String::new(),
                "node health: /livez answered 503\n".into()
            )
        );
    }

    #[test]
    fn a_failed_run_is_reported_once_and_exits_1() {
        let reported = Cell::new(0);
        let ok: Result<(), String> = Ok(());
        assert_eq!(
            exit_code(ok, |_| reported.set(reported.get() + 1)),
            ExitCode::SUCCESS
        );
        assert_eq!(reported.get(), 0);
        let failed: Result<(), String> = Err("cannot bind".into());
        let code = exit_code(failed, |error| {
            assert_eq!(error, "cannot bind");
            reported.set(reported.get() + 1);
        });
        assert_eq!(code, ExitCode::FAILURE);
        assert_eq!(reported.get(), 1);
    }

    #[test]
    fn runtimes_of_both_flavors_run_and_name_their_threads() {
        let single = Program::new("skeleton-one", Flavor::CurrentThread);
        let runtime = single.runtime().unwrap();
        assert_eq!(runtime.block_on(async { 7 }), 7);
        // Blocking work runs on the runtime's own (named) threads.
        let name = runtime
            .block_on(runtime.spawn_blocking(|| std::thread::current().name().map(str::to_owned)))
            .unwrap();
        assert_eq!(name.as_deref(), Some("skeleton-one"));

        let multi = Program::new("skeleton-many", Flavor::MultiThread);
        let runtime = multi.runtime().unwrap();
        let name = runtime
            .block_on(runtime.spawn(async { std::thread::current().name().map(str::to_owned) }))
            .unwrap();
        assert_eq!(name.as_deref(), Some("skeleton-many"));
    }

    #[test]
    fn run_maps_the_result_and_hands_over_a_live_token() {
        let program = Program::new("skeleton-run", Flavor::CurrentThread);
        let code = program.run(
            &LOG,
            |shutdown| async move {
                assert!(!shutdown.is_cancelled());
                Ok::<(), String>(())
            },
            |_| panic!("no failure to report"),
        );
        assert_eq!(code, ExitCode::SUCCESS);
        let mut reported = None;
        let code = program.run(
            &LOG,
            |_| async { Err::<(), _>("disk full") },
            |error| reported = Some(error.to_string()),
        );
        assert_eq!(code, ExitCode::FAILURE);
        assert_eq!(reported.as_deref(), Some("disk full"));
    }

    #[test]
    fn run_with_status_passes_the_status_through() {
        let program = Program::new("skeleton-status", Flavor::MultiThread);
        let code = program.run_with_status(&LOG, |_| async { 3u8 });
        assert_eq!(code, ExitCode::from(3));
        let code = program.run_with_status(&LOG, |_| async { ExitCode::SUCCESS });
        assert_eq!(code, ExitCode::SUCCESS);
    }

    #[test]
    fn health_runs_the_check_on_the_runtime() {
        let program = Program::new("skeleton-health", Flavor::CurrentThread);
        let healthy = program.health(&LOG, async {
            // Inside a runtime: timers work.
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok::<_, String>("answered")
        });
        assert_eq!(healthy, ExitCode::SUCCESS);
        let unhealthy = program.health(&LOG, async { Err::<&str, _>("no answer") });
        assert_eq!(unhealthy, ExitCode::FAILURE);
    }

    #[test]
    fn the_exit_waits_for_the_runtime_only_as_long_as_told() {
        let program = Program::new("skeleton-wait", Flavor::MultiThread)
            .with_shutdown_wait(Duration::from_millis(50));
        assert_eq!(program.shutdown_wait(), Some(Duration::from_millis(50)));
        let started = Instant::now();
        let code = program.run_with_status(&LOG, |_| async {
            // A thread stuck on something (a terminal read, say) must not hold the exit.
            drop(tokio::task::spawn_blocking(|| {
                std::thread::sleep(Duration::from_secs(5))
            }));
            0u8
        });
        assert_eq!(code, ExitCode::SUCCESS);
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(
            Program::new("x", Flavor::CurrentThread).shutdown_wait(),
            None
        );
    }
}
