//! The dpkg database of a root filesystem: installed packages, their files, and the
//! dates in their Debian changelogs.
//!
//! Everything here is untrusted input: files are read only when the walk saw them as
//! regular files (so no symlink is followed), sizes are bounded, and malformed
//! records are reported with the file they came from.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::AssignError;
use super::package::{Package, PackageDb, Tree, MAX_DB_FILE, PATH_OVERHEAD};

/// The status file, relative to the root.
pub const STATUS: &str = "var/lib/dpkg/status";
/// Which package's file dpkg moved aside, and where (`dpkg-divert`).
pub const DIVERSIONS: &str = "var/lib/dpkg/diversions";
/// Where dpkg keeps each package's file list, checksums and maintainer scripts.
const INFO: &str = "var/lib/dpkg/info";
/// Only this much of a decompressed changelog is read.
const MAX_CHANGELOG: u64 = 4 << 20;

/// Debian's dpkg.
pub struct Dpkg;

impl PackageDb for Dpkg {
    /// Not `available`: dselect's list of available packages, which apt never
    /// updates, and not `alternatives/`, which changes with the alternatives links.
    fn records(&self) -> &'static [&'static str] {
        &[
            STATUS,
            DIVERSIONS,
            "var/lib/dpkg/statoverride",
            "var/lib/dpkg/info/",
            "var/lib/dpkg/triggers/",
            "var/lib/dpkg/updates/",
        ]
    }

    fn read(&self, tree: &Tree) -> Result<Option<Vec<Package>>, AssignError> {
        read(tree)
    }
}

/// Reads the installed packages, or `None` when the tree has no dpkg database.
fn read(tree: &Tree) -> Result<Option<Vec<Package>>, AssignError> {
    let Some(status) = tree.read(Path::new(STATUS), MAX_DB_FILE)? else {
        return Ok(None);
    };
    let status_path = tree.describe(Path::new(STATUS));
    let text = String::from_utf8(status).map_err(|_| AssignError::Invalid {
        path: status_path.clone(),
        problem: "is not UTF-8".into(),
    })?;
    let mut control = control_files(tree);
    let mut packages = Vec::new();
    for (n, para) in text.split("\n\n").enumerate() {
        let fields = parse_paragraph(para);
        let installed = fields
            .get("Status")
            .is_some_and(|s| s.split_whitespace().nth(2) == Some("installed"));
        if !installed {
            continue;
        }
        let field = |k: &str| {
            fields.get(k).cloned().ok_or_else(|| AssignError::Invalid {
                path: status_path.clone(),
                problem: format!("record {} has no {k} field", n + 1),
            })
        };
        let (name, version) = (field("Package")?, field("Version")?);
        let arch = fields.get("Architecture").cloned().unwrap_or_default();
        let source = fields
            .get("Source")
            .and_then(|s| s.split_whitespace().next())
            .map(str::to_string);
        let mut files = list_files(tree, &name, &arch)?;
        for key in [format!("{name}:{arch}"), name.clone()] {
            files.extend(control.remove(&key).unwrap_or_default());
        }
        let changelog = changelog_dates(tree, &name)?;
        packages.push(Package {
            name,
            version,
            source,
            files,
            changelog,
        });
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    apply_diversions(tree, &mut packages)?;
    Ok(Some(packages))
}

/// Moves each diverted file to where dpkg put it: the diverted package's copy lives
/// at the divert-to path, and the original path belongs to the diverting package
/// (which lists it too). Lists name files by their original paths.
fn apply_diversions(tree: &Tree, packages: &mut [Package]) -> Result<(), AssignError> {
    let Some(data) = tree.read(Path::new(DIVERSIONS), MAX_DB_FILE)? else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&data);
    let lines: Vec<&str> = text.lines().collect();
    if !lines.len().is_multiple_of(3) {
        return Err(AssignError::Invalid {
            path: tree.describe(Path::new(DIVERSIONS)),
            problem: format!(
                "has {} lines; diversions come in threes (from, to, package)",
                lines.len()
            ),
        });
    }
    for d in lines.chunks(3) {
        let (from, to, by) = (relative(d[0]), relative(d[1]), d[2]);
        for pkg in packages.iter_mut().filter(|p| p.name != by) {
            if let Some(f) = pkg.files.iter_mut().find(|f| **f == from) {
                *f = to.clone();
            }
        }
    }
    Ok(())
}

