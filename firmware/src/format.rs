//! The model blob layout, byte by byte. Format version [`FORMAT_VERSION`] = 3.
//!
//! Every multi-byte value is little-endian. `u32`/`i32`/`f32` are 4 bytes, `f64` 8 bytes;
//! floats are IEEE-754 bit patterns. Offsets are in bytes from the start of the blob unless a
//! field says otherwise. The reader never assumes the blob itself is aligned in memory: it
//! decodes every field from bytes (zero-copy: weights are read in place, never copied).
//!
//! # Header (32 bytes, offset 0)
//!
//! | offset | type      | field |
//! | ------ | --------- | ----- |
//! | 0      | `[u8; 4]` | magic `"DDMB"` ([`MAGIC`]) |
//! | 4      | `u32`     | format version ([`FORMAT_VERSION`]) |
//! | 8      | `u32`     | CRC-32 (ISO-HDLC, the zlib/PNG one: [`CRC32`]) of bytes `12..total_len` |
//! | 12     | `u32`     | `total_len`: bytes of the blob, header included (bytes after it are ignored) |
//! | 16     | `u32`     | precision: 0 = int8, 1 = fp16 weights, 2 = f32 ([`Precision`]) |
//! | 20     | `u32`     | `section_count` (1..=[`MAX_SECTIONS`]) |
//! | 24     | `u32`     | reserved, 0 |
//! | 28     | `u32`     | reserved, 0 |
//! | 32     | 16 bytes each | section table: `section_count` entries |
//!
//! Magic and version are checked first (so a blob of another version is refused as such), then
//! `total_len`, then the CRC, which covers everything after the CRC field; a flipped bit
//! anywhere in the blob is therefore caught. Version 2 blobs ([`OLDEST_READ_VERSION`]) are
//! version 3 blobs without a time-groups section, and are read as such; anything older or newer
//! is refused with [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion).
//!
//! Section table entry (16 bytes): `u32 id`, `u32 offset`, `u32 len`, `u32 reserved (0)`.
//! Sections start at a multiple of [`SECTION_ALIGN`] (16) bytes, after the section table, end
//! inside `total_len`, do not overlap, and each id appears at most once. Ids:
//! [`SECTION_GRAPH`] = 1, [`SECTION_TENSORS`] = 2, [`SECTION_QUANT`] = 3 (int8 blobs only, and
//! required there), [`SECTION_PLAN`] = 4, [`SECTION_SCHEDULE`] = 5 (model blobs; see below),
//! [`SECTION_TIME_GROUPS`] = 6 (optional, int8 blobs of version 3 only), [`SECTION_DECODER`] = 7
//! (optional, model blobs of version 3 only). Unknown ids are refused.
//!
//! # Model blobs and network blobs
//!
//! A blob with a schedule section is a *model*: a denoiser whose output has its input's shape,
//! the schedule it was trained with and its default sampler; it generates. A blob without one
//! is a *network blob*: one network alone, whose output shape may differ from its input's
//! (a latent model's decoder, or a network written only to be evaluated); it has no time
//! groups and no decoder, and it runs ([`crate::Network`]) but does not generate.
//!
//! # Decoder section (id 7, optional, model blobs)
//!
//! A latent diffusion model denoises latents and decodes the result into an image. Its blob
//! holds the decoder in this section: a complete network blob (header, CRC and sections of its
//! own, the same version and precision as the model), whose input shape is the model's sample
//! shape and which reads nothing but its input (no time or class embedding). Generation runs
//! the sampler on latents, then the decoder once on the final latent, and clamps the decoded
//! image to `[-1, 1]` (the data range), so [`crate::generate()`] writes the decoder's output
//! shape ([`crate::Blob::image_shape`]). The decoder's memory plan is its own; it runs in the
//! arena region of the denoiser's activations (which are dead by then), which is sized for
//! the larger of the two ([`crate::plan`]). The section came after version 3 without a
//! version change: a reader that predates it refuses its id as unknown, it never misreads it.
//!
//! # Graph section (id 1)
//!
//! | offset | type | field |
//! | ------ | ---- | ----- |
//! | 0      | `u32` | `node_count` (1..=[`MAX_NODES`]) |
//! | 4      | `u32` | output node index |
//! | 8      | `u32` | `list_len`: entries of the input list (node indices read by `Concat`) |
//! | 12     | `u32` | reserved, 0 |
//! | 16     | 64 bytes each | `node_count` node records, in execution order |
//! | 16 + 64 n | `u32` each | the input list |
//!
//! The section is exactly `16 + 64 node_count + 4 list_len` bytes.
//!
//! ## Node record (64 bytes = 16 `u32` words)
//!
//! | word | field |
//! | ---- | ----- |
//! | 0    | op code ([`OpCode`]) |
//! | 1    | rank of the output: 1 (`[C]`) or 3 (`[C, H, W]`) |
//! | 2..5 | output dims `C, H, W` (all >= 1; `H = W = 1` for rank 1) |
//! | 5, 6 | `in0`, `in1`: input node indices ([`NONE`] when unused) |
//! | 7, 8, 9 | `t0`, `t1`, `t2`: tensor indices ([`NONE`] when unused) |
//! | 10..14 | `p0..p3`: op parameters (0 when unused) |
//! | 14, 15 | reserved, 0 |
//!
//! Per op (inputs must come before the node; node 0 is the only `Input`):
//!
//! | op | code | in0 / in1 | t0 / t1 / t2 | p0 / p1 / p2 |
//! | -- | ---- | --------- | ------------ | ------------ |
//! | `Input` | 0 | – | – | – |
//! | `TimeEmbedding` | 1 | – | – | `max_period` (f32 bits) |
//! | `Linear` | 2 | input `[in]` | weight `[out, in]` / bias `[out]` / requant | – |
//! | `Conv2d` | 3 | input `[in, H, W]` | weight `[out, in, k, k]` / bias `[out]` / requant | `k` / stride (1, 2) / padding |
//! | `GroupNorm` | 4 | input | gamma `[C]` f32 / beta `[C]` f32 / – | groups / `eps` (f32 bits) |
//! | `Silu` | 5 | input | int8: LUT `[256]` i8 | – |
//! | `Add` | 6 | lhs / rhs (same shape, or `[C]` onto `[C, H, W]`) | – | – |
//! | `Concat` | 7 | first list index / count | int8: requant `[2 count]` i32 | – |
//! | `Upsample2x` | 8 | input `[C, H, W]` | – | – |
//! | `Reshape` | 9 | input | – | – |
//! | `ClassEmbedding` | 10 | – | table `[classes + 1, dim]` | `classes` |
//!
//! Weights of linear and conv layers have the blob's precision (i8, f16 or f32). In float blobs
//! the bias is optional and has the same type; in int8 blobs it is required, `i32`, and has the
//! input zero point folded in (see [`crate::quant`]). `requant` (int8 only) is an i32 tensor of
//! `(multiplier, shift)` pairs, one per output channel (`input_scale weight_scale_c /
//! output_scale`), or one per input for `Concat` (`scale_in / (2^20 scale_out)`, applied to
//! the input shifted left by 20, see [`crate::kernels::concat`]). GroupNorm's
//! affine parameters are always f32. The time embedding's `dim` is its output `C`.
//!
//! `ClassEmbedding` makes a class-conditional model: its output is row `y` of the table for a
//! requested class `y < classes`, and the last row ("no class") for an unconditional call
//! ([`crate::Network::run_class`]). A blob has at most one. The table has the weights' type
//! (f32 or f16) in float blobs; in int8 blobs it is i8 and holds the rows already quantised with
//! the node's output parameters, which must be the same in every time group (so the table is
//! stored once). The op came after version 3 without a version change: a reader that predates
//! it refuses its code as unknown, it never misreads it.
//!
//! # Tensors section (id 2)
//!
//! `u32 tensor_count`, 12 reserved (0) bytes, then `tensor_count` entries of 16 bytes:
//! `u32 dtype` ([`DType`]: 0 = i8, 1 = i32, 2 = f16, 3 = f32), `u32 offset` (from the start of
//! the section, a multiple of the element size), `u32 len` (elements), `u32 reserved (0)`.
//! Tensor data follows the table (the writer aligns each tensor to 16 bytes); every tensor lies
//! inside the section. Tensors are read in place.
//!
//! # Quantisation section (id 3, int8 blobs)
//!
//! One 32-byte record per node and time group (see below), group by group: record
//! `g node_count + i` belongs to node `i` in group `g`. A record is `f32 scale` (finite, > 0),
//! `i32 zero_point` (-128..=127) of the node's output, then six `i32` words. For `Add` they are
//! the fixed-point `(multiplier, shift)` pairs of lhs, rhs and output of TFLite's int8 add
//! ([`crate::quant::AddParams`]); for every other op they are 0. `Upsample2x` and `Reshape`
//! carry their input's parameters. The section is `32 node_count G` bytes.
//!
//! # Time-groups section (id 6, optional, int8 blobs)
//!
//! A diffusion network's activations shrink as the sample gets cleaner, so one int8 range per
//! tensor for every timestep wastes resolution at some steps and clips at others. An int8 blob
//! may therefore carry `G` sets of activation parameters, one per *time group*: a range of
//! training timesteps.
//!
//! | offset | type | field |
//! | ------ | ---- | ----- |
//! | 0      | `u32` | `G`, the number of groups (2..=[`MAX_TIME_GROUPS`]) |
//! | 4      | `u32` x 3 | reserved, 0 |
//! | 16     | `u32` x (G - 1) | boundaries `b_1 < b_2 < ... < b_{G-1}`, each in `1..T` |
//!
//! A network call at training timestep `t` uses group `g(t)`, the number of boundaries `<= t`
//! ([`time_group`]): group 0 holds the smallest timesteps (the cleanest samples). Without the
//! section there is one group. Group `g` reads its quantisation records as above, and every
//! tensor that follows from the activation parameters (the int8 bias and `requant` of `Linear`
//! and `Conv2d`, the SiLU table, the `requant` of `Concat`) at the index the node record names
//! **plus `g`**: those tensors are stored `G` times, consecutively. Weights and GroupNorm's
//! parameters are shared by every group. The section is exactly `16 + 4 (G - 1)` bytes.
//!
//! # Memory plan section (id 4)
//!
//! `u32 arena_bytes` (bytes of the activation arena), 12 reserved (0) bytes, then one `u32` per
//! node: the byte offset of its output in the arena. Each output (`elements x 1` byte for int8,
//! `x 4` for float blobs, whose activations are f32) must fit in `arena_bytes`, f32 outputs
//! at multiples of 4; a `Reshape` has its input's offset (it is an alias). An output never
//! overlaps its inputs, except that `Silu`, `GroupNorm` and `Add` (its `lhs`) may run in place:
//! output and input at exactly the same offset. The section is `16 + 4 node_count` bytes.
//!
//! # Schedule section (id 5)
//!
//! | offset | type | field |
//! | ------ | ---- | ----- |
//! | 0  | `u32` | beta schedule: 0 linear, 1 scaled-linear, 2 cosine, 3 sigmoid, 4 custom, 5 variance exploding |
//! | 4  | `u32` | train steps `T` (1..=[`MAX_TRAIN_STEPS`]) |
//! | 8  | `f64` | first parameter (`beta_start`, cosine's `s`, or `sigma_min`; 0 for custom) |
//! | 16 | `f64` | second parameter (`beta_end`, cosine's `max_beta`, or `sigma_max`; 0 for custom) |
//! | 24 | `u32` | zero terminal SNR: 0 or 1 |
//! | 28 | `u32` | prediction: 0 eps, 1 x0, 2 v |
//! | 32 | `u32` | default sampler: 0 DDPM, 1 DDIM, 2 DPM-Solver++ 2M, 3 predictor-corrector, 4 probability flow ODE |
//! | 36 | `u32` | default steps (1..=T) |
//! | 40 | `u32` | default spacing: 0 leading, 1 linspace, 2 trailing, 3 log-SNR, 4 given |
//! | 44 | `u32` | default steps offset (leading spacing) |
//! | 48 | `f32` | default DDIM eta (finite, >= 0) |
//! | 52 | `u32` | default DDPM variance: 0 beta, 1 posterior |
//! | 56 | `u32` | clip x0: 0 no, 1 yes |
//! | 60 | `f32` | clip radius (finite > 0 when clipping, else 0) |
//! | 64 | `u32` | DPM-Solver++ takes its second to last step at first order: 0 or 1 |
//! | 68 | `u32` | predictor-corrector only (else 0): corrector steps per timestep |
//! | 72 | `f32` | predictor-corrector only (else 0): signal-to-noise ratio (finite > 0) |
//! | 76 | `u32` | reserved, 0 |
//! | 80 | `f32` x T | `alphas_cumprod`: in `[0, 1]`, non-increasing |
//! | 80 + 4T | `u32` x steps | given spacing only: the timesteps, strictly descending, below `T` (1 to 16 of them) |
//!
//! The section is exactly `80 + 4 T` bytes, plus `4 steps` with given timesteps. The given
//! spacing came after version 3 without a version change: a reader that predates it refuses
//! such a section (its length does not match `T`, and its spacing code is unknown), it never
//! misreads it.
//! Sampler codes 3 and 4 and words 68 and 72 came after version 3 without a version change,
//! as the given spacing did: an older reader refuses the codes as unknown and the words as
//! reserved, it never misreads them; the other samplers store 0 there, as before, and read the
//! defaults back.
//! The sampler settings (offsets 32 to 72) are a [`ddm_core::SamplerConfig`], validated by
//! its own check against the table. Version 1 blobs differ here (no word 64, table at 64, and
//! their DPM-Solver++ always took the second to last step at first order); they are refused
//! with [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion).
//!
//! The table is authoritative: the device samples with exactly the host's `alpha_bar` values
//! (the writer fills it with [`ddm_core::ScheduleConfig::fill_alphas_cumprod`]; custom betas
//! store only the table). The settings above it document the schedule and give the defaults.

