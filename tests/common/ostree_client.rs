//! The ostree client side of the format tests: ostree-ext's importer and the ostree
//! CLI's view of a commit.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// ostree-ext 0.15.3's importer (tools/ostree-import), or `None` (skip) outside CI.
pub fn importer() -> Option<PathBuf> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools/ostree-import/target/release/strata-ostree-import");
    if bin.exists() {
        return Some(bin);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{}: scripts/test.sh builds it",
        bin.display()
    );
    println!("skipped: build tools/ostree-import first (scripts/test.sh does)");
    None
}

/// Imports `image` (an OCI directory, tag 1) into `repo`; the helper's JSON answer.
pub fn import(bin: &Path, repo: &Path, image: &Path) -> serde_json::Value {
    let out = Command::new(bin)
        .arg(repo)
        .arg(format!("oci:{}:1", image.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import of {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `ostree ls -R -C -X` of `rev`: every path with its object and xattrs.
pub fn ls(repo: &Path, rev: &str) -> String {
    let repo_arg = format!("--repo={}", repo.display());
    super::ostree(&["ls", "-R", "-C", "-X", &repo_arg, rev])
}

/// A new archive-mode repository at `repo` (what build servers publish).
pub fn init_archive(repo: &Path) {
    super::ostree(&[
        "init",
        &format!("--repo={}", repo.display()),
        "--mode=archive",
    ]);
}

/// Commits `tree` to `branch` with a version; returns the checksum.
pub fn commit(repo: &Path, tree: &Path, branch: &str) -> String {
    let repo_arg = format!("--repo={}", repo.display());
    super::ostree(&[
        "commit",
        &repo_arg,
        &format!("--branch={branch}"),
        "--subject=test",
        "--add-metadata-string=version=41.1",
        &format!("--tree=dir={}", tree.display()),
    ]);
    super::ostree(&["rev-parse", &repo_arg, branch])
        .trim()
        .to_string()
}

/// `strata build --ostree-repo REPO --ref REV --output oci:IMAGE:1 EXTRA…`, asserted to
/// succeed; its standard output.
pub fn build_from_ostree<S: AsRef<OsStr>>(
    repo: &Path,
    rev: &str,
    image: &Path,
    extra: &[S],
) -> String {
    let output = format!("oci:{}:1", image.display());
    super::ok(strata_from_ostree(repo, rev, &output, extra))
}

/// `strata build --ostree-repo REPO --ref REV --output OUTPUT EXTRA…`, however it ends.
pub fn strata_from_ostree<S: AsRef<OsStr>>(
    repo: &Path,
    rev: &str,
    output: &str,
    extra: &[S],
) -> Output {
    let mut args = args![
        "build",
        "--ostree-repo",
        repo,
        "--ref",
        rev,
        "--output",
        output,
    ];
    args.extend(extra.iter().map(|a| a.as_ref().to_owned()));
    super::strata(&args)
}
