//! What a sampler name means: the one configuration of every timestep sampler, the rule that
//! fills in what a user leaves out, and the one validation.
//!
//! The host's `ddm sample` and `ddm export`, the device runtime, the boards and the HIL
//! harness all go through here: [`SamplerOptions`] is what a user gives (a sampler name, a
//! step count, any setting they choose), [`SamplerOptions::resolve`] completes it with the
//! defaults of [`SamplerConfig::new`] (or with a model blob's stored sampler) and validates it
//! against the schedule, and [`SamplerConfig::build`] makes the sampler.
//!
//! # The defaults
//!
//! Every sampler defaults to what diffusers' scheduler of the same name computes with its
//! own defaults (DDIM with `eta = 0`; DDPM with the posterior variance, diffusers'
//! `"fixed_small"`; DPM-Solver++ 2M with diffusers' lower orders at the ends), no clipping,
//! and the timestep spacing of [`default_spacing`], chosen by sample quality on trained
//! models (BENCHMARKS.md, "Default timestep spacing"):
//!
//! 1. **leading** (`t_i = i T / N`) for a network predicting eps on a schedule whose last step
//!    is almost pure noise (`alpha_bar_{T-1} < 1e-6`, the cosine schedule's `2.4e-9` for
//!    instance): there the eps network's x0 estimate is its error amplified by
//!    `1 / a_{T-1}` (20,000 on the cosine schedule) and every spacing that starts at `T - 1`
//!    makes samples diverge;
//! 2. otherwise **trailing** on a schedule with zero terminal SNR, whose last step is the pure
//!    noise the sampler starts from (Lin et al. 2024);
//! 3. otherwise, for DDIM and DDPM, **leading** for an eps network (diffusers' default; on the
//!    8x8 digits trailing is up to 2x worse for eps UNets) and **trailing** for v and x0
//!    networks, which predict safely from the pure noise at `T - 1`: a leading start at
//!    `T - T/N` leaves signal that the initial noise lacks, which costs little on 8x8 digits
//!    but tripled DDIM-10's Frechet distance on the 28x28 Fashion-MNIST UNet (v prediction,
//!    cosine schedule: 56.9 against 18.5);
//! 4. **trailing** for DPM-Solver++, whose second-order step into `t = 0` overshoots on leading
//!    timesteps (its Frechet distance is up to 4x trailing's at 4 and 10 steps on the UNets);
//! 5. **linspace** for the predictor-corrector sampler and the probability flow ODE where rules
//!    1 and 2 leave the choice: they walk from `T - 1` to 0 (even in log sigma on a
//!    variance-exploding schedule; BENCHMARKS.md, "Score-based models").

use super::{
    AnySampler, Ddim, Ddpm, DpmSolverPp2m, PredictorCorrector, ProbabilityFlowHeun, SamplerKind,
};
use crate::error::{Error, Result};
use crate::loss_weight::ReverseVariance;
use crate::prediction::Prediction;
use crate::schedule::Schedule;
use crate::timesteps::{fill_timesteps, Spacing};

/// Below this `alpha_bar_{T-1}` an eps-predicting network cannot start at `T - 1`: its x0
/// estimate there is its error times `1 / a_{T-1} > 1000`.
pub const EPS_START_MIN_ALPHA_BAR: f64 = 1e-6;

/// The default timestep spacing of `kind` for a network predicting `prediction` on
/// `schedule` (the rule of the module docs).
pub fn default_spacing(
    kind: SamplerKind,
    schedule: &Schedule<'_>,
    prediction: Prediction,
) -> Spacing {
    let terminal = schedule.alpha_bar(schedule.train_steps() - 1);
    if prediction == Prediction::Eps && terminal < EPS_START_MIN_ALPHA_BAR {
        Spacing::Leading
    } else if terminal == 0.0 {
        Spacing::Trailing
    } else {
        match kind {
            SamplerKind::Ddpm | SamplerKind::Ddim if prediction == Prediction::Eps => {
                Spacing::Leading
            }
            SamplerKind::Ddpm | SamplerKind::Ddim | SamplerKind::DpmSolverPp2m => Spacing::Trailing,
            SamplerKind::PredictorCorrector | SamplerKind::ProbabilityFlow => Spacing::Linspace,
        }
    }
}

