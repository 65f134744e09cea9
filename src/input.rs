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
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {location}not valid JSON for {what}: {source}")]
    Json {
        path: PathBuf,
        location: String,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{path}: {field}: {problem}")]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
    #[error("{path}: the file is empty")]
    Empty { path: PathBuf },
}

impl InputError {
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
