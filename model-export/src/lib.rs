//! From a trained float model to what a device runs.
//!
//! The host hands this crate a float [`graph::Graph`] (ops in execution order, with named
//! parameter tensors) plus its weights and calibration statistics gathered by running the
//! model; this crate knows no training framework. Data flows:
//!
//! - [`calibration`]: per-node statistics of float activations on the noisy inputs the
//!   deployed sampler visits (timestep-aware), and range selection (min/max, percentile,
//!   MSE-optimal);
//! - [`quantize`]: the graph in the device runtime's terms ([`ddm_firmware::writer::ModelSpec`]),
//!   int8 (per-channel weights, per-tensor activations), fp16 or f32;
//! - [`export()`]: the blob and an [`ExportReport`] (sizes, per-layer SQNR); [`export_latent`]
//!   writes a latent model's denoiser and decoder into one blob;
//! - [`reference`](mod@reference): the device runtime on the host with every node's output readable (float
//!   reference, calibration without a framework, error analysis);
//! - [`onnx`]: the float model as an ONNX file (f32 or f16 parameters).
//!
//! ```no_run
//! # fn demo(graph: &ddm_export::graph::Graph, weights: &ddm_export::graph::Weights,
//! #         options: &ddm_export::ExportOptions) -> ddm_export::Result<()> {
//! use ddm_export::{export, Calibration, CalibrationConfig};
//! let mut calibration = Calibration::new(graph, CalibrationConfig::default());
//! ddm_export::reference::calibrate_with_sampler(
//!     graph, weights, &mut calibration, &options.schedule, &options.sampler, 8, 0)?;
//! let exported = export(graph, weights, &calibration, options)?;
//! println!("{}", exported.report);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod calibration;
mod error;
pub mod export;
pub mod graph;
pub mod onnx;
pub mod quantize;
pub mod reference;

pub use calibration::{Calibration, CalibrationConfig, RangeMethod};
pub use error::{Error, Result};
pub use export::{
    decoder_bytes, export, export_latent, time_groups_within, DecoderParts, DecoderReport, Export,
    ExportReport, LayerReport,
};
pub use quantize::ExportOptions;