use crate::error::{Error, Result};

/// First four bytes of every blob.
pub const MAGIC: [u8; 4] = *b"DDMB";
/// The format version this crate writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 3;
/// The oldest format version this crate reads: version 2, which has no time groups.
pub const OLDEST_READ_VERSION: u32 = 2;
/// Bytes of the fixed header, before the section table.
pub const HEADER_LEN: usize = 32;
/// Offset of the CRC field; the CRC covers the bytes from [`CRC_START`] to `total_len`.
pub const CRC_OFFSET: usize = 8;
/// First byte covered by the CRC.
pub const CRC_START: usize = 12;
/// Bytes of one section table entry.
pub const SECTION_ENTRY_LEN: usize = 16;
/// Sections start at multiples of this many bytes.
pub const SECTION_ALIGN: usize = 16;
/// Most sections a blob may declare.
pub const MAX_SECTIONS: usize = 8;

/// Section id of the graph.
pub const SECTION_GRAPH: u32 = 1;
/// Section id of the tensor table and data.
pub const SECTION_TENSORS: u32 = 2;
/// Section id of the per-node quantisation records (int8 blobs).
pub const SECTION_QUANT: u32 = 3;
/// Section id of the memory plan.
pub const SECTION_PLAN: u32 = 4;
/// Section id of the schedule and sampler defaults.
pub const SECTION_SCHEDULE: u32 = 5;
/// Section id of the time groups (optional, int8 blobs).
pub const SECTION_TIME_GROUPS: u32 = 6;
/// Section id of a latent model's decoder (optional, model blobs): a nested network blob.
pub const SECTION_DECODER: u32 = 7;
/// Most time groups an int8 blob may have.
pub const MAX_TIME_GROUPS: usize = 64;
/// Bytes before the boundaries in the time-groups section.
pub const TIME_GROUPS_HEADER_LEN: usize = 16;

