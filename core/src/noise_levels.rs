//! Variance-exploding noise levels: the perturbation `x = x0 + sigma z`, `z ~ N(0, I)`, of
//! score-based models (NCSN, Song & Ermon 2019; the SMLD discretisation of the VE SDE, Song
//! et al. 2021), and NCSNv2's rules that choose the levels from the data (Song & Ermon 2020).
//!
//! A [`NoiseLevels`] is `L` geometric levels `sigma_i = sigma_min (sigma_max / sigma_min)^(i /
//! (L - 1))`, `i` in `0..L`. Level 0 is the least noisy, as timestep 0 is on a
//! variance-preserving [`Schedule`](crate::Schedule);
//! [`BetaSchedule::VarianceExploding`](crate::BetaSchedule::VarianceExploding) makes them one. Levels are
//! computed in `f64` with [`libm`], so every target gets the same bits.
//!
//! NCSNv2's rules, for data of `D` dimensions:
//! 1. `sigma_max` about the largest Euclidean distance between two training points
//!    ([`max_pairwise_distance`]), so that the noisiest level can carry any point to any other;
//! 2. the ratio `gamma = sigma_{i+1} / sigma_i` such that
//!    `Phi(sqrt(2D) (gamma - 1) + 3 gamma) - Phi(sqrt(2D) (gamma - 1) - 3 gamma) = 1/2`
//!    ([`ncsnv2_ratio`]): a sample of one level then lies in the high-density shell of the next
//!    about half of the time; [`NoiseLevels::ncsnv2`] turns the ratio into the count `L`;
//! 3. Langevin's step size from the number of steps per level
//!    ([`ncsnv2_step_size`](crate::sampler::ncsnv2_step_size)).

use crate::error::{check_len, Error, Result};

/// `L` geometric variance-exploding noise levels from `sigma_min` (level 0) to `sigma_max`
/// (level `L - 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct NoiseLevels {
    sigma_min: f64,
    sigma_max: f64,
    count: u32,
}

impl NoiseLevels {
    /// `count` levels from `sigma_min` to `sigma_max`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `0 < sigma_min <= sigma_max`, both finite, and
    /// `count >= 1`; a single level needs `sigma_min == sigma_max`.
    pub fn new(sigma_min: f64, sigma_max: f64, count: u32) -> Result<Self> {
        let valid = sigma_min > 0.0
            && sigma_max >= sigma_min
            && sigma_max.is_finite()
            && count >= 1
            && (count > 1 || sigma_min == sigma_max);
        if !valid {
            return Err(Error::InvalidParameter(
                "noise levels need 0 < sigma_min <= sigma_max (finite) and count >= 1 \
                 (equal sigmas for one level)",
            ));
        }
        Ok(NoiseLevels {
            sigma_min,
            sigma_max,
            count,
        })
    }

    /// NCSNv2's levels for data of `dim` dimensions: from `sigma_min` to `sigma_max` at the
    /// ratio of [`ncsnv2_ratio`] or just below it, `L = 1 + ceil(ln(sigma_max / sigma_min) /
    /// ln gamma)` levels (one when the sigmas are equal).
    ///
    /// # Errors
    /// As [`NoiseLevels::new`] and [`ncsnv2_ratio`], and [`Error::InvalidParameter`] for more
    /// than `u32::MAX` levels.
    pub fn ncsnv2(sigma_min: f64, sigma_max: f64, dim: usize) -> Result<Self> {
        if sigma_min == sigma_max {
            return NoiseLevels::new(sigma_min, sigma_max, 1);
        }
        NoiseLevels::new(sigma_min, sigma_max, 2)?;
        let span = libm::log(sigma_max / sigma_min);
        let intervals = libm::ceil(span / libm::log(ncsnv2_ratio(dim)?));
        if intervals >= f64::from(u32::MAX) {
            return Err(Error::InvalidParameter(
                "NCSNv2's rule asks for more than u32::MAX noise levels",
            ));
        }
        NoiseLevels::new(sigma_min, sigma_max, intervals as u32 + 1)
    }

