//! `strata bench replay`: replay a build history through one or all strategies.

use std::fmt::Write as _;

use anyhow::bail;

use std::time::Instant;

use std::process::Command;

use super::{BenchBuildArgs, BenchPlanArgs, BenchTreesArgs, ReplayArgs};
use crate::bench::replay::{replay as run_replay, ReplayOptions, ReplayResult};
use crate::bench::{peak_rss_bytes, read_history};
use crate::build::PlanInputs;
use crate::bytes::human_bytes;
use crate::layers::Compression;
use crate::source::BuildSource;

pub const EXAMPLES: &str = "\
Examples:
  # Strata on Fedora CoreOS stable at 64 layers, every transition listed
  strata bench replay --history ../shared/bench/fcos-stable-2019-2021.jsonl.gz -n 64

  # One comparison table of Strata and every baseline at 128 layers
  strata bench replay --history ../shared/bench/fcos-testing-devel-2019-2021.jsonl.gz \\
      -n 128 --strategy all --allow-over-127";

pub const PLAN_EXAMPLES: &str = "\
Examples:
  # The planning-time targets: 2,000 components with 100 priors, then 20,000
  strata bench plan --components 2000 --priors 100
  strata bench plan --components 20000 --priors 10 --runs 1";

pub const BUILD_EXAMPLES: &str = "\
Examples:
  # A debootstrapped Debian minbase (scripts/fixtures.sh makes one)
  strata bench build --rootfs /var/cache/strata-test/bookworm-minbase --allow-special-files

  # Also an ostree commit of the same tree, against ostree-ext's encoder
  ostree init --repo=/tmp/repo --mode=archive
  ostree commit --repo=/tmp/repo --branch=os --tree=dir=TREE   # TREE: no device nodes
  strata bench build --rootfs TREE --ostree-repo /tmp/repo --ref os \\
      --ostree-ext-encoder tools/ostree-import/target/release/strata-ostree-import";

pub const TREES_EXAMPLES: &str = "\
Examples:
  # The Debian stream of scripts/tree-sequence.sh (a security update, new packages,
  # a removal with config edits, nothing changed, a larger set, a release upgrade)
  strata bench trees -n 24 --allow-special-files $(scripts/tree-sequence.sh)

  # Two builds of your own, as JSON
  strata bench trees --json /srv/os/build-41 /srv/os/build-42";

const MB: f64 = 1e6;

pub fn trees(args: BenchTreesArgs) -> anyhow::Result<()> {
    use crate::bench::trees::{self, Baseline, TreesOptions};
    let plan = args.planner.options();
    plan.validate()?;
    let scratch = tempfile::Builder::new()
        .prefix("strata-bench-trees-")
        .tempdir()?;
    let opts = TreesOptions {
        trees: args.trees,
        plan,
        allow_special_files: args.allow_special_files,
        scratch: scratch.path().to_path_buf(),
    };
    let rows = trees::run(&opts, &|line| eprintln!("strata: {line}"))?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&trees::summary(&rows))?)?;
        return Ok(());
    }
    let mut header = format!("{:<28} {:>9} {:>16}", "update", "bound MB", "strata MB (×)");
    for name in Baseline::ALL {
        write!(header, " {:>16}", format!("{name} MB (×)"))?;
    }
    outln!("{header}  strata reused")?;
    let summary = trees::summary(&rows);
    let labelled = rows.iter().map(|r| (trees::short_name(&r.from, &r.to), r));
    for (label, row) in labelled.chain([("total".to_string(), &summary.total)]) {
        let ratio = |bytes: u64| trees::ratio(bytes, row.file_level_bound);
        let cell = |bytes: u64| format!("{:.1} ({})", bytes as f64 / MB, ratio(bytes));
        let mut line = format!(
            "{:<28} {:>9.2} {:>16}",
            label,
            row.file_level_bound as f64 / MB,
            cell(row.strata.bytes)
        );
        for name in Baseline::ALL {
            write!(line, " {:>16}", cell(row.baselines[&name].bytes))?;
        }
        write!(line, "  {}/{}", row.strata.reused_layers, row.strata.layers)?;
        outln!("{line}")?;
    }
    outln!(
        "worst single update, strata: {} (updates with a bound of zero left out)",
        summary
            .worst_strata_ratio
            .map_or("-".into(), |r| format!("{r:.2}"))
    )?;
    Ok(())
}

