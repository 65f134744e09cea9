//! Benchmarks that print figures: replaying real build histories through the planner
//! and the baselines it competes with.

pub mod baselines;
pub mod replay;
pub mod synthetic;
pub mod trees;

use std::path::Path;

use crate::components::{Build, ComponentKind};
use crate::input::{self, InputError};

/// Pseudo-components the bench histories use for generated content (see the data's
/// README): the initramfs and rpm-ostree's unpackaged files.
const GENERATED_PSEUDO_COMPONENTS: [&str; 2] = ["initramfs", "rpmostree-unpackaged-content"];

/// Reads a build history in the bench JSON Lines format (one build per line).
pub fn read_history(path: &Path) -> Result<Vec<Build>, InputError> {
    let mut builds: Vec<Build> = input::read_json_lines(path, "a build history line")?;
    for build in &mut builds {
        for c in &mut build.components {
            if GENERATED_PSEUDO_COMPONENTS.contains(&c.name.as_str()) {
                c.kind = ComponentKind::Generated;
            }
        }
        build.validate(path)?;
    }
    Ok(builds)
}

/// The median of `values`, sorting them in place; 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The process's peak resident memory in bytes, from `/proc/self/status`.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
