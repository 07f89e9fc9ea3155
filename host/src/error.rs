//! The host library's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the host library. Each variant names what failed and,
/// where there is one, the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
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
    /// A tensor computation (candle) failed: a shape or device error inside a model.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// The exporter refused a model: its graph is malformed, its weights do not fit it, or
    /// calibration, quantisation or the blob writer failed.
    #[error(transparent)]
    Graph(#[from] ddm_export::Error),
    /// The device runtime refused a blob or its settings, or failed while generating.
    #[error("device runtime: {0}")]
    Firmware(#[from] ddm_firmware::Error),
    /// Training produced a NaN or infinite loss (or gradient) and stopped; the run folder
    /// still holds the last good checkpoint, if one was written.
    #[error(
        "the training loss became {value} at step {step}; stopped without saving it. {}",
        match last_checkpoint {
            Some(saved) => format!(
                "The last good checkpoint (step {saved}) is in {}: lower --lr or set \
                 --grad-clip, then continue with --resume or start again",
                run_dir.display()
            ),
            None => "No checkpoint had been written yet: lower --lr or set --grad-clip".into(),
        }
    )]
    NonFiniteLoss {
        /// The training step (1-based) whose loss or gradient was not finite.
        step: u64,
        /// The offending value (NaN or infinite).
        value: f32,
        /// The step of the last complete checkpoint in the run folder, if any.
        last_checkpoint: Option<u64>,
        /// The run folder.
        run_dir: PathBuf,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
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
