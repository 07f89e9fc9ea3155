//! From a training run to the device: int8 / fp16 / f32 blobs, ONNX files, and the device
//! runtime run on the host.
//!
//! - [`export_checkpoint`] reads a run folder, calibrates the float model on the deployed
//!   sampler's trajectories ([`crate::calibrate`], int8 and fp16 only), and hands graph,
//!   weights and calibration to [`ddm_export::export()`], which quantises, plans the arena,
//!   writes the blob and measures the per-layer SQNR against f32 on calibration inputs.
//! - [`sampler_config`] turns the host's [`SamplingOptions`] into the sampler the blob stores
//!   as its default, with the spacing actually used
//!   ([`SamplingOptions::effective_spacing`]); [`schedule_spec`] stores the run's exact
//!   `alphas_cumprod` table, so blob and checkpoint sample on the same numbers.
//! - [`read_blob`] and [`generate_on_runtime`] run [`ddm_firmware::generate()`], the device's
//!   code, on the host for `ddm sample --model`: sample `i` of seed `S` is generation
//!   `sample_index = i`, the device's and [`crate::sampling::generate`]'s rule, so the host run
//!   produces the bytes a device would, and sampling a checkpoint and its f32 blob with the
//!   same options gives the same samples up to the float kernels' rounding.

use std::path::Path;

use candle_core::Device;
use ddm_core::loss_weight::ReverseVariance;
use ddm_core::sampler::SamplerKind;
use ddm_core::timesteps::Spacing;
use ddm_export::graph::Weights;
use ddm_export::{Export, ExportOptions, RangeMethod};
use ddm_firmware::settings::ModelSchedule;
use ddm_firmware::writer::ScheduleSpec as BlobSchedule;
use ddm_firmware::{
    generate, required_arena_bytes_for_steps, Blob, GenerateSettings, Precision, SamplerConfig,
};
use rayon::prelude::*;

use crate::calibrate::{calibrate, Calibrated, CalibrationRun};
use crate::error::{Error, Result};
use crate::model::Params;
use crate::sampling::{SamplerChoice, SamplingOptions};
use crate::train::checkpoint::{self, WeightSet};
use crate::train::RunConfig;

/// The blob's default sampler unless `ddm export` is told otherwise: deterministic DDIM in
/// 10 steps with trailing spacing, no clipping.
pub fn default_export_sampling() -> SamplingOptions {
    SamplingOptions {
        spacing: Some(Spacing::Trailing),
        ..SamplingOptions::ddim(10)
    }
}

/// The device sampler for the host's sampling options (the seed and Langevin settings play no
/// part: the device draws per sample, and has no Langevin sampler).
///
/// # Errors
/// [`Error::Invalid`] for Langevin or a step count that does not fit a `u32`.
pub fn sampler_config(options: &SamplingOptions) -> Result<SamplerConfig> {
    let kind = sampler_kind(options.sampler)?;
    let number = |value: usize, what: &str| {
        u32::try_from(value).map_err(|_| Error::Invalid(format!("{what} {value} is too large")))
    };
    let config = SamplerConfig {
        kind,
        steps: number(options.steps, "--steps")?,
        spacing: options.effective_spacing(),
        steps_offset: number(options.steps_offset, "--steps-offset")?,
        eta: options.eta,
        variance: options.variance,
        clip_sample: options.clip_sample,
    };
    config.validate()?;
    Ok(config)
}

fn sampler_kind(choice: SamplerChoice) -> Result<SamplerKind> {
    Ok(match choice {
        SamplerChoice::Ddpm => SamplerKind::Ddpm,
        SamplerChoice::Ddim => SamplerKind::Ddim,
        SamplerChoice::DpmppTwoM => SamplerKind::DpmSolverPp2m,
        SamplerChoice::Langevin => {
            return Err(Error::Invalid(
                "the device runtime has no Langevin sampler: use ddpm, ddim or dpmpp-2m".into(),
            ))
        }
    })
}

