//! The timestep samplers' settings on the command line, shared by `ddm sample`, `ddm export`
//! and `ddm hil`: one flag, one meaning, resolved by the core's rule
//! ([`ddm_core::SamplerOptions::resolve`]).

use ddm_core::loss_weight::ReverseVariance;
use ddm_core::SamplerOptions;

use crate::schedule_args::SpacingName;

/// DDPM's reverse variances by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VarianceName {
    /// rho^2 = beta (diffusers' "fixed_large").
    Beta,
    /// rho^2 = posterior variance (diffusers' "fixed_small").
    Posterior,
}

impl From<VarianceName> for ReverseVariance {
    fn from(name: VarianceName) -> Self {
        match name {
            VarianceName::Beta => ReverseVariance::Beta,
            VarianceName::Posterior => ReverseVariance::Posterior,
        }
    }
}

/// Sampler settings besides the sampler and its step count: each one given replaces the
/// default (or, for a model blob, the blob's stored setting); each one left out keeps it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SamplerArgs {
    /// Timestep spacing [default: leading for ddim and ddpm, trailing for dpmpp-2m; trailing
    /// on a zero-terminal-SNR schedule; leading for an eps network on a schedule ending in
    /// almost pure noise (cosine); a model blob: its own].
    #[arg(long, value_enum)]
    pub spacing: Option<SpacingName>,
    /// Offset added to leading timesteps [default: 0].
    #[arg(long)]
    pub steps_offset: Option<u32>,
    /// DDIM's eta: 0 is deterministic, 1 matches DDPM's noise [default: 0].
    #[arg(long)]
    pub eta: Option<f32>,
    /// DDPM's reverse variance [default: posterior].
    #[arg(long, value_enum)]
    pub variance: Option<VarianceName>,
    /// Clamp every x0 estimate (Langevin: its final denoised output) to [-R, R] [default: no
    /// clamp].
    #[arg(long, value_name = "R")]
    pub clip_sample: Option<f32>,
    /// DPM-Solver++: take the second to last step at first order as well as the last
    /// [default: only the last, as diffusers].
    #[arg(long)]
    pub first_order_penultimate: bool,
}

impl SamplerArgs {
    /// The core's options (no sampler kind or step count: the command adds them).
    pub fn options(&self) -> SamplerOptions {
        SamplerOptions {
            spacing: self.spacing.map(Into::into),
            steps_offset: self.steps_offset,
            eta: self.eta,
            variance: self.variance.map(Into::into),
            clip_sample: self.clip_sample.map(Some),
            first_order_penultimate: self.first_order_penultimate.then_some(true),
            ..SamplerOptions::none()
        }
    }
}
