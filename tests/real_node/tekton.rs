//! The Tekton Tasks on the real node. Tekton is not packaged for Debian, so each
//! TaskRun becomes the pod Tekton would create for it (`common::tekton::task_pod`):
//! the step's image, securityContext, env and args; the script from a ConfigMap at
//! `/tekton/scripts`; results in an emptyDir at `/tekton/results`; workspaces as
//! volumes under `/workspace`. What differs from Tekton: its entrypoint binary and
//! script-placing init container are not there, and a second container copies the
//! results into the termination message, as the entrypoint would.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use serde_json::json;
use strata::operator::crd::EncapsulationJob;

use crate::common::tekton::{build_params, pod_results, s, task_pod, Param, RESULTS_CONTAINER};
use crate::common::{self, registry};
use crate::kube_common::cluster;
use crate::kube_common::node_env::{Node, JOBS};
use crate::kube_common::operator_env::{expect, trees_volume, TREES_CLAIM};

/// How a task pod ended.
struct Ended {
    /// The step's exit code.
    code: i32,
    /// The step's log.
    log: String,
    results: BTreeMap<String, String>,
}

/// `strata-build`, which runs as root with only DAC_OVERRIDE, reads a tree with a
/// root-only file, pushes, and reports reuse against the image it pushed first.
pub async fn strata_build_task(node: &Node) {
    let tree = node.trees.join("v1-secret");
    common::dpkg_tree(&tree, "1");
    let secret = tree.join("etc/shadow");
    std::fs::write(&secret, "root:*:20000:0:99999:7:::\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let image = |tag: &str| format!("{}/os/tekton-build:{tag}", node.registry);
    let params = |tree: &str, tag: &str, priors: Vec<String>| {
        let mut params = build_params(image(tag), tree, priors);
        params.push(("STRATA_IMAGE", s(strata_image(node))));
        params
    };
    let workspaces = [("source", trees_volume())];
    let first = run(
        node,
        "strata-build.yaml",
        "build-1",
        "default",
        params("v1-secret", "1", vec![]),
        &workspaces,
    )
    .await;
    assert_eq!(first.code, 0, "{}", first.log);
    assert_eq!(first.results["IMAGE_URL"], image("1"));
    assert_eq!(first.results["LAYERS_REUSED"], "0");
    let pushed = registry::inspect(&format!("docker://{}", image("1")));
    assert_eq!(pushed["Digest"], first.results["IMAGE_DIGEST"].as_str());

    let second = run(
        node,
        "strata-build.yaml",
        "build-2",
        "default",
        params("v2", "2", vec![image("1")]),
        &workspaces,
    )
    .await;
    assert_eq!(second.code, 0, "{}", second.log);
    let reused: u64 = second.results["LAYERS_REUSED"].parse().unwrap();
    assert!(
        reused > 0,
        "the unchanged layers are reused: {:?}",
        second.results
    );

    let outside = params("../../etc", "x", vec![]);
    let refused = run(
        node,
        "strata-build.yaml",
        "build-outside",
        "default",
        outside,
        &workspaces,
    )
    .await;
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .log
            .contains("must stay inside the source workspace"),
        "{}",
        refused.log
    );
}

/// `strata-encapsulation-job`, run as a ServiceAccount bound to the chart's job-editor
/// role: kubectl in Strata's image creates the job through the `kubernetes` Service,
/// the operator on the node runs it, and the step copies its digest into results.
pub async fn encapsulation_job_task(node: &Node) {
    let account = "tekton-runner";
    cluster::apply_all(&node.admin, &runner_account(account)).await;
    let output = format!("docker://{}/os/tekton-job:1", node.registry);
    let params = vec![
        ("STREAM", s("node-tekton")),
        ("OUTPUT_IMAGE", s(output.as_str())),
        ("ROOTFS_CLAIM", s(TREES_CLAIM)),
        ("ROOTFS_PATH", s("v1")),
        ("MAX_LAYERS", s("4")),
        ("KUBECTL_IMAGE", s(strata_image(node))),
    ];
    let ended = run(
        node,
        "strata-encapsulation-job.yaml",
        "job-task",
        account,
        params,
        &[],
    )
    .await;
    assert_eq!(ended.code, 0, "{}", ended.log);
    let name = &ended.results["JOB_NAME"];
    let job = Api::<EncapsulationJob>::namespaced(node.admin.clone(), JOBS)
        .get(name)
        .await
        .unwrap();
    expect(&job, "Succeeded", "True", Some("Succeeded"));
    let pushed = job.status.unwrap().output.unwrap();
    assert_eq!(ended.results["IMAGE_DIGEST"], pushed.digest);
    // Without the transport, as Tekton Chains reads it.
    assert_eq!(
        ended.results["IMAGE_URL"],
        output.trim_start_matches("docker://")
    );
}

fn strata_image(node: &Node) -> String {
    format!("{}/strata:test", node.registry)
}

/// A ServiceAccount in the jobs' namespace bound to the chart's job-editor role, as a
/// pipeline's would be.
fn runner_account(name: &str) -> Vec<serde_json::Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": JOBS}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": JOBS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                "name": "strata-job-editor"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": JOBS}]}),
    ]
}

/// Creates the TaskRun's pod in the jobs' namespace and waits for it to end.
async fn run(
    node: &Node,
    file: &str,
    name: &str,
    account: &str,
    params: Vec<(&str, Param)>,
    workspaces: &[(&str, serde_json::Value)],
) -> Ended {
    let task = task_pod(file, name, JOBS, account, params, workspaces);
    cluster::apply_all(&node.admin, &[task.script, task.pod]).await;
    let pods: Api<Pod> = Api::namespaced(node.admin.clone(), JOBS);
    let pod = ended(&pods, name).await;
    let status = pod.status.unwrap_or_default();
    let step = status.init_container_statuses.unwrap_or_default();
    let step = step.first().expect("the step's status");
    let code = step.state.as_ref().and_then(|s| s.terminated.as_ref());
    let code = code.expect("the step ended").exit_code;
    let log = pods
        .logs(
            name,
            &LogParams {
                container: Some(step.name.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| format!("(no log: {e})"));
    let results = status
        .container_statuses
        .unwrap_or_default()
        .iter()
        .filter(|c| c.name == RESULTS_CONTAINER)
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
        .map(|m| pod_results(&m))
        .next()
        .unwrap_or_default();
    Ended { code, log, results }
}

async fn ended(pods: &Api<Pod>, name: &str) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let pod = pods.get(name).await.unwrap();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return pod;
        }
        assert!(
            Instant::now() < deadline,
            "task pod {name} did not end: {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
