//! The nodes of a parsed blob and their stored tensors, decoded on demand from the node table.

use super::{read_usize, sub, Blob, Shape};
use crate::error::{Error, Result};
use crate::format::*;
use crate::quant::{AddParams, QuantParams, Requant};

/// A stored tensor, read in place from the blob.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'a> {
    dtype: DType,
    bytes: &'a [u8],
}

impl<'a> Tensor<'a> {
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The little-endian bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Element `i` of an `i32` or `f32` tensor, as raw bits.
    pub fn word(&self, i: usize) -> Option<u32> {
        read_u32(self.bytes, i.checked_mul(4)?)
    }
}

/// A decoded operation. Node fields are node indices; tensor fields index the tensor table.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Op {
    /// The noisy sample.
    Input,
    /// Sinusoidal timestep embedding (its `dim` is the output length).
    TimeEmbedding {
        /// Longest period.
        max_period: f32,
    },
    /// `y = W x + b`.
    Linear {
        /// Input node.
        input: usize,
        /// Weight tensor.
        weight: u32,
        /// Bias tensor.
        bias: Option<u32>,
        /// Per-channel `(multiplier, shift)` pairs (int8).
        requant: Option<u32>,
    },
    /// 2-D convolution.
    Conv2d {
        /// Input node.
        input: usize,
        /// Weight tensor.
        weight: u32,
        /// Bias tensor.
        bias: Option<u32>,
        /// Per-channel `(multiplier, shift)` pairs (int8).
        requant: Option<u32>,
        /// Kernel size.
        kernel: usize,
        /// Stride (1 or 2).
        stride: usize,
        /// Zero padding on every side.
        padding: usize,
    },
    /// Group normalisation.
    GroupNorm {
        /// Input node.
        input: usize,
        /// Number of groups.
        groups: usize,
        /// Added to the variance.
        eps: f32,
        /// Per-channel scale (f32).
        gamma: u32,
        /// Per-channel shift (f32).
        beta: u32,
    },
    /// SiLU.
    Silu {
        /// Input node.
        input: usize,
        /// The 256-entry table (int8).
        lut: Option<u32>,
    },
    /// Element-wise or channel-broadcast sum.
    Add {
        /// Left operand (its shape is the output's).
        lhs: usize,
        /// Right operand.
        rhs: usize,
    },
    /// Channel concatenation of `count` nodes listed from `first` in the input list.
    Concat {
        /// First entry in the input list.
        first: usize,
        /// Number of inputs.
        count: usize,
        /// Per-input `(multiplier, shift)` pairs (int8).
        requant: Option<u32>,
    },
    /// Nearest-neighbour 2x upsampling.
    Upsample2x {
        /// Input node.
        input: usize,
    },
    /// Same data, new shape.
    Reshape {
        /// Input node.
        input: usize,
    },
    /// Row of a `[classes + 1, dim]` table: the requested class, or the last row ("no class").
    ClassEmbedding {
        /// Number of classes.
        classes: usize,
        /// The table (i8 in int8 blobs, the weights' type in float blobs).
        table: u32,
    },
}

impl Op {
    /// The op as time group `group` runs it: the tensors that follow from the activation
    /// parameters (int8 bias and requantisation of linear and convolution layers, the SiLU
    /// table, the concat requantisation) moved `group` entries down the tensor table
    /// ([`crate::format`], "Time-groups section"); `None` when an index overflows.
    pub fn in_group(self, group: usize) -> Option<Op> {
        let group = u32::try_from(group).ok()?;
        let shift = |t: Option<u32>| match t {
            None => Some(None),
            Some(t) => t.checked_add(group).map(Some),
        };
        Some(match self {
            Op::Linear {
                input,
                weight,
                bias,
                requant,
            } => Op::Linear {
                input,
                weight,
                bias: shift(bias)?,
                requant: shift(requant)?,
            },
            Op::Conv2d {
                input,
                weight,
                bias,
                requant,
                kernel,
                stride,
                padding,
            } => Op::Conv2d {
                input,
                weight,
                bias: shift(bias)?,
                requant: shift(requant)?,
                kernel,
                stride,
                padding,
            },
            Op::Silu { input, lut } => Op::Silu {
                input,
                lut: shift(lut)?,
            },
            Op::Concat {
                first,
                count,
                requant,
            } => Op::Concat {
                first,
                count,
                requant: shift(requant)?,
            },
            other => other,
        })
    }
}

