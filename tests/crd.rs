//! The checked-in CRD matches what the Rust types generate, and its schema carries the
//! validation the operator relies on.
//!
//! Against a real kube-apiserver (scripts/control-plane.sh), the CRDs install as
//! structural schemas, a valid job and every example are accepted, and out-of-range
//! fields are rejected with 422.

mod common;
mod kube_common;

use kube::api::{Api, PostParams};
use kube_common::cluster;
use std::process::Command;
use strata::operator::crd::EncapsulationJob;

/// `strata crd ARGS` must equal the file at `path` (relative to the repository).
fn assert_matches(args: &[&str], path: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("crd")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let checked_in =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
            .unwrap();
    assert!(
        generated == checked_in,
        "{path} is stale: run `cargo run -- crd {} > {path}`",
        args.join(" ")
    );
}

#[test]
fn the_checked_in_crds_have_not_drifted() {
    for kind in ["job", "stream"] {
        let file = format!("encapsulation{kind}s.strata.dev.yaml");
        assert_matches(&["--kind", kind], &format!("crds/{file}"));
        // The chart installs on Kubernetes 1.20 and later, so its copy has no CEL rules.
        assert_matches(
            &["--kind", kind, "--kube-minor", "20"],
            &format!("charts/strata/crds/{file}"),
        );
    }
}

#[test]
fn the_schema_validates_ranges_enums_and_the_source_one_of() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(strata::operator::crd::EncapsulationJob::crd()).unwrap();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(
        version["subresources"]["status"].is_object(),
        "status is a subresource"
    );
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let max_layers = &spec["properties"]["planner"]["properties"]["maxLayers"];
    assert_eq!(
        (
            max_layers["minimum"].as_f64(),
            max_layers["maximum"].as_f64()
        ),
        (Some(2.0), Some(127.0))
    );
    assert!(
        max_layers["default"].is_null(),
        "no schema default: the controller's --default-max-layers applies"
    );
    assert_eq!(
        spec["properties"]["mode"]["enum"],
        serde_json::json!(["Build", "PlanOnly"])
    );
    let rules = spec["properties"]["source"]["x-kubernetes-validations"].to_string();
    assert!(rules.contains("size() == 1"), "{rules}");
    let required = spec["required"].as_array().unwrap();
    for field in ["source", "stream", "output"] {
        assert!(required.iter().any(|r| r == field), "{field} is required");
    }
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Stream",
            "Succeeded",
            "Layers",
            "Reused %",
            "Download",
            "Age"
        ]
    );
    assert_eq!(
        crd["spec"]["names"]["shortNames"],
        serde_json::json!(["ej"])
    );
}

/// `kubectl explain encapsulationjob.spec.mode` (and every other field) shows what the
/// field does: each property of spec and status carries a description.
#[test]
fn every_field_has_a_description_for_kubectl_explain() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(strata::operator::crd::EncapsulationJob::crd()).unwrap();
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"];
    let mut missing = Vec::new();
    for top in ["spec", "status"] {
        undescribed(&root[top], top, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

/// Paths under `path` whose schema has no description. Kubernetes' own types (pod
/// template parts) are not descended into: their descriptions are upstream's.
fn undescribed(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
    const UPSTREAM: [&str; 3] = ["resources", "tolerations", "volumes"];
    let described = schema["description"]
        .as_str()
        .is_some_and(|d| !d.trim().is_empty());
    if !described {
        missing.push(path.to_string());
    }
    let items = &schema["items"];
    let children = schema["properties"]
        .as_object()
        .or_else(|| items["properties"].as_object());
    for (name, child) in children.into_iter().flatten() {
        if !UPSTREAM.contains(&name.as_str()) {
            undescribed(child, &format!("{path}.{name}"), missing);
        }
    }
}

fn job(name: &str, max_layers: u32) -> EncapsulationJob {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "strata.dev/v1alpha1",
        "kind": "EncapsulationJob",
        "metadata": {"name": name},
        "spec": {
            "source": {"image": {"ref": "docker://127.0.0.1:5000/os:1"}},
            "stream": "demo",
            "output": {"image": "docker://127.0.0.1:5000/os:2"},
            "planner": {"maxLayers": max_layers}
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn the_crd_installs_and_the_schema_is_enforced() {
    let Some(cp) = cluster::start() else { return };
    let client = cp.client().await;
    cluster::install_crd(&client).await;

    let jobs: Api<EncapsulationJob> = Api::namespaced(client, "default");
    let created = jobs
        .create(&PostParams::default(), &job("ok", 64))
        .await
        .expect("a valid job is accepted");
    assert_eq!(created.spec.prior_from_stream, 2, "defaults apply");
    let err = jobs
        .create(&PostParams::default(), &job("too-many", 500))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422);
            assert!(status.message.contains("maxLayers"), "{}", status.message);
        }
        other => panic!("expected a 422, got {other}"),
    }
    // Lists are bounded too: 17 prior builds are refused.
    let mut many = job("many-priors", 64);
    many.spec.prior_builds = (0..17)
        .map(|i| format!("docker://127.0.0.1:5000/os:{i}"))
        .collect();
    match jobs.create(&PostParams::default(), &many).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422);
            assert!(status.message.contains("priorBuilds"), "{}", status.message);
        }
        other => panic!("expected a 422, got {other:?}"),
    }
}

#[tokio::test]
async fn the_examples_are_accepted() {
    use strata::operator::stream::crd::EncapsulationStream;
    let Some(cp) = cluster::start() else { return };
    let client = cp.client().await;
    cluster::install_crd(&client).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples");
    let jobs: Api<EncapsulationJob> = Api::namespaced(client.clone(), "default");
    let streams: Api<EncapsulationStream> = Api::namespaced(client, "default");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let kind: serde_json::Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if kind["kind"] == "EncapsulationStream" {
            let stream: EncapsulationStream =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            strata::operator::stream::decide::check(&stream)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            streams
                .create(&PostParams::default(), &stream)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        } else {
            let job: EncapsulationJob =
                serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            jobs.create(&PostParams::default(), &job)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        seen += 1;
    }
    assert_eq!(seen, 5);
}
