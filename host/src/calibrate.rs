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
//! - each node's whole output (all samples of the batch) goes to
//!   [`Calibration::observe`], through the executor's observer;
//! - each sample's `(x_t, t)` is offered to [`Calibration::record_input`], which keeps a
//!   uniform sample of them for the export's per-layer SQNR report.
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
use ddm_core::{Prediction, Schedule};
use ddm_export::graph::{Graph, NodeId};
use ddm_export::{Calibration, CalibrationConfig};

use crate::error::{Error, Result};
use crate::model::{forward, Params};
use crate::sampling::{generate, Denoiser, SamplerChoice, SamplingOptions};

/// The calibration seed unless one is given: "calibrat" in ASCII, far from the small seeds
/// evaluation runs use.
pub const DEFAULT_CALIBRATION_SEED: u64 = 0x6361_6c69_6272_6174;

/// How much calibration to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl Default for CalibrationRun {
    /// 64 trajectories in batches of 64, [`DEFAULT_CALIBRATION_SEED`], the exporter's
    /// default reservoir and 32 SQNR inputs.
    fn default() -> Self {
        CalibrationRun {
            samples: 64,
            batch: 64,
            seed: DEFAULT_CALIBRATION_SEED,
            config: CalibrationConfig::default(),
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
    /// Network calls so far (one per visited timestep and batch).
    calls: usize,
}

impl Denoiser for Recorder<'_> {
    fn sample_shape(&self) -> Vec<usize> {
        self.graph.input_shape().to_vec()
    }

    fn prediction(&self) -> Prediction {
        self.prediction
    }

    fn predict(&mut self, x: &[f32], t: u32, out: &mut [f32]) -> Result<()> {
        let shape = self.graph.input_shape();
        let sample_len: usize = shape.iter().product();
        let batch = x.len() / sample_len.max(1);
        for row in x.chunks_exact(sample_len) {
            self.calibration.record_input(row, t)?;
        }
        let mut dims = vec![batch];
        dims.extend_from_slice(shape);
        let input = Tensor::from_vec(x.to_vec(), dims, self.device)?;
        let timesteps = Tensor::from_vec(vec![t as f32; batch], batch, self.device)?;
        // The observer cannot return an error: keep the first one and report it after.
        let mut failure: Option<Error> = None;
        let calibration = &mut self.calibration;
        let mut observe = |node: NodeId, value: &Tensor| {
            if failure.is_some() {
                return;
            }
            let values = value
                .flatten_all()
                .and_then(|v| v.to_dtype(DType::F32))
                .and_then(|v| v.to_vec1::<f32>());
            let result = match values {
                Ok(values) => calibration.observe(node, &values).map_err(Error::from),
                Err(e) => Err(Error::from(e)),
            };
            if let Err(e) = result {
                failure = Some(e);
            }
        };
        let y = forward(
            self.graph,
            self.params,
            &input,
            &timesteps,
            Some(&mut observe),
        )?;
        if let Some(e) = failure {
            return Err(e);
        }
        let y: Vec<f32> = y.flatten_all()?.to_vec1()?;
        out.copy_from_slice(&y);
        self.calls += 1;
        Ok(())
    }
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
            "calibration follows a timestep sampler (ddpm, ddim, dpmpp-2m): the device has no \
             Langevin sampler"
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
    let timesteps = options.timesteps(&schedule)?;
    let mut recorder = Recorder {
        graph,
        params,
        prediction,
        device,
        calibration: Calibration::new(graph, run.config),
        calls: 0,
    };
    generate(
        &mut recorder,
        schedule,
        &options,
        run.samples,
        run.batch,
        None,
    )?;
    Ok(Calibrated {
        calibration: recorder.calibration,
        timesteps,
        network_calls: recorder.calls,
    })
}
