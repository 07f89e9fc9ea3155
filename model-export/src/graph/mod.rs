//! The float graph: the contract between the trainer and the exporter.
//!
//! A [`Graph`] is a list of [`Node`]s in execution order. Each node applies one [`Op`] to
//! earlier nodes and has a known per-sample output shape (the batch dimension is implicit).
//! Parameters are named tensors ([`ParamSpec`]) referenced by the ops; their values live in
//! [`Weights`]. These ops are the ones the device runtime implements, so every graph that
//! validates is deployable as a blob (the ONNX export refuses the class embedding of
//! class-conditional models with [`Error::Unsupported`](crate::Error): it has no class input).
//!
//! Layouts: vectors are `[C]`, feature maps `[C, H, W]` (channel-major). Linear weights are
//! `[out, in]`, convolution weights `[out, in, k, k]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use ddm_firmware::blob::Shape;
use ddm_firmware::shape_rule::{ConcatShape, ShapeOp};

use crate::error::{Error, Result};

mod builder;

pub use builder::GraphBuilder;

/// Index of a node in [`Graph::nodes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub usize);

/// One operation. Parameter fields hold the names of tensors in [`Graph::params`].
///
/// Serialised externally tagged (`{"conv2d": {...}}`): internally tagged or flattened enums
/// break with serde_json's `arbitrary_precision` feature, which dependencies may enable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// The noisy sample `x_t`.
    Input,
    /// Sinusoidal embedding of the timestep `t`: `[sin(t f_i), cos(t f_i)]` for
    /// `f_i = exp(-ln(max_period) i / (dim / 2))`, `i < dim / 2`. Output `[dim]`, `dim` even.
    TimeEmbedding {
        /// Output length.
        dim: usize,
        /// Longest period (10000 in DDPM).
        max_period: f32,
    },
    /// The requested class's embedding: row `y` of `weight` (`[classes + 1, dim]`) for a
    /// class `y < classes`, its last row ("no class") for an unconditional prediction, as in
    /// classifier-free guidance. Output `[dim]`.
    ClassEmbedding {
        /// Number of classes.
        classes: usize,
        /// The table `[classes + 1, dim]`.
        weight: String,
    },
    /// `y = W x + b` on a vector.
    Linear {
        /// Input node (a vector).
        input: NodeId,
        /// Weight `[out, in]`.
        weight: String,
        /// Optional bias `[out]`.
        bias: Option<String>,
    },
    /// 2-D convolution, square kernel `k`, zero padding, no dilation, no groups.
    Conv2d {
        /// Input feature map.
        input: NodeId,
        /// Weight `[out, in, k, k]`.
        weight: String,
        /// Optional bias `[out]`.
        bias: Option<String>,
        /// Stride (1 or 2).
        stride: usize,
        /// Zero padding on every side.
        padding: usize,
    },
    /// Group normalisation over `(C / groups, H, W)` per group, then `gamma x + beta` per
    /// channel. Also applies to vectors `[C]` (as `H = W = 1`).
    GroupNorm {
        /// Input.
        input: NodeId,
        /// Number of groups; divides `C`.
        groups: usize,
        /// Added to the variance.
        eps: f32,
        /// Scale `[C]`.
        weight: String,
        /// Shift `[C]`.
        bias: String,
    },
    /// `x * sigmoid(x)`.
    Silu {
        /// Input.
        input: NodeId,
    },
    /// Element-wise sum. `rhs` has the shape of `lhs`, or is a vector `[C]` added to every
    /// position of a feature map `[C, H, W]` (how time embeddings enter a block).
    Add {
        /// Left operand (its shape is the output's).
        lhs: NodeId,
        /// Right operand.
        rhs: NodeId,
    },
    /// Concatenation along the channel axis (axis 0); the other dimensions must agree.
    Concat {
        /// Inputs, in order.
        inputs: Vec<NodeId>,
    },
    /// Nearest-neighbour upsampling by 2 in both spatial dimensions.
    Upsample2x {
        /// Input feature map.
        input: NodeId,
    },
    /// A new shape with the same number of elements (no data movement).
    Reshape {
        /// Input.
        input: NodeId,
        /// New per-sample shape.
        shape: Vec<usize>,
    },
}

