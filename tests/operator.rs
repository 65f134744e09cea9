//! The operator end to end, against real parts: kube-apiserver 1.20 with etcd, the
//! `strata controller` binary running as a user bound to exactly the Helm chart's
//! RBAC rules, worker pods run by the test node agent (`kube_common::agent`) as the
//! chart's worker user, and a real registry on loopback.
//!
//! One control plane serves every scenario; they run side by side in their own
//! namespaces and streams, which also shows that different streams run in parallel.
//!
//! `the_operator_on_a_real_node` runs the operator as a cluster does, with no agent
//! (`real_node`). The scenarios that stay on the agent do so because they drive the
//! controller process itself (kill it mid-job, start a standby, count its exits,
//! sample its memory, serve its probes on loopback) or fake a worker's end (a pod
//! deleted or refused at will), which a kubelet does not let a test do.

mod common;
mod kube_common;
mod real_node;
mod stream_scenarios;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use kube_common::operator_env::{cancel_once_started, expect, setup, time, trees_volume, Env};
use serde_json::json;
use strata::operator::crd::EncapsulationJob;

/// The two clusters take turns: each keeps both cores busy, and timing-sensitive
/// scenarios (deadlines, restarts) should not run against a starved machine.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_on_a_real_node() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    real_node::the_operator_on_a_real_node().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_runs_jobs_end_to_end() {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let Some(env) = setup().await else { return };
    tokio::join!(
        happy_path_and_stream_history(&env),
        plan_only(&env),
        worker_rights(&env),
        failure_is_retried_then_reported(&env),
        cancellation(&env),
        deadline(&env),
        invalid_spec(&env),
        refused_pod(&env),
        deleted_worker(&env),
        ostree_source(&env),
        stream_scenarios::a_watched_tag(&env),
        stream_scenarios::a_tag_that_appears_later(&env),
        stream_scenarios::an_ostree_ref(&env),
        stream_scenarios::a_tree_on_a_claim(&env),
    );
    tekton_job_task(&env).await;
    restart_safety(&env).await;
    squatted_pod(&env).await;
    stream_scenarios::a_restart_between_create_and_record(&env).await;
    let standby_log = env.scratch().join("standby.log");
    let standby = env.start_standby(common::free_port("127.0.0.1"), &standby_log);
    load(&env).await;
    let standby_said = std::fs::read_to_string(&standby_log).unwrap();
    assert!(
        standby_said.contains("another replica leads; waiting")
            && !standby_said.contains("leading"),
        "the second replica stands by: {standby_said}"
    );
    assert_eq!(
        standby.exits(),
        0,
        "the standby never exited: {standby_said}"
    );
    standby.kill();
    observability(&env).await;
    let log = env.controller_log();
    assert_eq!(env.controller_exits(), 0, "the controller exited:\n{log}");
    assert!(
        !log.contains("Forbidden") && !log.contains("forbidden"),
        "the chart's RBAC rules must cover everything the controller does:\n{log}"
    );
    // Written to a file, as `kubectl logs` reads it: no colour codes.
    assert!(!log.contains('\x1b'), "escape codes in a log file:\n{log}");
    // The standby logs JSON: every line an object.
    for line in standby_said.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}

