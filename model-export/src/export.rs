//! The whole export: float graph, weights and calibration in; a device blob and a report out.
//!
//! [`export`] quantises ([`crate::quantize`]), plans memory greedily by size (the firmware
//! writer's planner, [`ddm_firmware::writer::plan_greedy_by_size`]), writes the blob with the firmware's writer (which validates the plan
//! and parses the blob back) and measures:
//! - parameters and MACs per network call (from the graph);
//! - the time groups (sets of int8 activation parameters, one per range of timesteps, from the
//!   calibration's groups) and the flash they cost beyond the first;
//! - flash bytes (the blob's length) and arena bytes (what
//!   [`ddm_firmware::required_arena_bytes`] asks a device to provide for a whole generation
//!   with the blob's default sampler: activations, sample buffers, timesteps, slack; the schedule table is read from the blob);
//! - for int8 and fp16 blobs, each node's signal-to-quantisation-noise ratio against the f32
//!   model on the calibration inputs ([`Calibration::inputs`]): both run on the device
//!   runtime itself with no-reuse plans ([`Evaluator`]), and for node `i`
//!   `SQNR = 10 log10(sum ref^2 / sum (ref - q)^2)` over all elements and inputs, with `ref`
//!   the f32 output and `q` the exported model's output (int8 dequantised). The error is
//!   end-to-end up to that node: it includes what earlier layers passed on, so the output
//!   node's row is the network output's SQNR ([`ExportReport::output_sqnr_db`]).

use std::fmt;

use ddm_firmware::writer::{write_blob, write_latent_blob, write_network, MemoryPlan, ModelSpec};
use ddm_firmware::{required_arena_bytes, Blob, Precision};

use crate::calibration::Calibration;
use crate::error::Result;
use crate::graph::{Graph, Op, Weights};
use crate::quantize::{decoder_spec, model_spec, ExportOptions};
use crate::reference::Evaluator;
use ddm_firmware::writer::{plan_greedy_by_size, plan_no_reuse};

/// What [`export`] produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// The model blob (format: [`ddm_firmware::format`]).
    pub blob: Vec<u8>,
    /// Its memory plan (stored in the blob).
    pub plan: MemoryPlan,
    /// Sizes and errors.
    pub report: ExportReport,
}

/// Sizes of an exported model and its per-layer error; `Display` prints the table
/// `ddm export` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    /// Precision of the blob.
    pub precision: Precision,
    /// Parameters of the graph ([`Graph::parameter_count`]).
    pub parameters: usize,
    /// Multiply-accumulates of one network call for one sample ([`Graph::macs`]).
    pub macs: u64,
    /// Bytes of the blob (what goes to flash).
    pub flash_bytes: usize,
    /// Bytes of RAM a device provides to generate with the blob's default sampler
    /// ([`ddm_firmware::required_arena_bytes`]).
    pub arena_bytes: usize,
    /// Number of time groups: sets of int8 activation parameters, one per range of timesteps
    /// (1 for float blobs and single-set int8 blobs).
    pub time_groups: usize,
    /// Bytes of the blob spent on the time groups beyond the first (their quantisation
    /// records, biases, requantisation pairs, SiLU tables and the boundaries): the flash cost
    /// of timestep-aware parameters. They take no arena: every group runs in the same plan.
    pub time_group_bytes: usize,
    /// Peak of the activation memory plan (stored in the blob; part of `arena_bytes`).
    pub activation_bytes: usize,
    /// What the activations would take without reuse (every node its own region).
    pub no_reuse_bytes: usize,
    /// Number of calibration inputs the SQNR was measured on (0: not measured).
    pub calibration_inputs: usize,
    /// SQNR of the network output in dB, if measured.
    pub output_sqnr_db: Option<f64>,
    /// One row per graph node, in execution order.
    pub layers: Vec<LayerReport>,
    /// A latent model's decoder ([`export_latent`]); `None` for a model without one.
    pub decoder: Option<DecoderReport>,
}

