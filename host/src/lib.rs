//! The host side of ddm: data sets, models, training, sampling and the `ddm` command line.
//!
//! - [`device`]: where the host computes (`--device cpu|cuda|cuda:N`).
//! - [`data`]: the data sets (`optdigits`, MNIST, Fashion-MNIST, image folders, 2-D toys).
//! - [`model`]: MLP and UNet denoisers as exporter graphs, run by a candle executor.
//! - [`train`]: AdamW, EMA, schedules of the learning rate, checkpoints, the training loop.
//! - [`autoencoder`]: autoencoders for latent diffusion (training, encoding, decoding).
//! - [`sampling`]: generating samples with any [`sampling::Denoiser`]; [`guided`]: a
//!   requested class of a class-conditional one, with classifier-free guidance.
//! - [`eval`]: sample-quality metrics, each beside its real-vs-real floor.
//! - [`calibrate`], [`export`](mod@export): timestep-aware calibration, int8 / fp16 / f32
//!   blobs and ONNX files, and the device runtime run on the host.
//! - [`image_grid`], [`plot`], [`npy`]: what runs write (PNG grids, charts, `.npy` arrays).
#![warn(missing_docs)]

pub mod autoencoder;
pub mod calibrate;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod export;
pub mod fsutil;
pub mod guided;
pub mod image_grid;
pub mod model;
pub mod npy;
pub mod oracle;
pub mod plot;
pub mod sampler_args;
pub mod sampling;
pub mod schedule_args;
pub mod seeding;
mod tagged;
pub mod threads;
pub mod train;

pub use error::{Error, Result};
