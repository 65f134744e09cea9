//! Build: the whole encapsulation, source → components → history → plan → layers →
//! image → diff, as one call with one options struct.

use std::collections::BTreeMap;
use std::path::Path;

use crate::components::assign::{assign, AssignError};
use crate::components::map::ComponentMap;
use crate::diff::diff_images;
use crate::image::remote::RegistryOptions;
use crate::image::{self, ImageError, ImageMeta, ImageRef};
use crate::layers::{self, Compression, LayerError, LayerJob};
use crate::layout::Layout;
use crate::output::{OutputError, Staging};
use crate::plan::{self, Plan, PlanError, PlanOptions};
use crate::report::{BuildReport, BuiltImage, PlanReport, PLAN_REPORT_SCHEMA, REPORT_SCHEMA};
use crate::source::rootfs::WalkOptions;
use crate::source::{self, BuildSource, ReadSource, SourceContent, SourceError};
use crate::timings::Timings;

/// Everything `strata build` is asked to do: what to plan, and where and how the image
/// is written.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// What the plan is made from.
    pub inputs: PlanInputs,
    /// Where the image goes.
    pub output: ImageRef,
    /// How layers are compressed.
    pub compression: Compression,
    /// Config labels to add.
    pub labels: BTreeMap<String, String>,
    /// The runtime config set over the source's (an image's; none otherwise).
    pub runtime: crate::image::runtime::Overrides,
}

/// What a plan is made from: the source, the stream's prior images, and the options.
#[derive(Debug, Clone)]
pub struct PlanInputs {
    /// The tree, commit or image to encapsulate.
    pub source: BuildSource,
    /// Earlier builds of the stream, in any order (their generations order them).
    pub priors: Vec<ImageRef>,
    /// The planner's options.
    pub plan: PlanOptions,
    /// The stream's name, recorded on the image.
    pub stream: Option<String>,
    /// Keep device nodes and FIFOs instead of refusing the tree.
    pub allow_special_files: bool,
    /// How registries are reached.
    pub registry: RegistryOptions,
    /// The user's component overrides.
    pub components_map: ComponentMap,
    /// Seconds since the epoch: the build date, and the clamp for file mtimes.
    pub source_date_epoch: Option<i64>,
    /// Lay the image out by this plan instead of planning (it must match the source).
    pub fixed_plan: Option<Plan>,
    /// The image format; `None` picks ostree for an ostree source, plain otherwise.
    pub format: Option<ImageFormat>,
}

/// How the image carries the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageFormat {
    /// Ordinary filesystem layers, for any container runtime.
    Plain,
    /// ostree-ext's encapsulated commit: ostree clients (rpm-ostree, bootc) import the
    /// exact commit. Needs an ostree source; takes one layer for the commit.
    Ostree,
}

impl PlanInputs {
    fn format(&self) -> ImageFormat {
        self.format.unwrap_or(match self.source {
            BuildSource::Ostree { .. } => ImageFormat::Ostree,
            _ => ImageFormat::Plain,
        })
    }

    /// The planner's options: the ostree format keeps one layer for the commit.
    fn plan_options(&self) -> Result<PlanOptions, BuildError> {
        let mut plan = self.plan.clone();
        if self.format() == ImageFormat::Ostree {
            if !matches!(self.source, BuildSource::Ostree { .. }) {
                return Err(BuildError::FormatNeedsOstree);
            }
            plan.max_layers = plan.max_layers.saturating_sub(1);
            // ostree clients import objects, not overlaid files: nothing to supersede.
            plan.supersede = false;
        }
        plan.validate()?;
        Ok(plan)
    }
}

/// A build failed; each stage's own error says where.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Reading the source.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Finding its components.
    #[error(transparent)]
    Components(#[from] AssignError),
    /// Planning.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Writing layers.
    #[error(transparent)]
    Layers(#[from] LayerError),
    /// Reading priors or writing the manifest.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Staging or publishing the output.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The ostree format asked for without an ostree source.
    #[error("--format ostree needs an ostree source (--ostree-repo); use --format plain")]
    FormatNeedsOstree,
    /// A plan made for a plain image (its patch layer carries components) given for
    /// the ostree format, which has no patch layer.
    #[error(
        "the plan has the patch layer carry {0}, but --format ostree has no patch layer; \
         plan the build for the ostree format"
    )]
    PatchInOstree(String),
}

