//! The one error type of component discovery, shared by every package database.

use std::path::PathBuf;

/// A tree's components could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    /// A file of the tree could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file, as the source names it.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A package database (or another file read to assign components) is malformed or
    /// crafted.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file, as the source names it.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}