async fn happy_path_and_stream_history(env: &Env) {
    let first = env.create("e2e", "happy-1", "happy", "v1", json!({})).await;
    let second = env.create("e2e", "happy-2", "happy", "v2", json!({})).await;
    let one = env
        .finished("e2e", "happy-1", Duration::from_secs(120))
        .await;
    expect(&one, "Succeeded", "True", Some("Succeeded"));
    expect(&one, "Planned", "True", None);
    expect(&one, "Built", "True", None);
    let status = one.status.clone().unwrap();
    let plan = status.plan.as_ref().expect("a plan in status");
    assert!(plan.layer_count >= 2);
    assert!(
        plan.layers.iter().all(|l| l.digest.is_some()),
        "built layers have digests"
    );
    let output = status.output.as_ref().expect("an output in status");
    let pushed = common::registry::inspect(&output.image);
    assert_eq!(pushed["Digest"], output.digest.as_str());
    let report_ref = status.report_ref.as_ref().expect("a report reference");
    assert_eq!(report_ref.name, "happy-1-report");

    let two = env
        .finished("e2e", "happy-2", Duration::from_secs(120))
        .await;
    expect(&two, "Succeeded", "True", None);
    let s2 = two.status.clone().unwrap();
    assert!(
        time(&s2.start_time) >= time(&status.completion_time),
        "same-stream jobs run one at a time"
    );
    let diff = s2
        .diff
        .first()
        .expect("a diff against the stream's previous output");
    assert!(
        diff.image.ends_with(&format!("@{}", output.digest)),
        "{}",
        diff.image
    );
    assert!(
        diff.reused_layers > 0,
        "the stable layer is reused: {diff:?}"
    );
    assert!(diff.download_bytes < s2.output.unwrap().size);
    assert_eq!(env.pods("e2e", &first).await.len(), 1);
    assert_eq!(env.pods("e2e", &second).await.len(), 1);
}

/// A worker's account may patch ConfigMaps (its report's key) and nothing more: it
/// cannot read the namespace's ConfigMaps, nor create one.
async fn worker_rights(env: &Env) {
    use k8s_openapi::api::core::v1::ConfigMap;
    let path = env.scratch().join("worker.kubeconfig");
    kube_common::cluster::service_account_kubeconfig(
        &env.admin,
        &env.cp.server(),
        "e2e",
        "strata-worker",
        &path,
    )
    .await
    .unwrap();
    let worker = kube_common::cluster::client_for(&path).await;
    let maps: Api<ConfigMap> = Api::namespaced(worker, "e2e");
    let forbidden =
        |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(e)) if e.code == 403);
    assert!(forbidden(maps.get("kube-root-ca.crt").await.map(|_| ())));
    assert!(forbidden(
        maps.list(&ListParams::default()).await.map(|_| ())
    ));
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "planted"}})).unwrap();
    assert!(forbidden(
        maps.create(&kube::api::PostParams::default(), &cm)
            .await
            .map(|_| ())
    ));
}

async fn plan_only(env: &Env) {
    let job = env
        .create(
            "e2e",
            "plan",
            "plan-only",
            "v1",
            json!({"mode": "PlanOnly"}),
        )
        .await;
    let done = env.finished("e2e", "plan", Duration::from_secs(120)).await;
    expect(&done, "Succeeded", "True", None);
    let status = done.status.unwrap();
    assert!(status.plan.is_some() && status.output.is_none());
    assert!(status.conditions.iter().all(|c| c.type_ != "Built"));
    let pods = env.pods("e2e", &job).await;
    let spec = pods[0].spec.as_ref().unwrap();
    assert_eq!(spec.containers.len(), 1, "PlanOnly runs no build step");
    assert!(spec.init_containers.is_none());
}

async fn failure_is_retried_then_reported(env: &Env) {
    let job = env
        .create("e2e", "fail", "fail", "no-such-tree", json!({"retries": 1}))
        .await;
    let done = env.finished("e2e", "fail", Duration::from_secs(120)).await;
    expect(&done, "Succeeded", "False", Some("Failed"));
    let status = done.status.unwrap();
    assert_eq!(status.attempts, 2);
    let failure = status.failure.expect("failure details");
    assert_eq!(failure.reason, "WorkerFailed");
    assert_eq!(failure.pod.as_deref(), Some("fail-a2"));
    assert_eq!(
        failure.logs_command.as_deref(),
        Some("kubectl logs -n e2e fail-a2 -c plan")
    );
    assert!(
        failure.message.contains("no-such-tree"),
        "{}",
        failure.message
    );
    assert_eq!(env.pods("e2e", &job).await.len(), 2);
}

