//! Which files belong to which component.
//!
//! Order of precedence: a `user.component` xattr, the components map, the package
//! database (its paths resolved through the tree's own directory links, see
//! [`super::resolve`]), then rules for files no package owns. Every component but a
//! package's own unit is versioned by the digest of its content, so its version
//! changes exactly when some byte does, whatever the package database says. A
//! package's own unit (docs, changelog, small directories) carries the package's
//! version, so diffs read as package updates.
//!
//! Components are made small where that pays, because clients download whole layers:
//! - a package's files are split by directory ([`units`]), so a security update that
//!   rebuilds a binary leaves its documentation, locales and data in place;
//! - files no package owns go into units by directory: caches, logs and package
//!   manager leftovers are volatile from the first build, the package database is one
//!   unit of its own, and alternatives links share one small stable unit;
//! - any file of [`LARGE_FILE`] or more is a unit of its own, and so is an unowned
//!   file of [`units::LARGE_UNOWNED_FILE`] or more (`file:/PATH`, or
//!   `volatile:/PATH` under a volatile directory): such files change one by one.
//!
//! All directories form one generated component, so empty directories survive.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::databases;
use super::map::ComponentMap;
use super::package::{Package, Tree};
use super::resolve::Resolver;
use super::units;
use super::{Build, Component, ComponentKind};
use crate::source::content::{chunked, Content};
use crate::source::{Entry, EntryKind};

pub use super::error::AssignError;
pub use super::units::LARGE_FILE;

/// The xattr that names a file's component explicitly.
pub const COMPONENT_XATTR: &str = "user.component";
/// The component holding every directory.
pub const TREE_COMPONENT: &str = "filesystem-tree";
/// The component holding the package databases.
pub const DATABASE_COMPONENT: &str = "package-database";
/// The component holding alternatives links (`/etc/alternatives` and links into it)
/// and update-alternatives' record of them.
pub const ALTERNATIVES_COMPONENT: &str = "alternatives";
/// Unowned content that changes on every build: caches, logs, scratch space and
/// apt's and pacman's package lists. Recognised on the first build, before history can tell.
const VOLATILE_DIRS: [&str; 6] = [
    "var/cache/",
    "var/log/",
    "var/lib/apt/lists/",
    "var/lib/pacman/sync/",
    "var/tmp/",
    "tmp/",
];
/// The alternatives links, and update-alternatives' record of them.
const ALTERNATIVES_DIRS: [&str; 2] = ["etc/alternatives/", "var/lib/dpkg/alternatives/"];
/// Where packages keep their configuration.
const CONFIG_DIR: &str = "etc";

/// What claims an entry, before units are cut.
#[derive(Debug, Clone)]
enum Claim {
    /// A component named outright: an xattr, a map rule, or a fixed rule.
    Named(String, ComponentKind),
    /// Owned by this package.
    Package(usize),
    /// Owned by nobody; `true` for volatile content.
    Unowned { volatile: bool },
    /// A hard link: wherever its target goes.
    Link(PathBuf),
}

/// A build's components, and which entries each one holds.
#[derive(Debug, Clone)]
pub struct Assigned {
    /// The components, versioned.
    pub build: Build,
    /// For each component of `build` (same order): indices into the entries.
    pub members: Vec<Vec<usize>>,
}

