//! Cutting one owner's files into units by directory.
//!
//! A unit is what the planner places whole and what a version describes. Finer units
//! mean a change downloads less, but every unit costs a line in the layer annotations
//! and a place in the plan, so a directory's files form a unit only when they weigh
//! at least [`MIN_UNIT`]; lighter directories fold into their parent, up to the root
//! unit. Files of [`LARGE_FILE`] or more are units of their own, at most
//! [`MAX_LARGE_FILES`] of them an owner (past that, the smaller go back to their
//! directories: a tree of half a million unowned files would otherwise make as many
//! components, and a manifest no registry accepts). Directories fold further while
//! an owner has more than [`MAX_UNITS`] units, its large files counted. Units depend
//! only on paths and sizes, so the same tree always gives the same units.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::source::Entry;

/// Files at least this large are a unit of their own.
pub const LARGE_FILE: u64 = 1 << 20;
/// Unowned files at least this large are a unit of their own: logs, caches and
/// leftovers change file by file, so one that changes must not drag its unchanged
/// neighbours (a boot log beside the package manager's log) into the download.
pub const LARGE_UNOWNED_FILE: u64 = 16 << 10;
/// A directory's files weigh at least this much to form a unit of their own.
pub const MIN_UNIT: u64 = 64 << 10;
/// Directories fold, the lightest first, while an owner has more units than this.
pub const MAX_UNITS: usize = 32;
/// No owner has more large files standing alone than this.
pub const MAX_LARGE_FILES: usize = 1024;

/// One unit: the entries it holds, and what it is named after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The directory or large file the unit stands for; `None` for the root unit.
    pub path: Option<PathBuf>,
    /// The unit is one large file.
    pub single_file: bool,
    /// Indices into the entries, ascending.
    pub members: Vec<usize>,
}

/// Cuts a package's `members` (indices into `entries`, all below `root`) into units,
/// ordered by path with the root unit first.
pub fn split(entries: &[Entry], members: &[usize], root: &Path) -> Vec<Unit> {
    split_at(entries, members, root, LARGE_FILE)
}

/// Cuts unowned `members` into units: as [`split`] does, but with files of
/// [`LARGE_UNOWNED_FILE`] or more as units of their own.
pub fn split_unowned(entries: &[Entry], members: &[usize], root: &Path) -> Vec<Unit> {
    split_at(entries, members, root, LARGE_UNOWNED_FILE)
}

fn split_at(entries: &[Entry], members: &[usize], root: &Path, large_file: u64) -> Vec<Unit> {
    let alone = largest(entries, members, large_file, MAX_LARGE_FILES);
    let files: Vec<Unit> = alone
        .iter()
        .map(|&i| Unit {
            path: Some(entries[i].path.clone()),
            single_file: true,
            members: vec![i],
        })
        .collect();
    let mut dirs: BTreeMap<PathBuf, (u64, Vec<usize>)> = BTreeMap::new();
    for &i in members.iter().filter(|i| alone.binary_search(i).is_err()) {
        let e = &entries[i];
        let dir = match e.path.parent() {
            Some(p) if p.starts_with(root) => p.to_path_buf(),
            _ => root.to_path_buf(),
        };
        let slot = dirs.entry(dir).or_default();
        slot.0 += e.size;
        slot.1.push(i);
    }
    fold_light(&mut dirs, root);
    while dirs.len() + files.len() > MAX_UNITS && fold_lightest(&mut dirs, root) {}
    let mut units: Vec<Unit> = dirs
        .into_iter()
        .map(|(dir, (_, mut members))| {
            members.sort_unstable();
            Unit {
                path: (dir != root).then_some(dir),
                single_file: false,
                members,
            }
        })
        .collect();
    units.extend(files);
    units.sort_by(|a, b| a.path.cmp(&b.path));
    units
}

/// The members of at least `large_file` bytes, at most `limit` of them: the largest,
/// ties by path. Sorted, for lookups.
fn largest(entries: &[Entry], members: &[usize], large_file: u64, limit: usize) -> Vec<usize> {
    let mut large: Vec<usize> = members
        .iter()
        .copied()
        .filter(|&i| entries[i].size >= large_file)
        .collect();
    large.sort_by(|&a, &b| {
        let (a, b) = (&entries[a], &entries[b]);
        b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path))
    });
    large.truncate(limit);
    large.sort_unstable();
    large
}

/// Folds every directory lighter than [`MIN_UNIT`] into its parent, one depth at a
/// time from the deepest, so a parent (even one that held no file of its own) counts
/// the weight of the children folded into it before it is weighed itself.
fn fold_light(dirs: &mut BTreeMap<PathBuf, (u64, Vec<usize>)>, root: &Path) {
    let depth = |d: &Path| d.components().count();
    let deepest = dirs.keys().map(|d| depth(d)).max().unwrap_or(0);
    for level in (depth(root) + 1..=deepest).rev() {
        let light: Vec<PathBuf> = dirs
            .iter()
            .filter(|(d, (size, _))| depth(d) == level && *size < MIN_UNIT)
            .map(|(d, _)| d.clone())
            .collect();
        for dir in light {
            fold_into_parent(dirs, &dir, root);
        }
    }
}

