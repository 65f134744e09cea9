//! The CRD against a real kube-apiserver (scripts/control-plane.sh): it installs as a
//! structural schema, accepts a valid job, and rejects out-of-range fields with 422.

mod common;
mod kube_common;

use kube::api::{Api, PostParams};
use kube_common::cluster;
use strata::operator::crd::EncapsulationJob;

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
