//! Timestep-aware calibration of a trained network for int8 export, on the candle executor.
//!
//! Post-training quantisation of a diffusion model needs activation ranges from the inputs the
//! network sees when it samples, at every timestep the sampler visits (Q-Diffusion, Li et al.
//! 2023; PTQ4DM, Shang et al. 2023): `x_t` near pure noise at the first step, nearly clean data
//! at the last. [`calibrate`] therefore runs the **float** model (the weights given, normally
//! the EMA weights) through the **deployed** sampler (the kind, steps, spacing, eta, variance
//! and clipping the blob will store as its defaults) from `samples` initial noises, with
//! [`crate::sampling::generate`], the same code `ddm sample --checkpoint` uses. At every
//! network call, before the sampler step:
//!
//! - each node's output (all samples of the batch) goes to [`Calibration::observe`], through
//!   the executor's observer (all of it by default; with a [`TimestepWeighting`] favouring
//!   late steps, a random subset at earlier ones, always including new extremes so that
//!   min/max ranges stay exact);
//! - each sample's `(x_t, t)` is offered to [`Calibration::record_input`], which keeps a
//!   uniform sample of them for the export's per-layer SQNR report.
//!
//! Then, unless [`CalibrationRun::tail_sigma`] is 0, the same sampler runs from the
//! [`tail_probes`]: initial noises with one value at `±tail_sigma` standard deviations, as
//! extreme as a device meets only over very many samples. Their activations go to
//! [`Calibration::observe_bounds`]: every int8 range covers them, without their shaping the
//! statistics the range method chooses from. Without them, a rare initial noise saturates the
//! network at the first, noisiest steps and its sample runs away (see [`tail_probes`]).
//!
//! A class-conditional model is calibrated on the samples the device draws from it: every
//! class in turn, with the default guidance ([`DEFAULT_GUIDANCE`]), so that both the
//! conditional and the unconditional prediction of each guided step are observed (class `k`
//! takes its share of the trajectories, from the seed `seed + k`, and of the tail probes).
//! The inputs kept for the SQNR report are evaluated unconditionally.
//!
//! Calibration sample `s` starts from the noise of `Rng::with_stream(seed, s)`, the device's
//! and the host sampler's rule, so with the same seed it follows exactly the float
//! trajectories `ddm sample --checkpoint --seed SEED` draws, batched on candle instead of one
//! sample at a time on the device runtime
//! ([`ddm_export::reference::calibrate_with_sampler`] does the same on the runtime's f32
//! network, far slower for convolutional models). The default seed,
//! [`DEFAULT_CALIBRATION_SEED`], keeps the calibration trajectories apart from those of an
//! evaluation run with a small `--seed`.

use candle_core::{DType, Device, Tensor};
use ddm_core::{Prediction, Rng, Schedule};
use ddm_export::calibration::time_group_boundaries;
use ddm_export::graph::{Graph, NodeId};
use ddm_export::{Calibration, CalibrationConfig};

use crate::error::{Error, Result};
use crate::guided::{Guided, DEFAULT_GUIDANCE};
use crate::model::{forward_conditional, Params};
use crate::sampling::{generate, Denoiser, SamplerChoice, SamplingOptions};

/// The calibration seed unless one is given: "calibrat" in ASCII, far from the small seeds
/// evaluation runs use.
pub const DEFAULT_CALIBRATION_SEED: u64 = 0x6361_6c69_6272_6174;

/// Calibration trajectories unless told otherwise. 256 rather than 64: on the 8x8 models of
/// BENCHMARKS.md ("int8 with the export defaults") the int8 Frechet distance moved from up to
/// 13% above float's to within 3% (two sampling seeds), for four times a cost of seconds.
pub const DEFAULT_CALIBRATION_SAMPLES: usize = 256;

/// The default height of the tail probes' extreme values, chosen by measurement
/// (BENCHMARKS.md, "int8 with the export defaults"): `P(|z| > 4.5) = 7e-6` per value, about
/// the largest value of 1,000 samples of 8x8 noise. Values a little beyond the covered range
/// saturate mildly (10,000 seeds of the 8x8 MLP and UNet: no sample ran away), while higher
/// probes cost resolution (the 8x8 UNet's int8 output SQNR falls from 15.8 dB at 4.5 to
/// 10.5 dB at 6, its Frechet distance from -2% to +7% of float's).
pub const DEFAULT_TAIL_SIGMA: f32 = 4.5;