/// Builds the image; `progress` receives one line per step.
pub fn build(
    opts: &BuildOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BuildReport, BuildError> {
    opts.inputs.plan_options()?;
    let staging = Staging::for_output(&opts.output)?;
    let timings = Timings::default();
    let mut report = build_into(opts, staging.path(), staging.tag(), progress, &timings)?;
    report.image.reference = opts.output.to_string();
    let published = timings.time("publish", || {
        staging.publish(&opts.output, &opts.inputs.registry, progress)
    })?;
    if let Some(digest) = published {
        report.image.manifest_digest = digest;
    }
    report.timings = timings.stages();
    Ok(report)
}

/// The source read and planned: everything the layers are written from.
struct Prepared {
    source: ReadSource,
    assigned: crate::components::assign::Assigned,
    priors: Vec<(ImageRef, Layout)>,
    warnings: Vec<String>,
    plan: Plan,
}

/// Reads the source and plans it, writing nothing.
pub fn plan_only(
    opts: &PlanInputs,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<PlanReport, BuildError> {
    opts.plan_options()?;
    let prepared = prepare(opts, progress, &Timings::default())?;
    Ok(PlanReport {
        schema: PLAN_REPORT_SCHEMA.into(),
        priors: prepared.priors.iter().map(|(r, _)| r.to_string()).collect(),
        plan: prepared.plan,
        warnings: prepared.warnings,
    })
}

fn prepare(
    opts: &PlanInputs,
    progress: &(dyn Fn(&str) + Sync),
    timings: &Timings,
) -> Result<Prepared, BuildError> {
    let walk = WalkOptions {
        allow_special_files: opts.allow_special_files,
    };
    let source = timings.time("read source", || {
        source::read(&opts.source, &opts.registry, walk, progress)
    })?;
    let entries = &source.entries;
    let date = opts
        .source_date_epoch
        .or(source.date)
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.to_string());
    if entries.is_empty() {
        return Err(BuildError::Source(SourceError::Invalid {
            path: source.content.reader().describe(Path::new("")),
            problem: "the tree is empty: there is nothing to encapsulate".into(),
        }));
    }
    let assigned = timings.time("components", || {
        assign(source.content.reader(), entries, date, &opts.components_map)
    })?;
    progress(&format!(
        "{} files in {} components",
        entries.len(),
        assigned.build.components.len()
    ));

    let mut warnings = Vec::new();
    let priors = timings.time("read priors", || {
        image::read_priors(&opts.priors, &opts.registry, &mut warnings)
    })?;
    for w in &warnings {
        progress(&format!("warning: {w}"));
    }
    let plan = timings.time("plan", || match &opts.fixed_plan {
        Some(fixed) => {
            fixed.check_matches(&assigned.build)?;
            Ok::<_, BuildError>(fixed.clone())
        }
        None => {
            let layouts: Vec<Layout> = priors.iter().map(|(_, l)| l.clone()).collect();
            Ok(plan::plan(
                &assigned.build,
                &layouts,
                &opts.plan_options()?,
            )?)
        }
    })?;
    fits_format(&plan, opts.format())?;
    progress(&format!(
        "planned {} layers; {}",
        plan.layers.len(),
        plan.repack.reason
    ));
    Ok(Prepared {
        source,
        assigned,
        priors,
        warnings,
        plan,
    })
}

/// Refuses a plan the format cannot write: a given plan (the operator's plan step
/// makes one) may have the patch layer carry components, which only plain images have.
fn fits_format(plan: &Plan, format: ImageFormat) -> Result<(), BuildError> {
    match (format, plan.patch_members.first()) {
        (ImageFormat::Ostree, Some(c)) => Err(BuildError::PatchInOstree(c.name.clone())),
        _ => Ok(()),
    }
}

/// Hands the heap's free pages back to the kernel. Reading and versioning a large
/// tree frees much more than it keeps, spread over every thread's arena; without
/// this, the layers' compressors would be counted on top of that garbage.
fn release_freed_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn build_into(
    opts: &BuildOptions,
    staging: &Path,
    tag: Option<&str>,
    progress: &(dyn Fn(&str) + Sync),
    timings: &Timings,
) -> Result<BuildReport, BuildError> {
    let Prepared {
        source,
        assigned,
        priors,
        warnings,
        plan,
    } = prepare(&opts.inputs, progress, timings)?;
    release_freed_memory();
    let entries = &source.entries;
    let mut layer_members = layers::entries_by_layer(
        entries,
        &assigned,
        plan.layers
            .iter()
            .map(|l| l.components.as_slice())
            .chain([plan.patch_members.as_slice()]),
    );
    let carried = layer_members.pop().unwrap_or_default();
    let oci_dir =
        ocidir::cap_std::fs::Dir::open_ambient_dir(staging, ocidir::cap_std::ambient_authority())
            .map_err(|e| OutputError::at(staging, e))?;
    let oci = ocidir::OciDir::ensure(oci_dir).map_err(|e| OutputError::at(staging, e))?;
    let written = |w: layers::Written| {
        progress(&format!("layer {}/{} written", w.done, w.total));
        timings.record(format!("layer {}", w.index), w.took, Some(w.bytes));
    };
    let layers_started = std::time::Instant::now();
    let (with_annotations, ostree_labels) = match &source.content {
        SourceContent::Ostree(commit) if opts.inputs.format() == ImageFormat::Ostree => {
            layers::ostree::write(
                &oci,
                opts.compression,
                commit,
                &plan.layers,
                entries,
                &layer_members,
                written,
            )?
        }
        content => {
            let job = LayerJob {
                oci: &oci,
                content: content.reader(),
                entries,
                compression: opts.compression,
                mtime_clamp: opts.inputs.source_date_epoch.unwrap_or(0),
            };
            let newest = priors.first().map(|(r, _)| layers::kept::BlobSource {
                image: r,
                registry: &opts.inputs.registry,
            });
            let walk = WalkOptions {
                allow_special_files: opts.inputs.allow_special_files,
            };
            let annotated = layers::plain::write(
                &job,
                &plan.layers,
                &layer_members,
                layers::plain::Carried {
                    components: &plan.patch_members,
                    entries: &carried,
                },
                newest.as_ref(),
                walk,
                written,
            )?;
            (annotated, BTreeMap::new())
        }
    };
    timings.record("layers", layers_started.elapsed(), None);
    let manifest_started = std::time::Instant::now();
    let plan_json = serde_json::to_vec(&plan).expect("plans serialise");
    let mut meta = ImageMeta::for_build(
        opts.labels.clone(),
        &plan_json,
        plan.date.as_deref(),
        opts.inputs.stream.as_deref(),
        &opts.inputs.source.to_string(),
        image::generation_after(priors.iter().map(|(_, l)| l)),
    );
    meta.tag = tag.map(str::to_string);
    meta.runtime = opts
        .runtime
        .apply(source.runtime.clone().unwrap_or_default());
    // ostree-ext reads its labels from the config and mirrors them in annotations.
    meta.labels.extend(ostree_labels.clone());
    meta.annotations.extend(ostree_labels);
    let desc = image::write_manifest(&oci, staging, with_annotations, &meta)?;
    let built = image::read_local(staging, tag)?;
    let new_layout = image::layout_from_manifest(&opts.output.to_string(), &built.manifest)?
        .expect("Strata's own layers are annotated");
    let diffs = priors
        .iter()
        .map(|(r, old)| diff_images(&r.to_string(), old, &opts.output.to_string(), &new_layout))
        .collect();
    timings.record("manifest and diff", manifest_started.elapsed(), None);
    Ok(BuildReport {
        schema: REPORT_SCHEMA.into(),
        image: BuiltImage {
            reference: String::new(),
            manifest_digest: desc.digest().to_string(),
            size: built.layer_bytes(),
            layers: built.manifest.layers().len(),
            layer_digests: new_layout
                .layers
                .iter()
                .filter(|l| !l.commit_layer && !l.patch_layer)
                .filter_map(|l| l.digest.clone())
                .collect(),
            commit_layer_digest: new_layout
                .layers
                .iter()
                .find(|l| l.commit_layer)
                .and_then(|l| l.digest.clone()),
            patch_layer_digest: new_layout
                .layers
                .iter()
                .find(|l| l.patch_layer)
                .and_then(|l| l.digest.clone()),
        },
        plan,
        diffs,
        warnings,
        timings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::{Build, Component, ComponentKind};

    /// A plan whose patch layer carries components (as a plain build's may) handed to
    /// an ostree-format build is refused, naming a component, rather than written
    /// without the files the patch layer was to carry.
    #[test]
    fn a_plan_with_a_carrying_patch_layer_is_refused_for_the_ostree_format() {
        let build = Build {
            components: ["a", "b"]
                .map(|name| Component {
                    name: name.into(),
                    version: "1".into(),
                    size: 10,
                    source: None,
                    changelog: vec![],
                    update_interval_days: None,
                    kind: ComponentKind::Package,
                })
                .to_vec(),
            ..Build::default()
        };
        let mut planned = plan::plan(&build, &[], &PlanOptions::default()).unwrap();
        assert!(fits_format(&planned, ImageFormat::Ostree).is_ok());
        let carried = planned.layers[0].components.remove(0);
        planned.patch_members.push(carried);
        assert!(fits_format(&planned, ImageFormat::Plain).is_ok());
        let err = fits_format(&planned, ImageFormat::Ostree).unwrap_err();
        assert!(
            err.to_string()
                .contains("--format ostree has no patch layer"),
            "{err}"
        );
    }
}
