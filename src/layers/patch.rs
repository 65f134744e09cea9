//! The patch layer: what makes an image with kept layers unpack to exactly the new
//! tree. A kept layer is a prior blob, so some of what it holds is stale: files of
//! superseded members that are gone (hidden here by whiteouts), and any entry a
//! higher layer does not cover that differs from the tree, or that no live member of
//! the layer owns (written here again from the tree).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::source::{Entry, EntryKind};

/// One layer of the image, bottom first, as the patch sees it.
pub enum Stacked<'a> {
    /// Written from the tree: these entries of it.
    Written(&'a [usize]),
    /// Copied from the prior: what the blob holds, and the tree entries its live
    /// members own (with the directories above them).
    Kept {
        /// What the prior blob holds.
        entries: &'a [Entry],
        /// The tree entries its live members own.
        owned: &'a [usize],
    },
}

/// What goes into the patch layer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Patch {
    /// Tree entries to write again, with the directories above them, sorted by path.
    pub entries: Vec<usize>,
    /// Paths to hide from every lower layer, outermost only.
    pub whiteouts: Vec<PathBuf>,
}

impl Patch {
    /// Nothing to write: the kept layers already unpack to the tree.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.whiteouts.is_empty()
    }
}

/// The patch that makes `stack` unpack to `tree`, carrying the tree entries
/// `carried` too; `mtime_clamp` as the layers were written with.
pub fn patch(tree: &[Entry], stack: &[Stacked], carried: &[usize], mtime_clamp: i64) -> Patch {
    let index = |p: &Path| crate::source::find(tree, p);
    let mut top: HashMap<&Path, usize> = HashMap::new();
    for (pos, layer) in stack.iter().enumerate() {
        let paths: Box<dyn Iterator<Item = &Path>> = match layer {
            Stacked::Written(members) => Box::new(members.iter().map(|&i| tree[i].path.as_path())),
            Stacked::Kept { entries, .. } => Box::new(entries.iter().map(|e| e.path.as_path())),
        };
        for path in paths {
            top.insert(path, pos);
        }
    }
    let mut rewrite: BTreeSet<usize> = carried.iter().copied().collect();
    let mut gone: BTreeSet<&Path> = BTreeSet::new();
    for (pos, layer) in stack.iter().enumerate() {
        let Stacked::Kept { entries, owned } = layer else {
            continue;
        };
        let owned: HashSet<usize> = owned.iter().copied().collect();
        for e in entries.iter().filter(|e| top[e.path.as_path()] == pos) {
            match index(e.path.as_path()) {
                None => {
                    gone.insert(e.path.as_path());
                }
                Some(i) => {
                    let t = &tree[i];
                    let owner_ok = t.kind == EntryKind::Dir || owned.contains(&i);
                    if !(owner_ok && same(e, t, mtime_clamp)) {
                        rewrite.insert(i);
                    }
                }
            }
        }
    }
    let replaced = |p: &Path| index(p).is_some_and(|i| tree[i].kind != EntryKind::Dir);
    let whiteouts: Vec<PathBuf> = gone
        .iter()
        .filter(|p| {
            // Hidden already: an ancestor goes too, or is a non-directory now.
            !p.ancestors()
                .skip(1)
                .any(|a| gone.contains(a) || replaced(a))
        })
        .map(|p| p.to_path_buf())
        .collect();
    let parents = whiteouts.iter().filter_map(|w| w.parent());
    let entries = super::with_parents(tree, rewrite.into_iter().chain(parents.filter_map(index)));
    Patch { entries, whiteouts }
}