/// Folds the lightest directory other than the root into its parent; `false` when
/// only the root is left.
fn fold_lightest(dirs: &mut BTreeMap<PathBuf, (u64, Vec<usize>)>, root: &Path) -> bool {
    let lightest = dirs
        .iter()
        .filter(|(d, _)| d.as_path() != root)
        .min_by(|a, b| a.1 .0.cmp(&b.1 .0).then_with(|| a.0.cmp(b.0)))
        .map(|(d, _)| d.clone());
    match lightest {
        Some(dir) => {
            fold_into_parent(dirs, &dir, root);
            true
        }
        None => false,
    }
}

fn fold_into_parent(dirs: &mut BTreeMap<PathBuf, (u64, Vec<usize>)>, dir: &Path, root: &Path) {
    let (size, members) = dirs.remove(dir).expect("folding a directory that exists");
    let parent = match dir.parent() {
        Some(p) if p.starts_with(root) => p.to_path_buf(),
        _ => root.to_path_buf(),
    };
    let slot = dirs.entry(parent).or_default();
    slot.0 += size;
    slot.1.extend(members);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::EntryKind;

    fn file(path: &str, size: u64) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size,
            mtime: 0,
            xattrs: vec![],
        }
    }

    fn names(units: &[Unit]) -> Vec<String> {
        units
            .iter()
            .map(|u| match &u.path {
                None => "<root>".to_string(),
                Some(p) => p.display().to_string(),
            })
            .collect()
    }

    #[test]
    fn heavy_directories_and_large_files_stand_alone() {
        let entries = vec![
            file("usr/bin/perl", 3 << 20),
            file("usr/lib/perl/a.pm", 40 << 10),
            file("usr/lib/perl/sub/b.pm", 40 << 10),
            file("usr/share/doc/perl/changelog.gz", 4 << 10),
            file("usr/share/man/man1/perl.1.gz", 2 << 10),
        ];
        let members: Vec<usize> = (0..entries.len()).collect();
        let units = split(&entries, &members, Path::new(""));
        // sub/ is light and folds into usr/lib/perl, which then weighs 80 KiB.
        assert_eq!(names(&units), ["<root>", "usr/bin/perl", "usr/lib/perl"]);
        assert_eq!(units[0].members, [3, 4]);
        assert!(units[1].single_file);
        assert_eq!(units[2].members, [1, 2]);
    }

    /// Unowned files change one by one: a log that grows must not take the boot log
    /// beside it along, so mid-sized unowned files stand alone where a package's would
    /// share their directory's unit.
    #[test]
    fn unowned_files_stand_alone_from_a_smaller_size() {
        let entries = vec![
            file("var/log/bootstrap.log", 60 << 10),
            file("var/log/dpkg.log", 64 << 10),
            file("var/log/faillog", 0),
            file("var/log/wtmp", 2 << 10),
        ];
        let members: Vec<usize> = (0..entries.len()).collect();
        let unowned = split_unowned(&entries, &members, Path::new("var"));
        assert_eq!(
            names(&unowned),
            ["<root>", "var/log/bootstrap.log", "var/log/dpkg.log"]
        );
        assert_eq!(unowned[0].members, [2, 3]);
        let owned = split(&entries, &members, Path::new("var"));
        assert_eq!(names(&owned), ["var/log"]);
    }

    #[test]
    fn an_owner_never_has_more_than_the_cap() {
        let entries: Vec<Entry> = (0..100)
            .map(|i| file(&format!("usr/share/d{i:03}/f"), (100 + i) << 10))
            .collect();
        let members: Vec<usize> = (0..entries.len()).collect();
        let units = split(&entries, &members, Path::new("usr"));
        assert_eq!(units.len(), MAX_UNITS);
        // The lightest folded into usr/share; the heaviest kept their own units.
        assert_eq!(units.iter().map(|u| u.members.len()).sum::<usize>(), 100);
        assert!(names(&units).contains(&"usr/share/d099".to_string()));
        assert!(!names(&units).contains(&"usr/share/d000".to_string()));
    }

    /// A crafted tree: many mid-sized unowned files would each be a unit, so a
    /// component, and a line in the manifest.
    #[test]
    fn many_large_files_still_make_at_most_the_cap() {
        let entries: Vec<Entry> = (0..3_000)
            .map(|i| file(&format!("srv/d{}/f{i:04}", i % 10), (20 << 10) + i))
            .collect();
        let members: Vec<usize> = (0..entries.len()).collect();
        let units = split_unowned(&entries, &members, Path::new("srv"));
        assert!(
            units.len() <= MAX_UNITS + MAX_LARGE_FILES,
            "{}",
            units.len()
        );
        let mut all: Vec<usize> = units.iter().flat_map(|u| u.members.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, members);
        // The largest stand alone; the rest are in their directories' units.
        let alone: Vec<&Unit> = units.iter().filter(|u| u.single_file).collect();
        assert_eq!(alone.len(), MAX_LARGE_FILES);
        assert!(alone.iter().all(|u| u.members[0] >= 3_000 - alone.len()));
    }
}
