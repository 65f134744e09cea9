//! Reports: what a build or a plan-only run tells its caller, as JSON (`--report`,
//! the worker's report ConfigMap). Their own module so that readers of reports, such
//! as the operator's reconciler, do not link the pipeline that writes them.

use serde::{Deserialize, Serialize};

use crate::diff::ImageDiff;
use crate::plan::Plan;

/// The version tag of the build report format.
pub const REPORT_SCHEMA: &str = "strata.report/v1";

/// The written image and what it cost clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildReport {
    /// [`REPORT_SCHEMA`].
    pub schema: String,
    /// The image written.
    pub image: BuiltImage,
    /// The plan it was laid out by.
    pub plan: Plan,
    /// Against each prior that could be read, in the order given.
    pub diffs: Vec<ImageDiff>,
    /// What was skipped or guessed on the way (an unreadable prior, say).
    pub warnings: Vec<String>,
    /// Where the time went (`--timings`); wall times differ from run to run, so they
    /// stay out of the report's JSON.
    #[serde(skip)]
    pub timings: Vec<crate::timings::Stage>,
}

/// The image a build wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuiltImage {
    /// Where it was written.
    pub reference: String,
    /// Its manifest's digest, as the destination has it.
    pub manifest_digest: String,
    /// Compressed bytes of all layers.
    pub size: u64,
    /// Layers in the manifest, commit and patch layers included.
    pub layers: usize,
    /// The digest of each planned layer, in plan order.
    #[serde(default)]
    pub layer_digests: Vec<String>,
    /// The ostree format's commit layer (first in the manifest), which no plan holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_layer_digest: Option<String>,
    /// The patch layer (last in the manifest), which no plan holds either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_layer_digest: Option<String>,
}

/// What `strata worker plan` reports: the plan and what was learnt on the way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanReport {
    /// [`PLAN_REPORT_SCHEMA`].
    pub schema: String,
    /// The plan.
    pub plan: Plan,
    /// The priors that could be read, newest first.
    pub priors: Vec<String>,
    /// What was skipped or guessed on the way.
    pub warnings: Vec<String>,
}

/// The version tag of the plan report format.
pub const PLAN_REPORT_SCHEMA: &str = "strata.plan-report/v1";
