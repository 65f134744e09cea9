//! Reads a stream's source identity: the manifest digest a tag resolves to and the
//! version label of its config, or the commit an ostree ref names and its version.
//! Polling never reads a layer or a file of a commit.

use ocidir::oci_spec::image::ImageConfiguration;
use sha2::Digest as _;

use super::decide::Identity;
use crate::image::reference::ImageRef;
use crate::image::remote::{fetch_blob, fetch_manifest, RegistryOptions};

/// The largest image config read for its version label; real ones are a few KiB.
const MAX_CONFIG: u64 = 1 << 20;

/// The label `{version}` reads.
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";

/// The commit `rev` of the repository at `url` names now, pulling the commit object
/// alone into the cache repository `cache` (checked against `gpg_keys` if given).
pub fn ostree_identity(
    url: &str,
    rev: &str,
    gpg_keys: Option<&std::path::Path>,
    cache: &std::path::Path,
) -> Result<Identity, String> {
    use crate::source::ostree::{commit_labels, pull};
    let remote = pull::Remote {
        url,
        rev,
        gpg_keys,
        commit_only: true,
    };
    let checksum = pull::pull(&remote, cache).map_err(|e| crate::error_chain(&e))?;
    let labels = commit_labels(cache, &checksum).map_err(|e| crate::error_chain(&e))?;
    let version = labels
        .into_iter()
        .find(|(k, _)| k == VERSION_LABEL)
        .map(|(_, v)| v);
    Ok(Identity {
        reference: format!("{url} commit {checksum}"),
        digest: checksum,
        version,
    })
}

/// What `reference` resolves to now.
pub fn identity(reference: &str, opts: &RegistryOptions) -> Result<Identity, String> {
    let (digest, manifest) = fetch_manifest(reference, opts)
        .map_err(|e| crate::error_chain(&e))?
        .ok_or_else(|| format!("there is no image {reference}"))?;
    let pinned = reference
        .parse::<ImageRef>()?
        .pinned(&digest)
        .ok_or_else(|| format!("{reference} is not a registry reference"))?
        .to_string();
    let config = manifest.config();
    if config.size() > MAX_CONFIG {
        return Err(format!(
            "{reference}: its config is {} bytes, more than the {MAX_CONFIG} a config may have",
            config.size()
        ));
    }
    let mut raw = Vec::new();
    fetch_blob(
        &pinned,
        config.digest().as_ref(),
        config.size(),
        opts,
        &mut raw,
    )
    .map_err(|e| crate::error_chain(&e))?;
    let got = crate::bytes::sha256_label(&sha2::Sha256::digest(&raw));
    if got != config.digest().to_string() {
        return Err(format!(
            "{reference}: the registry sent a config of digest {got}, not the manifest's {}",
            config.digest()
        ));
    }
    let parsed: ImageConfiguration = serde_json::from_slice(&raw)
        .map_err(|e| format!("{reference}: its config is not an image config: {e}"))?;
    let version = parsed
        .config()
        .as_ref()
        .and_then(|c| c.labels().as_ref())
        .and_then(|labels| labels.get(VERSION_LABEL))
        .cloned();
    Ok(Identity {
        digest,
        reference: pinned,
        version,
    })
}