    /// Number of levels `L`.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Always false: there is at least one level.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The smallest level, `sigma_0`.
    pub fn sigma_min(&self) -> f64 {
        self.sigma_min
    }

    /// The largest level, `sigma_{L-1}`: the standard deviation of the initial noise.
    pub fn sigma_max(&self) -> f64 {
        self.sigma_max
    }

    /// The ratio `gamma = sigma_{i+1} / sigma_i` of neighbouring levels (1 for one level).
    pub fn ratio(&self) -> f64 {
        if self.count == 1 {
            return 1.0;
        }
        libm::pow(
            self.sigma_max / self.sigma_min,
            1.0 / f64::from(self.count - 1),
        )
    }

    /// `sigma_level`; levels past the last give `sigma_max`.
    pub fn sigma(&self, level: usize) -> f64 {
        let last = self.len() - 1;
        if level >= last {
            return self.sigma_max;
        }
        if level == 0 {
            return self.sigma_min;
        }
        let fraction = level as f64 / last as f64;
        self.sigma_min * libm::pow(self.sigma_max / self.sigma_min, fraction)
    }
}

/// The standard normal distribution function `Phi(x)`.
fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / core::f64::consts::SQRT_2)
}

/// NCSNv2's ratio of neighbouring noise levels for data of `dim` dimensions (rule 2 of the
/// module docs), solved by bisection to `1e-12`: 1.0398 for `D = 3072` (CIFAR-10), 1.0820 for
/// 784 (28x28), 1.361 for 64 (8x8). With `r = sqrt(2D)` the root lies near `r / (r - 3)`.
///
/// # Errors
/// [`Error::InvalidParameter`] for `dim < 5`: below five dimensions the shell probability
/// never falls to one half, and the rule gives no ratio.
pub fn ncsnv2_ratio(dim: usize) -> Result<f64> {
    if dim < 5 {
        return Err(Error::InvalidParameter(
            "NCSNv2's noise level rule needs data of at least 5 dimensions",
        ));
    }
    let root = libm::sqrt(2.0 * dim as f64);
    let shell = |gamma: f64| {
        normal_cdf(root * (gamma - 1.0) + 3.0 * gamma)
            - normal_cdf(root * (gamma - 1.0) - 3.0 * gamma)
    };
    // shell(1) = Phi(3) - Phi(-3) > 1/2; at twice r / (r - 3) both arguments exceed r > 3, so
    // the shell holds almost nothing.
    let (mut low, mut high) = (1.0f64, 2.0 * root / (root - 3.0));
    while high - low > 1e-12 {
        let mid = 0.5 * (low + high);
        if shell(mid) > 0.5 {
            low = mid;
        } else {
            high = mid;
        }
    }
    Ok(0.5 * (low + high))
}