/// The default limit on time groups: one set of int8 activation parameters per visited
/// timestep for samplers of up to 16 steps, 16 groups of consecutive timesteps beyond. One set
/// for all timesteps left the 8x8 UNet with v prediction on the cosine schedule 7% above the
/// float model's Frechet distance at 10 DDIM steps (BENCHMARKS.md, "Timestep-aware int8").
pub const DEFAULT_TIME_GROUPS: usize = 16;

/// How much calibration to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationRun {
    /// Number of sampler trajectories (initial noises).
    pub samples: usize,
    /// Trajectories evaluated together in one network call.
    pub batch: usize,
    /// Seed of the initial noises (and of the sampler's noise for stochastic samplers):
    /// trajectory `s` uses `Rng::with_stream(seed, s)`.
    pub seed: u64,
    /// What the [`Calibration`] keeps (reservoir size, number of SQNR inputs, its own seed).
    pub config: CalibrationConfig,
    /// How much each visited timestep's activations count in the percentile and MSE ranges
    /// (min/max ranges are exact either way).
    pub weighting: TimestepWeighting,
    /// Height, in standard deviations, of the tail probes' extreme noise values (0: no tail
    /// probes). See [`tail_probes`].
    pub tail_sigma: f32,
    /// Most time groups (int8 activation parameter sets, one per range of timesteps): with at
    /// most this many visited timesteps each gets its own
    /// ([`ddm_export::calibration::time_group_boundaries`]); 1 gives one set for every
    /// timestep.
    pub time_groups: usize,
}

/// How the activations of the visited timesteps are weighted in the calibration statistics
/// that percentile and MSE ranges are chosen from.
///
/// One int8 range per tensor serves every timestep, but activations shrink as the sample gets
/// cleaner: in a small UNet trained on the 8x8 digits, the residual stream of the up path at
/// the last of 10 DDIM steps spans a fifth of what the first steps need, and the int8 network
/// output's SQNR falls from 35 dB at `t = T - 1` to 19 dB at the last step, whose prediction
/// lands in the sample. Weighting late steps more lets the MSE range clip a little at the
/// first, noisy steps for resolution at the last ones: with
/// [`TimestepWeighting::Quadratic`] that UNet's SQNR at the last two steps rises by 1-2 dB
/// and falls by 4-7 dB at the first. Its effect on the Frechet distance of int8 samples was
/// within the spread between calibration seeds (BENCHMARKS.md, "Quantisation"), so the default
/// stays [`TimestepWeighting::Uniform`], Q-Diffusion's and PTQ4DM's uniform use of the visited
/// timesteps.
///
/// Step `i` of `n` (0-based) with weight `w_i` offers each value of its activations with
/// probability `w_i / w_max` (a seeded random subset), which in expectation is offering them
/// `w_i` times, at a fraction of the cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestepWeighting {
    /// Every visited timestep counts the same.
    #[default]
    Uniform,
    /// Step `i` counts `i + 1`: the last of `n` steps `n` times as much as the first.
    Linear,
    /// Step `i` counts `(i + 1)^2`: the last of `n` steps `n^2` times as much as the first.
    Quadratic,
}

impl TimestepWeighting {
    /// The fraction of the activations of step `index` of `steps` that is offered (the last
    /// step's are all offered).
    pub fn fraction(self, index: usize, steps: usize) -> f64 {
        let position = (index + 1) as f64 / steps.max(1) as f64;
        match self {
            TimestepWeighting::Uniform => 1.0,
            TimestepWeighting::Linear => position,
            TimestepWeighting::Quadratic => position * position,
        }
    }
}

impl Default for CalibrationRun {
    /// [`DEFAULT_CALIBRATION_SAMPLES`] trajectories in batches of 64,
    /// [`DEFAULT_CALIBRATION_SEED`], the exporter's
    /// default reservoir, 32 SQNR inputs, uniform timestep weighting, [`DEFAULT_TAIL_SIGMA`]
    /// and [`DEFAULT_TIME_GROUPS`].
    fn default() -> Self {
        CalibrationRun {
            samples: DEFAULT_CALIBRATION_SAMPLES,
            batch: 64,
            seed: DEFAULT_CALIBRATION_SEED,
            config: CalibrationConfig::default(),
            weighting: TimestepWeighting::default(),
            tail_sigma: DEFAULT_TAIL_SIGMA,
            time_groups: DEFAULT_TIME_GROUPS,
        }
    }
}