/// A decoded node: its op and output shape.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// Per-sample output shape.
    pub shape: Shape,
}

impl Node {
    /// The op code.
    pub fn code(&self) -> OpCode {
        match self.op {
            Op::Input => OpCode::Input,
            Op::TimeEmbedding { .. } => OpCode::TimeEmbedding,
            Op::Linear { .. } => OpCode::Linear,
            Op::Conv2d { .. } => OpCode::Conv2d,
            Op::GroupNorm { .. } => OpCode::GroupNorm,
            Op::Silu { .. } => OpCode::Silu,
            Op::Add { .. } => OpCode::Add,
            Op::Concat { .. } => OpCode::Concat,
            Op::Upsample2x { .. } => OpCode::Upsample2x,
            Op::Reshape { .. } => OpCode::Reshape,
            Op::ClassEmbedding { .. } => OpCode::ClassEmbedding,
        }
    }
}

pub(super) const WORD_OP: usize = 0;
pub(super) const WORD_RANK: usize = 1;
pub(super) const WORD_IN0: usize = 5;
pub(super) const WORD_IN1: usize = 6;
pub(super) const WORD_T0: usize = 7;
pub(super) const WORD_T1: usize = 8;
pub(super) const WORD_T2: usize = 9;
pub(super) const WORD_P0: usize = 10;
pub(super) const WORD_P1: usize = 11;
pub(super) const WORD_P2: usize = 12;

impl<'a> Blob<'a> {
    pub(super) fn words(&self, index: usize) -> Result<[u32; NODE_WORDS]> {
        let invalid = Error::InvalidNode {
            node: index as u32,
            reason: "node index out of range",
        };
        let record = index
            .checked_mul(NODE_RECORD_LEN)
            .and_then(|at| sub(self.graph.nodes, at, NODE_RECORD_LEN))
            .ok_or(invalid)?;
        let mut words = [0u32; NODE_WORDS];
        for (word, bytes) in words.iter_mut().zip(record.chunks_exact(4)) {
            *word = u32::from_le_bytes(bytes.try_into().map_err(|_| invalid)?);
        }
        Ok(words)
    }

