//! Builds model blobs from owned descriptions (feature `std`): used by the exporter and the
//! tests.
//!
//! The caller describes the graph with already-quantised (int8) or float weights; the writer
//! derives everything that follows from the quantisation parameters, with the same helpers
//! the runtime documents ([`crate::quant`]): per-channel `(multiplier, shift)` pairs, the
//! input zero point folded into int8 biases, the SiLU tables, the add and concat rescaling. It
//! infers every node's shape, plans memory when no plan is given ([`plan_memory`]), checks the
//! plan's liveness ([`check_plan`]), writes the bytes and finally parses them back with
//! [`Blob::parse`], so a blob it returns always loads.
//!
//! Memory planning for deployed models belongs to the exporter (`ddm-export`'s greedy-by-size
//! planner), which always passes `plan: Some(..)`; [`plan_memory`] is the simple fallback for
//! hand-written specs (this crate's tests and fuzz corpus).

use std::vec;
use std::vec::Vec;

use half::f16;

use crate::blob::{Blob, Shape};
use crate::error::{Error, Result};
use crate::format::*;
use crate::kernels::concat::concat_requant;
use crate::quant::{fold_input_zero_point, silu_lut, AddParams, QuantParams, Requant};
use ddm_core::SamplerConfig;

use crate::settings::{
    betas_code, prediction_code, sampler_code, spacing_code, variance_code, ModelSchedule,
};

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
            OpSpec::Input { .. } | OpSpec::TimeEmbedding { .. } => vec![],
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
    /// Output quantisation (int8 blobs; `None` for `Upsample2x` and `Reshape` inherits the
    /// input's, which they must keep anyway). Ignored by float blobs.
    pub quant: Option<QuantParams>,
}

impl NodeSpec {
    /// A float node.
    pub fn new(op: OpSpec) -> Self {
        NodeSpec { op, quant: None }
    }