/// A network that records what it computes into a [`Calibration`].
struct Recorder<'a> {
    graph: &'a Graph,
    params: &'a Params,
    prediction: Prediction,
    device: &'a Device,
    calibration: Calibration,
    /// The visited timesteps and the fraction of each one's activations offered.
    fractions: Vec<(u32, f64)>,
    /// Draws the offered subsets.
    rng: Rng,
    /// Network calls so far (one per sampler step and batch).
    calls: usize,
    /// Tail probes: every value only widens the bounds (no statistics, no inputs recorded).
    bounds_only: bool,
}

impl Denoiser for Recorder<'_> {
    fn sample_shape(&self) -> Vec<usize> {
        self.graph.input_shape().to_vec()
    }

    fn prediction(&self) -> Prediction {
        self.prediction
    }

    fn classes(&self) -> Option<usize> {
        self.graph.classes()
    }

    fn predict(&mut self, x: &[f32], t: u32, out: &mut [f32]) -> Result<()> {
        self.predict_class(x, t, None, out)
    }

    fn predict_class(
        &mut self,
        x: &[f32],
        t: u32,
        class: Option<u32>,
        out: &mut [f32],
    ) -> Result<()> {
        let shape = self.graph.input_shape();
        let sample_len: usize = shape.iter().product();
        let batch = x.len() / sample_len.max(1);
        if !self.bounds_only {
            for row in x.chunks_exact(sample_len) {
                self.calibration.record_input(row, t)?;
            }
        }
        let bounds_only = self.bounds_only;
        let mut dims = vec![batch];
        dims.extend_from_slice(shape);
        let input = Tensor::from_vec(x.to_vec(), dims, self.device)?;
        let timesteps = Tensor::from_vec(vec![t as f32; batch], batch, self.device)?;
        let labels = class
            .map(|c| Tensor::from_vec(vec![c; batch], batch, self.device))
            .transpose()?;
        let fraction = self
            .fractions
            .iter()
            .find(|&&(step, _)| step == t)
            .map_or(1.0, |&(_, f)| f);
        let calibration = &mut self.calibration;
        let rng = &mut self.rng;
        let mut subset = Vec::new();
        let y = forward_observed(
            self.graph,
            self.params,
            &input,
            &timesteps,
            labels.as_ref(),
            |node, values| {
                if bounds_only {
                    Ok(calibration.observe_bounds(node, t, values)?)
                } else {
                    offer(calibration, node, t, values, fraction, rng, &mut subset)
                }
            },
        )?;
        let y: Vec<f32> = y.flatten_all()?.to_vec1()?;
        out.copy_from_slice(&y);
        self.calls += 1;
        Ok(())
    }
}

/// [`forward_conditional`] with every node's output, as `f32` values in order, handed to
/// `visit`; the first error `visit` returns (or a conversion fails with) is returned after the
/// call (the executor's observer cannot return one).
fn forward_observed(
    graph: &Graph,
    params: &Params,
    x: &Tensor,
    t: &Tensor,
    classes: Option<&Tensor>,
    mut visit: impl FnMut(NodeId, &[f32]) -> Result<()>,
) -> Result<Tensor> {
    let mut failure: Option<Error> = None;
    let mut observe = |node: NodeId, value: &Tensor| {
        if failure.is_some() {
            return;
        }
        let values = value
            .flatten_all()
            .and_then(|v| v.to_dtype(DType::F32))
            .and_then(|v| v.to_vec1::<f32>());
        let result = values
            .map_err(Error::from)
            .and_then(|values| visit(node, &values));
        if let Err(e) = result {
            failure = Some(e);
        }
    };
    let y = forward_conditional(graph, params, x, t, classes, Some(&mut observe))?;
    match failure {
        Some(e) => Err(e),
        None => Ok(y),
    }
}

