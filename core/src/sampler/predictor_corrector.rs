//! The predictor-corrector sampler of the variance-exploding SDE (Song et al. 2021, "Score-Based
//! Generative Modeling through Stochastic Differential Equations", Algorithms 2 and 4).

use super::{validate_clip, validate_timesteps, Sampler};
use crate::error::{check_len, Error, Result};
use crate::prediction::Prediction;
use crate::rng::Rng;
use crate::schedule::{nonzero_alpha_bar, Schedule};

/// Predictor-corrector sampling over timesteps `t_0 > t_1 > ...` of a schedule, in its
/// variance-exploding form: at timestep `t` the sample is `x0 + sigma_t z` with
/// `sigma_t = s_t / a_t` ([`Schedule::ve_sigma`]), which the network sees as `a_t` times that,
/// the variance-preserving `x_t`. The state the caller holds, and the network's input, is that
/// `x_t`, so the sampler runs in the same loop as the others; it starts, like them, from
/// `x ~ N(0, I)` (the variance-exploding `N(0, (1 + sigma_max^2) I)`, for
/// [`BetaSchedule::VarianceExploding`](crate::BetaSchedule::VarianceExploding) about NCSN's
/// `N(0, sigma_max^2 I)`).
///
/// At each timestep, `M` Langevin corrector steps, then one reverse diffusion predictor step to
/// the next timestep (`sigma' = 0` after the last), on the variance-exploding sample
/// `y = x / a_t` with the score `g = -eps / sigma`:
/// - corrector: `y <- y + e g + sqrt(2 e) w`, `w ~ N(0, I)`, with the step
///   `e = 2 (r |w| / |g|)^2` that holds the signal-to-noise ratio `r` (`e = 0` when that is
///   not finite: `g = 0`);
/// - predictor: `y <- y + (sigma^2 - sigma'^2) g + sqrt(sigma^2 - sigma'^2) w`; the last one
///   adds no noise and returns the mean, Tweedie's x0 estimate `y - sigma eps` (the paper's
///   denoised output), clamped when [`with_clip_sample`](Self::with_clip_sample) sets a radius.
///
/// Each update is applied to `x` directly (`x = a_t y`), as one multiply-add per element.
/// The norms `|w|` and `|g|` are taken over the whole slice that [`step`](Sampler::step) is
/// given. One sample per slice keeps every sample independent of its batch mates (the
/// reference code, which averages each norm over its batch, with a batch of one); that suits
/// images, whose norms concentrate. In a few dimensions a single sample's score can come near
/// zero and its step `e` explode, and the state-dependent step biases the chain: there hand it
/// the whole batch, whose norms give the reference's step. The corrector draws its noise twice
/// from a copy of the generator (once for `|w|`, once to step), so it needs no buffer.
/// `(M + 1) x timesteps` network evaluations.
#[derive(Debug, Clone)]
pub struct PredictorCorrector<'a> {
    schedule: Schedule<'a>,
    timesteps: &'a [u32],
    prediction: Prediction,
    corrector_steps: usize,
    snr: f64,
    clip_sample: Option<f32>,
    index: usize,
    corrections: usize,
}

/// `(a_t, s_t, sigma_t)` of timestep `t`; `(1, 0, 0)` for clean data (`None`).
pub(super) fn ve_levels(schedule: &Schedule<'_>, t: Option<u32>) -> (f64, f64, f64) {
    match t {
        None => (1.0, 0.0, 0.0),
        Some(t) => {
            let alpha_bar = nonzero_alpha_bar(schedule.alpha_bar(t as usize));
            let (a, s) = (libm::sqrt(alpha_bar), libm::sqrt(1.0 - alpha_bar));
            (a, s, s / a)
        }
    }
}

