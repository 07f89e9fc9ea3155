//! The device runtime, run on the host with every node's output readable: the float
//! reference for calibration, the per-layer error analysis and the ONNX tests.
//!
//! An [`Evaluator`] writes a blob of the model with a plan that gives every node its own
//! region ([`ddm_firmware::writer::plan_no_reuse`]), so after [`Evaluator::run`] each node's output
//! is still in the arena ([`ddm_firmware::Network::node_output`]). It runs exactly the code
//! the device runs (same kernels, same bits), only with more memory.

use ddm_core::sampler::{Sampler, SamplerKind};
use ddm_core::timesteps::Spacing;
use ddm_core::{Prediction, Rng, Schedule};
use ddm_firmware::settings::ModelSchedule;
use ddm_firmware::writer::{write_blob, write_network, ModelSpec, ScheduleSpec};
use ddm_firmware::{network_arena_bytes, Blob, Network, NodeOutput, Precision, SamplerConfig};

use crate::calibration::{calibration_timesteps, Calibration};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Weights};
use crate::quantize::{decoder_spec, model_spec, ExportOptions};
use ddm_firmware::writer::plan_no_reuse;

/// A model on the device runtime with a no-reuse memory plan.
#[derive(Debug, Clone)]
pub struct Evaluator {
    blob: Vec<u8>,
    arena: Vec<u8>,
    sample_len: usize,
    output_len: usize,
}

/// Options for a blob that only evaluates the network: a one-step placeholder schedule (the
/// network does not read it).
fn evaluation_options(precision: Precision) -> ExportOptions {
    ExportOptions {
        precision,
        range: Default::default(),
        sampler: SamplerConfig::with_spacing(SamplerKind::Ddim, 1, Spacing::Leading),
        schedule: ScheduleSpec {
            schedule: ModelSchedule {
                betas: None,
                train_steps: 1,
                zero_terminal_snr: false,
                prediction: Prediction::Eps,
            },
            alphas_cumprod: Some(vec![0.5]),
        },
    }
}

impl Evaluator {
    /// The denoiser `spec` (its plan replaced by the no-reuse plan) on the runtime, as a
    /// model blob (with its time groups).
    pub fn new(mut spec: ModelSpec) -> Result<Self> {
        spec.plan = Some(plan_no_reuse(&spec)?);
        Self::from_blob(write_blob(&spec)?)
    }

    /// The network `spec` of any output shape (a decoder), as a network blob with the
    /// no-reuse plan.
    pub fn network(mut spec: ModelSpec) -> Result<Self> {
        spec.plan = Some(plan_no_reuse(&spec)?);
        Self::from_blob(write_network(&spec)?)
    }

    fn from_blob(blob: Vec<u8>) -> Result<Self> {
        let parsed = Blob::parse(&blob)?;
        let arena = vec![0u8; network_arena_bytes(&parsed)?];
        let (sample_len, output_len) = (parsed.sample_len(), parsed.output_len());
        Ok(Evaluator {
            blob,
            arena,
            sample_len,
            output_len,
        })
    }

    /// The float decoder `graph` with `weights` in `precision` (`F32` or `F16`), as
    /// [`Evaluator::float`] for a graph of any output shape.
    ///
    /// Errors as [`Evaluator::float`].
    pub fn float_decoder(graph: &Graph, weights: &Weights, precision: Precision) -> Result<Self> {
        if precision == Precision::Int8 {
            return Err(Error::InvalidOptions(
                "a float evaluator needs F32 or F16".into(),
            ));
        }
        Self::network(decoder_spec(
            graph,
            weights,
            None,
            &evaluation_options(precision),
        )?)
    }

    /// The float graph with `weights` in `precision` (`F32` is the reference; `F16` stores
    /// the weights as f16).
    ///
    /// Errors when the graph or weights do not validate or `precision` is `Int8`.
    pub fn float(graph: &Graph, weights: &Weights, precision: Precision) -> Result<Self> {
        if precision == Precision::Int8 {
            return Err(Error::InvalidOptions(
                "a float evaluator needs F32 or F16".into(),
            ));
        }
        Self::new(model_spec(
            graph,
            weights,
            None,
            &evaluation_options(precision),
        )?)
    }

    /// The blob it runs.
    pub fn blob(&self) -> &[u8] {
        &self.blob
    }

    /// Elements of one network input.
    pub fn sample_len(&self) -> usize {
        self.sample_len
    }

    /// Elements of one network output (a denoiser's: the input's).
    pub fn output_len(&self) -> usize {
        self.output_len
    }

    /// Evaluates the network on `x_t` at timestep `t` into `out`, then calls
    /// `visit(node, output)` for every node in order.
    pub fn run(
        &mut self,
        x_t: &[f32],
        t: u32,
        out: &mut [f32],
        mut visit: impl FnMut(usize, NodeOutput<'_>) -> Result<()>,
    ) -> Result<()> {
        let blob = Blob::parse(&self.blob)?;
        let mut network = Network::new(blob, &mut self.arena)?;
        network.run(x_t, t, out)?;
        for index in 0..blob.node_count() {
            visit(index, network.node_output(index)?)?;
        }
        Ok(())
    }

    /// Evaluates the network on `x_t` at timestep `t`, returning its output.
    pub fn output(&mut self, x_t: &[f32], t: u32) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; self.output_len];
        self.run(x_t, t, &mut out, |_, _| Ok(()))?;
        Ok(out)
    }
}

/// Timestep-aware calibration on the device runtime's f32 network (see
/// [`crate::calibration`]): `samples` trajectories of `sampler` with `schedule`, sample `s`
/// starting from `x_T` drawn with `Rng::with_stream(seed, s)` (the device's convention, so
/// calibration follows the trajectories the float model takes); at every visited timestep
/// every node's output is observed and `(x_t, t)` offered as a calibration input.
///
/// Meant for trained models: an untrained network predicts noise that is not the noise, and
/// its trajectories drift to `x_0` far outside the data range (magnitudes ~100 with random
/// weights), which would set ranges no deployed run needs.
///
/// Errors when the graph, weights, schedule or sampler are invalid, the calibration belongs
/// to another graph, or the float model produces non-finite values.
pub fn calibrate_with_sampler(
    graph: &Graph,
    weights: &Weights,
    calibration: &mut Calibration,
    schedule: &ScheduleSpec,
    sampler: &SamplerConfig,
    samples: usize,
    seed: u64,
) -> Result<()> {
    let mut evaluator = Evaluator::float(graph, weights, Precision::F32)?;
    let table = schedule.table()?;
    let timesteps = calibration_timesteps(schedule, sampler)?;
    let prediction = schedule.schedule.prediction;
    let len = evaluator.sample_len();
    let (mut x, mut out, mut scratch) = (vec![0.0f32; len], vec![0.0f32; len], vec![0.0; len]);
    let mut values = Vec::new();
    for s in 0..samples {
        let mut rng = Rng::with_stream(seed, s as u64);
        rng.fill_normal(&mut x);
        let mut state =
            sampler.build(prediction, Schedule::new(&table)?, &timesteps, &mut scratch)?;
        while let Some(t) = state.timestep() {
            calibration.record_input(&x, t)?;
            evaluator.run(&x, t, &mut out, |node, output| match output {
                NodeOutput::F32(v) => calibration.observe(NodeId(node), t, v),
                other => {
                    values.clear();
                    values.extend(other.iter());
                    calibration.observe(NodeId(node), t, &values)
                }
            })?;
            state.step(&mut x, &out, &mut rng)?;
        }
    }
    Ok(())
}
