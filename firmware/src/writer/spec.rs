//! The owned description of a model the writer turns into a blob.

use std::vec;
use std::vec::Vec;

use half::f16;

use crate::error::{Error, Result};
use crate::format::*;
use crate::quant::QuantParams;
use crate::settings::ModelSchedule;
use ddm_core::SamplerConfig;

/// Linear or convolution weights (`[out, in]` or `[out, in, k, k]`, row-major).
#[derive(Debug, Clone, PartialEq)]
pub enum Weights {
    /// f32 values (stored as f16 in an fp16 blob, rounding to nearest).
    F32(Vec<f32>),
    /// f16 values (widened exactly in an f32 blob).
    F16(Vec<f16>),
    /// int8 values with one symmetric scale per output channel
    /// ([`quantize_per_channel`](crate::quant::quantize_per_channel) makes them).
    Int8 {
        /// Quantised weights.
        values: Vec<i8>,
        /// Scale of each output channel.
        scales: Vec<f32>,
    },
}

/// Linear or convolution bias (`[out]`).
#[derive(Debug, Clone, PartialEq)]
pub enum Bias {
    /// f32 values (in an int8 blob: quantised at scale `input_scale weight_scale_c`).
    F32(Vec<f32>),
    /// f16 values.
    F16(Vec<f16>),
    /// int8 blobs: `i32` at scale `input_scale weight_scale_c`, without zero-point folding.
    I32(Vec<i32>),
}

/// One operation; node fields are indices of earlier nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum OpSpec {
    /// The noisy sample, of per-sample shape `shape` (`[C]` or `[C, H, W]`). Node 0 only.
    Input {
        /// Per-sample shape.
        shape: Vec<usize>,
    },
    /// Sinusoidal timestep embedding of length `dim`.
    TimeEmbedding {
        /// Output length (even).
        dim: usize,
        /// Longest period.
        max_period: f32,
    },
    /// A class embedding: row `y` of `table` for class `y`, the last row for "no class".
    ClassEmbedding {
        /// Number of classes (the table has `classes + 1` rows).
        classes: usize,
        /// The table `[classes + 1, dim]`, row-major (in an int8 blob quantised with the
        /// node's output parameters, which must be the same in every time group).
        table: Vec<f32>,
    },
    /// `y = W x + b`.
    Linear {
        /// Input node.
        input: usize,
        /// Output length.
        out_features: usize,
        /// Weights `[out, in]`.
        weight: Weights,
        /// Bias `[out]` (required in effect for int8: `None` means zeros).
        bias: Option<Bias>,
    },
    /// 2-D convolution with zero padding.
    Conv2d {
        /// Input node.
        input: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel size.
        kernel: usize,
        /// Stride (1 or 2).
        stride: usize,
        /// Zero padding on every side.
        padding: usize,
        /// Weights `[out, in, k, k]`.
        weight: Weights,
        /// Bias `[out]`.
        bias: Option<Bias>,
    },
    /// Group normalisation.
    GroupNorm {
        /// Input node.
        input: usize,
        /// Number of groups.
        groups: usize,
        /// Added to the variance.
        eps: f32,
        /// Per-channel scale.
        gamma: Vec<f32>,
        /// Per-channel shift.
        beta: Vec<f32>,
    },
    /// SiLU.
    Silu {
        /// Input node.
        input: usize,
    },
    /// Element-wise sum, or `[C]` broadcast onto `[C, H, W]`.
    Add {
        /// Left operand.
        lhs: usize,
        /// Right operand.
        rhs: usize,
    },
    /// Channel concatenation.
    Concat {
        /// Input nodes, in order.
        inputs: Vec<usize>,
    },
    /// Nearest 2x upsampling.
    Upsample2x {
        /// Input node.
        input: usize,
    },
    /// Same data, new shape.
    Reshape {
        /// Input node.
        input: usize,
        /// New per-sample shape.
        shape: Vec<usize>,
    },
}

impl OpSpec {
    /// The nodes this op reads.
    pub fn inputs(&self) -> Vec<usize> {
        match self {
            OpSpec::Input { .. } | OpSpec::TimeEmbedding { .. } | OpSpec::ClassEmbedding { .. } => {
                vec![]
            }
            OpSpec::Linear { input, .. }
            | OpSpec::Conv2d { input, .. }
            | OpSpec::GroupNorm { input, .. }
            | OpSpec::Silu { input }
            | OpSpec::Upsample2x { input }
            | OpSpec::Reshape { input, .. } => vec![*input],
            OpSpec::Add { lhs, rhs } => vec![*lhs, *rhs],
            OpSpec::Concat { inputs } => inputs.clone(),
        }
    }