/// One component before its version is known.
struct Draft {
    kind: ComponentKind,
    package: Option<usize>,
    members: Vec<usize>,
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
    let mut packages: Vec<Package> = Vec::new();
    for db in databases::ALL {
        packages.extend(db.read(&tree)?.unwrap_or_default());
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    let owner = owners(entries, &packages);
    drop(tree);
    let claims: Vec<Claim> = entries
        .iter()
        .map(|e| claim(e, map, owner.get(e.path.as_path()).copied()))
        .collect();
    drop(owner);
    // The claims are let go before content is hashed, which is the long part.
    let drafts = draft(content, entries, claims, &packages)?;
    finish(content, entries, drafts, &packages, date)
}

/// Each path a package lists, resolved to where the tree holds it, with its owner.
/// Packages are sorted by name, so the first claim is the deterministic owner.
fn owners(entries: &[Entry], packages: &[Package]) -> HashMap<PathBuf, usize> {
    let resolver = Resolver::new(entries);
    let mut owner = HashMap::new();
    for (p, pkg) in packages.iter().enumerate() {
        for f in &pkg.files {
            let at = resolver.resolve(f).unwrap_or_else(|| f.clone());
            owner.entry(at).or_insert(p);
        }
    }
    owner
}

/// What claims one entry: xattr, map, owner, then the rules for unowned files.
fn claim(e: &Entry, map: &ComponentMap, owner: Option<usize>) -> Claim {
    let named = |name: &str, kind| Claim::Named(name.to_string(), kind);
    match &e.kind {
        EntryKind::Dir => return named(TREE_COMPONENT, ComponentKind::Generated),
        EntryKind::Hardlink(target) => return Claim::Link(target.clone()),
        _ => {}
    }
    if let Some((_, v)) = e.xattrs.iter().find(|(k, _)| k == COMPONENT_XATTR) {
        return named(&String::from_utf8_lossy(v), ComponentKind::Files);
    }
    if let Some(name) = map.component_of(&e.path) {
        return named(name, ComponentKind::Files);
    }
    if let Some(p) = owner {
        return Claim::Package(p);
    }
    let path = e.path.to_string_lossy();
    if let Some(rest) = path.strip_prefix("usr/lib/modules/") {
        let version = rest.split('/').next().unwrap_or_default();
        return Claim::Named(format!("kernel:{version}"), ComponentKind::Generated);
    }
    if is_volatile(&path) {
        return Claim::Unowned { volatile: true };
    }
    if databases::owns(&path) {
        return named(DATABASE_COMPONENT, ComponentKind::Generated);
    }
    let alternatives = |p: &str| ALTERNATIVES_DIRS.iter().any(|d| p.starts_with(d));
    let into_alternatives = matches!(&e.kind, EntryKind::Symlink(t)
        if alternatives(t.to_string_lossy().trim_start_matches('/')));
    if alternatives(&path) || into_alternatives {
        return named(ALTERNATIVES_COMPONENT, ComponentKind::Files);
    }
    Claim::Unowned { volatile: false }
}

/// Caches, logs, scratch space, and dpkg's `*-old` backups.
fn is_volatile(path: &str) -> bool {
    VOLATILE_DIRS.iter().any(|d| path.starts_with(d))
        || path
            .strip_prefix("var/lib/dpkg/")
            .is_some_and(|name| !name.contains('/') && name.ends_with("-old"))
}

/// Cuts the claims into components: named ones whole, each package and the unowned
/// content of each top-level directory into units.
fn draft(
    content: &dyn Content,
    entries: &[Entry],
    claims: Vec<Claim>,
    packages: &[Package],
) -> Result<BTreeMap<String, Draft>, AssignError> {
    let mut named: BTreeMap<String, Draft> = BTreeMap::new();
    let mut by_package: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut unowned: BTreeMap<(bool, String), Vec<usize>> = BTreeMap::new();
    let mut links = Vec::new();
    for (i, c) in claims.into_iter().enumerate() {
        match c {
            Claim::Named(name, kind) => add(&mut named, &name, kind, None, [i]),
            Claim::Package(p) => by_package.entry(p).or_default().push(i),
            Claim::Unowned { volatile } => {
                let top = top_dir(&entries[i].path);
                unowned.entry((volatile, top)).or_default().push(i);
            }
            Claim::Link(target) => links.push((i, target)),
        }
    }
    for (p, members) in by_package {
        let name = &packages[p].name;
        // A package's configuration is its own unit: an administrator's edit to one
        // conffile must not rewrite the layer of the package's binaries.
        let (config, rest): (Vec<usize>, Vec<usize>) = members
            .into_iter()
            .partition(|&i| entries[i].path.starts_with(CONFIG_DIR));
        if !config.is_empty() {
            let unit_name = format!("{name}:/{CONFIG_DIR}");
            add(
                &mut named,
                &unit_name,
                ComponentKind::Files,
                Some(p),
                config,
            );
        }
        for unit in units::split(entries, &rest, Path::new("")) {
            let unit_name = match &unit.path {
                None => name.clone(),
                Some(path) => format!("{name}:/{}", path.display()),
            };
            add(
                &mut named,
                &unit_name,
                ComponentKind::Package,
                Some(p),
                unit.members,
            );
        }
    }
    for ((volatile, top), members) in unowned {
        let (prefix, kind) = match volatile {
            true => ("volatile", ComponentKind::Generated),
            false => ("unowned", ComponentKind::Files),
        };
        for unit in units::split_unowned(entries, &members, Path::new(&top)) {
            let unit_name = match (&unit.path, unit.single_file && !volatile) {
                (Some(path), true) => format!("file:/{}", path.display()),
                (Some(path), false) => format!("{prefix}:/{}", path.display()),
                (None, _) => format!("{prefix}:/{top}"),
            };
            add(&mut named, &unit_name, kind, None, unit.members);
        }
    }
    place_links(content, entries, &mut named, links)?;
    Ok(named)
}

/// Adds `members` to the draft `name`, creating it with `kind` and `package`.
fn add(
    drafts: &mut BTreeMap<String, Draft>,
    name: &str,
    kind: ComponentKind,
    package: Option<usize>,
    members: impl IntoIterator<Item = usize>,
) {
    let draft = drafts.entry(name.to_string()).or_insert(Draft {
        kind,
        package,
        members: Vec::new(),
    });
    draft.members.extend(members);
}

/// Hard links go with the component of the path they link to.
fn place_links(
    content: &dyn Content,
    entries: &[Entry],
    drafts: &mut BTreeMap<String, Draft>,
    links: Vec<(usize, PathBuf)>,
) -> Result<(), AssignError> {
    // Only link targets are looked up: a map of every member would cost a name per
    // file, tens of MiB on a tree of half a million files.
    let mut component_of: HashMap<&Path, Option<String>> =
        links.iter().map(|(_, t)| (t.as_path(), None)).collect();
    if !component_of.is_empty() {
        for (name, d) in drafts.iter() {
            for &m in &d.members {
                if let Some(slot) = component_of.get_mut(entries[m].path.as_path()) {
                    *slot = Some(name.clone());
                }
            }
        }
    }
    let mut touched = std::collections::BTreeSet::new();
    for &(i, ref target) in &links {
        let name = component_of
            .get(target.as_path())
            .cloned()
            .flatten()
            .ok_or_else(|| AssignError::Invalid {
                path: content.describe(&entries[i].path),
                problem: format!(
                    "hard link to {} which the walk did not see first",
                    target.display()
                ),
            })?;
        drafts
            .get_mut(&name)
            .expect("the target's component exists")
            .members
            .push(i);
        touched.insert(name);
    }
    // Members stay ascending; sorted once per component, not once per link.
    for name in touched {
        if let Some(d) = drafts.get_mut(&name) {
            d.members.sort_unstable();
        }
    }
    Ok(())
}

/// The first component of a path with more than one, else "" (the root's own files).
fn top_dir(path: &Path) -> String {
    let mut parts = path.components();
    match (parts.next(), parts.next()) {
        (Some(first), Some(_)) => first.as_os_str().to_string_lossy().into_owned(),
        _ => String::new(),
    }
}

/// Versions every draft and writes the build.
fn finish(
    content: &dyn Content,
    entries: &[Entry],
    drafts: BTreeMap<String, Draft>,
    packages: &[Package],
    date: Option<String>,
) -> Result<Assigned, AssignError> {
    let drafts: Vec<(String, Draft)> = drafts.into_iter().collect();
    // A package's units change together when it is updated: they share its history
    // and a layer. Its configuration is edited on its own.
    let package_of = |d: &Draft| {
        d.package
            .map(|p| &packages[p])
            .filter(|_| d.kind == ComponentKind::Package)
    };
    // A package's own unit carries the package's version, so diffs read as package
    // updates; every other unit is versioned by its content. Content digests read
    // nearly every byte of a directory tree (an ostree commit's objects vouch for
    // theirs): spread them over all cores, largest first so no core is left hashing
    // the largest alone at the end.
    let sizes: Vec<u64> = drafts
        .iter()
        .map(|(_, d)| crate::source::bytes_of(entries, &d.members))
        .collect();
    let versions = crate::parallel::try_map_in_order(
        &drafts,
        &crate::parallel::largest_first(&sizes),
        |_, (name, d)| match package_of(d) {
            Some(p) if p.name == *name => Ok(p.version.clone()),
            _ => content_version(content, entries, &d.members),
        },
        |_, _| {},
    )?;
    let mut build = Build {
        date,
        components: Vec::with_capacity(drafts.len()),
    };
    let mut members = Vec::with_capacity(drafts.len());
    for (((name, d), version), size) in drafts.into_iter().zip(versions).zip(sizes) {
        let pkg = package_of(&d);
        build.components.push(Component {
            name,
            version,
            size,
            source: pkg.map(|p| p.source.clone().unwrap_or_else(|| p.name.clone())),
            changelog: pkg.map(|p| p.changelog.clone()).unwrap_or_default(),
            update_interval_days: None,
            kind: d.kind,
        });
        members.push(d.members);
    }
    Ok(Assigned { build, members })
}

/// A component's version: a digest of every member's path, metadata and bytes (or the
/// digest its source vouches for them, see [`Content::digest`]).
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
        if e.kind != EntryKind::File {
            continue;
        }
        match content.digest(e) {
            Some(digest) => h.update(format!("object\0{digest}\0").as_bytes()),
            None => {
                content
                    .open(e)
                    .and_then(|f| std::io::copy(&mut chunked(f, e.size), &mut h))
                    .map_err(|source| AssignError::Io {
                        path: content.describe(&e.path),
                        source,
                    })?;
            }
        }
    }
    Ok(crate::bytes::sha256_label(&h.finalize()[..10]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::content::Dir;
    use crate::source::rootfs::{walk, WalkOptions};
    use proptest::prelude::*;

    /// A component's version, and its members' paths and bytes.
    type Versioned = (String, Vec<(PathBuf, Vec<u8>)>);

    /// Each component, by name.
    fn contents(root: &Path) -> BTreeMap<String, Versioned> {
        let entries = walk(root, WalkOptions::default()).unwrap();
        let content = Dir {
            root: root.to_path_buf(),
        };
        let a = assign(&content, &entries, None, &ComponentMap::default()).unwrap();
        a.build
            .components
            .iter()
            .zip(&a.members)
            .map(|(c, m)| {
                let files = m
                    .iter()
                    .map(|&i| {
                        let p = &entries[i].path;
                        (p.clone(), std::fs::read(root.join(p)).unwrap_or_default())
                    })
                    .collect();
                (c.name.clone(), (c.version.clone(), files))
            })
            .collect()
    }

    fn write_tree(root: &Path, files: &BTreeMap<String, Vec<u8>>) {
        for (path, bytes) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// A unit's version changes exactly when one of its files' bytes do.
        #[test]
        fn unit_versions_change_iff_content_changes(
            files in prop::collection::btree_map(
                "(usr|etc|opt)/[ab]{1,2}/[xyz]{1,2}",
                prop::collection::vec(any::<u8>(), 0..300),
                1..12,
            ),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let (before, after) = (tmp.path().join("a"), tmp.path().join("b"));
            write_tree(&before, &files);
            let mut edited = files.clone();
            let keys: Vec<String> = files.keys().cloned().collect();
            for (i, byte) in edits {
                edited.get_mut(&keys[i.index(keys.len())]).unwrap().push(byte);
            }
            write_tree(&after, &edited);
            let (old, new) = (contents(&before), contents(&after));
            for (name, (version, members)) in &new {
                let Some((old_version, old_members)) = old.get(name) else { continue };
                prop_assert_eq!(
                    version != old_version,
                    members != old_members,
                    "{}: versions {} → {}",
                    name,
                    old_version,
                    version
                );
            }
        }
    }
}
