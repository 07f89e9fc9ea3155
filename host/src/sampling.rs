//! Generating samples with any denoiser: the oracle, a trained network or the device runtime.
//!
//! Sample `i` of a run with seed `S` uses its own random stream `Rng::with_stream(S, i)` for
//! its initial noise and every noise draw of its sampler, so results do not depend on the batch
//! size and match the device runtime, which generates one sample at a time.

use ddm_core::sampler::{
    ncsnv2_step_size, AnnealedLangevin, SamplerConfig, SamplerKind, SamplerOptions,
};
use ddm_core::{NoiseLevels, Prediction, Rng, Sampler, Schedule};

use crate::error::{Error, Result};

/// Something that predicts the network output for a batch of noisy samples.
pub trait Denoiser {
    /// Shape of one sample (`[D]` or `[C, H, W]`).
    fn sample_shape(&self) -> Vec<usize>;

    /// What the network's output means.
    fn prediction(&self) -> Prediction;

    /// Writes the network output for `x` (`[n, sample_len]` row-major) at training timestep `t`
    /// into `out` (same length).
    fn predict(&mut self, x: &[f32], t: u32, out: &mut [f32]) -> Result<()>;

    /// The number of classes of a class-conditional denoiser, `None` for an unconditional
    /// one.
    fn classes(&self) -> Option<usize> {
        None
    }

    /// As [`predict`](Self::predict), for every sample asking for class `class` (`< classes()`),
    /// or for the unconditional prediction when `class` is `None`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a class on an unconditional denoiser or out of range.
    fn predict_class(
        &mut self,
        x: &[f32],
        t: u32,
        class: Option<u32>,
        out: &mut [f32],
    ) -> Result<()> {
        match class {
            None => self.predict(x, t, out),
            Some(_) => Err(Error::Invalid(
                "this model is unconditional: it cannot generate a requested class".into(),
            )),
        }
    }

    /// Writes the score of the variance-exploding marginal `x0 + sigma e` at `x` into `out`.
    ///
    /// Networks trained on a variance-preserving schedule do not implement this; [`generate`]
    /// then evaluates them at the timestep `t` whose `sigma_t = s_t / a_t` is nearest, on the
    /// input `a_t x`, and uses `score = -eps / sigma_t`.
    fn ve_score(&mut self, _x: &[f32], _sigma: f64, _out: &mut [f32]) -> Result<()> {
        Err(Error::Invalid("this denoiser has no exact score".into()))
    }

    /// Whether [`ve_score`](Self::ve_score) is implemented.
    fn has_exact_score(&self) -> bool {
        false
    }
}

/// The samplers of the command line.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerChoice {
    /// DDPM ancestral sampling.
    Ddpm,
    /// DDIM (`--eta 0`: deterministic).
    Ddim,
    /// DPM-Solver++ 2M.
    #[value(name = "dpmpp-2m")]
    #[serde(rename = "dpmpp-2m")]
    DpmppTwoM,
    /// Annealed Langevin dynamics.
    Langevin,
    /// The predictor-corrector sampler of the variance-exploding SDE (any schedule, in its
    /// variance-exploding form; `--steps` timesteps, each `--pc-corrector-steps + 1` network
    /// evaluations).
    Pc,
    /// The probability flow ODE of the variance-exploding SDE, Heun's method (`--steps`
    /// timesteps, `2 steps - 1` network evaluations).
    #[value(name = "pf-ode")]
    #[serde(rename = "pf-ode")]
    PfOde,
}

/// Settings of annealed Langevin dynamics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LangevinOptions {
    /// Number of noise levels `L`; the `steps` budget is split into `steps / L` per level
    /// (`None`: a variance-exploding model's own levels, 10 for another).
    pub levels: Option<usize>,
    /// Largest noise level; default: the schedule's `sigma` at `T - 1`.
    pub sigma_max: Option<f64>,
    /// Smallest noise level; default: the schedule's `sigma` at step 0.
    pub sigma_min: Option<f64>,
    /// Step size `eps` at the smallest level (`None`: for a variance-exploding model NCSNv2's
    /// rule for the levels' ratio and the steps per level, [`ncsnv2_step_size`]; for another
    /// [`DEFAULT_LANGEVIN_STEP`]).
    pub step_size: Option<f64>,
    /// One extra evaluation at the end that removes the remaining noise (Tweedie).
    pub final_denoise: bool,
}

/// The Langevin levels of a model that is not variance exploding, by default.
pub const DEFAULT_LANGEVIN_LEVELS: usize = 10;