/// The decoder's part of a latent model's [`ExportReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderReport {
    /// Parameters of the decoder graph.
    pub parameters: usize,
    /// Multiply-accumulates of one decoder call (once per generated image).
    pub macs: u64,
    /// Bytes of the blob's decoder section (part of the model's `flash_bytes`).
    pub flash_bytes: usize,
    /// Peak of the decoder's activation memory plan; it runs in the arena region of the
    /// denoiser's activations, so the model's `arena_bytes` grows only by what exceeds them.
    pub activation_bytes: usize,
    /// Number of decoder calibration inputs the SQNR was measured on (0: not measured).
    pub calibration_inputs: usize,
    /// SQNR of the decoded image in dB (before the clamp to `[-1, 1]`), if measured.
    pub output_sqnr_db: Option<f64>,
    /// One row per decoder node, in execution order.
    pub layers: Vec<LayerReport>,
}

/// A latent model's decoder as [`export_latent`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct DecoderParts<'a> {
    /// The float decoder: its input is the denoiser's sample (the latent), its output the
    /// image. Any scaling of the latents must already be folded into it.
    pub graph: &'a Graph,
    /// Its weights.
    pub weights: &'a Weights,
    /// Its calibration (one time group), gathered on latents the model generates; its
    /// inputs ([`Calibration::record_input`] at timestep 0) feed the SQNR report.
    pub calibration: &'a Calibration,
}

/// One node's line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// Node name.
    pub name: String,
    /// Op name (`conv2d`, `group_norm`, ...).
    pub op: String,
    /// Per-sample output shape.
    pub shape: Vec<usize>,
    /// SQNR of the exported model's output of this node against f32, in dB (`+inf` when
    /// identical); `None` for f32 blobs or without calibration inputs.
    pub sqnr_db: Option<f64>,
}

/// The op's name in reports.
fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Input => "input",
        Op::TimeEmbedding { .. } => "time_embedding",
        Op::ClassEmbedding { .. } => "class_embedding",
        Op::Linear { .. } => "linear",
        Op::Conv2d { .. } => "conv2d",
        Op::GroupNorm { .. } => "group_norm",
        Op::Silu { .. } => "silu",
        Op::Add { .. } => "add",
        Op::Concat { .. } => "concat",
        Op::Upsample2x { .. } => "upsample2x",
        Op::Reshape { .. } => "reshape",
    }
}

/// Exports `graph` with `weights` as a blob in `options.precision` (see the module docs).
///
/// The graph's node order is the blob's; the calibration must belong to this graph (int8
/// needs every calibrated node observed; float blobs only use its inputs for the report).
/// Deterministic: the same arguments give the same bytes.
///
/// Errors: the graph or weights do not validate, calibration is missing for int8, a
/// quantisation parameter or folded bias is out of the runtime's range, or the schedule or
/// sampler settings are invalid (the runtime's checks, [`crate::Error::Firmware`]).
pub fn export(
    graph: &Graph,
    weights: &Weights,
    calibration: &Calibration,
    options: &ExportOptions,
) -> Result<Export> {
    export_with(graph, weights, calibration, None, options)
}

/// [`export`] for a latent model: the denoiser `graph` on latents and its `decoder`, in one
/// blob (the decoder section, [`ddm_firmware::format`]), each quantised with its own
/// calibration and planned greedily; the device generates a latent and decodes it. The
/// report's `decoder` describes the decoder, and its flash and arena bytes cover both.
///
/// Errors as [`export`] for either network, and when the decoder's input is not the
/// denoiser's sample or it reads a timestep or class.
pub fn export_latent(
    graph: &Graph,
    weights: &Weights,
    calibration: &Calibration,
    decoder: &DecoderParts<'_>,
    options: &ExportOptions,
) -> Result<Export> {
    export_with(graph, weights, calibration, Some(decoder), options)
}

