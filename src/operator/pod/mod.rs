//! The worker pod of one attempt: a `plan` container, then (unless PlanOnly) a `build`
//! container that lays the image out by that plan. Arguments are an argv list, never a
//! shell line, so nothing a user writes in a spec is ever interpreted by a shell.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, KeyToPath, Pod,
    PodSecurityContext, PodSpec, SeccompProfile, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use super::crd::{ConfigMapKey, EncapsulationJob, Mode, Source};
use super::report::{self, Step};
use super::Settings;
use crate::layers;
use crate::plan::RepackPolicy;

/// Where the plan container leaves the plan for the build container.
pub const WORK_DIR: &str = "/work";
/// Where a container leaves its termination message.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Where the job's volumes are mounted.
pub const SOURCES_DIR: &str = "/sources";
const PUSH_AUTH_DIR: &str = "/var/run/strata/push-auth";
const OSTREE_KEYS_DIR: &str = "/var/run/strata/ostree-gpg";
/// Where a repository named by URL is pulled to, in the pod's work volume: the plan
/// step pulls it, and the build step reads the same commit there.
const PULLED_REPO: &str = "ostree-repo";
/// Volume names the worker pod uses itself; a job's own volumes may not take them.
pub const RESERVED_VOLUMES: [&str; 3] = ["work", "push-auth", "ostree-gpg"];
/// An unprivileged user for steps that need no special file access.
const NOBODY: i64 = 65532;

/// Everything an attempt's pod depends on besides the job.
pub struct Attempt<'a> {
    /// Which attempt, from 1.
    pub number: u32,
    /// Prior images, newest first, as resolved when the attempt started.
    pub priors: &'a [String],
    /// How the installation runs workers.
    pub settings: &'a Settings,
}

