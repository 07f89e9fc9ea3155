//! Diffusion mathematics shared by the host trainer and the device runtime.
//!
//! Everything here is `no_std`, allocation-free and works on caller-owned `f32` slices. Scalar
//! per-step coefficients are computed in `f64`, element-wise updates in `f32`, and every
//! transcendental function comes from [`libm`], so x86-64, aarch64 and `thumbv7em-none-eabihf`
//! produce bit-identical results for the same inputs and seed.
//!
//! The pieces, in the order data flows through them:
//! - [`schedule`]: noise schedules over `T` training steps and the per-step quantities derived
//!   from `alpha_bar` (beta, `a_t`, `s_t`, SNR, posterior variance).
//! - [`forward`]: the forward process `x_t = a_t x_0 + s_t e` in closed form.
//! - [`timesteps`]: choosing `N` inference timesteps out of `T` (leading, linspace, trailing).
//! - [`prediction`]: eps / x0 / v parameterisations and conversions between them.
//! - [`loss_weight`]: training loss weights (simple, ELBO, min-SNR-gamma).
//! - [`noise_levels`]: the variance-exploding perturbation `x0 + sigma z` of score-based
//!   models at geometric noise levels, and NCSNv2's rules that choose them.
//! - [`sampler`]: DDPM, DDIM (and its inversion), DPM-Solver++ 2M; annealed Langevin dynamics,
//!   and the predictor-corrector sampler and the probability flow ODE of the
//!   variance-exploding SDE; as step-by-step state machines that ask the caller for the
//!   network output, and what each sampler name means ([`SamplerConfig`]: its defaults and
//!   its validation).
//! - [`guidance`]: classifier-free guidance of a class-conditional network's predictions.
//! - [`names`]: the words that choose a sampler, a spacing and a variance, everywhere.
//! - [`rng`]: a portable seeded generator with a Gaussian sampler.
//! - [`gmm`]: the exact denoiser of an isotropic Gaussian mixture, an oracle for samplers.
//! - [`conformance`]: digests that prove two targets compute the same bits.
#![no_std]
#![warn(missing_docs)]

pub mod conformance;
mod error;
pub mod forward;
pub mod gmm;
pub mod guidance;
pub mod loss_weight;
pub mod names;
pub mod noise_levels;
pub mod prediction;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod timesteps;

pub use error::{check_len, Error, Result};
pub use gmm::GaussianMixture;
pub use guidance::Guidance;
pub use loss_weight::LossWeighting;
pub use noise_levels::NoiseLevels;
pub use prediction::Prediction;
pub use rng::Rng;
pub use sampler::{Sampler, SamplerConfig, SamplerKind, SamplerOptions};
pub use schedule::{BetaSchedule, Schedule, ScheduleConfig};
pub use timesteps::Spacing;
