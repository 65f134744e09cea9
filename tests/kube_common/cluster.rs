//! The real test control plane (scripts/control-plane.sh): etcd and kube-apiserver on
//! loopback, clients for its users, the CRD, and the Helm chart rendered by Helm's own
//! engine and applied.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
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

/// The node's binaries, built from the same source (scripts/control-plane.sh build).
pub const NODE_BINARIES: &str = "/var/cache/strata-test/kubernetes-1.20.2";
/// The address the apiserver, the kubelet and test registries listen on when the
/// cluster has a node: the test bridge's own (scripts/lib/node.sh).
pub const NODE_ADDRESS: &str = "10.88.0.1";

/// Starts one, or returns `None` (skipping the test) when the apiserver was never
/// built; under CI a missing apiserver fails instead.
pub fn start() -> Option<ControlPlane> {
    launch(&[APISERVER], &[])
}

/// Starts one with a real node beside it (containerd, kubelet, scheduler,
/// controller-manager, kube-proxy); skipped, or failed under CI, as [`start`].
pub fn start_with_node() -> Option<ControlPlane> {
    let kubelet = format!("{NODE_BINARIES}/kubelet");
    if !crate::common::real_parts(&["containerd", "runc", "ctr", "gcc"]) {
        return None;
    }
    launch(&[APISERVER, &kubelet], &["--node"])
}

fn launch(binaries: &[&str], flags: &[&str]) -> Option<ControlPlane> {
    if let Some(missing) = binaries.iter().find(|b| !Path::new(b).exists()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "{missing} is missing: .ci/run must build it"
        );
        println!("skipped: {missing} is missing (scripts/control-plane.sh build makes it)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(script())
        .arg("start")
        .arg(dir.path())
        .args(flags)
        .env("STRATA", env!("CARGO_BIN_EXE_strata"))
        .status()
        .unwrap();
    assert!(status.success(), "the control plane did not start");
    Some(ControlPlane { dir })
}

impl ControlPlane {
    /// The admin's kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The apiserver's URL.
    pub fn server(&self) -> String {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig()).unwrap();
        kubeconfig.clusters[0]
            .cluster
            .as_ref()
            .unwrap()
            .server
            .clone()
            .unwrap()
    }

    /// Takes the apiserver away (etcd keeps running).
    pub fn stop_apiserver(&self) {
        self.run("stop-apiserver");
    }

    /// Brings the apiserver back on its old port; returns once it is ready.
    pub fn start_apiserver(&self) {
        self.run("start-apiserver");
    }

    /// Stops etcd and starts it again on the same data.
    pub fn restart_etcd(&self) {
        self.run("restart-etcd");
    }

    /// Stops the node's kubelet and starts it again; its pods' containers live on.
    pub fn restart_kubelet(&self) {
        self.run("restart-kubelet");
    }

    /// Lets the node pull from the plain-HTTP registry at `host_port`.
    pub fn allow_registry(&self, host_port: &str) {
        let status = Command::new(script())
            .arg("allow-registry")
            .arg(self.dir.path())
            .arg(host_port)
            .status()
            .unwrap();
        assert!(status.success(), "control-plane.sh allow-registry failed");
    }

    fn run(&self, verb: &str) {
        let status = Command::new(script())
            .arg(verb)
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "control-plane.sh {verb} failed");
    }

    /// An admin client.
    pub async fn client(&self) -> Client {
        client_for(&self.kubeconfig()).await
    }
}

