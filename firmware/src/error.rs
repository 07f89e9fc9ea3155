//! The crate's one error type.

use core::fmt;

/// Why a blob was refused, a network could not run or a helper refused its arguments.
///
/// Nothing in this crate panics on bad input (an untrusted blob, a short arena, a wrong
/// buffer length): every check returns one of these, and every check a blob can fail happens
/// in [`Blob::parse`](crate::Blob::parse) or before a run touches the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The blob is shorter than its header or than the length the header declares.
    Truncated {
        /// Bytes the blob needs.
        needed: usize,
        /// Bytes it has.
        available: usize,
    },
    /// The first four bytes are not [`MAGIC`](crate::format::MAGIC).
    BadMagic,
    /// The blob was written in another format version.
    UnsupportedVersion {
        /// Version in the blob.
        found: u32,
        /// The newest version this runtime reads (it reads versions
        /// [`OLDEST_READ_VERSION`](crate::format::OLDEST_READ_VERSION) to this one).
        supported: u32,
    },
    /// The CRC-32 stored in the header does not match the blob's bytes.
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// The header or the section table is inconsistent (the text says what).
    Malformed(&'static str),
    /// A node of the graph is invalid.
    InvalidNode {
        /// Index of the node.
        node: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An entry of the tensor table is invalid.
    InvalidTensor {
        /// Index of the tensor.
        tensor: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The memory plan puts a node's output outside the arena or on top of its inputs.
    InvalidPlan {
        /// Index of the node.
        node: u32,
        /// What is wrong with its placement.
        reason: &'static str,
    },
    /// The schedule section (settings, sampler defaults or `alphas_cumprod`) is invalid.
    InvalidSchedule(&'static str),
    /// A quantisation parameter or a real multiplier is out of range (the text names it).
    InvalidQuantization(&'static str),
    /// The caller's arena is smaller than the blob and the settings need.
    ArenaTooSmall {
        /// Bytes needed (including alignment of the arena's start).
        required: usize,
        /// Bytes given.
        available: usize,
    },
    /// A caller buffer has the wrong number of elements.
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// Elements expected.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// The network produced NaN or an infinity (float blobs only: finite parameters that
    /// overflow).
    NonFiniteOutput {
        /// Training timestep of the evaluation.
        timestep: u32,
    },
    /// A class was requested that the model does not have: any class of an unconditional
    /// model (`classes` 0), or one at or above a conditional model's `classes`.
    InvalidClass {
        /// The class requested.
        class: u32,
        /// The model's number of classes (0: unconditional).
        classes: u32,
    },
    /// A model description given to the writer is inconsistent (the text says what).
    InvalidModel(&'static str),
    /// The diffusion mathematics refused its arguments (sampler settings, step count).
    Core(ddm_core::Error),
}

/// Result type of this crate.
pub type Result<T> = core::result::Result<T, Error>;

impl From<ddm_core::Error> for Error {
    /// A length mismatch keeps its own variant (it is the same check, [`ddm_core::check_len`]);
    /// every other error of the mathematics is [`Error::Core`].
    fn from(error: ddm_core::Error) -> Self {
        match error {
            ddm_core::Error::LengthMismatch {
                what,
                expected,
                actual,
            } => Error::LengthMismatch {
                what,
                expected,
                actual,
            },
            error => Error::Core(error),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated { needed, available } => {
                write!(f, "truncated blob: needs {needed} bytes, has {available}")
            }
            Error::BadMagic => write!(f, "not a ddm model blob (bad magic)"),
            Error::UnsupportedVersion { found, supported } => write!(
                f,
                "blob format version {found} is not supported (this runtime reads versions {}..={supported})",
                crate::format::OLDEST_READ_VERSION
            ),
            Error::CrcMismatch { stored, computed } => write!(
                f,
                "blob CRC mismatch: header says {stored:#010x}, bytes give {computed:#010x}"
            ),
            Error::Malformed(what) => write!(f, "malformed blob: {what}"),
            Error::InvalidNode { node, reason } => write!(f, "invalid node {node}: {reason}"),
            Error::InvalidTensor { tensor, reason } => {
                write!(f, "invalid tensor {tensor}: {reason}")
            }
            Error::InvalidPlan { node, reason } => {
                write!(f, "invalid memory plan for node {node}: {reason}")
            }
            Error::InvalidSchedule(what) => write!(f, "invalid schedule: {what}"),
            Error::InvalidQuantization(what) => write!(f, "invalid quantisation: {what}"),
            Error::ArenaTooSmall {
                required,
                available,
            } => write!(
                f,
                "arena too small: needs {required} bytes, has {available}"
            ),
            Error::LengthMismatch {
                what,
                expected,
                actual,
            } => write!(f, "{what} has {actual} elements, expected {expected}"),
            Error::NonFiniteOutput { timestep } => write!(
                f,
                "the network produced NaN or infinite values at timestep {timestep}"
            ),
            Error::InvalidClass { class, classes: 0 } => write!(
                f,
                "class {class} requested of an unconditional model (it has no classes)"
            ),
            Error::InvalidClass { class, classes } => write!(
                f,
                "class {class} is outside the model's classes 0..{}",
                classes - 1
            ),
            Error::InvalidModel(what) => write!(f, "invalid model description: {what}"),
            Error::Core(error) => write!(f, "{error}"),
        }
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Error::Core(error) => Some(error),
            _ => None,
        }
    }
}

/// [`ddm_core::check_len`] with this crate's error.
pub(crate) fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    Ok(ddm_core::check_len(what, expected, actual)?)
}
