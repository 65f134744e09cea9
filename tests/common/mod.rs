//! Helpers the end-to-end tests share: running the real binary and deciding whether
//! a real part (a tool, a fixture) is there.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::process::{Command, Output};

/// Command-line arguments of mixed kinds (`&str`, `String`, `&Path`, `PathBuf`) as a
/// `Vec<OsString>`, so a path goes to the command as it is, with no UTF-8 round trip.
#[macro_export]
macro_rules! args {
    ($($arg:expr),* $(,)?) => {{
        // A Vec even where a slice would do, so that callers can push to it.
        #[allow(clippy::useless_vec)]
        let args: Vec<::std::ffi::OsString> = vec![$(::std::ffi::OsString::from(
            ::std::convert::AsRef::<::std::ffi::OsStr>::as_ref(&$arg)
        )),*];
        args
    }};
}

/// Whether the tests run as root (some real parts need it: chroot, other users' files).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs the `strata` binary under test.
pub fn strata<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run strata")
}

/// Its standard output, after asserting it succeeded.
pub fn ok(out: Output) -> String {
    succeeded(out, "strata")
}

/// The standard output of a command that must have succeeded; `what` names it in the
/// failure, next to its standard error.
pub fn succeeded(out: Output, what: impl std::fmt::Display) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg("command -v \"$1\"")
        .arg("sh")
        .arg(tool)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// True when every tool is present. Otherwise the test is skipped with a message,
/// except under CI, where `.ci/run` must have installed them and the test fails.
pub fn real_parts(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{missing:?} missing: .ci/run must install them"
    );
    println!("skipped: {missing:?} not installed");
    false
}

/// The tree `name` in the test cache that `scripts/fixtures.sh` and
/// `scripts/tree-sequence.sh` fill (`$STRATA_TEST_CACHE`, default
/// `/var/cache/strata-test`), or `None`: the test is skipped with a message, except
/// under CI, where `.ci/run` must have made it and the test fails.
pub fn cached_tree(name: &str) -> Option<std::path::PathBuf> {
    let cache =
        std::env::var("STRATA_TEST_CACHE").unwrap_or_else(|_| "/var/cache/strata-test".into());
    let tree = std::path::Path::new(&cache).join(name);
    if tree.join("var/lib/dpkg/status").exists() {
        return Some(tree);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: .ci/run must create it",
        tree.display()
    );
    println!(
        "skipped: no {} (the scripts/ fixtures make it)",
        tree.display()
    );
    None
}

/// A small dpkg-managed tree: package `stable` never changes, `busy` is at `version`.
pub fn dpkg_tree(root: &std::path::Path, version: &str) {
    for (path, text) in [
        ("usr/bin/stable", "never changes\n".to_string()),
        ("usr/bin/busy", format!("busy {version}\n")),
        ("etc/os-release", "ID=strata-test\n".to_string()),
    ] {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let status = format!(
        "Package: stable\nStatus: install ok installed\nVersion: 1\n\n\
         Package: busy\nStatus: install ok installed\nVersion: {version}\n"
    );
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), status).unwrap();
    std::fs::write(
        root.join("var/lib/dpkg/info/stable.list"),
        "/usr/bin/stable\n",
    )
    .unwrap();
    std::fs::write(root.join("var/lib/dpkg/info/busy.list"), "/usr/bin/busy\n").unwrap();
}

/// Runs the ostree CLI, asserting it succeeds; its standard output.
pub fn ostree<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = Command::new("ostree").args(args).output().unwrap();
    succeeded(out, format!("ostree {args:?}"))
}

/// A tree with the edge cases: empty directories, odd modes, symlinks, xattrs,
/// non-ASCII names and a large file, on top of a small dpkg database.
pub fn edge_tree(root: &std::path::Path, version: &str) {
    dpkg_tree(root, version);
    std::fs::create_dir_all(root.join("var/empty")).unwrap();
    std::fs::create_dir_all(root.join("usr/share/zoneinfo")).unwrap();
    std::fs::write(root.join("usr/share/zoneinfo/Zürich ☃"), "non-ASCII\n").unwrap();
    let setuid = root.join("usr/bin/setuid");
    std::fs::write(&setuid, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        &setuid,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("busy", root.join("usr/bin/busy-link")).unwrap();
    std::os::unix::fs::symlink("../../etc/os-release", root.join("usr/lib/os-release")).ok();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::create_dir_all(root.join("usr/lib/firmware")).unwrap();
    std::fs::write(root.join("usr/lib/firmware/blob.bin"), big).unwrap();
    xattr::set(root.join("etc/os-release"), "user.origin", b"strata-test").unwrap();
    // Numeric owners travel in the content objects (ostree commit keeps them as root).
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(root.join("usr/bin/busy"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::chown(root.join("var/empty"), Some(42), Some(43)).unwrap();
    }
}

pub mod http;
pub mod ostree_client;
pub mod registry;
pub mod tekton;
pub mod unpack;

/// A port on `host` (one of this machine's addresses) that is free now, for a server
/// this test starts. It is outside the kernel's ephemeral range: a port from that range
/// stays free only until some process connects out and gets it as its local port, which
/// happened between the pick and the bind when several control planes ran at once. Ports
/// handed out once are not handed out again by this process.
pub fn free_port(host: &str) -> u16 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let ephemeral: Vec<u16> = range
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let outside = |p: &u16| !(ephemeral[0]..=ephemeral[1]).contains(p);
    let pool: Vec<u16> = (20000..=u16::MAX).filter(outside).collect();
    let start = RandomState::new().hash_one(std::process::id()) as usize;
    let mut given = GIVEN.lock().unwrap();
    let port = (0..pool.len())
        .map(|i| pool[(start + i) % pool.len()])
        .find(|p| !given.contains(p) && std::net::TcpListener::bind((host, *p)).is_ok())
        .expect("no free port outside the ephemeral range");
    given.push(port);
    port
}

/// A port on `host` (one of this machine's addresses) that accepts connections and
/// never answers: a source that hangs.
pub fn black_hole(host: &str) -> u16 {
    let listener = std::net::TcpListener::bind((host, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

/// Every component a build report plans, by name: (version, size).
pub fn planned_components(
    report: &serde_json::Value,
) -> std::collections::HashMap<String, (String, u64)> {
    let carried = report["plan"]["patch_members"].as_array();
    report["plan"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["components"].as_array().unwrap())
        .chain(carried.into_iter().flatten())
        .map(|c| {
            let version = c["version"].as_str().unwrap().to_string();
            let size = c["size"].as_u64().unwrap();
            (c["name"].as_str().unwrap().to_string(), (version, size))
        })
        .collect()
}

/// `len` incompressible bytes (xorshift from `seed`, which must not be 0), so layers
/// of them take real time and span many read chunks.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