/// Reference pipelines; the tree is passed as `$1`, never spliced into the script.
const PIPELINES: [(&str, &str); 2] = [
    ("tar | pigz -6", "tar -C \"$1\" -cf - . | pigz -6 | wc -c"),
    (
        "tar | zstd -T0 -3",
        "tar -C \"$1\" -cf - . | zstd -T0 -3 -q -c | wc -c",
    ),
];

/// Row labels the ratios are taken between.
const GZIP_ROW: &str = "strata build (gzip)";
const ZSTD_ROW: &str = "strata build (zstd)";
const OSTREE_ROW: &str = "strata build (ostree)";
const FROM_IMAGE_ROW: &str = "strata build --from-image (zstd)";

pub fn build(args: BenchBuildArgs) -> anyhow::Result<()> {
    let opts = args.planner.options();
    opts.validate()?;
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let scratch = tempfile::tempdir()?;
    let timed = TimedBuild {
        args: &args,
        plan: &opts,
        scratch: scratch.path(),
    };
    // The image a rechunk starts from: the tree as Strata writes it, untimed.
    let image = scratch.path().join("input-image");
    timed.run_into(
        BuildSource::Rootfs(args.rootfs.clone()),
        Compression::Zstd,
        &image,
    )?;
    let image = BuildSource::Image(crate::image::ImageRef::Oci {
        dir: image,
        tag: None,
    });
    let mut rows = Rows::default();
    let mut encoder_row = None;
    // Runs interleave the rows, so a machine that slows down mid-way slows them all.
    for run in 1..=args.runs {
        eprintln!("strata: run {run}/{}", args.runs);
        for (name, script) in PIPELINES {
            let (seconds, bytes) = pipeline(name, script, &args.rootfs)?;
            rows.record(name, seconds, bytes);
        }
        let rootfs = BuildSource::Rootfs(args.rootfs.clone());
        for (label, compression) in [(GZIP_ROW, Compression::Gzip), (ZSTD_ROW, Compression::Zstd)] {
            let (seconds, bytes) = timed.run(rootfs.clone(), compression)?;
            rows.record(label, seconds, bytes);
        }
        let (seconds, bytes) = timed.run(image.clone(), Compression::Zstd)?;
        rows.record(FROM_IMAGE_ROW, seconds, bytes);
        if let (Some(repo), Some(rev), Some(encoder)) = (
            &args.ostree_repo,
            &args.ostree_ref,
            &args.ostree_ext_encoder,
        ) {
            let commit = BuildSource::Ostree {
                repo: repo.clone(),
                rev: rev.clone(),
            };
            let (seconds, bytes) = timed.run(commit, Compression::Gzip)?;
            rows.record(OSTREE_ROW, seconds, bytes);
            let label = format!("ostree-ext encoder ({} layers)", opts.max_layers);
            let (seconds, bytes) =
                ostree_ext_encoder(encoder, repo, rev, scratch.path(), opts.max_layers)?;
            rows.record(&label, seconds, bytes);
            encoder_row = Some(label);
        }
    }
    outln!(
        "{:<32} {:>9} {:>15} {:>12}",
        "pipeline",
        "median s",
        "min–max s",
        "size MB"
    )?;
    for row in &rows.0 {
        let (median, min, max) = row.spread();
        let range = format!("{min:.2}–{max:.2}");
        outln!(
            "{:<32} {median:>9.2} {range:>15} {:>12.1}",
            row.label,
            row.bytes / MB
        )?;
    }
    for (ours, theirs) in [
        (GZIP_ROW, PIPELINES[0].0),
        (ZSTD_ROW, PIPELINES[1].0),
        (FROM_IMAGE_ROW, ZSTD_ROW),
    ] {
        outln!("{ours} ÷ {theirs}: {:.2}", rows.ratio(ours, theirs))?;
    }
    if let Some(encoder) = encoder_row {
        outln!(
            "strata ÷ ostree-ext encoder: {:.2}",
            rows.ratio(OSTREE_ROW, &encoder)
        )?;
    }
    outln!("medians of {} runs", args.runs)?;
    if let Some(peak) = peak_rss_bytes() {
        outln!("peak memory of the strata builds: {}", human_bytes(peak))?;
    }
    Ok(())
}

