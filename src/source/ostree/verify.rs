//! A repository's objects are checked before their bytes are trusted, since anyone
//! who can write the repository can rewrite an object under its old name:
//! - a metadata object (commit, dirtree, dirmeta) must hash to its checksum;
//! - a content object's header and bytes must hash to its checksum, checked as the
//!   bytes stream, and there must be exactly as many bytes as its header says (an
//!   archive object whose header understates its size would otherwise smuggle extra
//!   bytes into a tar stream).

use std::io::{self, Read};

use ostree::gio;
use ostree::gio::prelude::InputStreamExtManual;
use ostree::glib;
use ostree::glib::prelude::ToVariant;
use sha2::{Digest, Sha256};

/// Loads a metadata object and checks it against its checksum.
pub fn load_variant(
    repo: &ostree::Repo,
    kind: ostree::ObjectType,
    checksum: &str,
) -> io::Result<glib::Variant> {
    let v = repo
        .load_variant(kind, checksum)
        .map_err(io::Error::other)?;
    let actual = hex(&Sha256::digest(v.data_as_bytes()));
    if actual != checksum {
        return Err(tampered(checksum));
    }
    Ok(v)
}

/// A content object: its metadata, and for a regular file its checked bytes.
pub struct ContentObject {
    /// Its type, mode, owner and size.
    pub info: gio::FileInfo,
    /// Its extended attributes, as ostree stores them.
    pub xattrs: glib::Variant,
    /// `None` for a symlink (whose header alone was checked).
    pub data: Option<Box<dyn Read>>,
}

/// Loads a content object; its bytes are checked as they are read, and a symlink's
/// header at once.
pub fn load_file(repo: &ostree::Repo, checksum: &str) -> io::Result<ContentObject> {
    let (stream, info, xattrs) = repo
        .load_file(checksum, gio::Cancellable::NONE)
        .map_err(io::Error::other)?;
    let is_link = info.file_type() == gio::FileType::SymbolicLink;
    let mut hasher = Sha256::new();
    hasher.update(file_header(&info, &xattrs, is_link));
    if is_link {
        return match hex(&hasher.finalize()) == checksum {
            true => Ok(ContentObject {
                info,
                xattrs,
                data: None,
            }),
            false => Err(tampered(checksum)),
        };
    }
    let stream = stream.ok_or_else(|| io::Error::other("a file object without data"))?;
    let mut reader = Checked {
        inner: Box::new(stream.into_read()),
        hasher,
        remaining: info.size().max(0) as u64,
        size: info.size().max(0) as u64,
        checksum: checksum.to_string(),
    };
    if reader.remaining == 0 {
        reader.finish()?;
    }
    Ok(ContentObject {
        info,
        xattrs,
        data: Some(Box::new(reader)),
    })
}

/// ostree's file header, as hashed: `(uuuusa(ayay))` of big-endian uid, gid and mode,
/// a zero rdev, the symlink target and the xattrs, behind its 32-bit big-endian size
/// and four bytes of padding.
fn file_header(info: &gio::FileInfo, xattrs: &glib::Variant, is_link: bool) -> Vec<u8> {
    let target = match is_link {
        true => info
            .symlink_target()
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default(),
        false => String::new(),
    };
    let be = |name: &str| info.attribute_uint32(name).to_be().to_variant();
    let header = glib::Variant::tuple_from_iter([
        be("unix::uid"),
        be("unix::gid"),
        be("unix::mode"),
        0u32.to_variant(),
        target.to_variant(),
        xattrs.clone(),
    ])
    .normal_form();
    let data = header.data_as_bytes();
    let mut out = Vec::with_capacity(8 + data.len());
    out.extend((data.len() as u32).to_be_bytes());
    out.extend([0u8; 4]);
    out.extend_from_slice(&data);
    out
}

/// A regular file's bytes, hashed as they pass; the last byte's read fails if the
/// object is longer than its header says or does not hash to its checksum.
struct Checked {
    inner: Box<dyn Read>,
    hasher: Sha256,
    remaining: u64,
    size: u64,
    checksum: String,
}

impl Checked {
    /// Called once every promised byte has passed: nothing may follow, and the hash
    /// must match.
    fn finish(&mut self) -> io::Result<()> {
        let mut extra = [0u8; 1];
        if self.inner.read(&mut extra)? != 0 {
            return Err(io::Error::other(format!(
                "content object {}: holds more than the {} bytes its header gives (the \
                 repository was altered)",
                self.checksum, self.size
            )));
        }
        match hex(&self.hasher.clone().finalize()) == self.checksum {
            true => Ok(()),
            false => Err(tampered(&self.checksum)),
        }
    }
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "content object {}: ends after {} of the {} bytes its header gives",
                    self.checksum,
                    self.size - self.remaining,
                    self.size
                ),
            ));
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        if self.remaining == 0 {
            self.finish()?;
        }
        Ok(n)
    }
}

fn tampered(checksum: &str) -> io::Error {
    io::Error::other(format!(
        "object {checksum} does not match its checksum (the repository was altered)"
    ))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
