//! The crate's one error type.

/// What can go wrong while building, checking, calibrating or exporting a graph.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The graph is malformed: a shape mismatch, a missing parameter, a dangling input.
    #[error("invalid graph: {0}")]
    InvalidGraph(String),
    /// Calibration data is missing or unusable (a node never observed, non-finite values, a
    /// calibration made for another graph).
    #[error("calibration: {0}")]
    Calibration(String),
    /// Export options are inconsistent with each other or with the graph.
    #[error("invalid export options: {0}")]
    InvalidOptions(String),
    /// The device runtime or its blob writer refused the model (a quantisation parameter out
    /// of range, an int8 bias that overflows, an invalid plan or schedule).
    #[error("device runtime: {0}")]
    Firmware(#[from] ddm_firmware::Error),
    /// The diffusion mathematics refused its arguments (schedule, timesteps, sampler).
    #[error("diffusion core: {0}")]
    Core(#[from] ddm_core::Error),
    /// The graph holds an operation this export target does not carry yet (the class
    /// embedding of a class-conditional model).
    #[error("not exportable: {0}")]
    Unsupported(String),
    /// Building, encoding or (in tests) running an ONNX model failed.
    #[error("onnx: {0}")]
    Onnx(String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