async fn cancellation(env: &Env) {
    let hang = json!({"source": {"image": {"ref": format!("docker://127.0.0.1:{}/never:1", common::black_hole("127.0.0.1"))}}});
    let job = env.create("e2e", "cancel", "cancel", "v1", hang).await;
    cancel_once_started(&env.jobs("e2e"), "cancel", Duration::from_secs(60)).await;
    let done = env.finished("e2e", "cancel", Duration::from_secs(60)).await;
    expect(&done, "Succeeded", "False", Some("Cancelled"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !env.pods("e2e", &job).await.is_empty() {
        assert!(Instant::now() < deadline, "the running pod was deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn deadline(env: &Env) {
    let hang = json!({
        "source": {"image": {"ref": format!("docker://127.0.0.1:{}/never:1", common::black_hole("127.0.0.1"))}},
        "timeoutSeconds": 3,
    });
    env.create("e2e", "slow", "slow", "v1", hang).await;
    let done = env.finished("e2e", "slow", Duration::from_secs(60)).await;
    expect(&done, "Succeeded", "False", Some("DeadlineExceeded"));
}

/// An ostree repository on a volume, made with the ostree CLI from the v1 tree.
async fn ostree_source(env: &Env) {
    if !common::real_parts(&["ostree"]) {
        return;
    }
    let repo = env.trees.join("repo");
    let ostree = common::ostree;
    let repo_arg = format!("--repo={}", repo.display());
    ostree(&["init", &repo_arg, "--mode=archive"]);
    let tree_arg = format!("--tree=dir={}", env.trees.join("v1").display());
    ostree(&["commit", &repo_arg, "--branch=os/v1", "-s", "v1", &tree_arg]);
    let source = json!({"source": {"ostree": {"repo": "repo", "ref": "os/v1", "volume": "trees"}}});
    env.create("e2e", "from-ostree", "ostree", "v1", source)
        .await;
    let done = env
        .finished("e2e", "from-ostree", Duration::from_secs(120))
        .await;
    expect(&done, "Succeeded", "True", None);
    let status = done.status.unwrap();
    let status_plan_decisions = status.plan.clone().unwrap().decisions;
    assert!(
        status_plan_decisions.placed >= 2,
        "packages read from the commit"
    );
    common::registry::inspect(&status.output.unwrap().image);

    // The same repository served over HTTP: the worker pulls the commit itself.
    let url = format!("http://127.0.0.1:{}", common::http::serve(&repo));
    let commit = ostree(&["rev-parse", &repo_arg, "os/v1"]);
    let source = json!({"source": {"ostree": {"repo": url, "ref": "os/v1"}}});
    env.create("e2e", "from-ostree-url", "ostree-url", "v1", source)
        .await;
    let done = env
        .finished("e2e", "from-ostree-url", Duration::from_secs(120))
        .await;
    expect(&done, "Succeeded", "True", None);
    let pulled = done.status.unwrap();
    assert_eq!(
        pulled.plan.unwrap().decisions,
        status_plan_decisions,
        "the pulled commit plans as the one on the volume"
    );
    let image = &pulled.output.unwrap().image;
    let labels = &common::registry::inspect(image)["Labels"];
    assert!(
        labels.to_string().contains(commit.trim()),
        "the image names the pulled commit: {labels}"
    );
}

async fn invalid_spec(env: &Env) {
    let bad = json!({"source": {"rootfs": {"volume": "not-declared", "path": "v1"}}});
    let job = env.create("e2e", "invalid", "invalid", "v1", bad).await;
    let done = env
        .finished("e2e", "invalid", Duration::from_secs(60))
        .await;
    expect(&done, "Succeeded", "False", Some("InvalidSpec"));
    let c = &done.status.as_ref().unwrap().conditions[0];
    assert!(
        c.message.contains("spec.source.rootfs.volume"),
        "{}",
        c.message
    );
    assert!(
        env.pods("e2e", &job).await.is_empty(),
        "no pod for an invalid spec"
    );
    // Specs that would let a job creator reach beyond the job: a Secret as a volume,
    // another service account, their own worker image, a node of their choosing. The chart's policy refuses
    // each by field, before any pod exists.
    let trees = trees_volume();
    let secret = json!({"name": "creds", "secret": {"secretName": "db-creds"}});
    let attacks = [
        (
            "steal-secret",
            json!({"podTemplate": {"volumes": [trees.clone(), secret]}}),
            "spec.podTemplate.volumes[1] \"creds\": secret volumes are not allowed",
        ),
        (
            "other-account",
            json!({"podTemplate": {"volumes": [trees], "serviceAccountName": "default"}}),
            "spec.podTemplate.serviceAccountName \"default\": not allowed",
        ),
        (
            "own-image",
            json!({"workerImage": "evil.example/strata:1"}),
            "spec.workerImage \"evil.example/strata:1\": not allowed",
        ),
        (
            "read-the-node",
            json!({"podTemplate": {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}),
            "spec.podTemplate.volumes[0] \"root\": hostPath volumes are not allowed",
        ),
        (
            "pick-node",
            json!({"podTemplate": {"nodeSelector": {"kubernetes.io/hostname": "control-plane-1"}}}),
            "spec.podTemplate.nodeSelector \"kubernetes.io/hostname\": not allowed",
        ),
        (
            "any-taint",
            json!({"podTemplate": {"tolerations": [{"operator": "Exists"}]}}),
            "spec.podTemplate.tolerations[0]: a toleration without a key",
        ),
    ];
    for (name, extra, field) in attacks {
        let job = env.create("e2e", name, name, "v1", extra).await;
        let done = env.finished("e2e", name, Duration::from_secs(60)).await;
        expect(&done, "Succeeded", "False", Some("InvalidSpec"));
        let c = &done.status.as_ref().unwrap().conditions[0];
        assert!(c.message.contains(field), "{name}: {}", c.message);
        assert!(env.pods("e2e", &job).await.is_empty(), "{name}: no pod");
    }
}

/// A spec that passes the controller's checks but whose pod the API server refuses
/// (a negative emptyDir size): the attempt fails as `PodCreateFailed` with the API
/// server's words, and the job ends instead of retrying the create forever.
async fn refused_pod(env: &Env) {
    let trees = trees_volume();
    let scratch = json!({"name": "scratch", "emptyDir": {"sizeLimit": "-1"}});
    let extra = json!({"retries": 0, "podTemplate": {"volumes": [trees, scratch]}});
    let job = env.create("e2e", "refused", "refused", "v1", extra).await;
    let done = env
        .finished("e2e", "refused", Duration::from_secs(60))
        .await;
    expect(&done, "Succeeded", "False", Some("Failed"));
    let failure = done.status.as_ref().unwrap().failure.clone().unwrap();
    assert_eq!(failure.reason, "PodCreateFailed", "{failure:?}");
    assert!(failure.message.contains("sizeLimit"), "{}", failure.message);
    assert!(env.pods("e2e", &job).await.is_empty(), "no pod was created");
}

/// A worker pod deleted mid-job (a drained node, an operator's mistake) fails its
/// attempt as `PodDeleted`; the retry builds the image, with one pod per attempt.
async fn deleted_worker(env: &Env) {
    let job = env
        .create("e2e", "deleted", "deleted", "v1", json!({"retries": 1}))
        .await;
    let pods: Api<Pod> = Api::namespaced(env.admin.clone(), "e2e");
    let deadline = Instant::now() + Duration::from_secs(60);
    while pods.get_opt("deleted-a1").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the first pod was created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pods.delete("deleted-a1", &Default::default())
        .await
        .unwrap();
    let done = env
        .finished("e2e", "deleted", Duration::from_secs(180))
        .await;
    expect(&done, "Succeeded", "True", None);
    let status = done.status.unwrap();
    assert_eq!(status.attempts, 2, "{:?}", status.failure);
    assert_eq!(status.failure.unwrap().reason, "PodDeleted");
    let names: Vec<String> = env
        .pods("e2e", &job)
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(
        names,
        ["deleted-a2"],
        "one pod per attempt, the deleted one gone"
    );
}

/// The Tekton task `strata-encapsulation-job`: its step script, run locally with the
/// admin's kubeconfig, creates a job, waits, and copies the outcome into results.
async fn tekton_job_task(env: &Env) {
    use common::tekton::s;
    let source = format!("{}:happy-2", env.image("happy"));
    let params = vec![
        ("STREAM", s("tekton")),
        ("SOURCE_IMAGE", s(source)),
        ("OUTPUT_IMAGE", s(env.image("tekton:1"))),
        ("MAX_LAYERS", s("4")),
        ("NAMESPACE", s("e2e")),
    ];
    let Some(run) = env.run_job_task("tekton-ok", params) else {
        return;
    };
    assert!(run.output.status.success(), "{}", run.stderr());
    let name = &run.results["JOB_NAME"];
    let job = env.jobs("e2e").get(name).await.unwrap();
    let output = job.status.unwrap().output.unwrap();
    assert_eq!(run.results["IMAGE_DIGEST"], output.digest);
    assert_eq!(
        run.results["IMAGE_URL"],
        output.image.trim_start_matches("docker://")
    );

    let params = vec![
        ("STREAM", s("tekton-bad")),
        ("SOURCE_IMAGE", s(env.image("happy:happy-2"))),
        ("OUTPUT_IMAGE", s("oci:/tmp/nowhere")),
        ("NAMESPACE", s("e2e")),
    ];
    let run = env.run_job_task("tekton-bad", params).unwrap();
    assert!(!run.output.status.success());
    assert!(
        run.stderr().contains("InvalidSpec: spec.output.image"),
        "the job's failure message: {}",
        run.stderr()
    );
    tekton_job_task_ostree_claim(env).await;
}

/// The task's ostree source is a repository on a claim, and its push credentials a
/// Secret: the job it creates says so (it then ends at its 1 s deadline).
async fn tekton_job_task_ostree_claim(env: &Env) {
    use common::tekton::s;
    let params = vec![
        ("STREAM", s("tekton-ostree")),
        ("OSTREE_CLAIM", s("os-repo")),
        ("OSTREE_REPO", s("srv/repo")),
        ("OSTREE_REF", s("os/v1")),
        ("PUSH_SECRET", s("push")),
        ("OUTPUT_IMAGE", s(env.image("tekton-ostree:1"))),
        ("TIMEOUT_SECONDS", s("1")),
        ("NAMESPACE", s("e2e")),
    ];
    let run = env.run_job_task("tekton-ostree", params).unwrap();
    assert!(!run.output.status.success(), "ends at its deadline");
    let job = env.jobs("e2e").get(&run.results["JOB_NAME"]).await.unwrap();
    let spec = serde_json::to_value(&job.spec).unwrap();
    assert_eq!(
        spec["source"]["ostree"],
        json!({"volume": "source", "repo": "srv/repo", "ref": "os/v1"})
    );
    assert_eq!(
        spec["podTemplate"]["volumes"][0]["persistentVolumeClaim"],
        json!({"claimName": "os-repo", "readOnly": true})
    );
    assert_eq!(spec["output"]["pushSecretRef"], json!({"name": "push"}));
}

/// The controller dies right after creating a pod and comes back after the worker
/// ended: it finishes the job from what the API server holds, with no second pod.
async fn restart_safety(env: &Env) {
    let job = env
        .create("e2e", "restart", "restart", "v1", json!({}))
        .await;
    let pods: Api<Pod> = Api::namespaced(env.admin.clone(), "e2e");
    let deadline = Instant::now() + Duration::from_secs(60);
    while pods.get_opt("restart-a1").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the first pod was created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.kill_controller();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pod = pods.get("restart-a1").await.unwrap();
        let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
        if phase == "Succeeded" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker finished without the controller"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.start_controller();
    let done = env
        .finished("e2e", "restart", Duration::from_secs(120))
        .await;
    expect(&done, "Succeeded", "True", None);
    assert_eq!(env.pods("e2e", &job).await.len(), 1, "no duplicate pods");
    assert_eq!(done.status.unwrap().attempts, 1);
}

/// A pod that anyone with `edit` made with a job's labels and its pod's name, before
/// the controller got to it, is never adopted: the controller replaces it, and the
/// job's status names the UID of the pod it created itself.
async fn squatted_pod(env: &Env) {
    env.kill_controller();
    let job = env.create("e2e", "squat", "squat", "v1", json!({})).await;
    let pods: Api<Pod> = Api::namespaced(env.admin.clone(), "e2e");
    let squatter: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "squat-a1", "labels": {
            "app.kubernetes.io/managed-by": "strata",
            "strata.dev/job-uid": job.uid().unwrap(),
            "strata.dev/attempt": "1",
        }},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "build", "image": "forged", "command": ["sleep", "30"],
        }]},
    }))
    .unwrap();
    let squatter = pods
        .create(&kube::api::PostParams::default(), &squatter)
        .await
        .unwrap();
    env.start_controller();
    let done = env.finished("e2e", "squat", Duration::from_secs(180)).await;
    expect(&done, "Succeeded", "True", None);
    let status = done.status.unwrap();
    assert_ne!(status.pod_uid, squatter.uid(), "the squatter was adopted");
    let final_pod = pods.get("squat-a1").await.unwrap();
    assert_eq!(
        status.pod_uid,
        final_pod.uid(),
        "status names the controller's pod"
    );
    assert_eq!(status.attempts, 1);
}

