//! Annealed Langevin dynamics for a score model (Song & Ermon 2019, NCSN), and NCSNv2's rule
//! for its step size (Song & Ermon 2020).

use super::{validate_clip, Sampler};
use crate::error::{check_len, Error, Result};
use crate::noise_levels::NoiseLevels;
use crate::rng::Rng;

/// Annealed Langevin dynamics over `L` geometric noise levels
/// `sigma_i = sigma_max (sigma_min / sigma_max)^(i / (L - 1))`, noisiest first, `K` steps per
/// level: `x <- x + alpha_i / 2 * score(x, sigma_i) + sqrt(alpha_i) z`,
/// `alpha_i = eps sigma_i^2 / sigma_L^2` (`sigma_L = sigma_min`; NCSN's notation: NCSNv2's
/// code writes the same update with `eps / 2`).
///
/// The score is that of the variance-exploding marginal `x = x0 + sigma n`. With
/// `final_denoise`, one last evaluation at `sigma_min` applies Tweedie's formula
/// `x <- x + sigma_min^2 score` and removes the remaining noise (as in NCSNv2); that output is
/// an x0 estimate, clamped like the other samplers' when [`with_clip_sample`](Self::with_clip_sample)
/// sets a radius.
///
/// As a [`Sampler`], its timestep is the index of the current level in
/// [`noise_levels`](Self::noise_levels) (0 for `sigma_min`), where a noise-conditional network
/// is evaluated, and the network output it takes is the noise prediction
/// `eps = -sigma score`. [`step_with_score`](Self::step_with_score) takes the score itself.
/// For a variance-preserving eps network, evaluate at the timestep `t` with the nearest
/// `Schedule::ve_sigma(t)` (see [`Schedule::timestep_for_ve_sigma`](crate::Schedule::timestep_for_ve_sigma))
/// on the input `a_t x`: its eps is the variance-exploding one at `sigma_t`.
#[derive(Debug, Clone)]
pub struct AnnealedLangevin {
    noise: NoiseLevels,
    steps_per_level: usize,
    step_size: f64,
    final_denoise: bool,
    clip_sample: Option<f32>,
    taken: usize,
}

impl AnnealedLangevin {
    /// A sampler; requires `sigma_max >= sigma_min > 0`, `levels >= 1`, `steps_per_level >= 1`
    /// and `step_size > 0` (NCSN used 2e-5 with `sigma_min = 0.01`). A single level runs at
    /// `sigma_max`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the rule.
    pub fn new(
        sigma_max: f64,
        sigma_min: f64,
        levels: usize,
        steps_per_level: usize,
        step_size: f64,
        final_denoise: bool,
    ) -> Result<Self> {
        let valid = sigma_min > 0.0
            && sigma_max >= sigma_min
            && levels >= 1
            && u32::try_from(levels).is_ok()
            && steps_per_level >= 1
            && step_size > 0.0
            && step_size.is_finite();
        if !valid {
            return Err(Error::InvalidParameter(
                "Langevin needs sigma_max >= sigma_min > 0, levels >= 1, steps >= 1, step size > 0",
            ));
        }
        let noise = if levels == 1 {
            NoiseLevels::new(sigma_max, sigma_max, 1)?
        } else {
            NoiseLevels::new(sigma_min, sigma_max, levels as u32)?
        };
        Ok(AnnealedLangevin {
            noise,
            steps_per_level,
            step_size,
            final_denoise,
            clip_sample: None,
            taken: 0,
        })
    }

    /// Clamps the final denoising step's output to `[-r, r]` (`None`: no clamp; without
    /// `final_denoise` there is no x0 estimate to clamp).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `r` is not positive and finite.
    pub fn with_clip_sample(mut self, clip_sample: Option<f32>) -> Result<Self> {
        validate_clip(clip_sample)?;
        self.clip_sample = clip_sample;
        Ok(self)
    }

    /// The noise levels it anneals over (level 0 is `sigma_min`, run last).
    pub fn noise_levels(&self) -> NoiseLevels {
        self.noise
    }

    /// Number of score evaluations of the whole run.
    pub fn num_steps(&self) -> usize {
        self.noise.len() * self.steps_per_level + usize::from(self.final_denoise)
    }