/// The pod for `attempt` of `job`.
pub fn worker_pod(job: &EncapsulationJob, attempt: &Attempt) -> Pod {
    let spec = &job.spec;
    let plan = container(job, attempt, Step::Plan);
    let (init, main) = match spec.mode {
        Mode::PlanOnly => (None, vec![plan]),
        Mode::Build => (Some(vec![plan]), vec![container(job, attempt, Step::Build)]),
    };
    let template = spec.pod_template.clone().unwrap_or_default();
    let mut volumes = vec![Volume {
        name: "work".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    volumes.extend(template.volumes.unwrap_or_default());
    if let Some(secret) = &spec.output.push_secret_ref {
        volumes.push(Volume {
            name: "push-auth".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                items: Some(vec![KeyToPath {
                    key: ".dockerconfigjson".into(),
                    path: "auth.json".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(keys) = gpg_keys(&spec.source) {
        volumes.push(Volume {
            name: "ostree-gpg".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: keys.name.clone(),
                items: Some(vec![KeyToPath {
                    key: keys.key.clone(),
                    path: "keys.gpg".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(report::pod_name(&job.name_any(), attempt.number)),
            namespace: job.namespace(),
            labels: Some(labels(job, attempt.number)),
            owner_references: Some(vec![owner(job)]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            init_containers: init,
            containers: main,
            volumes: Some(volumes),
            restart_policy: Some("Never".into()),
            service_account_name: Some(
                template
                    .service_account_name
                    .unwrap_or_else(|| attempt.settings.service_account.clone()),
            ),
            node_selector: template.node_selector,
            tolerations: template.tolerations,
            security_context: Some(pod_security()),
            ..Default::default()
        }),
        status: None,
    }
}

/// Labels on the pod: who owns it and which attempt it is.
pub fn labels(job: &EncapsulationJob, attempt: u32) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            report::MANAGED_BY.to_string(),
        ),
        (report::JOB_UID_LABEL.into(), job.uid().unwrap_or_default()),
        (report::ATTEMPT_LABEL.into(), attempt.to_string()),
    ]);
    let name = job.name_any();
    if name.len() <= 63 {
        labels.insert(report::JOB_NAME_LABEL.into(), name);
    }
    labels
}

/// The owner reference that makes the job own (and garbage-collect) a child.
pub fn owner(job: &EncapsulationJob) -> OwnerReference {
    report::job_owner(&job.name_any(), &job.uid().unwrap_or_default())
}

fn container(job: &EncapsulationJob, attempt: &Attempt, step: Step) -> Container {
    let spec = &job.spec;
    let mut mounts = vec![VolumeMount {
        name: "work".into(),
        mount_path: WORK_DIR.into(),
        ..Default::default()
    }];
    if let Some(volume) = source_volume(&spec.source) {
        mounts.push(VolumeMount {
            name: volume.to_string(),
            mount_path: format!("{SOURCES_DIR}/{volume}"),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if spec.output.push_secret_ref.is_some() {
        mounts.push(VolumeMount {
            name: "push-auth".into(),
            mount_path: PUSH_AUTH_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if gpg_keys(&spec.source).is_some() {
        mounts.push(VolumeMount {
            name: "ostree-gpg".into(),
            mount_path: OSTREE_KEYS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let settings = attempt.settings;
    let mut command = settings.worker_command.clone();
    command.extend(args(job, attempt, step));
    Container {
        name: step.name().into(),
        image: Some(
            spec.worker_image
                .clone()
                .unwrap_or_else(|| settings.worker_image.clone()),
        ),
        command: Some(command),
        env: Some(vec![EnvVar {
            name: "TMPDIR".into(),
            value: Some(WORK_DIR.into()),
            ..Default::default()
        }]),
        volume_mounts: Some(mounts),
        resources: spec.pod_template.as_ref().and_then(|t| t.resources.clone()),
        termination_message_path: Some(TERMINATION_LOG.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(security(spec.source.rootfs.is_some())),
        ..Default::default()
    }
}

/// The GPG keys a pulled ostree commit is verified with, if the job names them.
fn gpg_keys(source: &Source) -> Option<&ConfigMapKey> {
    source.ostree.as_ref().and_then(|o| o.gpg_keys.as_ref())
}

/// The pod template volume the source lives on, if any.
fn source_volume(source: &Source) -> Option<&str> {
    match (&source.rootfs, &source.ostree) {
        (Some(r), _) => Some(&r.volume),
        (None, Some(o)) => o.volume.as_deref(),
        (None, None) => None,
    }
}

/// The pod-level security of every pod Strata runs: the runtime's default seccomp
/// profile.
pub(crate) fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Reading someone else's root filesystem needs to bypass file modes, and nothing
/// more; every other step runs as an unprivileged user. The bypass is `DAC_OVERRIDE`,
/// which the Pod Security `baseline` profile allows (`DAC_READ_SEARCH` it does not):
/// the source is mounted read-only, so it grants reading there and nothing else.
pub(crate) fn security(reads_rootfs: bool) -> SecurityContext {
    let (user, add) = if reads_rootfs {
        (0, Some(vec!["DAC_OVERRIDE".to_string()]))
    } else {
        (NOBODY, None)
    };
    SecurityContext {
        run_as_user: Some(user),
        run_as_non_root: Some(!reads_rootfs),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add,
        }),
        ..Default::default()
    }
}

/// `--name=value`: a value is never read as a flag, whatever it starts with.
fn flag(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

/// How the worker's command line spells `value`: the name its parser accepts, so the
/// two cannot drift apart.
fn value_name(value: impl clap::ValueEnum) -> String {
    value
        .to_possible_value()
        .expect("the worker's value enums skip no variant")
        .get_name()
        .to_string()
}

fn args(job: &EncapsulationJob, attempt: &Attempt, step: Step) -> Vec<String> {
    let spec = &job.spec;
    let mut a: Vec<String> = vec![
        "worker".into(),
        step.name().into(),
        flag("namespace", job.namespace().unwrap_or_default()),
        flag("job", job.name_any()),
        flag("job-uid", job.uid().unwrap_or_default()),
        flag("attempt", attempt.number),
        flag("plan-file", format!("{WORK_DIR}/plan.json")),
        // Explicit, though it is the default: the path is the container's contract.
        flag("termination-log", TERMINATION_LOG),
        flag("stream", &spec.stream),
        flag("max-layers", attempt.settings.max_layers(spec)),
        flag(
            "repack",
            value_name(RepackPolicy::from(spec.planner.repack)),
        ),
    ];
    let Source {
        rootfs,
        image,
        ostree,
    } = &spec.source;
    if let Some(r) = rootfs {
        a.push(flag(
            "rootfs",
            format!("{SOURCES_DIR}/{}/{}", r.volume, r.path),
        ));
    }
    if let Some(o) = ostree {
        let repo = match &o.volume {
            Some(volume) => format!("{SOURCES_DIR}/{volume}/{}", o.repo),
            None => {
                a.push(flag("ostree-url", &o.repo));
                format!("{WORK_DIR}/{PULLED_REPO}")
            }
        };
        if o.gpg_keys.is_some() {
            a.push(flag(
                "ostree-gpg-keys",
                format!("{OSTREE_KEYS_DIR}/keys.gpg"),
            ));
        }
        a.push(flag("ostree-repo", repo));
        let rev = o.reference.clone().or(o.commit.clone()).unwrap_or_default();
        a.push(flag("ref", rev));
    }
    if let Some(i) = image {
        a.push(flag("from-image", &i.reference));
    }
    for p in attempt.priors {
        a.push(flag("prior", p));
    }
    if step == Step::Build {
        a.push(flag("output", &spec.output.image));
        a.push(flag(
            "compression",
            value_name(layers::Compression::from(spec.output.compression)),
        ));
    }
    if spec.output.push_secret_ref.is_some() {
        a.push(flag("authfile", format!("{PUSH_AUTH_DIR}/auth.json")));
    }
    // Only the registries the installer named go unverified; the push to any other
    // keeps its TLS checks.
    let refs = attempt
        .priors
        .iter()
        .chain([&spec.output.image])
        .chain(image.as_ref().map(|i| &i.reference));
    let insecure: std::collections::BTreeSet<&str> = refs
        .filter(|r| attempt.settings.is_insecure(r))
        .filter_map(|r| crate::image::remote::registry_host(r))
        .collect();
    a.extend(insecure.into_iter().map(|h| flag("insecure-registry", h)));
    a
}

#[cfg(test)]
mod tests;
