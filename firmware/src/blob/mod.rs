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
//! - every shape is the one its operator's shape rule gives ([`crate::shape_rule`], shared
//!   with the writer and the exporter), every dimension is in `1..=MAX_DIM` and every element
//!   count fits in `u32`;
//! - tensor lengths equal what the op needs; int8 accumulations cannot overflow
//!   ([`MAX_FAN_IN`], [`MAX_BIAS`]); int8 weights are symmetric ([`MAX_WEIGHT`]);
//! - every output lies inside the arena, f32 outputs 4-byte aligned, and no output overlaps an
//!   input except the allowed exact in-place cases.
//!
//! Submodules: `shape` ([`Shape`]), `node` (decoding nodes and tensors on demand),
//! `validate` (the per-node checks of [`Blob::parse`]) and `schedule` (the schedule section).
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod node;
mod schedule;
mod shape;
mod validate;

pub use node::{Node, Op, Tensor};
pub use shape::{Shape, MAX_DIM};

use crate::error::{Error, Result};
use crate::format::*;
use ddm_core::SamplerConfig;

use crate::settings::ModelSchedule;
use schedule::parse_schedule;

/// What a blob holds: a whole model, or one network alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BlobKind {
    /// A denoiser with its schedule and default sampler (and optionally a decoder): it
    /// generates ([`generate`](crate::generate())).
    Model,
    /// A network alone, without a schedule section (a latent model's decoder, or a network
    /// written only to be evaluated): its output shape need not be its input's, and it cannot
    /// generate, only run ([`Network::run`](crate::Network::run)).
    Network,
}

/// One network's part of a blob: its graph, tensors, quantisation records and memory plan.
#[derive(Clone, Copy)]
struct GraphView<'a> {
    /// The bytes of the blob (or nested decoder blob) the network was read from.
    bytes: &'a [u8],
    nodes: &'a [u8],
    node_count: usize,
    output: usize,
    list: &'a [u8],
    tensor_section: &'a [u8],
    tensor_count: usize,
    quant: &'a [u8],
    /// The time-group boundaries (`u32` each, ascending); empty for one group.
    boundaries: &'a [u8],
    time_groups: usize,
    plan: &'a [u8],
    arena_bytes: usize,
    scratch_bytes: usize,
    /// The class embedding's number of classes (found once, at parse).
    classes: Option<usize>,
}

/// The schedule section of a model blob.
#[derive(Clone, Copy)]
struct ScheduleView<'a> {
    schedule: ModelSchedule,
    sampler: SamplerConfig,
    alphas: &'a [u8],
}

/// What [`Blob::schedule`] and [`Blob::sampler_defaults`] report for a network blob, which
/// has no schedule: no steps, no betas.
const NO_SCHEDULE: ModelSchedule = ModelSchedule {
    betas: None,
    train_steps: 0,
    zero_terminal_snr: false,
    prediction: ddm_core::Prediction::Eps,
};

/// A validated model blob, borrowed from flash (or any byte slice) without copying.
#[derive(Clone, Copy)]
pub struct Blob<'a> {
    precision: Precision,
    graph: GraphView<'a>,
    /// A model's decoder (the nested network blob of the decoder section).
    decoder: Option<GraphView<'a>>,
    /// A model's schedule; `None` for a network blob.
    schedule: Option<ScheduleView<'a>>,
}

impl core::fmt::Debug for Blob<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Blob")
            .field("len", &self.graph.bytes.len())
            .field("kind", &self.kind())
            .field("precision", &self.precision)
            .field("nodes", &self.graph.node_count)
            .field("tensors", &self.graph.tensor_count)
            .field("arena_bytes", &self.graph.arena_bytes)
            .field("scratch_bytes", &self.graph.scratch_bytes)
            .field("time_groups", &self.graph.time_groups)
            .field("schedule", &self.schedule())
            .field("sampler", &self.sampler_defaults())
            .field("decoder", &self.decoder.map(|d| d.node_count))
            .finish()
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Blob<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "Blob {{ len: {=usize}, precision: {}, nodes: {=usize}, tensors: {=usize}, arena_bytes: {=usize}, scratch_bytes: {=usize} }}",
            self.graph.bytes.len(),
            self.precision,
            self.graph.node_count,
            self.graph.tensor_count,
            self.graph.arena_bytes,
            self.graph.scratch_bytes
        )
    }
}

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