impl Op {
    /// The nodes this op reads.
    pub fn inputs(&self) -> Vec<NodeId> {
        match self {
            Op::Input | Op::TimeEmbedding { .. } | Op::ClassEmbedding { .. } => vec![],
            Op::Linear { input, .. }
            | Op::Conv2d { input, .. }
            | Op::GroupNorm { input, .. }
            | Op::Silu { input }
            | Op::Upsample2x { input }
            | Op::Reshape { input, .. } => vec![*input],
            Op::Add { lhs, rhs } => vec![*lhs, *rhs],
            Op::Concat { inputs } => inputs.clone(),
        }
    }

    /// The parameter tensors this op reads.
    pub fn params(&self) -> Vec<&str> {
        match self {
            Op::Linear { weight, bias, .. } | Op::Conv2d { weight, bias, .. } => {
                let mut names = vec![weight.as_str()];
                names.extend(bias.as_deref());
                names
            }
            Op::GroupNorm { weight, bias, .. } => vec![weight.as_str(), bias.as_str()],
            Op::ClassEmbedding { weight, .. } => vec![weight.as_str()],
            _ => vec![],
        }
    }

    /// Multiply-accumulates per sample for an output of shape `output_shape` (0 for ops that
    /// do no multiplication by weights).
    pub fn macs(&self, graph: &Graph, output_shape: &[usize]) -> u64 {
        let elements = |shape: &[usize]| shape.iter().product::<usize>() as u64;
        match self {
            Op::Linear { input, .. } => {
                elements(&graph.node(*input).shape) * elements(output_shape)
            }
            Op::Conv2d { input, weight, .. } => {
                let kernel = graph.param(weight).map_or(0, |p| p.shape[2] * p.shape[3]) as u64;
                let in_channels = graph.node(*input).shape[0] as u64;
                elements(output_shape) * in_channels * kernel
            }
            _ => 0,
        }
    }
}

/// One node: an op, its per-sample output shape and a readable name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique readable name, e.g. `down.0.conv1`.
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Per-sample output shape.
    pub shape: Vec<usize>,
}

/// A named parameter tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// Name, unique in the graph.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// How the trainer initialises it.
    pub init: Init,
}

/// Parameter initialisations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Uniform in `[-1/sqrt(fan_in), 1/sqrt(fan_in)]` (PyTorch's default for linear and
    /// convolution layers).
    FanIn {
        /// Inputs per output: `in` for linear, `in * k * k` for convolutions.
        fan_in: usize,
    },
}

/// A model: nodes in execution order, the output node and the parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// Nodes in execution order; every input refers to an earlier node.
    pub nodes: Vec<Node>,
    /// The node whose value is the network output (a denoiser's has the input's shape; an
    /// encoder's or decoder's need not, see [`Graph::validate_mapping`]).
    pub output: NodeId,
    /// Parameter tensors.
    pub params: Vec<ParamSpec>,
}

/// Parameter values by name: shape and row-major `f32` data.
pub type Weights = BTreeMap<String, Tensor>;

