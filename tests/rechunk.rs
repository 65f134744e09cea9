//! `strata build --from-image`: an image with whiteouts (written here as a plain
//! two-layer OCI image) is flattened and laid out afresh, and crafted layers cannot
//! reach outside the flattening directory.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use ocidir::cap_std::fs::Dir;
use ocidir::oci_spec::image::{Os, PlatformBuilder};
use ocidir::OciDir;

/// One entry of a crafted layer.
enum Node {
    File(&'static str),
    Dir,
    Link(String),
}

fn layer(oci: &OciDir, files: &[(&str, Node)]) -> ocidir::Layer {
    let mut builder = tar::Builder::new(oci.create_gzip_layer(None).unwrap());
    for (path, node) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        match node {
            Node::File(text) => {
                h.set_size(text.len() as u64);
                builder.append_data(&mut h, path, text.as_bytes()).unwrap();
            }
            Node::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                builder.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            Node::Link(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                builder.append_link(&mut h, path, target).unwrap();
            }
        }
    }
    builder.into_inner().unwrap().complete().unwrap()
}

/// Writes an OCI layout at `dir`, tag `src`, with `layers` from the bottom up.
fn write_image(dir: &Path, layers: &[&[(&str, Node)]]) {
    fs::create_dir_all(dir).unwrap();
    let oci =
        OciDir::ensure(Dir::open_ambient_dir(dir, ocidir::cap_std::ambient_authority()).unwrap())
            .unwrap();
    let mut manifest = oci.new_empty_manifest().unwrap().build().unwrap();
    let mut config = ocidir::oci_spec::image::ImageConfigurationBuilder::default()
        .build()
        .unwrap();
    for files in layers {
        let l = layer(&oci, files);
        oci.push_layer(
            &mut manifest,
            &mut config,
            l,
            "fixture",
            None::<HashMap<String, String>>,
        );
    }
    let platform = PlatformBuilder::default()
        .architecture(ocidir::oci_spec::image::Arch::Amd64)
        .os(Os::Linux)
        .build()
        .unwrap();
    oci.insert_manifest_and_config(manifest, config, Some("src"), platform)
        .unwrap();
}

fn write_source_image(dir: &Path) {
    use Node::{Dir as D, File as F};
    write_image(
        dir,
        &[
            &[
                ("etc", D),
                ("etc/a", F("a")),
                ("etc/keep", F("keep")),
                ("opt", D),
                ("opt/x", F("x")),
                ("usr", D),
                ("usr/bin", D),
                ("usr/bin/tool", F("v1")),
            ],
            &[
                ("etc/.wh.a", F("")),
                ("opt/.wh..wh..opq", F("")),
                ("opt/y", F("y")),
                ("usr/bin/tool", F("v2")),
            ],
        ],
    );
}

/// A victim directory outside the image: a file to whiteout and a directory to empty.
fn victim(root: &Path) -> std::path::PathBuf {
    let v = root.join("victim");
    fs::create_dir_all(v.join("dir")).unwrap();
    fs::write(v.join("secret.txt"), "secret").unwrap();
    fs::write(v.join("dir/keep.txt"), "keep").unwrap();
    v
}

fn rechunk(src: &Path, out: &Path) -> std::process::Output {
    common::strata(&[
        "build",
        "--from-image",
        &format!("oci:{}:src", src.display()),
        "--output",
        &format!("oci:{}:v1", out.display()),
    ])
}

#[test]
fn whiteouts_through_a_planted_symlink_touch_nothing_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let outside = victim(&t.join("outside"));
    // Absolute, and relative climbing out of the flattening directory.
    let targets = [
        outside.parent().unwrap().display().to_string(),
        "../../../../../../../..".to_string() + &outside.parent().unwrap().display().to_string(),
    ];
    for (k, target) in targets.into_iter().enumerate() {
        let src = t.join(format!("src{k}"));
        write_image(
            &src,
            &[
                &[("x", Node::Link(target))],
                &[
                    ("x/victim/.wh.secret.txt", Node::File("")),
                    ("x/victim/dir/.wh..wh..opq", Node::File("")),
                ],
            ],
        );
        let out = rechunk(&src, &t.join(format!("out{k}")));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the crafted image was accepted");
        assert!(
            err.contains("x/victim/") && err.contains("passes through x"),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(outside.join("secret.txt")).unwrap(),
            "secret"
        );
        assert_eq!(
            fs::read_to_string(outside.join("dir/keep.txt")).unwrap(),
            "keep"
        );
        assert!(
            !t.join(format!("out{k}")).exists(),
            "no output after a refusal"
        );
    }
}

#[test]
fn whiteouts_naming_no_file_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    for (k, name) in ["etc/.wh.", "etc/.wh..", "etc/.wh..."]
        .into_iter()
        .enumerate()
    {
        let src = t.join(format!("src{k}"));
        write_image(
            &src,
            &[
                &[("etc", Node::Dir), ("etc/keep", Node::File("keep"))],
                &[(name, Node::File(""))],
            ],
        );
        let out = rechunk(&src, &t.join(format!("out{k}")));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(err.contains("names no file"), "{name}: {err}");
    }
}

#[test]
fn an_image_with_whiteouts_is_flattened_and_rechunked() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    write_source_image(&t.join("src"));
    common::ok(common::strata(&[
        "build",
        "--from-image",
        &format!("oci:{}:src", t.join("src").display()),
        "--output",
        &format!("oci:{}:v1", t.join("out").display()),
    ]));

    let index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(t.join("out/index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(t.join("out/blobs/sha256").join(&digest[7..])).unwrap(),
    )
    .unwrap();
    assert!(manifest["annotations"]["strata.dev/source"]
        .as_str()
        .unwrap()
        .starts_with("image:oci:"));
    let unpacked = t.join("unpacked");
    fs::create_dir(&unpacked).unwrap();
    for l in manifest["layers"].as_array().unwrap() {
        let blob = t
            .join("out/blobs/sha256")
            .join(&l["digest"].as_str().unwrap()[7..]);
        assert!(Command::new("tar")
            .arg("-xzf")
            .arg(&blob)
            .arg("-C")
            .arg(&unpacked)
            .status()
            .unwrap()
            .success());
    }
    assert_eq!(
        fs::read_to_string(unpacked.join("usr/bin/tool")).unwrap(),
        "v2",
        "upper layers win"
    );
    assert_eq!(
        fs::read_to_string(unpacked.join("etc/keep")).unwrap(),
        "keep"
    );
    assert_eq!(fs::read_to_string(unpacked.join("opt/y")).unwrap(), "y");
    assert!(
        !unpacked.join("etc/a").exists(),
        "a whiteout removes the file"
    );
    assert!(
        !unpacked.join("opt/x").exists(),
        "an opaque directory hides what was below"
    );
    assert!(
        !unpacked.join("etc/.wh.a").exists(),
        "whiteout markers are not copied"
    );
}
