//! `EncapsulationStream` scenarios on the real control plane: tags watched in the real
//! registry, the jobs they start run by the controller and the node agent.

use crate::args;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use strata::operator::crd::EncapsulationJob;
use strata::operator::stream::crd::{EncapsulationStream, EncapsulationStreamStatus};
use strata::operator::stream::decide::{BUILD_NOW_ANNOTATION, STREAM_UID_LABEL};

use crate::common;
use crate::kube_common::operator_env::Env;

const NS: &str = "e2e";

/// Builds `trees/<tree>` and pushes it to `reference`, versioned `os-<tree>`; its
/// manifest digest.
fn push(env: &Env, tree: &str, reference: &str) -> String {
    let registry = format!("127.0.0.1:{}", env.registry.port);
    let rootfs = env.trees.join(tree);
    let version = format!("org.opencontainers.image.version=os-{tree}");
    common::ok(common::strata(&args![
        "build",
        "--rootfs",
        rootfs,
        "--output",
        reference,
        "--insecure-registry",
        &registry,
        "--label",
        &version,
    ]));
    common::registry::inspect(reference)["Digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn streams(env: &Env) -> Api<EncapsulationStream> {
    Api::namespaced(env.admin.clone(), NS)
}

async fn create(env: &Env, name: &str, source: serde_json::Value, extra: serde_json::Value) {
    let mut spec = json!({
        "source": source,
        "pollIntervalSeconds": 5,
        "output": {"repository": env.image(&format!("{name}-out")), "tag": "{shortDigest}-{n}"},
        "jobTemplate": {"planner": {"maxLayers": 4}},
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let stream: EncapsulationStream = serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1", "kind": "EncapsulationStream",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    streams(env)
        .create(&PostParams::default(), &stream)
        .await
        .unwrap();
}

/// Waits until the stream's status satisfies `done`.
async fn until(
    env: &Env,
    name: &str,
    what: &str,
    done: impl Fn(&EncapsulationStreamStatus) -> bool,
) -> EncapsulationStreamStatus {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let status = streams(env)
            .get(name)
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "stream {name}: {what} did not happen; status: {}",
            serde_json::to_string_pretty(&status).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn built(status: &EncapsulationStreamStatus, digest: &str) -> bool {
    status
        .history
        .first()
        .is_some_and(|b| b.source_digest == digest && b.result == "Succeeded")
}

fn condition<'a>(status: &'a EncapsulationStreamStatus, type_: &str) -> Option<(&'a str, &'a str)> {
    let c = status.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.as_str(), c.reason.as_str()))
}

async fn stream_jobs(env: &Env, name: &str) -> Vec<EncapsulationJob> {
    let uid = streams(env).get(name).await.unwrap().uid().unwrap();
    env.jobs(NS)
        .list(&ListParams::default().labels(&format!("{STREAM_UID_LABEL}={uid}")))
        .await
        .unwrap()
        .items
}

async fn patch(env: &Env, name: &str, value: serde_json::Value) {
    streams(env)
        .patch(name, &PatchParams::default(), &Patch::Merge(value))
        .await
        .unwrap();
}

/// A watched tag: each new digest makes one job, planned against the last build; the
/// same digest makes none; `build-now` rebuilds; `suspend` holds builds back; the
/// history limit deletes old jobs with their reports.
pub async fn a_watched_tag(env: &Env) {
    let source = env.image("es-src:latest");
    let d1 = push(env, "v1", &source);
    create(
        env,
        "tag",
        json!({"image": {"ref": source}}),
        json!({"successfulJobsHistoryLimit": 1,
               "output": {"repository": env.image("tag-out"), "tag": "{version}.{n}"},
               "jobTemplate": {"planner": {"maxLayers": 4}, "priorFromStream": 1}}),
    )
    .await;
    let status = until(env, "tag", "the first build", |s| built(s, &d1)).await;
    let first = status.history[0].clone();
    let job = env.jobs(NS).get(&first.job).await.unwrap();
    let owner = &job.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("EncapsulationStream", "tag")
    );
    assert_eq!(
        job.spec.source.image.unwrap().reference,
        format!("{}@{d1}", env.image("es-src"))
    );
    let output = first.output.clone().expect("the build's output, pinned");
    assert_eq!(
        output,
        format!(
            "{}@{}",
            env.image("tag-out"),
            job.status.unwrap().output.unwrap().digest
        )
    );
    // The tag template "{version}.{n}": the source's version label, build 1.
    let tagged = format!("{}:os-v1.1", env.image("tag-out"));
    assert_eq!(
        common::registry::inspect(&tagged)["Digest"],
        output.rsplit('@').next().unwrap()
    );

    // The same tree pushed again is the same digest: no job.
    assert_eq!(push(env, "v1", &source), d1, "builds are deterministic");
    tokio::time::sleep(Duration::from_secs(12)).await;
    let status = streams(env).get("tag").await.unwrap().status.unwrap();
    assert_eq!(status.builds, 1, "an unchanged source starts nothing");
    assert_eq!(condition(&status, "Ready"), Some(("True", "SourceRead")));

    // A new digest: a second job, whose diff against the first is in the history.
    let d2 = push(env, "v2", &source);
    let status = until(env, "tag", "the second build", |s| built(s, &d2)).await;
    let second = &status.history[0];
    assert!(second.reused_percent.unwrap() > 0.0, "{second:?}");
    assert!(second.download_bytes.is_some());
    // One success kept: the first job and its report ConfigMap are gone.
    let maps: Api<ConfigMap> = Api::namespaced(env.admin.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.jobs(NS).get_opt(&first.job).await.unwrap().is_some()
        || maps
            .get_opt(&format!("{}-report", first.job))
            .await
            .unwrap()
            .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "job {} was not pruned",
            first.job
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(stream_jobs(env, "tag").await.len(), 1);

    // build-now rebuilds the same digest, once.
    patch(
        env,
        "tag",
        json!({"metadata": {"annotations": {BUILD_NOW_ANNOTATION: "run-1"}}}),
    )
    .await;
    let status = until(env, "tag", "the build-now build", |s| {
        s.builds == 3 && built(s, &d2)
    })
    .await;
    assert_eq!(status.build_now.as_deref(), Some("run-1"));

    // Suspended: a new digest waits until the stream resumes.
    patch(env, "tag", json!({"spec": {"suspend": true}})).await;
    until(env, "tag", "suspension", |s| {
        condition(s, "Suspended") == Some(("True", "Suspended"))
    })
    .await;
    assert_eq!(push(env, "v1", &source), d1);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        streams(env)
            .get("tag")
            .await
            .unwrap()
            .status
            .unwrap()
            .builds,
        3
    );
    patch(env, "tag", json!({"spec": {"suspend": false}})).await;
    let status = until(env, "tag", "the build after resuming", |s| built(s, &d1)).await;
    assert_eq!(status.builds, 4);
    let results: Vec<_> = status.history.iter().map(|b| b.result.as_str()).collect();
    assert_eq!(results, ["Succeeded"; 4]);
    tekton_task_builds_the_stream_now(env).await;
}

