//! Each operator's shape rule, written once.
//!
//! A node's output shape follows from its operator, the operator's parameters and its inputs'
//! shapes. [`ShapeOp::output`] (and [`ConcatShape`] for concatenation) is that rule, with the
//! checks of the parameters that decide whether the operator exists at all (an even time
//! embedding, a stride of 1 or 2, groups that divide the channels, ...). Three places use it
//! and no other place repeats it:
//! - the blob reader ([`Blob::parse`](crate::Blob::parse)) checks every stored shape against it;
//! - the blob writer (`writer::infer_shapes`, feature `std`) infers every shape with it;
//! - the exporter's float graph (`ddm-export`) builds its nodes' shapes with it, so every graph
//!   that validates is one the runtime accepts.
//!
//! Shapes are per sample: a vector `[C]` or a feature map `[C, H, W]` ([`Shape`]); every rule
//! fails with a reason rather than produce a shape [`Shape::new`] would refuse.

use crate::blob::{Shape, MAX_DIM};
use crate::format::MAX_GROUP_LEN;

/// An operator with what decides its output shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ShapeOp {
    /// The network input, of shape `shape`.
    Input {
        /// The input's shape.
        shape: Shape,
    },
    /// The sinusoidal time embedding `[dim]`: `dim` even and `> 0`, `max_period` finite and
    /// `> 1`.
    TimeEmbedding {
        /// Output length.
        dim: usize,
        /// Longest period.
        max_period: f32,
    },
    /// A class embedding: row `y` of a `[classes + 1, dim]` table for the requested class
    /// `y < classes`, the last row ("no class") for unconditional predictions. Output `[dim]`;
    /// `classes > 0` and `dim > 0`.
    ClassEmbedding {
        /// Number of classes (the table has one more row).
        classes: usize,
        /// Output length.
        dim: usize,
    },
    /// A linear layer: a vector in, `[out_features]` out.
    Linear {
        /// The input's shape.
        input: Shape,
        /// Output length.
        out_features: usize,
    },
    /// A 2-D convolution of a feature map: square `kernel` in `1..=MAX_DIM`, `stride` 1 or 2,
    /// `padding <= MAX_DIM` on every side, and a padded input at least one kernel wide.
    Conv2d {
        /// The input's shape.
        input: Shape,
        /// Output channels.
        out_channels: usize,
        /// Kernel size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
    },
    /// Group normalisation: the input's shape; `groups > 0` divides the channels, a group holds
    /// at most `MAX_GROUP_LEN` elements, `eps` is finite and `> 0`.
    GroupNorm {
        /// The input's shape.
        input: Shape,
        /// Number of groups.
        groups: usize,
        /// Added to the variance.
        eps: f32,
    },
    /// SiLU: the input's shape.
    Silu {
        /// The input's shape.
        input: Shape,
    },
    /// `lhs + rhs`: equal shapes, or a vector `[C]` added to every pixel of a `[C, H, W]` map.
    Add {
        /// The left operand's shape (the output's).
        lhs: Shape,
        /// The right operand's shape.
        rhs: Shape,
    },
    /// Nearest-neighbour upsampling of a feature map: `[C, H, W]` to `[C, 2H, 2W]`.
    Upsample2x {
        /// The input's shape.
        input: Shape,
    },
    /// The same elements under another shape.
    Reshape {
        /// The input's shape.
        input: Shape,
        /// The output's shape.
        shape: Shape,
    },
}

