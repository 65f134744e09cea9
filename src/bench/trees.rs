//! `strata bench trees`: a stream of real root filesystems, encapsulated in order as a
//! pipeline would (each build with the earlier outputs as priors), measured against
//! the file-level bound and against layouts that keep no history.
//!
//! Every figure is measured on real layer blobs: a baseline's layers are written and
//! compressed like Strata's, and a layer counts as reused when the previous image has
//! a blob with the same digest. The file-level bound of an update is the gzip size of
//! a tar of only the files that are new or changed (`shared/notes/real-trees.md`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::bench::baselines::StrategyName;
use crate::build::{self, BuildOptions, PlanInputs};
use crate::components::assign::{assign, Assigned};
use crate::image::{self, ImageRef};
use crate::layers::{self, Compression, LayerJob};
use crate::plan::PlanOptions;
use crate::source::content::{Content, Dir};
use crate::source::rootfs::{walk, WalkOptions};
use crate::source::BuildSource;
use crate::source::{Entry, EntryKind};

/// What the benchmark is asked for.
pub struct TreesOptions {
    /// The stream's builds, oldest first: directories or ostree commits.
    pub trees: Vec<BuildSource>,
    /// The planner's options, the layer count among them.
    pub plan: PlanOptions,
    /// Keep device nodes and FIFOs.
    pub allow_special_files: bool,
    /// Where images are written while the benchmark runs.
    pub scratch: PathBuf,
}

/// The layouts measured besides Strata's, in table order. None keeps any history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Baseline {
    /// Everything in one layer.
    Single,
    /// One layer per top-level directory.
    TopDirs,
    /// chunkah's packing of the same components.
    Chunkah,
}

impl Baseline {
    /// Every baseline, in table order.
    pub const ALL: [Baseline; 3] = [Baseline::Single, Baseline::TopDirs, Baseline::Chunkah];
}

impl std::fmt::Display for Baseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Baseline::Single => "single",
            Baseline::TopDirs => "top-dirs",
            Baseline::Chunkah => "chunkah",
        })
    }
}

/// What clients of the previous build download for one layout.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Download {
    /// Compressed bytes of the layers the client lacks.
    pub bytes: u64,
    /// Layers of the new image.
    pub layers: usize,
    /// Of them, the ones the client already has.
    pub reused_layers: usize,
}

/// One update of the stream.
#[derive(Debug, Clone, Serialize)]
pub struct TreeTransition {
    /// The build updated from.
    pub from: String,
    /// The build updated to.
    pub to: String,
    /// Gzip bytes of a tar of the new or changed files.
    pub file_level_bound: u64,
    /// What Strata's images cost.
    pub strata: Download,
    /// What each baseline's layout of the same trees costs.
    pub baselines: BTreeMap<Baseline, Download>,
}

/// The digests and sizes of one image's layers.
type Blobs = Vec<(String, u64)>;

/// One tree read: its entries, and where their content is.
struct Tree {
    entries: Vec<Entry>,
    content: Box<dyn Content>,
}

