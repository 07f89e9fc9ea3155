//! Runs a [`Graph`] on candle tensors: the trainer's forward pass and the sampler's network.
//!
//! The graph's shapes are per sample; the executor adds a leading batch dimension `B` to every
//! value. Nodes run in order, each through its function in [`super::ops`]; a value is
//! dropped after its last reader (unless gradients keep it alive). A GroupNorm read only by
//! the SiLU right after it runs as one fused operation ([`ops::group_norm_silu`]) unless an
//! observer wants to see the normalised values.

use candle_core::Tensor;
use ddm_export::graph::{Graph, NodeId, Op};

use super::ops;
use super::params::Params;
use crate::error::{Error, Result};

/// A callback that sees every node's output (`[B, ...node shape]`) as it is computed, e.g. to
/// gather activation ranges for quantisation.
pub type Observer<'a> = &'a mut dyn FnMut(NodeId, &Tensor);

/// Evaluates `graph` on a batch.
///
/// `x` is `[B, ...input shape]` (the noisy samples), `t` is `[B]` (the training timesteps, any
/// numeric type: they are converted to `x`'s); `params` must hold every parameter of the graph
/// in `x`'s type (`f32` normally; `f64` works too, e.g. for gradient checks). Returns the output
/// node's value, `[B, ...input shape]`. `observer`, if given, is called once per node in
/// execution order.
///
/// # Errors
/// [`Error::Invalid`] when `x` or `t` do not have the expected shapes or a parameter has no
/// value; [`Error::Candle`] when a tensor operation fails.
pub fn forward(
    graph: &Graph,
    params: &Params,
    x: &Tensor,
    t: &Tensor,
    observer: Option<Observer<'_>>,
) -> Result<Tensor> {
    forward_conditional(graph, params, x, t, None, observer)
}

/// Evaluates `graph` on a batch with class labels: as [`forward`], with `classes` (`[B]`,
/// any integer type) the class of each sample for the graph's class embedding, where
/// `classes()` is the "no class" label (unconditional prediction). `None` asks every sample
/// for the unconditional prediction; graphs without a class embedding ignore `classes`.
///
/// # Errors
/// As [`forward`], and [`Error::Invalid`] for labels of the wrong length or out of range.
pub fn forward_conditional(
    graph: &Graph,
    params: &Params,
    x: &Tensor,
    t: &Tensor,
    classes: Option<&Tensor>,
    mut observer: Option<Observer<'_>>,
) -> Result<Tensor> {
    let batch = x.dim(0)?;
    if &x.dims()[1..] != graph.input_shape() {
        return Err(Error::Invalid(format!(
            "the model takes samples of shape {:?}, got a batch of shape {:?}",
            graph.input_shape(),
            x.dims()
        )));
    }
    if t.dims() != [batch] {
        return Err(Error::Invalid(format!(
            "expected one timestep per sample ([{batch}]), got shape {:?}",
            t.dims()
        )));
    }
    let t = t.to_dtype(x.dtype())?;
    let last_reader = last_readers(graph);
    let fused = if observer.is_some() {
        vec![false; graph.nodes.len()]
    } else {
        norm_silu_pairs(graph)
    };
    let mut values: Vec<Option<Tensor>> = vec![None; graph.nodes.len()];
    for (index, node) in graph.nodes.iter().enumerate() {
        let value = {
            let input = |id: NodeId| -> Result<&Tensor> {
                values[id.0].as_ref().ok_or_else(|| {
                    Error::Invalid(format!("node {} reads a value already dropped", node.name))
                })
            };
            match node.op {
                // The GroupNorm before already applied the SiLU.
                Op::Silu { input: from } if fused[from.0] => input(from)?.clone(),
                Op::ClassEmbedding { ref weight, .. } => {
                    ops::class_embedding(params.require(weight)?, classes, batch)?
                }
                _ => eval(&node.op, params, x, &t, input, fused[index])?,
            }
        };
        if let Some(observe) = observer.as_mut() {
            observe(NodeId(index), &value);
        }
        values[index] = Some(value);
        for read in node.op.inputs() {
            if last_reader[read.0] == index && read != graph.output {
                values[read.0] = None;
            }
        }
    }
    values[graph.output.0]
        .take()
        .ok_or_else(|| Error::Invalid("the graph has no output value".into()))
}

/// For each node, the index of the last node that reads it (its own index if none does).
fn last_readers(graph: &Graph) -> Vec<usize> {
    let mut last: Vec<usize> = (0..graph.nodes.len()).collect();
    for (index, node) in graph.nodes.iter().enumerate() {
        for read in node.op.inputs() {
            last[read.0] = last[read.0].max(index);
        }
    }
    last
}

/// For each node, whether it is a GroupNorm whose only reader is the next node, a SiLU (and
/// not the graph's output): the pair then runs as one fused operation.
fn norm_silu_pairs(graph: &Graph) -> Vec<bool> {
    let mut readers = vec![0usize; graph.nodes.len()];
    for node in &graph.nodes {
        for read in node.op.inputs() {
            readers[read.0] += 1;
        }
    }
    let mut fused = vec![false; graph.nodes.len()];
    for (index, pair) in graph.nodes.windows(2).enumerate() {
        if let (Op::GroupNorm { .. }, Op::Silu { input }) = (&pair[0].op, &pair[1].op) {
            fused[index] = input.0 == index && readers[index] == 1 && graph.output.0 != index;
        }
    }
    fused
}

/// Evaluates one node; `then_silu` applies SiLU to a GroupNorm's result in the same pass.
fn eval<'v>(
    op: &Op,
    params: &Params,
    x: &Tensor,
    t: &Tensor,
    input: impl Fn(NodeId) -> Result<&'v Tensor>,
    then_silu: bool,
) -> Result<Tensor> {
    let param = |name: &str| params.require(name);
    let optional = |name: &Option<String>| name.as_deref().map(|n| params.require(n)).transpose();
    match op {
        Op::Input => Ok(x.clone()),
        Op::TimeEmbedding { dim, max_period } => ops::time_embedding(t, *dim, *max_period),
        Op::ClassEmbedding { .. } => Err(Error::Invalid(
            "class embeddings are evaluated by forward_conditional".into(),
        )),
        Op::Linear {
            input: from,
            weight,
            bias,
        } => ops::linear(input(*from)?, param(weight)?, optional(bias)?),
        Op::Conv2d {
            input: from,
            weight,
            bias,
            stride,
            padding,
        } => ops::conv2d(
            input(*from)?,
            param(weight)?,
            optional(bias)?,
            *stride,
            *padding,
        ),
        Op::GroupNorm {
            input: from,
            groups,
            eps,
            weight,
            bias,
        } => {
            let norm = if then_silu {
                ops::group_norm_silu
            } else {
                ops::group_norm
            };
            norm(input(*from)?, *groups, *eps, param(weight)?, param(bias)?)
        }
        Op::Silu { input: from } => ops::silu(input(*from)?),
        Op::Add { lhs, rhs } => ops::add(input(*lhs)?, input(*rhs)?),
        Op::Concat { inputs } => {
            let tensors = inputs
                .iter()
                .map(|&id| input(id))
                .collect::<Result<Vec<_>>>()?;
            ops::concat(&tensors)
        }
        Op::Upsample2x { input: from } => ops::upsample2x(input(*from)?),
        Op::Reshape { input: from, shape } => ops::reshape(input(*from)?, shape),
    }
}