    /// The input this op may run in place on (its output at exactly that input's offset):
    /// the input of `Silu` and `GroupNorm`, the `lhs` of `Add`; `None` for every other op.
    /// Memory planners use it; [`Blob::parse`] enforces the same rule.
    pub fn in_place_input(&self) -> Option<usize> {
        match self {
            OpSpec::GroupNorm { input, .. } | OpSpec::Silu { input } => Some(*input),
            OpSpec::Add { lhs, .. } => Some(*lhs),
            _ => None,
        }
    }
}

/// One node: its op and (int8 blobs) its output's quantisation parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// The operation.
    pub op: OpSpec,
    /// Output quantisation (int8 blobs): one entry for every time group of the model
    /// ([`ModelSpec::time_groups`]), or one per group, in group order. Empty for
    /// `Upsample2x` and `Reshape` inherits the input's (which they must keep anyway).
    /// Ignored by float blobs.
    pub quant: Vec<QuantParams>,
}

impl NodeSpec {
    /// A float node.
    pub fn new(op: OpSpec) -> Self {
        NodeSpec { op, quant: vec![] }
    }

    /// An int8 node with output parameters `quant` in every time group.
    pub fn quantized(op: OpSpec, quant: QuantParams) -> Self {
        NodeSpec {
            op,
            quant: vec![quant],
        }
    }

    /// An int8 node with output parameters `quant[g]` in time group `g`.
    pub fn quantized_per_group(op: OpSpec, quant: Vec<QuantParams>) -> Self {
        NodeSpec { op, quant }
    }
}

/// The schedule stored with the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSpec {
    /// Settings and prediction type.
    pub schedule: ModelSchedule,
    /// `alphas_cumprod` (`T` values); `None` computes it with
    /// [`ddm_core::ScheduleConfig::fill_alphas_cumprod`] (impossible for custom betas).
    pub alphas_cumprod: Option<Vec<f32>>,
}

impl ScheduleSpec {
    /// A schedule described by `config`, table computed by the core.
    pub fn from_config(config: ddm_core::ScheduleConfig, prediction: ddm_core::Prediction) -> Self {
        ScheduleSpec {
            schedule: ModelSchedule {
                betas: Some(config.betas),
                train_steps: config.train_steps as u32,
                zero_terminal_snr: config.zero_terminal_snr,
                prediction,
            },
            alphas_cumprod: None,
        }
    }

    /// The table to store.
    pub fn table(&self) -> Result<Vec<f32>> {
        if let Some(table) = &self.alphas_cumprod {
            if table.len() != self.schedule.train_steps as usize {
                return Err(Error::InvalidSchedule(
                    "alphas_cumprod must have train_steps entries",
                ));
            }
            return Ok(table.clone());
        }
        let config = self.schedule.config().ok_or(Error::InvalidSchedule(
            "custom betas need an explicit alphas_cumprod table",
        ))?;
        let mut table = vec![0.0f32; config.train_steps];
        config.fill_alphas_cumprod(&mut table)?;
        Ok(table)
    }
}

/// Byte offsets of every node's output in the activation arena.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Bytes of the arena.
    pub arena_bytes: usize,
    /// Offset of each node's output (a `Reshape` has its input's).
    pub offsets: Vec<usize>,
}

/// A whole model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Precision of weights and activations.
    pub precision: Precision,
    /// Nodes in execution order; node 0 is the `Input`.
    pub nodes: Vec<NodeSpec>,
    /// The output node (same shape as the input in a model blob; any shape in a network
    /// blob, [`write_network`](super::write_network)).
    pub output: usize,
    /// The training schedule.
    pub schedule: ScheduleSpec,
    /// Default sampler settings.
    pub sampler: SamplerConfig,
    /// Memory plan; `None` lets [`plan_greedy_by_size`](super::plan_greedy_by_size) compute one.
    pub plan: Option<MemoryPlan>,
    /// Time-group boundaries of an int8 model (ascending, each in `1..T`): `G - 1` of them for
    /// `G` sets of activation parameters ([`crate::format`], "Time-groups section"); empty
    /// for one set (and for float models).
    pub time_groups: Vec<u32>,
}

impl ModelSpec {
    /// Number of time groups: `time_groups.len() + 1`.
    pub fn group_count(&self) -> usize {
        self.time_groups.len() + 1
    }
}
