//! The package database formats component discovery reads, in one list: the walker
//! reads every one a tree holds, and their own files form the `package-database`
//! component.

use super::dpkg::Dpkg;
use super::package::PackageDb;
use super::pacman::Pacman;
use super::rpmdb::Rpm;

/// Every format, in the order their packages are read.
pub const ALL: [&dyn PackageDb; 3] = [&Rpm, &Dpkg, &Pacman];

/// Whether `path` (relative to the root) is a package database's own file.
pub fn owns(path: &str) -> bool {
    ALL.iter()
        .flat_map(|db| db.own_dirs())
        .any(|dir| path.starts_with(dir))
}