/// A client with the credentials of the kubeconfig at `path`.
pub async fn client_for(path: &Path) -> Client {
    strata::operator::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Installs the CRDs (without CEL: the test apiserver is 1.20) and waits until served.
pub async fn install_crd(admin: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for kind in strata::operator::crd::Kind::ALL {
        let crd = kind.for_minor(20);
        crds.patch(
            &crd.metadata.name.clone().unwrap(),
            &PatchParams::apply("strata-test").force(),
            &Patch::Apply(crd),
        )
        .await
        .expect("the structural schema is accepted");
    }
    wait_crd_established(admin).await;
}

/// Waits until the EncapsulationJob and EncapsulationStream CRDs are served.
pub async fn wait_crd_established(admin: &Client) {
    for name in [
        "encapsulationjobs.strata.dev",
        "encapsulationstreams.strata.dev",
    ] {
        let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
        let established = kube::runtime::wait::await_condition(
            crds,
            name,
            kube::runtime::wait::conditions::is_crd_established(),
        );
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Where scripts/setup.sh installs Helm's engine (the helm-python-sdk wheel).
pub const HELM_PYTHON: &str = "/var/cache/strata-test/helm-venv/bin/python";

/// Renders `charts/strata` with Helm's engine and `values`, as `helm template
/// --include-crds` would: every object of the release.
pub fn render_chart(
    release: &str,
    namespace: &str,
    values: &serde_json::Value,
) -> Vec<serde_json::Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(HELM_PYTHON)
        .arg(root.join("scripts/render-chart.py"))
        .arg(root.join("charts/strata"))
        .args([release, namespace, &values.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("{HELM_PYTHON}: {e} (scripts/setup.sh installs it)"));
    assert!(
        out.status.success(),
        "rendering the chart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\n---\n")
        .filter(|doc| !doc.trim().is_empty())
        .map(|doc| {
            serde_saphyr::from_str::<serde_json::Value>(doc)
                .unwrap_or_else(|e| panic!("{e}:\n{doc}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Applies rendered objects with server-side apply, namespaces first.
pub async fn apply_all(admin: &Client, objects: &[serde_json::Value]) {
    for object in objects {
        if let Some(ns) = object["metadata"]["namespace"].as_str() {
            ensure_namespace(admin, ns).await;
        }
    }
    for object in objects {
        let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", object["apiVersion"].as_str().unwrap()),
        };
        let gvk =
            kube::api::GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap());
        let (resource, caps) = kube::discovery::pinned_kind(admin, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{gvk:?} is not served: {e}"));
        let name = object["metadata"]["name"].as_str().unwrap();
        let api: Api<kube::api::DynamicObject> = match caps.scope {
            kube::discovery::Scope::Namespaced => Api::namespaced_with(
                admin.clone(),
                object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default"),
                &resource,
            ),
            kube::discovery::Scope::Cluster => Api::all_with(admin.clone(), &resource),
        };
        apply_retrying(&api, name, object)
            .await
            .unwrap_or_else(|e| panic!("applying {} {name}: {e}", object["kind"]));
    }
}

/// Server-side applies `object`, retrying while the apiserver asks for a retry (as
/// kubectl and Tekton's controller do). A pod of a ServiceAccount created a moment
/// earlier is refused with "retry after" until the node's token controller has made
/// the account's token.
async fn apply_retrying(
    api: &Api<kube::api::DynamicObject>,
    name: &str,
    object: &serde_json::Value,
) -> Result<kube::api::DynamicObject, kube::Error> {
    let params = PatchParams::apply("strata-test").force();
    for _ in 0..30 {
        match api.patch(name, &params, &Patch::Apply(object)).await {
            Err(kube::Error::Api(status)) => match retry_after(&status) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(kube::Error::Api(status)),
            },
            done => return done,
        }
    }
    api.patch(name, &params, &Patch::Apply(object)).await
}

/// How long the apiserver asks a client to wait before trying again, if it does.
fn retry_after(status: &kube::core::Status) -> Option<Duration> {
    let seconds = status.details.as_ref()?.retry_after_seconds;
    (seconds > 0).then(|| Duration::from_secs(seconds.into()))
}

/// Writes a kubeconfig at `path` holding a fresh token of ServiceAccount `ns/name`:
/// what a pod running as that account would use. An error names the account when
/// it has no token (it does not exist, as a squatted pod's `default` account here).
pub async fn service_account_kubeconfig(
    admin: &Client,
    server: &str,
    ns: &str,
    name: &str,
    path: &Path,
) -> Result<(), String> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec!["https://kubernetes.default.svc".into()],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), ns);
    let params = Default::default();
    // The fault tests take the apiserver away just as the agent starts a pod; a
    // kubelet waits for its token as it waits for anything else.
    let token = strata::operator::retry::while_transient(
        Duration::from_secs(300),
        || accounts.create_token_request(name, &params, &request),
        |_, _| {},
    )
    .await
    .map_err(|e| format!("a token for {ns}/{name}: {e}"))?
    .status
    .ok_or_else(|| format!("no token for {ns}/{name}"))?
    .token;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: sa, namespace: {ns}}}\ncurrent-context: test\n"
    );
    std::fs::write(path, kubeconfig).map_err(|e| format!("{}: {e}", path.display()))
}

pub async fn ensure_namespace(admin: &Client, ns: &str) {
    let object =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    Api::<Namespace>::all(admin.clone())
        .patch(
            ns,
            &PatchParams::apply("strata-test").force(),
            &Patch::Apply(object),
        )
        .await
        .unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
}
