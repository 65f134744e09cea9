//! The stream's reconciler, a pure function: from the stream, the jobs it made, what a
//! poll of its source found and the time, it returns the new status, the job to create
//! and the jobs to delete. `controller` does the reading and writing around it.

use std::time::Duration;

use kube::{Resource, ResourceExt};
use sha2::Digest as _;

use super::crd::{EncapsulationStream, EncapsulationStreamStatus, StreamBuild, StreamRootfs};
use crate::image::reference::ImageRef;
use crate::operator::crd::{
    ConfigMapKey, EncapsulationJob, EncapsulationJobSpec, ImageSource, Mode, OstreeSource, Output,
    RootfsSource, Source,
};
use crate::operator::report::child_name;
use crate::operator::status::{condition, finished, succeeded, Setting};
use crate::operator::vocabulary::{ConditionType, StreamCondition, StreamReason, Truth};

/// Set to any new value to build the source as it is now, changed or not.
pub const BUILD_NOW_ANNOTATION: &str = "strata.dev/build-now";
/// Pins the source digest to build, instead of what the tag resolves to.
pub const SOURCE_DIGEST_ANNOTATION: &str = "strata.dev/source-digest";
/// The label on a stream's jobs, so the controller lists them without reading others.
pub const STREAM_UID_LABEL: &str = "strata.dev/stream-uid";
/// A history entry whose job has not ended.
pub const RUNNING: &str = "Running";
/// A history entry whose job went before it ended.
pub const JOB_LOST: &str = "JobLost";

/// The most builds status lists.
const HISTORY: usize = 16;
/// The wait after a first failed poll; it doubles with each further failure, up to
/// the poll interval.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);

/// What a poll of the source found: the build to encapsulate.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The image's manifest digest, or the ostree commit's checksum.
    pub digest: String,
    /// The source pinned to that digest, as the job reads it (an image), or as
    /// messages name it (a commit).
    pub reference: String,
    /// The image's `org.opencontainers.image.version` label, or the commit's version.
    pub version: Option<String>,
}

/// Everything `decide` looks at.
pub struct Observed<'a> {
    /// The stream, freshly read.
    pub stream: &'a EncapsulationStream,
    /// The jobs carrying the stream's label; only those it controls count.
    pub jobs: &'a [EncapsulationJob],
    /// What this reconcile's poll found, when one was due ([`poll_due`]).
    pub poll: Option<Result<Identity, String>>,
    /// Now.
    pub now: jiff::Timestamp,
}

/// What the controller does next.
#[derive(Debug)]
pub struct Outcome {
    /// The stream's new status, without the build in `create`.
    pub status: EncapsulationStreamStatus,
    /// A job to create; once it exists, [`record`] folds it into status.
    pub create: Option<NewBuild>,
    /// Jobs past the history limits, to delete with their report ConfigMaps.
    pub delete: Vec<String>,
    /// When to look again, unless something changes first.
    pub requeue: Option<Duration>,
}

/// A job for a new source identity.
#[derive(Debug, Clone)]
pub struct NewBuild {
    /// The job to create.
    pub job: EncapsulationJob,
    /// Its history entry.
    pub entry: StreamBuild,
    /// The `build-now` value it answers, if one was pending.
    pub build_now: Option<String>,
}

/// Whether this reconcile reads the source: when the poll interval (or a failure's
/// backoff) has passed, the spec changed, or `build-now` asks and no job runs.
pub fn poll_due(stream: &EncapsulationStream, now: jiff::Timestamp) -> bool {
    let status = stream.status.clone().unwrap_or_default();
    if stream.spec.suspend || check(stream).is_err() {
        return false;
    }
    if status.observed_generation != stream.metadata.generation {
        return true;
    }
    // A trigger is answered at once, unless the last read failed: then the backoff
    // applies, or a pinned digest that does not exist would be read in a loop.
    let triggered = build_now_pending(stream, &status) || pin_pending(stream, &status);
    if triggered && status.active.is_none() && status.poll_failures == 0 {
        return true;
    }
    status
        .next_poll_time
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_none_or(|t| t <= now)
}

