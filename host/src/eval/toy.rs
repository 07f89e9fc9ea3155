//! Metrics for the 2-D toys: sliced and exact 2-Wasserstein distances, RBF-MMD and mode
//! coverage.
//!
//! All functions take point sets as row-major `[n, 2]` buffers.
//!
//! - **Sliced 2-Wasserstein** ([`sliced_wasserstein`]): `sqrt(mean_k W2(<x, u_k>, <y, u_k>)^2)`
//!   over [`SLICED_PROJECTIONS`] unit directions `u_k` at angles drawn uniformly in `[0, π)`
//!   from `Rng::new(`[`SLICED_SEED`]`)` (fixed, so every run projects on the same lines); each
//!   1-D distance is exact (sorted points matched in order). Needs equal set sizes.
//! - **Exact 2-Wasserstein** ([`exact_w2`]): for equal sizes `n <= `[`EXACT_W2_MAX`]`, the
//!   optimal assignment between the two sets under squared Euclidean cost (Jonker-Volgenant,
//!   the `lapjv` crate), `W2 = sqrt(mean assigned squared distance)`. The solver sees the costs
//!   as integers (scaled by the largest power of 2 that keeps `n` times the largest cost below
//!   `2^52`, then rounded), so its sums are exact in `f64` and its comparisons free of
//!   round-off loops; the distance is then computed from the exact costs of its assignment.
//! - **RBF-MMD** ([`mmd2_rbf`]): the unbiased `MMD^2` with `k(x, y) = exp(-|x - y|^2 / (2 σ^2))`,
//!   `σ` the median heuristic [`median_bandwidth`] of the *reference* set (the median pairwise
//!   distance among its first [`BANDWIDTH_POINTS`] points), so a sample set and the floor are
//!   scored with the same kernel. That kernel is about as wide as the toy: MMD sees mass moved
//!   on the toy's own scale (missing modes, shifts, spread) but hardly a fine blur of a
//!   near-uniform toy such as the checkerboard, which the Wasserstein distances do see.
//! - **Mode coverage** ([`mode_coverage`]), rule:
//!   - `8gaussians`: the modes are the 8 known mixture means; each sample belongs to the
//!     nearest mean; expected share `1/8` each.
//!   - `moons`: the modes are the two moons; each sample takes the label of its nearest
//!     reference point (nearest-centroid would hand a moon's tip to the other moon); expected
//!     share: each moon's fraction of the reference set.
//!   - `swissroll`, `checkerboard` (no labels): the modes are the cells of a
//!     [`GRID`]` x `[`GRID`] grid over `[-1, 1]^2` that hold at least [`MIN_CELL_SHARE`] (1%)
//!     of the reference set; expected share: the cell's fraction of the reference set; samples
//!     outside the square count for no mode.
//!
//!   A mode is **covered** when it receives at least [`COVERED_FRACTION`] (20%) of its expected
//!   share of the samples (`count >= 0.2 * share * n`). Coverage is `covered / modes`.

use ddm_core::Rng;

use super::frechet::rows;
use crate::data::toy::{EIGHT_GAUSSIANS_MEANS, EIGHT_GAUSSIANS_WEIGHTS};
use crate::data::Toy;
use crate::error::{Error, Result};

/// Number of projection directions of [`sliced_wasserstein`].
pub const SLICED_PROJECTIONS: usize = 256;
/// Seed of the projection directions.
pub const SLICED_SEED: u64 = 0x5157;
/// Largest set size [`exact_w2`] accepts (the cost matrix is `n x n`, the solver `O(n^3)`).
pub const EXACT_W2_MAX: usize = 2000;
/// Reference points used for the median-heuristic bandwidth.
pub const BANDWIDTH_POINTS: usize = 1000;
/// Cells per side of the coverage grid for unlabeled toys.
pub const GRID: usize = 8;
/// Smallest share of the reference set that makes a grid cell a mode.
pub const MIN_CELL_SHARE: f64 = 0.01;
/// Share of its expected samples a mode needs to count as covered.
pub const COVERED_FRACTION: f64 = 0.2;

