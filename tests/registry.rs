//! Pushing to and reading priors from a real registry: Debian's `docker-registry` on
//! loopback, with skopeo doing the copies and the image proxy reading manifests.

mod common;
use common::registry::start_registry;
use common::*;

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
    let out = strata(&[
        "build",
        "--rootfs",
        root.to_str().unwrap(),
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
    let out = strata(&[
        "build",
        "--rootfs",
        root.to_str().unwrap(),
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
