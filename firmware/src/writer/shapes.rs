//! Every node's output shape, inferred from its op and its inputs' shapes by the operators'
//! shape rules ([`crate::shape_rule`]).

use std::vec::Vec;

use super::node_error;
use super::spec::*;
use crate::blob::Shape;
use crate::error::Result;
use crate::shape_rule::{ConcatShape, ShapeOp};

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
        let rule = |op: ShapeOp| op.output().map_err(fail);
        let shape = match &node.op {
            OpSpec::Input { shape } => {
                if index != 0 {
                    return Err(fail("only node 0 may be the input"));
                }
                rule(ShapeOp::Input {
                    shape: Shape::new(shape).ok_or(fail("input shape out of range"))?,
                })?
            }
            &OpSpec::TimeEmbedding {
                dim, max_period, ..
            } => rule(ShapeOp::TimeEmbedding { dim, max_period })?,
            OpSpec::ClassEmbedding { classes, table } => {
                let rows = classes.saturating_add(1);
                if table.is_empty() || table.len() % rows != 0 {
                    return Err(fail(
                        "the class table needs classes + 1 rows of equal length",
                    ));
                }
                rule(ShapeOp::ClassEmbedding {
                    classes: *classes,
                    dim: table.len() / rows,
                })?
            }
            &OpSpec::Linear {
                out_features,
                input,
                ..
            } => rule(ShapeOp::Linear {
                input: shape_of(input)?,
                out_features,
            })?,
            &OpSpec::Conv2d {
                input,
                out_channels,
                kernel,
                stride,
                padding,
                ..
            } => rule(ShapeOp::Conv2d {
                input: shape_of(input)?,
                out_channels,
                kernel,
                stride,
                padding,
            })?,
            &OpSpec::GroupNorm {
                input, groups, eps, ..
            } => rule(ShapeOp::GroupNorm {
                input: shape_of(input)?,
                groups,
                eps,
            })?,
            &OpSpec::Silu { input } => rule(ShapeOp::Silu {
                input: shape_of(input)?,
            })?,
            &OpSpec::Add { lhs, rhs, .. } => rule(ShapeOp::Add {
                lhs: shape_of(lhs)?,
                rhs: shape_of(rhs)?,
            })?,
            OpSpec::Concat { inputs, .. } => {
                let mut concat = ConcatShape::new();
                for &input in inputs {
                    concat.push(shape_of(input)?).map_err(fail)?;
                }
                concat.output().map_err(fail)?
            }
            &OpSpec::Upsample2x { input } => rule(ShapeOp::Upsample2x {
                input: shape_of(input)?,
            })?,
            OpSpec::Reshape { input, shape, .. } => rule(ShapeOp::Reshape {
                input: shape_of(*input)?,
                shape: Shape::new(shape).ok_or(fail("reshape target out of range"))?,
            })?,
        };
        shapes.push(shape);
    }
    Ok(shapes)
}
