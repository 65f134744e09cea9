//! An existing container image as a source (rechunking).
//!
//! Nothing is extracted. The merged tree is built from the layers' tar headers alone:
//! each layer's whiteouts remove what lower layers put there, then its entries go on
//! top, by path. Owners, modes, xattrs and device numbers stay metadata, so flattening
//! needs no privilege (an unprivileged worker cannot `chown`), and links are recorded,
//! never followed, so no crafted layer can steer a write or a removal out of the
//! tree. File content is copied once into a private spool file and read back from it
//! when layers are written.
//!
//! A layer entry or whiteout whose parent is a symlink or a file in the merged tree is
//! refused: a runtime would resolve the link, and where it points is not the image's
//! to decide.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use ocidir::oci_spec::image::{Descriptor, MediaType};

use super::content::Content;
use super::rootfs::WalkOptions;
use super::{Entry, EntryKind, SourceError};
use crate::image::remote::{self, RegistryOptions};
use crate::image::{self, ImageRef};

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const XATTR_PAX: &str = "SCHILY.xattr.";
/// Bytes a spool writes at a time.
const SPOOL_BUFFER: usize = 256 << 10;
/// Mode of a parent directory a layer implies without an entry of its own.
const IMPLIED_DIR_MODE: u32 = 0o755;