/// Observes `values` of `node` at timestep `t`: all of them when `fraction >= 1`, else a
/// random subset taking each with probability `fraction` (geometric gaps), plus the batch's
/// minimum and maximum when they lie beyond the extremes seen so far in `t`'s time group, so
/// that min and max stay exact.
fn offer(
    calibration: &mut Calibration,
    node: NodeId,
    t: u32,
    values: &[f32],
    fraction: f64,
    rng: &mut Rng,
    subset: &mut Vec<f32>,
) -> Result<()> {
    if fraction >= 1.0 {
        return Ok(calibration.observe(node, t, values)?);
    }
    if values.iter().any(|v| !v.is_finite()) {
        // `observe` names the node and refuses.
        return Ok(calibration.observe(node, t, values)?);
    }
    let (low, high) = calibration
        .stats(node, calibration.time_group(t))
        .map_or((f32::INFINITY, f32::NEG_INFINITY), |s| (s.min, s.max));
    subset.clear();
    let (batch_low, batch_high) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    if batch_low < low {
        subset.push(batch_low);
    }
    if batch_high > high {
        subset.push(batch_high);
    }
    // Gaps between taken values are geometric: P(gap = k) = (1 - f)^k f.
    let log_keep = (1.0 - fraction.max(1e-12)).ln();
    let mut index = 0usize;
    loop {
        let u = (f64::from(rng.next_u32()) + 0.5) / 4_294_967_296.0;
        let gap = (u.ln() / log_keep).floor();
        if gap.is_nan() || gap >= (values.len() - index) as f64 {
            break;
        }
        index += gap as usize;
        subset.push(values[index]);
        index += 1;
        if index >= values.len() {
            break;
        }
    }
    if subset.is_empty() {
        return Ok(());
    }
    Ok(calibration.observe(node, t, subset)?)
}

/// Initial noises of the tail probes, `[count, sample_len]` row-major.
///
/// Calibration trajectories start from `n` draws of `N(0, I)`, whose largest values are about
/// `sqrt(2 ln(n d))` standard deviations (4.1 for 64 samples of 64 values); a device drawing
/// many more samples meets larger ones. At the first, noisiest steps an eps-predicting network
/// must pass them through (`eps ~ x_t` there), and a value beyond an int8 range saturates:
/// the eps error is amplified by the sampler (`x0 = (x_t - s eps) / a` with `a_T` near 0),
/// pushes `x` further out at the next step, and the sample runs away (pixel values of 60 were
/// seen). The probes show the exporter what such values do inside the network: probe `k`
/// is an ordinary draw (stream `first_stream + k`) with one position, spread evenly over the
/// sample, set to `+sigma` (even `k`) or `-sigma` (odd `k`); two probes per position for
/// samples of up to 64 values, 128 probes over 64 positions for larger ones.
pub fn tail_probes(sample_len: usize, sigma: f32, seed: u64, first_stream: u64) -> Vec<f32> {
    let positions = sample_len.min(64);
    let count = 2 * positions;
    let mut probes = vec![0.0f32; count * sample_len];
    for (k, probe) in probes.chunks_exact_mut(sample_len).enumerate() {
        Rng::with_stream(seed, first_stream + k as u64).fill_normal(probe);
        let position = (k / 2) * sample_len / positions;
        probe[position] = if k % 2 == 0 { sigma } else { -sigma };
    }
    probes
}

/// What [`calibrate`] gathered.
#[derive(Debug, Clone)]
pub struct Calibrated {
    /// The statistics for [`ddm_export::export()`].
    pub calibration: Calibration,
    /// The timesteps visited, first to last.
    pub timesteps: Vec<u32>,
    /// Network calls made (batched).
    pub network_calls: usize,
    /// The samples the calibration trajectories ended in (`[n, sample]` row-major; not the
    /// tail probes'): a latent model's decoder is calibrated on them.
    pub samples: Vec<f32>,
}