    /// Number of steps already taken.
    pub fn steps_taken(&self) -> usize {
        self.taken
    }

    /// The index in [`noise_levels`](Self::noise_levels) of the level of the next step, or
    /// `None` when finished.
    pub fn level(&self) -> Option<usize> {
        if self.taken >= self.num_steps() {
            return None;
        }
        let from_noisiest = (self.taken / self.steps_per_level).min(self.noise.len() - 1);
        Some(self.noise.len() - 1 - from_noisiest)
    }

    /// The noise level at which the score must be evaluated next, or `None` when finished.
    pub fn sigma(&self) -> Option<f64> {
        self.level().map(|level| self.noise.sigma(level))
    }

    /// Advances one step given `score` = the score of `x` at [`sigma`](Self::sigma).
    ///
    /// # Errors
    /// [`Error::Finished`] after the last step, [`Error::LengthMismatch`] when `score` and `x`
    /// differ in length.
    pub fn step_with_score(&mut self, x: &mut [f32], score: &[f32], rng: &mut Rng) -> Result<()> {
        self.advance(x, score.len(), |i| score[i], rng)
    }

    fn advance(
        &mut self,
        x: &mut [f32],
        len: usize,
        score: impl Fn(usize) -> f32,
        rng: &mut Rng,
    ) -> Result<()> {
        let sigma = self.sigma().ok_or(Error::Finished)?;
        check_len("score", x.len(), len)?;
        if self.taken >= self.noise.len() * self.steps_per_level {
            let scale = (sigma * sigma) as f32;
            for (i, value) in x.iter_mut().enumerate() {
                *value += scale * score(i);
                if let Some(radius) = self.clip_sample {
                    *value = value.clamp(-radius, radius);
                }
            }
        } else {
            let ratio = sigma / self.noise.sigma_min();
            let alpha = self.step_size * ratio * ratio;
            let (drift, noise) = ((alpha / 2.0) as f32, libm::sqrt(alpha) as f32);
            for (i, value) in x.iter_mut().enumerate() {
                *value += drift * score(i) + noise * rng.normal();
            }
        }
        self.taken += 1;
        Ok(())
    }
}

impl Sampler for AnnealedLangevin {
    fn timestep(&self) -> Option<u32> {
        self.level().map(|level| level as u32)
    }

    /// One step from the noise prediction `output = eps = -sigma score` at
    /// [`sigma`](AnnealedLangevin::sigma).
    fn step(&mut self, x: &mut [f32], output: &[f32], rng: &mut Rng) -> Result<()> {
        let sigma = self.sigma().ok_or(Error::Finished)?;
        let to_score = (-1.0 / sigma) as f32;
        self.advance(x, output.len(), |i| to_score * output[i], rng)
    }

    fn num_steps(&self) -> usize {
        AnnealedLangevin::num_steps(self)
    }

    fn steps_taken(&self) -> usize {
        self.taken
    }
}

