//! Kernel Inception Distance: the unbiased squared MMD between two feature sets with the
//! cubic polynomial kernel, averaged over subsets, with its standard error.
//!
//! The kernel is `k(x, y) = (x·y / d + 1)^3` for `d`-dimensional features (Binkowski et al.,
//! 2018). For sets `X` (size `m`) and `Y` (size `n`) the unbiased estimate of `MMD^2` is
//!
//! `sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
//!  - 2 sum_{i, j} k(x_i, y_j) / (m n)`,
//!
//! whose expectation is exactly 0 when `X` and `Y` come from the same distribution: single
//! estimates scatter around 0 and are often negative.
//!
//! **Scale.** The cubic kernel is not scale-free: on features of size `|x|^2 / d ~ 20` (ReLU
//! activations of ddm's classifiers) its cubic term dwarfs the others and the estimate becomes
//! heavy-tailed. [`kid`] therefore first divides both sets by the root-mean-square feature of
//! `Y`, the reference (so that `mean |y|^2 / d = 1`, as for the Inception features KID was
//! designed on); samples and floor are compared with the same reference and so on one scale.
//!
//! **Subsets and standard error.** Like the reference implementation, KID averages the estimate
//! over subsets of at most [`MAX_SUBSET_SIZE`] = 1000 vectors per set. Unlike it (50 to 100 random,
//! overlapping subsets, reporting their spread), ddm shuffles each set with a fixed seed and cuts
//! it into `S = ceil(max(m, n) / 1000)` **disjoint** subsets (`S = 1`, the whole sets, up to 1000
//! vectors): every pair within a subset is used once, and the subset estimates are independent. The
//! standard error of their mean is `sqrt(sum_s var_s) / S`, with `var_s` the two-sample jackknife
//! variance of subset `s` (leave out one `x`, then one `y`, Arvesen 1969), computed exactly from
//! the kernel matrices' row sums. The jackknife variance is conservative (biased upward, Efron &
//! Stein 1981), so "within 2 SE of 0" is a fair test for samples as good as real data. Vectors left
//! over by the division (fewer than `S`) are not used.

use nalgebra::DMatrix;

use ddm_core::Rng;

use super::frechet::rows;
use crate::error::{Error, Result};

/// Largest subset size, as in the reference implementation.
pub const MAX_SUBSET_SIZE: usize = 1000;
/// Fewest vectors per set (and per subset): the jackknife leaves one out of at least 3.
pub const MIN_VECTORS: usize = 3;

/// A mean with its standard error.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MeanSe {
    /// The mean.
    pub mean: f64,
    /// Its standard error.
    pub se: f64,
}

/// How KID was computed, with its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    /// Mean of the subset estimates and its standard error.
    pub value: MeanSe,
    /// Number of disjoint subsets.
    pub subsets: usize,
    /// Vectors of `x` per subset.
    pub subset_size_x: usize,
    /// Vectors of `y` per subset.
    pub subset_size_y: usize,
}