fn export_with(
    graph: &Graph,
    weights: &Weights,
    calibration: &Calibration,
    decoder: Option<&DecoderParts<'_>>,
    options: &ExportOptions,
) -> Result<Export> {
    let mut spec = model_spec(graph, weights, Some(calibration), options)?;
    let plan = plan_greedy_by_size(&spec)?;
    spec.plan = Some(plan.clone());
    let decoder_spec = decoder
        .map(|d| -> Result<ModelSpec> {
            let mut spec = decoder_spec(d.graph, d.weights, Some(d.calibration), options)?;
            spec.plan = Some(plan_greedy_by_size(&spec)?);
            Ok(spec)
        })
        .transpose()?;
    let write = |spec: &ModelSpec| -> Result<Vec<u8>> {
        Ok(match &decoder_spec {
            Some(decoder) => write_latent_blob(spec, decoder)?,
            None => write_blob(spec)?,
        })
    };
    let blob = write(&spec)?;
    let parsed = Blob::parse(&blob)?;
    let time_groups = spec.group_count();
    let time_group_bytes = if time_groups > 1 {
        blob.len() - write(&first_group_only(&spec))?.len()
    } else {
        0
    };
    let arena_bytes = required_arena_bytes(&parsed)?;
    let no_reuse_bytes = plan_no_reuse(&spec)?.arena_bytes;

    let inputs = calibration.inputs();
    let measure = options.precision != Precision::F32 && !inputs.is_empty();
    let sqnr = if measure {
        let reference = Evaluator::float(graph, weights, Precision::F32)?;
        let exported = Evaluator::new(spec)?;
        sqnr_per_node(reference, exported, calibration)?
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None; graph.nodes.len()]
    };
    let output_sqnr_db = sqnr[graph.output.0];
    let layers = layer_reports(graph, sqnr);
    let decoder = match (decoder, decoder_spec) {
        (Some(parts), Some(spec)) => {
            // The decoder section holds the decoder's network blob as written.
            let flash_bytes = parsed.decoder().map_or(0, |d| d.bytes().len());
            Some(decoder_report(parts, spec, flash_bytes, options.precision)?)
        }
        _ => None,
    };
    let report = ExportReport {
        precision: options.precision,
        parameters: graph.parameter_count(),
        macs: graph.macs(),
        flash_bytes: blob.len(),
        arena_bytes,
        time_groups,
        time_group_bytes,
        activation_bytes: plan.arena_bytes,
        no_reuse_bytes,
        calibration_inputs: if measure { inputs.len() } else { 0 },
        output_sqnr_db,
        layers,
        decoder,
    };
    Ok(Export { blob, plan, report })
}

/// One report row per node of `graph`, with its SQNR.
fn layer_reports(graph: &Graph, sqnr: Vec<Option<f64>>) -> Vec<LayerReport> {
    graph
        .nodes
        .iter()
        .zip(sqnr)
        .map(|(node, sqnr_db)| LayerReport {
            name: node.name.clone(),
            op: op_name(&node.op).into(),
            shape: node.shape.clone(),
            sqnr_db,
        })
        .collect()
}

/// The decoder's sizes and its per-node SQNR against f32 on its calibration inputs.
fn decoder_report(
    parts: &DecoderParts<'_>,
    spec: ModelSpec,
    flash_bytes: usize,
    precision: Precision,
) -> Result<DecoderReport> {
    let graph = parts.graph;
    let activation_bytes = spec.plan.as_ref().map_or(0, |plan| plan.arena_bytes);
    let inputs = parts.calibration.inputs().len();
    let measure = precision != Precision::F32 && inputs > 0;
    let sqnr = if measure {
        let reference = Evaluator::float_decoder(graph, parts.weights, Precision::F32)?;
        let exported = Evaluator::network(spec)?;
        sqnr_per_node(reference, exported, parts.calibration)?
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None; graph.nodes.len()]
    };
    Ok(DecoderReport {
        parameters: graph.parameter_count(),
        macs: graph.macs(),
        flash_bytes,
        activation_bytes,
        calibration_inputs: if measure { inputs } else { 0 },
        output_sqnr_db: sqnr[graph.output.0],
        layers: layer_reports(graph, sqnr),
    })
}

