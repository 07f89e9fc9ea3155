//! `ddm export`: a trained checkpoint as a device blob (int8, fp16 or f32) and, optionally, an
//! ONNX file.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use clap::Args as ClapArgs;
use ddm::calibrate::{
    CalibrationRun, TimestepWeighting, DEFAULT_CALIBRATION_SAMPLES, DEFAULT_CALIBRATION_SEED,
    DEFAULT_TAIL_SIGMA, DEFAULT_TIME_GROUPS,
};
use ddm::device::DeviceArgs;
use ddm::export::{
    default_export_sampling, describe_sampler, export_checkpoint, ExportSettings,
    DEFAULT_FLASH_BUDGET,
};
use ddm::fsutil::write_atomic;
use ddm::sampler_args::SamplerArgs;
use ddm::sampling::{SamplerChoice, SamplingOptions};
use ddm::train::checkpoint::WeightSet;
use ddm_core::SamplerConfig;
use ddm_export::onnx::OnnxPrecision;
use ddm_export::{CalibrationConfig, RangeMethod};
use ddm_firmware::Precision;

/// Blob precisions by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionName {
    /// int8 weights (per channel) and activations (per tensor), post-training quantised.
    Int8,
    /// f16 weights, f32 activations and arithmetic.
    Fp16,
    /// f32 throughout (the float model on the device runtime).
    F32,
}

impl From<PrecisionName> for Precision {
    fn from(name: PrecisionName) -> Precision {
        match name {
            PrecisionName::Int8 => Precision::Int8,
            PrecisionName::Fp16 => Precision::F16,
            PrecisionName::F32 => Precision::F32,
        }
    }
}

/// int8 range methods by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RangeName {
    /// The observed minimum and maximum.
    Minmax,
    /// Symmetric percentiles (--percentile).
    Percentile,
    /// The range minimising the expected quantisation plus clipping error.
    Mse,
}

/// Timestep weightings by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightingName {
    /// Every visited timestep counts the same.
    Uniform,
    /// Step i of n counts i + 1.
    Linear,
    /// Step i of n counts (i + 1)^2.
    Quadratic,
}

/// ONNX parameter precisions by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnnxPrecisionName {
    /// float parameters.
    F32,
    /// float16 parameters cast to float (f32 arithmetic).
    F16,
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The trained run folder to export.
    #[arg(long, value_name = "RUN_DIR")]
    checkpoint: PathBuf,
    /// Precision of the blob.
    #[arg(long, value_enum)]
    precision: PrecisionName,
    /// The blob to write.
    #[arg(long, value_name = "model.ddm")]
    out: PathBuf,
    /// Also write the float model as an ONNX file (a latent model's denoiser on latents: its
    /// decoder is in the blob only).
    #[arg(long, value_name = "model.onnx")]
    onnx: Option<PathBuf>,
    /// Parameter precision of the ONNX file.
    #[arg(long, value_enum, default_value_t = OnnxPrecisionName::F32, requires = "onnx")]
    onnx_precision: OnnxPrecisionName,
    /// Calibration trajectories: initial noises run through the float model with the blob's
    /// sampler, every node observed at every visited timestep (int8; fp16 uses them for the
    /// SQNR report only).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CALIBRATION_SAMPLES)]
    calib: usize,
    /// Seed of the calibration noises (trajectory s uses stream s).
    #[arg(long, default_value_t = DEFAULT_CALIBRATION_SEED)]
    calib_seed: u64,
    /// Calibration trajectories per network call.
    #[arg(long, default_value_t = 64)]
    calib_batch: usize,
    /// Calibration inputs (x_t, t) on which the per-layer SQNR is measured.
    #[arg(long, default_value_t = 32)]
    sqnr_inputs: usize,
    /// How int8 activation ranges are chosen from the calibration statistics.
    #[arg(long, value_enum, default_value_t = RangeName::Mse)]
    range: RangeName,
    /// Percentile of --range percentile, in (50, 100].
    #[arg(long, default_value_t = 99.99)]
    percentile: f32,
    /// How much each visited timestep's activations count in the percentile and MSE ranges
    /// (linear and quadratic favour the last steps, whose predictions land in the sample).
    #[arg(long, value_enum, default_value_t = WeightingName::Uniform)]
    timestep_weighting: WeightingName,
    /// Height, in standard deviations, of the tail probes' extreme noise values: every int8
    /// range covers what trajectories starting from such values produce, so that rare
    /// initial noises never saturate the network at the noisiest steps (0: no probes).
    #[arg(long, value_name = "SIGMA", default_value_t = DEFAULT_TAIL_SIGMA)]
    calib_tail_sigma: f32,
    /// Most int8 time groups: sets of activation parameters, each calibrated on and used for
    /// a range of timesteps. Up to this many steps, every step of the blob's sampler gets its
    /// own; 1 gives one set for all timesteps. Costs flash (the report shows how much), no
    /// arena.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TIME_GROUPS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    time_groups: usize,
    /// The most bytes the int8 blob may take: it gets as many time groups (up to
    /// --time-groups) as fit. The default, 832 KiB, is what the 1 MiB boards leave beside the
    /// runtime. A blob too large with one group is still written.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_FLASH_BUDGET)]
    flash_budget: usize,
    /// Export the trained weights instead of their EMA.
    #[arg(long)]
    no_ema: bool,
    /// The blob's default sampler (calibration follows it) [default: ddim; a distilled
    /// student: its own].
    #[arg(long, value_enum)]
    sampler: Option<SamplerChoice>,
    /// The blob's default number of steps [default: 10; a distilled student: its own].
    #[arg(long)]
    steps: Option<usize>,
    #[command(flatten)]
    settings: SamplerArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

