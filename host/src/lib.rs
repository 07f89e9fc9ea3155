//! The host side of ddm: data sets, models, training, sampling and the `ddm` command line.
#![warn(missing_docs)]

pub mod data;
pub mod error;

pub use error::{Error, Result};