/// Timestep-aware calibration of `graph` with `params` (see the module docs): `run.samples`
/// trajectories of the timestep sampler `sampling` on the schedule `alphas_cumprod`, every
/// node observed at every visited timestep. `sampling.seed` is ignored (`run.seed` is used).
///
/// # Errors
/// [`Error::Invalid`] for Langevin (the device has no such sampler), zero samples or batch;
/// the sampler's and the executor's errors; [`Error::Graph`] when the network produces NaN or
/// infinite values.
pub fn calibrate(
    graph: &Graph,
    params: &Params,
    prediction: Prediction,
    alphas_cumprod: &[f32],
    sampling: &SamplingOptions,
    run: &CalibrationRun,
    device: &Device,
) -> Result<Calibrated> {
    if sampling.sampler == SamplerChoice::Langevin {
        return Err(Error::Invalid(
            "calibration follows a timestep sampler (ddpm, ddim, dpmpp-2m, pc, pf-ode): the \
             device has no Langevin sampler"
                .into(),
        ));
    }
    if run.samples == 0 || run.batch == 0 {
        return Err(Error::Invalid(
            "calibration needs at least one sample (--calib) and a batch size > 0".into(),
        ));
    }
    let schedule = Schedule::new(alphas_cumprod)?;
    let options = SamplingOptions {
        seed: run.seed,
        ..*sampling
    };
    let config = options
        .sampler_config(&schedule, prediction)?
        .ok_or_else(|| {
            Error::Invalid("calibration follows a timestep sampler, not Langevin".into())
        })?;
    let mut timesteps = vec![0u32; config.steps as usize];
    config.timesteps(&schedule, &mut timesteps)?;
    let fractions = timesteps
        .iter()
        .enumerate()
        .map(|(i, &t)| (t, run.weighting.fraction(i, timesteps.len())))
        .collect();
    let mut recorder = Recorder {
        graph,
        params,
        prediction,
        device,
        calibration: Calibration::with_time_groups(
            graph,
            run.config,
            time_group_boundaries(&timesteps, run.time_groups),
        )?,
        fractions,
        rng: Rng::with_stream(run.seed, u64::MAX),
        calls: 0,
        bounds_only: false,
    };
    let sample_len = graph.input_shape().iter().product();
    let probes = (run.tail_sigma > 0.0)
        .then(|| tail_probes(sample_len, run.tail_sigma, run.seed, run.samples as u64));
    let mut samples = Vec::new();
    match graph.classes() {
        None => {
            samples = generate(
                &mut recorder,
                schedule,
                &options,
                run.samples,
                run.batch,
                None,
            )?;
            if let Some(probes) = &probes {
                recorder.bounds_only = true;
                let count = probes.len() / sample_len;
                generate(
                    &mut recorder,
                    schedule,
                    &options,
                    count,
                    run.batch,
                    Some(probes),
                )?;
            }
        }
        Some(classes) => {
            // Every class with the default guidance: both predictions of each guided step
            // are observed. Class k runs its share of the trajectories from the seed
            // `seed + k`, and every classes-th tail probe from the k-th.
            for class in 0..classes as u32 {
                let trajectories = (run.samples + classes - 1 - class as usize) / classes;
                if trajectories == 0 {
                    continue;
                }
                let class_options = SamplingOptions {
                    seed: run.seed.wrapping_add(u64::from(class)),
                    ..options
                };
                let mut guided = Guided::new(&mut recorder, class, DEFAULT_GUIDANCE)?;
                samples.extend(generate(
                    &mut guided,
                    schedule,
                    &class_options,
                    trajectories,
                    run.batch,
                    None,
                )?);
            }
            if let Some(probes) = &probes {
                recorder.bounds_only = true;
                let count = probes.len() / sample_len;
                for class in 0..classes.min(count) {
                    let share: Vec<f32> = probes
                        .chunks_exact(sample_len)
                        .skip(class)
                        .step_by(classes)
                        .flatten()
                        .copied()
                        .collect();
                    let mut guided = Guided::new(&mut recorder, class as u32, DEFAULT_GUIDANCE)?;
                    generate(
                        &mut guided,
                        schedule,
                        &options,
                        share.len() / sample_len,
                        run.batch,
                        Some(&share),
                    )?;
                }
            }
        }
    }
    Ok(Calibrated {
        calibration: recorder.calibration,
        timesteps,
        network_calls: recorder.calls,
        samples,
    })
}

