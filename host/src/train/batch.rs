//! Training batches: data samples, timesteps and noise drawn from one random stream.

use ddm_core::{LossWeighting, Prediction, Rng, Schedule};

use crate::data::Dataset;

/// One batch of `n` noised samples with their targets, row-major `[n, sample_len]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Number of samples.
    pub n: usize,
    /// Noisy inputs `x_t = a_t x0 + s_t eps`.
    pub x_t: Vec<f32>,
    /// Training timestep of each sample, as `f32`.
    pub t: Vec<f32>,
    /// What the network must output (eps, x0 or v).
    pub target: Vec<f32>,
    /// Loss weight of each sample.
    pub weight: Vec<f32>,
    /// For a class-conditional model, each sample's class label, or the number of classes
    /// (the "no class" label) where the label was dropped; `None` for unconditional models.
    pub class: Option<Vec<u32>>,
}

/// What a class-conditional model sees of the labels: `classes` classes, each label dropped
/// (replaced by `classes`, "no class") with probability `dropout`, so that one network learns
/// the conditional and the unconditional prediction (Ho & Salimans 2022).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelDropout {
    /// Number of classes (labels are `0..classes`).
    pub classes: u32,
    /// Probability of dropping a label, in `[0, 1]`.
    pub dropout: f32,
}

/// Draws a batch of `n` samples from `rng`, in this order: for each sample a data index
/// (uniform, with replacement) and a timestep (uniform in `0..T`); then the noise of all
/// samples, row by row; then, with `labels`, one uniform per sample that decides whether its
/// label is dropped. Noising and targets are computed in `f32` with the schedule's `a_t`,
/// `s_t` rounded to `f32`.
///
/// # Panics
/// With `labels` when the data set has no labels (the trainer checks this first).
pub fn draw(
    data: &Dataset,
    schedule: &Schedule<'_>,
    (prediction, weighting): (Prediction, LossWeighting),
    labels: Option<LabelDropout>,
    n: usize,
    rng: &mut Rng,
) -> Batch {
    let len = data.sample_len();
    let count = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let steps = u32::try_from(schedule.train_steps()).unwrap_or(u32::MAX);
    let picks: Vec<(usize, usize)> = (0..n)
        .map(|_| {
            let index = rng.below(count) as usize;
            let t = rng.below(steps) as usize;
            (index, t)
        })
        .collect();
    let mut noise = vec![0.0f32; n * len];
    rng.fill_normal(&mut noise);
    let mut batch = Batch {
        n,
        x_t: Vec::with_capacity(n * len),
        t: Vec::with_capacity(n),
        target: Vec::with_capacity(n * len),
        weight: Vec::with_capacity(n),
        class: labels.map(|dropout| {
            let known = data.labels.as_deref().expect("a labelled data set");
            picks
                .iter()
                .map(|&(index, _)| {
                    let dropped = rng.uniform() < dropout.dropout;
                    if dropped {
                        dropout.classes
                    } else {
                        known[index]
                    }
                })
                .collect()
        }),
    };
    for ((index, t), eps_row) in picks.into_iter().zip(noise.chunks_exact(len)) {
        let (a, s) = (schedule.signal(t) as f32, schedule.noise(t) as f32);
        for (&x0, &eps) in data.sample(index).iter().zip(eps_row) {
            batch.x_t.push(a * x0 + s * eps);
            batch.target.push(prediction.target(x0, eps, a, s));
        }
        batch.t.push(t as f32);
        batch.weight.push(weighting.weight(schedule, t, prediction));
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule_args::ScheduleSpec;

    #[test]
    fn batches_are_seeded_and_consistent() {
        let data = Dataset {
            name: "test".into(),
            shape: vec![2],
            values: vec![1.0, -1.0, 0.5, 0.5],
            labels: None,
        };
        let table = ScheduleSpec::default().alphas_cumprod().unwrap();
        let schedule = Schedule::new(&table).unwrap();
        let draw_with = |seed, prediction| {
            draw(
                &data,
                &schedule,
                (prediction, LossWeighting::Simple),
                None,
                8,
                &mut Rng::new(seed),
            )
        };
        let a = draw_with(1, Prediction::X0);
        assert_eq!(a, draw_with(1, Prediction::X0));
        assert_ne!(a.x_t, draw_with(2, Prediction::X0).x_t);
        assert_eq!((a.x_t.len(), a.t.len(), a.weight.len()), (16, 8, 8));
        // x0 targets are data rows; x_t = a x0 + s eps for eps recovered from eps targets.
        let eps = draw_with(1, Prediction::Eps);
        for i in 0..8 {
            let row = &a.target[2 * i..2 * i + 2];
            assert!(row == [1.0, -1.0] || row == [0.5, 0.5]);
            let t = a.t[i] as usize;
            let (sa, ss) = (schedule.signal(t) as f32, schedule.noise(t) as f32);
            for (d, &x0) in row.iter().enumerate() {
                let expected = sa * x0 + ss * eps.target[2 * i + d];
                assert_eq!(a.x_t[2 * i + d], expected);
            }
        }
    }
}