impl ShapeOp {
    /// The output shape, or why the operator cannot exist with these shapes and parameters.
    pub fn output(&self) -> Result<Shape, &'static str> {
        match *self {
            ShapeOp::Input { shape } => Ok(shape),
            ShapeOp::TimeEmbedding { dim, max_period } => {
                if dim == 0 || dim % 2 != 0 {
                    return Err("the time embedding needs an even length > 0");
                }
                if !(max_period.is_finite() && max_period > 1.0) {
                    return Err("max_period must be finite and > 1");
                }
                Shape::new(&[dim]).ok_or("time embedding too long")
            }
            ShapeOp::ClassEmbedding { classes, dim } => {
                if classes == 0 || classes >= MAX_DIM {
                    return Err("a class embedding needs 1..32767 classes");
                }
                Shape::new(&[dim]).ok_or("class embedding length out of range")
            }
            ShapeOp::Linear {
                input,
                out_features,
            } => {
                if input.rank() != 1 {
                    return Err("linear layers take vectors");
                }
                Shape::new(&[out_features]).ok_or("linear output length out of range")
            }
            ShapeOp::Conv2d {
                input,
                out_channels,
                kernel,
                stride,
                padding,
            } => {
                if input.rank() != 3 {
                    return Err("convolutions take feature maps");
                }
                if !(1..=MAX_DIM).contains(&kernel) || !(1..=2).contains(&stride) {
                    return Err("kernel must be in 1..=32768 and stride 1 or 2");
                }
                if padding > MAX_DIM {
                    return Err("padding too large");
                }
                let size = |n: usize| {
                    (n + 2 * padding)
                        .checked_sub(kernel)
                        .map(|span| span / stride + 1)
                };
                match (size(input.height()), size(input.width())) {
                    (Some(h), Some(w)) => {
                        Shape::new(&[out_channels, h, w]).ok_or("convolution output out of range")
                    }
                    _ => Err("the kernel is larger than the padded input"),
                }
            }
            ShapeOp::GroupNorm { input, groups, eps } => {
                if groups == 0 || input.channels() % groups != 0 {
                    return Err("groups must divide the channels");
                }
                if input.elements() / groups > MAX_GROUP_LEN {
                    return Err("group too large");
                }
                if !(eps.is_finite() && eps > 0.0) {
                    return Err("eps must be finite and > 0");
                }
                Ok(input)
            }
            ShapeOp::Silu { input } => Ok(input),
            ShapeOp::Add { lhs, rhs } => {
                let broadcast =
                    lhs.rank() == 3 && rhs.rank() == 1 && rhs.channels() == lhs.channels();
                if lhs != rhs && !broadcast {
                    return Err("add needs equal shapes or [C] onto [C, H, W]");
                }
                Ok(lhs)
            }
            ShapeOp::Upsample2x { input } => {
                if input.rank() != 3 {
                    return Err("upsampling takes feature maps");
                }
                Shape::new(&[input.channels(), 2 * input.height(), 2 * input.width()])
                    .ok_or("upsampled map too large")
            }
            ShapeOp::Reshape { input, shape } => {
                if input.elements() != shape.elements() {
                    return Err("reshape keeps the number of elements");
                }
                Ok(shape)
            }
        }
    }
}

/// Concatenation on channels, one input at a time: the inputs agree in rank, height and width,
/// and the output's channels are the sum of theirs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConcatShape {
    first: Option<Shape>,
    channels: usize,
}

impl ConcatShape {
    /// No inputs yet.
    pub const fn new() -> Self {
        ConcatShape {
            first: None,
            channels: 0,
        }
    }

