//! An existing container image as a source (rechunking): its layers are flattened
//! into a private directory, applying whiteouts, and that tree is then encapsulated
//! like any root filesystem.
//!
//! Extraction goes through `tar`'s `unpack_in`, which refuses paths that would land
//! outside the directory, including through symlinks laid down by earlier layers.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use ocidir::oci_spec::image::{Descriptor, MediaType};

use super::SourceError;
use crate::image::remote::{self, RegistryOptions};
use crate::image::{self, ImageRef};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

fn invalid(path: &Path, problem: impl Into<String>) -> SourceError {
    SourceError::Invalid {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Flattens `reference` into the empty directory `into`. Remote images are first
/// copied to an OCI layout under `scratch` with skopeo.
pub fn flatten(
    reference: &ImageRef,
    registry: &RegistryOptions,
    scratch: &Path,
    into: &Path,
) -> Result<(), SourceError> {
    let (dir, tag) = match reference {
        ImageRef::Oci { dir, tag } => (dir.clone(), tag.clone()),
        other => {
            let dir = scratch.join("pulled");
            remote::pull(&other.to_string(), &dir, "source", registry)
                .map_err(|e| invalid(Path::new(&other.to_string()), e.to_string()))?;
            (dir, Some("source".to_string()))
        }
    };
    let local =
        image::read_local(&dir, tag.as_deref()).map_err(|e| invalid(&dir, e.to_string()))?;
    for desc in local.manifest.layers() {
        let blob = image::blob_path(&dir, desc).map_err(|e| invalid(&dir, e.to_string()))?;
        apply_layer(&blob, desc, into)?;
    }
    Ok(())
}

fn open_layer(blob: &Path, desc: &Descriptor) -> Result<Box<dyn Read>, SourceError> {
    let io = |source| SourceError::Io {
        path: blob.to_path_buf(),
        source,
    };
    let file = fs::File::open(blob).map_err(io)?;
    Ok(match desc.media_type() {
        MediaType::ImageLayerGzip | MediaType::Other(_) if is_gzip(blob)? => {
            Box::new(flate2::read::GzDecoder::new(file))
        }
        MediaType::ImageLayerZstd => Box::new(zstd::stream::read::Decoder::new(file).map_err(io)?),
        MediaType::ImageLayer => Box::new(file),
        other => match is_gzip(blob)? {
            true => Box::new(flate2::read::GzDecoder::new(file)),
            false => {
                return Err(invalid(
                    blob,
                    format!("unsupported layer media type {other}"),
                ))
            }
        },
    })
}

fn is_gzip(blob: &Path) -> Result<bool, SourceError> {
    let mut magic = [0u8; 2];
    let mut f = fs::File::open(blob).map_err(|source| SourceError::Io {
        path: blob.to_path_buf(),
        source,
    })?;
    Ok(f.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b])
}

/// Applies one layer: its whiteouts remove what lower layers put there, then its
/// entries are unpacked on top.
fn apply_layer(blob: &Path, desc: &Descriptor, into: &Path) -> Result<(), SourceError> {
    let io = |source| SourceError::Io {
        path: blob.to_path_buf(),
        source,
    };
    let mut whiteouts = Vec::new();
    for entry in tar::Archive::new(open_layer(blob, desc)?)
        .entries()
        .map_err(io)?
    {
        let path = entry.map_err(io)?.path().map_err(io)?.into_owned();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(WHITEOUT))
        {
            whiteouts.push(safe_relative(blob, &path)?);
        }
    }
    for w in &whiteouts {
        remove_whited_out(into, w)?;
    }
    let mut archive = tar::Archive::new(open_layer(blob, desc)?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?.into_owned();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(WHITEOUT))
        {
            continue;
        }
        entry
            .unpack_in(into)
            .map_err(|e| invalid(blob, format!("{}: {}", path.display(), error_chain(&e))))?;
    }
    Ok(())
}

/// An I/O error with its causes, which `tar` keeps behind its own message.
fn error_chain(e: &std::io::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.get_ref().and_then(|inner| inner.source());
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// A layer path as a plain relative path; `..` and absolute paths are refused.
fn safe_relative(blob: &Path, path: &Path) -> Result<PathBuf, SourceError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => {
                return Err(invalid(
                    blob,
                    format!("layer entry {} escapes the root", path.display()),
                ))
            }
        }
    }
    Ok(out)
}

fn remove_whited_out(into: &Path, whiteout: &Path) -> Result<(), SourceError> {
    let name = whiteout
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = into.join(whiteout.parent().unwrap_or(Path::new("")));
    // Never act through a symlink an earlier layer left in the way.
    if fs::symlink_metadata(&parent)
        .map(|m| !m.is_dir())
        .unwrap_or(true)
    {
        return Ok(());
    }
    let io = |path: PathBuf| move |source| SourceError::Io { path, source };
    let remove = |target: PathBuf| -> Result<(), SourceError> {
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&target).map_err(io(target)),
            Ok(_) => fs::remove_file(&target).map_err(io(target)),
            Err(_) => Ok(()),
        }
    };
    if name == OPAQUE {
        for child in fs::read_dir(&parent).map_err(io(parent.clone()))? {
            remove(child.map_err(io(parent.clone()))?.path())?;
        }
        return Ok(());
    }
    remove(parent.join(&name[WHITEOUT.len()..]))
}