/// Everything that configures a timestep sampler besides the schedule and the prediction type.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SamplerConfig {
    /// Which sampler.
    pub kind: SamplerKind,
    /// Number of timesteps walked (`1..=T`): the network evaluations of DDPM, DDIM and
    /// DPM-Solver++; the predictor-corrector sampler takes `steps (corrector_steps + 1)`, the
    /// probability flow ODE `2 steps - 1` ([`SamplerConfig::evaluations`]).
    pub steps: u32,
    /// How the timesteps are spread over `0..T`.
    pub spacing: Spacing,
    /// Offset added to leading timesteps (diffusers' `steps_offset`).
    pub steps_offset: u32,
    /// DDIM's eta (0: deterministic, 1: DDPM-like noise); finite and `>= 0`.
    pub eta: f32,
    /// DDPM's reverse variance.
    pub variance: ReverseVariance,
    /// Clamp every x0 estimate to `[-r, r]` (`None`: no clipping); `r` finite and `> 0`.
    pub clip_sample: Option<f32>,
    /// DPM-Solver++: take the step into the smallest timestep at first order too, not only the
    /// final one (see [`DpmSolverPp2m::with_first_order_penultimate`]).
    pub first_order_penultimate: bool,
    /// The predictor-corrector sampler's Langevin corrector steps per timestep (0: the
    /// reverse diffusion predictor alone).
    pub corrector_steps: u32,
    /// The predictor-corrector sampler's signal-to-noise ratio `r`; finite and `> 0`.
    pub snr: f32,
}

/// The predictor-corrector sampler's default corrector steps per timestep: one, as the score
/// SDE paper ran its variance-exploding models.
pub const DEFAULT_CORRECTOR_STEPS: u32 = 1;

/// The predictor-corrector sampler's default signal-to-noise ratio, the score SDE paper's for
/// its variance-exploding models.
pub const DEFAULT_SNR: f32 = 0.16;

/// The most corrector steps per timestep a configuration may ask for (NCSNv2 took 5 per
/// level, NCSN 100; the bound keeps every step count of a run within `u32` on the device).
pub const MAX_CORRECTOR_STEPS: u32 = 1000;

impl SamplerConfig {
    /// The defaults of `kind` in `steps` steps for a network predicting `prediction` on
    /// `schedule` (see the module docs).
    pub fn new(
        kind: SamplerKind,
        steps: u32,
        schedule: &Schedule<'_>,
        prediction: Prediction,
    ) -> Self {
        SamplerConfig::with_spacing(kind, steps, default_spacing(kind, schedule, prediction))
    }

    /// The defaults of `kind` in `steps` steps, with `spacing`.
    pub const fn with_spacing(kind: SamplerKind, steps: u32, spacing: Spacing) -> Self {
        SamplerConfig {
            kind,
            steps,
            spacing,
            steps_offset: 0,
            eta: 0.0,
            variance: ReverseVariance::Posterior,
            clip_sample: None,
            first_order_penultimate: false,
            corrector_steps: DEFAULT_CORRECTOR_STEPS,
            snr: DEFAULT_SNR,
        }
    }

    /// The network evaluations of the whole run: `steps`, `steps (corrector_steps + 1)` for
    /// the predictor-corrector sampler, `2 steps - 1` for the probability flow ODE.
    pub fn evaluations(&self) -> u64 {
        let steps = u64::from(self.steps);
        match self.kind {
            SamplerKind::Ddpm | SamplerKind::Ddim | SamplerKind::DpmSolverPp2m => steps,
            SamplerKind::PredictorCorrector => steps * (u64::from(self.corrector_steps) + 1),
            SamplerKind::ProbabilityFlow => (2 * steps).saturating_sub(1),
        }
    }

