//! A gzip encoder that compresses one stream on several cores, the way pigz does.
//!
//! A plan often puts most of an image's bytes into one stable layer; compressed
//! serially, that layer alone sets the build's wall time. This encoder cuts the
//! stream into fixed-size chunks at fixed offsets and deflates each on its own thread,
//! primed with the 32 KiB that precede it, ending every chunk but the last with a sync
//! flush. The pieces concatenate into one ordinary gzip member (any decoder reads it),
//! and because the cuts depend only on byte offsets, the output is the same whatever
//! the thread timing: layer digests stay reproducible.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Uncompressed bytes per chunk: large enough that the sync flush and the lost
/// context at each cut cost well under 1% of size.
const CHUNK: usize = 1 << 20;
/// Deflate looks back at most this far; each chunk is primed with this much.
const WINDOW: usize = 32 << 10;
/// The fixed header: no name, no mtime (reproducible), OS "unknown".
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Writes a gzip stream of everything written to it into `inner`.
pub struct ParallelGzEncoder<W: Write> {
    inner: W,
    level: Compression,
    /// The chunk being filled.
    chunk: Vec<u8>,
    /// The last [`WINDOW`] bytes before `chunk`.
    window: Vec<u8>,
    /// Chunks being deflated, oldest first.
    in_flight: VecDeque<JoinHandle<io::Result<Vec<u8>>>>,
    max_in_flight: usize,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> ParallelGzEncoder<W> {
    pub fn new(mut inner: W, level: Compression) -> io::Result<Self> {
        inner.write_all(&HEADER)?;
        let cores = crate::parallel::cores();
        Ok(ParallelGzEncoder {
            inner,
            level,
            chunk: Vec::with_capacity(CHUNK),
            window: Vec::new(),
            in_flight: VecDeque::new(),
            max_in_flight: cores,
            crc: crc32fast::Hasher::new(),
            len: 0,
        })
    }

    /// Starts deflating the current chunk; `last` ends the deflate stream.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        let dictionary = std::mem::take(&mut self.window);
        self.window = chunk[chunk.len().saturating_sub(WINDOW)..].to_vec();
        let level = self.level;
        self.in_flight.push_back(std::thread::spawn(move || {
            deflate(level, &dictionary, &chunk, last)
        }));
        while self.in_flight.len() > self.max_in_flight {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(handle) = self.in_flight.pop_front() {
            let deflated = handle
                .join()
                .map_err(|_| io::Error::other("a gzip worker thread panicked"))??;
            self.inner.write_all(&deflated)?;
        }
        Ok(())
    }

    /// Ends the stream and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        // ISIZE is the length modulo 2^32 by definition.
        self.inner.write_all(&(self.len as u32).to_le_bytes())?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&data[..n]);
        self.crc.update(&data[..n]);
        self.len += n as u64;
        if self.chunk.len() == CHUNK {
            self.dispatch(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // A flush here would cut the stream at a write boundary and make the output
        // depend on how callers buffer; chunks are cut at fixed offsets only.
        Ok(())
    }
}

impl<'a> ocidir::WriteComplete<ocidir::BlobWriter<'a>>
    for ParallelGzEncoder<ocidir::BlobWriter<'a>>
{
    fn complete(self) -> io::Result<ocidir::BlobWriter<'a>> {
        self.finish()
    }
}

/// Raw-deflates `input` primed with `dictionary`; a sync flush ends it unless `last`.
fn deflate(level: Compression, dictionary: &[u8], input: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut z = Compress::new(level, false);
    if !dictionary.is_empty() {
        z.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(input.len() + input.len() / 8 + 1024);
    loop {
        if out.len() == out.capacity() {
            out.reserve(64 << 10);
        }
        let consumed = z.total_in() as usize;
        let status = z
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = z.total_in() as usize == input.len();
        // Zlib has finished a flush once it stops filling the whole output buffer.
        let done = match status {
            Status::StreamEnd => true,
            _ => !last && all_in && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn encode(data: &[u8], write_size: usize) -> Vec<u8> {
        let mut enc = ParallelGzEncoder::new(Vec::new(), Compression::new(6)).unwrap();
        for piece in data.chunks(write_size.max(1)) {
            enc.write_all(piece).unwrap();
        }
        enc.finish().unwrap()
    }

    fn decode(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        // A single-member decoder: the output must be one ordinary gzip member.
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn sample(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Half text-like, half noise: both compressible runs and incompressible ones.
                if (i / 4096) % 2 == 0 {
                    b"strata layer "[i % 13]
                } else {
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn round_trips_across_chunk_boundaries() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345] {
            let data = sample(len);
            assert_eq!(decode(&encode(&data, 65536)), data, "length {len}");
        }
    }

    #[test]
    fn output_does_not_depend_on_write_sizes() {
        let data = sample(2 * CHUNK + 777);
        assert_eq!(encode(&data, 1000), encode(&data, CHUNK + 3));
    }

    #[test]
    fn size_stays_close_to_serial_gzip() {
        let data = sample(6 * CHUNK);
        let mut serial = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        serial.write_all(&data).unwrap();
        let serial = serial.finish().unwrap().len() as f64;
        let parallel = encode(&data, 65536).len() as f64;
        assert!(parallel < serial * 1.01, "{parallel} vs serial {serial}");
    }
}
