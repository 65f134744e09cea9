//! `strata build` and `strata diff` end to end on real trees: a small handmade root
//! with a dpkg database, and (when present) a debootstrapped Debian minbase. Layers are
//! unpacked with GNU tar, not with Strata's own code, and compared with the source.

mod common;
use common::*;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use strata::source::rootfs::{walk, WalkOptions};
use strata::source::{Entry, EntryKind};

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// A small root: two packages, a hardlink, a symlink, an xattr, an empty directory,
/// a large unowned file and /etc.
fn fixture(root: &Path, world_version: &str) {
    write(&root.join("usr/bin/hello"), "hello\n");
    if !root.join("usr/bin/hello2").exists() {
        fs::hard_link(root.join("usr/bin/hello"), root.join("usr/bin/hello2")).unwrap();
        symlink("hello", root.join("usr/bin/hi")).unwrap();
        fs::create_dir_all(root.join("srv/empty")).unwrap();
        fs::write(root.join("usr/share-big.bin"), vec![7u8; 1_500_000]).unwrap();
    }
    write(
        &root.join("usr/bin/wörld"),
        &format!("world {world_version}\n"),
    );
    xattr::set(root.join("usr/bin/wörld"), "user.test", b"abc").unwrap();
    write(&root.join("etc/hello.conf"), "greeting=hi\n");
    write(
        &root.join("var/lib/dpkg/status"),
        &format!(
            "Package: hello\nStatus: install ok installed\nVersion: 1.0-1\nArchitecture: amd64\nSource: hello-src\n\n\
             Package: world\nStatus: install ok installed\nVersion: {world_version}\nArchitecture: amd64\n"
        ),
    );
    write(
        &root.join("var/lib/dpkg/info/hello.list"),
        "/.\n/usr\n/usr/bin\n/usr/bin/hello\n/usr/bin/hello2\n/usr/bin/hi\n",
    );
    write(
        &root.join("var/lib/dpkg/info/world:amd64.list"),
        "/usr/bin/wörld\n",
    );
}

fn manifest(dir: &Path) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    serde_json::from_str(&fs::read_to_string(dir.join("blobs/sha256").join(&digest[7..])).unwrap())
        .unwrap()
}

fn layer_digests(dir: &Path) -> Vec<String> {
    manifest(dir)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Unpacks every layer in order with GNU tar.
fn unpack(image: &Path, into: &Path) {
    fs::create_dir_all(into).unwrap();
    for digest in layer_digests(image) {
        let blob = image.join("blobs/sha256").join(&digest[7..]);
        let status = Command::new("tar")
            .args(["-xzf"])
            .arg(&blob)
            .arg("-C")
            .arg(into)
            .args([
                "--xattrs",
                "--xattrs-include=*",
                "--same-owner",
                "--numeric-owner",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "tar failed on {digest}");
    }
}

/// Every path's type, mode, owner, xattrs, link target and content must be equal.
fn assert_same_tree(source: &Path, copy: &Path) {
    let opts = WalkOptions {
        allow_special_files: true,
    };
    let strip = |e: Entry| Entry { mtime: 0, ..e };
    let a: Vec<Entry> = walk(source, opts).unwrap().into_iter().map(strip).collect();
    let b: Vec<Entry> = walk(copy, opts).unwrap().into_iter().map(strip).collect();
    assert_eq!(a.len(), b.len(), "entry counts differ");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "entry differs");
        if x.kind == EntryKind::File {
            assert_eq!(
                fs::read(source.join(&x.path)).unwrap(),
                fs::read(copy.join(&y.path)).unwrap(),
                "{:?}",
                x.path
            );
        }
    }
}