/// Calibration of a latent model's decoder `graph` with `params` on `latents` (row-major,
/// `[n, c, h, w]`): the samples the float denoiser generated while it was calibrated
/// ([`Calibrated::samples`]), so the decoder's ranges are those of the latents the device
/// decodes. One time group (the decoder runs once, after the last step): every node's
/// output observed in full at timestep 0, and each latent offered as an input for the
/// export's SQNR report, in batches of `run.batch` with `run.config`.
///
/// # Errors
/// [`Error::Invalid`] for no latents, a length that is not a whole number of them, or a zero
/// batch; the executor's errors; [`Error::Graph`] when the decoder produces NaN or infinite
/// values.
pub fn calibrate_decoder(
    graph: &Graph,
    params: &Params,
    latents: &[f32],
    run: &CalibrationRun,
    device: &Device,
) -> Result<Calibration> {
    let shape = graph.input_shape();
    let len: usize = shape.iter().product();
    if latents.is_empty() || len == 0 || !latents.len().is_multiple_of(len) || run.batch == 0 {
        return Err(Error::Invalid(format!(
            "decoder calibration needs whole latents of shape {shape:?} and a batch > 0 \
             ({} values given)",
            latents.len()
        )));
    }
    let mut calibration = Calibration::new(graph, run.config);
    for chunk in latents.chunks(run.batch * len) {
        let batch = chunk.len() / len;
        for row in chunk.chunks_exact(len) {
            calibration.record_input(row, 0)?;
        }
        let mut dims = vec![batch];
        dims.extend_from_slice(shape);
        let input = Tensor::from_vec(chunk.to_vec(), dims, device)?;
        let timesteps = Tensor::zeros(batch, DType::F32, device)?;
        forward_observed(graph, params, &input, &timesteps, None, |node, values| {
            Ok(calibration.observe(node, 0, values)?)
        })?;
    }
    Ok(calibration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ddm_export::graph::GraphBuilder;

    #[test]
    fn weights_grow_to_the_last_step() {
        assert_eq!(TimestepWeighting::Uniform.fraction(0, 10), 1.0);
        assert!((TimestepWeighting::Linear.fraction(0, 10) - 0.1).abs() < 1e-12);
        assert!((TimestepWeighting::Quadratic.fraction(0, 10) - 0.01).abs() < 1e-12);
        for weighting in [TimestepWeighting::Linear, TimestepWeighting::Quadratic] {
            assert_eq!(weighting.fraction(9, 10), 1.0);
        }
    }

    #[test]
    fn tail_probes_put_each_extreme_at_its_own_position() {
        // Up to 64 values: every position gets +sigma and -sigma, the rest ordinary noise.
        let probes = tail_probes(10, 6.0, 3, 64);
        assert_eq!(probes.len(), 2 * 10 * 10);
        for (k, probe) in probes.chunks_exact(10).enumerate() {
            let sign = if k % 2 == 0 { 6.0 } else { -6.0 };
            assert_eq!(probe[k / 2], sign);
            let mut noise = vec![0.0f32; 10];
            Rng::with_stream(3, 64 + k as u64).fill_normal(&mut noise);
            for (i, (&p, &n)) in probe.iter().zip(&noise).enumerate() {
                if i != k / 2 {
                    assert_eq!(p, n);
                }
            }
        }
        // Larger samples: 128 probes, positions spread evenly.
        let probes = tail_probes(784, 6.0, 0, 0);
        assert_eq!(probes.len(), 128 * 784);
        let positions: Vec<usize> = probes
            .chunks_exact(784)
            .step_by(2)
            .map(|p| p.iter().position(|&v| v == 6.0).unwrap())
            .collect();
        assert_eq!(&positions[..3], &[0, 12, 24]);
        assert_eq!(*positions.last().unwrap(), 63 * 784 / 64);
    }

    #[test]
    fn subsets_keep_the_extremes_and_the_rate() {
        let b = GraphBuilder::new(&[4]);
        let x = b.input();
        let graph = b.finish(x).unwrap();
        let mut calibration = Calibration::new(&graph, CalibrationConfig::default());
        let mut rng = Rng::new(3);
        let mut subset = Vec::new();
        let values: Vec<f32> = (0..100_000).map(|i| (i % 1000) as f32 - 500.0).collect();
        offer(
            &mut calibration,
            NodeId(0),
            0,
            &values,
            0.1,
            &mut rng,
            &mut subset,
        )
        .unwrap();
        let stats = calibration.stats(NodeId(0), 0).unwrap();
        assert_eq!((stats.min, stats.max), (-500.0, 499.0));
        assert!((9_500..10_500).contains(&stats.count), "{}", stats.count);
        // No new extremes: only the subset.
        offer(
            &mut calibration,
            NodeId(0),
            0,
            &values,
            0.01,
            &mut rng,
            &mut subset,
        )
        .unwrap();
        let stats = calibration.stats(NodeId(0), 0).unwrap();
        assert!((10_300..11_700).contains(&stats.count), "{}", stats.count);
        let bad = [1.0, f32::NAN];
        assert!(offer(
            &mut calibration,
            NodeId(0),
            0,
            &bad,
            0.5,
            &mut rng,
            &mut subset
        )
        .is_err());
    }
}