    /// Checks every field against `schedule`: `1 <= steps <= T`, `steps_offset < T`, `eta`
    /// finite and `>= 0`, the clip radius finite and `> 0`, and that the spacing and offset
    /// give `steps` distinct timesteps in `0..T` (so that [`SamplerConfig::timesteps`] fails
    /// only on a buffer of the wrong length): given timesteps must number `steps`, the first
    /// below `T`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] or [`Error::InvalidStepCount`], naming what is wrong.
    pub fn validate(&self, schedule: &Schedule<'_>) -> Result<()> {
        self.validate_fields()?;
        let steps = self.steps as usize;
        let train_steps = schedule.train_steps();
        if steps == 0 || steps > train_steps || self.steps_offset as usize >= train_steps {
            return Err(Error::InvalidStepCount { steps, train_steps });
        }
        if let Spacing::Given(given) = self.spacing {
            if given.as_slice()[0] as usize >= train_steps {
                return Err(Error::InvalidStepCount { steps, train_steps });
            }
        }
        if self.spacing == Spacing::Leading {
            // The largest leading timestep: (steps - 1) (T / steps) + offset.
            let largest = (steps - 1) * (train_steps / steps) + self.steps_offset as usize;
            if largest >= train_steps {
                return Err(Error::InvalidStepCount { steps, train_steps });
            }
        }
        Ok(())
    }

    /// The checks of [`SamplerConfig::validate`] that need no schedule: `steps >= 1`, `eta`,
    /// the signal-to-noise ratio (finite, `> 0`), at most [`MAX_CORRECTOR_STEPS`] corrector
    /// steps, the clip radius, and as many given timesteps as steps.
    ///
    /// # Errors
    /// As [`SamplerConfig::validate`].
    pub fn validate_fields(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::InvalidParameter("sampler steps must be >= 1"));
        }
        if !(self.eta.is_finite() && self.eta >= 0.0) {
            return Err(Error::InvalidParameter("eta must be finite and >= 0"));
        }
        if !(self.snr.is_finite() && self.snr > 0.0) {
            return Err(Error::InvalidParameter(
                "the corrector's signal-to-noise ratio must be finite and > 0",
            ));
        }
        if self.corrector_steps > MAX_CORRECTOR_STEPS {
            return Err(Error::InvalidParameter(
                "at most 1000 corrector steps per timestep (MAX_CORRECTOR_STEPS)",
            ));
        }
        if let Spacing::Given(given) = self.spacing {
            if given.len() != self.steps as usize {
                return Err(Error::InvalidParameter(
                    "the given timesteps must number the sampler's steps",
                ));
            }
        }
        super::validate_clip(self.clip_sample)
    }

    /// Writes the `steps` inference timesteps (descending) for `schedule` into `out`, which
    /// must hold exactly `steps` entries.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for a wrong `out`, else as [`SamplerConfig::validate`].
    pub fn timesteps(&self, schedule: &Schedule<'_>, out: &mut [u32]) -> Result<()> {
        self.validate(schedule)?;
        crate::error::check_len("timesteps", self.steps as usize, out.len())?;
        fill_timesteps(schedule, self.spacing, self.steps_offset as usize, out)
    }

    /// Elements of scratch [`SamplerConfig::build`] needs for samples of `sample_len` values:
    /// `sample_len` for DPM-Solver++ (its previous x0 estimate) and the probability flow ODE
    /// (its first slope), 0 otherwise.
    pub fn scratch_len(&self, sample_len: usize) -> usize {
        match self.kind {
            SamplerKind::DpmSolverPp2m | SamplerKind::ProbabilityFlow => sample_len,
            SamplerKind::Ddpm | SamplerKind::Ddim | SamplerKind::PredictorCorrector => 0,
        }
    }

    /// Builds the sampler for a network predicting `prediction`, over `timesteps` (from
    /// [`SamplerConfig::timesteps`]). `scratch` must hold
    /// [`scratch_len`](SamplerConfig::scratch_len) elements.
    ///
    /// # Errors
    /// The samplers' own checks (timesteps, clip radius, eta).
    pub fn build<'a>(
        &self,
        prediction: Prediction,
        schedule: Schedule<'a>,
        timesteps: &'a [u32],
        scratch: &'a mut [f32],
    ) -> Result<AnySampler<'a>> {
        Ok(match self.kind {
            SamplerKind::Ddpm => AnySampler::Ddpm(Ddpm::new(
                schedule,
                timesteps,
                prediction,
                self.variance,
                self.clip_sample,
            )?),
            SamplerKind::Ddim => AnySampler::Ddim(Ddim::new(
                schedule,
                timesteps,
                prediction,
                self.eta,
                self.clip_sample,
            )?),
            SamplerKind::DpmSolverPp2m => AnySampler::DpmSolverPp2m(
                DpmSolverPp2m::new(schedule, timesteps, prediction, self.clip_sample, scratch)?
                    .with_first_order_penultimate(self.first_order_penultimate),
            ),
            SamplerKind::PredictorCorrector => AnySampler::PredictorCorrector(
                PredictorCorrector::new(
                    schedule,
                    timesteps,
                    prediction,
                    self.corrector_steps as usize,
                    f64::from(self.snr),
                )?
                .with_clip_sample(self.clip_sample)?,
            ),
            SamplerKind::ProbabilityFlow => AnySampler::ProbabilityFlow(
                ProbabilityFlowHeun::new(schedule, timesteps, prediction, scratch)?
                    .with_clip_sample(self.clip_sample)?,
            ),
        })
    }
}

