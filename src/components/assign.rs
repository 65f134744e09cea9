//! Which files belong to which component.
//!
//! Order of precedence: a `user.component` xattr, the components map, the package
//! database, then
//! rules for files no package owns, each as stable a group as it can be: the kernel
//! tree of each version, the package database itself, `/etc`, every unowned file of
//! 1 MiB or more on its own, and the rest by top-level directory. All directories
//! form one generated component, so empty directories survive.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::dpkg;
use super::map::ComponentMap;
use super::package::{Package, Tree};
use super::rpmdb;
use super::{Build, Component, ComponentKind};
use crate::source::content::Content;
use crate::source::{Entry, EntryKind};

/// The xattr that names a file's component explicitly.
pub const COMPONENT_XATTR: &str = "user.component";
/// Unowned files at least this large get a component of their own.
pub const LARGE_FILE: u64 = 1 << 20;
/// The component holding every directory.
pub const TREE_COMPONENT: &str = "filesystem-tree";
/// Package databases: generated, and rewritten by every package change.
const PACKAGE_DATABASES: [&str; 4] = [
    "var/lib/dpkg/",
    "usr/lib/sysimage/rpm/",
    "var/lib/rpm/",
    "usr/share/rpm/",
];

#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

/// Entries gathered under one component name while walking.
struct Group {
    kind: ComponentKind,
    /// Index into the packages, for package components.
    package: Option<usize>,
    members: Vec<usize>,
}

/// A build's components, and which entries each one holds.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub build: Build,
    /// For each component of `build` (same order): indices into the entries.
    pub members: Vec<Vec<usize>>,
}

/// Groups the walked `entries` of a tree (its files read through `content`) into
/// components.
pub fn assign(
    content: &dyn Content,
    entries: &[Entry],
    date: Option<String>,
    map: &ComponentMap,
) -> Result<Assigned, AssignError> {
    let tree = Tree::new(content, entries);
    let mut packages: Vec<Package> = rpmdb::read(&tree)?.unwrap_or_default();
    packages.extend(dpkg::read(&tree)?.unwrap_or_default());
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    let mut owner: HashMap<&Path, usize> = HashMap::new();
    for (p, pkg) in packages.iter().enumerate() {
        for f in &pkg.files {
            // Packages are sorted by name, so the first claim is the deterministic owner.
            owner.entry(f.as_path()).or_insert(p);
        }
    }
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut group_of: HashMap<&Path, String> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        let (name, kind, pkg) = match &e.kind {
            EntryKind::Dir => (TREE_COMPONENT.to_string(), ComponentKind::Generated, None),
            EntryKind::Hardlink(target) => {
                let name = group_of.get(target.as_path()).cloned().ok_or_else(|| {
                    AssignError::Invalid {
                        path: content.describe(&e.path),
                        problem: format!(
                            "hard link to {} which the walk did not see first",
                            target.display()
                        ),
                    }
                })?;
                let g = &groups[&name];
                (name, g.kind, g.package)
            }
            _ => classify(e, map, owner.get(e.path.as_path()).copied(), &packages),
        };
        group_of.insert(e.path.as_path(), name.clone());
        groups
            .entry(name)
            .or_insert(Group {
                kind,
                package: pkg,
                members: Vec::new(),
            })
            .members
            .push(i);
    }
    let mut build = Build {
        date,
        components: Vec::new(),
    };
    let groups: Vec<(String, Group)> = groups.into_iter().collect();
    // Content digests read every unowned byte: spread them over all cores.
    let digests = crate::parallel::try_map(
        &groups,
        |_, (_, g)| match g.package {
            Some(_) => Ok(None),
            None => content_version(content, entries, &g.members).map(Some),
        },
        |_, _| {},
    )?;
    let mut members = Vec::new();
    for (
        (
            name,
            Group {
                kind,
                package: pkg,
                members: idx,
            },
        ),
        digest,
    ) in groups.into_iter().zip(digests)
    {
        let size = idx.iter().map(|&i| entries[i].size).sum();
        let (version, source, changelog) = match pkg {
            Some(p) => (
                packages[p].version.clone(),
                packages[p]
                    .source
                    .clone()
                    .or(Some(packages[p].name.clone())),
                packages[p].changelog.clone(),
            ),
            None => (digest.unwrap_or_default(), None, Vec::new()),
        };
        build.components.push(Component {
            name,
            version,
            size,
            source,
            changelog,
            update_interval_days: None,
            kind,
        });
        members.push(idx);
    }
    Ok(Assigned { build, members })
}

/// The component of a non-directory entry, by xattr, owner, then the unowned rules.
fn classify(
    e: &Entry,
    map: &ComponentMap,
    owner: Option<usize>,
    packages: &[Package],
) -> (String, ComponentKind, Option<usize>) {
    if let Some((_, v)) = e.xattrs.iter().find(|(k, _)| k == COMPONENT_XATTR) {
        return (
            String::from_utf8_lossy(v).into_owned(),
            ComponentKind::Files,
            None,
        );
    }
    if let Some(name) = map.component_of(&e.path) {
        return (name.to_string(), ComponentKind::Files, None);
    }
    if let Some(p) = owner {
        return (packages[p].name.clone(), ComponentKind::Package, Some(p));
    }
    let path = e.path.to_string_lossy();
    let generated = |name: String| (name, ComponentKind::Generated, None);
    if let Some(rest) = path.strip_prefix("usr/lib/modules/") {
        let version = rest.split('/').next().unwrap_or_default();
        return generated(format!("kernel:{version}"));
    }
    if PACKAGE_DATABASES.iter().any(|db| path.starts_with(db)) {
        return generated("package-database".into());
    }
    if path.starts_with("etc/") {
        return generated("etc".into());
    }
    if e.size >= LARGE_FILE {
        return generated(format!("file:/{path}"));
    }
    let top = path
        .split('/')
        .next()
        .filter(|_| path.contains('/'))
        .unwrap_or("");
    generated(format!("unowned:/{top}"))
}

/// A version for content no package versions: a digest of every member's path,
/// metadata and bytes.
fn content_version(
    content: &dyn Content,
    entries: &[Entry],
    members: &[usize],
) -> Result<String, AssignError> {
    let mut h = Sha256::new();
    for &i in members {
        let e = &entries[i];
        h.update(e.path.as_os_str().as_encoded_bytes());
        h.update(format!("\0{:?}\0{:o}\0{}\0{}\0", e.kind, e.mode, e.uid, e.gid).as_bytes());
        for (k, v) in &e.xattrs {
            h.update(k.as_bytes());
            h.update(v);
        }
        if e.kind == EntryKind::File {
            let err = |source| AssignError::Io {
                path: content.describe(&e.path),
                source,
            };
            let mut f = content.open(e).map_err(err)?;
            let mut buf = vec![0; 64 << 10];
            loop {
                let n = f.read(&mut buf).map_err(err)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
    }
    Ok(crate::bytes::sha256_label(&h.finalize()[..10]))
}
