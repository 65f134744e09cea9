//! Strata turns OS builds into layered OCI images whose layers stay stable from build
//! to build. The modules follow the data flow:
//! source → components → history → plan → layers → image → diff, with `build` running
//! them in order, `operator` running builds for Kubernetes, and `bench` measuring.

#![deny(missing_docs)]

pub mod bench;
pub mod build;
pub mod bytes;
pub mod cleanup;
// Clap turns doc comments into help: a struct's would replace its subcommand's
// summary, and a flattened group's would be shown nowhere. `--help` documents the CLI.
#[allow(missing_docs)]
pub mod cli;
pub mod components;
pub mod diff;
pub mod history;
pub mod image;
pub mod input;
pub mod layers;
pub mod layout;
pub mod operator;
pub mod output;
pub mod parallel;
pub mod plan;
pub mod report;
pub mod source;
pub mod timings;

/// An error and its causes on one line, leaving out a cause its parent's message
/// already quotes.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}