/// The run's schedule as the blob stores it: its settings, prediction type and the exact
/// `alphas_cumprod` table the host samples with.
///
/// # Errors
/// The core's errors for an invalid schedule.
pub fn schedule_spec(config: &RunConfig) -> Result<BlobSchedule> {
    let schedule = &config.schedule;
    Ok(BlobSchedule {
        schedule: ModelSchedule {
            betas: Some(schedule.beta_schedule.betas()),
            train_steps: u32::try_from(schedule.train_steps)
                .map_err(|_| Error::Invalid("the schedule has too many steps".into()))?,
            zero_terminal_snr: schedule.zero_snr,
            prediction: config.objective.prediction.into(),
        },
        alphas_cumprod: Some(schedule.alphas_cumprod()?),
    })
}

/// A readable description of a device sampler, e.g. `DDIM, 10 steps, trailing spacing,
/// eta 0, clip 1`.
pub fn describe_sampler(config: &SamplerConfig) -> String {
    let kind = match config.kind {
        SamplerKind::Ddpm => "DDPM",
        SamplerKind::Ddim => "DDIM",
        SamplerKind::DpmSolverPp2m => "DPM-Solver++ 2M",
    };
    let spacing = match config.spacing {
        Spacing::Leading => "leading",
        Spacing::Linspace => "linspace",
        Spacing::Trailing => "trailing",
        Spacing::LogSnr => "log-SNR",
    };
    let mut text = format!("{kind}, {} steps, {spacing} spacing", config.steps);
    if config.steps_offset != 0 {
        text.push_str(&format!(", offset {}", config.steps_offset));
    }
    match config.kind {
        SamplerKind::Ddim => text.push_str(&format!(", eta {}", config.eta)),
        SamplerKind::Ddpm => text.push_str(match config.variance {
            ReverseVariance::Beta => ", variance beta",
            ReverseVariance::Posterior => ", posterior variance",
        }),
        SamplerKind::DpmSolverPp2m => {}
    }
    if let Some(radius) = config.clip_sample {
        text.push_str(&format!(", clip {radius}"));
    }
    text
}

/// What `ddm export` does besides reading the run: precision, ranges, sampler, calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    /// Precision of the blob.
    pub precision: Precision,
    /// How int8 activation ranges are chosen.
    pub range: RangeMethod,
    /// The sampler stored as the blob's default, which calibration follows (its seed is not
    /// used: calibration has [`CalibrationRun::seed`]).
    pub sampling: SamplingOptions,
    /// How much calibration to run (int8 and fp16; fp16 only uses it for the SQNR report).
    pub calibration: CalibrationRun,
    /// The weights to export (normally the EMA).
    pub weights: WeightSet,
}

impl Default for ExportSettings {
    /// int8, MSE ranges, [`default_export_sampling`], the default calibration, EMA weights.
    fn default() -> Self {
        ExportSettings {
            precision: Precision::Int8,
            range: RangeMethod::default(),
            sampling: default_export_sampling(),
            calibration: CalibrationRun::default(),
            weights: WeightSet::Ema,
        }
    }
}

/// An exported run.
#[derive(Debug, Clone)]
pub struct ExportedRun {
    /// The run's configuration (graph, schedule, prediction type).
    pub config: RunConfig,
    /// The weights exported.
    pub weights: Weights,
    /// The blob, its plan and the report.
    pub export: Export,
    /// The blob's default sampler.
    pub sampler: SamplerConfig,
    /// The calibration, when one was run (not for f32).
    pub calibrated: Option<Calibrated>,
}

