//! Command-line forms of the core's schedule settings.

use ddm_core::schedule::{BetaSchedule, ScheduleConfig};
use ddm_core::timesteps::Spacing;
use ddm_core::NoiseLevels;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
    /// Variance exploding: the geometric noise levels of score-based models (NCSN) from
    /// --sigma-min to --sigma-max, each level's input scaled into unit variance.
    Ve,
}

impl BetaScheduleName {
    /// The core schedule with its default parameters; a variance-exploding schedule takes
    /// `sigmas` (`None`: NaN sigmas, which the core refuses).
    pub fn betas(self, sigmas: Option<VeSigmas>) -> BetaSchedule {
        match self {
            BetaScheduleName::Linear => BetaSchedule::linear(),
            BetaScheduleName::ScaledLinear => BetaSchedule::scaled_linear(),
            BetaScheduleName::Cosine => BetaSchedule::cosine(),
            BetaScheduleName::Sigmoid => BetaSchedule::sigmoid(),
            BetaScheduleName::Ve => {
                let sigmas = sigmas.unwrap_or(VeSigmas {
                    sigma_min: f64::NAN,
                    sigma_max: f64::NAN,
                });
                BetaSchedule::VarianceExploding {
                    sigma_min: sigmas.sigma_min,
                    sigma_max: sigmas.sigma_max,
                }
            }
        }
    }
}

/// The noise level range of a variance-exploding schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VeSigmas {
    /// The smallest noise level (level 0).
    pub sigma_min: f64,
    /// The largest (level `T - 1`), the standard deviation of the initial noise.
    pub sigma_max: f64,
}

/// NCSN's smallest noise level, 0.01: the default where there is no data to measure.
pub const DEFAULT_SIGMA_MIN: f64 = 0.01;

/// The least `sigma_min` that [`VeSigmas::data_sigma_min`] chooses: 0.1, 5% of the range
/// `[-1, 1]` that every data set is scaled into.
pub const DATA_SIGMA_MIN_FLOOR: f64 = 0.1;

/// At most this many training samples give NCSNv2's `sigma_max` (the largest distance between
/// two of them; the cost is quadratic).
pub const SIGMA_MAX_SAMPLES: usize = 2000;

impl VeSigmas {
    /// NCSNv2's `sigma_max` for `values` (`[n, dim]` row-major): the largest distance between
    /// two of the first [`SIGMA_MAX_SAMPLES`] rows, a lower bound of the whole set's (the
    /// loaders' order is fixed, so the same data gives the same value).
    ///
    /// # Errors
    /// The core's refusals (fewer than two rows).
    pub fn ncsnv2_sigma_max(values: &[f32], dim: usize) -> Result<f64> {
        let rows = (values.len() / dim.max(1)).min(SIGMA_MAX_SAMPLES);
        Ok(ddm_core::noise_levels::max_pairwise_distance(
            &values[..rows * dim],
            dim,
        )?)
    }

    /// `sigma_min` for `values`: the data's quantisation step (the smallest gap between two
    /// distinct values among the first [`SIGMA_MAX_SAMPLES`] rows of `dim` values), at least
    /// [`DATA_SIGMA_MIN_FLOOR`]. Noise below one grey level only moves a sample between
    /// neighbouring grey levels, and noise below the floor only a pixel by a few percent of its
    /// range: geometric levels spent there train little that the final denoising step needs
    /// (the measurements on optdigits and Fashion-MNIST: BENCHMARKS.md, "Score-based models").
    pub fn data_sigma_min(values: &[f32], dim: usize) -> f64 {
        let rows = (values.len() / dim.max(1)).min(SIGMA_MAX_SAMPLES);
        let mut distinct: Vec<f32> = values[..rows * dim]
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        distinct.sort_by(f32::total_cmp);
        distinct.dedup();
        let gap = distinct
            .windows(2)
            .map(|pair| f64::from(pair[1]) - f64::from(pair[0]))
            .fold(f64::INFINITY, f64::min);
        if gap.is_finite() {
            gap.max(DATA_SIGMA_MIN_FLOOR)
        } else {
            DATA_SIGMA_MIN_FLOOR
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Beta shape.
    pub beta_schedule: BetaScheduleName,
    /// Training steps `T` (noise levels, for a variance-exploding schedule).
    pub train_steps: usize,
    /// Zero-terminal-SNR rescaling.
    pub zero_snr: bool,
    /// The sigmas of a variance-exploding schedule (required by it, refused by the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigmas: Option<VeSigmas>,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        ScheduleSpec {
            beta_schedule: BetaScheduleName::Linear,
            train_steps: 1000,
            zero_snr: false,
            sigmas: None,
        }
    }
}

