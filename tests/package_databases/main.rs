//! `strata build` on roots whose package databases the real package managers wrote:
//! rpm (packages built with rpmbuild, installed with `rpm --root`) and pacman
//! (installed with `pacman -U --root`). One test binary for every format.

#[path = "../common/mod.rs"]
mod common;

mod pacman;
mod rpm;