/// What a poll reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A registry reference: the watched tag, or the pinned digest.
    Image(String),
    /// A tree on a volume, read by a probe pod.
    Rootfs(StreamRootfs),
    /// A ref, or the pinned commit, of the ostree repository at `url`.
    Ostree {
        /// The repository's URL.
        url: String,
        /// The ref or commit checksum.
        rev: String,
        /// The keys its commits must be signed with.
        gpg_keys: Option<ConfigMapKey>,
    },
}

/// What the poll reads: the watched tag or ref, or the pinned digest or commit.
pub fn poll_target(stream: &EncapsulationStream) -> Result<Target, String> {
    let pin = stream.annotations().get(SOURCE_DIGEST_ANNOTATION);
    let is_hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let source = &stream.spec.source;
    match (&source.image, &source.ostree, &source.rootfs) {
        (Some(image), None, None) => {
            let watched = &image.reference;
            let Some(digest) = pin else {
                return Ok(Target::Image(watched.clone()));
            };
            if !digest.strip_prefix("sha256:").is_some_and(is_hex64) {
                return Err(format!(
                    "annotation {SOURCE_DIGEST_ANNOTATION} is '{digest}', not sha256: and 64 hex digits"
                ));
            }
            let parsed: ImageRef = watched.parse()?;
            parsed
                .pinned(digest)
                .map(|r| Target::Image(r.to_string()))
                .ok_or_else(|| {
                    format!("spec.source.image.ref '{watched}' is not a docker:// reference")
                })
        }
        (None, Some(o), None) => {
            if let Some(commit) = pin.filter(|c| !is_hex64(c)) {
                return Err(format!(
                    "annotation {SOURCE_DIGEST_ANNOTATION} is '{commit}', not a commit checksum (64 hex digits)"
                ));
            }
            Ok(Target::Ostree {
                url: o.url.clone(),
                rev: pin.unwrap_or(&o.reference).clone(),
                gpg_keys: o.gpg_keys.clone(),
            })
        }
        (None, None, Some(tree)) => match pin {
            Some(_) => Err(format!(
                "annotation {SOURCE_DIGEST_ANNOTATION}: a tree cannot be pinned, its generation file names it"
            )),
            None => Ok(Target::Rootfs(tree.clone())),
        },
        _ => Err(
            "set exactly one of spec.source.image, spec.source.ostree and spec.source.rootfs"
                .into(),
        ),
    }
}

/// The source, as status messages name it.
pub(crate) fn described(stream: &EncapsulationStream) -> String {
    let source = &stream.spec.source;
    match (&source.image, &source.ostree, &source.rootfs) {
        (Some(image), _, _) => image.reference.clone(),
        (None, Some(o), _) => format!("{} {}", o.url, o.reference),
        (None, None, Some(r)) => format!("{}/{} on volume {}", r.path, r.generation_file, r.volume),
        (None, None, None) => "the source".into(),
    }
}

/// The rules the schema cannot say: one well-formed source, a repository without a
/// tag, a tag template with known placeholders, a well-formed pin.
pub fn check(stream: &EncapsulationStream) -> Result<(), String> {
    let spec = &stream.spec;
    if let Some(image) = &spec.source.image {
        if !matches!(image.reference.parse::<ImageRef>(), Ok(ImageRef::Docker(_))) {
            return Err(format!(
                "spec.source.image.ref '{}' must be a registry reference, docker://HOST/REPO:TAG",
                image.reference
            ));
        }
    }
    if let Some(o) = &spec.source.ostree {
        crate::source::ostree::pull::check_url(&o.url)
            .map_err(|e| format!("spec.source.ostree.url: {e}"))?;
        let r = &o.reference;
        if r.is_empty() || r.starts_with('-') || r.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!(
                "spec.source.ostree.ref {r:?}: must be a ref, not empty, not starting with '-'"
            ));
        }
    }
    if let Some(tree) = &spec.source.rootfs {
        check_tree(spec, tree)?;
    }
    let repository = &spec.output.repository;
    let bare = match repository.parse::<ImageRef>() {
        Ok(ImageRef::Docker(r)) => {
            !r.contains('@') && !r.rsplit('/').next().unwrap_or("").contains(':')
        }
        _ => false,
    };
    if !bare || !repository.contains('/') {
        return Err(format!(
            "spec.output.repository '{repository}' must be docker://HOST/REPO, without a tag or digest"
        ));
    }
    let example = Identity {
        digest: format!("sha256:{}", "0".repeat(64)),
        reference: described(stream),
        version: Some("1".into()),
    };
    render_tag(&spec.output.tag, &example, 1, jiff::Timestamp::UNIX_EPOCH)
        .map_err(|e| format!("spec.output.tag: {e}"))?;
    poll_target(stream).map(|_| ())
}