/// KID between `x` (row-major `[m, dim]`) and the reference `y` (`[n, dim]`), both scaled by
/// `y`'s root-mean-square feature, subsets drawn with `seed` (see the [module docs](self)).
///
/// # Errors
/// [`Error::Invalid`] when the buffers are not whole rows of `dim` or the subsets would hold
/// fewer than [`MIN_VECTORS`] vectors of either set.
pub fn kid(x: &[f32], y: &[f32], dim: usize, seed: u64) -> Result<Kid> {
    let m = rows(x, dim, MIN_VECTORS, "KID")?;
    let n = rows(y, dim, MIN_VECTORS, "KID")?;
    let subsets = m.max(n).div_ceil(MAX_SUBSET_SIZE);
    let (size_x, size_y) = (m / subsets, n / subsets);
    if size_x < MIN_VECTORS || size_y < MIN_VECTORS {
        return Err(Error::Invalid(format!(
            "KID: {m} and {n} vectors do not make {subsets} subsets of at least {MIN_VECTORS}"
        )));
    }
    let mean_square = y.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / y.len() as f64;
    let scale = if mean_square > 0.0 {
        1.0 / mean_square.sqrt()
    } else {
        1.0
    };
    let order_x = permutation(m, &mut Rng::with_stream(seed, 0));
    let order_y = permutation(n, &mut Rng::with_stream(seed, 1));
    let (mut total, mut variance) = (0.0, 0.0);
    for s in 0..subsets {
        let xs = gather(x, dim, &order_x[s * size_x..(s + 1) * size_x]) * scale;
        let ys = gather(y, dim, &order_y[s * size_y..(s + 1) * size_y]) * scale;
        let estimate = mmd2_unbiased_polynomial(&xs, &ys);
        total += estimate.value;
        variance += estimate.jackknife_variance;
    }
    let count = subsets as f64;
    Ok(Kid {
        value: MeanSe {
            mean: total / count,
            se: variance.sqrt() / count,
        },
        subsets,
        subset_size_x: size_x,
        subset_size_y: size_y,
    })
}

/// One unbiased `MMD^2` estimate and its jackknife variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mmd2 {
    /// The unbiased estimate.
    pub value: f64,
    /// The two-sample jackknife estimate of its variance.
    pub jackknife_variance: f64,
}

/// The unbiased `MMD^2` estimate with the cubic polynomial kernel between the columns of `x`
/// (`d x m`) and of `y` (`d x n`), with its two-sample jackknife variance; both need at least
/// [`MIN_VECTORS`] columns.
pub fn mmd2_unbiased_polynomial(x: &DMatrix<f64>, y: &DMatrix<f64>) -> Mmd2 {
    let d = x.nrows() as f64;
    let kernel = |gram: DMatrix<f64>| gram.map(|g| (g / d + 1.0).powi(3));
    let kxx = kernel(x.tr_mul(x));
    let kyy = kernel(y.tr_mul(y));
    let kxy = kernel(x.tr_mul(y));
    let (m, n) = (x.ncols() as f64, y.ncols() as f64);
    // Off-diagonal row sums of Kxx and Kyy, row and column sums of Kxy.
    let off_rows = |k: &DMatrix<f64>| -> Vec<f64> {
        k.row_iter()
            .enumerate()
            .map(|(i, row)| row.sum() - k[(i, i)])
            .collect()
    };
    let rows_xx = off_rows(&kxx);
    let rows_yy = off_rows(&kyy);
    let rows_xy: Vec<f64> = kxy.row_iter().map(|row| row.sum()).collect();
    let cols_xy: Vec<f64> = kxy.column_iter().map(|col| col.sum()).collect();
    let a: f64 = rows_xx.iter().sum();
    let b: f64 = rows_yy.iter().sum();
    let c: f64 = rows_xy.iter().sum();
    let estimate = |a: f64, b: f64, c: f64, m: f64, n: f64| {
        a / (m * (m - 1.0)) + b / (n * (n - 1.0)) - 2.0 * c / (m * n)
    };
    let value = estimate(a, b, c, m, n);
    let spread = |replicates: Vec<f64>| {
        let len = replicates.len() as f64;
        let mean = replicates.iter().sum::<f64>() / len;
        (len - 1.0) / len * replicates.iter().map(|r| (r - mean).powi(2)).sum::<f64>()
    };
    let leave_x: Vec<f64> = rows_xx
        .iter()
        .zip(&rows_xy)
        .map(|(rxx, rxy)| estimate(a - 2.0 * rxx, b, c - rxy, m - 1.0, n))
        .collect();
    let leave_y: Vec<f64> = rows_yy
        .iter()
        .zip(&cols_xy)
        .map(|(ryy, cxy)| estimate(a, b - 2.0 * ryy, c - cxy, m, n - 1.0))
        .collect();
    Mmd2 {
        value,
        jackknife_variance: spread(leave_x) + spread(leave_y),
    }
}

