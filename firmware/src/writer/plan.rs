//! Static memory planning of the activation arena: tensor lifetimes over the graph and byte
//! offsets that reuse memory.
//!
//! # Buffers and lifetimes
//!
//! Nodes run in order; step `i` reads node `i`'s inputs and writes its output. Each output
//! needs `elements x activation bytes` (1 for int8, 4 for float blobs, whose activations are
//! f32), rounded up to [`ALIGN`]. Outputs are grouped into **buffers**, each one region of the
//! arena:
//! - a `Reshape` is an alias: it has no storage of its own and its readers keep its input's
//!   buffer alive (the runtime requires a reshape at its input's offset);
//! - an op the runtime may run in place ([`OpSpec::in_place_input`]: `Silu`, `GroupNorm`, the
//!   `lhs` of `Add`) joins its input's buffer when that input has no later reader, is not the
//!   network output, has the same size and is read only once by the op (`Add(x, x)` is not in
//!   place, its `rhs` would overlap);
//! - every other output starts a new buffer.
//!
//! A buffer lives from the step that writes its first member to the last step that reads any
//! member or alias (the network output lives to the end). Two buffers conflict when their
//! lifetimes (closed intervals of steps) intersect; conflicting buffers must not overlap in
//! the arena. At step `i` the output's buffer and every input's buffer are all live, so an
//! output never overlaps an input it does not replace in place.
//!
//! # Greedy by size
//!
//! [`plan_greedy_by_size`] is TensorFlow Lite Micro's `GreedyMemoryPlanner`: buffers sorted
//! by size, largest first (ties: earlier first step, then earlier node), each placed at the
//! lowest [`ALIGN`]-aligned offset where it overlaps no already placed buffer it conflicts
//! with. Large tensors, which dominate the peak, get first pick of the address space. Its
//! result is never below [`lower_bound`] (the largest total of simultaneously live buffers),
//! and no plan can be. [`plan_no_reuse`] gives every node its own region (the baseline, and
//! the plan of analysis runs that read every node's output afterwards).
//!
//! The one planner of the project: the exporter plans its blobs with
//! [`plan_greedy_by_size`], and [`write_blob`](super::write_blob) uses it for specs that come
//! without a plan. [`check_plan`] checks any plan (planned here or not, with reuse or without)
//! for overwritten live tensors before a blob is written, and
//! [`Blob::parse`](crate::Blob::parse) checks bounds, alignment and the in-place rules when it
//! is read.

use std::vec;
use std::vec::Vec;

use super::node_error;
use super::shapes::infer_shapes;
use super::spec::*;
use crate::error::{Error, Result};

/// Every buffer starts at a multiple of 4 bytes and takes a multiple of 4 bytes: the f32
/// element size (which the runtime requires for float activations) and, for int8, word
/// alignment so Cortex-M kernels may load four activations at once. The cost is at most 3
/// bytes per int8 buffer.
pub const ALIGN: usize = 4;

/// One region of the arena: the outputs that share it and when it is live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffer {
    /// Nodes whose outputs live here, in execution order: the first writes it, later ones run
    /// in place on their predecessor (reshapes of them are not listed).
    pub nodes: Vec<usize>,
    /// Size in bytes (a multiple of [`ALIGN`]).
    pub bytes: usize,
    /// The step that writes it first.
    pub first: usize,
    /// The last step that reads it (`node count` for the network output).
    pub last: usize,
}

impl Buffer {
    /// Whether the two buffers are live at a common step.
    pub fn conflicts(&self, other: &Buffer) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// The buffers of a model and which buffer holds each node's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifetimes {
    /// The buffers, in the order their first step comes.
    pub buffers: Vec<Buffer>,
    /// For each node, the index of the buffer holding its output (a reshape's is its input's).
    pub buffer_of: Vec<usize>,
}

fn round_up(node: usize, bytes: usize) -> Result<usize> {
    bytes
        .checked_next_multiple_of(ALIGN)
        .ok_or(Error::InvalidPlan {
            node: node as u32,
            reason: "activation size overflows",
        })
}

/// Computes the buffers of `spec` (see the module docs). Errors when the spec's shapes do not
/// infer or an input does not come before its node.
pub fn lifetimes(spec: &ModelSpec) -> Result<Lifetimes> {
    let shapes = infer_shapes(spec)?;
    let n = spec.nodes.len();
    let element = spec.precision.activation_bytes();
    // The storage node of each node: itself, or for a reshape its input's.
    let mut root: Vec<usize> = Vec::with_capacity(n);
    for (i, node) in spec.nodes.iter().enumerate() {
        let r = match node.op {
            OpSpec::Reshape { input, .. } if input < i => root[input],
            OpSpec::Reshape { .. } => {
                return Err(node_error(i, "an input does not come before its node"))
            }
            _ => i,
        };
        root.push(r);
    }
    // Last step reading each storage node (or an alias of it).
    let mut last_read: Vec<usize> = (0..n).collect();
    for (i, node) in spec.nodes.iter().enumerate() {
        for input in node.op.inputs() {
            let r = *root
                .get(input)
                .ok_or(node_error(i, "an input does not come before its node"))?;
            last_read[r] = last_read[r].max(i);
        }
    }
    let output_root = *root
        .get(spec.output)
        .ok_or(Error::InvalidModel("the output node does not exist"))?;
    last_read[output_root] = n;

    let mut buffers: Vec<Buffer> = Vec::new();
    let mut buffer_of = vec![usize::MAX; n];
    for (i, node) in spec.nodes.iter().enumerate() {
        if root[i] != i {
            buffer_of[i] = buffer_of[root[i]];
            continue;
        }
        let bytes = round_up(i, shapes[i].elements() * element)?;
        let roots: Vec<usize> = node.op.inputs().iter().map(|&x| root[x]).collect();
        let in_place = node.op.in_place_input().map(|x| root[x]).filter(|&r| {
            last_read[r] == i
                && roots.iter().filter(|&&o| o == r).count() == 1
                && buffers[buffer_of[r]].bytes == bytes
        });
        match in_place {
            Some(r) => {
                let b = buffer_of[r];
                buffers[b].nodes.push(i);
                buffers[b].last = last_read[i];
                buffer_of[i] = b;
            }
            None => {
                buffer_of[i] = buffers.len();
                buffers.push(Buffer {
                    nodes: vec![i],
                    bytes,
                    first: i,
                    last: last_read[i],
                });
            }
        }
    }
    Ok(Lifetimes { buffers, buffer_of })
}