/// The build benchmark's rows, in the order first seen.
#[derive(Default)]
struct Rows(Vec<Row>);

/// One pipeline's wall times over the runs, and its output's size.
struct Row {
    label: String,
    seconds: Vec<f64>,
    bytes: f64,
}

impl Row {
    /// Median, least and most seconds.
    fn spread(&self) -> (f64, f64, f64) {
        let mut s = self.seconds.clone();
        let median = crate::bench::median(&mut s);
        (median, s[0], s[s.len() - 1])
    }
}

impl Rows {
    fn record(&mut self, label: &str, seconds: f64, bytes: f64) {
        match self.0.iter_mut().find(|r| r.label == label) {
            Some(row) => row.seconds.push(seconds),
            None => self.0.push(Row {
                label: label.to_string(),
                seconds: vec![seconds],
                bytes,
            }),
        }
    }

    /// Median seconds of `ours` over those of `theirs`.
    fn ratio(&self, ours: &str, theirs: &str) -> f64 {
        let median = |label: &str| {
            self.0
                .iter()
                .find(|r| r.label == label)
                .map_or(f64::NAN, |r| r.spread().0)
        };
        median(ours) / median(theirs)
    }
}

/// Runs one reference pipeline on `tree`; its seconds and output bytes.
fn pipeline(name: &str, script: &str, tree: &std::path::Path) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(tree)
        .output()?;
    if !out.status.success() {
        bail!("{name} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let bytes: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(f64::NAN);
    Ok((started.elapsed().as_secs_f64(), bytes))
}

/// What every timed `strata build` of the benchmark shares.
struct TimedBuild<'a> {
    args: &'a BenchBuildArgs,
    plan: &'a crate::plan::PlanOptions,
    scratch: &'a std::path::Path,
}

impl TimedBuild<'_> {
    /// Builds `source` into a scratch directory (removed after); the seconds and the
    /// image's layer bytes.
    fn run(&self, source: BuildSource, compression: Compression) -> anyhow::Result<(f64, f64)> {
        let dir = self.scratch.join("strata-build");
        let measured = self.run_into(source, compression, &dir)?;
        std::fs::remove_dir_all(&dir)?;
        Ok(measured)
    }

    /// Builds `source` into the OCI directory `dir`; the seconds and the image's layer
    /// bytes.
    fn run_into(
        &self,
        source: BuildSource,
        compression: Compression,
        dir: &std::path::Path,
    ) -> anyhow::Result<(f64, f64)> {
        let build_opts = crate::build::BuildOptions {
            inputs: PlanInputs {
                source,
                priors: Vec::new(),
                plan: self.plan.clone(),
                stream: None,
                allow_special_files: self.args.allow_special_files,
                registry: Default::default(),
                components_map: Default::default(),
                source_date_epoch: None,
                fixed_plan: None,
                format: None,
            },
            output: crate::image::ImageRef::Oci {
                dir: dir.to_path_buf(),
                tag: None,
            },
            compression,
            labels: Default::default(),
            runtime: Default::default(),
        };
        let started = Instant::now();
        let report = crate::build::build(&build_opts, &|_| {})?;
        Ok((started.elapsed().as_secs_f64(), report.image.size as f64))
    }
}

