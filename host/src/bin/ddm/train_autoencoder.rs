//! `ddm train-autoencoder`: train the autoencoder of latent diffusion into a run folder.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{ArgGroup, Args as ClapArgs};
use ddm::autoencoder::checkpoint;
use ddm::autoencoder::config::DEFAULT_KL_WEIGHT;
use ddm::autoencoder::trainer::preview_file;
use ddm::autoencoder::{
    psnr, AutoencoderConfig, AutoencoderLoss, AutoencoderRun, AutoencoderTrainer,
};
use ddm::data::{self, DatasetSpec, ImageFormat, LoadOptions, Split, Subset};
use ddm::device::DeviceArgs;
use ddm::train::run::{Training, LOSS_CURVE_FILE};
use ddm::train::{self, DataConfig, RunOptions};

use crate::optimizer_args::OptimizerArgs;

fn parse_dataset(text: &str) -> Result<DatasetSpec, String> {
    text.parse().map_err(|e: ddm::Error| e.to_string())
}

/// Training steps of an autoencoder run unless told otherwise.
const DEFAULT_STEPS: u64 = 4000;

#[derive(Debug, ClapArgs)]
#[command(group(ArgGroup::new("definition").multiple(true)))]
pub struct Args {
    /// The run folder: checkpoints, config.json, loss curve and reconstruction previews.
    #[arg(long, value_name = "RUN_DIR")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint (its settings come from there).
    #[arg(long, conflicts_with = "definition")]
    resume: bool,
    #[command(flatten)]
    device: DeviceArgs,
    /// Stop after this step's checkpoint as if killed (for testing --resume).
    #[arg(long, hide = true)]
    stop_after: Option<u64>,

    /// The images: fashion-mnist, mnist or folder:PATH (32x32 or 64x64 in colour with
    /// --image-size and --image-channels 3).
    #[arg(long, value_parser = parse_dataset, group = "definition", required_unless_present = "resume")]
    dataset: Option<DatasetSpec>,
    /// Folder with the IDX files of mnist / fashion-mnist.
    #[arg(long, group = "definition")]
    data_dir: Option<PathBuf>,
    /// Side length that folder: images are resized to.
    #[arg(long, default_value_t = 28, group = "definition")]
    image_size: usize,
    /// Channels of folder: images (1 grayscale, 3 RGB).
    #[arg(long, default_value_t = 1, group = "definition")]
    image_channels: usize,
    /// Keep at most the first N images.
    #[arg(long, value_name = "N", group = "definition")]
    limit: Option<usize>,

    /// Channels of the first level.
    #[arg(long, default_value_t = AutoencoderConfig::default().channels, group = "definition")]
    width: usize,
    /// Width multiplier per level, comma-separated; L levels downsample by 2^(L-1).
    #[arg(long, value_delimiter = ',', default_values_t = AutoencoderConfig::default().channel_mults, group = "definition")]
    channel_mults: Vec<usize>,
    /// Residual blocks per level.
    #[arg(long, default_value_t = AutoencoderConfig::default().blocks_per_level, group = "definition")]
    depth: usize,
    /// GroupNorm groups.
    #[arg(long, default_value_t = AutoencoderConfig::default().groups, group = "definition")]
    groups: usize,
    /// Channels of the latent.
    #[arg(long, default_value_t = AutoencoderConfig::default().latent_channels, group = "definition")]
    latent_channels: usize,
    /// Weight of the KL term against the L1 reconstruction term (both summed over an image).
    #[arg(long, default_value_t = DEFAULT_KL_WEIGHT, group = "definition")]
    kl_weight: f64,

    /// Optimisation steps.
    #[arg(long, default_value_t = DEFAULT_STEPS, group = "definition")]
    steps: u64,
    #[command(flatten)]
    optimizer: OptimizerArgs,
}

