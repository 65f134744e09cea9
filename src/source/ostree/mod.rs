//! An ostree commit as a source, read from the repository's objects through libostree:
//! the commit's dirtree and dirmeta objects give the tree, its content objects give
//! each file's mode, owner, xattrs, symlink target and bytes. Nothing is checked out.
//!
//! Entries carry mtime 0, as an ostree checkout does; the commit's timestamp is the
//! build date.

pub mod pull;
pub mod verify;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use ostree::gio;
use ostree::glib;

use super::content::Content;
use super::{Entry, EntryKind, SourceError};

/// A commit read: entries, their content, and when it was made.
pub struct Commit {
    /// The commit's checksum.
    pub checksum: String,
    /// Seconds since the epoch.
    pub timestamp: i64,
    /// Its files, directories and links.
    pub entries: Vec<Entry>,
    /// Where their bytes come from.
    pub content: OstreeContent,
}

/// The content objects of a commit's files and symlinks.
pub struct OstreeContent {
    repo: PathBuf,
    commit: String,
    /// File or symlink path → content checksum.
    objects: HashMap<PathBuf, String>,
}

impl OstreeContent {
    /// The repository the objects are in.
    pub fn repo(&self) -> &Path {
        &self.repo
    }

    /// The commit checksum.
    pub fn commit(&self) -> &str {
        &self.commit
    }

    /// The content object at `path` (a file or a symlink of the commit).
    pub fn object(&self, path: &Path) -> Option<&str> {
        self.objects.get(path).map(String::as_str)
    }
}

fn invalid(path: &Path, problem: impl std::fmt::Display) -> SourceError {
    SourceError::Invalid {
        path: path.to_path_buf(),
        problem: problem.to_string(),
    }
}

pub(crate) fn open_repo(path: &Path) -> Result<ostree::Repo, glib::Error> {
    let repo = ostree::Repo::new_for_path(path);
    repo.open(gio::Cancellable::NONE)?;
    Ok(repo)
}

/// Reads commit `rev` (a ref or a checksum) of the repository at `repo_path`.
pub fn read(repo_path: &Path, rev: &str) -> Result<Commit, SourceError> {
    let repo = open_repo(repo_path)
        .map_err(|e| invalid(repo_path, format!("is not an ostree repository: {e}")))?;
    let checksum = repo
        .resolve_rev(rev, true)
        .map_err(|e| invalid(repo_path, format!("{rev:?}: {e}")))?
        .ok_or_else(|| invalid(repo_path, format!("has no ref or commit {rev:?}")))?
        .to_string();
    let commit = verify::load_variant(&repo, ostree::ObjectType::Commit, &checksum)
        .map_err(|e| invalid(repo_path, format!("commit {checksum}: {e}")))?;
    // (a{sv} aay a(say) s s t ay ay): the timestamp is big-endian, the root dirtree
    // and dirmeta checksums are the last two fields.
    let timestamp = u64::from_be(commit.child_value(5).get::<u64>().unwrap_or(0)) as i64;
    let tree = csum_hex(&commit.child_value(6));
    let meta = csum_hex(&commit.child_value(7));
    let mut walk = Walk {
        repo: &repo,
        repo_path,
        entries: Vec::new(),
        files: Vec::new(),
    };
    walk.dir(Path::new(""), &tree, &meta, 0)?;
    let metas = file_metas(repo_path, &walk.files)?;
    let mut entries = walk.entries;
    let mut objects = HashMap::with_capacity(walk.files.len());
    for (path, csum) in walk.files {
        let meta = metas[&csum].clone();
        entries.push(Entry {
            path: path.clone(),
            kind: meta.kind,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            size: meta.size,
            mtime: 0,
            xattrs: meta.xattrs,
        });
        objects.insert(path, csum);
    }
    entries.sort_by(|a, b| a.path.as_os_str().cmp(b.path.as_os_str()));
    Ok(Commit {
        checksum: checksum.clone(),
        timestamp,
        entries,
        content: OstreeContent {
            repo: repo_path.to_path_buf(),
            commit: checksum.clone(),
            objects,
        },
    })
}

pub(crate) fn csum_hex(v: &glib::Variant) -> String {
    let bytes: Vec<u8> = v.get().unwrap_or_default();
    verify::hex(&bytes)
}

/// No commit nests directories deeper than this (a path of 4096 bytes holds at
/// most 2048 components); deeper is a crafted repository.
pub(crate) const MAX_DEPTH: usize = 2048;

