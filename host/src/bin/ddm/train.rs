//! `ddm train`: train an MLP or UNet noise predictor into a run folder.

use std::path::{Path, PathBuf};

use crate::optimizer_args::OptimizerArgs;
use anyhow::{bail, Context};
use clap::{ArgGroup, Args as ClapArgs};
use ddm::autoencoder::LatentSpace;
use ddm::data::{self, DatasetSpec, ImageFormat, LoadOptions, Subset};
use ddm::device::DeviceArgs;
use ddm::model::{self, MlpConfig, ModelConfig, ModelKind, Params, UnetConfig};
use ddm::schedule_args::{BetaScheduleName, ScheduleSpec, VeArgs};
use ddm::seeding::{derive, Purpose};
use ddm::train::checkpoint;
use ddm::train::checkpoint::WeightSet;
use ddm::train::fine_tune::{initial_weights, InitFrom};
use ddm::train::parallel;
use ddm::train::run::{preview_file, LOSS_CURVE_FILE};
use ddm::train::{
    self, DataConfig, LossWeightName, LossWeightSpec, Objective, PredictionType, RunConfig,
    RunOptions, TrainConfig, Trainer,
};
use ddm_core::NoiseLevels;

fn parse_dataset(text: &str) -> Result<DatasetSpec, String> {
    text.parse().map_err(|e: ddm::Error| e.to_string())
}

#[derive(Debug, ClapArgs)]
#[command(group(ArgGroup::new("definition").multiple(true)))]
pub struct Args {
    /// The run folder: checkpoints, config.json, loss curve and sample previews.
    #[arg(long, value_name = "RUN_DIR")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint (its settings come from there).
    #[arg(long, conflicts_with = "definition")]
    resume: bool,
    #[command(flatten)]
    device: DeviceArgs,
    /// Data-parallel training over this many ranks, each on its shard of every batch: with
    /// --device cuda:N the GPUs N, N+1, ... (over NCCL in a build with the nccl feature),
    /// with --device cpu as many threads. The batch size must be a multiple; a run resumes
    /// with any rank count.
    #[arg(long, default_value_t = 1)]
    ranks: usize,
    /// Stop after this step's checkpoint as if killed (for testing --resume).
    #[arg(long, hide = true)]
    stop_after: Option<u64>,

    /// The data set: optdigits, fashion-mnist, mnist, folder:PATH or toy:NAME (8gaussians,
    /// moons, swissroll, checkerboard).
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
    /// Number of toy: samples.
    #[arg(long, default_value_t = data::toy::DEFAULT_TOY_SAMPLES, group = "definition")]
    toy_samples: usize,