/// Sampler settings as a user gives them (a command line, a board's runner configuration):
/// every `None` is left to [`SamplerOptions::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SamplerOptions {
    /// The sampler.
    pub kind: Option<SamplerKind>,
    /// Number of network evaluations.
    pub steps: Option<u32>,
    /// Timestep spacing.
    pub spacing: Option<Spacing>,
    /// Offset of leading timesteps.
    pub steps_offset: Option<u32>,
    /// DDIM's eta.
    pub eta: Option<f32>,
    /// DDPM's reverse variance.
    pub variance: Option<ReverseVariance>,
    /// Clamp x0 estimates to `[-r, r]` (`Some(None)`: no clipping).
    pub clip_sample: Option<Option<f32>>,
    /// DPM-Solver++'s first-order penultimate step.
    pub first_order_penultimate: Option<bool>,
    /// The predictor-corrector sampler's corrector steps per timestep.
    pub corrector_steps: Option<u32>,
    /// The predictor-corrector sampler's signal-to-noise ratio.
    pub snr: Option<f32>,
}

impl From<SamplerConfig> for SamplerOptions {
    /// Options that give every setting of `config`: they resolve to `config` whatever the base.
    fn from(config: SamplerConfig) -> Self {
        SamplerOptions {
            kind: Some(config.kind),
            steps: Some(config.steps),
            spacing: Some(config.spacing),
            steps_offset: Some(config.steps_offset),
            eta: Some(config.eta),
            variance: Some(config.variance),
            clip_sample: Some(config.clip_sample),
            first_order_penultimate: Some(config.first_order_penultimate),
            corrector_steps: Some(config.corrector_steps),
            snr: Some(config.snr),
        }
    }
}

impl SamplerOptions {
    /// Options that leave everything to the base or the defaults (`Default` in `const`).
    pub const fn none() -> Self {
        SamplerOptions {
            kind: None,
            steps: None,
            spacing: None,
            steps_offset: None,
            eta: None,
            variance: None,
            clip_sample: None,
            first_order_penultimate: None,
            corrector_steps: None,
            snr: None,
        }
    }

    /// Options that choose `kind` in `steps` steps and leave everything else to the defaults.
    pub const fn sampler(kind: SamplerKind, steps: u32) -> Self {
        SamplerOptions {
            kind: Some(kind),
            steps: Some(steps),
            ..SamplerOptions::none()
        }
    }