/// The plan with buffer `b` at `offsets[b]`.
fn to_plan(lifetimes: &Lifetimes, offsets: &[usize]) -> MemoryPlan {
    let arena_bytes = lifetimes
        .buffers
        .iter()
        .zip(offsets)
        .map(|(b, &o)| o + b.bytes)
        .max()
        .unwrap_or(0);
    MemoryPlan {
        arena_bytes,
        offsets: lifetimes.buffer_of.iter().map(|&b| offsets[b]).collect(),
    }
}

/// TensorFlow Lite Micro's greedy-by-size plan (see the module docs): the production planner.
pub fn plan_greedy_by_size(spec: &ModelSpec) -> Result<MemoryPlan> {
    let lifetimes = lifetimes(spec)?;
    let buffers = &lifetimes.buffers;
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    order.sort_by_key(|&b| (core::cmp::Reverse(buffers[b].bytes), buffers[b].first, b));
    let mut offsets = vec![0usize; buffers.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(buffers.len());
    for &b in &order {
        let buffer = &buffers[b];
        let mut neighbours: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&p| buffers[p].conflicts(buffer))
            .map(|&p| (offsets[p], buffers[p].bytes))
            .collect();
        neighbours.sort_unstable();
        let mut offset = 0usize;
        for (start, bytes) in neighbours {
            if offset + buffer.bytes <= start {
                break;
            }
            offset = offset.max(start + bytes);
        }
        offsets[b] = offset;
        placed.push(b);
    }
    Ok(to_plan(&lifetimes, &offsets))
}

/// Every node in its own region, in execution order, nothing in place (reshapes alias): the
/// "no reuse" baseline, and the plan of analysis runs, after which every node's output can
/// still be read.
pub fn plan_no_reuse(spec: &ModelSpec) -> Result<MemoryPlan> {
    let shapes = infer_shapes(spec)?;
    let element = spec.precision.activation_bytes();
    let mut offsets = vec![0usize; spec.nodes.len()];
    let mut end = 0usize;
    for (i, node) in spec.nodes.iter().enumerate() {
        if let OpSpec::Reshape { input, .. } = node.op {
            offsets[i] = offsets[input];
            continue;
        }
        offsets[i] = end;
        end += round_up(i, shapes[i].elements() * element)?;
    }
    Ok(MemoryPlan {
        arena_bytes: end,
        offsets,
    })
}

/// The most bytes of buffers live at one step: no plan of these buffers needs less.
pub fn lower_bound(spec: &ModelSpec) -> Result<usize> {
    let lifetimes = lifetimes(spec)?;
    let steps = spec.nodes.len() + 1;
    Ok((0..steps)
        .map(|step| {
            lifetimes
                .buffers
                .iter()
                .filter(|b| b.first <= step && step <= b.last)
                .map(|b| b.bytes)
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0))
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

/// Checks that `plan` never overwrites a tensor that is still needed: when node `i` writes its
/// output, it overlaps no earlier output read after step `i` (or the network output, which
/// lives to the end). Any such plan is valid, with or without reuse; the runtime's own checks
/// (bounds, alignment, exact in-place updates, reshapes at their input's offset) happen when
/// the blob is parsed.
///
/// # Errors
/// [`Error::InvalidPlan`] naming the first node that overwrites a live tensor;
/// [`Error::InvalidModel`] for a plan without one offset per node.
pub fn check_plan(spec: &ModelSpec, plan: &MemoryPlan) -> Result<()> {
    let shapes = infer_shapes(spec)?;
    let n = spec.nodes.len();
    if plan.offsets.len() != n {
        return Err(Error::InvalidModel("the plan needs one offset per node"));
    }
    // Last step reading each storage node or an alias of it.
    let mut last: Vec<usize> = (0..n).collect();
    for (index, node) in spec.nodes.iter().enumerate() {
        for input in node.op.inputs() {
            if let Some(slot) = last.get_mut(root(spec, input)) {
                *slot = (*slot).max(index);
            }
        }
    }
    if let Some(slot) = last.get_mut(root(spec, spec.output)) {
        *slot = n;
    }
    let element = spec.precision.activation_bytes();
    let region = |i: usize| (plan.offsets[i], shapes[i].elements() * element);
    for i in 0..n {
        if matches!(spec.nodes[i].op, OpSpec::Reshape { .. }) {
            continue;
        }
        let (oi, li) = region(i);
        for (j, &last_use) in last.iter().enumerate().take(i) {
            if root(spec, j) != j || last_use <= i {
                continue;
            }
            let (oj, lj) = region(j);
            if oi < oj.saturating_add(lj) && oj < oi.saturating_add(li) {
                return Err(Error::InvalidPlan {
                    node: i as u32,
                    reason: "output overwrites a tensor that is still needed",
                });
            }
        }
    }
    Ok(())
}
