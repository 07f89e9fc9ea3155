//! Distillation: a student that generates in a few network calls, trained on its teacher's
//! deterministic DDIM steps.
//!
//! Both methods train the student, initialised with the teacher's weights, on pairs
//! `(z_t, t)` and a clean-sample target `x~`; the loss is the student's own prediction type
//! against the output that would give `x~` at `z_t` (for v: `(a_t z_t - x~) / s_t`), with
//! weight 1 (for v that is Salimans & Ho's "SNR + 1" weighting of the x0 error). Every
//! teacher step is the core's DDIM step ([`ddm_core::sampler::Ddim`], eta 0), with the
//! teacher's x0 estimates clamped to `[-clip, clip]` when a clip radius is set.
//!
//! - **Progressive** (Salimans & Ho 2022, Algorithm 2): rounds that halve the step count.
//!   Round `r` starts from the teacher grid `G` of `K / 2^r` trailing timesteps; its student
//!   learns, from `z_t` at `t = G[2i]`, the single DDIM step that lands where the teacher's two
//!   steps `G[2i] -> G[2i+1] -> G[2i+2]` land (`x0` after the last):
//!   `x~ = (z'' - (s''/s_t) z_t) / (a'' - (s''/s_t) a_t)`. At the end of a round the
//!   student's EMA becomes the next round's teacher.
//! - **Consistency** (Song et al. 2023, consistency distillation with a DDIM solver): one
//!   round on a grid of `K` trailing timesteps; from `z_t` at `t = G[n]` the teacher takes one
//!   step to `G[n+1]` and the target is the student's own x0 estimate there, without gradient
//!   (the stop-gradient target network of improved consistency training, EMA decay 0), or the
//!   teacher's x0 after the last grid point (the boundary condition).
//!
//! The student is trained for DDIM on `N` trailing timesteps, which must be every `K / N`-th
//! timestep of the first grid (true on T = 1000 for every power-of-two `K` and `N`;
//! [`DistillConfig::validate`] checks it); a consistency student may sample on other
//! timesteps of its grid ([`DistillConfig::timesteps`]) and with re-noising
//! ([`DistillConfig::eta`]).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use ddm_core::sampler::Ddim;
use ddm_core::timesteps::{GivenTimesteps, MAX_GIVEN_STEPS};
use ddm_core::{Prediction, Rng, Sampler, SamplerConfig, SamplerKind, Schedule, Spacing};
use ddm_export::graph::Graph;
use serde::{Deserialize, Serialize};

use super::batch::Batch;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{forward, Params};

/// The distillation methods by name, as on the command line and in run configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistillMethod {
    /// Progressive distillation: rounds that halve the steps (Salimans & Ho 2022).
    #[default]
    Progressive,
    /// Consistency distillation with a DDIM solver (Song et al. 2023).
    Consistency,
}

impl DistillMethod {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DistillMethod::Progressive => "progressive",
            DistillMethod::Consistency => "consistency",
        }
    }
}

/// How a student run was distilled: stored in its `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// The method.
    pub method: DistillMethod,
    /// The teacher's run folder, as given.
    pub teacher: PathBuf,
    /// The teacher run's step when its weights were taken.
    pub teacher_step: u64,
    /// Whether the teacher's EMA weights (rather than its trained ones) were taken.
    pub teacher_ema: bool,
    /// The student's network calls per sample `N`.
    pub steps: u32,
    /// The first teacher's DDIM steps `K` (progressive: `N 2^R` for `R` rounds; consistency:
    /// the grid).
    pub teacher_steps: u32,
    /// Optimisation steps per round (consistency has one round).
    pub updates_per_round: u64,
    /// Clamp the teacher's x0 estimates to `[-clip, clip]` (`None`: no clamp).
    pub teacher_clip: Option<f32>,
    /// DDIM's eta in the student's sampler: given, or measured at the end of the
    /// distillation (`ddm distill`, [`choose_eta`](super::student::choose_eta)); `None`
    /// (deterministic, 0) until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<f32>,
    /// The timesteps of the student's sampler, noisiest first: given, or measured at the end
    /// of a consistency distillation (`ddm distill`,
    /// [`choose_timesteps`](super::student::choose_timesteps)); `None`: the `N` trailing
    /// timesteps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timesteps: Option<Vec<u32>>,
}

