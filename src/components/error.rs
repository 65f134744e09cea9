//! The one error type of component discovery, shared by every package database.

use std::path::PathBuf;

/// A tree's components could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}
