//! Zero-copy reader and validator of model blobs ([`crate::format`] describes the layout).
//!
//! [`Blob::parse`] checks everything a network run relies on, once: header, CRC, section
//! table, every node (op parameters, shapes, tensor types and lengths, quantisation
//! parameters), the memory plan and the schedule. Every size, count and offset from the blob
//! goes through checked arithmetic and `get`, so an untrusted blob can only produce an
//! [`Error`]. After a successful parse, [`Blob::node`], [`Blob::tensor`] and friends decode the
//! same (immutable) bytes again on demand; they keep their checks, so they cannot panic
//! either, but they cannot fail on a parsed blob.
//!
//! Invariants a parsed blob guarantees to the kernels (each is checked below):
//! - node 0 is the only `Input`; every input of node `i` is a node before `i`;
//! - shapes are consistent with the ops (the table in [`crate::format`]), every dimension is
//!   in `1..=MAX_DIM` and every element count fits in `u32`;
//! - tensor lengths equal what the op needs; int8 accumulations cannot overflow
//!   ([`MAX_FAN_IN`], [`MAX_BIAS`]);
//! - every output lies inside the arena, f32 outputs 4-byte aligned, and no output overlaps an
//!   input except the allowed exact in-place cases.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use crate::error::{Error, Result};
use crate::format::*;
use crate::quant::{AddParams, QuantParams, Requant};
use ddm_core::SamplerConfig;

use crate::settings::{
    betas_from_code, prediction_from_code, sampler_from_code, spacing_from_code,
    variance_from_code, ModelSchedule,
};

/// Largest dimension (channels, height or width) of a tensor shape.
pub const MAX_DIM: usize = 1 << 15;

/// A per-sample tensor shape: a vector `[C]` or a feature map `[C, H, W]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Shape {
    rank: u8,
    c: usize,
    h: usize,
    w: usize,
    elements: usize,
}

impl Shape {
    /// A shape from its dimensions (1 or 3 of them, each in `1..=MAX_DIM`, at most
    /// `u32::MAX` elements).
    pub fn new(dims: &[usize]) -> Option<Shape> {
        match *dims {
            [c] => Self::from_parts(1, c, 1, 1),
            [c, h, w] => Self::from_parts(3, c, h, w),
            _ => None,
        }
    }

    fn from_parts(rank: u8, c: usize, h: usize, w: usize) -> Option<Shape> {
        let in_range = |d: usize| (1..=MAX_DIM).contains(&d);
        if !(in_range(c) && in_range(h) && in_range(w)) || (rank == 1 && (h != 1 || w != 1)) {
            return None;
        }
        let elements = c.checked_mul(h)?.checked_mul(w)?;
        if u32::try_from(elements).is_err() {
            return None;
        }
        Some(Shape {
            rank,
            c,
            h,
            w,
            elements,
        })
    }

    /// 1 for `[C]`, 3 for `[C, H, W]`.
    pub fn rank(&self) -> usize {
        usize::from(self.rank)
    }

    /// Channels (the length of a vector).
    pub fn channels(&self) -> usize {
        self.c
    }

    /// Height (1 for vectors).
    pub fn height(&self) -> usize {
        self.h
    }

    /// Width (1 for vectors).
    pub fn width(&self) -> usize {
        self.w
    }

    /// `H W`.
    pub fn spatial(&self) -> usize {
        self.h * self.w
    }

    /// `C H W`.
    pub fn elements(&self) -> usize {
        self.elements
    }

    /// The dimensions, `[C]` or `[C, H, W]` (unused trailing entries are 0).
    pub fn dims(&self) -> ([usize; 3], usize) {
        if self.rank == 1 {
            ([self.c, 0, 0], 1)
        } else {
            ([self.c, self.h, self.w], 3)
        }
    }
}

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
        }
    }
}

/// A validated model blob, borrowed from flash (or any byte slice) without copying.
#[derive(Clone, Copy)]
pub struct Blob<'a> {
    bytes: &'a [u8],
    precision: Precision,
    nodes: &'a [u8],
    node_count: usize,
    output: usize,
    list: &'a [u8],
    tensor_section: &'a [u8],
    tensor_count: usize,
    quant: &'a [u8],
    plan: &'a [u8],
    arena_bytes: usize,
    scratch_bytes: usize,
    schedule: ModelSchedule,
    sampler: SamplerConfig,
    alphas: &'a [u8],
}

