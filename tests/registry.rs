//! Pushing to and reading priors from a real registry: Debian's `docker-registry` on
//! loopback, with skopeo doing the copies and the image proxy reading manifests.
//!
//! The Tekton task `strata-build` pushes there too: its step script runs locally with
//! params as environment variables (see `common::tekton`).

mod common;

use common::registry::start_registry;
use common::tekton::{build_params, run_task, s, Param};
use common::*;
use common::{dpkg_tree, real_parts};

#[test]
fn push_then_build_on_a_registry_prior() {
    if !real_parts(&["docker-registry", "skopeo"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let registry = start_registry(tmp.path());
    let root = tmp.path().join("root");
    let image = |tag: &str| format!("docker://127.0.0.1:{}/strata/test:{tag}", registry.port);

    dpkg_tree(&root, "1");
    let out = strata(&args![
        "build",
        "--rootfs",
        root,
        "--output",
        &image("v1"),
        "--tls-verify=false",
        "-n",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pushed = common::registry::inspect(&image("v1"));
    let reported = String::from_utf8_lossy(&out.stdout);
    assert!(
        reported.contains(pushed["Digest"].as_str().unwrap()),
        "the reported digest is the registry's"
    );

    dpkg_tree(&root, "2");
    let out = strata(&args![
        "build",
        "--rootfs",
        root,
        "--output",
        &image("v2"),
        "--tls-verify=false",
        "-n",
        "4",
        "--prior",
        &image("v1"),
        "--prior",
        &image("never-pushed"),
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("never-pushed does not exist; planning without it"),
        "{stderr}"
    );
    assert!(stdout.contains("updated  busy 1 → 2"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("reused")),
        "the stable layer is reused: {stdout}"
    );

    let diff = strata(&[
        "diff",
        &image("v1"),
        &image("v2"),
        "--tls-verify=false",
        "--json",
    ]);
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    let diff: serde_json::Value = serde_json::from_slice(&diff.stdout).unwrap();
    assert!(!diff["reused"].as_array().unwrap().is_empty());
}

/// A layer kept from a registry prior is fetched through the image proxy, checked,
/// and pushed again; the image pulled back unpacks to exactly the new tree.
#[test]
fn a_layer_kept_from_a_registry_prior_round_trips() {
    let (Some(added), Some(removed)) = (
        cached_tree("sequence/2-added"),
        cached_tree("sequence/3-removed"),
    ) else {
        return;
    };
    if !real_parts(&["docker-registry", "skopeo", "umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let registry = start_registry(tmp.path());
    let image = |tag: &str| format!("docker://127.0.0.1:{}/strata/kept:{tag}", registry.port);
    let build = |tree: &std::path::Path, tag: &str, prior: Option<String>| {
        let report = tmp.path().join(format!("{tag}.json"));
        let mut args = vec![
            "build".to_string(),
            "--rootfs".into(),
            tree.display().to_string(),
            "--allow-special-files".into(),
            "-n".into(),
            "24".into(),
            format!("--insecure-registry=127.0.0.1:{}", registry.port),
            "--output".into(),
            image(tag),
            "--report".into(),
            report.display().to_string(),
        ];
        if let Some(p) = prior {
            args.extend(["--prior".into(), p]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(strata(&args));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
        report
    };
    // Another registry's name leaves this one's TLS checks on: the push fails.
    let refused = strata(&args![
        "build",
        "--rootfs",
        added,
        "--allow-special-files",
        "--insecure-registry=registry.example:5000",
        "--output",
        &image("v0"),
    ]);
    assert!(
        !refused.status.success(),
        "a plain-HTTP push passed TLS checks"
    );
    build(&added, "v1", None);
    let second = build(&removed, "v2", Some(image("v1")));
    let kept = second["plan"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kept_blob"].is_object())
        .count();
    assert!(
        kept > 0,
        "the purge keeps a layer: {}",
        second["plan"]["repack"]
    );
    let pulled = tmp.path().join("pulled");
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(image("v2"))
        .arg(format!("oci:{}:v", pulled.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::unpack::assert_unpacks_to(&pulled, "v", &removed);
}

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
            {
                let mut params = build_params(image(tag), tree, priors);
                let label = vec!["--label".into(), "org.example.tree=test".into()];
                params.push(("EXTRA_ARGS", Param::Array(label)));
                params
            },
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