/// The Langevin step size of a model that is not variance exploding, by default: NCSN's 2e-5
/// (on the VP demo it beat NCSNv2's rule, about 4e-6 there: BENCHMARKS.md).
pub const DEFAULT_LANGEVIN_STEP: f64 = 2e-5;

impl Default for LangevinOptions {
    fn default() -> Self {
        LangevinOptions {
            levels: None,
            sigma_max: None,
            sigma_min: None,
            step_size: None,
            final_denoise: true,
        }
    }
}

/// How to sample, independent of what is sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingOptions {
    /// Which sampler.
    pub sampler: SamplerChoice,
    /// Number of network evaluations (for Langevin: levels x steps per level, plus the final
    /// denoising step).
    pub steps: usize,
    /// The timestep samplers' settings as given: their kind and step count come from
    /// `sampler` and `steps`, and every field left `None` follows the core's rule
    /// ([`SamplerOptions::resolve`]). Its clip radius also clamps the output of Langevin's final
    /// denoising step, when it has one.
    pub settings: SamplerOptions,
    /// Seed of the per-sample random streams.
    pub seed: u64,
    /// Langevin settings.
    pub langevin: LangevinOptions,
    /// The noise levels of a variance-exploding model (its schedule's,
    /// [`ScheduleSpec::noise_levels`](crate::schedule_args::ScheduleSpec::noise_levels)),
    /// which Langevin anneals over by default. `None` for another model.
    pub model_levels: Option<NoiseLevels>,
    /// The sampler the model was trained for, if any (a distilled student's,
    /// [`RunConfig::default_sampler`](crate::train::RunConfig::default_sampler)): the base
    /// that `sampler`, `steps` and `settings` replace field by field, as a model blob's stored
    /// sampler is ([`SamplerOptions::resolve`]).
    pub base: Option<SamplerConfig>,
}

impl SamplerChoice {
    /// The name of a timestep sampler.
    pub fn from_kind(kind: SamplerKind) -> Self {
        match kind {
            SamplerKind::Ddpm => SamplerChoice::Ddpm,
            SamplerKind::Ddim => SamplerChoice::Ddim,
            SamplerKind::DpmSolverPp2m => SamplerChoice::DpmppTwoM,
            SamplerKind::PredictorCorrector => SamplerChoice::Pc,
            SamplerKind::ProbabilityFlow => SamplerChoice::PfOde,
        }
    }

    /// The timestep sampler of this name (`None` for Langevin).
    pub fn kind(self) -> Option<SamplerKind> {
        match self {
            SamplerChoice::Ddpm => Some(SamplerKind::Ddpm),
            SamplerChoice::Ddim => Some(SamplerKind::Ddim),
            SamplerChoice::DpmppTwoM => Some(SamplerKind::DpmSolverPp2m),
            SamplerChoice::Pc => Some(SamplerKind::PredictorCorrector),
            SamplerChoice::PfOde => Some(SamplerKind::ProbabilityFlow),
            SamplerChoice::Langevin => None,
        }
    }

    /// The name on the command line (`ddim`, `pf-ode`, ...).
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|value| value.get_name().to_string())
            .unwrap_or_default()
    }

    /// The timestep sampler of this name, for the device runtime.
    ///
    /// # Errors
    /// [`Error::Invalid`] for Langevin, which the device runtime does not have.
    pub fn device_kind(self) -> Result<SamplerKind> {
        self.kind().ok_or_else(|| {
            Error::Invalid(format!(
                "the device runtime has no {} sampler: use ddpm, ddim, dpmpp-2m, pc or pf-ode",
                self.name()
            ))
        })
    }
}

impl SamplingOptions {
    /// `sampler` in `steps` steps with every setting at its default.
    pub fn new(sampler: SamplerChoice, steps: usize) -> Self {
        SamplingOptions {
            sampler,
            steps,
            settings: SamplerOptions::none(),
            seed: 0,
            langevin: LangevinOptions::default(),
            model_levels: None,
            base: None,
        }
    }

    /// `sampler` and `steps` as given, else the model's own sampler's (`base`), else
    /// `default` in `default_steps` steps; the other settings as given, over `base`.
    pub fn for_model(
        sampler: Option<SamplerChoice>,
        steps: Option<usize>,
        base: Option<SamplerConfig>,
        (default, default_steps): (SamplerChoice, usize),
    ) -> Self {
        let sampler = sampler
            .or(base.map(|b| SamplerChoice::from_kind(b.kind)))
            .unwrap_or(default);
        let steps = steps
            .or(base.map(|b| b.steps as usize))
            .unwrap_or(default_steps);
        SamplingOptions {
            base,
            ..SamplingOptions::new(sampler, steps)
        }
    }

