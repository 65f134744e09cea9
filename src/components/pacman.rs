//! pacman's local database (Arch Linux and its derivatives): one directory per
//! installed package under `var/lib/pacman/local`, each with a `desc` (name, version,
//! base, build date) and a `files` list, both plain text in `%SECTION%` blocks.
//!
//! Untrusted like every database: files are read only where the walk saw regular
//! files, sizes and listed paths are bounded, and a malformed record is an error
//! naming its file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::error::AssignError;
use super::package::{Package, PackageDb, Tree, MAX_DB_FILE, PATH_OVERHEAD};

/// The directory of per-package records, relative to the root.
const LOCAL: &str = "var/lib/pacman/local";
/// A record's description file.
const DESC: &str = "desc";

/// pacman.
pub struct Pacman;

impl PackageDb for Pacman {
    /// Not `sync/`, the repositories' package lists, which are volatile like apt's.
    fn records(&self) -> &'static [&'static str] {
        &["var/lib/pacman/local/"]
    }

    fn read(&self, tree: &Tree) -> Result<Option<Vec<Package>>, AssignError> {
        let records = records(tree);
        if records.is_empty() {
            return Ok(None);
        }
        let mut packages = records
            .into_iter()
            .map(|(record, files)| package(tree, record, files))
            .collect::<Result<Vec<_>, _>>()?;
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(packages))
    }
}

/// Each package record (a directory of `local` holding a `desc`) with the files in it,
/// gathered in one pass over the tree.
fn records<'a>(tree: &Tree<'a>) -> BTreeMap<&'a Path, Vec<&'a Path>> {
    let local = Path::new(LOCAL);
    let mut records: BTreeMap<&Path, Vec<&Path>> = BTreeMap::new();
    for file in tree.files_below(local) {
        let mut record = file;
        while let Some(parent) = record.parent().filter(|p| *p != local) {
            record = parent;
        }
        if record != file {
            records.entry(record).or_default().push(file);
        }
    }
    records.retain(|record, files| files.contains(&record.join(DESC).as_path()));
    records
}

/// The package whose record is `record`, holding `files`.
fn package(tree: &Tree, record: &Path, files: Vec<&Path>) -> Result<Package, AssignError> {
    let desc = record.join(DESC);
    let fields = sections(tree, &desc)?.unwrap_or_default();
    let one = |key: &str| {
        let value = fields.get(key).and_then(|v| v.first());
        value.cloned().ok_or_else(|| AssignError::Invalid {
            path: tree.describe(&desc),
            problem: format!("has no %{key}% section"),
        })
    };
    let (name, version) = (one("NAME")?, one("VERSION")?);
    let mut owned = listed_files(tree, &record.join("files"))?;
    // The record itself changes only when its package does (its directory is named by
    // the version), so it travels with the package.
    owned.extend(files.into_iter().map(Path::to_path_buf));
    owned.sort();
    let built = fields.get("BUILDDATE").and_then(|v| v.first());
    Ok(Package {
        source: fields.get("BASE").and_then(|v| v.first()).cloned(),
        changelog: built.and_then(|d| d.parse().ok()).into_iter().collect(),
        name,
        version,
        files: owned,
    })
}

/// The paths a record's `files` lists under `%FILES%` (directories included).
fn listed_files(tree: &Tree, rel: &Path) -> Result<Vec<PathBuf>, AssignError> {
    let Some(mut fields) = sections(tree, rel)? else {
        return Ok(Vec::new());
    };
    let listed = fields.remove("FILES").unwrap_or_default();
    let listed: Vec<&str> = listed
        .iter()
        .map(|l| l.trim_start_matches('/').trim_end_matches('/'))
        .filter(|l| !l.is_empty())
        .collect();
    // Each path costs far more in memory than its line; bound them first.
    let cost = listed.iter().map(|l| l.len() as u64 + PATH_OVERHEAD).sum();
    tree.charge_paths(rel, cost)?;
    Ok(listed.into_iter().map(PathBuf::from).collect())
}

/// A `%SECTION%` file: each section's lines, up to the next blank line. `None` when
/// the walk found no regular file there.
fn sections(tree: &Tree, rel: &Path) -> Result<Option<HashMap<String, Vec<String>>>, AssignError> {
    let Some(data) = tree.read(rel, MAX_DB_FILE)? else {
        return Ok(None);
    };
    let text = String::from_utf8(data).map_err(|_| AssignError::Invalid {
        path: tree.describe(rel),
        problem: "is not UTF-8".into(),
    })?;
    Ok(Some(parse_sections(&text)))
}

fn parse_sections(text: &str) -> HashMap<String, Vec<String>> {
    let mut fields: HashMap<String, Vec<String>> = HashMap::new();
    for block in text.split("\n\n") {
        let mut lines = block.lines().filter(|l| !l.is_empty());
        let Some(key) = lines
            .next()
            .and_then(|h| h.strip_prefix('%')?.strip_suffix('%'))
        else {
            continue;
        };
        fields
            .entry(key.to_string())
            .or_default()
            .extend(lines.map(str::to_string));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_run_to_the_next_blank_line() {
        let f = parse_sections("%NAME%\nbash\n\n%FILES%\nusr/\nusr/bin/bash\n\n%BACKUP%\n");
        assert_eq!(f["NAME"], ["bash"]);
        assert_eq!(f["FILES"], ["usr/", "usr/bin/bash"]);
        assert!(f["BACKUP"].is_empty());
    }
}