impl core::fmt::Debug for Blob<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Blob")
            .field("len", &self.bytes.len())
            .field("precision", &self.precision)
            .field("nodes", &self.node_count)
            .field("tensors", &self.tensor_count)
            .field("arena_bytes", &self.arena_bytes)
            .field("scratch_bytes", &self.scratch_bytes)
            .field("schedule", &self.schedule)
            .field("sampler", &self.sampler)
            .finish()
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Blob<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "Blob {{ len: {=usize}, precision: {}, nodes: {=usize}, tensors: {=usize}, arena_bytes: {=usize}, scratch_bytes: {=usize} }}",
            self.bytes.len(),
            self.precision,
            self.node_count,
            self.tensor_count,
            self.arena_bytes,
            self.scratch_bytes
        )
    }
}

const WORD_OP: usize = 0;
const WORD_RANK: usize = 1;
const WORD_IN0: usize = 5;
const WORD_IN1: usize = 6;
const WORD_T0: usize = 7;
const WORD_T1: usize = 8;
const WORD_T2: usize = 9;
const WORD_P0: usize = 10;
const WORD_P1: usize = 11;
const WORD_P2: usize = 12;

fn malformed<T>(what: &'static str) -> Result<T> {
    Err(Error::Malformed(what))
}

/// Reads a `u32` at `at` as a `usize`.
fn read_usize(bytes: &[u8], at: usize) -> Option<usize> {
    read_u32(bytes, at).and_then(|v| usize::try_from(v).ok())
}

/// `bytes[start..start + len]`, if it is there.
fn sub(bytes: &[u8], start: usize, len: usize) -> Option<&[u8]> {
    bytes.get(start..start.checked_add(len)?)
}

/// Whether `[a, a + la)` and `[b, b + lb)` intersect (ends are known not to overflow).
fn overlaps(a: usize, la: usize, b: usize, lb: usize) -> bool {
    la > 0 && lb > 0 && a < b.saturating_add(lb) && b < a.saturating_add(la)
}

impl<'a> Blob<'a> {
    /// Parses and validates a blob. Bytes after the length the header declares are ignored
    /// (a flash partition may be larger than the blob).
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let available = bytes.len();
        if available < HEADER_LEN {
            return Err(Error::Truncated {
                needed: HEADER_LEN,
                available,
            });
        }
        if bytes.get(..4) != Some(&MAGIC[..]) {
            return Err(Error::BadMagic);
        }
        let word = |at: usize| read_u32(bytes, at).ok_or(Error::Malformed("short header"));
        let version = word(4)?;
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let total_len = usize::try_from(word(12)?).map_err(|_| Error::Malformed("length"))?;
        if total_len < HEADER_LEN {
            return malformed("declared length shorter than the header");
        }
        if total_len > available {
            return Err(Error::Truncated {
                needed: total_len,
                available,
            });
        }
        let bytes = bytes.get(..total_len).ok_or(Error::Truncated {
            needed: total_len,
            available,
        })?;
        let stored = word(CRC_OFFSET)?;
        let computed = CRC32.checksum(bytes.get(CRC_START..).unwrap_or(&[]));
        if stored != computed {
            return Err(Error::CrcMismatch { stored, computed });
        }
        let precision = Precision::from_code(word(16)?)?;
        let section_count = usize::try_from(word(20)?).unwrap_or(usize::MAX);
        if word(24)? != 0 || word(28)? != 0 {
            return malformed("reserved header words must be 0");
        }
        if !(1..=MAX_SECTIONS).contains(&section_count) {
            return malformed("section count out of range");
        }
        let table_end = section_count
            .checked_mul(SECTION_ENTRY_LEN)
            .and_then(|n| n.checked_add(HEADER_LEN))
            .filter(|&end| end <= total_len)
            .ok_or(Error::Malformed("section table runs past the blob"))?;