    /// Decodes node `index`: op code, shape and the op's fields (unused fields must be
    /// [`NONE`] or 0). Cross-node checks are done by [`Blob::parse`].
    pub fn node(&self, index: usize) -> Result<Node> {
        let words = self.words(index)?;
        let fail = |reason| Error::InvalidNode {
            node: index as u32,
            reason,
        };
        let word = |i: usize| words.get(i).copied().unwrap_or(0);
        let code = OpCode::from_code(word(WORD_OP)).ok_or(fail("unknown op code"))?;
        let dims = [word(2), word(3), word(4)].map(|d| usize::try_from(d).unwrap_or(0));
        let shape = match word(WORD_RANK) {
            1 if dims[1] == 1 && dims[2] == 1 => Shape::new(&dims[..1]),
            3 => Shape::new(&dims),
            _ => None,
        }
        .ok_or(fail("invalid output shape"))?;
        let node_ref = |i: usize| {
            usize::try_from(word(i))
                .ok()
                .filter(|&n| n < self.graph.node_count)
                .ok_or(fail("input node out of range"))
        };
        let tensor = |i: usize| match word(i) {
            NONE => None,
            t => Some(t),
        };
        let required = |i: usize| tensor(i).ok_or(fail("a required tensor is missing"));
        let param = |i: usize| usize::try_from(word(i)).unwrap_or(usize::MAX);
        // Which of in0, in1, t0, t1, t2 and p0..p3 the op uses.
        let (op, used_refs, used_params): (Op, [bool; 5], usize) = match code {
            OpCode::Input => (Op::Input, [false; 5], 0),
            OpCode::TimeEmbedding => (
                Op::TimeEmbedding {
                    max_period: f32::from_bits(word(WORD_P0)),
                },
                [false; 5],
                1,
            ),
            OpCode::Linear => (
                Op::Linear {
                    input: node_ref(WORD_IN0)?,
                    weight: required(WORD_T0)?,
                    bias: tensor(WORD_T1),
                    requant: tensor(WORD_T2),
                },
                [true, false, true, true, true],
                0,
            ),
            OpCode::Conv2d => (
                Op::Conv2d {
                    input: node_ref(WORD_IN0)?,
                    weight: required(WORD_T0)?,
                    bias: tensor(WORD_T1),
                    requant: tensor(WORD_T2),
                    kernel: param(WORD_P0),
                    stride: param(WORD_P1),
                    padding: param(WORD_P2),
                },
                [true, false, true, true, true],
                3,
            ),
            OpCode::GroupNorm => (
                Op::GroupNorm {
                    input: node_ref(WORD_IN0)?,
                    groups: param(WORD_P0),
                    eps: f32::from_bits(word(WORD_P1)),
                    gamma: required(WORD_T0)?,
                    beta: required(WORD_T1)?,
                },
                [true, false, true, true, false],
                2,
            ),
            OpCode::Silu => (
                Op::Silu {
                    input: node_ref(WORD_IN0)?,
                    lut: tensor(WORD_T0),
                },
                [true, false, true, false, false],
                0,
            ),
            OpCode::Add => (
                Op::Add {
                    lhs: node_ref(WORD_IN0)?,
                    rhs: node_ref(WORD_IN1)?,
                },
                [true, true, false, false, false],
                0,
            ),
            OpCode::Concat => (
                Op::Concat {
                    first: param(WORD_IN0),
                    count: param(WORD_IN1),
                    requant: tensor(WORD_T0),
                },
                [true, true, true, false, false],
                0,
            ),
            OpCode::Upsample2x => (
                Op::Upsample2x {
                    input: node_ref(WORD_IN0)?,
                },
                [true, false, false, false, false],
                0,
            ),
            OpCode::Reshape => (
                Op::Reshape {
                    input: node_ref(WORD_IN0)?,
                },
                [true, false, false, false, false],
                0,
            ),
            OpCode::ClassEmbedding => (
                Op::ClassEmbedding {
                    classes: param(WORD_P0),
                    table: required(WORD_T0)?,
                },
                [false, false, true, false, false],
                1,
            ),
        };
        let refs = [WORD_IN0, WORD_IN1, WORD_T0, WORD_T1, WORD_T2];
        if refs
            .iter()
            .zip(used_refs)
            .any(|(&i, used)| !used && word(i) != NONE)
        {
            return Err(fail("unused input or tensor fields must be NONE"));
        }
        if (WORD_P0 + used_params..NODE_WORDS).any(|i| word(i) != 0) {
            return Err(fail("unused parameter and reserved fields must be 0"));
        }
        Ok(Node { op, shape })
    }

    /// Node `index` as time group `group` runs it ([`Op::in_group`]); group 0 is
    /// [`Blob::node`].
    pub fn node_in(&self, index: usize, group: usize) -> Result<Node> {
        let node = self.node(index)?;
        let op = node.op.in_group(group).ok_or(Error::InvalidNode {
            node: index as u32,
            reason: "a time group's tensor index overflows",
        })?;
        Ok(Node { op, ..node })
    }

