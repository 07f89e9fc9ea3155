//! The training loop: steps, progress bar, checkpoints, loss curve and previews.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ddm_core::SamplerOptions;
use ddm_core::Schedule;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::checkpoint;
use super::config::{Progress, RunConfig, TrainConfig};
use super::trainer::{StepReport, Trainer};
use crate::error::{Error, Result};
use crate::image_grid::{is_image_shape, write_grid};
use crate::plot::{moving_average, write_loss_curve, write_scatter};
use crate::sampling::{generate, SamplingOptions};
use crate::seeding::{derive, Purpose};

/// The loss curve's file name in the run folder.
pub const LOSS_CURVE_FILE: &str = "loss.png";

/// How to run the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// The run folder (checkpoints, loss curve, previews).
    pub run_dir: PathBuf,
    /// Draw an indicatif progress bar on stderr (when it is a terminal).
    pub progress_bar: bool,
    /// Stop after this step, with a checkpoint of it, as if the process had been killed
    /// right after saving (for testing `--resume`).
    pub stop_after: Option<u64>,
}

/// What a call of [`run`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Steps taken by this call.
    pub steps_taken: u64,
    /// The run's step count at the end.
    pub final_step: u64,
    /// Wall time of the loop.
    pub elapsed: Duration,
    /// Mean loss of the last (up to) 100 steps of the run.
    pub recent_loss: Option<f32>,
    /// Whether the run has taken all its steps.
    pub finished: bool,
}

/// The preview file of step `step` (`samples-step000500.png`).
pub fn preview_file(step: u64) -> String {
    format!("samples-step{step:06}.png")
}

/// A run that [`run`] drives step by step: a denoiser's ([`Trainer`]) or an autoencoder's
/// ([`crate::autoencoder::AutoencoderTrainer`]).
pub trait Training {
    /// Takes one optimisation step (see [`Trainer::step`]).
    ///
    /// # Errors
    /// Tensor errors; a non-finite loss is reported, not an error.
    fn step(&mut self) -> Result<StepReport>;
    /// The run's hyper-parameters.
    fn train_config(&self) -> &TrainConfig;
    /// Steps taken and their losses.
    fn progress(&self) -> &Progress;
    /// Writes a checkpoint into `dir` and redraws the loss curve.
    ///
    /// # Errors
    /// I/O errors naming the file.
    fn save(&self, dir: &Path) -> Result<()>;
    /// Writes a preview image for the current step into `dir`, where the data has one.
    ///
    /// # Errors
    /// Tensor and I/O errors.
    fn write_preview(&self, dir: &Path) -> Result<Option<PathBuf>>;

    /// Steps taken so far.
    fn step_count(&self) -> u64 {
        self.progress().step
    }

    /// Whether every configured step has been taken.
    fn is_finished(&self) -> bool {
        self.step_count() >= self.train_config().steps
    }
}

impl Training for Trainer {
    fn step(&mut self) -> Result<StepReport> {
        Trainer::step(self)
    }

    fn train_config(&self) -> &TrainConfig {
        &self.config().train
    }

    fn progress(&self) -> &Progress {
        &self.config().progress
    }

    fn save(&self, dir: &Path) -> Result<()> {
        save(self, dir)
    }

    fn write_preview(&self, dir: &Path) -> Result<Option<PathBuf>> {
        write_preview(self, dir)
    }
}

/// Trains until the configured number of steps (or `stop_after`), writing a checkpoint every
/// `checkpoint_every` steps and at the end, the loss curve with each checkpoint, and a
/// preview every `preview_every` steps and at the end.
///
/// # Errors
/// [`Error::NonFiniteLoss`] when a step's loss or gradient is NaN or infinite (nothing of that
/// step is saved; the last checkpoint stays); I/O and tensor errors otherwise.
pub fn run(trainer: &mut impl Training, options: &RunOptions) -> Result<RunSummary> {
    let dir = options.run_dir.as_path();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let total = trainer.train_config().steps;
    let start_step = trainer.step_count();
    let mut last_checkpoint = checkpoint::exists(dir).then_some(start_step);
    let bar = progress_bar(options.progress_bar, total, start_step);
    let started = Instant::now();
    while !trainer.is_finished() {
        let report = trainer.step()?;
        if !report.applied {
            bar.abandon();
            let value = if report.loss.is_finite() {
                report.grad_norm
            } else {
                report.loss
            };
            return Err(Error::NonFiniteLoss {
                step: report.step,
                value,
                last_checkpoint,
                run_dir: dir.to_path_buf(),
            });
        }
        let step = report.step;
        bar.set_position(step);
        if step % 10 == 0 || step == total {
            let losses = &trainer.progress().losses;
            let recent = moving_average(&losses[losses.len().saturating_sub(50)..], 50);
            bar.set_message(format!("loss {:.4}", recent.last().copied().unwrap_or(0.0)));
        }
        let train = trainer.train_config();
        let at_end = step == total;
        let stopping = options.stop_after == Some(step);
        if step % train.checkpoint_every == 0 || at_end || stopping {
            trainer.save(dir)?;
            last_checkpoint = Some(step);
        }
        if (train.preview_every > 0 && step % train.preview_every == 0) || at_end {
            bar.suspend(|| trainer.write_preview(dir))?;
        }
        if stopping {
            break;
        }
    }
    bar.finish_and_clear();
    let losses = &trainer.progress().losses;
    let recent = &losses[losses.len().saturating_sub(100)..];
    Ok(RunSummary {
        steps_taken: trainer.step_count() - start_step,
        final_step: trainer.step_count(),
        elapsed: started.elapsed(),
        recent_loss: (!recent.is_empty()).then(|| recent.iter().sum::<f32>() / recent.len() as f32),
        finished: trainer.is_finished(),
    })
}

