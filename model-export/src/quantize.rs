//! From the float graph to the device runtime's model description ([`ModelSpec`]): weights in
//! the target precision and, for int8, every node's activation parameters.
//!
//! # int8 (post-training quantisation)
//!
//! - **Weights** of linear and convolution layers: per-output-channel symmetric int8
//!   ([`quantize_per_channel`]: scale `max |w_c| / 127`). Biases stay f32 here; the writer
//!   quantises them to i32 at scale `input_scale weight_scale_c` and folds the input zero
//!   point in. GroupNorm's affine parameters stay f32 (the runtime applies them in f32).
//! - **Activations**: per-tensor asymmetric int8, `real = scale (q - zero_point)`, from the
//!   node's calibrated float range ([`Calibration::range`] with the chosen [`RangeMethod`]),
//!   widened to include 0 so that zero padding and ReLU-like zeros are exact
//!   ([`QuantParams::from_range`]); one set per time group of the calibration
//!   ([`Calibration::with_time_groups`]), which the blob stores with the group boundaries.
//! - Rules per op:
//!   - `Input`: the calibrated range of `x_t` over the visited timesteps;
//!   - `TimeEmbedding`: `[-1, 1]`, the range of sine and cosine (no calibration needed);
//!   - `ClassEmbedding`: the range of its whole table, the same in every time group (its
//!     output is one of the rows, so every class, calibrated or not, is represented; the
//!     writer stores the rows quantised with these parameters);
//!   - `Reshape`, `Upsample2x`: their input's parameters (they move data without changing
//!     values, and the runtime requires it);
//!   - `Concat`: **every input keeps its own scale** (in the UNet, the upsampled path and the
//!     skip connection have very different ranges); the output gets the calibrated range of
//!     the concatenation, and the runtime rescales each input block to it
//!     ([`ddm_firmware::kernels::concat`]: a fixed-point multiplier per input, a plain copy
//!     when an input's parameters equal the output's);
//!   - `Linear`, `Conv2d`, `GroupNorm`, `Silu` (its 256-entry table maps the input's grid to
//!     the output's), `Add`: the calibrated range of their own output.
//!
//! # fp16 and f32
//!
//! Weights and biases as f32; the writer stores them as f16 (round to nearest) in fp16 blobs.
//! Activations are f32 in both; no calibration is used.

use ddm_firmware::quant::quantize_per_channel;
use ddm_firmware::writer::{Bias, ModelSpec, NodeSpec, OpSpec, ScheduleSpec, Weights as Values};
use ddm_firmware::{Precision, QuantParams, SamplerConfig};

use crate::calibration::{Calibration, RangeMethod};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Op, Weights};

/// Everything besides the graph, its weights and the calibration that an export needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// Precision of the blob.
    pub precision: Precision,
    /// How int8 activation ranges are chosen (ignored by float blobs).
    pub range: RangeMethod,
    /// The default sampler stored in the blob. Its `spacing` must be the spacing actually
    /// used (the host's `SamplingOptions::effective_spacing`), never an "unset" placeholder:
    /// the device has no notion of a default.
    pub sampler: SamplerConfig,
    /// The training schedule: settings, prediction type and the `alphas_cumprod` table the
    /// device samples with (`alphas_cumprod: None` computes it from the settings).
    pub schedule: ScheduleSpec,
}

/// The int8 parameters of node `id`'s output in each time group of the calibration (one
/// entry when they are the same in every group), empty for nodes that inherit their
/// input's.
fn activation_params(
    graph: &Graph,
    weights: &Weights,
    calibration: &Calibration,
    range: RangeMethod,
    id: NodeId,
) -> Result<Vec<QuantParams>> {
    let node = graph.node(id);
    let mut params = Vec::with_capacity(calibration.group_count());
    for group in 0..calibration.group_count() {
        let (low, high) = match node.op {
            Op::Reshape { .. } | Op::Upsample2x { .. } => return Ok(vec![]),
            Op::TimeEmbedding { .. } => (-1.0, 1.0),
            Op::ClassEmbedding { ref weight, .. } => {
                let table = tensor(weights, weight)?;
                let low = table.iter().copied().fold(f32::INFINITY, f32::min);
                let high = table.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                (low, high)
            }
            _ => calibration.range(id, group, range).map_err(|e| match e {
                Error::Calibration(reason) => {
                    Error::Calibration(format!("node {} ({}): {reason}", id.0, node.name))
                }
                other => other,
            })?,
        };
        params.push(QuantParams::from_range(low, high)?);
    }
    if params.windows(2).all(|w| w[0].same_as(&w[1])) {
        params.truncate(1);
    }
    Ok(params)
}

fn tensor<'w>(weights: &'w Weights, name: &str) -> Result<&'w [f32]> {
    weights
        .get(name)
        .map(|t| t.data.as_slice())
        .ok_or_else(|| Error::InvalidGraph(format!("missing weight {name}")))
}

/// Weights of a layer with `out` output channels in the blob's precision.
fn layer_weights(precision: Precision, values: &[f32], out: usize) -> Result<Values> {
    Ok(match precision {
        Precision::Int8 => {
            let mut q = vec![0i8; values.len()];
            let mut scales = vec![0.0f32; out];
            quantize_per_channel(values, out, &mut q, &mut scales)?;
            Values::Int8 { values: q, scales }
        }
        Precision::F16 | Precision::F32 => Values::F32(values.to_vec()),
    })
}

