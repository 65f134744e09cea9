//! The RPM database of a root filesystem (sqlite backend): installed packages, their
//! files and changelog times, parsed from the stored header blobs.
//!
//! Header blobs are untrusted: every count, offset and string is bounds-checked and a
//! bad blob is an error naming the database and the package record, never a panic.
//! The database is copied (with its WAL) to a scratch directory before it is opened,
//! so the source tree is never written to and uncheckpointed data is still seen.

use std::path::{Path, PathBuf};

use super::error::AssignError;
use super::package::{Package, PackageDb, Tree, MAX_DB_FILE, PATH_OVERHEAD};

/// The sqlite database's file name in each of rpm's database directories.
const SQLITE_DB: &str = "rpmdb.sqlite";

/// rpm, with its sqlite backend.
pub struct Rpm;

impl PackageDb for Rpm {
    /// Newest location first.
    fn records(&self) -> &'static [&'static str] {
        &["usr/lib/sysimage/rpm/", "var/lib/rpm/", "usr/share/rpm/"]
    }

    fn read(&self, tree: &Tree) -> Result<Option<Vec<Package>>, AssignError> {
        read(tree)
    }
}

/// The tags Strata reads (see rpm's `rpmtag.h`).
mod tag {
    pub const NAME: u32 = 1000;
    pub const VERSION: u32 = 1001;
    pub const RELEASE: u32 = 1002;
    pub const EPOCH: u32 = 1003;
    pub const ARCH: u32 = 1022;
    pub const SOURCERPM: u32 = 1044;
    pub const CHANGELOGTIME: u32 = 1080;
    pub const OLDFILENAMES: u32 = 1027;
    pub const DIRINDEXES: u32 = 1116;
    pub const BASENAMES: u32 = 1117;
    pub const DIRNAMES: u32 = 1118;
}

/// Header data types.
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;
/// A header never has more index entries or data than this.
const MAX_ENTRIES: u32 = 1 << 16;
const MAX_DATA: u32 = 256 << 20;
/// No string array holds more elements (a package of a million files is far beyond
/// any real one).
const MAX_ARRAY: u32 = 1 << 20;
/// Joined file names may be this many times the header's own bytes: names share
/// directories, but a crafted header repeating one long directory would otherwise
/// cost gigabytes from megabytes.
const NAME_EXPANSION: usize = 16;
/// How long reading the database may take before it is refused as crafted.
const QUERY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// What is wrong with a header blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer bytes than a header's fixed part.
    #[error("the blob is {0} bytes, too short for a header")]
    TooShort(usize),
    /// A count, offset or length points outside the blob or past a limit.
    #[error("{what} ({value}) is out of bounds")]
    OutOfBounds {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A tag of an unexpected type.
    #[error("tag {tag} has type {found}, expected {expected}")]
    WrongType {
        /// The tag.
        tag: u32,
        /// The type the header gives it.
        found: u32,
        /// The type rpm gives it.
        expected: u32,
    },
    /// A string running to the end of the data area.
    #[error("tag {0} holds a string without its terminating NUL")]
    Unterminated(u32),
    /// A tag every installed package has.
    #[error("the header has no {0} tag")]
    Missing(&'static str),
    /// A file whose directory index is past the directory list.
    #[error("file index {index} refers to directory {dir}, but there are only {dirs}")]
    BadDirIndex {
        /// The file's index.
        index: usize,
        /// The directory index it gives.
        dir: u32,
        /// How many directories there are.
        dirs: usize,
    },
}

/// The parts of an installed package's header Strata uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmHeader {
    /// `NAME`.
    pub name: String,
    /// `EPOCH`, when set.
    pub epoch: Option<u32>,
    /// `VERSION`.
    pub version: String,
    /// `RELEASE`.
    pub release: String,
    /// `ARCH`; absent for gpg-pubkey pseudo-packages.
    pub arch: Option<String>,
    /// `SOURCERPM`, whose name groups sibling packages.
    pub source_rpm: Option<String>,
    /// Absolute paths.
    pub files: Vec<String>,
    /// `CHANGELOGTIME` entries, seconds since the epoch.
    pub changelog: Vec<i64>,
}

