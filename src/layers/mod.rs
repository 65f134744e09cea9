//! Layers: reproducible tar streams of planned components, compressed in parallel
//! straight into OCI blobs.
//!
//! Each layer holds its members plus the directories above them (with their real
//! metadata), sorted by path. Owners are numeric, names empty, and mtimes clamped, so
//! the same content always gives the same digest. Streams are written as they are
//! read: memory does not grow with the image.

mod gzip;
pub mod kept;
pub mod ostree;
pub mod patch;
pub mod plain;
pub mod tar;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ocidir::{Layer, OciDir};

use crate::components::assign::Assigned;
use crate::layout::LayoutComponent;
use crate::source::{bytes_of, Entry};

/// How layer blobs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// Read by every runtime.
    Gzip,
    /// Smaller and faster; read by containerd 1.5+, Podman and CRI-O.
    Zstd,
}

/// Gzip level 6, the level of `gzip` and `pigz` by default.
pub const GZIP_LEVEL: u32 = 6;
/// Zstd level 3, the level of `zstd` by default.
pub const ZSTD_LEVEL: i32 = 3;
/// zstd worker threads per layer. One worker still compresses beside the thread
/// that reads the tree; layers are already written one per core, and each further
/// worker holds about 8 MiB more buffers (2026-12-04, desktop tree: the same 7.1 s
/// with one worker as with two, 30 MiB less peak memory).
const ZSTD_WORKERS: u32 = 1;

/// A layer could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A file of the tree could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file, as the source names it.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The layer's stream could not be written.
    #[error("writing layer {index}: {source}")]
    Write {
        /// The layer.
        index: usize,
        /// Why.
        source: std::io::Error,
    },
    /// The OCI directory refused the blob.
    #[error("writing layer {index}: {source}")]
    Oci {
        /// The layer.
        index: usize,
        /// Why.
        source: ocidir::Error,
    },
    /// The source's content could not be read.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// A prior layer the plan keeps could not be copied as it is.
    #[error("keeping layer {index} ({digest}) from the prior image: {problem}")]
    Kept {
        /// The layer, in the new image.
        index: usize,
        /// The prior blob's digest.
        digest: String,
        /// What is wrong.
        problem: String,
    },
}

/// The entries of each layer: the members of its components (named as `assigned`
/// names them) plus every directory above them, sorted by path.
pub fn entries_by_layer<'a>(
    entries: &[Entry],
    assigned: &Assigned,
    layers: impl IntoIterator<Item = &'a [LayoutComponent]>,
) -> Vec<Vec<usize>> {
    let members_of: HashMap<&str, &Vec<usize>> = assigned
        .build
        .components
        .iter()
        .map(|c| c.name.as_str())
        .zip(&assigned.members)
        .collect();
    layers
        .into_iter()
        .map(|components| {
            let members = components
                .iter()
                .flat_map(|c| members_of[c.name.as_str()].iter().copied());
            with_parents(entries, members)
        })
        .collect()
}

/// `members` plus every directory above them, sorted by path. Parents are found by
/// binary search in the sorted tree rather than through an index of every path,
/// which at half a million files cost more memory than a layer's compressor.
fn with_parents(entries: &[Entry], members: impl Iterator<Item = usize>) -> Vec<usize> {
    debug_assert!(
        entries
            .windows(2)
            .all(|w| w[0].path.as_os_str() < w[1].path.as_os_str()),
        "sources yield entries sorted by path bytes"
    );
    let mut taken = vec![false; entries.len()];
    let mut all = Vec::new();
    // Siblings come together, so most parent look-ups repeat the last one.
    let mut last: Option<(&Path, usize)> = None;
    for m in members {
        if std::mem::replace(&mut taken[m], true) {
            continue; // taken with its parents already
        }
        all.push(m);
        let mut parent = entries[m].path.parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            let found = match last {
                Some((q, i)) if q == p => Some(i),
                _ => crate::source::find(entries, p),
            };
            if let Some(i) = found {
                last = Some((p, i));
                if std::mem::replace(&mut taken[i], true) {
                    break;
                }
                all.push(i);
            }
            parent = p.parent();
        }
    }
    // Index order is path order.
    all.sort_unstable();
    all
}

