//! Reverse-process samplers as step-by-step state machines.
//!
//! A sampler never calls the network itself. The caller asks [`Sampler::timestep`] where the
//! network must be evaluated, evaluates it on the current `x` (any batch layout: the updates
//! are element-wise), and hands the output to [`Sampler::step`], which updates `x` in place.
//! This lets a microcontroller drive the same sampler with its own int8 network, with no
//! allocation: every buffer belongs to the caller.
//!
//! Per-step coefficients are computed in `f64` from the schedule, the element-wise update in
//! `f32`; Gaussian noise is drawn from [`Rng`] element by element in order, only when the step
//! adds noise. The same inputs and seed therefore give the same bits on every target.

mod config;
mod ddim;
mod ddpm;
mod dpm_solver;
mod langevin;
mod predictor_corrector;
mod probability_flow;

pub use config::{
    default_spacing, SamplerConfig, SamplerOptions, DEFAULT_CORRECTOR_STEPS, DEFAULT_SNR,
    EPS_START_MIN_ALPHA_BAR, MAX_CORRECTOR_STEPS,
};
pub use ddim::{Ddim, DdimInversion};
pub use ddpm::Ddpm;
pub use dpm_solver::DpmSolverPp2m;
pub use langevin::{ncsnv2_step_size, AnnealedLangevin};
pub use predictor_corrector::PredictorCorrector;
pub use probability_flow::ProbabilityFlowHeun;

use crate::error::{Error, Result};
use crate::prediction::Prediction;
use crate::rng::Rng;
use crate::schedule::{nonzero_alpha_bar, Schedule};
use crate::timesteps::previous;

/// A reverse-process sampler over the timesteps of a schedule: DDPM, DDIM and DPM-Solver++
/// on its variance-preserving form, the predictor-corrector sampler and the probability flow
/// ODE on its variance-exploding form (each holding the variance-preserving `x_t` between
/// steps, so that every sampler runs in the same loop). [`AnnealedLangevin`] anneals over its
/// own noise levels and names them by their index.
pub trait Sampler {
    /// The training timestep (for [`AnnealedLangevin`], the index of its noise level) at which
    /// the network must be evaluated before the next [`step`](Self::step), or `None` when
    /// sampling is finished.
    fn timestep(&self) -> Option<u32>;

    /// Advances one step: `x` is the current sample, `output` the network's output for it at
    /// [`timestep`](Self::timestep) (same length). `x` is updated in place.
    ///
    /// Errors: [`Error::Finished`] after the last step, [`Error::LengthMismatch`] when the
    /// buffers disagree in length.
    fn step(&mut self, x: &mut [f32], output: &[f32], rng: &mut Rng) -> Result<()>;

    /// Number of network evaluations the whole run takes.
    fn num_steps(&self) -> usize;

    /// Number of steps already taken.
    fn steps_taken(&self) -> usize;
}

/// The samplers that run over a timestep list, for configuration files and blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SamplerKind {
    /// DDPM ancestral sampling.
    Ddpm,
    /// DDIM (deterministic when `eta = 0`).
    Ddim,
    /// DPM-Solver++ 2M.
    DpmSolverPp2m,
    /// The predictor-corrector sampler of the variance-exploding SDE.
    PredictorCorrector,
    /// The probability flow ODE of the variance-exploding SDE (Heun).
    ProbabilityFlow,
}

