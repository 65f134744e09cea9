//! Where the bytes of a tree's regular files come from: a directory on disk, or the
//! content objects of an ostree commit. Everything that reads file content (package
//! databases, generated-component hashes, layer tars) goes through [`Content`].

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::Entry;

/// Reads the content of a tree's regular files.
pub trait Content: Sync {
    /// Opens the regular file `entry` for reading; its length must be `entry.size`.
    fn open(&self, entry: &Entry) -> io::Result<Box<dyn Read + '_>>;

    /// How to name `rel` in messages.
    fn describe(&self, rel: &Path) -> PathBuf;

    /// A digest of the regular file `entry`'s bytes that the source already vouches
    /// for, so that versioning a component need not read them; `None` when the bytes
    /// must be read. It must change whenever the bytes do, and whoever reads the bytes
    /// must check them against it.
    fn digest(&self, _entry: &Entry) -> Option<&str> {
        None
    }
}

/// Bytes read from a file per system call when copying it whole: std's copies move
/// 8 KiB at a time, and a build copies every byte of a tree twice (to version it, and
/// into its layer).
const READ_CHUNK: usize = 256 << 10;

/// `file` (of `size` bytes) buffered so that whole-file copies read it in large chunks.
pub fn chunked<R: Read>(file: R, size: u64) -> io::BufReader<R> {
    let capacity = usize::try_from(size).unwrap_or(READ_CHUNK);
    io::BufReader::with_capacity(capacity.clamp(8 << 10, READ_CHUNK), file)
}

/// Files in a directory, each opened one component at a time beneath the root with
/// no symlink followed anywhere (the walk found regular files there; a swap since then
/// is refused).
pub struct Dir {
    /// The tree's root directory.
    pub root: PathBuf,
}

impl Content for Dir {
    fn open(&self, entry: &Entry) -> io::Result<Box<dyn Read + '_>> {
        let file = open_beneath(&self.root, &entry.path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("is no longer a regular file"));
        }
        if meta.len() != entry.size {
            return Err(io::Error::other(format!(
                "changed size during the build ({} → {} bytes)",
                entry.size,
                meta.len()
            )));
        }
        Ok(Box::new(file))
    }

    fn describe(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }
}

/// Opens the file at `rel` (plain components) beneath `root` for reading, following
/// no link at any component, the last with `O_NONBLOCK` (a FIFO swapped in must not
/// block the build).
pub fn open_beneath(root: &Path, rel: &Path) -> io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    if rel
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(io::Error::other("is not a plain path inside the tree"));
    }
    let root = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let file_flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    // One call where the kernel has openat2 (Linux 5.6): it refuses a link at any
    // component itself. Reading a tree opens every file, so this saves a call per
    // directory level.
    let beneath = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(&root, rel, file_flags, Mode::empty(), beneath) {
        // Older kernels, and seccomp profiles that do not know the call.
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
            open_each_component(root, rel, file_flags)
        }
        other => Ok(std::fs::File::from(other?)),
    }
}

/// [`open_beneath`] without openat2: every directory opened with `O_NOFOLLOW`.
fn open_each_component(
    root: std::os::fd::OwnedFd,
    rel: &Path,
    file_flags: rustix::fs::OFlags,
) -> io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut dir = root;
    let mut parts = rel.components().peekable();
    while let Some(part) = parts.next() {
        let flags = match parts.peek() {
            None => file_flags,
            Some(_) => dir_flags,
        };
        dir = rustix::fs::openat(&dir, part.as_os_str(), flags, Mode::empty())?;
    }
    Ok(std::fs::File::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::rootfs::{walk, WalkOptions};

    /// A tree holding `usr/share/doc` ("inside!") beside it, a directory outside
    /// holding `doc` ("SECRET!").
    fn tree_and_secret() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("root"), tmp.path().join("outside"));
        std::fs::create_dir_all(root.join("usr/share")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("usr/share/doc"), "inside!").unwrap();
        std::fs::write(outside.join("doc"), "SECRET!").unwrap();
        (tmp, root, outside)
    }

    /// A directory swapped for a link after the walk: the file behind the link, the
    /// same size as the walked one, is never read.
    #[test]
    fn a_directory_swapped_for_a_link_after_the_walk_is_not_followed() {
        let (tmp, root, outside) = tree_and_secret();
        let entries = walk(&root, WalkOptions::default()).unwrap();
        let doc = entries
            .iter()
            .find(|e| e.path == Path::new("usr/share/doc"))
            .unwrap();
        std::fs::rename(root.join("usr/share"), tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("usr/share")).unwrap();
        let content = Dir { root: root.clone() };
        assert!(content.open(doc).is_err(), "read through the planted link");
    }

    /// Both ways of opening refuse a link at a directory component and at the file,
    /// and read a plain path.
    #[test]
    fn links_are_refused_at_every_component_with_and_without_openat2() {
        use rustix::fs::{Mode, OFlags};
        let (_tmp, root, outside) = tree_and_secret();
        std::os::unix::fs::symlink(&outside, root.join("usr/linked")).unwrap();
        std::os::unix::fs::symlink(outside.join("doc"), root.join("usr/share/file")).unwrap();
        std::os::unix::fs::symlink("doc", root.join("usr/share/near")).unwrap();
        let read = |f: io::Result<std::fs::File>| f.map(|f| io::read_to_string(f).unwrap());
        let open_root =
            || rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let fallback = |rel: &str| {
            open_each_component(
                open_root(),
                Path::new(rel),
                OFlags::RDONLY | OFlags::NOFOLLOW,
            )
        };
        for rel in ["usr/linked/doc", "usr/share/file", "usr/share/near"] {
            assert!(open_beneath(&root, Path::new(rel)).is_err(), "{rel}");
            assert!(fallback(rel).is_err(), "{rel} without openat2");
        }
        for rel in ["../outside/doc", "/etc/passwd", "usr/../usr/share/doc"] {
            let err = open_beneath(&root, Path::new(rel)).unwrap_err();
            assert!(err.to_string().contains("plain path"), "{rel}: {err}");
        }
        assert_eq!(
            read(open_beneath(&root, Path::new("usr/share/doc"))).unwrap(),
            "inside!"
        );
        assert_eq!(read(fallback("usr/share/doc")).unwrap(), "inside!");
    }
}
