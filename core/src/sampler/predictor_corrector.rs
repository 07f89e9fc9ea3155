//! The predictor-corrector sampler of the variance-exploding SDE (Song et al. 2021, "Score-Based
//! Generative Modeling through Stochastic Differential Equations", Algorithms 2 and 4).

use super::{validate_clip, Sampler};
use crate::error::{check_len, Error, Result};
use crate::noise_levels::NoiseLevels;
use crate::rng::Rng;

/// Predictor-corrector sampling over noise levels `sigma_{l_0} > sigma_{l_1} > ... ` of a
/// [`NoiseLevels`] table, noisiest first, starting from `x ~ N(0, sigma_max^2 I)`.
///
/// At each level `sigma`, `M` Langevin corrector steps, then one reverse diffusion predictor
/// step to the next level `sigma'` (0 after the last):
/// - corrector: `x <- x + e g + sqrt(2 e) z` with the score `g = -eps / sigma`, `z ~ N(0, I)`
///   and the step `e = 2 (r |z| / |g|)^2` that holds the signal-to-noise ratio `r`
///   (`e = 0` when `g = 0`);
/// - predictor: `x <- x + (sigma^2 - sigma'^2) g + sqrt(sigma^2 - sigma'^2) z`; the last one
///   adds no noise and returns the mean, Tweedie's `x - sigma eps` (the paper's denoised
///   output), clamped when [`with_clip_sample`](Self::with_clip_sample) sets a radius.
///
/// The norms `|z|` and `|g|` are taken over the whole slice that [`step`](Sampler::step) is
/// given. One sample per slice keeps every sample independent of its batch mates (the
/// reference code, which averages each norm over its batch, with a batch of one); that suits
/// images, whose norms concentrate. In a few dimensions a single sample's score can come near
/// zero and its step `e` explode: there hand it the whole batch, whose norms give the
/// reference's step. The corrector draws its noise twice from a copy of the generator (once
/// for `|z|`, once to step), so it needs no buffer.
///
/// As a [`Sampler`], its timestep is the current level's index in the table, and the network
/// output it takes is the noise prediction `eps = -sigma score`. It takes
/// `(M + 1) x levels` network evaluations.
#[derive(Debug, Clone)]
pub struct PredictorCorrector<'a> {
    noise: NoiseLevels,
    levels: &'a [u32],
    corrector_steps: usize,
    snr: f64,
    clip_sample: Option<f32>,
    index: usize,
    corrections: usize,
}

impl<'a> PredictorCorrector<'a> {
    /// A sampler over `levels` (indices into `noise`, strictly decreasing, for example from
    /// [`NoiseLevels::spread`]) with `corrector_steps` corrector steps per level (0: the
    /// predictor alone, reverse diffusion) at signal-to-noise ratio `snr` (the paper used 0.16
    /// on CIFAR-10 at `M = 1`).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for invalid levels or an `snr` that is not positive and
    /// finite.
    pub fn new(
        noise: NoiseLevels,
        levels: &'a [u32],
        corrector_steps: usize,
        snr: f64,
    ) -> Result<Self> {
        noise.validate(levels)?;
        if !(snr > 0.0 && snr.is_finite()) {
            return Err(Error::InvalidParameter(
                "the corrector's signal-to-noise ratio must be positive and finite",
            ));
        }
        Ok(PredictorCorrector {
            noise,
            levels,
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

    /// The noise level at which the network must be evaluated next, or `None` when finished.
    pub fn sigma(&self) -> Option<f64> {
        self.timestep()
            .map(|level| self.noise.sigma(level as usize))
    }

    fn correct(&mut self, x: &mut [f32], eps: &[f32], sigma: f64, rng: &mut Rng) {
        let eps_squared: f64 = eps.iter().map(|&e| f64::from(e) * f64::from(e)).sum();
        let mut preview = rng.clone();
        let noise_squared: f64 = (0..x.len())
            .map(|_| {
                let z = f64::from(preview.normal());
                z * z
            })
            .sum();
        // |g|^2 = |eps|^2 / sigma^2.
        let step = if eps_squared > 0.0 {
            2.0 * self.snr * self.snr * noise_squared * sigma * sigma / eps_squared
        } else {
            0.0
        };
        let (drift, noise) = ((-step / sigma) as f32, libm::sqrt(2.0 * step) as f32);
        for (value, &e) in x.iter_mut().zip(eps) {
            *value += drift * e + noise * rng.normal();
        }
    }

    fn predict(&mut self, x: &mut [f32], eps: &[f32], sigma: f64, rng: &mut Rng) {
        let next = self.levels.get(self.index + 1);
        let next_sigma = next.map_or(0.0, |&level| self.noise.sigma(level as usize));
        let variance = sigma * sigma - next_sigma * next_sigma;
        let drift = (-variance / sigma) as f32;
        match next {
            Some(_) => {
                let noise = libm::sqrt(variance) as f32;
                for (value, &e) in x.iter_mut().zip(eps) {
                    *value += drift * e + noise * rng.normal();
                }
            }
            None => {
                for (value, &e) in x.iter_mut().zip(eps) {
                    *value += drift * e;
                    if let Some(radius) = self.clip_sample {
                        *value = value.clamp(-radius, radius);
                    }
                }
            }
        }
    }
}

impl Sampler for PredictorCorrector<'_> {
    fn timestep(&self) -> Option<u32> {
        self.levels.get(self.index).copied()
    }

    fn step(&mut self, x: &mut [f32], output: &[f32], rng: &mut Rng) -> Result<()> {
        let sigma = self.sigma().ok_or(Error::Finished)?;
        check_len("network output", x.len(), output.len())?;
        if self.corrections < self.corrector_steps {
            self.correct(x, output, sigma, rng);
            self.corrections += 1;
        } else {
            self.predict(x, output, sigma, rng);
            self.index += 1;
            self.corrections = 0;
        }
        Ok(())
    }

    fn num_steps(&self) -> usize {
        self.levels.len() * (self.corrector_steps + 1)
    }

    fn steps_taken(&self) -> usize {
        self.index * (self.corrector_steps + 1) + self.corrections
    }
}