    /// DDIM in `steps` steps with its defaults (deterministic).
    pub fn ddim(steps: usize) -> Self {
        SamplingOptions::new(SamplerChoice::Ddim, steps)
    }

    /// The core's sampler options: [`SamplingOptions::settings`] with the kind and step count
    /// (no kind for Langevin).
    ///
    /// # Errors
    /// [`Error::Invalid`] when `steps` does not fit a `u32`.
    pub fn sampler_options(&self) -> Result<SamplerOptions> {
        let steps = u32::try_from(self.steps)
            .map_err(|_| Error::Invalid(format!("--steps {} is too large", self.steps)))?;
        Ok(SamplerOptions {
            kind: self.sampler.kind(),
            steps: Some(steps),
            ..self.settings
        })
    }

    /// The timestep sampler's configuration for a network predicting `prediction` on
    /// `schedule` (`None` for Langevin): the core's rule, [`SamplerOptions::resolve`] over
    /// [`SamplingOptions::base`].
    ///
    /// # Errors
    /// The core's validation errors.
    pub fn sampler_config(
        &self,
        schedule: &Schedule<'_>,
        prediction: Prediction,
    ) -> Result<Option<SamplerConfig>> {
        if self.sampler.kind().is_none() {
            return Ok(None);
        }
        Ok(Some(
            self.sampler_options()?
                .resolve(self.base, schedule, prediction)?,
        ))
    }

    /// The Langevin sampler for `schedule`: by default over a variance-exploding model's own
    /// levels with NCSNv2's step size, else over [`DEFAULT_LANGEVIN_LEVELS`] levels of the
    /// schedule's sigma range with [`DEFAULT_LANGEVIN_STEP`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for fewer steps than levels; the core's refusals.
    pub fn langevin_sampler(&self, schedule: &Schedule<'_>) -> Result<AnnealedLangevin> {
        let options = &self.langevin;
        let model = self.model_levels;
        let levels = options
            .levels
            .or(model.map(|m| m.len()))
            .unwrap_or(DEFAULT_LANGEVIN_LEVELS);
        if levels == 0 || self.steps < levels {
            return Err(Error::Invalid(format!(
                "Langevin needs at least one step per level: {} steps for {levels} levels \
                 (--levels chooses fewer)",
                self.steps
            )));
        }
        let sigma_max = options.sigma_max.unwrap_or_else(|| {
            model.map_or_else(
                || schedule.ve_sigma(schedule.train_steps() - 1),
                |m| m.sigma_max(),
            )
        });
        let sigma_min = options
            .sigma_min
            .unwrap_or_else(|| model.map_or_else(|| schedule.ve_sigma(0), |m| m.sigma_min()));
        let per_level = self.steps / levels;
        let step_size = match (options.step_size, model) {
            (Some(step), _) => step,
            (None, Some(_)) if levels > 1 && sigma_max > sigma_min => {
                let ratio = NoiseLevels::new(sigma_min, sigma_max, levels as u32)?.ratio();
                ncsnv2_step_size(ratio, sigma_min, per_level)?
            }
            (None, _) => DEFAULT_LANGEVIN_STEP,
        };
        Ok(AnnealedLangevin::new(
            sigma_max,
            sigma_min,
            levels,
            per_level,
            step_size,
            options.final_denoise,
        )?
        .with_clip_sample(self.settings.clip_sample.flatten())?)
    }
}

/// Generates `num` samples. `init` optionally gives the initial noise `x_T` for all of them
/// (`[num, sample_len]`, standard normal; Langevin scales it by `sigma_max`); otherwise each
/// sample draws its own from its stream. `batch` samples go through the network at once.
/// Returns `[num, sample_len]` row-major.
pub fn generate(
    denoiser: &mut dyn Denoiser,
    schedule: Schedule<'_>,
    options: &SamplingOptions,
    num: usize,
    batch: usize,
    init: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let sample_len: usize = denoiser.sample_shape().iter().product();
    if let Some(init) = init {
        if init.len() != num * sample_len {
            return Err(Error::Invalid(format!(
                "initial noise has {} values, expected {num} samples x {sample_len}",
                init.len()
            )));
        }
    }
    if num == 0 || batch == 0 || options.steps == 0 {
        return Err(Error::Invalid(
            "the number of samples, the batch size and --steps must be > 0".into(),
        ));
    }
    let prediction = denoiser.prediction();
    let config = options.sampler_config(&schedule, prediction)?;
    let timesteps = match &config {
        Some(config) => {
            let mut timesteps = vec![0u32; config.steps as usize];
            config.timesteps(&schedule, &mut timesteps)?;
            timesteps
        }
        None => Vec::new(),
    };
    let mut samples = vec![0.0f32; num * sample_len];
    for start in (0..num).step_by(batch) {
        let count = batch.min(num - start);
        let x = &mut samples[start * sample_len..(start + count) * sample_len];
        let mut rngs: Vec<Rng> = (start..start + count)
            .map(|i| Rng::with_stream(options.seed, i as u64))
            .collect();
        match init {
            Some(init) => {
                x.copy_from_slice(&init[start * sample_len..(start + count) * sample_len])
            }
            None => {
                for (row, rng) in x.chunks_exact_mut(sample_len).zip(&mut rngs) {
                    rng.fill_normal(row);
                }
            }
        }
        match &config {
            Some(config) => run_timestep_sampler(
                denoiser,
                (schedule, prediction),
                config,
                &timesteps,
                x,
                sample_len,
                &mut rngs,
            )?,
            None => run_langevin(denoiser, schedule, options, x, sample_len, &mut rngs)?,
        }
    }
    Ok(samples)
}