/// Refuses directory nesting beyond [`MAX_DEPTH`].
pub(crate) fn check_depth(depth: usize, rel: &Path) -> io::Result<()> {
    match depth > MAX_DEPTH {
        true => Err(io::Error::other(format!(
            "/{}: directories nest deeper than {MAX_DEPTH} (a crafted commit?)",
            rel.display()
        ))),
        false => Ok(()),
    }
}

/// Metadata of one content object (shared by every path that uses it).
#[derive(Clone)]
struct FileMeta {
    kind: EntryKind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Walk<'a> {
    repo: &'a ostree::Repo,
    repo_path: &'a Path,
    /// Directories.
    entries: Vec<Entry>,
    /// Files and symlinks, with their content checksums: their metadata is in the
    /// content objects, read afterwards on all cores.
    files: Vec<(PathBuf, String)>,
}

impl Walk<'_> {
    /// Adds the children of directory `rel` (dirtree `tree`, dirmeta `meta`), `depth`
    /// directories below the root.
    fn dir(&mut self, rel: &Path, tree: &str, meta: &str, depth: usize) -> Result<(), SourceError> {
        check_depth(depth, rel).map_err(|e| invalid(self.repo_path, e))?;
        let object = |what: &str, csum: &str, e: io::Error| {
            invalid(
                self.repo_path,
                format!("{what} object {csum} of /{}: {e}", rel.display()),
            )
        };
        if !rel.as_os_str().is_empty() {
            let m = verify::load_variant(self.repo, ostree::ObjectType::DirMeta, meta)
                .map_err(|e| object("dirmeta", meta, e))?;
            self.entries.push(dir_entry(rel, &m));
        }
        let t = verify::load_variant(self.repo, ostree::ObjectType::DirTree, tree)
            .map_err(|e| object("dirtree", tree, e))?;
        // (a(say) a(sayay)): files (name, content checksum), dirs (name, tree, meta).
        let files = t.child_value(0);
        for i in 0..files.n_children() {
            let f = files.child_value(i);
            let name: String = f.child_value(0).get().unwrap_or_default();
            let path = rel.join(checked_name(self.repo_path, rel, &name)?);
            self.files.push((path, csum_hex(&f.child_value(1))));
        }
        let dirs = t.child_value(1);
        for i in 0..dirs.n_children() {
            let d = dirs.child_value(i);
            let name: String = d.child_value(0).get().unwrap_or_default();
            let path = rel.join(checked_name(self.repo_path, rel, &name)?);
            self.dir(
                &path,
                &csum_hex(&d.child_value(1)),
                &csum_hex(&d.child_value(2)),
                depth + 1,
            )?;
        }
        Ok(())
    }
}

/// The metadata of every content object `files` use, each object read once, on all
/// cores (an archive repository's object headers sit in separate compressed files).
fn file_metas(
    repo_path: &Path,
    files: &[(PathBuf, String)],
) -> Result<HashMap<String, FileMeta>, SourceError> {
    let mut first_use: HashMap<&str, &Path> = HashMap::with_capacity(files.len());
    for (path, csum) in files {
        first_use.entry(csum.as_str()).or_insert(path.as_path());
    }
    let mut objects: Vec<(&str, &Path)> = first_use.into_iter().collect();
    objects.sort_unstable();
    let metas = crate::parallel::try_map(
        &objects,
        |_, &(csum, path)| file_meta(repo_path, path, csum),
        |_, _| {},
    )?;
    Ok(objects
        .into_iter()
        .map(|(c, _)| c.to_string())
        .zip(metas)
        .collect())
}

/// The metadata in content object `csum`, first used at `path`.
fn file_meta(repo_path: &Path, path: &Path, csum: &str) -> Result<FileMeta, SourceError> {
    let object = |e: io::Error| {
        invalid(
            repo_path,
            format!("content object {csum} of /{}: {e}", path.display()),
        )
    };
    let repo = thread_repo(repo_path).map_err(object)?;
    let verify::ContentObject { info, xattrs, .. } =
        verify::load_file(&repo, csum).map_err(object)?;
    let mode = info.attribute_uint32("unix::mode");
    let kind = match mode & libc::S_IFMT {
        libc::S_IFREG => EntryKind::File,
        libc::S_IFLNK => EntryKind::Symlink(info.symlink_target().unwrap_or_default()),
        other => {
            return Err(invalid(
                repo_path,
                format!(
                    "/{}: unexpected file type {other:o} in a commit",
                    path.display()
                ),
            ))
        }
    };
    Ok(FileMeta {
        size: if kind == EntryKind::File {
            info.size().max(0) as u64
        } else {
            0
        },
        kind,
        mode: mode & 0o7777,
        uid: info.attribute_uint32("unix::uid"),
        gid: info.attribute_uint32("unix::gid"),
        xattrs: xattr_list(&xattrs),
    })
}

