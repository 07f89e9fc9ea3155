//! The floor: every metric between two disjoint real sets of the sample count.
//!
//! A metric value means little alone: FD and KID have estimation bias and noise that depend
//! on `n`, label entropy is not exactly `ln 10` for real data, and real images have a typical
//! distance to their nearest training image. So `ddm eval` draws `2n` *distinct* real items
//! from the reference pool with a fixed seed ([`disjoint_draw`]): set **A** (the first `n`) is
//! the reference the samples are compared with, set **B** (the other `n`) plays the samples.
//! `metric(B, A)` is the floor, the score of a perfect generator at this `n`; a generator is
//! judged by how close `metric(samples, A)` comes to it.

use ddm_core::Rng;

use super::kid::below;
use crate::error::{Error, Result};

/// Seed of the floor's draw (and of KID's subsets) unless `--seed` says otherwise.
pub const DEFAULT_EVAL_SEED: u64 = 0x00ee_7a15;

/// Indices of the two disjoint sets of the floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloorSets {
    /// Set A, the reference: `n` indices into the pool.
    pub reference: Vec<usize>,
    /// Set B, the stand-in for the samples: `n` other indices into the pool.
    pub stand_in: Vec<usize>,
}

/// Draws `2n` distinct indices from `0..pool` with `Rng::new(seed)` (a partial Fisher-Yates
/// shuffle, so every subset is equally likely): the first `n` are set A, the next `n` set B.
///
/// # Errors
/// [`Error::Invalid`] when `n` is 0 or `2n > pool`, saying how many items the floor needs.
pub fn disjoint_draw(pool: usize, n: usize, seed: u64) -> Result<FloorSets> {
    if n == 0 {
        return Err(Error::Invalid("the floor needs at least one sample".into()));
    }
    if n.checked_mul(2).is_none_or(|twice| twice > pool) {
        return Err(Error::Invalid(format!(
            "the floor needs 2 x {n} distinct real items but the reference pool has {pool}; \
             evaluate at most {} samples (--num)",
            pool / 2
        )));
    }
    let mut rng = Rng::new(seed);
    let mut order: Vec<usize> = (0..pool).collect();
    for i in 0..2 * n {
        let j = i + below(&mut rng, pool - i);
        order.swap(i, j);
    }
    order.truncate(2 * n);
    let stand_in = order.split_off(n);
    Ok(FloorSets {
        reference: order,
        stand_in,
    })
}

/// Rows `indices` of the row-major buffer `values` with `row_len` values per row, in order.
pub fn gather_rows(values: &[f32], row_len: usize, indices: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(indices.len() * row_len);
    for &i in indices {
        out.extend_from_slice(&values[i * row_len..(i + 1) * row_len]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_two_sets_are_disjoint_distinct_and_in_range() {
        for (pool, n) in [(1797, 898), (10_000, 1000), (2, 1), (100, 37)] {
            let sets = disjoint_draw(pool, n, 7).unwrap();
            assert_eq!((sets.reference.len(), sets.stand_in.len()), (n, n));
            let a: HashSet<usize> = sets.reference.iter().copied().collect();
            let b: HashSet<usize> = sets.stand_in.iter().copied().collect();
            assert_eq!((a.len(), b.len()), (n, n), "duplicates within a set");
            assert!(a.is_disjoint(&b), "pool {pool}, n {n}");
            assert!(a.iter().chain(&b).all(|&i| i < pool));
        }
    }

    #[test]
    fn the_draw_is_fixed_by_the_seed_and_spread_over_the_pool() {
        let first = disjoint_draw(10_000, 500, 3).unwrap();
        assert_eq!(first, disjoint_draw(10_000, 500, 3).unwrap());
        assert_ne!(first, disjoint_draw(10_000, 500, 4).unwrap());
        // Not a prefix of the pool: both sets reach into its second half.
        assert!(first.reference.iter().any(|&i| i >= 5000));
        assert!(first.stand_in.iter().any(|&i| i >= 5000));
    }

    #[test]
    fn a_pool_too_small_for_two_sets_is_a_clear_error() {
        let err = disjoint_draw(1797, 899, 0).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)));
        let text = err.to_string();
        assert!(text.contains("2 x 899") && text.contains("1797") && text.contains("898"));
        assert!(disjoint_draw(10, 0, 0).is_err());
        assert!(disjoint_draw(10, usize::MAX, 0).is_err());
    }

    #[test]
    fn gather_rows_picks_rows_in_order() {
        let values = [0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
        assert_eq!(gather_rows(&values, 2, &[2, 0]), vec![20.0, 21.0, 0.0, 1.0]);
    }
}
