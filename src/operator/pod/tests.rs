//! Rendered worker pods against the Pod Security Standards' `baseline` and
//! `restricted` profiles (kubernetes.io/docs/concepts/security/pod-security-standards,
//! as of Kubernetes 1.33). The test apiserver is 1.20, older than the PodSecurity
//! admission plugin, so the profiles' rules for the fields a pod can carry are
//! checked here.

use super::*;
use k8s_openapi::api::core::v1::PodSpec;
use serde_json::json;

/// Capabilities `baseline` allows to be added.
const BASELINE_CAPS: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
/// Volume types `restricted` allows.
const RESTRICTED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];
/// Sysctls `baseline` allows.
const SAFE_SYSCTLS: [&str; 5] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
];

fn spec(pod: &Pod) -> &PodSpec {
    pod.spec.as_ref().unwrap()
}

fn containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let s = spec(pod);
    s.init_containers.iter().flatten().chain(&s.containers)
}

fn volume_types(pod: &Pod) -> Vec<String> {
    let volumes = serde_json::to_value(&spec(pod).volumes).unwrap();
    volumes
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|v| v.as_object().unwrap().keys().filter(|k| *k != "name"))
        .cloned()
        .collect()
}

/// What `pod` breaks of the `baseline` profile.
fn baseline(pod: &Pod) -> Vec<String> {
    let s = spec(pod);
    let mut out = Vec::new();
    for (set, what) in [
        (s.host_network, "hostNetwork"),
        (s.host_pid, "hostPID"),
        (s.host_ipc, "hostIPC"),
    ] {
        if set == Some(true) {
            out.push(what.to_string());
        }
    }
    if volume_types(pod).iter().any(|t| t == "hostPath") {
        out.push("hostPath volume".into());
    }
    let pod_sc = s.security_context.clone().unwrap_or_default();
    for sysctl in pod_sc.sysctls.iter().flatten() {
        if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
            out.push(format!("sysctl {}", sysctl.name));
        }
    }
    let unconfined =
        |p: &Option<SeccompProfile>| p.as_ref().is_some_and(|p| p.type_ == "Unconfined");
    if unconfined(&pod_sc.seccomp_profile) {
        out.push("pod seccomp Unconfined".into());
    }
    for c in containers(pod) {
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.privileged == Some(true) {
            out.push(format!("{}: privileged", c.name));
        }
        for cap in sc.capabilities.iter().flat_map(|k| k.add.iter().flatten()) {
            if !BASELINE_CAPS.contains(&cap.as_str()) {
                out.push(format!("{}: adds {cap}", c.name));
            }
        }
        if sc.proc_mount.as_deref().is_some_and(|m| m != "Default") {
            out.push(format!("{}: procMount", c.name));
        }
        if unconfined(&sc.seccomp_profile) {
            out.push(format!("{}: seccomp Unconfined", c.name));
        }
        if c.ports
            .iter()
            .flatten()
            .any(|p| p.host_port.unwrap_or(0) != 0)
        {
            out.push(format!("{}: hostPort", c.name));
        }
    }
    out
}

/// What `pod` breaks of the `restricted` profile (which includes `baseline`).
fn restricted(pod: &Pod) -> Vec<String> {
    let mut out = baseline(pod);
    for t in volume_types(pod) {
        if !RESTRICTED_VOLUMES.contains(&t.as_str()) {
            out.push(format!("{t} volume"));
        }
    }
    let pod_sc = spec(pod).security_context.clone().unwrap_or_default();
    let confined = |p: &Option<SeccompProfile>| {
        p.as_ref()
            .is_some_and(|p| p.type_ == "RuntimeDefault" || p.type_ == "Localhost")
    };
    for c in containers(pod) {
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.allow_privilege_escalation != Some(false) {
            out.push(format!("{}: allowPrivilegeEscalation", c.name));
        }
        if sc.run_as_non_root.or(pod_sc.run_as_non_root) != Some(true) {
            out.push(format!("{}: runAsNonRoot", c.name));
        }
        if sc.run_as_user.or(pod_sc.run_as_user) == Some(0) {
            out.push(format!("{}: runAsUser 0", c.name));
        }
        if !confined(&sc.seccomp_profile) && !confined(&pod_sc.seccomp_profile) {
            out.push(format!("{}: seccomp", c.name));
        }
        let caps = sc.capabilities.clone().unwrap_or_default();
        if !caps.drop.iter().flatten().any(|d| d == "ALL") {
            out.push(format!("{}: does not drop ALL", c.name));
        }
        for cap in caps
            .add
            .iter()
            .flatten()
            .filter(|c| *c != "NET_BIND_SERVICE")
        {
            out.push(format!("{}: adds {cap}", c.name));
        }
    }
    out
}