/// Bytes before the node records in the graph section.
pub const GRAPH_HEADER_LEN: usize = 16;
/// Bytes of one node record.
pub const NODE_RECORD_LEN: usize = 64;
/// Words of one node record.
pub const NODE_WORDS: usize = NODE_RECORD_LEN / 4;
/// Bytes before the tensor table in the tensors section.
pub const TENSORS_HEADER_LEN: usize = 16;
/// Bytes of one tensor table entry.
pub const TENSOR_ENTRY_LEN: usize = 16;
/// Bytes of one per-node quantisation record.
pub const QUANT_RECORD_LEN: usize = 32;
/// Bytes before the node offsets in the plan section.
pub const PLAN_HEADER_LEN: usize = 16;
/// Bytes before `alphas_cumprod` in the schedule section.
pub const SCHEDULE_HEADER_LEN: usize = 80;
/// Alignment the writer gives every tensor's data.
pub const TENSOR_ALIGN: usize = 16;

/// "No node" / "no tensor" in a record.
pub const NONE: u32 = u32::MAX;
/// Most nodes a graph may have.
pub const MAX_NODES: usize = 4096;
/// Largest `T` of a schedule.
pub const MAX_TRAIN_STEPS: usize = 1 << 20;
/// Largest number of products summed into one int8 accumulator (`in` for linear layers,
/// `in k k` for convolutions): with `|x w| <= 2^14` and `|bias| <= MAX_BIAS` the `i32`
/// accumulator can never overflow.
pub const MAX_FAN_IN: usize = 1 << 16;
/// Largest magnitude of an int8 weight: int8 weights are symmetric, `-MAX_WEIGHT..=MAX_WEIGHT`
/// (never -128, as in TensorFlow Lite's int8 scheme), so that the sum of two products of a
/// weight and an int8 activation, at most `2 * 128 * 127` in magnitude, fits an `i16` lane.
/// [`quantize_per_channel`](crate::quant::quantize_per_channel) rounds into this range and
/// [`Blob::parse`](crate::Blob::parse) refuses an int8 blob with a weight of -128.
pub const MAX_WEIGHT: i8 = 127;
/// Largest magnitude of an int8 layer's (folded) bias.
pub const MAX_BIAS: i32 = 1 << 30;
/// Largest number of elements one GroupNorm group may have (keeps its integer moments exact
/// in `i64`).
pub const MAX_GROUP_LEN: usize = 1 << 24;
/// Left shift applied to both inputs of the int8 add before rescaling (TFLite's value).
pub const ADD_LEFT_SHIFT: i32 = 20;
/// Range of the shifts of `(multiplier, shift)` pairs: `MIN_SHIFT..=MAX_SHIFT`.
pub const MIN_SHIFT: i32 = -31;
/// See [`MIN_SHIFT`].
pub const MAX_SHIFT: i32 = 30;

