//! Components: the units of content that the planner places into layers.
//!
//! A component is a package, a group of generated files, or an explicit file group.
//! This module defines the type and reads the components file (`strata plan
//! --components`); [`assign`] discovers components in a file tree from its package
//! databases ([`databases`]: dpkg, rpm and pacman), `user.component` xattrs and rules for
//! unowned files.

pub mod assign;
pub mod databases;
pub mod dpkg;
pub mod error;
pub mod map;
pub mod package;
pub mod pacman;
pub mod resolve;
pub mod rpmdb;
pub mod units;

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::input::{self, check_total_size, parse_date, validate_date, InputError};

/// What kind of content a component stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    /// Files owned by an installed package.
    #[default]
    Package,
    /// Content made at build time (initramfs, package database, unowned files).
    Generated,
    /// Files grouped without a package: a `user.component` xattr, a mapping-file
    /// entry, or unowned files of one directory.
    Files,
}

/// One component of a build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// Unique within a build.
    pub name: String,
    /// Opaque; equal versions mean identical content.
    pub version: String,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// The source package; siblings from one source usually change together.
    #[serde(default, alias = "srpm", skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Changelog entry times (seconds since the epoch), newest or oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changelog: Vec<i64>,
    /// An explicit hint: the component changes about once every this many days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_interval_days: Option<f64>,
    /// What made it a component, which sets its first guess.
    #[serde(default)]
    pub kind: ComponentKind,
}

impl Component {
    /// The key that groups components changing together: the source package if known.
    pub fn unit_key(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.name)
    }
}

/// The components of one build, with its date when known.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Build {
    /// RFC 3339 timestamp or `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Every component, names unique.
    pub components: Vec<Component>,
}

impl Build {
    /// The build date in seconds since the epoch, if it has a parseable one.
    pub fn timestamp(&self) -> Option<i64> {
        self.date.as_deref().and_then(parse_date)
    }

    /// Reads and validates a components file (JSON, optionally gzipped).
    pub fn read(path: &Path) -> Result<Build, InputError> {
        let build: Build = input::read_json(path, "a components file")?;
        build.validate(path)?;
        Ok(build)
    }

    /// Checks the invariants the planner relies on, naming the offending field.
    pub fn validate(&self, path: &Path) -> Result<(), InputError> {
        validate_date(path, self.date.as_deref())?;
        if self.components.is_empty() {
            return Err(InputError::invalid(path, "components", "the list is empty"));
        }
        check_total_size(path, "components", self.components.iter().map(|c| c.size))?;
        let mut seen = BTreeSet::new();
        for (i, c) in self.components.iter().enumerate() {
            let field = |f: &str| format!("components[{i}].{f}");
            if c.name.is_empty() {
                return Err(InputError::invalid(path, field("name"), "is empty"));
            }
            if c.version.is_empty() {
                return Err(InputError::invalid(
                    path,
                    field("version"),
                    format!("is empty for '{}'", c.name),
                ));
            }
            if let Some(days) = c.update_interval_days {
                if !(days.is_finite() && days > 0.0) {
                    return Err(InputError::invalid(
                        path,
                        field("update_interval_days"),
                        format!("must be a positive number of days, got {days}"),
                    ));
                }
            }
            if !seen.insert(c.name.as_str()) {
                return Err(InputError::invalid(
                    path,
                    field("name"),
                    format!("'{}' appears more than once", c.name),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn malformed_files_name_the_field() {
        let cases = [
            (r#"{"components": []}"#, "components: the list is empty"),
            (
                r#"{"components": [{"name": "a", "version": "1", "size": 1},
                                   {"name": "a", "version": "2", "size": 1}]}"#,
                "components[1].name: 'a' appears more than once",
            ),
            (
                r#"{"components": [{"name": "a", "version": "", "size": 1}]}"#,
                "components[0].version: is empty",
            ),
            (
                r#"{"components": [{"name": "a", "version": "1", "size": -4}]}"#,
                "not valid JSON for a components file",
            ),
            (r#"{"date": "soon", "components": []}"#, "date: 'soon'"),
            (
                r#"{"components": [{"name": "a", "version": "1", "size": 18446744073709551615},
                                   {"name": "b", "version": "1", "size": 5}]}"#,
                "components: sizes add up to more than 1 EiB",
            ),
            ("", "the file is empty"),
        ];
        for (text, expected) in cases {
            let f = write(text);
            let err = Build::read(f.path()).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} lacks {expected}");
            assert!(err.contains(&f.path().display().to_string()), "{err}");
        }
    }

    #[test]
    fn bench_lines_are_components_files() {
        let f = write(
            r#"{"build": 0, "date": "2019-09-05T10:18:45-04:00", "components": [
                {"name": "bash", "version": "5.0-1", "size": 10, "size_src": "fc37", "srpm": "bash"}]}"#,
        );
        let build = Build::read(f.path()).unwrap();
        assert_eq!(build.components[0].source.as_deref(), Some("bash"));
        assert!(build.timestamp().is_some());
    }
}
