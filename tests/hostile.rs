//! Crafted package databases, generated here, fed to `strata build --rootfs`. Each
//! must end in a clear error naming the input, with no output written. (Crafted image
//! layers are in `rechunk.rs`, crafted dpkg paths in `real_trees.rs`.)

mod common;

use std::fs;
use std::path::Path;

/// Builds `root` and returns the error, asserting it failed and wrote nothing.
fn refused(root: &Path, out: &Path) -> String {
    let run = common::strata(&[
        "build",
        "--rootfs",
        root.to_str().unwrap(),
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