    /// An int8 node with output parameters `quant`.
    pub fn quantized(op: OpSpec, quant: QuantParams) -> Self {
        NodeSpec {
            op,
            quant: Some(quant),
        }
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
    /// The output node (same shape as the input).
    pub output: usize,
    /// The training schedule.
    pub schedule: ScheduleSpec,
    /// Default sampler settings.
    pub sampler: SamplerConfig,
    /// Memory plan; `None` lets [`plan_memory`] compute one (the exporter always gives one).
    pub plan: Option<MemoryPlan>,
}

fn node_error(node: usize, reason: &'static str) -> Error {
    Error::InvalidNode {
        node: node as u32,
        reason,
    }
}

/// Output shapes of every node, inferred from the ops (errors name the first bad node).
pub fn infer_shapes(spec: &ModelSpec) -> Result<Vec<Shape>> {
    let mut shapes: Vec<Shape> = Vec::with_capacity(spec.nodes.len());
    for (index, node) in spec.nodes.iter().enumerate() {
        let fail = |reason| node_error(index, reason);
        let shape_of = |i: usize| -> Result<Shape> {
            shapes
                .get(i)
                .copied()
                .ok_or(fail("an input does not come before its node"))
        };
        let shape = match &node.op {
            OpSpec::Input { shape } => {
                if index != 0 {
                    return Err(fail("only node 0 may be the input"));
                }
                Shape::new(shape)
            }
            OpSpec::TimeEmbedding { dim, .. } => Shape::new(&[*dim]),
            OpSpec::Linear {
                out_features,
                input,
                ..
            } => {
                shape_of(*input)?;
                Shape::new(&[*out_features])
            }
            OpSpec::Conv2d {
                input,
                out_channels,
                kernel,
                stride,
                padding,
                ..
            } => {
                let i = shape_of(*input)?;
                let size = |n: usize| {
                    (n + 2 * padding)
                        .checked_sub(*kernel)
                        .filter(|_| (1..=2).contains(stride))
                        .map(|span| span / stride + 1)
                };
                match (i.rank(), size(i.height()), size(i.width())) {
                    (3, Some(h), Some(w)) => Shape::new(&[*out_channels, h, w]),
                    _ => None,
                }
            }
            OpSpec::GroupNorm { input, .. } | OpSpec::Silu { input } => Some(shape_of(*input)?),
            OpSpec::Add { lhs, .. } => Some(shape_of(*lhs)?),
            OpSpec::Concat { inputs } => {
                let first = shape_of(*inputs.first().ok_or(fail("concat needs inputs"))?)?;
                let mut channels = 0;
                for &i in inputs {
                    channels += shape_of(i)?.channels();
                }
                let (mut dims, rank) = first.dims();
                dims[0] = channels;
                Shape::new(&dims[..rank])
            }
            OpSpec::Upsample2x { input } => {
                let i = shape_of(*input)?;
                Shape::new(&[i.channels(), 2 * i.height(), 2 * i.width()])
            }
            OpSpec::Reshape { shape, .. } => Shape::new(shape),
        };
        shapes.push(shape.ok_or(fail("invalid output shape"))?);
    }
    Ok(shapes)
}

/// The node whose storage node `index` uses (follows `Reshape` aliases).
fn root(spec: &ModelSpec, mut index: usize) -> usize {
    while let Some(OpSpec::Reshape { input, .. }) = spec.nodes.get(index).map(|n| &n.op) {
        if *input >= index {
            break;
        }
        index = *input;
    }
    index
}

/// For each storage root, the last node that reads it or an alias of it (`nodes.len()` for
/// the output, which must survive the run).
fn last_uses(spec: &ModelSpec) -> Vec<usize> {
    let n = spec.nodes.len();
    let mut last: Vec<usize> = (0..n).collect();
    for (index, node) in spec.nodes.iter().enumerate() {
        for input in node.op.inputs() {
            let r = root(spec, input);
            if let Some(slot) = last.get_mut(r) {
                *slot = (*slot).max(index);
            }
        }
    }
    if let Some(slot) = last.get_mut(root(spec, spec.output)) {
        *slot = n;
    }
    last
}

fn activation_len(spec: &ModelSpec, shape: &Shape) -> usize {
    shape.elements() * spec.precision.activation_bytes()
}

/// A first-fit memory plan: each output goes to the lowest offset that overlaps no tensor
/// still needed; a tensor is freed after its last reader; `Silu`, `GroupNorm` and `Add`
/// (`lhs`) reuse their input's storage when that input dies at them; `Reshape` aliases.
///
/// The fallback for specs without a plan (tests, the fuzz corpus). Deployed blobs get their
/// plan from the exporter (`ddm_export::planner`, greedy by size, which never needs more
/// than this on the UNet-like graphs its tests compare) and [`check_plan`] validates both.
pub fn plan_memory(spec: &ModelSpec) -> Result<MemoryPlan> {
    const ALIGN: usize = 4;
    let shapes = infer_shapes(spec)?;
    let last = last_uses(spec);
    let n = spec.nodes.len();
    let mut offsets = vec![0usize; n];
    // Live allocations: (owner root, offset, bytes).
    let mut live: Vec<(usize, usize, usize)> = Vec::new();
    let mut arena_bytes = 0usize;
    for (index, node) in spec.nodes.iter().enumerate() {
        if let OpSpec::Reshape { input, .. } = node.op {
            offsets[index] = *offsets.get(input).ok_or(node_error(index, "input"))?;
            continue;
        }
        let size = align_up(activation_len(spec, &shapes[index]), ALIGN)
            .ok_or(node_error(index, "size"))?;
        let other_inputs: Vec<usize> = node.op.inputs().iter().map(|&i| root(spec, i)).collect();
        let in_place = node
            .op
            .in_place_input()
            .map(|i| root(spec, i))
            .filter(|&r| {
                last[r] == index
                    && other_inputs.iter().filter(|&&o| o == r).count() == 1
                    && live
                        .iter()
                        .any(|&(owner, _, bytes)| owner == r && bytes == size)
            });
        if let Some(r) = in_place {
            let entry = live
                .iter_mut()
                .find(|(owner, _, _)| *owner == r)
                .ok_or(node_error(index, "plan"))?;
            entry.0 = index;
            offsets[index] = entry.1;
        } else {
            live.sort_by_key(|&(_, offset, _)| offset);
            let mut offset = 0usize;
            for &(_, start, bytes) in &live {
                if offset + size <= start {
                    break;
                }
                offset = offset.max(align_up(start + bytes, ALIGN).unwrap_or(usize::MAX));
            }
            live.push((index, offset, size));
            offsets[index] = offset;
            arena_bytes = arena_bytes.max(offset + size);
        }
        live.retain(|&(owner, _, _)| last[owner] > index);
    }
    Ok(MemoryPlan {
        arena_bytes,
        offsets,
    })
}

/// Checks that `plan` never overwrites a tensor that is still needed: when node `i` writes
/// its output, it overlaps no earlier output read after `i` (or the network output). The
/// runtime's own checks (bounds, alignment, in-place rules) happen when the blob is parsed.
pub fn check_plan(spec: &ModelSpec, plan: &MemoryPlan) -> Result<()> {
    let shapes = infer_shapes(spec)?;
    let last = last_uses(spec);
    if plan.offsets.len() != spec.nodes.len() {
        return Err(Error::InvalidModel("the plan needs one offset per node"));
    }
    let region = |i: usize| (plan.offsets[i], activation_len(spec, &shapes[i]));
    for i in 0..spec.nodes.len() {
        if matches!(spec.nodes[i].op, OpSpec::Reshape { .. }) {
            continue;
        }
        let (oi, li) = region(i);
        for (j, &last_use) in last.iter().enumerate().take(i) {
            if root(spec, j) != j || last_use <= i {
                continue;
            }
            let (oj, lj) = region(j);
            if oi < oj + lj && oj < oi + li {
                return Err(Error::InvalidPlan {
                    node: i as u32,
                    reason: "output overwrites a tensor that is still needed",
                });
            }
        }
    }
    Ok(())
}

/// Tensors collected for the tensors section.
#[derive(Default)]
struct Tensors {
    entries: Vec<(DType, Vec<u8>)>,
}

impl Tensors {
    fn push(&mut self, dtype: DType, bytes: Vec<u8>) -> u32 {
        self.entries.push((dtype, bytes));
        (self.entries.len() - 1) as u32
    }