impl Args {
    /// The export settings for a run trained for the sampler `base` (a distilled student's).
    fn settings(&self, base: Option<SamplerConfig>) -> anyhow::Result<ExportSettings> {
        let default = default_export_sampling();
        let sampling = SamplingOptions {
            settings: self.settings.options(),
            ..SamplingOptions::for_model(
                self.sampler,
                self.settings.steps_or_given(self.steps),
                base,
                (default.sampler, default.steps),
            )
        };
        Ok(ExportSettings {
            precision: self.precision.into(),
            range: match self.range {
                RangeName::Minmax => RangeMethod::MinMax,
                RangeName::Percentile => RangeMethod::Percentile(self.percentile),
                RangeName::Mse => RangeMethod::Mse,
            },
            sampling,
            calibration: CalibrationRun {
                samples: self.calib,
                batch: self.calib_batch,
                seed: self.calib_seed,
                config: CalibrationConfig {
                    max_inputs: self.sqnr_inputs,
                    ..CalibrationConfig::default()
                },
                weighting: match self.timestep_weighting {
                    WeightingName::Uniform => TimestepWeighting::Uniform,
                    WeightingName::Linear => TimestepWeighting::Linear,
                    WeightingName::Quadratic => TimestepWeighting::Quadratic,
                },
                tail_sigma: self.calib_tail_sigma,
                time_groups: self.time_groups,
            },
            weights: if self.no_ema {
                WeightSet::Model
            } else {
                WeightSet::Ema
            },
            flash_budget: Some(self.flash_budget),
        })
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = ddm::train::checkpoint::read_config(&args.checkpoint)?;
    if let (Some(path), Some(classes)) = (&args.onnx, config.graph.classes()) {
        // Before anything is written: the blob carries the classes, the ONNX model cannot.
        bail!(
            "--onnx {}: this model is class-conditional ({classes} classes) and the ONNX model \
             has no class input; export the blob alone",
            path.display()
        );
    }
    let settings = args.settings(config.default_sampler())?;
    let device = args.device.open()?;
    let exported = export_checkpoint(&args.checkpoint, &settings, &device)?;
    let export = &exported.export;
    write_atomic(&args.out, |w| w.write_all(&export.blob))?;
    println!(
        "exported {} (step {}, {} weights) with default sampler {}",
        args.checkpoint.display(),
        exported.config.progress.step,
        if args.no_ema { "trained" } else { "EMA" },
        describe_sampler(&exported.sampler)
    );
    if let Some(calibrated) = &exported.calibrated {
        let first = calibrated.timesteps.first().copied().unwrap_or(0);
        let last = calibrated.timesteps.last().copied().unwrap_or(0);
        println!(
            "calibrated on {} trajectories (seed {}): {} timesteps from {first} to {last}, {} \
             batched network calls",
            args.calib,
            args.calib_seed,
            calibrated.timesteps.len(),
            calibrated.network_calls
        );
    }
    print!("{}", export.report);
    if settings.precision == ddm_firmware::Precision::Int8 {
        let wanted = args.time_groups.min(exported.sampler.steps as usize);
        if export.report.time_groups < wanted {
            println!(
                "time groups limited to {} of {wanted} by --flash-budget {}",
                export.report.time_groups, args.flash_budget
            );
        }
        if export.blob.len() > args.flash_budget {
            println!(
                "warning: the blob ({} bytes) exceeds --flash-budget {} even with one time group",
                export.blob.len(),
                args.flash_budget
            );
        }
    }
    println!("wrote {} ({} bytes)", args.out.display(), export.blob.len());
    if let Some(path) = &args.onnx {
        let precision = match args.onnx_precision {
            OnnxPrecisionName::F32 => OnnxPrecision::F32,
            OnnxPrecisionName::F16 => OnnxPrecision::F16,
        };
        let bytes = ddm_export::onnx::export(&exported.config.graph, &exported.weights, precision)?;
        write_atomic(path, |w| w.write_all(&bytes))?;
        println!("wrote {} ({} bytes)", path.display(), bytes.len());
        if exported.config.latent.is_some() {
            println!(
                "  (the denoiser on latents only: the decoder is in {} alone)",
                args.out.display()
            );
        }
    }
    println!("in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn precision_names_are_the_runtimes() {
        for name in PrecisionName::value_variants() {
            let value = name.to_possible_value().unwrap();
            assert_eq!(value.get_name(), Precision::from(*name).name());
        }
        assert_eq!(PrecisionName::value_variants().len(), Precision::ALL.len());
    }
}