impl DistillConfig {
    /// Number of rounds: `log2(K / N)` for progressive distillation, 1 for consistency.
    pub fn rounds(&self) -> u64 {
        match self.method {
            DistillMethod::Progressive => {
                u64::from((self.teacher_steps / self.steps.max(1)).max(1).ilog2())
            }
            DistillMethod::Consistency => 1,
        }
    }

    /// Total optimisation steps: rounds x updates per round.
    pub fn total_updates(&self) -> u64 {
        self.rounds() * self.updates_per_round
    }

    /// The round of optimisation step `index` (0-based).
    pub fn round_of(&self, index: u64) -> u64 {
        (index / self.updates_per_round.max(1)).min(self.rounds().saturating_sub(1))
    }

    /// The teacher's DDIM steps in round `round`: `K / 2^round` (consistency: `K`).
    pub fn teacher_steps_in(&self, round: u64) -> u32 {
        match self.method {
            DistillMethod::Progressive => self.teacher_steps >> round,
            DistillMethod::Consistency => self.teacher_steps,
        }
    }

    /// The student's sampler: DDIM with [`DistillConfig::eta`] on
    /// [`DistillConfig::timesteps`] (those [`DistillConfig::validate`] accepts; otherwise,
    /// and without them, on `N` trailing timesteps), no clamp.
    pub fn sampler(&self) -> SamplerConfig {
        let given = self
            .timesteps
            .as_deref()
            .and_then(|timesteps| GivenTimesteps::new(timesteps).ok())
            .filter(|given| given.len() == self.steps as usize);
        SamplerConfig {
            eta: self.eta.unwrap_or(0.0),
            ..SamplerConfig::with_spacing(
                SamplerKind::Ddim,
                self.steps,
                given.map_or(Spacing::Trailing, Spacing::Given),
            )
        }
    }

    /// Checks that the configuration can distil a network predicting `prediction` on
    /// `schedule`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the problem: an eps teacher (its x0 estimate from pure noise
    /// is its error times `1 / a_{T-1}`: a few-step student cannot start there); `N = 0`;
    /// `K` not `N` times a power of two (progressive, at least `2N`) or below `N`
    /// (consistency), or above `T`; grids that do not nest on this schedule; no updates; a
    /// clip radius that is not positive; an eta that is negative or not finite; timesteps
    /// that are not `N` strictly descending ones below `T`.
    pub fn validate(&self, schedule: &Schedule<'_>, prediction: Prediction) -> Result<()> {
        let fail = |what: String| Err(Error::Invalid(what));
        if prediction == Prediction::Eps {
            return fail(
                "distillation needs a teacher predicting v or x0: an eps network's x0 estimate \
                 from pure noise is its error divided by a_(T-1), which a few-step student \
                 cannot start from (train the teacher with --prediction v)"
                    .into(),
            );
        }
        let (n, k) = (self.steps, self.teacher_steps);
        if n == 0 || self.updates_per_round == 0 {
            return fail("--steps and --updates must be > 0".into());
        }
        if self
            .teacher_clip
            .is_some_and(|c| !(c > 0.0 && c.is_finite()))
        {
            return fail("--teacher-clip-sample must be positive".into());
        }
        if self.eta.is_some_and(|eta| !(eta >= 0.0 && eta.is_finite())) {
            return fail("--eta must be finite and >= 0".into());
        }
        let train_steps = schedule.train_steps();
        if let Some(timesteps) = &self.timesteps {
            let valid = timesteps.len() == n as usize
                && timesteps
                    .first()
                    .is_some_and(|&t| (t as usize) < train_steps)
                && GivenTimesteps::new(timesteps).is_ok();
            if !valid {
                return fail(format!(
                    "the student's timesteps {timesteps:?} must be --steps {n} (1 to \
                     {MAX_GIVEN_STEPS}) strictly descending timesteps below {train_steps}"
                ));
            }
        }
        if k as usize > train_steps {
            return fail(format!(
                "--teacher-steps {k} exceeds the schedule's {train_steps} training steps"
            ));
        }
        match self.method {
            DistillMethod::Progressive => {
                if k < 2 * n || k % n != 0 || !(k / n).is_power_of_two() {
                    return fail(format!(
                        "progressive distillation halves the steps each round: --teacher-steps \
                         {k} must be --steps {n} times a power of two, at least 2"
                    ));
                }
                for round in 0..self.rounds() {
                    let teacher = trailing(schedule, self.teacher_steps_in(round))?;
                    let student = trailing(schedule, self.teacher_steps_in(round) / 2)?;
                    check_nested(&teacher, &student)?;
                }
            }
            DistillMethod::Consistency => {
                if k < n {
                    return fail(format!("--teacher-steps {k} must be at least --steps {n}"));
                }
                check_nested(&trailing(schedule, k)?, &trailing(schedule, n)?)?;
            }
        }
        Ok(())
    }
}

