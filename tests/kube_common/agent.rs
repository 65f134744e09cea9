//! A test node agent: the kubelet's part for the operator tests, since the test control
//! plane has no nodes. It watches pods, runs each container's command as a local
//! process (init containers first, in order), and writes pod status as a kubelet
//! would: phase, container states, exit codes and termination messages.
//!
//! Volumes become directories: emptyDir a fresh one, hostPath the path itself, a
//! claim the hostPath of the PersistentVolume bound to it, a Secret its keys written
//! out. Arguments and the termination message path that fall
//! under a mount path are rewritten to the directory behind it. Deleting a pod kills
//! its process. Everything else is the real apiserver.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};

/// How to run pods.
#[derive(Clone)]
pub struct AgentConfig {
    /// What a container's `strata` command runs.
    pub strata: PathBuf,
    /// The apiserver's URL; each pod's processes get a kubeconfig with a token of the
    /// pod's ServiceAccount, as in-cluster config would give them.
    pub server: String,
    /// Per-pod directories go here.
    pub root: PathBuf,
}

/// A running agent; it stops when dropped.
pub struct Agent {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn start(admin: Client, config: AgentConfig) -> Agent {
    let task = tokio::spawn(async move {
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let pods: Api<Pod> = Api::all(admin.clone());
        // Backoff, as the kubelet's informers have: an API server that is away must
        // not turn the watch into a busy loop.
        let mut events = watcher::watcher(pods, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            let Ok(pod) = event else { continue };
            let fresh = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_none_or(|p| p == "Pending");
            if !fresh || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if !seen.lock().unwrap().insert(pod.uid().unwrap_or_default()) {
                continue;
            }
            let (admin, config) = (admin.clone(), config.clone());
            tokio::spawn(async move {
                if let Err(e) = run_pod(&admin, &config, &pod).await {
                    eprintln!("agent: pod {}: {e}", pod.name_any());
                }
            });
        }
    });
    Agent { task }
}

type Result<T> = std::result::Result<T, String>;

async fn run_pod(admin: &Client, config: &AgentConfig, pod: &Pod) -> Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(admin.clone(), &ns);
    let name = pod.name_any();
    let dir = config.root.join(pod.uid().unwrap_or_default());
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let volumes = materialise_volumes(admin, &ns, pod, &dir).await?;
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let kubeconfig = dir.join("kubeconfig");
    super::cluster::service_account_kubeconfig(admin, &config.server, &ns, &account, &kubeconfig)
        .await?;
    let spec = pod.spec.clone().unwrap_or_default();
    let init = spec.init_containers.clone().unwrap_or_default();
    let main = spec.containers.clone();
    let mut status = PodStatusDoc::new(&init, &main);
    status.phase = "Running";
    write_status(&api, &name, &status).await?;
    let steps = init
        .iter()
        .map(|c| (true, c))
        .chain(main.iter().map(|c| (false, c)));
    for (i, (is_init, container)) in steps.enumerate() {
        let started = jiff::Timestamp::now();
        let outcome =
            run_container(&api, &name, config, container, &volumes, &dir, &kubeconfig).await?;
        let Some((code, message)) = outcome else {
            return Ok(()); // the pod was deleted; there is nobody to report to
        };
        status.terminate(i, is_init, code, &message, started);
        if code != 0 {
            status.phase = "Failed";
            return write_status(&api, &name, &status).await;
        }
        write_status(&api, &name, &status).await?;
    }
    status.phase = "Succeeded";
    write_status(&api, &name, &status).await
}

/// Mount path → local directory.
type Mounts = BTreeMap<String, PathBuf>;

async fn materialise_volumes(
    admin: &Client,
    ns: &str,
    pod: &Pod,
    dir: &Path,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in volumes {
        let path = if let Some(h) = &v.host_path {
            PathBuf::from(&h.path)
        } else if let Some(claim) = &v.persistent_volume_claim {
            claimed_path(admin, ns, &claim.claim_name).await?
        } else if let Some(secret) = &v.secret {
            let local = dir.join("volumes").join(&v.name);
            std::fs::create_dir_all(&local).map_err(|e| e.to_string())?;
            let name = secret.secret_name.clone().unwrap_or_default();
            let s = Api::<Secret>::namespaced(admin.clone(), ns)
                .get(&name)
                .await
                .map_err(|e| format!("secret {name}: {e}"))?;
            let data = s.data.unwrap_or_default();
            for item in secret.items.clone().unwrap_or_default() {
                let bytes = data.get(&item.key).map(|b| b.0.clone()).unwrap_or_default();
                std::fs::write(local.join(&item.path), bytes).map_err(|e| e.to_string())?;
            }
            local
        } else {
            let local = dir.join("volumes").join(&v.name);
            std::fs::create_dir_all(&local).map_err(|e| e.to_string())?;
            local
        };
        out.insert(v.name, path);
    }
    Ok(out)
}