/// Saves a checkpoint of `trainer` into `dir` and redraws the loss curve.
pub fn save(trainer: &Trainer, dir: &Path) -> Result<()> {
    checkpoint::save(dir, &trainer.checkpoint()?)?;
    let losses = &trainer.config().progress.losses;
    if !losses.is_empty() {
        let title = format!(
            "{} on {}: training loss",
            model_name(trainer),
            trainer.config().data.dataset
        );
        write_loss_curve(&dir.join(LOSS_CURVE_FILE), losses, &title)?;
    }
    Ok(())
}

fn model_name(trainer: &Trainer) -> &'static str {
    match trainer.config().model.kind() {
        crate::model::ModelKind::Mlp => "MLP",
        crate::model::ModelKind::Unet => "UNet",
    }
}

/// The sampler of previews and of the demo: deterministic DDIM in `steps` steps with the
/// default spacing and x0 estimates clipped to the data range `[-1, 1]` (a preview of a
/// briefly trained network should show what it learned, not how far its x0 estimates stray).
pub fn preview_sampling(steps: usize) -> SamplingOptions {
    SamplingOptions {
        settings: SamplerOptions {
            clip_sample: Some(Some(1.0)),
            ..SamplerOptions::none()
        },
        ..SamplingOptions::ddim(steps)
    }
}

/// How the previews of the run `config` sample: [`preview_sampling`] in `preview_steps` steps
/// (at most the schedule's), a distilled student with its own sampler, a latent run without
/// clipping (its scaled latents have unit variance, not the data's range), from the run's
/// preview seed.
pub fn preview_options(config: &RunConfig) -> SamplingOptions {
    let train = &config.train;
    let mut options = preview_sampling(train.preview_steps.min(config.schedule.train_steps));
    if let Some(base) = config.default_sampler() {
        // A student previews with the sampler it is trained for.
        options.steps = base.steps as usize;
        options.base = Some(base);
    }
    if config.latent.is_some() {
        options.settings.clip_sample = Some(None);
    }
    options.seed = derive(train.seed, Purpose::Preview);
    options
}

/// Draws EMA samples with DDIM (a distilled student: its own sampler), decoded by a latent
/// run's autoencoder, and writes them as a grid (images) or a scatter plot (2-D points) named
/// [`preview_file`]; other data gets no preview. Returns the path written.
pub fn write_preview(trainer: &Trainer, dir: &Path) -> Result<Option<PathBuf>> {
    let latent = &trainer.config().latent;
    let shape = match latent {
        Some(space) => space.image_shape.clone(),
        None => trainer.config().graph.input_shape().to_vec(),
    };
    if !is_image_shape(&shape) && shape != [2] {
        return Ok(None);
    }
    let options = preview_options(trainer.config());
    let num = trainer.config().train.preview_samples;
    let mut denoiser = trainer.denoiser(true)?;
    let schedule = Schedule::new(trainer.alphas_cumprod())?;
    let mut samples = generate(&mut denoiser, schedule, &options, num, num, None)?;
    if let Some(space) = latent {
        samples = space.decode(&space.codec(trainer.device())?, &samples)?;
    }
    let path = dir.join(preview_file(trainer.step_count()));
    if shape == [2] {
        let title = format!("EMA samples at step {}", trainer.step_count());
        write_scatter(&path, &samples, 2.0, &title)?;
    } else {
        write_grid(&path, &samples, &shape)?;
    }
    Ok(Some(path))
}

fn progress_bar(visible: bool, total: u64, position: u64) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} steps | {msg} | {per_sec} | ETA {eta}",
    )
    .expect("the template is valid")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_position(position);
    bar.reset_eta();
    bar
}
