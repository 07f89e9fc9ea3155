//! Annealed Langevin dynamics for a score model (Song & Ermon 2019, NCSN).

use super::validate_clip;
use crate::error::{check_len, Error, Result};
use crate::rng::Rng;

/// Annealed Langevin dynamics over `L` geometric noise levels
/// `sigma_i = sigma_max (sigma_min / sigma_max)^(i / (L - 1))`, `K` steps per level:
/// `x <- x + alpha_i / 2 * score(x, sigma_i) + sqrt(alpha_i) z`, `alpha_i = eps sigma_i^2 / sigma_L^2`.
///
/// The score is that of the variance-exploding marginal `x = x0 + sigma n`. With
/// `final_denoise`, one last evaluation at `sigma_min` applies Tweedie's formula
/// `x <- x + sigma_min^2 score` and removes the remaining noise (as in NCSNv2); that output is
/// an x0 estimate, clamped like the other samplers' when [`with_clip_sample`](Self::with_clip_sample)
/// sets a radius.
///
/// For a variance-preserving eps network, evaluate at the timestep `t` with the nearest
/// `Schedule::ve_sigma(t)` (see [`Schedule::timestep_for_ve_sigma`](crate::Schedule::timestep_for_ve_sigma)),
/// on the input `a_t x`, and use `score = -eps / sigma_t`.
#[derive(Debug, Clone)]
pub struct AnnealedLangevin {
    sigma_max: f64,
    sigma_min: f64,
    levels: usize,
    steps_per_level: usize,
    step_size: f64,
    final_denoise: bool,
    clip_sample: Option<f32>,
    taken: usize,
}

impl AnnealedLangevin {
    /// A sampler; requires `sigma_max >= sigma_min > 0`, `levels >= 1`, `steps_per_level >= 1`
    /// and `step_size > 0` (NCSN used 2e-5 with `sigma_min = 0.01`).
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
            && sigma_max.is_finite()
            && levels >= 1
            && steps_per_level >= 1
            && step_size > 0.0
            && step_size.is_finite();
        if !valid {
            return Err(Error::InvalidParameter(
                "Langevin needs sigma_max >= sigma_min > 0, levels >= 1, steps >= 1, step size > 0",
            ));
        }
        Ok(AnnealedLangevin {
            sigma_max,
            sigma_min,
            levels,
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

    /// Noise level `i` of `0..L`.
    pub fn level_sigma(&self, level: usize) -> f64 {
        if self.levels == 1 {
            return self.sigma_max;
        }
        let fraction = level as f64 / (self.levels - 1) as f64;
        self.sigma_max * libm::pow(self.sigma_min / self.sigma_max, fraction)
    }

    /// Number of score evaluations of the whole run.
    pub fn num_steps(&self) -> usize {
        self.levels * self.steps_per_level + usize::from(self.final_denoise)
    }

    /// Number of steps already taken.
    pub fn steps_taken(&self) -> usize {
        self.taken
    }

    /// The noise level at which the score must be evaluated next, or `None` when finished.
    pub fn sigma(&self) -> Option<f64> {
        if self.taken >= self.num_steps() {
            None
        } else {
            Some(self.level_sigma((self.taken / self.steps_per_level).min(self.levels - 1)))
        }
    }

    /// Advances one step given `score` = the score of `x` at [`sigma`](Self::sigma).
    pub fn step(&mut self, x: &mut [f32], score: &[f32], rng: &mut Rng) -> Result<()> {
        let sigma = self.sigma().ok_or(Error::Finished)?;
        check_len("score", x.len(), score.len())?;
        if self.taken >= self.levels * self.steps_per_level {
            let scale = (sigma * sigma) as f32;
            for (value, &g) in x.iter_mut().zip(score) {
                *value += scale * g;
                if let Some(radius) = self.clip_sample {
                    *value = value.clamp(-radius, radius);
                }
            }
        } else {
            let ratio = sigma / self.sigma_min;
            let alpha = self.step_size * ratio * ratio;
            let (drift, noise) = ((alpha / 2.0) as f32, libm::sqrt(alpha) as f32);
            for (value, &g) in x.iter_mut().zip(score) {
                *value += drift * g + noise * rng.normal();
            }
        }
        self.taken += 1;
        Ok(())
    }
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
        clipped.step(&mut a, &score, &mut rng.clone()).unwrap();
        free.step(&mut b, &score, &mut rng).unwrap();
        assert_eq!(a, b, "the Langevin step itself is not clipped");
        // The final step: x + sigma_min^2 score = x + 0.25 score.
        let big = [100.0f32, -100.0, 0.4];
        clipped.step(&mut a, &big, &mut Rng::new(1)).unwrap();
        free.step(&mut b, &big, &mut Rng::new(1)).unwrap();
        assert_eq!(a[0], 1.0);
        assert_eq!(a[1], -1.0);
        assert_eq!(a[2], b[2]);
        assert!(b[0] > 20.0 && b[1] < -20.0);
        for radius in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(sampler.clone().with_clip_sample(Some(radius)).is_err());
        }
    }
}