fn run_timestep_sampler(
    denoiser: &mut dyn Denoiser,
    (schedule, prediction): (Schedule<'_>, Prediction),
    config: &SamplerConfig,
    timesteps: &[u32],
    x: &mut [f32],
    sample_len: usize,
    rngs: &mut [Rng],
) -> Result<()> {
    let mut scratch = vec![0.0f32; x.len()];
    let mut samplers = scratch
        .chunks_exact_mut(sample_len)
        .map(|scratch| config.build(prediction, schedule, timesteps, scratch))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let samplers = samplers.iter_mut().map(|s| s as &mut dyn Sampler).collect();
    run_samplers(denoiser, samplers, x, sample_len, rngs)
}

/// Steps one sampler per sample (`samplers[i]` on row `i` of `x`, with `rngs[i]`) until
/// they finish, one network call for all of them per step.
fn run_samplers<'b>(
    denoiser: &mut dyn Denoiser,
    mut samplers: Vec<&mut (dyn Sampler + 'b)>,
    x: &mut [f32],
    sample_len: usize,
    rngs: &mut [Rng],
) -> Result<()> {
    let mut output = vec![0.0f32; x.len()];
    while let Some(t) = samplers[0].timestep() {
        denoiser.predict(x, t, &mut output)?;
        check_finite(&output, t)?;
        for ((sampler, (row, out)), rng) in samplers
            .iter_mut()
            .zip(
                x.chunks_exact_mut(sample_len)
                    .zip(output.chunks_exact(sample_len)),
            )
            .zip(rngs.iter_mut())
        {
            sampler.step(row, out, rng)?;
        }
    }
    Ok(())
}

fn run_langevin(
    denoiser: &mut dyn Denoiser,
    schedule: Schedule<'_>,
    options: &SamplingOptions,
    x: &mut [f32],
    sample_len: usize,
    rngs: &mut [Rng],
) -> Result<()> {
    let template = options.langevin_sampler(&schedule)?;
    let sigma_max = template.noise_levels().sigma_max() as f32;
    x.iter_mut().for_each(|v| *v *= sigma_max);
    let mut samplers = vec![template; rngs.len()];
    let mut score = vec![0.0f32; x.len()];
    let mut network_input = vec![0.0f32; x.len()];
    let prediction = denoiser.prediction();
    while let Some(sigma) = samplers[0].sigma() {
        if denoiser.has_exact_score() {
            denoiser.ve_score(x, sigma, &mut score)?;
        } else {
            // A variance-preserving network evaluated at the nearest timestep.
            let t = schedule.timestep_for_ve_sigma(sigma);
            let (a, s) = (schedule.signal(t) as f32, schedule.noise(t) as f32);
            let sigma_t = schedule.ve_sigma(t) as f32;
            for (input, &value) in network_input.iter_mut().zip(x.iter()) {
                *input = a * value;
            }
            denoiser.predict(&network_input, t as u32, &mut score)?;
            check_finite(&score, t as u32)?;
            for (g, &input) in score.iter_mut().zip(&network_input) {
                let eps = prediction.to_x0_eps(input, *g, a, s).1;
                *g = -eps / sigma_t;
            }
        }
        for ((sampler, (row, g)), rng) in samplers
            .iter_mut()
            .zip(
                x.chunks_exact_mut(sample_len)
                    .zip(score.chunks_exact(sample_len)),
            )
            .zip(rngs.iter_mut())
        {
            sampler.step_with_score(row, g, rng)?;
        }
    }
    Ok(())
}

fn check_finite(output: &[f32], t: u32) -> Result<()> {
    if output.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "the network produced NaN or infinite values at timestep {t}"
        )))
    }
}
