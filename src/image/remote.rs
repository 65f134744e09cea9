//! Images outside a local OCI directory: manifests read through skopeo's image proxy
//! (containers-image-proxy), and pushes with `skopeo copy`. Every argument reaches
//! skopeo as its own argv element; nothing is spliced into a shell.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use ocidir::oci_spec::image::ImageManifest;

use super::ImageError;

/// Registry access options, passed through to skopeo.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registry credentials (containers-auth.json).
    pub authfile: Option<PathBuf>,
    /// Skip TLS verification (and allow plain HTTP) for every registry.
    pub insecure: bool,
    /// Registries (`host[:port]`) reached without TLS verification, the others
    /// verified: one loopback registry does not lower the push's guard.
    pub insecure_registries: Vec<String>,
    /// Extra CA certificates and client keys.
    pub cert_dir: Option<PathBuf>,
}

impl RegistryOptions {
    /// Refuses an authfile that cannot be read. skopeo treats a missing one as "no
    /// credentials", and a registry that hides private repositories then answers "not
    /// found": a mistyped `--authfile` would read as "there is no prior".
    pub fn check(&self) -> Result<(), ImageError> {
        let Some(path) = &self.authfile else {
            return Ok(());
        };
        match std::fs::File::open(path).and_then(|f| f.metadata()) {
            Ok(meta) if meta.is_file() => Ok(()),
            Ok(_) => Err(ImageError::Invalid {
                path: path.clone(),
                problem: "--authfile is not a regular file".into(),
            }),
            Err(source) => Err(ImageError::Invalid {
                path: path.clone(),
                problem: format!("--authfile cannot be read: {source}"),
            }),
        }
    }

    /// Whether TLS goes unverified for `reference` (a transport reference).
    pub fn insecure_for(&self, reference: &str) -> bool {
        self.insecure
            || registry_host(reference)
                .is_some_and(|host| self.insecure_registries.iter().any(|h| h == host))
    }
}

/// The registry (`host[:port]`) of a `docker://` reference.
pub fn registry_host(reference: &str) -> Option<&str> {
    reference.strip_prefix("docker://")?.split('/').next()
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
    opts.check()?;
    let runtime = proxy_runtime().map_err(fail)?;
    runtime.block_on(async {
        let proxy = start_proxy(opts, reference).await.map_err(fail)?;
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

fn proxy_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the image proxy runtime: {e}"))
}

/// A proxy for reading `reference`, verifying TLS unless its registry is insecure.
async fn start_proxy(
    opts: &RegistryOptions,
    reference: &str,
) -> Result<containers_image_proxy::ImageProxy, String> {
    let mut config = containers_image_proxy::ImageProxyConfig::default();
    config.authfile = opts.authfile.clone();
    config.insecure_skip_tls_verification = opts.insecure_for(reference).then_some(true);
    config.certificate_directory = opts.cert_dir.clone();
    containers_image_proxy::ImageProxy::new_with_config(config)
        .await
        .map_err(|e| format!("cannot start skopeo's image proxy: {e}"))
}

/// Streams the blob `digest` of `reference` into `out`: at most `size` bytes, and
/// exactly that many, or an error. The caller checks the digest.
pub fn fetch_blob(
    reference: &str,
    digest: &str,
    size: u64,
    opts: &RegistryOptions,
    out: &mut dyn Write,
) -> Result<(), ImageError> {
    let fail = |problem: String| ImageError::Invalid {
        path: PathBuf::from(format!("{reference}@{digest}")),
        problem,
    };
    let parsed: ocidir::oci_spec::image::Digest = digest
        .parse()
        .map_err(|e| fail(format!("not a blob digest: {e}")))?;
    opts.check()?;
    let runtime = proxy_runtime().map_err(fail)?;
    runtime.block_on(async {
        let proxy = start_proxy(opts, reference).await.map_err(fail)?;
        let image = proxy
            .open_image(reference)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let (mut reader, driver) = proxy
            .get_blob(&image, &parsed, size)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let copy = async {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            loop {
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<u64, std::io::Error>(total);
                }
                total += n as u64;
                if total > size {
                    return Err(std::io::Error::other(format!(
                        "the registry sent more than the manifest's {size} bytes"
                    )));
                }
                out.write_all(&buf[..n])?;
            }
        };
        // A failed copy stops reading, so the driver must not be awaited past it.
        let (copied, ()) =
            tokio::try_join!(async { copy.await.map_err(|e| e.to_string()) }, async {
                driver.await.map_err(|e| e.to_string())
            },)
            .map_err(fail)?;
        if copied != size {
            return Err(fail(format!(
                "the registry sent {copied} of the manifest's {size} bytes"
            )));
        }
        let _ = proxy.close_image(&image).await;
        let _ = proxy.finalize().await;
        Ok(())
    })
}

/// Copies `source` (any transport) into the OCI layout `dir` as `tag`.
pub fn pull(source: &str, dir: &Path, tag: &str, opts: &RegistryOptions) -> Result<(), ImageError> {
    opts.check()?;
    let mut cmd = Command::new("skopeo");
    cmd.arg("copy").arg("--quiet");
    if let Some(authfile) = &opts.authfile {
        cmd.arg("--src-authfile").arg(authfile);
    }
    if let Some(cert_dir) = &opts.cert_dir {
        cmd.arg("--src-cert-dir").arg(cert_dir);
    }
    if opts.insecure_for(source) {
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
    opts.check()?;
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
    if opts.insecure_for(dest) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_registries_go_unverified() {
        let opts = RegistryOptions {
            insecure_registries: vec!["127.0.0.1:5000".into()],
            ..Default::default()
        };
        assert!(opts.insecure_for("docker://127.0.0.1:5000/os:1"));
        assert!(!opts.insecure_for("docker://quay.io/os:1"));
        assert!(!opts.insecure_for("docker://127.0.0.1:5001/os:1"));
        assert!(!opts.insecure_for("oci:/127.0.0.1:5000/x"));
        let all = RegistryOptions {
            insecure: true,
            ..Default::default()
        };
        assert!(all.insecure_for("docker://quay.io/os:1"));
    }

    /// A mistyped `--authfile` is an error naming it, before skopeo (which would read
    /// it as "no credentials") is asked anything: a prior must not look missing.
    #[test]
    fn an_unreadable_authfile_is_refused_before_any_request() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = RegistryOptions {
            authfile: Some(tmp.path().join("auth.json")),
            ..Default::default()
        };
        // Nothing listens on port 1: an answer other than the authfile error would
        // mean a request was made.
        let err = fetch_manifest("docker://127.0.0.1:1/os:1", &missing).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("auth.json") && text.contains("--authfile"),
            "{text}"
        );
        let dir = RegistryOptions {
            authfile: Some(tmp.path().to_path_buf()),
            ..Default::default()
        };
        assert!(dir
            .check()
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        std::fs::write(tmp.path().join("auth.json"), "{}").unwrap();
        assert!(missing.check().is_ok());
    }
}
