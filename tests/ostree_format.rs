//! `--format ostree` against ostree-ext 0.15.3's own importer (`ImageImporter`, what
//! rpm-ostree and bootc run), built as `tools/ostree-import`: the imported commit is
//! the source commit, object for object, and a second build on top of the first
//! imports with its unchanged layers already present.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{edge_tree, ostree, real_parts, strata};

fn importer() -> Option<PathBuf> {
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

fn import(bin: &Path, repo: &Path, image: &Path) -> serde_json::Value {
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

fn ls(repo: &Path, rev: &str) -> String {
    let out = Command::new("ostree")
        .args(["ls", "-R", "-C", "-X"])
        .arg(format!("--repo={}", repo.display()))
        .arg(rev)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn commit(repo: &Path, tree: &Path, branch: &str) -> String {
    let repo_arg = format!("--repo={}", repo.display());
    ostree(&[
        "commit",
        &repo_arg,
        &format!("--branch={branch}"),
        "--subject=test",
        "--add-metadata-string=version=41.1",
        &format!("--tree=dir={}", tree.display()),
    ]);
    let out = Command::new("ostree")
        .args(["rev-parse", &repo_arg, branch])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn ostree_clients_import_the_exact_commit_and_reuse_layers() {
    if !real_parts(&["ostree", "skopeo"]) {
        return;
    }
    let Some(bin) = importer() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (source, client) = (tmp.path().join("source"), tmp.path().join("client"));
    ostree(&[
        "init",
        &format!("--repo={}", source.display()),
        "--mode=archive",
    ]);
    let tree = tmp.path().join("tree");
    edge_tree(&tree, "1");
    // Two paths of one content object.
    std::fs::hard_link(
        tree.join("usr/bin/stable"),
        tree.join("usr/bin/stable-again"),
    )
    .unwrap();
    let first = commit(&source, &tree, "os/41");
    let image1 = tmp.path().join("image1");
    let out = strata(&[
        "build",
        "--ostree-repo",
        source.to_str().unwrap(),
        "--ref",
        "os/41",
        "-n",
        "6",
        "--output",
        &format!("oci:{}:1", image1.display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported = import(&bin, &client, &image1);
    assert_eq!(
        imported["commit"],
        first.as_str(),
        "the source commit, unchanged"
    );
    assert_eq!(
        ls(&client, &first),
        ls(&source, &first),
        "object for object"
    );

    // Build 2 updates one package; its image imports on top of the first.
    common::dpkg_tree(&tree, "2");
    let second = commit(&source, &tree, "os/41");
    let image2 = tmp.path().join("image2");
    let out = strata(&[
        "build",
        "--ostree-repo",
        source.to_str().unwrap(),
        "--ref",
        "os/41",
        "-n",
        "6",
        "--output",
        &format!("oci:{}:1", image2.display()),
        "--prior",
        &format!("oci:{}:1", image1.display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("updated  busy 1 → 2"), "{stdout}");
    let imported = import(&bin, &client, &image2);
    assert_eq!(imported["commit"], second.as_str());
    assert_eq!(ls(&client, &second), ls(&source, &second));
    let present = imported["layers_present"].as_u64().unwrap();
    let total = imported["layers"].as_u64().unwrap();
    assert!(
        present >= 1 && present < total,
        "unchanged layers are already present on the client: {present} of {total}"
    );
}
