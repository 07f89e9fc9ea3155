//! `ddm sample`: generate samples from a trained checkpoint, an exported model blob (the
//! device runtime, run on the host) or the exact mixture oracle.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{ArgGroup, Args as ClapArgs};
use ddm::autoencoder::{Codec, LatentSpace};
use ddm::device::DeviceArgs;
use ddm::export::{describe_sampler, generate_on_runtime, read_blob};
use ddm::guided::{parse_classes, Guided};
use ddm::image_grid::{default_scale, grid, is_image_shape, write_grid, write_png};
use ddm::model::{NetworkDenoiser, Params};
use ddm::npy;
use ddm::oracle::{MixtureDenoiser, MixtureSpec};
use ddm::sampler_args::{blob_sampler_options, SamplerArgs};
use ddm::sampling::{generate, Denoiser, LangevinOptions, SamplerChoice, SamplingOptions};
use ddm::schedule_args::{BetaScheduleName, ScheduleSpec, VeArgs};
use ddm::train::checkpoint::{self, WeightSet};
use ddm_core::{Guidance, SamplerConfig, SamplerOptions, Schedule};
use ddm_firmware::{Blob, BlobKind};

/// Default `--sampler` of a checkpoint or the oracle.
const DEFAULT_SAMPLER: SamplerChoice = SamplerChoice::Ddim;
/// Default `--steps` of a checkpoint or the oracle.
const DEFAULT_STEPS: usize = 50;

/// Default `--batch-size` for the oracle (cheap per sample).
const ORACLE_BATCH: usize = 4096;
/// Default `--batch-size` for a network.
const NETWORK_BATCH: usize = 256;

#[derive(Debug, ClapArgs)]
#[command(group(ArgGroup::new("source").required(true).args(["oracle_gmm", "checkpoint", "model"])))]
pub struct Args {
    /// Sample from the exact denoiser of this Gaussian mixture (JSON: means, stds, weights).
    #[arg(long, value_name = "SPEC.json")]
    oracle_gmm: Option<PathBuf>,
    /// Sample from the model trained in this run folder (its schedule and prediction type; a
    /// distilled student's sampler, steps and timesteps too).
    #[arg(long, value_name = "RUN_DIR")]
    checkpoint: Option<PathBuf>,
    /// Sample from this exported model blob (`ddm export`) with the device runtime, run on the
    /// host: the bytes a device would produce. Its schedule and, for every sampler option not
    /// given here, its default sampler's settings.
    #[arg(long, value_name = "model.ddm")]
    model: Option<PathBuf>,
    /// Use the trained weights instead of their EMA.
    #[arg(long, requires = "checkpoint")]
    no_ema: bool,
    #[command(flatten)]
    device: DeviceArgs,
    /// The sampler [default: ddim; a distilled student: its own (ddim); --model: the blob's].
    #[arg(long, value_enum)]
    sampler: Option<SamplerChoice>,
    /// Steps: network evaluations of ddpm, ddim and dpmpp-2m; timesteps walked by pc (each
    /// --pc-corrector-steps + 1 evaluations) and pf-ode (2 steps - 1 evaluations in all);
    /// Langevin: its evaluations, levels x steps per level, plus one final denoising step
    /// [default: 50, at most the model's training steps; a distilled student: its own;
    /// --model: the blob's].
    #[arg(long)]
    steps: Option<usize>,
    #[command(flatten)]
    settings: SamplerArgs,
    /// Beta schedule of the oracle's forward process [default: linear].
    #[arg(long, value_enum)]
    beta_schedule: Option<BetaScheduleName>,
    /// Training steps T of the oracle's forward process [default: 1000].
    #[arg(long)]
    train_steps: Option<usize>,
    /// Rescale the oracle's schedule to zero terminal SNR.
    #[arg(long)]
    zero_snr: bool,
    /// The oracle's variance-exploding schedule (--beta-schedule ve).
    #[command(flatten)]
    ve: VeArgs,
    /// Seed of the random streams (sample i uses stream i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Initial noise x_T as an f32 .npy of shape [n, ...sample shape] (replaces --num).
    #[arg(long, value_name = "X.npy")]
    init_noise: Option<PathBuf>,
    /// Number of samples.
    #[arg(long, default_value_t = 64)]
    num: usize,
    /// Samples going through the denoiser at once [default: 4096 for the oracle, 256 for a
    /// network; not with --model, which generates one sample at a time like the device, in
    /// parallel over --threads].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Langevin: number of noise levels [default: a variance-exploding model's own; 10 for
    /// another].
    #[arg(long)]
    levels: Option<usize>,
    /// Langevin: largest noise level [default: a variance-exploding model's sigma_max; the
    /// schedule's sigma at T-1 for another].
    #[arg(long)]
    langevin_sigma_max: Option<f64>,
    /// Langevin: smallest noise level [default: a variance-exploding model's sigma_min; the
    /// schedule's sigma at step 0 for another].
    #[arg(long)]
    langevin_sigma_min: Option<f64>,
    /// Langevin: step size at the smallest level [default: a variance-exploding model's
    /// NCSNv2 rule for the levels' ratio and the steps per level; 2e-5 for another].
    #[arg(long)]
    langevin_step_size: Option<f64>,
    /// Generate these classes of a class-conditional model (`ddm train --conditional`; for
    /// --oracle-gmm, class k is component k): a comma-separated list or `all`; --num samples
    /// of each, class by class (a PNG grid has one row per class).
    #[arg(long, value_name = "K[,K...]|all")]
    class: Option<String>,
    /// Classifier-free guidance scale with --class, in diffusers' convention (1: the
    /// conditional model alone; larger: more typical of the class, two network calls per
    /// step).
    #[arg(long, default_value_t = ddm::guided::DEFAULT_GUIDANCE, requires = "class")]
    guidance: f32,
    /// Output file: .npy (f32, [n, ...sample shape], values in [-1, 1] for trained data) or
    /// .png (a grid, for image data).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

impl Args {
    /// The sampling options over `base`, the sampler the model was trained for (a distilled
    /// student's).
    fn sampling_options(&self, base: Option<SamplerConfig>, train_steps: usize) -> SamplingOptions {
        // The default step count fits a schedule of few steps (a VE model's NCSNv2 levels).
        let default_steps = match self.sampler {
            Some(SamplerChoice::Langevin) => DEFAULT_STEPS,
            _ => DEFAULT_STEPS.min(train_steps),
        };
        let model = SamplingOptions::for_model(
            self.sampler,
            self.settings.steps_or_given(self.steps),
            base,
            (DEFAULT_SAMPLER, default_steps),
        );
        SamplingOptions {
            settings: self.settings.options(),
            seed: self.seed,
            langevin: LangevinOptions {
                levels: self.levels,
                sigma_max: self.langevin_sigma_max,
                sigma_min: self.langevin_sigma_min,
                step_size: self.langevin_step_size,
                final_denoise: true,
            },
            ..model
        }
    }

