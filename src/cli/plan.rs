//! `strata plan`: read a build and its priors, plan, print JSON or a table.

use std::fmt::Write as _;

use anyhow::Context;

use super::{Format, PlanArgs};
use crate::bytes::human_bytes;
use crate::components::Build;
use crate::layout::Layout;
use crate::output::write_atomic;
use crate::plan::{self, Action, Plan};

pub const EXAMPLES: &str = "\
Examples:
  # First build of a stream: a fresh plan into at most 64 layers
  strata plan --components build1.json > plan1.json

  # Next build: keep plan1's unchanged layers, learn change rates from both priors
  strata plan --components build3.json --prior plan2.json --prior plan1.json \\
      --format table

  # Never rewrite unchanged layers, cap at 100 layers, write atomically to a file
  strata plan --components build.json.gz --prior plan.json --repack never -n 100 -o plan.json";

/// Decisions listed in the table before it refers to the JSON for the rest.
const TABLE_DECISIONS: usize = 40;

pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    let opts = args.planner.options();
    opts.validate()?;
    let build = Build::read(&args.components)?;
    let priors = args
        .prior
        .iter()
        .map(|p| Layout::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    eprintln!(
        "strata: planning {} components into at most {} layers with {} prior build(s)",
        build.components.len(),
        opts.max_layers,
        priors.len()
    );
    let plan = plan::plan(&build, &priors, &opts)?;
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&plan)? + "\n",
        Format::Table => table(&plan),
    };
    match &args.output {
        Some(path) => write_atomic(path, text.as_bytes())
            .with_context(|| format!("{}: cannot write the plan", path.display()))?,
        None => out!("{text}")?,
    }
    Ok(())
}

/// The plan for people: layers, the decisions that are not "kept", and predictions.
pub fn table(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5}  {:>10}  {:>10}  {:>9}  {:>6}  largest members",
        "layer", "components", "size", "P(change)", "reused"
    );
    for l in &plan.layers {
        let mut members: Vec<_> = l.components.iter().collect();
        members.sort_by(|a, b| b.size.cmp(&a.size).then(a.name.cmp(&b.name)));
        let names: Vec<&str> = members.iter().take(3).map(|c| c.name.as_str()).collect();
        let more = l.components.len().saturating_sub(3);
        let _ = writeln!(
            out,
            "{:>5}  {:>10}  {:>10}  {:>9.4}  {:>6}  {}{}",
            l.index,
            l.components.len(),
            human_bytes(l.size),
            l.change_probability,
            if l.reused { "yes" } else { "no" },
            names.join(", "),
            if more > 0 {
                format!(" (+{more})")
            } else {
                String::new()
            }
        );
    }
    if !plan.patch_members.is_empty() {
        let names: Vec<&str> = plan.patch_members.iter().map(|c| c.name.as_str()).collect();
        let size: u64 = plan.patch_members.iter().map(|c| c.size).sum();
        let _ = writeln!(
            out,
            "{:>5}  {:>10}  {:>10}  {:>9}  {:>6}  carried in the patch layer: {}",
            "patch",
            names.len(),
            human_bytes(size),
            "",
            "",
            names.join(", ")
        );
    }
    let count = |a: Action| plan.decisions.iter().filter(|d| d.action == a).count();
    let _ = writeln!(
        out,
        "\ndecisions: {} kept, {} updated, {} placed, {} moved, {} removed",
        count(Action::Kept),
        count(Action::Updated),
        count(Action::Placed),
        count(Action::Moved),
        count(Action::Removed)
    );
    let notable: Vec<_> = plan
        .decisions
        .iter()
        .filter(|d| d.action != Action::Kept)
        .collect();
    for d in notable.iter().take(TABLE_DECISIONS) {
        let layer = d.layer.map_or("-".to_string(), |l| l.to_string());
        let _ = writeln!(
            out,
            "  {:<8} {:<32} layer {:>3}: {}",
            format!("{:?}", d.action).to_lowercase(),
            d.component,
            layer,
            d.reason
        );
    }
    if notable.len() > TABLE_DECISIONS {
        let _ = writeln!(
            out,
            "  … {} more (see --format json)",
            notable.len() - TABLE_DECISIONS
        );
    }
    let d = &plan.prediction.download;
    let _ = writeln!(out, "\nrepack: {}", plan.repack.reason);
    let _ = writeln!(
        out,
        "download from the prior build: {} of {} ({:.1}% reused; {} of {} layers reused); lower bound {}",
        human_bytes(d.download_bytes),
        human_bytes(d.total_bytes),
        d.reused_percent(),
        d.reused_layers,
        plan.layers.len(),
        human_bytes(d.lower_bound_bytes)
    );
    let _ = writeln!(
        out,
        "expected download for the next update: {}",
        human_bytes(plan.prediction.expected_next_update_bytes as u64)
    );
    out
}