/// The most time groups, from 1 to `max_groups`, with which the int8 blob of `graph`,
/// `weights` and `options` (its precision is taken as int8) stays within `budget` bytes; 1
/// when even one group does not fit (the caller decides what to do with such a blob).
///
/// The size does not depend on the activation parameters, only on the graph, the weights and
/// the number of groups, so it is measured exactly, before any calibration, by writing the blob
/// with placeholder parameters.
///
/// Errors as [`export`]: an invalid graph, weights or schedule.
pub fn time_groups_within(
    graph: &Graph,
    weights: &Weights,
    options: &ExportOptions,
    max_groups: usize,
    budget: usize,
) -> Result<usize> {
    let train_steps = options.schedule.schedule.train_steps as usize;
    let max_groups = max_groups
        .clamp(1, ddm_firmware::format::MAX_TIME_GROUPS)
        .min(train_steps.max(1));
    let bytes = |groups: usize| -> Result<usize> {
        let boundaries: Vec<u32> = (1..groups as u32).collect();
        let config = crate::CalibrationConfig {
            reservoir: 1,
            max_inputs: 0,
            seed: 0,
        };
        let mut placeholder = Calibration::with_time_groups(graph, config, boundaries)?;
        for node in 0..graph.nodes.len() {
            for group in 0..groups as u32 {
                placeholder.observe(crate::graph::NodeId(node), group, &[-1.0, 1.0])?;
            }
        }
        let options = ExportOptions {
            precision: Precision::Int8,
            ..options.clone()
        };
        let spec = model_spec(graph, weights, Some(&placeholder), &options)?;
        Ok(write_blob(&spec)?.len())
    };
    // The size grows with the groups: the largest that fits, by bisection.
    if bytes(1)? > budget {
        return Ok(1);
    }
    let (mut fits, mut too_many) = (1, max_groups + 1);
    while too_many - fits > 1 {
        let middle = (fits + too_many) / 2;
        if bytes(middle)? <= budget {
            fits = middle;
        } else {
            too_many = middle;
        }
    }
    Ok(fits)
}

/// The most bytes the decoder `graph` with `weights` adds to a latent model's blob in
/// `options.precision`: its network blob in the decoder section, the section's table entry and
/// the alignment padding before it and before a time-groups section after it (at most 15
/// bytes each), so that [`time_groups_within`] can be given what is left of a flash budget.
/// Like the denoiser's, the network's size does not depend on the calibration: it is measured
/// exactly, before any, with placeholder parameters.
///
/// Errors as [`export_latent`] for the decoder.
pub fn decoder_bytes(graph: &Graph, weights: &Weights, options: &ExportOptions) -> Result<usize> {
    let config = crate::CalibrationConfig {
        reservoir: 1,
        max_inputs: 0,
        seed: 0,
    };
    let mut placeholder = Calibration::new(graph, config);
    for node in 0..graph.nodes.len() {
        placeholder.observe(crate::graph::NodeId(node), 0, &[-1.0, 1.0])?;
    }
    let mut spec = decoder_spec(graph, weights, Some(&placeholder), options)?;
    spec.plan = Some(plan_greedy_by_size(&spec)?);
    let padding = 2 * (ddm_firmware::format::SECTION_ALIGN - 1);
    Ok(write_network(&spec)?.len() + ddm_firmware::format::SECTION_ENTRY_LEN + padding)
}

/// `spec` with the parameters of its first time group only.
fn first_group_only(spec: &ModelSpec) -> ModelSpec {
    let mut single = spec.clone();
    single.time_groups.clear();
    for node in &mut single.nodes {
        node.quant.truncate(1);
    }
    single
}