/// The Tekton task's FROM_STREAM asks the stream to build now and follows the job
/// that answers it; a suspended stream fails the step instead of hanging it.
async fn tekton_task_builds_the_stream_now(env: &Env) {
    use common::tekton::s;
    let params = || vec![("FROM_STREAM", s("tag")), ("NAMESPACE", s(NS))];
    let Some(done) = env.run_job_task("tekton-stream", params()) else {
        return;
    };
    assert!(done.output.status.success(), "{}", done.stderr());
    let status = streams(env).get("tag").await.unwrap().status.unwrap();
    let build = &status.history[0];
    assert_eq!(build.build_now.as_deref(), Some("run-tekton-stream"));
    assert_eq!(done.results["JOB_NAME"], build.job);
    let output = build.output.as_deref().unwrap();
    assert_eq!(
        done.results["IMAGE_DIGEST"],
        output.rsplit('@').next().unwrap()
    );

    patch(env, "tag", json!({"spec": {"suspend": true}})).await;
    until(env, "tag", "suspension", |s| {
        condition(s, "Suspended") == Some(("True", "Suspended"))
    })
    .await;
    let refused = env.run_job_task("tekton-suspended", params()).unwrap();
    assert!(!refused.output.status.success());
    assert!(
        refused.stderr().contains("tag is suspended"),
        "{}",
        refused.stderr()
    );
}

/// A tag that does not exist yet: the stream says so, backs off, and builds once the
/// tag appears.
pub async fn a_tag_that_appears_later(env: &Env) {
    let source = env.image("es-later:1");
    create(env, "later", json!({"image": {"ref": source}}), json!({})).await;
    let status = until(env, "later", "a source error", |s| {
        condition(s, "Ready") == Some(("False", "SourceUnavailable"))
    })
    .await;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready.message.contains("there is no image"),
        "{}",
        ready.message
    );
    assert_eq!(status.builds, 0);
    let digest = push(env, "v2", &source);
    let status = until(env, "later", "the build once the tag exists", |s| {
        built(s, &digest)
    })
    .await;
    assert_eq!(status.poll_failures, 0);
}

