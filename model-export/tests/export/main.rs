//! Round-trip tests of the exporter: calibration, quantisation, memory planning, blobs,
//! reports and ONNX in tract.

mod calibration;
mod common;
mod export;
mod latent;
mod onnx;
mod planner;
