//! The invariants [`Blob::parse`] checks node by node: parameters, shapes, tensor types and
//! lengths, quantisation parameters and the placement of every output in the arena.

use super::node::*;
use super::{overlaps, Blob};
use crate::error::{Error, Result};
use crate::format::*;
use crate::quant::{AddParams, Requant};
use crate::shape_rule::{ConcatShape, ShapeOp};

impl<'a> Blob<'a> {
    /// Checks node `index` as time group `group` runs it (its shape and placement, which
    /// every group shares, are checked with group 0).
    pub(super) fn validate_node(&self, index: usize, group: usize) -> Result<()> {
        let node = self.node_in(index, group)?;
        let fail = |reason| Error::InvalidNode {
            node: index as u32,
            reason,
        };
        let int8 = self.precision == Precision::Int8;
        let before = |input: usize| {
            if input < index {
                self.node(input)
            } else {
                Err(fail("an input does not come before its node"))
            }
        };
        let out = node.shape;
        // The operator's shape rule, which the writer and the exporter use too.
        let expect = |op: ShapeOp| match op.output() {
            Ok(shape) if shape == out => Ok(()),
            Ok(_) => Err(fail(
                "the output shape does not follow from the op and its inputs",
            )),
            Err(reason) => Err(fail(reason)),
        };
        let mut same_quant_as = None;
        match node.op {
            Op::Input => {
                if index != 0 {
                    return Err(fail("only node 0 may be the input"));
                }
            }
            Op::TimeEmbedding { max_period } => expect(ShapeOp::TimeEmbedding {
                dim: out.elements(),
                max_period,
            })?,
            Op::Linear {
                input,
                weight,
                bias,
                requant,
            } => {
                let input = before(input)?.shape;
                expect(ShapeOp::Linear {
                    input,
                    out_features: out.channels(),
                })?;
                let fan_in = input.elements();
                self.validate_weights(index, group, weight, bias, requant, out.channels(), fan_in)?;
            }
            Op::Conv2d {
                input,
                weight,
                bias,
                requant,
                kernel,
                stride,
                padding,
            } => {
                let input = before(input)?.shape;
                expect(ShapeOp::Conv2d {
                    input,
                    out_channels: out.channels(),
                    kernel,
                    stride,
                    padding,
                })?;
                let fan_in = input
                    .channels()
                    .checked_mul(kernel * kernel)
                    .ok_or(fail("fan-in too large"))?;
                self.validate_weights(index, group, weight, bias, requant, out.channels(), fan_in)?;
            }
            Op::GroupNorm {
                input,
                groups,
                eps,
                gamma,
                beta,
            } => {
                expect(ShapeOp::GroupNorm {
                    input: before(input)?.shape,
                    groups,
                    eps,
                })?;
                for t in [gamma, beta] {
                    let t = self.tensor_as(index, t, DType::F32, out.channels())?;
                    if (0..t.len())
                        .any(|i| !t.word(i).is_some_and(|w| f32::from_bits(w).is_finite()))
                    {
                        return Err(fail("group norm parameters must be finite"));
                    }
                }
            }
            Op::Silu { input, lut } => {
                expect(ShapeOp::Silu {
                    input: before(input)?.shape,
                })?;
                match (int8, lut) {
                    (true, Some(lut)) => {
                        self.tensor_as(index, lut, DType::I8, 256)?;
                    }
                    (false, None) => {}
                    _ => return Err(fail("SiLU has a table exactly in int8 blobs")),
                }
            }
            Op::Add { lhs, rhs } => {
                expect(ShapeOp::Add {
                    lhs: before(lhs)?.shape,
                    rhs: before(rhs)?.shape,
                })?;
                if int8 {
                    self.add_params(index, group)?.validate()?;
                }
            }
            Op::Concat {
                first,
                count,
                requant,
            } => {
                if count == 0 {
                    return Err(fail("concat needs inputs"));
                }
                let mut concat = ConcatShape::new();
                for k in 0..count {
                    let entry = first.checked_add(k).ok_or(fail("input list range"))?;
                    concat
                        .push(before(self.list_entry(entry)?)?.shape)
                        .map_err(fail)?;
                }
                if concat.output().map_err(fail)? != out {
                    return Err(fail(
                        "the output shape does not follow from the op and its inputs",
                    ));
                }
                match (int8, requant) {
                    (true, Some(t)) => {
                        let len = count.checked_mul(2).ok_or(fail("count"))?;
                        self.validate_requant(index, t, len)?;
                    }
                    (false, None) => {}
                    _ => return Err(fail("concat has requantisation exactly in int8 blobs")),
                }
            }
            Op::Upsample2x { input } => {
                expect(ShapeOp::Upsample2x {
                    input: before(input)?.shape,
                })?;
                same_quant_as = Some(input);
            }
            Op::ClassEmbedding { classes, table } => {
                let dim = out.elements();
                expect(ShapeOp::ClassEmbedding { classes, dim })?;
                let len = classes
                    .checked_add(1)
                    .and_then(|rows| rows.checked_mul(dim))
                    .ok_or(fail("class table too large"))?;
                if int8 {
                    self.tensor_as(index, table, DType::I8, len)?;
                    if !self.quant(index, group)?.same_as(&self.quant(index, 0)?) {
                        return Err(fail(
                            "a class embedding has the same quantisation in every time group",
                        ));
                    }
                } else {
                    let table = self.tensor_as(index, table, self.precision.weight_dtype(), len)?;
                    if !finite(&table) {
                        return Err(fail("the class table must be finite"));
                    }
                }
                for other in 0..index {
                    if self.node(other)?.code() == OpCode::ClassEmbedding {
                        return Err(fail("a blob has at most one class embedding"));
                    }
                }
            }
            Op::Reshape { input } => {
                expect(ShapeOp::Reshape {
                    input: before(input)?.shape,
                    shape: out,
                })?;
                same_quant_as = Some(input);
                if self.plan_offset(index)? != self.plan_offset(input)? {
                    return Err(Error::InvalidPlan {
                        node: index as u32,
                        reason: "a reshape must alias its input",
                    });
                }
            }
        }
        if int8 {
            let params = self.quant(index, group)?;
            params.validate()?;
            if node.code() != OpCode::Add {
                let add = self.add_params(index, group)?;
                if add != AddParams::default() {
                    return Err(fail("only add nodes have add parameters"));
                }
            }
            if let Some(input) = same_quant_as {
                if !self.quant(input, group)?.same_as(&params) {
                    return Err(fail("upsample and reshape keep their input's quantisation"));
                }
            }
        }
        if group == 0 {
            self.validate_placement(index, &node)
        } else {
            Ok(())
        }
    }

