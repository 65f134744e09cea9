//! Crafted package databases, generated here, fed to `strata build --rootfs`. Each
//! must end in a clear error naming the input, with no output written. (Crafted image
//! layers are in `rechunk.rs`, crafted dpkg paths in `real_trees.rs`.)

mod common;

use std::fs;
use std::path::Path;

/// Builds `root` and returns the error, asserting it failed and wrote nothing.
fn refused(root: &Path, out: &Path) -> String {
    let run = common::strata(&args![
        "build",
        "--rootfs",
        root,
        "--output",
        &format!("oci:{}", out.display()),
    ]);
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(!run.status.success(), "the crafted tree was accepted");
    assert!(!out.exists(), "no output after a refusal");
    err
}

#[test]
fn an_rpmdb_whose_packages_is_a_recursive_view_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let db = root.join("usr/lib/sysimage/rpm/rpmdb.sqlite");
    fs::create_dir_all(db.parent().unwrap()).unwrap();
    fs::write(root.join("usr/hello"), "hello\n").unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE VIEW Packages AS WITH RECURSIVE c(x) AS \
         (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x AS hnum, x AS blob FROM c;",
    )
    .unwrap();
    drop(conn);
    let started = std::time::Instant::now();
    let err = refused(&root, &tmp.path().join("out"));
    assert!(
        err.contains("rpmdb.sqlite") && err.contains("Packages is a view"),
        "{err}"
    );
    assert!(started.elapsed().as_secs() < 60, "refused, not timed out");
}

#[test]
fn a_dpkg_list_of_millions_of_paths_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    common::dpkg_tree(&root, "1");
    // 3 bytes a line on disk, far more as paths in memory.
    let list = "/a\n".repeat(1_500_000);
    fs::write(root.join("var/lib/dpkg/info/busy.list"), list).unwrap();
    let err = refused(&root, &tmp.path().join("out"));
    assert!(
        err.contains("busy.list") && err.contains("lists far more paths than the tree holds"),
        "{err}"
    );
}

/// The content checksum of `path` in commit `rev`.
fn object_of(repo: &Path, rev: &str, path: &str) -> String {
    let repo_arg = format!("--repo={}", repo.display());
    let out = common::ostree(&["ls", "-C", &repo_arg, rev, path]);
    out.split_whitespace()
        .find(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no checksum in {out}"))
        .to_string()
}

fn filez(repo: &Path, checksum: &str) -> std::path::PathBuf {
    repo.join("objects")
        .join(&checksum[..2])
        .join(format!("{}.filez", &checksum[2..]))
}

/// Builds the commit in both formats; each must fail naming the object, and write
/// nothing.
fn both_formats_refuse(repo: &Path, rev: &str, out: &Path, expected: &str) {
    fs::create_dir_all(out).unwrap();
    for format in ["plain", "ostree"] {
        let image = out.join(format);
        let run = common::ostree_client::strata_from_ostree(
            repo,
            rev,
            &format!("oci:{}:1", image.display()),
            &["--format", format],
        );
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success(),
            "{format}: the altered repository was accepted"
        );
        assert!(err.contains(expected), "{format}: {err}");
        assert!(!image.exists(), "{format}: no output after a refusal");
    }
}

/// An archive repository under `dir` with one commit of a small dpkg tree.
fn committed_tree(dir: &Path) -> (std::path::PathBuf, String) {
    let (repo, tree) = (dir.join("repo"), dir.join("tree"));
    common::ostree_client::init_archive(&repo);
    common::dpkg_tree(&tree, "1");
    let rev = common::ostree_client::commit(&repo, &tree, "os/stable");
    (repo, rev)
}

