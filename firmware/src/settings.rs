//! The model's schedule as stored in the schedule section, and the codes of the schedule's and
//! the default sampler's settings (the sampler itself is a [`ddm_core::SamplerConfig`]: what
//! each sampler name means is decided in the core crate alone).

use ddm_core::loss_weight::ReverseVariance;
use ddm_core::sampler::SamplerKind;
use ddm_core::timesteps::Spacing;
use ddm_core::{BetaSchedule, Prediction, ScheduleConfig};

use crate::error::{Error, Result};
use crate::format::beta_code;

/// The noise schedule a model was trained with. Its `alphas_cumprod` table is stored next to
/// it in the blob and is what the device samples with.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ModelSchedule {
    /// The beta shape, or `None` for user betas (only the table is stored).
    pub betas: Option<BetaSchedule>,
    /// Number of training steps `T`.
    pub train_steps: u32,
    /// Whether the schedule was rescaled to zero terminal SNR.
    pub zero_terminal_snr: bool,
    /// What the network predicts.
    pub prediction: Prediction,
}

impl ModelSchedule {
    /// The core schedule description (`None` for user betas).
    pub fn config(&self) -> Option<ScheduleConfig> {
        self.betas.map(|betas| ScheduleConfig {
            betas,
            train_steps: self.train_steps as usize,
            zero_terminal_snr: self.zero_terminal_snr,
        })
    }
}

#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) fn sampler_code(kind: SamplerKind) -> u32 {
    match kind {
        SamplerKind::Ddpm => 0,
        SamplerKind::Ddim => 1,
        SamplerKind::DpmSolverPp2m => 2,
        SamplerKind::PredictorCorrector => 3,
        SamplerKind::ProbabilityFlow => 4,
    }
}

pub(crate) fn sampler_from_code(code: u32) -> Result<SamplerKind> {
    match code {
        0 => Ok(SamplerKind::Ddpm),
        1 => Ok(SamplerKind::Ddim),
        2 => Ok(SamplerKind::DpmSolverPp2m),
        3 => Ok(SamplerKind::PredictorCorrector),
        4 => Ok(SamplerKind::ProbabilityFlow),
        _ => Err(Error::InvalidSchedule("unknown sampler")),
    }
}

/// The spacing code of [`Spacing::Given`], whose timesteps follow the schedule's table.
pub(crate) const SPACING_GIVEN: u32 = 4;

#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) fn spacing_code(spacing: Spacing) -> u32 {
    match spacing {
        Spacing::Leading => 0,
        Spacing::Linspace => 1,
        Spacing::Trailing => 2,
        Spacing::LogSnr => 3,
        Spacing::Given(_) => SPACING_GIVEN,
    }
}

/// The spacing of a code other than [`SPACING_GIVEN`] (whose timesteps are read apart).
pub(crate) fn spacing_from_code(code: u32) -> Result<Spacing> {
    match code {
        0 => Ok(Spacing::Leading),
        1 => Ok(Spacing::Linspace),
        2 => Ok(Spacing::Trailing),
        3 => Ok(Spacing::LogSnr),
        _ => Err(Error::InvalidSchedule("unknown timestep spacing")),
    }
}

#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) fn prediction_code(prediction: Prediction) -> u32 {
    match prediction {
        Prediction::Eps => 0,
        Prediction::X0 => 1,
        Prediction::V => 2,
    }
}

pub(crate) fn prediction_from_code(code: u32) -> Result<Prediction> {
    match code {
        0 => Ok(Prediction::Eps),
        1 => Ok(Prediction::X0),
        2 => Ok(Prediction::V),
        _ => Err(Error::InvalidSchedule("unknown prediction type")),
    }
}

#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) fn variance_code(variance: ReverseVariance) -> u32 {
    match variance {
        ReverseVariance::Beta => 0,
        ReverseVariance::Posterior => 1,
    }
}

pub(crate) fn variance_from_code(code: u32) -> Result<ReverseVariance> {
    match code {
        0 => Ok(ReverseVariance::Beta),
        1 => Ok(ReverseVariance::Posterior),
        _ => Err(Error::InvalidSchedule("unknown reverse variance")),
    }
}

/// `(code, first parameter, second parameter)` of a beta schedule (`None`: custom).
#[cfg_attr(not(feature = "std"), allow(dead_code))]
pub(crate) fn betas_code(betas: Option<BetaSchedule>) -> (u32, f64, f64) {
    match betas {
        Some(BetaSchedule::Linear {
            beta_start,
            beta_end,
        }) => (beta_code::LINEAR, beta_start, beta_end),
        Some(BetaSchedule::ScaledLinear {
            beta_start,
            beta_end,
        }) => (beta_code::SCALED_LINEAR, beta_start, beta_end),
        Some(BetaSchedule::Cosine { s, max_beta }) => (beta_code::COSINE, s, max_beta),
        Some(BetaSchedule::Sigmoid {
            beta_start,
            beta_end,
        }) => (beta_code::SIGMOID, beta_start, beta_end),
        Some(BetaSchedule::VarianceExploding {
            sigma_min,
            sigma_max,
        }) => (beta_code::VARIANCE_EXPLODING, sigma_min, sigma_max),
        None => (beta_code::CUSTOM, 0.0, 0.0),
    }
}

pub(crate) fn betas_from_code(code: u32, a: f64, b: f64) -> Result<Option<BetaSchedule>> {
    if !(a.is_finite() && b.is_finite()) {
        return Err(Error::InvalidSchedule(
            "beta schedule parameters must be finite",
        ));
    }
    Ok(Some(match code {
        beta_code::LINEAR => BetaSchedule::Linear {
            beta_start: a,
            beta_end: b,
        },
        beta_code::SCALED_LINEAR => BetaSchedule::ScaledLinear {
            beta_start: a,
            beta_end: b,
        },
        beta_code::COSINE => BetaSchedule::Cosine { s: a, max_beta: b },
        beta_code::SIGMOID => BetaSchedule::Sigmoid {
            beta_start: a,
            beta_end: b,
        },
        beta_code::VARIANCE_EXPLODING => BetaSchedule::VarianceExploding {
            sigma_min: a,
            sigma_max: b,
        },
        beta_code::CUSTOM if a == 0.0 && b == 0.0 => return Ok(None),
        beta_code::CUSTOM => {
            return Err(Error::InvalidSchedule(
                "custom betas store no parameters (both 0)",
            ))
        }
        _ => return Err(Error::InvalidSchedule("unknown beta schedule")),
    }))
}
