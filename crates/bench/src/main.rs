//! catalog-bench: parses the command line, builds the runtime, runs.

use std::process::ExitCode;

use bench::cli::{self, Cli, Outcome};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.max(1));
    }
    let result = runtime
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(cli::run(cli)));
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(3),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