/// The directory behind claim `name`, retried for two minutes as a kubelet retries a
/// mount: the fault tests take the apiserver away just as pods start.
async fn claimed_path(admin: &Client, ns: &str, name: &str) -> Result<PathBuf> {
    let mut tries = 0;
    loop {
        match bound_host_path(admin, ns, name).await {
            Err(e) if tries < 120 => {
                tries += 1;
                if tries == 1 {
                    eprintln!("agent: {e}; retrying");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            done => return done,
        }
    }
}

/// The hostPath of the volume bound to claim `name`.
async fn bound_host_path(admin: &Client, ns: &str, name: &str) -> Result<PathBuf> {
    let claim = Api::<PersistentVolumeClaim>::namespaced(admin.clone(), ns)
        .get(name)
        .await
        .map_err(|e| format!("claim {ns}/{name}: {e}"))?;
    let volume = claim
        .spec
        .and_then(|s| s.volume_name)
        .ok_or_else(|| format!("claim {ns}/{name} is not bound to a volume"))?;
    let pv = Api::<PersistentVolume>::all(admin.clone())
        .get(&volume)
        .await
        .map_err(|e| format!("volume {volume}: {e}"))?;
    let path = pv.spec.and_then(|s| s.host_path).map(|h| h.path);
    path.map(PathBuf::from)
        .ok_or_else(|| format!("volume {volume} has no hostPath the agent can mount"))
}

/// `arg` with a mount path (alone, or as a `--flag=` value) made the local directory.
fn rewrite(arg: &str, mounts: &Mounts) -> String {
    match arg.strip_prefix("--").and_then(|a| a.split_once('=')) {
        Some((flag, value)) => format!("--{flag}={}", rewrite_path(value, mounts)),
        None => rewrite_path(arg, mounts),
    }
}

fn rewrite_path(arg: &str, mounts: &Mounts) -> String {
    for (mount, local) in mounts.iter().rev() {
        if arg == mount {
            return local.display().to_string();
        }
        if let Some(rest) = arg.strip_prefix(&format!("{mount}/")) {
            return local.join(rest).display().to_string();
        }
    }
    arg.to_string()
}

/// Runs one container to its end: `Some((exit code, termination message))`, or
/// `None` when the pod was deleted meanwhile (the process is killed).
async fn run_container(
    api: &Api<Pod>,
    pod: &str,
    config: &AgentConfig,
    container: &Container,
    volumes: &BTreeMap<String, PathBuf>,
    dir: &Path,
    kubeconfig: &Path,
) -> Result<Option<(i32, String)>> {
    let mut mounts: Mounts = container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| Some((m.mount_path.clone(), volumes.get(&m.name)?.clone())))
        .collect();
    let termination_path = container
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    let termination = dir.join(format!("{}.termination", container.name));
    let _ = std::fs::remove_file(&termination);
    mounts.insert(termination_path, termination.clone());
    let argv: Vec<String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(|a| rewrite(a, &mounts))
        .collect();
    let (program, args) = argv.split_first().ok_or("a container without a command")?;
    let program = if program == "strata" {
        config.strata.clone()
    } else {
        PathBuf::from(program)
    };
    let log = dir.join(format!("{}.log", container.name));
    let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        .kill_on_drop(true);
    for e in container.env.iter().flatten() {
        let value = e.value.clone().unwrap_or_default();
        command.env(&e.name, rewrite(&value, &mounts));
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("{}: {e}", container.name))?;
    let code = loop {
        tokio::select! {
            exit = child.wait() => break exit.map_err(|e| e.to_string())?.code().unwrap_or(137),
            () = tokio::time::sleep(Duration::from_millis(250)) => {
                let gone = match api.get_opt(pod).await {
                    Ok(p) => p.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
                    Err(_) => false,
                };
                if gone {
                    let _ = child.kill().await;
                    return Ok(None);
                }
            }
        }
    };
    let mut message = std::fs::read_to_string(&termination).unwrap_or_default();
    let fallback = container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if message.is_empty() && code != 0 && fallback {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(80).collect();
        message = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    }
    let mut cut = message.len().min(4096);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    Ok(Some((code, message)))
}

/// The pod status the agent writes, built up as containers end.
struct PodStatusDoc {
    phase: &'static str,
    init: Vec<serde_json::Value>,
    main: Vec<serde_json::Value>,
    start: String,
}

fn waiting(c: &Container) -> serde_json::Value {
    serde_json::json!({
        "name": c.name, "ready": false, "restartCount": 0,
        "image": c.image.clone().unwrap_or_default(), "imageID": "",
        "state": {"waiting": {"reason": "PodInitializing"}}
    })
}

impl PodStatusDoc {
    fn new(init: &[Container], main: &[Container]) -> Self {
        PodStatusDoc {
            phase: "Pending",
            init: init.iter().map(waiting).collect(),
            main: main.iter().map(waiting).collect(),
            start: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap()
                .to_string(),
        }
    }

    fn terminate(
        &mut self,
        i: usize,
        is_init: bool,
        code: i32,
        message: &str,
        started: jiff::Timestamp,
    ) {
        let (list, index) = if is_init {
            (&mut self.init, i)
        } else {
            let n = self.init.len();
            (&mut self.main, i - n)
        };
        let second = |t: jiff::Timestamp| t.round(jiff::Unit::Second).unwrap().to_string();
        list[index]["state"] = serde_json::json!({"terminated": {
            "exitCode": code,
            "reason": if code == 0 { "Completed" } else { "Error" },
            "message": message,
            "startedAt": second(started),
            "finishedAt": second(jiff::Timestamp::now()),
        }});
    }
}

async fn write_status(api: &Api<Pod>, name: &str, s: &PodStatusDoc) -> Result<()> {
    let mut status = serde_json::json!({
        "phase": s.phase,
        "startTime": s.start,
        "containerStatuses": s.main,
    });
    if !s.init.is_empty() {
        status["initContainerStatuses"] = serde_json::json!(s.init);
    }
    let patch = serde_json::json!({"status": status});
    let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
    // A kubelet keeps a pod's status until the API server takes it.
    let written = strata::operator::retry::while_transient(
        Duration::from_secs(600),
        || api.patch_status(name, &params, &patch),
        |_, _| {},
    );
    match written.await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(format!("status of {name}: {e}")),
    }
}
