//! The latent space a latent diffusion run lives in: a trained autoencoder and the scale of
//! its latents. The diffusion model learns `scale * mean(x)`, the posterior means of the
//! training images, encoded once; samples are `D(z / scale)`. (Rombach et al. draw
//! `posterior.sample()` instead; with the KL weight of 1e-6 the posterior's standard
//! deviation is a small fraction of the means', and fixed latents make every epoch see the
//! same data set and a resumed run the same bytes.)

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use ddm_export::graph::{Graph, Weights};

use super::checkpoint;
use super::codec::Codec;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::train::checkpoint::WeightSet;
use crate::train::config::fingerprint;

/// A denoiser run's latent space (`ddm train --latent AE_RUN`), saved in its `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatentSpace {
    /// The autoencoder's run folder.
    pub autoencoder: PathBuf,
    /// The autoencoder's step when the run started: a later checkpoint of the same folder
    /// encodes differently, and is refused.
    pub step: u64,
    /// The scale the latents were multiplied by (the autoencoder's `latent_scale`).
    pub scale: f32,
    /// The latent shape `[c, H / f, W / f]` (the denoiser's sample shape).
    pub latent_shape: Vec<usize>,
    /// The image shape `[C, H, W]` the decoder returns.
    pub image_shape: Vec<usize>,
    /// FNV-1a of the scaled latents of the training data, set when the run encoded it first:
    /// encoding again (on `--resume`) must give the same bytes, which another device may not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
}

impl LatentSpace {
    /// The latent space of the finished autoencoder run in `dir`, and its codec.
    ///
    /// # Errors
    /// As [`Codec::load`]; [`Error::Invalid`] when the run has not finished (no latent scale
    /// yet).
    pub fn open(dir: &Path, device: &Device) -> Result<(Self, Codec)> {
        let codec = Codec::load(dir, device)?;
        let dir = &std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let config = codec.config();
        let Some(scale) = config.latent_scale else {
            return Err(Error::Invalid(format!(
                "the autoencoder in {} has not finished training (step {} of {}): it has no \
                 latent scale yet",
                dir.display(),
                config.progress.step,
                config.train.steps
            )));
        };
        let space = LatentSpace {
            autoencoder: dir.to_path_buf(),
            step: config.progress.step,
            scale,
            latent_shape: codec.latent_shape().to_vec(),
            image_shape: codec.image_shape().to_vec(),
            fingerprint: String::new(),
        };
        Ok((space, codec))
    }

    /// The codec of this latent space, checked to be the autoencoder it was made with.
    ///
    /// # Errors
    /// As [`LatentSpace::open`]; [`Error::Invalid`] when the folder now holds another step,
    /// scale or shape.
    pub fn codec(&self, device: &Device) -> Result<Codec> {
        let (now, codec) = Self::open(&self.autoencoder, device)?;
        let settings = |space: &LatentSpace| LatentSpace {
            fingerprint: String::new(),
            ..space.clone()
        };
        if settings(&now) != settings(self) {
            return Err(Error::Invalid(format!(
                "the autoencoder in {} changed since this run encoded its data (step {}, scale \
                 {}, latent {:?} then; step {}, scale {}, latent {:?} now)",
                self.autoencoder.display(),
                self.step,
                self.scale,
                self.latent_shape,
                now.step,
                now.scale,
                now.latent_shape
            )));
        }
        Ok(codec)
    }

    /// The training data of a latent run: [`LatentSpace::encode`] of `images`, whose
    /// fingerprint this space records the first time and checks every later time.
    ///
    /// # Errors
    /// As [`LatentSpace::encode`]; [`Error::Invalid`] when the latents differ from those the
    /// run started with.
    pub fn encode_training_data(&mut self, codec: &Codec, images: &Dataset) -> Result<Dataset> {
        let latents = self.encode(codec, images)?;
        let now = fingerprint(&latents);
        if self.fingerprint.is_empty() {
            self.fingerprint = now;
        } else if self.fingerprint != now {
            return Err(Error::Invalid(format!(
                "the autoencoder in {} encodes the training data differently than when this run \
                 started (latents {} then, {now} now): another device or build encodes other \
                 bytes",
                self.autoencoder.display(),
                self.fingerprint
            )));
        }
        Ok(latents)
    }

    /// The scaled latents of `images` (posterior means times the scale), labels kept: the
    /// data set a latent denoiser trains on, named `latent:NAME`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the images do not have the autoencoder's shape; as
    /// [`Codec::encode`].
    pub fn encode(&self, codec: &Codec, images: &Dataset) -> Result<Dataset> {
        if images.shape != self.image_shape {
            return Err(Error::Invalid(format!(
                "the autoencoder takes images of shape {:?}, {} has {:?}",
                self.image_shape, images.name, images.shape
            )));
        }
        let mut values = codec.encode(&images.values)?;
        values.iter_mut().for_each(|v| *v *= self.scale);
        Ok(Dataset {
            name: format!("latent:{}", images.name),
            shape: self.latent_shape.clone(),
            values,
            labels: images.labels.clone(),
        })
    }

    /// The decoder as a latent model's blob holds it: the autoencoder's decoder graph with its
    /// EMA weights (those [`Codec::load`] decodes with) and `1 / scale` folded into its first
    /// layer ([`Graph::fold_input_scale`]), so that it maps this run's samples `z` to
    /// `D(z / scale)`, before the clamp to `[-1, 1]` (which the device applies after it, as
    /// [`LatentSpace::decode`] does).
    ///
    /// # Errors
    /// As [`LatentSpace::codec`] (the autoencoder must be the one the run was trained with);
    /// [`Error::Graph`] when the decoder cannot take the scale.
    pub fn scaled_decoder(&self, device: &Device) -> Result<(Graph, Weights)> {
        let codec = self.codec(device)?;
        let config = codec.config();
        let all = checkpoint::read_weights(&self.autoencoder, config, WeightSet::Ema)?;
        let graph = config.decoder.clone();
        let mut weights = Weights::new();
        for param in &graph.params {
            let tensor = all.get(&param.name).ok_or_else(|| {
                Error::Invalid(format!(
                    "the autoencoder in {} has no weight {}",
                    self.autoencoder.display(),
                    param.name
                ))
            })?;
            weights.insert(param.name.clone(), tensor.clone());
        }
        graph.fold_input_scale(&mut weights, 1.0 / self.scale)?;
        Ok((graph, weights))
    }

    /// The images of scaled latents `latents` (row-major `[n, c, H / f, W / f]`):
    /// `D(z / scale)`.
    ///
    /// # Errors
    /// As [`Codec::decode`].
    pub fn decode(&self, codec: &Codec, latents: &[f32]) -> Result<Vec<f32>> {
        let unscaled: Vec<f32> = latents.iter().map(|v| v / self.scale).collect();
        codec.decode(&unscaled)
    }
}
