//! The training state of an autoencoder run and one optimisation step.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, Var};
use ddm_core::Rng;

use super::checkpoint::{self, AutoencoderCheckpoint};
use super::codec::{both_networks, Codec};
use super::config::AutoencoderRun;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::image_grid::write_grid;
use crate::model::{forward, Params};
use crate::plot::write_loss_curve;
use crate::seeding::{derive, Purpose};
use crate::train::config::{Progress, TrainConfig};
use crate::train::ema::Ema;
use crate::train::lr::learning_rate;
use crate::train::optim::{clip_grad_norm, AdamW};
use crate::train::run::{Training, LOSS_CURVE_FILE};
use crate::train::trainer::gradients;
use crate::train::StepReport;

/// Training images whose latents set the latent scale, at most: every `k`-th of the data
/// set, evenly spread (data sets that load class by class give every class its share).
pub const SCALE_SAMPLES: usize = 5000;

/// The log-variance range of the posterior, as in latent diffusion (`exp(logvar / 2)` stays
/// finite and positive).
const LOGVAR_RANGE: (f32, f32) = (-30.0, 20.0);

/// The preview file of step `step` (`reconstructions-step000500.png`).
pub fn preview_file(step: u64) -> String {
    format!("reconstructions-step{step:06}.png")
}

/// An autoencoder run in memory: configuration, data, weights of both networks, optimiser
/// and EMA.
///
/// Step `s` (0-based) draws its images and its latent noise from
/// `Rng::with_stream(derive(seed, Batches), s)`, so a trainer restored from a checkpoint
/// continues exactly as an uninterrupted one.
#[derive(Debug)]
pub struct AutoencoderTrainer {
    config: AutoencoderRun,
    data: Dataset,
    device: Device,
    vars: Vec<(String, Var)>,
    params: Params,
    optimizer: AdamW,
    ema: Ema,
}

impl AutoencoderTrainer {
    /// A fresh run: the encoder initialised from `derive(seed, Init)`, the decoder from
    /// `derive(seed, DecoderInit)`, step 0.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `data` does not have the configured shape or the
    /// hyper-parameters are invalid.
    pub fn new(mut config: AutoencoderRun, data: Dataset, device: &Device) -> Result<Self> {
        config.train.validate()?;
        config.progress = Progress::default();
        config.latent_scale = None;
        let seed = config.train.seed;
        let mut weights =
            Params::init(&config.encoder, derive(seed, Purpose::Init), device)?.to_weights()?;
        weights.extend(
            Params::init(&config.decoder, derive(seed, Purpose::DecoderInit), device)?
                .to_weights()?,
        );
        let params = both_networks(&config, &weights, device)?;
        let ema = Ema::new(&params, config.train.ema_decay)?;
        let vars = to_vars(&config, &params)?;
        let optimizer = AdamW::new(&config.train, &vars)?;
        Self::assemble(config, data, device, vars, optimizer, ema)
    }

    /// The run saved in `checkpoint`, continuing where it stopped.
    ///
    /// # Errors
    /// As [`AutoencoderTrainer::new`], and when the weights do not fit the networks.
    pub fn from_checkpoint(
        checkpoint: AutoencoderCheckpoint,
        data: Dataset,
        device: &Device,
    ) -> Result<Self> {
        let AutoencoderCheckpoint {
            config,
            model,
            ema,
            optimizer,
        } = checkpoint;
        if optimizer.step != config.progress.step {
            return Err(Error::Invalid(format!(
                "the optimiser state is at step {}, the run at step {}",
                optimizer.step, config.progress.step
            )));
        }
        let params = both_networks(&config, &model, device)?;
        let ema = Ema::from_params(
            &both_networks(&config, &ema, device)?,
            config.train.ema_decay,
        );
        let vars = to_vars(&config, &params)?;
        let optimizer = AdamW::from_state(&config.train, &vars, &optimizer, device)?;
        Self::assemble(config, data, device, vars, optimizer, ema)
    }

    fn assemble(
        config: AutoencoderRun,
        data: Dataset,
        device: &Device,
        vars: Vec<(String, Var)>,
        optimizer: AdamW,
        ema: Ema,
    ) -> Result<Self> {
        if data.shape != config.encoder.input_shape() || data.is_empty() {
            return Err(Error::Invalid(format!(
                "the autoencoder takes images of shape {:?}, the data set has {} of shape {:?}",
                config.encoder.input_shape(),
                data.len(),
                data.shape
            )));
        }
        let params = Params::from_tensors(
            vars.iter()
                .map(|(name, var)| (name.clone(), var.as_tensor().clone())),
        );
        Ok(AutoencoderTrainer {
            config,
            data,
            device: device.clone(),
            vars,
            params,
            optimizer,
            ema,
        })
    }