/// A tree's volume must be one the job template declares, and its paths plain and
/// relative: the probe and the job read them beneath the volume.
fn check_tree(
    spec: &super::crd::EncapsulationStreamSpec,
    tree: &StreamRootfs,
) -> Result<(), String> {
    let declared = spec
        .job_template
        .pod_template
        .as_ref()
        .and_then(|t| t.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.name == tree.volume));
    if !declared {
        return Err(format!(
            "spec.source.rootfs.volume {:?}: no volume of that name in spec.jobTemplate.podTemplate.volumes",
            tree.volume
        ));
    }
    for (field, value) in [
        ("path", &tree.path),
        ("generationFile", &tree.generation_file),
    ] {
        let p = std::path::Path::new(value);
        let plain = p.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
        if value.is_empty() || !plain {
            return Err(format!(
                "spec.source.rootfs.{field} {value:?}: must be relative to the volume, without '..'"
            ));
        }
    }
    Ok(())
}

/// Decides what the stream's status is and what happens next.
pub fn decide(o: &Observed) -> Outcome {
    let spec = &o.stream.spec;
    let now = o.now.to_string();
    let generation = o.stream.metadata.generation;
    let mut status = o.stream.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    fold_jobs(&mut status, o, &now);
    let set = |status: &mut EncapsulationStreamStatus,
               c: StreamCondition,
               truth,
               reason: StreamReason,
               message: String| {
        Setting {
            truth,
            reason: reason.as_str(),
            now: &now,
            generation,
        }
        .apply(&mut status.conditions, c.as_str(), message)
    };
    let (truth, reason, message) = match spec.suspend {
        true => (
            Truth::True,
            StreamReason::SuspendedBySpec,
            "spec.suspend is set: no new jobs start",
        ),
        false => (
            Truth::False,
            StreamReason::Active,
            "new source builds start jobs",
        ),
    };
    set(
        &mut status,
        StreamCondition::Suspended,
        truth,
        reason,
        message.into(),
    );
    let mut create = None;
    match (check(o.stream), &o.poll) {
        (Err(problem), _) => set(
            &mut status,
            StreamCondition::Ready,
            Truth::False,
            StreamReason::InvalidSpec,
            problem,
        ),
        (Ok(()), None) => {}
        (Ok(()), Some(Err(problem))) => {
            status.poll_failures += 1;
            let wait = backoff(status.poll_failures, spec.poll_interval_seconds);
            status.next_poll_time = Some(later(o.now, wait));
            let message = format!("{problem} (read again in {}s)", wait.as_secs());
            set(
                &mut status,
                StreamCondition::Ready,
                Truth::False,
                StreamReason::SourceUnavailable,
                message,
            );
        }
        (Ok(()), Some(Ok(identity))) => {
            status.poll_failures = 0;
            let interval = Duration::from_secs(spec.poll_interval_seconds.into());
            status.next_poll_time = Some(later(o.now, interval));
            match wanted(o, &status, identity).then(|| new_build(o, &status, identity)) {
                Some(Err(problem)) => set(
                    &mut status,
                    StreamCondition::Ready,
                    Truth::False,
                    StreamReason::InvalidSpec,
                    problem,
                ),
                built => {
                    create = built.and_then(Result::ok);
                    let message = format!("{} is {}", described(o.stream), identity.digest);
                    set(
                        &mut status,
                        StreamCondition::Ready,
                        Truth::True,
                        StreamReason::SourceRead,
                        message,
                    );
                }
            }
        }
    }
    set_building(&mut status, &now, generation);
    let delete = prune(o, &status);
    let requeue = (!spec.suspend)
        .then(|| until_next_poll(&status, o.now))
        .flatten();
    Outcome {
        status,
        create,
        delete,
        requeue,
    }
}