fn oci(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

/// One layer per unit of the fixture: the large file, `/etc`, hello, world, and the
/// tree with the package database. With fewer, hello and world (alike before any
/// history) share a layer and world's update rewrites it.
const LAYERS: &str = "5";

#[test]
fn builds_round_trip_reproducibly_and_keep_unchanged_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, t) = (tmp.path().join("root"), tmp.path());
    fixture(&root, "2.0");
    let rootfs = &root;
    ok(strata(&args![
        "build",
        "--rootfs",
        rootfs,
        "--output",
        &oci(&t.join("v1"), "v1"),
        "-n",
        LAYERS,
    ]));
    ok(strata(&args![
        "build",
        "--rootfs",
        rootfs,
        "--output",
        &oci(&t.join("v1b"), "v1"),
        "-n",
        LAYERS,
    ]));
    assert_eq!(
        manifest(&t.join("v1")),
        manifest(&t.join("v1b")),
        "same input, same image"
    );
    unpack(&t.join("v1"), &t.join("unpacked"));
    assert_same_tree(&root, &t.join("unpacked"));

    fixture(&root, "2.1");
    let report = t.join("report.json");
    let out = ok(strata(&args![
        "build",
        "--rootfs",
        rootfs,
        "--output",
        &oci(&t.join("v2"), "v2"),
        "--prior",
        &oci(&t.join("v1"), "v1"),
        "-n",
        LAYERS,
        "--report",
        report,
    ]));
    assert!(out.contains("updated  world 2.0 → 2.1"), "{out}");
    let (old, new) = (layer_digests(&t.join("v1")), layer_digests(&t.join("v2")));
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    let hello_layer = report["plan"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .position(|l| {
            l["components"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["name"] == "hello")
        })
        .unwrap();
    assert!(
        old.contains(&new[hello_layer]),
        "the unchanged hello layer keeps its digest"
    );

    let diff = ok(strata(&[
        "diff",
        &oci(&t.join("v1"), "v1"),
        &oci(&t.join("v2"), "v2"),
        "--json",
    ]));
    let diff: serde_json::Value = serde_json::from_str(&diff).unwrap();
    assert!(diff["components"]["updated"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u[0] == "world" && u[1] == "2.0" && u[2] == "2.1"));
    assert_eq!(
        diff["reused"].as_array().unwrap().len() + diff["added"].as_array().unwrap().len(),
        new.len()
    );
    let reused: Vec<&str> = diff["reused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digest"].as_str().unwrap())
        .collect();
    for d in &new {
        assert_eq!(
            reused.contains(&d.as_str()),
            old.contains(d),
            "diff must report exactly the changed layers"
        );
    }
}

/// Each build records its place in the stream, so priors given oldest first are read
/// newest first (with a warning) and the build keeps the newest prior's layers.
#[test]
fn priors_given_oldest_first_are_read_newest_first() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, t) = (tmp.path().join("root"), tmp.path());
    let build = |version: &str, name: &str, priors: &[&str]| {
        fixture(&root, version);
        let output = oci(&t.join(name), name);
        let mut args = args!["build", "--rootfs", root, "--output"];
        args.extend(args![output, "-n", LAYERS]);
        let priors: Vec<String> = priors.iter().map(|p| oci(&t.join(p), p)).collect();
        priors.iter().for_each(|p| args.extend(args!["--prior", p]));
        strata(&args)
    };
    ok(build("2.0", "v1", &[]));
    ok(build("2.1", "v2", &["v1"]));
    let generation =
        |name: &str| manifest(&t.join(name))["annotations"]["strata.dev/generation"].clone();
    assert_eq!(
        (generation("v1"), generation("v2")),
        ("0".into(), "1".into())
    );

    let out = build("2.1", "v3", &["v1", "v2"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    ok(out);
    assert!(stderr.contains("priors are read newest first"), "{stderr}");
    assert_eq!(generation("v3"), "2");
    assert_eq!(
        layer_digests(&t.join("v3")),
        layer_digests(&t.join("v2")),
        "the same tree as the newest prior reuses every one of its layers"
    );
}

#[test]
fn bad_input_fails_clearly_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let root = t.join("root");
    fixture(&root, "2.0");
    let corrupt = t.join("corrupt");
    fixture(&corrupt, "2.0");
    write(
        &corrupt.join("var/lib/dpkg/status"),
        "Package: broken\nStatus: install ok installed\n",
    );
    symlink("loop", t.join("loop")).unwrap();
    let out_dir = t.join("out");
    let existing = t.join("existing");
    fs::create_dir(&existing).unwrap();
    let empty = t.join("empty-root");
    fs::create_dir(&empty).unwrap();
    let r = &root;
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--rootfs".into(), t.join("missing").display().to_string()],
            "missing: No such file".into(),
        ),
        (
            vec!["--rootfs".into(), t.join("loop").display().to_string()],
            "loop: Too many levels of symbolic links".into(),
        ),
        (
            vec![
                "--rootfs".into(),
                r.display().to_string(),
                "-n".into(),
                "1".into(),
            ],
            "--max-layers 1".into(),
        ),
        (
            vec!["--rootfs".into(), corrupt.display().to_string()],
            "var/lib/dpkg/status: record 1 has no Version field".into(),
        ),
        (
            vec!["--rootfs".into(), empty.display().to_string()],
            "the tree is empty".into(),
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["build".to_string()];
        full.extend(args.clone());
        full.extend(["--output".into(), oci(&out_dir, "x")]);
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let out = strata(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(&expected), "{args:?}: {err} lacks {expected}");
        assert!(!out_dir.exists(), "{args:?} left output behind");
        assert_eq!(
            fs::read_dir(t)
                .unwrap()
                .filter(|e| e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".out"))
                .count(),
            0
        );
    }
    let unwritable = strata(&args![
        "build",
        "--rootfs",
        r,
        "--output",
        &oci(&t.join("no/such/parent"), "x"),
    ]);
    assert!(String::from_utf8_lossy(&unwritable.stderr).contains("cannot create the output"));
    let taken = strata(&args![
        "build",
        "--rootfs",
        r,
        "--output",
        &oci(&existing, "x")
    ]);
    assert!(String::from_utf8_lossy(&taken.stderr).contains("already exists"));
    assert_eq!(
        fs::read_dir(&existing).unwrap().count(),
        0,
        "an existing directory is left untouched"
    );
}