/// Exports the run whose configuration is `config` with `weights` (see the module docs).
///
/// # Errors
/// [`Error::Invalid`] for a sampler the device does not have or too many steps for the
/// schedule; calibration errors ([`calibrate`]); the exporter's refusals ([`Error::Graph`]:
/// a range or folded bias out of the runtime's limits, an invalid graph).
pub fn export_run(
    config: &RunConfig,
    weights: &Weights,
    settings: &ExportSettings,
    device: &Device,
) -> Result<ExportedRun> {
    let sampler = sampler_config(&settings.sampling)?;
    if sampler.steps as usize > config.schedule.train_steps {
        return Err(Error::Invalid(format!(
            "--steps {} exceeds the {} training steps of the schedule",
            sampler.steps, config.schedule.train_steps
        )));
    }
    let schedule = schedule_spec(config)?;
    let graph = &config.graph;
    let calibrated = if settings.precision == Precision::F32 {
        None
    } else {
        let params = Params::from_weights(graph, weights, device)?;
        let table = config.schedule.alphas_cumprod()?;
        Some(calibrate(
            graph,
            &params,
            config.objective.prediction.into(),
            &table,
            &settings.sampling,
            &settings.calibration,
            device,
        )?)
    };
    let empty;
    let calibration = match &calibrated {
        Some(c) => &c.calibration,
        None => {
            empty = ddm_export::Calibration::new(
                graph,
                ddm_export::CalibrationConfig {
                    reservoir: 1,
                    max_inputs: 0,
                    seed: 0,
                },
            );
            &empty
        }
    };
    let options = ExportOptions {
        precision: settings.precision,
        range: settings.range,
        sampler,
        schedule,
    };
    let export = ddm_export::export(graph, weights, calibration, &options)?;
    Ok(ExportedRun {
        config: config.clone(),
        weights: weights.clone(),
        export,
        sampler,
        calibrated,
    })
}

/// Reads the run in `dir` and exports it ([`export_run`]).
///
/// # Errors
/// The checkpoint's errors ([`checkpoint::read_config`], [`checkpoint::read_weights`]) and
/// [`export_run`]'s.
pub fn export_checkpoint(
    dir: &Path,
    settings: &ExportSettings,
    device: &Device,
) -> Result<ExportedRun> {
    let config = checkpoint::read_config(dir)?;
    let weights = checkpoint::read_weights(dir, &config, settings.weights)?;
    export_run(&config, &weights, settings, device)
}

/// Reads a model blob and checks that the device runtime accepts it.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Corrupt`] naming it when it is not a
/// valid blob (wrong magic or version, bad checksum, truncated, inconsistent).
pub fn read_blob(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Blob::parse(&bytes)
        .map_err(|e| Error::corrupt(path, format!("not a valid ddm model blob ({e})")))?;
    Ok(bytes)
}

/// Sampler settings given on the command line for a blob, each replacing the blob's default
/// ([`SamplerOverrides::apply`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SamplerOverrides {
    /// The sampler.
    pub sampler: Option<SamplerChoice>,
    /// Number of steps.
    pub steps: Option<usize>,
    /// Timestep spacing.
    pub spacing: Option<Spacing>,
    /// Offset of leading timesteps.
    pub steps_offset: Option<usize>,
    /// DDIM's eta.
    pub eta: Option<f32>,
    /// DDPM's reverse variance.
    pub variance: Option<ReverseVariance>,
    /// Clamp x0 estimates to `[-r, r]`.
    pub clip_sample: Option<f32>,
}

impl SamplerOverrides {
    /// The blob's defaults with every given field replaced. A `sampler` other than the
    /// blob's, given without `spacing`, takes that sampler's usual spacing (log-SNR for
    /// DPM-Solver++, trailing otherwise), as when sampling a checkpoint.
    ///
    /// # Errors
    /// [`Error::Invalid`] for Langevin, numbers too large or settings the runtime refuses.
    pub fn apply(&self, defaults: SamplerConfig) -> Result<SamplerConfig> {
        let mut config = defaults;
        if let Some(choice) = self.sampler {
            let kind = sampler_kind(choice)?;
            if kind != defaults.kind {
                config.spacing = match kind {
                    SamplerKind::DpmSolverPp2m => Spacing::LogSnr,
                    _ => Spacing::Trailing,
                };
            }
            config.kind = kind;
        }
        let number = |value: usize, what: &str| {
            u32::try_from(value).map_err(|_| Error::Invalid(format!("{what} {value} is too large")))
        };
        if let Some(steps) = self.steps {
            config.steps = number(steps, "--steps")?;
        }
        if let Some(spacing) = self.spacing {
            config.spacing = spacing;
        }
        if let Some(offset) = self.steps_offset {
            config.steps_offset = number(offset, "--steps-offset")?;
        }
        if let Some(eta) = self.eta {
            config.eta = eta;
        }
        if let Some(variance) = self.variance {
            config.variance = variance;
        }
        if let Some(radius) = self.clip_sample {
            config.clip_sample = Some(radius);
        }
        config.validate()?;
        Ok(config)
    }
}

