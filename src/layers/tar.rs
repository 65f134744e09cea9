//! One reproducible tar stream.

use std::io::{self, Write};
use std::path::PathBuf;

use tar::{EntryType, Header};

use super::{LayerError, LayerJob};
use crate::source::{Entry, EntryKind};

/// A failure while streaming one entry; the layer index is added by the caller.
pub enum TarError {
    /// A file of the tree could not be read.
    Read {
        /// The file, as the source names it.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The stream could not be written.
    Write(io::Error),
}

impl TarError {
    /// The error, as a failure of layer `index`.
    pub fn at(self, index: usize) -> LayerError {
        match self {
            TarError::Read { path, source } => LayerError::Read { path, source },
            TarError::Write(source) => LayerError::Write { index, source },
        }
    }
}

/// Streams the `members` of `job.entries` as a tar archive into `out`, returning it.
pub fn write<W: Write>(out: W, job: &LayerJob, members: &[usize]) -> Result<W, TarError> {
    let mut builder = tar::Builder::new(out);
    for &i in members {
        append(&mut builder, job, &job.entries[i])?;
    }
    builder.into_inner().map_err(TarError::Write)
}

/// Streams the `members` of `job.entries` and a whiteout for each of `whiteouts`,
/// all in path order, as a tar archive into `out`, returning it.
pub fn write_patch<W: Write>(
    out: W,
    job: &LayerJob,
    members: &[usize],
    whiteouts: &[PathBuf],
) -> Result<W, TarError> {
    let marks: Vec<PathBuf> = whiteouts.iter().map(|p| whiteout_path(p)).collect();
    let mut items: Vec<(&std::path::Path, Option<usize>)> = members
        .iter()
        .map(|&i| (job.entries[i].path.as_path(), Some(i)))
        .chain(marks.iter().map(|p| (p.as_path(), None)))
        .collect();
    items.sort_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
    let mut builder = tar::Builder::new(out);
    for (path, member) in items {
        match member {
            Some(i) => append(&mut builder, job, &job.entries[i])?,
            None => {
                let mut h = Header::new_gnu();
                h.set_entry_type(EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                builder
                    .append_data(&mut h, path, io::empty())
                    .map_err(TarError::Write)?;
            }
        }
    }
    builder.into_inner().map_err(TarError::Write)
}

/// `dir/.wh.name`: the OCI whiteout that hides `dir/name` in lower layers.
fn whiteout_path(path: &std::path::Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".wh.");
    name.push(path.file_name().unwrap_or_default());
    path.with_file_name(name)
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    job: &LayerJob,
    e: &Entry,
) -> Result<(), TarError> {
    let w = TarError::Write;
    if !e.xattrs.is_empty() {
        let keys: Vec<String> = e
            .xattrs
            .iter()
            .map(|(k, _)| format!("SCHILY.xattr.{k}"))
            .collect();
        let pax = keys
            .iter()
            .map(String::as_str)
            .zip(e.xattrs.iter().map(|(_, v)| v.as_slice()));
        builder.append_pax_extensions(pax).map_err(w)?;
    }
    let mut h = Header::new_gnu();
    h.set_mode(e.mode);
    h.set_uid(e.uid.into());
    h.set_gid(e.gid.into());
    h.set_mtime(e.mtime.clamp(0, job.mtime_clamp.max(0)) as u64);
    h.set_size(0);
    match &e.kind {
        EntryKind::Dir => {
            h.set_entry_type(EntryType::Directory);
            builder.append_data(&mut h, &e.path, io::empty()).map_err(w)
        }
        EntryKind::File => {
            h.set_entry_type(EntryType::Regular);
            h.set_size(e.size);
            let read_err = |source| TarError::Read {
                path: job.content.describe(&e.path),
                source,
            };
            let file = job.content.open(e).map_err(read_err)?;
            // A short read must not pass for a complete file.
            let exact = ExactSize {
                inner: file,
                left: e.size,
            };
            let exact = crate::source::content::chunked(exact, e.size);
            builder.append_data(&mut h, &e.path, exact).map_err(w)
        }
        EntryKind::Symlink(target) => {
            h.set_entry_type(EntryType::Symlink);
            builder.append_link(&mut h, &e.path, target).map_err(w)
        }
        EntryKind::Hardlink(target) => {
            h.set_entry_type(EntryType::Link);
            builder.append_link(&mut h, &e.path, target).map_err(w)
        }
        EntryKind::CharDevice(dev) | EntryKind::BlockDevice(dev) => {
            let ty = if matches!(e.kind, EntryKind::CharDevice(_)) {
                EntryType::Char
            } else {
                EntryType::Block
            };
            h.set_entry_type(ty);
            h.set_device_major(libc::major(*dev)).map_err(w)?;
            h.set_device_minor(libc::minor(*dev)).map_err(w)?;
            builder.append_data(&mut h, &e.path, io::empty()).map_err(w)
        }
        EntryKind::Fifo => {
            h.set_entry_type(EntryType::Fifo);
            builder.append_data(&mut h, &e.path, io::empty()).map_err(w)
        }
    }
}

/// Fails a read that ends before `left` more bytes, or that has bytes beyond them.
struct ExactSize<R> {
    inner: R,
    left: u64,
}

impl<R: io::Read> io::Read for ExactSize<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other("grew during the build")),
            };
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "shrank during the build ({} bytes short)",
                self.left
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