impl RpmHeader {
    /// `[epoch:]version-release`, as the bench histories spell it.
    pub fn evr(&self) -> String {
        match self.epoch {
            Some(e) => format!("{e}:{}-{}", self.version, self.release),
            None => format!("{}-{}", self.version, self.release),
        }
    }

    /// The source package name: `foo-1.2-3.fc40.src.rpm` → `foo`.
    pub fn source_name(&self) -> Option<String> {
        let srpm = self.source_rpm.as_deref()?;
        let stem = srpm
            .strip_suffix(".src.rpm")
            .or_else(|| srpm.strip_suffix(".nosrc.rpm"))?;
        let (rest, _release) = stem.rsplit_once('-')?;
        let (name, _version) = rest.rsplit_once('-')?;
        (!name.is_empty()).then(|| name.to_string())
    }
}

struct IndexEntry {
    tag: u32,
    ty: u32,
    offset: u32,
    count: u32,
}

/// A bounds-checked view of a header blob: `il`, `dl`, index entries, data store.
struct Header<'a> {
    entries: Vec<IndexEntry>,
    data: &'a [u8],
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
}

impl<'a> Header<'a> {
    fn parse(blob: &'a [u8]) -> Result<Self, HeaderError> {
        if blob.len() < 8 {
            return Err(HeaderError::TooShort(blob.len()));
        }
        let (il, dl) = (be32(blob, 0), be32(blob, 4));
        if il == 0 || il > MAX_ENTRIES {
            return Err(HeaderError::OutOfBounds {
                what: "index entry count",
                value: il.into(),
            });
        }
        if dl > MAX_DATA {
            return Err(HeaderError::OutOfBounds {
                what: "data length",
                value: dl.into(),
            });
        }
        let index_end = 8 + il as usize * 16;
        let data_end = index_end + dl as usize;
        if blob.len() < data_end {
            return Err(HeaderError::TooShort(blob.len()));
        }
        let entries = (0..il as usize)
            .map(|i| {
                let at = 8 + i * 16;
                IndexEntry {
                    tag: be32(blob, at),
                    ty: be32(blob, at + 4),
                    offset: be32(blob, at + 8),
                    count: be32(blob, at + 12),
                }
            })
            .collect();
        Ok(Header {
            entries,
            data: &blob[index_end..data_end],
        })
    }

    fn find(&self, tag: u32) -> Option<&IndexEntry> {
        self.entries.iter().find(|e| e.tag == tag)
    }

    fn check_type(e: &IndexEntry, expected: &[u32]) -> Result<(), HeaderError> {
        if expected.contains(&e.ty) {
            Ok(())
        } else {
            Err(HeaderError::WrongType {
                tag: e.tag,
                found: e.ty,
                expected: expected[0],
            })
        }
    }

    fn strings(&self, tag: u32) -> Result<Option<Vec<String>>, HeaderError> {
        let Some(e) = self.find(tag) else {
            return Ok(None);
        };
        Self::check_type(e, &[TYPE_STRING, TYPE_STRING_ARRAY, TYPE_I18NSTRING])?;
        let count = if e.ty == TYPE_STRING { 1 } else { e.count };
        // Every string takes at least its NUL: a count beyond the bytes present is a
        // lie that would otherwise allocate an empty string per claimed element.
        let present = self.data.len().saturating_sub(e.offset as usize);
        if count > MAX_ARRAY || count as usize > present {
            return Err(HeaderError::OutOfBounds {
                what: "string count",
                value: count.into(),
            });
        }
        let mut at = e.offset as usize;
        let mut out = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let rest = self.data.get(at..).ok_or(HeaderError::OutOfBounds {
                what: "string offset",
                value: at as u64,
            })?;
            let len = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or(HeaderError::Unterminated(tag))?;
            out.push(String::from_utf8_lossy(&rest[..len]).into_owned());
            at += len + 1;
        }
        Ok(Some(out))
    }

    fn string(&self, tag: u32) -> Result<Option<String>, HeaderError> {
        Ok(self.strings(tag)?.and_then(|v| v.into_iter().next()))
    }

    fn int32s(&self, tag: u32) -> Result<Option<Vec<u32>>, HeaderError> {
        let Some(e) = self.find(tag) else {
            return Ok(None);
        };
        Self::check_type(e, &[TYPE_INT32])?;
        let start = e.offset as usize;
        let end = (e.count as usize)
            .checked_mul(4)
            .and_then(|n| n.checked_add(start));
        let bytes =
            end.and_then(|end| self.data.get(start..end))
                .ok_or(HeaderError::OutOfBounds {
                    what: "integer array",
                    value: u64::from(e.offset) + u64::from(e.count) * 4,
                })?;
        Ok(Some(bytes.chunks_exact(4).map(|c| be32(c, 0)).collect()))
    }
}

