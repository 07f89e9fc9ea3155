//! Builds model blobs from owned descriptions (feature `std`): used by the exporter and the
//! tests.
//!
//! The caller describes the graph with already-quantised (int8) or float weights; the writer
//! derives everything that follows from the quantisation parameters, with the same helpers
//! the runtime documents ([`crate::quant`]): per-channel `(multiplier, shift)` pairs, the
//! input zero point folded into int8 biases, the SiLU tables, the add and concat rescaling. It
//! infers every node's shape, plans memory when no plan is given ([`plan_greedy_by_size`]),
//! checks the plan's liveness ([`check_plan`]), writes the bytes and finally parses them back with
//! [`Blob::parse`], so a blob it returns always loads.
//!
//! The memory planner (`plan`: TensorFlow Lite Micro's greedy by size over the tensors'
//! lifetimes) is the project's only one: the exporter calls it too.

mod encode;
mod plan;
mod shapes;
mod spec;

pub use encode::{seal, write_blob, write_latent_blob, write_network};
pub use plan::{
    check_plan, lifetimes, lower_bound, plan_greedy_by_size, plan_no_reuse, Buffer, Lifetimes,
    ALIGN,
};
pub use shapes::infer_shapes;
pub use spec::{Bias, MemoryPlan, ModelSpec, NodeSpec, OpSpec, ScheduleSpec, Weights};

use crate::error::Error;

/// The error of node `node` of a spec.
fn node_error(node: usize, reason: &'static str) -> Error {
    Error::InvalidNode {
        node: node as u32,
        reason,
    }
}