/// Decodes the time-groups section: `(G, boundary bytes)`, boundaries strictly increasing and
/// at least 1 (their upper bound, `T`, is checked against the schedule).
fn parse_time_groups(section: &[u8]) -> Result<(usize, &[u8])> {
    let groups = read_usize(section, 0).ok_or(Error::Malformed("time groups"))?;
    if (1..4).any(|i| read_u32(section, 4 * i) != Some(0)) {
        return malformed("reserved time-group words must be 0");
    }
    if !(2..=MAX_TIME_GROUPS).contains(&groups) {
        return malformed("time-group count out of range");
    }
    if section.len() != TIME_GROUPS_HEADER_LEN + 4 * (groups - 1) {
        return malformed("time-groups section length does not match its count");
    }
    let boundaries = section
        .get(TIME_GROUPS_HEADER_LEN..)
        .ok_or(Error::Malformed("time groups"))?;
    let mut previous = 0u32;
    for k in 0..groups - 1 {
        let b = read_u32(boundaries, 4 * k).ok_or(Error::Malformed("time groups"))?;
        if b <= previous {
            return malformed("time-group boundaries must be increasing and at least 1");
        }
        previous = b;
    }
    Ok((groups, boundaries))
}

/// The sections of a blob whose header, CRC and section table are valid.
struct Sections<'a> {
    bytes: &'a [u8],
    version: u32,
    precision: Precision,
    /// Section id -> `(offset, len)`; index 0 unused.
    table: [Option<(usize, usize)>; SECTION_DECODER as usize + 1],
}

impl<'a> Sections<'a> {
    /// Checks the header, the CRC and the section table of `bytes`.
    fn read(bytes: &'a [u8]) -> Result<Self> {
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
        if !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&version) {
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

        let mut table = [None; SECTION_DECODER as usize + 1];
        // Version 2 has no time-groups (or decoder) section.
        let last_id = if version == 2 {
            SECTION_SCHEDULE as usize
        } else {
            SECTION_DECODER as usize
        };
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
                .filter(|id| (1..=last_id).contains(id))
                .and_then(|id| table.get_mut(id))
                .ok_or(Error::Malformed("unknown section id"))?;
            if slot.is_some() {
                return malformed("duplicate section");
            }
            *slot = Some((offset, len));
        }
        for (i, a) in table.iter().enumerate() {
            for b in table.iter().skip(i + 1) {
                if let (Some((oa, la)), Some((ob, lb))) = (a, b) {
                    if overlaps(*oa, *la, *ob, *lb) {
                        return malformed("sections overlap");
                    }
                }
            }
        }
        Ok(Sections {
            bytes,
            version,
            precision,
            table,
        })
    }

    /// Whether section `id` is present.
    fn present(&self, id: u32) -> bool {
        self.table.get(id as usize).copied().flatten().is_some()
    }

    /// The bytes of section `id`, which must be present.
    fn get(&self, id: u32) -> Result<&'a [u8]> {
        let entry = self.table.get(id as usize).copied().flatten();
        let (offset, len) = entry.ok_or(Error::Malformed("a required section is missing"))?;
        sub(self.bytes, offset, len).ok_or(Error::Malformed("section outside the blob"))
    }

    /// The network's sections (graph, tensors, time groups, quantisation, plan), their
    /// headers and lengths checked; its nodes are validated by [`Blob::validate_graph`].
    fn graph(&self) -> Result<GraphView<'a>> {
        let precision = self.precision;
        // Graph.
        let graph = self.get(SECTION_GRAPH)?;
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
        let tensor_section = self.get(SECTION_TENSORS)?;
        let tensor_count = read_usize(tensor_section, 0).ok_or(Error::Malformed("tensors"))?;
        if (1..4).any(|i| read_u32(tensor_section, 4 * i) != Some(0)) {
            return malformed("reserved tensor header words must be 0");
        }
        tensor_count
            .checked_mul(TENSOR_ENTRY_LEN)
            .and_then(|n| n.checked_add(TENSORS_HEADER_LEN))
            .filter(|&end| end <= tensor_section.len())
            .ok_or(Error::Malformed("tensor table runs past its section"))?;

        // Time groups.
        let (time_groups, boundaries) = match (precision, self.present(SECTION_TIME_GROUPS)) {
            (Precision::Int8, true) => parse_time_groups(self.get(SECTION_TIME_GROUPS)?)?,
            (_, true) => return malformed("a float blob has no time groups"),
            (_, false) => (1, &[][..]),
        };

        // Quantisation records.
        let quant = match (precision, self.present(SECTION_QUANT)) {
            (Precision::Int8, true) => {
                let quant = self.get(SECTION_QUANT)?;
                if Some(quant.len()) != (node_count * QUANT_RECORD_LEN).checked_mul(time_groups) {
                    return malformed("quantisation section length does not match the nodes");
                }
                quant
            }
            (Precision::Int8, false) => return malformed("an int8 blob needs a quant section"),
            (_, true) => return malformed("a float blob has no quant section"),
            (_, false) => &[][..],
        };

        // Memory plan.
        let plan_section = self.get(SECTION_PLAN)?;
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
        Ok(GraphView {
            bytes: self.bytes,
            nodes,
            node_count,
            output,
            list,
            tensor_section,
            tensor_count,
            quant,
            boundaries,
            time_groups,
            plan,
            arena_bytes,
            scratch_bytes: 0,
            classes: None,
        })
    }
}