fn invalid(path: &Path, problem: impl Into<String>) -> SourceError {
    SourceError::Invalid {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// A flattened image: its merged entries, sorted by path bytes like a walked tree's.
pub struct Flattened {
    /// What the image's layers leave, whiteouts applied.
    pub entries: Vec<Entry>,
    /// The regular files' bytes, spooled.
    pub content: Spool,
    /// The image's runtime config (user, environment, entrypoint, labels, …), which
    /// a rechunked image keeps.
    pub runtime: ocidir::oci_spec::image::Config,
}

/// Flattens `reference`. Remote images are first copied to an OCI layout under
/// `scratch` with skopeo; file content is spooled under `scratch` too.
pub fn flatten(
    reference: &ImageRef,
    registry: &RegistryOptions,
    scratch: &Path,
    opts: WalkOptions,
) -> Result<Flattened, SourceError> {
    let (dir, tag) = match reference {
        ImageRef::Oci { dir, tag } => (dir.clone(), tag.clone()),
        other => {
            let dir = scratch.join("pulled");
            remote::pull(&other.to_string(), &dir, "source", registry)
                .map_err(|e| invalid(Path::new(&other.to_string()), e.to_string()))?;
            (dir, Some("source".to_string()))
        }
    };
    let local =
        image::read_local(&dir, tag.as_deref()).map_err(|e| invalid(&dir, e.to_string()))?;
    let runtime = image::runtime::read_from_layout(&dir, &local.manifest)
        .map_err(|e| invalid(&dir, e.to_string()))?;
    let blobs = local
        .manifest
        .layers()
        .iter()
        .map(|desc| {
            let blob = image::blob_path(&dir, desc).map_err(|e| invalid(&dir, e.to_string()))?;
            Ok((blob, desc))
        })
        .collect::<Result<Vec<_>, SourceError>>()?;
    let mut flat = Flattening::new();
    // Layers are read on every core, each decompressed on a thread of its own beside
    // its parser, and merged bottom first as they come in; a few layers' headers wait
    // at most. Errors come in layer order, as a layer-by-layer merge meets them.
    let read = |i, (blob, desc): &(PathBuf, &Descriptor)| {
        let tar = crate::parallel::ReadAhead::new(open_layer(blob, desc)?);
        read_layer(i, blob, Box::new(tar), scratch, opts)
    };
    let ahead = 4 * crate::parallel::cores();
    crate::parallel::for_each_in_order(&blobs, ahead, read, |i, layer| {
        flat.merge(&blobs[i].0, layer?)
    })?;
    Ok(Flattened {
        runtime,
        ..flat.finish(Path::new(&reference.to_string()))
    })
}

/// A layer to flatten: the path its errors name, and its uncompressed tar.
pub type LayerTar = (PathBuf, Box<dyn Read>);

/// Flattens uncompressed layer tars, bottom first, each opened only when its turn
/// comes; `image` names the result in messages. The content spool goes in `scratch`.
/// (The entry point the fuzz target drives.)
pub fn flatten_tars(
    layers: impl IntoIterator<Item = Result<LayerTar, SourceError>>,
    image: &Path,
    scratch: &Path,
    opts: WalkOptions,
) -> Result<Flattened, SourceError> {
    let mut flat = Flattening::new();
    for (i, layer) in layers.into_iter().enumerate() {
        let (name, tar) = layer?;
        let read = read_layer(i, &name, tar, scratch, opts)?;
        flat.merge(&name, read)?;
    }
    Ok(flat.finish(image))
}

/// One layer read: its items, and the spool file holding its files' bytes.
struct ReadLayer {
    items: Vec<Item>,
    spool: fs::File,
}

/// Reads layer `index`'s headers, spooling its files' bytes into a file of its own
/// under `scratch`.
fn read_layer(
    index: usize,
    blob: &Path,
    tar: Box<dyn Read + '_>,
    scratch: &Path,
    opts: WalkOptions,
) -> Result<ReadLayer, SourceError> {
    let path = scratch.join(format!("spool-{index}"));
    let spool_err = |source| SourceError::Io {
        path: path.clone(),
        source,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(spool_err)?;
    // Large writes: a spool takes every byte of its layer.
    let mut reader = LayerReader::new(index, BufWriter::with_capacity(SPOOL_BUFFER, file), opts);
    let items = reader.read(blob, tar)?;
    let spool = reader
        .spool
        .into_inner()
        .map_err(|e| spool_err(e.into_error()))?;
    Ok(ReadLayer { items, spool })
}

/// Layers merged so far, and the spools their content is in.
struct Flattening {
    merge: Merge,
    spools: Vec<fs::File>,
}

impl Flattening {
    fn new() -> Self {
        Flattening {
            merge: Merge::new(false),
            spools: Vec::new(),
        }
    }

    /// Merges the next layer up.
    fn merge(&mut self, blob: &Path, layer: ReadLayer) -> Result<(), SourceError> {
        self.spools.push(layer.spool);
        self.merge.apply(blob, layer.items)
    }

    fn finish(self, image: &Path) -> Flattened {
        let (entries, at) = finish(self.merge.nodes);
        Flattened {
            entries,
            content: Spool {
                files: self.spools,
                at,
                name: image.to_path_buf(),
            },
            runtime: Default::default(),
        }
    }
}

/// The entries one uncompressed layer tar holds, as [`flatten_tars`] would give them
/// for an image of that layer alone (whiteouts in it hide nothing); file content is
/// read through and dropped. `name` names the layer in messages.
pub fn layer_entries(
    tar: &mut dyn Read,
    name: &Path,
    opts: WalkOptions,
) -> Result<Vec<Entry>, SourceError> {
    let items = LayerReader::new(0, io::sink(), opts).read(name, Box::new(tar))?;
    let mut merge = Merge::new(true);
    merge.apply(name, items)?;
    Ok(finish(merge.nodes).0)
}

/// What every flattening guarantees, whatever its layers held: plain relative paths,
/// sorted and unique; each entry's parent is a directory of the result; hard links
/// point at an earlier regular file; each file's content reads back at its size. The
/// fuzz target and the property tests assert it.
pub fn check_invariants(flat: &Flattened) -> Result<(), String> {
    let mut kinds: HashMap<&Path, &EntryKind> = HashMap::new();
    for (i, e) in flat.entries.iter().enumerate() {
        let plain = e
            .path
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if !plain || e.path.as_os_str().is_empty() {
            return Err(format!("entry {i} has path {:?}", e.path));
        }
        if i > 0 && flat.entries[i - 1].path.as_os_str() >= e.path.as_os_str() {
            return Err(format!("{:?} is out of order or repeated", e.path));
        }
        if let Some(parent) = e.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if kinds.get(parent) != Some(&&EntryKind::Dir) {
                return Err(format!("{:?} has no directory above it", e.path));
            }
        }
        match &e.kind {
            EntryKind::Hardlink(t) if kinds.get(t.as_path()) != Some(&&EntryKind::File) => {
                return Err(format!("{:?} links to {t:?}, no earlier file", e.path));
            }
            EntryKind::File => {
                let mut n = 0u64;
                let mut r = flat
                    .content
                    .open(e)
                    .map_err(|x| format!("{:?}: {x}", e.path))?;
                let mut buf = [0u8; 8192];
                loop {
                    match r.read(&mut buf).map_err(|x| format!("{:?}: {x}", e.path))? {
                        0 => break,
                        k => n += k as u64,
                    }
                }
                if n != e.size {
                    return Err(format!("{:?} reads {n} of {} bytes", e.path, e.size));
                }
            }
            _ => {}
        }
        kinds.insert(&e.path, &e.kind);
    }
    Ok(())
}

/// One path of the merged tree.
#[derive(Debug, Clone)]
struct Node {
    kind: EntryKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
    /// A regular file's bytes: its layer's spool, offset, length.
    data: Option<Span>,
    /// Paths of one inode (tar hard links) share this number.
    inode: u64,
}

/// Where a file's bytes are: the spool of the layer that held it, offset, length.
type Span = (usize, u64, u64);

/// A layer's entry, read but not yet merged.
enum Item {
    Whiteout {
        parent: Vec<u8>,
        name: Vec<u8>,
    },
    Opaque {
        dir: Vec<u8>,
    },
    Add {
        path: Vec<u8>,
        node: Node,
    },
    /// A tar hard link: another path of `target`'s inode.
    Link {
        path: Vec<u8>,
        target: Vec<u8>,
    },
}

/// Layers merged so far: the tree their items leave (their content stays in the
/// spools the [`LayerReader`]s wrote).
struct Merge {
    /// Keyed by path bytes, so iteration is in sort order.
    nodes: BTreeMap<Vec<u8>, Node>,
    /// A hard link may name a file of a lower layer that this merge never saw (one
    /// layer of an image read alone); it is kept as a link to that path.
    links_below: bool,
    /// Inodes the merge makes (implied directories); a layer's own are numbered
    /// above [`LAYER_INODES`] times its index plus one.
    inodes: u64,
}

/// Inode numbers each layer may use.
const LAYER_INODES: u64 = 1 << 40;

impl Merge {
    fn new(links_below: bool) -> Self {
        Merge {
            nodes: BTreeMap::new(),
            links_below,
            inodes: 0,
        }
    }

    /// Applies one layer's items: its whiteouts first (they hide only lower layers),
    /// then its entries in order.
    fn apply(&mut self, blob: &Path, items: Vec<Item>) -> Result<(), SourceError> {
        for item in &items {
            match item {
                Item::Whiteout { parent, name } => {
                    self.parent_is_dir(blob, parent, &join(parent, name), "whiteout")?;
                    self.remove(&join(parent, name));
                }
                Item::Opaque { dir } => {
                    self.parent_is_dir(blob, dir, &join(dir, OPAQUE), "whiteout")?;
                    self.remove_children(dir);
                }
                _ => {}
            }
        }
        for item in items {
            match item {
                Item::Add { path, node } => self.add(blob, path, node)?,
                Item::Link { path, target }
                    if self.links_below && !self.nodes.contains_key(&target) =>
                {
                    let kind = EntryKind::Hardlink(PathBuf::from(OsStr::from_bytes(&target)));
                    let node = self.bare(kind, 0);
                    self.add(blob, path, node)?;
                }
                Item::Link { path, target } => {
                    let Some(node) = self.nodes.get(&target).filter(|n| n.kind != EntryKind::Dir)
                    else {
                        return Err(invalid(
                            blob,
                            format!(
                                "hard link {} names {}, which is no file of the image",
                                show(&path),
                                show(&target)
                            ),
                        ));
                    };
                    let node = node.clone();
                    self.add(blob, path, node)?;
                }
                Item::Whiteout { .. } | Item::Opaque { .. } => {}
            }
        }
        Ok(())
    }
}

/// Reads one layer's headers into items, spooling its files' bytes as it goes. It
/// sees nothing of other layers, so layers can be read side by side.
struct LayerReader<S> {
    /// The layer's place in the image, which its spans and inodes carry.
    index: usize,
    spool: S,
    spooled: u64,
    inodes: u64,
    opts: WalkOptions,
}

impl<S: Write> LayerReader<S> {
    fn new(index: usize, spool: S, opts: WalkOptions) -> Self {
        LayerReader {
            index,
            spool,
            spooled: 0,
            inodes: LAYER_INODES * (index as u64 + 1),
            opts,
        }
    }

    /// Reads the layer's headers, spooling file content as it goes.
    fn read(&mut self, blob: &Path, tar: Box<dyn Read + '_>) -> Result<Vec<Item>, SourceError> {
        let io = |source| SourceError::Io {
            path: blob.to_path_buf(),
            source,
        };
        let mut items = Vec::new();
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            let path = safe_relative(blob, &entry.path_bytes())?;
            if path.is_empty() {
                continue; // the root itself
            }
            if let Some(item) = self.item(blob, path, &mut entry)? {
                items.push(item);
            }
        }
        Ok(items)
    }

    fn item(
        &mut self,
        blob: &Path,
        path: Vec<u8>,
        entry: &mut tar::Entry<impl Read>,
    ) -> Result<Option<Item>, SourceError> {
        let (parent, name) = split(&path);
        if name == OPAQUE {
            return Ok(Some(Item::Opaque {
                dir: parent.to_vec(),
            }));
        }
        if let Some(target) = name.strip_prefix(WHITEOUT) {
            if matches!(target, b"" | b"." | b"..") {
                return Err(invalid(
                    blob,
                    format!("whiteout {} names no file", show(&path)),
                ));
            }
            return Ok(Some(Item::Whiteout {
                parent: parent.to_vec(),
                name: target.to_vec(),
            }));
        }
        let header = entry.header();
        let kind = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default();
                EntryKind::Symlink(PathBuf::from(OsStr::from_bytes(&target)))
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default();
                let target = safe_relative(blob, &target)?;
                return Ok(Some(Item::Link { path, target }));
            }
            tar::EntryType::Char => self.special(blob, &path, "character device", entry)?,
            tar::EntryType::Block => self.special(blob, &path, "block device", entry)?,
            tar::EntryType::Fifo => self.special(blob, &path, "FIFO", entry)?,
            // Extension headers the tar reader did not fold into an entry.
            _ => return Ok(None),
        };
        let node = self.node(blob, &path, kind, entry)?;
        Ok(Some(Item::Add { path, node }))
    }

    /// A device or FIFO entry, refused unless special files are allowed (as a
    /// walked tree's are).
    fn special(
        &self,
        blob: &Path,
        path: &[u8],
        what: &'static str,
        entry: &tar::Entry<impl Read>,
    ) -> Result<EntryKind, SourceError> {
        self.opts
            .check_special(&blob.join(OsStr::from_bytes(path)), what)?;
        let h = entry.header();
        let number = |n: io::Result<Option<u32>>| n.ok().flatten().unwrap_or(0);
        let dev = libc::makedev(number(h.device_major()), number(h.device_minor()));
        Ok(match h.entry_type() {
            tar::EntryType::Char => EntryKind::CharDevice(dev),
            tar::EntryType::Block => EntryKind::BlockDevice(dev),
            _ => EntryKind::Fifo,
        })
    }

    /// The entry's metadata, with a regular file's content copied to the spool.
    fn node(
        &mut self,
        blob: &Path,
        path: &[u8],
        kind: EntryKind,
        entry: &mut tar::Entry<impl Read>,
    ) -> Result<Node, SourceError> {
        let bad = |what: &str| invalid(blob, format!("{}: {what}", show(path)));
        let h = entry.header();
        let id = |v: io::Result<u64>| {
            v.ok()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad("owner is not a 32-bit id"))
        };
        let (uid, gid) = (id(h.uid())?, id(h.gid())?);
        let mode = h.mode().map_err(|_| bad("mode is malformed"))? & 0o7777;
        let mtime = h.mtime().map_err(|_| bad("mtime is malformed"))?;
        let xattrs = xattrs(entry).map_err(|e| bad(&format!("extended headers: {e}")))?;
        let data = if kind == EntryKind::File {
            let len = entry.size();
            let copied = io::copy(entry, &mut self.spool).map_err(|source| SourceError::Io {
                path: blob.to_path_buf(),
                source,
            })?;
            if copied != len {
                return Err(bad(&format!("holds {copied} of its {len} bytes")));
            }
            self.spooled += len;
            Some((self.index, self.spooled - len, len))
        } else {
            None
        };
        self.inodes += 1;
        Ok(Node {
            kind,
            mode,
            uid,
            gid,
            mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
            xattrs,
            data,
            inode: self.inodes,
        })
    }
}

