//! The `strata` command line: the one binary for planning, building, diffing,
//! benchmarking and running the operator.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = strata::cli::Cli::parse();
    match strata::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("strata: error: {}", strata::error_chain(err.as_ref()));
            ExitCode::from(2)
        }
    }
}