/// The `steps` trailing timesteps of `schedule`, descending.
///
/// # Errors
/// The core's step-count errors.
pub fn trailing(schedule: &Schedule<'_>, steps: u32) -> Result<Vec<u32>> {
    let mut timesteps = vec![0u32; steps as usize];
    SamplerConfig::with_spacing(SamplerKind::Ddim, steps, Spacing::Trailing)
        .timesteps(schedule, &mut timesteps)?;
    Ok(timesteps)
}

/// Checks that `coarse` is every `fine.len() / coarse.len()`-th entry of `fine`, from the
/// first.
fn check_nested(fine: &[u32], coarse: &[u32]) -> Result<()> {
    let stride = fine.len() / coarse.len().max(1);
    let nested = fine.len().is_multiple_of(coarse.len().max(1))
        && coarse
            .iter()
            .enumerate()
            .all(|(i, &t)| fine.get(i * stride) == Some(&t));
    if nested {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "the {}-step trailing timesteps are not every {stride}th of the {}-step ones on \
             this schedule: choose step counts whose ratio divides evenly (powers of two on \
             T = 1000)",
            coarse.len(),
            fine.len()
        )))
    }
}

/// The signal and noise scales `(a, s)` at `t`, or `(1, 0)` at the clean end (`None`).
pub fn levels(schedule: &Schedule<'_>, t: Option<u32>) -> (f32, f32) {
    match t {
        Some(t) => (
            schedule.signal(t as usize) as f32,
            schedule.noise(t as usize) as f32,
        ),
        None => (1.0, 0.0),
    }
}

/// The clean sample `x~` whose single deterministic DDIM step from `z_t` (levels `(a, s)`)
/// lands on `z_end` (levels `(a_end, s_end)`): `(z_end - (s_end/s) z_t) / (a_end -
/// (s_end/s) a)`. Needs `s > 0` and the end less noisy than `t`.
pub fn one_step_target(
    z_t: f32,
    z_end: f32,
    (a, s): (f32, f32),
    (a_end, s_end): (f32, f32),
) -> f32 {
    let ratio = s_end / s;
    (z_end - ratio * z_t) / (a_end - ratio * a)
}