impl Merge {
    /// Puts `node` at `path`: a directory over a directory keeps what is below it;
    /// anything else replaces the path and everything below it.
    fn add(&mut self, blob: &Path, path: Vec<u8>, node: Node) -> Result<(), SourceError> {
        let (parent, _) = split(&path);
        self.parent_is_dir(blob, parent, &path, "layer entry")?;
        self.imply_dirs(parent);
        let keeps_children = node.kind == EntryKind::Dir
            && self
                .nodes
                .get(&path)
                .is_some_and(|old| old.kind == EntryKind::Dir);
        if !keeps_children {
            self.remove(&path);
        }
        self.nodes.insert(path, node);
        Ok(())
    }

    /// Refuses `what` at `path` when some ancestor in `parent` is not a directory.
    fn parent_is_dir(
        &self,
        blob: &Path,
        parent: &[u8],
        path: &[u8],
        what: &str,
    ) -> Result<(), SourceError> {
        for ancestor in ancestors(parent) {
            match self.nodes.get(ancestor) {
                Some(n) if n.kind != EntryKind::Dir => {
                    return Err(invalid(
                        blob,
                        format!(
                            "{what} {} passes through {}, which is not a directory",
                            show(path),
                            show(ancestor)
                        ),
                    ))
                }
                Some(_) => {}
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// A node of a new inode that no header described: root's, with `mode`.
    fn bare(&mut self, kind: EntryKind, mode: u32) -> Node {
        self.inodes += 1;
        Node {
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
            data: None,
            inode: self.inodes,
        }
    }

    /// Adds the directories a layer implies without listing them.
    fn imply_dirs(&mut self, parent: &[u8]) {
        for ancestor in ancestors(parent) {
            if !self.nodes.contains_key(ancestor) {
                let dir = self.bare(EntryKind::Dir, IMPLIED_DIR_MODE);
                self.nodes.insert(ancestor.to_vec(), dir);
            }
        }
    }

    /// Removes `path` and everything below it.
    fn remove(&mut self, path: &[u8]) {
        self.nodes.remove(path);
        self.remove_children(path);
    }

    fn remove_children(&mut self, dir: &[u8]) {
        let below: Vec<Vec<u8>> = self
            .nodes
            .range(child_range(dir))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            self.nodes.remove(&k);
        }
    }
}

/// The merged nodes as entries; every later path of an inode becomes a hard link to
/// its first. Also where each file's content is in the spool.
fn finish(nodes: BTreeMap<Vec<u8>, Node>) -> (Vec<Entry>, HashMap<PathBuf, Span>) {
    let mut first: HashMap<u64, PathBuf> = HashMap::new();
    let mut at = HashMap::new();
    let mut entries = Vec::with_capacity(nodes.len());
    for (path, node) in nodes {
        let path = PathBuf::from(OsStr::from_bytes(&path));
        let mut kind = node.kind;
        let mut size = node.data.map_or(0, |(_, _, len)| len);
        if kind == EntryKind::File {
            match first.get(&node.inode) {
                Some(target) => {
                    kind = EntryKind::Hardlink(target.clone());
                    size = 0;
                }
                None => {
                    first.insert(node.inode, path.clone());
                    at.insert(path.clone(), node.data.unwrap_or_default());
                }
            }
        }
        entries.push(Entry {
            path,
            kind,
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            size,
            mtime: node.mtime,
            xattrs: node.xattrs,
        });
    }
    (entries, at)
}

/// The content of a flattened image's files, in a spool file per layer.
pub struct Spool {
    files: Vec<fs::File>,
    /// Path → spool, offset and length.
    at: HashMap<PathBuf, Span>,
    /// The image, for messages.
    name: PathBuf,
}

impl Content for Spool {
    fn open(&self, entry: &Entry) -> io::Result<Box<dyn Read + '_>> {
        let Some(&(spool, offset, len)) = self.at.get(&entry.path) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no such file in the flattened image",
            ));
        };
        Ok(Box::new(SpoolReader {
            file: &self.files[spool],
            pos: offset,
            end: offset + len,
        }))
    }

    fn describe(&self, rel: &Path) -> PathBuf {
        self.name.join(rel)
    }
}