/// Folds a created job into status: its history entry, the source identity it
/// answers, and the build count.
pub fn record(status: &mut EncapsulationStreamStatus, build: &NewBuild, now: jiff::Timestamp) {
    status.history.insert(0, build.entry.clone());
    status.history.truncate(HISTORY);
    status.last_source_digest = Some(build.entry.source_digest.clone());
    status.last_schedule_time = Some(build.entry.created.clone());
    status.builds += 1;
    status.active = Some(build.entry.job.clone());
    if build.build_now.is_some() {
        status.build_now = build.build_now.clone();
    }
    set_building(status, &now.to_string(), status.observed_generation);
}

/// Records that the API server refused the stream's job; the next poll tries again.
pub fn refused(status: &mut EncapsulationStreamStatus, job: &str, why: &str, now: jiff::Timestamp) {
    let setting = Setting {
        truth: Truth::False,
        reason: StreamReason::JobRefused.as_str(),
        now: &now.to_string(),
        generation: status.observed_generation,
    };
    let message = format!("the API server refused job {job}: {why}");
    setting.apply(
        &mut status.conditions,
        StreamCondition::Building.as_str(),
        message,
    );
}

fn set_building(status: &mut EncapsulationStreamStatus, now: &str, generation: Option<i64>) {
    let (truth, reason, message) = match &status.active {
        Some(job) => (
            Truth::True,
            StreamReason::JobRunning,
            format!("job {job} runs"),
        ),
        None => (Truth::False, StreamReason::Idle, "no job runs".to_string()),
    };
    Setting {
        truth,
        reason: reason.as_str(),
        now,
        generation,
    }
    .apply(
        &mut status.conditions,
        StreamCondition::Building.as_str(),
        message,
    );
}

/// Whether `job` is one the stream made: only those it controls, so a job someone
/// else labelled cannot enter the stream's history.
pub fn controlled_by(job: &EncapsulationJob, stream: &EncapsulationStream) -> bool {
    let uid = stream.uid().unwrap_or_default();
    job.owner_references().iter().any(|r| {
        r.controller == Some(true) && r.uid == uid && r.kind == EncapsulationStream::kind(&())
    })
}

/// Brings running history entries up to date with their jobs. When the running job
/// ends, the next poll is now: a source that moved meanwhile need not wait an interval.
fn fold_jobs(status: &mut EncapsulationStreamStatus, o: &Observed, now: &str) {
    for entry in status.history.iter_mut().filter(|e| e.result == RUNNING) {
        let job = o
            .jobs
            .iter()
            .find(|j| j.name_any() == entry.job && controlled_by(j, o.stream));
        match job {
            None => {
                entry.result = JOB_LOST.into();
                entry.finished = Some(now.into());
            }
            Some(job) => fold_job(entry, job, now),
        }
    }
    let was_active = status.active.take();
    status.active = status
        .history
        .iter()
        .find(|e| e.result == RUNNING)
        .map(|e| e.job.clone());
    if was_active.is_some() && status.active.is_none() {
        status.next_poll_time = Some(now.into());
    }
}

fn fold_job(entry: &mut StreamBuild, job: &EncapsulationJob, now: &str) {
    let Some(s) = job.status.as_ref().filter(|s| finished(s)) else {
        return;
    };
    let ended = condition(s, ConditionType::Succeeded).map(|c| c.reason.clone());
    entry.result = ended.unwrap_or_else(|| "Failed".into());
    entry.finished = Some(s.completion_time.clone().unwrap_or_else(|| now.into()));
    if !succeeded(s) {
        return;
    }
    entry.output = s
        .output
        .as_ref()
        .map(|out| match out.image.parse::<ImageRef>() {
            Ok(r) => r.pinned(&out.digest).unwrap_or(r).to_string(),
            Err(_) => out.image.clone(),
        });
    if let Some(previous) = s.diff.first() {
        entry.download_bytes = Some(previous.download_bytes);
        entry.reused_percent = Some(previous.reused_percent);
    }
}