/// One deterministic DDIM step per row of `x` (`[n, len]`) from `from[i]` to `to[i]`
/// (`None`: to the clean sample), given the network's `output` at `from`: the core's
/// [`Ddim`] with eta 0 and clip radius `clip`.
///
/// # Errors
/// The core's errors for timesteps that do not descend.
pub fn ddim_steps(
    schedule: &Schedule<'_>,
    prediction: Prediction,
    clip: Option<f32>,
    from: &[u32],
    to: &[Option<u32>],
    x: &mut [f32],
    output: &[f32],
) -> Result<()> {
    let len = x.len() / from.len().max(1);
    let mut unused = Rng::new(0);
    let rows = x.chunks_exact_mut(len).zip(output.chunks_exact(len));
    for ((row, out), (&t, &end)) in rows.zip(from.iter().zip(to)) {
        let pair = [t, end.unwrap_or(0)];
        let timesteps = if end.is_some() { &pair[..] } else { &pair[..1] };
        Ddim::new(*schedule, timesteps, prediction, 0.0, clip)?.step(row, out, &mut unused)?;
    }
    Ok(())
}

/// The x0 estimates `(x_t, output)` imply, row by row at `t[i]`.
fn x0_estimates(
    schedule: &Schedule<'_>,
    prediction: Prediction,
    t: &[u32],
    x: &[f32],
    output: &[f32],
) -> Vec<f32> {
    let len = x.len() / t.len().max(1);
    let mut x0 = Vec::with_capacity(x.len());
    for (i, &step) in t.iter().enumerate() {
        let (a, s) = levels(schedule, Some(step));
        for (&value, &out) in x[i * len..(i + 1) * len]
            .iter()
            .zip(&output[i * len..(i + 1) * len])
        {
            x0.push(prediction.to_x0_eps(value, out, a, s).0);
        }
    }
    x0
}

/// A network's outputs for `x` (`[n, ...input shape]` row-major) at timesteps `t`, as values
/// (no gradient flows from them): what [`draw`] asks of teacher and student.
///
/// # Errors
/// The executor's errors.
pub fn predict(
    graph: &Graph,
    params: &Params,
    x: &[f32],
    t: &[u32],
    device: &Device,
) -> Result<Vec<f32>> {
    let mut shape = vec![t.len()];
    shape.extend_from_slice(graph.input_shape());
    let x = Tensor::from_vec(x.to_vec(), shape.as_slice(), device)?;
    let times: Vec<f32> = t.iter().map(|&t| t as f32).collect();
    let t = Tensor::from_vec(times, t.len(), device)?;
    let output = forward(graph, params, &x, &t, None)?;
    Ok(output.flatten_all()?.to_vec1::<f32>()?)
}

/// A network as [`draw`] uses it: outputs for rows `x` (`[n, len]`) at timesteps `t` (`[n]`).
pub type Network<'a> = dyn FnMut(&[f32], &[u32]) -> Result<Vec<f32>> + 'a;

/// What a distillation batch is computed with, besides the networks.
#[derive(Debug, Clone, Copy)]
pub struct DistillInputs<'a> {
    /// The configuration.
    pub config: &'a DistillConfig,
    /// The round of the step.
    pub round: u64,
    /// The schedule.
    pub schedule: &'a Schedule<'a>,
    /// What teacher and student predict.
    pub prediction: Prediction,
}