/// Reads one span of the spool with positioned reads, so readers share the file.
struct SpoolReader<'a> {
    file: &'a fs::File,
    pos: u64,
    end: u64,
}

impl Read for SpoolReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Extended attributes from the entry's PAX records, sorted by name.
fn xattrs(entry: &mut tar::Entry<impl Read>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(records) = entry.pax_extensions()? {
        for record in records {
            let record = record?;
            if let Ok(key) = record.key() {
                if let Some(name) = key.strip_prefix(XATTR_PAX) {
                    out.push((name.to_string(), record.value_bytes().to_vec()));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn open_layer(blob: &Path, desc: &Descriptor) -> Result<Box<dyn Read + Send>, SourceError> {
    let io = |source| SourceError::Io {
        path: blob.to_path_buf(),
        source,
    };
    let file = fs::File::open(blob).map_err(io)?;
    Ok(match desc.media_type() {
        MediaType::ImageLayerGzip | MediaType::Other(_) if is_gzip(blob)? => {
            Box::new(flate2::read::GzDecoder::new(file))
        }
        MediaType::ImageLayerZstd => Box::new(zstd::stream::read::Decoder::new(file).map_err(io)?),
        MediaType::ImageLayer => Box::new(file),
        other => match is_gzip(blob)? {
            true => Box::new(flate2::read::GzDecoder::new(file)),
            false => {
                return Err(invalid(
                    blob,
                    format!("unsupported layer media type {other}"),
                ))
            }
        },
    })
}

fn is_gzip(blob: &Path) -> Result<bool, SourceError> {
    let mut magic = [0u8; 2];
    let mut f = fs::File::open(blob).map_err(|source| SourceError::Io {
        path: blob.to_path_buf(),
        source,
    })?;
    Ok(f.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b])
}

/// A layer path as plain relative path bytes. A leading `/` means the image's root (as
/// `tar` reads it); `..` is refused.
fn safe_relative(blob: &Path, raw: &[u8]) -> Result<Vec<u8>, SourceError> {
    let path = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            _ => {
                return Err(invalid(
                    blob,
                    format!("layer entry {} escapes the root", path.display()),
                ))
            }
        }
    }
    Ok(out.into_os_string().into_vec())
}

/// `path` as parent and last name; the parent of a top-level name is empty.
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// `a`, `a/b`, `a/b/c` for `a/b/c`, outermost first; nothing for the root.
fn ancestors(dir: &[u8]) -> impl Iterator<Item = &[u8]> {
    let ends = dir
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(|(i, _)| i)
        .chain((!dir.is_empty()).then_some(dir.len()));
    ends.map(move |i| &dir[..i])
}

/// The keys strictly below `dir` (everything when `dir` is the root).
fn child_range(dir: &[u8]) -> (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    if dir.is_empty() {
        return (Unbounded, Unbounded);
    }
    let mut lo = dir.to_vec();
    lo.push(b'/');
    let mut hi = dir.to_vec();
    hi.push(b'/' + 1);
    (Included(lo), Excluded(hi))
}

/// A path for messages.
fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    /// One crafted tar entry: a raw name (which may hold `..`, `.wh.` names or a
    /// leading `/`), a type, a link target, and content.
    type Crafted = (Vec<u8>, u8, Vec<u8>, Vec<u8>);

    fn arb_entry() -> impl Strategy<Value = Crafted> {
        let common = prop::sample::select(vec![&b"a"[..], b"b", b"c", b".wh.a", b"\xff"]);
        let rare = prop::sample::select(vec![&b".."[..], b".", b".wh..wh..opq", b".wh."]);
        let part = prop_oneof![12 => common, 1 => rare];
        let name = prop::collection::vec(part, 1..4).prop_map(|p| p.join(&b'/'));
        let lead = prop::sample::select(vec![&b""[..], b"/", b"./"]);
        (
            (lead, name).prop_map(|(l, n)| [l, &n[..]].concat()),
            prop_oneof![4 => Just(0u8), 3 => Just(1u8), 2 => Just(2u8), 2 => Just(3u8), 1 => 4u8..6],
            prop::sample::select(vec![&b"a"[..], b"b", b"a/b", b"../a", b"/a", b"c/a"])
                .prop_map(|t| t.to_vec()),
            prop::collection::vec(any::<u8>(), 0..64),
        )
    }

    /// The raw bytes of a tar of `entries`, names written as given.
    fn raw_tar(entries: &[Crafted]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, target, data) in entries {
            let mut h = tar::Header::new_gnu();
            let n = name.len().min(99);
            h.as_gnu_mut().unwrap().name[..n].copy_from_slice(&name[..n]);
            let t = target.len().min(99);
            h.as_gnu_mut().unwrap().linkname[..t].copy_from_slice(&target[..t]);
            let kinds = [
                tar::EntryType::Regular,
                tar::EntryType::Directory,
                tar::EntryType::Symlink,
                tar::EntryType::Link,
                tar::EntryType::Fifo,
                tar::EntryType::Char,
                tar::EntryType::Regular,
            ];
            h.set_entry_type(kinds[*kind as usize]);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            let body: &[u8] = if h.entry_type().is_file() { data } else { &[] };
            h.set_size(body.len() as u64);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(body);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        /// Crafted layers flatten to a well-formed tree or to an error, never a panic.
        #[test]
        fn crafted_layers_flatten_well_formed_or_not_at_all(
            layers in prop::collection::vec(prop::collection::vec(arb_entry(), 0..12), 1..4),
            allow_special_files in any::<bool>(),
        ) {
            let scratch = tempfile::tempdir().unwrap();
            let tars = layers
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let tar: Box<dyn Read> = Box::new(io::Cursor::new(raw_tar(l)));
                    Ok((PathBuf::from(format!("layer{i}")), tar))
                })
                .collect::<Vec<_>>();
            let opts = WalkOptions { allow_special_files };
            if let Ok(flat) = flatten_tars(tars, Path::new("fuzz"), scratch.path(), opts) {
                prop_assert_eq!(check_invariants(&flat), Ok(()));
            }
        }
    }

    #[test]
    fn ancestors_run_outermost_first() {
        let a: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(a, [&b"a"[..], b"a/b", b"a/b/c"]);
        assert_eq!(ancestors(b"").count(), 0);
    }

    /// One layer read alone may link to a file of a lower layer; a whole image may not.
    #[test]
    fn a_layer_read_alone_keeps_links_to_files_below_it() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        b.append_link(&mut h, "usr/bin/perl5", "usr/bin/perl")
            .unwrap();
        let bytes = b.into_inner().unwrap();
        let entries = layer_entries(
            &mut bytes.as_slice(),
            Path::new("layer"),
            WalkOptions::default(),
        )
        .unwrap();
        let link = entries
            .iter()
            .find(|e| e.path == Path::new("usr/bin/perl5"))
            .unwrap();
        assert_eq!(
            link.kind,
            EntryKind::Hardlink(PathBuf::from("usr/bin/perl"))
        );
        let tmp = tempfile::tempdir().unwrap();
        let whole = flatten_tars(
            [Ok((
                PathBuf::from("layer"),
                Box::new(io::Cursor::new(bytes)) as Box<dyn Read>,
            ))],
            Path::new("image"),
            tmp.path(),
            WalkOptions::default(),
        );
        assert!(whole.is_err(), "a whole image must hold its link targets");
    }

    #[test]
    fn the_child_range_holds_only_what_is_below() {
        let keys: BTreeMap<Vec<u8>, ()> = [&b"a"[..], b"a/b", b"a/b/c", b"a-b", b"a0", b"ab"]
            .iter()
            .map(|k| (k.to_vec(), ()))
            .collect();
        let below: Vec<&[u8]> = keys.range(child_range(b"a")).map(|(k, _)| &k[..]).collect();
        assert_eq!(below, [&b"a/b"[..], b"a/b/c"]);
    }
}
