//! The run configuration: everything `config.json` records about a training run.

use std::path::PathBuf;

use ddm_export::graph::Graph;
use serde::{Deserialize, Serialize};

use super::distill::DistillConfig;
use super::objective::Objective;
use crate::autoencoder::LatentSpace;
use crate::data::{self, Dataset, DatasetSpec, ImageFormat, LoadOptions, Split, Subset};
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::schedule_args::ScheduleSpec;

/// Version of the run folder layout and `config.json` schema this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Optimisation hyper-parameters and the run's bookkeeping intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Number of optimisation steps.
    pub steps: u64,
    /// Samples per step.
    pub batch_size: usize,
    /// Peak learning rate (reached after the warm-up).
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub lr_min: f64,
    /// Steps of linear warm-up from `lr / warmup_steps` to `lr`.
    pub warmup_steps: u64,
    /// Decoupled weight decay (AdamW), applied to matrices and kernels only.
    pub weight_decay: f64,
    /// Adam's `beta1`.
    pub beta1: f64,
    /// Adam's `beta2`.
    pub beta2: f64,
    /// Adam's `epsilon`.
    pub adam_eps: f64,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    pub grad_clip: Option<f64>,
    /// Largest EMA decay; the decay warms up as `min(ema_decay, (1 + k) / (10 + k))`.
    pub ema_decay: f64,
    /// Seed of every random choice (initialisation, batches, noise, previews).
    pub seed: u64,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: u64,
    /// Write a preview of EMA samples every this many steps (0: only at the end).
    pub preview_every: u64,
    /// Number of preview samples.
    pub preview_samples: usize,
    /// DDIM steps of the previews.
    pub preview_steps: usize,
    /// Probability of dropping a class-conditional model's label in a training sample (it
    /// then learns the unconditional prediction that classifier-free guidance needs);
    /// unused by unconditional models.
    #[serde(default = "default_label_dropout")]
    pub label_dropout: f32,
    /// Parameters held fixed (fine-tuning): every parameter whose name starts with one of
    /// these prefixes keeps its initial value; [`FREEZE_DOWN_PATH`] stands for the UNet's
    /// down path. Empty: everything trains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
}

/// The `--freeze` word for the UNet's down path: its input convolution and every down level
/// (the parameter prefixes [`DOWN_PATH_PREFIXES`]).
pub const FREEZE_DOWN_PATH: &str = "down-path";

/// The parameter name prefixes of the UNet's down path.
pub const DOWN_PATH_PREFIXES: [&str; 2] = ["conv_in.", "down"];

impl TrainConfig {
    /// Whether parameter `name` is held fixed ([`TrainConfig::freeze`]).
    pub fn is_frozen(&self, name: &str) -> bool {
        self.freeze.iter().any(|prefix| match prefix.as_str() {
            FREEZE_DOWN_PATH => DOWN_PATH_PREFIXES.iter().any(|p| name.starts_with(p)),
            prefix => name.starts_with(prefix),
        })
    }
}

/// The default of [`TrainConfig::label_dropout`]: 0.1, within Ho & Salimans' 0.1 to 0.2.
pub const DEFAULT_LABEL_DROPOUT: f32 = 0.1;

fn default_label_dropout() -> f32 {
    DEFAULT_LABEL_DROPOUT
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 10_000,
            batch_size: 128,
            lr: 1e-3,
            lr_min: 1e-5,
            warmup_steps: 200,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            grad_clip: Some(1.0),
            ema_decay: 0.999,
            seed: 0,
            checkpoint_every: 1000,
            preview_every: 1000,
            preview_samples: 64,
            preview_steps: 20,
            label_dropout: DEFAULT_LABEL_DROPOUT,
            freeze: Vec::new(),
        }
    }
}

impl TrainConfig {
    /// Checks that the values can train.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the first bad value.
    pub fn validate(&self) -> Result<()> {
        let fail = |what: &str| Err(Error::Invalid(what.to_string()));
        if self.steps == 0 || self.batch_size == 0 {
            return fail("--steps and --batch-size must be > 0");
        }
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if !(positive(self.lr) && (0.0..=self.lr).contains(&self.lr_min)) {
            return fail("--lr must be positive and 0 <= --lr-min <= --lr");
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return fail("Adam's betas must lie in [0, 1)");
        }
        let valid_decay = self.weight_decay >= 0.0 && self.weight_decay.is_finite();
        if !(positive(self.adam_eps) && valid_decay) {
            return fail("Adam's epsilon must be > 0 and the weight decay >= 0");
        }
        if self.grad_clip.is_some_and(|c| !positive(c)) {
            return fail("--grad-clip must be positive");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return fail("--ema-decay must lie in [0, 1)");
        }
        if self.checkpoint_every == 0 {
            return fail("--checkpoint-every must be > 0");
        }
        if !(0.0..=1.0).contains(&self.label_dropout) {
            return fail("--label-dropout must lie in [0, 1]");
        }
        if self.preview_samples == 0 || self.preview_steps == 0 {
            return fail("--preview-samples and --preview-steps must be > 0");
        }
        Ok(())
    }
}