/// Parses one header blob as stored in `rpmdb.sqlite`'s `Packages` table.
pub fn parse_header(blob: &[u8]) -> Result<RpmHeader, HeaderError> {
    let h = Header::parse(blob)?;
    let name_limit = blob.len().saturating_mul(NAME_EXPANSION);
    let required = |tag, name| h.string(tag)?.ok_or(HeaderError::Missing(name));
    Ok(RpmHeader {
        name: required(tag::NAME, "NAME")?,
        epoch: h.int32s(tag::EPOCH)?.and_then(|v| v.first().copied()),
        version: required(tag::VERSION, "VERSION")?,
        release: required(tag::RELEASE, "RELEASE")?,
        arch: h.string(tag::ARCH)?,
        source_rpm: h.string(tag::SOURCERPM)?,
        files: file_names(&h, name_limit)?,
        changelog: h
            .int32s(tag::CHANGELOGTIME)?
            .unwrap_or_default()
            .into_iter()
            .map(i64::from)
            .collect(),
    })
}

/// The header's file names, joined from directories and base names; refused when
/// they would take more than `limit` bytes.
fn file_names(h: &Header, limit: usize) -> Result<Vec<String>, HeaderError> {
    if let Some(old) = h.strings(tag::OLDFILENAMES)? {
        return Ok(old);
    }
    let Some(bases) = h.strings(tag::BASENAMES)? else {
        return Ok(Vec::new());
    };
    let dirs = h.strings(tag::DIRNAMES)?.unwrap_or_default();
    let index = h.int32s(tag::DIRINDEXES)?.unwrap_or_default();
    if index.len() != bases.len() {
        return Err(HeaderError::OutOfBounds {
            what: "directory index count",
            value: index.len() as u64,
        });
    }
    let joined: usize = bases
        .iter()
        .zip(&index)
        .map(|(b, &d)| b.len() + dirs.get(d as usize).map_or(0, String::len))
        .sum();
    if joined > limit {
        return Err(HeaderError::OutOfBounds {
            what: "joined file name bytes",
            value: joined as u64,
        });
    }
    bases
        .iter()
        .zip(&index)
        .enumerate()
        .map(|(i, (base, &d))| {
            let dir = dirs.get(d as usize).ok_or(HeaderError::BadDirIndex {
                index: i,
                dir: d,
                dirs: dirs.len(),
            })?;
            Ok(format!("{dir}{base}"))
        })
        .collect()
}

