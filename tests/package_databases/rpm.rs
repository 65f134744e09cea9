//! `strata build` on a root with a real RPM database: packages built with rpmbuild and
//! installed with `rpm --root` (sqlite backend), then upgraded.

use crate::args;
use crate::common::*;

use std::fs;
use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds `name-version-1.noarch.rpm` (source package `source`) installing `files`.
fn rpm_package(
    top: &Path,
    name: &str,
    version: &str,
    source: &str,
    files: &[(&str, &str)],
) -> std::path::PathBuf {
    let install: String = files
        .iter()
        .map(|(path, text)| format!("mkdir -p %{{buildroot}}$(dirname {path})\nprintf '%s\\n' '{text}' > %{{buildroot}}{path}\n"))
        .collect();
    let list: String = files.iter().map(|(p, _)| format!("{p}\n")).collect();
    let spec = format!(
        "Name: {name}\nVersion: {version}\nRelease: 1\nSummary: fixture\nLicense: MIT\nBuildArch: noarch\n\
         %description\nfixture ({source})\n%install\n{install}%files\n{list}\
         %changelog\n* Mon Jan 01 2024 Strata <strata@example.org> - {version}-1\n- fixture\n\
         * Sun Jan 01 2023 Strata <strata@example.org> - 0.1-1\n- first\n"
    );
    let spec_path = top.join(format!("{name}-{version}.spec"));
    fs::write(&spec_path, spec).unwrap();
    run(Command::new("rpmbuild")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .arg("-bb")
        .arg(&spec_path));
    top.join(format!("RPMS/noarch/{name}-{version}-1.noarch.rpm"))
}

fn rpm_install(root: &Path, mode: &str, rpms: &[&Path]) {
    run(Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args([
            "--dbpath",
            "/usr/lib/sysimage/rpm",
            mode,
            "--nodeps",
            "--nosignature",
        ])
        .args(rpms));
}

/// A scratch directory with an rpmbuild tree and the `hello` package built in it.
struct Fixture {
    tmp: tempfile::TempDir,
    top: std::path::PathBuf,
    root: std::path::PathBuf,
    hello: std::path::PathBuf,
}

/// `None` (the test is skipped) when rpm and rpmbuild are not installed.
fn fixture() -> Option<Fixture> {
    if !real_parts(&["rpmbuild", "rpm"]) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (top, root) = (tmp.path().join("rpmbuild"), tmp.path().join("root"));
    fs::create_dir_all(&top).unwrap();
    let hello = rpm_package(
        &top,
        "hello",
        "1.0",
        "hello",
        &[("/usr/bin/hello", "hello")],
    );
    Some(Fixture {
        tmp,
        top,
        root,
        hello,
    })
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn an_rpm_root_builds_and_an_upgrade_keeps_unchanged_layers() {
    let Some(fx) = fixture() else { return };
    let (t, root, top, hello) = (
        fx.tmp.path(),
        fx.root.clone(),
        fx.top.clone(),
        fx.hello.clone(),
    );
    let world = rpm_package(
        &top,
        "world",
        "2.0",
        "world",
        &[
            ("/usr/bin/world", "world 2.0"),
            ("/usr/share/world/data", "d"),
        ],
    );
    rpm_install(&root, "-i", &[&hello, &world]);

    let oci = |name: &str| format!("oci:{}:{name}", t.join(name).display());
    let r1 = t.join("r1.json");
    let out = strata(&args![
        "build",
        "--rootfs",
        root,
        "--output",
        &oci("v1"),
        "-n",
        "4",
        "--report",
        r1,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = &report(&r1)["plan"];
    let find = |name: &str| {
        plan["layers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l["components"].as_array().unwrap())
            .find(|c| c["name"] == name)
            .cloned()
    };
    assert_eq!(find("world").unwrap()["version"], "2.0-1");
    assert_eq!(find("hello").unwrap()["source"], "hello");
    let hello_decision = plan["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["component"] == "hello")
        .unwrap();
    assert_eq!(
        hello_decision["estimate"]["basis"], "changelog",
        "RPMTAG_CHANGELOGTIME is read"
    );

    let world2 = rpm_package(
        &top,
        "world",
        "2.1",
        "world",
        &[
            ("/usr/bin/world", "world 2.1"),
            ("/usr/share/world/data", "d"),
        ],
    );
    rpm_install(&root, "-U", &[&world2]);
    let out = strata(&args![
        "build",
        "--rootfs",
        root,
        "--output",
        &oci("v2"),
        "--prior",
        &oci("v1"),
        "-n",
        "4",
    ]);
    crate::assert_update_reuses(&ok(out), "world 2.0-1 → 2.1-1");
}

#[test]
fn a_corrupt_rpmdb_blob_is_a_clear_error() {
    let Some(fx) = fixture() else { return };
    let (t, root) = (fx.tmp.path(), fx.root.clone());
    rpm_install(&root, "-i", &[&fx.hello]);
    let db = root.join("usr/lib/sysimage/rpm/rpmdb.sqlite");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE Packages SET blob = x'0000000100000010'", [])
        .unwrap();
    drop(conn);
    let out_dir = t.join("out");
    let out = strata(&args![
        "build",
        "--rootfs",
        root,
        "--output",
        &format!("oci:{}", out_dir.display()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("rpmdb.sqlite: package record"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out_dir.exists());
}

/// The RPM root committed with the ostree CLI: packages are read from the rpmdb inside
/// the commit, and ostree-ext's importer gets the exact commit back.
#[test]
fn an_rpm_root_commit_imports_as_the_exact_commit() {
    let Some(fx) = fixture() else { return };
    if !real_parts(&["ostree", "skopeo"]) {
        return;
    }
    let Some(bin) = ostree_client::importer() else {
        return;
    };
    rpm_install(&fx.root, "-i", &[&fx.hello]);
    let t = fx.tmp.path();
    let source = t.join("source");
    ostree_client::init_archive(&source);
    let rev = ostree_client::commit(&source, &fx.root, "rpm/os");
    let image = t.join("image");
    let report = t.join("report.json");
    ostree_client::build_from_ostree(&source, &rev, &image, &args!["-n", "4", "--report", report]);
    let names = report_components(&report);
    assert!(
        names.iter().any(|n| n == "hello"),
        "the rpmdb inside the commit: {names:?}"
    );
    let client = t.join("client");
    let imported = ostree_client::import(&bin, &client, &image);
    assert_eq!(imported["commit"], rev.as_str());
    assert_eq!(
        ostree_client::ls(&client, &rev),
        ostree_client::ls(&source, &rev)
    );
}

fn report_components(path: &Path) -> Vec<String> {
    report(path)["plan"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["components"].as_array().unwrap().clone())
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}