/// Draws a distillation batch of `n` samples from `rng`, in this order: for each sample a
/// data index (uniform, with replacement) and a position on the round's grid (uniform; even
/// positions for progressive distillation); then the noise of all samples, row by row. Inputs
/// `z_t = a_t x0 + s_t eps` at the position's timestep; targets from the `teacher` (and for
/// consistency distillation the `student`, as its stop-gradient target) as in the module
/// docs; weight 1.
///
/// # Errors
/// The networks' and the core's errors.
pub fn draw(
    inputs: &DistillInputs<'_>,
    data: &Dataset,
    n: usize,
    rng: &mut Rng,
    teacher: &mut Network<'_>,
    student: &mut Network<'_>,
) -> Result<Batch> {
    let config = inputs.config;
    let schedule = inputs.schedule;
    let grid = trailing(schedule, inputs.config.teacher_steps_in(inputs.round))?;
    let (positions, stride) = match config.method {
        DistillMethod::Progressive => (grid.len() / 2, 2),
        DistillMethod::Consistency => (grid.len(), 1),
    };
    let len = data.sample_len();
    let count = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let picks: Vec<(usize, usize)> = (0..n)
        .map(|_| {
            let index = rng.below(count) as usize;
            let position = rng.below(positions as u32) as usize * stride;
            (index, position)
        })
        .collect();
    let mut noise = vec![0.0f32; n * len];
    rng.fill_normal(&mut noise);
    let at = |position: usize| grid.get(position).copied();
    let t: Vec<u32> = picks.iter().map(|&(_, p)| grid[p]).collect();
    let mut z_t = Vec::with_capacity(n * len);
    for (&(index, _), (eps_row, &step)) in picks.iter().zip(noise.chunks_exact(len).zip(&t)) {
        let (a, s) = levels(schedule, Some(step));
        for (&x0, &eps) in data.sample(index).iter().zip(eps_row) {
            z_t.push(a * x0 + s * eps);
        }
    }
    let prediction = inputs.prediction;
    let clip = config.teacher_clip;
    let next: Vec<Option<u32>> = picks.iter().map(|&(_, p)| at(p + 1)).collect();
    let mut z = z_t.clone();
    let output = teacher(&z, &t)?;
    ddim_steps(schedule, prediction, clip, &t, &next, &mut z, &output)?;
    // The clean sample whose one-step DDIM update from z_t the student must take.
    let clean: Vec<f32> = match config.method {
        DistillMethod::Progressive => {
            let mid: Vec<u32> = next
                .iter()
                .map(|m| m.expect("an odd grid position"))
                .collect();
            let end: Vec<Option<u32>> = picks.iter().map(|&(_, p)| at(p + 2)).collect();
            let output = teacher(&z, &mid)?;
            ddim_steps(schedule, prediction, clip, &mid, &end, &mut z, &output)?;
            let mut clean = Vec::with_capacity(z.len());
            for (i, &step) in t.iter().enumerate() {
                let (from, to) = (levels(schedule, Some(step)), levels(schedule, end[i]));
                for d in i * len..(i + 1) * len {
                    clean.push(one_step_target(z_t[d], z[d], from, to));
                }
            }
            clean
        }
        DistillMethod::Consistency => {
            // The student's own x0 estimate at the teacher's landing point (the clean end:
            // the landing point itself).
            let evaluate: Vec<u32> = next.iter().map(|m| m.unwrap_or(0)).collect();
            let output = student(&z, &evaluate)?;
            let estimates = x0_estimates(schedule, prediction, &evaluate, &z, &output);
            (0..n * len)
                .map(|d| match next[d / len] {
                    Some(_) => estimates[d],
                    None => z[d],
                })
                .collect()
        }
    };
    let mut batch = Batch {
        n,
        x_t: z_t,
        t: t.iter().map(|&t| t as f32).collect(),
        target: Vec::with_capacity(n * len),
        weight: vec![1.0; n],
        class: None,
    };
    let rows = batch.x_t.chunks_exact(len).zip(clean.chunks_exact(len));
    for ((z_row, clean_row), &step) in rows.zip(&t) {
        let (a, s) = levels(schedule, Some(step));
        for (&z, &x0) in z_row.iter().zip(clean_row) {
            let eps = (z - a * x0) / s;
            batch.target.push(prediction.from_x0_eps(x0, eps, a, s));
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule_args::{BetaScheduleName, ScheduleSpec};

    fn cosine() -> Vec<f32> {
        ScheduleSpec {
            beta_schedule: BetaScheduleName::Cosine,
            ..ScheduleSpec::default()
        }
        .alphas_cumprod()
        .unwrap()
    }

    fn config(method: DistillMethod, steps: u32, teacher_steps: u32) -> DistillConfig {
        DistillConfig {
            method,
            teacher: PathBuf::from("teacher"),
            teacher_step: 10,
            teacher_ema: true,
            steps,
            teacher_steps,
            updates_per_round: 5,
            teacher_clip: Some(1.0),
            eta: None,
            timesteps: None,
        }
    }

    /// A made-up network whose output depends on the input and the timestep.
    fn network(scale: f32) -> impl FnMut(&[f32], &[u32]) -> Result<Vec<f32>> {
        move |x: &[f32], t: &[u32]| {
            let len = x.len() / t.len();
            Ok(x.iter()
                .enumerate()
                .map(|(i, &v)| scale * v + 1e-3 * t[i / len] as f32 - 0.2)
                .collect())
        }
    }

    #[test]
    fn the_progressive_target_is_two_teacher_steps_in_one() {
        // A student whose output is the target takes, in one core DDIM step from t, the
        // teacher's two steps t -> mid -> end (the clean sample after the last grid point).
        let table = cosine();
        let schedule = Schedule::new(&table).unwrap();
        let mut rng = Rng::new(3);
        for prediction in [Prediction::V, Prediction::X0] {
            for (t, mid, end) in [
                (999, 874, Some(749)),
                (249, 124, None),
                (499, 374, Some(249)),
            ] {
                let mut z_t = vec![0.0f32; 16];
                rng.fill_normal(&mut z_t);
                let mut teacher = network(0.7);
                let mut z = z_t.clone();
                let out = teacher(&z, &[t]).unwrap();
                ddim_steps(
                    &schedule,
                    prediction,
                    Some(1.0),
                    &[t],
                    &[Some(mid)],
                    &mut z,
                    &out,
                )
                .unwrap();
                let out = teacher(&z, &[mid]).unwrap();
                ddim_steps(
                    &schedule,
                    prediction,
                    Some(1.0),
                    &[mid],
                    &[end],
                    &mut z,
                    &out,
                )
                .unwrap();
                let (from, to) = (levels(&schedule, Some(t)), levels(&schedule, end));
                let student: Vec<f32> = z_t
                    .iter()
                    .zip(&z)
                    .map(|(&zt, &zend)| {
                        let clean = one_step_target(zt, zend, from, to);
                        prediction.from_x0_eps(
                            clean,
                            (zt - from.0 * clean) / from.1,
                            from.0,
                            from.1,
                        )
                    })
                    .collect();
                let mut one = z_t.clone();
                ddim_steps(
                    &schedule,
                    prediction,
                    None,
                    &[t],
                    &[end],
                    &mut one,
                    &student,
                )
                .unwrap();
                for (a, b) in one.iter().zip(&z) {
                    assert!((a - b).abs() < 2e-4 * (1.0 + b.abs()), "{a} vs {b} at {t}");
                }
                // A wrong target (the teacher's first x0 estimate) lands elsewhere.
                let first = teacher(&z_t, &[t]).unwrap();
                let mut wrong = z_t.clone();
                ddim_steps(
                    &schedule,
                    prediction,
                    None,
                    &[t],
                    &[end],
                    &mut wrong,
                    &first,
                )
                .unwrap();
                assert!(wrong.iter().zip(&z).any(|(a, b)| (a - b).abs() > 1e-2));
            }
        }
    }

    fn data() -> Dataset {
        Dataset {
            name: "test".into(),
            shape: vec![2],
            values: vec![0.9, -0.9, 0.5, 0.25, -0.4, 0.8],
            labels: None,
        }
    }

    /// The clean-sample target of each row of `batch` (the x0 its output implies at `z_t`).
    fn clean_targets(batch: &Batch, schedule: &Schedule<'_>, prediction: Prediction) -> Vec<f32> {
        x0_estimates(
            schedule,
            prediction,
            &batch.t.iter().map(|&t| t as u32).collect::<Vec<_>>(),
            &batch.x_t,
            &batch.target,
        )
    }

    #[test]
    fn progressive_batches_follow_the_rounds_grid() {
        let table = cosine();
        let schedule = Schedule::new(&table).unwrap();
        let config = config(DistillMethod::Progressive, 2, 8);
        assert_eq!(config.rounds(), 2);
        assert_eq!(config.total_updates(), 10);
        assert_eq!(
            (config.round_of(4), config.round_of(5), config.round_of(99)),
            (0, 1, 1)
        );
        for round in 0..2 {
            let inputs = DistillInputs {
                config: &config,
                round,
                schedule: &schedule,
                prediction: Prediction::V,
            };
            let grid = trailing(&schedule, config.teacher_steps_in(round)).unwrap();
            assert_eq!(grid.len(), [8, 4][round as usize]);
            let batch = draw(
                &inputs,
                &data(),
                32,
                &mut Rng::new(9),
                &mut network(0.6),
                &mut network(9.0),
            )
            .unwrap();
            assert_eq!(batch.weight, vec![1.0; 32]);
            // Replaying the stream in the documented order gives the inputs:
            // z_t = a_t x0 + s_t eps, and every even grid position is drawn.
            let mut replay = Rng::new(9);
            let picks: Vec<(usize, usize)> = (0..32)
                .map(|_| {
                    let index = replay.below(3) as usize;
                    (index, 2 * replay.below(grid.len() as u32 / 2) as usize)
                })
                .collect();
            let mut eps = vec![0.0f32; 64];
            replay.fill_normal(&mut eps);
            let mut drawn = std::collections::BTreeSet::new();
            for (i, &(index, position)) in picks.iter().enumerate() {
                let t = grid[position];
                assert_eq!(batch.t[i], t as f32);
                drawn.insert(position);
                let (a, s) = levels(&schedule, Some(t));
                for d in 0..2 {
                    let expected = a * data().sample(index)[d] + s * eps[2 * i + d];
                    assert_eq!(batch.x_t[2 * i + d], expected);
                }
            }
            let even: Vec<usize> = (0..grid.len()).step_by(2).collect();
            assert_eq!(drawn.into_iter().collect::<Vec<_>>(), even);
            let clean = clean_targets(&batch, &schedule, Prediction::V);
            for i in 0..32 {
                let t = batch.t[i] as u32;
                let position = grid.iter().position(|&g| g == t).expect("a grid timestep");
                assert_eq!(position % 2, 0, "students start at even grid positions");
                // Recompute the teacher's two steps for this row.
                let row = &batch.x_t[2 * i..2 * i + 2];
                let (mid, end) = (grid[position + 1], grid.get(position + 2).copied());
                let mut z = row.to_vec();
                let out = network(0.6)(&z, &[t]).unwrap();
                ddim_steps(
                    &schedule,
                    Prediction::V,
                    Some(1.0),
                    &[t],
                    &[Some(mid)],
                    &mut z,
                    &out,
                )
                .unwrap();
                let out = network(0.6)(&z, &[mid]).unwrap();
                ddim_steps(
                    &schedule,
                    Prediction::V,
                    Some(1.0),
                    &[mid],
                    &[end],
                    &mut z,
                    &out,
                )
                .unwrap();
                let (from, to) = (levels(&schedule, Some(t)), levels(&schedule, end));
                for d in 0..2 {
                    let expected = one_step_target(row[d], z[d], from, to);
                    let got = clean[2 * i + d];
                    assert!(
                        (got - expected).abs() < 1e-3 * (1.0 + expected.abs()),
                        "{got} vs {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn consistency_targets_are_the_students_estimate_one_teacher_step_on() {
        let table = cosine();
        let schedule = Schedule::new(&table).unwrap();
        let config = config(DistillMethod::Consistency, 2, 8);
        assert_eq!((config.rounds(), config.teacher_steps_in(0)), (1, 8));
        let inputs = DistillInputs {
            config: &config,
            round: 0,
            schedule: &schedule,
            prediction: Prediction::X0,
        };
        let grid = trailing(&schedule, 8).unwrap();
        let batch = draw(
            &inputs,
            &data(),
            64,
            &mut Rng::new(4),
            &mut network(0.5),
            &mut network(-0.3),
        )
        .unwrap();
        let mut seen_last = false;
        for i in 0..64 {
            let t = batch.t[i] as u32;
            let position = grid.iter().position(|&g| g == t).expect("a grid timestep");
            let row = &batch.x_t[2 * i..2 * i + 2];
            let next = grid.get(position + 1).copied();
            let mut z = row.to_vec();
            let out = network(0.5)(&z, &[t]).unwrap();
            ddim_steps(
                &schedule,
                Prediction::X0,
                Some(1.0),
                &[t],
                &[next],
                &mut z,
                &out,
            )
            .unwrap();
            let expected = match next {
                // The student's x0 estimate at the landing point (an x0 network outputs it).
                Some(next) => network(-0.3)(&z, &[next]).unwrap(),
                // The boundary: the teacher's own clean sample.
                None => {
                    seen_last = true;
                    z.clone()
                }
            };
            assert_eq!(&batch.target[2 * i..2 * i + 2], expected.as_slice());
        }
        assert!(seen_last, "the last grid position is drawn too");
    }

    #[test]
    fn invalid_distillations_are_refused() {
        let table = cosine();
        let schedule = Schedule::new(&table).unwrap();
        let v = Prediction::V;
        assert!(config(DistillMethod::Progressive, 4, 64)
            .validate(&schedule, v)
            .is_ok());
        assert!(config(DistillMethod::Consistency, 4, 64)
            .validate(&schedule, v)
            .is_ok());
        assert!(config(DistillMethod::Consistency, 4, 4)
            .validate(&schedule, v)
            .is_ok());
        let eps = config(DistillMethod::Progressive, 4, 64).validate(&schedule, Prediction::Eps);
        assert!(matches!(eps, Err(Error::Invalid(m)) if m.contains("v or x0")));
        for (method, n, k) in [
            (DistillMethod::Progressive, 4, 4),
            (DistillMethod::Progressive, 4, 48),
            (DistillMethod::Progressive, 3, 8),
            (DistillMethod::Progressive, 0, 8),
            (DistillMethod::Progressive, 512, 2048),
            (DistillMethod::Consistency, 8, 4),
        ] {
            assert!(
                config(method, n, k).validate(&schedule, v).is_err(),
                "{method:?} {n} {k}"
            );
        }
        let unclipped = DistillConfig {
            teacher_clip: Some(0.0),
            ..config(DistillMethod::Progressive, 4, 64)
        };
        assert!(unclipped.validate(&schedule, v).is_err());
        assert!(check_nested(&[9, 7, 4, 1], &[9, 4]).is_ok());
        assert!(check_nested(&[9, 7, 4, 1], &[9, 3]).is_err());
        assert!(check_nested(&[9, 7, 4], &[9, 4]).is_err());
        let measured = DistillConfig {
            eta: Some(0.5),
            ..config(DistillMethod::Progressive, 4, 64)
        };
        assert_eq!(measured.sampler().eta, 0.5);
        assert!(measured.validate(&schedule, v).is_ok());
        let negative = DistillConfig {
            eta: Some(-0.5),
            ..measured.clone()
        };
        assert!(negative.validate(&schedule, v).is_err());
        let sampler = config(DistillMethod::Progressive, 4, 64).sampler();
        assert_eq!(
            (sampler.kind, sampler.steps, sampler.spacing),
            (SamplerKind::Ddim, 4, Spacing::Trailing)
        );
        // Given timesteps: used as given, checked against N and T.
        let given = DistillConfig {
            timesteps: Some(vec![999, 800, 400, 100]),
            ..config(DistillMethod::Consistency, 4, 64)
        };
        assert!(given.validate(&schedule, v).is_ok());
        let mut out = [0u32; 4];
        given.sampler().timesteps(&schedule, &mut out).unwrap();
        assert_eq!(out, [999, 800, 400, 100]);
        for wrong in [
            vec![999, 800, 400],
            vec![999, 800, 800, 100],
            vec![1000, 800, 400, 100],
        ] {
            let wrong = DistillConfig {
                timesteps: Some(wrong),
                ..given.clone()
            };
            assert!(
                wrong.validate(&schedule, v).is_err(),
                "{:?}",
                wrong.timesteps
            );
        }
    }
}
