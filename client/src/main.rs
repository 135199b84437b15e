//! The `client` binary: parses the command line and runs [`client::cli::run`].

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// How long the runtime waits for its threads at exit. The interactive menu's thread may
/// still block on the terminal after Ctrl-C; the process does not wait for it.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    let cli = client::cli::Cli::parse();
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
        client::cli::run(cli, shutdown, &mut std::io::stdout()).await
    });
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    ExitCode::from(exit.code())
}