    /// Keep only the samples of these classes (comma-separated labels), e.g. to fine-tune on
    /// new classes.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "K,...",
        group = "definition"
    )]
    only_classes: Option<Vec<u32>>,
    /// Keep at most the first N samples (after --only-classes).
    #[arg(long, value_name = "N", group = "definition")]
    limit: Option<usize>,

    /// Fine-tune: start from the weights of this trained run, with its architecture, noise
    /// schedule and prediction type, on the data given here (same sample shape) with a new
    /// optimiser, learning-rate schedule and step count. A class-conditional source gains the
    /// data's new classes.
    #[arg(long, value_name = "RUN_DIR", group = "definition")]
    init_from: Option<PathBuf>,
    /// Which weights of --init-from to start from.
    #[arg(long, value_enum, default_value_t = InitWeights::Ema, requires = "init_from", group = "definition")]
    init_weights: InitWeights,
    /// With --init-from: hold these parameters at the source's values, by name prefix
    /// (comma-separated); `down-path` is the UNet's input convolution and down levels.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PREFIX,...",
        requires = "init_from",
        group = "definition"
    )]
    freeze: Vec<String>,

    /// The network: mlp (vectors, flattened small images) or unet (images).
    #[arg(
        long,
        value_enum,
        group = "definition",
        required_unless_present_any = ["resume", "init_from"],
        conflicts_with = "init_from"
    )]
    model: Option<ModelKind>,
    /// MLP: hidden width [default: 256]; UNet: channels of the first level [default: 32].
    #[arg(long, group = "definition", conflicts_with = "init_from")]
    width: Option<usize>,
    /// MLP: residual blocks [default: 3]; UNet: residual blocks per level [default: 1].
    #[arg(long, group = "definition", conflicts_with = "init_from")]
    depth: Option<usize>,
    /// UNet: width multiplier per level, comma-separated [default: 1,2].
    #[arg(
        long,
        value_delimiter = ',',
        group = "definition",
        conflicts_with = "init_from"
    )]
    channel_mults: Option<Vec<usize>>,
    /// GroupNorm groups (MLP: 0 for none) [default: MLP 0, UNet 8].
    #[arg(long, group = "definition", conflicts_with = "init_from")]
    groups: Option<usize>,
    /// MLP: length of the sinusoidal time embedding [default: 64].
    #[arg(long, group = "definition", conflicts_with = "init_from")]
    time_dim: Option<usize>,
    /// Learn the data in the latent space of this trained autoencoder (`ddm train-autoencoder
    /// --out AE_RUN`): the model sees the autoencoder's latents times its latent scale, and
    /// previews, `ddm sample` and `ddm eval` see them decoded.
    #[arg(
        long,
        value_name = "AE_RUN",
        group = "definition",
        conflicts_with = "init_from"
    )]
    latent: Option<PathBuf>,
    /// Learn a class-conditional model (one class per label of the data set) for
    /// `ddm sample --class K --guidance W`.
    #[arg(long, group = "definition")]
    conditional: bool,
    /// Probability of dropping a sample's label in training, so that the model also learns
    /// the unconditional prediction that guidance needs (with --conditional).
    #[arg(long, default_value_t = TrainConfig::default().label_dropout, group = "definition", requires = "conditional")]
    label_dropout: f32,

    /// Beta schedule.
    #[arg(long, value_enum, default_value_t = BetaScheduleName::Linear, group = "definition", conflicts_with = "init_from")]
    beta_schedule: BetaScheduleName,
    /// Training steps T of the diffusion (noise levels L of --beta-schedule ve) [default: 1000;
    /// ve: NCSNv2's rule, levels whose ratio puts about half of one level's samples in the
    /// next level's typical shell].
    #[arg(long, group = "definition", conflicts_with = "init_from")]
    train_steps: Option<usize>,
    /// Rescale the schedule to zero terminal SNR.
    #[arg(long, group = "definition", conflicts_with = "init_from")]
    zero_snr: bool,
    #[command(flatten)]
    ve: VeArgs,
    /// What the network predicts.
    #[arg(long, value_enum, default_value_t = PredictionType::Eps, group = "definition", conflicts_with = "init_from")]
    prediction: PredictionType,
    /// Per-timestep loss weight.
    #[arg(long, value_enum, default_value_t = LossWeightName::Simple, group = "definition")]
    loss_weight: LossWeightName,
    /// Gamma of --loss-weight min-snr.
    #[arg(long, default_value_t = 5.0, group = "definition")]
    min_snr_gamma: f32,

    /// Optimisation steps.
    #[arg(long, default_value_t = TrainConfig::default().steps, group = "definition")]
    steps: u64,
    #[command(flatten)]
    optimizer: OptimizerArgs,
    /// DDIM steps of the previews.
    #[arg(long, default_value_t = TrainConfig::default().preview_steps, group = "definition")]
    preview_steps: usize,
}

/// The weights `--init-from` starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum InitWeights {
    /// The exponential moving average.
    Ema,
    /// The trained weights.
    Model,
}

impl Args {
    fn model_config(&self, kind: ModelKind, classes: usize) -> anyhow::Result<ModelConfig> {
        Ok(match kind {
            ModelKind::Mlp => {
                if self.channel_mults.is_some() {
                    bail!("--channel-mults applies to --model unet only");
                }
                let preset = MlpConfig::default();
                ModelConfig::Mlp(MlpConfig {
                    hidden: self.width.unwrap_or(preset.hidden),
                    blocks: self.depth.unwrap_or(preset.blocks),
                    time_dim: self.time_dim.unwrap_or(preset.time_dim),
                    norm_groups: self.groups.unwrap_or(preset.norm_groups),
                    classes,
                })
            }
            ModelKind::Unet => {
                if self.time_dim.is_some() {
                    bail!("--time-dim applies to --model mlp only (the UNet's is --width)");
                }
                let preset = UnetConfig::default();
                ModelConfig::Unet(UnetConfig {
                    channels: self.width.unwrap_or(preset.channels),
                    channel_mults: self.channel_mults.clone().unwrap_or(preset.channel_mults),
                    blocks_per_level: self.depth.unwrap_or(preset.blocks_per_level),
                    groups: self.groups.unwrap_or(preset.groups),
                    classes,
                })
            }
        })
    }

    fn train_config(&self) -> TrainConfig {
        TrainConfig {
            preview_steps: self.preview_steps,
            label_dropout: self.label_dropout,
            freeze: self.freeze.clone(),
            ..self.optimizer.train_config(self.steps)
        }
    }

