//! A root filesystem directory as a source.
//!
//! The walk never follows a symlink: links are recorded as links, so nothing outside
//! the tree is ever read. It holds a directory descriptor for each directory it is in
//! and names children relative to it (`openat` with `O_NOFOLLOW | O_DIRECTORY`,
//! `fstatat` without following), and checks each opened directory is the one it
//! examined, so a directory swapped for a link mid-walk is refused rather than
//! followed. The root path itself is resolved once, when the walk starts. Entries come
//! out sorted by path bytes, hardlinks point at the first path of their inode.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use super::{Entry, EntryKind, SourceError};

/// How special files are treated.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkOptions {
    /// Keep device nodes and FIFOs instead of refusing them. Sockets are always skipped.
    pub allow_special_files: bool,
}

impl WalkOptions {
    /// Refuses the device or FIFO at `path` (`what` names its kind) unless special
    /// files are allowed; trees and image layers share the rule.
    pub fn check_special(&self, path: &Path, what: &'static str) -> Result<(), SourceError> {
        match self.allow_special_files {
            true => Ok(()),
            false => Err(SourceError::SpecialFile {
                path: path.to_path_buf(),
                what,
            }),
        }
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A directory still to be read: where it is, and what `fstatat` saw there.
struct Pending {
    rel: PathBuf,
    parent: Arc<OwnedFd>,
    name: OsString,
    seen: (u64, u64),
}

/// Walks the tree at `root`; the root itself is not an entry.
pub fn walk(root: &Path, opts: WalkOptions) -> Result<Vec<Entry>, SourceError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: rustix::io::Errno| SourceError::Io {
            path,
            source: e.into(),
        }
    };
    let root_fd = match rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Err(rustix::io::Errno::NOTDIR) => {
            return Err(SourceError::NotADirectory {
                path: root.to_path_buf(),
            })
        }
        other => other.map_err(io(root))?,
    };
    let mut found = Found::default();
    let subdirs = read_dir(root, Path::new(""), Arc::new(root_fd), opts, &mut found)?;
    let queue = Queue {
        state: Mutex::new(QueueState {
            pending: subdirs,
            busy: 0,
            failed: false,
        }),
        wake: Condvar::new(),
    };
    // Directories are read on every core: a large tree's walk is a system call or
    // two per file, and every later step waits for it.
    let workers = crate::parallel::cores();
    let results: Vec<Result<Found, SourceError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| s.spawn(|| drain(root, opts, &queue)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a walker thread panicked"))
            .collect()
    });
    let mut parts = vec![found];
    for r in results {
        parts.push(r?);
    }
    let Found {
        mut entries,
        shared,
    } = merge(parts);
    // Paths are unique, so an unstable sort gives the same order, without a buffer.
    entries.sort_unstable_by(|a, b| a.path.as_os_str().cmp(b.path.as_os_str()));
    entries.shrink_to_fit();
    link_hardlinks(&mut entries, shared);
    Ok(entries)
}

/// What the walk has found so far (one per walker thread).
#[derive(Default)]
struct Found {
    entries: Vec<Entry>,
    /// Device and inode of each file with more than one link, for hard links. Kept
    /// apart from the entries: most files have one link, and a tuple for every entry
    /// would cost memory on trees of hundreds of thousands of files.
    shared: Vec<((u64, u64), PathBuf)>,
}

/// The walker threads' findings as one: appended to the largest, so its entries are
/// not copied (on a tree of 500,000 files they are tens of MiB).
fn merge(mut parts: Vec<Found>) -> Found {
    parts.sort_by_key(|p| std::cmp::Reverse(p.entries.len()));
    let mut all = parts.remove(0);
    all.entries
        .reserve_exact(parts.iter().map(|p| p.entries.len()).sum());
    for part in parts {
        all.entries.extend(part.entries);
        all.shared.extend(part.shared);
    }
    all
}

/// Directories still to read, shared by the walker threads.
struct Queue {
    state: Mutex<QueueState>,
    wake: Condvar,
}

struct QueueState {
    pending: Vec<Pending>,
    /// Threads reading a directory, which may add more.
    busy: usize,
    /// A thread failed: the others stop.
    failed: bool,
}

/// Reads directories from `queue` until none is left and none is being read.
fn drain(root: &Path, opts: WalkOptions, queue: &Queue) -> Result<Found, SourceError> {
    let mut found = Found::default();
    loop {
        let next = {
            let mut state = queue.state.lock().expect("walk queue");
            loop {
                if state.failed {
                    break None;
                }
                if let Some(p) = state.pending.pop() {
                    state.busy += 1;
                    break Some(p);
                }
                if state.busy == 0 {
                    break None;
                }
                state = queue.wake.wait(state).expect("walk queue");
            }
        };
        let Some(p) = next else {
            queue.wake.notify_all();
            return Ok(found);
        };
        let read = open_dir(root, &p)
            .and_then(|fd| read_dir(root, &p.rel, Arc::new(fd), opts, &mut found));
        let mut state = queue.state.lock().expect("walk queue");
        state.busy -= 1;
        match read {
            Ok(subdirs) => state.pending.extend(subdirs),
            Err(e) => {
                state.failed = true;
                drop(state);
                queue.wake.notify_all();
                return Err(e);
            }
        }
        drop(state);
        queue.wake.notify_all();
    }
}