fn points(values: &[f32], what: &str) -> Result<usize> {
    rows(values, 2, 1, what)
}

fn equal_sizes(x: &[f32], y: &[f32], what: &str) -> Result<usize> {
    let (m, n) = (points(x, what)?, points(y, what)?);
    if m != n {
        return Err(Error::Invalid(format!(
            "{what} needs sets of equal size, got {m} and {n}"
        )));
    }
    Ok(n)
}

fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    let dx = f64::from(a[0]) - f64::from(b[0]);
    let dy = f64::from(a[1]) - f64::from(b[1]);
    dx * dx + dy * dy
}

/// The sliced 2-Wasserstein distance between two equal-size 2-D point sets (see the
/// [module docs](self)).
///
/// # Errors
/// [`Error::Invalid`] for ragged or empty buffers or different sizes.
pub fn sliced_wasserstein(x: &[f32], y: &[f32]) -> Result<f64> {
    let n = equal_sizes(x, y, "sliced Wasserstein")?;
    let mut rng = Rng::new(SLICED_SEED);
    let mut total = 0.0;
    let (mut px, mut py) = (vec![0.0f64; n], vec![0.0f64; n]);
    for _ in 0..SLICED_PROJECTIONS {
        let angle = std::f64::consts::PI * f64::from(rng.uniform());
        let (s, c) = angle.sin_cos();
        let project = |p: &[f32]| c * f64::from(p[0]) + s * f64::from(p[1]);
        for (out, p) in px.iter_mut().zip(x.chunks_exact(2)) {
            *out = project(p);
        }
        for (out, p) in py.iter_mut().zip(y.chunks_exact(2)) {
            *out = project(p);
        }
        px.sort_unstable_by(f64::total_cmp);
        py.sort_unstable_by(f64::total_cmp);
        total += px
            .iter()
            .zip(&py)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            / n as f64;
    }
    Ok((total / SLICED_PROJECTIONS as f64).sqrt())
}

/// The exact 2-Wasserstein distance between two equal-size 2-D point sets of at most
/// [`EXACT_W2_MAX`] points (see the [module docs](self)).
///
/// # Errors
/// [`Error::Invalid`] for ragged or empty buffers, different sizes, more than
/// [`EXACT_W2_MAX`] points, or (not expected) a solver failure.
pub fn exact_w2(x: &[f32], y: &[f32]) -> Result<f64> {
    let n = equal_sizes(x, y, "exact W2")?;
    if n > EXACT_W2_MAX {
        return Err(Error::Invalid(format!(
            "exact W2 is computed for at most {EXACT_W2_MAX} points, got {n}"
        )));
    }
    let assignment = optimal_assignment(x, y)?;
    let total: f64 = assignment
        .iter()
        .enumerate()
        .map(|(i, &j)| squared_distance(&x[2 * i..2 * i + 2], &y[2 * j..2 * j + 2]))
        .sum();
    Ok((total / n as f64).sqrt())
}

/// For each point `i` of `x`, the point of `y` it is matched with in a minimum-cost perfect
/// matching under (rounded) squared Euclidean cost. Equal sizes required.
fn optimal_assignment(x: &[f32], y: &[f32]) -> Result<Vec<usize>> {
    let n = x.len() / 2;
    let mut costs = lapjv::Matrix::from_shape_fn((n, n), |(i, j)| {
        squared_distance(&x[2 * i..2 * i + 2], &y[2 * j..2 * j + 2])
    });
    let largest = costs.iter().fold(0.0f64, |m, &c| m.max(c));
    if largest == 0.0 {
        return Ok((0..n).collect());
    }
    // The largest power of 2 with n * largest * scale <= 2^52: integer costs, exact sums.
    let scale = (2f64.powi(52) / (largest * n as f64)).log2().floor().exp2();
    costs.mapv_inplace(|c| (c * scale).round());
    let (rows, _) = lapjv::lapjv(&costs)
        .map_err(|e| Error::Invalid(format!("the assignment solver failed: {e:?}")))?;
    Ok(rows)
}