/// How to load the training data again (on `--resume`) and what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The data set spec (`optdigits`, `toy:moons`, `folder:PATH`, ...).
    pub dataset: String,
    /// Folder of the IDX files of `mnist` / `fashion-mnist`.
    pub data_dir: Option<PathBuf>,
    /// Height, width and channels of `folder:` images.
    pub image: [usize; 3],
    /// Number of `toy:` samples.
    pub toy_samples: usize,
    /// Seed of the `toy:` samples.
    pub toy_seed: u64,
    /// Shape of one sample.
    pub shape: Vec<usize>,
    /// Number of samples.
    pub samples: usize,
    /// FNV-1a hash of the shape and values, to notice data that changed under a run.
    pub fingerprint: String,
    /// The part of the data set trained on (the whole of it when absent).
    #[serde(default, skip_serializing_if = "Subset::is_all")]
    pub subset: Subset,
}

impl DataConfig {
    /// Records `data`, loaded from `spec` with `options` (the train split).
    pub fn new(spec: &DatasetSpec, options: &LoadOptions, data: &Dataset) -> Self {
        DataConfig {
            dataset: spec.to_string(),
            data_dir: options.data_dir.clone(),
            image: [
                options.image.height,
                options.image.width,
                options.image.channels,
            ],
            toy_samples: options.toy_samples,
            toy_seed: options.seed,
            shape: data.shape.clone(),
            samples: data.len(),
            fingerprint: fingerprint(data),
            subset: options.subset.clone(),
        }
    }

    /// Records `data` made in memory (benchmarks, tests): its name, shape and fingerprint;
    /// such a run cannot reload its data, so resuming it needs the data handed back.
    pub fn in_memory(data: &Dataset) -> Self {
        DataConfig {
            dataset: data.name.clone(),
            data_dir: None,
            image: [0, 0, 0],
            toy_samples: 0,
            toy_seed: 0,
            shape: data.shape.clone(),
            samples: data.len(),
            fingerprint: fingerprint(data),
            subset: Subset::default(),
        }
    }

    /// The spec and options that load the data.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the stored spec does not parse.
    pub fn load_options(&self) -> Result<(DatasetSpec, LoadOptions)> {
        let spec: DatasetSpec = self.dataset.parse()?;
        let options = LoadOptions {
            data_dir: self.data_dir.clone(),
            split: Split::Train,
            image: ImageFormat {
                height: self.image[0],
                width: self.image[1],
                channels: self.image[2],
            },
            toy_samples: self.toy_samples,
            seed: self.toy_seed,
            subset: self.subset.clone(),
        };
        Ok((spec, options))
    }

    /// Loads the data again and checks that it is what the run trained on.
    ///
    /// # Errors
    /// The loader's errors; [`Error::Invalid`] when the data changed (other shape, count or
    /// values).
    pub fn load(&self) -> Result<Dataset> {
        let (spec, options) = self.load_options()?;
        let data = data::load(&spec, &options)?;
        if data.shape != self.shape
            || data.len() != self.samples
            || fingerprint(&data) != self.fingerprint
        {
            return Err(Error::Invalid(format!(
                "the data set {} changed since the run started ({} samples of {:?} then, {} \
                 of {:?} now, or other values)",
                self.dataset,
                self.samples,
                self.shape,
                data.len(),
                data.shape
            )));
        }
        Ok(data)
    }
}

/// FNV-1a (64-bit) of a data set's shape and value bits, as 16 hex digits.
pub fn fingerprint(data: &Dataset) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for &dim in &data.shape {
        feed(&(dim as u64).to_le_bytes());
    }
    for value in &data.values {
        feed(&value.to_bits().to_le_bytes());
    }
    format!("{hash:016x}")
}

/// How far a run has got.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// Optimisation steps taken.
    pub step: u64,
    /// The loss of every step taken, in order (`losses.len() == step`).
    pub losses: Vec<f32>,
}