impl ScheduleSpec {
    /// The core configuration.
    pub fn config(&self) -> ScheduleConfig {
        ScheduleConfig {
            betas: self.beta_schedule.betas(self.sigmas),
            train_steps: self.train_steps,
            zero_terminal_snr: self.zero_snr,
        }
    }

    /// Whether this is a variance-exploding schedule.
    pub fn is_variance_exploding(&self) -> bool {
        self.beta_schedule == BetaScheduleName::Ve
    }

    /// The noise levels of a variance-exploding schedule (`None` for the others).
    pub fn noise_levels(&self) -> Option<NoiseLevels> {
        self.config().betas.noise_levels(self.train_steps)
    }

    /// The table of `alpha_bar` for `t = 0..T`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when sigmas are missing from a variance-exploding schedule or given
    /// to another; the core's refusals of the settings.
    pub fn alphas_cumprod(&self) -> Result<Vec<f32>> {
        if self.is_variance_exploding() != self.sigmas.is_some() {
            return Err(Error::Invalid(
                "sigma_min and sigma_max belong to the variance-exploding schedule (ve), and it \
                 needs them"
                    .into(),
            ));
        }
        let mut table = vec![0.0f32; self.train_steps];
        self.config().fill_alphas_cumprod(&mut table)?;
        Ok(table)
    }
}

/// The command-line options of a variance-exploding schedule's sigmas (`--beta-schedule ve`).
#[derive(Debug, Clone, Copy, PartialEq, clap::Args)]
pub struct VeArgs {
    /// Variance exploding (--beta-schedule ve): the smallest noise level [default, when
    /// training: the data's quantisation step (smallest gap between distinct values), at least
    /// 0.1; elsewhere NCSN's 0.01].
    #[arg(long)]
    pub sigma_min: Option<f64>,
    /// Variance exploding: the largest noise level [default, when training: NCSNv2's rule, the
    /// largest distance between two of the first 2000 training samples; elsewhere required].
    #[arg(long)]
    pub sigma_max: Option<f64>,
}

impl VeArgs {
    /// The options as given when none is on the command line.
    pub fn default_values() -> Self {
        VeArgs {
            sigma_min: None,
            sigma_max: None,
        }
    }

