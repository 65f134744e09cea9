//! The Tekton task `strata-build`, its step script run locally with params as
//! environment variables (see `common::tekton`), pushing to a real registry.

mod common;

use common::registry::start_registry;
use common::tekton::{run_task, s, Param};
use common::{dpkg_tree, real_parts};

#[test]
fn strata_build_task_pushes_and_reports_reuse() {
    if !real_parts(&["docker-registry", "skopeo", "jq"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let registry = start_registry(tmp.path());
    let source = tmp.path().join("source");
    dpkg_tree(&source.join("v1"), "1");
    dpkg_tree(&source.join("v2"), "2");
    let image = |tag: &str| format!("127.0.0.1:{}/strata/tekton:{tag}", registry.port);
    let run = |tree: &str, tag: &str, priors: Vec<String>, scratch: &str| {
        let scratch = tmp.path().join(scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        run_task(
            "strata-build.yaml",
            vec![
                ("IMAGE", s(image(tag))),
                ("ROOTFS", s(tree)),
                ("PRIOR_IMAGES", Param::Array(priors)),
                ("MAX_LAYERS", s("4")),
                ("TLS_VERIFY", s("false")),
                (
                    "EXTRA_ARGS",
                    Param::Array(vec!["--label".into(), "org.example.tree=test".into()]),
                ),
            ],
            &[("source", source.as_path())],
            &[],
            &scratch,
        )
    };

    let first = run("v1", "v1", vec![], "run1");
    assert!(first.output.status.success(), "{}", first.stderr());
    assert_eq!(first.results["IMAGE_URL"], image("v1"));
    assert_eq!(first.results["LAYERS_REUSED"], "0");
    let pushed = common::registry::inspect(&format!("docker://{}", image("v1")));
    assert_eq!(pushed["Digest"], first.results["IMAGE_DIGEST"].as_str());
    assert_eq!(
        pushed["Labels"]["org.example.tree"], "test",
        "EXTRA_ARGS reach strata"
    );

    let second = run("v2", "v2", vec![image("v1")], "run2");
    assert!(second.output.status.success(), "{}", second.stderr());
    let reused: u64 = second.results["LAYERS_REUSED"].parse().unwrap();
    let download: u64 = second.results["DOWNLOAD_BYTES"].parse().unwrap();
    let total: u64 = first.results["DOWNLOAD_BYTES"].parse().unwrap();
    assert!(reused > 0, "the unchanged layers are reused");
    assert!(download < total, "{download} < {total}");
}

#[test]
fn strata_build_task_refuses_a_tree_outside_the_workspace() {
    if !real_parts(&["jq"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = run_task(
        "strata-build.yaml",
        vec![("IMAGE", s("r.example/os:1")), ("ROOTFS", s("../etc"))],
        &[("source", tmp.path())],
        &[],
        tmp.path(),
    );
    assert!(!run.output.status.success());
    assert!(
        run.stderr()
            .contains("ROOTFS '../etc' must stay inside the source workspace"),
        "{}",
        run.stderr()
    );
    assert!(run.results.is_empty(), "no results from a failed step");
}