/// 50 jobs across 5 streams: all finish, each stream one at a time in creation order.
async fn load(env: &Env) {
    let mut names = Vec::new();
    for i in 0..50 {
        let stream = format!("load-{}", i % 5);
        let name = format!("job-{i:02}");
        env.create("load", &name, &stream, "v1", json!({"mode": "PlanOnly"}))
            .await;
        names.push((stream, name));
    }
    let mut by_stream: BTreeMap<String, Vec<EncapsulationJob>> = BTreeMap::new();
    for (stream, name) in &names {
        let job = env.finished("load", name, Duration::from_secs(600)).await;
        expect(&job, "Succeeded", "True", None);
        assert_eq!(env.pods("load", &job).await.len(), 1, "{name}: one pod");
        by_stream.entry(stream.clone()).or_default().push(job);
    }
    let interval = |j: &EncapsulationJob| {
        let s = j.status.as_ref().unwrap();
        (time(&s.start_time), time(&s.completion_time))
    };
    for jobs in by_stream.values() {
        for pair in jobs.windows(2) {
            let (_, end) = interval(&pair[0]);
            let (start, _) = interval(&pair[1]);
            assert!(
                start >= end,
                "{} started before {} ended",
                pair[1].name_any(),
                pair[0].name_any()
            );
        }
    }
    let all: Vec<(jiff::Timestamp, jiff::Timestamp, &str)> = by_stream
        .iter()
        .flat_map(|(s, jobs)| {
            jobs.iter()
                .map(move |j| (interval(j).0, interval(j).1, s.as_str()))
        })
        .collect();
    let overlap = all
        .iter()
        .any(|a| all.iter().any(|b| a.2 != b.2 && a.0 < b.1 && b.0 < a.1));
    assert!(overlap, "different streams run in parallel");
}

async fn observability(env: &Env) {
    let log = env.controller_log();
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env.admin.clone(), "e2e");
    let list = events.list(&ListParams::default()).await.unwrap();
    let about = |name: &str, reason: &str| {
        list.items.iter().any(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
    };
    assert!(about("happy-1", "Planned") && about("happy-1", "Succeeded"));
    assert!(
        about("happy-2", "WaitingForStream"),
        "happy-2 waited for happy-1"
    );
    assert!(about("fail", "BackOff") && about("fail", "Failed"));
    let body = kube_common::operator_env::http_get(env.health_port, "/metrics");
    assert!(
        body.contains("strata_jobs_finished_total{outcome=\"Succeeded\"}"),
        "{body}\n{log}"
    );
    assert!(!body.contains("happy-1"), "no per-object labels");
    assert!(kube_common::operator_env::http_get(env.health_port, "/healthz").contains("ok"));
    assert!(kube_common::operator_env::http_get(env.health_port, "/readyz").contains("ready"));
}