/// A dirtree name must be one path component; anything else would let a crafted
/// commit write outside the tree.
fn checked_name<'n>(repo: &Path, dir: &Path, name: &'n str) -> Result<&'n str, SourceError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(invalid(
            repo,
            format!("/{}: the commit names an entry {name:?}", dir.display()),
        ));
    }
    Ok(name)
}

fn dir_entry(rel: &Path, meta: &glib::Variant) -> Entry {
    // (u u u a(ayay)): uid, gid, mode, all big-endian, then xattrs.
    let be = |i: usize| u32::from_be(meta.child_value(i).get::<u32>().unwrap_or(0));
    Entry {
        path: rel.to_path_buf(),
        kind: EntryKind::Dir,
        mode: be(2) & 0o7777,
        uid: be(0),
        gid: be(1),
        size: 0,
        mtime: 0,
        xattrs: xattr_list(&meta.child_value(3)),
    }
}

/// An a(ayay) of xattrs, names without their trailing NUL, sorted by name.
fn xattr_list(v: &glib::Variant) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = (0..v.n_children())
        .map(|i| {
            let pair = v.child_value(i);
            let mut name: Vec<u8> = pair.child_value(0).get().unwrap_or_default();
            if name.last() == Some(&0) {
                name.pop();
            }
            let value: Vec<u8> = pair.child_value(1).get().unwrap_or_default();
            (String::from_utf8_lossy(&name).into_owned(), value)
        })
        .collect();
    out.sort();
    out
}

thread_local! {
    /// libostree repositories are not safe to share between threads; each layer
    /// writer thread opens its own.
    static REPOS: RefCell<HashMap<PathBuf, ostree::Repo>> = RefCell::new(HashMap::new());
}

/// This thread's handle on the repository at `path`.
pub(crate) fn thread_repo(path: &Path) -> io::Result<ostree::Repo> {
    REPOS.with(|repos| {
        let mut repos = repos.borrow_mut();
        if let Some(r) = repos.get(path) {
            return Ok(r.clone());
        }
        let r = open_repo(path).map_err(io::Error::other)?;
        repos.insert(path.to_path_buf(), r.clone());
        Ok(r)
    })
}

impl Content for OstreeContent {
    fn open(&self, entry: &Entry) -> io::Result<Box<dyn Read + '_>> {
        let csum = self
            .objects
            .get(&entry.path)
            .filter(|_| entry.kind == EntryKind::File);
        let csum = csum.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "not a regular file of the commit")
        })?;
        verify::load_file(&thread_repo(&self.repo)?, csum)?
            .data
            .ok_or_else(|| io::Error::other("the content object has no data"))
    }

    fn describe(&self, rel: &Path) -> PathBuf {
        PathBuf::from(format!("{}:/{}", self.repo.display(), rel.display()))
    }

    /// The object's checksum, from the commit's verified dirtrees: it covers the bytes
    /// (and [`open`](Content::open) checks them against it), so versions need not
    /// inflate and hash every object a second time.
    fn digest(&self, entry: &Entry) -> Option<&str> {
        self.objects
            .get(&entry.path)
            .filter(|_| entry.kind == EntryKind::File)
            .map(String::as_str)
    }
}

/// The labels ostree-ext derives from a commit's metadata: its version, whether it
/// boots, and its kernel.
pub fn commit_labels(repo_path: &Path, commit: &str) -> Result<Vec<(String, String)>, SourceError> {
    let repo = thread_repo(repo_path).map_err(|e| invalid(repo_path, e))?;
    let (v, _) = repo
        .load_commit(commit)
        .map_err(|e| invalid(repo_path, format!("commit {commit}: {e}")))?;
    let meta = glib::VariantDict::new(Some(&v.child_value(0)));
    let mut labels = Vec::new();
    if let Some(version) = meta.lookup::<String>("version").ok().flatten() {
        labels.push(("org.opencontainers.image.version".to_string(), version));
    }
    if let Some(bootable) = meta.lookup::<bool>("ostree.bootable").ok().flatten() {
        labels.push(("ostree.bootable".to_string(), bootable.to_string()));
        labels.push(("containers.bootc".to_string(), "1".to_string()));
    }
    if let Some(linux) = meta.lookup::<String>("ostree.linux").ok().flatten() {
        labels.push(("ostree.linux".to_string(), linux));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_beyond_the_bound_is_refused() {
        assert!(check_depth(MAX_DEPTH, Path::new("a")).is_ok());
        let e = check_depth(MAX_DEPTH + 1, Path::new("a/b")).unwrap_err();
        assert!(
            e.to_string().contains("/a/b: directories nest deeper"),
            "{e}"
        );
    }
}
