//! Command-line definitions (clap derive) and dispatch. This is the only place that
//! turns typed errors into `anyhow` reports.

/// `print!` for command output: it returns an error once the reader has gone, where
/// `print!` would panic.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` for command output, as [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod bench;
mod build;
mod diff;
mod operator;
mod plan;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::bench::baselines::StrategyName;
use crate::plan::{RepackPolicy, DEFAULT_HORIZON, DEFAULT_MAX_LAYERS};
use crate::source::BuildSource;

/// Strata lays out OS builds as OCI images whose layers stay stable from build to
/// build, so clients download little on each update.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan which components go into which layer, given earlier builds.
    #[command(after_help = plan::EXAMPLES)]
    Plan(PlanArgs),
    /// Encapsulate a root filesystem, an ostree commit or an image as a layered OCI
    /// image laid out by the planner.
    #[command(after_help = build::EXAMPLES)]
    Build(Box<BuildArgs>),
    /// Show what clients of one image download to get another.
    #[command(after_help = diff::EXAMPLES)]
    Diff(DiffArgs),
    /// Print the EncapsulationJob and EncapsulationStream CRDs (YAML), e.g.
    /// `strata crd | kubectl apply -f -`.
    Crd(CrdArgs),
    /// Run the operator: reconcile EncapsulationJobs by running worker pods, and
    /// EncapsulationStreams by making a job for each new build of their source.
    #[command(after_help = operator::CONTROLLER_EXAMPLES)]
    Controller(Box<ControllerArgs>),
    /// One step of an EncapsulationJob, inside its pod (the controller writes these
    /// arguments; you rarely type them).
    Worker(Box<WorkerArgs>),
    /// Run inside an EncapsulationStream's probe pod: read a tree's generation file
    /// beneath its volume and report it as the termination message.
    #[command(hide = true)]
    Probe(ProbeArgs),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Registry access, passed through to skopeo.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Registry credentials (containers-auth.json format).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Verify TLS certificates; `--tls-verify=false` also allows plain HTTP.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// Directory of extra CA certificates and client keys.
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// A registry (host[:port]) reached without TLS verification (or over plain
    /// HTTP), the others still verified. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

impl RegistryArgs {
    pub fn options(&self) -> crate::image::remote::RegistryOptions {
        crate::image::remote::RegistryOptions {
            authfile: self.authfile.clone(),
            insecure: !self.tls_verify,
            insecure_registries: self.insecure_registries.clone(),
            cert_dir: self.cert_dir.clone(),
        }
    }
}

/// Planner options shared by `plan` and `bench replay`.
#[derive(Debug, Clone, Args)]
pub struct PlannerArgs {
    /// Most layers the image may have (2..=127).
    #[arg(long, short = 'n', default_value_t = DEFAULT_MAX_LAYERS, value_name = "N")]
    pub max_layers: usize,
    /// When to throw the prior layout away: `auto` re-plans when the expected saving
    /// over the horizon pays for the layers it rewrites.
    #[arg(long, value_enum, default_value_t = RepackPolicy::Auto)]
    pub repack: RepackPolicy,
    /// Future builds over which a re-plan must pay for itself.
    #[arg(long, default_value_t = DEFAULT_HORIZON, value_name = "BUILDS")]
    pub horizon: f64,
    /// Allow more than 127 layers (most registries and runtimes refuse them).
    #[arg(long)]
    pub allow_over_127: bool,
    /// Rewrite every prior layer whose members changed or went. By default such a
    /// layer is kept byte for byte when that saves downloads: the new versions go in
    /// a layer above it, and a patch layer on top holds whiteouts for what went. The
    /// stale bytes stay in the image (at most half a layer, a fifth of the image).
    /// Plain images only; it needs the newest prior's blobs.
    #[arg(long)]
    pub no_supersede: bool,
}

