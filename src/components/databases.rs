//! The package database formats component discovery reads, in one list: the walker
//! reads every one a tree holds, and their records of what is installed form the
//! `package-database` component.

use super::dpkg::Dpkg;
use super::package::PackageDb;
use super::pacman::Pacman;
use super::rpmdb::Rpm;

/// Every format, in the order their packages are read.
pub const ALL: [&dyn PackageDb; 3] = [&Rpm, &Dpkg, &Pacman];

/// Whether `path` (relative to the root) is part of a package database's record of
/// what is installed.
pub fn owns(path: &str) -> bool {
    ALL.iter()
        .flat_map(|db| db.records())
        .any(|&record| match record.ends_with('/') {
            true => path.starts_with(record),
            false => path == record,
        })
}
