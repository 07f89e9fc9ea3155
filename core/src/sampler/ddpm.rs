//! DDPM ancestral sampling (Ho et al. 2020).

use super::{check_step, denoise, validate_clip, validate_timesteps, Sampler, StepLevels};
use crate::error::Result;
use crate::loss_weight::ReverseVariance;
use crate::prediction::Prediction;
use crate::rng::Rng;
use crate::schedule::Schedule;

/// DDPM ancestral sampler:
/// `x_{t-1} = (x_t - beta_t / s_t * eps) / sqrt(1 - beta_t) + rho_t z`.
///
/// Over a subset of timesteps, `beta_t` is the effective `1 - alpha_bar_t / alpha_bar_prev`
/// between consecutive entries. `rho_t^2` is `beta_t` ([`ReverseVariance::Beta`]) or the
/// posterior variance ([`ReverseVariance::Posterior`]); the last step adds no noise.
#[derive(Debug, Clone)]
pub struct Ddpm<'a> {
    schedule: Schedule<'a>,
    timesteps: &'a [u32],
    prediction: Prediction,
    variance: ReverseVariance,
    clip_sample: Option<f32>,
    index: usize,
}

impl<'a> Ddpm<'a> {
    /// A DDPM sampler over `timesteps` (descending; all `T` steps for the original algorithm).
    pub fn new(
        schedule: Schedule<'a>,
        timesteps: &'a [u32],
        prediction: Prediction,
        variance: ReverseVariance,
        clip_sample: Option<f32>,
    ) -> Result<Self> {
        validate_timesteps(&schedule, timesteps)?;
        validate_clip(clip_sample)?;
        Ok(Ddpm {
            schedule,
            timesteps,
            prediction,
            variance,
            clip_sample,
            index: 0,
        })
    }
}

impl Sampler for Ddpm<'_> {
    fn timestep(&self) -> Option<u32> {
        self.timesteps.get(self.index).copied()
    }

    fn step(&mut self, x: &mut [f32], output: &[f32], rng: &mut Rng) -> Result<()> {
        check_step(x, output, self.index, self.timesteps.len())?;
        let levels = StepLevels::new(&self.schedule, self.timesteps, self.index);
        let alpha = levels.alpha_bar / levels.alpha_bar_prev;
        let beta = 1.0 - alpha;
        let rho = if levels.is_last {
            0.0
        } else {
            match self.variance {
                ReverseVariance::Beta => libm::sqrt(beta),
                ReverseVariance::Posterior => {
                    libm::sqrt(beta * (1.0 - levels.alpha_bar_prev) / (1.0 - levels.alpha_bar))
                }
            }
        };
        let eps_coefficient = (beta / levels.s) as f32;
        let inv_sqrt_alpha = (1.0 / libm::sqrt(alpha)) as f32;
        let (a, s, rho) = (levels.a as f32, levels.s as f32, rho as f32);
        for (value, &out) in x.iter_mut().zip(output) {
            let (_, eps) = denoise(self.prediction, self.clip_sample, *value, out, a, s);
            let mean = (*value - eps_coefficient * eps) * inv_sqrt_alpha;
            *value = if rho > 0.0 {
                mean + rho * rng.normal()
            } else {
                mean
            };
        }
        self.index += 1;
        Ok(())
    }

    fn num_steps(&self) -> usize {
        self.timesteps.len()
    }

    fn steps_taken(&self) -> usize {
        self.index
    }
}
