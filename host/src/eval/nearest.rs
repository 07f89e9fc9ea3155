//! Mean distance from each sample to its nearest training image: catches memorisation.
//!
//! In pixel space (values as stored, `[-1, 1]` for real images), the L2 distance from each
//! query to its nearest reference vector, averaged over the queries. A generator that copies
//! its training images scores far *below* the floor (held-out real images against the same
//! reference); one that produces noise or smudges scores far above it.
//!
//! The search is exact and chunked: squared distances come from `|q|^2 + |r|^2 - 2 q·r` with
//! matrix products over blocks of [`CHUNK`] reference vectors (never an `n x N` matrix), and
//! the winning distance of each query is then recomputed directly in `f64`, so a copy scores
//! exactly 0.

use nalgebra::DMatrix;

use super::frechet::rows;
use crate::error::Result;

/// Reference vectors per block of the search.
pub const CHUNK: usize = 2048;

/// For each query (row-major `[q, dim]`), the index of its nearest reference vector
/// (`[r, dim]`) and their L2 distance.
///
/// # Errors
/// [`Error::Invalid`](crate::Error::Invalid) when either buffer is not whole rows of `dim` or
/// is empty.
pub fn nearest_neighbours(
    queries: &[f32],
    reference: &[f32],
    dim: usize,
) -> Result<Vec<(usize, f64)>> {
    let q = rows(queries, dim, 1, "nearest-neighbour search")?;
    let r = rows(reference, dim, 1, "nearest-neighbour search")?;
    // dim x q, column i = query i; transposed to q x dim for the products.
    let query_matrix = DMatrix::from_column_slice(dim, q, queries).transpose();
    let query_norms: Vec<f32> = query_matrix
        .row_iter()
        .map(|row| row.norm_squared())
        .collect();
    let mut best = vec![(0usize, f32::INFINITY); q];
    for start in (0..r).step_by(CHUNK) {
        let len = CHUNK.min(r - start);
        let block = &reference[start * dim..(start + len) * dim];
        let block_matrix = DMatrix::from_column_slice(dim, len, block);
        let block_norms: Vec<f32> = block_matrix
            .column_iter()
            .map(|col| col.norm_squared())
            .collect();
        // q x len, column-major: walk each column (one reference vector against every query).
        let dots = &query_matrix * &block_matrix;
        for (j, (&norm, column)) in block_norms.iter().zip(dots.column_iter()).enumerate() {
            for ((entry, &query_norm), &dot) in best.iter_mut().zip(&query_norms).zip(column) {
                let squared = query_norm + norm - 2.0 * dot;
                if squared < entry.1 {
                    *entry = (start + j, squared);
                }
            }
        }
    }
    Ok(best
        .into_iter()
        .enumerate()
        .map(|(i, (j, _))| {
            let query = &queries[i * dim..(i + 1) * dim];
            let neighbour = &reference[j * dim..(j + 1) * dim];
            (j, euclidean(query, neighbour))
        })
        .collect())
}

/// The mean over the queries of the distance to their nearest reference vector (see the
/// [module docs](self)).
///
/// # Errors
/// As [`nearest_neighbours`].
pub fn mean_nearest_distance(queries: &[f32], reference: &[f32], dim: usize) -> Result<f64> {
    let found = nearest_neighbours(queries, reference, dim)?;
    Ok(found.iter().map(|&(_, d)| d).sum::<f64>() / found.len() as f64)
}

fn euclidean(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use ddm_core::Rng;

    #[test]
    fn matches_brute_force_across_chunk_boundaries() {
        let dim = 5;
        let mut rng = Rng::new(3);
        let reference: Vec<f32> = (0..(CHUNK + 300) * dim).map(|_| rng.normal()).collect();
        let queries: Vec<f32> = (0..40 * dim).map(|_| rng.normal()).collect();
        let found = nearest_neighbours(&queries, &reference, dim).unwrap();
        for (i, &(index, distance)) in found.iter().enumerate() {
            let query = &queries[i * dim..(i + 1) * dim];
            let (best, best_distance) = reference
                .chunks_exact(dim)
                .map(|r| euclidean(query, r))
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap();
            assert_eq!(index, best, "query {i}");
            assert!((distance - best_distance).abs() < 1e-12);
        }
    }

    #[test]
    fn copies_score_exactly_zero_and_noise_scores_higher() {
        let dim = 64;
        let mut rng = Rng::new(5);
        let reference: Vec<f32> = (0..500 * dim).map(|_| rng.uniform() * 2.0 - 1.0).collect();
        let copies = reference[100 * dim..200 * dim].to_vec();
        assert_eq!(
            mean_nearest_distance(&copies, &reference, dim).unwrap(),
            0.0
        );
        let noisy: Vec<f32> = copies.iter().map(|v| v + 0.2 * rng.normal()).collect();
        let noisier: Vec<f32> = copies.iter().map(|v| v + 0.5 * rng.normal()).collect();
        let d1 = mean_nearest_distance(&noisy, &reference, dim).unwrap();
        let d2 = mean_nearest_distance(&noisier, &reference, dim).unwrap();
        assert!(0.0 < d1 && d1 < d2, "{d1} {d2}");
    }

    #[test]
    fn empty_or_ragged_input_is_invalid() {
        assert!(matches!(
            nearest_neighbours(&[], &[1.0, 2.0], 2),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            nearest_neighbours(&[1.0, 2.0, 3.0], &[1.0, 2.0], 2),
            Err(Error::Invalid(_))
        ));
    }
}
