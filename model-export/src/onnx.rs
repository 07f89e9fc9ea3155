//! ONNX export of the float graph (opset 17, IR version 8), loadable by tract and other ONNX
//! runtimes.
//!
//! # Interface
//!
//! - input `x`: `float [batch, ...input shape]` (`batch` is symbolic, any size);
//! - input `t`: `float [batch]`, the training timestep of each sample (integer values);
//! - output `eps`: `float [batch, ...input shape]`, the network output.
//!
//! # Ops
//!
//! Only standard opset-17 operators: `Gemm` (`transB = 1`) for linear layers, `Conv`,
//! `Sigmoid` and `Mul` for SiLU, `Unsqueeze` + `Add` for the `[C]` onto `[C, H, W]`
//! broadcast, `Concat` on axis 1, `Resize` (nearest, `asymmetric`, `floor`: output pixel
//! `(y, x)` reads input `(y / 2, x / 2)`, the runtime's upsampling) with scales
//! `[1, 1, 2, 2]`, `Reshape` with a leading `-1` for the batch, `Identity` for the output.
//! Group normalisation is `Reshape [-1, G, C/G * H * W]` -> `ReduceMean` -> `Sub` ->
//! `Mul` -> `ReduceMean` -> `Add eps` -> `Sqrt` -> `Div` -> `Reshape` -> `Mul gamma` ->
//! `Add beta` (biased variance, as the runtime). The time embedding is `Unsqueeze(t)` times a
//! constant frequency row (computed with the runtime's `f32` formula), then `Sin`, `Cos` and
//! `Concat`.
//!
//! # f16
//!
//! [`OnnxPrecision::F16`] stores the weights and biases of linear and convolution layers as
//! `float16` initialisers, each followed by a `Cast` to `float`; activations, the interface
//! and the arithmetic stay `f32`, and GroupNorm's scale and shift stay `float` (2 C values
//! per norm). That is exactly what an fp16 blob means on the device (f16 layer weights, f32
//! affine parameters and arithmetic), so the two agree to f32 rounding (the tests check
//! 1e-4), while the file is about half the size. Full f16 compute would break the model:
//! `t f_i` reaches ~1000, where f16's step is 0.5 (the time embedding's phases would be
//! garbage), and GroupNorm's sums of squares lose precision and can overflow. Runtimes fold
//! the casts of constants at load time. Non-parameter constants (frequencies, shapes,
//! scales, `eps`) are always f32 / int64.

use std::collections::HashSet;

use half::f16;
use prost::Message;

use crate::error::{Error, Result};
use crate::graph::{Graph, Op, Weights};

mod proto;

use proto::*;

/// The ONNX opset the export targets.
pub const OPSET: i64 = 17;
/// The ONNX IR version of opset 17.
pub const IR_VERSION: i64 = 8;

/// How parameters are stored in the ONNX file (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnnxPrecision {
    /// `float` parameters.
    #[default]
    F32,
    /// `float16` parameters, cast to `float` for f32 arithmetic.
    F16,
}

fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: value,
        r#type: ATTR_INT,
        ..Default::default()
    }
}

fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: values.to_vec(),
        r#type: ATTR_INTS,
        ..Default::default()
    }
}

fn attr_string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        s: value.as_bytes().to_vec(),
        r#type: ATTR_STRING,
        ..Default::default()
    }
}

fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

/// Accumulates nodes and initialisers.
struct Builder<'w> {
    weights: &'w Weights,
    precision: OnnxPrecision,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Builder<'_> {
    /// Adds node `op` reading `inputs` and writing `output` (also its name).
    fn node(&mut self, op: &str, inputs: &[&str], output: &str, attributes: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: output.to_string(),
            op_type: op.into(),
            attribute: attributes,
        });
    }

    fn initializer(&mut self, name: &str, shape: Vec<i64>, data_type: i32, raw_data: Vec<u8>) {
        self.initializers.push(TensorProto {
            dims: shape,
            data_type,
            name: name.into(),
            raw_data,
        });
    }

    /// A `float` constant.
    fn f32s(&mut self, name: &str, shape: Vec<i64>, values: &[f32]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, shape, FLOAT, raw);
        name.into()
    }

    /// An `int64` constant.
    fn i64s(&mut self, name: &str, values: &[i64]) -> String {
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, vec![values.len() as i64], INT64, raw);
        name.into()
    }

    /// Layer parameter `name` with shape `shape`, as a `float` value (cast from f16 in f16
    /// files unless `always_f32`).
    fn param(&mut self, name: &str, shape: Vec<i64>, always_f32: bool) -> Result<String> {
        let tensor = self
            .weights
            .get(name)
            .ok_or_else(|| Error::InvalidGraph(format!("missing weight {name}")))?;
        match self.precision {
            _ if always_f32 => Ok(self.f32s(name, shape, &tensor.data)),
            OnnxPrecision::F32 => Ok(self.f32s(name, shape, &tensor.data)),
            OnnxPrecision::F16 => {
                let raw = tensor
                    .data
                    .iter()
                    .flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes())
                    .collect();
                self.initializer(name, shape, FLOAT16, raw);
                let cast = format!("{name}/f32");
                self.node("Cast", &[name], &cast, vec![attr_int("to", FLOAT.into())]);
                Ok(cast)
            }
        }
    }
}