/// Runs the stream; `progress` gets a line per step.
pub fn run(
    opts: &TreesOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Vec<TreeTransition>> {
    let mut outputs: Vec<ImageRef> = Vec::new();
    let mut previous: Option<(Tree, Blobs, BTreeMap<Baseline, Blobs>)> = None;
    let mut rows = Vec::new();
    for (k, source) in opts.trees.iter().enumerate() {
        progress(&format!(
            "tree {}/{}: {}",
            k + 1,
            opts.trees.len(),
            label(source)
        ));
        let tree = read_tree(source, opts.allow_special_files)?;
        let output = ImageRef::Oci {
            dir: opts.scratch.join(format!("strata-{k}")),
            tag: Some("bench".into()),
        };
        let priors: Vec<ImageRef> = outputs.iter().rev().cloned().collect();
        build::build(&strata_build(opts, source, priors, &output), &|_| {})?;
        let strata = image_blobs(&output)?;
        outputs.push(output);
        let assigned = assign(
            tree.content.as_ref(),
            &tree.entries,
            None,
            &Default::default(),
        )?;
        let mut baselines = BTreeMap::new();
        for baseline in Baseline::ALL {
            let groups = baseline_groups(baseline, &tree, &assigned, opts.plan.max_layers);
            let dir = opts.scratch.join(format!("{baseline}-{k}"));
            baselines.insert(baseline, write_layers(&tree, &groups, &dir)?);
            std::fs::remove_dir_all(&dir)?;
        }
        if let Some((old, old_strata, old_baselines)) = &previous {
            progress("computing the file-level bound");
            rows.push(TreeTransition {
                from: label(&opts.trees[k - 1]),
                to: label(source),
                file_level_bound: file_level_bound(old, &tree, &opts.scratch)?,
                strata: download(old_strata, &strata),
                baselines: Baseline::ALL
                    .map(|b| (b, download(&old_baselines[&b], &baselines[&b])))
                    .into(),
            });
        }
        previous = Some((tree, strata, baselines));
    }
    Ok(rows)
}

/// How a build is named in the table: its directory, or `ostree:REPO:REV`.
fn label(source: &BuildSource) -> String {
    match source {
        BuildSource::Rootfs(dir) => dir.display().to_string(),
        other => other.to_string(),
    }
}

fn read_tree(source: &BuildSource, allow_special_files: bool) -> anyhow::Result<Tree> {
    match source {
        BuildSource::Rootfs(path) => Ok(Tree {
            entries: walk(
                path,
                WalkOptions {
                    allow_special_files,
                },
            )?,
            content: Box::new(Dir { root: path.clone() }),
        }),
        BuildSource::Ostree { repo, rev } => {
            let commit = crate::source::ostree::read(repo, rev)?;
            Ok(Tree {
                entries: commit.entries,
                content: Box::new(commit.content),
            })
        }
        BuildSource::Image(_) => {
            anyhow::bail!("{source}: bench trees reads directories and ostree commits")
        }
    }
}

fn strata_build(
    opts: &TreesOptions,
    source: &BuildSource,
    priors: Vec<ImageRef>,
    output: &ImageRef,
) -> BuildOptions {
    BuildOptions {
        inputs: PlanInputs {
            source: source.clone(),
            priors,
            plan: opts.plan.clone(),
            stream: Some("bench-trees".into()),
            allow_special_files: opts.allow_special_files,
            registry: Default::default(),
            components_map: Default::default(),
            source_date_epoch: None,
            fixed_plan: None,
            format: None,
        },
        output: output.clone(),
        compression: Compression::Gzip,
        labels: Default::default(),
        runtime: Default::default(),
    }
}

fn image_blobs(output: &ImageRef) -> anyhow::Result<Blobs> {
    let ImageRef::Oci { dir, tag } = output else {
        unreachable!("the benchmark writes OCI directories");
    };
    let local = image::read_local(dir, tag.as_deref())?;
    Ok(local
        .manifest
        .layers()
        .iter()
        .map(|d| (d.digest().to_string(), d.size()))
        .collect())
}

/// What clients holding `old` download to get `new`.
fn download(old: &Blobs, new: &Blobs) -> Download {
    let have: HashSet<&str> = old.iter().map(|(d, _)| d.as_str()).collect();
    let mut out = Download {
        layers: new.len(),
        ..Default::default()
    };
    for (digest, size) in new {
        match have.contains(digest.as_str()) {
            true => out.reused_layers += 1,
            false => out.bytes += size,
        }
    }
    out
}

/// The entries of each layer a baseline makes of the tree.
fn baseline_groups(
    baseline: Baseline,
    tree: &Tree,
    assigned: &Assigned,
    max_layers: usize,
) -> Vec<Vec<usize>> {
    let all = || 0..tree.entries.len();
    match baseline {
        Baseline::Single => vec![all().collect()],
        Baseline::TopDirs => {
            let mut by_top: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
            for i in all() {
                let top = tree.entries[i].path.components().next();
                let top = top
                    .map(|c| PathBuf::from(c.as_os_str()))
                    .unwrap_or_default();
                by_top.entry(top).or_default().push(i);
            }
            by_top.into_values().collect()
        }
        Baseline::Chunkah => {
            let opts = PlanOptions {
                max_layers,
                ..Default::default()
            };
            let mut chunkah = StrategyName::Chunkah.build(&opts, 0);
            let layout = chunkah.layout(&assigned.build, &[]);
            layers::entries_by_layer(
                &tree.entries,
                assigned,
                layout.layers.iter().map(|l| l.components.as_slice()),
            )
        }
    }
}

/// Writes `groups` as gzip layers into a scratch OCI directory; their digests and sizes.
fn write_layers(tree: &Tree, groups: &[Vec<usize>], dir: &Path) -> anyhow::Result<Blobs> {
    let oci = scratch_oci(dir)?;
    let job = LayerJob {
        oci: &oci,
        content: tree.content.as_ref(),
        entries: &tree.entries,
        compression: Compression::Gzip,
        mtime_clamp: 0,
    };
    let written = layers::write_all(&job, groups, |_| {})?;
    Ok(written
        .iter()
        .map(|l| {
            (
                format!("sha256:{}", l.blob.sha256().digest()),
                l.blob.size(),
            )
        })
        .collect())
}

fn scratch_oci(dir: &Path) -> anyhow::Result<ocidir::OciDir> {
    std::fs::create_dir_all(dir)?;
    let d = ocidir::cap_std::fs::Dir::open_ambient_dir(dir, ocidir::cap_std::ambient_authority())?;
    Ok(ocidir::OciDir::ensure(d)?)
}

/// Gzip bytes of a tar of the regular files of `new` whose path is new or whose bytes
/// differ from `old`'s (hard links to them kept as links).
fn file_level_bound(old: &Tree, new: &Tree, scratch: &Path) -> anyhow::Result<u64> {
    let old_files: HashMap<&Path, &Entry> = old
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .map(|e| (e.path.as_path(), e))
        .collect();
    let mut changed = Vec::new();
    let mut changed_paths: HashSet<&Path> = HashSet::new();
    for (i, e) in new.entries.iter().enumerate() {
        let keep = match &e.kind {
            EntryKind::File => match old_files.get(e.path.as_path()) {
                Some(o) if o.size == e.size => {
                    digest(old.content.as_ref(), o)? != digest(new.content.as_ref(), e)?
                }
                _ => true,
            },
            EntryKind::Hardlink(target) => changed_paths.contains(target.as_path()),
            _ => false,
        };
        if keep {
            changed.push(i);
            changed_paths.insert(e.path.as_path());
        }
    }
    if changed.is_empty() {
        return Ok(0);
    }
    let oci = scratch_oci(&scratch.join("bound"))?;
    let job = LayerJob {
        oci: &oci,
        content: new.content.as_ref(),
        entries: &new.entries,
        compression: Compression::Gzip,
        mtime_clamp: 0,
    };
    let gz =
        flate2::write::GzEncoder::new(Counter(0), flate2::Compression::new(layers::GZIP_LEVEL));
    let gz = layers::tar::write(gz, &job, &changed).map_err(|e| e.at(0))?;
    let bytes = gz.finish()?.0;
    std::fs::remove_dir_all(scratch.join("bound"))?;
    Ok(bytes)
}

fn digest(content: &dyn Content, e: &Entry) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    io::copy(&mut content.open(e)?, &mut h)?;
    Ok(h.finalize().into())
}