/// The CRC-32 of the header (ISO-HDLC: reflected polynomial 0x04C11DB7, init and xorout
/// `0xFFFFFFFF`; the CRC of zlib, PNG and Ethernet).
pub const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Numeric precision of a blob's weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Precision {
    /// int8 weights (per-output-channel symmetric) and int8 activations (per-tensor asymmetric).
    Int8,
    /// f16 weights, f32 activations and arithmetic.
    F16,
    /// f32 weights, activations and arithmetic.
    F32,
}

impl Precision {
    /// The header code.
    pub const fn code(self) -> u32 {
        match self {
            Precision::Int8 => 0,
            Precision::F16 => 1,
            Precision::F32 => 2,
        }
    }

    /// Decodes a header code.
    pub fn from_code(code: u32) -> Result<Self> {
        match code {
            0 => Ok(Precision::Int8),
            1 => Ok(Precision::F16),
            2 => Ok(Precision::F32),
            _ => Err(Error::Malformed("unknown precision")),
        }
    }

    /// Every precision.
    pub const ALL: [Precision; 3] = [Precision::Int8, Precision::F16, Precision::F32];

    /// The precision's name, the same in `ddm export --precision`, `ddm sample`'s and the
    /// boards' reports: `int8`, `fp16` or `f32`.
    pub const fn name(self) -> &'static str {
        match self {
            Precision::Int8 => "int8",
            Precision::F16 => "fp16",
            Precision::F32 => "f32",
        }
    }

    /// The precision named `name` ([`Precision::name`]'s inverse).
    pub fn from_name(name: &str) -> Option<Precision> {
        Precision::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Bytes of one activation element in the arena (1 for int8, 4 for f32).
    pub const fn activation_bytes(self) -> usize {
        match self {
            Precision::Int8 => 1,
            Precision::F16 | Precision::F32 => 4,
        }
    }

    /// The element type of linear and convolution weights.
    pub const fn weight_dtype(self) -> DType {
        match self {
            Precision::Int8 => DType::I8,
            Precision::F16 => DType::F16,
            Precision::F32 => DType::F32,
        }
    }

    /// The element type of linear and convolution biases.
    pub const fn bias_dtype(self) -> DType {
        match self {
            Precision::Int8 => DType::I32,
            Precision::F16 => DType::F16,
            Precision::F32 => DType::F32,
        }
    }
}

