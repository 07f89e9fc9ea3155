//! Frechet distance between Gaussians fitted to two sets of feature vectors.
//!
//! For feature sets `X` and `Y` with means `m1`, `m2` and covariances `S1`, `S2`:
//!
//! `FD = |m1 - m2|^2 + tr(S1 + S2 - 2 (S1^{1/2} S2 S1^{1/2})^{1/2})`
//!
//! (Heusel et al., 2017, the formula behind FID). The matrix square roots come from symmetric
//! eigendecompositions in `f64`, with eigenvalues below zero (round-off of positive
//! semi-definite matrices) set to zero, so singular covariances (dead ReLU features, fewer
//! samples than dimensions) are handled without the regularising offset some implementations
//! need. The covariances are the unbiased ones (divided by `n - 1`).

use nalgebra::{DMatrix, DVector, SymmetricEigen};

use crate::error::{Error, Result};

/// A Gaussian fitted to feature vectors: their mean and unbiased covariance.
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    /// Mean, length `d`.
    pub mean: DVector<f64>,
    /// Covariance, `d x d`, divided by `n - 1`.
    pub covariance: DMatrix<f64>,
}

impl Gaussian {
    /// Fits a Gaussian to `features`, row-major `[n, dim]`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `dim` is 0, `features.len()` is not a multiple of `dim`, or there
    /// are fewer than 2 rows.
    pub fn fit(features: &[f32], dim: usize) -> Result<Self> {
        let n = rows(features, dim, 2, "a Frechet distance")?;
        // Column-major d x n: column i is feature vector i.
        let x = DMatrix::from_iterator(dim, n, features.iter().map(|&v| f64::from(v)));
        let mean = x.column_mean();
        let mut centred = x;
        for mut column in centred.column_iter_mut() {
            column -= &mean;
        }
        let covariance = (&centred * centred.transpose()) / (n as f64 - 1.0);
        Ok(Gaussian { mean, covariance })
    }
}

/// The Frechet distance between two fitted Gaussians of the same dimension (see the
/// [module docs](self)). Always `>= 0`: a result that round-off makes slightly negative is
/// returned as 0.
///
/// # Panics
/// When the dimensions differ.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    assert_eq!(
        a.mean.len(),
        b.mean.len(),
        "Frechet distance between Gaussians of different dimensions"
    );
    let mean_term = (&a.mean - &b.mean).norm_squared();
    let root_a = psd_sqrt(&a.covariance);
    let mut product = &root_a * &b.covariance * &root_a;
    symmetrize(&mut product);
    let cross: f64 = SymmetricEigen::new(product)
        .eigenvalues
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .sum();
    (mean_term + a.covariance.trace() + b.covariance.trace() - 2.0 * cross).max(0.0)
}

/// The Frechet distance between Gaussians fitted to `x` and `y`, both row-major `[_, dim]`.
///
/// # Errors
/// As [`Gaussian::fit`], for either set.
pub fn frechet_distance_of(x: &[f32], y: &[f32], dim: usize) -> Result<f64> {
    Ok(frechet_distance(
        &Gaussian::fit(x, dim)?,
        &Gaussian::fit(y, dim)?,
    ))
}

/// The square root of a symmetric positive semi-definite matrix, negative eigenvalues
/// clamped to 0.
fn psd_sqrt(matrix: &DMatrix<f64>) -> DMatrix<f64> {
    let mut symmetric = matrix.clone();
    symmetrize(&mut symmetric);
    let eigen = SymmetricEigen::new(symmetric);
    let roots = eigen.eigenvalues.map(|l| l.max(0.0).sqrt());
    let vectors = &eigen.eigenvectors;
    let scaled = vectors * DMatrix::from_diagonal(&roots);
    let mut root = scaled * vectors.transpose();
    symmetrize(&mut root);
    root
}

fn symmetrize(matrix: &mut DMatrix<f64>) {
    let transpose = matrix.transpose();
    *matrix += transpose;
    *matrix *= 0.5;
}

