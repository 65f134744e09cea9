//! Spec checks the controller makes before it creates anything. They repeat the CRD's
//! CEL rules (older apiservers drop those) and add what a schema cannot say: that a
//! rootfs volume exists, that image references parse.

use std::path::{Component, Path};

use crate::image::ImageRef;

use super::crd::{EncapsulationJobSpec, OstreeSource, Source};
use super::vocabulary::Reason;
use super::JobPolicy;

/// Why a spec cannot run: the condition reason and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The condition's reason.
    pub reason: Reason,
    /// What is wrong, naming the field.
    pub message: String,
}

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid {
        reason: Reason::InvalidSpec,
        message: message.into(),
    }
}

/// Checks a job's spec, and that it asks no more of its pod than `policy` allows.
pub fn validate(spec: &EncapsulationJobSpec, policy: &JobPolicy) -> Result<(), Invalid> {
    if spec.stream.trim().is_empty() {
        return Err(invalid("spec.stream must not be empty"));
    }
    plain_name("spec.stream", &spec.stream)?;
    within_policy(spec, policy)?;
    validate_source(spec)?;
    let output = parse_ref("spec.output.image", &spec.output.image)?;
    if !matches!(output, ImageRef::Docker(_)) {
        return Err(invalid(format!(
            "spec.output.image {:?}: must be a docker:// reference (anything else would \
             vanish with the worker pod)",
            spec.output.image
        )));
    }
    for (i, prior) in spec.prior_builds.iter().enumerate() {
        parse_ref(&format!("spec.priorBuilds[{i}]"), prior)?;
    }
    let max = spec.planner.max_layers.unwrap_or(2);
    if !(2..=crate::plan::REGISTRY_LAYER_LIMIT as u32).contains(&max) {
        return Err(invalid(format!(
            "spec.planner.maxLayers {max}: must be between 2 and {}",
            crate::plan::REGISTRY_LAYER_LIMIT
        )));
    }
    if let Some(t) = spec.timeout_seconds.filter(|t| *t < 1) {
        return Err(invalid(format!(
            "spec.timeoutSeconds {t}: must be at least 1"
        )));
    }
    Ok(())
}

/// A job's pod can only run where the installation prepared a worker account; a job
/// elsewhere would fail at pod creation with a message about a missing account.
pub fn worker_namespace(namespace: &str, policy: &JobPolicy) -> Result<(), Invalid> {
    let ready = &policy.worker_namespaces;
    if ready.is_empty() || ready.iter().any(|n| n == namespace) {
        return Ok(());
    }
    Err(invalid(format!(
        "namespace {namespace:?} has no Strata worker account: its workers run in {} \
         (the chart's workerNamespaces, the controller's --worker-namespace)",
        ready.join(", ")
    )))
}

/// Volumes, service account and worker image: each must be one the controller's
/// installer allowed, since a job's pod reads its source and pushes what it read.
fn within_policy(spec: &EncapsulationJobSpec, policy: &JobPolicy) -> Result<(), Invalid> {
    let template = spec.pod_template.as_ref();
    let volumes = template.and_then(|t| t.volumes.as_ref());
    for (i, v) in volumes.into_iter().flatten().enumerate() {
        if super::pod::RESERVED_VOLUMES.contains(&v.name.as_str()) {
            return Err(invalid(format!(
                "spec.podTemplate.volumes[{i}] {:?}: the name is the worker's own; choose \
                 another",
                v.name
            )));
        }
        let kind = volume_type(v);
        if !policy.volume_types.contains(&kind) {
            return Err(invalid(format!(
                "spec.podTemplate.volumes[{i}] {:?}: {kind} volumes are not allowed here \
                 (allowed: {}; the controller's --allow-volume-type)",
                v.name,
                policy.volume_types.join(", ")
            )));
        }
    }
    if let Some(sa) = template.and_then(|t| t.service_account_name.as_ref()) {
        if !policy.service_accounts.contains(sa) {
            return Err(invalid(format!(
                "spec.podTemplate.serviceAccountName {sa:?}: not allowed here (the \
                 controller's --allow-service-account)"
            )));
        }
    }
    if let Some(image) = &spec.worker_image {
        if !policy.worker_images.contains(image) {
            return Err(invalid(format!(
                "spec.workerImage {image:?}: not allowed here (the controller's \
                 --allow-worker-image)"
            )));
        }
    }
    placement_within_policy(template, policy)
}

