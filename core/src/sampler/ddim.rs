//! DDIM (Song, Meng & Ermon 2021) and its deterministic inversion.

use super::{check_step, denoise, validate_clip, validate_timesteps, Sampler, StepLevels};
use crate::error::{Error, Result};
use crate::prediction::Prediction;
use crate::rng::Rng;
use crate::schedule::{nonzero_alpha_bar, Schedule};

/// DDIM sampler:
/// `x_prev = a_prev x0 + sqrt(1 - alpha_bar_prev - sigma^2) eps + sigma z`, with
/// `sigma = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev)`.
///
/// `eta = 0` is the deterministic probability-flow sampler; `eta = 1` matches DDPM's variance.
#[derive(Debug, Clone)]
pub struct Ddim<'a> {
    schedule: Schedule<'a>,
    timesteps: &'a [u32],
    prediction: Prediction,
    eta: f32,
    clip_sample: Option<f32>,
    index: usize,
}

impl<'a> Ddim<'a> {
    /// A DDIM sampler over `timesteps` (descending). `eta` must be finite and >= 0.
    pub fn new(
        schedule: Schedule<'a>,
        timesteps: &'a [u32],
        prediction: Prediction,
        eta: f32,
        clip_sample: Option<f32>,
    ) -> Result<Self> {
        validate_timesteps(&schedule, timesteps)?;
        validate_clip(clip_sample)?;
        if !(eta >= 0.0 && eta.is_finite()) {
            return Err(Error::InvalidParameter("eta must be finite and >= 0"));
        }
        Ok(Ddim {
            schedule,
            timesteps,
            prediction,
            eta,
            clip_sample,
            index: 0,
        })
    }
}

impl Sampler for Ddim<'_> {
    fn timestep(&self) -> Option<u32> {
        self.timesteps.get(self.index).copied()
    }

    fn step(&mut self, x: &mut [f32], output: &[f32], rng: &mut Rng) -> Result<()> {
        check_step(x, output, self.index, self.timesteps.len())?;
        let levels = StepLevels::new(&self.schedule, self.timesteps, self.index);
        let sigma = f64::from(self.eta)
            * libm::sqrt((1.0 - levels.alpha_bar_prev) / (1.0 - levels.alpha_bar))
            * libm::sqrt((1.0 - levels.alpha_bar / levels.alpha_bar_prev).max(0.0));
        let direction = libm::sqrt((1.0 - levels.alpha_bar_prev - sigma * sigma).max(0.0));
        let (a, s) = (levels.a as f32, levels.s as f32);
        let (a_prev, direction, sigma) = (levels.a_prev as f32, direction as f32, sigma as f32);
        for (value, &out) in x.iter_mut().zip(output) {
            let (x0, eps) = denoise(self.prediction, self.clip_sample, *value, out, a, s);
            let mean = a_prev * x0 + direction * eps;
            *value = if sigma > 0.0 {
                mean + sigma * rng.normal()
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

/// Deterministic DDIM inversion: walks the same timestep list backwards, from clean data to
/// `x_T`, so that DDIM with `eta = 0` over the same timesteps maps the result back (exactly in
/// the limit of many steps).
///
/// Step `k` moves from the level of `timesteps[N - k]` (clean data for `k = 0`) to
/// `timesteps[N - 1 - k]`, with the network evaluated at the current level (at the smallest
/// timestep for the first step, where the input is clean).
#[derive(Debug, Clone)]
pub struct DdimInversion<'a> {
    schedule: Schedule<'a>,
    timesteps: &'a [u32],
    prediction: Prediction,
    index: usize,
}

impl<'a> DdimInversion<'a> {
    /// An inversion over `timesteps` (given descending, as for sampling).
    pub fn new(
        schedule: Schedule<'a>,
        timesteps: &'a [u32],
        prediction: Prediction,
    ) -> Result<Self> {
        validate_timesteps(&schedule, timesteps)?;
        Ok(DdimInversion {
            schedule,
            timesteps,
            prediction,
            index: 0,
        })
    }

    fn level(&self, t: usize) -> (f32, f32) {
        let alpha_bar = nonzero_alpha_bar(self.schedule.alpha_bar(t));
        (
            libm::sqrt(alpha_bar) as f32,
            libm::sqrt(1.0 - alpha_bar) as f32,
        )
    }
}

impl Sampler for DdimInversion<'_> {
    fn timestep(&self) -> Option<u32> {
        let n = self.timesteps.len();
        if self.index >= n {
            return None;
        }
        // The current level, or the smallest timestep while x is still clean.
        Some(self.timesteps[(n - self.index).min(n - 1)])
    }

    fn step(&mut self, x: &mut [f32], output: &[f32], _rng: &mut Rng) -> Result<()> {
        let n = self.timesteps.len();
        check_step(x, output, self.index, n)?;
        let evaluated = self.timesteps[(n - self.index).min(n - 1)] as usize;
        let target = self.timesteps[n - 1 - self.index] as usize;
        let (a, s) = self.level(evaluated);
        let (a_next, s_next) = self.level(target);
        let clean = self.index == 0;
        for (value, &out) in x.iter_mut().zip(output) {
            let (x0, eps) = self.prediction.to_x0_eps(*value, out, a, s);
            // At the clean start the input is x0 itself; only eps comes from the network.
            let x0 = if clean { *value } else { x0 };
            *value = a_next * x0 + s_next * eps;
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