    /// Weight, bias and requantisation tensors of a linear or convolution layer in time group
    /// `group` (every group shares the weights, whose values group 0 checks).
    #[allow(clippy::too_many_arguments)]
    fn validate_weights(
        &self,
        index: usize,
        group: usize,
        weight: u32,
        bias: Option<u32>,
        requant: Option<u32>,
        out_channels: usize,
        fan_in: usize,
    ) -> Result<()> {
        let fail = |reason| Error::InvalidNode {
            node: index as u32,
            reason,
        };
        if fan_in > MAX_FAN_IN {
            return Err(fail("fan-in exceeds 65536"));
        }
        let len = out_channels
            .checked_mul(fan_in)
            .ok_or(fail("weights too large"))?;
        let weights = self.tensor_as(index, weight, self.precision.weight_dtype(), len)?;
        let bias_dtype = self.precision.bias_dtype();
        let bias = bias
            .map(|b| self.tensor_as(index, b, bias_dtype, out_channels))
            .transpose()?;
        match (self.precision, bias, requant) {
            (Precision::Int8, Some(bias), Some(requant)) => {
                if group == 0 && weights.bytes().contains(&((-MAX_WEIGHT - 1) as u8)) {
                    return Err(fail("int8 weights must lie in -127..=127"));
                }
                for c in 0..out_channels {
                    let b = bias.word(c).ok_or(fail("bias"))? as i32;
                    if b.unsigned_abs() > MAX_BIAS as u32 {
                        return Err(fail("int8 bias magnitude exceeds 2^30"));
                    }
                }
                self.validate_requant(index, requant, 2 * out_channels)
            }
            (Precision::Int8, _, _) => Err(fail("int8 layers need a bias and requantisation")),
            (_, _, Some(_)) => Err(fail("float layers have no requantisation")),
            (_, bias, None) => {
                // Float weights and biases must be finite.
                if !finite(&weights) || bias.is_some_and(|b| !finite(&b)) {
                    return Err(fail("float weights must be finite"));
                }
                Ok(())
            }
        }
    }

