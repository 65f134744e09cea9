//! Layers in ostree-ext's container format, so ostree clients (rpm-ostree, bootc) can
//! import the exact commit: layer 0 carries the commit, its detached metadata and every
//! dirtree and dirmeta object plus the checkout's directories; each planned layer then
//! carries its content objects in `sysroot/ostree/repo/objects/` (bare-split-xattrs),
//! each with its checkout paths as hard links to it. See
//! `shared/notes/ostree-container-format.md` for the format this follows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ostree::gio;
use ostree::glib;
use tar::{EntryType, Header};

use super::plain::Annotated;
use super::{write_blob, Compression, LayerError, Written};
use crate::image;
use crate::plan::PlannedLayer;
use crate::source::ostree::{
    check_depth, commit_labels, csum_hex, thread_repo, verify, OstreeContent,
};
use crate::source::Entry;

const REPO: &str = "sysroot/ostree/repo";
const REPO_CONFIG: &[u8] = b"[core]\nrepo_version=1\nmode=bare-split-xattrs\n";

/// One content object and the checkout paths that use it.
#[derive(Debug, Clone)]
pub struct Object {
    /// The object's ostree checksum.
    pub checksum: String,
    /// Where the checkout has it (hard links share one object).
    pub paths: Vec<PathBuf>,
}

fn object_path(csum: &str, ext: &str) -> String {
    format!("{REPO}/objects/{}/{}.{ext}", &csum[..2], &csum[2..])
}

/// Where a commit path appears in the checkout: `usr/etc` is the image's `etc`.
fn checkout_path(path: &Path) -> PathBuf {
    match path.strip_prefix("usr/etc") {
        Ok(rest) => Path::new("etc").join(rest),
        Err(_) => path.to_path_buf(),
    }
}

fn io_err(e: glib::Error) -> io::Error {
    io::Error::other(e)
}

/// A tar stream with the format's conventions: GNU headers, mtime 0, numeric owners.
struct Tar<'w> {
    builder: tar::Builder<&'w mut dyn Write>,
}

impl<'w> Tar<'w> {
    fn new(out: &'w mut dyn Write) -> Self {
        Tar {
            builder: tar::Builder::new(out),
        }
    }

    fn header(kind: EntryType, uid: u32, gid: u32, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_uid(uid.into());
        h.set_gid(gid.into());
        h.set_mode(mode & 0o7777);
        h.set_mtime(0);
        h.set_size(size);
        h
    }

    fn dir(&mut self, path: &str, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
        let mut h = Self::header(EntryType::Directory, uid, gid, mode, 0);
        self.builder.append_data(&mut h, path, io::empty())
    }

    fn file(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let mut h = Self::header(EntryType::Regular, 0, 0, 0o644, data.len() as u64);
        self.builder.append_data(&mut h, path, data)
    }

    /// The repository's directories and config, at the start of every ostree layer.
    fn skeleton(&mut self) -> io::Result<()> {
        for d in [
            "sysroot",
            "sysroot/ostree",
            REPO,
            &format!("{REPO}/objects"),
        ] {
            self.dir(d, 0, 0, 0o755)?;
        }
        for i in 0..=255u8 {
            self.dir(&format!("{REPO}/objects/{i:02x}"), 0, 0, 0o755)?;
        }
        for d in [
            "extensions",
            "refs",
            "refs/heads",
            "refs/mirrors",
            "refs/remotes",
            "state",
            "tmp",
            "tmp/cache",
        ] {
            self.dir(&format!("{REPO}/{d}"), 0, 0, 0o755)?;
        }
        self.file(&format!("{REPO}/config"), REPO_CONFIG)
    }

    fn finish(self) -> io::Result<()> {
        self.builder.into_inner().map(|_| ())
    }
}

