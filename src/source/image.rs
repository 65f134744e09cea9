//! An existing container image as a source (rechunking): its layers are flattened
//! into a private directory, applying whiteouts, and that tree is then encapsulated
//! like any root filesystem.
//!
//! Extraction goes through `tar`'s `unpack_in`, which refuses paths that would land
//! outside the directory, including through symlinks laid down by earlier layers.
//! Whiteouts are applied through directory descriptors opened with `O_NOFOLLOW` at
//! every component, so no link, wherever it sits in the path, is ever followed.

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
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

/// Whether a layer entry is a whiteout (names need not be UTF-8).
fn is_whiteout(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(WHITEOUT.as_bytes()))
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
        if is_whiteout(&path) {
            whiteouts.push(safe_relative(blob, &path)?);
        }
    }
    for w in &whiteouts {
        remove_whited_out(blob, into, w)?;
    }
    let mut archive = tar::Archive::new(open_layer(blob, desc)?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?.into_owned();
        if is_whiteout(&path) {
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

/// Applies one whiteout (`dir/.wh.NAME` or `dir/.wh..wh..opq`) beneath `into`.
/// Every directory on the way is opened without following a symlink, so a link an
/// earlier layer planted cannot steer the removal outside the tree.
fn remove_whited_out(blob: &Path, into: &Path, whiteout: &Path) -> Result<(), SourceError> {
    let name = whiteout.file_name().unwrap_or_default().as_encoded_bytes();
    let target = &name[WHITEOUT.len()..];
    let opaque = name == OPAQUE.as_bytes();
    if !opaque && matches!(target, b"" | b"." | b"..") {
        return Err(invalid(
            blob,
            format!("whiteout {} names no file", whiteout.display()),
        ));
    }
    let parent = whiteout.parent().unwrap_or(Path::new(""));
    let io = |source| SourceError::Io {
        path: into.join(whiteout),
        source,
    };
    let Some(dir) = open_beneath(into, parent).map_err(|e| match e {
        Beneath::Io(e) => io(e),
        Beneath::Link(at) => invalid(
            blob,
            format!(
                "whiteout {} passes through {}, which is not a directory",
                whiteout.display(),
                at.display()
            ),
        ),
    })?
    else {
        return Ok(());
    };
    if opaque {
        let children: Vec<std::ffi::OsString> = dir
            .entries()
            .and_then(|it| it.map(|c| c.map(|c| c.file_name())).collect())
            .map_err(io)?;
        return children
            .iter()
            .try_for_each(|c| remove_in(&dir, c.as_ref()).map_err(io));
    }
    remove_in(&dir, std::ffi::OsStr::from_bytes(target)).map_err(io)
}

type CapDir = ocidir::cap_std::fs::Dir;

/// Why a directory beneath the root could not be opened.
enum Beneath {
    Io(std::io::Error),
    /// This component is a symlink or not a directory.
    Link(PathBuf),
}

/// Opens `rel` (plain components) beneath `root`, one `openat(O_NOFOLLOW |
/// O_DIRECTORY)` per component; `None` when some component does not exist.
fn open_beneath(root: &Path, rel: &Path) -> Result<Option<CapDir>, Beneath> {
    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut fd = rustix::fs::open(root, flags, Mode::empty()).map_err(|e| Beneath::Io(e.into()))?;
    let mut walked = PathBuf::new();
    for c in rel.components() {
        walked.push(c);
        fd = match rustix::fs::openat(&fd, c.as_os_str(), flags, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) => return Err(Beneath::Link(walked)),
            Err(e) => return Err(Beneath::Io(e.into())),
        };
    }
    Ok(Some(CapDir::from_std_file(std::fs::File::from(fd))))
}

/// Removes `name` in `dir` (a whole directory tree, never through a link); absent
/// names are fine.
fn remove_in(dir: &CapDir, name: &std::ffi::OsStr) -> std::io::Result<()> {
    match dir.symlink_metadata(name) {
        Ok(m) if m.is_dir() => dir.remove_dir_all(name),
        Ok(_) => dir.remove_file(name),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
