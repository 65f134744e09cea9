//! Kept layers: a prior image's layer blob copied into the new image byte for byte,
//! because it holds superseded members whose files the new tree no longer has. Its
//! entries are read back, so the patch layer can hide or correct what is stale.

use std::io::{self, Read};
use std::path::Path;
use std::str::FromStr;

use ocidir::oci_spec::image::{DescriptorBuilder, Digest, MediaType, Sha256Digest};
use ocidir::{Layer, OciDir, OciRead};
use sha2::{Digest as _, Sha256};

use super::LayerError;
use crate::image::remote::{self, RegistryOptions};
use crate::image::ImageRef;
use crate::source::image::layer_entries;
use crate::source::rootfs::WalkOptions;
use crate::source::Entry;

/// Where kept blobs come from: the newest prior, which the plan was made against.
pub struct BlobSource<'a> {
    /// The prior image.
    pub image: &'a ImageRef,
    /// How its registry is reached.
    pub registry: &'a RegistryOptions,
}

/// A copied blob and what it holds.
pub struct KeptLayer {
    /// The blob, now in the new image's directory.
    pub layer: Layer,
    /// The entries its tar holds, in order.
    pub entries: Vec<Entry>,
}

/// Copies blob `digest` (`size` bytes) of the prior into `oci`, checks it against
/// its digest, and reads its entries. `index` numbers the layer in messages.
pub fn copy(
    from: &BlobSource,
    digest: &str,
    size: u64,
    oci: &OciDir,
    index: usize,
    opts: WalkOptions,
) -> Result<KeptLayer, LayerError> {
    let fail = |problem: String| LayerError::Kept {
        index,
        digest: digest.to_string(),
        problem,
    };
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| fail("not a sha256 digest".into()))?;
    let desc = DescriptorBuilder::default()
        .media_type(MediaType::ImageLayerGzip)
        .digest(Digest::from_str(digest).map_err(|e| fail(e.to_string()))?)
        .size(size)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut w = oci.create_blob().map_err(|e| fail(e.to_string()))?;
    match from.image {
        ImageRef::Oci { dir, .. } => {
            let rel = Path::new("blobs/sha256").join(hex);
            let file = crate::source::content::open_beneath(dir, &rel)
                .map_err(|e| fail(format!("{}: {e}", dir.join(&rel).display())))?;
            // One byte past the size is enough to tell a blob that grew.
            let mut file = crate::source::content::chunked(file, size).take(size + 1);
            io::copy(&mut file, &mut w).map_err(|e| fail(e.to_string()))?;
        }
        other => remote::fetch_blob(&other.to_string(), digest, size, from.registry, &mut w)
            .map_err(|e| fail(e.to_string()))?,
    }
    let blob = w
        .complete_verified_as(&desc)
        .map_err(|e| fail(format!("the prior's blob does not match its manifest: {e}")))?;
    let file = oci.read_blob(&desc).map_err(|e| fail(e.to_string()))?;
    let (tar, media_type) = decompress(file).map_err(|e| fail(e.to_string()))?;
    let mut hashed = Hashed {
        inner: tar,
        hash: Sha256::new(),
    };
    let name = Path::new(digest);
    let entries = layer_entries(&mut hashed, name, opts).map_err(|e| fail(e.to_string()))?;
    // The diff ID covers the whole stream, the padding after the tar's end included.
    io::copy(&mut hashed, &mut io::sink()).map_err(|e| fail(e.to_string()))?;
    let label = crate::bytes::sha256_label(&hashed.hash.finalize());
    let uncompressed = label.trim_start_matches("sha256:");
    Ok(KeptLayer {
        layer: Layer {
            blob,
            uncompressed_sha256: Sha256Digest::from_str(uncompressed)
                .map_err(|e| fail(e.to_string()))?,
            media_type,
        },
        entries,
    })
}

/// The uncompressed stream of a blob, told by its first bytes, and its media type.
fn decompress(mut file: std::fs::File) -> io::Result<(Box<dyn Read>, MediaType)> {
    use std::io::Seek;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic)?;
    file.rewind()?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => (
            Box::new(flate2::read::MultiGzDecoder::new(file)),
            MediaType::ImageLayerGzip,
        ),
        [0x28, 0xb5, 0x2f, 0xfd] => (
            Box::new(zstd::stream::read::Decoder::new(file)?),
            MediaType::ImageLayerZstd,
        ),
        _ => (Box::new(file), MediaType::ImageLayer),
    })
}

/// Hashes what is read through it.
struct Hashed<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}