/// Adds the children of the open directory `rel` to `found`; returns its
/// subdirectories, to be read in turn.
fn read_dir(
    root: &Path,
    rel: &Path,
    dir: Arc<OwnedFd>,
    opts: WalkOptions,
    found: &mut Found,
) -> Result<Vec<Pending>, SourceError> {
    let io = |path: PathBuf| {
        move |e: rustix::io::Errno| SourceError::Io {
            path,
            source: e.into(),
        }
    };
    let here = root.join(rel);
    let xattrs_at = xattr_dir(&dir, &here);
    let mut names: Vec<OsString> = rustix::fs::Dir::read_from(dir.as_fd())
        .map_err(io(here.clone()))?
        .map(|e| e.map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string()))
        .collect::<Result<_, _>>()
        .map_err(io(here.clone()))?;
    names.retain(|n| n != "." && n != "..");
    let mut subdirs = Vec::new();
    for name in names {
        let rel_child = rel.join(&name);
        let st = rustix::fs::statat(dir.as_fd(), name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(io(root.join(&rel_child)))?;
        let Some(entry) = entry_of(root, &dir, &xattrs_at, &rel_child, &name, &st, opts)? else {
            continue;
        };
        if entry.is_dir() {
            subdirs.push(Pending {
                rel: rel_child,
                parent: dir.clone(),
                name,
                seen: (st.st_dev, st.st_ino),
            });
        }
        if entry.kind == EntryKind::File && st.st_nlink > 1 {
            found
                .shared
                .push(((st.st_dev, st.st_ino), entry.path.clone()));
        }
        found.entries.push(entry);
    }
    Ok(subdirs)
}

/// Opens a pending directory beneath its parent, refusing it if it is no longer the
/// directory the walk examined (swapped for a link or another directory).
fn open_dir(root: &Path, p: &Pending) -> Result<OwnedFd, SourceError> {
    let path = root.join(&p.rel);
    let changed = || SourceError::Invalid {
        path: path.clone(),
        problem: "changed while it was read (a directory swapped for a link?)".into(),
    };
    let fd = match rustix::fs::openat(
        p.parent.as_fd(),
        p.name.as_os_str(),
        DIR_FLAGS,
        Mode::empty(),
    ) {
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => return Err(changed()),
        other => other.map_err(|e| SourceError::Io {
            path: path.clone(),
            source: e.into(),
        })?,
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| SourceError::Io {
        path: path.clone(),
        source: e.into(),
    })?;
    if (st.st_dev, st.st_ino) != p.seen {
        return Err(changed());
    }
    Ok(fd)
}

fn entry_of(
    root: &Path,
    dir: &OwnedFd,
    xattrs_at: &Path,
    rel: &Path,
    name: &OsStr,
    st: &Stat,
    opts: WalkOptions,
) -> Result<Option<Entry>, SourceError> {
    let path = root.join(rel);
    let err = |e: rustix::io::Errno| SourceError::Io {
        path: path.clone(),
        source: e.into(),
    };
    let special = |what| opts.check_special(&path, what);
    let kind = match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => EntryKind::Dir,
        FileType::RegularFile => EntryKind::File,
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(dir.as_fd(), name, Vec::new()).map_err(err)?;
            EntryKind::Symlink(PathBuf::from(OsStr::from_bytes(target.as_bytes())))
        }
        FileType::CharacterDevice => {
            special("character device")?;
            EntryKind::CharDevice(st.st_rdev)
        }
        FileType::BlockDevice => {
            special("block device")?;
            EntryKind::BlockDevice(st.st_rdev)
        }
        FileType::Fifo => {
            special("FIFO")?;
            EntryKind::Fifo
        }
        _ => return Ok(None),
    };
    Ok(Some(Entry {
        path: rel.to_path_buf(),
        size: if kind == EntryKind::File {
            st.st_size as u64
        } else {
            0
        },
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        mtime: st.st_mtime,
        xattrs: read_xattrs(&xattrs_at.join(name), &path)?,
    }))
}

/// Where the children of the open directory `dir` are named for xattr calls: through
/// `/proc/self/fd`, so the directory's path is not resolved again, or its plain path
/// `here` where `/proc` is not mounted. Decided once per directory.
fn xattr_dir(dir: &OwnedFd, here: &Path) -> PathBuf {
    use std::os::fd::AsRawFd;
    let fd_dir = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    match fd_dir.is_dir() {
        true => fd_dir,
        false => here.to_path_buf(),
    }
}