/// Reads the installed packages, or `None` when the tree has no sqlite rpmdb.
fn read(tree: &Tree) -> Result<Option<Vec<Package>>, AssignError> {
    let mut databases = Rpm.records().iter().map(|d| Path::new(d).join(SQLITE_DB));
    let Some(rel) = databases.find(|p| tree.has_file(p)) else {
        return Ok(None);
    };
    let rel = rel.as_path();
    let db_path = tree.describe(rel);
    let scratch = tempfile::tempdir().map_err(|source| AssignError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let copy = scratch.path().join(SQLITE_DB);
    for (suffix, required) in [("", true), ("-wal", false)] {
        let from = PathBuf::from(format!("{}{suffix}", rel.display()));
        match tree.read(&from, MAX_DB_FILE)? {
            Some(bytes) => {
                std::fs::write(format!("{}{suffix}", copy.display()), bytes).map_err(|source| {
                    AssignError::Io {
                        path: copy.clone(),
                        source,
                    }
                })?
            }
            None if required => return Ok(None),
            None => {}
        }
    }
    let invalid = |problem: String| AssignError::Invalid {
        path: db_path.clone(),
        problem,
    };
    let conn = open_packages(&copy, std::time::Instant::now() + QUERY_DEADLINE).map_err(invalid)?;
    let mut stmt = conn
        .prepare("SELECT hnum, blob FROM Packages ORDER BY hnum")
        .map_err(|e| invalid(format!("not an rpm database: {e}")))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .map_err(|e| invalid(query_error(e)))?;
    let mut packages = Vec::new();
    for row in rows {
        let (hnum, blob) = row.map_err(|e| invalid(query_error(e)))?;
        let h = parse_header(&blob).map_err(|e| invalid(format!("package record {hnum}: {e}")))?;
        if h.name == "gpg-pubkey" {
            continue;
        }
        let cost = h.files.iter().map(|f| f.len() as u64 + PATH_OVERHEAD).sum();
        tree.charge_paths(rel, cost)?;
        packages.push(Package {
            version: h.evr(),
            source: h.source_name(),
            files: h
                .files
                .iter()
                .filter_map(|f| f.strip_prefix('/'))
                .filter(|f| !f.is_empty())
                .map(PathBuf::from)
                .collect(),
            changelog: h.changelog.clone(),
            name: h.name,
        });
    }
    Ok(Some(packages))
}

/// Opens the copied database for reading `Packages`, which must be done by `deadline`.
fn open_packages(
    copy: &Path,
    deadline: std::time::Instant,
) -> Result<rusqlite::Connection, String> {
    let conn = rusqlite::Connection::open(copy).map_err(|e| format!("cannot open: {e}"))?;
    conn.progress_handler(10_000, Some(move || std::time::Instant::now() > deadline))
        .map_err(|e| e.to_string())?;
    check_schema(&conn)?;
    Ok(conn)
}

/// A failed query, saying so when the deadline cut it short.
fn query_error(e: rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::OperationInterrupted) => format!(
            "reading it took longer than {} s (a crafted database?)",
            QUERY_DEADLINE.as_secs()
        ),
        _ => e.to_string(),
    }
}

