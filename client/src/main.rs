//! The `client` binary: parses the command line and runs [`client::cli::run`] on the
//! skeleton of [`service::Program`].

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use service::{Flavor, Program};

/// The menu and `watch` run sessions and a live feed at once: a worker per core. At exit
/// the runtime is given 200 ms for its threads: the interactive menu's thread may still
/// block on the terminal after Ctrl-C, and the process does not wait for it.
const CLIENT: Program =
    Program::new("client", Flavor::MultiThread).with_shutdown_wait(Duration::from_millis(200));

fn main() -> ExitCode {
    let cli = client::cli::Cli::parse();
    let log = cli.log.clone();
    CLIENT.run_with_status(&log, |shutdown| async move {
        let exit = client::cli::run(cli, shutdown, &mut std::io::stdout()).await;
        exit.code()
    })
}
