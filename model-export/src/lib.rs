//! From a trained float model to what a device runs.
//!
//! The host hands this crate a float [`graph::Graph`] (ops in execution order, with named
//! parameter tensors) plus its weights and calibration statistics gathered by running the
//! model; this crate knows no training framework.
#![warn(missing_docs)]

mod error;
pub mod graph;

pub use error::{Error, Result};
