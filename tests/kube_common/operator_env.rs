//! The operator's test environment: the real control plane with the CRD and the Helm
//! chart's RBAC, a registry, the node agent, and the `strata controller` binary running
//! as the chart's controller user. Shared by `tests/operator.rs` and the controller
//! benchmark.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use strata::operator::crd::EncapsulationJob;

use super::agent::{self, AgentConfig};
use super::cluster::{self, ControlPlane};
use super::supervisor::{supervise, Supervised};
use crate::common::free_port;
use crate::common::registry::{start_registry, Registry};
use crate::common::{dpkg_tree, real_parts};

pub struct Env {
    pub cp: ControlPlane,
    pub admin: Client,
    pub registry: Registry,
    _agent: agent::Agent,
    controller: Mutex<Option<Supervised>>,
    pub health_port: u16,
    controller_args: Vec<String>,
    controller_kubeconfig: PathBuf,
    pub log: PathBuf,
    pub trees: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Env {
    /// Starts `strata controller` with the arguments of the chart's Deployment, as
    /// its ServiceAccount, in the release namespace, restarted whenever it exits.
    pub fn start_controller(&self) {
        let child =
            self.supervise_controller("strata-controller-test", self.health_port, &self.log);
        *self.controller.lock().unwrap() = Some(child);
        self.wait_ready(self.health_port);
    }

    /// How often the controller started by [`Env::start_controller`] exited by itself.
    pub fn controller_exits(&self) -> u32 {
        let guard = self.controller.lock().unwrap();
        guard.as_ref().expect("a running controller").exits()
    }

    /// A scratch directory that lives as long as the environment.
    pub fn scratch(&self) -> &std::path::Path {
        self._tmp.path()
    }

    /// A second replica, as the chart's second pod would be, logging JSON (as a log
    /// pipeline would ask); it must stand by while the first leads.
    pub fn start_standby(&self, port: u16, log: &std::path::Path) -> Supervised {
        let child = self.supervise_controller("strata-controller-standby", port, log);
        self.wait_ready(port);
        child
    }

    fn supervise_controller(&self, pod_name: &str, port: u16, log: &std::path::Path) -> Supervised {
        let args: Vec<String> = self
            .controller_args
            .iter()
            .map(|a| match a.starts_with("--health-addr=") {
                true => format!("--health-addr=127.0.0.1:{port}"),
                false => a.clone(),
            })
            .chain((pod_name == "strata-controller-standby").then(|| "--log-format=json".into()))
            .collect();
        let (kubeconfig, log, pod_name) = (
            self.controller_kubeconfig.clone(),
            log.to_path_buf(),
            pod_name.to_string(),
        );
        supervise(move || {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
            command
                .args(&args)
                .env("KUBECONFIG", &kubeconfig)
                .env("POD_NAME", &pod_name)
                .env("POD_NAMESPACE", RELEASE_NAMESPACE)
                .env("RUST_LOG", "info,strata=debug")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null());
            command
        })
    }