/// The median-heuristic RBF bandwidth of a reference set: the median pairwise distance among
/// its first [`BANDWIDTH_POINTS`] points; at least `1e-6` (so identical points still give a
/// usable kernel).
///
/// # Errors
/// [`Error::Invalid`] for a ragged buffer or fewer than 2 points.
pub fn median_bandwidth(reference: &[f32]) -> Result<f64> {
    let n = rows(reference, 2, 2, "the RBF bandwidth")?.min(BANDWIDTH_POINTS);
    let mut distances = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            distances.push(squared_distance(
                &reference[2 * i..2 * i + 2],
                &reference[2 * j..2 * j + 2],
            ));
        }
    }
    let middle = distances.len() / 2;
    let (_, median, _) = distances.select_nth_unstable_by(middle, f64::total_cmp);
    Ok(median.sqrt().max(1e-6))
}

/// The unbiased `MMD^2` between 2-D point sets `x` and `y` (at least 2 points each) with the
/// RBF kernel of `bandwidth` `σ` (see the [module docs](self)). Near 0 (either sign) for sets
/// from the same distribution.
///
/// # Errors
/// [`Error::Invalid`] for ragged buffers, fewer than 2 points, or a bandwidth that is not
/// positive.
pub fn mmd2_rbf(x: &[f32], y: &[f32], bandwidth: f64) -> Result<f64> {
    let m = rows(x, 2, 2, "RBF-MMD")?;
    let n = rows(y, 2, 2, "RBF-MMD")?;
    if !(bandwidth > 0.0 && bandwidth.is_finite()) {
        return Err(Error::Invalid(format!(
            "RBF-MMD needs a positive bandwidth, got {bandwidth}"
        )));
    }
    let gamma = 1.0 / (2.0 * bandwidth * bandwidth);
    let within = |set: &[f32]| {
        let mut sum = 0.0;
        for (i, a) in set.chunks_exact(2).enumerate() {
            for b in set.chunks_exact(2).skip(i + 1) {
                sum += (-gamma * squared_distance(a, b)).exp();
            }
        }
        2.0 * sum
    };
    let mut cross = 0.0;
    for a in x.chunks_exact(2) {
        for b in y.chunks_exact(2) {
            cross += (-gamma * squared_distance(a, b)).exp();
        }
    }
    let (m, n) = (m as f64, n as f64);
    Ok(within(x) / (m * (m - 1.0)) + within(y) / (n * (n - 1.0)) - 2.0 * cross / (m * n))
}

/// How many modes a sample set covers (see the [module docs](self) for the rule).
#[derive(Debug, Clone, PartialEq)]
pub struct Coverage {
    /// Modes that received at least [`COVERED_FRACTION`] of their expected share.
    pub covered: usize,
    /// Number of modes.
    pub modes: usize,
    /// Samples assigned to each mode.
    pub counts: Vec<usize>,
    /// Each mode's expected share of the samples (sums to at most 1).
    pub shares: Vec<f64>,
}

impl Coverage {
    /// `covered / modes`.
    pub fn fraction(&self) -> f64 {
        self.covered as f64 / self.modes as f64
    }
}