    /// The run's configuration, with the current progress.
    pub fn config(&self) -> &AutoencoderRun {
        &self.config
    }

    /// The training data.
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// The current weights of both networks.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The autoencoder with the EMA weights (`ema`) or the trained ones.
    pub fn codec(&self, ema: bool) -> Result<Codec> {
        let params = if ema {
            self.ema.params()
        } else {
            self.params.detached_copy()?
        };
        Ok(Codec::new(self.config.clone(), params, &self.device))
    }

    /// The images and latent noise of step `step` (0-based), row-major: for each image a
    /// data index (uniform, with replacement), then the noise of every latent value.
    pub fn batch(&self, step: u64) -> (Vec<f32>, Vec<f32>) {
        let n = self.config.train.batch_size;
        let mut rng = Rng::with_stream(derive(self.config.train.seed, Purpose::Batches), step);
        let count = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
        let mut images = Vec::with_capacity(n * self.data.sample_len());
        for _ in 0..n {
            images.extend_from_slice(self.data.sample(rng.below(count) as usize));
        }
        let latent_len: usize = self.config.latent_shape().iter().product();
        let mut noise = vec![0.0; n * latent_len];
        rng.fill_normal(&mut noise);
        (images, noise)
    }

    /// Takes optimisation step `step_count() + 1`: AdamW on the loss of its batch
    /// ([`loss_on_batch`]) with the learning-rate schedule and gradient clipping of the
    /// configuration, then the EMA update. After the last step it measures the latent scale
    /// ([`latent_scale`]) with the EMA weights on up to [`SCALE_SAMPLES`] training images. A non-finite loss or gradient changes
    /// nothing and is reported with `applied: false`.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn step(&mut self) -> Result<StepReport> {
        let index = self.config.progress.step;
        let train = &self.config.train;
        let lr = learning_rate(
            index,
            train.steps,
            train.warmup_steps,
            train.lr,
            train.lr_min,
        );
        let (images, noise) = self.batch(index);
        let loss = loss_on_batch(&self.config, &self.params, &images, &noise, &self.device)?;
        let loss_value = loss.to_scalar::<f32>()?;
        let mut report = StepReport {
            step: index + 1,
            loss: loss_value,
            grad_norm: f32::NAN,
            lr,
            applied: false,
        };
        if !loss_value.is_finite() {
            return Ok(report);
        }
        let mut grads = gradients(&loss, &self.vars)?;
        report.grad_norm = clip_grad_norm(&mut grads, self.config.train.grad_clip)?;
        if !report.grad_norm.is_finite() {
            return Ok(report);
        }
        self.optimizer.step(&self.vars, &grads, lr)?;
        self.ema.update(&self.params, self.optimizer.steps())?;
        self.config.progress.step += 1;
        self.config.progress.losses.push(loss_value);
        if self.config.progress.step == self.config.train.steps {
            let codec = self.codec(true)?;
            let stride = self.data.len().div_ceil(SCALE_SAMPLES);
            let len = self.data.sample_len();
            let images: Vec<f32> = (0..self.data.len())
                .step_by(stride)
                .flat_map(|i| self.data.sample(i).iter().copied())
                .collect();
            debug_assert!(images.len() / len <= SCALE_SAMPLES);
            self.config.latent_scale = Some(latent_scale(&codec, &images)?);
        }
        report.applied = true;
        Ok(report)
    }

    /// A host copy of the whole state, for [`checkpoint::save`].
    pub fn checkpoint(&self) -> Result<AutoencoderCheckpoint> {
        Ok(AutoencoderCheckpoint {
            config: self.config.clone(),
            model: self.params.to_weights()?,
            ema: self.ema.params().to_weights()?,
            optimizer: self.optimizer.state()?,
        })
    }
}

impl Training for AutoencoderTrainer {
    fn step(&mut self) -> Result<StepReport> {
        AutoencoderTrainer::step(self)
    }

    fn train_config(&self) -> &TrainConfig {
        &self.config.train
    }

    fn progress(&self) -> &Progress {
        &self.config.progress
    }

    fn save(&self, dir: &Path) -> Result<()> {
        checkpoint::save(dir, &self.checkpoint()?)?;
        let losses = &self.config.progress.losses;
        if !losses.is_empty() {
            let title = format!("autoencoder on {}: training loss", self.config.data.dataset);
            write_loss_curve(&dir.join(LOSS_CURVE_FILE), losses, &title)?;
        }
        Ok(())
    }