    /// The configuration these options ask for, for a network predicting `prediction` on
    /// `schedule`: each given field replaces the one of `base` (a model blob's stored sampler,
    /// whose settings a device uses unless told otherwise) or, without a base, of
    /// [`SamplerConfig::new`]'s defaults. A different kind over a base takes that kind's
    /// default spacing unless a spacing is given; the base's other settings carry over (eta,
    /// variance, the DPM-Solver++ order and the corrector's settings concern one sampler each,
    /// clipping all of them).
    /// Given timesteps ([`Spacing::Given`]) set the step count when none is asked for; a step
    /// count other than the base's given timesteps takes the kind's default spacing unless a
    /// spacing is asked for.
    ///
    /// # Errors
    /// Without a base, [`Error::InvalidParameter`] when the sampler or the step count is
    /// missing; then [`SamplerConfig::validate`].
    pub fn resolve(
        &self,
        base: Option<SamplerConfig>,
        schedule: &Schedule<'_>,
        prediction: Prediction,
    ) -> Result<SamplerConfig> {
        let given_len = match self.spacing {
            Some(Spacing::Given(given)) => Some(given.len() as u32),
            _ => None,
        };
        let mut config = match base {
            Some(base) => base,
            None => {
                let (Some(kind), Some(steps)) = (self.kind, self.steps.or(given_len)) else {
                    return Err(Error::InvalidParameter(
                        "a sampler and a step count are needed when no default is stored",
                    ));
                };
                SamplerConfig::new(kind, steps, schedule, prediction)
            }
        };
        if let Some(kind) = self.kind.filter(|&kind| kind != config.kind) {
            config.spacing = default_spacing(kind, schedule, prediction);
        }
        let SamplerOptions {
            kind,
            steps,
            spacing,
            steps_offset,
            eta,
            variance,
            clip_sample,
            first_order_penultimate,
            corrector_steps,
            snr,
        } = *self;
        config.kind = kind.unwrap_or(config.kind);
        config.steps = steps.or(given_len).unwrap_or(config.steps);
        config.spacing = match (spacing, config.spacing) {
            (Some(spacing), _) => spacing,
            (None, Spacing::Given(given)) if given.len() != config.steps as usize => {
                default_spacing(config.kind, schedule, prediction)
            }
            (None, spacing) => spacing,
        };
        config.steps_offset = steps_offset.unwrap_or(config.steps_offset);
        config.eta = eta.unwrap_or(config.eta);
        config.variance = variance.unwrap_or(config.variance);
        config.clip_sample = clip_sample.unwrap_or(config.clip_sample);
        config.first_order_penultimate =
            first_order_penultimate.unwrap_or(config.first_order_penultimate);
        config.corrector_steps = corrector_steps.unwrap_or(config.corrector_steps);
        config.snr = snr.unwrap_or(config.snr);
        config.validate(schedule)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleConfig;

    fn table(zero_terminal_snr: bool) -> [f32; 100] {
        let mut table = [0.0f32; 100];
        ScheduleConfig {
            train_steps: 100,
            zero_terminal_snr,
            ..ScheduleConfig::ddpm()
        }
        .fill_alphas_cumprod(&mut table)
        .unwrap();
        table
    }

    #[test]
    fn the_default_spacing_follows_the_rule() {
        use crate::schedule::BetaSchedule;
        let (plain, zero) = (table(false), table(true));
        let mut cosine = [0.0f32; 1000];
        ScheduleConfig {
            betas: BetaSchedule::cosine(),
            ..ScheduleConfig::ddpm()
        }
        .fill_alphas_cumprod(&mut cosine)
        .unwrap();
        let plain = Schedule::new(&plain).unwrap();
        let zero = Schedule::new(&zero).unwrap();
        let cosine = Schedule::new(&cosine).unwrap();
        let (ddim, ddpm, dpm) = (
            SamplerKind::Ddim,
            SamplerKind::Ddpm,
            SamplerKind::DpmSolverPp2m,
        );
        // A schedule whose last step keeps signal: DDIM and DDPM lead for an eps network and
        // trail for v and x0 networks; DPM-Solver++ trails.
        assert_eq!(
            default_spacing(ddim, &plain, Prediction::Eps),
            Spacing::Leading
        );
        assert_eq!(
            default_spacing(ddpm, &plain, Prediction::Eps),
            Spacing::Leading
        );
        for prediction in [Prediction::V, Prediction::X0] {
            assert_eq!(default_spacing(ddim, &plain, prediction), Spacing::Trailing);
            assert_eq!(default_spacing(ddpm, &plain, prediction), Spacing::Trailing);
        }
        for prediction in [Prediction::Eps, Prediction::V, Prediction::X0] {
            assert_eq!(default_spacing(dpm, &plain, prediction), Spacing::Trailing);
        }
        for kind in [ddim, ddpm, dpm] {
            // Almost no signal at T - 1: an eps network starts at leading timesteps.
            assert!(cosine.alpha_bar(999) < EPS_START_MIN_ALPHA_BAR);
            assert_eq!(
                default_spacing(kind, &cosine, Prediction::Eps),
                Spacing::Leading
            );
            assert_eq!(
                default_spacing(kind, &zero, Prediction::Eps),
                Spacing::Leading
            );
            // Zero terminal SNR: trailing starts from the pure noise given.
            assert_eq!(
                default_spacing(kind, &zero, Prediction::V),
                Spacing::Trailing
            );
            let config = SamplerConfig::new(kind, 10, &plain, Prediction::V);
            assert_eq!(
                (config.eta, config.variance, config.clip_sample),
                (0.0, ReverseVariance::Posterior, None)
            );
            assert!(!config.first_order_penultimate);
        }
        assert_eq!(
            default_spacing(ddim, &cosine, Prediction::V),
            Spacing::Trailing
        );
        assert_eq!(
            default_spacing(dpm, &cosine, Prediction::V),
            Spacing::Trailing
        );
    }

    #[test]
    fn options_replace_the_base_field_by_field() {
        let table = table(false);
        let schedule = Schedule::new(&table).unwrap();
        let base = SamplerConfig {
            eta: 0.5,
            clip_sample: Some(1.0),
            ..SamplerConfig::with_spacing(SamplerKind::Ddim, 10, Spacing::Trailing)
        };
        let eps = Prediction::Eps;
        let none = SamplerOptions::default();
        assert_eq!(none.resolve(Some(base), &schedule, eps).unwrap(), base);
        assert!(none.resolve(None, &schedule, eps).is_err());
        let dpm = SamplerOptions {
            kind: Some(SamplerKind::DpmSolverPp2m),
            first_order_penultimate: Some(true),
            ..SamplerOptions::default()
        };
        let resolved = dpm.resolve(Some(base), &schedule, eps).unwrap();
        assert_eq!(
            resolved,
            SamplerConfig {
                kind: SamplerKind::DpmSolverPp2m,
                first_order_penultimate: true,
                ..base
            },
            "DPM-Solver++'s default spacing is the base's, trailing"
        );
        // Another kind takes its own default spacing; a given spacing wins.
        let ddpm = SamplerOptions {
            kind: Some(SamplerKind::Ddpm),
            ..SamplerOptions::default()
        };
        assert_eq!(
            ddpm.resolve(Some(base), &schedule, eps).unwrap().spacing,
            Spacing::Leading
        );
        let linspace = SamplerOptions {
            spacing: Some(Spacing::Linspace),
            ..ddpm
        };
        assert_eq!(
            linspace
                .resolve(Some(base), &schedule, eps)
                .unwrap()
                .spacing,
            Spacing::Linspace
        );
        let fresh = SamplerOptions::sampler(SamplerKind::Ddpm, 20)
            .resolve(None, &schedule, eps)
            .unwrap();
        assert_eq!(
            fresh,
            SamplerConfig::new(SamplerKind::Ddpm, 20, &schedule, eps)
        );
        // A whole configuration resolves to itself over any base; "no clipping" is a setting.
        let whole = SamplerOptions::from(fresh);
        assert_eq!(whole.resolve(Some(base), &schedule, eps).unwrap(), fresh);
        assert_eq!(whole.resolve(None, &schedule, eps).unwrap(), fresh);
    }

    #[test]
    fn validation_names_every_bad_field() {
        let table = table(false);
        let schedule = Schedule::new(&table).unwrap();
        let good = SamplerConfig::new(SamplerKind::Ddim, 10, &schedule, Prediction::Eps);
        assert!(good.validate(&schedule).is_ok());
        // As many steps as the schedule has is the most there can be.
        let all = SamplerConfig { steps: 100, ..good };
        assert!(all.validate(&schedule).is_ok());
        let mut every = [0u32; 100];
        all.timesteps(&schedule, &mut every).unwrap();
        assert_eq!((every[0], every[99]), (99, 0));
        let bad = [
            SamplerConfig { steps: 0, ..good },
            SamplerConfig { steps: 101, ..good },
            SamplerConfig { eta: -0.1, ..good },
            SamplerConfig {
                eta: f32::NAN,
                ..good
            },
            SamplerConfig {
                clip_sample: Some(0.0),
                ..good
            },
            SamplerConfig {
                clip_sample: Some(f32::INFINITY),
                ..good
            },
            // Leading timesteps 0, 10, ..., 90 plus 10 reach T = 100.
            SamplerConfig {
                steps_offset: 10,
                ..good
            },
        ];
        for config in bad {
            assert!(config.validate(&schedule).is_err(), "{config:?}");
            let mut out = [0u32; 10];
            if config.steps == 10 {
                assert!(config.timesteps(&schedule, &mut out).is_err(), "{config:?}");
            }
        }
        let offset = SamplerConfig {
            steps_offset: 9,
            ..good
        };
        let mut out = [0u32; 10];
        offset.timesteps(&schedule, &mut out).unwrap();
        assert_eq!(out, [99, 89, 79, 69, 59, 49, 39, 29, 19, 9]);
        assert!(good.timesteps(&schedule, &mut [0u32; 9]).is_err());
    }

    #[test]
    fn given_timesteps_are_used_as_given_and_checked() {
        use crate::timesteps::GivenTimesteps;
        let table = table(false);
        let schedule = Schedule::new(&table).unwrap();
        let given = GivenTimesteps::new(&[99, 70, 31, 5]).unwrap();
        let config = SamplerConfig::with_spacing(SamplerKind::Ddim, 4, Spacing::Given(given));
        assert_eq!((given.len(), given.is_empty()), (4, false));
        let mut out = [0u32; 4];
        config.timesteps(&schedule, &mut out).unwrap();
        assert_eq!(out, [99, 70, 31, 5]);
        // Filled directly, a buffer of another length is refused, never partly filled.
        for len in [1, 3, 5] {
            let mut buffer = [0u32; 5];
            let out = &mut buffer[..len];
            let filled = crate::timesteps::fill_timesteps(&schedule, Spacing::Given(given), 0, out);
            assert!(filled.is_err(), "{len}");
        }
        assert!(config.timesteps(&schedule, &mut [0u32; 3]).is_err());
        // Too few or too many for the step count, or beyond T.
        for steps in [3, 5] {
            let wrong = SamplerConfig { steps, ..config };
            assert!(wrong.validate_fields().is_err());
            assert!(wrong.validate(&schedule).is_err());
        }
        let beyond = GivenTimesteps::new(&[100, 50]).unwrap();
        let beyond = SamplerConfig::with_spacing(SamplerKind::Ddim, 2, Spacing::Given(beyond));
        assert!(beyond.validate_fields().is_ok());
        assert!(beyond.validate(&schedule).is_err());
        assert!(beyond.timesteps(&schedule, &mut [0u32; 2]).is_err());
        // Not descending, empty, too many.
        assert!(GivenTimesteps::new(&[50, 50]).is_err());
        assert!(GivenTimesteps::new(&[10, 50]).is_err());
        assert!(GivenTimesteps::new(&[]).is_err());
        let many: [u32; 17] = core::array::from_fn(|i| 90 - i as u32);
        assert!(GivenTimesteps::new(&many).is_err());
        assert!(GivenTimesteps::new(&many[..16]).is_ok());

        // Options: given timesteps set the step count; another step count over a base with
        // given timesteps takes the default spacing; a conflicting count is refused.
        let v = Prediction::V;
        let options = SamplerOptions {
            kind: Some(SamplerKind::Ddim),
            spacing: Some(Spacing::Given(given)),
            ..SamplerOptions::none()
        };
        assert_eq!(options.resolve(None, &schedule, v).unwrap(), config);
        let two = SamplerOptions {
            steps: Some(2),
            ..SamplerOptions::none()
        };
        let resolved = two.resolve(Some(config), &schedule, v).unwrap();
        assert_eq!(resolved.steps, 2);
        assert_eq!(
            resolved.spacing,
            default_spacing(SamplerKind::Ddim, &schedule, v)
        );
        let same = SamplerOptions {
            steps: Some(4),
            ..SamplerOptions::none()
        };
        assert_eq!(same.resolve(Some(config), &schedule, v).unwrap(), config);
        let conflict = SamplerOptions {
            steps: Some(3),
            ..options
        };
        assert!(conflict.resolve(None, &schedule, v).is_err());
    }
}