impl PlannerArgs {
    pub fn options(&self) -> crate::plan::PlanOptions {
        crate::plan::PlanOptions {
            max_layers: self.max_layers,
            repack: self.repack,
            horizon: self.horizon,
            allow_over_127: self.allow_over_127,
            supersede: !self.no_supersede,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Table,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The new build's components (JSON, optionally .gz); format in the README.
    #[arg(long, value_name = "FILE")]
    pub components: PathBuf,
    /// A prior build's plan or report (JSON, optionally .gz). Repeat, newest first;
    /// the first is the layout to keep stable, all of them teach change rates.
    #[arg(long, value_name = "FILE")]
    pub prior: Vec<PathBuf>,
    #[command(flatten)]
    pub planner: PlannerArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Write the plan here (atomically) instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Where to write: oci:DIR[:TAG] (DIR must not exist yet), oci-archive:FILE[:TAG],
    /// or docker://REF (pushed with skopeo).
    #[arg(long, value_name = "REF")]
    pub output: crate::image::ImageRef,
    /// An earlier image of the stream, newest first: oci:, oci-archive:, docker:// or
    /// containers-storage:. A missing prior is a warning and a fresh plan. Images
    /// Strata built record their place in the stream (`strata.dev/generation`), and
    /// are read newest first whatever order they are given in.
    #[arg(long, value_name = "REF")]
    pub prior: Vec<crate::image::ImageRef>,
    #[command(flatten)]
    pub planner: PlannerArgs,
    /// How layers are compressed.
    #[arg(long, value_enum, default_value_t = crate::layers::Compression::Gzip)]
    pub compression: crate::layers::Compression,
    /// `ostree`: ostree-ext's encapsulated commit, which rpm-ostree and bootc import
    /// (the default for --ostree-repo; one layer holds the commit). `plain`: ordinary
    /// filesystem layers (the default otherwise).
    #[arg(long, value_enum)]
    pub format: Option<crate::build::ImageFormat>,
    /// A config label, KEY=VALUE. Repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label: Vec<(String, String)>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Globs that put files into named components, ahead of the package database:
    /// a JSON list of {"glob": "/usr/lib/firmware/**", "component": "firmware"}.
    #[arg(long, value_name = "FILE")]
    pub components_map: Option<PathBuf>,
    /// The stream this build belongs to, recorded on the manifest.
    #[arg(long)]
    pub stream: Option<String>,
    /// Keep device nodes and FIFOs instead of refusing them.
    #[arg(long)]
    pub allow_special_files: bool,
    /// Write the full report (plan, image, diffs) here as JSON, atomically.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Print the plan as a table before the diff.
    #[arg(long)]
    pub show_plan: bool,
    /// Print where the time went, to stderr: reading the source, finding components
    /// (package databases), reading priors, planning, each layer in the order they
    /// finished (its wall time, and the rate of its uncompressed bytes: reading,
    /// compressing and hashing overlap in one stream), the manifest, and publishing.
    #[arg(long)]
    pub timings: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// How the image runs. A rechunked image (--from-image) keeps its source's runtime
/// config; --config replaces it, and each flag replaces its field.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// The runtime config: a JSON object of an OCI image config's `config` fields
    /// (User, Env, Entrypoint, Cmd, WorkingDir, ExposedPorts, Volumes, StopSignal,
    /// Labels), or a whole image config.
    #[arg(long = "config", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// The user the image runs as, USER[:GROUP] (names or numbers).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// An environment variable, KEY=VALUE; replaces one of the same KEY. Repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<String>,
    /// The entrypoint, as a JSON array: --entrypoint '["/usr/bin/strata"]'.
    #[arg(long, value_name = "JSON", value_parser = parse_argv)]
    pub entrypoint: Option<Argv>,
    /// The default arguments, as a JSON array: --cmd '["controller"]'.
    #[arg(long, value_name = "JSON", value_parser = parse_argv)]
    pub cmd: Option<Argv>,
    /// The working directory (absolute).
    #[arg(long, value_name = "DIR", value_parser = parse_workdir)]
    pub workdir: Option<String>,
}

impl RuntimeArgs {
    /// The overrides these flags ask for; reads --config.
    pub fn overrides(&self) -> anyhow::Result<crate::image::runtime::Overrides> {
        let file = match &self.config_file {
            Some(path) => Some(crate::image::runtime::read_file(path)?),
            None => None,
        };
        Ok(crate::image::runtime::Overrides {
            file,
            user: self.user.clone(),
            env: self.env.clone(),
            entrypoint: self.entrypoint.clone().map(|a| a.0),
            cmd: self.cmd.clone().map(|a| a.0),
            working_dir: self.workdir.clone(),
        })
    }
}

fn parse_env(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => Ok(s.to_string()),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

/// An argv list given as one JSON array (one value to clap, not many).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argv(pub Vec<String>);

fn parse_argv(s: &str) -> Result<Argv, String> {
    serde_json::from_str::<Vec<String>>(s)
        .map(Argv)
        .map_err(|_| {
            format!(
                "'{s}' is not a JSON array of strings, e.g. '[\"/usr/bin/strata\", \"--help\"]'"
            )
        })
}

fn parse_workdir(s: &str) -> Result<String, String> {
    match s.starts_with('/') {
        true => Ok(s.to_string()),
        false => Err(format!("'{s}' is not an absolute path")),
    }
}

/// The tree to encapsulate: exactly one source.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// The root filesystem to encapsulate (never followed out through symlinks).
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// An ostree repository (any mode); the commit is read from its objects, with
    /// the commit's timestamp as the build date.
    #[arg(long, value_name = "REPO", requires = "ostree_ref")]
    pub ostree_repo: Option<PathBuf>,
    /// The ref or commit checksum to encapsulate from --ostree-repo.
    #[arg(
        long = "ref",
        value_name = "REF",
        id = "ostree_ref",
        requires = "ostree_repo"
    )]
    pub ostree_ref: Option<String>,
    /// An existing image to rechunk: its layers are flattened (whiteouts applied) and
    /// laid out afresh. Any transport: oci:, oci-archive:, docker://, containers-storage:.
    #[arg(long, value_name = "REF")]
    pub from_image: Option<crate::image::ImageRef>,
}

