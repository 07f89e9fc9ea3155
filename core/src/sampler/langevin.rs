//! Annealed Langevin dynamics for a score model (Song & Ermon 2019, NCSN).

use crate::error::{check_len, Error, Result};
use crate::rng::Rng;

/// Annealed Langevin dynamics over `L` geometric noise levels
/// `sigma_i = sigma_max (sigma_min / sigma_max)^(i / (L - 1))`, `K` steps per level:
/// `x <- x + alpha_i / 2 * score(x, sigma_i) + sqrt(alpha_i) z`, `alpha_i = eps sigma_i^2 / sigma_L^2`.
///
/// The score is that of the variance-exploding marginal `x = x0 + sigma n`. With
/// `final_denoise`, one last evaluation at `sigma_min` applies Tweedie's formula
/// `x <- x + sigma_min^2 score` and removes the remaining noise (as in NCSNv2).
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
            taken: 0,
        })
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
