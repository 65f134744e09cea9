//! The `strata` command line: the one binary for planning, building, diffing,
//! benchmarking and running the operator.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = strata::cli::Cli::parse();
    match strata::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("strata: error: {}", message(&err));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, leaving out a cause its parent's message already quotes.
fn message(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