    /// The trainer of a new run: from the seed, or from `--init-from`'s weights.
    fn new_trainer(&self, device: &candle_core::Device) -> anyhow::Result<Trainer> {
        let Some(source_dir) = &self.init_from else {
            let (config, data) = self.new_run(device)?;
            return Ok(Trainer::new(config, data, device)?);
        };
        let Some(spec) = &self.dataset else {
            bail!("--dataset is required for a new run");
        };
        let options = self.load_options();
        let data = data::load(spec, &options)?;
        let source = checkpoint::read_config(source_dir)?;
        if source.latent.is_some() {
            bail!(
                "--init-from {}: fine-tuning a latent diffusion model is not supported yet",
                source_dir.display()
            );
        }
        let set = match self.init_weights {
            InitWeights::Ema => WeightSet::Ema,
            InitWeights::Model => WeightSet::Model,
        };
        let source_weights = checkpoint::read_weights(source_dir, &source, set)?;
        if data.shape != source.graph.input_shape() {
            bail!(
                "--init-from {}: the source was trained on samples of shape {:?}, {} has {:?}",
                source_dir.display(),
                source.graph.input_shape(),
                data.name,
                data.shape
            );
        }
        let classes = match (source.model.classes(), self.conditional) {
            (0, false) => 0,
            (source_classes, _) => source_classes.max(self.data_classes(&data)?),
        };
        let mut config = RunConfig::new(
            source.model.with_classes(classes),
            DataConfig::new(spec, &options, &data),
            source.schedule,
            Objective {
                prediction: source.objective.prediction,
                loss_weight: LossWeightSpec::new(self.loss_weight, self.min_snr_gamma)?,
            },
            self.train_config(),
        )?;
        config.init_from = Some(InitFrom {
            run: source_dir.clone(),
            ema: set == WeightSet::Ema,
            step: source.progress.step,
        });
        let init = Params::init(
            &config.graph,
            derive(config.train.seed, Purpose::Init),
            device,
        )?
        .to_weights()?;
        let weights = initial_weights(&config.graph, (&source.graph, &source_weights), &init)?;
        Ok(Trainer::fine_tuned(config, data, &weights, device)?)
    }

    /// How to load the data set of a new run.
    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            data_dir: self.data_dir.clone(),
            image: ImageFormat::square(self.image_size, self.image_channels),
            toy_samples: self.toy_samples,
            subset: Subset {
                classes: self.only_classes.clone(),
                limit: self.limit,
            },
            ..LoadOptions::default()
        }
    }

    /// The number of classes `--conditional` gives a model of `data`.
    fn data_classes(&self, data: &data::Dataset) -> anyhow::Result<usize> {
        match data.class_count() {
            Some(classes) if classes > 0 => Ok(classes),
            _ => bail!(
                "--conditional needs a labelled data set; {} has no labels (optdigits, \
                 fashion-mnist, mnist, toy:8gaussians, toy:moons and folder:PATH with one \
                 sub-folder of images per class have)",
                data.name
            ),
        }
    }

    /// The configuration of a new run and its data.
    fn new_run(&self, device: &candle_core::Device) -> anyhow::Result<(RunConfig, data::Dataset)> {
        let (Some(spec), Some(kind)) = (&self.dataset, self.model) else {
            bail!("--dataset and --model are required for a new run");
        };
        let options = self.load_options();
        let images = data::load(spec, &options)?;
        let data_config = DataConfig::new(spec, &options, &images);
        let (data, space) = match &self.latent {
            Some(dir) => {
                let (mut space, codec) = LatentSpace::open(dir, device)
                    .with_context(|| format!("--latent {}", dir.display()))?;
                (space.encode_training_data(&codec, &images)?, Some(space))
            }
            None => (images, None),
        };
        let classes = if self.conditional {
            self.data_classes(&data)?
        } else {
            0
        };
        let dim: usize = data.shape.iter().product();
        let sigmas = self
            .ve
            .sigmas(self.beta_schedule, Some((&data.values, dim)))?;
        let train_steps = match (self.train_steps, sigmas) {
            (Some(steps), _) => steps,
            (None, Some(sigmas)) => NoiseLevels::ncsnv2(sigmas.sigma_min, sigmas.sigma_max, dim)
                .context("--train-steps: NCSNv2's rule for the noise levels")?
                .len(),
            (None, None) => 1000,
        };
        let mut config = RunConfig::new(
            self.model_config(kind, classes)?,
            data_config,
            ScheduleSpec {
                beta_schedule: self.beta_schedule,
                train_steps,
                zero_snr: self.zero_snr,
                sigmas,
            },
            Objective {
                prediction: self.prediction,
                loss_weight: LossWeightSpec::new(self.loss_weight, self.min_snr_gamma)?,
            },
            self.train_config(),
        )?;
        if let Some(space) = space {
            config = config.in_latent_space(space)?;
        }
        Ok((config, data))
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if (args.resume || args.init_from.is_some()) && args.ve != VeArgs::default_values() {
        bail!(
            "--sigma-min and --sigma-max define a new run's schedule: a resumed or fine-tuned \
             run keeps its own"
        );
    }
    let devices = args.device.device.open_ranks(args.ranks)?;
    let device = devices[0].clone();
    let mut trainer = if args.resume {
        resume(&args.out, &device)?
    } else {
        if checkpoint::exists(&args.out) {
            bail!(
                "{} already holds a run; continue it with --resume or choose another --out",
                args.out.display()
            );
        }
        args.new_trainer(&device)?
    };
    announce(&trainer, &args.out);
    if devices.len() == 1 {
        return train_and_report(&mut trainer, &args.out, args.stop_after);
    }
    println!(
        "data parallel: {} ranks on {}, batch shards of {}, gradients summed through {}",
        devices.len(),
        if device.is_cuda() {
            format!("{} GPUs from {}", devices.len(), args.device.device)
        } else {
            "CPU threads".into()
        },
        trainer.config().train.batch_size / devices.len(),
        parallel::collective_name(&device)
    );
    let (mut lead, followers) = parallel::data_parallel(trainer, &devices, args.stop_after)?;
    train_and_report(&mut lead, &args.out, args.stop_after)?;
    drop(lead);
    Ok(followers.join()?)
}

