//! The operator on a real node: kubelet on containerd and runc, the scheduler, the
//! controller-manager (ServiceAccount tokens, Deployments) and kube-proxy (the
//! `kubernetes` Service), all built from the same Debian source as the apiserver
//! (`scripts/control-plane.sh start DIR --node`).
//!
//! Nothing here is a stand-in: Strata's own image is built by Strata
//! (`scripts/strata-image.sh`) and pushed to a real registry on the test bridge,
//! containerd pulls it, the chart is rendered by Helm's engine and applied as it is,
//! its two controller replicas elect a leader as real pods, and worker pods run with
//! exactly the securityContext the controller gives them. A capability or user that
//! does not work on a real node fails here.

mod tekton;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use serde_json::json;

use crate::common::{self, registry};
use crate::kube_common::cluster::NODE_ADDRESS;
use crate::kube_common::node_env::{
    self, absent_image, controller_pods_said, create, finished, jobs, lease_holder, pods_of,
    replicas_ready, rootfs_spec, Node, RELEASE_NAMESPACE,
};
use crate::kube_common::operator_env::{cancel_once_started, expect, started};

pub async fn the_operator_on_a_real_node() {
    let Some(node) = node_env::start().await else {
        return;
    };
    leader_elected_between_real_pods(&node).await;
    tokio::join!(
        rootfs_jobs_with_history(&node),
        plan_only(&node),
        failure_is_retried_then_reported(&node),
        oom_killed_then_retried(&node),
        an_image_that_cannot_be_pulled(&node),
        cancellation(&node),
        deadline(&node),
        ostree_sources(&node),
        tekton::strata_build_task(&node),
        tekton::encapsulation_job_task(&node),
    );
    an_image_source_as_the_unprivileged_worker(&node).await;
    the_leader_pod_deleted_mid_job(&node).await;
    the_kubelet_restarted_mid_job(&node).await;
    controller_logs_are_clean(&node).await;
}