fn build_now_pending(stream: &EncapsulationStream, status: &EncapsulationStreamStatus) -> bool {
    stream
        .annotations()
        .get(BUILD_NOW_ANNOTATION)
        .is_some_and(|v| status.build_now.as_ref() != Some(v))
}

fn pin_pending(stream: &EncapsulationStream, status: &EncapsulationStreamStatus) -> bool {
    stream
        .annotations()
        .get(SOURCE_DIGEST_ANNOTATION)
        .is_some_and(|d| status.last_source_digest.as_ref() != Some(d))
}

/// A new source identity, or `build-now`, while no job runs and nothing suspends.
fn wanted(o: &Observed, status: &EncapsulationStreamStatus, identity: &Identity) -> bool {
    let new_source = status.last_source_digest.as_ref() != Some(&identity.digest);
    let asked = build_now_pending(o.stream, status);
    (new_source || asked) && !o.stream.spec.suspend && status.active.is_none()
}

/// The job for `identity`. Its name comes from the stream, the identity and the build
/// number, so a controller that restarts before recording it makes the same job again
/// (and finds it there) rather than a second one.
fn new_build(
    o: &Observed,
    status: &EncapsulationStreamStatus,
    identity: &Identity,
) -> Result<NewBuild, String> {
    let stream = o.stream;
    let spec = &stream.spec;
    let n = status.builds + 1;
    let tag = render_tag(&spec.output.tag, identity, n, o.now)
        .map_err(|e| format!("spec.output.tag: {e}"))?;
    let hash =
        crate::bytes::sha256_label(&sha2::Sha256::digest(format!("{}\n{n}", identity.digest)));
    let name = child_name(
        &stream.name_any(),
        &hash["sha256:".len().."sha256:".len() + 12],
    );
    let job_spec = job_spec(stream, identity, &tag);
    let mut job = EncapsulationJob::new(&name, job_spec);
    job.metadata.namespace = stream.namespace();
    job.metadata.labels = Some(
        [
            (
                STREAM_UID_LABEL.to_string(),
                stream.uid().unwrap_or_default(),
            ),
            (
                "app.kubernetes.io/managed-by".to_string(),
                "strata".to_string(),
            ),
        ]
        .into(),
    );
    job.metadata.owner_references = stream.controller_owner_ref(&()).map(|r| vec![r]);
    let build_now = build_now_pending(stream, status)
        .then(|| stream.annotations().get(BUILD_NOW_ANNOTATION).cloned())
        .flatten();
    let entry = StreamBuild {
        job: name,
        source_digest: identity.digest.clone(),
        result: RUNNING.into(),
        created: o.now.to_string(),
        build_now: build_now.clone(),
        ..Default::default()
    };
    Ok(NewBuild {
        job,
        entry,
        build_now,
    })
}

/// The spec of the job that builds `identity`, pushed as `tag`.
fn job_spec(stream: &EncapsulationStream, identity: &Identity, tag: &str) -> EncapsulationJobSpec {
    let spec = &stream.spec;
    let t = &spec.job_template;
    EncapsulationJobSpec {
        source: job_source(spec, identity),
        stream: stream.name_any(),
        prior_builds: Vec::new(),
        prior_from_stream: t.prior_from_stream,
        output: Output {
            image: format!("{}:{tag}", spec.output.repository),
            compression: spec.output.compression,
            push_secret_ref: spec.output.push_secret_ref.clone(),
        },
        planner: t.planner.clone(),
        mode: Mode::Build,
        cancel: false,
        retries: t.retries,
        timeout_seconds: t.timeout_seconds,
        worker_image: None,
        pod_template: t.pod_template.clone(),
    }
}

/// The spec the stream's jobs will have, as far as the source's identity does not
/// change it: what the job policy is checked against before a probe pod mounts the
/// template's volume.
pub fn template_spec(stream: &EncapsulationStream) -> EncapsulationJobSpec {
    let placeholder = Identity {
        digest: format!("sha256:{}", "0".repeat(64)),
        reference: described(stream),
        version: None,
    };
    job_spec(stream, &placeholder, "probe")
}

