//! The optimisation flags that `ddm train` and `ddm train-autoencoder` share, with one
//! default each ([`TrainConfig::default`]).

use clap::Args as ClapArgs;
use ddm::train::TrainConfig;

/// Batch, learning-rate schedule, clipping, EMA, seed, checkpoints and previews. Every flag is
/// in the command's `definition` group, which `--resume` conflicts with.
#[derive(Debug, ClapArgs)]
pub struct OptimizerArgs {
    /// Samples per step.
    #[arg(long, default_value_t = TrainConfig::default().batch_size, group = "definition")]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = TrainConfig::default().lr, group = "definition")]
    lr: f64,
    /// Final learning rate of the cosine decay.
    #[arg(long, default_value_t = TrainConfig::default().lr_min, group = "definition")]
    lr_min: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = TrainConfig::default().warmup_steps, group = "definition")]
    warmup: u64,
    /// AdamW's decoupled weight decay (weights and kernels only).
    #[arg(long, default_value_t = TrainConfig::default().weight_decay, group = "definition")]
    weight_decay: f64,
    /// Clip the global gradient norm to this value (0: no clipping).
    #[arg(long, default_value_t = TrainConfig::default().grad_clip.unwrap_or(0.0), group = "definition")]
    grad_clip: f64,
    /// Largest EMA decay (warms up as (1 + k) / (10 + k)).
    #[arg(long, default_value_t = TrainConfig::default().ema_decay, group = "definition")]
    ema_decay: f64,
    /// Seed of initialisation, batches and noise.
    #[arg(long, default_value_t = 0, group = "definition")]
    seed: u64,
    /// Write a checkpoint every N steps.
    #[arg(long, default_value_t = TrainConfig::default().checkpoint_every, group = "definition")]
    checkpoint_every: u64,
    /// Write a PNG preview every N steps (0: only at the end).
    #[arg(long, default_value_t = TrainConfig::default().preview_every, group = "definition")]
    preview_every: u64,
    /// Images in each preview.
    #[arg(long, default_value_t = TrainConfig::default().preview_samples, group = "definition")]
    preview_samples: usize,
}

impl OptimizerArgs {
    /// The hyper-parameters of a run of `steps` steps with these flags, the others at their
    /// defaults.
    pub fn train_config(&self, steps: u64) -> TrainConfig {
        TrainConfig {
            steps,
            batch_size: self.batch_size,
            lr: self.lr,
            lr_min: self.lr_min,
            warmup_steps: self.warmup,
            weight_decay: self.weight_decay,
            grad_clip: (self.grad_clip > 0.0).then_some(self.grad_clip),
            ema_decay: self.ema_decay,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            preview_every: self.preview_every,
            preview_samples: self.preview_samples,
            ..TrainConfig::default()
        }
    }
}
