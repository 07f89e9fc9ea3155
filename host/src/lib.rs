//! The host side of ddm: data sets, models, training, sampling and the `ddm` command line.
#![warn(missing_docs)]

pub mod data;
pub mod error;
pub mod fsutil;
pub mod npy;
pub mod oracle;
pub mod sampling;
pub mod schedule_args;

pub use error::{Error, Result};
