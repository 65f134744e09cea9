//! The real test control plane (scripts/control-plane.sh): etcd and kube-apiserver on
//! loopback, clients for its users, the CRD, and RBAC taken from the Helm chart.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Config};

pub const APISERVER: &str = "/var/cache/strata-test/kube-apiserver-1.20.2";

/// A running control plane, stopped on drop.
pub struct ControlPlane {
    pub dir: tempfile::TempDir,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane.sh")
}

/// Starts one, or returns `None` (skipping the test) when the apiserver was never
/// built; under CI a missing apiserver fails instead.
pub fn start() -> Option<ControlPlane> {
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

impl ControlPlane {
    /// The kubeconfig of `user`: `admin`, `strata-controller` or `strata-worker`.
    pub fn kubeconfig(&self, user: &str) -> PathBuf {
        match user {
            "admin" => self.dir.path().join("kubeconfig"),
            other => self.dir.path().join(format!("kubeconfig-{other}")),
        }
    }

    pub async fn client(&self, user: &str) -> Client {
        strata::operator::install_crypto_provider();
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig(user)).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    }
}

/// Installs the CRD (without CEL: the test apiserver is 1.20) and waits until served.
pub async fn install_crd(admin: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    crds.patch(
        "encapsulationjobs.strata.dev",
        &PatchParams::apply("strata-test").force(),
        &Patch::Apply(strata::operator::crd::crd_for(20)),
    )
    .await
    .expect("the structural schema is accepted");
    let established = kube::runtime::wait::await_condition(
        crds,
        "encapsulationjobs.strata.dev",
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(std::time::Duration::from_secs(30), established)
        .await
        .unwrap()
        .unwrap();
}

/// Rules from one of the Helm chart's RBAC files.
pub fn chart_rules(file: &str) -> Vec<PolicyRule> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/strata/files")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn apply<K>(api: &Api<K>, name: &str, object: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply("strata-test").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {name}: {e}"));
}

/// Grants the chart's rules: the controller's ClusterRole and its Lease Role in
/// `lease_ns`, and the worker Role in each of `job_namespaces`.
pub async fn grant_chart_rbac(admin: &Client, lease_ns: &str, job_namespaces: &[&str]) {
    let user = |name: &str| serde_json::json!([{"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}]);
    apply(
        &Api::<ClusterRole>::all(admin.clone()),
        "strata-controller",
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "strata-controller"}, "rules": chart_rules("controller-rules.yaml")}),
    )
    .await;
    apply(
        &Api::<ClusterRoleBinding>::all(admin.clone()),
        "strata-controller",
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "strata-controller"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "strata-controller"},
            "subjects": user("strata-controller")}),
    )
    .await;
    let grants = [(
        "strata-leader-election",
        "leader-election-rules.yaml",
        "strata-controller",
        vec![lease_ns],
    )]
    .into_iter()
    .chain([(
        "strata-worker",
        "worker-rules.yaml",
        "strata-worker",
        job_namespaces.to_vec(),
    )]);
    for (name, file, subject, namespaces) in grants {
        for ns in namespaces {
            ensure_namespace(admin, ns).await;
            apply(
                &Api::<Role>::namespaced(admin.clone(), ns),
                name,
                serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": name}, "rules": chart_rules(file)}),
            )
            .await;
            apply(
                &Api::<RoleBinding>::namespaced(admin.clone(), ns),
                name,
                serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": name},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                    "subjects": user(subject)}),
            )
            .await;
        }
    }
}

pub async fn ensure_namespace(admin: &Client, ns: &str) {
    apply(
        &Api::<Namespace>::all(admin.clone()),
        ns,
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await;
}
