//! Runs a Tekton Task's step script locally, as a Tekton controller and pod would:
//! params, results paths, workspace paths and context are substituted into the step's
//! env values and args (never into the script), and the script runs with that
//! environment and `strata` on the PATH. Results are read back from their files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A param value.
pub enum Param {
    Str(String),
    Array(Vec<String>),
}

pub fn s(v: impl Into<String>) -> Param {
    Param::Str(v.into())
}

/// `strata-build`'s params for pushing `tree` (in the source workspace) to `image`,
/// a plain-HTTP test registry, planned against `priors` with at most 4 layers.
pub fn build_params(image: String, tree: &str, priors: Vec<String>) -> Vec<(&'static str, Param)> {
    vec![
        ("IMAGE", s(image)),
        ("ROOTFS", s(tree)),
        ("PRIOR_IMAGES", Param::Array(priors)),
        ("MAX_LAYERS", s("4")),
        ("TLS_VERIFY", s("false")),
    ]
}

/// The outcome of a step.
pub struct Run {
    pub output: Output,
    pub results: BTreeMap<String, String>,
}

impl Run {
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

fn task(file: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests/tekton")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Where a step's substitutions point: results, workspaces and the run's context.
struct Places {
    results: String,
    /// Each declared workspace's path, if one is bound.
    workspaces: Vec<(String, Option<String>)>,
    namespace: String,
    run_uid: String,
}

/// A Task's first step with its params, results, workspaces and context substituted,
/// as Tekton hands it to the pod.
struct Step {
    name: String,
    image: String,
    security_context: serde_json::Value,
    env: Vec<(String, String)>,
    args: Vec<String>,
    script: String,
}

/// The Task's params: their defaults, overridden by `params` (each must be declared).
fn param_values(
    file: &str,
    spec: &serde_json::Value,
    params: Vec<(&str, Param)>,
) -> BTreeMap<String, Param> {
    let declared = spec["params"].as_array().unwrap();
    let mut values: BTreeMap<String, Param> = BTreeMap::new();
    for p in declared {
        let name = p["name"].as_str().unwrap().to_string();
        match &p["default"] {
            serde_json::Value::String(v) => values.insert(name, s(v.clone())),
            serde_json::Value::Array(a) => values.insert(
                name,
                Param::Array(a.iter().map(|v| v.as_str().unwrap().to_string()).collect()),
            ),
            _ => None,
        };
    }
    for (name, value) in params {
        assert!(
            declared.iter().any(|p| p["name"] == name),
            "{file} has no param {name}"
        );
        values.insert(name.to_string(), value);
    }
    values
}

fn declared_workspaces(spec: &serde_json::Value) -> Vec<String> {
    spec["workspaces"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|w| w["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Substitutes into the step's image, env values and args (never into the script), as
/// Tekton does; array params expand only as a whole `$(params.X[*])` argument.
fn resolve(
    file: &str,
    task: &serde_json::Value,
    params: Vec<(&str, Param)>,
    places: &Places,
) -> Step {
    let spec = &task["spec"];
    let values = param_values(file, spec, params);
    let substitute = |text: &str| -> String {
        let mut out = text.to_string();
        for (name, value) in &values {
            if let Param::Str(v) = value {
                out = out.replace(&format!("$(params.{name})"), v);
            }
        }
        // After params: a param's default may name the context.
        out = out.replace("$(context.taskRun.namespace)", &places.namespace);
        out = out.replace("$(context.taskRun.uid)", &places.run_uid);
        for r in spec["results"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            let path = format!("{}/{name}", places.results);
            out = out.replace(&format!("$(results.{name}.path)"), &path);
        }
        for (name, path) in &places.workspaces {
            out = out.replace(
                &format!("$(workspaces.{name}.path)"),
                path.as_deref().unwrap_or_default(),
            );
            let bound = if path.is_some() { "true" } else { "false" };
            out = out.replace(&format!("$(workspaces.{name}.bound)"), bound);
        }
        assert!(!out.contains("$("), "unresolved substitution in {text:?}");
        out
    };
    let step = &spec["steps"][0];
    let script = step["script"].as_str().unwrap();
    assert!(
        !script.contains("$(params."),
        "{file}: params must not be pasted into the script"
    );
    let mut args = Vec::new();
    for a in step["args"].as_array().into_iter().flatten() {
        let a = a.as_str().unwrap();
        let expanded = a
            .strip_prefix("$(params.")
            .and_then(|r| r.strip_suffix("[*])"))
            .and_then(|name| match values.get(name) {
                Some(Param::Array(items)) => Some(items.clone()),
                _ => None,
            });
        match expanded {
            Some(items) => args.extend(items),
            None => args.push(substitute(a)),
        }
    }
    let env = step["env"].as_array().into_iter().flatten();
    Step {
        name: step["name"].as_str().unwrap().to_string(),
        image: substitute(step["image"].as_str().unwrap()),
        security_context: step["securityContext"].clone(),
        env: env
            .map(|e| {
                let value = substitute(e["value"].as_str().unwrap_or(""));
                (e["name"].as_str().unwrap().to_string(), value)
            })
            .collect(),
        args,
        script: script.to_string(),
    }
}

/// Runs the first step of the Task in `manifests/tekton/<file>`.
pub fn run_task(
    file: &str,
    params: Vec<(&str, Param)>,
    workspaces: &[(&str, &Path)],
    env: &[(&str, &std::ffi::OsStr)],
    scratch: &Path,
) -> Run {
    let task = task(file);
    let results_dir = scratch.join("results");
    std::fs::create_dir_all(&results_dir).unwrap();
    let places = Places {
        results: results_dir.display().to_string(),
        workspaces: declared_workspaces(&task["spec"])
            .into_iter()
            .map(|name| {
                let bound = workspaces.iter().find(|(w, _)| *w == name);
                let path = bound.map(|(_, p)| p.display().to_string());
                (name, path)
            })
            .collect(),
        namespace: "default".into(),
        // Unique per run, as Tekton's is: the scratch directory is.
        run_uid: format!(
            "run-{}",
            scratch.file_name().unwrap_or_default().to_string_lossy()
        ),
    };
    let step = resolve(file, &task, params, &places);
    let script_path = scratch.join("step.sh");
    std::fs::write(&script_path, &step.script).unwrap();
    let strata_dir = PathBuf::from(env!("CARGO_BIN_EXE_strata"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        strata_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command.arg(&script_path).args(&step.args).env("PATH", path);
    command.envs(step.env);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    let results = std::fs::read_dir(&results_dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    Run { output, results }
}

/// Where Tekton mounts a step's scripts, results and workspaces.
const SCRIPTS: &str = "/tekton/scripts";
const RESULTS: &str = "/tekton/results";

/// A TaskRun of the Task in `manifests/tekton/<file>` as the pod Tekton would create
/// for it, and the ConfigMap holding its script.
pub struct TaskPod {
    pub pod: serde_json::Value,
    pub script: serde_json::Value,
}

/// The container that reads the results back: Tekton's entrypoint copies them into
/// the termination message as JSON after the step; here a container after it does.
/// Fixed text, given the results directory as `$1`: nothing of the run is in it.
pub const RESULTS_CONTAINER: &str = "results";
const READ_RESULTS: &str = r#"cd "$1" && for f in *; do [ -f "$f" ] && jq -Rsc --arg k "$f" '{key: $k, value: .}' "$f"; done | jq -sc from_entries > /dev/termination-log"#;

/// The pod (and script) for running the Task in `file` named `name` in `namespace` as
/// `service_account`, with `workspaces` as (name, volume source) pairs. The step is
/// the pod's init container, named `step-<name>`, as Tekton names it.
pub fn task_pod(
    file: &str,
    name: &str,
    namespace: &str,
    service_account: &str,
    params: Vec<(&str, Param)>,
    workspaces: &[(&str, serde_json::Value)],
) -> TaskPod {
    let task = task(file);
    let spec = &task["spec"];
    let declared = declared_workspaces(spec);
    let places = Places {
        results: RESULTS.into(),
        workspaces: declared
            .iter()
            .map(|w| {
                let bound = workspaces.iter().any(|(b, _)| b == w);
                (w.clone(), bound.then(|| format!("/workspace/{w}")))
            })
            .collect(),
        namespace: namespace.into(),
        run_uid: format!("run-{name}"),
    };
    let step = resolve(file, &task, params, &places);
    let script_map = format!("{name}-scripts");
    let mut volumes = vec![
        serde_json::json!({"name": "tekton-internal-scripts",
            "configMap": {"name": script_map, "defaultMode": 0o555}}),
        serde_json::json!({"name": "tekton-internal-results", "emptyDir": {}}),
    ];
    let mut mounts = vec![
        serde_json::json!({"name": "tekton-internal-scripts", "mountPath": SCRIPTS, "readOnly": true}),
        serde_json::json!({"name": "tekton-internal-results", "mountPath": RESULTS}),
    ];
    for (w, source) in workspaces {
        assert!(
            declared.iter().any(|d| d == w),
            "{file} has no workspace {w}"
        );
        let decl = spec["workspaces"].as_array().unwrap().iter();
        let read_only = decl
            .filter(|d| d["name"] == *w)
            .any(|d| d["readOnly"] == true);
        let mut volume = source.clone();
        volume["name"] = format!("ws-{w}").into();
        volumes.push(volume);
        mounts.push(serde_json::json!({"name": format!("ws-{w}"),
            "mountPath": format!("/workspace/{w}"), "readOnly": read_only}));
    }
    let env: Vec<serde_json::Value> = step
        .env
        .iter()
        .map(|(k, v)| serde_json::json!({"name": k, "value": v}))
        .collect();
    let mut container = serde_json::json!({
        "name": format!("step-{}", step.name),
        "image": step.image,
        "command": [format!("{SCRIPTS}/script-0")],
        "args": step.args,
        "env": env,
        "volumeMounts": mounts,
    });
    if !step.security_context.is_null() {
        container["securityContext"] = step.security_context.clone();
    }
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace,
            "labels": {"tekton.dev/task": task["metadata"]["name"]}},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": service_account,
            "volumes": volumes,
            "initContainers": [container],
            "containers": [{
                "name": RESULTS_CONTAINER, "image": step.image,
                "command": ["bash", "-c", READ_RESULTS, "read-results", RESULTS],
                "volumeMounts": [{"name": "tekton-internal-results", "mountPath": RESULTS}],
            }],
        },
    });
    let script = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": script_map, "namespace": namespace},
        "data": {"script-0": step.script},
    });
    TaskPod { pod, script }
}

/// The results a finished task pod's results container reported.
pub fn pod_results(termination_message: &str) -> BTreeMap<String, String> {
    serde_json::from_str(termination_message)
        .unwrap_or_else(|e| panic!("results {termination_message:?}: {e}"))
}
