//! The probability flow ODE of the variance-exploding SDE, solved with Heun's method (Song et
//! al. 2021; the second-order sampler of Karras et al. 2022, "Elucidating the Design Space").

use super::{validate_clip, Sampler};
use crate::error::{check_len, Error, Result};
use crate::noise_levels::NoiseLevels;
use crate::rng::Rng;

/// Deterministic sampling along the probability flow `dx / dsigma = -sigma score(x, sigma) =
/// eps(x, sigma)` over noise levels `sigma_{l_0} > sigma_{l_1} > ...` of a [`NoiseLevels`]
/// table, noisiest first, starting from `x ~ N(0, sigma_max^2 I)`.
///
/// Each step from `sigma` to the next level `sigma'` is a Heun step: an Euler step
/// `x' = x + (sigma' - sigma) eps(x, sigma)`, then the correction
/// `x <- x + (sigma' - sigma) (eps(x, sigma) + eps(x', sigma')) / 2`. The last step, to
/// `sigma = 0`, is Euler's alone: `x - sigma eps`, the x0 estimate, clamped when
/// [`with_clip_sample`](Self::with_clip_sample) sets a radius. `N` levels take `2N - 1`
/// network evaluations. The first slope waits in the caller's scratch (one element per
/// element of `x`). No noise is drawn.
///
/// As a [`Sampler`], its timestep is the index in the table of the level where the network
/// is evaluated next, and the network output it takes is the noise prediction
/// `eps = -sigma score`.
#[derive(Debug)]
pub struct ProbabilityFlowHeun<'a> {
    noise: NoiseLevels,
    levels: &'a [u32],
    slope: &'a mut [f32],
    clip_sample: Option<f32>,
    index: usize,
    correcting: bool,
}

impl<'a> ProbabilityFlowHeun<'a> {
    /// A sampler over `levels` (indices into `noise`, strictly decreasing), keeping the first
    /// slope of each step in `scratch`, which must have the length of the samples given to
    /// [`step`](Sampler::step).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for invalid levels.
    pub fn new(noise: NoiseLevels, levels: &'a [u32], scratch: &'a mut [f32]) -> Result<Self> {
        noise.validate(levels)?;
        Ok(ProbabilityFlowHeun {
            noise,
            levels,
            slope: scratch,
            clip_sample: None,
            index: 0,
            correcting: false,
        })
    }

    /// Clamps the final x0 estimate to `[-r, r]` (`None`: no clamp).
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
}

impl Sampler for ProbabilityFlowHeun<'_> {
    fn timestep(&self) -> Option<u32> {
        let position = self.index + usize::from(self.correcting);
        if self.index < self.levels.len() {
            self.levels.get(position).copied()
        } else {
            None
        }
    }

    fn step(&mut self, x: &mut [f32], output: &[f32], _rng: &mut Rng) -> Result<()> {
        if self.timestep().is_none() {
            return Err(Error::Finished);
        }
        check_len("network output", x.len(), output.len())?;
        check_len("scratch", x.len(), self.slope.len())?;
        let sigma = self.noise.sigma(self.levels[self.index] as usize);
        let next = self.levels.get(self.index + 1);
        let next_sigma = next.map_or(0.0, |&level| self.noise.sigma(level as usize));
        let h = next_sigma - sigma;
        if self.correcting {
            let half = (0.5 * h) as f32;
            for ((value, &e), &first) in x.iter_mut().zip(output).zip(self.slope.iter()) {
                *value += half * (e - first);
            }
            self.correcting = false;
            self.index += 1;
        } else if next.is_none() {
            let h = h as f32;
            for (value, &e) in x.iter_mut().zip(output) {
                *value += h * e;
                if let Some(radius) = self.clip_sample {
                    *value = value.clamp(-radius, radius);
                }
            }
            self.index += 1;
        } else {
            let h = h as f32;
            for ((value, &e), first) in x.iter_mut().zip(output).zip(self.slope.iter_mut()) {
                *first = e;
                *value += h * e;
            }
            self.correcting = true;
        }
        Ok(())
    }

    fn num_steps(&self) -> usize {
        2 * self.levels.len() - 1
    }

    fn steps_taken(&self) -> usize {
        2 * self.index + usize::from(self.correcting)
    }
}
