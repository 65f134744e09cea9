//! Unpacking an image as a runtime would (umoci applies whiteouts), and comparing the
//! result with the tree it was built from.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

/// `find`'s view of a tree: path, type, mode, owner, size and link target per entry.
fn listing(root: &Path) -> String {
    let out = Command::new("find")
        .arg(".")
        .args(["-printf", "%P\t%y\t%m\t%U\t%G\t%s\t%l\n"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    lines.sort_unstable();
    // A directory's size is the filesystem's business.
    lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            match f[1] {
                "d" => format!("{}\t{}\t{}\t{}\t{}", f[0], f[1], f[2], f[3], f[4]),
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Unpacks `image` (an OCI directory, tagged `tag`) with umoci, which applies whiteouts as runtimes do, and
/// asserts it is `tree`, entry for entry and byte for byte.
pub fn assert_unpacks_to(image: &Path, tag: &str, tree: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    let out = Command::new("umoci")
        .args(["raw", "unpack", "--image"])
        .arg(format!("{}:{tag}", image.display()))
        .arg(&rootfs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (want, got) = (listing(tree), listing(&rootfs));
    if want != got {
        let w: HashSet<&str> = want.lines().collect();
        let g: HashSet<&str> = got.lines().collect();
        let missing: Vec<&&str> = w.difference(&g).take(10).collect();
        let extra: Vec<&&str> = g.difference(&w).take(10).collect();
        panic!(
            "{} unpacks to another tree: missing {missing:?}, extra {extra:?}",
            image.display()
        );
    }
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference", "-q"])
        .arg(tree)
        .arg(&rootfs)
        .output()
        .unwrap();
    // diff compares no device nodes; the listing did.
    let report = String::from_utf8_lossy(&diff.stdout);
    let differences: Vec<&str> = report
        .lines()
        .filter(|l| !l.ends_with("is a character special file"))
        .collect();
    assert!(differences.is_empty(), "contents differ: {differences:?}");
}