/// `10 log10(signal / noise)`, `+inf` without noise.
fn decibels(signal: f64, noise: f64) -> f64 {
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

/// Per-node SQNR (dB) of `exported` against `reference` over the calibration inputs.
fn sqnr_per_node(
    mut reference: Evaluator,
    mut exported: Evaluator,
    calibration: &Calibration,
) -> Result<Vec<f64>> {
    let mut out = vec![0.0f32; reference.output_len()];
    let mut expected: Vec<Vec<f32>> = Vec::new();
    let mut totals: Vec<(f64, f64)> = Vec::new();
    for input in calibration.inputs() {
        expected.clear();
        reference.run(&input.x_t, input.t, &mut out, |_, output| {
            expected.push(output.iter().collect());
            Ok(())
        })?;
        totals.resize(expected.len(), (0.0, 0.0));
        exported.run(&input.x_t, input.t, &mut out, |node, output| {
            let (signal, noise) = &mut totals[node];
            for (r, q) in expected[node].iter().zip(output.iter()) {
                let (r, q) = (f64::from(*r), f64::from(q));
                *signal += r * r;
                *noise += (r - q) * (r - q);
            }
            Ok(())
        })?;
    }
    Ok(totals.iter().map(|&(s, n)| decibels(s, n)).collect())
}

/// `1234567` as `1,234,567`.
fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "precision        {}", self.precision.name())?;
        writeln!(f, "parameters       {}", grouped(self.parameters as u64))?;
        writeln!(f, "MACs per call    {}", grouped(self.macs))?;
        writeln!(
            f,
            "flash            {} bytes",
            grouped(self.flash_bytes as u64)
        )?;
        if self.time_groups > 1 {
            writeln!(
                f,
                "time groups      {} (activation parameters per range of timesteps: {} bytes of flash, no arena)",
                self.time_groups,
                grouped(self.time_group_bytes as u64)
            )?;
        }
        writeln!(
            f,
            "arena            {} bytes (activations {} bytes, {} without reuse)",
            grouped(self.arena_bytes as u64),
            grouped(self.activation_bytes as u64),
            grouped(self.no_reuse_bytes as u64)
        )?;
        if let Some(decoder) = &self.decoder {
            writeln!(
                f,
                "decoder          {} parameters, {} MACs per image, {} bytes of the flash, activations {} bytes (in the denoiser's arena region)",
                grouped(decoder.parameters as u64),
                grouped(decoder.macs),
                grouped(decoder.flash_bytes as u64),
                grouped(decoder.activation_bytes as u64)
            )?;
        }
        if self.calibration_inputs > 0 {
            writeln!(
                f,
                "SQNR against f32 on {} calibration inputs:",
                self.calibration_inputs
            )?;
            if let Some(v) = self.output_sqnr_db {
                writeln!(f, "  network output: {v:.1} dB")?;
            }
            write_layers(f, &self.layers)?;
        }
        if let Some(decoder) = self.decoder.as_ref().filter(|d| d.calibration_inputs > 0) {
            writeln!(
                f,
                "decoder SQNR against f32 on {} generated latents:",
                decoder.calibration_inputs
            )?;
            if let Some(v) = decoder.output_sqnr_db {
                writeln!(f, "  decoded image: {v:.1} dB")?;
            }
            write_layers(f, &decoder.layers)?;
        }
        Ok(())
    }
}

/// The per-layer SQNR table of a report.
fn write_layers(f: &mut fmt::Formatter<'_>, layers: &[LayerReport]) -> fmt::Result {
    let name_width = layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(0)
        .max(5);
    writeln!(
        f,
        "  {:<name_width$}  {:<15}  {:<14}  {:>9}",
        "layer", "op", "shape", "SQNR (dB)"
    )?;
    for layer in layers {
        let sqnr = match layer.sqnr_db {
            Some(v) if v.is_infinite() => "inf".to_string(),
            Some(v) => format!("{v:.1}"),
            None => "-".to_string(),
        };
        writeln!(
            f,
            "  {:<name_width$}  {:<15}  {:<14}  {:>9}",
            layer.name,
            layer.op,
            format!("{:?}", layer.shape),
            sqnr
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_and_decibels_computed() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(decibels(100.0, 1.0), 20.0);
        assert!(decibels(1.0, 0.0).is_infinite());
    }
}