/// Node selector and tolerations: a job's pod runs as root on whichever node they
/// pick, so only keys the installer allowed may steer it.
fn placement_within_policy(
    template: Option<&super::crd::PodTemplate>,
    policy: &JobPolicy,
) -> Result<(), Invalid> {
    let selector = template.and_then(|t| t.node_selector.as_ref());
    if let Some(key) = selector
        .into_iter()
        .flat_map(|s| s.keys())
        .find(|k| !policy.node_labels.contains(k))
    {
        return Err(invalid(format!(
            "spec.podTemplate.nodeSelector {key:?}: not allowed here (the controller's \
             --allow-node-label)"
        )));
    }
    let tolerations = template.and_then(|t| t.tolerations.as_ref());
    for (i, t) in tolerations.into_iter().flatten().enumerate() {
        let key = t.key.as_deref().unwrap_or_default();
        if key.is_empty() {
            return Err(invalid(format!(
                "spec.podTemplate.tolerations[{i}]: a toleration without a key tolerates \
                 every taint; name the taint's key"
            )));
        }
        if !policy.toleration_keys.iter().any(|k| k == key) {
            return Err(invalid(format!(
                "spec.podTemplate.tolerations[{i}] {key:?}: not allowed here (the \
                 controller's --allow-toleration)"
            )));
        }
    }
    Ok(())
}

/// A volume's source type as the API spells it (`hostPath`, `secret`, …).
fn volume_type(v: &k8s_openapi::api::core::v1::Volume) -> String {
    let json = serde_json::to_value(v).unwrap_or_default();
    json.as_object()
        .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        .unwrap_or_else(|| "unknown".into())
}

fn validate_source(spec: &EncapsulationJobSpec) -> Result<(), Invalid> {
    let Source {
        ostree,
        rootfs,
        image,
    } = &spec.source;
    let set = [ostree.is_some(), rootfs.is_some(), image.is_some()];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(invalid(
            "set exactly one of spec.source.ostree, spec.source.rootfs and spec.source.image",
        ));
    }
    if let Some(o) = ostree {
        validate_ostree(spec, o)?;
    }
    if let Some(r) = rootfs {
        volume_path(spec, "spec.source.rootfs", &r.volume, &r.path)?;
    }
    if let Some(i) = image {
        parse_ref("spec.source.image.ref", &i.reference)?;
    }
    Ok(())
}

/// A name passed on to tools: no leading `-` (which a tool could read as an option)
/// and no control characters.
fn plain_name(field: &str, value: &str) -> Result<(), Invalid> {
    if value.starts_with('-') || value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} {value:?}: must not start with '-' or hold control characters"
        )));
    }
    Ok(())
}

fn validate_ostree(spec: &EncapsulationJobSpec, o: &OstreeSource) -> Result<(), Invalid> {
    if o.reference.is_some() == o.commit.is_some() {
        return Err(invalid(
            "spec.source.ostree: set exactly one of ref and commit",
        ));
    }
    if let Some(r) = &o.reference {
        plain_name("spec.source.ostree.ref", r)?;
    }
    if let Some(c) = &o.commit {
        plain_name("spec.source.ostree.commit", c)?;
    }
    match &o.volume {
        Some(_) if o.gpg_keys.is_some() => Err(invalid(
            "spec.source.ostree.gpgKeys: only a repository pulled by URL is verified; \
             one on a volume is trusted as it is",
        )),
        Some(volume) => volume_path(spec, "spec.source.ostree", volume, &o.repo),
        None => {
            crate::source::ostree::pull::check_url(&o.repo).map_err(|problem| {
                invalid(format!(
                    "spec.source.ostree.repo: {problem} (without spec.source.ostree.volume, \
                     repo is the URL of a repository to pull)"
                ))
            })?;
            match &o.gpg_keys {
                Some(k) => plain_name("spec.source.ostree.gpgKeys.name", &k.name)
                    .and_then(|()| plain_name("spec.source.ostree.gpgKeys.key", &k.key)),
                None => Ok(()),
            }
        }
    }
}

/// `path` must name something inside `volume`, one of the pod template's volumes.
fn volume_path(
    spec: &EncapsulationJobSpec,
    field: &str,
    volume: &str,
    path: &str,
) -> Result<(), Invalid> {
    let volumes = spec
        .pod_template
        .as_ref()
        .and_then(|t| t.volumes.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !volumes.iter().any(|v| v.name == volume) {
        return Err(invalid(format!(
            "{field}.volume {volume:?}: no volume of that name in spec.podTemplate.volumes"
        )));
    }
    let p = Path::new(path);
    if p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(format!(
            "{field} path {path:?}: must be relative to the volume, without '..'"
        )));
    }
    Ok(())
}

