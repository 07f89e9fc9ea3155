//! `ddm demo`: train an MLP on the embedded digits and draw 64 of its samples.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::bail;
use clap::Args as ClapArgs;
use ddm::data::{self, DatasetSpec, LoadOptions};
use ddm::device::DeviceArgs;
use ddm::image_grid::write_grid;
use ddm::model::{MlpConfig, ModelConfig};
use ddm::sampling::generate;
use ddm::schedule_args::{BetaScheduleName, ScheduleSpec};
use ddm::train::checkpoint;
use ddm::train::run::{preview_sampling, LOSS_CURVE_FILE};
use ddm::train::{
    DataConfig, LossWeightSpec, Objective, PredictionType, RunConfig, TrainConfig, Trainer,
};
use ddm_core::Schedule;

use crate::train::{announce, resume, train_and_report};

/// The grid the demo writes, in its folder.
pub const SAMPLES_FILE: &str = "samples.png";
/// Samples in the grid.
const DEMO_SAMPLES: usize = 64;
/// DDIM steps of the grid.
const DEMO_SAMPLER_STEPS: usize = 10;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Folder of the demo run: checkpoint, loss curve, samples. An interrupted demo in it
    /// continues; a finished one is sampled again.
    #[arg(long, default_value = "demo")]
    out: PathBuf,
    #[command(flatten)]
    device: DeviceArgs,
}

/// The demo's run: a residual MLP on the flattened 8x8 digits, with settings chosen by
/// experiment to give clean digits in a few minutes on two cores.
pub fn demo_config() -> anyhow::Result<(RunConfig, data::Dataset)> {
    let spec = DatasetSpec::Optdigits;
    let options = LoadOptions::default();
    let data = data::load(&spec, &options)?;
    let config = RunConfig::new(
        ModelConfig::Mlp(MlpConfig {
            hidden: 256,
            blocks: 3,
            time_dim: 64,
            norm_groups: 0,
            classes: 0,
        }),
        DataConfig::new(&spec, &options, &data),
        ScheduleSpec {
            beta_schedule: BetaScheduleName::Cosine,
            train_steps: 1000,
            zero_snr: false,
            sigmas: None,
        },
        Objective {
            prediction: PredictionType::V,
            loss_weight: LossWeightSpec::Simple,
        },
        TrainConfig {
            steps: 10_000,
            batch_size: 128,
            lr: 1e-3,
            lr_min: 1e-5,
            warmup_steps: 200,
            ema_decay: 0.999,
            checkpoint_every: 1000,
            preview_every: 2500,
            preview_steps: DEMO_SAMPLER_STEPS,
            ..TrainConfig::default()
        },
    )?;
    Ok((config, data))
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let device = args.device.open()?;
    let (config, data) = demo_config()?;
    let dir = args.out.as_path();
    let mut trainer = if checkpoint::exists(dir) {
        let saved = checkpoint::read_config(dir)?;
        if !saved.same_run(&config) {
            bail!(
                "{} holds another run than this demo; remove it or pass another --out",
                dir.display()
            );
        }
        resume(dir, &device)?
    } else {
        Trainer::new(config, data, &device)?
    };
    announce(&trainer, dir);
    train_and_report(&mut trainer, dir, None)?;
    let trained = started.elapsed();

    let sampling = Instant::now();
    let samples_path = dir.join(SAMPLES_FILE);
    write_samples(&trainer, &samples_path)?;
    println!(
        "\nThe demo trained in {:.0} s and sampled {DEMO_SAMPLES} digits with DDIM in \
         {DEMO_SAMPLER_STEPS} steps in {:.1} s.\n  samples:    {}\n  loss curve: {}\n  \
         checkpoint: {} (try: ddm sample --checkpoint {} --out more.png)",
        trained.as_secs_f64(),
        sampling.elapsed().as_secs_f64(),
        samples_path.display(),
        dir.join(LOSS_CURVE_FILE).display(),
        dir.display(),
        dir.display(),
    );
    Ok(())
}

/// Draws the demo's grid from the EMA weights.
fn write_samples(trainer: &Trainer, path: &Path) -> anyhow::Result<()> {
    let mut denoiser = trainer.denoiser(true)?;
    let options = preview_sampling(DEMO_SAMPLER_STEPS);
    let samples = generate(
        &mut denoiser,
        Schedule::new(trainer.alphas_cumprod())?,
        &options,
        DEMO_SAMPLES,
        DEMO_SAMPLES,
        None,
    )?;
    write_grid(path, &samples, trainer.config().graph.input_shape())?;
    Ok(())
}
