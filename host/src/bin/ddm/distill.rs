//! `ddm distill`: a student that generates in a few network calls, from a trained teacher run.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{ArgGroup, Args as ClapArgs};
use ddm::device::DeviceArgs;
use ddm::export::describe_sampler;
use ddm::image_grid::is_image_shape;
use ddm::train::checkpoint::{self, WeightSet};
use ddm::train::run::save;
use ddm::train::student::{choose_eta, choose_timesteps, CHOICE_SAMPLES};
use ddm::train::{DistillConfig, DistillMethod, LossWeightSpec, TrainConfig, Trainer};

use crate::train::{announce, resume, train_and_report};

/// A progressive distillation's first teacher's DDIM steps unless `--teacher-steps` says
/// otherwise: the smallest `N 2^R` at least this.
pub const DEFAULT_PROGRESSIVE_TEACHER_STEPS: u32 = 64;
/// A consistency distillation's grid of teacher steps unless `--teacher-steps` says otherwise
/// (or `N` if more), chosen by measured quality (BENCHMARKS.md, "The teacher's grid and its
/// solver").
pub const DEFAULT_CONSISTENCY_TEACHER_STEPS: u32 = 32;
/// Optimisation steps of a distillation unless `--updates` says otherwise.
pub const DEFAULT_UPDATES: u64 = 8000;

#[derive(Debug, ClapArgs)]
#[command(group(ArgGroup::new("definition").multiple(true)))]
pub struct Args {
    /// The student's run folder: checkpoints, config.json (with its sampler), the current
    /// teacher, loss curve and previews.
    #[arg(long, value_name = "STUDENT_DIR")]
    out: PathBuf,
    /// Continue the distillation in --out from its last checkpoint.
    #[arg(long, conflicts_with = "definition")]
    resume: bool,
    /// With --resume: measure the student's eta and timesteps again at the end (the given ones
    /// too), as a new distillation does; for a student measured by an older ddm.
    #[arg(long, requires = "resume")]
    measure_again: bool,
    #[command(flatten)]
    device: DeviceArgs,
    /// Stop after this step's checkpoint as if killed (for testing --resume).
    #[arg(long, hide = true)]
    stop_after: Option<u64>,

