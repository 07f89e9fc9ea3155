//! Command-line forms of the core's schedule settings.

use ddm_core::schedule::{BetaSchedule, ScheduleConfig};
use ddm_core::timesteps::Spacing;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The beta schedules by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BetaScheduleName {
    /// Linear 1e-4..0.02 (scaled to T).
    #[default]
    Linear,
    /// Linear in sqrt(beta), 0.00085..0.012.
    ScaledLinear,
    /// Improved-DDPM cosine.
    Cosine,
    /// Sigmoid 1e-4..0.02.
    Sigmoid,
}

impl BetaScheduleName {
    /// The core schedule with its default parameters.
    pub fn betas(self) -> BetaSchedule {
        match self {
            BetaScheduleName::Linear => BetaSchedule::linear(),
            BetaScheduleName::ScaledLinear => BetaSchedule::scaled_linear(),
            BetaScheduleName::Cosine => BetaSchedule::cosine(),
            BetaScheduleName::Sigmoid => BetaSchedule::sigmoid(),
        }
    }
}

/// The timestep spacings by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpacingName {
    /// `i * T/N + offset`.
    Leading,
    /// `round(linspace(0, T-1, N))`.
    Linspace,
    /// `round(T - i T/N) - 1`.
    Trailing,
    /// Uniform in log-SNR.
    #[value(name = "logsnr")]
    #[serde(rename = "logsnr")]
    LogSnr,
}

impl From<SpacingName> for Spacing {
    fn from(name: SpacingName) -> Spacing {
        match name {
            SpacingName::Leading => Spacing::Leading,
            SpacingName::Linspace => Spacing::Linspace,
            SpacingName::Trailing => Spacing::Trailing,
            SpacingName::LogSnr => Spacing::LogSnr,
        }
    }
}

/// A schedule as named on the command line and stored in run configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Beta shape.
    pub beta_schedule: BetaScheduleName,
    /// Training steps `T`.
    pub train_steps: usize,
    /// Zero-terminal-SNR rescaling.
    pub zero_snr: bool,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        ScheduleSpec {
            beta_schedule: BetaScheduleName::Linear,
            train_steps: 1000,
            zero_snr: false,
        }
    }
}

impl ScheduleSpec {
    /// The core configuration.
    pub fn config(&self) -> ScheduleConfig {
        ScheduleConfig {
            betas: self.beta_schedule.betas(),
            train_steps: self.train_steps,
            zero_terminal_snr: self.zero_snr,
        }
    }

    /// The table of `alpha_bar` for `t = 0..T`.
    pub fn alphas_cumprod(&self) -> Result<Vec<f32>> {
        let mut table = vec![0.0f32; self.train_steps];
        self.config().fill_alphas_cumprod(&mut table)?;
        Ok(table)
    }
}
