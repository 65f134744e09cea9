//! A single-node cluster with the operator installed, for the real-node tests and
//! the controller benchmark: the control plane with a real node
//! (`scripts/control-plane.sh start DIR --node`), a registry on the test bridge holding
//! Strata's own image (built by `scripts/strata-image.sh`), the chart rendered by
//! Helm's engine and applied, and trees behind a PersistentVolume and claim.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use strata::operator::crd::EncapsulationJob;

use crate::common::{self, registry};
use crate::kube_common::cluster::{self, ControlPlane, NODE_ADDRESS};
use crate::kube_common::operator_env::{self, create_job, job_pods, trees_claims, trees_volume};

pub const RELEASE_NAMESPACE: &str = "strata-system";
/// The namespace of the jobs and task pods.
pub const JOBS: &str = "node-jobs";

/// A cluster with a node, the registry its pods reach, and the chart installed.
pub struct Node {
    pub cp: ControlPlane,
    pub admin: Client,
    /// `HOST:PORT` of the registry, on the test bridge.
    pub registry: String,
    /// The trees' directory, behind the claim `trees`.
    pub trees: std::path::PathBuf,
    _registry: registry::Registry,
    _tmp: tempfile::TempDir,
}

/// Starts the cluster and installs the operator, or `None` (outside CI) when a real
/// part is missing.
pub async fn start() -> Option<Node> {
    if !common::real_parts(&["docker-registry", "skopeo", "debootstrap"]) {
        return None;
    }
    let minbase = common::cached_tree("bookworm-minbase")?;
    let cp = cluster::start_with_node()?;
    Some(install(cp, &minbase).await)
}

async fn install(cp: ControlPlane, minbase: &Path) -> Node {
    let admin = cp.client().await;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("registry")).unwrap();
    let reg = registry::start_registry_on(&tmp.path().join("registry"), NODE_ADDRESS);
    let host = format!("{NODE_ADDRESS}:{}", reg.port);
    cp.allow_registry(&host);
    build_strata_image(&host);
    let values = json!({
        "image": {"repository": format!("{host}/strata"), "tag": "test"},
        "insecureRegistries": [host],
        "watchNamespaces": [JOBS],
        "backoffBaseSeconds": 0.5,
        "pendingTimeoutSeconds": 60,
        "jobPolicy": {"workerImages": [absent_image(&host)]},
    });
    let objects = cluster::render_chart("strata", RELEASE_NAMESPACE, &values);
    cluster::apply_all(&admin, &objects).await;
    cluster::wait_crd_established(&admin).await;
    let trees = tmp.path().join("trees");
    common::dpkg_tree(&trees.join("v1"), "1");
    common::dpkg_tree(&trees.join("v2"), "2");
    // A tree the worker needs some memory for: the minbase's /usr (no device files).
    std::fs::create_dir_all(trees.join("big")).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(minbase.join("usr"))
        .arg(trees.join("big"))
        .status()
        .unwrap();
    assert!(copied.success(), "copying the minbase's /usr");
    if common::real_parts(&["ostree"]) {
        let repo = format!("--repo={}", trees.join("repo").display());
        common::ostree(&["init", &repo, "--mode=archive"]);
        let tree = format!("--tree=dir={}", trees.join("v1").display());
        common::ostree(&["commit", &repo, "--branch=os/v1", "-s", "v1", &tree]);
    }
    cluster::apply_all(&admin, &trees_claims(&trees, &[JOBS])).await;
    let node = Node {
        cp,
        admin,
        registry: host,
        trees,
        _registry: reg,
        _tmp: tmp,
    };
    replicas_ready(&node, 2, Duration::from_secs(240)).await;
    node
}

/// A worker image a job may name that the registry does not hold.
pub fn absent_image(host: &str) -> String {
    format!("{host}/strata:absent")
}

/// `scripts/strata-image.sh`, pushing to the registry on the bridge.
fn build_strata_image(host: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/strata-image.sh"))
        .arg(format!("docker://{host}/strata:test"))
        .arg(env!("CARGO_BIN_EXE_strata"))
        .args(["--", "--insecure-registry", host])
        .current_dir(root)
        .output()
        .unwrap();
    common::succeeded(out, "scripts/strata-image.sh");
}

