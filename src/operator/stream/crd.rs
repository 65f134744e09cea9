//! The `EncapsulationStream` custom resource (`encapsulationstreams.strata.dev/v1alpha1`):
//! a source to watch, and the job every new build of it becomes.

// Each printcolumn(...) repeats the same keys, which this lint mistakes for duplicates.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::operator::crd::{
    Compression, Condition, ConfigMapKey, ImageSource, PlannerSpec, PodTemplate, SecretRef,
};

/// Watch a source and encapsulate each new build of it, as a CronJob runs Jobs: one
/// `EncapsulationJob` per new source identity, planned against the stream's history.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "strata.dev",
    version = "v1alpha1",
    kind = "EncapsulationStream",
    namespaced,
    shortname = "es",
    status = "EncapsulationStreamStatus",
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".spec.source.image.ref"
    ),
    printcolumn(
        name = "Last build",
        type_ = "string",
        json_path = ".status.history[0].job"
    ),
    printcolumn(
        name = "Result",
        type_ = "string",
        json_path = ".status.history[0].result"
    ),
    printcolumn(
        name = "Reused %",
        type_ = "number",
        json_path = ".status.history[0].reusedPercent"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EncapsulationStreamSpec {
    /// What to watch.
    pub source: StreamSource,
    /// How often the source is polled (default 300). Polling reads manifests and commit
    /// objects only.
    #[serde(default = "default_poll_interval")]
    #[schemars(range(min = 5, max = 86400))]
    pub poll_interval_seconds: u32,
    /// Set to true to start no new jobs; a running one goes on.
    #[serde(default)]
    pub suspend: bool,
    /// Where each build is pushed.
    pub output: StreamOutput,
    /// The fields each build's job carries over.
    #[serde(default)]
    pub job_template: JobTemplate,
    /// Succeeded jobs kept (default 3, at least `jobTemplate.priorFromStream`, since
    /// their outputs are the next build's priors); older ones and their report
    /// ConfigMaps are deleted.
    #[serde(default = "default_successful_limit")]
    #[schemars(range(min = 0, max = 8))]
    pub successful_jobs_history_limit: u32,
    /// Failed jobs kept (default 1); older ones and their report ConfigMaps are deleted.
    #[serde(default = "default_failed_limit")]
    #[schemars(range(min = 0, max = 8))]
    pub failed_jobs_history_limit: u32,
}

fn default_poll_interval() -> u32 {
    300
}

fn default_successful_limit() -> u32 {
    3
}

fn default_failed_limit() -> u32 {
    1
}

/// The source a stream watches: exactly one of `image`, `ostree` and `rootfs`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("[has(self.image), has(self.ostree), has(self.rootfs)].filter(x, x).size() == 1").message("set exactly one of source.image, source.ostree and source.rootfs"))]
#[serde(rename_all = "camelCase")]
pub struct StreamSource {
    /// A registry tag (`docker://host/repo:tag`). Its identity is the digest it
    /// resolves to; each job rechunks the image pinned to that digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSource>,
    /// A ref of an archive ostree repository served over HTTP(S). Its identity is the
    /// ref's commit checksum; each job pulls that commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ostree: Option<StreamOstree>,
    /// A tree on a volume that an earlier step rewrites. Its identity is the content
    /// of the generation file the producer writes last, read by a short probe pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<StreamRootfs>,
}

/// A tree on a volume of `jobTemplate.podTemplate.volumes`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamRootfs {
    /// The volume's name in `jobTemplate.podTemplate.volumes`.
    pub volume: String,
    /// The tree's path inside the volume (`.` for its root).
    pub path: String,
    /// The generation file, relative to the tree: at most 4 KiB, its first line is
    /// `{version}`. The producer writes it last, after the tree is complete.
    pub generation_file: String,
}

/// A ref of an ostree repository served over HTTP(S).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamOstree {
    /// The repository's `http://` or `https://` URL.
    pub url: String,
    /// The ref to watch, e.g. `fedora/x86_64/coreos/stable`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// The ConfigMap key holding the GPG public keys every commit must be signed
    /// with, when polled and when pulled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpg_keys: Option<ConfigMapKey>,
}

/// Where each build goes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StreamOutput {
    /// The repository, without a tag: `docker://registry.example.com/os/fedora`.
    pub repository: String,
    /// The tag template. `{version}` is the source's `org.opencontainers.image.version`
    /// label, `{date}` the build's UTC date (YYYYMMDD), `{shortDigest}` the first 12
    /// hex digits of the source digest and `{n}` the stream's build number. Characters
    /// a tag cannot hold become `-`.
    #[serde(default = "default_tag")]
    pub tag: String,
    /// `gzip` (every client reads it) or `zstd` (smaller, faster; needs a recent client).
    #[serde(default)]
    pub compression: Compression,
    /// A Secret of type kubernetes.io/dockerconfigjson used to push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_secret_ref: Option<SecretRef>,
}

fn default_tag() -> String {
    "{date}.{n}".into()
}

/// The job fields each build carries over; see `EncapsulationJob` for each one.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JobTemplate {
    /// How layers are planned.
    #[serde(default)]
    pub planner: PlannerSpec,
    /// Failed attempts retried (default: the controller's `--default-retries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: Option<u32>,
    /// Each job fails with DeadlineExceeded after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: Option<i64>,
    /// How many of the stream's newest succeeded builds are each job's priors
    /// (0 to 8, default 2), pinned by digest.
    #[serde(default = "default_prior_from_stream")]
    #[schemars(range(min = 0, max = 8))]
    pub prior_from_stream: u32,
    /// What each job may set of its worker pods, within the installation's job policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
}

impl Default for JobTemplate {
    fn default() -> Self {
        JobTemplate {
            planner: PlannerSpec::default(),
            retries: None,
            timeout_seconds: None,
            prior_from_stream: default_prior_from_stream(),
            pod_template: None,
        }
    }
}

fn default_prior_from_stream() -> u32 {
    2
}

/// What the controller observed of the source and did about it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EncapsulationStreamStatus {
    /// `Ready` (the source was read), `Building` (a job runs) and `Suspended`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The source identity of the newest job (an image digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_source_digest: Option<String>,
    /// When the newest job was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// When the source is read next (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_poll_time: Option<String>,
    /// Source reads that failed in a row; the next read backs off with each.
    #[serde(default)]
    pub poll_failures: u32,
    /// The `strata.dev/build-now` value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_now: Option<String>,
    /// Jobs created so far: the tag template's `{n}` of the next build, less one.
    #[serde(default)]
    pub builds: u32,
    /// The job running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// The newest builds first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub history: Vec<StreamBuild>,
}

/// One build of the stream.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StreamBuild {
    /// The job, in the stream's namespace (deleted once past the history limits).
    pub job: String,
    /// The source identity it encapsulated.
    pub source_digest: String,
    /// `Running`, or the reason the job ended with (`Succeeded`, `Failed`, …), or
    /// `JobLost` when the job went before it ended.
    pub result: String,
    /// When the job was created (RFC 3339).
    pub created: String,
    /// The `strata.dev/build-now` value this build answered, if it answered one; a
    /// pipeline that set it finds its job here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_now: Option<String>,
    /// When it ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// The pushed image, pinned by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// What clients of the previous build download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_bytes: Option<u64>,
    /// Share of the image's compressed bytes clients of the previous build already have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_percent: Option<f64>,
}