/// Generates samples `0..num` of `seed` with the device runtime on the host: sample `i` is
/// [`ddm_firmware::generate()`] with `sample_index = i`, with `sampler` (`None`: the blob's
/// defaults). Samples run in parallel on rayon's global pool, each in its own arena; each is
/// independent of the others, so the result does not depend on the number of threads.
/// Returns `[num, sample_len]` row-major.
///
/// # Errors
/// [`Error::Firmware`] when `blob` does not parse (check files with [`read_blob`] first), the
/// runtime refuses the settings (e.g. more steps than the schedule has) or the network
/// produces NaN or infinite values; [`Error::Invalid`] for `num == 0`.
pub fn generate_on_runtime(
    blob: &[u8],
    sampler: Option<SamplerConfig>,
    seed: u64,
    num: usize,
) -> Result<Vec<f32>> {
    if num == 0 {
        return Err(Error::Invalid("the number of samples must be > 0".into()));
    }
    let parsed = Blob::parse(blob)?;
    let settings = |sample_index: usize| GenerateSettings {
        sampler,
        steps: None,
        seed,
        sample_index: sample_index as u64,
    };
    let config = settings(0).resolve(&parsed);
    config.validate()?;
    let arena_bytes = required_arena_bytes_for_steps(&parsed, config.steps as usize)?;
    let sample_len = parsed.sample_len();
    let mut samples = vec![0.0f32; num * sample_len];
    samples
        .par_chunks_mut(sample_len)
        .enumerate()
        .try_for_each_init(
            || vec![0u8; arena_bytes],
            |arena, (index, out)| generate(&parsed, arena, &settings(index), out),
        )?;
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_options_become_the_device_sampler() {
        let config = sampler_config(&default_export_sampling()).unwrap();
        assert_eq!(
            config,
            SamplerConfig {
                spacing: Spacing::Trailing,
                variance: ReverseVariance::Posterior,
                ..SamplerConfig::ddim(10)
            }
        );
        assert_eq!(
            describe_sampler(&config),
            "DDIM, 10 steps, trailing spacing, eta 0"
        );
        let dpm = SamplingOptions {
            sampler: SamplerChoice::DpmppTwoM,
            clip_sample: Some(1.0),
            ..SamplingOptions::ddim(20)
        };
        let config = sampler_config(&dpm).unwrap();
        assert_eq!(config.spacing, Spacing::LogSnr, "the effective spacing");
        assert_eq!(
            describe_sampler(&config),
            "DPM-Solver++ 2M, 20 steps, log-SNR spacing, clip 1"
        );
        let langevin = SamplingOptions {
            sampler: SamplerChoice::Langevin,
            ..SamplingOptions::ddim(20)
        };
        assert!(matches!(sampler_config(&langevin), Err(Error::Invalid(_))));
        assert!(sampler_config(&SamplingOptions::ddim(0)).is_err());
    }

    #[test]
    fn overrides_replace_only_what_is_given() {
        let blob = SamplerConfig {
            spacing: Spacing::Trailing,
            clip_sample: Some(1.0),
            ..SamplerConfig::ddim(10)
        };
        assert_eq!(SamplerOverrides::default().apply(blob).unwrap(), blob);
        let steps = SamplerOverrides {
            steps: Some(20),
            ..Default::default()
        };
        assert_eq!(
            steps.apply(blob).unwrap(),
            SamplerConfig { steps: 20, ..blob }
        );
        let dpm = SamplerOverrides {
            sampler: Some(SamplerChoice::DpmppTwoM),
            ..Default::default()
        }
        .apply(blob)
        .unwrap();
        assert_eq!(
            (dpm.kind, dpm.spacing, dpm.clip_sample),
            (SamplerKind::DpmSolverPp2m, Spacing::LogSnr, Some(1.0))
        );
        let same_kind = SamplerOverrides {
            sampler: Some(SamplerChoice::Ddim),
            ..Default::default()
        };
        assert_eq!(same_kind.apply(blob).unwrap(), blob, "keeps the spacing");
        let bad = SamplerOverrides {
            eta: Some(-1.0),
            ..Default::default()
        };
        assert!(bad.apply(blob).is_err());
    }
}
