//! Encoding images into latents and decoding them with a trained autoencoder.

use std::path::Path;

use candle_core::{Device, Tensor};
use ddm_export::graph::Weights;

use super::checkpoint;
use super::config::AutoencoderRun;
use crate::error::{Error, Result};
use crate::model::{forward, Params};
use crate::train::checkpoint::WeightSet;

/// Images per network call when encoding or decoding many.
pub const CHUNK: usize = 256;

/// PSNR of images in `[-1, 1]` (peak-to-peak 2): `10 log10(4 / MSE)` in dB, with the mean
/// squared error over every value of `reference` and `reconstruction` (same length, not
/// empty); infinite for identical images.
pub fn psnr(reference: &[f32], reconstruction: &[f32]) -> f64 {
    assert_eq!(reference.len(), reconstruction.len());
    assert!(!reference.is_empty());
    let mse = reference
        .iter()
        .zip(reconstruction)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum::<f64>()
        / reference.len() as f64;
    10.0 * (4.0 / mse).log10()
}

/// The parameters of both networks of `config` from `weights`, on `device`.
///
/// # Errors
/// [`Error::Graph`] when a weight is missing, misshapen or not finite.
pub fn both_networks(
    config: &AutoencoderRun,
    weights: &Weights,
    device: &Device,
) -> Result<Params> {
    let encoder = Params::from_weights(&config.encoder, weights, device)?;
    let decoder = Params::from_weights(&config.decoder, weights, device)?;
    Ok(Params::from_tensors(
        encoder
            .iter()
            .chain(decoder.iter())
            .map(|(name, tensor)| (name.to_string(), tensor.clone())),
    ))
}

/// A trained autoencoder's two networks and weights, ready to encode and decode.
#[derive(Debug)]
pub struct Codec {
    config: AutoencoderRun,
    params: Params,
    device: Device,
}

impl Codec {
    /// The autoencoder of `config` with `params` (both networks') on `device`.
    pub fn new(config: AutoencoderRun, params: Params, device: &Device) -> Self {
        Codec {
            config,
            params,
            device: device.clone(),
        }
    }

    /// The autoencoder in run folder `dir`, with its EMA weights.
    ///
    /// # Errors
    /// As [`checkpoint::read_config`] and [`checkpoint::read_weights`].
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config = checkpoint::read_config(dir)?;
        let weights = checkpoint::read_weights(dir, &config, WeightSet::Ema)?;
        let params = both_networks(&config, &weights, device)?;
        Ok(Codec::new(config, params, device))
    }

    /// The run's configuration.
    pub fn config(&self) -> &AutoencoderRun {
        &self.config
    }

    /// The image shape `[C, H, W]`.
    pub fn image_shape(&self) -> &[usize] {
        self.config.encoder.input_shape()
    }

    /// The latent shape `[c, H / f, W / f]`.
    pub fn latent_shape(&self) -> &[usize] {
        self.config.latent_shape()
    }

    /// The posterior means of `images` (row-major `[n, C, H, W]`), `[n, c, H / f, W / f]`,
    /// unscaled.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `images` is not a whole number of images; tensor errors.
    pub fn encode(&self, images: &[f32]) -> Result<Vec<f32>> {
        let c = self.config.autoencoder.latent_channels;
        self.chunked(images, self.image_shape(), |x| {
            let n = x.dim(0)?;
            let t = Tensor::zeros(n, x.dtype(), &self.device)?;
            let moments = forward(&self.config.encoder, &self.params, x, &t, None)?;
            Ok(moments.narrow(1, 0, c)?)
        })
    }

    /// The decoded images of `latents` (row-major `[n, c, H / f, W / f]`, unscaled),
    /// `[n, C, H, W]`, clamped to the data range `[-1, 1]` (as latent diffusion clamps its
    /// decoder's output into an image).
    ///
    /// # Errors
    /// As [`Codec::encode`].
    pub fn decode(&self, latents: &[f32]) -> Result<Vec<f32>> {
        self.chunked(latents, self.latent_shape(), |z| {
            let n = z.dim(0)?;
            let t = Tensor::zeros(n, z.dtype(), &self.device)?;
            let images = forward(&self.config.decoder, &self.params, z, &t, None)?;
            Ok(images.clamp(-1f32, 1f32)?)
        })
    }

    /// `decode(encode(images))`: the reconstructions through the posterior means.
    ///
    /// # Errors
    /// As [`Codec::encode`].
    pub fn reconstruct(&self, images: &[f32]) -> Result<Vec<f32>> {
        self.decode(&self.encode(images)?)
    }

    /// Applies `f` to `values` (samples of `shape`) in chunks of [`CHUNK`].
    fn chunked(
        &self,
        values: &[f32],
        shape: &[usize],
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Vec<f32>> {
        let len: usize = shape.iter().product();
        if values.is_empty() || !values.len().is_multiple_of(len) {
            return Err(Error::Invalid(format!(
                "expected whole samples of shape {shape:?} ({len} values each), got {} values",
                values.len()
            )));
        }
        let mut out = Vec::new();
        for chunk in values.chunks(CHUNK * len) {
            let mut dims = vec![chunk.len() / len];
            dims.extend_from_slice(shape);
            let x = Tensor::from_vec(chunk.to_vec(), dims.as_slice(), &self.device)?;
            out.extend(f(&x)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }
}
