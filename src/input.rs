//! Reading input files: transparent gzip, and errors that name the file.
//!
//! Every file Strata reads (components, priors, histories) goes through here so that
//! `.gz` works everywhere and a bad file is always reported by its path.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// An input file could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file (or one line of it) is not the JSON expected.
    #[error("{path}: {location}not valid JSON for {what}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// `line N: ` for a JSON Lines file, else empty.
        location: String,
        /// What the JSON should have been.
        what: &'static str,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A field parses but its value cannot be.
    #[error("{path}: {field}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Where in it.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The file holds nothing.
    #[error("{path}: the file is empty")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

impl InputError {
    /// `problem` with `field` of the file at `path`.
    pub fn invalid(path: &Path, field: impl Into<String>, problem: impl Into<String>) -> Self {
        InputError::Invalid {
            path: path.to_path_buf(),
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Opens `path` for buffered reading, decompressing it when its name ends in `.gz`.
pub fn open(path: &Path) -> Result<Box<dyn BufRead>, InputError> {
    let io_err = |source| InputError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    Ok(if gz {
        Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    })
}

/// Reads a whole (possibly gzipped) file as UTF-8 text.
pub fn read_to_string(path: &Path) -> Result<String, InputError> {
    let mut text = String::new();
    open(path)?
        .read_to_string(&mut text)
        .map_err(|source| InputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if text.trim().is_empty() {
        return Err(InputError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

/// Parses one JSON document of type `T` from `text`; `line` (1-based) names the line of
/// a JSON Lines file in errors.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
    what: &'static str,
    line: Option<usize>,
) -> Result<T, InputError> {
    serde_json::from_str(text).map_err(|source| InputError::Json {
        path: path.to_path_buf(),
        location: line.map(|l| format!("line {l}: ")).unwrap_or_default(),
        what,
        source,
    })
}

/// Reads a JSON file (optionally gzipped) into `T`.
pub fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, InputError> {
    parse_json(path, &read_to_string(path)?, what, None)
}

/// Reads a JSON Lines file (optionally gzipped), one `T` per non-blank line.
pub fn read_json_lines<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<Vec<T>, InputError> {
    let mut items = Vec::new();
    for (i, line) in open(path)?.lines().enumerate() {
        let line = line.map_err(|source| InputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if !line.trim().is_empty() {
            items.push(parse_json(path, &line, what, Some(i + 1))?);
        }
    }
    if items.is_empty() {
        return Err(InputError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(items)
}

/// Sizes beyond this total are refused: no OS image is an exbibyte, and sums of
/// untrusted sizes must not overflow.
pub const MAX_TOTAL_SIZE: u64 = 1 << 60;

/// Checks that `sizes` add up to at most [`MAX_TOTAL_SIZE`].
pub fn check_total_size(
    path: &Path,
    field: &str,
    sizes: impl Iterator<Item = u64>,
) -> Result<(), InputError> {
    let mut total: u64 = 0;
    for s in sizes {
        total = total.saturating_add(s);
        if total > MAX_TOTAL_SIZE {
            return Err(InputError::invalid(
                path,
                field,
                "sizes add up to more than 1 EiB",
            ));
        }
    }
    Ok(())
}

/// Checks the optional `date` field of a file.
pub fn validate_date(path: &Path, date: Option<&str>) -> Result<(), InputError> {
    match date {
        Some(date) if parse_date(date).is_none() => Err(InputError::invalid(
            path,
            "date",
            format!("'{date}' is not an RFC 3339 timestamp or YYYY-MM-DD date"),
        )),
        _ => Ok(()),
    }
}

/// Parses an RFC 3339 timestamp or a plain `YYYY-MM-DD` date (taken as midnight UTC).
pub fn parse_date(text: &str) -> Option<i64> {
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts.as_second());
    }
    let date = text.parse::<jiff::civil::Date>().ok()?;
    let ts = date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(ts.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_in_both_forms() {
        assert_eq!(parse_date("1970-01-02"), Some(86_400));
        assert_eq!(parse_date("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_date("yesterday"), None);
    }
}