/// The xattrs of the file at `at` (not following a final link), named `shown` in
/// messages.
fn read_xattrs(at: &Path, shown: &Path) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
    let path = shown;
    let err = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let names = match xattr::list(at) {
        Ok(names) => names,
        // Filesystems without xattr support simply have none.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
    };
    let mut out = Vec::new();
    for name in names {
        let Some(key) = name.to_str() else {
            return Err(SourceError::Invalid {
                path: path.to_path_buf(),
                problem: format!("extended attribute name {name:?} is not UTF-8"),
            });
        };
        if let Some(value) = xattr::get(at, &name).map_err(err)? {
            out.push((key.to_string(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Turns every later path of a multiply-linked inode into a hardlink to the first;
/// `inodes` holds each entry's device, inode and link count.
fn link_hardlinks(entries: &mut [Entry], mut shared: Vec<((u64, u64), PathBuf)>) {
    // Each inode's paths in sort order: the first keeps the content, the rest link to it.
    shared.sort_unstable_by(|(a, p), (b, q)| a.cmp(b).then(p.as_os_str().cmp(q.as_os_str())));
    for pair in shared.chunk_by(|(a, _), (b, _)| a == b) {
        let target = &pair[0].1;
        for (_, path) in &pair[1..] {
            let at = entries
                .binary_search_by(|e| e.path.as_os_str().cmp(path.as_os_str()))
                .expect("every shared path was walked");
            entries[at].kind = EntryKind::Hardlink(target.clone());
            entries[at].size = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn walks_sorted_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::create_dir(root.join("empty")).unwrap();
        fs::write(root.join("usr/bin/b"), b"bee").unwrap();
        fs::hard_link(root.join("usr/bin/b"), root.join("usr/bin/a")).unwrap();
        symlink("/etc/passwd", root.join("escape")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let entries = walk(root, WalkOptions::default()).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "empty",
                "escape",
                "loop",
                "usr",
                "usr/bin",
                "usr/bin/a",
                "usr/bin/b"
            ]
        );
        assert_eq!(entries[1].kind, EntryKind::Symlink("/etc/passwd".into()));
        assert_eq!(entries[5].kind, EntryKind::File);
        assert_eq!(entries[6].kind, EntryKind::Hardlink("usr/bin/a".into()));
    }

    #[test]
    fn each_inode_links_to_its_first_path_in_sort_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("z")).unwrap();
        fs::create_dir_all(root.join("a")).unwrap();
        fs::write(root.join("z/one"), b"1").unwrap();
        fs::write(root.join("z/two"), b"22").unwrap();
        fs::hard_link(root.join("z/one"), root.join("a/one")).unwrap();
        fs::hard_link(root.join("z/one"), root.join("z/zero")).unwrap();
        fs::hard_link(root.join("z/two"), root.join("a/two")).unwrap();
        let entries = walk(root, WalkOptions::default()).unwrap();
        let kinds: Vec<(&str, &EntryKind, u64)> = entries
            .iter()
            .filter(|e| !e.is_dir())
            .map(|e| (e.path.to_str().unwrap(), &e.kind, e.size))
            .collect();
        let link = |to: &str| EntryKind::Hardlink(to.into());
        assert_eq!(
            kinds,
            [
                ("a/one", &EntryKind::File, 1),
                ("a/two", &EntryKind::File, 2),
                ("z/one", &link("a/one"), 0),
                ("z/two", &link("a/two"), 0),
                ("z/zero", &link("a/one"), 0),
            ]
        );
    }

    #[test]
    fn a_directory_swapped_for_a_link_mid_walk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), "secret").unwrap();
        let parent = Arc::new(rustix::fs::open(&root, DIR_FLAGS, Mode::empty()).unwrap());
        let st = rustix::fs::statat(&*parent, "etc", AtFlags::SYMLINK_NOFOLLOW).unwrap();
        // Examined as a directory, then swapped before it is opened (kept alive
        // elsewhere, so no new directory can take its inode number).
        fs::rename(root.join("etc"), dir.path().join("etc-old")).unwrap();
        symlink(&outside, root.join("etc")).unwrap();
        let p = Pending {
            rel: "etc".into(),
            parent,
            name: "etc".into(),
            seen: (st.st_dev, st.st_ino),
        };
        let err = open_dir(&root, &p).unwrap_err().to_string();
        assert!(err.contains("changed while it was read"), "{err}");
        // Swapped for another directory: refused too.
        fs::remove_file(root.join("etc")).unwrap();
        fs::create_dir(root.join("etc")).unwrap();
        let err = open_dir(&root, &p).unwrap_err().to_string();
        assert!(err.contains("changed while it was read"), "{err}");
    }

    #[test]
    fn fifos_are_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let err = walk(dir.path(), WalkOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pipe: is a FIFO"), "{err}");
        let ok = walk(
            dir.path(),
            WalkOptions {
                allow_special_files: true,
            },
        )
        .unwrap();
        assert_eq!(ok[0].kind, EntryKind::Fifo);
    }
}
