//! `strata build --ostree-repo --format plain`: a real ostree repository made with
//! the ostree CLI, read from its objects. The image must carry exactly what the commit holds: the
//! same layers, byte for byte, as the committed tree encapsulated from disk with
//! mtimes at 0 (ostree keeps no mtimes), and the package database is read from
//! inside the commit.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::ostree_client::{build_from_ostree, strata_from_ostree};
use common::{edge_tree, ok, ostree, real_parts};

fn layer_digests(oci: &Path) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(oci.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(oci.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap(),
    )
    .unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_ostree_commit_encapsulates_exactly_like_its_tree() {
    if !real_parts(&["ostree"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tree, repo) = (tmp.path().join("tree"), tmp.path().join("repo"));
    edge_tree(&tree, "1");
    ostree(&args!["init", "--repo", repo, "--mode", "archive"]);
    ostree(&args![
        "commit",
        "--repo",
        repo,
        "--branch",
        "os/test",
        "--subject",
        "one",
        "--timestamp",
        "2026-11-01T00:00:00Z",
        "--tree",
        &format!("dir={}", tree.display()),
    ]);
    let from_ostree = tmp.path().join("from-ostree");
    let report_path = tmp.path().join("report.json");
    let plain = ["-n", "4", "--format", "plain"];
    let mut extra: Vec<std::ffi::OsString> = plain.map(Into::into).to_vec();
    extra.extend(args!["--report", report_path]);
    build_from_ostree(&repo, "os/test", &from_ostree, &extra);
    let from_tree = tmp.path().join("from-tree");
    ok(Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args!["build", "--rootfs", tree, "-n", "4"])
        .args(["--output", &format!("oci:{}:1", from_tree.display())])
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .unwrap());
    assert_eq!(layer_digests(&from_ostree), layer_digests(&from_tree));

    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(&report_path).unwrap()).unwrap();
    let names: Vec<&str> = report["plan"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["components"].as_array().unwrap())
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"busy") && names.contains(&"stable"),
        "dpkg read from the commit: {names:?}"
    );
    assert_eq!(
        report["plan"]["date"], "2026-11-01T00:00:00Z",
        "the commit's timestamp"
    );

    // The same commit by checksum gives the same image.
    let rev = ostree(&args!["rev-parse", "--repo", repo, "os/test"]);
    let again = tmp.path().join("again");
    build_from_ostree(&repo, rev.trim(), &again, &plain);
    assert_eq!(layer_digests(&again), layer_digests(&from_ostree));
}