/// Mean and standard error (sample standard deviation over `sqrt(len)`) of `values`; the
/// error is 0 for fewer than 2 values.
pub fn mean_se(values: &[f64]) -> MeanSe {
    let len = values.len() as f64;
    let mean = values.iter().sum::<f64>() / len;
    let se = if values.len() < 2 {
        0.0
    } else {
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (len - 1.0);
        (variance / len).sqrt()
    };
    MeanSe { mean, se }
}

/// A uniformly random permutation of `0..n` (Fisher-Yates).
pub(crate) fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = below(rng, i + 1);
        order.swap(i, j);
    }
    order
}

/// A uniform index in `0..bound` (`bound` must fit in `u32`).
pub(crate) fn below(rng: &mut Rng, bound: usize) -> usize {
    let bound = u32::try_from(bound).expect("index bound fits in u32");
    rng.below(bound) as usize
}

/// Rows `indices` of the row-major `[_, dim]` buffer `values`, as the columns of a `dim x k`
/// matrix.
fn gather(values: &[f32], dim: usize, indices: &[usize]) -> DMatrix<f64> {
    DMatrix::from_iterator(
        dim,
        indices.len(),
        indices
            .iter()
            .flat_map(|&i| values[i * dim..(i + 1) * dim].iter().map(|&v| f64::from(v))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal_rows(n: usize, dim: usize, shift: f32, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n * dim).map(|_| shift + rng.normal()).collect()
    }

    fn all_rows(values: &[f32], dim: usize) -> DMatrix<f64> {
        gather(values, dim, &(0..values.len() / dim).collect::<Vec<_>>())
    }

    /// The estimate by direct double sums over row-major `[_, 3]` sets.
    fn direct(x: &[f32], y: &[f32]) -> f64 {
        let k = |a: &[f32], b: &[f32]| {
            let dot: f64 = a
                .iter()
                .zip(b)
                .map(|(p, q)| f64::from(*p) * f64::from(*q))
                .sum();
            (dot / 3.0 + 1.0).powi(3)
        };
        let (xs, ys): (Vec<&[f32]>, Vec<&[f32]>) =
            (x.chunks_exact(3).collect(), y.chunks_exact(3).collect());
        let within = |set: &[&[f32]]| {
            let mut sum = 0.0;
            for (i, a) in set.iter().enumerate() {
                for (j, b) in set.iter().enumerate() {
                    if i != j {
                        sum += k(a, b);
                    }
                }
            }
            let len = set.len() as f64;
            sum / (len * (len - 1.0))
        };
        let cross: f64 = xs.iter().flat_map(|a| ys.iter().map(|b| k(a, b))).sum();
        within(&xs) + within(&ys) - 2.0 * cross / (xs.len() * ys.len()) as f64
    }

    #[test]
    fn estimate_and_jackknife_match_direct_computations() {
        let x = normal_rows(7, 3, 0.0, 1);
        let y = normal_rows(5, 3, 0.3, 2);
        let got = mmd2_unbiased_polynomial(&all_rows(&x, 3), &all_rows(&y, 3));
        let expected = direct(&x, &y);
        assert!(
            (got.value - expected).abs() < 1e-12,
            "{got:?} vs {expected}"
        );

        // Jackknife: recompute every leave-one-out estimate from scratch.
        let without = |set: &[f32], i: usize| {
            let mut out = set.to_vec();
            out.drain(3 * i..3 * i + 3);
            out
        };
        let spread = |replicates: Vec<f64>| {
            let len = replicates.len() as f64;
            let mean = replicates.iter().sum::<f64>() / len;
            (len - 1.0) / len * replicates.iter().map(|r| (r - mean).powi(2)).sum::<f64>()
        };
        let leave_x = (0..7).map(|i| direct(&without(&x, i), &y)).collect();
        let leave_y = (0..5).map(|j| direct(&x, &without(&y, j))).collect();
        let variance = spread(leave_x) + spread(leave_y);
        assert!(
            (got.jackknife_variance - variance).abs() < 1e-10 * variance.max(1.0),
            "{} vs {variance}",
            got.jackknife_variance
        );
    }

    /// Unbiased: over many independent pairs of sets from one distribution, the estimates
    /// average to 0 within their standard error, single estimates lie within 2 of their own
    /// standard errors of 0, and many are negative.
    #[test]
    fn unbiased_on_identical_distributions() {
        let mut means = Vec::new();
        let mut within_two = 0;
        for trial in 0..40 {
            let x = normal_rows(200, 8, 0.0, 100 + trial);
            let y = normal_rows(200, 8, 0.0, 200 + trial);
            let estimate = kid(&x, &y, 8, trial).unwrap();
            assert_eq!(estimate.subsets, 1);
            assert!(estimate.value.se > 0.0);
            within_two += usize::from(estimate.value.mean.abs() < 2.0 * estimate.value.se);
            means.push(estimate.value.mean);
        }
        assert!(within_two >= 36, "only {within_two} of 40 within 2 SE");
        let negative = means.iter().filter(|&&m| m < 0.0).count();
        assert!(
            (8..=32).contains(&negative),
            "{negative} of 40 negative: {means:?}"
        );
        let overall = mean_se(&means);
        assert!(
            overall.mean.abs() < 3.0 * overall.se,
            "mean {} se {}",
            overall.mean,
            overall.se
        );
        // A shifted distribution is far from 0.
        let x = normal_rows(200, 8, 0.0, 1);
        let y = normal_rows(200, 8, 0.5, 2);
        let shifted = kid(&x, &y, 8, 0).unwrap().value;
        assert!(shifted.mean > 4.0 * shifted.se, "{shifted:?}");
    }

    /// The jackknife standard error is close to the actual spread of the estimate over
    /// independent repetitions (a shifted pair, where the estimate is far from 0).
    #[test]
    fn standard_error_matches_the_spread_over_repetitions() {
        let (estimates, errors): (Vec<f64>, Vec<f64>) = (0..40)
            .map(|trial| {
                let x = normal_rows(150, 4, 0.0, 300 + trial);
                let y = normal_rows(150, 4, 0.25, 400 + trial);
                let v = kid(&x, &y, 4, trial).unwrap().value;
                (v.mean, v.se)
            })
            .unzip();
        let spread = mean_se(&estimates).se * (estimates.len() as f64).sqrt();
        let typical_se = errors.iter().sum::<f64>() / errors.len() as f64;
        let ratio = typical_se / spread;
        assert!(
            (0.7..1.6).contains(&ratio),
            "se {typical_se} vs spread {spread}"
        );
    }

    #[test]
    fn large_sets_use_disjoint_subsets_of_at_most_1000() {
        let x = normal_rows(2500, 2, 0.0, 1);
        let y = normal_rows(30, 2, 0.0, 2);
        let estimate = kid(&x, &y, 2, 0).unwrap();
        assert_eq!(
            (
                estimate.subsets,
                estimate.subset_size_x,
                estimate.subset_size_y
            ),
            (3, 833, 10)
        );
        let small = kid(&x[..2 * 1000], &y, 2, 0).unwrap();
        assert_eq!((small.subsets, small.subset_size_x), (1, 1000));

        let order = permutation(50, &mut Rng::new(4));
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(order, sorted);
    }

    #[test]
    fn too_few_vectors_are_invalid() {
        let x = normal_rows(2, 2, 0.0, 1);
        let y = normal_rows(40, 2, 0.0, 2);
        let err = kid(&x, &y, 2, 0).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)));
        assert!(err.to_string().contains("at least 3"), "{err}");
        // 2500 vectors make 3 subsets, which 8 reference vectors cannot fill.
        let big = normal_rows(2500, 2, 0.0, 3);
        let err = kid(&big, &y[..16], 2, 0).unwrap_err();
        assert!(err.to_string().contains("3 subsets"), "{err}");
        assert!(matches!(kid(&y, &y[..79], 2, 0), Err(Error::Invalid(_))));
    }
}
