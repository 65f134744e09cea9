//! The `EncapsulationJob` custom resource (`encapsulationjobs.strata.dev/v1alpha1`).
//!
//! The Rust types are the source of truth: `strata crd` prints the CRD derived from
//! them, and `crds/` holds that output (a test fails when it drifts). Status stays
//! small; the full plan and diff live in the report ConfigMap named by `reportRef`.

// Each printcolumn(...) repeats the same keys, which this lint mistakes for duplicates.
#![allow(clippy::duplicated_attributes)]
// Field docs become the schema's descriptions, which `kubectl explain` shows.

use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Encapsulate an OS build into a layered OCI image, planned against the stream's
/// earlier builds.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "EncapsulationJob",
    namespaced,
    shortname = "ej",
    status = "EncapsulationJobStatus",
    printcolumn(name = "Stream", type_ = "string", json_path = ".spec.stream"),
    printcolumn(
        name = "Succeeded",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Succeeded\")].status"
    ),
    printcolumn(
        name = "Layers",
        type_ = "integer",
        json_path = ".status.plan.layerCount"
    ),
    printcolumn(
        name = "Reused %",
        type_ = "number",
        json_path = ".status.diff[0].reusedPercent"
    ),
    printcolumn(
        name = "Download",
        type_ = "integer",
        json_path = ".status.diff[0].downloadBytes"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EncapsulationJobSpec {
    /// What to encapsulate: exactly one of ostree, rootfs or image.
    pub source: Source,
    /// The stream this build belongs to; jobs of one stream run one at a time.
    #[x_kube(validation = Rule::new("self != ''").message("stream must not be empty"))]
    pub stream: String,
    /// Earlier images of the stream, newest first. When empty, the outputs of the
    /// newest `priorFromStream` succeeded jobs of the stream are used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub prior_builds: Vec<String>,
    /// How many of the stream's newest succeeded jobs give priors when `priorBuilds` is
    /// empty (0 to 16, default 2; 0 plans as a first build).
    #[serde(default = "default_prior_from_stream")]
    #[schemars(range(min = 0, max = 16))]
    pub prior_from_stream: u32,
    /// Where the image is pushed, and how its layers are compressed.
    pub output: Output,
    /// How layers are planned.
    #[serde(default)]
    pub planner: PlannerSpec,
    /// `Build` plans and pushes the image; `PlanOnly` stops after the plan (status shows
    /// the layout and the diff a build would have).
    #[serde(default)]
    pub mode: Mode,
    /// Set to true to stop the job: running pods are deleted.
    #[serde(default)]
    pub cancel: bool,
    /// Failed attempts retried, with exponential backoff (default: the controller's
    /// `--default-retries`, 2 unless the installation changed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: Option<u32>,
    /// The job fails with DeadlineExceeded after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i64>,
    /// The image running `strata worker`; defaults to the controller's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_image: Option<String>,
    /// What the job may set of its worker pods, within the installation's job policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
}

fn default_prior_from_stream() -> u32 {
    2
}

/// Exactly one source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("[has(self.ostree), has(self.rootfs), has(self.image)].filter(x, x).size() == 1").message("set exactly one of source.ostree, source.rootfs and source.image"))]
#[serde(rename_all = "camelCase")]
pub struct Source {
    /// An ostree commit in a repository on a volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ostree: Option<OstreeSource>,
    /// A root filesystem on a volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<RootfsSource>,
    /// An existing image to re-layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSource>,
}

/// An ostree commit, by `ref` or by `commit` checksum. With `volume`, `repo` is the
/// repository's path inside that volume of `podTemplate.volumes`; without, `repo` is
/// the HTTP(S) URL of an archive-mode repository.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OstreeSource {
    /// The repository: a path inside `volume`, or the HTTP(S) URL of an archive-mode
    /// repository, which the worker pulls the commit from.
    pub repo: String,
    /// The ref to encapsulate, e.g. `fedora/x86_64/coreos/stable`.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The commit checksum to encapsulate, instead of a ref.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The name of a volume in `podTemplate.volumes` holding the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// With `repo` a URL: the ConfigMap key holding the GPG public keys (armored or
    /// binary) the commit must be signed with. Without it, a pulled commit is checked
    /// against its checksums only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpg_keys: Option<ConfigMapKey>,
}

/// One key of a ConfigMap in the job's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ConfigMapKey {
    /// The ConfigMap's name.
    pub name: String,
    /// The key.
    pub key: String,
}

/// A root filesystem on a volume of the pod template.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RootfsSource {
    /// The name of a volume in `podTemplate.volumes`.
    pub volume: String,
    /// The tree's path inside that volume (`.` for its root).
    pub path: String,
}

