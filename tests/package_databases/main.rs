//! `strata build` on roots whose package databases the real package managers wrote:
//! rpm (packages built with rpmbuild, installed with `rpm --root`) and pacman
//! (installed with `pacman -U --root`). One test binary for every format.

#[path = "../common/mod.rs"]
mod common;

mod pacman;
mod rpm;

/// A second build's summary: `update` (`world 2.0-1 → 2.1-1`) was an update in place,
/// and the layer of the package that did not change was reused.
fn assert_update_reuses(stdout: &str, update: &str) {
    assert!(stdout.contains(&format!("updated  {update}")), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("reused")),
        "the unchanged package's layer is reused: {stdout}"
    );
}