#[test]
fn an_ostree_object_swapped_for_another_is_refused() {
    if !common::real_parts(&["ostree"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (repo, rev) = committed_tree(tmp.path());
    let (busy, stable) = (
        object_of(&repo, &rev, "/usr/bin/busy"),
        object_of(&repo, &rev, "/usr/bin/stable"),
    );
    // A valid object of other bytes, under busy's name.
    fs::remove_file(filez(&repo, &busy)).unwrap();
    fs::copy(filez(&repo, &stable), filez(&repo, &busy)).unwrap();
    both_formats_refuse(
        &repo,
        &rev,
        &tmp.path().join("out"),
        &format!("object {busy} does not match its checksum"),
    );
}

#[test]
fn an_ostree_object_whose_header_understates_its_size_is_refused() {
    if !common::real_parts(&["ostree"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (repo, rev) = committed_tree(tmp.path());
    let busy = object_of(&repo, &rev, "/usr/bin/busy");
    // The archive header is a size-prefixed (tuuuusa(ayay)): its first field, the
    // big-endian content size, sits at byte 8. Claim 2 bytes of the real 7.
    let path = filez(&repo, &busy);
    let mut bytes = fs::read(&path).unwrap();
    assert_eq!(u64::from_be_bytes(bytes[8..16].try_into().unwrap()), 7);
    bytes[8..16].copy_from_slice(&2u64.to_be_bytes());
    fs::remove_file(&path).unwrap();
    fs::write(&path, bytes).unwrap();
    both_formats_refuse(
        &repo,
        &rev,
        &tmp.path().join("out"),
        "holds more than the 2 bytes its header gives",
    );
}

#[test]
fn a_prior_with_a_malformed_components_annotation_is_a_warning_and_a_fresh_plan() {
    use sha2::{Digest, Sha256};
    let tmp = tempfile::tempdir().unwrap();
    let (root, prior) = (tmp.path().join("root"), tmp.path().join("prior"));
    common::dpkg_tree(&root, "1");
    let build = |out: &Path, extra: &[&str]| {
        let output = format!("oci:{}:1", out.display());
        let mut args = args!["build", "--rootfs", root, "--output", output];
        args.extend(extra.iter().map(Into::into));
        common::strata(&args)
    };
    common::ok(build(&prior, &[]));
    // Rewrite the prior's manifest with garbage in its first layer's annotation.
    let index_path = prior.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let blob = |d: &str| prior.join("blobs/sha256").join(&d[7..]);
    let old = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(&old)).unwrap()).unwrap();
    manifest["layers"][0]["annotations"]["strata.dev/components"] = "{[not json".into();
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
    fs::write(blob(&digest), &bytes).unwrap();
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = bytes.len().into();
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();

    let prior_arg = format!("oci:{}:1", prior.display());
    let run = build(&tmp.path().join("next"), &["--prior", &prior_arg]);
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    common::succeeded(run, "a build with a malformed prior");
    assert!(
        err.contains("strata.dev/components") && err.contains("planning without it"),
        "{err}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SIGTERM mid-build: the staging directory goes, and nothing is left at the output.
#[test]
fn an_interrupted_build_leaves_no_partial_output() {
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root/usr/share/data");
    fs::create_dir_all(&root).unwrap();
    // Incompressible files, so writing layers takes a few seconds.
    for i in 0..96 {
        fs::write(root.join(format!("blob{i}")), common::noise(2 << 20, i + 1)).unwrap();
    }
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["build", "--rootfs"])
        .arg(tmp.path().join("root"))
        .arg("--output")
        .arg(format!("oci:{}", out.display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let staging = tmp.path().join(format!(".out.strata-{}", child.id()));
    let started = std::time::Instant::now();
    while !staging.join("blobs/sha256").exists() {
        assert!(
            started.elapsed().as_secs() < 120,
            "the build never started writing"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended too soon"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill has no memory preconditions; the child is ours and still running.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    assert!(!staging.exists(), "the staging directory is removed");
    assert!(!out.exists(), "nothing at the output");
}

/// A prior's layer blobs are untrusted like the rest of it: a kept layer whose blob
/// does not hash to the manifest's digest, or is a symlink out of the prior's
/// directory, ends the build with an error naming the layer, and nothing is written.
#[test]
fn a_tampered_or_linked_prior_blob_is_never_kept() {
    let (Some(added), Some(removed)) = (
        common::cached_tree("sequence/2-added"),
        common::cached_tree("sequence/3-removed"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let prior = tmp.path().join("prior");
    let build = |tree: &Path, out: &Path, prior: Option<&Path>| {
        let output = format!("oci:{}:v", out.display());
        let prior = prior.map(|p| format!("oci:{}:v", p.display()));
        let mut args = args![
            "build",
            "--rootfs",
            tree,
            "--allow-special-files",
            "-n",
            "24",
            "--output",
            &output,
        ];
        if let Some(p) = &prior {
            args.extend(args!["--prior", p]);
        }
        common::strata(&args)
    };
    common::ok(build(&added, &prior, None));
    let manifest = layer_blobs(&prior);
    for (k, attack) in ["tampered", "linked"].iter().enumerate() {
        let copy = tmp.path().join(format!("prior-{attack}"));
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&prior)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(status.success());
        for hex in &manifest {
            let blob = copy.join("blobs/sha256").join(hex);
            match k {
                0 => {
                    let mut bytes = fs::read(&blob).unwrap();
                    let last = bytes.len() - 1;
                    bytes[last] ^= 1;
                    fs::write(&blob, bytes).unwrap();
                }
                _ => {
                    let outside = tmp.path().join(format!("outside-{hex}"));
                    fs::rename(&blob, &outside).unwrap();
                    std::os::unix::fs::symlink(&outside, &blob).unwrap();
                }
            }
        }
        let out = tmp.path().join(format!("out-{attack}"));
        let run = build(&removed, &out, Some(&copy));
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{attack}: the prior's blob was kept");
        assert!(err.contains("keeping layer"), "{attack}: {err}");
        assert!(!out.exists(), "{attack}: no output after a refusal");
    }
}

/// The hex digests of the layer blobs of the OCI directory `dir` (tag `v`).
fn layer_blobs(dir: &Path) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(dir.join("blobs/sha256").join(&digest[7..])).unwrap(),
    )
    .unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap()[7..].to_string())
        .collect()
}
