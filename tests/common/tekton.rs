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

/// Runs the first step of the Task in `manifests/tekton/<file>`.
pub fn run_task(
    file: &str,
    params: Vec<(&str, Param)>,
    workspaces: &[(&str, &Path)],
    env: &[(&str, &std::ffi::OsStr)],
    scratch: &Path,
) -> Run {
    let task = task(file);
    let spec = &task["spec"];
    let mut values: BTreeMap<String, Param> = BTreeMap::new();
    for p in spec["params"].as_array().unwrap() {
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
            values.contains_key(name)
                || spec["params"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == name),
            "{file} has no param {name}"
        );
        values.insert(name.to_string(), value);
    }
    let results_dir = scratch.join("results");
    std::fs::create_dir_all(&results_dir).unwrap();
    let declared: Vec<String> = spec["workspaces"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|w| w["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    // Unique per run, as Tekton's is: the scratch directory is.
    let run_uid = format!(
        "run-{}",
        scratch.file_name().unwrap_or_default().to_string_lossy()
    );
    let substitute = |text: &str| -> String {
        let mut out = text.to_string();
        for (name, value) in &values {
            if let Param::Str(v) = value {
                out = out.replace(&format!("$(params.{name})"), v);
            }
        }
        // After params: a param's default may name the context.
        out = out.replace("$(context.taskRun.namespace)", "default");
        out = out.replace("$(context.taskRun.uid)", &run_uid);
        for r in spec["results"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            let path = results_dir.join(name);
            out = out.replace(
                &format!("$(results.{name}.path)"),
                &path.display().to_string(),
            );
        }
        for name in &declared {
            let bound = workspaces.iter().find(|(w, _)| w == name);
            let path = bound
                .map(|(_, p)| p.display().to_string())
                .unwrap_or_default();
            out = out.replace(&format!("$(workspaces.{name}.path)"), &path);
            out = out.replace(
                &format!("$(workspaces.{name}.bound)"),
                if bound.is_some() { "true" } else { "false" },
            );
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
    let script_path = scratch.join("step.sh");
    std::fs::write(&script_path, script).unwrap();
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
    command.arg(&script_path).args(&args).env("PATH", path);
    for e in step["env"].as_array().into_iter().flatten() {
        command.env(
            e["name"].as_str().unwrap(),
            substitute(e["value"].as_str().unwrap_or("")),
        );
    }
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