    /// The teacher's run folder (`ddm train`, or a student of `ddm distill` to distil further).
    #[arg(
        long,
        value_name = "RUN_DIR",
        group = "definition",
        required_unless_present = "resume"
    )]
    teacher: Option<PathBuf>,
    /// Network calls per sample of the student (sampled with DDIM on --steps timesteps, its
    /// eta and timesteps measured at the end unless given).
    #[arg(long, group = "definition", required_unless_present = "resume")]
    steps: Option<u32>,
    /// The method: consistency (consistency distillation on the teacher's DDIM grid; one
    /// student serves every step count) or progressive (rounds halving the teacher's DDIM
    /// steps). Consistency is the default by measured quality at equal training time
    /// (BENCHMARKS.md, "Few-step students").
    #[arg(long, value_enum, default_value_t = DistillMethod::Consistency, group = "definition")]
    method: DistillMethod,
    /// DDIM steps of the first teacher [default: a student teacher's own steps; otherwise
    /// progressive: the smallest --steps x 2^R >= 64, consistency: 32, or --steps if more].
    #[arg(long, group = "definition")]
    teacher_steps: Option<u32>,
    /// Optimisation steps in all (progressive distillation splits them evenly over its
    /// log2(teacher-steps / steps) rounds; consistency has one round).
    #[arg(long, default_value_t = DEFAULT_UPDATES, group = "definition")]
    updates: u64,
    /// Clamp the teacher's x0 estimates to [-R, R] (0: no clamp) [default: 1 for images, no
    /// clamp otherwise].
    #[arg(long, value_name = "R", group = "definition")]
    teacher_clip_sample: Option<f32>,
    /// DDIM's eta in the student's sampler [default: measured at the end: 0, 0.5 and 1, then a
    /// search to 0.05 around the best, on 1000 samples against the training data with the
    /// data set's committed classifier (optdigits, fashion-mnist), and again with the measured
    /// timesteps; 0 without a classifier].
    #[arg(long, group = "definition")]
    eta: Option<f32>,
    /// The student's sampler timesteps, noisiest first, comma-separated (--steps of them, at
    /// most 16, strictly descending) [default: consistency: measured at the end, after eta: the
    /// timesteps of the teacher's grid whose samples lie closest to the training data
    /// (Frechet distance, as for eta); progressive, or without a committed classifier: the
    /// --steps trailing timesteps].
    #[arg(
        long,
        value_name = "T1,T2,...",
        value_delimiter = ',',
        group = "definition"
    )]
    timesteps: Option<Vec<u32>>,
    /// Distil the teacher's trained weights instead of their EMA.
    #[arg(long, group = "definition")]
    no_teacher_ema: bool,

    /// Samples per step [default: the teacher's].
    #[arg(long, group = "definition")]
    batch_size: Option<usize>,
    /// Peak learning rate of each round.
    #[arg(long, default_value_t = 5e-4, group = "definition")]
    lr: f64,
    /// Final learning rate of each round's cosine decay.
    #[arg(long, default_value_t = 1e-6, group = "definition")]
    lr_min: f64,
    /// Linear warm-up steps at the start of each round.
    #[arg(long, default_value_t = 50, group = "definition")]
    warmup: u64,
    /// Largest EMA decay; the student's EMA at the end of a round is the next round's teacher.
    #[arg(long, default_value_t = 0.995, group = "definition")]
    ema_decay: f64,
    /// Seed of the batches and previews.
    #[arg(long, default_value_t = 0, group = "definition")]
    seed: u64,
    /// Write a checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = TrainConfig::default().checkpoint_every, group = "definition")]
    checkpoint_every: u64,
    /// Write a PNG preview of the student's samples every N steps (0: only at the end).
    #[arg(long, default_value_t = 0, group = "definition")]
    preview_every: u64,
    /// Samples in each preview.
    #[arg(long, default_value_t = TrainConfig::default().preview_samples, group = "definition")]
    preview_samples: usize,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let mut trainer = if args.resume {
        resume(&args.out, &device)?
    } else {
        if checkpoint::exists(&args.out) {
            bail!(
                "{} already holds a run; continue it with --resume or choose another --out",
                args.out.display()
            );
        }
        new_student(args, &device)?
    };
    if let Some(distill) = &trainer.config().distill {
        println!(
            "{} distillation of {} into {} steps: {} round(s) of {} updates from {} teacher \
             steps",
            distill.method.name(),
            distill.teacher.display(),
            distill.steps,
            distill.rounds(),
            distill.updates_per_round,
            distill.teacher_steps
        );
    }
    if args.measure_again {
        trainer.forget_student_sampler()?;
    }
    announce(&trainer, &args.out);
    train_and_report(&mut trainer, &args.out, args.stop_after)?;
    choose_sampler(&mut trainer, &args.out)
}

/// Measures the finished student's sampler settings it was not given and saves them with the
/// run: eta first ([`choose_eta`]), then, with that eta, its timesteps
/// ([`choose_timesteps`]), then eta again with those timesteps.
fn choose_sampler(trainer: &mut Trainer, dir: &std::path::Path) -> anyhow::Result<()> {
    let Some(distill) = trainer.config().distill.clone() else {
        return Ok(());
    };
    if !trainer.is_finished() {
        return Ok(());
    }
    let measure_eta = distill.eta.is_none();
    if measure_eta {
        measure_eta_of(trainer, dir, "")?;
    }
    if distill.timesteps.is_none() {
        if let Some(choice) = choose_timesteps(trainer)? {
            trainer.set_student_timesteps(choice.timesteps.clone())?;
            save(trainer, dir)?;
            println!(
                "student timesteps: {:?}, FD {:.2} against the trailing timesteps' {:.2} \
                 ({} sets measured against {CHOICE_SAMPLES} training images)",
                choice.timesteps, choice.frechet, choice.trailing_frechet, choice.measured
            );
            if measure_eta {
                measure_eta_of(trainer, dir, " with these timesteps")?;
            }
        }
    }
    let sampler = trainer.config().default_sampler().expect("a distilled run");
    println!("student sampler: {}", describe_sampler(&sampler));
    Ok(())
}