/// Whether a kept layer's entry unpacks to the tree's: the same kind, owner, mode,
/// size, mtime as written, and xattrs.
fn same(kept: &Entry, tree: &Entry, mtime_clamp: i64) -> bool {
    let sorted = |e: &Entry| {
        let mut x = e.xattrs.clone();
        x.sort();
        x
    };
    kept.kind == tree.kind
        && kept.uid == tree.uid
        && kept.gid == tree.gid
        && kept.mode & 0o7777 == tree.mode & 0o7777
        && kept.size == tree.size
        && kept.mtime == tree.mtime.clamp(0, mtime_clamp.max(0))
        && sorted(kept) == sorted(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, size: u64) -> Entry {
        Entry {
            path: PathBuf::from(path),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }

    fn dir(path: &str) -> Entry {
        entry(path, EntryKind::Dir, 0)
    }

    fn file(path: &str, size: u64) -> Entry {
        entry(path, EntryKind::File, size)
    }

    /// A kept layer held `less` (gone now) and an older `bash`, which a written layer
    /// above supersedes: the whiteouts hide what went, and nothing else is rewritten.
    #[test]
    fn whiteouts_hide_what_went_and_nothing_more() {
        let tree = vec![dir("usr"), dir("usr/bin"), file("usr/bin/bash", 9)];
        let kept = vec![
            dir("usr"),
            dir("usr/bin"),
            file("usr/bin/bash", 5),
            file("usr/bin/less", 3),
            dir("usr/share/less"),
            file("usr/share/less/help", 1),
        ];
        let written = [0, 1, 2];
        let stack = [
            Stacked::Kept {
                entries: &kept,
                owned: &[0, 1],
            },
            Stacked::Written(&written),
        ];
        let p = patch(&tree, &stack, &[], 0);
        assert_eq!(
            p.whiteouts,
            vec![
                PathBuf::from("usr/bin/less"),
                PathBuf::from("usr/share/less")
            ]
        );
        assert_eq!(
            p.entries,
            vec![0, 1],
            "the whiteouts' parents, from the tree"
        );
    }

    /// A stale entry no higher layer covers is written again: a file whose owner left
    /// the layer, and a directory whose mode changed.
    #[test]
    fn stale_entries_are_written_again() {
        let mut etc = dir("etc");
        etc.mode = 0o700;
        let tree = vec![etc, file("etc/motd", 4)];
        let kept = vec![dir("etc"), file("etc/motd", 4)];
        let stack = [Stacked::Kept {
            entries: &kept,
            owned: &[],
        }];
        let p = patch(&tree, &stack, &[], 0);
        assert_eq!(p.entries, vec![0, 1]);
        assert!(p.whiteouts.is_empty());
    }

    /// What the patch layer carries is written whole, with its directories, beside
    /// the stale entries of a kept layer it supersedes.
    #[test]
    fn carried_entries_are_written_with_their_directories() {
        let tree = vec![
            dir("var"),
            dir("var/lib"),
            file("var/lib/status", 7),
            dir("var/log"),
            file("var/log/new.log", 2),
        ];
        let kept = vec![dir("var"), dir("var/lib"), file("var/lib/status", 5)];
        let stack = [Stacked::Kept {
            entries: &kept,
            owned: &[],
        }];
        let p = patch(&tree, &stack, &[2, 3, 4], 0);
        assert_eq!(p.entries, vec![0, 1, 2, 3, 4]);
        assert!(p.whiteouts.is_empty());
    }

    /// A directory the tree now has as a file hides its old children itself: no
    /// whiteout may pass through it.
    #[test]
    fn no_whiteout_below_a_replaced_directory() {
        let tree = vec![file("opt", 1)];
        let kept = vec![dir("opt"), file("opt/x", 1)];
        let written = [0];
        let stack = [
            Stacked::Kept {
                entries: &kept,
                owned: &[],
            },
            Stacked::Written(&written),
        ];
        assert_eq!(patch(&tree, &stack, &[], 0), Patch::default());
    }

    /// A layer holds its members and every directory above them once, in path
    /// order, whatever order the members come in.
    #[test]
    fn members_bring_their_parent_directories_once_in_path_order() {
        let tree = [
            dir("a"),
            dir("a/b"),
            file("a/b/f1", 1),
            file("a/b/f2", 1),
            dir("a/c"),
            dir("d"),
            file("d/g", 1),
            file("e", 1),
        ];
        let layer = super::super::with_parents(&tree, [6, 3, 2, 4].into_iter());
        let paths: Vec<&str> = layer
            .iter()
            .map(|&i| tree[i].path.to_str().unwrap())
            .collect();
        assert_eq!(paths, ["a", "a/b", "a/b/f1", "a/b/f2", "a/c", "d", "d/g"]);
    }
}