    /// Adds the next input.
    ///
    /// # Errors
    /// When `shape` disagrees with the first input outside the channels.
    pub fn push(&mut self, shape: Shape) -> Result<(), &'static str> {
        let first = *self.first.get_or_insert(shape);
        if shape.rank() != first.rank()
            || shape.height() != first.height()
            || shape.width() != first.width()
        {
            return Err("concat inputs must agree outside the channels");
        }
        self.channels = self.channels.saturating_add(shape.channels());
        Ok(())
    }

    /// The output shape of the inputs pushed so far.
    ///
    /// # Errors
    /// Without inputs, or when the channels add up beyond `MAX_DIM`.
    pub fn output(&self) -> Result<Shape, &'static str> {
        let first = self.first.ok_or("concat needs inputs")?;
        let (mut dims, rank) = first.dims();
        dims[0] = self.channels;
        Shape::new(&dims[..rank]).ok_or("concat output channels out of range")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(dims: &[usize]) -> Shape {
        Shape::new(dims).unwrap()
    }

    #[test]
    fn each_rule_gives_its_shape() {
        let map = s(&[4, 8, 6]);
        let cases = [
            (ShapeOp::Input { shape: map }, map),
            (
                ShapeOp::TimeEmbedding {
                    dim: 16,
                    max_period: 10_000.0,
                },
                s(&[16]),
            ),
            (
                ShapeOp::ClassEmbedding {
                    classes: 10,
                    dim: 7,
                },
                s(&[7]),
            ),
            (
                ShapeOp::Linear {
                    input: s(&[16]),
                    out_features: 3,
                },
                s(&[3]),
            ),
            (
                ShapeOp::Conv2d {
                    input: map,
                    out_channels: 5,
                    kernel: 3,
                    stride: 2,
                    padding: 1,
                },
                s(&[5, 4, 3]),
            ),
            (
                ShapeOp::Conv2d {
                    input: map,
                    out_channels: 2,
                    kernel: 3,
                    stride: 1,
                    padding: 0,
                },
                s(&[2, 6, 4]),
            ),
            (
                ShapeOp::GroupNorm {
                    input: map,
                    groups: 2,
                    eps: 1e-5,
                },
                map,
            ),
            (ShapeOp::Silu { input: map }, map),
            (
                ShapeOp::Add {
                    lhs: map,
                    rhs: s(&[4]),
                },
                map,
            ),
            (ShapeOp::Upsample2x { input: map }, s(&[4, 16, 12])),
            (
                ShapeOp::Reshape {
                    input: map,
                    shape: s(&[192]),
                },
                s(&[192]),
            ),
        ];
        for (op, expected) in cases {
            assert_eq!(op.output(), Ok(expected), "{op:?}");
        }
    }

    #[test]
    fn each_rule_refuses_what_the_runtime_cannot_run() {
        let map = s(&[4, 8, 6]);
        let vector = s(&[4]);
        let refused = [
            ShapeOp::TimeEmbedding {
                dim: 15,
                max_period: 10.0,
            },
            ShapeOp::TimeEmbedding {
                dim: 16,
                max_period: 1.0,
            },
            ShapeOp::ClassEmbedding { classes: 0, dim: 8 },
            ShapeOp::ClassEmbedding {
                classes: MAX_DIM,
                dim: 8,
            },
            ShapeOp::ClassEmbedding { classes: 3, dim: 0 },
            ShapeOp::Linear {
                input: map,
                out_features: 3,
            },
            ShapeOp::Linear {
                input: vector,
                out_features: 0,
            },
            ShapeOp::Conv2d {
                input: vector,
                out_channels: 1,
                kernel: 1,
                stride: 1,
                padding: 0,
            },
            ShapeOp::Conv2d {
                input: map,
                out_channels: 1,
                kernel: 3,
                stride: 3,
                padding: 1,
            },
            ShapeOp::Conv2d {
                input: map,
                out_channels: 1,
                kernel: 9,
                stride: 1,
                padding: 0,
            },
            ShapeOp::GroupNorm {
                input: map,
                groups: 3,
                eps: 1e-5,
            },
            ShapeOp::GroupNorm {
                input: map,
                groups: 0,
                eps: 1e-5,
            },
            ShapeOp::GroupNorm {
                input: map,
                groups: 2,
                eps: 0.0,
            },
            ShapeOp::Add {
                lhs: map,
                rhs: s(&[4, 8, 5]),
            },
            ShapeOp::Add {
                lhs: vector,
                rhs: map,
            },
            ShapeOp::Upsample2x { input: vector },
            ShapeOp::Upsample2x {
                input: s(&[1, MAX_DIM, 1]),
            },
            ShapeOp::Reshape {
                input: map,
                shape: s(&[191]),
            },
        ];
        for op in refused {
            assert!(op.output().is_err(), "{op:?} gave {:?}", op.output());
        }
    }

    #[test]
    fn concat_sums_channels_of_agreeing_inputs() {
        let mut concat = ConcatShape::new();
        assert!(concat.output().is_err());
        concat.push(s(&[3, 4, 4])).unwrap();
        concat.push(s(&[5, 4, 4])).unwrap();
        assert_eq!(concat.output(), Ok(s(&[8, 4, 4])));
        assert!(concat.push(s(&[5, 4, 3])).is_err());
        assert!(concat.push(s(&[5])).is_err());
        let mut wide = ConcatShape::new();
        wide.push(s(&[MAX_DIM])).unwrap();
        wide.push(s(&[1])).unwrap();
        assert!(wide.output().is_err());
    }
}