    /// The first `preview_samples / 2` training images, each followed by its reconstruction
    /// through the EMA weights, as a grid ([`preview_file`]).
    fn write_preview(&self, dir: &Path) -> Result<Option<PathBuf>> {
        let shape = self.data.shape.clone();
        let len = self.data.sample_len();
        let pairs = (self.config.train.preview_samples / 2).clamp(1, self.data.len());
        let images = &self.data.values[..pairs * len];
        let reconstructions = self.codec(true)?.reconstruct(images)?;
        let mut grid = Vec::with_capacity(2 * images.len());
        for (image, reconstruction) in images.chunks(len).zip(reconstructions.chunks(len)) {
            grid.extend_from_slice(image);
            grid.extend_from_slice(reconstruction);
        }
        let path = dir.join(preview_file(self.config.progress.step));
        write_grid(&path, &grid, &shape)?;
        Ok(Some(path))
    }
}

/// The loss of [`AutoencoderLoss`](super::AutoencoderLoss) on `images` (`[n, C, H, W]`,
/// row-major) with latent noise `noise` (`[n, c, H / f, W / f]`), as a scalar tensor that
/// gradients flow from: the encoder's posterior `N(mean, exp(logvar))` sampled as
/// `z = mean + exp(logvar / 2) noise`, decoded, and compared by L1 with the images; the KL
/// divergence from `N(0, I)` is `sum (mean^2 + exp(logvar) - 1 - logvar) / 2`.
///
/// # Errors
/// [`Error::Invalid`] when `images` or `noise` do not hold the same whole number of samples;
/// tensor errors.
pub fn loss_on_batch(
    config: &AutoencoderRun,
    params: &Params,
    images: &[f32],
    noise: &[f32],
    device: &Device,
) -> Result<Tensor> {
    let image_shape = config.encoder.input_shape();
    let latent_shape = config.latent_shape();
    let image_len: usize = image_shape.iter().product();
    let latent_len: usize = latent_shape.iter().product();
    let n = images.len() / image_len;
    if n == 0 || n * image_len != images.len() || n * latent_len != noise.len() {
        return Err(Error::Invalid(format!(
            "a batch needs whole images of {image_len} values and {latent_len} noise values per \
             image, got {} and {}",
            images.len(),
            noise.len()
        )));
    }
    let dims = |shape: &[usize]| [&[n][..], shape].concat();
    let x = Tensor::from_vec(images.to_vec(), dims(image_shape), device)?;
    let noise = Tensor::from_vec(noise.to_vec(), dims(latent_shape), device)?;
    let t = Tensor::zeros(n, x.dtype(), device)?;
    let moments = forward(&config.encoder, params, &x, &t, None)?;
    let c = config.autoencoder.latent_channels;
    let mean = moments.narrow(1, 0, c)?;
    let logvar = moments
        .narrow(1, c, c)?
        .clamp(LOGVAR_RANGE.0, LOGVAR_RANGE.1)?;
    let z = (&mean + (&logvar * 0.5)?.exp()?.mul(&noise)?)?;
    let reconstruction = forward(&config.decoder, params, &z, &t, None)?;
    let l1 = (reconstruction - &x)?.abs()?.flatten_from(1)?.sum(1)?;
    let kl = ((mean.sqr()? + logvar.exp()?)? - logvar)?
        .affine(0.5, -0.5)?
        .flatten_from(1)?
        .sum(1)?;
    let per_image = ((l1 + (kl * config.loss.kl_weight)?)? / image_len as f64)?;
    Ok(per_image.mean_all()?)
}

/// `1 / std` of the latents of `images` (their posterior means through `codec`, every value
/// pooled), the scale that brings them to unit variance.
///
/// # Errors
/// [`Error::Invalid`] when the latents are constant; as [`Codec::encode`].
pub fn latent_scale(codec: &Codec, images: &[f32]) -> Result<f32> {
    let latents = codec.encode(images)?;
    let n = latents.len() as f64;
    let mean = latents.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let variance = latents
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let scale = (1.0 / variance.sqrt()) as f32;
    if !(scale.is_finite() && scale > 0.0) {
        return Err(Error::Invalid(format!(
            "the latents have standard deviation {}: no scale brings them to unit variance",
            variance.sqrt()
        )));
    }
    Ok(scale)
}

/// Both networks' parameters as variables, encoder first, each in its graph's order.
fn to_vars(config: &AutoencoderRun, params: &Params) -> Result<Vec<(String, Var)>> {
    config
        .encoder
        .params
        .iter()
        .chain(&config.decoder.params)
        .map(|spec| {
            let tensor = params.require(&spec.name)?;
            Ok((spec.name.clone(), Var::from_tensor(tensor)?))
        })
        .collect()
}