/// What every layer shares.
pub struct LayerJob<'a> {
    /// Where blobs are written.
    pub oci: &'a OciDir,
    /// Where the entries' bytes are read from.
    pub content: &'a dyn crate::source::content::Content,
    /// The whole tree; layers name their members by index into it.
    pub entries: &'a [Entry],
    /// How blobs are compressed.
    pub compression: Compression,
    /// Later mtimes are clamped to this (and negative ones to 0).
    pub mtime_clamp: i64,
}

/// One layer written, as [`write_all`] reports it.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// Which layer, by its index in the input.
    pub index: usize,
    /// Layers written so far, this one included.
    pub done: usize,
    /// Layers to write in all.
    pub total: usize,
    /// Wall time from its first byte read to its last byte hashed: reading,
    /// compressing and hashing overlap in one stream.
    pub took: std::time::Duration,
    /// Uncompressed bytes of its files.
    pub bytes: u64,
}

/// Writes one blob per element of `layers` (entry indices, already sorted) using all
/// cores, calling `progress` as each is written. Results keep input order.
pub fn write_all(
    job: &LayerJob,
    layers: &[Vec<usize>],
    progress: impl Fn(Written) + Sync,
) -> Result<Vec<Layer>, LayerError> {
    let sizes: Vec<u64> = layers.iter().map(|l| bytes_of(job.entries, l)).collect();
    write_each(
        layers,
        &sizes,
        |i, members| write_one(job, i, members),
        progress,
    )
}

/// Runs `write` on every item (of uncompressed `sizes`) on all cores, largest first so
/// no core is left compressing the largest alone at the end, timing each for
/// `progress`. Results keep input order.
fn write_each<T: Sync>(
    items: &[T],
    sizes: &[u64],
    write: impl Fn(usize, &T) -> Result<Layer, LayerError> + Sync,
    progress: impl Fn(Written) + Sync,
) -> Result<Vec<Layer>, LayerError> {
    let order = crate::parallel::largest_first(sizes);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let timed = |index, item: &T| {
        let started = std::time::Instant::now();
        let layer = write(index, item)?;
        progress(Written {
            index,
            done: done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1,
            total: items.len(),
            took: started.elapsed(),
            bytes: sizes[index],
        });
        Ok(layer)
    };
    crate::parallel::try_map_in_order(items, &order, timed, |_, _| {})
}

fn write_one(job: &LayerJob, index: usize, members: &[usize]) -> Result<Layer, LayerError> {
    write_blob(job.oci, job.compression, index, |w| {
        tar::write(w, job, members)
            .map(|_| ())
            .map_err(|e| e.at(index))
    })
}

/// Streams one compressed layer blob into `oci`; `fill` writes the uncompressed tar.
pub fn write_blob(
    oci: &OciDir,
    compression: Compression,
    index: usize,
    fill: impl FnOnce(&mut dyn std::io::Write) -> Result<(), LayerError>,
) -> Result<Layer, LayerError> {
    let oci_err = |source| LayerError::Oci { index, source };
    match compression {
        Compression::Gzip => {
            let gzip =
                |blob| gzip::ParallelGzEncoder::new(blob, flate2::Compression::new(GZIP_LEVEL));
            let mut w = oci
                .create_custom_layer(gzip, oci_spec::image::MediaType::ImageLayerGzip)
                .map_err(oci_err)?;
            fill(&mut w)?;
            w.complete().map_err(oci_err)
        }
        Compression::Zstd => {
            // zstd's multi-threaded frames are the same for any number of workers from
            // one up, so a layer's digest does not depend on this.
            let mut w = oci
                .create_layer_zstd_multithread(Some(ZSTD_LEVEL), ZSTD_WORKERS)
                .map_err(oci_err)?;
            fill(&mut w)?;
            w.complete().map_err(oci_err)
        }
    }
}
