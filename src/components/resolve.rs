//! Where a path a package database lists really is in the tree.
//!
//! Databases record the paths packages were built with: dpkg on a merged-/usr Debian
//! lists `/bin/bash`, which the tree holds at `usr/bin/bash` behind the `bin ->
//! usr/bin` link. [`Resolver`] follows the tree's own symlinks in every component but
//! the last, reading links only from the walk (never the filesystem), and refuses any
//! path that would climb above the root, so a resolved path always names something
//! inside the tree.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use crate::source::{Entry, EntryKind};

/// More link hops than this means a loop (Linux allows 40).
const MAX_HOPS: usize = 40;

/// The tree's symlinks, by path.
pub struct Resolver<'a> {
    links: HashMap<&'a Path, &'a Path>,
}

impl<'a> Resolver<'a> {
    /// The symlinks among the walk's `entries`.
    pub fn new(entries: &'a [Entry]) -> Self {
        let links = entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Symlink(target) => Some((e.path.as_path(), target.as_path())),
                _ => None,
            })
            .collect();
        Resolver { links }
    }

    /// `listed` (relative to the root, or absolute meaning the same) with every link in
    /// its parent components followed inside the tree, as a relative path of plain
    /// components. The last component is never followed: a package may own a link.
    /// `None` when the path climbs above the root or loops.
    pub fn resolve(&self, listed: &Path) -> Option<PathBuf> {
        let mut todo: VecDeque<&OsStr> = parts(listed).collect();
        let mut cur = PathBuf::new();
        let mut hops = 0;
        while let Some(part) = todo.pop_front() {
            if part == ".." {
                if !cur.pop() {
                    return None;
                }
                continue;
            }
            let next = cur.join(part);
            let link = match todo.is_empty() {
                true => None,
                false => self.links.get(next.as_path()),
            };
            let Some(target) = link else {
                cur = next;
                continue;
            };
            hops += 1;
            if hops > MAX_HOPS {
                return None;
            }
            if target.has_root() {
                cur = PathBuf::new();
            }
            for p in parts(target).rev() {
                todo.push_front(p);
            }
        }
        Some(cur)
    }
}

/// The normal and `..` components of a path; the root and `.` say nothing here.
fn parts(path: &Path) -> impl DoubleEndedIterator<Item = &OsStr> {
    path.components().filter_map(|c| match c {
        Component::Normal(p) => Some(p),
        Component::ParentDir => Some(OsStr::new("..")),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn link(path: &str, target: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Symlink(target.into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 0,
            xattrs: vec![],
        }
    }

    #[test]
    fn merged_usr_and_nested_links_resolve_inside_the_tree() {
        let entries = vec![
            link("bin", "usr/bin"),
            link("lib", "/usr/lib"),
            link("usr/lib/alias", "../share/real"),
            link("usr/bin/sh", "dash"),
            link("up", "../../etc"),
            link("loop", "loop"),
        ];
        let r = Resolver::new(&entries);
        let resolve = |p: &str| r.resolve(Path::new(p)).map(|p| p.display().to_string());
        assert_eq!(resolve("/bin/bash").as_deref(), Some("usr/bin/bash"));
        assert_eq!(
            resolve("/lib/x86_64-linux-gnu/libc.so.6").as_deref(),
            Some("usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(resolve("lib/alias/x").as_deref(), Some("usr/share/real/x"));
        // The last component is the package's own: a link is not followed.
        assert_eq!(resolve("/bin/sh").as_deref(), Some("usr/bin/sh"));
        assert_eq!(resolve("up/passwd"), None);
        assert_eq!(resolve("loop/x"), None);
        assert_eq!(resolve("../etc/passwd"), None);
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("..".to_string()),
            Just(".".to_string()),
            "[ab]{1,2}".prop_map(|s| s),
        ]
    }

    fn path() -> impl Strategy<Value = String> {
        (any::<bool>(), prop::collection::vec(segment(), 1..6))
            .prop_map(|(abs, segs)| format!("{}{}", if abs { "/" } else { "" }, segs.join("/")))
    }

    proptest! {
        /// Whatever links a crafted tree holds, a resolved path is plain components
        /// below the root.
        #[test]
        fn never_leaves_the_tree(
            links in prop::collection::vec((path(), path()), 0..8),
            listed in path(),
        ) {
            let entries: Vec<Entry> = links
                .iter()
                .map(|(p, t)| link(p.trim_start_matches('/'), t))
                .collect();
            let r = Resolver::new(&entries);
            if let Some(resolved) = r.resolve(Path::new(&listed)) {
                prop_assert!(resolved
                    .components()
                    .all(|c| matches!(c, Component::Normal(_))));
            }
        }
    }
}