/// One of the timestep samplers, chosen at run time.
#[derive(Debug)]
pub enum AnySampler<'a> {
    /// DDPM ancestral sampling.
    Ddpm(Ddpm<'a>),
    /// DDIM.
    Ddim(Ddim<'a>),
    /// DPM-Solver++ 2M.
    DpmSolverPp2m(DpmSolverPp2m<'a>),
    /// The predictor-corrector sampler.
    PredictorCorrector(PredictorCorrector<'a>),
    /// The probability flow ODE.
    ProbabilityFlow(ProbabilityFlowHeun<'a>),
}

impl Sampler for AnySampler<'_> {
    fn timestep(&self) -> Option<u32> {
        match self {
            AnySampler::Ddpm(s) => s.timestep(),
            AnySampler::Ddim(s) => s.timestep(),
            AnySampler::DpmSolverPp2m(s) => s.timestep(),
            AnySampler::PredictorCorrector(s) => s.timestep(),
            AnySampler::ProbabilityFlow(s) => s.timestep(),
        }
    }

    fn step(&mut self, x: &mut [f32], output: &[f32], rng: &mut Rng) -> Result<()> {
        match self {
            AnySampler::Ddpm(s) => s.step(x, output, rng),
            AnySampler::Ddim(s) => s.step(x, output, rng),
            AnySampler::DpmSolverPp2m(s) => s.step(x, output, rng),
            AnySampler::PredictorCorrector(s) => s.step(x, output, rng),
            AnySampler::ProbabilityFlow(s) => s.step(x, output, rng),
        }
    }

    fn num_steps(&self) -> usize {
        match self {
            AnySampler::Ddpm(s) => s.num_steps(),
            AnySampler::Ddim(s) => s.num_steps(),
            AnySampler::DpmSolverPp2m(s) => s.num_steps(),
            AnySampler::PredictorCorrector(s) => s.num_steps(),
            AnySampler::ProbabilityFlow(s) => s.num_steps(),
        }
    }

    fn steps_taken(&self) -> usize {
        match self {
            AnySampler::Ddpm(s) => s.steps_taken(),
            AnySampler::Ddim(s) => s.steps_taken(),
            AnySampler::DpmSolverPp2m(s) => s.steps_taken(),
            AnySampler::PredictorCorrector(s) => s.steps_taken(),
            AnySampler::ProbabilityFlow(s) => s.steps_taken(),
        }
    }
}

/// Runs `sampler` to the end: `x` holds the initial noise `x_T` on entry and the sample on
/// return; `output` is the caller's buffer for the network output (same length as `x`).
/// `network(x, t, output)` evaluates the model at training timestep `t`.
pub fn run<S, E, F>(
    sampler: &mut S,
    x: &mut [f32],
    output: &mut [f32],
    rng: &mut Rng,
    mut network: F,
) -> core::result::Result<(), E>
where
    S: Sampler + ?Sized,
    E: From<Error>,
    F: FnMut(&[f32], u32, &mut [f32]) -> core::result::Result<(), E>,
{
    while let Some(t) = sampler.timestep() {
        network(x, t, output)?;
        sampler.step(x, output, rng)?;
    }
    Ok(())
}

/// Checks a timestep list against a schedule: non-empty, strictly decreasing, in range, and
/// every entry noisier than clean data (`alpha_bar < 1`).
pub(crate) fn validate_timesteps(schedule: &Schedule<'_>, timesteps: &[u32]) -> Result<()> {
    let in_range = timesteps
        .iter()
        .all(|&t| (t as usize) < schedule.train_steps() && schedule.alpha_bar(t as usize) < 1.0);
    let descending = timesteps.windows(2).all(|w| w[1] < w[0]);
    if timesteps.is_empty() || !in_range || !descending {
        return Err(Error::InvalidParameter(
            "timesteps must be non-empty, strictly decreasing, < T and have alpha_bar < 1",
        ));
    }
    Ok(())
}

pub(crate) fn validate_clip(clip_sample: Option<f32>) -> Result<()> {
    match clip_sample {
        Some(r) if !(r > 0.0 && r.is_finite()) => Err(Error::InvalidParameter(
            "clip_sample must be a positive finite radius",
        )),
        _ => Ok(()),
    }
}

/// Signal and noise levels of one step: from timestep `timesteps[index]` to the next entry
/// (or to clean data after the last one). An `alpha_bar` of 0 becomes
/// [`MIN_ALPHA_BAR`](crate::schedule::MIN_ALPHA_BAR).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepLevels {
    pub alpha_bar: f64,
    pub alpha_bar_prev: f64,
    pub a: f64,
    pub s: f64,
    pub a_prev: f64,
    pub s_prev: f64,
    pub is_last: bool,
}

impl StepLevels {
    pub fn new(schedule: &Schedule<'_>, timesteps: &[u32], index: usize) -> Self {
        let alpha_bar = nonzero_alpha_bar(schedule.alpha_bar(timesteps[index] as usize));
        let prev = previous(timesteps, index);
        let alpha_bar_prev = nonzero_alpha_bar(schedule.alpha_bar_at(prev));
        StepLevels {
            alpha_bar,
            alpha_bar_prev,
            a: libm::sqrt(alpha_bar),
            s: libm::sqrt(1.0 - alpha_bar),
            a_prev: libm::sqrt(alpha_bar_prev),
            s_prev: libm::sqrt(1.0 - alpha_bar_prev),
            is_last: prev.is_none(),
        }
    }
}

/// Splits a network output into `(x0, eps)` at levels `(a, s)`, clamping x0 to
/// `[-clip, clip]` when asked and then recomputing eps from the clamped x0 (so the update stays
/// on the line through `x_t`).
#[inline]
pub(crate) fn denoise(
    prediction: Prediction,
    clip_sample: Option<f32>,
    x_t: f32,
    output: f32,
    a: f32,
    s: f32,
) -> (f32, f32) {
    let (x0, eps) = prediction.to_x0_eps(x_t, output, a, s);
    match clip_sample {
        Some(radius) if x0 > radius || x0 < -radius => {
            let clamped = x0.clamp(-radius, radius);
            (clamped, (x_t - a * clamped) / s)
        }
        _ => (x0, eps),
    }
}

/// Checks the buffers of one step and that the sampler is not finished.
pub(crate) fn check_step(
    x: &[f32],
    output: &[f32],
    steps_taken: usize,
    steps: usize,
) -> Result<()> {
    if steps_taken >= steps {
        return Err(Error::Finished);
    }
    crate::error::check_len("network output", x.len(), output.len())
}