fn settings() -> Settings {
    Settings::for_tests(&[])
}

fn pod_for(spec: serde_json::Value) -> Pod {
    let mut full = json!({
        "stream": "s",
        "output": {"image": "docker://registry.example/os:1"},
    });
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    let job: EncapsulationJob = serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1", "kind": "EncapsulationJob",
        "metadata": {"name": "j", "namespace": "ns", "uid": "u"},
        "spec": full,
    }))
    .unwrap();
    let settings = settings();
    worker_pod(
        &job,
        &Attempt {
            number: 1,
            priors: &[],
            settings: &settings,
        },
    )
}

fn claim(name: &str) -> serde_json::Value {
    json!({"volumes": [{"name": name, "persistentVolumeClaim": {"claimName": name}}]})
}

#[test]
fn image_and_ostree_workers_meet_the_restricted_profile() {
    let image = pod_for(json!({"source": {"image": {"ref": "docker://registry.example/src:1"}}}));
    assert_eq!(restricted(&image), Vec::<String>::new());
    let ostree = pod_for(json!({
        "source": {"ostree": {"volume": "repo", "repo": "repo", "ref": "os/x86_64"}},
        "podTemplate": claim("repo"),
        "output": {"image": "docker://registry.example/os:1",
                   "pushSecretRef": {"name": "push"}},
    }));
    assert_eq!(restricted(&ostree), Vec::<String>::new());
}

#[test]
fn rootfs_workers_meet_the_baseline_profile_and_say_why_not_restricted() {
    let pod = pod_for(json!({
        "source": {"rootfs": {"volume": "trees", "path": "os"}},
        "podTemplate": claim("trees"),
    }));
    assert_eq!(baseline(&pod), Vec::<String>::new());
    // Root, to bypass the modes of another system's files: restricted forbids it.
    let broken = restricted(&pod);
    assert!(
        broken.contains(&"plan: runAsUser 0".to_string()),
        "{broken:?}"
    );
    assert!(
        broken.contains(&"plan: adds DAC_OVERRIDE".to_string()),
        "{broken:?}"
    );
    for c in containers(&pod) {
        let caps = c.security_context.as_ref().unwrap().capabilities.as_ref();
        assert_eq!(
            caps.unwrap().add.as_deref(),
            Some(&["DAC_OVERRIDE".to_string()][..])
        );
    }
}

#[test]
fn the_checks_catch_what_the_profiles_forbid() {
    // A hostPath source (allowed only with --allow-host-path, for test clusters).
    let mut pod = pod_for(json!({
        "source": {"rootfs": {"volume": "trees", "path": "os"}},
        "podTemplate": {"volumes": [{"name": "trees", "hostPath": {"path": "/srv"}}]},
    }));
    assert!(baseline(&pod).contains(&"hostPath volume".to_string()));
    let spec = pod.spec.as_mut().unwrap();
    spec.host_pid = Some(true);
    let sc = spec.containers[0].security_context.as_mut().unwrap();
    sc.capabilities.as_mut().unwrap().add = Some(vec!["SYS_ADMIN".into()]);
    sc.privileged = Some(true);
    let broken = baseline(&pod);
    for expected in ["hostPID", "build: adds SYS_ADMIN", "build: privileged"] {
        assert!(broken.contains(&expected.to_string()), "{broken:?}");
    }
}