pub async fn replicas_ready(node: &Node, want: i32, within: Duration) {
    let deployments: Api<Deployment> = Api::namespaced(node.admin.clone(), RELEASE_NAMESPACE);
    let deadline = Instant::now() + within;
    loop {
        let d = deployments.get("strata-controller").await.unwrap();
        let ready = d.status.as_ref().and_then(|s| s.ready_replicas);
        if ready == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{want} controller replicas were not ready within {within:?}: {:?}\n{}",
            d.status,
            controller_pods_said(node).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every controller pod's log, read through the apiserver from the kubelet.
pub async fn controller_pods_said(node: &Node) -> String {
    let pods: Api<Pod> = Api::namespaced(node.admin.clone(), RELEASE_NAMESPACE);
    let mut said = String::new();
    for pod in pods.list(&ListParams::default()).await.unwrap() {
        let log = pods
            .logs(&pod.name_any(), &LogParams::default())
            .await
            .unwrap_or_else(|e| format!("(no log: {e})"));
        said += &format!("== {}\n{log}\n", pod.name_any());
    }
    said
}

pub fn jobs(node: &Node) -> Api<EncapsulationJob> {
    Api::namespaced(node.admin.clone(), JOBS)
}

pub async fn create(node: &Node, name: &str, spec: serde_json::Value) {
    create_job(&jobs(node), name, spec).await;
}

pub async fn pods_of(node: &Node, job: &EncapsulationJob) -> Vec<Pod> {
    job_pods(&node.admin, JOBS, job).await
}

/// The replica holding the controller's Lease, if one does.
pub async fn lease_holder(node: &Node) -> Option<String> {
    Api::<Lease>::namespaced(node.admin.clone(), RELEASE_NAMESPACE)
        .get_opt("strata-controller")
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}

pub async fn finished(node: &Node, name: &str) -> EncapsulationJob {
    operator_env::finished(&jobs(node), name, Duration::from_secs(180)).await
}

pub fn rootfs_spec(node: &Node, tree: &str, tag: &str) -> serde_json::Value {
    json!({
        "source": {"rootfs": {"volume": "trees", "path": tree}},
        "stream": "node-rootfs",
        "output": {"image": format!("docker://{}/os/node:{tag}", node.registry)},
        "planner": {"maxLayers": 4},
        "podTemplate": {"volumes": [trees_volume()]},
    })
}

/// A container's memory as its cgroup (v1) counts it.
pub struct Memory {
    /// `memory.max_usage_in_bytes`: the peak, page cache included.
    pub peak: u64,
    /// `rss` in `memory.stat`: anonymous memory now.
    pub rss: u64,
}

/// The memory of the controller replica holding the lease, read from its container's
/// cgroup on the node.
pub async fn leader_memory(node: &Node) -> Memory {
    let leader = lease_holder(node).await.expect("a leader");
    let pod = Api::<Pod>::namespaced(node.admin.clone(), RELEASE_NAMESPACE)
        .get(&leader)
        .await
        .unwrap();
    let uid = pod.metadata.uid.clone().unwrap();
    let statuses = pod
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default();
    let id = statuses
        .iter()
        .find_map(|c| c.container_id.as_deref()?.strip_prefix("containerd://"))
        .expect("the controller's container id")
        .to_string();
    let dir = container_cgroup(&uid, &id);
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
    let rss = read("memory.stat")
        .lines()
        .find_map(|l| l.strip_prefix("rss "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let peak = read("memory.max_usage_in_bytes").trim().parse().unwrap();
    Memory { peak, rss }
}

/// The cgroupfs driver's directory of a container: `kubepods/[QOS/]pod<UID>/<ID>`.
fn container_cgroup(pod_uid: &str, id: &str) -> std::path::PathBuf {
    let kubepods = Path::new("/sys/fs/cgroup/memory/kubepods");
    let pod = format!("pod{pod_uid}");
    [
        kubepods.to_path_buf(),
        kubepods.join("burstable"),
        kubepods.join("besteffort"),
    ]
    .into_iter()
    .map(|qos| qos.join(&pod).join(id))
    .find(|dir| dir.exists())
    .unwrap_or_else(|| panic!("no memory cgroup for container {id} of pod {pod_uid}"))
}
