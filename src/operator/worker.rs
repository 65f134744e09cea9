//! `strata worker`: one step of an attempt, inside the job's pod. The plan step plans
//! and leaves the plan for the build step; the build step lays the image out by that
//! plan and pushes it. Each writes its full report into the job's report ConfigMap and
//! vouches for it in its termination message (see `report`).

use std::path::PathBuf;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};

use crate::build::{self, BuildError, BuildOptions, PlanInputs};
use crate::image::ImageRef;
use crate::layers::Compression;
use crate::output::write_atomic;
use crate::report::PlanReport;
use crate::source::BuildSource;

use super::report::{self, Step, Termination};
use super::retry;

/// How long the worker keeps trying to write its report through an API server
/// outage. The job's deadline still bounds the pod as a whole.
const REPORT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);

/// One step for one attempt of one job.
#[derive(Debug, Clone)]
pub struct Task {
    /// Which step.
    pub step: Step,
    /// The job's namespace, where the report ConfigMap goes.
    pub namespace: String,
    /// The job's name.
    pub job: String,
    /// The job's UID, which the report and termination message carry.
    pub job_uid: String,
    /// The attempt.
    pub attempt: u32,
    /// Written by the plan step, read by the build step.
    pub plan_file: PathBuf,
    /// Where the termination message goes.
    pub termination_log: PathBuf,
    /// What the plan is made from.
    pub inputs: PlanInputs,
    /// Where the build step writes the image (the plan step writes none).
    pub output: Option<ImageRef>,
    /// How the build step compresses layers.
    pub compression: Compression,
    /// The ostree source's repository is pulled from a URL first.
    pub pull: Option<Pull>,
}

/// An ostree repository named by URL: the commit is pulled into the source's
/// repository path before anything reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    /// The repository's URL.
    pub url: String,
    /// GPG public keys the commit must be signed with.
    pub gpg_keys: Option<PathBuf>,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Planning or building failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The plan file could not be written or read back.
    #[error("{path}: {problem}")]
    PlanFile {
        /// The plan file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The build step was started without `--output`.
    #[error("the build step has no output image to write")]
    NoOutput,
    /// The report does not fit in a ConfigMap.
    #[error("the report is {0} bytes gzipped; a ConfigMap holds at most 1 MiB")]
    ReportTooLarge(usize),
    /// The report ConfigMap could not be written.
    #[error("cannot write the report ConfigMap {name}: {source}")]
    ConfigMap {
        /// The ConfigMap.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// No client for the API server could be made.
    #[error("cannot reach the API server: {0}")]
    Client(String),
    /// The termination message could not be written.
    #[error("{path}: cannot write the termination message: {source}")]
    Termination {
        /// Where it should go.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// ConfigMaps hold 1 MiB including their metadata; leave room for it.
const MAX_REPORT: usize = 1_000_000;

/// Runs the step and leaves a termination message either way.
pub fn run(task: &Task, progress: &(dyn Fn(&str) + Sync)) -> Result<(), WorkerError> {
    let result = step(task, progress).and_then(|(bytes, digest)| {
        progress(&format!(
            "writing the report ({} bytes gzipped)",
            bytes.len()
        ));
        write_report(task, bytes)?;
        Ok(digest)
    });
    let (digest, error) = match &result {
        Ok(d) => (Some(d.clone()), None),
        Err(e) => (None, Some(crate::error_chain(e))),
    };
    let message = Termination {
        job_uid: task.job_uid.clone(),
        attempt: task.attempt,
        step: task.step,
        report_sha256: digest,
        error,
        finished: Some(jiff::Timestamp::now().to_string()),
    }
    .to_message();
    std::fs::write(&task.termination_log, message).map_err(|source| WorkerError::Termination {
        path: task.termination_log.clone(),
        source,
    })?;
    result.map(|_| ())
}

/// The step itself: its report, gzipped, and the report's digest.
fn step(task: &Task, progress: &(dyn Fn(&str) + Sync)) -> Result<(Vec<u8>, String), WorkerError> {
    let plan_error = |problem: String| WorkerError::PlanFile {
        path: task.plan_file.clone(),
        problem,
    };
    let inputs = pulled(task, progress)?;
    let (bytes, digest) = match task.step {
        Step::Plan => {
            let report = build::plan_only(&inputs, progress)?;
            let json = serde_json::to_vec_pretty(&report).expect("plans serialise");
            write_atomic(&task.plan_file, &json).map_err(|e| plan_error(e.to_string()))?;
            report::encode(&report)
        }
        Step::Build => {
            let text = std::fs::read(&task.plan_file)
                .map_err(|e| plan_error(format!("cannot read the plan step's plan: {e}")))?;
            let planned: PlanReport = serde_json::from_slice(&text)
                .map_err(|e| plan_error(format!("not a plan report: {e}")))?;
            let mut inputs = inputs;
            inputs.fixed_plan = Some(planned.plan);
            let opts = BuildOptions {
                inputs,
                output: task.output.clone().ok_or(WorkerError::NoOutput)?,
                compression: task.compression,
                labels: Default::default(),
                runtime: Default::default(),
            };
            let built = build::build(&opts, progress)?;
            report::encode(&built)
        }
    };
    if bytes.len() > MAX_REPORT {
        return Err(WorkerError::ReportTooLarge(bytes.len()));
    }
    Ok((bytes, digest))
}

/// The step's inputs, with a repository named by URL pulled and its commit pinned by
/// checksum. The build step finds the plan step's pull in the pod's work volume and
/// reads that same commit, even if the ref has moved on since.
fn pulled(task: &Task, progress: &(dyn Fn(&str) + Sync)) -> Result<PlanInputs, WorkerError> {
    let mut inputs = task.inputs.clone();
    let (Some(pull), BuildSource::Ostree { repo, rev }) = (&task.pull, &mut inputs.source) else {
        return Ok(inputs);
    };
    let remote = crate::source::ostree::pull::Remote {
        url: &pull.url,
        rev,
        gpg_keys: pull.gpg_keys.as_deref(),
        commit_only: false,
    };
    progress(&format!("pulling {rev} from {}", pull.url));
    let checksum = crate::source::ostree::pull::pull_once(&remote, repo)
        .map_err(|e| WorkerError::Build(BuildError::from(e)))?;
    *rev = checksum;
    Ok(inputs)
}

fn write_report(task: &Task, bytes: Vec<u8>) -> Result<(), WorkerError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| WorkerError::Client(e.to_string()))?;
    runtime.block_on(apply_report(task, bytes))
}

async fn apply_report(task: &Task, bytes: Vec<u8>) -> Result<(), WorkerError> {
    super::install_crypto_provider();
    let client = kube::Client::try_default()
        .await
        .map_err(|e| WorkerError::Client(e.to_string()))?;
    let name = report::report_name(&task.job);
    let cm = report::report_entry(&task.namespace, &task.job, task.step, bytes);
    let api: Api<ConfigMap> = Api::namespaced(client, &task.namespace);
    // One field manager per step, so the plan and build reports sit side by side.
    let manager = format!("strata-worker-{}", task.step.name());
    let (params, patch) = (PatchParams::apply(&manager).force(), Patch::Apply(&cm));
    // The image is pushed by now: an API server away for a while must not waste it.
    retry::while_transient(
        REPORT_PATIENCE,
        || api.patch(&name, &params, &patch),
        |e, wait| eprintln!("cannot write the report yet ({e}); retrying in {wait:?}"),
    )
    .await
    .map_err(|source| WorkerError::ConfigMap { name, source })?;
    Ok(())
}