impl<'a> Blob<'a> {
    /// Parses and validates a blob: a model ([`BlobKind::Model`]: a schedule section, the
    /// output shape the input's, and optionally a decoder) or a network alone
    /// ([`BlobKind::Network`]: no schedule section). Bytes after the length the header
    /// declares are ignored (a flash partition may be larger than the blob).
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        Self::parse_nested(bytes, true)
    }

    /// [`Blob::parse`]; a decoder section is refused unless `decoder_allowed`, before it is
    /// read, so that a decoder nested in a decoder never recurses (its stack is bounded).
    fn parse_nested(bytes: &'a [u8], decoder_allowed: bool) -> Result<Self> {
        let sections = Sections::read(bytes)?;
        if !decoder_allowed && sections.present(SECTION_DECODER) {
            return malformed("a decoder has no decoder");
        }
        let precision = sections.precision;
        let schedule = if sections.present(SECTION_SCHEDULE) {
            let (schedule, sampler, alphas) = parse_schedule(sections.get(SECTION_SCHEDULE)?)?;
            Some(ScheduleView {
                schedule,
                sampler,
                alphas,
            })
        } else {
            None
        };
        let graph = sections.graph()?;
        match schedule {
            Some(schedule) => {
                let train_steps = schedule.alphas.len() / 4;
                if (0..graph.time_groups - 1)
                    .any(|k| read_usize(graph.boundaries, 4 * k).is_none_or(|b| b >= train_steps))
                {
                    return malformed("a time-group boundary is not below the train steps");
                }
            }
            None if graph.time_groups > 1 => {
                return malformed("a network blob has no time groups");
            }
            None if sections.present(SECTION_DECODER) => {
                return malformed("a network blob has no decoder");
            }
            None => {}
        }
        let mut blob = Blob {
            precision,
            graph,
            decoder: None,
            schedule,
        };
        blob.validate_graph()?;
        let input = blob.sample_shape();
        if schedule.is_some() && blob.output_shape() != input {
            return Err(Error::InvalidNode {
                node: blob.graph.output as u32,
                reason: "the output shape differs from the input shape",
            });
        }
        if sections.present(SECTION_DECODER) {
            let nested = sections.get(SECTION_DECODER)?;
            if read_u32(nested, 4) != Some(sections.version) {
                return malformed("the decoder's format version differs from the model's");
            }
            let decoder = Blob::parse_nested(nested, false)?;
            blob.check_decoder(&decoder)?;
            blob.decoder = Some(decoder.graph);
        }
        #[cfg(feature = "defmt")]
        defmt::debug!("parsed {}", blob);
        Ok(blob)
    }

    /// Validates every tensor and node of the blob's network (in every time group), then
    /// finds its kernel scratch and class embedding.
    fn validate_graph(&mut self) -> Result<()> {
        for tensor in 0..self.graph.tensor_count {
            self.tensor(tensor as u32)?;
        }
        for group in 0..self.graph.time_groups {
            for index in 0..self.graph.node_count {
                self.validate_node(index, group)?;
            }
        }
        let input = self.node(0)?;
        if input.op != Op::Input {
            return Err(Error::InvalidNode {
                node: 0,
                reason: "node 0 must be the input",
            });
        }
        self.graph.scratch_bytes = self.kernel_scratch_bytes()?;
        self.graph.classes = (0..self.graph.node_count).find_map(|index| match self.node(index) {
            Ok(Node {
                op: Op::ClassEmbedding { classes, .. },
                ..
            }) => Some(classes),
            _ => None,
        });
        Ok(())
    }

    /// Checks that `decoder` (a parsed blob) can decode this model's samples: a network blob
    /// of the same precision whose input is the model's sample and which reads nothing else
    /// (no time or class embedding).
    fn check_decoder(&self, decoder: &Blob<'_>) -> Result<()> {
        if decoder.kind() != BlobKind::Network {
            return malformed("the decoder must be a network blob");
        }
        if decoder.precision != self.precision {
            return malformed("the decoder's precision differs from the model's");
        }
        if decoder.sample_shape() != self.sample_shape() {
            return malformed("the decoder's input is not the model's sample shape");
        }
        for index in 0..decoder.node_count() {
            if let Op::TimeEmbedding { .. } | Op::ClassEmbedding { .. } = decoder.node(index)?.op {
                return Err(Error::InvalidNode {
                    node: index as u32,
                    reason: "a decoder reads only its input: no time or class embedding",
                });
            }
        }
        Ok(())
    }

    /// A model or a network alone.
    pub fn kind(&self) -> BlobKind {
        match self.schedule {
            Some(_) => BlobKind::Model,
            None => BlobKind::Network,
        }
    }

    /// The decoder of a latent model (the decoder section): a network blob whose input is
    /// this model's sample ([`Blob::sample_shape`]) and whose output is the generated image
    /// ([`Blob::image_shape`]). `None` for a model without one and for a network blob.
    pub fn decoder(&self) -> Option<Blob<'a>> {
        self.decoder.map(|graph| Blob {
            precision: self.precision,
            graph,
            decoder: None,
            schedule: None,
        })
    }

    /// The blob's bytes (`total_len` of them).
    pub fn bytes(&self) -> &'a [u8] {
        self.graph.bytes
    }

    /// Precision of weights and activations.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.graph.node_count
    }

    /// Index of the output node.
    pub fn output_node(&self) -> usize {
        self.graph.output
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.graph.tensor_count
    }

    /// Number of time groups: sets of int8 activation parameters, each for a range of training
    /// timesteps (1 for float blobs and blobs without a time-groups section).
    pub fn time_groups(&self) -> usize {
        self.graph.time_groups
    }

    /// Boundary `k` (`0..time_groups() - 1`) between time groups `k` and `k + 1`: the smallest
    /// timestep of group `k + 1`.
    pub fn time_group_boundary(&self, k: usize) -> Option<u32> {
        read_u32(self.graph.boundaries, k.checked_mul(4)?)
    }

    /// The time group whose activation parameters a network call at training timestep `t`
    /// uses ([`time_group`]).
    pub fn time_group(&self, t: u32) -> usize {
        let boundaries = (0..self.graph.time_groups.saturating_sub(1))
            .filter_map(|k| self.time_group_boundary(k));
        time_group(boundaries, t)
    }

    /// The number of classes of a class-conditional blob (one with a class embedding), or
    /// `None` for an unconditional one.
    pub fn classes(&self) -> Option<usize> {
        self.graph.classes
    }

    /// The row of the class table a network call for `class` reads: the class itself, or the
    /// last row ("no class") for `None` (which every blob allows; a blob without a class
    /// embedding reads no row).
    ///
    /// # Errors
    /// [`Error::InvalidClass`] for a class the blob does not have (every class of an
    /// unconditional blob).
    pub fn class_row(&self, class: Option<u32>) -> Result<usize> {
        let classes = self.graph.classes.unwrap_or(0);
        match class {
            None => Ok(classes),
            Some(class) if (class as usize) < classes => Ok(class as usize),
            Some(class) => Err(Error::InvalidClass {
                class,
                classes: classes as u32,
            }),
        }
    }

    /// Bytes of the activation arena the memory plan uses.
    pub fn arena_bytes(&self) -> usize {
        self.graph.arena_bytes
    }

    /// Bytes of scratch the kernels of a network call need besides the activations: the
    /// im2col buffer of the int8 convolutions, sized for the largest fan-in
    /// ([`s8_scratch_words`](crate::kernels::conv2d::s8_scratch_words)); 0 for float blobs
    /// and blobs without convolutions. [`plan`](crate::plan) places it after the activations.
    pub fn scratch_bytes(&self) -> usize {
        self.graph.scratch_bytes
    }

    /// The largest kernel scratch of any node (see [`Blob::scratch_bytes`]).
    fn kernel_scratch_bytes(&self) -> Result<usize> {
        if self.precision != Precision::Int8 {
            return Ok(0);
        }
        let mut bytes = 0usize;
        for index in 0..self.graph.node_count {
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

    /// Shape of the network's input: for a model, one sample `x_t` (also its output's
    /// shape); for a decoder, one latent.
    pub fn sample_shape(&self) -> Shape {
        // Node 0 decodes on every parsed blob; the fallback is never taken.
        self.node(0).map_or(Shape::ONE, |n| n.shape)
    }

    /// Elements of the network's input ([`Blob::sample_shape`]).
    pub fn sample_len(&self) -> usize {
        self.sample_shape().elements()
    }

    /// Shape of the network's output: a model's sample shape, or what a network blob (a
    /// decoder) maps its input to.
    pub fn output_shape(&self) -> Shape {
        // The output node decodes on every parsed blob; the fallback is never taken.
        self.node(self.graph.output).map_or(Shape::ONE, |n| n.shape)
    }

    /// Elements of the network's output ([`Blob::output_shape`]).
    pub fn output_len(&self) -> usize {
        self.output_shape().elements()
    }

    /// Shape of what [`generate`](crate::generate()) writes: the decoder's output for a
    /// model with a decoder (the image of a latent model), the sample shape otherwise.
    pub fn image_shape(&self) -> Shape {
        self.decoder()
            .map_or(self.sample_shape(), |decoder| decoder.output_shape())
    }

    /// Elements of what [`generate`](crate::generate()) writes ([`Blob::image_shape`]).
    pub fn image_len(&self) -> usize {
        self.image_shape().elements()
    }

    /// The schedule the model was trained with; for a network blob, which has none, no betas
    /// and 0 steps.
    pub fn schedule(&self) -> ModelSchedule {
        self.schedule.map_or(NO_SCHEDULE, |s| s.schedule)
    }

    /// The default sampler settings; for a network blob, which cannot generate, DDIM in one
    /// step (a placeholder nothing uses).
    pub fn sampler_defaults(&self) -> SamplerConfig {
        self.schedule.map_or(
            SamplerConfig::with_spacing(
                ddm_core::SamplerKind::Ddim,
                1,
                ddm_core::timesteps::Spacing::Leading,
            ),
            |s| s.sampler,
        )
    }

    /// The stored `alphas_cumprod` table (empty for a network blob).
    fn alphas(&self) -> &'a [u8] {
        self.schedule.map_or(&[][..], |s| s.alphas)
    }

    /// Number of training steps `T` (entries of `alphas_cumprod`; 0 for a network blob).
    pub fn train_steps(&self) -> usize {
        self.alphas().len() / 4
    }

    /// `alpha_bar_t` from the stored table.
    pub fn alpha_bar(&self, t: usize) -> Option<f32> {
        read_u32(self.alphas(), t.checked_mul(4)?).map(f32::from_bits)
    }

    /// The training schedule over the stored `alphas_cumprod` table, read in place (no copy;
    /// the blob need not be aligned).
    ///
    /// # Errors
    /// None for a parsed model blob: [`Blob::parse`] made the same check on the table; the
    /// core's error for a network blob (an empty table).
    pub fn alpha_bar_schedule(&self) -> Result<ddm_core::Schedule<'a>> {
        Ok(ddm_core::Schedule::from_le_bytes(self.alphas())?)
    }

    /// Copies `alphas_cumprod` into `out` (which must have `T` elements).
    pub fn copy_alphas_cumprod(&self, out: &mut [f32]) -> Result<()> {
        crate::error::check_len("alphas_cumprod", self.train_steps(), out.len())?;
        for (slot, bytes) in out.iter_mut().zip(self.alphas().chunks_exact(4)) {
            let word: [u8; 4] = bytes.try_into().map_err(|_| Error::Malformed("alphas"))?;
            *slot = f32::from_le_bytes(word);
        }
        Ok(())
    }

    /// Multiply-accumulates of one network call (linear and convolution layers).
    pub fn macs(&self) -> u64 {
        (0..self.graph.node_count)
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
}