/// Element type of a stored tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DType {
    /// Signed 8-bit integers.
    I8,
    /// Signed 32-bit integers.
    I32,
    /// IEEE half precision.
    F16,
    /// IEEE single precision.
    F32,
}

impl DType {
    /// The tensor table code.
    pub const fn code(self) -> u32 {
        match self {
            DType::I8 => 0,
            DType::I32 => 1,
            DType::F16 => 2,
            DType::F32 => 3,
        }
    }

    /// Decodes a tensor table code.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(DType::I8),
            1 => Some(DType::I32),
            2 => Some(DType::F16),
            3 => Some(DType::F32),
            _ => None,
        }
    }

    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::F16 => 2,
            DType::I32 | DType::F32 => 4,
        }
    }
}

/// Operation codes of node records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OpCode {
    /// The noisy sample `x_t`.
    Input,
    /// Sinusoidal embedding of the timestep.
    TimeEmbedding,
    /// `y = W x + b` on a vector.
    Linear,
    /// 2-D convolution with zero padding.
    Conv2d,
    /// Group normalisation with affine parameters.
    GroupNorm,
    /// `x sigmoid(x)`.
    Silu,
    /// Element-wise sum (or `[C]` broadcast onto `[C, H, W]`).
    Add,
    /// Concatenation along channels.
    Concat,
    /// Nearest-neighbour upsampling by 2.
    Upsample2x,
    /// A new shape over the same data.
    Reshape,
    /// Row of a class table: the requested class, or the "no class" row.
    ClassEmbedding,
}

