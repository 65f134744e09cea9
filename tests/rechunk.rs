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
    /// A tar hard link to this path.
    Hard(String),
    /// A character device: major, minor.
    Char(u32, u32),
    Fifo,
    /// A root-owned file with these mode bits.
    Owned(&'static str, u32),
}

/// A crafted path: `%FF` stands for the byte 0xFF, so names need not be UTF-8.
fn raw_path(path: &str) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.replace("%FF", "\u{1}").into_bytes();
    let bytes: Vec<u8> = bytes
        .into_iter()
        .map(|b| if b == 1 { 0xFF } else { b })
        .collect();
    std::ffi::OsStr::from_bytes(&bytes).into()
}

fn layer(oci: &OciDir, files: &[(&str, Node)]) -> ocidir::Layer {
    let mut builder = tar::Builder::new(oci.create_gzip_layer(None).unwrap());
    for (path, node) in files {
        let path = raw_path(path);
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(0);
        h.set_size(0);
        let (kind, text) = match node {
            Node::File(text) => (tar::EntryType::Regular, *text),
            Node::Owned(text, mode) => {
                h.set_mode(*mode);
                h.set_uid(0);
                h.set_gid(0);
                (tar::EntryType::Regular, *text)
            }
            Node::Dir => {
                h.set_mode(0o755);
                (tar::EntryType::Directory, "")
            }
            Node::Link(target) | Node::Hard(target) => {
                let kind = match node {
                    Node::Link(_) => tar::EntryType::Symlink,
                    _ => tar::EntryType::Link,
                };
                h.set_entry_type(kind);
                builder.append_link(&mut h, &path, target).unwrap();
                continue;
            }
            Node::Char(major, minor) => {
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                (tar::EntryType::Char, "")
            }
            Node::Fifo => (tar::EntryType::Fifo, ""),
        };
        h.set_entry_type(kind);
        h.set_size(text.len() as u64);
        builder.append_data(&mut h, &path, text.as_bytes()).unwrap();
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

/// One entry of a built image, read from its layer tars (Strata's layers are
/// disjoint, so the merge order does not matter).
#[derive(Debug)]
struct Built {
    kind: tar::EntryType,
    uid: u64,
    mode: u32,
    content: Vec<u8>,
    link: Option<std::path::PathBuf>,
    device: Option<(u32, u32)>,
}

fn built_entries(out: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Built> {
    use std::io::Read;
    let index: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| out.join("blobs/sha256").join(&digest[7..]);
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(digest)).unwrap()).unwrap();
    let mut all = std::collections::BTreeMap::new();
    for l in manifest["layers"].as_array().unwrap() {
        let file = fs::File::open(blob(l["digest"].as_str().unwrap())).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().into_owned();
            let h = e.header().clone();
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            let device = matches!(h.entry_type(), tar::EntryType::Char).then(|| {
                (
                    h.device_major().unwrap().unwrap(),
                    h.device_minor().unwrap().unwrap(),
                )
            });
            all.insert(
                path,
                Built {
                    kind: h.entry_type(),
                    uid: h.uid().unwrap(),
                    mode: h.mode().unwrap(),
                    content,
                    link: e.link_name().unwrap().map(|l| l.into_owned()),
                    device,
                },
            );
        }
    }
    all
}

