//! The crate's one error type.

/// What can go wrong while building, checking or exporting a graph.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The graph is malformed: a shape mismatch, a missing parameter, a dangling input.
    #[error("invalid graph: {0}")]
    InvalidGraph(String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