    /// Waits until the controller on `port` answers /readyz.
    fn wait_ready(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = || {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
                && http_get(port, "/readyz").starts_with("HTTP/1.1 200")
        };
        while !ready() {
            assert!(
                Instant::now() < deadline,
                "the controller did not become ready:\n{}",
                self.controller_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the controller (SIGKILL) and does not restart it.
    pub fn kill_controller(&self) {
        let c = self.controller.lock().unwrap().take();
        c.expect("a running controller").kill();
    }

    pub fn image(&self, name: &str) -> String {
        format!("docker://127.0.0.1:{}/strata/{name}", self.registry.port)
    }

    pub fn jobs(&self, ns: &str) -> Api<EncapsulationJob> {
        Api::namespaced(self.admin.clone(), ns)
    }

    /// A job encapsulating `trees/<tree>` (on the trees' claim).
    pub async fn create(
        &self,
        ns: &str,
        name: &str,
        stream: &str,
        tree: &str,
        extra: serde_json::Value,
    ) -> EncapsulationJob {
        let mut spec = json!({
            "source": {"rootfs": {"volume": "trees", "path": tree}},
            "stream": stream,
            "output": {"image": self.image(&format!("{stream}:{name}"))},
            "planner": {"maxLayers": 4},
            "podTemplate": {"volumes": [trees_volume()]},
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        create_job(&self.jobs(ns), name, spec).await
    }

    /// Waits until the job has finished, one way or the other.
    pub async fn finished(&self, ns: &str, name: &str, within: Duration) -> EncapsulationJob {
        finished(&self.jobs(ns), name, within).await
    }

    pub async fn pods(&self, ns: &str, job: &EncapsulationJob) -> Vec<Pod> {
        job_pods(&self.admin, ns, job).await
    }

    /// Runs the Tekton task `strata-encapsulation-job` against this control plane, in
    /// the scratch directory `scratch` (whose name is the run's UID); `None` when
    /// kubectl or jq is missing.
    pub fn run_job_task(
        &self,
        scratch: &str,
        params: Vec<(&str, crate::common::tekton::Param)>,
    ) -> Option<crate::common::tekton::Run> {
        if !crate::common::real_parts(&["kubectl", "jq"]) {
            return None;
        }
        let kubeconfig = self.cp.kubeconfig();
        let environment = [
            ("KUBECONFIG", kubeconfig.as_os_str()),
            ("POLL_SECONDS", "0.3".as_ref()),
        ];
        let scratch = self.scratch().join(scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        Some(tokio::task::block_in_place(|| {
            crate::common::tekton::run_task(
                "strata-encapsulation-job.yaml",
                params,
                &[],
                &environment,
                &scratch,
            )
        }))
    }

    pub fn controller_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub async fn wait_for(
    api: &Api<EncapsulationJob>,
    name: &str,
    within: Duration,
    done: impl Fn(&EncapsulationJob) -> bool,
) -> EncapsulationJob {
    let deadline = Instant::now() + within;
    loop {
        let job = api.get(name).await.unwrap();
        if done(&job) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {name} did not get there within {within:?}; status: {}",
            serde_json::to_string_pretty(&job.status).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates the job `name` with `spec`.
pub async fn create_job(
    api: &Api<EncapsulationJob>,
    name: &str,
    spec: serde_json::Value,
) -> EncapsulationJob {
    let job: EncapsulationJob = serde_json::from_value(json!({
        "apiVersion": "strata.dev/v1alpha1", "kind": "EncapsulationJob",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &job).await.unwrap()
}

/// Waits until the job has finished, one way or the other.
pub async fn finished(
    api: &Api<EncapsulationJob>,
    name: &str,
    within: Duration,
) -> EncapsulationJob {
    wait_for(api, name, within, |j| {
        j.status
            .as_ref()
            .is_some_and(strata::operator::status::finished)
    })
    .await
}

/// Waits until the job's first attempt has started.
pub async fn started(
    api: &Api<EncapsulationJob>,
    name: &str,
    within: Duration,
) -> EncapsulationJob {
    wait_for(api, name, within, |j| {
        j.status.as_ref().is_some_and(|s| s.attempts == 1)
    })
    .await
}

/// The worker pods of `job`, every attempt's.
pub async fn job_pods(admin: &Client, ns: &str, job: &EncapsulationJob) -> Vec<Pod> {
    let selector = format!("strata.dev/job-uid={}", job.uid().unwrap());
    Api::<Pod>::namespaced(admin.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
}

/// Asks for job `name` to be cancelled once its first attempt has started.
pub async fn cancel_once_started(api: &Api<EncapsulationJob>, name: &str, within: Duration) {
    started(api, name, within).await;
    let cancel = json!({"spec": {"cancel": true}});
    api.patch(name, &Default::default(), &kube::api::Patch::Merge(cancel))
        .await
        .unwrap();
}

/// Asserts the job's `type_` condition has `status` and, if given, `reason`.
pub fn expect(job: &EncapsulationJob, type_: &str, status: &str, reason: Option<&str>) {
    let c = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
    let ok = c.is_some_and(|c| c.status == status && reason.is_none_or(|r| c.reason == r));
    assert!(
        ok,
        "{}: expected {type_}={status} ({reason:?}); status: {}",
        job.name_any(),
        serde_json::to_string_pretty(&job.status).unwrap()
    );
}

pub fn time(t: &Option<String>) -> jiff::Timestamp {
    t.as_deref().expect("a time").parse().unwrap()
}

/// The namespace the chart is installed in.
pub const RELEASE_NAMESPACE: &str = "strata-system";
/// The namespaces the controller watches, where the tests create jobs.
const JOB_NAMESPACES: [&str; 2] = ["e2e", "load"];

pub async fn setup() -> Option<Env> {
    if !real_parts(&["docker-registry", "skopeo", "etcd"]) {
        return None;
    }
    if !std::path::Path::new(cluster::HELM_PYTHON).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{}: scripts/setup.sh installs it",
            cluster::HELM_PYTHON
        );
        println!("skipped: Helm's engine is not installed (scripts/setup.sh)");
        return None;
    }
    let cp = cluster::start()?;
    let admin = cp.client().await;
    let tmp = tempfile::tempdir().unwrap();
    let registry = start_registry(tmp.path());
    let health_port = free_port("127.0.0.1");
    let values = json!({
        "watchNamespaces": JOB_NAMESPACES,
        "insecureRegistries": [format!("127.0.0.1:{}", registry.port)],
        "backoffBaseSeconds": 0.5,
        "metrics": {"port": health_port},
    });
    let objects = cluster::render_chart("strata", RELEASE_NAMESPACE, &values);
    cluster::apply_all(&admin, &objects).await;
    cluster::wait_crd_established(&admin).await;
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("the chart has a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut controller_args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    // Probes reach it on loopback here, not on the pod's address.
    for a in &mut controller_args {
        if a.starts_with("--health-addr=") {
            *a = format!("--health-addr=127.0.0.1:{health_port}");
        }
    }
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let controller_kubeconfig = tmp.path().join("controller.kubeconfig");
    cluster::service_account_kubeconfig(
        &admin,
        &cp.server(),
        RELEASE_NAMESPACE,
        account,
        &controller_kubeconfig,
    )
    .await
    .unwrap();
    let trees = tmp.path().join("trees");
    dpkg_tree(&trees.join("v1"), "1");
    dpkg_tree(&trees.join("v2"), "2");
    cluster::apply_all(&admin, &trees_claims(&trees, &JOB_NAMESPACES)).await;
    let agent = agent::start(
        admin.clone(),
        AgentConfig {
            strata: PathBuf::from(env!("CARGO_BIN_EXE_strata")),
            server: cp.server(),
            root: tmp.path().join("agent"),
        },
    );
    let env = Env {
        log: tmp.path().join("controller.log"),
        health_port,
        controller_args,
        controller_kubeconfig,
        cp,
        admin,
        registry,
        _agent: agent,
        controller: Mutex::new(None),
        trees,
        _tmp: tmp,
    };
    env.start_controller();
    Some(env)
}

/// Jobs reach the trees as a cluster's jobs reach storage, through a claim the
/// default job policy allows: a PersistentVolume per namespace, pre-bound to the
/// claim `trees` there (the test control plane runs no volume binder), which the
/// test node agent resolves to the directory.
pub fn trees_claims(trees: &std::path::Path, namespaces: &[&str]) -> Vec<serde_json::Value> {
    let size = json!({"storage": "1Gi"});
    namespaces
        .iter()
        .flat_map(|ns| {
            let volume = format!("strata-test-trees-{ns}");
            [
                json!({
                    "apiVersion": "v1", "kind": "PersistentVolume",
                    "metadata": {"name": volume},
                    "spec": {
                        "capacity": size, "accessModes": ["ReadOnlyMany"],
                        "storageClassName": "",
                        "hostPath": {"path": trees.display().to_string()},
                        "claimRef": {"namespace": ns, "name": TREES_CLAIM},
                    },
                }),
                json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": TREES_CLAIM, "namespace": ns},
                    "spec": {
                        "accessModes": ["ReadOnlyMany"], "storageClassName": "",
                        "volumeName": volume, "resources": {"requests": size},
                    },
                }),
            ]
        })
        .collect()
}

/// The claim holding the trees in each job namespace.
pub const TREES_CLAIM: &str = "trees";

/// The pod-template volume `trees`: the trees' claim, read-only.
pub fn trees_volume() -> serde_json::Value {
    json!({"name": "trees", "persistentVolumeClaim": {"claimName": TREES_CLAIM, "readOnly": true}})
}

/// A plain HTTP GET against the controller's health port.
pub fn http_get(port: u16, path: &str) -> String {
    http_get_at("127.0.0.1", port, path)
}

/// A plain HTTP GET against a controller serving on `host`.
pub fn http_get_at(host: &str, port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((host, port))
        .unwrap_or_else(|e| panic!("the controller serves on {host}:{port}: {e}"));
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}