/// An ostree ref served over HTTP: each new commit makes one job, which pulls that
/// commit; polling reads commit objects only.
pub async fn an_ostree_ref(env: &Env) {
    if !common::real_parts(&["ostree"]) {
        return;
    }
    let served = env.scratch().join("stream-repo");
    let repo = format!("--repo={}", served.display());
    common::ostree(&["init", &repo, "--mode=archive"]);
    let commit = |tree: &str| {
        let tree_arg = format!("--tree=dir={}", env.trees.join(tree).display());
        let version = format!("--add-metadata-string=version=41.{tree}");
        let out = common::ostree(&[
            "commit",
            &repo,
            "--branch=os/stable",
            "-s",
            tree,
            &tree_arg,
            &version,
        ]);
        out.trim().to_string()
    };
    let first = commit("v1");
    let url = format!("http://127.0.0.1:{}", common::http::serve(&served));
    let source = json!({"ostree": {"url": url, "ref": "os/stable"}});
    create(
        env,
        "ostree-ref",
        source,
        json!({"output": {"repository": env.image("ostree-out"), "tag": "{version}"}}),
    )
    .await;
    let status = until(env, "ostree-ref", "the first commit's build", |s| {
        built(s, &first)
    })
    .await;
    let job = env.jobs(NS).get(&status.history[0].job).await.unwrap();
    let pulled = job.spec.source.ostree.unwrap();
    assert_eq!(
        (pulled.repo.as_str(), pulled.commit.as_deref()),
        (url.as_str(), Some(first.as_str()))
    );
    common::registry::inspect(&format!("{}:41.v1", env.image("ostree-out")));

    let second = commit("v2");
    let status = until(env, "ostree-ref", "the second commit's build", |s| {
        built(s, &second)
    })
    .await;
    assert_eq!(status.builds, 2);
    assert!(
        status.history[0].reused_percent.is_some(),
        "{:?}",
        status.history[0]
    );
    common::registry::inspect(&format!("{}:41.v2", env.image("ostree-out")));
}

/// A tree on a claim that a producer rewrites: a probe pod reads its generation file,
/// each new generation makes one job that reads the tree from the claim, and the probe
/// pod is gone after each read.
pub async fn a_tree_on_a_claim(env: &Env) {
    let tree = env.trees.join("produced");
    let produce = |version: &str| {
        let _ = std::fs::remove_dir_all(&tree);
        common::dpkg_tree(&tree, version);
        // The producer's contract: the generation file last.
        std::fs::write(tree.join("GENERATION"), format!("os-{version}\n")).unwrap();
    };
    produce("1");
    let source =
        json!({"rootfs": {"volume": "trees", "path": "produced", "generationFile": "GENERATION"}});
    let template = json!({"planner": {"maxLayers": 4},
        "podTemplate": {"volumes": [crate::kube_common::operator_env::trees_volume()]}});
    let extra = json!({"jobTemplate": template,
        "output": {"repository": env.image("tree-out"), "tag": "{version}"}});
    create(env, "tree", source, extra).await;
    let status = until(env, "tree", "the first generation's build", |s| {
        s.history.first().is_some_and(|b| b.result == "Succeeded")
    })
    .await;
    let first = status.history[0].source_digest.clone();
    common::registry::inspect(&format!("{}:os-1", env.image("tree-out")));
    let job = env.jobs(NS).get(&status.history[0].job).await.unwrap();
    assert_eq!(job.spec.source.rootfs.unwrap().path, "produced");

    produce("2");
    let status = until(env, "tree", "the second generation's build", |s| {
        s.history
            .first()
            .is_some_and(|b| b.source_digest != first && b.result == "Succeeded")
    })
    .await;
    assert_eq!(status.builds, 2);
    common::registry::inspect(&format!("{}:os-2", env.image("tree-out")));
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(env.admin.clone(), NS);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pods.get_opt("tree-probe").await.unwrap().is_some() {
        // The next poll may have started a new probe; it goes once read.
        assert!(Instant::now() < deadline, "the probe pod stayed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A controller that created a build's job and stopped before recording it: the next
/// one makes the same job, finds it there (its own, the same spec), and records it,
/// so the source builds once.
pub async fn a_restart_between_create_and_record(env: &Env) {
    use strata::operator::stream::decide::{decide, Observed};
    env.kill_controller();
    let source = env.image("es-restart:1");
    let digest = push(env, "v1", &source);
    create(env, "restart", json!({"image": {"ref": source}}), json!({})).await;
    let stream = streams(env).get("restart").await.unwrap();
    let registry = strata::image::remote::RegistryOptions {
        insecure_registries: vec![format!("127.0.0.1:{}", env.registry.port)],
        ..Default::default()
    };
    let read = source.clone();
    let identity = tokio::task::spawn_blocking(move || {
        strata::operator::stream::poll::identity(&read, &registry)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(identity.digest, digest);
    let outcome = decide(&Observed {
        stream: &stream,
        jobs: &[],
        poll: Some(Ok(identity)),
        now: jiff::Timestamp::now(),
    });
    let build = outcome.create.expect("a job for the new digest");
    // What the stopped controller did: the job exists, status does not say so.
    env.jobs(NS)
        .create(&PostParams::default(), &build.job)
        .await
        .unwrap();
    env.start_controller();
    let status = until(env, "restart", "the build", |s| built(s, &digest)).await;
    assert_eq!(status.builds, 1);
    assert_eq!(status.history.len(), 1);
    assert_eq!(status.history[0].job, build.job.name_any());
    assert_eq!(
        stream_jobs(env, "restart").await.len(),
        1,
        "one job, not two"
    );
}