    /// The sampler options given on the command line, for a blob (everything not given is
    /// the blob's).
    fn overrides(&self) -> anyhow::Result<SamplerOptions> {
        Ok(blob_sampler_options(
            self.sampler,
            self.steps,
            &self.settings,
        )?)
    }

    /// Whether an oracle schedule option was given.
    fn oracle_schedule_given(&self) -> bool {
        self.beta_schedule.is_some()
            || self.train_steps.is_some()
            || self.zero_snr
            || self.ve != VeArgs::default_values()
    }
}

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Npy,
    Png,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let output = output_kind(&args.out)?;
    if let Some(path) = &args.model {
        sample_blob(args, output, path)
    } else if let Some(dir) = &args.checkpoint {
        if args.oracle_schedule_given() {
            bail!(
                "--beta-schedule, --train-steps, --zero-snr, --sigma-min and --sigma-max apply \
                 to --oracle-gmm only: a checkpoint brings its own schedule"
            );
        }
        let config = checkpoint::read_config(dir)?;
        let set = if args.no_ema {
            WeightSet::Model
        } else {
            WeightSet::Ema
        };
        let weights = checkpoint::read_weights(dir, &config, set)?;
        let device = args.device.open()?;
        let params = Params::from_weights(&config.graph, &weights, &device)?;
        let mut denoiser = NetworkDenoiser::new(
            config.graph.clone(),
            params,
            config.objective.prediction.into(),
            device.clone(),
        );
        let table = config.schedule.alphas_cumprod()?;
        let batch = args.batch_size.unwrap_or(NETWORK_BATCH);
        let options = SamplingOptions {
            model_levels: config.schedule.noise_levels(),
            ..args.sampling_options(config.default_sampler(), config.schedule.train_steps)
        };
        let decoder = match &config.latent {
            Some(space) => Some((space, space.codec(&device)?)),
            None => None,
        };
        let decoder = decoder.as_ref().map(|(space, codec)| (*space, codec));
        sample_and_write(
            args,
            &options,
            output,
            &mut denoiser,
            &table,
            batch,
            decoder,
        )
    } else if let Some(spec_path) = &args.oracle_gmm {
        let spec = MixtureSpec::from_file(spec_path)?;
        let schedule_spec = ScheduleSpec {
            beta_schedule: args.beta_schedule.unwrap_or_default(),
            train_steps: args.train_steps.unwrap_or(1000),
            zero_snr: args.zero_snr,
            sigmas: args
                .ve
                .sigmas(args.beta_schedule.unwrap_or_default(), None)?,
        };
        let table = schedule_spec.alphas_cumprod()?;
        let mut denoiser = MixtureDenoiser::new(&spec, Schedule::new(&table)?)?;
        let batch = args.batch_size.unwrap_or(ORACLE_BATCH);
        let options = SamplingOptions {
            model_levels: schedule_spec.noise_levels(),
            ..args.sampling_options(None, schedule_spec.train_steps)
        };
        sample_and_write(args, &options, output, &mut denoiser, &table, batch, None)
    } else {
        bail!(
            "nothing to sample from: give --checkpoint RUN_DIR, --model model.ddm or \
             --oracle-gmm SPEC.json"
        );
    }
}

