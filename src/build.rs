//! Build: the whole encapsulation, source → components → history → plan → layers →
//! image → diff, as one call with one options struct.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cleanup::Partial;
use crate::components::assign::{assign, AssignError};
use crate::components::map::ComponentMap;
use crate::diff::diff_images;
use crate::image::remote::{self, RegistryOptions};
use crate::image::{self, ImageError, ImageMeta, ImageRef};
use crate::layers::{self, Compression, LayerError, LayerJob};
use crate::layout::Layout;
use crate::plan::{self, Plan, PlanError, PlanOptions};
use crate::report::{BuildReport, BuiltImage, PlanReport, PLAN_REPORT_SCHEMA, REPORT_SCHEMA};
use crate::source::content::{Content, Dir};
use crate::source::rootfs::{walk, WalkOptions};
use crate::source::SourceError;

/// What to encapsulate.
#[derive(Debug, Clone)]
pub enum BuildSource {
    /// A root filesystem directory.
    Rootfs(PathBuf),
    /// An existing image, flattened first (rechunking).
    Image(ImageRef),
    /// A commit (ref or checksum) in an ostree repository, read from its objects.
    Ostree { repo: PathBuf, rev: String },
}

impl std::fmt::Display for BuildSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildSource::Rootfs(dir) => write!(f, "rootfs:{}", dir.display()),
            BuildSource::Image(r) => write!(f, "image:{r}"),
            BuildSource::Ostree { repo, rev } => write!(f, "ostree:{}:{rev}", repo.display()),
        }
    }
}

/// Everything `strata build` is asked to do: what to plan, and where and how the image
/// is written.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub inputs: PlanInputs,
    pub output: ImageRef,
    pub compression: Compression,
    pub labels: BTreeMap<String, String>,
}

/// What a plan is made from: the source, the stream's prior images, and the options.
#[derive(Debug, Clone)]
pub struct PlanInputs {
    pub source: BuildSource,
    pub priors: Vec<ImageRef>,
    pub plan: PlanOptions,
    pub stream: Option<String>,
    pub allow_special_files: bool,
    pub registry: RegistryOptions,
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

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Components(#[from] AssignError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Layers(#[from] LayerError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{path}: {problem}")]
    Output { path: PathBuf, problem: String },
    #[error(
        "the given plan does not match the source (component {component:?} differs); \
         the source changed after it was planned"
    )]
    PlanMismatch { component: String },
    #[error("--format ostree needs an ostree source (--ostree-repo); use --format plain")]
    FormatNeedsOstree,
}

/// The tag the image gets in a staging layout that is pushed elsewhere.
const STAGING_TAG: &str = "strata";