    /// Tensor `index` of the tensor table.
    pub fn tensor(&self, index: u32) -> Result<Tensor<'a>> {
        let fail = |reason| Error::InvalidTensor {
            tensor: index,
            reason,
        };
        let index_usize = usize::try_from(index).unwrap_or(usize::MAX);
        if index_usize >= self.graph.tensor_count {
            return Err(fail("tensor index out of range"));
        }
        let at = TENSORS_HEADER_LEN + index_usize * TENSOR_ENTRY_LEN;
        let field = |i: usize| read_u32(self.graph.tensor_section, at + 4 * i).ok_or(fail("table"));
        let dtype = DType::from_code(field(0)?).ok_or(fail("unknown element type"))?;
        let offset = usize::try_from(field(1)?).map_err(|_| fail("offset"))?;
        let len = usize::try_from(field(2)?).map_err(|_| fail("length"))?;
        if field(3)? != 0 {
            return Err(fail("reserved tensor word must be 0"));
        }
        let table_end = TENSORS_HEADER_LEN + self.graph.tensor_count * TENSOR_ENTRY_LEN;
        if offset < table_end || offset % dtype.size() != 0 {
            return Err(fail("data offset inside the table or misaligned"));
        }
        let bytes = len
            .checked_mul(dtype.size())
            .and_then(|n| sub(self.graph.tensor_section, offset, n))
            .ok_or(fail("data runs past the tensors section"))?;
        Ok(Tensor { dtype, bytes })
    }

    /// The tensor `index`, checked to have `dtype` and `len` elements.
    pub(super) fn tensor_as(
        &self,
        node: usize,
        index: u32,
        dtype: DType,
        len: usize,
    ) -> Result<Tensor<'a>> {
        let tensor = self.tensor(index)?;
        if tensor.dtype != dtype {
            return Err(Error::InvalidNode {
                node: node as u32,
                reason: "a tensor has the wrong element type",
            });
        }
        if tensor.len() != len {
            return Err(Error::InvalidNode {
                node: node as u32,
                reason: "a tensor has the wrong number of elements",
            });
        }
        Ok(tensor)
    }

    /// Byte offset of the quantisation record of node `index` in time group `group`.
    fn quant_record(&self, index: usize, group: usize) -> Result<usize> {
        group
            .checked_mul(self.graph.node_count)
            .and_then(|r| r.checked_add(index))
            .and_then(|r| r.checked_mul(QUANT_RECORD_LEN))
            .ok_or(Error::Malformed("quant index"))
    }

    /// Output quantisation parameters of node `index` in time group `group` (int8 blobs).
    pub fn quant(&self, index: usize, group: usize) -> Result<QuantParams> {
        let at = self.quant_record(index, group)?;
        let scale = read_u32(self.graph.quant, at).ok_or(Error::InvalidNode {
            node: index as u32,
            reason: "no quantisation record (float blob?)",
        })?;
        let zero_point = read_u32(self.graph.quant, at.saturating_add(4)).unwrap_or(0);
        Ok(QuantParams {
            scale: f32::from_bits(scale),
            zero_point: zero_point as i32,
        })
    }

    /// Fixed-point parameters of the int8 `Add` node `index` in time group `group`.
    pub fn add_params(&self, index: usize, group: usize) -> Result<AddParams> {
        let at = self.quant_record(index, group)?;
        let word = |i: usize| {
            read_u32(self.graph.quant, at.saturating_add(8 + 4 * i))
                .map(|v| v as i32)
                .ok_or(Error::InvalidNode {
                    node: index as u32,
                    reason: "no quantisation record (float blob?)",
                })
        };
        Ok(AddParams {
            lhs: Requant {
                multiplier: word(0)?,
                shift: word(1)?,
            },
            rhs: Requant {
                multiplier: word(2)?,
                shift: word(3)?,
            },
            output: Requant {
                multiplier: word(4)?,
                shift: word(5)?,
            },
        })
    }

    /// Entry `index` of the input list (a node index).
    pub fn list_entry(&self, index: usize) -> Result<usize> {
        index
            .checked_mul(4)
            .and_then(|at| read_usize(self.graph.list, at))
            .filter(|&n| n < self.graph.node_count)
            .ok_or(Error::Malformed("input list entry out of range"))
    }

    /// Byte offset of node `index`'s output in the arena.
    pub fn plan_offset(&self, index: usize) -> Result<usize> {
        index
            .checked_mul(4)
            .and_then(|at| read_usize(self.graph.plan, at))
            .ok_or(Error::InvalidPlan {
                node: index as u32,
                reason: "no plan entry",
            })
    }

    /// `(offset, len)` in bytes of node `index`'s output in the arena.
    pub(crate) fn region(&self, index: usize, shape: &Shape) -> Result<(usize, usize)> {
        let offset = self.plan_offset(index)?;
        let len = shape
            .elements()
            .checked_mul(self.precision.activation_bytes())
            .ok_or(Error::InvalidPlan {
                node: index as u32,
                reason: "size overflows",
            })?;
        Ok((offset, len))
    }
}