/// An existing image to rechunk.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageSource {
    /// An image reference, e.g. `docker://registry.example.com/os:41`.
    #[serde(rename = "ref")]
    pub reference: String,
}

/// Where the image goes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    /// An image reference, e.g. `docker://registry.example.com/os/fedora:41.1`.
    pub image: String,
    /// `gzip` (every client reads it) or `zstd` (smaller, faster; needs a recent client).
    #[serde(default)]
    pub compression: Compression,
    /// A Secret of type kubernetes.io/dockerconfigjson used to push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_secret_ref: Option<SecretRef>,
}

/// A Secret of the job's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SecretRef {
    /// The Secret's name, in the job's namespace.
    pub name: String,
}

/// How layer blobs are compressed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip: every client reads it.
    #[default]
    Gzip,
    /// zstd: smaller and faster; needs a recent client.
    Zstd,
}

impl From<Compression> for crate::layers::Compression {
    fn from(c: Compression) -> Self {
        match c {
            Compression::Gzip => Self::Gzip,
            Compression::Zstd => Self::Zstd,
        }
    }
}

/// Planner settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlannerSpec {
    /// Most layers the image may have (default: the controller's
    /// `--default-max-layers`, 64 unless the installation changed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 127))]
    pub max_layers: Option<u32>,
    /// `Auto` re-plans only when the saving pays for the reshuffle within the planner's
    /// horizon; `Never` keeps the prior layout and places new components; `Always` plans
    /// afresh.
    #[serde(default)]
    pub repack: Repack,
}

/// When the planner may reshuffle a prior layout.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Repack {
    /// Re-plan when the saving pays for the reshuffle.
    #[default]
    Auto,
    /// Keep the prior layout; place new components into it.
    Never,
    /// Plan afresh.
    Always,
}

impl From<Repack> for crate::plan::RepackPolicy {
    fn from(r: Repack) -> Self {
        match r {
            Repack::Auto => Self::Auto,
            Repack::Never => Self::Never,
            Repack::Always => Self::Always,
        }
    }
}

/// How far a job goes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Plan, build and push.
    #[default]
    Build,
    /// Plan only; nothing is pushed.
    PlanOnly,
}

/// The parts of a pod template a job may set.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// CPU and memory of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<k8s_openapi::api::core::v1::ResourceRequirements>,
    /// Node labels the worker pod must match; each key must be allowed by the installation
    /// (`jobPolicy.nodeLabels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<std::collections::BTreeMap<String, String>>,
    /// Taints the worker pod tolerates; each key must be allowed by the installation
    /// (`jobPolicy.tolerationKeys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub tolerations: Option<Vec<k8s_openapi::api::core::v1::Toleration>>,
    /// The worker pod's service account, if the installation allows it
    /// (`jobPolicy.serviceAccounts`); default: the chart's worker account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Volumes the source may live on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub volumes: Option<Vec<k8s_openapi::api::core::v1::Volume>>,
}

/// What the controller observed and decided.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EncapsulationJobStatus {
    /// `Planned`, `Built` and `Succeeded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Attempts started so far (the first and its retries).
    #[serde(default)]
    pub attempts: u32,
    /// One per attempt: at most 10 retries and the first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 11))]
    pub pod_names: Vec<String>,
    /// The UID of the current attempt's pod, as the controller created it. Only that
    /// pod counts: a pod someone else made with the job's labels is never adopted.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "podUID")]
    pub pod_uid: Option<String>,
    /// When the first attempt started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the job ended, either way (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// A bounded summary of the plan: layers, decision counts and the first decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanStatus>,
    /// One per prior read (`priorBuilds` and `priorFromStream` give at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub diff: Vec<DiffStatus>,
    /// The pushed image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputStatus>,
    /// The ConfigMap key holding the full report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_ref: Option<ReportRef>,
    /// The last failed attempt: why, and where to look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// A standard condition.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// A job's `Planned`, `Built` or `Succeeded`; a stream's `Ready`, `Building` or
    /// `Suspended`.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// A CamelCase word. A job's: Running, WaitingForStream, BackOff, Succeeded, Failed,
    /// Cancelled, DeadlineExceeded, InvalidSpec, Planned or Built. A
    /// stream's: SourceRead, SourceUnavailable, InvalidSpec, JobRunning, Idle,
    /// JobRefused, Suspended or Active.
    pub reason: String,
    /// What happened, for people.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The spec generation the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A bounded summary of the plan.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlanStatus {
    /// Layers in the plan.
    pub layer_count: u32,
    /// Each layer of the plan, bottom first.
    #[schemars(length(max = 128))]
    pub layers: Vec<LayerStatus>,
    /// How many components each kind of decision covered.
    pub decisions: DecisionCounts,
    /// The first decisions that are not "kept", with their reasons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub first_decisions: Vec<DecisionStatus>,
    /// Why the plan kept the prior layout or re-planned, with the figures.
    pub repack_reason: String,
}