    fn f32s(&mut self, values: &[f32]) -> u32 {
        self.push(
            DType::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    fn f16s(&mut self, values: impl Iterator<Item = f16>) -> u32 {
        self.push(DType::F16, values.flat_map(|v| v.to_le_bytes()).collect())
    }

    fn i32s(&mut self, values: &[i32]) -> u32 {
        self.push(
            DType::I32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    fn i8s(&mut self, values: &[i8]) -> u32 {
        self.push(DType::I8, values.iter().map(|&v| v as u8).collect())
    }

    fn requant(&mut self, pairs: &[Requant]) -> u32 {
        let words: Vec<i32> = pairs.iter().flat_map(|r| [r.multiplier, r.shift]).collect();
        self.i32s(&words)
    }

    /// Float weights or biases in the blob's float precision.
    fn float(&mut self, precision: Precision, values: FloatValues<'_>) -> u32 {
        match (precision, values) {
            (Precision::F16, FloatValues::F32(v)) => self.f16s(v.iter().map(|&x| f16::from_f32(x))),
            (Precision::F16, FloatValues::F16(v)) => self.f16s(v.iter().copied()),
            (_, FloatValues::F32(v)) => self.f32s(v),
            (_, FloatValues::F16(v)) => {
                let widened: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
                self.f32s(&widened)
            }
        }
    }
}

#[derive(Clone, Copy)]
enum FloatValues<'v> {
    F32(&'v [f32]),
    F16(&'v [f16]),
}

/// A node record under construction.
struct Record([u32; NODE_WORDS]);

impl Record {
    fn new(code: OpCode, shape: &Shape) -> Self {
        let mut words = [0u32; NODE_WORDS];
        let (dims, rank) = shape.dims();
        words[0] = code.code();
        words[1] = rank as u32;
        words[2] = dims[0] as u32;
        words[3] = if rank == 3 { dims[1] as u32 } else { 1 };
        words[4] = if rank == 3 { dims[2] as u32 } else { 1 };
        for word in &mut words[5..10] {
            *word = NONE;
        }
        Record(words)
    }
}

/// Everything the int8 and float paths need to encode one layer's weights.
struct LayerContext<'s> {
    index: usize,
    precision: Precision,
    input_quant: Option<QuantParams>,
    output_quant: Option<QuantParams>,
    out_channels: usize,
    fan_in: usize,
    weight: &'s Weights,
    bias: Option<&'s Bias>,
}

/// Writes weight, bias and requantisation tensors; returns `(t0, t1, t2)`.
fn encode_layer(tensors: &mut Tensors, layer: LayerContext<'_>) -> Result<(u32, u32, u32)> {
    let fail = |reason| node_error(layer.index, reason);
    let expected = layer.out_channels * layer.fan_in;
    match (layer.precision, layer.weight) {
        (Precision::Int8, Weights::Int8 { values, scales }) => {
            let (input, output) = match (layer.input_quant, layer.output_quant) {
                (Some(i), Some(o)) => (i, o),
                _ => return Err(fail("int8 layers need input and output quantisation")),
            };
            if values.len() != expected || scales.len() != layer.out_channels {
                return Err(fail("weights or scales have the wrong length"));
            }
            if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(fail("weight scales must be finite and > 0"));
            }
            let raw: Vec<i64> = match layer.bias {
                None => vec![0; layer.out_channels],
                Some(Bias::I32(b)) if b.len() == layer.out_channels => {
                    b.iter().map(|&v| i64::from(v)).collect()
                }
                Some(Bias::F32(b)) if b.len() == layer.out_channels => b
                    .iter()
                    .zip(scales)
                    .map(|(&v, &s)| {
                        let q = libm::round(f64::from(v) / (f64::from(input.scale) * f64::from(s)));
                        q as i64
                    })
                    .collect(),
                _ => return Err(fail("int8 bias must be i32 or f32 of length out")),
            };
            let mut folded = Vec::with_capacity(layer.out_channels);
            let mut requant = Vec::with_capacity(layer.out_channels);
            for ((row, &scale), &bias) in values
                .chunks_exact(layer.fan_in.max(1))
                .zip(scales)
                .zip(&raw)
            {
                let bias = i32::try_from(bias).map_err(|_| fail("int8 bias overflows i32"))?;
                folded.push(fold_input_zero_point(bias, input.zero_point, row)?);
                let real = f64::from(input.scale) * f64::from(scale) / f64::from(output.scale);
                requant.push(Requant::from_real(real)?);
            }
            Ok((
                tensors.i8s(values),
                tensors.i32s(&folded),
                tensors.requant(&requant),
            ))
        }
        (Precision::Int8, _) => Err(fail("int8 blobs need int8 weights")),
        (_, Weights::Int8 { .. }) => Err(fail("float blobs need float weights")),
        (precision, weight) => {
            let values = match weight {
                Weights::F32(v) => FloatValues::F32(v),
                Weights::F16(v) => FloatValues::F16(v),
                Weights::Int8 { .. } => return Err(fail("float blobs need float weights")),
            };
            let len = match values {
                FloatValues::F32(v) => v.len(),
                FloatValues::F16(v) => v.len(),
            };
            if len != expected {
                return Err(fail("weights have the wrong length"));
            }
            let t0 = tensors.float(precision, values);
            let t1 = match layer.bias {
                None => NONE,
                Some(Bias::F32(b)) if b.len() == layer.out_channels => {
                    tensors.float(precision, FloatValues::F32(b))
                }
                Some(Bias::F16(b)) if b.len() == layer.out_channels => {
                    tensors.float(precision, FloatValues::F16(b))
                }
                _ => return Err(fail("float bias must be f32 or f16 of length out")),
            };
            Ok((t0, t1, NONE))
        }
    }
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn pad_to(out: &mut Vec<u8>, align: usize) {
    while !out.len().is_multiple_of(align) {
        out.push(0);
    }
}

/// Builds the blob of `spec` and checks it parses.
pub fn write_blob(spec: &ModelSpec) -> Result<Vec<u8>> {
    let n = spec.nodes.len();
    if n == 0 || n > MAX_NODES {
        return Err(Error::InvalidModel("a model needs 1..=4096 nodes"));
    }
    if spec.output >= n {
        return Err(Error::InvalidModel("the output node does not exist"));
    }
    let int8 = spec.precision == Precision::Int8;
    let shapes = infer_shapes(spec)?;

    // Quantisation parameters (int8): inherited through upsample and reshape.
    let mut quant: Vec<Option<QuantParams>> = Vec::with_capacity(n);
    for (index, node) in spec.nodes.iter().enumerate() {
        let q = match (&node.op, node.quant) {
            (_, Some(q)) => Some(q),
            (OpSpec::Upsample2x { input } | OpSpec::Reshape { input, .. }, None) => {
                quant.get(*input).copied().flatten()
            }
            _ => None,
        };
        if int8 {
            q.ok_or(node_error(index, "int8 nodes need quantisation parameters"))?
                .validate()?;
        }
        quant.push(q);
    }
    let quant_of = |i: usize| quant.get(i).copied().flatten();

    let mut tensors = Tensors::default();
    let mut records = Vec::with_capacity(n);
    let mut list: Vec<u32> = Vec::new();
    let mut add_params = vec![AddParams::default(); n];
    for (index, node) in spec.nodes.iter().enumerate() {
        let shape = shapes[index];
        let fail = |reason| node_error(index, reason);
        let record = match &node.op {
            OpSpec::Input { .. } => Record::new(OpCode::Input, &shape),
            OpSpec::TimeEmbedding { max_period, .. } => {
                let mut r = Record::new(OpCode::TimeEmbedding, &shape);
                r.0[10] = max_period.to_bits();
                r
            }
            OpSpec::Linear {
                input,
                out_features,
                weight,
                bias,
            } => {
                let mut r = Record::new(OpCode::Linear, &shape);
                let (t0, t1, t2) = encode_layer(
                    &mut tensors,
                    LayerContext {
                        index,
                        precision: spec.precision,
                        input_quant: quant_of(*input),
                        output_quant: quant_of(index),
                        out_channels: *out_features,
                        fan_in: shapes.get(*input).ok_or(fail("input"))?.elements(),
                        weight,
                        bias: bias.as_ref(),
                    },
                )?;
                r.0[5] = *input as u32;
                r.0[7..10].copy_from_slice(&[t0, t1, t2]);
                r
            }
            OpSpec::Conv2d {
                input,
                out_channels,
                kernel,
                stride,
                padding,
                weight,
                bias,
            } => {
                let mut r = Record::new(OpCode::Conv2d, &shape);
                let in_channels = shapes.get(*input).ok_or(fail("input"))?.channels();
                let (t0, t1, t2) = encode_layer(
                    &mut tensors,
                    LayerContext {
                        index,
                        precision: spec.precision,
                        input_quant: quant_of(*input),
                        output_quant: quant_of(index),
                        out_channels: *out_channels,
                        fan_in: in_channels * kernel * kernel,
                        weight,
                        bias: bias.as_ref(),
                    },
                )?;
                r.0[5] = *input as u32;
                r.0[7..10].copy_from_slice(&[t0, t1, t2]);
                r.0[10..13].copy_from_slice(&[*kernel as u32, *stride as u32, *padding as u32]);
                r
            }
            OpSpec::GroupNorm {
                input,
                groups,
                eps,
                gamma,
                beta,
            } => {
                let mut r = Record::new(OpCode::GroupNorm, &shape);
                r.0[5] = *input as u32;
                r.0[7] = tensors.f32s(gamma);
                r.0[8] = tensors.f32s(beta);
                r.0[10] = *groups as u32;
                r.0[11] = eps.to_bits();
                r
            }
            OpSpec::Silu { input } => {
                let mut r = Record::new(OpCode::Silu, &shape);
                r.0[5] = *input as u32;
                if int8 {
                    let (i, o) = (quant_of(*input), quant_of(index));
                    let (i, o) = i.zip(o).ok_or(fail("SiLU needs quantisation"))?;
                    r.0[7] = tensors.i8s(&silu_lut(i, o));
                }
                r
            }
            OpSpec::Add { lhs, rhs } => {
                let mut r = Record::new(OpCode::Add, &shape);
                r.0[5] = *lhs as u32;
                r.0[6] = *rhs as u32;
                if int8 {
                    let q = |i| quant_of(i).ok_or(fail("add needs quantisation"));
                    add_params[index] = AddParams::new(q(*lhs)?, q(*rhs)?, q(index)?)?;
                }
                r
            }
            OpSpec::Concat { inputs } => {
                let mut r = Record::new(OpCode::Concat, &shape);
                r.0[5] = list.len() as u32;
                r.0[6] = inputs.len() as u32;
                list.extend(inputs.iter().map(|&i| i as u32));
                if int8 {
                    let out = quant_of(index).ok_or(fail("concat needs quantisation"))?;
                    let mut pairs = Vec::with_capacity(inputs.len());
                    for &i in inputs {
                        let q = quant_of(i).ok_or(fail("concat needs quantisation"))?;
                        pairs.push(concat_requant(q.scale, out.scale)?);
                    }
                    r.0[7] = tensors.requant(&pairs);
                }
                r
            }
            OpSpec::Upsample2x { input } => {
                let mut r = Record::new(OpCode::Upsample2x, &shape);
                r.0[5] = *input as u32;
                r
            }
            OpSpec::Reshape { input, .. } => {
                let mut r = Record::new(OpCode::Reshape, &shape);
                r.0[5] = *input as u32;
                r
            }
        };
        records.push(record);
    }

    let plan = match &spec.plan {
        Some(plan) => plan.clone(),
        None => plan_memory(spec)?,
    };
    check_plan(spec, &plan)?;

    // Sections.
    let mut graph = Vec::new();
    put_u32(&mut graph, n as u32);
    put_u32(&mut graph, spec.output as u32);
    put_u32(&mut graph, list.len() as u32);
    put_u32(&mut graph, 0);
    for record in &records {
        for &word in &record.0 {
            put_u32(&mut graph, word);
        }
    }
    for &entry in &list {
        put_u32(&mut graph, entry);
    }

    let mut tensor_section = Vec::new();
    put_u32(&mut tensor_section, tensors.entries.len() as u32);
    tensor_section.extend_from_slice(&[0; 12]);
    let table_at = tensor_section.len();
    tensor_section.resize(table_at + TENSOR_ENTRY_LEN * tensors.entries.len(), 0);
    pad_to(&mut tensor_section, TENSOR_ALIGN);
    for (i, (dtype, bytes)) in tensors.entries.iter().enumerate() {
        let offset = tensor_section.len();
        tensor_section.extend_from_slice(bytes);
        pad_to(&mut tensor_section, TENSOR_ALIGN);
        let at = table_at + i * TENSOR_ENTRY_LEN;
        let entry = [
            dtype.code(),
            offset as u32,
            (bytes.len() / dtype.size()) as u32,
            0,
        ];
        for (k, word) in entry.iter().enumerate() {
            tensor_section[at + 4 * k..at + 4 * k + 4].copy_from_slice(&word.to_le_bytes());
        }
    }

    let mut quant_section = Vec::new();
    if int8 {
        for (index, params) in add_params.iter().enumerate() {
            let q = quant_of(index).ok_or(node_error(index, "quantisation"))?;
            put_u32(&mut quant_section, q.scale.to_bits());
            put_u32(&mut quant_section, q.zero_point as u32);
            for r in [params.lhs, params.rhs, params.output] {
                put_u32(&mut quant_section, r.multiplier as u32);
                put_u32(&mut quant_section, r.shift as u32);
            }
        }
    }

    let mut plan_section = Vec::new();
    let arena_bytes =
        u32::try_from(plan.arena_bytes).map_err(|_| Error::InvalidModel("arena too large"))?;
    put_u32(&mut plan_section, arena_bytes);
    plan_section.extend_from_slice(&[0; 12]);
    for &offset in &plan.offsets {
        let offset = u32::try_from(offset).map_err(|_| Error::InvalidModel("offset too large"))?;
        put_u32(&mut plan_section, offset);
    }

    let table = spec.schedule.table()?;
    let schedule = &spec.schedule.schedule;
    let sampler = &spec.sampler;
    let mut schedule_section = Vec::new();
    let (beta_kind, a, b) = betas_code(schedule.betas);
    put_u32(&mut schedule_section, beta_kind);
    put_u32(&mut schedule_section, schedule.train_steps);
    schedule_section.extend_from_slice(&a.to_le_bytes());
    schedule_section.extend_from_slice(&b.to_le_bytes());
    put_u32(&mut schedule_section, u32::from(schedule.zero_terminal_snr));
    put_u32(&mut schedule_section, prediction_code(schedule.prediction));
    put_u32(&mut schedule_section, sampler_code(sampler.kind));
    put_u32(&mut schedule_section, sampler.steps);
    put_u32(&mut schedule_section, spacing_code(sampler.spacing));
    put_u32(&mut schedule_section, sampler.steps_offset);
    put_u32(&mut schedule_section, sampler.eta.to_bits());
    put_u32(&mut schedule_section, variance_code(sampler.variance));
    put_u32(
        &mut schedule_section,
        u32::from(sampler.clip_sample.is_some()),
    );
    put_u32(
        &mut schedule_section,
        sampler.clip_sample.map_or(0, f32::to_bits),
    );
    put_u32(
        &mut schedule_section,
        u32::from(sampler.first_order_penultimate),
    );
    schedule_section.extend_from_slice(&[0; 12]);
    for value in &table {
        schedule_section.extend_from_slice(&value.to_le_bytes());
    }

    let mut sections: Vec<(u32, Vec<u8>)> =
        vec![(SECTION_GRAPH, graph), (SECTION_TENSORS, tensor_section)];
    if int8 {
        sections.push((SECTION_QUANT, quant_section));
    }
    sections.push((SECTION_PLAN, plan_section));
    sections.push((SECTION_SCHEDULE, schedule_section));

    let mut blob = Vec::new();
    blob.extend_from_slice(&MAGIC);
    put_u32(&mut blob, FORMAT_VERSION);
    put_u32(&mut blob, 0); // CRC, filled in below
    put_u32(&mut blob, 0); // total length, filled in below
    put_u32(&mut blob, spec.precision.code());
    put_u32(&mut blob, sections.len() as u32);
    put_u32(&mut blob, 0);
    put_u32(&mut blob, 0);
    let table_at = blob.len();
    blob.resize(table_at + SECTION_ENTRY_LEN * sections.len(), 0);
    for (i, (id, bytes)) in sections.iter().enumerate() {
        pad_to(&mut blob, SECTION_ALIGN);
        let offset = blob.len();
        blob.extend_from_slice(bytes);
        let at = table_at + i * SECTION_ENTRY_LEN;
        for (k, word) in [*id, offset as u32, bytes.len() as u32, 0]
            .iter()
            .enumerate()
        {
            blob[at + 4 * k..at + 4 * k + 4].copy_from_slice(&word.to_le_bytes());
        }
    }
    let total = u32::try_from(blob.len()).map_err(|_| Error::InvalidModel("blob too large"))?;
    blob[12..16].copy_from_slice(&total.to_le_bytes());
    seal(&mut blob);
    Blob::parse(&blob)?;
    Ok(blob)
}

/// Recomputes and stores the CRC of `blob` (after editing its bytes).
pub fn seal(blob: &mut [u8]) {
    if blob.len() < HEADER_LEN {
        return;
    }
    let total = u32::from_le_bytes([blob[12], blob[13], blob[14], blob[15]]) as usize;
    let end = total.clamp(CRC_START, blob.len());
    let crc = CRC32.checksum(&blob[CRC_START..end]);
    blob[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}