/// Counts the bytes written to it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Every transition, their sum, and the worst single ratio.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Each update, in order.
    pub transitions: Vec<TreeTransition>,
    /// Downloads and bounds added up over the stream.
    pub total: TreeTransition,
    /// Strata's highest download ÷ bound over the updates with a bound above zero.
    pub worst_strata_ratio: Option<f64>,
}

/// Adds the transitions up.
pub fn summary(rows: &[TreeTransition]) -> Summary {
    let add = |a: &Download, b: &Download| Download {
        bytes: a.bytes + b.bytes,
        layers: a.layers + b.layers,
        reused_layers: a.reused_layers + b.reused_layers,
    };
    let mut total = TreeTransition {
        from: rows.first().map(|r| r.from.clone()).unwrap_or_default(),
        to: rows.last().map(|r| r.to.clone()).unwrap_or_default(),
        file_level_bound: 0,
        strata: Download::default(),
        baselines: Baseline::ALL.map(|b| (b, Download::default())).into(),
    };
    for r in rows {
        total.file_level_bound += r.file_level_bound;
        total.strata = add(&total.strata, &r.strata);
        for (name, d) in &r.baselines {
            let sum = add(&total.baselines[name], d);
            total.baselines.insert(*name, sum);
        }
    }
    let worst_strata_ratio = rows
        .iter()
        .filter(|r| r.file_level_bound > 0)
        .map(|r| r.strata.bytes as f64 / r.file_level_bound as f64)
        .reduce(f64::max);
    Summary {
        transitions: rows.to_vec(),
        total,
        worst_strata_ratio,
    }
}

/// `bytes ÷ bound` for a table cell; "-" when the bound is zero.
pub fn ratio(bytes: u64, bound: u64) -> String {
    match bound {
        0 if bytes == 0 => "1.00".into(),
        0 => "-".into(),
        _ => format!("{:.2}", bytes as f64 / bound as f64),
    }
}

/// `a → b` with only the trees' last path components (an ostree commit's revision).
pub fn short_name(from: &str, to: &str) -> String {
    let last = |p: &str| match p.strip_prefix("ostree:") {
        Some(commit) => commit.rsplit(':').next().unwrap_or(commit).to_string(),
        None => Path::new(p)
            .file_name()
            .map_or(p.to_string(), |n| n.to_string_lossy().into_owned()),
    };
    format!("{} → {}", last(from), last(to))
}
