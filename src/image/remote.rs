//! Images outside a local OCI directory: manifests read through skopeo's image proxy
//! (containers-image-proxy), and pushes with `skopeo copy`. Every argument reaches
//! skopeo as its own argv element; nothing is spliced into a shell.

use std::path::{Path, PathBuf};
use std::process::Command;

use ocidir::oci_spec::image::ImageManifest;

use super::ImageError;

/// Registry access options, passed through to skopeo.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub authfile: Option<PathBuf>,
    /// Skip TLS verification (and allow plain HTTP), for loopback registries.
    pub insecure: bool,
    pub cert_dir: Option<PathBuf>,
}

/// Errors from the proxy that mean "there is no such image".
const MISSING: [&str; 5] = [
    "manifest unknown",
    "not found",
    "no such file",
    "does not exist",
    "name unknown",
];

/// Fetches the manifest of `reference` (a full transport reference); `None` when the
/// image does not exist. skopeo 1.9 has no OpenImageOptional, so a missing image is
/// recognised from the open error.
pub fn fetch_manifest(
    reference: &str,
    opts: &RegistryOptions,
) -> Result<Option<(String, ImageManifest)>, ImageError> {
    let fail = |problem: String| ImageError::Invalid {
        path: PathBuf::from(reference),
        problem,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("cannot start the image proxy runtime: {e}")))?;
    runtime.block_on(async {
        let mut config = containers_image_proxy::ImageProxyConfig::default();
        config.authfile = opts.authfile.clone();
        config.insecure_skip_tls_verification = opts.insecure.then_some(true);
        config.certificate_directory = opts.cert_dir.clone();
        let proxy = containers_image_proxy::ImageProxy::new_with_config(config)
            .await
            .map_err(|e| fail(format!("cannot start skopeo's image proxy: {e}")))?;
        let image = match proxy.open_image(reference).await {
            Ok(image) => image,
            Err(e) => {
                let text = e.to_string().to_lowercase();
                return if MISSING.iter().any(|m| text.contains(m)) {
                    Ok(None)
                } else {
                    Err(fail(e.to_string()))
                };
            }
        };
        let (digest, raw) = proxy
            .fetch_manifest_raw_oci(&image)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let _ = proxy.close_image(&image).await;
        let _ = proxy.finalize().await;
        let manifest: ImageManifest = serde_json::from_slice(&raw)
            .map_err(|e| fail(format!("the manifest is not an OCI image manifest: {e}")))?;
        Ok(Some((digest, manifest)))
    })
}

/// Copies `source` (any transport) into the OCI layout `dir` as `tag`.
pub fn pull(source: &str, dir: &Path, tag: &str, opts: &RegistryOptions) -> Result<(), ImageError> {
    let mut cmd = Command::new("skopeo");
    cmd.arg("copy").arg("--quiet");
    if let Some(authfile) = &opts.authfile {
        cmd.arg("--src-authfile").arg(authfile);
    }
    if let Some(cert_dir) = &opts.cert_dir {
        cmd.arg("--src-cert-dir").arg(cert_dir);
    }
    if opts.insecure {
        cmd.arg("--src-tls-verify=false");
    }
    cmd.arg(source).arg(format!("oci:{}:{tag}", dir.display()));
    run_skopeo(cmd, source)
}

fn run_skopeo(mut cmd: Command, what: &str) -> Result<(), ImageError> {
    let out = cmd.output().map_err(|source| ImageError::Io {
        path: PathBuf::from("skopeo"),
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ImageError::Invalid {
            path: PathBuf::from(what),
            problem: format!(
                "skopeo copy failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Copies the image tagged `tag` in the OCI layout `dir` to `dest`; returns the
/// manifest digest skopeo wrote.
pub fn push(
    dir: &Path,
    tag: &str,
    dest: &str,
    opts: &RegistryOptions,
) -> Result<String, ImageError> {
    let scratch = tempfile::tempdir().map_err(|source| ImageError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let digest_file = scratch.path().join("digest");
    let mut cmd = Command::new("skopeo");
    cmd.arg("copy")
        .arg("--quiet")
        .arg("--preserve-digests")
        .arg("--digestfile")
        .arg(&digest_file);
    if let Some(authfile) = &opts.authfile {
        cmd.arg("--dest-authfile").arg(authfile);
    }
    if let Some(cert_dir) = &opts.cert_dir {
        cmd.arg("--dest-cert-dir").arg(cert_dir);
    }
    if opts.insecure {
        cmd.arg("--dest-tls-verify=false");
    }
    cmd.arg(format!("oci:{}:{tag}", dir.display())).arg(dest);
    let out = cmd.output().map_err(|source| ImageError::Io {
        path: PathBuf::from("skopeo"),
        source,
    })?;
    if !out.status.success() {
        return Err(ImageError::Invalid {
            path: PathBuf::from(dest),
            problem: format!(
                "skopeo copy failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    std::fs::read_to_string(&digest_file)
        .map(|d| d.trim().to_string())
        .map_err(|source| ImageError::Io {
            path: digest_file,
            source,
        })
}