/// NCSNv2's Langevin step size (rule 3 of [`noise_levels`](crate::noise_levels)), in the `eps`
/// of [`AnnealedLangevin`], for levels of ratio `gamma` down to `sigma_min` and
/// `steps_per_level` steps per level: the `eps` whose chain, started from one level's marginal
/// of a point mass, ends a level with the variance of that level most nearly. With
/// `c = eps / (2 sigma_min^2)` that variance ratio is
/// `(1 - c)^(2K) (gamma^2 - 2 / (2 - c)) + 2 / (2 - c)`, which exceeds 1 for every `c` in
/// `(0, 1)`; the rule minimises it (golden-section search over `log c`). NCSNv2's CIFAR-10
/// settings (`gamma` 1.0376, `K` 5, `sigma_min` 0.01) give `eps` 1.24e-5, its published
/// 6.2e-6 in its own convention.
///
/// # Errors
/// [`Error::InvalidParameter`] unless `gamma > 1`, `sigma_min > 0` (both finite) and
/// `steps_per_level >= 1`.
pub fn ncsnv2_step_size(gamma: f64, sigma_min: f64, steps_per_level: usize) -> Result<f64> {
    let valid = gamma > 1.0
        && gamma.is_finite()
        && sigma_min > 0.0
        && sigma_min.is_finite()
        && steps_per_level >= 1;
    if !valid {
        return Err(Error::InvalidParameter(
            "the step size rule needs gamma > 1, sigma_min > 0 and steps per level >= 1",
        ));
    }
    let variance_ratio = |log_c: f64| {
        let c = libm::exp(log_c);
        let stationary = 2.0 / (2.0 - c);
        libm::pow(1.0 - c, 2.0 * steps_per_level as f64) * (gamma * gamma - stationary) + stationary
    };
    let (mut low, mut high) = (libm::log(1e-12), libm::log(0.999));
    let golden = (libm::sqrt(5.0) - 1.0) / 2.0;
    while high - low > 1e-10 {
        let left = high - golden * (high - low);
        let right = low + golden * (high - low);
        if variance_ratio(left) < variance_ratio(right) {
            high = right;
        } else {
            low = left;
        }
    }
    Ok(2.0 * sigma_min * sigma_min * libm::exp(0.5 * (low + high)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_denoised_estimate_is_clipped_and_bad_radii_are_refused() {
        let sampler = AnnealedLangevin::new(1.0, 0.5, 1, 1, 1e-3, true).unwrap();
        let mut clipped = sampler.clone().with_clip_sample(Some(1.0)).unwrap();
        let mut free = sampler.clone();
        let mut rng = Rng::new(0);
        let (mut a, mut b) = ([0.0f32; 3], [0.0f32; 3]);
        let score = [0.1f32, 0.2, -0.3];
        clipped
            .step_with_score(&mut a, &score, &mut rng.clone())
            .unwrap();
        free.step_with_score(&mut b, &score, &mut rng).unwrap();
        assert_eq!(a, b, "the Langevin step itself is not clipped");
        // The final step: x + sigma_min^2 score = x + 0.25 score.
        let big = [100.0f32, -100.0, 0.4];
        clipped
            .step_with_score(&mut a, &big, &mut Rng::new(1))
            .unwrap();
        free.step_with_score(&mut b, &big, &mut Rng::new(1))
            .unwrap();
        assert_eq!(a[0], 1.0);
        assert_eq!(a[1], -1.0);
        assert_eq!(a[2], b[2]);
        assert!(b[0] > 20.0 && b[1] < -20.0);
        for radius in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(sampler.clone().with_clip_sample(Some(radius)).is_err());
        }
    }

    #[test]
    fn ncsnv2_step_size_reproduces_cifar10_and_minimises_the_variance_gap() {
        // NCSNv2 on CIFAR-10: gamma 1.0376, K = 5, sigma_min 0.01, published step 6.2e-6 in its
        // convention (x + e g + sqrt(2e) z), 1.24e-5 in this sampler's (x + e/2 g + sqrt(e) z).
        let eps = ncsnv2_step_size(1.0376, 0.01, 5).unwrap();
        assert!((eps - 1.24e-5).abs() < 0.02e-5, "{eps}");
        // The variance ratio at the chosen step is below its value a little to either side.
        let ratio = |eps: f64, gamma: f64, k: i32| {
            let c = eps / (2.0 * 0.01 * 0.01);
            let stationary = 2.0 / (2.0 - c);
            (1.0 - c).powi(2 * k) * (gamma * gamma - stationary) + stationary
        };
        for (gamma, k) in [(1.0376, 5), (1.668, 100), (1.08, 1), (1.36, 20)] {
            let eps = ncsnv2_step_size(gamma, 0.01, k as usize).unwrap();
            let best = ratio(eps, gamma, k);
            assert!(best > 1.0);
            assert!(best <= ratio(eps * 0.9, gamma, k), "{gamma} {k}");
            assert!(best <= ratio(eps * 1.1, gamma, k), "{gamma} {k}");
        }
        // More steps per level: smaller steps.
        assert!(
            ncsnv2_step_size(1.08, 0.01, 100).unwrap() < ncsnv2_step_size(1.08, 0.01, 5).unwrap()
        );
        for (gamma, sigma, k) in [
            (1.0, 0.01, 5),
            (0.9, 0.01, 5),
            (1.1, 0.0, 5),
            (1.1, 0.01, 0),
            (f64::NAN, 0.01, 5),
        ] {
            assert!(
                ncsnv2_step_size(gamma, sigma, k).is_err(),
                "{gamma} {sigma} {k}"
            );
        }
    }
}