#[test]
fn entries_through_a_planted_symlink_are_refused_and_nothing_is_written_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let outside = t.join("outside");
    fs::create_dir(&outside).unwrap();
    let src = t.join("src");
    write_image(
        &src,
        &[
            &[("x", Node::Link(outside.display().to_string()))],
            &[("x/planted", Node::File("evil"))],
        ],
    );
    let out = rechunk(&src, &t.join("out"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the crafted image was accepted");
    assert!(
        err.contains("layer entry x/planted passes through x"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing planted"
    );
    assert!(!t.join("out").exists(), "no output after a refusal");
}

#[test]
fn replacing_and_special_entries_merge_as_a_runtime_would() {
    use Node::{Dir as D, File as F};
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    write_image(
        &src,
        &[
            &[
                ("opt", D),
                ("opt/tree", D),
                ("opt/tree/deep", F("deep")),
                ("opt/dir", D),
                ("opt/dir/x", F("x")),
                ("etc", D),
                ("etc/caf%FF", F("not UTF-8")),
                ("etc/kept", F("kept")),
                ("bin", D),
                ("bin/real", F("shared bytes")),
                ("bin/alias", Node::Hard("bin/real".into())),
                ("dev", D),
                ("dev/null", Node::Char(1, 3)),
                ("run", D),
                ("run/pipe", Node::Fifo),
            ],
            &[
                // A directory replaced by a file, another by a symlink.
                ("opt/tree", F("now a file")),
                ("opt/dir", Node::Link("tree".into())),
                // A whiteout whose name is not UTF-8.
                ("etc/.wh.caf%FF", F("")),
                // The first path of an inode goes; its other path keeps the bytes.
                ("bin/.wh.real", F("")),
            ],
        ],
    );
    let refused = rechunk(&src, &t.join("refused"));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("dev/null: is a character device"),
        "devices are refused by default, as in a tree: {err}"
    );
    common::ok(common::strata(&[
        "build",
        "--allow-special-files",
        "--from-image",
        &format!("oci:{}:src", src.display()),
        "--output",
        &format!("oci:{}:v1", t.join("out").display()),
    ]));
    let built = built_entries(&t.join("out"));
    let at = |p: &str| {
        built
            .get(Path::new(p))
            .unwrap_or_else(|| panic!("{p}: {built:?}"))
    };
    assert_eq!(at("opt/tree").content, b"now a file");
    assert!(!built.contains_key(Path::new("opt/tree/deep")));
    assert_eq!(at("opt/dir").kind, tar::EntryType::Symlink);
    assert!(!built.contains_key(Path::new("opt/dir/x")));
    assert!(!built.keys().any(|p| p.starts_with("etc/caf")), "{built:?}");
    assert_eq!(at("etc/kept").content, b"kept");
    assert_eq!(at("bin/alias").content, b"shared bytes");
    assert!(!built.contains_key(Path::new("bin/real")));
    assert_eq!(at("dev/null").kind, tar::EntryType::Char);
    assert_eq!(at("dev/null").device, Some((1, 3)));
    assert_eq!(at("run/pipe").kind, tar::EntryType::Fifo);
    assert_eq!(at("opt/dir").link.as_deref(), Some(Path::new("tree")));
}

#[test]
fn a_hard_link_to_nothing_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_image(&src, &[&[("a", Node::Hard("missing".into()))]]);
    let out = rechunk(&src, &tmp.path().join("out"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("hard link a names missing"),
        "{err}"
    );
}

/// The worker runs image sources as uid 65532 with no capabilities: flattening must
/// not need to own, chown or mknod anything, and root's files keep their owner.
#[test]
fn an_unprivileged_user_rechunks_root_owned_files_and_devices() {
    if !common::is_root() || !common::have("setpriv") {
        println!("skipped: needs root to drop to uid 65532 with setpriv");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    write_image(
        &src,
        &[
            &[
                ("usr", Node::Dir),
                ("usr/bin", Node::Dir),
                ("usr/bin/su", Node::Owned("setuid root", 0o4755)),
                ("etc", Node::Dir),
                ("etc/shadow", Node::Owned("root only", 0o600)),
                ("dev", Node::Dir),
                ("dev/null", Node::Char(1, 3)),
            ],
            &[("etc/.wh.motd", Node::File(""))],
        ],
    );
    let work = t.join("work");
    fs::create_dir(&work).unwrap();
    let open = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
    };
    open(t);
    open(&work);
    let out = Command::new("setpriv")
        .args([
            "--reuid=65532",
            "--regid=65532",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_strata"))
        .args([
            "build",
            "--allow-special-files",
            "--from-image",
            &format!("oci:{}:src", src.display()),
            "--output",
            &format!("oci:{}:v1", work.join("out").display()),
        ])
        .env("TMPDIR", &work)
        .output()
        .unwrap();
    common::succeeded(out, "strata build --from-image as uid 65532");
    let built = built_entries(&work.join("out"));
    let su = &built[Path::new("usr/bin/su")];
    assert_eq!((su.uid, su.mode & 0o7777), (0, 0o4755), "{su:?}");
    assert_eq!(built[Path::new("etc/shadow")].content, b"root only");
    assert_eq!(built[Path::new("dev/null")].device, Some((1, 3)));
}

/// The crafted layers, served by a real registry and pulled with skopeo, are refused
/// the same way.
#[test]
fn a_crafted_image_pulled_from_a_registry_is_refused() {
    if !common::real_parts(&["docker-registry", "skopeo"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let registry = common::registry::start_registry(t);
    let outside = victim(&t.join("outside"));
    let src = t.join("src");
    write_image(
        &src,
        &[
            &[(
                "x",
                Node::Link(outside.parent().unwrap().display().to_string()),
            )],
            &[
                ("x/victim/.wh.secret.txt", Node::File("")),
                ("x/planted", Node::File("evil")),
            ],
        ],
    );
    let remote = format!("docker://127.0.0.1:{}/crafted/os:1", registry.port);
    let copied = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:src", src.display()))
        .arg(&remote)
        .output()
        .unwrap();
    common::succeeded(copied, "skopeo copy of the crafted image");
    let out = common::strata(&[
        "build",
        "--from-image",
        &remote,
        "--tls-verify=false",
        "--output",
        &format!("oci:{}:v1", t.join("out").display()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the crafted image was accepted");
    assert!(err.contains("passes through x"), "{err}");
    assert_eq!(
        fs::read_to_string(outside.join("secret.txt")).unwrap(),
        "secret"
    );
    assert!(!outside.parent().unwrap().join("planted").exists());
    assert!(!t.join("out").exists());
}

/// The config blob of the image tagged `tag` in the OCI layout `dir`.
fn config_blob(dir: &Path, tag: &str) -> std::path::PathBuf {
    let read = |path: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    };
    let blob = |d: &serde_json::Value| dir.join("blobs/sha256").join(&d.as_str().unwrap()[7..]);
    let index = read(dir.join("index.json"));
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap();
    blob(&read(blob(&manifest["digest"]))["config"]["digest"])
}

/// The runtime config of the image tagged `tag` in the OCI layout `dir`.
fn image_config(dir: &Path, tag: &str) -> serde_json::Value {
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(config_blob(dir, tag)).unwrap()).unwrap();
    config["config"].clone()
}

/// `strata build` writes the runtime config a user asks for, and a rechunk keeps its
/// source's (user, environment, entrypoint, labels), each flag replacing one field.
#[test]
fn runtime_config_is_set_by_flags_and_kept_by_a_rechunk() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let tree = t.join("tree");
    common::dpkg_tree(&tree, "1");
    let file = t.join("runtime.json");
    fs::write(
        &file,
        r#"{"User": "0", "Env": ["PATH=/usr/bin", "LANG=C"], "StopSignal": "SIGTERM"}"#,
    )
    .unwrap();
    let built = format!("oci:{}:v1", t.join("built").display());
    common::ok(common::strata(&args![
        "build",
        "--rootfs",
        tree,
        "--output",
        &built,
        "--config",
        file,
        "--user",
        "65532:65532",
        "--env",
        "LANG=C.UTF-8",
        "--entrypoint",
        r#"["/usr/bin/strata"]"#,
        "--cmd",
        r#"["controller"]"#,
        "--workdir",
        "/work",
        "--label",
        "org.opencontainers.image.version=1.0",
    ]));
    let config = image_config(&t.join("built"), "v1");
    assert_eq!(
        config["User"], "65532:65532",
        "a flag replaces the file's field"
    );
    assert_eq!(
        config["Env"],
        serde_json::json!(["PATH=/usr/bin", "LANG=C.UTF-8"])
    );
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/bin/strata"]));
    assert_eq!(config["Cmd"], serde_json::json!(["controller"]));
    assert_eq!(
        (config["WorkingDir"].as_str(), config["StopSignal"].as_str()),
        (Some("/work"), Some("SIGTERM"))
    );

    let rechunked = format!("oci:{}:r1", t.join("rechunked").display());
    common::ok(common::strata(&[
        "build",
        "--from-image",
        &built,
        "--output",
        &rechunked,
        "--user",
        "1000",
    ]));
    let kept = image_config(&t.join("rechunked"), "r1");
    assert_eq!(kept["User"], "1000");
    for field in ["Env", "Entrypoint", "Cmd", "WorkingDir", "StopSignal"] {
        assert_eq!(
            kept[field], config[field],
            "{field} is kept from the source"
        );
    }
    assert_eq!(kept["Labels"]["org.opencontainers.image.version"], "1.0");

    for (flag, value, says) in [
        ("--entrypoint", "/usr/bin/strata", "not a JSON array"),
        ("--env", "=x", "not KEY=VALUE"),
        ("--workdir", "work", "not an absolute path"),
        (
            "--config",
            "/nonexistent/runtime.json",
            "/nonexistent/runtime.json",
        ),
    ] {
        let out = common::strata(&args![
            "build",
            "--rootfs",
            tree,
            "--output",
            &format!("oci:{}:x", t.join("refused").display()),
            flag,
            value,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{flag} {value}: {err}"
        );
    }
    assert!(
        !t.join("refused").join("index.json").exists(),
        "nothing written"
    );
}

/// A source image whose config blob is not what its manifest says (swapped, or too
/// large to be a config) is refused before anything is written.
#[test]
fn a_source_config_that_does_not_match_its_descriptor_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let tree = t.join("tree");
    common::dpkg_tree(&tree, "1");
    let built = t.join("built");
    common::ok(common::strata(&args![
        "build",
        "--rootfs",
        tree,
        "--output",
        &format!("oci:{}:v1", built.display()),
        "--user",
        "1000",
    ]));
    let config = config_blob(&built, "v1");
    for (k, forged) in [
        br#"{"config": {"User": "0"}}"#.to_vec(),
        vec![b' '; 2 << 20],
    ]
    .into_iter()
    .enumerate()
    {
        fs::write(&config, forged).unwrap();
        let out = t.join(format!("out{k}"));
        let result = common::strata(&[
            "build",
            "--from-image",
            &format!("oci:{}:v1", built.display()),
            "--output",
            &format!("oci:{}:r", out.display()),
        ]);
        let err = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "a forged config was taken");
        assert!(err.contains("config"), "{err}");
        assert!(!out.join("index.json").exists(), "nothing written");
    }
}

/// A layer blob cut short mid-stream (its decompressor runs on a thread of its own)
/// fails the rechunk with an error naming the blob, and leaves no image behind.
#[test]
fn a_layer_cut_short_fails_the_rechunk_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    fs::create_dir_all(tree.join("usr/lib")).unwrap();
    // Incompressible, so the blob spans many of the reader's chunks.
    fs::write(tree.join("usr/lib/big.bin"), common::noise(6 << 20, 1)).unwrap();
    let src = tmp.path().join("src");
    common::ok(common::strata(&[
        "build",
        "--rootfs",
        tree.to_str().unwrap(),
        "--compression",
        "zstd",
        "--output",
        &format!("oci:{}:src", src.display()),
    ]));
    let blobs = src.join("blobs/sha256");
    let largest = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let len = fs::metadata(&largest).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&largest)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = tmp.path().join("out");
    let result = rechunk(&src, &out);
    let err = String::from_utf8_lossy(&result.stderr);
    let name = largest.file_name().unwrap().to_str().unwrap();
    assert!(!result.status.success() && err.contains(name), "{err}");
    assert!(!out.exists(), "no image is left behind");
}