/// rpm's `Packages` must be a plain table: a view (a recursive one hangs any reader)
/// or a virtual table runs someone else's query.
fn check_schema(conn: &rusqlite::Connection) -> Result<(), String> {
    let (kind, sql): (String, String) = conn
        .query_row(
            "SELECT type, COALESCE(sql, '') FROM sqlite_master WHERE name = 'Packages'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => "not an rpm database: no Packages table".into(),
            e => query_error(e),
        })?;
    let virtual_table = sql
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("CREATE VIRTUAL");
    if kind != "table" || virtual_table {
        return Err(format!(
            "Packages is a {}, not a plain table (a crafted database?)",
            if virtual_table {
                "virtual table"
            } else {
                &kind
            }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds a header blob from (tag, type, count, data) entries.
    fn blob(entries: &[(u32, u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data: Vec<u8> = Vec::new();
        for (tag, ty, count, bytes) in entries {
            for v in [*tag, *ty, data.len() as u32, *count] {
                index.extend(v.to_be_bytes());
            }
            data.extend(bytes);
        }
        let mut out = (entries.len() as u32).to_be_bytes().to_vec();
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(index);
        out.extend(data);
        out
    }

    fn s(text: &str) -> Vec<u8> {
        let mut v = text.as_bytes().to_vec();
        v.push(0);
        v
    }

    fn sample() -> Vec<u8> {
        blob(&[
            (tag::NAME, TYPE_STRING, 1, s("bash")),
            (tag::VERSION, TYPE_STRING, 1, s("5.2")),
            (tag::RELEASE, TYPE_STRING, 1, s("3.fc40")),
            (tag::SOURCERPM, TYPE_STRING, 1, s("bash-5.2-3.fc40.src.rpm")),
            (
                tag::CHANGELOGTIME,
                TYPE_INT32,
                2,
                [
                    1_700_000_000u32.to_be_bytes(),
                    1_600_000_000u32.to_be_bytes(),
                ]
                .concat(),
            ),
            (
                tag::BASENAMES,
                TYPE_STRING_ARRAY,
                2,
                [s("bash"), s("sh")].concat(),
            ),
            (tag::DIRNAMES, TYPE_STRING_ARRAY, 1, s("/usr/bin/")),
            (
                tag::DIRINDEXES,
                TYPE_INT32,
                2,
                [0u32.to_be_bytes(), 0u32.to_be_bytes()].concat(),
            ),
        ])
    }

    #[test]
    fn a_string_count_beyond_the_bytes_present_is_refused() {
        // 0xFFFFFFFF empty strings claimed over a few zeros.
        let b = blob(&[
            (tag::NAME, TYPE_STRING, 1, s("x")),
            (tag::VERSION, TYPE_STRING, 1, s("1")),
            (tag::RELEASE, TYPE_STRING, 1, s("1")),
            (tag::BASENAMES, TYPE_STRING_ARRAY, u32::MAX, vec![0; 4096]),
        ]);
        let e = parse_header(&b).unwrap_err();
        assert!(e.to_string().contains("string count"), "{e}");
    }

    #[test]
    fn one_long_directory_repeated_cannot_multiply_memory() {
        let n = 20_000u32;
        let b = blob(&[
            (tag::NAME, TYPE_STRING, 1, s("x")),
            (tag::VERSION, TYPE_STRING, 1, s("1")),
            (tag::RELEASE, TYPE_STRING, 1, s("1")),
            (
                tag::BASENAMES,
                TYPE_STRING_ARRAY,
                n,
                s("a").repeat(n as usize),
            ),
            (tag::DIRNAMES, TYPE_STRING_ARRAY, 1, s(&"d/".repeat(2000))),
            (tag::DIRINDEXES, TYPE_INT32, n, vec![0; 4 * n as usize]),
        ]);
        let e = parse_header(&b).unwrap_err();
        assert!(e.to_string().contains("joined file name bytes"), "{e}");
    }

    #[test]
    fn packages_must_be_a_plain_table_read_before_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rpmdb.sqlite");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE VIEW Packages AS WITH RECURSIVE c(x) AS \
             (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x AS hnum, x AS blob FROM c;",
        )
        .unwrap();
        drop(conn);
        let later = std::time::Instant::now() + QUERY_DEADLINE;
        let e = open_packages(&path, later).err().unwrap();
        assert!(e.contains("Packages is a view"), "{e}");

        let path = dir.path().join("slow.sqlite");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB);")
            .unwrap();
        drop(conn);
        let past = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let conn = open_packages(&path, past);
        let e = match conn {
            Err(e) => e,
            Ok(c) => c
                .query_row(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                     SELECT count(*) FROM c",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(query_error)
                .unwrap_err(),
        };
        assert!(e.contains("took longer than"), "{e}");
    }

    #[test]
    fn parses_names_files_and_changelog() {
        let h = parse_header(&sample()).unwrap();
        assert_eq!(h.name, "bash");
        assert_eq!(h.evr(), "5.2-3.fc40");
        assert_eq!(h.source_name().as_deref(), Some("bash"));
        assert_eq!(h.files, ["/usr/bin/bash", "/usr/bin/sh"]);
        assert_eq!(h.changelog, [1_700_000_000, 1_600_000_000]);
    }

    #[test]
    fn corrupt_blobs_are_errors() {
        let mut bad_dir = sample();
        let last = bad_dir.len() - 1;
        bad_dir[last] = 9; // DIRINDEXES[1] = 9: no such directory
        assert!(matches!(
            parse_header(&bad_dir),
            Err(HeaderError::BadDirIndex { dir: 9, .. })
        ));
        assert_eq!(parse_header(&[0, 0]), Err(HeaderError::TooShort(2)));
        let unterminated = blob(&[(tag::NAME, TYPE_STRING, 1, b"bash".to_vec())]);
        assert_eq!(
            parse_header(&unterminated),
            Err(HeaderError::Unterminated(tag::NAME))
        );
        let wrong = blob(&[(tag::NAME, TYPE_INT32, 1, vec![0; 4])]);
        assert!(matches!(
            parse_header(&wrong),
            Err(HeaderError::WrongType { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_header(&bytes);
        }

        #[test]
        fn mutated_headers_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let mut b = sample();
            for (i, v) in flips {
                let at = i.index(b.len());
                b[at] = v;
            }
            let _ = parse_header(&b);
        }
    }
}
