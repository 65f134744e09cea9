//! `strata diff OLD NEW`: layers reused, added and removed, and component changes.

use std::fmt::Write as _;

use anyhow::Context;

use super::DiffArgs;
use crate::bytes::human_bytes;
use crate::diff::{diff_images, ImageDiff};
use crate::image::remote::RegistryOptions;
use crate::image::{self, ImageRef};
use crate::layout::Layout;

pub const EXAMPLES: &str = "\
Examples:
  strata diff oci:out/v1:v1 oci:out/v2:v2
  strata diff oci:out/v1 oci:out/v2 --json";

fn layout(r: &ImageRef, registry: &RegistryOptions) -> anyhow::Result<Layout> {
    let Some((_, manifest)) = image::read_manifest(r, registry)? else {
        anyhow::bail!("{r}: no such image");
    };
    let layout = image::layout_from_manifest(&r.to_string(), &manifest)?;
    // An image no tool annotated still diffs by layer digest.
    Ok(layout.unwrap_or_else(|| Layout {
        origin: r.to_string(),
        date: None,
        generation: None,
        layers: manifest
            .layers()
            .iter()
            .map(|d| crate::layout::LayoutLayer {
                components: vec![],
                size: 0,
                blob_size: Some(d.size()),
                digest: Some(d.digest().to_string()),
                commit_layer: false,
                superseded: Vec::new(),
                patch_layer: false,
            })
            .collect(),
    }))
}

pub fn run(args: DiffArgs) -> anyhow::Result<()> {
    let registry = args.registry.options();
    let old = layout(&args.old, &registry).with_context(|| format!("reading {}", args.old))?;
    let new = layout(&args.new, &registry).with_context(|| format!("reading {}", args.new))?;
    let d = diff_images(&args.old.to_string(), &old, &args.new.to_string(), &new);
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&d)?)?;
    } else {
        out!("{}", table(&d))?;
    }
    Ok(())
}

/// The diff for people.
pub fn table(d: &ImageDiff) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} → {}", d.old, d.new);
    let _ = writeln!(
        out,
        "{:<8} {:>5}  {:<71}  {:>10}  {:>10}",
        "layers", "index", "digest", "size", "components"
    );
    for (what, rows) in [
        ("reused", &d.reused),
        ("added", &d.added),
        ("removed", &d.removed),
    ] {
        for r in rows {
            let _ = writeln!(
                out,
                "{what:<8} {:>5}  {:<71}  {:>10}  {:>10}",
                r.index,
                r.digest,
                human_bytes(r.size),
                r.components
            );
        }
    }
    let _ = writeln!(
        out,
        "download: {} of {} ({:.1}% reused; {} reused, {} added, {} removed layers)",
        human_bytes(d.download_bytes),
        human_bytes(d.total_bytes),
        d.reused_percent,
        d.reused.len(),
        d.added.len(),
        d.removed.len()
    );
    let c = &d.components;
    for (name, v) in &c.added {
        let _ = writeln!(out, "  added    {name} {v}");
    }
    for (name, v) in &c.removed {
        let _ = writeln!(out, "  removed  {name} {v}");
    }
    for (name, old, new) in &c.updated {
        let _ = writeln!(out, "  updated  {name} {old} → {new}");
    }
    // An unchanged component is downloaded again when its layer is rewritten,
    // whether or not the layer's index changed.
    for (name, from, to) in &c.moved {
        let _ = if from == to {
            writeln!(out, "  carried  {name} in rewritten layer {to}")
        } else {
            writeln!(out, "  moved    {name} layer {from} → {to}")
        };
    }
    out
}
