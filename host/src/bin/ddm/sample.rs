//! `ddm sample`: generate samples from the exact mixture oracle (and, later, from models).

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args as ClapArgs;
use ddm::npy;
use ddm::oracle::{MixtureDenoiser, MixtureSpec};
use ddm::sampling::{generate, LangevinOptions, SamplerChoice, SamplingOptions};
use ddm::schedule_args::{BetaScheduleName, ScheduleSpec, SpacingName};
use ddm_core::loss_weight::ReverseVariance;
use ddm_core::Schedule;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum VarianceName {
    /// rho^2 = beta ("fixed large").
    Beta,
    /// rho^2 = posterior variance ("fixed small").
    Posterior,
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Sample from the exact denoiser of this Gaussian mixture (JSON: means, stds, weights).
    #[arg(long, value_name = "SPEC.json")]
    oracle_gmm: Option<PathBuf>,
    /// The sampler.
    #[arg(long, value_enum, default_value_t = SamplerChoice::Ddim)]
    sampler: SamplerChoice,
    /// Network evaluations (Langevin: levels x steps per level, plus one final denoising step).
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// DDIM's eta: 0 is deterministic, 1 matches DDPM's noise.
    #[arg(long, default_value_t = 0.0)]
    eta: f32,
    /// Timestep spacing [default: logsnr for dpmpp-2m, leading otherwise].
    #[arg(long, value_enum)]
    spacing: Option<SpacingName>,
    /// Offset added to leading timesteps.
    #[arg(long, default_value_t = 0)]
    steps_offset: usize,
    /// Beta schedule of the oracle's forward process.
    #[arg(long, value_enum, default_value_t = BetaScheduleName::Linear)]
    beta_schedule: BetaScheduleName,
    /// Training steps T of the oracle's forward process.
    #[arg(long, default_value_t = 1000)]
    train_steps: usize,
    /// Rescale the oracle's schedule to zero terminal SNR.
    #[arg(long)]
    zero_snr: bool,
    /// DDPM's reverse variance.
    #[arg(long, value_enum, default_value_t = VarianceName::Posterior)]
    variance: VarianceName,
    /// Clamp every x0 estimate to [-R, R].
    #[arg(long, value_name = "R")]
    clip_sample: Option<f32>,
    /// Seed of the random streams (sample i uses stream i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Initial noise x_T as an f32 .npy of shape [n, D] (replaces --num).
    #[arg(long, value_name = "X.npy")]
    init_noise: Option<PathBuf>,
    /// Number of samples.
    #[arg(long, default_value_t = 64)]
    num: usize,
    /// Samples going through the denoiser at once.
    #[arg(long, default_value_t = 4096)]
    batch_size: usize,
    /// Langevin: number of noise levels.
    #[arg(long, default_value_t = 10)]
    levels: usize,
    /// Langevin: largest noise level [default: the schedule's sigma at T-1].
    #[arg(long)]
    sigma_max: Option<f64>,
    /// Langevin: smallest noise level [default: the schedule's sigma at step 0].
    #[arg(long)]
    sigma_min: Option<f64>,
    /// Langevin: step size at the smallest level.
    #[arg(long, default_value_t = 2e-5)]
    langevin_step_size: f64,
    /// Output file: .npy (f32, [n, D]).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

impl Args {
    fn sampling_options(&self) -> SamplingOptions {
        SamplingOptions {
            sampler: self.sampler,
            steps: self.steps,
            spacing: self.spacing.map(Into::into),
            steps_offset: self.steps_offset,
            eta: self.eta,
            variance: match self.variance {
                VarianceName::Beta => ReverseVariance::Beta,
                VarianceName::Posterior => ReverseVariance::Posterior,
            },
            clip_sample: self.clip_sample,
            seed: self.seed,
            langevin: LangevinOptions {
                levels: self.levels,
                sigma_max: self.sigma_max,
                sigma_min: self.sigma_min,
                step_size: self.langevin_step_size,
                final_denoise: true,
            },
        }
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let Some(spec_path) = &args.oracle_gmm else {
        bail!("nothing to sample from: give --oracle-gmm SPEC.json");
    };
    let spec = MixtureSpec::from_file(spec_path)?;
    let schedule_spec = ScheduleSpec {
        beta_schedule: args.beta_schedule,
        train_steps: args.train_steps,
        zero_snr: args.zero_snr,
    };
    let table = schedule_spec.alphas_cumprod()?;
    let schedule = Schedule::new(&table)?;
    let mut denoiser = MixtureDenoiser::new(&spec, schedule)?;

    let init = read_init_noise(args.init_noise.as_deref(), spec.dim())?;
    let num = init.as_ref().map_or(args.num, |a| a.rows());
    check_output_path(&args.out)?;
    let samples = generate(
        &mut denoiser,
        schedule,
        &args.sampling_options(),
        num,
        args.batch_size,
        init.as_ref().map(|a| a.values.as_slice()),
    )?;
    npy::write_f32(&args.out, &[num, spec.dim()], &samples)?;
    println!(
        "wrote {num} samples of dimension {} to {}",
        spec.dim(),
        args.out.display()
    );
    Ok(())
}

fn read_init_noise(path: Option<&Path>, dim: usize) -> anyhow::Result<Option<npy::Array>> {
    let Some(path) = path else { return Ok(None) };
    let array = npy::read_f32(path)?;
    if array.shape.len() != 2 || array.shape[1] != dim {
        bail!(
            "{}: initial noise has shape {:?}, expected [n, {dim}]",
            path.display(),
            array.shape
        );
    }
    Ok(Some(array))
}

fn check_output_path(path: &Path) -> anyhow::Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => Ok(()),
        _ => bail!("{}: the output must be a .npy file", path.display()),
    }
}