/// Measures the student's eta with its sampler as it stands ([`choose_eta`]), saves it with the
/// run and says so ("student eta{context}: ...").
fn measure_eta_of(
    trainer: &mut Trainer,
    dir: &std::path::Path,
    context: &str,
) -> anyhow::Result<()> {
    match choose_eta(trainer)? {
        Some((eta, scores)) => {
            let measured: Vec<String> = scores
                .iter()
                .map(|s| format!("eta {}: FD {:.2}", s.eta, s.frechet))
                .collect();
            trainer.set_student_eta(eta)?;
            println!(
                "student eta{context}: {eta} (measured against {CHOICE_SAMPLES} training images: {})",
                measured.join(", ")
            );
        }
        None => {
            trainer.set_student_eta(0.0)?;
            println!("student eta: 0 (no committed classifier to measure others with)");
        }
    }
    save(trainer, dir)?;
    Ok(())
}

/// A fresh student of the teacher in `args.teacher`.
fn new_student(args: &Args, device: &candle_core::Device) -> anyhow::Result<Trainer> {
    let (Some(teacher_dir), Some(steps)) = (&args.teacher, args.steps) else {
        bail!("--teacher and --steps are required for a new distillation");
    };
    let teacher = checkpoint::read_config(teacher_dir)
        .with_context(|| format!("the teacher {}", teacher_dir.display()))?;
    let set = if args.no_teacher_ema {
        WeightSet::Model
    } else {
        WeightSet::Ema
    };
    if teacher.latent.is_some() {
        bail!(
            "the teacher {} is a latent diffusion model: distilling one is not supported yet",
            teacher_dir.display()
        );
    }
    let weights = checkpoint::read_weights(teacher_dir, &teacher, set)?;
    let data = teacher.data.load().context("the teacher's training data")?;
    let teacher_steps =
        args.teacher_steps
            .unwrap_or_else(|| match (&teacher.distill, args.method) {
                (Some(own), _) => own.steps,
                (None, DistillMethod::Consistency) => DEFAULT_CONSISTENCY_TEACHER_STEPS.max(steps),
                (None, DistillMethod::Progressive) => {
                    let mut k = steps.max(1) * 2;
                    while k < DEFAULT_PROGRESSIVE_TEACHER_STEPS {
                        k *= 2;
                    }
                    k
                }
            });
    let teacher_clip = match args.teacher_clip_sample {
        Some(0.0) => None,
        Some(radius) => Some(radius),
        None => is_image_shape(&teacher.data.shape).then_some(1.0),
    };
    let mut distill = DistillConfig {
        method: args.method,
        teacher: teacher_dir.clone(),
        teacher_step: teacher.progress.step,
        teacher_ema: !args.no_teacher_ema,
        steps,
        teacher_steps,
        updates_per_round: args.updates,
        teacher_clip,
        eta: args.eta,
        timesteps: args.timesteps.clone(),
    };
    distill.updates_per_round = args.updates / distill.rounds();
    if distill.updates_per_round == 0 {
        bail!(
            "--updates {} leaves no update for each of the {} rounds",
            args.updates,
            distill.rounds()
        );
    }
    let mut config = teacher.clone();
    config.train = TrainConfig {
        steps: distill.total_updates(),
        batch_size: args.batch_size.unwrap_or(teacher.train.batch_size),
        lr: args.lr,
        lr_min: args.lr_min,
        warmup_steps: args.warmup,
        ema_decay: args.ema_decay,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        preview_every: args.preview_every,
        preview_samples: args.preview_samples,
        preview_steps: steps.max(1) as usize,
        ..teacher.train.clone()
    };
    config.objective.loss_weight = LossWeightSpec::Simple;
    config.distill = Some(distill);
    config.progress = Default::default();
    Ok(Trainer::distilled(config, data, &weights, device)?)
}