/// The mode coverage of `samples` for `toy`, with `reference` (row-major `[r, 2]`) a real set
/// and `reference_labels` its labels (required for `moons`, ignored otherwise).
///
/// # Errors
/// [`Error::Invalid`] for ragged or empty buffers, or `moons` without one label per
/// reference point.
pub fn mode_coverage(
    toy: Toy,
    samples: &[f32],
    reference: &[f32],
    reference_labels: Option<&[u32]>,
) -> Result<Coverage> {
    let n = points(samples, "mode coverage")?;
    let r = points(reference, "mode coverage")?;
    let (counts, shares) = match toy {
        Toy::EightGaussians => {
            let means: Vec<&[f32]> = EIGHT_GAUSSIANS_MEANS.chunks_exact(2).collect();
            let mut counts = vec![0; means.len()];
            for p in samples.chunks_exact(2) {
                counts[nearest_index(p, means.iter().copied())] += 1;
            }
            let shares = EIGHT_GAUSSIANS_WEIGHTS
                .iter()
                .map(|&w| f64::from(w))
                .collect();
            (counts, shares)
        }
        Toy::Moons => {
            let labels = reference_labels
                .filter(|labels| labels.len() == r)
                .ok_or_else(|| {
                    Error::Invalid("moons coverage needs one label per reference point".into())
                })?;
            let classes = 2;
            let mut counts = vec![0; classes];
            for p in samples.chunks_exact(2) {
                let nearest = nearest_index(p, reference.chunks_exact(2));
                counts[(labels[nearest] as usize).min(classes - 1)] += 1;
            }
            let mut shares = vec![0.0; classes];
            for &label in labels {
                shares[(label as usize).min(classes - 1)] += 1.0 / r as f64;
            }
            (counts, shares)
        }
        Toy::SwissRoll | Toy::Checkerboard => {
            let mut reference_counts = vec![0usize; GRID * GRID];
            for p in reference.chunks_exact(2) {
                if let Some(cell) = grid_cell(p) {
                    reference_counts[cell] += 1;
                }
            }
            let modes: Vec<usize> = (0..GRID * GRID)
                .filter(|&c| reference_counts[c] as f64 >= MIN_CELL_SHARE * r as f64)
                .collect();
            let mut counts = vec![0; modes.len()];
            for p in samples.chunks_exact(2) {
                if let Some(cell) = grid_cell(p) {
                    if let Ok(mode) = modes.binary_search(&cell) {
                        counts[mode] += 1;
                    }
                }
            }
            let shares = modes
                .iter()
                .map(|&c| reference_counts[c] as f64 / r as f64)
                .collect();
            (counts, shares)
        }
    };
    let covered = counts
        .iter()
        .zip(&shares)
        .filter(|(&count, &share)| count as f64 >= COVERED_FRACTION * share * n as f64)
        .count();
    Ok(Coverage {
        covered,
        modes: counts.len(),
        counts,
        shares,
    })
}

/// Index of the candidate nearest to `p` (the first of equals).
fn nearest_index<'a>(p: &[f32], candidates: impl Iterator<Item = &'a [f32]>) -> usize {
    let mut best = (0, f64::INFINITY);
    for (i, c) in candidates.enumerate() {
        let d = squared_distance(p, c);
        if d < best.1 {
            best = (i, d);
        }
    }
    best.0
}

