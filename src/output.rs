//! Writing results so that a reader never sees a half-written one: files through a
//! temporary file and a rename, images staged in a fresh directory and published
//! (renamed into place, archived or pushed) only when complete.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::cleanup::Partial;
use crate::image::remote::{self, RegistryOptions};
use crate::image::{ImageError, ImageRef};

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// An image output could not be staged or published.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output path cannot be used.
    #[error("{path}: {problem}")]
    Path {
        /// The output.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The staged image could not be read or copied.
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl OutputError {
    /// `problem` with the output path it concerns.
    pub fn at(path: &Path, problem: impl std::fmt::Display) -> OutputError {
        OutputError::Path {
            path: path.to_path_buf(),
            problem: problem.to_string(),
        }
    }
}

/// The tag the image gets in a staging layout that is pushed elsewhere.
const STAGING_TAG: &str = "strata";

/// An OCI layout an image is built in, removed unless it is published as the output.
pub struct Staging {
    dir: Partial,
    tag: Option<String>,
}

impl Staging {
    /// A fresh staging layout for `output`: beside it for a local directory or
    /// archive (so the publishing rename stays on one filesystem), private otherwise.
    pub fn for_output(output: &ImageRef) -> Result<Staging, OutputError> {
        let (dir, tag) = match output {
            ImageRef::Oci { dir, tag } => (beside(dir)?, tag.clone()),
            ImageRef::OciArchive { file, .. } => (
                beside(&file.with_extension("oci"))?,
                Some(STAGING_TAG.into()),
            ),
            other => (private(other)?, Some(STAGING_TAG.into())),
        };
        Ok(Staging { dir, tag })
    }

    /// The staging OCI directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The tag the staged image is written under.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Moves or copies the staged image to `output`. Returns the manifest digest a
    /// registry reported, for outputs that are pushed.
    pub fn publish(
        self,
        output: &ImageRef,
        registry: &RegistryOptions,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Result<Option<String>, OutputError> {
        let staged = self.dir.path();
        match output {
            ImageRef::Oci { dir, .. } => {
                std::fs::rename(staged, dir).map_err(|e| OutputError::at(dir, e))?;
                self.dir.keep();
                Ok(None)
            }
            ImageRef::OciArchive { file, tag } => {
                if file.exists() {
                    return Err(OutputError::at(file, "already exists"));
                }
                let partial =
                    Partial::new(file.with_extension(format!("strata-{}", std::process::id())));
                let dest = ImageRef::OciArchive {
                    file: partial.path().to_path_buf(),
                    tag: tag.clone(),
                };
                remote::push(staged, STAGING_TAG, &dest.to_string(), registry)?;
                std::fs::rename(partial.path(), file).map_err(|source| ImageError::Io {
                    path: file.clone(),
                    source,
                })?;
                partial.keep();
                Ok(None)
            }
            other => {
                progress(&format!("pushing to {other}"));
                let digest = remote::push(staged, STAGING_TAG, &other.to_string(), registry)?;
                Ok(Some(digest))
            }
        }
    }
}

/// A fresh directory beside `out` to build in, so a failure leaves nothing at `out`.
fn beside(out: &Path) -> Result<Partial, OutputError> {
    if out.exists() {
        return Err(OutputError::at(
            out,
            "already exists; choose a new directory (images are never half-overwritten)",
        ));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| OutputError::at(out, "has no directory name"))?;
    let staging = parent.join(format!(
        ".{}.strata-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::create_dir(&staging)
        .map_err(|e| OutputError::at(&staging, format!("cannot create the output: {e}")))?;
    Ok(Partial::new(staging))
}

/// A private staging directory for outputs that are not local OCI directories.
fn private(output: &ImageRef) -> Result<Partial, OutputError> {
    let dir = tempfile::Builder::new()
        .prefix("strata-build-")
        .tempdir()
        .map_err(|e| {
            OutputError::at(&std::env::temp_dir(), format!("cannot stage {output}: {e}"))
        })?;
    Ok(Partial::new(dir.keep()))
}
