//! `--format ostree` against ostree-ext 0.15.3's own importer (`ImageImporter`, what
//! rpm-ostree and bootc run), built as `tools/ostree-import`: the imported commit is
//! the source commit, object for object, and a second build on top of the first
//! imports with its unchanged layers already present.

mod common;

use common::ostree_client::{build_from_ostree, commit, import, importer, init_archive, ls};
use common::{edge_tree, real_parts};

#[test]
fn ostree_clients_import_the_exact_commit_and_reuse_layers() {
    if !real_parts(&["ostree", "skopeo"]) {
        return;
    }
    let Some(bin) = importer() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (source, client) = (tmp.path().join("source"), tmp.path().join("client"));
    init_archive(&source);
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
    build_from_ostree(&source, "os/41", &image1, &["-n", "6"]);
    let again = tmp.path().join("again");
    build_from_ostree(&source, "os/41", &again, &["-n", "6"]);
    let index = |dir: &std::path::Path| std::fs::read(dir.join("index.json")).unwrap();
    assert_eq!(
        index(&again),
        index(&image1),
        "the same commit, the same image"
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
    let prior = format!("oci:{}:1", image1.display());
    let stdout = build_from_ostree(&source, "os/41", &image2, &["-n", "6", "--prior", &prior]);
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

/// A debootstrapped Debian minbase (without its device nodes, which ostree cannot
/// hold): a real OS tree with hard links, setuid files and a dpkg database.
#[test]
fn a_debian_minbase_commit_imports_as_the_exact_commit() {
    let minbase = std::path::Path::new("/var/cache/strata-test/bookworm-minbase");
    if !real_parts(&["ostree", "skopeo"]) || !minbase.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "scripts/fixtures.sh makes the minbase"
        );
        return;
    }
    let Some(bin) = importer() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .args([minbase.as_os_str(), tree.as_os_str()])
        .status()
        .unwrap();
    assert!(copied.success());
    let removed = std::process::Command::new("find")
        .arg(&tree)
        .args([
            "(", "-type", "c", "-o", "-type", "b", "-o", "-type", "p", "-o", "-type", "s", ")",
            "-delete",
        ])
        .status()
        .unwrap();
    assert!(removed.success());
    let source = tmp.path().join("source");
    init_archive(&source);
    let rev = commit(&source, &tree, "debian/12");
    let image = tmp.path().join("image");
    build_from_ostree::<&str>(&source, "debian/12", &image, &[]);
    let client = tmp.path().join("client");
    let imported = import(&bin, &client, &image);
    assert_eq!(imported["commit"], rev.as_str());
    assert_eq!(ls(&client, &rev), ls(&source, &rev));
}

/// `strata bench build` with an ostree commit times ostree-ext's encoder on the same
/// commit and layer count in the same run, and prints the ratio.
#[test]
fn the_build_benchmark_runs_ostree_ext_on_the_same_commit() {
    if !real_parts(&["ostree", "pigz", "zstd"]) {
        return;
    }
    let Some(bin) = importer() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (repo, tree) = (tmp.path().join("repo"), tmp.path().join("tree"));
    init_archive(&repo);
    edge_tree(&tree, "1");
    commit(&repo, &tree, "os/41");
    let stdout = common::ok(common::strata(&args![
        "bench",
        "build",
        "--rootfs",
        tree,
        "--ostree-repo",
        repo,
        "--ref",
        "os/41",
        "--ostree-ext-encoder",
        bin,
        "-n",
        "6",
        "--runs",
        "1",
    ]));
    for row in [
        "tar | pigz -6",
        "strata build (ostree)",
        "strata build --from-image (zstd) ÷ strata build (zstd): ",
        "ostree-ext encoder (6 layers)",
        "strata ÷ ostree-ext encoder: ",
    ] {
        assert!(stdout.contains(row), "no '{row}' in:\n{stdout}");
    }
}
