//! Autoencoders for latent diffusion (Rombach et al. 2022): a convolutional encoder to a
//! KL-regularised latent `H / f x W / f` with a few channels, and a decoder back.
//!
//! - [`model`]: the two networks as exporter graphs ([`AutoencoderConfig`]).
//! - [`config`]: the run's `config.json` ([`AutoencoderRun`]: sizes, networks, data, loss,
//!   hyper-parameters, latent scale, progress).
//! - [`trainer`]: the training state and one step ([`AutoencoderTrainer`]); the loop, the
//!   progress bar, the EMA, AdamW and the learning-rate schedule are those of denoisers
//!   ([`crate::train::run`]).
//! - [`checkpoint`]: crash-safe run folders, as for denoisers.
//! - [`codec`]: encoding and decoding with a trained autoencoder ([`Codec`]), and the PSNR of
//!   reconstructions.
//! - [`latent`]: the latent space a denoiser run trains and samples in ([`LatentSpace`]).

pub mod checkpoint;
pub mod codec;
pub mod config;
pub mod latent;
pub mod model;
pub mod trainer;

pub use checkpoint::AutoencoderCheckpoint;
pub use codec::{psnr, Codec};
pub use config::{AutoencoderLoss, AutoencoderRun};
pub use latent::LatentSpace;
pub use model::AutoencoderConfig;
pub use trainer::AutoencoderTrainer;