#[test]
fn a_debootstrapped_minbase_round_trips() {
    let Some(minbase) = common::cached_tree("bookworm-minbase") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let report = t.join("report.json");
    ok(strata(&args![
        "build",
        "--rootfs",
        minbase,
        "--allow-special-files",
        "--output",
        &oci(&t.join("img"), "v1"),
        "--report",
        report,
    ]));
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    let decisions = report["plan"]["decisions"].as_array().unwrap();
    assert!(
        decisions.iter().any(|d| d["component"] == "bash"),
        "dpkg packages are components"
    );
    assert!(
        decisions
            .iter()
            .any(|d| d["estimate"]["basis"] == "changelog"),
        "changelog dates are read"
    );
    unpack(&t.join("img"), &t.join("unpacked"));
    assert_same_tree(&minbase, &t.join("unpacked"));
}

/// zstd layers are compressed on every core, yet the image is the same whatever the
/// number of cores: here one core against all of them, on layers of several of zstd's
/// multi-threaded jobs.
#[test]
fn zstd_images_do_not_depend_on_the_cores() {
    let Some(minbase) = common::cached_tree("bookworm-minbase") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let build = |taskset: &[&str], out: &Path| {
        let output = oci(out, "v1");
        let args = args![
            "build",
            "--rootfs",
            minbase,
            "--allow-special-files",
            "--compression",
            "zstd",
            "--output",
            &output,
        ];
        let run = match taskset {
            [] => strata(&args),
            cpus => Command::new("taskset")
                .args(cpus)
                .arg(env!("CARGO_BIN_EXE_strata"))
                .args(args)
                .output()
                .unwrap(),
        };
        ok(run);
        manifest(out)
    };
    let one = build(&["-c", "0"], &t.join("one"));
    let all = build(&[], &t.join("all"));
    assert_eq!(one, all, "the same image on one core and on all");
    assert!(one["layers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"));
}