fn value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    let mut dim = vec![Dimension {
        value: Some(DimensionValue::DimParam("batch".into())),
    }];
    dim.extend(shape.iter().map(|&d| Dimension {
        value: Some(DimensionValue::DimValue(d as i64)),
    }));
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

/// The frequency row of the runtime's time embedding: `f_i = expf(-logf(max_period) i / half)`
/// in `f32` with `libm`, exactly as `ddm_firmware::kernels::time_embedding`.
fn frequencies(max_period: f32, half: usize) -> Vec<f32> {
    let neg_log = -libm::logf(max_period);
    (0..half)
        .map(|i| libm::expf(neg_log * i as f32 / half as f32))
        .collect()
}

/// Serialises `graph` with `weights` as an ONNX model (see the module docs).
///
/// Errors: the graph or weights do not validate, or a node's name collides with another
/// value of the ONNX graph (`x`, `t`, `eps`, a parameter name, or `node/...` internals).
pub fn export(graph: &Graph, weights: &Weights, precision: OnnxPrecision) -> Result<Vec<u8>> {
    Ok(model(graph, weights, precision)?.encode_to_vec())
}

fn model(graph: &Graph, weights: &Weights, precision: OnnxPrecision) -> Result<ModelProto> {
    graph.validate()?;
    graph.validate_weights(weights)?;
    let mut b = Builder {
        weights,
        precision,
        nodes: Vec::new(),
        initializers: Vec::new(),
    };
    let names: Vec<String> = graph
        .nodes
        .iter()
        .map(|n| match n.op {
            Op::Input => "x".to_string(),
            _ => n.name.clone(),
        })
        .collect();
    for (node, out) in graph.nodes.iter().zip(&names) {
        let out = out.as_str();
        let input = |i: crate::graph::NodeId| names[i.0].as_str();
        match &node.op {
            Op::Input => {}
            Op::ClassEmbedding { .. } => {
                return Err(Error::Unsupported(format!(
                    "{} is a class embedding: the ONNX model has no class input (class-conditional \
                     models run on the host and from device blobs)",
                    node.name
                )))
            }
            Op::TimeEmbedding { dim, max_period } => {
                let half = dim / 2;
                let freq = b.f32s(
                    &format!("{out}/frequencies"),
                    vec![1, half as i64],
                    &frequencies(*max_period, half),
                );
                let axes = b.i64s(&format!("{out}/axes"), &[1]);
                let t = format!("{out}/t");
                b.node("Unsqueeze", &["t", &axes], &t, vec![]);
                let angle = format!("{out}/angle");
                b.node("Mul", &[&t, &freq], &angle, vec![]);
                let (sin, cos) = (format!("{out}/sin"), format!("{out}/cos"));
                b.node("Sin", &[&angle], &sin, vec![]);
                b.node("Cos", &[&angle], &cos, vec![]);
                b.node("Concat", &[&sin, &cos], out, vec![attr_int("axis", 1)]);
            }
            Op::Linear {
                input: x,
                weight,
                bias,
            } => {
                let in_features = graph.node(*x).shape[0];
                let w = b.param(weight, dims(&[node.shape[0], in_features]), false)?;
                let mut inputs = vec![input(*x).to_string(), w];
                if let Some(bias) = bias {
                    inputs.push(b.param(bias, dims(&node.shape), false)?);
                }
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                b.node("Gemm", &inputs, out, vec![attr_int("transB", 1)]);
            }
            Op::Conv2d {
                input: x,
                weight,
                bias,
                stride,
                padding,
            } => {
                let shape = weights
                    .get(weight)
                    .map(|t| t.shape.clone())
                    .unwrap_or_default();
                let kernel = shape.get(2).copied().unwrap_or(1) as i64;
                let w = b.param(weight, dims(&shape), false)?;
                let mut inputs = vec![input(*x).to_string(), w];
                if let Some(bias) = bias {
                    inputs.push(b.param(bias, dims(&node.shape[..1]), false)?);
                }
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let (s, p) = (*stride as i64, *padding as i64);
                b.node(
                    "Conv",
                    &inputs,
                    out,
                    vec![
                        attr_ints("kernel_shape", &[kernel, kernel]),
                        attr_ints("strides", &[s, s]),
                        attr_ints("pads", &[p, p, p, p]),
                        attr_ints("dilations", &[1, 1]),
                        attr_int("group", 1),
                    ],
                );
            }
            Op::GroupNorm {
                input: x,
                groups,
                eps,
                weight,
                bias,
            } => {
                let shape = &node.shape;
                let elements: usize = shape.iter().product();
                let grouped_shape = b.i64s(
                    &format!("{out}/grouped_shape"),
                    &[-1, *groups as i64, (elements / groups) as i64],
                );
                let grouped = format!("{out}/grouped");
                b.node("Reshape", &[input(*x), &grouped_shape], &grouped, vec![]);
                let reduce = || vec![attr_ints("axes", &[2]), attr_int("keepdims", 1)];
                let mean = format!("{out}/mean");
                b.node("ReduceMean", &[&grouped], &mean, reduce());
                let centred = format!("{out}/centred");
                b.node("Sub", &[&grouped, &mean], &centred, vec![]);
                let squares = format!("{out}/squares");
                b.node("Mul", &[&centred, &centred], &squares, vec![]);
                let variance = format!("{out}/variance");
                b.node("ReduceMean", &[&squares], &variance, reduce());
                let eps = b.f32s(&format!("{out}/eps"), vec![], &[*eps]);
                let shifted = format!("{out}/variance_eps");
                b.node("Add", &[&variance, &eps], &shifted, vec![]);
                let std = format!("{out}/std");
                b.node("Sqrt", &[&shifted], &std, vec![]);
                let normalised = format!("{out}/normalised");
                b.node("Div", &[&centred, &std], &normalised, vec![]);
                let mut back = vec![-1i64];
                back.extend(dims(shape));
                let back_shape = b.i64s(&format!("{out}/shape"), &back);
                let reshaped = format!("{out}/reshaped");
                b.node("Reshape", &[&normalised, &back_shape], &reshaped, vec![]);
                // gamma and beta broadcast over H, W: shape [C, 1, 1] (or [C] for vectors).
                let mut affine = vec![shape[0] as i64];
                affine.extend(std::iter::repeat_n(1, shape.len() - 1));
                let gamma = b.param(weight, affine.clone(), true)?;
                let beta = b.param(bias, affine, true)?;
                let scaled = format!("{out}/scaled");
                b.node("Mul", &[&reshaped, &gamma], &scaled, vec![]);
                b.node("Add", &[&scaled, &beta], out, vec![]);
            }
            Op::Silu { input: x } => {
                let sigmoid = format!("{out}/sigmoid");
                b.node("Sigmoid", &[input(*x)], &sigmoid, vec![]);
                b.node("Mul", &[input(*x), &sigmoid], out, vec![]);
            }
            Op::Add { lhs, rhs } => {
                let broadcast = graph.node(*rhs).shape.len() < node.shape.len();
                if broadcast {
                    let axes = b.i64s(&format!("{out}/axes"), &[2, 3]);
                    let expanded = format!("{out}/rhs");
                    b.node("Unsqueeze", &[input(*rhs), &axes], &expanded, vec![]);
                    b.node("Add", &[input(*lhs), &expanded], out, vec![]);
                } else {
                    b.node("Add", &[input(*lhs), input(*rhs)], out, vec![]);
                }
            }
            Op::Concat { inputs } => {
                let inputs: Vec<&str> = inputs.iter().map(|&i| input(i)).collect();
                b.node("Concat", &inputs, out, vec![attr_int("axis", 1)]);
            }
            Op::Upsample2x { input: x } => {
                let scales = b.f32s(&format!("{out}/scales"), vec![4], &[1.0, 1.0, 2.0, 2.0]);
                b.node(
                    "Resize",
                    &[input(*x), "", &scales],
                    out,
                    vec![
                        attr_string("mode", "nearest"),
                        attr_string("coordinate_transformation_mode", "asymmetric"),
                        attr_string("nearest_mode", "floor"),
                    ],
                );
            }
            Op::Reshape { input: x, shape } => {
                let mut target = vec![-1i64];
                target.extend(dims(shape));
                let target = b.i64s(&format!("{out}/shape"), &target);
                b.node("Reshape", &[input(*x), &target], out, vec![]);
            }
        }
    }
    b.node("Identity", &[names[graph.output.0].as_str()], "eps", vec![]);

    // Every value must be defined once.
    let mut defined: HashSet<&str> = HashSet::from(["x", "t"]);
    let produced = b
        .nodes
        .iter()
        .flat_map(|n| n.output.iter())
        .chain(b.initializers.iter().map(|t| &t.name));
    for name in produced {
        if !defined.insert(name.as_str()) {
            return Err(Error::Onnx(format!(
                "the value name {name} is used twice; rename the node"
            )));
        }
    }

    let shape = graph.input_shape();
    Ok(ModelProto {
        ir_version: IR_VERSION,
        producer_name: "ddm-export".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: "ddm denoiser: eps = f(x, t)".into(),
        graph: Some(GraphProto {
            node: b.nodes,
            name: "ddm".into(),
            initializer: b.initializers,
            doc_string: String::new(),
            input: vec![value_info("x", shape), value_info("t", &[])],
            output: vec![value_info("eps", shape)],
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
    })
}
