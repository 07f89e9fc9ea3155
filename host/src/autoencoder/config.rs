//! An autoencoder run's `config.json`: networks, data, loss, hyper-parameters, latent scale
//! and progress.

use ddm_export::graph::Graph;
use serde::{Deserialize, Serialize};

use super::model::AutoencoderConfig;
use crate::error::{Error, Result};
use crate::train::config::FORMAT_VERSION;
use crate::train::{DataConfig, Progress, TrainConfig};

/// Rombach et al.'s weight of the KL term for their f = 4 KL-regularised autoencoders.
pub const DEFAULT_KL_WEIGHT: f64 = 1e-6;

/// The loss `(1 / D) (sum_i |x_i - x'_i| + kl_weight KL(q(z | x) || N(0, I)))` per image of
/// `D` values, averaged over the batch: Rombach et al.'s reconstruction and KL terms (each a
/// sum over the image, their perceptual and adversarial terms left out), divided by `D` so
/// that its size does not grow with the image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderLoss {
    /// Weight of the KL term, at least 0.
    pub kl_weight: f64,
}

impl AutoencoderLoss {
    /// Checks the KL weight.
    ///
    /// # Errors
    /// [`Error::Invalid`] when it is negative or not finite.
    pub fn validate(&self) -> Result<()> {
        if !(self.kl_weight >= 0.0 && self.kl_weight.is_finite()) {
            return Err(Error::Invalid(format!(
                "the KL weight must be finite and at least 0, got {}",
                self.kl_weight
            )));
        }
        Ok(())
    }
}

impl Default for AutoencoderLoss {
    fn default() -> Self {
        AutoencoderLoss {
            kl_weight: DEFAULT_KL_WEIGHT,
        }
    }
}

/// Everything about an autoencoder run (`ddm train-autoencoder`): the contents of its
/// `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderRun {
    /// The writer's format version (that of denoiser runs).
    pub format_version: u32,
    /// The networks' sizes.
    pub autoencoder: AutoencoderConfig,
    /// The encoder built from them for the data's image shape.
    pub encoder: Graph,
    /// The decoder built from them.
    pub decoder: Graph,
    /// The training data.
    pub data: DataConfig,
    /// The loss.
    pub loss: AutoencoderLoss,
    /// Hyper-parameters (the diffusion-only fields are unused).
    pub train: TrainConfig,
    /// `1 / std` of the latents (the posterior means of the training images), which scales
    /// them to unit variance for a diffusion model as latent diffusion does; measured at the
    /// end of training, `None` before.
    #[serde(default)]
    pub latent_scale: Option<f32>,
    /// Steps taken and their losses.
    pub progress: Progress,
}

impl AutoencoderRun {
    /// A fresh run (step 0) of `autoencoder` on `data`, building and checking both networks.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the hyper-parameters or the KL weight are invalid or the sizes
    /// do not fit the data's shape.
    pub fn new(
        autoencoder: AutoencoderConfig,
        data: DataConfig,
        loss: AutoencoderLoss,
        train: TrainConfig,
    ) -> Result<Self> {
        train.validate()?;
        loss.validate()?;
        let encoder = autoencoder.encoder(&data.shape)?;
        let decoder = autoencoder.decoder(&data.shape)?;
        Ok(AutoencoderRun {
            format_version: FORMAT_VERSION,
            autoencoder,
            encoder,
            decoder,
            data,
            loss,
            train,
            latent_scale: None,
            progress: Progress::default(),
        })
    }

    /// The latent shape `[c, H / f, W / f]`.
    pub fn latent_shape(&self) -> &[usize] {
        self.decoder.input_shape()
    }

    /// Checks what a `config.json` read from disk must satisfy: valid hyper-parameters and
    /// KL weight, networks well formed and built from the sizes for the data's shape, losses
    /// recorded for every step, a finite positive latent scale exactly when every step has
    /// been taken.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the first problem.
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        self.loss.validate()?;
        self.encoder.validate_mapping()?;
        self.decoder.validate_mapping()?;
        let encoder = self.autoencoder.encoder(&self.data.shape)?;
        let decoder = self.autoencoder.decoder(&self.data.shape)?;
        if encoder != self.encoder || decoder != self.decoder {
            return Err(Error::Invalid(format!(
                "its networks are not those of its sizes ({:?}) for images of shape {:?}",
                self.autoencoder, self.data.shape
            )));
        }
        if self.progress.losses.len() as u64 != self.progress.step {
            return Err(Error::Invalid(format!(
                "{} losses recorded for {} steps",
                self.progress.losses.len(),
                self.progress.step
            )));
        }
        let finished = self.progress.step >= self.train.steps;
        match self.latent_scale {
            Some(scale) if !(scale.is_finite() && scale > 0.0) => Err(Error::Invalid(format!(
                "latent scale {scale} is not finite and positive"
            ))),
            Some(_) if !finished => Err(Error::Invalid(format!(
                "a latent scale at step {} of {}: it is measured after the last step",
                self.progress.step, self.train.steps
            ))),
            None if finished => Err(Error::Invalid(
                "no latent scale after the last step".to_string(),
            )),
            _ => Ok(()),
        }
    }
}