fn parse_ref(field: &str, value: &str) -> Result<ImageRef, Invalid> {
    value
        .parse::<ImageRef>()
        .map_err(|e| invalid(format!("{field}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> JobPolicy {
        JobPolicy::default()
    }

    fn spec(source: serde_json::Value) -> EncapsulationJobSpec {
        serde_json::from_value(serde_json::json!({
            "source": source,
            "stream": "s",
            "output": {"image": "docker://r.example/os:1"},
            "podTemplate": {"volumes": [{"name": "trees", "emptyDir": {}}]}
        }))
        .unwrap()
    }

    #[test]
    fn good_specs_pass() {
        validate(
            &spec(serde_json::json!({"image": {"ref": "docker://r/os:0"}})),
            &policy(),
        )
        .unwrap();
        validate(
            &spec(serde_json::json!({"rootfs": {"volume": "trees", "path": "fcos/41"}})),
            &policy(),
        )
        .unwrap();
        validate(
            &spec(
                serde_json::json!({"ostree": {"repo": "repo", "ref": "os/41", "volume": "trees"}}),
            ),
            &policy(),
        )
        .unwrap();
        validate(
            &spec(
                serde_json::json!({"ostree": {"repo": "https://ostree.example/repo",
                "ref": "os/41", "gpgKeys": {"name": "os-keys", "key": "os.gpg"}}}),
            ),
            &policy(),
        )
        .unwrap();
    }

    #[test]
    fn bad_specs_name_the_field() {
        let cases = [
            (serde_json::json!({}), "exactly one"),
            (
                serde_json::json!({"image": {"ref": "docker://r/os:0"},
                                   "rootfs": {"volume": "trees", "path": "."}}),
                "exactly one",
            ),
            (
                serde_json::json!({"rootfs": {"volume": "nope", "path": "."}}),
                "spec.source.rootfs.volume",
            ),
            (
                serde_json::json!({"rootfs": {"volume": "trees", "path": "../etc"}}),
                "spec.source.rootfs path",
            ),
            (
                serde_json::json!({"image": {"ref": "ftp://x"}}),
                "spec.source.image.ref",
            ),
            (
                serde_json::json!({"ostree": {"repo": "repo", "volume": "trees"}}),
                "exactly one of ref and commit",
            ),
            (
                serde_json::json!({"ostree": {"repo": "file:///etc/repo", "ref": "os"}}),
                "spec.source.ostree.repo: \"file:///etc/repo\" is not an http",
            ),
            (
                serde_json::json!({"ostree": {"repo": "/srv/repo", "ref": "os"}}),
                "without spec.source.ostree.volume",
            ),
            (
                serde_json::json!({"ostree": {"repo": "https://u:p@x/repo", "ref": "os"}}),
                "credentials",
            ),
            (
                serde_json::json!({"ostree": {"repo": "repo", "ref": "os", "volume": "trees",
                                              "gpgKeys": {"name": "keys", "key": "k"}}}),
                "spec.source.ostree.gpgKeys",
            ),
            (
                serde_json::json!({"ostree": {"repo": "https://x/repo", "ref": "os",
                                              "gpgKeys": {"name": "keys", "key": "-x"}}}),
                "spec.source.ostree.gpgKeys.key",
            ),
            (
                serde_json::json!({"ostree": {"repo": "repo", "ref": "--help", "volume": "trees"}}),
                "spec.source.ostree.ref \"--help\": must not start with '-'",
            ),
        ];
        for (source, field) in cases {
            let err = validate(&spec(source.clone()), &policy()).unwrap_err();
            assert!(err.message.contains(field), "{source}: {}", err.message);
        }
        let mut s = spec(serde_json::json!({"image": {"ref": "docker://r/os:0"}}));
        s.output.image = "oci:/tmp/out".into();
        assert!(validate(&s, &policy())
            .unwrap_err()
            .message
            .contains("spec.output.image"));
    }

    /// A job creator must not reach what creating a pod of their own would need:
    /// the node's files, Secrets, another service account, or their own code.
    #[test]
    fn specs_asking_more_than_the_policy_are_refused_by_field() {
        let with = |template: serde_json::Value, extra: serde_json::Value| {
            let mut s = serde_json::json!({
                "source": {"image": {"ref": "docker://r/os:0"}},
                "stream": "s",
                "output": {"image": "docker://r.example/os:1"},
                "podTemplate": template,
            });
            for (k, v) in extra.as_object().unwrap() {
                s[k] = v.clone();
            }
            serde_json::from_value::<EncapsulationJobSpec>(s).unwrap()
        };
        let none = serde_json::json!({});
        let cases = [
            (
                with(
                    serde_json::json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
                    none.clone(),
                ),
                "spec.podTemplate.volumes[0] \"root\": hostPath volumes are not allowed",
            ),
            (
                with(
                    serde_json::json!({"volumes": [{"name": "c", "emptyDir": {}}, {"name": "db", "secret": {"secretName": "db-creds"}}]}),
                    none.clone(),
                ),
                "spec.podTemplate.volumes[1] \"db\": secret volumes",
            ),
            (
                with(
                    serde_json::json!({"volumes": [{"name": "t", "projected": {"sources": []}}]}),
                    none.clone(),
                ),
                "projected volumes",
            ),
            (
                with(
                    serde_json::json!({"serviceAccountName": "admin"}),
                    none.clone(),
                ),
                "spec.podTemplate.serviceAccountName \"admin\"",
            ),
            (
                with(
                    none.clone(),
                    serde_json::json!({"workerImage": "evil/strata:1"}),
                ),
                "spec.workerImage \"evil/strata:1\"",
            ),
            (
                with(
                    serde_json::json!({"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}),
                    none.clone(),
                ),
                "spec.podTemplate.nodeSelector \"node-role.kubernetes.io/control-plane\"",
            ),
            (
                with(
                    serde_json::json!({"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]}),
                    none.clone(),
                ),
                "spec.podTemplate.tolerations[0] \"node-role.kubernetes.io/control-plane\"",
            ),
        ];
        for (spec, field) in &cases {
            let err = validate(spec, &policy()).unwrap_err();
            assert_eq!(err.reason, Reason::InvalidSpec);
            assert!(err.message.contains(field), "{field}: {}", err.message);
        }
        // What the installer allows passes.
        let open = JobPolicy {
            volume_types: vec![
                "hostPath".into(),
                "secret".into(),
                "projected".into(),
                "emptyDir".into(),
            ],
            service_accounts: vec!["admin".into()],
            worker_images: vec!["evil/strata:1".into()],
            node_labels: vec!["node-role.kubernetes.io/control-plane".into()],
            toleration_keys: vec!["node-role.kubernetes.io/control-plane".into()],
            worker_namespaces: Vec::new(),
        };
        for (spec, _) in &cases {
            validate(spec, &open).unwrap();
        }
        // No policy lets a job's volume take the name of one of the worker's own.
        let clash = with(
            serde_json::json!({"volumes": [{"name": "work", "emptyDir": {}}]}),
            none.clone(),
        );
        let err = validate(&clash, &open).unwrap_err();
        assert!(
            err.message
                .contains("volumes[0] \"work\": the name is the worker's own"),
            "{}",
            err.message
        );
        // Nor tolerate every taint: a toleration with no key matches them all.
        let any_taint = with(
            serde_json::json!({"tolerations": [{"operator": "Exists"}]}),
            none.clone(),
        );
        let err = validate(&any_taint, &open).unwrap_err();
        assert!(
            err.message
                .contains("tolerations[0]: a toleration without a key"),
            "{}",
            err.message
        );
        // The defaults: a claim, an emptyDir, a ConfigMap, an ephemeral volume.
        let safe = with(
            serde_json::json!({"volumes": [
                {"name": "a", "persistentVolumeClaim": {"claimName": "trees"}},
                {"name": "b", "emptyDir": {}},
                {"name": "c", "configMap": {"name": "cm"}},
                {"name": "d", "ephemeral": {}}
            ]}),
            none,
        );
        validate(&safe, &policy()).unwrap();
    }

    #[test]
    fn jobs_run_only_where_workers_were_prepared() {
        let open = JobPolicy::default();
        worker_namespace("anywhere", &open).unwrap();
        let listed = JobPolicy {
            worker_namespaces: vec!["builds".into(), "ci".into()],
            ..JobPolicy::default()
        };
        worker_namespace("ci", &listed).unwrap();
        let err = worker_namespace("team-a", &listed).unwrap_err();
        assert_eq!(err.reason, Reason::InvalidSpec);
        assert!(
            err.message
                .contains("\"team-a\" has no Strata worker account")
                && err.message.contains("builds, ci"),
            "{}",
            err.message
        );
    }
}
