//! Choosing and reading a source: the one entry point that turns what the user named
//! (a directory, an image, an ostree commit) into entries and their content.

use std::path::PathBuf;

use super::content::{Content, Dir};
use super::image::Spool;
use super::ostree::OstreeContent;
use super::rootfs::{walk, WalkOptions};
use super::{Entry, SourceError};
use crate::cleanup::Partial;
use crate::image::remote::RegistryOptions;
use crate::image::ImageRef;

/// What to encapsulate.
#[derive(Debug, Clone)]
pub enum BuildSource {
    /// A root filesystem directory.
    Rootfs(PathBuf),
    /// An existing image, flattened first (rechunking).
    Image(ImageRef),
    /// A commit (ref or checksum) in an ostree repository, read from its objects.
    Ostree {
        /// The repository (any mode).
        repo: PathBuf,
        /// A ref or a commit checksum.
        rev: String,
    },
}

impl std::fmt::Display for BuildSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildSource::Rootfs(dir) => write!(f, "rootfs:{}", dir.display()),
            BuildSource::Image(r) => write!(f, "image:{r}"),
            BuildSource::Ostree { repo, rev } => write!(f, "ostree:{}:{rev}", repo.display()),
        }
    }
}

/// Where a read source's bytes come from, by kind: writers that need more than
/// [`Content`] (the ostree format needs the commit's objects) match on it.
pub enum SourceContent {
    /// A root filesystem on disk.
    Dir(Dir),
    /// An ostree commit's objects.
    Ostree(OstreeContent),
    /// A flattened image's spooled files.
    Image(Spool),
}

impl SourceContent {
    /// The bytes of the entries, whatever the kind.
    pub fn reader(&self) -> &dyn Content {
        match self {
            SourceContent::Dir(d) => d,
            SourceContent::Ostree(o) => o,
            SourceContent::Image(s) => s,
        }
    }
}

/// A source read: its entries and where their content comes from.
pub struct ReadSource {
    /// Where the entries' bytes come from.
    pub content: SourceContent,
    /// Every entry of the source.
    pub entries: Vec<Entry>,
    /// The build date the source carries (an ostree commit's timestamp).
    pub date: Option<i64>,
    /// The runtime config an image source carries, which a rechunk keeps.
    pub runtime: Option<ocidir::oci_spec::image::Config>,
    /// Holds a flattened image's spooled content as long as the source is read.
    _scratch: Option<Partial>,
}

/// Reads `source`'s entries; an image is flattened into a scratch directory that
/// lives as long as the result.
pub fn read(
    source: &BuildSource,
    registry: &RegistryOptions,
    opts: WalkOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<ReadSource, SourceError> {
    match source {
        BuildSource::Rootfs(root) => {
            progress(&format!("reading {}", root.display()));
            Ok(ReadSource {
                entries: walk(root, opts)?,
                content: SourceContent::Dir(Dir { root: root.clone() }),
                date: None,
                runtime: None,
                _scratch: None,
            })
        }
        BuildSource::Ostree { repo, rev } => {
            progress(&format!("reading {rev} in {}", repo.display()));
            let commit = super::ostree::read(repo, rev)?;
            Ok(ReadSource {
                entries: commit.entries,
                content: SourceContent::Ostree(commit.content),
                date: Some(commit.timestamp),
                runtime: None,
                _scratch: None,
            })
        }
        BuildSource::Image(r) => {
            progress(&format!("flattening {r}"));
            let scratch = tempfile::Builder::new()
                .prefix("strata-flatten-")
                .tempdir()
                .map_err(|source| SourceError::Io {
                    path: std::env::temp_dir(),
                    source,
                })?;
            let scratch = Partial::new(scratch.keep());
            let flat = super::image::flatten(r, registry, scratch.path(), opts)?;
            Ok(ReadSource {
                entries: flat.entries,
                content: SourceContent::Image(flat.content),
                date: None,
                runtime: Some(flat.runtime),
                _scratch: Some(scratch),
            })
        }
    }
}
