//! The runtime part of an image config (user, environment, entrypoint, command,
//! working directory, labels): what a rechunked image keeps of its source, what
//! `--config` gives, and what the flags set on top.

use std::collections::HashMap;
use std::path::Path;

use ocidir::oci_spec::image::{Config, ImageConfiguration, ImageManifest};
use sha2::Digest as _;

use super::ImageError;

/// The largest config read, from a source image or a `--config` file; real ones are a
/// few KiB.
const MAX_CONFIG: u64 = 1 << 20;

/// What the command line sets of the runtime config, over the base.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Replaces the base (a source image's runtime config) as a whole.
    pub file: Option<Config>,
    /// `USER[:GROUP]`.
    pub user: Option<String>,
    /// `KEY=VALUE`, each replacing the base's value of `KEY`.
    pub env: Vec<String>,
    /// The entrypoint, as an argv list.
    pub entrypoint: Option<Vec<String>>,
    /// The default arguments, as an argv list.
    pub cmd: Option<Vec<String>>,
    /// The working directory.
    pub working_dir: Option<String>,
}

impl Overrides {
    /// `base` with these overrides applied: the file replaces it, then each flag
    /// replaces its field (an `--env` only its key).
    pub fn apply(&self, base: Config) -> Config {
        let mut config = self.file.clone().unwrap_or(base);
        if let Some(user) = &self.user {
            config.set_user(Some(user.clone()));
        }
        if !self.env.is_empty() {
            let mut env = config.env().clone().unwrap_or_default();
            for pair in &self.env {
                let key = pair.split('=').next().unwrap_or("");
                env.retain(|e| e.split('=').next() != Some(key));
                env.push(pair.clone());
            }
            config.set_env(Some(env));
        }
        if let Some(entrypoint) = &self.entrypoint {
            config.set_entrypoint(Some(entrypoint.clone()));
        }
        if let Some(cmd) = &self.cmd {
            config.set_cmd(Some(cmd.clone()));
        }
        if let Some(dir) = &self.working_dir {
            config.set_working_dir(Some(dir.clone()));
        }
        config
    }
}

/// Adds `labels` to `config`'s, each replacing one of the same key.
pub fn with_labels(
    mut config: Config,
    labels: impl IntoIterator<Item = (String, String)>,
) -> Config {
    let mut all: HashMap<String, String> = config.labels().clone().unwrap_or_default();
    all.extend(labels);
    config.set_labels(Some(all));
    config
}

/// The runtime config of the image whose manifest is `manifest` in the OCI layout
/// `dir`, its digest and size checked (a source image is untrusted).
pub fn read_from_layout(dir: &Path, manifest: &ImageManifest) -> Result<Config, ImageError> {
    let desc = manifest.config();
    let path = super::blob_path(dir, desc)?;
    let invalid = |problem: String| ImageError::Invalid {
        path: path.clone(),
        problem,
    };
    if desc.size() > MAX_CONFIG {
        return Err(invalid(format!(
            "the image config is {} bytes, more than the {MAX_CONFIG} a config may have",
            desc.size()
        )));
    }
    let bytes = read_bounded(&path).map_err(invalid)?;
    let got = crate::bytes::sha256_label(&sha2::Sha256::digest(&bytes));
    if got != desc.digest().to_string() || bytes.len() as u64 != desc.size() {
        return Err(invalid(format!(
            "the config blob does not match its descriptor ({got}, {} bytes)",
            bytes.len()
        )));
    }
    let parsed: ImageConfiguration =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not an image config: {e}")))?;
    Ok(parsed.config().clone().unwrap_or_default())
}

/// A `--config` file: the runtime `config` object of an OCI image config (`User`,
/// `Env`, `Entrypoint`, `Cmd`, `WorkingDir`, `ExposedPorts`, `Volumes`,
/// `StopSignal`, `Labels`), or a whole image config holding one.
pub fn read_file(path: &Path) -> Result<Config, ImageError> {
    let invalid = |problem: String| ImageError::Invalid {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = read_bounded(path).map_err(invalid)?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| invalid("not a JSON object".into()))?;
    let runtime = match object.get("config") {
        Some(inner) if object.contains_key("rootfs") => inner.clone(),
        _ => value.clone(),
    };
    serde_json::from_value(runtime)
        .map_err(|e| invalid(format!("not an image config's runtime object: {e}")))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_CONFIG {
        return Err(format!(
            "larger than the {MAX_CONFIG} bytes a config may have"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Config {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn flags_override_the_base_field_by_field() {
        let base = config(serde_json::json!({
            "User": "1000", "Env": ["PATH=/usr/bin", "LANG=C"], "Cmd": ["/bin/sh"],
            "Labels": {"org.opencontainers.image.version": "41"},
        }));
        let overrides = Overrides {
            env: vec!["LANG=C.UTF-8".into(), "NEW=1".into()],
            entrypoint: Some(vec!["/usr/bin/strata".into()]),
            ..Default::default()
        };
        let got = overrides.apply(base);
        assert_eq!(got.user().as_deref(), Some("1000"), "kept from the base");
        assert_eq!(
            got.env().clone().unwrap(),
            ["PATH=/usr/bin", "LANG=C.UTF-8", "NEW=1"]
        );
        assert_eq!(got.entrypoint().clone().unwrap(), ["/usr/bin/strata"]);
        assert_eq!(got.cmd().clone().unwrap(), ["/bin/sh"]);
        let labelled = with_labels(got, [("a".to_string(), "b".to_string())]);
        assert_eq!(labelled.labels().as_ref().unwrap().len(), 2);
    }

    #[test]
    fn config_files_are_runtime_objects_or_whole_configs_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("runtime.json");
        std::fs::write(&runtime, r#"{"User": "65532", "WorkingDir": "/work"}"#).unwrap();
        assert_eq!(
            read_file(&runtime).unwrap().user().as_deref(),
            Some("65532")
        );
        let whole = dir.path().join("whole.json");
        std::fs::write(
            &whole,
            r#"{"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                "config": {"Entrypoint": ["/usr/bin/strata"]}}"#,
        )
        .unwrap();
        let got = read_file(&whole).unwrap();
        assert_eq!(got.entrypoint().clone().unwrap(), ["/usr/bin/strata"]);
        let bad = [
            ("array.json", "[1]".to_string(), "not a JSON object"),
            ("text.json", "entrypoint".to_string(), "not JSON"),
            (
                "typed.json",
                r#"{"Env": "PATH=/bin"}"#.to_string(),
                "runtime object",
            ),
            (
                "huge.json",
                format!("{{\"User\": \"{}\"}}", "x".repeat(2 << 20)),
                "larger than",
            ),
        ];
        for (name, text, says) in bad {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let err = read_file(&path).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains(name), "{name}: {err}");
        }
    }
}
