//! Where the bytes of a tree's regular files come from: a directory on disk, or the
//! content objects of an ostree commit. Everything that reads file content (package
//! databases, generated-component hashes, layer tars) goes through [`Content`].

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::Entry;

/// Reads the content of a tree's regular files.
pub trait Content: Sync {
    /// Opens the regular file `entry` for reading; its length must be `entry.size`.
    fn open(&self, entry: &Entry) -> io::Result<Box<dyn Read + '_>>;

    /// How to name `rel` in messages.
    fn describe(&self, rel: &Path) -> PathBuf;

    /// The ostree commit behind the content, when there is one.
    fn ostree(&self) -> Option<&super::ostree::OstreeContent> {
        None
    }
}

/// Files in a directory, opened without following a symlink in the last component
/// (the walk found regular files there; a swap since then is refused).
pub struct Dir {
    pub root: PathBuf,
}

impl Content for Dir {
    fn open(&self, entry: &Entry) -> io::Result<Box<dyn Read + '_>> {
        let file = open_no_follow(&self.root.join(&entry.path))?;
        let len = file.metadata()?.len();
        if len != entry.size {
            return Err(io::Error::other(format!(
                "changed size during the build ({} → {len} bytes)",
                entry.size
            )));
        }
        Ok(Box::new(file))
    }

    fn describe(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }
}

/// Opens a file for reading, refusing a symlink in its last component.
pub fn open_no_follow(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}
