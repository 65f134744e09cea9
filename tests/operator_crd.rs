//! The CRD against a real kube-apiserver (scripts/control-plane.sh): it installs as a
//! structural schema, accepts a valid job, and rejects out-of-range fields with 422.

use std::path::Path;
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use strata::operator::crd::EncapsulationJob;

const APISERVER: &str = "/var/cache/strata-test/kube-apiserver-1.20.2";

struct ControlPlane {
    dir: tempfile::TempDir,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane.sh")
}

fn start() -> Option<ControlPlane> {
    if !Path::new(APISERVER).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{APISERVER} is missing: .ci/run must build it"
        );
        println!("skipped: no test apiserver (scripts/control-plane.sh build makes one)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(script())
        .arg("start")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "the control plane did not start");
    Some(ControlPlane { dir })
}

async fn client(cp: &ControlPlane) -> Client {
    strata::operator::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(cp.dir.path().join("kubeconfig")).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
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
    let Some(cp) = start() else { return };
    let client = client(&cp).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "encapsulationjobs.strata.dev",
        &PatchParams::apply("strata-test").force(),
        &Patch::Apply(strata::operator::crd::crd_for(20)),
    )
    .await
    .expect("the structural schema is accepted");
    let established = kube::runtime::wait::await_condition(
        crds.clone(),
        "encapsulationjobs.strata.dev",
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(std::time::Duration::from_secs(30), established)
        .await
        .unwrap()
        .unwrap();

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
}