/// A dense `f32` tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl Graph {
    /// Node `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0]
    }

    /// The parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The input node's per-sample shape.
    pub fn input_shape(&self) -> &[usize] {
        self.nodes
            .iter()
            .find(|n| matches!(n.op, Op::Input))
            .map_or(&[], |n| n.shape.as_slice())
    }

    /// The number of classes of a class-conditional graph (one with a `ClassEmbedding`), or
    /// `None` for an unconditional one.
    pub fn classes(&self) -> Option<usize> {
        self.nodes.iter().find_map(|n| match n.op {
            Op::ClassEmbedding { classes, .. } => Some(classes),
            _ => None,
        })
    }

    /// Total number of parameters.
    pub fn parameter_count(&self) -> usize {
        self.params
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }

    /// Multiply-accumulates of one network call for one sample.
    pub fn macs(&self) -> u64 {
        self.nodes.iter().map(|n| n.op.macs(self, &n.shape)).sum()
    }

    /// Checks that the graph is a well-formed denoiser: [`Graph::validate_mapping`], and the
    /// output has the input's shape (a noise prediction of the sample it was given).
    pub fn validate(&self) -> Result<()> {
        self.validate_mapping()?;
        if self.node(self.output).shape != self.input_shape() {
            return invalid(format!(
                "the output shape {:?} differs from the input shape {:?}",
                self.node(self.output).shape,
                self.input_shape()
            ));
        }
        Ok(())
    }

    /// Checks that the graph is well formed as a mapping of any output shape (an
    /// autoencoder's encoder or decoder): exactly one input, inputs refer to earlier nodes,
    /// parameters exist with the shapes their ops need, every stored shape is what the op
    /// produces, and the output node exists.
    pub fn validate_mapping(&self) -> Result<()> {
        let inputs = self
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Input))
            .count();
        if inputs != 1 {
            return invalid(format!("the graph has {inputs} input nodes, expected 1"));
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &self.params {
            if !names.insert(p.name.as_str()) {
                return invalid(format!("parameter {} is declared twice", p.name));
            }
        }
        for (index, node) in self.nodes.iter().enumerate() {
            for input in node.op.inputs() {
                if input.0 >= index {
                    return invalid(format!(
                        "node {} reads node {}, which does not come before it",
                        node.name, input.0
                    ));
                }
            }
            let expected = infer_shape(self, &node.op)
                .map_err(|reason| Error::InvalidGraph(format!("node {}: {reason}", node.name)))?;
            if expected != node.shape {
                return invalid(format!(
                    "node {} stores shape {:?}, its op produces {expected:?}",
                    node.name, node.shape
                ));
            }
        }
        if self.output.0 >= self.nodes.len() {
            return invalid("the output node does not exist".into());
        }
        Ok(())
    }

    /// Checks that `weights` holds every parameter with its declared shape and finite values.
    pub fn validate_weights(&self, weights: &Weights) -> Result<()> {
        for spec in &self.params {
            let Some(tensor) = weights.get(&spec.name) else {
                return invalid(format!("missing weight {}", spec.name));
            };
            if tensor.shape != spec.shape
                || tensor.data.len() != spec.shape.iter().product::<usize>()
            {
                return invalid(format!(
                    "weight {} has shape {:?} ({} values), expected {:?}",
                    spec.name,
                    tensor.shape,
                    tensor.data.len(),
                    spec.shape
                ));
            }
            if tensor.data.iter().any(|v| !v.is_finite()) {
                return invalid(format!("weight {} has NaN or infinite values", spec.name));
            }
        }
        Ok(())
    }

    /// Folds a scale of the input into `weights`: afterwards the graph computes on `x` what
    /// it computed on `factor * x` before (a latent model's decoder `D(z / scale)` becomes a
    /// network of `z`). Exact in real arithmetic because the input's only reader must be a
    /// linear layer or a convolution (zero padding commutes with the scale): its weights are
    /// multiplied by `factor`, its bias is kept.
    ///
    /// Errors with [`Error::InvalidGraph`] for a non-finite or zero factor, when the input
    /// is read by anything else or by more than one node, or when the weight is missing.
    pub fn fold_input_scale(&self, weights: &mut Weights, factor: f32) -> Result<()> {
        if !factor.is_finite() || factor == 0.0 {
            return invalid(format!("cannot fold an input scale of {factor}"));
        }
        let input = self
            .nodes
            .iter()
            .position(|n| matches!(n.op, Op::Input))
            .map(NodeId);
        let readers: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| input.is_some_and(|i| n.op.inputs().contains(&i)))
            .collect();
        let weight = match readers.as_slice() {
            [Node {
                op: Op::Linear { weight, .. } | Op::Conv2d { weight, .. },
                ..
            }] => weight,
            _ => {
                return invalid(
                    "an input scale folds only into a single linear or convolution reader".into(),
                )
            }
        };
        let tensor = weights
            .get_mut(weight)
            .ok_or_else(|| Error::InvalidGraph(format!("missing weight {weight}")))?;
        tensor.data.iter_mut().for_each(|w| *w *= factor);
        Ok(())
    }
}

fn invalid<T>(reason: String) -> Result<T> {
    Err(Error::InvalidGraph(reason))
}

