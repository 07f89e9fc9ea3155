//! Encoding a spec into blob bytes: tensors, node records, sections, CRC.

use std::vec;
use std::vec::Vec;

use half::f16;

use super::node_error;
use super::plan::{check_plan, plan_greedy_by_size};
use super::shapes::infer_shapes;
use super::spec::*;
use crate::blob::{Blob, Shape};
use crate::error::{Error, Result};
use crate::format::*;
use crate::kernels::concat::concat_requant;
use crate::quant::{fold_input_zero_point, silu_lut, AddParams, QuantParams, Requant};
use crate::settings::{betas_code, prediction_code, sampler_code, spacing_code, variance_code};
use ddm_core::timesteps::Spacing;
use ddm_core::SamplerKind;

/// Tensors collected for the tensors section.
#[derive(Default)]
struct Tensors {
    entries: Vec<(DType, Vec<u8>)>,
}

impl Tensors {
    fn push(&mut self, dtype: DType, bytes: Vec<u8>) -> u32 {
        self.entries.push((dtype, bytes));
        (self.entries.len() - 1) as u32
    }

    fn f32s(&mut self, values: &[f32]) -> u32 {
        self.push(
            DType::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    fn f16s(&mut self, values: impl Iterator<Item = f16>) -> u32 {
        self.push(DType::F16, values.flat_map(|v| v.to_le_bytes()).collect())
    }

    fn i32s(&mut self, values: &[i32]) -> u32 {
        self.push(
            DType::I32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    fn i8s(&mut self, values: &[i8]) -> u32 {
        self.push(DType::I8, values.iter().map(|&v| v as u8).collect())
    }

    fn requant(&mut self, pairs: &[Requant]) -> u32 {
        let words: Vec<i32> = pairs.iter().flat_map(|r| [r.multiplier, r.shift]).collect();
        self.i32s(&words)
    }

    /// Float weights or biases in the blob's float precision.
    fn float(&mut self, precision: Precision, values: FloatValues<'_>) -> u32 {
        match (precision, values) {
            (Precision::F16, FloatValues::F32(v)) => self.f16s(v.iter().map(|&x| f16::from_f32(x))),
            (Precision::F16, FloatValues::F16(v)) => self.f16s(v.iter().copied()),
            (_, FloatValues::F32(v)) => self.f32s(v),
            (_, FloatValues::F16(v)) => {
                let widened: Vec<f32> = v.iter().map(|x| x.to_f32()).collect();
                self.f32s(&widened)
            }
        }
    }
}

#[derive(Clone, Copy)]
enum FloatValues<'v> {
    F32(&'v [f32]),
    F16(&'v [f16]),
}

/// A node record under construction.
struct Record([u32; NODE_WORDS]);

impl Record {
    fn new(code: OpCode, shape: &Shape) -> Self {
        let mut words = [0u32; NODE_WORDS];
        let (dims, rank) = shape.dims();
        words[0] = code.code();
        words[1] = rank as u32;
        words[2] = dims[0] as u32;
        words[3] = if rank == 3 { dims[1] as u32 } else { 1 };
        words[4] = if rank == 3 { dims[2] as u32 } else { 1 };
        for word in &mut words[5..10] {
            *word = NONE;
        }
        Record(words)
    }
}

/// Everything the int8 and float paths need to encode one layer's weights.
struct LayerContext<'s> {
    index: usize,
    precision: Precision,
    /// `(input, output)` parameters of every time group (int8).
    quant: Vec<Option<(QuantParams, QuantParams)>>,
    out_channels: usize,
    fan_in: usize,
    weight: &'s Weights,
    bias: Option<&'s Bias>,
}

/// Writes weight, bias and requantisation tensors; returns `(t0, t1, t2)`. int8 layers get
/// one bias and one requantisation tensor per time group, each kind consecutive.
fn encode_layer(tensors: &mut Tensors, layer: LayerContext<'_>) -> Result<(u32, u32, u32)> {
    let fail = |reason| node_error(layer.index, reason);
    let expected = layer.out_channels * layer.fan_in;
    match (layer.precision, layer.weight) {
        (Precision::Int8, Weights::Int8 { values, scales }) => {
            if values.len() != expected || scales.len() != layer.out_channels {
                return Err(fail("weights or scales have the wrong length"));
            }
            if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(fail("weight scales must be finite and > 0"));
            }
            let mut biases = Vec::with_capacity(layer.quant.len());
            let mut requants = Vec::with_capacity(layer.quant.len());
            for quant in &layer.quant {
                let (input, output) =
                    quant.ok_or(fail("int8 layers need input and output quantisation"))?;
                let raw: Vec<i64> = match layer.bias {
                    None => vec![0; layer.out_channels],
                    Some(Bias::I32(b)) if b.len() == layer.out_channels => {
                        b.iter().map(|&v| i64::from(v)).collect()
                    }
                    Some(Bias::F32(b)) if b.len() == layer.out_channels => b
                        .iter()
                        .zip(scales)
                        .map(|(&v, &s)| {
                            let q =
                                libm::round(f64::from(v) / (f64::from(input.scale) * f64::from(s)));
                            q as i64
                        })
                        .collect(),
                    _ => return Err(fail("int8 bias must be i32 or f32 of length out")),
                };
                let mut folded = Vec::with_capacity(layer.out_channels);
                let mut requant = Vec::with_capacity(layer.out_channels);
                for ((row, &scale), &bias) in values
                    .chunks_exact(layer.fan_in.max(1))
                    .zip(scales)
                    .zip(&raw)
                {
                    let bias = i32::try_from(bias).map_err(|_| fail("int8 bias overflows i32"))?;
                    folded.push(fold_input_zero_point(bias, input.zero_point, row)?);
                    let real = f64::from(input.scale) * f64::from(scale) / f64::from(output.scale);
                    requant.push(Requant::from_real(real)?);
                }
                biases.push(folded);
                requants.push(requant);
            }
            let t0 = tensors.i8s(values);
            let t1 = first_of(biases.iter().map(|b| tensors.i32s(b)));
            let t2 = first_of(requants.iter().map(|r| tensors.requant(r)));
            Ok((t0, t1, t2))
        }
        (Precision::Int8, _) => Err(fail("int8 blobs need int8 weights")),
        (_, Weights::Int8 { .. }) => Err(fail("float blobs need float weights")),
        (precision, weight) => {
            let values = match weight {
                Weights::F32(v) => FloatValues::F32(v),
                Weights::F16(v) => FloatValues::F16(v),
                Weights::Int8 { .. } => return Err(fail("float blobs need float weights")),
            };
            let len = match values {
                FloatValues::F32(v) => v.len(),
                FloatValues::F16(v) => v.len(),
            };
            if len != expected {
                return Err(fail("weights have the wrong length"));
            }
            let t0 = tensors.float(precision, values);
            let t1 = match layer.bias {
                None => NONE,
                Some(Bias::F32(b)) if b.len() == layer.out_channels => {
                    tensors.float(precision, FloatValues::F32(b))
                }
                Some(Bias::F16(b)) if b.len() == layer.out_channels => {
                    tensors.float(precision, FloatValues::F16(b))
                }
                _ => return Err(fail("float bias must be f32 or f16 of length out")),
            };
            Ok((t0, t1, NONE))
        }
    }
}

/// Drains `indices`, the table indices of one tensor per time group as they are pushed
/// (consecutive), and returns the first, which the node record names.
fn first_of(indices: impl Iterator<Item = u32>) -> u32 {
    indices.fold(NONE, |first, index| first.min(index))
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn pad_to(out: &mut Vec<u8>, align: usize) {
    while !out.len().is_multiple_of(align) {
        out.push(0);
    }
}

/// Builds the model blob of `spec` and checks it parses.
pub fn write_blob(spec: &ModelSpec) -> Result<Vec<u8>> {
    encode(spec, Contents::Model { decoder: None })
}

/// Builds the model blob of a latent model: the denoiser `spec` and its `decoder` (written as
/// with [`write_network`] into the decoder section), and checks it parses.
///
/// Errors as [`write_blob`] and [`write_network`], and when the decoder cannot decode the
/// model's samples (another precision, or an input shape other than the sample's).
pub fn write_latent_blob(spec: &ModelSpec, decoder: &ModelSpec) -> Result<Vec<u8>> {
    let decoder = write_network(decoder)?;
    encode(
        spec,
        Contents::Model {
            decoder: Some(&decoder),
        },
    )
}

/// Builds the network blob of `spec` (no schedule section: its `schedule` and `sampler`
/// are not written, and its output shape may differ from its input's) and checks it parses.
///
/// Errors as [`write_blob`], and for time groups (a network blob has none).
pub fn write_network(spec: &ModelSpec) -> Result<Vec<u8>> {
    if !spec.time_groups.is_empty() {
        return Err(Error::InvalidModel("a network blob has no time groups"));
    }
    encode(spec, Contents::Network)
}

/// What a blob holds besides its network.
#[derive(Clone, Copy)]
enum Contents<'d> {
    /// The schedule section, and a decoder section with these bytes (a network blob).
    Model { decoder: Option<&'d [u8]> },
    /// Nothing: a network blob.
    Network,
}

/// Builds the blob of `spec` with `contents` and checks it parses.
fn encode(spec: &ModelSpec, contents: Contents<'_>) -> Result<Vec<u8>> {
    let n = spec.nodes.len();
    if n == 0 || n > MAX_NODES {
        return Err(Error::InvalidModel("a model needs 1..=4096 nodes"));
    }
    if spec.output >= n {
        return Err(Error::InvalidModel("the output node does not exist"));
    }
    let int8 = spec.precision == Precision::Int8;
    let shapes = infer_shapes(spec)?;

    let groups = spec.group_count();
    if groups > 1 && !int8 {
        return Err(Error::InvalidModel("only int8 models have time groups"));
    }
    if groups > MAX_TIME_GROUPS {
        return Err(Error::InvalidModel("a model has at most 64 time groups"));
    }
    let train_steps = spec.schedule.schedule.train_steps;
    let mut previous = 0u32;
    for &boundary in &spec.time_groups {
        if boundary <= previous || boundary >= train_steps {
            return Err(Error::InvalidModel(
                "time-group boundaries must increase, from 1 to below the train steps",
            ));
        }
        previous = boundary;
    }

    // Quantisation parameters (int8), `quant[g][i]`: one entry broadcast to every group,
    // inherited through upsample and reshape.
    let mut quant: Vec<Vec<Option<QuantParams>>> = vec![Vec::with_capacity(n); groups];
    for (index, node) in spec.nodes.iter().enumerate() {
        let fail = |reason| node_error(index, reason);
        for (group, params) in quant.iter_mut().enumerate() {
            let q = match node.quant.as_slice() {
                [q] => Some(*q),
                [] => match &node.op {
                    OpSpec::Upsample2x { input } | OpSpec::Reshape { input, .. } => {
                        params.get(*input).copied().flatten()
                    }
                    _ => None,
                },
                per_group if per_group.len() == groups => per_group.get(group).copied(),
                _ => return Err(fail("quantisation needs one entry, or one per time group")),
            };
            if int8 {
                q.ok_or(fail("int8 nodes need quantisation parameters"))?
                    .validate()?;
            }
            params.push(q);
        }
    }
    let quant_in = |g: usize, i: usize| quant.get(g).and_then(|q| q.get(i)).copied().flatten();
    let layer_quant = |input: usize, output: usize| -> Vec<Option<(QuantParams, QuantParams)>> {
        (0..groups)
            .map(|g| quant_in(g, input).zip(quant_in(g, output)))
            .collect()
    };

    let mut tensors = Tensors::default();
    let mut records = Vec::with_capacity(n);
    let mut list: Vec<u32> = Vec::new();
    let mut add_params = vec![vec![AddParams::default(); n]; groups];
    for (index, node) in spec.nodes.iter().enumerate() {
        let shape = shapes[index];
        let fail = |reason| node_error(index, reason);
        let record = match &node.op {
            OpSpec::Input { .. } => Record::new(OpCode::Input, &shape),
            OpSpec::TimeEmbedding { max_period, .. } => {
                let mut r = Record::new(OpCode::TimeEmbedding, &shape);
                r.0[10] = max_period.to_bits();
                r
            }
            OpSpec::ClassEmbedding { classes, table } => {
                let mut r = Record::new(OpCode::ClassEmbedding, &shape);
                r.0[10] = *classes as u32;
                r.0[7] = if int8 {
                    let q = quant_in(0, index).ok_or(fail("int8 nodes need quantisation"))?;
                    if (1..groups).any(|g| quant_in(g, index).is_none_or(|p| !p.same_as(&q))) {
                        return Err(fail(
                            "a class embedding has the same quantisation in every time group",
                        ));
                    }
                    let rows: Vec<i8> = table.iter().map(|&v| q.quantize(v)).collect();
                    tensors.i8s(&rows)
                } else {
                    tensors.float(spec.precision, FloatValues::F32(table))
                };
                r
            }
            OpSpec::Linear {
                input,
                out_features,
                weight,
                bias,
            } => {
                let mut r = Record::new(OpCode::Linear, &shape);
                let (t0, t1, t2) = encode_layer(
                    &mut tensors,
                    LayerContext {
                        index,
                        precision: spec.precision,
                        quant: layer_quant(*input, index),
                        out_channels: *out_features,
                        fan_in: shapes.get(*input).ok_or(fail("input"))?.elements(),
                        weight,
                        bias: bias.as_ref(),
                    },
                )?;
                r.0[5] = *input as u32;
                r.0[7..10].copy_from_slice(&[t0, t1, t2]);
                r
            }
            OpSpec::Conv2d {
                input,
                out_channels,
                kernel,
                stride,
                padding,
                weight,
                bias,
            } => {
                let mut r = Record::new(OpCode::Conv2d, &shape);
                let in_channels = shapes.get(*input).ok_or(fail("input"))?.channels();
                let (t0, t1, t2) = encode_layer(
                    &mut tensors,
                    LayerContext {
                        index,
                        precision: spec.precision,
                        quant: layer_quant(*input, index),
                        out_channels: *out_channels,
                        fan_in: in_channels * kernel * kernel,
                        weight,
                        bias: bias.as_ref(),
                    },
                )?;
                r.0[5] = *input as u32;
                r.0[7..10].copy_from_slice(&[t0, t1, t2]);
                r.0[10..13].copy_from_slice(&[*kernel as u32, *stride as u32, *padding as u32]);
                r
            }
            OpSpec::GroupNorm {
                input,
                groups,
                eps,
                gamma,
                beta,
            } => {
                let mut r = Record::new(OpCode::GroupNorm, &shape);
                r.0[5] = *input as u32;
                r.0[7] = tensors.f32s(gamma);
                r.0[8] = tensors.f32s(beta);
                r.0[10] = *groups as u32;
                r.0[11] = eps.to_bits();
                r
            }
            OpSpec::Silu { input } => {
                let mut r = Record::new(OpCode::Silu, &shape);
                r.0[5] = *input as u32;
                if int8 {
                    let mut luts = Vec::with_capacity(groups);
                    for pair in layer_quant(*input, index) {
                        let (i, o) = pair.ok_or(fail("SiLU needs quantisation"))?;
                        luts.push(silu_lut(i, o));
                    }
                    r.0[7] = first_of(luts.iter().map(|lut| tensors.i8s(lut)));
                }
                r
            }
            OpSpec::Add { lhs, rhs } => {
                let mut r = Record::new(OpCode::Add, &shape);
                r.0[5] = *lhs as u32;
                r.0[6] = *rhs as u32;
                if int8 {
                    for (g, params) in add_params.iter_mut().enumerate() {
                        let q = |i| quant_in(g, i).ok_or(fail("add needs quantisation"));
                        params[index] = AddParams::new(q(*lhs)?, q(*rhs)?, q(index)?)?;
                    }
                }
                r
            }
            OpSpec::Concat { inputs } => {
                let mut r = Record::new(OpCode::Concat, &shape);
                r.0[5] = list.len() as u32;
                r.0[6] = inputs.len() as u32;
                list.extend(inputs.iter().map(|&i| i as u32));
                if int8 {
                    let mut per_group = Vec::with_capacity(groups);
                    for g in 0..groups {
                        let q = |i| quant_in(g, i).ok_or(fail("concat needs quantisation"));
                        let out = q(index)?;
                        let mut pairs = Vec::with_capacity(inputs.len());
                        for &i in inputs {
                            pairs.push(concat_requant(q(i)?.scale, out.scale)?);
                        }
                        per_group.push(pairs);
                    }
                    r.0[7] = first_of(per_group.iter().map(|pairs| tensors.requant(pairs)));
                }
                r
            }
            OpSpec::Upsample2x { input } => {
                let mut r = Record::new(OpCode::Upsample2x, &shape);
                r.0[5] = *input as u32;
                r
            }
            OpSpec::Reshape { input, .. } => {
                let mut r = Record::new(OpCode::Reshape, &shape);
                r.0[5] = *input as u32;
                r
            }
        };
        records.push(record);
    }

    let plan = match &spec.plan {
        Some(plan) => plan.clone(),
        None => plan_greedy_by_size(spec)?,
    };
    check_plan(spec, &plan)?;

    // Sections.
    let mut graph = Vec::new();
    put_u32(&mut graph, n as u32);
    put_u32(&mut graph, spec.output as u32);
    put_u32(&mut graph, list.len() as u32);
    put_u32(&mut graph, 0);
    for record in &records {
        for &word in &record.0 {
            put_u32(&mut graph, word);
        }
    }
    for &entry in &list {
        put_u32(&mut graph, entry);
    }

    let mut tensor_section = Vec::new();
    put_u32(&mut tensor_section, tensors.entries.len() as u32);
    tensor_section.extend_from_slice(&[0; 12]);
    let table_at = tensor_section.len();
    tensor_section.resize(table_at + TENSOR_ENTRY_LEN * tensors.entries.len(), 0);
    pad_to(&mut tensor_section, TENSOR_ALIGN);
    for (i, (dtype, bytes)) in tensors.entries.iter().enumerate() {
        let offset = tensor_section.len();
        tensor_section.extend_from_slice(bytes);
        pad_to(&mut tensor_section, TENSOR_ALIGN);
        let at = table_at + i * TENSOR_ENTRY_LEN;
        let entry = [
            dtype.code(),
            offset as u32,
            (bytes.len() / dtype.size()) as u32,
            0,
        ];
        for (k, word) in entry.iter().enumerate() {
            tensor_section[at + 4 * k..at + 4 * k + 4].copy_from_slice(&word.to_le_bytes());
        }
    }

    let mut quant_section = Vec::new();
    if int8 {
        for (g, group_params) in add_params.iter().enumerate() {
            for (index, params) in group_params.iter().enumerate() {
                let q = quant_in(g, index).ok_or(node_error(index, "quantisation"))?;
                put_u32(&mut quant_section, q.scale.to_bits());
                put_u32(&mut quant_section, q.zero_point as u32);
                for r in [params.lhs, params.rhs, params.output] {
                    put_u32(&mut quant_section, r.multiplier as u32);
                    put_u32(&mut quant_section, r.shift as u32);
                }
            }
        }
    }

    let mut time_groups_section = Vec::new();
    put_u32(&mut time_groups_section, groups as u32);
    time_groups_section.extend_from_slice(&[0; 12]);
    for &boundary in &spec.time_groups {
        put_u32(&mut time_groups_section, boundary);
    }

    let mut plan_section = Vec::new();
    let arena_bytes =
        u32::try_from(plan.arena_bytes).map_err(|_| Error::InvalidModel("arena too large"))?;
    put_u32(&mut plan_section, arena_bytes);
    plan_section.extend_from_slice(&[0; 12]);
    for &offset in &plan.offsets {
        let offset = u32::try_from(offset).map_err(|_| Error::InvalidModel("offset too large"))?;
        put_u32(&mut plan_section, offset);
    }

    let mut sections: Vec<(u32, Vec<u8>)> =
        vec![(SECTION_GRAPH, graph), (SECTION_TENSORS, tensor_section)];
    if int8 {
        sections.push((SECTION_QUANT, quant_section));
    }
    sections.push((SECTION_PLAN, plan_section));
    if let Contents::Model { decoder } = contents {
        sections.push((SECTION_SCHEDULE, schedule_section(spec)?));
        if let Some(decoder) = decoder {
            sections.push((SECTION_DECODER, decoder.to_vec()));
        }
    }
    if groups > 1 {
        sections.push((SECTION_TIME_GROUPS, time_groups_section));
    }

    let mut blob = Vec::new();
    blob.extend_from_slice(&MAGIC);
    put_u32(&mut blob, FORMAT_VERSION);
    put_u32(&mut blob, 0); // CRC, filled in below
    put_u32(&mut blob, 0); // total length, filled in below
    put_u32(&mut blob, spec.precision.code());
    put_u32(&mut blob, sections.len() as u32);
    put_u32(&mut blob, 0);
    put_u32(&mut blob, 0);
    let table_at = blob.len();
    blob.resize(table_at + SECTION_ENTRY_LEN * sections.len(), 0);
    for (i, (id, bytes)) in sections.iter().enumerate() {
        pad_to(&mut blob, SECTION_ALIGN);
        let offset = blob.len();
        blob.extend_from_slice(bytes);
        let at = table_at + i * SECTION_ENTRY_LEN;
        for (k, word) in [*id, offset as u32, bytes.len() as u32, 0]
            .iter()
            .enumerate()
        {
            blob[at + 4 * k..at + 4 * k + 4].copy_from_slice(&word.to_le_bytes());
        }
    }
    let total = u32::try_from(blob.len()).map_err(|_| Error::InvalidModel("blob too large"))?;
    blob[12..16].copy_from_slice(&total.to_le_bytes());
    seal(&mut blob);
    Blob::parse(&blob)?;
    Ok(blob)
}

/// The schedule section of `spec`: its schedule, default sampler and `alphas_cumprod` table.
fn schedule_section(spec: &ModelSpec) -> Result<Vec<u8>> {
    let table = spec.schedule.table()?;
    let schedule = &spec.schedule.schedule;
    let sampler = &spec.sampler;
    let mut schedule_section = Vec::new();
    let (beta_kind, a, b) = betas_code(schedule.betas);
    put_u32(&mut schedule_section, beta_kind);
    put_u32(&mut schedule_section, schedule.train_steps);
    schedule_section.extend_from_slice(&a.to_le_bytes());
    schedule_section.extend_from_slice(&b.to_le_bytes());
    put_u32(&mut schedule_section, u32::from(schedule.zero_terminal_snr));
    put_u32(&mut schedule_section, prediction_code(schedule.prediction));
    put_u32(&mut schedule_section, sampler_code(sampler.kind));
    put_u32(&mut schedule_section, sampler.steps);
    put_u32(&mut schedule_section, spacing_code(sampler.spacing));
    put_u32(&mut schedule_section, sampler.steps_offset);
    put_u32(&mut schedule_section, sampler.eta.to_bits());
    put_u32(&mut schedule_section, variance_code(sampler.variance));
    put_u32(
        &mut schedule_section,
        u32::from(sampler.clip_sample.is_some()),
    );
    put_u32(
        &mut schedule_section,
        sampler.clip_sample.map_or(0, f32::to_bits),
    );
    put_u32(
        &mut schedule_section,
        u32::from(sampler.first_order_penultimate),
    );
    let (corrector_steps, snr) = match sampler.kind {
        SamplerKind::PredictorCorrector => (sampler.corrector_steps, sampler.snr.to_bits()),
        _ => (0, 0),
    };
    put_u32(&mut schedule_section, corrector_steps);
    put_u32(&mut schedule_section, snr);
    put_u32(&mut schedule_section, 0);
    for value in &table {
        schedule_section.extend_from_slice(&value.to_le_bytes());
    }
    if let Spacing::Given(given) = sampler.spacing {
        for &t in given.as_slice() {
            put_u32(&mut schedule_section, t);
        }
    }

    Ok(schedule_section)
}

/// Recomputes and stores the CRC of `blob` (after editing its bytes).
pub fn seal(blob: &mut [u8]) {
    if blob.len() < HEADER_LEN {
        return;
    }
    let total = u32::from_le_bytes([blob[12], blob[13], blob[14], blob[15]]) as usize;
    let end = total.clamp(CRC_START, blob.len());
    let crc = CRC32.checksum(&blob[CRC_START..end]);
    blob[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
}