/// Writes the image's layers in ostree-ext's format, the commit layer first, then one
/// per planned layer (`members` are each layer's entries). Returns them annotated,
/// with the labels that let ostree clients import them.
pub fn write(
    oci: &ocidir::OciDir,
    compression: Compression,
    commit: &OstreeContent,
    planned: &[PlannedLayer],
    entries: &[Entry],
    members: &[Vec<usize>],
    progress: impl Fn(Written) + Sync,
) -> Result<(Vec<Annotated>, BTreeMap<String, String>), LayerError> {
    let objects = group_objects(commit, entries, members);
    let repo = commit.repo();
    let all: Vec<Option<&Vec<Object>>> = std::iter::once(None)
        .chain(objects.iter().map(Some))
        .collect();
    // The commit layer holds metadata objects only: counted as empty, it goes last.
    let sizes: Vec<u64> = std::iter::once(0)
        .chain(planned.iter().map(|l| l.size))
        .collect();
    let written = super::write_each(
        &all,
        &sizes,
        |i, objs| match objs {
            None => write_commit_layer(oci, compression, repo, commit.commit()),
            Some(objs) => write_object_layer(oci, compression, i, repo, objs),
        },
        progress,
    )?;
    let final_diffid = written
        .last()
        .map(|l| format!("sha256:{}", l.uncompressed_sha256.digest()))
        .unwrap_or_default();
    let mut labels = BTreeMap::from([
        (
            image::OSTREE_COMMIT.to_string(),
            commit.commit().to_string(),
        ),
        (image::OSTREE_FINAL_DIFFID.to_string(), final_diffid),
    ]);
    labels.extend(commit_labels(repo, commit.commit())?);
    let annotated = written
        .into_iter()
        .enumerate()
        .map(|(i, layer)| {
            let annotations = match i {
                0 => Default::default(),
                _ => image::layer_annotations(&planned[i - 1].components, &[]),
            };
            (layer, annotations)
        })
        .collect();
    Ok((annotated, labels))
}

/// The content objects of each layer. Each object goes once, into the first layer
/// that has one of its paths, and all its paths are linked there.
fn group_objects(
    commit: &OstreeContent,
    entries: &[Entry],
    members: &[Vec<usize>],
) -> Vec<Vec<Object>> {
    let mut placed: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut objects: Vec<Vec<Object>> = vec![Vec::new(); members.len()];
    for (li, layer) in members.iter().enumerate() {
        for &i in layer {
            let Some(csum) = commit.object(&entries[i].path) else {
                continue;
            };
            match placed.get(csum) {
                Some(&(l, o)) => objects[l][o].paths.push(entries[i].path.clone()),
                None => {
                    placed.insert(csum, (li, objects[li].len()));
                    objects[li].push(Object {
                        checksum: csum.to_string(),
                        paths: vec![entries[i].path.clone()],
                    });
                }
            }
        }
    }
    objects
}

/// Writes layer 0: the commit and all its metadata objects, and the checkout's
/// directories.
pub fn write_commit_layer(
    oci: &ocidir::OciDir,
    compression: Compression,
    repo_path: &Path,
    commit: &str,
) -> Result<ocidir::Layer, LayerError> {
    let read_err = |source| LayerError::Read {
        path: repo_path.to_path_buf(),
        source,
    };
    write_blob(oci, compression, 0, |out| {
        commit_tar(out, repo_path, commit).map_err(read_err)
    })
}

fn commit_tar(out: &mut dyn Write, repo_path: &Path, commit: &str) -> io::Result<()> {
    let repo = thread_repo(repo_path)?;
    let commit_v = verify::load_variant(&repo, ostree::ObjectType::Commit, commit)?;
    let root_tree = csum_hex(&commit_v.child_value(6));
    let root_meta = csum_hex(&commit_v.child_value(7));
    let meta_v = verify::load_variant(&repo, ostree::ObjectType::DirMeta, &root_meta)?;
    let (uid, gid, mode) = dirmeta_owner(&meta_v);
    let mut tar = Tar::new(out);
    tar.dir("./", uid, gid, mode)?;
    tar.skeleton()?;
    tar.file(&object_path(commit, "commit"), &commit_v.data_as_bytes())?;
    let detached = repo
        .read_commit_detached_metadata(commit, gio::Cancellable::NONE)
        .map_err(io_err)?;
    if let Some(d) = detached {
        tar.file(&object_path(commit, "commitmeta"), &d.data_as_bytes())?;
    }
    let mut seen = HashSet::new();
    let mut walk = MetaWalk {
        repo: &repo,
        tar: &mut tar,
        seen: &mut seen,
    };
    walk.object(ostree::ObjectType::DirMeta, &root_meta, "dirmeta")?;
    let tree = walk.object(ostree::ObjectType::DirTree, &root_tree, "dirtree")?;
    walk.dir(Path::new(""), &tree, 0)?;
    tar.finish()
}

/// (u uid, u gid, u mode, …), integers big-endian.
fn dirmeta_owner(meta: &glib::Variant) -> (u32, u32, u32) {
    let be = |i: usize| u32::from_be(meta.child_value(i).get::<u32>().unwrap_or(0));
    (be(0), be(1), be(2))
}

struct MetaWalk<'a, 'w> {
    repo: &'a ostree::Repo,
    tar: &'a mut Tar<'w>,
    seen: &'a mut HashSet<String>,
}

