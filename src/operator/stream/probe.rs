//! The probe of a stream whose source is a tree on a volume. The producer rewrites
//! the tree and writes its generation file last; a short pod (`strata probe`) reads
//! that file beneath the volume, never following a link, and reports its digest and
//! first line in its termination message. The controller itself mounts nothing.

use std::io::Read;
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::crd::{EncapsulationStream, StreamRootfs};
use super::decide::{Identity, STREAM_UID_LABEL};
use crate::operator::pod::{self, SOURCES_DIR};
use crate::operator::report::{child_name, MANAGED_BY};
use crate::operator::Settings;

/// The largest generation file read: it names a build, it does not hold one.
pub const MAX_MARKER: u64 = 4096;

/// What the probe reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// `sha256:` of the file's bytes: the source's identity.
    pub digest: String,
    /// The file's first line, when it is short and printable: `{version}`.
    pub version: Option<String>,
}

/// Reads the generation file `rel` beneath `volume` (in the probe pod).
pub fn read_marker(volume: &Path, rel: &Path) -> Result<Generation, String> {
    let named = volume.join(rel);
    let file = crate::source::content::open_beneath(volume, rel)
        .map_err(|e| format!("{}: {e}", named.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", named.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", named.display()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_MARKER + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", named.display()))?;
    if bytes.len() as u64 > MAX_MARKER {
        return Err(format!(
            "{}: more than the {MAX_MARKER} bytes a generation file may have",
            named.display()
        ));
    }
    let first = String::from_utf8_lossy(&bytes);
    let line = first.lines().next().unwrap_or("").trim();
    let printable = !line.is_empty() && line.len() <= 128 && !line.chars().any(char::is_control);
    Ok(Generation {
        digest: crate::bytes::sha256_label(&sha2::Sha256::digest(&bytes)),
        version: printable.then(|| line.to_string()),
    })
}

/// The identity a finished probe pod reported, or why it has none.
pub fn reported(stream: &EncapsulationStream, pod: &Pod) -> Option<Result<Identity, String>> {
    let status = pod.status.as_ref()?;
    let state = status
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?;
    let done = state.terminated.as_ref()?;
    let message = done.message.clone().unwrap_or_default();
    if done.exit_code != 0 {
        return Some(Err(format!(
            "the probe pod {} failed: {message}",
            pod.name_any()
        )));
    }
    let parsed: Result<Generation, _> = serde_json::from_str(&message);
    Some(
        parsed
            .map(|g| Identity {
                reference: super::decide::described(stream),
                digest: g.digest,
                version: g.version,
            })
            .map_err(|e| {
                format!(
                    "the probe pod {} reported no generation: {e}",
                    pod.name_any()
                )
            }),
    )
}

/// The probe pod's name: one per stream at a time.
pub fn pod_name(stream: &EncapsulationStream) -> String {
    child_name(&stream.name_any(), "probe")
}

/// The pod that reads `source`'s generation file from `volume` (the job template's
/// volume of that name, which the job policy has admitted).
pub fn probe_pod(
    stream: &EncapsulationStream,
    source: &StreamRootfs,
    volume: &Volume,
    service_account: &str,
    settings: &Settings,
) -> Pod {
    let mount = format!("{SOURCES_DIR}/{}", volume.name);
    let marker = Path::new(&source.path).join(&source.generation_file);
    let mut command = settings.worker_command.clone();
    command.extend([
        "probe".to_string(),
        format!("--volume={mount}"),
        format!("--file={}", marker.display()),
        format!("--termination-log={}", pod::TERMINATION_LOG),
    ]);
    let container = Container {
        name: "probe".into(),
        image: Some(settings.worker_image.clone()),
        command: Some(command),
        volume_mounts: Some(vec![VolumeMount {
            name: volume.name.clone(),
            mount_path: mount,
            read_only: Some(true),
            ..Default::default()
        }]),
        termination_message_path: Some(pod::TERMINATION_LOG.into()),
        security_context: Some(pod::security(true)),
        ..Default::default()
    };
    let labels = [
        (
            STREAM_UID_LABEL.to_string(),
            stream.uid().unwrap_or_default(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
    ];
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(stream)),
            namespace: stream.namespace(),
            labels: Some(labels.into()),
            owner_references: stream.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(vec![volume.clone()]),
            restart_policy: Some("Never".into()),
            service_account_name: Some(service_account.to_string()),
            automount_service_account_token: Some(false),
            security_context: Some(pod::pod_security()),
            ..Default::default()
        }),
        status: None,
    }
}

/// `strata probe`: reads the marker and writes what it found as the termination
/// message (JSON), or the error.
pub fn run(volume: &Path, file: &Path, termination_log: &Path) -> Result<Generation, String> {
    let found = read_marker(volume, file);
    let message = match &found {
        Ok(g) => serde_json::to_string(g).expect("generations serialise"),
        Err(e) => e.clone(),
    };
    std::fs::write(termination_log, message).map_err(|e| {
        format!(
            "{}: cannot write the termination message: {e}",
            termination_log.display()
        )
    })?;
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_read_beneath_the_volume_only() {
        let tmp = tempfile::tempdir().unwrap();
        let (volume, outside) = (tmp.path().join("vol"), tmp.path().join("outside"));
        std::fs::create_dir_all(volume.join("trees/os")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(
            volume.join("trees/os/GENERATION"),
            "41.20261204.1\nbuilt by ci\n",
        )
        .unwrap();
        let got = read_marker(&volume, Path::new("trees/os/GENERATION")).unwrap();
        assert_eq!(got.version.as_deref(), Some("41.20261204.1"));
        assert!(got.digest.starts_with("sha256:"));

        std::fs::write(outside.join("GENERATION"), "secret").unwrap();
        std::os::unix::fs::symlink(&outside, volume.join("trees/linked")).unwrap();
        std::os::unix::fs::symlink(outside.join("GENERATION"), volume.join("trees/os/LINK"))
            .unwrap();
        std::fs::write(volume.join("trees/os/BIG"), vec![b'x'; 5000]).unwrap();
        std::fs::create_dir(volume.join("trees/os/DIR")).unwrap();
        for (rel, says) in [
            ("trees/linked/GENERATION", "trees/linked/GENERATION"),
            ("trees/os/LINK", "trees/os/LINK"),
            ("../outside/GENERATION", "not a plain path"),
            ("trees/os/BIG", "more than the 4096 bytes"),
            ("trees/os/DIR", "not a regular file"),
            ("trees/os/MISSING", "trees/os/MISSING"),
        ] {
            let err = read_marker(&volume, Path::new(rel)).unwrap_err();
            assert!(err.contains(says), "{rel}: {err}");
            assert!(!err.contains("secret"));
        }
        let binary = volume.join("trees/os/BIN");
        std::fs::write(&binary, [0u8, 1, 2, 3]).unwrap();
        assert_eq!(
            read_marker(&volume, Path::new("trees/os/BIN"))
                .unwrap()
                .version,
            None
        );
    }
}
