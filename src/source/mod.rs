//! Sources: where a build's files come from. Each source yields the same list of
//! [`Entry`] values, so everything downstream is source-agnostic.

pub mod content;
pub mod image;
pub mod ostree;
pub mod read;
pub mod rootfs;

pub use read::{read, BuildSource, ReadSource, SourceContent};

use std::path::PathBuf;

/// What kind of filesystem object an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink(PathBuf),
    /// Another path of the same inode, earlier in sort order.
    Hardlink(PathBuf),
    CharDevice(u64),
    BlockDevice(u64),
    Fifo,
}

/// One filesystem object, with the metadata an image must reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the tree root, without a leading `/`.
    pub path: PathBuf,
    pub kind: EntryKind,
    /// Permission bits, including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Bytes of content (regular files only).
    pub size: u64,
    pub mtime: i64,
    /// Sorted by name.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }
}

/// A source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "{path}: is a {what}; images should not carry them (pass --allow-special-files to \
         keep devices and FIFOs)"
    )]
    SpecialFile { path: PathBuf, what: &'static str },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}