/// The cell of the [`GRID`]` x `[`GRID`] grid over `[-1, 1]^2` holding `p` (row-major by
/// `y` then `x`), or `None` outside the square.
fn grid_cell(p: &[f32]) -> Option<usize> {
    let index = |v: f32| {
        let i = ((v + 1.0) * 0.5 * GRID as f32).floor();
        (0.0..GRID as f32).contains(&i).then_some(i as usize)
    };
    Some(index(p[1])? * GRID + index(p[0])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::toy::generate;

    fn toy(toy: Toy, n: usize, seed: u64) -> (Vec<f32>, Option<Vec<u32>>) {
        let data = generate(toy, n, seed).unwrap();
        (data.values, data.labels)
    }

    fn noisy(values: &[f32], std: f32, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        values.iter().map(|v| v + std * rng.normal()).collect()
    }

    #[test]
    fn exact_w2_matches_brute_force_on_tiny_sets() {
        let mut rng = Rng::new(9);
        for n in 1..=7 {
            let x: Vec<f32> = (0..2 * n).map(|_| rng.normal()).collect();
            let y: Vec<f32> = (0..2 * n).map(|_| rng.normal()).collect();
            let best = brute_force_cost(&x, &y);
            let expected = (best / n as f64).sqrt();
            let got = exact_w2(&x, &y).unwrap();
            assert!((got - expected).abs() < 1e-9, "n {n}: {got} vs {expected}");
        }
    }

    /// Brute force: the least total squared cost over all permutations.
    fn brute_force_cost(x: &[f32], y: &[f32]) -> f64 {
        fn search(x: &[f32], y: &[f32], i: usize, used: &mut Vec<bool>, cost: f64) -> f64 {
            let n = used.len();
            if i == n {
                return cost;
            }
            let mut best = f64::INFINITY;
            for j in 0..n {
                if !used[j] {
                    used[j] = true;
                    let c = squared_distance(&x[2 * i..2 * i + 2], &y[2 * j..2 * j + 2]);
                    best = best.min(search(x, y, i + 1, used, cost + c));
                    used[j] = false;
                }
            }
            best
        }
        search(x, y, 0, &mut vec![false; x.len() / 2], 0.0)
    }

    #[test]
    fn exact_w2_of_a_shifted_set_is_the_shift_length() {
        // Translating a set by v: the identity matching is optimal and W2 = |v|.
        let (x, _) = toy(Toy::Moons, 500, 1);
        let (dx, dy) = (0.3f32, -0.4f32);
        let y: Vec<f32> = x
            .chunks_exact(2)
            .flat_map(|p| [p[0] + dx, p[1] + dy])
            .collect();
        let w2 = exact_w2(&x, &y).unwrap();
        assert!((w2 - 0.5).abs() < 1e-6, "{w2}");
        assert!(exact_w2(&x, &x).unwrap() < 1e-9);
        assert_eq!(exact_w2(&[0.5; 8], &[0.5; 8]).unwrap(), 0.0);
        // Sliced W2 of a translation: sqrt(mean_k <v, u_k>^2) ~ |v| / sqrt(2).
        let sw = sliced_wasserstein(&x, &y).unwrap();
        assert!((sw - 0.5 / 2f64.sqrt()).abs() < 0.03, "{sw}");
    }

    #[test]
    fn exact_w2_handles_the_largest_size_and_refuses_larger() {
        let (x, _) = toy(Toy::EightGaussians, EXACT_W2_MAX, 1);
        let (y, _) = toy(Toy::EightGaussians, EXACT_W2_MAX, 2);
        let w2 = exact_w2(&x, &y).unwrap();
        assert!(w2 > 0.0 && w2 < 0.2, "{w2}");
        let (big, _) = toy(Toy::EightGaussians, EXACT_W2_MAX + 1, 3);
        let err = exact_w2(&big, &big).unwrap_err();
        assert!(err.to_string().contains("at most 2000"), "{err}");
        assert!(matches!(exact_w2(&x, &x[..20]), Err(Error::Invalid(_))));
    }

    /// Every toy metric ranks real < noisy < very noisy, and missing modes worse than real.
    #[test]
    fn toy_metrics_rank_degradations() {
        for which in Toy::ALL {
            let n = 600;
            let (reference, labels) = toy(which, n, 1);
            let (real, _) = toy(which, n, 2);
            let noisy_set = noisy(&real, 0.1, 3);
            let very_noisy = noisy(&real, 0.4, 4);
            let bandwidth = median_bandwidth(&reference).unwrap();
            let labels = labels.as_deref();
            let scores = |set: &[f32]| {
                (
                    sliced_wasserstein(set, &reference).unwrap(),
                    exact_w2(set, &reference).unwrap(),
                    mmd2_rbf(set, &reference, bandwidth).unwrap(),
                )
            };
            let (s0, w0, m0) = scores(&real);
            let (s1, w1, m1) = scores(&noisy_set);
            let (s2, w2, m2) = scores(&very_noisy);
            assert!(s0 < s1 && s1 < s2, "{which} sliced: {s0} {s1} {s2}");
            assert!(w0 < w1 && w1 < w2, "{which} W2: {w0} {w1} {w2}");
            assert!(m1 < m2 && m0 < m2, "{which} MMD: {m0} {m1} {m2}");
            // The median-heuristic kernel is as wide as the toy itself: it misses a blur of
            // 0.1 on the near-uniform checkerboard (within the estimate's noise at n = 600).
            if which != Toy::Checkerboard {
                assert!(m0 < m1, "{which} MMD: {m0} {m1}");
            }
            assert!(m0.abs() < 0.01, "{which} MMD of real sets: {m0}");

            let full = mode_coverage(which, &real, &reference, labels).unwrap();
            assert_eq!(full.covered, full.modes, "{which}: {full:?}");

            // Drop a mode (class 0 of a labelled toy, else the half-plane x < 0.05),
            // duplicating the other points.
            let real_labels = generate(which, n, 2).unwrap().labels;
            let missing: Vec<f32> = real
                .chunks_exact(2)
                .enumerate()
                .filter(|(i, p)| match &real_labels {
                    Some(l) => l[*i] != 0,
                    None => p[0] > 0.05,
                })
                .flat_map(|(_, p)| p.iter().copied())
                .collect::<Vec<f32>>()
                .into_iter()
                .cycle()
                .take(real.len())
                .collect();
            let (sd, wd, md) = scores(&missing);
            assert!(
                sd > s0 && wd > w0 && md > m0,
                "{which} missing: {sd} {wd} {md}"
            );
            let partial = mode_coverage(which, &missing, &reference, labels).unwrap();
            assert!(partial.covered < full.covered, "{which}: {partial:?}");
        }
    }

    #[test]
    fn eight_gaussians_coverage_counts_missing_modes() {
        let data = generate(Toy::EightGaussians, 4000, 5).unwrap();
        let labels = data.labels.unwrap();
        // Keep only modes 0..6; a trickle (5%) of mode 6 is below the 20% rule, mode 7 absent.
        let mut kept = Vec::new();
        let mut trickle = 0;
        for (p, &l) in data.values.chunks_exact(2).zip(&labels) {
            if l < 6 || (l == 6 && trickle < 12) {
                trickle += usize::from(l == 6);
                kept.extend_from_slice(p);
            }
        }
        let reference = generate(Toy::EightGaussians, 1000, 6).unwrap();
        let coverage = mode_coverage(Toy::EightGaussians, &kept, &reference.values, None).unwrap();
        assert_eq!((coverage.covered, coverage.modes), (6, 8), "{coverage:?}");
        assert_eq!(coverage.counts[7], 0);
        assert!((coverage.fraction() - 0.75).abs() < 1e-12);
    }

    #[test]
    fn grid_modes_for_the_checkerboard_are_its_dark_cells() {
        let reference = generate(Toy::Checkerboard, 4000, 1).unwrap();
        let coverage = mode_coverage(
            Toy::Checkerboard,
            &reference.values,
            &reference.values,
            None,
        )
        .unwrap();
        // 8 dark squares of 2x2 cells each.
        assert_eq!((coverage.covered, coverage.modes), (32, 32));
        assert_eq!(grid_cell(&[-1.0, -1.0]), Some(0));
        assert_eq!(grid_cell(&[0.99, 0.99]), Some(GRID * GRID - 1));
        assert_eq!(grid_cell(&[1.0, 0.0]), None);
        assert_eq!(grid_cell(&[0.0, -1.5]), None);
    }

    #[test]
    fn bad_inputs_are_invalid() {
        assert!(matches!(
            sliced_wasserstein(&[0.0; 4], &[0.0; 6]),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            sliced_wasserstein(&[0.0; 3], &[0.0; 3]),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            mmd2_rbf(&[0.0; 4], &[0.0; 4], 0.0),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            median_bandwidth(&[0.0; 2]),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            mode_coverage(Toy::Moons, &[0.0; 4], &[0.0; 4], None),
            Err(Error::Invalid(_))
        ));
    }
}
