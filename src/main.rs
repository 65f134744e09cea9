//! The `strata` command line: the one binary for planning, building, diffing,
//! benchmarking and running the operator.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A reader that stops early (`strata crd | head`) ends the output quietly, as it
    // does for any Unix filter, instead of a panic in `print!`.
    // SAFETY: called first, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = strata::cli::Cli::parse();
    match strata::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("strata: error: {}", strata::error_chain(err.as_ref()));
            ExitCode::from(2)
        }
    }
}
