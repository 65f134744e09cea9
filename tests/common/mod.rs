//! Helpers the end-to-end tests share: running the real binary and deciding whether
//! a real part (a tool, a fixture) is there.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs the `strata` binary under test.
pub fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

/// Its standard output, after asserting it succeeded.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg("command -v \"$1\"")
        .arg("sh")
        .arg(tool)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// True when every tool is present. Otherwise the test is skipped with a message,
/// except under CI, where `.ci/run` must have installed them and the test fails.
pub fn real_parts(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{missing:?} missing: .ci/run must install them"
    );
    println!("skipped: {missing:?} not installed");
    false
}

pub mod agent;
pub mod cluster;
pub mod registry;