/// The output shape `op` produces in `graph` (whose earlier nodes have known shapes): the
/// runtime's shape rule ([`ddm_firmware::shape_rule`]), after the checks of the parameters'
/// shapes against the inputs.
fn infer_shape(graph: &Graph, op: &Op) -> std::result::Result<Vec<usize>, String> {
    if let Some(missing) = op.inputs().iter().find(|i| i.0 >= graph.nodes.len()) {
        return Err(format!("reads node {}, which does not exist", missing.0));
    }
    let runtime_shape = |dims: &[usize]| {
        Shape::new(dims).ok_or_else(|| format!("shape {dims:?} is not one the runtime supports"))
    };
    let shape_of = |id: NodeId| runtime_shape(&graph.nodes[id.0].shape);
    let param_shape = |name: &str| {
        graph
            .param(name)
            .map(|p| p.shape.clone())
            .ok_or_else(|| format!("parameter {name} is not declared"))
    };
    let check_bias = |bias: &Option<String>, out: usize| -> std::result::Result<(), String> {
        match bias {
            Some(name) if param_shape(name)? != [out] => {
                Err(format!("bias {name} must have shape [{out}]"))
            }
            _ => Ok(()),
        }
    };
    let input_dims: Vec<Vec<usize>> = op
        .inputs()
        .iter()
        .map(|i| graph.nodes[i.0].shape.clone())
        .collect();
    let refused = |reason: &str| format!("{reason} (input shapes {input_dims:?})");
    let rule = |op: ShapeOp| op.output().map_err(refused);
    let shape = match op {
        Op::Input => rule(ShapeOp::Input {
            shape: runtime_shape(graph.input_shape())?,
        })?,
        &Op::TimeEmbedding { dim, max_period } => rule(ShapeOp::TimeEmbedding { dim, max_period })?,
        Op::ClassEmbedding { classes, weight } => {
            let table = param_shape(weight)?;
            if table.len() != 2 || table[0] != classes.saturating_add(1) {
                return Err(format!(
                    "class embedding table {weight} {table:?} must be [{} classes + 1, dim]",
                    classes
                ));
            }
            rule(ShapeOp::ClassEmbedding {
                classes: *classes,
                dim: table[1],
            })?
        }
        Op::Linear {
            input,
            weight,
            bias,
        } => {
            let input = shape_of(*input)?;
            let weight_shape = param_shape(weight)?;
            if input.rank() != 1 || weight_shape.len() != 2 || weight_shape[1] != input.elements() {
                return Err(refused(&format!(
                    "linear weight {weight_shape:?} does not take the input"
                )));
            }
            check_bias(bias, weight_shape[0])?;
            rule(ShapeOp::Linear {
                input,
                out_features: weight_shape[0],
            })?
        }
        Op::Conv2d {
            input,
            weight,
            bias,
            stride,
            padding,
        } => {
            let input = shape_of(*input)?;
            let weight_shape = param_shape(weight)?;
            if weight_shape.len() != 4
                || weight_shape[1] != input.channels()
                || weight_shape[2] != weight_shape[3]
            {
                return Err(refused(&format!(
                    "conv weight {weight_shape:?} does not take the input"
                )));
            }
            check_bias(bias, weight_shape[0])?;
            rule(ShapeOp::Conv2d {
                input,
                out_channels: weight_shape[0],
                kernel: weight_shape[2],
                stride: *stride,
                padding: *padding,
            })?
        }
        Op::GroupNorm {
            input,
            groups,
            eps,
            weight,
            bias,
        } => {
            let input = shape_of(*input)?;
            let out = rule(ShapeOp::GroupNorm {
                input,
                groups: *groups,
                eps: *eps,
            })?;
            let channels = input.channels();
            for name in [weight, bias] {
                if param_shape(name)? != [channels] {
                    return Err(format!("{name} must have shape [{channels}]"));
                }
            }
            out
        }
        Op::Silu { input } => rule(ShapeOp::Silu {
            input: shape_of(*input)?,
        })?,
        Op::Upsample2x { input } => rule(ShapeOp::Upsample2x {
            input: shape_of(*input)?,
        })?,
        Op::Add { lhs, rhs } => rule(ShapeOp::Add {
            lhs: shape_of(*lhs)?,
            rhs: shape_of(*rhs)?,
        })?,
        Op::Concat { inputs } => {
            let mut concat = ConcatShape::new();
            for &input in inputs {
                concat.push(shape_of(input)?).map_err(refused)?;
            }
            concat.output().map_err(refused)?
        }
        Op::Reshape { input, shape } => rule(ShapeOp::Reshape {
            input: shape_of(*input)?,
            shape: runtime_shape(shape)?,
        })?,
    };
    let (dims, rank) = shape.dims();
    Ok(dims[..rank].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_unet() -> Graph {
        let mut b = GraphBuilder::new(&[1, 8, 8]);
        let x = b.input();
        let t = b.time_embedding("temb", 16).unwrap();
        let h = b.conv2d("conv_in", x, 8, 3, 1, 1).unwrap();
        let tp = b.linear("temb_proj", t, 8).unwrap();
        let h = b.add("add_t", h, tp).unwrap();
        let h = b.group_norm("norm", h, 4).unwrap();
        let h = b.silu("act", h).unwrap();
        let d = b.conv2d("down", h, 8, 3, 2, 1).unwrap();
        let u = b.upsample2x("up", d).unwrap();
        let c = b.concat("skip", &[u, h]).unwrap();
        let out = b.conv2d("conv_out", c, 1, 1, 1, 0).unwrap();
        b.finish(out).unwrap()
    }

    #[test]
    fn builder_infers_shapes_and_counts() {
        let graph = tiny_unet();
        let shape = |name: &str| {
            graph
                .nodes
                .iter()
                .find(|n| n.name == name)
                .unwrap()
                .shape
                .clone()
        };
        assert_eq!(shape("down"), vec![8, 4, 4]);
        assert_eq!(shape("skip"), vec![16, 8, 8]);
        assert_eq!(graph.node(graph.output).shape, vec![1, 8, 8]);
        // conv_in 8*1*9 + 8, temb_proj 8*16 + 8, norm 16, down 8*8*9 + 8, conv_out 16 + 1.
        assert_eq!(graph.parameter_count(), 80 + 136 + 16 + 584 + 17);
        assert_eq!(graph.macs(), 64 * 72 + 128 + 16 * 576 + 64 * 16);
    }

    #[test]
    fn json_round_trip_and_validation_errors() {
        let graph = tiny_unet();
        let text = serde_json::to_string(&graph).unwrap();
        let back: Graph = serde_json::from_str(&text).unwrap();
        assert_eq!(back, graph);

        let mut broken = graph.clone();
        broken.nodes[3].shape = vec![7];
        assert!(broken
            .validate()
            .unwrap_err()
            .to_string()
            .contains("stores shape"));
        let mut dangling = graph.clone();
        dangling.nodes[2].op = Op::Silu { input: NodeId(5) };
        assert!(dangling.validate().is_err());

        let mut b = GraphBuilder::new(&[4]);
        let x = b.input();
        assert!(b.conv2d("conv", x, 2, 3, 1, 1).is_err());
        assert!(b.group_norm("gn", x, 3).is_err());
        let y = b.linear("fc", x, 3).unwrap();
        assert!(b.add("bad", x, y).is_err());
        assert!(b.finish(y).is_err(), "output shape differs from input");
        let mut b = GraphBuilder::new(&[4]);
        let x = b.input();
        let y = b.linear("fc", x, 3).unwrap();
        let encoder = b.finish_mapping(y).unwrap();
        assert_eq!(encoder.node(encoder.output).shape, vec![3]);
        assert!(encoder.validate_mapping().is_ok());
        assert!(encoder.validate().is_err(), "not a denoiser");
    }

    #[test]
    fn weights_are_checked_against_the_specs() {
        let graph = tiny_unet();
        let mut weights: Weights = graph
            .params
            .iter()
            .map(|p| {
                let n = p.shape.iter().product();
                (
                    p.name.clone(),
                    Tensor {
                        shape: p.shape.clone(),
                        data: vec![0.1; n],
                    },
                )
            })
            .collect();
        graph.validate_weights(&weights).unwrap();
        weights.get_mut("norm.weight").unwrap().data[0] = f32::NAN;
        assert!(graph.validate_weights(&weights).is_err());
        weights.remove("conv_in.bias");
        assert!(graph
            .validate_weights(&weights)
            .unwrap_err()
            .to_string()
            .contains("conv_in.bias"));
    }
}