/// The largest Euclidean distance between two rows of `rows` (`[n, dim]` row-major), NCSNv2's
/// `sigma_max` (rule 1 of the module docs). Quadratic in `n`: hand it a random subset of a
/// large data set (the result is then a lower bound of the whole set's).
///
/// # Errors
/// [`Error::LengthMismatch`] when `rows` is not a whole number of rows, or holds fewer than two;
/// [`Error::InvalidParameter`] for `dim == 0`.
pub fn max_pairwise_distance(rows: &[f32], dim: usize) -> Result<f64> {
    if dim == 0 || !rows.len().is_multiple_of(dim) || rows.len() < 2 * dim {
        check_len(
            "rows (at least two of the given dimension)",
            2 * dim.max(1),
            rows.len(),
        )?;
        return Err(Error::InvalidParameter(
            "rows need a dimension of at least one",
        ));
    }
    let mut largest = 0.0f64;
    for (i, a) in rows.chunks_exact(dim).enumerate() {
        for b in rows.chunks_exact(dim).skip(i + 1) {
            let squared: f64 = a
                .iter()
                .zip(b)
                .map(|(&u, &v)| {
                    let d = f64::from(u) - f64::from(v);
                    d * d
                })
                .sum();
            largest = largest.max(squared);
        }
    }
    Ok(libm::sqrt(largest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_geometric_from_the_smallest_and_invert() {
        let levels = NoiseLevels::new(0.01, 50.0, 232).unwrap();
        assert_eq!(levels.sigma(0), 0.01);
        assert_eq!(levels.sigma(231), 50.0);
        assert_eq!(levels.sigma(1000), 50.0);
        let gamma = levels.ratio();
        for i in [0usize, 1, 17, 115, 230] {
            let ratio = levels.sigma(i + 1) / levels.sigma(i);
            assert!((ratio - gamma).abs() < 1e-12, "{i}: {ratio} vs {gamma}");
        }
        let one = NoiseLevels::new(2.0, 2.0, 1).unwrap();
        assert_eq!((one.sigma(0), one.ratio(), one.len()), (2.0, 1.0, 1));
    }

    #[test]
    fn bad_levels_are_refused() {
        for (min, max, count) in [
            (0.0, 1.0, 10),
            (-1.0, 1.0, 10),
            (2.0, 1.0, 10),
            (0.1, f64::INFINITY, 10),
            (f64::NAN, 1.0, 10),
            (0.1, 1.0, 0),
            (0.1, 1.0, 1),
        ] {
            assert!(
                NoiseLevels::new(min, max, count).is_err(),
                "{min} {max} {count}"
            );
        }
        assert!(NoiseLevels::ncsnv2(0.01, 1.0, 0).is_err());
        assert!(NoiseLevels::ncsnv2(1.0, 0.5, 10).is_err());
    }

    #[test]
    fn the_ratio_puts_half_of_a_level_in_the_next_levels_shell() {
        // Published: NCSNv2 chose 232 levels from 50 to 0.01 on CIFAR-10 (D = 3072), a ratio of
        // 5000^(1/231) = 1.0376 (the rule asks for a shell probability of about one half).
        let gamma = ncsnv2_ratio(3072).unwrap();
        assert!((gamma - 1.0376).abs() < 3e-3, "{gamma}");
        let levels = NoiseLevels::ncsnv2(0.01, 50.0, 3072).unwrap();
        assert!((215..=240).contains(&levels.len()), "{}", levels.len());
        assert!(levels.ratio() <= gamma);
        assert_eq!(NoiseLevels::ncsnv2(0.5, 0.5, 64).unwrap().len(), 1);
        for dim in [0usize, 1, 4] {
            assert!(ncsnv2_ratio(dim).is_err(), "{dim}");
        }
        // The defining equation holds at the root, for small and large D.
        for dim in [5usize, 8, 64, 784, 3072, 12288] {
            let gamma = ncsnv2_ratio(dim).unwrap();
            let root = libm::sqrt(2.0 * dim as f64);
            let shell = normal_cdf(root * (gamma - 1.0) + 3.0 * gamma)
                - normal_cdf(root * (gamma - 1.0) - 3.0 * gamma);
            assert!((shell - 0.5).abs() < 1e-9, "{dim}: {shell}");
            assert!(gamma > 1.0, "{dim}: {gamma}");
        }
        // More dimensions: closer levels.
        assert!(ncsnv2_ratio(784).unwrap() < ncsnv2_ratio(64).unwrap());
    }

    #[test]
    fn the_largest_distance_is_between_the_farthest_rows() {
        let rows = [0.0f32, 0.0, 3.0, 4.0, -1.0, 0.0, 1.0, 1.0];
        // (3, 4) to (-1, 0): sqrt(16 + 16).
        let d = max_pairwise_distance(&rows, 2).unwrap();
        assert!((d - 32f64.sqrt()).abs() < 1e-12, "{d}");
        assert!(max_pairwise_distance(&rows[..2], 2).is_err());
        assert!(max_pairwise_distance(&rows[..7], 2).is_err());
        assert!(max_pairwise_distance(&rows, 0).is_err());
    }
}