/// Number of rows of a row-major `[n, dim]` buffer, checking `n >= min_rows`.
pub(crate) fn rows(values: &[f32], dim: usize, min_rows: usize, what: &str) -> Result<usize> {
    if dim == 0 || !values.len().is_multiple_of(dim) {
        return Err(Error::Invalid(format!(
            "{what}: {} values do not form rows of {dim}",
            values.len()
        )));
    }
    let n = values.len() / dim;
    if n < min_rows {
        return Err(Error::Invalid(format!(
            "{what} needs at least {min_rows} vectors, got {n}"
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ddm_core::Rng;

    fn gaussian_rows(n: usize, scales: &[f32], shift: f32, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut out = Vec::with_capacity(n * scales.len());
        for _ in 0..n {
            for &s in scales {
                out.push(shift + s * rng.normal());
            }
        }
        out
    }

    #[test]
    fn identical_sets_have_distance_zero() {
        let x = gaussian_rows(300, &[1.0, 0.5, 2.0, 0.1], 0.0, 1);
        let fd = frechet_distance_of(&x, &x, 4).unwrap();
        assert!(fd.abs() < 1e-9, "{fd}");
    }

    #[test]
    fn matches_the_closed_form_for_diagonal_gaussians() {
        // Diagonal covariances: FD = |m1 - m2|^2 + sum (s1 - s2)^2 over standard deviations.
        let a = Gaussian {
            mean: DVector::from_vec(vec![0.0, 1.0, 2.0]),
            covariance: DMatrix::from_diagonal(&DVector::from_vec(vec![1.0, 4.0, 9.0])),
        };
        let b = Gaussian {
            mean: DVector::from_vec(vec![1.0, 1.0, 0.0]),
            covariance: DMatrix::from_diagonal(&DVector::from_vec(vec![4.0, 4.0, 1.0])),
        };
        let expected = (1.0 + 0.0 + 4.0) + (1.0 + 0.0 + 4.0);
        assert!((frechet_distance(&a, &b) - expected).abs() < 1e-10);
        assert!((frechet_distance(&b, &a) - expected).abs() < 1e-10);
    }

    #[test]
    fn matches_the_closed_form_for_non_commuting_covariances() {
        // 2-D: tr sqrt(S1^1/2 S2 S1^1/2) = sqrt(tr(S1 S2) + 2 sqrt(det(S1 S2))).
        let s1 = DMatrix::<f64>::from_row_slice(2, 2, &[2.0, 0.5, 0.5, 1.0]);
        let s2 = DMatrix::from_row_slice(2, 2, &[1.0, -0.3, -0.3, 3.0]);
        let product = &s1 * &s2;
        let cross = (product.trace() + 2.0 * product.determinant().sqrt()).sqrt();
        let expected = s1.trace() + s2.trace() - 2.0 * cross;
        let zero = DVector::zeros(2);
        let a = Gaussian {
            mean: zero.clone(),
            covariance: s1,
        };
        let b = Gaussian {
            mean: zero,
            covariance: s2,
        };
        assert!((frechet_distance(&a, &b) - expected).abs() < 1e-10);
    }

    #[test]
    fn singular_covariances_are_fine_and_distance_grows_with_shift_and_scale() {
        // 3 samples in 8 dimensions: rank-2 covariances.
        let x = gaussian_rows(3, &[1.0; 8], 0.0, 2);
        let fd = frechet_distance_of(&x, &x, 8).unwrap();
        assert!(fd.abs() < 1e-9, "{fd}");

        let reference = gaussian_rows(2000, &[1.0; 4], 0.0, 3);
        let same = gaussian_rows(2000, &[1.0; 4], 0.0, 4);
        let shifted = gaussian_rows(2000, &[1.0; 4], 0.5, 5);
        let wider = gaussian_rows(2000, &[2.0; 4], 0.0, 6);
        let fd_same = frechet_distance_of(&reference, &same, 4).unwrap();
        let fd_shift = frechet_distance_of(&reference, &shifted, 4).unwrap();
        let fd_wide = frechet_distance_of(&reference, &wider, 4).unwrap();
        assert!(fd_same < 0.05, "{fd_same}");
        // Expected 4 * 0.5^2 = 1 and 4 * (2 - 1)^2 = 4.
        assert!((fd_shift - 1.0).abs() < 0.15, "{fd_shift}");
        assert!((fd_wide - 4.0).abs() < 0.4, "{fd_wide}");
    }

    #[test]
    fn bad_shapes_are_invalid() {
        assert!(matches!(
            Gaussian::fit(&[1.0, 2.0, 3.0], 2),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            Gaussian::fit(&[1.0, 2.0], 2),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(Gaussian::fit(&[], 0), Err(Error::Invalid(_))));
    }
}
