//! The `bots` binary: parses the command line and runs [`bots::cli::run`] on the skeleton
//! of [`service::Program`].

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use service::{Flavor, Program};

/// Many client sessions at once: a worker per core. At exit the runtime is given
/// 500 ms for its threads (everything is already joined).
const BOTS: Program =
    Program::new("bots", Flavor::MultiThread).with_shutdown_wait(Duration::from_millis(500));

fn main() -> ExitCode {
    let cli = bots::cli::Cli::parse();
    let log = cli.log.clone();
    BOTS.run_with_status(&log, |shutdown| async move {
        bots::cli::run(cli, shutdown, &mut std::io::stdout()).await
    })
}