/// Times ostree-ext's encoder on the same commit and layer count; the seconds and the
/// image's layer bytes.
fn ostree_ext_encoder(
    encoder: &std::path::Path,
    repo: &std::path::Path,
    rev: &str,
    scratch: &std::path::Path,
    layers: usize,
) -> anyhow::Result<(f64, f64)> {
    let dir = scratch.join("ostree-ext");
    let started = Instant::now();
    let out = Command::new(encoder)
        .arg("--encapsulate")
        .arg(repo)
        .arg(rev)
        .arg(format!("oci:{}:1", dir.display()))
        .arg(layers.to_string())
        .output()
        .map_err(|e| anyhow::anyhow!("{}: {e}", encoder.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            encoder.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bytes = crate::image::read_local(&dir, Some("1"))?.layer_bytes();
    std::fs::remove_dir_all(&dir)?;
    Ok((seconds, bytes as f64))
}

pub fn plan(args: BenchPlanArgs) -> anyhow::Result<()> {
    let opts = args.planner.options();
    opts.validate()?;
    if args.components == 0 || args.runs == 0 {
        bail!("--components and --runs must be at least 1");
    }
    eprintln!(
        "strata: generating {} components with {} prior builds",
        args.components, args.priors
    );
    let (build, priors) =
        crate::bench::synthetic::stream(args.components, args.priors, opts.max_layers);
    let mut times = Vec::with_capacity(args.runs);
    for run in 1..=args.runs {
        let started = Instant::now();
        let plan = crate::plan::plan(&build, &priors, &opts)?;
        times.push(started.elapsed().as_secs_f64());
        eprintln!(
            "strata: run {run}/{}: {} layers",
            args.runs,
            plan.layers.len()
        );
    }
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    outln!(
        "components {}  priors {}  layers {}  best {:.3} s  mean {:.3} s  peak memory {}",
        args.components,
        args.priors,
        opts.max_layers,
        best,
        mean,
        peak_rss_bytes().map_or("unknown".into(), human_bytes)
    )?;
    Ok(())
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    // Recorded layouts have no blobs to keep.
    let opts = crate::plan::PlanOptions {
        supersede: false,
        ..args.planner.options()
    };
    opts.validate()?;
    let names = args.strategy.strategies();
    let history = read_history(&args.history)?;
    let replay_opts = ReplayOptions {
        warmup: args.warmup,
        history_depth: args.history_depth.unwrap_or(usize::MAX),
    };
    let mut results = Vec::new();
    for name in names {
        let mut strategy = name.build(&opts, args.warmup);
        let total = history.len();
        let result = run_replay(&history, strategy.as_mut(), &replay_opts, |done| {
            if done % 50 == 0 || done == total {
                eprintln!("strata: replaying {name}: {done}/{total} builds");
            }
        });
        results.push(result);
    }
    let peak = peak_rss_bytes();
    if args.json {
        let doc = serde_json::json!({
            "history": args.history.display().to_string(),
            "max_layers": opts.max_layers,
            "peak_rss_bytes": peak,
            "results": results,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        if let [only] = results.as_slice() {
            out!("{}", transitions_table(only))?;
        }
        out!("{}", summary_table(&results, opts.max_layers))?;
        if let Some(peak) = peak {
            outln!("peak memory (whole run): {}", human_bytes(peak))?;
        }
    }
    Ok(())
}

fn transitions_table(r: &ReplayResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>6}  {:>12}  {:>12}  {:>7}  {:>6}",
        "build", "download MB", "lower MB", "ratio", "reused"
    );
    for t in &r.transitions {
        let ratio = t.download_bytes as f64 / (t.lower_bound_bytes as f64).max(1.0);
        let warm = if t.build <= r.warmup {
            " (warm-up)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:>6}  {:>12.1}  {:>12.1}  {:>7.3}  {:>3}/{:<3}{warm}",
            t.build,
            t.download_bytes as f64 / MB,
            t.lower_bound_bytes as f64 / MB,
            ratio,
            t.reused_layers,
            t.layers
        );
    }
    out.push('\n');
    out
}

fn summary_table(results: &[ReplayResult], max_layers: usize) -> String {
    let mut out = String::new();
    let first = &results[0];
    let _ = writeln!(
        out,
        "{} builds, {} layers, first {} transitions left out as warm-up; MB = 10^6 bytes",
        first.builds, max_layers, first.warmup
    );
    let _ = writeln!(
        out,
        "{:<18} {:>10} {:>10} {:>10} {:>8} {:>9} {:>9}",
        "strategy", "mean MB", "median MB", "lower MB", "ratio", "plan ms", "max ms"
    );
    for r in results {
        let _ = writeln!(
            out,
            "{:<18} {:>10.1} {:>10.1} {:>10.1} {:>8.4} {:>9.2} {:>9.2}",
            r.strategy,
            r.mean_download_bytes / MB,
            r.median_download_bytes / MB,
            r.mean_lower_bound_bytes / MB,
            r.ratio_to_lower_bound,
            r.mean_plan_ms,
            r.max_plan_ms
        );
    }
    out
}
