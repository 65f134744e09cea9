//! `strata build` on a root with a real pacman database: packages installed (and
//! upgraded) with Debian's pacman into a root of their own, then crafted records.

use crate::args;
use crate::common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch root and the pacman configuration that installs into it.
struct Fixture {
    tmp: tempfile::TempDir,
    root: PathBuf,
}

/// `None` (the test is skipped) when pacman is not installed.
fn fixture() -> Option<Fixture> {
    if !real_parts(&["pacman"]) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(root.join("var/lib/pacman")).unwrap();
    let conf = "[options]\nArchitecture = auto\nSigLevel = Never\nLocalFileSigLevel = Never\n";
    fs::write(tmp.path().join("pacman.conf"), conf).unwrap();
    Some(Fixture { tmp, root })
}

impl Fixture {
    /// Builds `name-version` (source package `base`, built at `built`) holding
    /// `files`, as makepkg lays a package out, and installs it with `pacman -U`.
    fn install(&self, name: &str, version: &str, base: &str, built: u64, files: &[(&str, &str)]) {
        let t = self.tmp.path();
        let pkg = t.join(format!("pkg-{name}-{version}"));
        for (path, text) in files {
            let path = pkg.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        let info = format!(
            "pkgname = {name}\npkgbase = {base}\npkgver = {version}\npkgdesc = fixture\n\
             builddate = {built}\npackager = Strata tests\nsize = 1\narch = x86_64\n"
        );
        fs::write(pkg.join(".PKGINFO"), info).unwrap();
        let archive = t.join(format!("{name}-{version}-x86_64.pkg.tar.gz"));
        let tops: Vec<&str> = files
            .iter()
            .map(|(p, _)| p.split('/').next().unwrap())
            .collect();
        run(Command::new("tar")
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(&pkg)
            .arg(".PKGINFO")
            .args(tops));
        run(Command::new("pacman")
            .args(["-U", "--noconfirm", "--noscriptlet", "--nodeps"])
            .arg("--root")
            .arg(&self.root)
            .arg("--dbpath")
            .arg(self.root.join("var/lib/pacman"))
            .arg("--config")
            .arg(t.join("pacman.conf"))
            .arg("--cachedir")
            .arg(t.join("cache"))
            .arg("--logfile")
            .arg(t.join("pacman.log"))
            .arg("--gpgdir")
            .arg(t.join("gnupg"))
            .arg(&archive));
    }

    fn oci(&self, name: &str) -> String {
        format!("oci:{}:{name}", self.tmp.path().join(name).display())
    }

    fn build(&self, output: &str, prior: Option<&str>, report: &Path) -> std::process::Output {
        let mut args = args![
            "build", "--rootfs", self.root, "--output", output, "-n", "4", "--report", report,
        ];
        args.extend(prior.iter().flat_map(|p| args!["--prior", p]));
        strata(&args)
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn components(report: &Path) -> Vec<serde_json::Value> {
    let r: serde_json::Value = serde_json::from_str(&fs::read_to_string(report).unwrap()).unwrap();
    r["plan"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["components"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn a_pacman_root_builds_and_an_upgrade_keeps_unchanged_layers() {
    let Some(fx) = fixture() else { return };
    fx.install(
        "hello",
        "1.0-1",
        "hello",
        1_700_000_000,
        &[("usr/bin/hello", "hello")],
    );
    fx.install(
        "world",
        "2.0-1",
        "world-base",
        1_700_000_000,
        &[
            ("usr/bin/world", "world 2.0"),
            ("usr/share/world/data", "d"),
        ],
    );
    // A repository's package list, as `pacman -Sy` fetches it: volatile, like apt's.
    let sync = fx.root.join("var/lib/pacman/sync");
    fs::create_dir_all(&sync).unwrap();
    fs::write(sync.join("core.db"), vec![7u8; 20 << 10]).unwrap();
    let r1 = fx.tmp.path().join("r1.json");
    ok(fx.build(&fx.oci("v1"), None, &r1));
    let found = components(&r1);
    let find = |name: &str| found.iter().find(|c| c["name"] == name).cloned();
    assert!(find("volatile:/var/lib/pacman/sync/core.db").is_some());
    let database = find("package-database").expect("pacman's records form the database");
    assert!(database["size"].as_u64().unwrap() < 20 << 10);
    let world = find("world").expect("pacman's packages are components");
    assert_eq!(world["version"], "2.0-1");
    assert_eq!(
        world["source"], "world-base",
        "%BASE% is the source package"
    );
    assert!(find("hello").is_some());
    // Each package's record goes with the package: unowned, it would churn a unit.
    let unowned: Vec<&str> = found
        .iter()
        .filter_map(|c| c["name"].as_str())
        .filter(|n| n.contains("pacman/local"))
        .collect();
    assert!(
        unowned.is_empty(),
        "records outside their packages: {unowned:?}"
    );

    fx.install(
        "world",
        "2.1-1",
        "world-base",
        1_700_100_000,
        &[
            ("usr/bin/world", "world 2.1"),
            ("usr/share/world/data", "d"),
        ],
    );
    let r2 = fx.tmp.path().join("r2.json");
    let out = fx.build(&fx.oci("v2"), Some(&fx.oci("v1")), &r2);
    crate::assert_update_reuses(&ok(out), "world 2.0-1 → 2.1-1");
}

/// Crafted records: a `desc` that is a symlink out of the tree is never read, and a
/// record without a version is an error naming its file, with no output left.
#[test]
fn crafted_pacman_records_are_not_followed_and_malformed_ones_are_refused() {
    let Some(fx) = fixture() else { return };
    fx.install(
        "hello",
        "1.0-1",
        "hello",
        1_700_000_000,
        &[("usr/bin/hello", "hello")],
    );
    let outside = fx.tmp.path().join("outside-desc");
    fs::write(&outside, "%NAME%\nstolen\n\n%VERSION%\n6.6.6\n").unwrap();
    let forged = fx.root.join("var/lib/pacman/local/stolen-6.6.6");
    fs::create_dir_all(&forged).unwrap();
    std::os::unix::fs::symlink(&outside, forged.join("desc")).unwrap();
    let report = fx.tmp.path().join("r.json");
    ok(fx.build(&fx.oci("v1"), None, &report));
    let found = components(&report);
    assert!(found.iter().any(|c| c["name"] == "hello"));
    assert!(
        !found.iter().any(|c| c["name"] == "stolen"),
        "a desc outside the tree was read"
    );

    let broken = fx.root.join("var/lib/pacman/local/broken-1/desc");
    fs::create_dir_all(broken.parent().unwrap()).unwrap();
    fs::write(&broken, "%NAME%\nbroken\n\n%BASE%\nbroken\n").unwrap();
    let out = fx.build(&fx.oci("v2"), None, &fx.tmp.path().join("r2.json"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("broken-1/desc") && err.contains("has no %VERSION% section"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !fx.tmp.path().join("v2").exists(),
        "no output for a refused tree"
    );
}