#[test]
fn a_missing_repository_or_ref_is_a_clear_error_with_nothing_written() {
    if !real_parts(&["ostree"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let out_dir = tmp.path().join("out");
    let output = format!("oci:{}", out_dir.display());
    let build = |repo: &Path, rev: &str| strata_from_ostree::<&str>(repo, rev, &output, &[]);
    let out = build(&repo, "os/test");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an ostree repository"));
    ostree(&args!["init", "--repo", repo, "--mode", "archive",]);
    let out = build(&repo, "os/nope");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("has no ref or commit \"os/nope\""),
        "{stderr}"
    );
    assert!(!out_dir.exists(), "nothing at the destination");
}

#[test]
fn bench_trees_measures_a_stream_of_ostree_commits() {
    if !real_parts(&["ostree"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    common::ostree_client::init_archive(&repo);
    let (tree, next) = (tmp.path().join("v1"), tmp.path().join("v2"));
    edge_tree(&tree, "1");
    edge_tree(&next, "2");
    let first = common::ostree_client::commit(&repo, &tree, "os/stable");
    let second = common::ostree_client::commit(&repo, &next, "os/stable");
    let arg = |rev: &str| format!("ostree:{}:{rev}", repo.display());
    let out = ok(common::strata(&[
        "bench",
        "trees",
        "--json",
        "-n",
        "6",
        &arg(&first),
        &arg(&second),
    ]));
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = &summary["transitions"][0];
    assert_eq!(row["to"], arg(&second).as_str());
    let bound = row["file_level_bound"].as_u64().unwrap();
    assert!(bound > 0, "busy changed: {row}");
    assert!(row["strata"]["bytes"].as_u64().unwrap() >= bound, "{row}");
    assert!(
        row["strata"]["reused_layers"].as_u64().unwrap() > 0,
        "the firmware blob's layer is reused: {row}"
    );

    // A malformed commit argument and a directory that is no repository are refused
    // by name.
    let bad = common::strata(&["bench", "trees", "ostree:nowhere", &arg(&first)]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("ostree:REPO:REV"),
        "{err}"
    );
    let not_repo = format!("ostree:{}:os/stable", tree.display());
    let bad = common::strata(&["bench", "trees", &not_repo, &arg(&first)]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("is not an ostree repository"),
        "{err}"
    );
}

/// A GPG home with one fresh signing key; the key's id and its exported public key.
fn gpg_key(home: &Path, name: &str) -> (String, std::path::PathBuf) {
    fs::create_dir_all(home).unwrap();
    let gpg = |args: &[&str]| {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap();
        common::succeeded(out, format!("gpg {args:?}"))
    };
    gpg(&[
        "--quick-gen-key",
        &format!("{name} <{name}@example.com>"),
        "ed25519",
        "sign",
        "never",
    ]);
    let listed = gpg(&["--list-keys", "--with-colons"]);
    let id = listed
        .lines()
        .find_map(|l| l.strip_prefix("fpr:::::::::"))
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    let public = home.join("public.gpg");
    fs::write(&public, gpg(&["--export", "--armor", &id])).unwrap();
    (id, public)
}

/// A commit pulled over HTTP with libostree is the commit served; with GPG keys, only
/// a commit signed by one of them is taken. Missing refs, unreachable servers and
/// `file://` URLs are named errors.
#[test]
fn a_commit_is_pulled_over_http_and_its_signature_checked() {
    use strata::source::ostree::pull::{pull, pull_once, Remote};
    if !real_parts(&["ostree", "gpg"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tree, served) = (tmp.path().join("tree"), tmp.path().join("served"));
    common::dpkg_tree(&tree, "1");
    let repo = format!("--repo={}", served.display());
    ostree(&["init", &repo, "--mode=archive"]);
    let tree_arg = format!("--tree=dir={}", tree.display());
    let signed = ostree(&["commit", &repo, "--branch=os/signed", "-s", "s", &tree_arg]);
    ostree(&[
        "commit",
        &repo,
        "--branch=os/unsigned",
        "-s",
        "u",
        &tree_arg,
    ]);
    let (key, public) = gpg_key(&tmp.path().join("gpg"), "signer");
    let homedir = format!("--gpg-homedir={}", tmp.path().join("gpg").display());
    ostree(&["gpg-sign", &repo, &homedir, signed.trim(), &key]);
    let (_, stranger) = gpg_key(&tmp.path().join("gpg-other"), "stranger");
    let url = format!("http://127.0.0.1:{}", common::http::serve(&served));

    let remote = |rev, gpg_keys| Remote {
        url: &url,
        rev,
        gpg_keys,
        commit_only: false,
    };
    let plain = tmp.path().join("plain");
    let got = pull(&remote("os/unsigned", None), &plain).unwrap();
    assert_eq!(got, ostree(&["rev-parse", &repo, "os/unsigned"]).trim());
    // The pulled repository reads like any other: the same commit, the same tree.
    let commit = strata::source::ostree::read(&plain, &got).unwrap();
    assert!(commit
        .entries
        .iter()
        .any(|e| e.path.ends_with("var/lib/dpkg/status")));
    assert_eq!(
        pull_once(&remote("os/unsigned", None), &plain).unwrap(),
        got
    );

    let verified = tmp.path().join("verified");
    let got = pull(&remote("os/signed", Some(public.as_path())), &verified).unwrap();
    assert_eq!(got, signed.trim());
    for (rev, keys, says) in [
        ("os/unsigned", public.as_path(), "signature"),
        ("os/signed", stranger.as_path(), "signature"),
    ] {
        let dest = tmp
            .path()
            .join(format!("refused-{}", keys.display().to_string().len()));
        let err = pull(&remote(rev, Some(keys)), &dest)
            .unwrap_err()
            .to_string();
        assert!(err.to_lowercase().contains(says), "{rev}: {err}");
    }
    let err = pull(&remote("os/none", None), &tmp.path().join("none"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("os/none") && err.contains(&url), "{err}");
    let closed = Remote {
        url: "http://127.0.0.1:9/repo",
        rev: "os/signed",
        gpg_keys: None,
        commit_only: false,
    };
    let err = pull(&closed, &tmp.path().join("closed"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot pull"), "{err}");
    let local = Remote {
        url: "file:///etc",
        rev: "os/signed",
        gpg_keys: None,
        commit_only: false,
    };
    let err = pull(&local, &tmp.path().join("local"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an http"), "{err}");
}

/// Versions of an ostree commit's components come from its object checksums, not a
/// second pass over the bytes: they must still change exactly when content does.
#[test]
fn component_versions_follow_the_commits_objects() {
    if !real_parts(&["ostree"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (tree, repo) = (tmp.path().join("tree"), tmp.path().join("repo"));
    common::dpkg_tree(&tree, "1");
    for (path, text) in [("srv/a/one", "one\n"), ("srv/b/two", "two\n")] {
        fs::create_dir_all(tree.join(path).parent().unwrap()).unwrap();
        fs::write(tree.join(path), text).unwrap();
    }
    common::ostree_client::init_archive(&repo);
    let build = |rev: &str, name: &str| {
        let report = tmp.path().join(format!("{name}.json"));
        let extra = args!["-n", "8", "--report", report];
        build_from_ostree(&repo, rev, &tmp.path().join(name), &extra);
        let report = serde_json::from_slice(&fs::read(&report).unwrap()).unwrap();
        common::planned_components(&report)
    };
    let first = build(&common::ostree_client::commit(&repo, &tree, "os"), "first");
    fs::write(tree.join("srv/a/one"), "one, edited\n").unwrap();
    let edited = build(&common::ostree_client::commit(&repo, &tree, "os"), "edited");
    let changed: Vec<&String> = first
        .keys()
        .filter(|name| first.get(*name) != edited.get(*name))
        .collect();
    assert_eq!(changed.len(), 1, "one unit changed: {changed:?}");
    assert!(changed[0].contains("srv"), "{changed:?}");
    // The same objects under a new commit: the same versions.
    let again = build(&common::ostree_client::commit(&repo, &tree, "os"), "again");
    assert_eq!(again, edited);
}