/// One planned layer.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LayerStatus {
    /// The layer's position, 0 at the bottom.
    pub index: u32,
    /// Components (packages, unowned units) in the layer.
    pub components: u32,
    /// Uncompressed bytes of the layer's content.
    pub size: u64,
    /// Formatted with four decimals: CRDs have no float type that every client reads alike.
    pub change_probability: String,
    /// The layer blob's digest, once built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// How many components each kind of decision covered.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct DecisionCounts {
    /// Components left where they were, unchanged.
    pub kept: u32,
    /// Components whose new version stays in its layer.
    pub updated: u32,
    /// New components, and where they went.
    pub placed: u32,
    /// Components moved to another layer.
    pub moved: u32,
    /// Components of the prior build that are gone.
    pub removed: u32,
}

/// One placement decision and its reason.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct DecisionStatus {
    /// The component, e.g. `rpm:bash` or `unowned:/etc/ssh`.
    pub component: String,
    /// kept, updated, placed, moved or removed.
    pub action: String,
    /// The layer the component went to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<u32>,
    /// Why, with the figures the planner weighed.
    pub reason: String,
}

/// What clients of one prior download.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DiffStatus {
    /// The prior image compared with.
    pub image: String,
    /// Layers its clients already have.
    pub reused_layers: u32,
    /// Layers its clients download.
    pub added_layers: u32,
    /// Its layers the new image no longer has.
    pub removed_layers: u32,
    /// Compressed bytes its clients download.
    pub download_bytes: u64,
    /// Share of the new image's compressed bytes its clients already have.
    pub reused_percent: f64,
}

/// The image the job pushed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct OutputStatus {
    /// The image reference pushed.
    pub image: String,
    /// The manifest digest; pull by it to get exactly this build.
    pub digest: String,
    /// Compressed bytes of all layers.
    pub size: u64,
}

/// The ConfigMap (owned by the job) holding the full report.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ReportRef {
    /// The ConfigMap's name, in the job's namespace.
    pub name: String,
    /// The key holding the gzipped JSON report of the last step.
    pub key: String,
}

/// Why the last failed attempt failed.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// PodDeleted, PodFailed, Evicted, PodPending, WorkerFailed, ReportRejected or
    /// PodCreateFailed.
    pub reason: String,
    /// What went wrong, in the worker's or the API server's words.
    pub message: String,
    /// The attempt's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The step's container (`plan` or `build`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The exact `kubectl logs …` command that shows what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_command: Option<String>,
    /// The attempt that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// When the failure was noticed; retries back off from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// CEL validation rules are on by default from Kubernetes 1.25; older apiservers
/// refuse the `x-kubernetes-validations` field outright.
pub const FIRST_MINOR_WITH_CEL: u32 = 25;

type Definition =
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The custom resources Strata defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// `EncapsulationJob`: one build.
    Job,
    /// `EncapsulationStream`: a source watched, one job per new build of it.
    Stream,
}

impl Kind {
    /// Every kind, in the order `strata crd` prints them.
    pub const ALL: [Kind; 2] = [Kind::Job, Kind::Stream];

    /// The kind's CRD as the types generate it.
    pub fn definition(self) -> Definition {
        match self {
            Kind::Job => EncapsulationJob::crd(),
            Kind::Stream => super::stream::crd::EncapsulationStream::crd(),
        }
    }

    /// The CRD for an apiserver of version 1.`minor`: without CEL rules before 1.25
    /// (the controller checks the same rules itself, so nothing goes unvalidated).
    pub fn for_minor(self, minor: u32) -> Definition {
        let crd = self.definition();
        if minor >= FIRST_MINOR_WITH_CEL {
            return crd;
        }
        let mut value = serde_json::to_value(&crd).expect("the CRD serialises");
        strip_key(&mut value, "x-kubernetes-validations");
        serde_json::from_value(value).expect("removing a key keeps a valid CRD")
    }
}

fn strip_key(value: &mut serde_json::Value, key: &str) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|v| strip_key(v, key));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| strip_key(v, key)),
        _ => {}
    }
}

/// The CRDs of `kinds` as YAML documents, as `strata crd` prints them and `crds/`
/// holds them (one file per kind).
pub fn crd_yaml(kinds: &[Kind], minor: Option<u32>) -> String {
    let docs: Vec<String> = kinds
        .iter()
        .map(|kind| {
            let crd = match minor {
                Some(m) => kind.for_minor(m),
                None => kind.definition(),
            };
            serde_saphyr::to_string(&crd).expect("the CRD serialises")
        })
        .collect();
    docs.join("---\n")
}
