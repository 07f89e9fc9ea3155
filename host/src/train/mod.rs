//! Training noise predictors with candle.
//!
//! - [`config`]: the run configuration saved as `config.json` ([`RunConfig`]: model, graph,
//!   data, schedule, objective, hyper-parameters, progress).
//! - [`objective`]: prediction type (eps / x0 / v) and loss weight (simple / ELBO / min-SNR).
//! - [`batch`]: drawing a batch (data, timesteps, noise) from one seeded stream.
//! - [`lr`]: linear warm-up then cosine decay.
//! - [`optim`]: AdamW with checkpointable state, gradient clipping by global norm.
//! - [`ema`]: the weights' exponential moving average with warm-up.
//! - [`distill`]: students that generate in a few steps, trained on a teacher's DDIM steps
//!   (progressive and consistency distillation).
//! - [`fine_tune`]: a run that starts from another run's weights (`--init-from`).
//! - [`student`]: a distilled student's sampler, chosen by measurement.
//! - [`trainer`]: the state of a run and one optimisation step ([`Trainer`]).
//! - [`parallel`]: data-parallel training, each rank on its shard of the batch, gradients
//!   summed over the ranks (threads through host memory, or NCCL on GPUs).
//! - [`checkpoint`]: crash-safe run folders (safetensors + `config.json`).
//! - [`run`](mod@run): the loop with progress bar, checkpoints, loss curve and previews.
//!
//! Determinism: every random number is a function of the seed and the step (see
//! [`crate::seeding`]) and the whole state (weights, EMA, AdamW moments and step, loss
//! history) is in the checkpoint, so the same command gives the same bits, and `--resume`
//! after a kill ends bit-identical to an uninterrupted run (on the same device and thread
//! count).

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod distill;
pub mod ema;
pub mod fine_tune;
pub mod lr;
pub mod objective;
pub mod optim;
pub mod parallel;
pub mod run;
pub mod student;
pub mod trainer;

pub use checkpoint::Checkpoint;
pub use config::{DataConfig, Progress, RunConfig, TrainConfig};
pub use distill::{DistillConfig, DistillMethod};
pub use objective::{LossWeightName, LossWeightSpec, Objective, PredictionType};
pub use run::{run, RunOptions, RunSummary};
pub use trainer::{loss_on_batch, StepReport, Trainer};