    /// An i32 tensor of `len / 2` valid `(multiplier, shift)` pairs.
    fn validate_requant(&self, index: usize, tensor: u32, len: usize) -> Result<()> {
        let t = self.tensor_as(index, tensor, DType::I32, len)?;
        for pair in t.bytes().chunks_exact(8) {
            let requant = Requant {
                multiplier: read_u32(pair, 0).unwrap_or(u32::MAX) as i32,
                shift: read_u32(pair, 4).unwrap_or(u32::MAX) as i32,
            };
            requant.validate()?;
        }
        Ok(())
    }

    /// The node's output fits the arena, is aligned, and overlaps no input except in place.
    fn validate_placement(&self, index: usize, node: &Node) -> Result<()> {
        let fail = |reason| Error::InvalidPlan {
            node: index as u32,
            reason,
        };
        let (offset, len) = self.region(index, &node.shape)?;
        let end = offset.checked_add(len).ok_or(fail("end overflows"))?;
        if end > self.graph.arena_bytes {
            return Err(fail("output runs past the arena"));
        }
        if offset % self.precision.activation_bytes() != 0 {
            return Err(fail("f32 output not 4-byte aligned"));
        }
        let input_region = |input: usize| -> Result<(usize, usize)> {
            let shape = self.node(input)?.shape;
            self.region(input, &shape)
        };
        let disjoint = |(o, l): (usize, usize)| !overlaps(o, l, offset, len);
        match node.op {
            Op::Input
            | Op::TimeEmbedding { .. }
            | Op::ClassEmbedding { .. }
            | Op::Reshape { .. } => Ok(()),
            Op::Linear { input, .. } | Op::Conv2d { input, .. } | Op::Upsample2x { input } => {
                if disjoint(input_region(input)?) {
                    Ok(())
                } else {
                    Err(fail("output overlaps its input"))
                }
            }
            Op::GroupNorm { input, .. } | Op::Silu { input, .. } => {
                let region = input_region(input)?;
                if disjoint(region) || region == (offset, len) {
                    Ok(())
                } else {
                    Err(fail("output partially overlaps its input"))
                }
            }
            Op::Add { lhs, rhs } => {
                let (lhs, rhs) = (input_region(lhs)?, input_region(rhs)?);
                if (disjoint(lhs) || lhs == (offset, len)) && disjoint(rhs) {
                    Ok(())
                } else {
                    Err(fail(
                        "add output overlaps an input (only lhs may be in place)",
                    ))
                }
            }
            Op::Concat { first, count, .. } => {
                for k in 0..count {
                    let entry = first.checked_add(k).ok_or(fail("list"))?;
                    if !disjoint(input_region(self.list_entry(entry)?)?) {
                        return Err(fail("concat output overlaps an input"));
                    }
                }
                Ok(())
            }
        }
    }
}

/// Whether every element of an f32 or f16 tensor is finite.
fn finite(t: &Tensor<'_>) -> bool {
    match t.dtype() {
        DType::F32 => t.bytes().chunks_exact(4).all(|b| {
            b.try_into()
                .is_ok_and(|b| f32::from_le_bytes(b).is_finite())
        }),
        _ => t.bytes().chunks_exact(2).all(|b| {
            b.try_into()
                .is_ok_and(|b| half::f16::from_bits(u16::from_le_bytes(b)).is_finite())
        }),
    }
}