fn relative(listed: &str) -> PathBuf {
    PathBuf::from(listed.trim_start_matches('/'))
}

fn parse_paragraph(para: &str) -> HashMap<&str, String> {
    let mut fields: HashMap<&str, String> = HashMap::new();
    let mut last: Option<&str> = None;
    for line in para.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = last.and_then(|k| fields.get_mut(k)) {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            fields.insert(k, v.trim().to_string());
            last = Some(k);
        }
    }
    fields
}

/// The files of `var/lib/dpkg/info`, by the package they describe (`NAME.EXT` or
/// `NAME:ARCH.EXT`). They change only when their package does, so they travel with
/// it rather than with the status file, which every package change rewrites.
fn control_files(tree: &Tree) -> HashMap<String, Vec<PathBuf>> {
    let mut by_package: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for path in tree.files_in(Path::new(INFO)) {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if let Some((package, ext)) = name.rsplit_once('.') {
            if !package.is_empty() && !ext.is_empty() && !ext.contains(':') {
                by_package
                    .entry(package.to_string())
                    .or_default()
                    .push(path.to_path_buf());
            }
        }
    }
    for files in by_package.values_mut() {
        files.sort();
    }
    by_package
}

fn list_files(tree: &Tree, name: &str, arch: &str) -> Result<Vec<PathBuf>, AssignError> {
    let candidates = [format!("{name}:{arch}.list"), format!("{name}.list")];
    for file in candidates {
        let rel = Path::new(INFO).join(&file);
        if let Some(data) = tree.read(&rel, MAX_DB_FILE)? {
            let text = String::from_utf8_lossy(&data);
            let listed: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix('/'))
                .filter(|l| !l.is_empty() && *l != ".")
                .collect();
            // Each path costs far more in memory than its line; bound them first.
            let cost = listed.iter().map(|l| l.len() as u64 + PATH_OVERHEAD).sum();
            tree.charge_paths(&rel, cost)?;
            return Ok(listed.into_iter().map(PathBuf::from).collect());
        }
    }
    Ok(Vec::new())
}

/// Where a package's Debian changelog may be: `changelog.Debian.gz`, or for a native
/// package (one without a Debian revision, such as dpkg and apt) `changelog.gz`.
/// Packages built from one source may share a documentation directory through a link.
const CHANGELOGS: [&str; 2] = ["changelog.Debian.gz", "changelog.gz"];

/// Dates of the entries in the package's Debian changelog (trailer lines
/// ` -- Maintainer <email>  Mon, 01 Jan 2024 00:00:00 +0000`).
fn changelog_dates(tree: &Tree, name: &str) -> Result<Vec<i64>, AssignError> {
    let doc = Path::new("usr/share/doc").join(name);
    for file in CHANGELOGS {
        let Some(rel) = tree.resolve(&doc.join(file)) else {
            continue;
        };
        if let Some(gz) = tree.read(&rel, MAX_DB_FILE)? {
            return Ok(entry_dates(&gz));
        }
    }
    Ok(Vec::new())
}

fn entry_dates(gz: &[u8]) -> Vec<i64> {
    let mut text = String::new();
    // A corrupt changelog costs only the cold-start guess, not the build.
    let _ = flate2::read::GzDecoder::new(gz)
        .take(MAX_CHANGELOG)
        .read_to_string(&mut text);
    text.lines()
        .filter_map(|l| l.strip_prefix(" -- "))
        .filter_map(|l| l.split_once(">  ").map(|(_, date)| date.trim()))
        .filter_map(|date| jiff::fmt::rfc2822::parse(date).ok())
        .map(|z| z.timestamp().as_second())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_keep_continuation_lines() {
        let f = parse_paragraph("Package: a\nDescription: x\n more\nStatus: install ok installed");
        assert_eq!(f["Package"], "a");
        assert_eq!(f["Description"], "x\nmore");
    }
}
