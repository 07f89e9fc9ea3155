//! The latent space a latent diffusion run lives in: a trained autoencoder and the scale of
//! its latents (Rombach et al.: the diffusion model learns `scale * E(x)`, samples are
//! `D(z / scale)`).

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::codec::Codec;
use crate::data::Dataset;
use crate::error::{Error, Result};

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
}

impl LatentSpace {
    /// The latent space of the finished autoencoder run in `dir`, and its codec.
    ///
    /// # Errors
    /// As [`Codec::load`]; [`Error::Invalid`] when the run has not finished (no latent scale
    /// yet).
    pub fn open(dir: &Path, device: &Device) -> Result<(Self, Codec)> {
        let codec = Codec::load(dir, device)?;
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
        if now != *self {
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
