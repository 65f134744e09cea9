//! Fuzzes image flattening: any bytes, cut into up to four layer tars, must flatten to
//! a well-formed tree (`check_invariants`) or to an error, never a panic, a path
//! outside the tree, or a file that reads back short.
#![no_main]

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use strata::source::image::{check_invariants, flatten_tars};
use strata::source::rootfs::WalkOptions;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // Layers are separated by a 0xFF 0x00 0xFF marker; the first byte picks options.
    let layers = split(rest).into_iter().take(4).enumerate().map(|(i, l)| {
        let tar: Box<dyn Read> = Box::new(Cursor::new(l.to_vec()));
        Ok((PathBuf::from(format!("layer{i}")), tar))
    });
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let opts = WalkOptions {
        allow_special_files: flags & 1 == 1,
    };
    if let Ok(flat) = flatten_tars(layers, Path::new("fuzz"), scratch.path(), opts) {
        if let Err(e) = check_invariants(&flat) {
            panic!("a flattening broke its guarantees: {e}");
        }
    }
});

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0xFF, 0x00, 0xFF] {
            out.push(&data[start..i]);
            start = i + 3;
            i += 3;
        } else {
            i += 1;
        }
    }
    out.push(&data[start..]);
    out
}
