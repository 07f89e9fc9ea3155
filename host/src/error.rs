//! The host library's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the host library. Each variant names what failed and,
/// where there is one, the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A data, spec or checkpoint file exists but its content is not what it must be.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An argument or option value is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The diffusion core refused its input.
    #[error(transparent)]
    Core(#[from] ddm_core::Error),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Corrupt`] for `path`.
    pub fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Result type of the host library.
pub type Result<T> = std::result::Result<T, Error>;