/// Builds Strata's image, installs the chart with it, and waits for both replicas.
/// One replica holds the Lease, and it is one of the chart's pods.
async fn leader_elected_between_real_pods(node: &Node) {
    let pods: Api<Pod> = Api::namespaced(node.admin.clone(), RELEASE_NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(60);
    let holder = loop {
        if let Some(holder) = lease_holder(node).await {
            break holder;
        }
        assert!(Instant::now() < deadline, "no replica took the lease");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let names: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert!(
        names.contains(&holder),
        "{holder} leads, not one of {names:?}"
    );
}

/// A source that hangs, on the bridge so that pods reach it.
fn hanging_source() -> serde_json::Value {
    let reference = format!(
        "docker://{NODE_ADDRESS}:{}/never:1",
        common::black_hole(NODE_ADDRESS)
    );
    json!({"image": {"ref": reference}})
}

/// Two builds of a stream from a claim; the second reads the first back as its prior.
async fn rootfs_jobs_with_history(node: &Node) {
    create(node, "rootfs-1", rootfs_spec(node, "v1", "1")).await;
    create(node, "rootfs-2", rootfs_spec(node, "v2", "2")).await;
    let one = finished(node, "rootfs-1").await;
    expect(&one, "Succeeded", "True", Some("Succeeded"));
    let output = one.status.as_ref().unwrap().output.clone().unwrap();
    assert_eq!(
        registry::inspect(&output.image)["Digest"],
        output.digest.as_str()
    );
    let two = finished(node, "rootfs-2").await;
    expect(&two, "Succeeded", "True", Some("Succeeded"));
    let diff = two.status.as_ref().unwrap().diff.first().cloned();
    let diff = diff.expect("a diff against the stream's previous output");
    assert!(
        diff.reused_layers > 0,
        "the stable layer is reused: {diff:?}"
    );
}

/// Rechunking an image needs no privilege at all: the worker runs as the image's
/// unprivileged user with every capability dropped, and still succeeds.
async fn an_image_source_as_the_unprivileged_worker(node: &Node) {
    let source = format!("docker://{}/os/node:1", node.registry);
    create(
        node,
        "from-image",
        json!({
            "source": {"image": {"ref": source}},
            "stream": "node-image",
            "output": {"image": format!("docker://{}/os/node:rechunked", node.registry)},
            "planner": {"maxLayers": 4},
        }),
    )
    .await;
    let job = finished(node, "from-image").await;
    expect(&job, "Succeeded", "True", Some("Succeeded"));
    let pod = pods_of(node, &job).await.remove(0);
    let security = pod.spec.unwrap().containers[0]
        .security_context
        .clone()
        .unwrap();
    assert_ne!(security.run_as_user, Some(0), "{security:?}");
    assert_eq!(security.run_as_non_root, Some(true), "{security:?}");
    let caps = security.capabilities.unwrap_or_default();
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
    assert!(caps.add.unwrap_or_default().is_empty());
}

async fn plan_only(node: &Node) {
    let mut spec = rootfs_spec(node, "v1", "unused");
    spec["mode"] = json!("PlanOnly");
    spec["stream"] = json!("node-plan");
    create(node, "plan-only", spec).await;
    let job = finished(node, "plan-only").await;
    expect(&job, "Succeeded", "True", None);
    let status = job.status.unwrap();
    assert!(status.plan.is_some_and(|p| p.layer_count >= 2));
    assert!(status.output.is_none(), "PlanOnly pushes nothing");
}

/// The worker's own words reach status through the kubelet's termination message.
async fn failure_is_retried_then_reported(node: &Node) {
    let mut spec = rootfs_spec(node, "no-such-tree", "unused");
    spec["stream"] = json!("node-fail");
    spec["retries"] = json!(1);
    create(node, "fail", spec).await;
    let done = finished(node, "fail").await;
    expect(&done, "Succeeded", "False", Some("Failed"));
    let status = done.status.unwrap();
    assert_eq!(status.attempts, 2);
    let failure = status.failure.expect("failure details");
    assert_eq!(failure.reason, "WorkerFailed");
    assert!(failure.message.contains("no-such-tree"), "{failure:?}");
}

/// A memory limit the worker cannot live in: it plans this tree within 8 MiB, but
/// writing layers takes more. The kernel kills the build step, the attempt says so
/// (before, the log tail the kubelet falls back to stood in as the worker's error),
/// and the retry meets the same end.
async fn oom_killed_then_retried(node: &Node) {
    let mut spec = rootfs_spec(node, "big", "unused");
    spec["stream"] = json!("node-oom");
    spec["retries"] = json!(1);
    spec["podTemplate"]["resources"] = json!({"limits": {"memory": "8Mi"}});
    create(node, "oom", spec).await;
    let done = finished(node, "oom").await;
    expect(&done, "Succeeded", "False", Some("Failed"));
    let status = done.status.unwrap();
    assert_eq!(status.attempts, 2);
    let failure = status.failure.expect("failure details");
    assert!(failure.message.contains("OOMKilled"), "{failure:?}");
}

/// An image the node cannot pull fails the attempt as `PodPending`, naming why,
/// instead of leaving the job Running.
async fn an_image_that_cannot_be_pulled(node: &Node) {
    let mut spec = rootfs_spec(node, "v1", "unused");
    spec["stream"] = json!("node-pull");
    spec["retries"] = json!(0);
    spec["workerImage"] = json!(absent_image(&node.registry));
    create(node, "no-pull", spec).await;
    let done = finished(node, "no-pull").await;
    expect(&done, "Succeeded", "False", Some("Failed"));
    let failure = done.status.unwrap().failure.expect("failure details");
    assert_eq!(failure.reason, "PodPending", "{failure:?}");
    assert!(
        failure.message.contains("ErrImagePull") || failure.message.contains("ImagePullBackOff"),
        "{failure:?}"
    );
}

/// Cancelling deletes the running pod, and the kubelet really stops it.
async fn cancellation(node: &Node) {
    let mut spec = rootfs_spec(node, "v1", "unused");
    spec["stream"] = json!("node-cancel");
    spec["source"] = hanging_source();
    spec.as_object_mut().unwrap().remove("podTemplate");
    create(node, "cancel", spec).await;
    cancel_once_started(&jobs(node), "cancel", Duration::from_secs(120)).await;
    let job = jobs(node).get("cancel").await.unwrap();
    let done = finished(node, "cancel").await;
    expect(&done, "Succeeded", "False", Some("Cancelled"));
    // A pod deleted while the kubelet is still creating its containers waits for
    // the kubelet's next sync of it (1.20's pod workers), up to a minute or more on
    // a busy node.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let pods = pods_of(node, &job).await;
        if pods.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the running pod was not removed: {}",
            serde_json::to_string_pretty(&pods.iter().map(|p| &p.status).collect::<Vec<_>>())
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn deadline(node: &Node) {
    let mut spec = rootfs_spec(node, "v1", "unused");
    spec["stream"] = json!("node-slow");
    spec["source"] = hanging_source();
    spec["timeoutSeconds"] = json!(5);
    spec.as_object_mut().unwrap().remove("podTemplate");
    create(node, "slow", spec).await;
    let done = finished(node, "slow").await;
    expect(&done, "Succeeded", "False", Some("DeadlineExceeded"));
}

/// The leader's pod deleted while a job runs: the standby takes the lease, the job
/// ends, and no attempt is repeated.
async fn the_leader_pod_deleted_mid_job(node: &Node) {
    create(node, "failover", rootfs_spec(node, "v2", "failover")).await;
    let job = started(&jobs(node), "failover", Duration::from_secs(120)).await;
    let leader = lease_holder(node).await.expect("a leader");
    Api::<Pod>::namespaced(node.admin.clone(), RELEASE_NAMESPACE)
        .delete(&leader, &Default::default())
        .await
        .unwrap();
    let done = finished(node, "failover").await;
    expect(&done, "Succeeded", "True", Some("Succeeded"));
    assert_eq!(done.status.as_ref().unwrap().attempts, 1);
    assert_eq!(pods_of(node, &job).await.len(), 1, "one pod, not two");
    let now = lease_holder(node).await;
    assert_ne!(now.as_deref(), Some(leader.as_str()), "the standby leads");
    replicas_ready(node, 2, Duration::from_secs(120)).await;
}

/// The kubelet restarted while a worker runs: the pod's containers live on in
/// containerd, the new kubelet adopts them, and the job ends in its first attempt.
async fn the_kubelet_restarted_mid_job(node: &Node) {
    let mut spec = rootfs_spec(node, "big", "restarted");
    spec["stream"] = json!("node-kubelet");
    create(node, "kubelet-restart", spec).await;
    let job = started(&jobs(node), "kubelet-restart", Duration::from_secs(120)).await;
    node.cp.restart_kubelet();
    let done = finished(node, "kubelet-restart").await;
    expect(&done, "Succeeded", "True", Some("Succeeded"));
    assert_eq!(done.status.as_ref().unwrap().attempts, 1);
    assert_eq!(pods_of(node, &job).await.len(), 1);
}

/// An ostree commit from a repository on the claim, and the same repository served
/// over HTTP on the bridge, which the worker pulls from itself.
async fn ostree_sources(node: &Node) {
    if !node.trees.join("repo").exists() {
        return;
    }
    let url = format!(
        "http://{NODE_ADDRESS}:{}",
        common::http::serve_on(&node.trees.join("repo"), NODE_ADDRESS)
    );
    for (name, source) in [
        (
            "ostree-claim",
            json!({"repo": "repo", "ref": "os/v1", "volume": "trees"}),
        ),
        ("ostree-url", json!({"repo": url, "ref": "os/v1"})),
    ] {
        let mut spec = rootfs_spec(node, "v1", name);
        spec["stream"] = json!(name);
        spec["source"] = json!({ "ostree": source });
        create(node, name, spec).await;
    }
    for name in ["ostree-claim", "ostree-url"] {
        let done = finished(node, name).await;
        expect(&done, "Succeeded", "True", Some("Succeeded"));
        let output = done.status.unwrap().output.unwrap();
        registry::inspect(&output.image);
    }
}

/// Both replicas ran against the chart's RBAC without a refusal.
async fn controller_logs_are_clean(node: &Node) {
    let said = controller_pods_said(node).await;
    assert!(said.contains("leading"), "{said}");
    assert!(
        !said.contains("Forbidden") && !said.contains("forbidden"),
        "the chart's RBAC rules must cover everything the controller does:\n{said}"
    );
}
