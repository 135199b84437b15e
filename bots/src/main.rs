//! The `bots` binary: parses the command line and runs [`bots::cli::run`].

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// How long the runtime waits for its threads at exit (everything is already joined).
const SHUTDOWN_WAIT: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    let cli = bots::cli::Cli::parse();
    service::init_logging(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let exit = runtime.block_on(async {
        let shutdown = service::shutdown_token();
        bots::cli::run(cli, shutdown, &mut std::io::stdout()).await
    });
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    ExitCode::from(exit)
}