/// `--model`: the device runtime on the host, one sample per generation.
fn sample_blob(args: &Args, output: Output, path: &Path) -> anyhow::Result<()> {
    if args.oracle_schedule_given() {
        bail!(
            "--beta-schedule, --train-steps, --zero-snr, --sigma-min and --sigma-max apply to \
             --oracle-gmm only: a model blob brings its own schedule"
        );
    }
    if args.init_noise.is_some() || args.batch_size.is_some() {
        bail!(
            "--init-noise and --batch-size do not apply to --model: the device runtime draws \
             each sample's noise from its own stream (sample i of --seed) and generates one \
             sample at a time"
        );
    }
    let bytes = read_blob(path)?;
    let blob = Blob::parse(&bytes)?;
    if blob.kind() != BlobKind::Model {
        bail!(
            "{}: a network blob (a network alone, without a schedule) cannot generate; sample \
             from a model blob",
            path.display()
        );
    }
    let (dims, rank) = blob.image_shape().dims();
    let shape = dims[..rank].to_vec();
    check_png_shape(args, output, &shape)?;
    let overrides = args.overrides()?;
    let sampler = overrides.resolve(
        Some(blob.sampler_defaults()),
        &blob.alpha_bar_schedule()?,
        blob.schedule().prediction,
    )?;
    let mut groups = match blob.time_groups() {
        1 => String::new(),
        n => format!(", {n} time groups"),
    };
    if blob.decoder().is_some() {
        groups.push_str(&format!(
            ", latents {:?} decoded into images {shape:?}",
            blob.sample_shape().dims().0[..blob.sample_shape().dims().1].to_vec()
        ));
    }
    println!(
        "sampling {} ({}{groups}) with the device runtime: {}",
        path.display(),
        blob.precision().name(),
        describe_sampler(&sampler)
    );
    let Some(requested) = &args.class else {
        let samples = generate_on_runtime(&bytes, overrides, args.seed, args.num, None)?;
        return write_samples(args, output, &shape, args.num, &samples);
    };
    let Some(classes) = blob.classes() else {
        bail!(
            "{}: this model is unconditional: --class and --guidance need a model trained \
             with --conditional",
            path.display()
        );
    };
    let list = parse_classes(requested, classes)?;
    let guidance = Guidance::new(args.guidance)?;
    let mut samples = Vec::new();
    for &class in &list {
        let condition = Some((class, guidance));
        samples.extend(generate_on_runtime(
            &bytes, overrides, args.seed, args.num, condition,
        )?);
    }
    write_class_samples(args, output, &shape, args.num, &list, &samples)
}

fn check_png_shape(args: &Args, output: Output, shape: &[usize]) -> anyhow::Result<()> {
    if output == Output::Png && !is_image_shape(shape) {
        bail!(
            "{}: a PNG grid needs image samples ([C, H, W]); these have shape {shape:?}, \
             write a .npy file instead",
            args.out.display()
        );
    }
    Ok(())
}