#[test]
fn the_xattr_and_the_components_map_override_the_package_database() {
    let tmp = tempfile::tempdir().unwrap();
    let (t, root) = (tmp.path(), tmp.path().join("root"));
    fixture(&root, "2.0");
    xattr::set(root.join("usr/bin/hello"), "user.component", b"greeter").unwrap();
    let map = t.join("map.json");
    write(
        &map,
        r#"[{"glob": "/usr/*.bin", "component": "blobs"}, {"glob": "/usr/bin/*", "component": "bins"}]"#,
    );
    let report = t.join("report.json");
    ok(strata(&args![
        "build",
        "--rootfs",
        root,
        "--output",
        &oci(&t.join("img"), "v1"),
        "--components-map",
        map,
        "--report",
        report,
    ]));
    let report: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&report).unwrap()).unwrap();
    let names: Vec<&str> = report["plan"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["component"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"greeter"), "the xattr wins: {names:?}");
    assert!(
        names.contains(&"blobs") && names.contains(&"bins"),
        "map rules apply: {names:?}"
    );
    // world keeps only its dpkg control files: the map took its binary.
    let world: Vec<u64> = report["plan"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["components"].as_array().unwrap())
        .filter(|c| c["name"].as_str().unwrap().starts_with("world"))
        .map(|c| c["size"].as_u64().unwrap())
        .collect();
    let list = fs::metadata(root.join("var/lib/dpkg/info/world:amd64.list"))
        .unwrap()
        .len();
    assert_eq!(
        world,
        [list],
        "the map beats the package database: {names:?}"
    );

    write(&map, r#"[{"glob": "/usr/[", "component": "x"}]"#);
    let out = strata(&args![
        "build",
        "--rootfs",
        root,
        "--output",
        &oci(&t.join("bad"), "v1"),
        "--components-map",
        map,
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("[0].glob"));
    assert!(!t.join("bad").exists());
}

#[test]
fn an_unreadable_file_is_a_clear_error() {
    // Root reads any file, so the build runs as `nobody` (uid 65534) via setpriv.
    if !real_parts(&["setpriv"]) || unsafe { libc::geteuid() } != 0 {
        println!("skipped: needs root and setpriv to drop privileges");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    fs::set_permissions(t, fs::Permissions::from_mode(0o777)).unwrap();
    write(&t.join("root/usr/locked"), "secret");
    fs::set_permissions(t.join("root"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(t.join("root/usr"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(t.join("root/usr/locked"), fs::Permissions::from_mode(0o000)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_strata"),
            "build",
            "--rootfs",
        ])
        .arg(t.join("root"))
        .arg("--output")
        .arg(format!("oci:{}", t.join("out").display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("root/usr/locked: Permission denied"), "{err}");
    assert!(!t.join("out").exists());
}

/// Rootfs worker pods run as root with every capability dropped but `DAC_OVERRIDE`
/// (what the Pod Security `baseline` profile allows). That alone reads another
/// system's private files; without it the same build is refused.
#[test]
fn dac_override_alone_reads_a_tree_of_private_files() {
    if !real_parts(&["setpriv"]) || unsafe { libc::geteuid() } != 0 {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    write(&tree.join("etc/os-release"), "ID=test\n");
    write(&tree.join("etc/secret/key"), "hush\n");
    std::os::unix::fs::chown(tree.join("etc/secret"), Some(1234), Some(1234)).unwrap();
    std::os::unix::fs::chown(tree.join("etc/secret/key"), Some(1234), Some(1234)).unwrap();
    fs::set_permissions(
        tree.join("etc/secret/key"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    fs::set_permissions(tree.join("etc/secret"), fs::Permissions::from_mode(0o700)).unwrap();
    let build = |caps: &str, out: &str| {
        Command::new("setpriv")
            .arg(format!("--bounding-set=-all{caps}"))
            .arg(env!("CARGO_BIN_EXE_strata"))
            .args(["build", "--rootfs"])
            .arg(&tree)
            .arg("--output")
            .arg(format!("oci:{}:x", tmp.path().join(out).display()))
            .output()
            .unwrap()
    };
    let with = build(",+dac_override", "with");
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let without = build("", "without");
    assert!(
        !without.status.success(),
        "read private files with no capability"
    );
    assert!(
        String::from_utf8_lossy(&without.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&without.stderr)
    );
}

#[test]
fn timings_name_every_stage_and_every_layer_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fixture(&root, "1");
    let out = tmp.path().join("out");
    let target = format!("oci:{}:1", out.display());
    let r = &root;
    let built = strata(&args![
        "build",
        "--rootfs",
        r,
        "--output",
        &target,
        "--timings"
    ]);
    let stderr = String::from_utf8_lossy(&built.stderr).into_owned();
    ok(built);
    let steps: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("strata: timings"))
        .skip(1)
        .map(|l| l.trim_start().split("  ").next().unwrap())
        .collect();
    for stage in [
        "read source",
        "components",
        "read priors",
        "plan",
        "layers",
        "publish",
    ] {
        assert_eq!(steps.iter().filter(|s| **s == stage).count(), 1, "{stderr}");
    }
    let layers = manifest(&out)["layers"].as_array().unwrap().len();
    let mut timed: Vec<&str> = steps
        .iter()
        .copied()
        .filter(|s| s.starts_with("layer "))
        .collect();
    timed.sort();
    timed.dedup();
    assert_eq!(timed.len(), layers, "{stderr}");
}

/// Strata's own runtime image, built by Strata from a Debian minbase with apt (as
/// `scripts/strata-image.sh` does for the real node), unpacks into a bundle whose
/// process is the image config's (entrypoint, user, working directory, environment)
/// and whose binaries run: strata and the skopeo its image proxy needs.
#[test]
fn strata_builds_its_own_runnable_image() {
    if !common::is_root() || !common::real_parts(&["umoci", "debootstrap"]) {
        println!("skipped: needs root, umoci and debootstrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = format!("oci:{}:strata", tmp.path().join("image").display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/strata-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&image)
        .arg(env!("CARGO_BIN_EXE_strata"))
        .output()
        .unwrap();
    common::succeeded(out, "scripts/strata-image.sh");
    let bundle = tmp.path().join("bundle");
    let unpack = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:strata", tmp.path().join("image").display()))
        .arg(&bundle)
        .output()
        .unwrap();
    common::succeeded(unpack, "umoci unpack");
    let spec: serde_json::Value =
        serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let process = &spec["process"];
    assert_eq!(
        process["args"],
        serde_json::json!(["/usr/local/bin/strata", "--help"])
    );
    assert_eq!(
        (process["user"]["uid"].as_u64(), process["cwd"].as_str()),
        (Some(65532), Some("/work"))
    );
    assert!(process["env"]
        .to_string()
        .contains("PATH=/usr/local/bin:/usr/bin:/bin"));
    for argv in [
        ["/usr/local/bin/strata", "--version"],
        ["/usr/bin/skopeo", "--version"],
    ] {
        let ran = Command::new("chroot")
            .arg("--userspec=65532:65532")
            .arg(bundle.join("rootfs"))
            .args(argv)
            .output()
            .unwrap();
        let said = common::succeeded(ran, format!("{argv:?} in the image"));
        assert!(!said.trim().is_empty(), "{argv:?} printed nothing");
    }
}
