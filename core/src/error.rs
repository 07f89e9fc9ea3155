//! The crate's one error type.

use core::fmt;

/// Why a core operation refused its arguments. Nothing in this crate panics on bad input;
/// every check that can fail returns one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// A caller buffer or table has the wrong number of elements.
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// The length the operation needs.
        expected: usize,
        /// The length it was given.
        actual: usize,
    },
    /// A parameter is outside its valid range (the text names it and the range).
    InvalidParameter(&'static str),
    /// `steps` inference steps cannot be chosen from `train_steps` training steps with the
    /// requested spacing and offset.
    InvalidStepCount {
        /// Requested number of inference steps.
        steps: usize,
        /// Number of training steps of the schedule.
        train_steps: usize,
    },
    /// The sampler has already taken its last step.
    Finished,
}

/// Result type of this crate.
pub type Result<T> = core::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::LengthMismatch {
                what,
                expected,
                actual,
            } => write!(f, "{what} has {actual} elements, expected {expected}"),
            Error::InvalidParameter(what) => write!(f, "invalid parameter: {what}"),
            Error::InvalidStepCount { steps, train_steps } => write!(
                f,
                "cannot choose {steps} inference steps out of {train_steps} training steps"
            ),
            Error::Finished => write!(f, "the sampler has already finished"),
        }
    }
}

impl core::error::Error for Error {}

/// Returns `Err(LengthMismatch)` unless `actual == expected`: the length check of every slice
/// argument here and in the device runtime.
///
/// # Errors
/// [`Error::LengthMismatch`] naming `what`.
pub fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            actual,
        })
    }
}
