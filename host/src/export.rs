//! From a training run to the device: int8 / fp16 / f32 blobs, ONNX files, and the device
//! runtime run on the host.
//!
//! - [`export_checkpoint`] reads a run folder, calibrates the float model on the deployed
//!   sampler's trajectories ([`crate::calibrate`], int8 and fp16 only), and hands graph,
//!   weights and calibration to [`ddm_export::export()`], which quantises, plans the arena,
//!   writes the blob and measures the per-layer SQNR against f32 on calibration inputs.
//! - [`sampler_config`] turns the host's [`SamplingOptions`] into the sampler the blob stores
//!   as its default, by the core's rule (the device resolves its overrides by the same rule);
//!   [`schedule_spec`] stores the run's exact
//!   `alphas_cumprod` table, so blob and checkpoint sample on the same numbers.
//! - [`read_blob`] and [`generate_on_runtime`] run [`ddm_firmware::generate()`], the device's
//!   code, on the host for `ddm sample --model`: sample `i` of seed `S` is generation
//!   `sample_index = i`, the device's and [`crate::sampling::generate`]'s rule, so the host run
//!   produces the bytes a device would, and sampling a checkpoint and its f32 blob with the
//!   same options gives the same samples up to the float kernels' rounding.

use std::path::Path;

use candle_core::Device;
use ddm_core::loss_weight::ReverseVariance;
use ddm_core::sampler::{SamplerKind, SamplerOptions};
use ddm_core::timesteps::Spacing;
use ddm_core::{Guidance, Prediction, Schedule};
use ddm_export::graph::Weights;
use ddm_export::{Export, ExportOptions, RangeMethod};
use ddm_firmware::settings::ModelSchedule;
use ddm_firmware::writer::ScheduleSpec as BlobSchedule;
use ddm_firmware::{
    generate, required_arena_bytes_for_steps, Blob, GenerateSettings, Precision, SamplerConfig,
};
use rayon::prelude::*;

use crate::calibrate::{calibrate, calibrate_decoder, Calibrated, CalibrationRun};
use crate::error::{Error, Result};
use crate::model::Params;
#[cfg(test)]
use crate::sampling::SamplerChoice;
use crate::sampling::SamplingOptions;
use crate::train::checkpoint::{self, WeightSet};
use crate::train::RunConfig;

/// The blob's default sampler unless `ddm export` is told otherwise: DDIM in 10 steps with
/// the core's defaults for everything else ([`ddm_core::sampler::SamplerConfig::new`]).
pub fn default_export_sampling() -> SamplingOptions {
    SamplingOptions::ddim(10)
}

/// The device sampler for the host's sampling options, for a network predicting
/// `prediction` on `schedule`: the core's rule ([`SamplingOptions::sampler_config`]; the seed
/// and Langevin settings play no part: the device draws per sample, and has no Langevin
/// sampler).
///
/// # Errors
/// [`Error::Invalid`] for a sampler the device runtime does not have
/// ([`SamplerChoice::device_kind`]); the core's validation errors.
pub fn sampler_config(
    options: &SamplingOptions,
    schedule: &Schedule<'_>,
    prediction: Prediction,
) -> Result<SamplerConfig> {
    options.sampler.device_kind()?;
    options
        .sampler_config(schedule, prediction)?
        .ok_or_else(|| Error::Invalid("no timestep sampler".into()))
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
            betas: Some(schedule.config().betas),
            train_steps: u32::try_from(schedule.train_steps)
                .map_err(|_| Error::Invalid("the schedule has too many steps".into()))?,
            zero_terminal_snr: schedule.zero_snr,
            prediction: config.objective.prediction.into(),
        },
        alphas_cumprod: Some(schedule.alphas_cumprod()?),
    })
}