/// Everything about a run: the contents of its `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The model's configuration.
    pub model: ModelConfig,
    /// The graph built from it for the data's sample shape (what export reads).
    pub graph: Graph,
    /// The training data.
    pub data: DataConfig,
    /// The noise schedule.
    pub schedule: ScheduleSpec,
    /// The loss.
    pub objective: Objective,
    /// Hyper-parameters.
    pub train: TrainConfig,
    /// Steps taken and their losses.
    pub progress: Progress,
    /// How the run was distilled from a teacher (`ddm distill`), or `None` for a run trained
    /// on data alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillConfig>,
    /// The run whose weights this one started from (`ddm train --init-from`), or `None` for
    /// a run initialised from its seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<super::fine_tune::InitFrom>,
    /// The autoencoder whose scaled latents of `data` the model learns (`ddm train --latent`),
    /// or `None` for a model of the data itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent: Option<LatentSpace>,
}

impl RunConfig {
    /// A fresh run (step 0) of `model` on `data`, building and checking the graph.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the hyper-parameters or schedule are invalid or the model does
    /// not fit the data's shape.
    pub fn new(
        model: ModelConfig,
        data: DataConfig,
        schedule: ScheduleSpec,
        objective: Objective,
        train: TrainConfig,
    ) -> Result<Self> {
        train.validate()?;
        schedule.alphas_cumprod()?;
        let graph = model.build(&data.shape)?;
        Ok(RunConfig {
            format_version: FORMAT_VERSION,
            model,
            graph,
            data,
            schedule,
            objective,
            train,
            progress: Progress::default(),
            distill: None,
            init_from: None,
            latent: None,
        })
    }

    /// This run moved into `space`: the model rebuilt for its latent shape, the data still the
    /// images it encodes.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the data's shape is not the autoencoder's image shape or the
    /// model does not fit the latent shape.
    pub fn in_latent_space(mut self, space: LatentSpace) -> Result<Self> {
        if self.data.shape != space.image_shape {
            return Err(Error::Invalid(format!(
                "the autoencoder in {} takes images of shape {:?}, the data has {:?}",
                space.autoencoder.display(),
                space.image_shape,
                self.data.shape
            )));
        }
        self.graph = self.model.build(&space.latent_shape)?;
        self.latent = Some(space);
        Ok(self)
    }

    /// The data the model trains on: [`DataConfig::load`], encoded into the latent space of a
    /// latent run (on `device`), checked against the latents the run started with.
    ///
    /// # Errors
    /// As [`DataConfig::load`], [`LatentSpace::codec`] and
    /// [`LatentSpace::encode_training_data`].
    pub fn load_training_data(&self, device: &candle_core::Device) -> Result<Dataset> {
        let data = self.data.load()?;
        match &self.latent {
            Some(space) => space
                .clone()
                .encode_training_data(&space.codec(device)?, &data),
            None => Ok(data),
        }
    }

    /// The shape of what the model generates: the latent shape of a latent run, the data's
    /// otherwise.
    pub fn sample_shape(&self) -> &[usize] {
        match &self.latent {
            Some(space) => &space.latent_shape,
            None => &self.data.shape,
        }
    }

    /// The sampler the run was trained for, which sampling and export use unless told
    /// otherwise: a distilled student's ([`DistillConfig::sampler`]); `None` for a run trained
    /// on data alone, which leaves the choice to the command.
    pub fn default_sampler(&self) -> Option<ddm_core::SamplerConfig> {
        self.distill.as_ref().map(DistillConfig::sampler)
    }

    /// Whether `other` describes the same run, ignoring progress.
    pub fn same_run(&self, other: &RunConfig) -> bool {
        let strip = |c: &RunConfig| RunConfig {
            progress: Progress::default(),
            ..c.clone()
        };
        strip(self) == strip(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Toy;
    use crate::model::MlpConfig;

    #[test]
    fn data_config_reloads_and_notices_changes() {
        let spec = DatasetSpec::Toy(Toy::Moons);
        let options = LoadOptions {
            toy_samples: 100,
            seed: 3,
            ..LoadOptions::default()
        };
        let data = data::load(&spec, &options).unwrap();
        let config = DataConfig::new(&spec, &options, &data);
        assert_eq!(config.load().unwrap(), data);
        let changed = DataConfig {
            toy_seed: 4,
            ..config.clone()
        };
        assert!(matches!(changed.load(), Err(Error::Invalid(_))));

        let run = RunConfig::new(
            ModelConfig::Mlp(MlpConfig::default()),
            config,
            ScheduleSpec::default(),
            Objective::default(),
            TrainConfig::default(),
        )
        .unwrap();
        let text = serde_json::to_string(&run).unwrap();
        let back: RunConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, run);
        let mut later = run.clone();
        later.progress.step = 5;
        assert!(later.same_run(&run));
        assert!(RunConfig::new(
            run.model.clone(),
            run.data.clone(),
            run.schedule,
            run.objective,
            TrainConfig {
                lr: -1.0,
                ..TrainConfig::default()
            },
        )
        .is_err());
    }
}