/// A trainer continuing the run in `dir`.
pub fn resume(dir: &Path, device: &candle_core::Device) -> anyhow::Result<Trainer> {
    let checkpoint = checkpoint::load(dir)?;
    let data = checkpoint
        .config
        .load_training_data(device)
        .context("cannot resume: the training data")?;
    Ok(Trainer::from_checkpoint(checkpoint, data, device)?)
}

/// Prints what is about to be trained, with deployability warnings.
pub fn announce(trainer: &Trainer, dir: &Path) {
    let config = trainer.config();
    let graph = &config.graph;
    let model = match config.model.kind() {
        ModelKind::Mlp => "an MLP",
        ModelKind::Unet => "a UNet",
    };
    println!(
        "training {model} ({} parameters, {} MACs per sample) on {} ({} samples of shape \
         {:?}) from step {} to {}, batch {}, into {}",
        graph.parameter_count(),
        graph.macs(),
        config.data.dataset,
        config.data.samples,
        config.data.shape,
        trainer.step_count(),
        config.train.steps,
        config.train.batch_size,
        dir.display()
    );
    if let Some(space) = &config.latent {
        println!(
            "in the latent space of {} (latents {:?} scaled by {:.4}, images {:?})",
            space.autoencoder.display(),
            space.latent_shape,
            space.scale,
            space.image_shape
        );
    }
    if let Some(source) = &config.init_from {
        println!(
            "starting from the {} weights of {} at step {}",
            if source.ema { "EMA" } else { "trained" },
            source.run.display(),
            source.step
        );
    }
    for problem in model::deployability(graph) {
        eprintln!("warning: not deployable on the device runtime: {problem}");
    }
}

/// Runs the loop with a progress bar and prints where the results are.
pub fn train_and_report(
    trainer: &mut Trainer,
    dir: &Path,
    stop_after: Option<u64>,
) -> anyhow::Result<()> {
    if trainer.is_finished() {
        println!(
            "the run in {} has already taken all {} steps",
            dir.display(),
            trainer.config().train.steps
        );
        return Ok(());
    }
    let options = RunOptions {
        run_dir: dir.to_path_buf(),
        progress_bar: true,
        stop_after,
    };
    let summary = train::run(trainer, &options)?;
    let rate = summary.steps_taken as f64 / summary.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{} at step {} of {} after {:.1} s ({rate:.1} steps/s); mean loss of the last 100 steps \
         {:.4}",
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
    println!(
        "checkpoint: {}",
        dir.join(checkpoint::CONFIG_FILE).display()
    );
    println!("loss curve: {}", dir.join(LOSS_CURVE_FILE).display());
    let preview = dir.join(preview_file(summary.final_step));
    if preview.exists() {
        println!("samples:    {}", preview.display());
    }
    Ok(())
}