    /// The sigmas of a schedule named `name`: `None` unless it is variance exploding; then
    /// `--sigma-min` and `--sigma-max`, or when not given the rules on `data` (`[n, dim]`
    /// values): [`VeSigmas::data_sigma_min`] and NCSNv2's [`VeSigmas::ncsnv2_sigma_max`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for `--sigma-max` without `ve`, or `ve` with neither `--sigma-max` nor
    /// data; the rule's refusals.
    pub fn sigmas(
        &self,
        name: BetaScheduleName,
        data: Option<(&[f32], usize)>,
    ) -> Result<Option<VeSigmas>> {
        if name != BetaScheduleName::Ve {
            if self.sigma_max.is_some() || self.sigma_min.is_some() {
                return Err(Error::Invalid(
                    "--sigma-min and --sigma-max apply to --beta-schedule ve only".into(),
                ));
            }
            return Ok(None);
        }
        let sigma_max = match (self.sigma_max, data) {
            (Some(sigma_max), _) => sigma_max,
            (None, Some((values, dim))) => VeSigmas::ncsnv2_sigma_max(values, dim)?,
            (None, None) => {
                return Err(Error::Invalid(
                    "--beta-schedule ve needs --sigma-max here (no training data to choose it)"
                        .into(),
                ))
            }
        };
        let sigma_min = match (self.sigma_min, data) {
            (Some(sigma_min), _) => sigma_min,
            (None, Some((values, dim))) => VeSigmas::data_sigma_min(values, dim),
            (None, None) => DEFAULT_SIGMA_MIN,
        };
        Ok(Some(VeSigmas {
            sigma_min,
            sigma_max,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variance_exploding_spec_needs_its_sigmas_and_reads_older_configs() {
        let ve = ScheduleSpec {
            beta_schedule: BetaScheduleName::Ve,
            train_steps: 50,
            zero_snr: false,
            sigmas: Some(VeSigmas {
                sigma_min: 0.1,
                sigma_max: 8.0,
            }),
        };
        let table = ve.alphas_cumprod().unwrap();
        let levels = ve.noise_levels().unwrap();
        assert_eq!(
            (levels.sigma_min(), levels.sigma_max(), levels.len()),
            (0.1, 8.0, 50)
        );
        assert!((f64::from(table[49]) - 1.0 / 65.0).abs() < 1e-7);
        let text = serde_json::to_string(&ve).unwrap();
        assert_eq!(serde_json::from_str::<ScheduleSpec>(&text).unwrap(), ve);
        // Configurations written before the variance-exploding schedule have no sigmas.
        let old = r#"{"beta_schedule":"cosine","train_steps":1000,"zero_snr":false}"#;
        let parsed: ScheduleSpec = serde_json::from_str(old).unwrap();
        assert_eq!(parsed.sigmas, None);
        assert!(parsed.noise_levels().is_none());
        assert_eq!(serde_json::to_string(&parsed).unwrap(), old);
        let missing = ScheduleSpec { sigmas: None, ..ve };
        assert!(matches!(missing.alphas_cumprod(), Err(Error::Invalid(_))));
        let stray = ScheduleSpec {
            beta_schedule: BetaScheduleName::Linear,
            ..ve
        };
        assert!(matches!(stray.alphas_cumprod(), Err(Error::Invalid(_))));
    }

    #[test]
    fn the_sigma_rules_measure_the_data() {
        // Rows of 5 values on a grid 0.25 apart; the farthest rows differ by 1 in every value.
        let values = [
            0.0f32, 0.25, 0.5, 0.25, 0.0, //
            1.0, 1.25, 1.5, 1.25, 1.0, //
            0.5, 0.5, 0.5, 0.5, 0.5,
        ];
        assert_eq!(VeSigmas::data_sigma_min(&values, 5), 0.25);
        let sigma_max = VeSigmas::ncsnv2_sigma_max(&values, 5).unwrap();
        assert!((sigma_max - 5f64.sqrt()).abs() < 1e-12);
        // Finer than the floor (8-bit images), or no two distinct values: the floor.
        let eight_bit: Vec<f32> = (0..=255).map(|v| v as f32 / 127.5 - 1.0).collect();
        assert_eq!(
            VeSigmas::data_sigma_min(&eight_bit, 1),
            DATA_SIGMA_MIN_FLOOR
        );
        assert_eq!(VeSigmas::data_sigma_min(&[0.0, 0.001, 0.5], 1), 0.1);
        assert_eq!(VeSigmas::data_sigma_min(&[0.3, 0.3], 1), 0.1);
        let args = VeArgs::default_values();
        let sigmas = args
            .sigmas(BetaScheduleName::Ve, Some((&values, 5)))
            .unwrap()
            .unwrap();
        assert_eq!((sigmas.sigma_min, sigmas.sigma_max), (0.25, sigma_max));
        assert_eq!(args.sigmas(BetaScheduleName::Linear, None).unwrap(), None);
        assert!(args.sigmas(BetaScheduleName::Ve, None).is_err());
        let given = VeArgs {
            sigma_min: Some(0.05),
            sigma_max: Some(3.0),
        };
        let sigmas = given.sigmas(BetaScheduleName::Ve, None).unwrap().unwrap();
        assert_eq!((sigmas.sigma_min, sigmas.sigma_max), (0.05, 3.0));
        assert!(given.sigmas(BetaScheduleName::Cosine, None).is_err());
    }
}
