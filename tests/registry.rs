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
    let refused = strata(&[
        "build",
        "--rootfs",
        added.to_str().unwrap(),
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