fn write_samples(
    args: &Args,
    output: Output,
    shape: &[usize],
    num: usize,
    samples: &[f32],
) -> anyhow::Result<()> {
    match output {
        Output::Npy => {
            let mut full_shape = vec![num];
            full_shape.extend_from_slice(shape);
            npy::write_f32(&args.out, &full_shape, samples)?;
        }
        Output::Png => write_grid(&args.out, samples, shape)?,
    }
    println!(
        "wrote {num} samples of shape {shape:?} to {}",
        args.out.display()
    );
    Ok(())
}

/// Generates with `denoiser` and writes the samples; a latent run's (`decoder`) are decoded
/// into images first. `--init-noise` is in the denoiser's sample shape (the latent shape).
fn sample_and_write(
    args: &Args,
    options: &SamplingOptions,
    output: Output,
    denoiser: &mut dyn Denoiser,
    alphas_cumprod: &[f32],
    batch: usize,
    decoder: Option<(&LatentSpace, &Codec)>,
) -> anyhow::Result<()> {
    let shape = denoiser.sample_shape();
    let out_shape = decoder.map_or(shape.clone(), |(space, _)| space.image_shape.clone());
    check_png_shape(args, output, &out_shape)?;
    let init = read_init_noise(args.init_noise.as_deref(), &shape)?;
    let num = init.as_ref().map_or(args.num, |a| a.rows());
    let init = init.as_ref().map(|a| a.values.as_slice());
    let schedule = Schedule::new(alphas_cumprod)?;
    let decode = |samples: Vec<f32>| -> anyhow::Result<Vec<f32>> {
        Ok(match decoder {
            Some((space, codec)) => space.decode(codec, &samples)?,
            None => samples,
        })
    };
    let Some(requested) = &args.class else {
        let samples = decode(generate(denoiser, schedule, options, num, batch, init)?)?;
        return write_samples(args, output, &out_shape, num, &samples);
    };
    let classes = denoiser.classes().unwrap_or(0);
    let mut guided = Guided::new(denoiser, 0, args.guidance)?;
    let list = parse_classes(requested, classes)?;
    let mut samples = Vec::new();
    for &class in &list {
        guided.set_class(class)?;
        samples.extend(generate(&mut guided, schedule, options, num, batch, init)?);
    }
    let samples = decode(samples)?;
    write_class_samples(args, output, &out_shape, num, &list, &samples)
}

/// Writes `args.num` samples of each class of `list`, class by class: a PNG grid with one row
/// per class, or one `.npy` array.
fn write_class_samples(
    args: &Args,
    output: Output,
    shape: &[usize],
    num: usize,
    list: &[u32],
    samples: &[f32],
) -> anyhow::Result<()> {
    println!(
        "classes {list:?}, guidance {} ({} per step)",
        args.guidance,
        if args.guidance == 1.0 {
            "1 network call"
        } else {
            "2 network calls"
        }
    );
    match output {
        Output::Png => {
            let height = shape.get(1).copied().unwrap_or(1);
            let image = grid(samples, shape, Some(num), default_scale(height))?;
            write_png(&args.out, &image)?;
            println!(
                "wrote {} rows of {num} samples of shape {shape:?} to {}",
                list.len(),
                args.out.display()
            );
            Ok(())
        }
        Output::Npy => write_samples(args, output, shape, num * list.len(), samples),
    }
}

fn read_init_noise(path: Option<&Path>, shape: &[usize]) -> anyhow::Result<Option<npy::Array>> {
    let Some(path) = path else { return Ok(None) };
    let array = npy::read_f32(path)?;
    let sample_len: usize = shape.iter().product();
    let flat = array.shape.len() == 2 && array.shape[1] == sample_len;
    let full = array.shape.len() == shape.len() + 1 && array.shape[1..] == *shape;
    if !flat && !full {
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        bail!(
            "{}: initial noise has shape {:?}, expected [n, {}]",
            path.display(),
            array.shape,
            dims.join(", ")
        );
    }
    Ok(Some(array))
}

fn output_kind(path: &Path) -> anyhow::Result<Output> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => Ok(Output::Npy),
        Some("png") => Ok(Output::Png),
        _ => bail!(
            "{}: the output must be a .npy file (any data) or a .png file (images)",
            path.display()
        ),
    }
}