impl SourceArgs {
    /// The one source named.
    pub fn source(&self) -> anyhow::Result<crate::source::BuildSource> {
        use crate::source::BuildSource;
        let ostree = self.ostree_repo.as_ref().zip(self.ostree_ref.as_ref());
        Ok(match (&self.rootfs, &self.from_image, ostree) {
            (Some(dir), None, None) => BuildSource::Rootfs(dir.clone()),
            (None, Some(r), None) => BuildSource::Image(r.clone()),
            (None, None, Some((repo, rev))) => BuildSource::Ostree {
                repo: repo.clone(),
                rev: rev.clone(),
            },
            (None, None, None) => anyhow::bail!(
                "name a source: --rootfs DIR, --ostree-repo REPO --ref REF or --from-image REF"
            ),
            _ => anyhow::bail!("name one source: --rootfs, --ostree-repo or --from-image"),
        })
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The image clients have (oci:DIR[:TAG], docker://REF, …).
    pub old: crate::image::ImageRef,
    /// The image they update to.
    pub new: crate::image::ImageRef,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct CrdArgs {
    /// The cluster's Kubernetes minor version: before 25, CEL validation rules are left
    /// out (older apiservers refuse them; the controller checks them too).
    #[arg(long, value_name = "MINOR")]
    pub kube_minor: Option<u32>,
    /// Print this kind's CRD only (default: every kind, as YAML documents).
    #[arg(long, value_enum)]
    pub kind: Option<crate::operator::crd::Kind>,
}

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Watch jobs in this namespace only; repeat for several (default: all
    /// namespaces, which needs cluster-wide RBAC).
    #[arg(long)]
    pub namespace: Vec<String>,
    /// spec.planner.maxLayers of jobs that leave it out (2..=127).
    #[arg(long, default_value_t = crate::plan::DEFAULT_MAX_LAYERS as u32, value_name = "N")]
    pub default_max_layers: u32,
    /// spec.retries of jobs that leave it out.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub default_retries: u32,
    /// Image of worker pods, unless a job sets spec.workerImage.
    #[arg(long, env = "STRATA_WORKER_IMAGE", default_value = concat!("ghcr.io/strata-dev/strata:", env!("CARGO_PKG_VERSION")))]
    pub worker_image: String,
    /// The worker image's path to the strata binary.
    #[arg(long, default_value = "strata")]
    pub worker_command: String,
    /// Service account of worker pods, unless a job's pod template names one. It
    /// needs to create and patch ConfigMaps in the job's namespace, nothing more.
    #[arg(long, default_value = "strata-worker")]
    pub worker_service_account: String,
    /// A volume type jobs may mount (`persistentVolumeClaim`, `emptyDir`, `configMap`,
    /// `ephemeral` when none is given). Repeatable. A job can read, and push to a
    /// registry of its choosing, whatever its volumes hold.
    #[arg(long = "allow-volume-type", value_name = "TYPE")]
    pub allow_volume_types: Vec<String>,
    /// Also let jobs mount host directories (`hostPath`): for test clusters only, since
    /// it hands every job creator the node's files.
    #[arg(long)]
    pub allow_host_path: bool,
    /// A service account a job's `spec.podTemplate.serviceAccountName` may name.
    /// Repeatable; none by default (workers run as --worker-service-account).
    #[arg(long = "allow-service-account", value_name = "NAME")]
    pub allow_service_accounts: Vec<String>,
    /// An image a job's `spec.workerImage` may name. Repeatable; none by default
    /// (workers run --worker-image).
    #[arg(long = "allow-worker-image", value_name = "IMAGE")]
    pub allow_worker_images: Vec<String>,
    /// A node label key a job's `spec.podTemplate.nodeSelector` may name. Repeatable;
    /// none by default, so a job cannot steer its pod onto a node of its choosing.
    #[arg(long = "allow-node-label", value_name = "KEY")]
    pub allow_node_labels: Vec<String>,
    /// A taint key a job's `spec.podTemplate.tolerations` may tolerate. Repeatable;
    /// none by default, so a job cannot reach nodes tainted to keep workloads off
    /// (control-plane nodes, dedicated pools).
    #[arg(long = "allow-toleration", value_name = "KEY")]
    pub allow_toleration_keys: Vec<String>,
    /// A namespace prepared for worker pods (their ServiceAccount and Role).
    /// Repeatable; jobs in any other namespace end InvalidSpec. None: every namespace.
    #[arg(long = "worker-namespace", value_name = "NAMESPACE")]
    pub worker_namespaces: Vec<String>,
    /// Seconds to wait after a first failed attempt; doubles with each failure.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub backoff_base: f64,
    /// Seconds a worker pod may stay Pending (unschedulable, an image that cannot be
    /// pulled, a missing secret key) before its attempt fails as `PodPending`.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub pending_timeout: u64,
    /// A registry (host[:port]) to reach over plain HTTP. Repeatable.
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// How log lines are written to stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub health_addr: std::net::SocketAddr,
    /// The Lease that elects one active replica.
    #[arg(long, default_value = "strata-controller")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's name in the Lease (default: host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a leader may go without renewing before another replica takes over.
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    pub lease_duration: u64,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The volume's mount point; the file is opened beneath it, never through a link.
    #[arg(long, value_name = "DIR")]
    pub volume: PathBuf,
    /// The generation file, relative to the volume.
    #[arg(long, value_name = "PATH")]
    pub file: PathBuf,
    /// Where the report (JSON) or the error goes.
    #[arg(long, value_name = "FILE", default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Which step of the attempt to run.
    #[arg(value_enum)]
    pub step: crate::operator::report::Step,
    /// The EncapsulationJob's namespace, where the report ConfigMap goes.
    #[arg(long)]
    pub namespace: String,
    /// The EncapsulationJob's name.
    #[arg(long)]
    pub job: String,
    /// The EncapsulationJob's UID, which the report and termination message carry.
    #[arg(long)]
    pub job_uid: String,
    /// Which attempt this pod runs.
    #[arg(long)]
    pub attempt: u32,
    /// The plan step writes the plan here; the build step lays the image out by it.
    #[arg(long, value_name = "FILE")]
    pub plan_file: PathBuf,
    /// Where the summary for the controller goes.
    #[arg(long, value_name = "FILE", default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Pull --ref from this HTTP(S) ostree repository into --ostree-repo first (made
    /// if missing; a commit already pulled there is read as it is).
    #[arg(long, value_name = "URL", requires = "ostree_repo")]
    pub ostree_url: Option<String>,
    /// GPG public keys the pulled commit must be signed with.
    #[arg(long, value_name = "FILE", requires = "ostree_url")]
    pub ostree_gpg_keys: Option<PathBuf>,
    /// An earlier build of the stream (repeatable), as the controller resolved it.
    #[arg(long, value_name = "REF")]
    pub prior: Vec<crate::image::ImageRef>,
    /// Required by the build step.
    #[arg(long, value_name = "REF")]
    pub output: Option<crate::image::ImageRef>,
    /// How the build step compresses layers.
    #[arg(long, value_enum, default_value_t = crate::layers::Compression::Gzip)]
    pub compression: crate::layers::Compression,
    /// The job's stream, recorded on the image.
    #[arg(long)]
    pub stream: Option<String>,
    #[command(flatten)]
    pub planner: PlannerArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Replay a stream's real build history and measure what clients download.
    #[command(after_help = bench::EXAMPLES)]
    Replay(ReplayArgs),
    /// Time `strata build` on a real tree next to tar | pigz and tar | zstd, and a
    /// rechunk (`--from-image`) of the same tree's image next to the tree's build.
    #[command(after_help = bench::BUILD_EXAMPLES)]
    Build(BenchBuildArgs),
    /// Time one plan of a synthetic build of N components with M prior builds.
    #[command(after_help = bench::PLAN_EXAMPLES)]
    Plan(BenchPlanArgs),
    /// Encapsulate a stream of real trees in order and measure each update against
    /// the file-level bound and layouts that keep no history.
    #[command(after_help = bench::TREES_EXAMPLES)]
    Trees(BenchTreesArgs),
}

/// A `strata bench trees` input: a directory, or `ostree:REPO:REV`.
fn parse_tree(arg: &str) -> Result<BuildSource, String> {
    let Some(rest) = arg.strip_prefix("ostree:") else {
        return Ok(BuildSource::Rootfs(PathBuf::from(arg)));
    };
    match rest.rsplit_once(':') {
        Some((repo, rev)) if !repo.is_empty() && !rev.is_empty() => Ok(BuildSource::Ostree {
            repo: PathBuf::from(repo),
            rev: rev.to_string(),
        }),
        _ => Err(format!(
            "{arg}: an ostree commit is written ostree:REPO:REV, for example ostree:/srv/repo:os/stable"
        )),
    }
}

/// The controller's log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Plain text, coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line, with the job's namespace and name as fields.
    Json,
}

#[derive(Debug, Args)]
pub struct BenchTreesArgs {
    /// The stream's builds, oldest first (at least two): root filesystem directories,
    /// or ostree commits written `ostree:REPO:REV` (REV a ref or checksum), which are
    /// encapsulated in the ostree format as rpm-ostree and bootc clients get them.
    #[arg(value_name = "TREE", num_args = 2.., required = true, value_parser = parse_tree)]
    pub trees: Vec<BuildSource>,
    #[command(flatten)]
    pub planner: PlannerArgs,
    /// Keep device nodes and FIFOs (a debootstrapped tree has some).
    #[arg(long)]
    pub allow_special_files: bool,
    /// Print JSON (every transition and total) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchBuildArgs {
    /// The tree to encapsulate.
    #[arg(long, value_name = "DIR")]
    pub rootfs: PathBuf,
    #[command(flatten)]
    pub planner: PlannerArgs,
    /// Keep device nodes and FIFOs (a debootstrapped tree has some).
    #[arg(long)]
    pub allow_special_files: bool,
    /// Also time an ostree commit of the same tree: Strata's ostree format against
    /// ostree-ext's own encoder (needs --ref and --ostree-ext-encoder).
    #[arg(long, value_name = "REPO", requires_all = ["ostree_ref", "ostree_ext_encoder"])]
    pub ostree_repo: Option<PathBuf>,
    /// The commit to encapsulate: a ref or checksum in --ostree-repo.
    #[arg(long = "ref", value_name = "REF", requires = "ostree_repo")]
    pub ostree_ref: Option<String>,
    /// ostree-ext's encoder: the `strata-ostree-import` helper built from
    /// tools/ostree-import (run as `PATH --encapsulate REPO REF IMAGE LAYERS`).
    #[arg(long, value_name = "PATH", requires = "ostree_repo")]
    pub ostree_ext_encoder: Option<PathBuf>,
    /// Times each pipeline this often, interleaved; the figures are medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

#[derive(Debug, Args)]
pub struct BenchPlanArgs {
    /// Components in the synthetic build.
    #[arg(long, default_value_t = 2000)]
    pub components: usize,
    /// Prior builds handed to the planner.
    #[arg(long, default_value_t = 100)]
    pub priors: usize,
    #[command(flatten)]
    pub planner: PlannerArgs,
    /// Plans timed; the figures are the best and the mean.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// `--strategy`: one strategy, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyChoice {
    All,
    One(StrategyName),
}

impl StrategyChoice {
    /// The strategies to replay, in table order.
    pub fn strategies(self) -> Vec<StrategyName> {
        match self {
            StrategyChoice::All => StrategyName::all().to_vec(),
            StrategyChoice::One(s) => vec![s],
        }
    }
}

/// The strategies' own names and help, and `all`.
impl ValueEnum for StrategyChoice {
    fn value_variants<'a>() -> &'a [Self] {
        static CHOICES: std::sync::LazyLock<Vec<StrategyChoice>> = std::sync::LazyLock::new(|| {
            let one = StrategyName::all().iter().map(|&s| StrategyChoice::One(s));
            one.chain([StrategyChoice::All]).collect()
        });
        &CHOICES
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        match self {
            StrategyChoice::All => {
                Some(clap::builder::PossibleValue::new("all").help("Every strategy, in one table"))
            }
            StrategyChoice::One(s) => s.to_possible_value(),
        }
    }
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Build history, one build per line (the `shared/bench` format, optionally .gz).
    #[arg(long, value_name = "FILE")]
    pub history: PathBuf,
    /// Strata's planner, a baseline, or all of them in one comparison table.
    #[arg(long, value_enum, default_value = "strata")]
    pub strategy: StrategyChoice,
    #[command(flatten)]
    pub planner: PlannerArgs,
    /// Transitions left out of the figures while history is learnt.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Prior builds handed to each plan, newest first (default: the whole history,
    /// so the baselines see the full 365-day window their changelog counts use).
    #[arg(long)]
    pub history_depth: Option<usize>,
    /// Print JSON (with every transition) instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Command output could not be written to standard output.
#[derive(Debug, thiserror::Error)]
#[error("writing to standard output")]
pub struct StdoutError(#[source] std::io::Error);

/// Writes command output (through [`out!`] and [`outln!`]).
pub(crate) fn write_stdout(args: std::fmt::Arguments) -> Result<(), StdoutError> {
    use std::io::Write;
    std::io::stdout()
        .lock()
        .write_fmt(args)
        .map_err(StdoutError)
}

/// Whether `err` is our own output finding its reader gone. Only stdout counts: a
/// broken pipe to skopeo or a child is a failure.
fn reader_left(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<StdoutError>())
        .any(|e| e.0.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // The controller shuts down on signals itself; everything else writes outputs
    // that an interruption must not leave half-written.
    if !matches!(cli.command, Command::Controller(_)) {
        crate::cleanup::remove_on_signals()?;
    }
    dispatch(cli.command).or_else(|err| match reader_left(&err) {
        // A reader that stops early (`strata crd | head`) has seen what it wanted, as
        // with any Unix filter; the outputs were complete before anything was printed.
        true => Ok(()),
        false => Err(err),
    })
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Plan(args) => plan::run(args),
        Command::Build(args) => build::run(*args),
        Command::Diff(args) => diff::run(args),
        Command::Crd(args) => {
            use crate::operator::crd::{crd_yaml, Kind};
            let kinds = args.kind.map_or(Kind::ALL.to_vec(), |k| vec![k]);
            out!("{}", crd_yaml(&kinds, args.kube_minor))?;
            Ok(())
        }
        Command::Controller(args) => operator::controller(*args),
        Command::Worker(args) => operator::worker(*args),
        Command::Probe(args) => {
            use crate::operator::stream::probe;
            let found = probe::run(&args.volume, &args.file, &args.termination_log)
                .map_err(anyhow::Error::msg)?;
            out!("{}", serde_json::to_string(&found)?)?;
            Ok(())
        }
        Command::Bench(BenchCommand::Replay(args)) => bench::replay(args),
        Command::Bench(BenchCommand::Plan(args)) => bench::plan(args),
        Command::Bench(BenchCommand::Build(args)) => bench::build(args),
        Command::Bench(BenchCommand::Trees(args)) => bench::trees(args),
    }
}

#[cfg(test)]
mod stdout_tests {
    use super::*;

    /// Only our own stdout's reader leaving is success; any other broken pipe (to
    /// skopeo, to a child) is a failure that must reach the exit status.
    #[test]
    fn only_a_closed_stdout_counts_as_the_reader_leaving() {
        let pipe = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let ours = anyhow::Error::new(StdoutError(pipe())).context("printing the plan");
        assert!(reader_left(&ours));
        let skopeo = anyhow::Error::new(pipe()).context("sending a blob to skopeo");
        assert!(!reader_left(&skopeo));
        let full = StdoutError(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(!reader_left(&anyhow::Error::new(full)));
    }
}
