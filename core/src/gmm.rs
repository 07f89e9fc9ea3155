//! The exact denoiser of an isotropic Gaussian mixture.
//!
//! If `x0 ~ sum_k w_k N(mu_k, std_k^2 I)` then `x_t = a x0 + s e` is again a mixture,
//! `x_t | k ~ N(a mu_k, v_k I)` with `v_k = a^2 std_k^2 + s^2`, whose score is
//! `-sum_k r_k(x) (x - a mu_k) / v_k` with posterior responsibilities `r_k`. The optimal noise
//! prediction is `E[e | x_t] = -s * score`. This is what a perfectly trained network would
//! output, so samplers can be tested against the mixture without any training.

use crate::error::{check_len, Error, Result};
use crate::rng::Rng;

/// Largest allowed deviation of the weights' sum from 1.
pub const WEIGHT_SUM_TOLERANCE: f32 = 1e-3;

/// An isotropic Gaussian mixture in `dim` dimensions, borrowing its parameters.
#[derive(Debug, Clone, Copy)]
pub struct GaussianMixture<'a> {
    means: &'a [f32],
    stds: &'a [f32],
    weights: &'a [f32],
    dim: usize,
}

impl<'a> GaussianMixture<'a> {
    /// A mixture of `K = weights.len()` components: `means` is `[K, dim]` row-major, `stds` and
    /// `weights` have `K` entries. Weights must be >= 0 and sum to 1 (within
    /// [`WEIGHT_SUM_TOLERANCE`]); standard deviations must be > 0; everything finite.
    pub fn new(means: &'a [f32], stds: &'a [f32], weights: &'a [f32], dim: usize) -> Result<Self> {
        let components = weights.len();
        if components == 0 || dim == 0 {
            return Err(Error::InvalidParameter(
                "a mixture needs at least one component and one dimension",
            ));
        }
        check_len("means", components * dim, means.len())?;
        check_len("stds", components, stds.len())?;
        if means.iter().any(|m| !m.is_finite()) {
            return Err(Error::InvalidParameter("mixture means must be finite"));
        }
        if stds.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
            return Err(Error::InvalidParameter(
                "mixture stds must be finite and > 0",
            ));
        }
        if weights.iter().any(|w| !(*w >= 0.0 && w.is_finite())) {
            return Err(Error::InvalidParameter(
                "mixture weights must be finite and >= 0",
            ));
        }
        let sum: f32 = weights.iter().sum();
        if (sum - 1.0).abs() > WEIGHT_SUM_TOLERANCE {
            return Err(Error::InvalidParameter("mixture weights must sum to 1"));
        }
        Ok(GaussianMixture {
            means,
            stds,
            weights,
            dim,
        })
    }

    /// Number of dimensions `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of components `K`.
    pub fn components(&self) -> usize {
        self.weights.len()
    }

    /// Mean of component `k` (`D` values).
    pub fn mean(&self, k: usize) -> &'a [f32] {
        &self.means[k * self.dim..(k + 1) * self.dim]
    }

    /// Standard deviation of component `k`.
    pub fn std(&self, k: usize) -> f32 {
        self.stds[k]
    }

    /// Weight of component `k`.
    pub fn weight(&self, k: usize) -> f32 {
        self.weights[k]
    }

    fn check_rows(&self, x: &[f32], out: &[f32]) -> Result<()> {
        check_len("output", x.len(), out.len())?;
        if !x.len().is_multiple_of(self.dim) {
            return Err(Error::LengthMismatch {
                what: "samples (a multiple of the mixture's dimension)",
                expected: (x.len() / self.dim + 1) * self.dim,
                actual: x.len(),
            });
        }
        Ok(())
    }

    /// Draws `out.len() / D` samples (row-major `[n, D]`; `out.len()` must be a multiple of `D`).
    pub fn sample(&self, rng: &mut Rng, out: &mut [f32]) -> Result<()> {
        self.check_rows(out, out)?;
        for row in out.chunks_exact_mut(self.dim) {
            let k = self.component_for(rng.uniform());
            let (mean, std) = (self.mean(k), self.stds[k]);
            for (value, &m) in row.iter_mut().zip(mean) {
                *value = m + std * rng.normal();
            }
        }
        Ok(())
    }

    /// The component a uniform draw `u` in `[0, 1)` selects (inverse CDF over the weights).
    pub fn component_for(&self, u: f32) -> usize {
        let mut cumulative = 0.0f32;
        let last = self.components() - 1;
        for (k, &w) in self.weights.iter().enumerate() {
            cumulative += w;
            if u < cumulative && w > 0.0 {
                return k;
            }
        }
        // Rounding left u above the total: take the last component with weight.
        (0..=last)
            .rev()
            .find(|&k| self.weights[k] > 0.0)
            .unwrap_or(last)
    }

    /// Writes `sum_k r_k (x - a mu_k) / v_k` for each row of `x` into `out` (minus the score).
    fn weighted_residual(&self, x: &[f32], a: f32, s: f32, out: &mut [f32]) -> Result<()> {
        self.check_rows(x, out)?;
        let half_dim = self.dim as f32 * 0.5;
        let s_sq = s * s;
        let logit = |row: &[f32], k: usize| {
            let variance = a * a * self.stds[k] * self.stds[k] + s_sq;
            let distance: f32 = row
                .iter()
                .zip(self.mean(k))
                .map(|(&v, &m)| (v - a * m) * (v - a * m))
                .sum();
            let value = libm::logf(self.weights[k])
                - half_dim * libm::logf(variance)
                - distance / (2.0 * variance);
            (value, variance)
        };
        for (row, out_row) in x.chunks_exact(self.dim).zip(out.chunks_exact_mut(self.dim)) {
            let mut max_logit = f32::NEG_INFINITY;
            for k in 0..self.components() {
                if self.weights[k] > 0.0 {
                    max_logit = max_logit.max(logit(row, k).0);
                }
            }
            out_row.fill(0.0);
            let mut total = 0.0f32;
            for k in 0..self.components() {
                if self.weights[k] <= 0.0 {
                    continue;
                }
                let (value, variance) = logit(row, k);
                let responsibility = libm::expf(value - max_logit);
                total += responsibility;
                let scale = responsibility / variance;
                for ((o, &v), &m) in out_row.iter_mut().zip(row).zip(self.mean(k)) {
                    *o += scale * (v - a * m);
                }
            }
            for o in out_row.iter_mut() {
                *o /= total;
            }
        }
        Ok(())
    }

    /// The exact noise prediction `E[e | x_t]` for rows of `x_t = a x0 + s e` (`a^2 + s^2 = 1`
    /// is not required). `x_t` and `out` are `[n, D]` row-major.
    pub fn eps(&self, x_t: &[f32], a: f32, s: f32, out: &mut [f32]) -> Result<()> {
        self.weighted_residual(x_t, a, s, out)?;
        for value in out.iter_mut() {
            *value *= s;
        }
        Ok(())
    }

    /// The exact score `grad log p(x)` of the marginal of `a x0 + s e` at rows of `x`.
    pub fn score(&self, x: &[f32], a: f32, s: f32, out: &mut [f32]) -> Result<()> {
        self.weighted_residual(x, a, s, out)?;
        for value in out.iter_mut() {
            *value = -*value;
        }
        Ok(())
    }

    /// The exact score of the variance-exploding marginal `x0 + sigma e`, for Langevin dynamics.
    pub fn ve_score(&self, x: &[f32], sigma: f32, out: &mut [f32]) -> Result<()> {
        self.score(x, 1.0, sigma, out)
    }

    /// The exact noise prediction `E[e | x]` for rows of the variance-exploding perturbation
    /// `x = x0 + sigma e`: `-sigma` times [`ve_score`](Self::ve_score), what a perfectly
    /// trained noise-conditional score network outputs at level `sigma`.
    pub fn ve_eps(&self, x: &[f32], sigma: f32, out: &mut [f32]) -> Result<()> {
        self.eps(x, 1.0, sigma, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_gaussian_has_the_closed_form_eps() {
        // x0 ~ N(m, std^2): E[e | x_t] = s (x_t - a m) / (a^2 std^2 + s^2).
        let (mean, std, weight) = ([1.0f32, -2.0], [0.5f32], [1.0f32]);
        let mixture = GaussianMixture::new(&mean, &std, &weight, 2).unwrap();
        let (a, s) = (0.8f32, 0.6f32);
        let x = [0.3f32, 0.1];
        let mut eps = [0.0f32; 2];
        mixture.eps(&x, a, s, &mut eps).unwrap();
        let variance = a * a * 0.25 + s * s;
        assert!((eps[0] - s * (0.3 - 0.8) / variance).abs() < 1e-6);
        assert!((eps[1] - s * (0.1 + 1.6) / variance).abs() < 1e-6);
    }

    #[test]
    fn score_matches_finite_differences_of_the_log_density() {
        let means = [-1.0f32, 0.0, 2.0, 1.0];
        let (stds, weights) = ([0.3f32, 0.7], [0.3f32, 0.7]);
        let mixture = GaussianMixture::new(&means, &stds, &weights, 2).unwrap();
        let log_density = |x: [f64; 2], sigma: f64| {
            let mut total = 0.0f64;
            for k in 0..2 {
                let variance = f64::from(stds[k]).powi(2) + sigma * sigma;
                let d: f64 = (0..2)
                    .map(|i| (x[i] - f64::from(means[2 * k + i])).powi(2))
                    .sum();
                total += f64::from(weights[k]) * libm::exp(-d / (2.0 * variance))
                    / (2.0 * core::f64::consts::PI * variance);
            }
            libm::log(total)
        };
        let x = [0.4f32, 0.6];
        let mut score = [0.0f32; 2];
        mixture.ve_score(&x, 0.5, &mut score).unwrap();
        for i in 0..2 {
            let h = 1e-4;
            let (mut plus, mut minus) = ([0.4f64, 0.6], [0.4f64, 0.6]);
            plus[i] += h;
            minus[i] -= h;
            let numeric = (log_density(plus, 0.5) - log_density(minus, 0.5)) / (2.0 * h);
            assert!(
                (f64::from(score[i]) - numeric).abs() < 1e-3,
                "{i}: {} vs {numeric}",
                score[i]
            );
        }
    }

    #[test]
    fn rejects_malformed_mixtures() {
        let m = [0.0f32; 4];
        assert!(GaussianMixture::new(&m, &[1.0, 1.0], &[0.5, 0.6], 2).is_err());
        assert!(GaussianMixture::new(&m, &[1.0, 0.0], &[0.5, 0.5], 2).is_err());
        assert!(GaussianMixture::new(&m, &[1.0], &[0.5, 0.5], 2).is_err());
        assert!(GaussianMixture::new(&m[..3], &[1.0, 1.0], &[0.5, 0.5], 2).is_err());
        let ok = GaussianMixture::new(&m, &[1.0, 1.0], &[0.5, 0.5], 2).unwrap();
        let mut out = [0.0f32; 3];
        assert!(ok.eps(&[0.0; 3], 1.0, 0.5, &mut out).is_err());
    }

    #[test]
    fn samples_follow_the_weights() {
        let means = [-5.0f32, 5.0];
        let mixture = GaussianMixture::new(&means, &[0.1, 0.1], &[0.25, 0.75], 1).unwrap();
        let mut rng = Rng::new(11);
        let mut samples = [0.0f32; 4000];
        mixture.sample(&mut rng, &mut samples).unwrap();
        let right = samples.iter().filter(|&&v| v > 0.0).count();
        // Binomial(4000, 0.75): standard deviation 27.
        assert!((2900..3100).contains(&right), "{right}");
    }
}