/// Builds the image; `progress` receives one line per step.
pub fn build(
    opts: &BuildOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BuildReport, BuildError> {
    opts.inputs.plan_options()?;
    let (staging, tag) = match &opts.output {
        ImageRef::Oci { dir, tag } => (staging_dir(dir)?, tag.clone()),
        ImageRef::OciArchive { file, .. } => (
            staging_dir(&file.with_extension("oci"))?,
            Some(STAGING_TAG.into()),
        ),
        other => (temp_staging(other)?, Some(STAGING_TAG.into())),
    };
    let mut report = build_into(opts, staging.path(), tag.as_deref(), progress)?;
    report.image.reference = opts.output.to_string();
    publish(opts, staging.path(), &mut report, progress)?;
    // An OCI directory was renamed into place; anything else was copied out of it.
    if matches!(opts.output, ImageRef::Oci { .. }) {
        staging.keep();
    }
    Ok(report)
}

/// Moves or copies the staged layout to the requested output.
fn publish(
    opts: &BuildOptions,
    staging: &Path,
    report: &mut BuildReport,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), BuildError> {
    match &opts.output {
        ImageRef::Oci { dir, .. } => {
            std::fs::rename(staging, dir).map_err(|e| output_error(dir, e))
        }
        ImageRef::OciArchive { file, tag } => {
            if file.exists() {
                return Err(output_error(file, "already exists"));
            }
            let partial =
                Partial::new(file.with_extension(format!("strata-{}", std::process::id())));
            let dest = ImageRef::OciArchive {
                file: partial.path().to_path_buf(),
                tag: tag.clone(),
            }
            .to_string();
            remote::push(staging, STAGING_TAG, &dest, &opts.inputs.registry)?;
            std::fs::rename(partial.path(), file).map_err(|source| ImageError::Io {
                path: file.clone(),
                source,
            })?;
            partial.keep();
            Ok(())
        }
        other => {
            progress(&format!("pushing to {other}"));
            report.image.manifest_digest = remote::push(
                staging,
                STAGING_TAG,
                &other.to_string(),
                &opts.inputs.registry,
            )?;
            Ok(())
        }
    }
}

fn output_error(path: &Path, e: impl std::fmt::Display) -> BuildError {
    BuildError::Output {
        path: path.to_path_buf(),
        problem: e.to_string(),
    }
}

/// A fresh directory beside `out` to build in, so a failure leaves nothing at `out`.
fn staging_dir(out: &Path) -> Result<Partial, BuildError> {
    if out.exists() {
        return Err(output_error(
            out,
            "already exists; choose a new directory (images are never half-overwritten)",
        ));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| output_error(out, "has no directory name"))?;
    let staging = parent.join(format!(
        ".{}.strata-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::create_dir(&staging)
        .map_err(|e| output_error(&staging, format!("cannot create the output: {e}")))?;
    Ok(Partial::new(staging))
}

/// A private staging directory for outputs that are not local OCI directories.
fn temp_staging(output: &ImageRef) -> Result<Partial, BuildError> {
    let dir = tempfile::Builder::new()
        .prefix("strata-build-")
        .tempdir()
        .map_err(|e| output_error(&std::env::temp_dir(), format!("cannot stage {output}: {e}")))?;
    Ok(Partial::new(dir.keep()))
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
    let prepared = prepare(opts, progress)?;
    Ok(PlanReport {
        schema: PLAN_REPORT_SCHEMA.into(),
        priors: prepared.priors.iter().map(|(r, _)| r.to_string()).collect(),
        plan: prepared.plan,
        warnings: prepared.warnings,
    })
}

/// A source read: its entries and where their content comes from.
struct ReadSource {
    content: Box<dyn Content>,
    entries: Vec<crate::source::Entry>,
    /// Holds a flattened image's spooled content until the layers are written.
    _scratch: Option<Partial>,
    /// The build date the source carries (an ostree commit's timestamp).
    date: Option<i64>,
}

/// Reads the source's entries; a flattened image lives in a scratch directory.
fn read_source(
    opts: &PlanInputs,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<ReadSource, BuildError> {
    let root = match &opts.source {
        BuildSource::Rootfs(dir) => dir.clone(),
        BuildSource::Ostree { repo, rev } => {
            progress(&format!("reading {rev} in {}", repo.display()));
            let commit = crate::source::ostree::read(repo, rev)?;
            return Ok(ReadSource {
                date: Some(commit.timestamp),
                entries: commit.entries,
                content: Box::new(commit.content),
                _scratch: None,
            });
        }
        BuildSource::Image(r) => {
            progress(&format!("flattening {r}"));
            let scratch = tempfile::Builder::new()
                .prefix("strata-flatten-")
                .tempdir()
                .map_err(|e| output_error(&std::env::temp_dir(), e))?;
            let scratch = Partial::new(scratch.keep());
            let flat = crate::source::image::flatten(
                r,
                &opts.registry,
                scratch.path(),
                WalkOptions {
                    allow_special_files: opts.allow_special_files,
                },
            )?;
            return Ok(ReadSource {
                entries: flat.entries,
                content: Box::new(flat.content),
                _scratch: Some(scratch),
                date: None,
            });
        }
    };
    progress(&format!("reading {}", root.display()));
    let entries = walk(
        &root,
        WalkOptions {
            allow_special_files: opts.allow_special_files,
        },
    )?;
    Ok(ReadSource {
        content: Box::new(Dir { root }),
        entries,
        _scratch: None,
        date: None,
    })
}

fn prepare(opts: &PlanInputs, progress: &(dyn Fn(&str) + Sync)) -> Result<Prepared, BuildError> {
    let source = read_source(opts, progress)?;
    let entries = &source.entries;
    let date = opts
        .source_date_epoch
        .or(source.date)
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.to_string());
    if entries.is_empty() {
        return Err(BuildError::Source(SourceError::Invalid {
            path: source.content.describe(Path::new("")),
            problem: "the tree is empty: there is nothing to encapsulate".into(),
        }));
    }
    let assigned = assign(source.content.as_ref(), entries, date, &opts.components_map)?;
    progress(&format!(
        "{} files in {} components",
        entries.len(),
        assigned.build.components.len()
    ));

    let mut warnings = Vec::new();
    let priors = read_priors(&opts.priors, &opts.registry, &mut warnings)?;
    for w in &warnings {
        progress(&format!("warning: {w}"));
    }
    let plan = match &opts.fixed_plan {
        Some(fixed) => {
            check_fixed_plan(fixed, &assigned.build)?;
            fixed.clone()
        }
        None => {
            let layouts: Vec<Layout> = priors.iter().map(|(_, l)| l.planning()).collect();
            plan::plan(&assigned.build, &layouts, &opts.plan_options()?)?
        }
    };
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

/// A plan made earlier must place exactly the components the tree has now, at the
/// same versions; anything else means the source changed in between.
fn check_fixed_plan(fixed: &Plan, build: &crate::components::Build) -> Result<(), BuildError> {
    let planned: BTreeMap<&str, Option<&str>> = fixed
        .layers
        .iter()
        .flat_map(|l| &l.components)
        .map(|c| (c.name.as_str(), c.version.as_deref()))
        .collect();
    let actual: BTreeMap<&str, Option<&str>> = build
        .components
        .iter()
        .map(|c| (c.name.as_str(), Some(c.version.as_str())))
        .collect();
    if planned == actual {
        return Ok(());
    }
    let differs = actual
        .iter()
        .find(|(name, version)| planned.get(*name) != Some(*version))
        .map(|(name, _)| *name)
        .or_else(|| planned.keys().find(|n| !actual.contains_key(*n)).copied())
        .unwrap_or_default();
    Err(BuildError::PlanMismatch {
        component: differs.to_string(),
    })
}

fn build_into(
    opts: &BuildOptions,
    staging: &Path,
    tag: Option<&str>,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<BuildReport, BuildError> {
    let Prepared {
        source,
        assigned,
        priors,
        warnings,
        plan,
    } = prepare(&opts.inputs, progress)?;
    let entries = &source.entries;
    let layer_members = layers::entries_by_layer(
        entries,
        &assigned,
        plan.layers.iter().map(|l| l.components.as_slice()),
    );
    let oci_dir =
        ocidir::cap_std::fs::Dir::open_ambient_dir(staging, ocidir::cap_std::ambient_authority())
            .map_err(|e| output_error(staging, e))?;
    let oci = ocidir::OciDir::ensure(oci_dir).map_err(|e| output_error(staging, e))?;
    let (with_annotations, ostree_labels) = match source.content.ostree() {
        Some(commit) if opts.inputs.format() == ImageFormat::Ostree => ostree_layers(
            &oci,
            opts.compression,
            commit,
            &plan,
            entries,
            &layer_members,
            progress,
        )?,
        _ => {
            let job = LayerJob {
                oci: &oci,
                content: source.content.as_ref(),
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
                newest.as_ref(),
                walk,
                |done, total| progress(&format!("layer {done}/{total} written")),
            )?;
            (annotated, BTreeMap::new())
        }
    };
    let mut meta = image_meta(opts, &plan, tag);
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
    })
}

type AnnotatedLayers = Vec<(ocidir::Layer, std::collections::HashMap<String, String>)>;

/// The layers in ostree-ext's format (the commit layer first, then one per planned
/// layer) and the labels that let ostree clients import them.
fn ostree_layers(
    oci: &ocidir::OciDir,
    compression: Compression,
    commit: &crate::source::ostree::OstreeContent,
    plan: &Plan,
    entries: &[crate::source::Entry],
    layer_members: &[Vec<usize>],
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(AnnotatedLayers, BTreeMap<String, String>), BuildError> {
    // Each content object goes once, into the first layer that has one of its paths;
    // all its paths are linked there.
    let mut placed: std::collections::HashMap<&str, (usize, usize)> = Default::default();
    let mut objects: Vec<Vec<layers::ostree::Object>> = vec![Vec::new(); layer_members.len()];
    for (li, members) in layer_members.iter().enumerate() {
        for &i in members {
            let Some(csum) = commit.object(&entries[i].path) else {
                continue;
            };
            match placed.get(csum) {
                Some(&(l, o)) => objects[l][o].paths.push(entries[i].path.clone()),
                None => {
                    placed.insert(csum, (li, objects[li].len()));
                    objects[li].push(layers::ostree::Object {
                        checksum: csum.to_string(),
                        paths: vec![entries[i].path.clone()],
                    });
                }
            }
        }
    }
    let repo = commit.repo();
    let all: Vec<Option<&Vec<layers::ostree::Object>>> = std::iter::once(None)
        .chain(objects.iter().map(Some))
        .collect();
    let written = crate::parallel::try_map(
        &all,
        |i, objs| match objs {
            None => layers::ostree::write_commit_layer(oci, compression, repo, commit.commit()),
            Some(objs) => layers::ostree::write_object_layer(oci, compression, i, repo, objs),
        },
        |done, total| progress(&format!("layer {done}/{total} written")),
    )?;
    let final_diffid = written
        .last()
        .map(|l| format!("sha256:{}", l.uncompressed_sha256.digest()))
        .unwrap_or_default();
    let mut labels = BTreeMap::from([
        (
            image::OSTREE_COMMIT.to_string(),
            commit.commit().to_string(),
        ),
        (image::OSTREE_FINAL_DIFFID.to_string(), final_diffid),
    ]);
    labels.extend(crate::source::ostree::commit_labels(repo, commit.commit())?);
    let annotated = written
        .into_iter()
        .enumerate()
        .map(|(i, layer)| {
            let annotations = match i {
                0 => Default::default(),
                _ => image::layer_annotations(&plan.layers[i - 1].components, &[]),
            };
            (layer, annotations)
        })
        .collect();
    Ok((annotated, labels))
}

fn image_meta(opts: &BuildOptions, plan: &Plan, tag: Option<&str>) -> ImageMeta {
    use sha2::Digest;
    let plan_json = serde_json::to_vec(plan).expect("plans serialise");
    let digest = crate::bytes::sha256_label(&sha2::Sha256::digest(&plan_json));
    let mut annotations = BTreeMap::from([(image::PLAN_DIGEST.to_string(), digest)]);
    if let Some(date) = &plan.date {
        annotations.insert(image::BUILD_DATE.into(), date.clone());
    }
    if let Some(stream) = &opts.inputs.stream {
        annotations.insert(image::STREAM.into(), stream.clone());
    }
    annotations.insert(image::SOURCE.into(), opts.inputs.source.to_string());
    ImageMeta {
        labels: opts.labels.clone(),
        annotations,
        tag: tag.map(str::to_string),
    }
}

/// Reads each prior's layout; a missing, unannotated or malformed prior is a warning,
/// not an error.
fn read_priors(
    refs: &[ImageRef],
    registry: &RegistryOptions,
    warnings: &mut Vec<String>,
) -> Result<Vec<(ImageRef, Layout)>, BuildError> {
    let mut out = Vec::new();
    for r in refs {
        let Some((_, manifest)) = image::read_manifest(r, registry)? else {
            warnings.push(format!("prior {r} does not exist; planning without it"));
            continue;
        };
        // A prior is advice: a malformed one costs reuse, never the build.
        match image::layout_from_manifest(&r.to_string(), &manifest) {
            Ok(Some(layout)) => out.push((r.clone(), layout)),
            Ok(None) => warnings.push(format!(
                "prior {r} has no layer annotations; planning without it"
            )),
            Err(e) => warnings.push(format!("prior {r}: {e}; planning without it")),
        }
    }
    Ok(out)
}