/// A readable description of a device sampler, e.g. `DDIM, 10 steps, trailing spacing,
/// eta 0, clip 1` or `DDIM, 4 steps, timesteps 999,760,500,250, eta 1`.
pub fn describe_sampler(config: &SamplerConfig) -> String {
    let kind = match config.kind {
        SamplerKind::Ddpm => "DDPM",
        SamplerKind::Ddim => "DDIM",
        SamplerKind::DpmSolverPp2m => "DPM-Solver++ 2M",
        SamplerKind::PredictorCorrector => "predictor-corrector",
        SamplerKind::ProbabilityFlow => "probability flow ODE (Heun)",
    };
    let spacing = match config.spacing {
        Spacing::Leading => "leading spacing".to_string(),
        Spacing::Linspace => "linspace spacing".to_string(),
        Spacing::Trailing => "trailing spacing".to_string(),
        Spacing::LogSnr => "log-SNR spacing".to_string(),
        Spacing::Given(given) => {
            let list: Vec<String> = given.as_slice().iter().map(u32::to_string).collect();
            format!("timesteps {}", list.join(","))
        }
    };
    let mut text = format!("{kind}, {} steps, {spacing}", config.steps);
    if config.steps_offset != 0 {
        text.push_str(&format!(", offset {}", config.steps_offset));
    }
    match config.kind {
        SamplerKind::Ddim => text.push_str(&format!(", eta {}", config.eta)),
        SamplerKind::Ddpm => text.push_str(match config.variance {
            ReverseVariance::Beta => ", variance beta",
            ReverseVariance::Posterior => ", posterior variance",
        }),
        SamplerKind::DpmSolverPp2m if config.first_order_penultimate => {
            text.push_str(", first-order penultimate step")
        }
        SamplerKind::DpmSolverPp2m => {}
        SamplerKind::PredictorCorrector => text.push_str(&format!(
            ", {} corrector steps at snr {}",
            config.corrector_steps, config.snr
        )),
        SamplerKind::ProbabilityFlow => {}
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
    /// The most bytes an int8 blob may take with its time groups: it gets as many groups, up
    /// to [`CalibrationRun::time_groups`], as fit ([`ddm_export::time_groups_within`]); `None`
    /// sets no limit. A blob too large with one group is still exported.
    pub flash_budget: Option<usize>,
}

/// The default [`ExportSettings::flash_budget`]: 832 KiB, what the project's 1 MiB boards
/// (nRF52840, STM32F746, the QEMU Cortex-M4) leave for the blob beside the runtime and the
/// board code (about 130 KB today), with room to spare. Time groups add about 21 KB each to
/// the 8x8 UNet (10 fit beside its 194 KB) and 42 KB to the optdigits MLP (752 KB with one
/// group: 3 fit).
pub const DEFAULT_FLASH_BUDGET: usize = 832 * 1024;

impl Default for ExportSettings {
    /// int8, MSE ranges, [`default_export_sampling`], the default calibration, EMA weights,
    /// [`DEFAULT_FLASH_BUDGET`].
    fn default() -> Self {
        ExportSettings {
            precision: Precision::Int8,
            range: RangeMethod::default(),
            sampling: default_export_sampling(),
            calibration: CalibrationRun::default(),
            weights: WeightSet::Ema,
            flash_budget: Some(DEFAULT_FLASH_BUDGET),
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
/// A latent diffusion run exports with its autoencoder's decoder
/// ([`LatentSpace::scaled_decoder`](crate::autoencoder::LatentSpace::scaled_decoder)) in the
/// same blob, calibrated on the latents the float denoiser generates during its own
/// calibration ([`calibrate_decoder`]); the decoder's bytes come out of the flash budget
/// before the time groups are chosen.
///
/// # Errors
/// [`Error::Invalid`] for a sampler the device does not have or too many steps for the schedule; calibration errors ([`calibrate`]); the exporter's refusals ([`Error::Graph`]:
/// a range or folded bias out of the runtime's limits, an invalid graph).
pub fn export_run(
    config: &RunConfig,
    weights: &Weights,
    settings: &ExportSettings,
    device: &Device,
) -> Result<ExportedRun> {
    let decoder = match &config.latent {
        Some(space) => Some(space.scaled_decoder(device)?),
        None => None,
    };
    let schedule = schedule_spec(config)?;
    let table = schedule.table()?;
    let prediction = config.objective.prediction.into();
    let sampler = sampler_config(&settings.sampling, &Schedule::new(&table)?, prediction)?;
    let graph = &config.graph;
    let options = ExportOptions {
        precision: settings.precision,
        range: settings.range,
        sampler,
        schedule,
    };
    let mut run = settings.calibration;
    if let (Precision::Int8, Some(budget)) = (settings.precision, settings.flash_budget) {
        // The decoder takes its bytes of the budget first.
        let decoder_bytes = match &decoder {
            Some((graph, weights)) => ddm_export::decoder_bytes(graph, weights, &options)?,
            None => 0,
        };
        run.time_groups = ddm_export::time_groups_within(
            graph,
            weights,
            &options,
            run.time_groups.min(sampler.steps as usize),
            budget.saturating_sub(decoder_bytes),
        )?;
    }
    let calibrated = if settings.precision == Precision::F32 {
        None
    } else {
        let params = Params::from_weights(graph, weights, device)?;
        Some(calibrate(
            graph,
            &params,
            prediction,
            &table,
            &settings.sampling,
            &run,
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
    let export = match &decoder {
        None => ddm_export::export(graph, weights, calibration, &options)?,
        Some((decoder_graph, decoder_weights)) => {
            // Calibrated on the latents the float denoiser generated while it was calibrated.
            let decoder_calibration = match &calibrated {
                Some(calibrated) => calibrate_decoder(
                    decoder_graph,
                    &Params::from_weights(decoder_graph, decoder_weights, device)?,
                    &calibrated.samples,
                    &run,
                    device,
                )?,
                None => ddm_export::Calibration::new(
                    decoder_graph,
                    ddm_export::CalibrationConfig {
                        reservoir: 1,
                        max_inputs: 0,
                        seed: 0,
                    },
                ),
            };
            let parts = ddm_export::DecoderParts {
                graph: decoder_graph,
                weights: decoder_weights,
                calibration: &decoder_calibration,
            };
            ddm_export::export_latent(graph, weights, calibration, &parts, &options)?
        }
    };
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

/// Generates samples `0..num` of `seed` with the device runtime on the host: sample `i` is
/// [`ddm_firmware::generate()`] with `sample_index = i`, with `sampler` over the blob's
/// defaults (the device's rule, [`GenerateSettings::resolve`]), and for `class = Some((k,
/// guidance))` class `k` of a class-conditional blob with that guidance (the device's rule,
/// [`ddm_firmware::generate()`]). Samples run in parallel on rayon's global pool, each in its own arena; each is
/// independent of the others, so the result does not depend on the number of threads.
/// Returns `[num, image_len]` row-major ([`Blob::image_len`]: a latent model's decoded
/// images).
///
/// # Errors
/// [`Error::Firmware`] when `blob` does not parse (check files with [`read_blob`] first), the
/// runtime refuses the settings (e.g. more steps than the schedule has) or the network
/// produces NaN or infinite values, or the blob has no class `k`; [`Error::Invalid`] for
/// `num == 0`.
pub fn generate_on_runtime(
    blob: &[u8],
    sampler: SamplerOptions,
    seed: u64,
    num: usize,
    class: Option<(u32, Guidance)>,
) -> Result<Vec<f32>> {
    if num == 0 {
        return Err(Error::Invalid("the number of samples must be > 0".into()));
    }
    let parsed = Blob::parse(blob)?;
    let settings = |sample_index: usize| {
        let settings = GenerateSettings {
            sampler,
            ..GenerateSettings::new(seed, sample_index as u64)
        };
        match class {
            Some((class, guidance)) => settings.with_class(class, guidance),
            None => settings,
        }
    };
    settings(0).check_class(&parsed)?;
    let config = settings(0).resolve(&parsed)?;
    let arena_bytes = required_arena_bytes_for_steps(&parsed, config.steps as usize)?;
    let sample_len = parsed.image_len();
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
    use ddm_core::ScheduleConfig;

    #[test]
    fn host_options_become_the_device_sampler() {
        let mut table = vec![0.0f32; 1000];
        ScheduleConfig::ddpm()
            .fill_alphas_cumprod(&mut table)
            .unwrap();
        let schedule = Schedule::new(&table).unwrap();
        let eps = Prediction::Eps;
        let config = sampler_config(&default_export_sampling(), &schedule, eps).unwrap();
        assert_eq!(
            config,
            SamplerConfig::new(SamplerKind::Ddim, 10, &schedule, eps)
        );
        assert_eq!(
            describe_sampler(&config),
            "DDIM, 10 steps, leading spacing, eta 0"
        );
        let dpm = SamplingOptions {
            sampler: SamplerChoice::DpmppTwoM,
            settings: SamplerOptions {
                clip_sample: Some(Some(1.0)),
                spacing: Some(Spacing::LogSnr),
                first_order_penultimate: Some(true),
                ..SamplerOptions::none()
            },
            ..SamplingOptions::ddim(20)
        };
        let config = sampler_config(&dpm, &schedule, eps).unwrap();
        assert_eq!(
            describe_sampler(&config),
            "DPM-Solver++ 2M, 20 steps, log-SNR spacing, first-order penultimate step, clip 1"
        );
        let langevin = SamplingOptions::new(SamplerChoice::Langevin, 20);
        assert!(matches!(
            sampler_config(&langevin, &schedule, eps),
            Err(Error::Invalid(_))
        ));
        assert!(sampler_config(&SamplingOptions::ddim(0), &schedule, eps).is_err());
        assert!(sampler_config(&SamplingOptions::ddim(1001), &schedule, eps).is_err());
    }
}