impl MetaWalk<'_, '_> {
    /// Writes a metadata object once per layer; returns it.
    fn object(
        &mut self,
        kind: ostree::ObjectType,
        csum: &str,
        ext: &str,
    ) -> io::Result<glib::Variant> {
        let v = verify::load_variant(self.repo, kind, csum)?;
        if self.seen.insert(format!("{csum}.{ext}")) {
            self.tar.file(&object_path(csum, ext), &v.data_as_bytes())?;
        }
        Ok(v)
    }

    /// Depth first, subdirectories in name order: dirmeta, directory entry, dirtree.
    fn dir(&mut self, rel: &Path, tree: &glib::Variant, depth: usize) -> io::Result<()> {
        check_depth(depth, rel)?;
        let dirs = tree.child_value(1);
        for i in 0..dirs.n_children() {
            let d = dirs.child_value(i);
            let name: String = d.child_value(0).get().unwrap_or_default();
            let path = rel.join(&name);
            let (sub_tree, sub_meta) = (csum_hex(&d.child_value(1)), csum_hex(&d.child_value(2)));
            let meta = self.object(ostree::ObjectType::DirMeta, &sub_meta, "dirmeta")?;
            // The skeleton already provides sysroot/ in the checkout.
            if !path.starts_with("sysroot") {
                let (uid, gid, mode) = dirmeta_owner(&meta);
                let entry = checkout_path(&path);
                self.tar.dir(&entry.to_string_lossy(), uid, gid, mode)?;
            }
            let sub = self.object(ostree::ObjectType::DirTree, &sub_tree, "dirtree")?;
            self.dir(&path, &sub, depth + 1)?;
        }
        Ok(())
    }
}

/// Writes one planned layer: the skeleton, then `objects` (sorted by checksum), each
/// with its xattrs link and its checkout paths.
pub fn write_object_layer(
    oci: &ocidir::OciDir,
    compression: Compression,
    index: usize,
    repo_path: &Path,
    objects: &[Object],
) -> Result<ocidir::Layer, LayerError> {
    let read_err = |source| LayerError::Read {
        path: repo_path.to_path_buf(),
        source,
    };
    write_blob(oci, compression, index, |out| {
        objects_tar(out, repo_path, objects).map_err(read_err)
    })
}

fn objects_tar(out: &mut dyn Write, repo_path: &Path, objects: &[Object]) -> io::Result<()> {
    let repo = thread_repo(repo_path)?;
    let mut tar = Tar::new(out);
    tar.skeleton()?;
    let mut sorted: Vec<&Object> = objects.iter().collect();
    sorted.sort_by(|a, b| a.checksum.cmp(&b.checksum));
    for o in sorted {
        content_object(&mut tar, &repo, o)?;
    }
    tar.finish()
}

fn content_object(tar: &mut Tar, repo: &ostree::Repo, o: &Object) -> io::Result<()> {
    let verify::ContentObject { info, xattrs, data } = verify::load_file(repo, &o.checksum)?;
    // The xattrs travel in a regular-file link holding their bytes: accepted by every
    // importer of this format, and no hard-link pile-up on one shared blob.
    tar.file(
        &object_path(&o.checksum, "file-xattrs-link"),
        &xattrs.data_as_bytes(),
    )?;
    let mode = info.attribute_uint32("unix::mode");
    let (uid, gid) = (
        info.attribute_uint32("unix::uid"),
        info.attribute_uint32("unix::gid"),
    );
    let object = object_path(&o.checksum, "file");
    let is_link = mode & libc::S_IFMT == libc::S_IFLNK;
    let size = if is_link {
        0
    } else {
        info.size().max(0) as u64
    };
    if is_link {
        let mut h = Tar::header(EntryType::Symlink, uid, gid, 0o777, 0);
        let target = info.symlink_target().unwrap_or_default();
        tar.builder.append_link(&mut h, &object, target)?;
    } else {
        let mut h = Tar::header(EntryType::Regular, uid, gid, mode, size);
        let data = data.ok_or_else(|| io::Error::other("a file object without data"))?;
        tar.builder.append_data(&mut h, &object, data)?;
    }
    let link_mode = if is_link { 0o777 } else { mode };
    for path in &o.paths {
        let entry = checkout_path(path);
        if !is_link && size == 0 {
            let mut h = Tar::header(EntryType::Regular, uid, gid, mode, 0);
            tar.builder.append_data(&mut h, &entry, io::empty())?;
        } else {
            let mut h = Tar::header(EntryType::Link, uid, gid, link_mode, 0);
            tar.builder.append_link(&mut h, &entry, &object)?;
        }
    }
    Ok(())
}
