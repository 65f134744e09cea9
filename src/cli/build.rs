//! `strata build`: encapsulate a tree and report what changed.

use anyhow::Context;

use super::BuildArgs;
use crate::build::{build, BuildOptions, PlanInputs};
use crate::output::write_atomic;

pub const EXAMPLES: &str = "\
Examples:
  # First build of a stream
  strata build --rootfs ./rootfs --output oci:out/v1:v1 --stream fedora-iot --report v1.json

  # Next build: unchanged layers keep their digests; the diff is printed
  strata build --rootfs ./rootfs --output oci:out/v2:v2 --prior oci:out/v1:v1 --compression zstd

  # An ostree commit, read from the repository's objects (no checkout)
  strata build --ostree-repo /srv/repo --ref fedora/x86_64/coreos/stable --output oci:out/41:41

  # Rechunk an image built with a Containerfile and push it
  strata build --from-image docker://quay.io/me/os:latest --output docker://quay.io/me/os:chunked \\
      --prior docker://quay.io/me/os:chunked";

pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let source = args.source.source()?;
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => Some(
            v.parse::<i64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v}: not a number of seconds"))?,
        ),
        Err(_) => None,
    };
    let opts = BuildOptions {
        inputs: PlanInputs {
            source,
            priors: args.prior.clone(),
            plan: args.planner.options(),
            stream: args.stream.clone(),
            allow_special_files: args.allow_special_files,
            registry: args.registry.options(),
            components_map: match &args.components_map {
                Some(path) => crate::components::map::ComponentMap::read(path)?,
                None => Default::default(),
            },
            source_date_epoch,
            fixed_plan: None,
            format: args.format,
        },
        output: args.output.clone(),
        compression: args.compression,
        labels: args.label.iter().cloned().collect(),
        runtime: args.runtime.overrides()?,
    };
    let report = build(&opts, &|line| eprintln!("strata: {line}"))?;
    if args.timings {
        eprint!("{}", timings_table(&report.timings));
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report)? + "\n";
        write_atomic(path, json.as_bytes())
            .with_context(|| format!("{}: cannot write the report", path.display()))?;
    }
    outln!(
        "{} {} ({} layers, {})",
        report.image.reference,
        report.image.manifest_digest,
        report.image.layers,
        crate::bytes::human_bytes(report.image.size)
    )?;
    if args.show_plan {
        out!("{}", super::plan::table(&report.plan))?;
    }
    for d in &report.diffs {
        out!("{}", super::diff::table(d))?;
    }
    Ok(())
}

/// `--timings`: one line per step, seconds and (for layers) throughput.
fn timings_table(stages: &[crate::timings::Stage]) -> String {
    let mut out = String::from("strata: timings (wall seconds)\n");
    for stage in stages {
        let seconds = stage.took.as_secs_f64();
        let rate = stage.bytes.map_or(String::new(), |bytes| {
            let mb = bytes as f64 / 1e6;
            format!("{mb:>10.1} MB {:>8.1} MB/s", mb / seconds.max(1e-9))
        });
        out.push_str(&format!("  {:<20} {seconds:>8.2}{rate}\n", stage.name));
    }
    out
}