/// The runtime's description of `graph` with `weights` in `options.precision` (without a
/// memory plan). int8 needs a `calibration` of this graph in which every node whose range is
/// calibrated (see the module docs) was observed; float precisions ignore it.
///
/// Errors: the graph or weights do not validate, int8 without calibration, a calibration made
/// for another graph or missing a node, or a quantisation parameter out of the runtime's
/// range.
pub fn model_spec(
    graph: &Graph,
    weights: &Weights,
    calibration: Option<&Calibration>,
    options: &ExportOptions,
) -> Result<ModelSpec> {
    graph.validate()?;
    spec_of(graph, weights, calibration, options)
}

/// The runtime's description of a latent model's decoder `graph` (any output shape:
/// [`Graph::validate_mapping`]), for the decoder section of the model's blob
/// ([`ddm_firmware::writer::write_latent_blob`]) or a network blob of its own
/// ([`ddm_firmware::writer::write_network`]); as [`model_spec`] otherwise. Its `schedule`
/// and `sampler` are `options`', which a network blob does not store. int8 needs a
/// calibration with one time group (a decoder runs once, on the final latent).
///
/// Errors as [`model_spec`], and for a calibration with time groups.
pub fn decoder_spec(
    graph: &Graph,
    weights: &Weights,
    calibration: Option<&Calibration>,
    options: &ExportOptions,
) -> Result<ModelSpec> {
    graph.validate_mapping()?;
    if calibration.is_some_and(|c| c.group_count() != 1) {
        return Err(Error::Calibration(
            "a decoder is calibrated with one time group".into(),
        ));
    }
    spec_of(graph, weights, calibration, options)
}

/// [`model_spec`] and [`decoder_spec`] after their graph checks.
fn spec_of(
    graph: &Graph,
    weights: &Weights,
    calibration: Option<&Calibration>,
    options: &ExportOptions,
) -> Result<ModelSpec> {
    graph.validate_weights(weights)?;
    let calibration = match (options.precision, calibration) {
        (Precision::Int8, None) => {
            return Err(Error::Calibration("int8 export needs a calibration".into()))
        }
        (Precision::Int8, Some(c)) if c.node_count() != graph.nodes.len() => {
            return Err(Error::Calibration(format!(
                "the calibration has {} nodes, the graph {}",
                c.node_count(),
                graph.nodes.len()
            )))
        }
        (Precision::Int8, Some(c)) => Some(c),
        _ => None,
    };
    let mut nodes = Vec::with_capacity(graph.nodes.len());
    for (index, node) in graph.nodes.iter().enumerate() {
        let op = match &node.op {
            Op::Input => OpSpec::Input {
                shape: node.shape.clone(),
            },
            Op::TimeEmbedding { dim, max_period } => OpSpec::TimeEmbedding {
                dim: *dim,
                max_period: *max_period,
            },
            Op::ClassEmbedding { classes, weight } => OpSpec::ClassEmbedding {
                classes: *classes,
                table: tensor(weights, weight)?.to_vec(),
            },
            Op::Linear {
                input,
                weight,
                bias,
            } => OpSpec::Linear {
                input: input.0,
                out_features: node.shape[0],
                weight: layer_weights(options.precision, tensor(weights, weight)?, node.shape[0])?,
                bias: bias
                    .as_deref()
                    .map(|b| tensor(weights, b).map(|v| Bias::F32(v.to_vec())))
                    .transpose()?,
            },
            Op::Conv2d {
                input,
                weight,
                bias,
                stride,
                padding,
            } => {
                let kernel = weights
                    .get(weight)
                    .and_then(|t| t.shape.get(2).copied())
                    .ok_or_else(|| Error::InvalidGraph(format!("missing weight {weight}")))?;
                OpSpec::Conv2d {
                    input: input.0,
                    out_channels: node.shape[0],
                    kernel,
                    stride: *stride,
                    padding: *padding,
                    weight: layer_weights(
                        options.precision,
                        tensor(weights, weight)?,
                        node.shape[0],
                    )?,
                    bias: bias
                        .as_deref()
                        .map(|b| tensor(weights, b).map(|v| Bias::F32(v.to_vec())))
                        .transpose()?,
                }
            }
            Op::GroupNorm {
                input,
                groups,
                eps,
                weight,
                bias,
            } => OpSpec::GroupNorm {
                input: input.0,
                groups: *groups,
                eps: *eps,
                gamma: tensor(weights, weight)?.to_vec(),
                beta: tensor(weights, bias)?.to_vec(),
            },
            Op::Silu { input } => OpSpec::Silu { input: input.0 },
            Op::Add { lhs, rhs } => OpSpec::Add {
                lhs: lhs.0,
                rhs: rhs.0,
            },
            Op::Concat { inputs } => OpSpec::Concat {
                inputs: inputs.iter().map(|i| i.0).collect(),
            },
            Op::Upsample2x { input } => OpSpec::Upsample2x { input: input.0 },
            Op::Reshape { input, shape } => OpSpec::Reshape {
                input: input.0,
                shape: shape.clone(),
            },
        };
        let quant = match calibration {
            Some(c) => activation_params(graph, weights, c, options.range, NodeId(index))?,
            None => vec![],
        };
        nodes.push(NodeSpec { op, quant });
    }
    Ok(ModelSpec {
        precision: options.precision,
        nodes,
        output: graph.output.0,
        schedule: options.schedule.clone(),
        sampler: options.sampler,
        plan: None,
        time_groups: calibration.map_or(vec![], |c| c.time_groups().to_vec()),
    })
}