impl<'a> PredictorCorrector<'a> {
    /// A sampler over `timesteps` (strictly decreasing, below `T`, each with
    /// `alpha_bar < 1`) for a network predicting `prediction`, with `corrector_steps`
    /// corrector steps per timestep (0: the predictor alone, reverse diffusion) at
    /// signal-to-noise ratio `snr` (the paper used 0.16 on CIFAR-10 at `M = 1`).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for invalid timesteps or an `snr` that is not positive and
    /// finite.
    pub fn new(
        schedule: Schedule<'a>,
        timesteps: &'a [u32],
        prediction: Prediction,
        corrector_steps: usize,
        snr: f64,
    ) -> Result<Self> {
        validate_timesteps(&schedule, timesteps)?;
        if !(snr > 0.0 && snr.is_finite()) {
            return Err(Error::InvalidParameter(
                "the corrector's signal-to-noise ratio must be positive and finite",
            ));
        }
        Ok(PredictorCorrector {
            schedule,
            timesteps,
            prediction,
            corrector_steps,
            snr,
            clip_sample: None,
            index: 0,
            corrections: 0,
        })
    }

    /// Clamps the final denoised output to `[-r, r]` (`None`: no clamp).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `r` is not positive and finite.
    pub fn with_clip_sample(mut self, clip_sample: Option<f32>) -> Result<Self> {
        validate_clip(clip_sample)?;
        self.clip_sample = clip_sample;
        Ok(self)
    }

    /// `|eps|^2` of the noise prediction that `output` gives for `x` at `(a, s)`.
    fn eps_squared(&self, x: &[f32], output: &[f32], a: f32, s: f32) -> f64 {
        x.iter()
            .zip(output)
            .map(|(&v, &o)| {
                let e = f64::from(self.prediction.to_x0_eps(v, o, a, s).1);
                e * e
            })
            .sum()
    }
}

impl Sampler for PredictorCorrector<'_> {
    fn timestep(&self) -> Option<u32> {
        self.timesteps.get(self.index).copied()
    }

    fn step(&mut self, x: &mut [f32], output: &[f32], rng: &mut Rng) -> Result<()> {
        let t = self.timestep().ok_or(Error::Finished)?;
        check_len("network output", x.len(), output.len())?;
        let (a, s, sigma) = ve_levels(&self.schedule, Some(t));
        let (a32, s32) = (a as f32, s as f32);
        let prediction = self.prediction;
        if self.corrections < self.corrector_steps {
            // y += e g + sqrt(2e) w with g = -eps / sigma, as x = a y.
            let eps_squared = self.eps_squared(x, output, a32, s32);
            let mut preview = rng.clone();
            let noise_squared: f64 = (0..x.len())
                .map(|_| {
                    let w = f64::from(preview.normal());
                    w * w
                })
                .sum();
            let e = 2.0 * self.snr * self.snr * noise_squared * sigma * sigma / eps_squared;
            // A zero (or vanishing) score gives no finite step: take none.
            let e = if e.is_finite() { e } else { 0.0 };
            let (drift, noise) = ((-a * e / sigma) as f32, (a * libm::sqrt(2.0 * e)) as f32);
            for (value, &o) in x.iter_mut().zip(output) {
                let eps = prediction.to_x0_eps(*value, o, a32, s32).1;
                *value += drift * eps + noise * rng.normal();
            }
            self.corrections += 1;
            return Ok(());
        }
        // y' = y - (sigma^2 - sigma'^2) / sigma eps + sqrt(sigma^2 - sigma'^2) w, x' = a' y'.
        let next = self.timesteps.get(self.index + 1).copied();
        let (a_next, _, sigma_next) = ve_levels(&self.schedule, next);
        let variance = sigma * sigma - sigma_next * sigma_next;
        let keep = (a_next / a) as f32;
        let drift = (-a_next * variance / sigma) as f32;
        let noise = (a_next * libm::sqrt(variance.max(0.0))) as f32;
        for (value, &o) in x.iter_mut().zip(output) {
            let eps = prediction.to_x0_eps(*value, o, a32, s32).1;
            *value = keep * *value + drift * eps;
            match next {
                Some(_) => *value += noise * rng.normal(),
                None => {
                    if let Some(radius) = self.clip_sample {
                        *value = value.clamp(-radius, radius);
                    }
                }
            }
        }
        self.index += 1;
        self.corrections = 0;
        Ok(())
    }

    fn num_steps(&self) -> usize {
        self.timesteps
            .len()
            .saturating_mul(self.corrector_steps.saturating_add(1))
    }

    fn steps_taken(&self) -> usize {
        self.index
            .saturating_mul(self.corrector_steps.saturating_add(1))
            .saturating_add(self.corrections)
    }
}
