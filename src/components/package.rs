//! What every package database yields: installed packages and their files, read
//! from inside a walked tree, following only the tree's own links and never out of it.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::AssignError;
use super::resolve::Resolver;
use crate::source::content::Content;
use crate::source::{Entry, EntryKind};

/// What one listed path costs in memory beyond its bytes (a `PathBuf`'s own size);
/// charged with each path against the tree's budget.
pub const PATH_OVERHEAD: u64 = 24;
/// Larger database files are refused rather than read into memory.
pub const MAX_DB_FILE: u64 = 256 << 20;

/// A package database format: where it lives in a tree and how to read it. Adding a
/// format is one file implementing this and one line in [`super::databases`].
pub trait PackageDb: Sync {
    /// Where the database records what is installed, relative to the root: files, and
    /// directories ending in `/`. These are generated and rewritten by every package
    /// change, so they form one component of their own. Other state beside them (a
    /// stale list of available packages, a package manager's download lists) is not
    /// the record and follows the rules for unowned files.
    fn records(&self) -> &'static [&'static str];
    /// The installed packages, or `None` when the tree has no such database.
    fn read(&self, tree: &Tree) -> Result<Option<Vec<Package>>, AssignError>;
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// The package's name.
    pub name: String,
    /// Its version as the database records it (with epoch and release).
    pub version: String,
    /// Its source package, when the database names one.
    pub source: Option<String>,
    /// Paths it owns, relative to the root.
    pub files: Vec<PathBuf>,
    /// Changelog entry times, seconds since the epoch.
    pub changelog: Vec<i64>,
}

/// Package databases may list this many bytes of paths per byte of the walk's own
/// paths (real ones list each path about once, plus shared directories), plus
/// [`PATH_BUDGET_BASE`]. A crafted database that lists more would cost memory far
/// beyond its size on disk, and is refused.
const PATH_BUDGET_PER_TREE_BYTE: u64 = 4;
const PATH_BUDGET_BASE: u64 = 16 << 20;

/// The regular files of a walk, by path, for reading inside the tree only.
pub struct Tree<'a> {
    /// The bytes behind the walk.
    pub content: &'a dyn Content,
    files: HashMap<&'a Path, &'a Entry>,
    links: Resolver<'a>,
    /// Bytes of listed paths the package databases may still yield.
    path_budget: Cell<u64>,
}

impl<'a> Tree<'a> {
    /// The walk's `entries`, their bytes read through `content`.
    pub fn new(content: &'a dyn Content, entries: &'a [Entry]) -> Self {
        let files = entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| (e.path.as_path(), e))
            .collect();
        let tree_bytes: u64 = entries
            .iter()
            .map(|e| e.path.as_os_str().len() as u64)
            .sum();
        Tree {
            content,
            files,
            links: Resolver::new(entries),
            path_budget: Cell::new(PATH_BUDGET_PER_TREE_BYTE * tree_bytes + PATH_BUDGET_BASE),
        }
    }

    /// Accounts for `bytes` of paths the database at `db` lists; an error once the
    /// databases together list far more than the tree holds.
    pub fn charge_paths(&self, db: &Path, bytes: u64) -> Result<(), AssignError> {
        let left =
            self.path_budget
                .get()
                .checked_sub(bytes)
                .ok_or_else(|| AssignError::Invalid {
                    path: self.describe(db),
                    problem: "lists far more paths than the tree holds (a crafted database?)"
                        .into(),
                })?;
        self.path_budget.set(left);
        Ok(())
    }

    /// How to name `rel` in messages.
    pub fn describe(&self, rel: &Path) -> PathBuf {
        self.content.describe(rel)
    }

    /// Whether the walk found a regular file at `rel`.
    pub fn has_file(&self, rel: &Path) -> bool {
        self.files.contains_key(rel)
    }

    /// The regular files the walk found directly inside `dir`, in no order.
    pub fn files_in<'t>(&'t self, dir: &'t Path) -> impl Iterator<Item = &'a Path> + 't {
        self.files
            .keys()
            .copied()
            .filter(move |p| p.parent() == Some(dir))
    }

    /// The regular files the walk found anywhere below `dir`, in no order.
    pub fn files_below<'t>(&'t self, dir: &'t Path) -> impl Iterator<Item = &'a Path> + 't {
        self.files
            .keys()
            .copied()
            .filter(move |p| p.starts_with(dir) && *p != dir)
    }

    /// Where the tree holds `listed`: see [`Resolver::resolve`].
    pub fn resolve(&self, listed: &Path) -> Option<PathBuf> {
        self.links.resolve(listed)
    }

    /// Reads a regular file the walk found at `rel`; `None` if there is none.
    pub fn read(&self, rel: &Path, limit: u64) -> Result<Option<Vec<u8>>, AssignError> {
        let Some(entry) = self.files.get(rel) else {
            return Ok(None);
        };
        let path = self.describe(rel);
        if entry.size > limit {
            return Err(AssignError::Invalid {
                path,
                problem: format!("{} bytes is more than the {limit} allowed", entry.size),
            });
        }
        let mut data = Vec::with_capacity(entry.size as usize);
        self.content
            .open(entry)
            .and_then(|f| f.take(limit).read_to_end(&mut data))
            .map_err(|source| AssignError::Io { path, source })?;
        Ok(Some(data))
    }
}
