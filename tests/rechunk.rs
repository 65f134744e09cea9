//! `strata build --from-image`: an image with whiteouts (written here as a plain
//! two-layer OCI image) is flattened and laid out afresh.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use ocidir::cap_std::fs::Dir;
use ocidir::oci_spec::image::{Os, PlatformBuilder};
use ocidir::OciDir;

fn layer(oci: &OciDir, files: &[(&str, Option<&str>)]) -> ocidir::Layer {
    let mut builder = tar::Builder::new(oci.create_gzip_layer(None).unwrap());
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match content {
            Some(text) => {
                h.set_size(text.len() as u64);
                builder.append_data(&mut h, path, text.as_bytes()).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                builder.append_data(&mut h, path, std::io::empty()).unwrap();
            }
        }
    }
    builder.into_inner().unwrap().complete().unwrap()
}

fn write_source_image(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let oci =
        OciDir::ensure(Dir::open_ambient_dir(dir, ocidir::cap_std::ambient_authority()).unwrap())
            .unwrap();
    let mut manifest = oci.new_empty_manifest().unwrap().build().unwrap();
    let mut config = ocidir::oci_spec::image::ImageConfigurationBuilder::default()
        .build()
        .unwrap();
    let lower = layer(
        &oci,
        &[
            ("etc", None),
            ("etc/a", Some("a")),
            ("etc/keep", Some("keep")),
            ("opt", None),
            ("opt/x", Some("x")),
            ("usr", None),
            ("usr/bin", None),
            ("usr/bin/tool", Some("v1")),
        ],
    );
    let upper = layer(
        &oci,
        &[
            ("etc/.wh.a", Some("")),
            ("opt/.wh..wh..opq", Some("")),
            ("opt/y", Some("y")),
            ("usr/bin/tool", Some("v2")),
        ],
    );
    for l in [lower, upper] {
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