impl Args {
    /// The configuration of a new run and its data.
    fn new_run(&self) -> anyhow::Result<(AutoencoderRun, data::Dataset)> {
        let Some(spec) = &self.dataset else {
            bail!("--dataset is required for a new run");
        };
        let options = LoadOptions {
            data_dir: self.data_dir.clone(),
            image: ImageFormat::square(self.image_size, self.image_channels),
            subset: Subset {
                classes: None,
                limit: self.limit,
            },
            ..LoadOptions::default()
        };
        let data = data::load(spec, &options)?;
        let config = AutoencoderRun::new(
            AutoencoderConfig {
                channels: self.width,
                channel_mults: self.channel_mults.clone(),
                blocks_per_level: self.depth,
                groups: self.groups,
                latent_channels: self.latent_channels,
            },
            DataConfig::new(spec, &options, &data),
            AutoencoderLoss {
                kl_weight: self.kl_weight,
            },
            self.optimizer.train_config(self.steps),
        )?;
        Ok((config, data))
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let mut trainer = if args.resume {
        let saved = checkpoint::load(&args.out)?;
        let data = saved
            .config
            .data
            .load()
            .context("cannot resume: the training data")?;
        AutoencoderTrainer::from_checkpoint(saved, data, &device)?
    } else {
        if checkpoint::exists(&args.out) {
            bail!(
                "{} already holds a run; continue it with --resume or choose another --out",
                args.out.display()
            );
        }
        let (config, data) = args.new_run()?;
        AutoencoderTrainer::new(config, data, &device)?
    };
    let config = trainer.config();
    println!(
        "training an autoencoder ({} + {} parameters, {} + {} MACs per image; latent {:?}) on \
         {} ({} images of shape {:?}) from step {} to {}, batch {}, into {}",
        config.encoder.parameter_count(),
        config.decoder.parameter_count(),
        config.encoder.macs(),
        config.decoder.macs(),
        config.latent_shape(),
        config.data.dataset,
        config.data.samples,
        config.data.shape,
        trainer.step_count(),
        config.train.steps,
        config.train.batch_size,
        args.out.display()
    );
    if trainer.is_finished() {
        println!(
            "the run in {} has already taken all {} steps",
            args.out.display(),
            trainer.config().train.steps
        );
        return Ok(());
    }
    let options = RunOptions {
        run_dir: args.out.clone(),
        progress_bar: true,
        stop_after: args.stop_after,
    };
    let summary = train::run(&mut trainer, &options)?;
    println!(
        "{} at step {} of {} after {:.1} s; mean loss of the last 100 steps {:.4}",
        if summary.finished {
            "finished"
        } else {
            "stopped"
        },
        summary.final_step,
        trainer.config().train.steps,
        summary.elapsed.as_secs_f64(),
        summary.recent_loss.unwrap_or(f32::NAN)
    );
    if summary.finished {
        if let Err(error) = report_quality(&trainer) {
            eprintln!("warning: the reconstruction PSNR could not be measured: {error:#}");
        }
    }
    print_files(&args.out, summary.final_step);
    Ok(())
}

/// Prints the latent scale and the PSNR of reconstructions of up to 1000 held-out images (the
/// test split) or, for data without one, training images.
fn report_quality(trainer: &AutoencoderTrainer) -> anyhow::Result<()> {
    let config = trainer.config();
    let (spec, mut options) = config.data.load_options()?;
    let held_out = spec.has_splits();
    let images = if held_out {
        options.split = Split::Test;
        options.subset = Subset::default();
        data::load(&spec, &options)?
    } else {
        trainer.data().clone()
    };
    let n = images.len().min(1000);
    let values = &images.values[..n * images.sample_len()];
    let reconstructions = trainer.codec(true)?.reconstruct(values)?;
    println!(
        "latent scale {:.4}; reconstruction PSNR {:.2} dB on {n} {} images (EMA weights)",
        config.latent_scale.unwrap_or(f32::NAN),
        psnr(values, &reconstructions),
        if held_out { "test" } else { "training" }
    );
    Ok(())
}

fn print_files(dir: &Path, step: u64) {
    println!(
        "checkpoint: {}",
        dir.join(ddm::train::checkpoint::CONFIG_FILE).display()
    );
    println!("loss curve: {}", dir.join(LOSS_CURVE_FILE).display());
    let preview = dir.join(preview_file(step));
    if preview.exists() {
        println!("reconstructions: {}", preview.display());
    }
}