/// The job's source: the image pinned to its digest, or the repository's commit.
fn job_source(spec: &super::crd::EncapsulationStreamSpec, identity: &Identity) -> Source {
    if let Some(tree) = &spec.source.rootfs {
        return Source {
            rootfs: Some(RootfsSource {
                volume: tree.volume.clone(),
                path: tree.path.clone(),
            }),
            ..Default::default()
        };
    }
    match &spec.source.ostree {
        Some(o) => Source {
            ostree: Some(OstreeSource {
                repo: o.url.clone(),
                reference: None,
                commit: Some(identity.digest.clone()),
                volume: None,
                gpg_keys: o.gpg_keys.clone(),
            }),
            ..Default::default()
        },
        None => Source {
            image: Some(ImageSource {
                reference: identity.reference.clone(),
            }),
            ..Default::default()
        },
    }
}

/// Fills the tag template, then makes it a valid tag: `[A-Za-z0-9_][A-Za-z0-9_.-]*`,
/// at most 128 characters.
pub fn render_tag(
    template: &str,
    identity: &Identity,
    n: u32,
    now: jiff::Timestamp,
) -> Result<String, String> {
    let mut filled = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        filled.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or("a '{' without its '}'")? + open;
        filled.push_str(&placeholder(&rest[open + 1..close], identity, n, now)?);
        rest = &rest[close + 1..];
    }
    filled.push_str(rest);
    let mut tag: String = filled
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    if tag.starts_with(['.', '-']) {
        tag.replace_range(..1, "_");
    }
    match tag.is_empty() {
        true => Err(format!("'{template}' gives an empty tag")),
        false => Ok(tag),
    }
}

fn placeholder(
    key: &str,
    identity: &Identity,
    n: u32,
    now: jiff::Timestamp,
) -> Result<String, String> {
    Ok(match key {
        "version" => identity.version.clone().ok_or_else(|| {
            format!("{{version}} is the source's org.opencontainers.image.version label, and {} has none", identity.reference)
        })?,
        "date" => now.strftime("%Y%m%d").to_string(),
        "shortDigest" => identity.digest.rsplit(':').next().unwrap_or("").chars().take(12).collect(),
        "n" => n.to_string(),
        other => {
            return Err(format!(
                "unknown placeholder {{{other}}}: use {{version}}, {{date}}, {{shortDigest}} or {{n}}"
            ))
        }
    })
}

/// Finished jobs past the history limits (newest kept), which the stream controls.
/// Succeeded ones are kept at least as many as the next build's priors.
fn prune(o: &Observed, status: &EncapsulationStreamStatus) -> Vec<String> {
    let spec = &o.stream.spec;
    let keep_succeeded = spec
        .successful_jobs_history_limit
        .max(spec.job_template.prior_from_stream);
    let (mut succeeded, mut failed) = (0, 0);
    let mut delete = Vec::new();
    for entry in status.history.iter().filter(|e| e.result != RUNNING) {
        let past = match entry.result.as_str() {
            "Succeeded" => {
                succeeded += 1;
                succeeded > keep_succeeded
            }
            _ => {
                failed += 1;
                failed > spec.failed_jobs_history_limit
            }
        };
        let exists = o
            .jobs
            .iter()
            .any(|j| j.name_any() == entry.job && controlled_by(j, o.stream));
        if past && exists {
            delete.push(entry.job.clone());
        }
    }
    delete
}

fn backoff(failures: u32, interval_seconds: u32) -> Duration {
    let doubled = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(Duration::from_secs(interval_seconds.into()).max(FIRST_BACKOFF))
}

fn later(now: jiff::Timestamp, after: Duration) -> String {
    let span = jiff::SignedDuration::try_from(after).unwrap_or(jiff::SignedDuration::MAX);
    now.saturating_add(span)
        .map_or_else(|_| now.to_string(), |t| t.to_string())
}

fn until_next_poll(status: &EncapsulationStreamStatus, now: jiff::Timestamp) -> Option<Duration> {
    let next: jiff::Timestamp = status.next_poll_time.as_deref()?.parse().ok()?;
    let wait = now.duration_until(next);
    Some(
        Duration::try_from(wait)
            .unwrap_or_default()
            .max(Duration::from_secs(1)),
    )
}
