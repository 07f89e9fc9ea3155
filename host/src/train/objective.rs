//! What the network learns: the prediction type and the per-timestep loss weight.

use ddm_core::loss_weight::ReverseVariance;
use ddm_core::{LossWeighting, Prediction};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The prediction types by name, as on the command line and in run configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PredictionType {
    /// The added noise.
    #[default]
    Eps,
    /// The clean sample.
    X0,
    /// The velocity `a eps - s x0`.
    V,
}

impl From<PredictionType> for Prediction {
    fn from(kind: PredictionType) -> Prediction {
        match kind {
            PredictionType::Eps => Prediction::Eps,
            PredictionType::X0 => Prediction::X0,
            PredictionType::V => Prediction::V,
        }
    }
}

/// The loss weightings by name, as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LossWeightName {
    /// Weight 1 on the prediction's squared error.
    #[default]
    Simple,
    /// The variational bound's weight (reverse variance `beta_t`).
    Elbo,
    /// Min-SNR-gamma.
    MinSnr,
    /// Weight 1 on the eps loss whatever the prediction: denoising score matching with
    /// NCSN's `lambda(sigma) = sigma^2` (the same as `simple` for eps).
    Ncsn,
}

/// A loss weighting with its parameter, as stored in run configurations.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    try_from = "serde_json::Value"
)]
pub enum LossWeightSpec {
    /// `w = 1`.
    #[default]
    Simple,
    /// The ELBO weight with the "fixed large" reverse variance `beta_t`.
    Elbo,
    /// `min(SNR, gamma)` on the x0 loss (Hang et al. 2023).
    MinSnr {
        /// The clamp (typically 5).
        gamma: f32,
    },
    /// `w = 1` on the eps loss, whatever the prediction (NCSN's `lambda(sigma) = sigma^2`).
    Ncsn,
}

impl TryFrom<serde_json::Value> for LossWeightSpec {
    type Error = String;

    fn try_from(value: serde_json::Value) -> std::result::Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Empty {}
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Gamma {
            gamma: f32,
        }
        let (kind, rest) = crate::tagged::split_kind(value)?;
        match kind.as_str() {
            "simple" => crate::tagged::fields::<Empty>(&kind, rest).map(|_| LossWeightSpec::Simple),
            "elbo" => crate::tagged::fields::<Empty>(&kind, rest).map(|_| LossWeightSpec::Elbo),
            "min-snr" => crate::tagged::fields::<Gamma>(&kind, rest)
                .map(|g| LossWeightSpec::MinSnr { gamma: g.gamma }),
            "ncsn" => crate::tagged::fields::<Empty>(&kind, rest).map(|_| LossWeightSpec::Ncsn),
            other => Err(format!(
                "unknown loss weight {other:?} (simple, elbo, min-snr, ncsn)"
            )),
        }
    }
}

impl LossWeightSpec {
    /// The weighting `name` with `gamma` for min-SNR.
    ///
    /// # Errors
    /// [`Error::Invalid`] for min-SNR with a `gamma` that is not positive and finite.
    pub fn new(name: LossWeightName, gamma: f32) -> Result<Self> {
        Ok(match name {
            LossWeightName::Simple => LossWeightSpec::Simple,
            LossWeightName::Elbo => LossWeightSpec::Elbo,
            LossWeightName::MinSnr => {
                if !(gamma > 0.0 && gamma.is_finite()) {
                    return Err(Error::Invalid(format!(
                        "--min-snr-gamma must be positive, got {gamma}"
                    )));
                }
                LossWeightSpec::MinSnr { gamma }
            }
            LossWeightName::Ncsn => LossWeightSpec::Ncsn,
        })
    }

    /// The core's weighting.
    pub fn weighting(self) -> LossWeighting {
        match self {
            LossWeightSpec::Simple => LossWeighting::Simple,
            LossWeightSpec::Elbo => LossWeighting::Elbo(ReverseVariance::Beta),
            LossWeightSpec::MinSnr { gamma } => LossWeighting::MinSnr { gamma },
            LossWeightSpec::Ncsn => LossWeighting::Ncsn,
        }
    }
}

/// The training objective: `w(t) |target - output|^2` for the chosen prediction type.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// What the network predicts.
    pub prediction: PredictionType,
    /// How timesteps are weighted.
    pub loss_weight: LossWeightSpec,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_forms_and_validation() {
        let objective = Objective {
            prediction: PredictionType::V,
            loss_weight: LossWeightSpec::MinSnr { gamma: 5.0 },
        };
        let text = serde_json::to_string(&objective).unwrap();
        assert_eq!(
            text,
            r#"{"prediction":"v","loss_weight":{"kind":"min-snr","gamma":5.0}}"#
        );
        assert_eq!(serde_json::from_str::<Objective>(&text).unwrap(), objective);
        for (text, spec) in [
            (r#"{"kind":"simple"}"#, LossWeightSpec::Simple),
            (r#"{"kind":"elbo"}"#, LossWeightSpec::Elbo),
            (r#"{"kind":"ncsn"}"#, LossWeightSpec::Ncsn),
        ] {
            assert_eq!(serde_json::from_str::<LossWeightSpec>(text).unwrap(), spec);
            assert_eq!(serde_json::to_string(&spec).unwrap(), text);
        }
        assert!(serde_json::from_str::<LossWeightSpec>(r#"{"kind":"ncsn","gamma":1}"#).is_err());
        assert_eq!(
            LossWeightSpec::new(LossWeightName::Ncsn, 0.0)
                .unwrap()
                .weighting(),
            LossWeighting::Ncsn
        );
        assert!(serde_json::from_str::<LossWeightSpec>(r#"{"kind":"elbo","gamma":1}"#).is_err());
        assert!(serde_json::from_str::<LossWeightSpec>(r#"{"kind":"min-snr"}"#).is_err());
        assert!(LossWeightSpec::new(LossWeightName::MinSnr, 0.0).is_err());
        assert_eq!(
            LossWeightSpec::new(LossWeightName::Elbo, 0.0)
                .unwrap()
                .weighting(),
            LossWeighting::Elbo(ReverseVariance::Beta)
        );
        assert_eq!(Prediction::from(PredictionType::X0), Prediction::X0);
    }
}
