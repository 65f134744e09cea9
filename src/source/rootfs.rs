//! A root filesystem directory as a source.
//!
//! The walk never follows a symlink: links are recorded as links, so nothing outside
//! the tree is ever read. Entries come out sorted by path bytes, hardlinks point at the
//! first path of their inode, and metadata is read with `lstat`/`lgetxattr`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{Entry, EntryKind, SourceError};

/// How special files are treated.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkOptions {
    /// Keep device nodes and FIFOs instead of refusing them. Sockets are always skipped.
    pub allow_special_files: bool,
}

/// Walks the tree at `root`; the root itself is not an entry.
pub fn walk(root: &Path, opts: WalkOptions) -> Result<Vec<Entry>, SourceError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SourceError::Io { path, source }
    };
    let meta = fs::metadata(root).map_err(io(root))?;
    if !meta.is_dir() {
        return Err(SourceError::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    let mut entries = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut children: Vec<fs::DirEntry> = fs::read_dir(&dir)
            .map_err(io(&dir))?
            .collect::<Result<_, _>>()
            .map_err(io(&dir))?;
        children.sort_by_key(|c| c.file_name());
        // Pushed in reverse so the walk visits children in order.
        for child in children.iter().rev() {
            let rel_child = rel.join(child.file_name());
            if let Some(entry) = entry_of(root, &rel_child, opts)? {
                if entry.is_dir() {
                    stack.push(rel_child);
                }
                entries.push(entry);
            }
        }
    }
    entries.sort_by(|a, b| a.path.as_os_str().cmp(b.path.as_os_str()));
    link_hardlinks(root, &mut entries)?;
    Ok(entries)
}

fn entry_of(root: &Path, rel: &Path, opts: WalkOptions) -> Result<Option<Entry>, SourceError> {
    let path = root.join(rel);
    let err = |source| SourceError::Io {
        path: path.clone(),
        source,
    };
    let meta = fs::symlink_metadata(&path).map_err(err)?;
    let ft = meta.file_type();
    let special = |what| {
        if opts.allow_special_files {
            Ok(())
        } else {
            Err(SourceError::SpecialFile {
                path: path.clone(),
                what,
            })
        }
    };
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File
    } else if ft.is_symlink() {
        EntryKind::Symlink(fs::read_link(&path).map_err(err)?)
    } else if ft.is_char_device() {
        special("character device")?;
        EntryKind::CharDevice(meta.rdev())
    } else if ft.is_block_device() {
        special("block device")?;
        EntryKind::BlockDevice(meta.rdev())
    } else if ft.is_fifo() {
        special("FIFO")?;
        EntryKind::Fifo
    } else {
        return Ok(None);
    };
    Ok(Some(Entry {
        path: rel.to_path_buf(),
        size: if kind == EntryKind::File {
            meta.len()
        } else {
            0
        },
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        xattrs: read_xattrs(&path)?,
    }))
}

fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
    let err = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let names = match xattr::list(path) {
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
        if let Some(value) = xattr::get(path, &name).map_err(err)? {
            out.push((key.to_string(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Turns every later path of a multiply-linked inode into a hardlink to the first.
fn link_hardlinks(root: &Path, entries: &mut [Entry]) -> Result<(), SourceError> {
    let mut first: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for e in entries.iter_mut().filter(|e| e.kind == EntryKind::File) {
        let path = root.join(&e.path);
        let meta =
            fs::symlink_metadata(&path).map_err(|source| SourceError::Io { path, source })?;
        if meta.nlink() < 2 {
            continue;
        }
        match first.get(&(meta.dev(), meta.ino())) {
            Some(target) => {
                e.kind = EntryKind::Hardlink(target.clone());
                e.size = 0;
            }
            None => {
                first.insert((meta.dev(), meta.ino()), e.path.clone());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
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
