//! Components and reuse on real Debian trees: the debootstrapped minbase and the
//! stream that `scripts/tree-sequence.sh` makes with apt against Debian's mirror.
//! Checks ownership through merged /usr, a dpkg diversion, an edited conffile and
//! alternatives, and that a real security update reuses every layer whose content
//! did not change.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::{cached_tree as cached, ok, strata};

fn build(tree: &Path, out: &Path, priors: &[&Path], layers: &str) -> serde_json::Value {
    let report = out.with_extension("json");
    let output = format!("oci:{}:v", out.display());
    let prior_refs: Vec<String> = priors
        .iter()
        .map(|p| format!("oci:{}:v", p.display()))
        .collect();
    let mut args = args![
        "build",
        "--rootfs",
        tree,
        "--allow-special-files",
        "-n",
        layers,
        "--output",
        &output,
        "--report",
        report,
    ];
    for p in &prior_refs {
        args.extend(args!["--prior", p]);
    }
    ok(strata(&args));
    serde_json::from_str(&fs::read_to_string(report).unwrap()).unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success(), "cp -a {}", from.display());
}

#[test]
fn ownership_follows_the_tree_diversions_and_edited_conffiles() {
    let Some(minbase) = cached("bookworm-minbase") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let tree = t.join("tree");
    copy_tree(&minbase, &tree);
    // Cleaned as image builds clean: no apt caches or package lists.
    for dir in ["var/cache/apt", "var/lib/apt/lists"] {
        fs::remove_dir_all(tree.join(dir)).unwrap();
        fs::create_dir(tree.join(dir)).unwrap();
    }
    // A diversion as dpkg-divert records it: tar's /bin/tar moved aside by another
    // package. dpkg's lists keep the original path.
    fs::rename(tree.join("usr/bin/tar"), tree.join("usr/bin/tar.distrib")).unwrap();
    fs::write(
        tree.join("usr/bin/tar"),
        "#!/bin/sh\nexec tar.distrib \"$@\"\n",
    )
    .unwrap();
    let diversions = tree.join("var/lib/dpkg/diversions");
    let mut text = fs::read_to_string(&diversions).unwrap_or_default();
    text.push_str("/bin/tar\n/bin/tar.distrib\ndash\n");
    fs::write(&diversions, text).unwrap();
    let first = build(&tree, &t.join("v1"), &[], "24");
    let comps = common::planned_components(&first);

    // dpkg lists /bin/bash; merged /usr keeps it at usr/bin/bash.
    assert!(
        comps.contains_key("bash:/usr/bin/bash"),
        "{:?}",
        comps.keys()
    );
    assert!(
        !comps.keys().any(|n| n.starts_with("file:/usr/")),
        "every large file under /usr has its package"
    );
    // The diverted file stays with tar, under its new name.
    let distrib = fs::metadata(tree.join("usr/bin/tar.distrib"))
        .unwrap()
        .len();
    assert_eq!(comps["tar:/usr/bin"].1, distrib, "tar owns tar.distrib");
    // Alternatives links share one small unit, and caches or logs are volatile.
    assert!(comps.contains_key("alternatives"));
    assert!(comps.keys().any(|n| n.starts_with("volatile:/var/log")));
    // The database unit is dpkg's own state; each package's file list, checksums
    // and scripts travel with the package, so installing one leaves the rest alone.
    let info: u64 = fs::read_dir(tree.join("var/lib/dpkg/info"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        comps["package-database"].1 < info / 4,
        "package-database holds {} bytes; the control files alone are {info}",
        comps["package-database"].1
    );
    // It is the record of what is installed: dselect's stale `available` list is a
    // unit of its own, and update-alternatives' state goes with the links it records.
    let size = |p: &str| fs::metadata(tree.join(p)).unwrap().len();
    assert!(
        comps["package-database"].1 < size("var/lib/dpkg/status") + (8 << 10),
        "package-database holds {} bytes beyond dpkg's status",
        comps["package-database"].1
    );
    assert_eq!(
        comps["file:/var/lib/dpkg/available"].1,
        size("var/lib/dpkg/available")
    );
    let states: u64 = fs::read_dir(tree.join("var/lib/dpkg/alternatives"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(states > 0 && comps["alternatives"].1 >= states);

    // An administrator edits a conffile: only the package's configuration changes.
    let bashrc = tree.join("etc/bash.bashrc");
    let mut rc = fs::read_to_string(&bashrc).unwrap();
    rc.push_str("export HISTSIZE=5000\n");
    fs::write(&bashrc, rc).unwrap();
    let second = build(&tree, &t.join("v2"), &[&t.join("v1")], "24");
    let after = common::planned_components(&second);
    assert_ne!(
        after["bash:/etc"].0, comps["bash:/etc"].0,
        "the edit is a new version"
    );
    let changed: Vec<&String> = after
        .iter()
        .filter(|(n, (v, _))| comps.get(*n).is_none_or(|(old, _)| old != v))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        changed,
        ["bash:/etc"],
        "nothing but the edited unit changed"
    );
    let download = &second["diffs"][0];
    let (bytes, total) = (
        download["download_bytes"].as_u64().unwrap(),
        download["total_bytes"].as_u64().unwrap(),
    );
    assert!(bytes < total / 10, "an edit downloads little: {download}");
}

/// The old layers whose every component is in `new` at the same version.
fn unchanged_layers(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let now: HashSet<(String, String)> = common::planned_components(new)
        .into_iter()
        .map(|(n, (v, _))| (n, v))
        .collect();
    let digests = old["image"]["layer_digests"].as_array().unwrap();
    old["plan"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(digests)
        .filter(|(l, _)| {
            l["components"].as_array().unwrap().iter().all(|c| {
                now.contains(&(
                    c["name"].as_str().unwrap().to_string(),
                    c["version"].as_str().unwrap().to_string(),
                ))
            })
        })
        .map(|(_, d)| d.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_security_update_reuses_every_unchanged_layer() {
    let (Some(base), Some(updated)) = (cached("sequence/0-base"), cached("sequence/1-security"))
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let first = build(&base, &t.join("v1"), &[], "24");
    let second = build(&updated, &t.join("v2"), &[&t.join("v1")], "24");
    let kept = unchanged_layers(&first, &second);
    let new: HashSet<&str> = second["image"]["layer_digests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        kept.len() >= 12,
        "most layers hold no updated package: {kept:?}"
    );
    for digest in &kept {
        assert!(
            new.contains(digest.as_str()),
            "{digest} was rewritten: {}",
            second["plan"]["repack"]
        );
    }
    assert!(!second["plan"]["repack"]["performed"].as_bool().unwrap());

    // The same tree again reuses every layer.
    let third = build(
        &updated,
        &t.join("v3"),
        &[&t.join("v2"), &t.join("v1")],
        "24",
    );
    assert_eq!(
        third["diffs"][0]["download_bytes"], 0,
        "{}",
        third["diffs"][0]
    );
}

#[test]
fn bench_trees_prints_the_bound_and_every_baseline() {
    let (Some(base), Some(updated)) = (cached("sequence/0-base"), cached("sequence/1-security"))
    else {
        return;
    };
    let out = ok(strata(&args![
        "bench",
        "trees",
        "-n",
        "24",
        "--allow-special-files",
        "--json",
        base,
        updated,
    ]));
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = &summary["transitions"][0];
    let bound = row["file_level_bound"].as_u64().unwrap();
    let ours = row["strata"]["bytes"].as_u64().unwrap();
    let single = row["baselines"]["single"]["bytes"].as_u64().unwrap();
    assert!(bound > 0 && ours >= bound, "{row}");
    assert!(ours < single / 2, "layering beats one layer: {row}");
    for name in ["single", "top-dirs", "chunkah"] {
        assert!(
            row["baselines"][name]["layers"].as_u64().unwrap() > 0,
            "{name}"
        );
    }
}

#[test]
fn crafted_package_paths_and_diversions_stay_inside_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let secret = t.join("secret");
    fs::write(&secret, "outside\n").unwrap();
    let root = t.join("root");
    common::dpkg_tree(&root, "1");
    // A link out of the tree, a list naming paths through it and above the root, and
    // a diversion moving a file to a path above the root.
    std::os::unix::fs::symlink(t, root.join("usr/escape")).unwrap();
    fs::write(
        root.join("var/lib/dpkg/info/busy.list"),
        format!(
            "/usr/bin/busy\n/usr/escape/secret\n/../../../..{}\n",
            secret.display()
        ),
    )
    .unwrap();
    fs::write(
        root.join("var/lib/dpkg/diversions"),
        format!("/usr/bin/stable\n/../../..{}\nbusy\n", secret.display()),
    )
    .unwrap();
    let report = build(&root, &t.join("v1"), &[], "4");
    let sizes: u64 = common::planned_components(&report)
        .values()
        .map(|(_, s)| s)
        .sum();
    let inside: u64 = ["usr/bin/stable", "usr/bin/busy", "etc/os-release"]
        .iter()
        .map(|p| fs::metadata(root.join(p)).unwrap().len())
        .sum::<u64>()
        + fs::metadata(root.join("var/lib/dpkg/status"))
            .unwrap()
            .len()
        + ["busy.list", "stable.list"]
            .iter()
            .map(|f| {
                fs::metadata(root.join("var/lib/dpkg/info").join(f))
                    .unwrap()
                    .len()
            })
            .sum::<u64>()
        + fs::metadata(root.join("var/lib/dpkg/diversions"))
            .unwrap()
            .len();
    assert_eq!(sizes, inside, "only the tree's own bytes are planned");
    assert_eq!(fs::read_to_string(&secret).unwrap(), "outside\n");

    // A diversions file that is not in threes is refused, naming it.
    fs::write(root.join("var/lib/dpkg/diversions"), "/usr/bin/stable\n").unwrap();
    let out = strata(&args![
        "build",
        "--rootfs",
        root,
        "--output",
        &format!("oci:{}:v", t.join("v2").display()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("var/lib/dpkg/diversions") && err.contains("in threes"),
        "{err}"
    );
    assert!(!t.join("v2").exists());
}

/// A gzipped Debian changelog with one entry per date.
fn changelog_gz(dates: &[&str]) -> Vec<u8> {
    use std::io::Write;
    let text: String = dates
        .iter()
        .map(|d| format!("pkg (1) stable; urgency=low\n\n  * x\n\n -- A <a@example.org>  {d}\n\n"))
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap()
}

/// The cold-start basis the report gives `component`.
fn basis(report: &serde_json::Value, component: &str) -> String {
    report["plan"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["component"] == component)
        .unwrap_or_else(|| panic!("no decision for {component}"))["estimate"]["basis"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A native package's changelog (`changelog.gz`) and one behind a documentation
/// directory linked to a sibling's are read; a link out of the tree is not followed.
#[test]
fn changelogs_are_found_for_native_packages_and_through_links_inside_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let root = t.join("root");
    common::dpkg_tree(&root, "1");
    let dates = [
        "Mon, 01 Jan 2024 00:00:00 +0000",
        "Mon, 01 Apr 2024 00:00:00 +0000",
    ];
    // Outside the tree, where a crafted link points: it must never be read.
    let outside = t.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("changelog.Debian.gz"), changelog_gz(&dates)).unwrap();
    let doc = root.join("usr/share/doc");
    fs::create_dir_all(doc.join("stable")).unwrap();
    fs::write(doc.join("stable/changelog.gz"), changelog_gz(&dates)).unwrap();
    let escape = format!("../../../..{}", outside.display());
    std::os::unix::fs::symlink(&escape, doc.join("busy")).unwrap();
    let report = build(&root, &t.join("v1"), &[], "4");
    assert_eq!(basis(&report, "stable"), "changelog", "native changelog.gz");
    assert_ne!(
        basis(&report, "busy"),
        "changelog",
        "a link out of the tree"
    );

    // Linked to a sibling's directory inside the tree, as Debian allows.
    fs::remove_file(doc.join("busy")).unwrap();
    std::os::unix::fs::symlink("stable", doc.join("busy")).unwrap();
    let report = build(&root, &t.join("v2"), &[], "4");
    assert_eq!(
        basis(&report, "busy"),
        "changelog",
        "a link inside the tree"
    );
}

/// Layers whose packages were updated or purged are kept byte for byte, and the image
/// still unpacks to exactly the new tree: new versions above them, whiteouts for what
/// went in the patch layer on top. With every slot taken, the purge's changed files
/// (the package database, logs, an edited conffile) ride in the patch layer rather
/// than reopen a layer, so it downloads little more than they are; the same tree again
/// reuses every layer, the patch layer included.
#[test]
fn kept_layers_unpack_to_exactly_the_new_tree() {
    let trees: Vec<_> = [
        "0-base",
        "1-security",
        "2-added",
        "3-removed",
        "4-unchanged",
    ]
    .iter()
    .map(|n| cached(&format!("sequence/{n}")))
    .collect();
    let Some(trees) = trees.into_iter().collect::<Option<Vec<_>>>() else {
        return;
    };
    if !common::real_parts(&["umoci"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out: Vec<_> = (0..5).map(|k| tmp.path().join(format!("v{k}"))).collect();
    let mut reports = Vec::new();
    for k in 0..5 {
        let priors: Vec<&Path> = out[..k].iter().rev().map(|p| p.as_path()).collect();
        reports.push(build(&trees[k], &out[k], &priors, "24"));
    }
    let superseded = |r: &serde_json::Value| {
        r["plan"]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["superseded"].as_array().is_some_and(|s| !s.is_empty()))
            .count()
    };
    assert!(superseded(&reports[1]) > 0, "the update keeps layers");
    assert!(superseded(&reports[3]) > 0, "the purge keeps a layer");
    assert!(
        reports[3]["image"]["patch_layer_digest"].is_string(),
        "the purge needs whiteouts"
    );
    let carried = &reports[3]["plan"]["patch_members"];
    assert!(
        carried
            .as_array()
            .is_some_and(|c| c.iter().any(|m| m["name"] == "package-database")),
        "the package database rides in the patch layer: {carried}"
    );
    let purge = &reports[3]["diffs"][0];
    assert!(
        purge["download_bytes"].as_u64().unwrap() < purge["total_bytes"].as_u64().unwrap() / 200,
        "{purge}"
    );
    let again = &reports[4]["diffs"][0];
    assert_eq!(again["download_bytes"], 0, "{again}");
    assert_eq!(reports[4]["plan"]["patch_members"], *carried);
    assert_eq!(
        reports[4]["image"]["patch_layer_digest"], reports[3]["image"]["patch_layer_digest"],
        "the patch layer is rebuilt byte for byte"
    );
    for k in [1, 3, 4] {
        common::unpack::assert_unpacks_to(&out[k], "v", &trees[k]);
    }
}
