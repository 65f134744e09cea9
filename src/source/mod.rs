//! Sources: where a build's files come from. Each source yields the same list of
//! [`Entry`] values, so everything downstream is source-agnostic.

pub mod content;
pub mod image;
pub mod ostree;
pub mod read;
pub mod rootfs;

pub use read::{read, BuildSource, ReadSource, SourceContent};

use std::path::{Path, PathBuf};

/// What kind of filesystem object an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link, with its target as stored (never followed).
    Symlink(PathBuf),
    /// Another path of the same inode, earlier in sort order.
    Hardlink(PathBuf),
    /// A character device, with its device number.
    CharDevice(u64),
    /// A block device, with its device number.
    BlockDevice(u64),
    /// A named pipe.
    Fifo,
}

/// One filesystem object, with the metadata an image must reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the tree root, without a leading `/`.
    pub path: PathBuf,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits, including setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Bytes of content (regular files only).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Sorted by name.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }
}

/// The index of `path` in `entries`. Every source yields its entries sorted by path
/// bytes, each path once.
pub fn find(entries: &[Entry], path: &Path) -> Option<usize> {
    entries
        .binary_search_by(|e| e.path.as_os_str().cmp(path.as_os_str()))
        .ok()
}

/// Uncompressed bytes of the entries `members` (indices into `entries`).
pub fn bytes_of(entries: &[Entry], members: &[usize]) -> u64 {
    members.iter().map(|&i| entries[i].size).sum()
}

/// A source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Reading a file or directory of the source failed.
    #[error("{path}: {source}")]
    Io {
        /// What was read, as the source names it.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The root filesystem named is not a directory.
    #[error("{path}: is not a directory")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    #[error(
        "{path}: is a {what}; images should not carry them (pass --allow-special-files to \
         keep devices and FIFOs)"
    )]
    /// A device or FIFO, refused unless special files are allowed.
    SpecialFile {
        /// Where it is in the tree.
        path: PathBuf,
        /// What kind of special file.
        what: &'static str,
    },
    /// The source is malformed or crafted.
    #[error("{path}: {problem}")]
    Invalid {
        /// What was read, as the source names it.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}