impl OpCode {
    /// The record code.
    pub const fn code(self) -> u32 {
        match self {
            OpCode::Input => 0,
            OpCode::TimeEmbedding => 1,
            OpCode::Linear => 2,
            OpCode::Conv2d => 3,
            OpCode::GroupNorm => 4,
            OpCode::Silu => 5,
            OpCode::Add => 6,
            OpCode::Concat => 7,
            OpCode::Upsample2x => 8,
            OpCode::Reshape => 9,
            OpCode::ClassEmbedding => 10,
        }
    }

    /// Decodes a record code.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => OpCode::Input,
            1 => OpCode::TimeEmbedding,
            2 => OpCode::Linear,
            3 => OpCode::Conv2d,
            4 => OpCode::GroupNorm,
            5 => OpCode::Silu,
            6 => OpCode::Add,
            7 => OpCode::Concat,
            8 => OpCode::Upsample2x,
            9 => OpCode::Reshape,
            10 => OpCode::ClassEmbedding,
            _ => return None,
        })
    }
}

/// Beta schedule codes of the schedule section.
pub mod beta_code {
    /// Linear betas.
    pub const LINEAR: u32 = 0;
    /// Scaled-linear betas.
    pub const SCALED_LINEAR: u32 = 1;
    /// Cosine schedule.
    pub const COSINE: u32 = 2;
    /// Sigmoid betas.
    pub const SIGMOID: u32 = 3;
    /// User betas: only the table is stored.
    pub const CUSTOM: u32 = 4;
    /// A variance-exploding schedule: the parameters are `sigma_min` and `sigma_max`. A reader
    /// older than this code refuses it as an unknown beta schedule, never misreads it.
    pub const VARIANCE_EXPLODING: u32 = 5;
}

/// The time group of training timestep `t` given the group boundaries (ascending): the number
/// of boundaries `<= t`. With no boundaries every timestep is in group 0.
pub fn time_group(boundaries: impl IntoIterator<Item = u32>, t: u32) -> usize {
    boundaries.into_iter().take_while(|&b| b <= t).count()
}

/// Reads the little-endian `u32` at byte `at` of `bytes`, if it is there.
#[inline]
pub(crate) fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let word: [u8; 4] = bytes.get(at..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(word))
}

/// Reads the little-endian `f64` at byte `at` of `bytes`, if it is there.
#[inline]
pub(crate) fn read_f64(bytes: &[u8], at: usize) -> Option<f64> {
    let end = at.checked_add(8)?;
    let word: [u8; 8] = bytes.get(at..end)?.try_into().ok()?;
    Some(f64::from_le_bytes(word))
}

/// Rounds `value` up to a multiple of `align` (a power of two), if that fits in `usize`.
#[inline]
pub(crate) fn align_up(value: usize, align: usize) -> Option<usize> {
    let mask = align.checked_sub(1)?;
    Some(value.checked_add(mask)? & !mask)
}