        // Section id -> (offset, len); index 0 unused.
        let mut sections: [Option<(usize, usize)>; 6] = [None; 6];
        for index in 0..section_count {
            let at = HEADER_LEN + index * SECTION_ENTRY_LEN;
            let id = word(at)?;
            let offset = read_usize(bytes, at + 4).ok_or(Error::Malformed("section offset"))?;
            let len = read_usize(bytes, at + 8).ok_or(Error::Malformed("section length"))?;
            if word(at + 12)? != 0 {
                return malformed("reserved section word must be 0");
            }
            if offset % SECTION_ALIGN != 0 {
                return malformed("section not aligned to 16 bytes");
            }
            let end = offset
                .checked_add(len)
                .ok_or(Error::Malformed("section end overflows"))?;
            if offset < table_end || end > total_len {
                return malformed("section outside the blob body");
            }
            let slot = usize::try_from(id)
                .ok()
                .filter(|id| (1..=5).contains(id))
                .and_then(|id| sections.get_mut(id))
                .ok_or(Error::Malformed("unknown section id"))?;
            if slot.is_some() {
                return malformed("duplicate section");
            }
            *slot = Some((offset, len));
        }
        for (i, a) in sections.iter().enumerate() {
            for b in sections.iter().skip(i + 1) {
                if let (Some((oa, la)), Some((ob, lb))) = (a, b) {
                    if overlaps(*oa, *la, *ob, *lb) {
                        return malformed("sections overlap");
                    }
                }
            }
        }
        let section = |id: u32| -> Result<&'a [u8]> {
            let entry = sections.get(id as usize).copied().flatten();
            let (offset, len) = entry.ok_or(Error::Malformed("a required section is missing"))?;
            sub(bytes, offset, len).ok_or(Error::Malformed("section outside the blob"))
        };

        // Graph.
        let graph = section(SECTION_GRAPH)?;
        let node_count = read_usize(graph, 0).ok_or(Error::Malformed("graph header"))?;
        let output = read_usize(graph, 4).ok_or(Error::Malformed("graph header"))?;
        let list_len = read_usize(graph, 8).ok_or(Error::Malformed("graph header"))?;
        if read_u32(graph, 12) != Some(0) {
            return malformed("reserved graph word must be 0");
        }
        if !(1..=MAX_NODES).contains(&node_count) {
            return malformed("node count out of range");
        }
        if output >= node_count {
            return malformed("output node out of range");
        }
        let records_len = node_count * NODE_RECORD_LEN;
        let graph_len = list_len
            .checked_mul(4)
            .and_then(|l| l.checked_add(GRAPH_HEADER_LEN + records_len));
        if graph_len != Some(graph.len()) {
            return malformed("graph section length does not match its counts");
        }
        let nodes = sub(graph, GRAPH_HEADER_LEN, records_len).ok_or(Error::Malformed("graph"))?;
        let list = graph
            .get(GRAPH_HEADER_LEN + records_len..)
            .ok_or(Error::Malformed("graph"))?;

        // Tensors.
        let tensor_section = section(SECTION_TENSORS)?;
        let tensor_count = read_usize(tensor_section, 0).ok_or(Error::Malformed("tensors"))?;
        if (1..4).any(|i| read_u32(tensor_section, 4 * i) != Some(0)) {
            return malformed("reserved tensor header words must be 0");
        }
        tensor_count
            .checked_mul(TENSOR_ENTRY_LEN)
            .and_then(|n| n.checked_add(TENSORS_HEADER_LEN))
            .filter(|&end| end <= tensor_section.len())
            .ok_or(Error::Malformed("tensor table runs past its section"))?;

        // Quantisation records.
        let quant = match (
            precision,
            sections.get(SECTION_QUANT as usize).copied().flatten(),
        ) {
            (Precision::Int8, Some(_)) => {
                let quant = section(SECTION_QUANT)?;
                if quant.len() != node_count * QUANT_RECORD_LEN {
                    return malformed("quantisation section length does not match the nodes");
                }
                quant
            }
            (Precision::Int8, None) => return malformed("an int8 blob needs a quant section"),
            (_, Some(_)) => return malformed("a float blob has no quant section"),
            (_, None) => &[][..],
        };

        // Memory plan.
        let plan_section = section(SECTION_PLAN)?;
        let arena_bytes = read_usize(plan_section, 0).ok_or(Error::Malformed("plan"))?;
        if (1..4).any(|i| read_u32(plan_section, 4 * i) != Some(0)) {
            return malformed("reserved plan header words must be 0");
        }
        if plan_section.len() != PLAN_HEADER_LEN + 4 * node_count {
            return malformed("plan section length does not match the nodes");
        }
        let plan = plan_section
            .get(PLAN_HEADER_LEN..)
            .ok_or(Error::Malformed("plan"))?;

        // Schedule.
        let (schedule, sampler, alphas) = parse_schedule(section(SECTION_SCHEDULE)?)?;

        let mut blob = Blob {
            bytes,
            precision,
            nodes,
            node_count,
            output,
            list,
            tensor_section,
            tensor_count,
            quant,
            plan,
            arena_bytes,
            scratch_bytes: 0,
            schedule,
            sampler,
            alphas,
        };
        for tensor in 0..tensor_count {
            blob.tensor(tensor as u32)?;
        }
        for index in 0..node_count {
            blob.validate_node(index)?;
        }
        let input = blob.node(0)?;
        if input.op != Op::Input {
            return Err(Error::InvalidNode {
                node: 0,
                reason: "node 0 must be the input",
            });
        }
        if blob.node(output)?.shape != input.shape {
            return Err(Error::InvalidNode {
                node: output as u32,
                reason: "the output shape differs from the input shape",
            });
        }
        blob.scratch_bytes = blob.kernel_scratch_bytes()?;
        #[cfg(feature = "defmt")]
        defmt::debug!("parsed {}", blob);
        Ok(blob)
    }

    /// The blob's bytes (`total_len` of them).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Precision of weights and activations.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// Index of the output node.
    pub fn output_node(&self) -> usize {
        self.output
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.tensor_count
    }

    /// Bytes of the activation arena the memory plan uses.
    pub fn arena_bytes(&self) -> usize {
        self.arena_bytes
    }

    /// Bytes of scratch the kernels of a network call need besides the activations: the
    /// im2col buffer of the int8 convolutions, sized for the largest fan-in
    /// ([`s8_scratch_words`](crate::kernels::conv2d::s8_scratch_words)); 0 for float blobs
    /// and blobs without convolutions. [`plan`](crate::plan) places it after the activations.
    pub fn scratch_bytes(&self) -> usize {
        self.scratch_bytes
    }

    /// The largest kernel scratch of any node (see [`Blob::scratch_bytes`]).
    fn kernel_scratch_bytes(&self) -> Result<usize> {
        if self.precision != Precision::Int8 {
            return Ok(0);
        }
        let mut bytes = 0usize;
        for index in 0..self.node_count {
            if let Op::Conv2d { input, kernel, .. } = self.node(index)?.op {
                let node_bytes = self
                    .node(input)?
                    .shape
                    .channels()
                    .checked_mul(kernel)
                    .and_then(|n| n.checked_mul(kernel))
                    .and_then(crate::kernels::conv2d::s8_scratch_words)
                    .and_then(|words| words.checked_mul(4))
                    .ok_or(Error::InvalidNode {
                        node: index as u32,
                        reason: "convolution scratch size overflows",
                    })?;
                bytes = bytes.max(node_bytes);
            }
        }
        Ok(bytes)
    }

    /// Shape of one sample (the input node's, which is also the output's).
    pub fn sample_shape(&self) -> Shape {
        // Node 0 decodes on every parsed blob; the fallback is never taken.
        self.node(0).map_or(
            Shape {
                rank: 1,
                c: 1,
                h: 1,
                w: 1,
                elements: 1,
            },
            |n| n.shape,
        )
    }

    /// Elements of one sample.
    pub fn sample_len(&self) -> usize {
        self.sample_shape().elements()
    }

    /// The schedule the model was trained with.
    pub fn schedule(&self) -> ModelSchedule {
        self.schedule
    }

    /// The default sampler settings.
    pub fn sampler_defaults(&self) -> SamplerConfig {
        self.sampler
    }

    /// Number of training steps `T` (entries of `alphas_cumprod`).
    pub fn train_steps(&self) -> usize {
        self.alphas.len() / 4
    }

    /// `alpha_bar_t` from the stored table.
    pub fn alpha_bar(&self, t: usize) -> Option<f32> {
        read_u32(self.alphas, t.checked_mul(4)?).map(f32::from_bits)
    }

    /// The training schedule over the stored `alphas_cumprod` table, read in place (no copy;
    /// the blob need not be aligned).
    ///
    /// # Errors
    /// None for a parsed blob: [`Blob::parse`] made the same check on the table.
    pub fn alpha_bar_schedule(&self) -> Result<ddm_core::Schedule<'a>> {
        Ok(ddm_core::Schedule::from_le_bytes(self.alphas)?)
    }

    /// Copies `alphas_cumprod` into `out` (which must have `T` elements).
    pub fn copy_alphas_cumprod(&self, out: &mut [f32]) -> Result<()> {
        crate::error::check_len("alphas_cumprod", self.train_steps(), out.len())?;
        for (slot, bytes) in out.iter_mut().zip(self.alphas.chunks_exact(4)) {
            let word: [u8; 4] = bytes.try_into().map_err(|_| Error::Malformed("alphas"))?;
            *slot = f32::from_le_bytes(word);
        }
        Ok(())
    }

    /// Multiply-accumulates of one network call (linear and convolution layers).
    pub fn macs(&self) -> u64 {
        (0..self.node_count)
            .filter_map(|i| self.node(i).ok())
            .map(|node| match node.op {
                Op::Linear { input, .. } => self.node(input).map_or(0, |i| {
                    i.shape.elements() as u64 * node.shape.elements() as u64
                }),
                Op::Conv2d { input, kernel, .. } => self.node(input).map_or(0, |i| {
                    (i.shape.channels() * kernel * kernel) as u64 * node.shape.elements() as u64
                }),
                _ => 0,
            })
            .sum()
    }

    fn words(&self, index: usize) -> Result<[u32; NODE_WORDS]> {
        let invalid = Error::InvalidNode {
            node: index as u32,
            reason: "node index out of range",
        };
        let record = index
            .checked_mul(NODE_RECORD_LEN)
            .and_then(|at| sub(self.nodes, at, NODE_RECORD_LEN))
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
                .filter(|&n| n < self.node_count)
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

    /// Tensor `index` of the tensor table.
    pub fn tensor(&self, index: u32) -> Result<Tensor<'a>> {
        let fail = |reason| Error::InvalidTensor {
            tensor: index,
            reason,
        };
        let index_usize = usize::try_from(index).unwrap_or(usize::MAX);
        if index_usize >= self.tensor_count {
            return Err(fail("tensor index out of range"));
        }
        let at = TENSORS_HEADER_LEN + index_usize * TENSOR_ENTRY_LEN;
        let field = |i: usize| read_u32(self.tensor_section, at + 4 * i).ok_or(fail("table"));
        let dtype = DType::from_code(field(0)?).ok_or(fail("unknown element type"))?;
        let offset = usize::try_from(field(1)?).map_err(|_| fail("offset"))?;
        let len = usize::try_from(field(2)?).map_err(|_| fail("length"))?;
        if field(3)? != 0 {
            return Err(fail("reserved tensor word must be 0"));
        }
        let table_end = TENSORS_HEADER_LEN + self.tensor_count * TENSOR_ENTRY_LEN;
        if offset < table_end || offset % dtype.size() != 0 {
            return Err(fail("data offset inside the table or misaligned"));
        }
        let bytes = len
            .checked_mul(dtype.size())
            .and_then(|n| sub(self.tensor_section, offset, n))
            .ok_or(fail("data runs past the tensors section"))?;
        Ok(Tensor { dtype, bytes })
    }

    /// The tensor `index`, checked to have `dtype` and `len` elements.
    fn tensor_as(&self, node: usize, index: u32, dtype: DType, len: usize) -> Result<Tensor<'a>> {
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

    /// Output quantisation parameters of node `index` (int8 blobs).
    pub fn quant(&self, index: usize) -> Result<QuantParams> {
        let at = index
            .checked_mul(QUANT_RECORD_LEN)
            .ok_or(Error::Malformed("quant index"))?;
        let scale = read_u32(self.quant, at).ok_or(Error::InvalidNode {
            node: index as u32,
            reason: "no quantisation record (float blob?)",
        })?;
        let zero_point = read_u32(self.quant, at.saturating_add(4)).unwrap_or(0);
        Ok(QuantParams {
            scale: f32::from_bits(scale),
            zero_point: zero_point as i32,
        })
    }

    /// Fixed-point parameters of the int8 `Add` node `index`.
    pub fn add_params(&self, index: usize) -> Result<AddParams> {
        let at = index
            .checked_mul(QUANT_RECORD_LEN)
            .ok_or(Error::Malformed("quant index"))?;
        let word = |i: usize| {
            read_u32(self.quant, at.saturating_add(8 + 4 * i))
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
            .and_then(|at| read_usize(self.list, at))
            .filter(|&n| n < self.node_count)
            .ok_or(Error::Malformed("input list entry out of range"))
    }

    /// Byte offset of node `index`'s output in the arena.
    pub fn plan_offset(&self, index: usize) -> Result<usize> {
        index
            .checked_mul(4)
            .and_then(|at| read_usize(self.plan, at))
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

    fn validate_node(&self, index: usize) -> Result<()> {
        let node = self.node(index)?;
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
        let mut same_quant_as = None;
        match node.op {
            Op::Input => {
                if index != 0 {
                    return Err(fail("only node 0 may be the input"));
                }
            }
            Op::TimeEmbedding { max_period } => {
                if out.rank() != 1 || out.channels() % 2 != 0 {
                    return Err(fail("time embedding needs an even vector length"));
                }
                if !(max_period.is_finite() && max_period > 1.0) {
                    return Err(fail("max_period must be finite and > 1"));
                }
            }
            Op::Linear {
                input,
                weight,
                bias,
                requant,
            } => {
                let input = before(input)?.shape;
                if input.rank() != 1 || out.rank() != 1 {
                    return Err(fail("linear layers take and give vectors"));
                }
                let fan_in = input.elements();
                self.validate_weights(index, weight, bias, requant, out.channels(), fan_in)?;
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
                if input.rank() != 3 || out.rank() != 3 {
                    return Err(fail("convolutions take and give feature maps"));
                }
                if !(1..=MAX_DIM).contains(&kernel) || !(1..=2).contains(&stride) {
                    return Err(fail("kernel must be in 1..=32768 and stride 1 or 2"));
                }
                if padding > MAX_DIM {
                    return Err(fail("padding too large"));
                }
                let size = |n: usize| {
                    (n + 2 * padding)
                        .checked_sub(kernel)
                        .map(|span| span / stride + 1)
                };
                if size(input.height()) != Some(out.height())
                    || size(input.width()) != Some(out.width())
                {
                    return Err(fail(
                        "output size does not match input, kernel, stride and padding",
                    ));
                }
                let fan_in = input
                    .channels()
                    .checked_mul(kernel * kernel)
                    .ok_or(fail("fan-in too large"))?;
                self.validate_weights(index, weight, bias, requant, out.channels(), fan_in)?;
            }
            Op::GroupNorm {
                input,
                groups,
                eps,
                gamma,
                beta,
            } => {
                if before(input)?.shape != out {
                    return Err(fail("group norm keeps its input's shape"));
                }
                if groups == 0 || out.channels() % groups != 0 {
                    return Err(fail("groups must divide the channels"));
                }
                if out.elements() / groups > MAX_GROUP_LEN {
                    return Err(fail("group too large"));
                }
                if !(eps.is_finite() && eps > 0.0) {
                    return Err(fail("eps must be finite and > 0"));
                }
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
                if before(input)?.shape != out {
                    return Err(fail("SiLU keeps its input's shape"));
                }
                match (int8, lut) {
                    (true, Some(lut)) => {
                        self.tensor_as(index, lut, DType::I8, 256)?;
                    }
                    (false, None) => {}
                    _ => return Err(fail("SiLU has a table exactly in int8 blobs")),
                }
            }
            Op::Add { lhs, rhs } => {
                let (lhs, rhs) = (before(lhs)?.shape, before(rhs)?.shape);
                let broadcast =
                    lhs.rank() == 3 && rhs.rank() == 1 && rhs.channels() == lhs.channels();
                if lhs != out || (rhs != out && !broadcast) {
                    return Err(fail("add needs equal shapes or [C] onto [C, H, W]"));
                }
                if int8 {
                    self.add_params(index)?.validate()?;
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
                let mut channels = 0usize;
                for k in 0..count {
                    let entry = first.checked_add(k).ok_or(fail("input list range"))?;
                    let shape = before(self.list_entry(entry)?)?.shape;
                    if shape.rank() != out.rank()
                        || shape.height() != out.height()
                        || shape.width() != out.width()
                    {
                        return Err(fail("concat inputs must agree outside the channels"));
                    }
                    channels = channels.saturating_add(shape.channels());
                }
                if channels != out.channels() {
                    return Err(fail(
                        "concat output channels are not the sum of the inputs'",
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
                let input_node = before(input)?;
                let i = input_node.shape;
                if i.rank() != 3
                    || out.channels() != i.channels()
                    || Some(out.height()) != i.height().checked_mul(2)
                    || Some(out.width()) != i.width().checked_mul(2)
                {
                    return Err(fail("upsampling maps [C, H, W] to [C, 2H, 2W]"));
                }
                same_quant_as = Some(input);
            }
            Op::Reshape { input } => {
                if before(input)?.shape.elements() != out.elements() {
                    return Err(fail("reshape keeps the number of elements"));
                }
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
            let params = self.quant(index)?;
            params.validate()?;
            if node.code() != OpCode::Add {
                let add = self.add_params(index)?;
                if add != AddParams::default() {
                    return Err(fail("only add nodes have add parameters"));
                }
            }
            if let Some(input) = same_quant_as {
                if !self.quant(input)?.same_as(&params) {
                    return Err(fail("upsample and reshape keep their input's quantisation"));
                }
            }
        }
        self.validate_placement(index, &node)
    }

    /// Weight, bias and requantisation tensors of a linear or convolution layer.
    fn validate_weights(
        &self,
        index: usize,
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
                let finite = |t: &Tensor<'_>| match t.dtype {
                    DType::F32 => t.bytes.chunks_exact(4).all(|b| {
                        b.try_into()
                            .is_ok_and(|b| f32::from_le_bytes(b).is_finite())
                    }),
                    _ => t.bytes.chunks_exact(2).all(|b| {
                        b.try_into()
                            .is_ok_and(|b| half::f16::from_bits(u16::from_le_bytes(b)).is_finite())
                    }),
                };
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
        for pair in t.bytes.chunks_exact(8) {
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
        if end > self.arena_bytes {
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
            Op::Input | Op::TimeEmbedding { .. } | Op::Reshape { .. } => Ok(()),
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

fn parse_schedule(section: &[u8]) -> Result<(ModelSchedule, SamplerConfig, &[u8])> {
    let fail = Error::InvalidSchedule;
    let word = |at: usize| read_u32(section, at).ok_or(fail("section too short"));
    let float = |at: usize| read_f64(section, at).ok_or(fail("section too short"));
    let flag = |at: usize| match word(at)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(fail("flags must be 0 or 1")),
    };
    let train_steps = word(4)?;
    let steps_usize = usize::try_from(train_steps).unwrap_or(usize::MAX);
    if !(1..=MAX_TRAIN_STEPS).contains(&steps_usize) {
        return Err(fail("train steps out of range"));
    }
    if section.len() != SCHEDULE_HEADER_LEN + 4 * steps_usize {
        return Err(fail("section length does not match the train steps"));
    }
    let schedule = ModelSchedule {
        betas: betas_from_code(word(0)?, float(8)?, float(16)?)?,
        train_steps,
        zero_terminal_snr: flag(24)?,
        prediction: prediction_from_code(word(28)?)?,
    };
    let clip = flag(56)?;
    let radius = f32::from_bits(word(60)?);
    let sampler = SamplerConfig {
        kind: sampler_from_code(word(32)?)?,
        steps: word(36)?,
        spacing: spacing_from_code(word(40)?)?,
        steps_offset: word(44)?,
        eta: f32::from_bits(word(48)?),
        variance: variance_from_code(word(52)?)?,
        clip_sample: clip.then_some(radius),
        first_order_penultimate: flag(64)?,
    };
    if !clip && word(60)? != 0 {
        return Err(fail("the clip radius must be 0 without clipping"));
    }
    if [68, 72, 76].into_iter().any(|at| word(at) != Ok(0)) {
        return Err(fail("reserved words must be 0"));
    }
    let alphas = section
        .get(SCHEDULE_HEADER_LEN..)
        .ok_or(fail("section too short"))?;
    // The same check the samplers' schedule makes (`Blob::alpha_bar_schedule`).
    let table = ddm_core::Schedule::from_le_bytes(alphas)
        .map_err(|_| fail("alphas_cumprod must lie in [0, 1] and not increase"))?;
    // The check every sampler configuration gets, wherever it comes from.
    sampler.validate(&table).map_err(|error| match error {
        ddm_core::Error::InvalidParameter(what) => fail(what),
        _ => fail("the default steps and offset do not fit the train steps"),
    })?;
    Ok((schedule, sampler, alphas))
}
