//! Gaussian-mixture specs for the exact-denoiser oracle (`ddm sample --oracle-gmm`).
//!
//! The oracle is also class-conditional: class `k` is component `k` alone (`ddm sample
//! --oracle-gmm SPEC --class k`), the exact reference for classifier-free guidance.
//!
//! A spec is JSON: `{"means": [[..], ..], "stds": [..], "weights": [..]}` for `K` components in
//! `D` dimensions with one isotropic standard deviation per component.

use std::path::Path;

use ddm_core::{GaussianMixture, Prediction, Schedule};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::sampling::Denoiser;

/// An owned Gaussian mixture parsed and validated from a spec file.
#[derive(Debug, Clone, PartialEq)]
pub struct MixtureSpec {
    means: Vec<f32>,
    stds: Vec<f32>,
    weights: Vec<f32>,
    dim: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    means: Vec<Vec<f32>>,
    stds: Vec<f32>,
    weights: Vec<f32>,
}

impl MixtureSpec {
    /// Reads and validates a spec file. Errors name the file and what is wrong: malformed
    /// JSON, ragged means, component counts that disagree, weights that do not sum to 1,
    /// non-positive standard deviations.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|reason| Error::corrupt(path, reason))
    }

    /// Parses and validates a spec from JSON text; the error is a one-line reason.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let raw: RawSpec =
            serde_json::from_str(text).map_err(|e| format!("malformed mixture spec: {e}"))?;
        let components = raw.means.len();
        let dim = raw.means.first().map_or(0, Vec::len);
        if components == 0 || dim == 0 {
            return Err("the spec needs at least one mean with at least one dimension".into());
        }
        if let Some(k) = raw.means.iter().position(|m| m.len() != dim) {
            return Err(format!(
                "mean {k} has {} dimensions, mean 0 has {dim}",
                raw.means[k].len()
            ));
        }
        if raw.stds.len() != components || raw.weights.len() != components {
            return Err(format!(
                "{components} means but {} stds and {} weights",
                raw.stds.len(),
                raw.weights.len()
            ));
        }
        let sum: f32 = raw.weights.iter().sum();
        if (sum - 1.0).abs() > ddm_core::gmm::WEIGHT_SUM_TOLERANCE {
            return Err(format!("weights sum to {sum}, not 1"));
        }
        let spec = MixtureSpec {
            means: raw.means.into_iter().flatten().collect(),
            stds: raw.stds,
            weights: raw.weights,
            dim,
        };
        spec.mixture().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    /// The mixture as the core's oracle.
    pub fn mixture(&self) -> std::result::Result<GaussianMixture<'_>, ddm_core::Error> {
        GaussianMixture::new(&self.means, &self.stds, &self.weights, self.dim)
    }

    /// Number of dimensions `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }
}

/// The mixture's exact denoiser as a [`Denoiser`] over a schedule.
#[derive(Debug)]
pub struct MixtureDenoiser<'a> {
    mixture: GaussianMixture<'a>,
    schedule: Schedule<'a>,
}

impl<'a> MixtureDenoiser<'a> {
    /// The exact eps predictor of `spec`'s mixture under `schedule`.
    pub fn new(spec: &'a MixtureSpec, schedule: Schedule<'a>) -> Result<Self> {
        Ok(MixtureDenoiser {
            mixture: spec.mixture()?,
            schedule,
        })
    }
}

impl Denoiser for MixtureDenoiser<'_> {
    fn sample_shape(&self) -> Vec<usize> {
        vec![self.mixture.dim()]
    }

    fn prediction(&self) -> Prediction {
        Prediction::Eps
    }

    fn predict(&mut self, x: &[f32], t: u32, out: &mut [f32]) -> Result<()> {
        let t = t as usize;
        let (a, s) = (self.schedule.signal(t), self.schedule.noise(t));
        Ok(self.mixture.eps(x, a as f32, s as f32, out)?)
    }

    fn ve_score(&mut self, x: &[f32], sigma: f64, out: &mut [f32]) -> Result<()> {
        Ok(self.mixture.ve_score(x, sigma as f32, out)?)
    }

    /// The mixture as a class-conditional model: class `k` is component `k`.
    fn classes(&self) -> Option<usize> {
        Some(self.mixture.components())
    }

    /// The exact eps of component `class` alone (`None`: of the whole mixture).
    fn predict_class(
        &mut self,
        x: &[f32],
        t: u32,
        class: Option<u32>,
        out: &mut [f32],
    ) -> Result<()> {
        let Some(class) = class else {
            return self.predict(x, t, out);
        };
        let k = class as usize;
        if k >= self.mixture.components() {
            return Err(Error::Invalid(format!(
                "class {class} is outside the mixture's components 0..{}",
                self.mixture.components() - 1
            )));
        }
        let std = [self.mixture.std(k)];
        let component =
            GaussianMixture::new(self.mixture.mean(k), &std, &[1.0], self.mixture.dim())?;
        let t = t as usize;
        let (a, s) = (self.schedule.signal(t), self.schedule.noise(t));
        Ok(component.eps(x, a as f32, s as f32, out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_specs_and_explains_bad_ones() {
        let spec = MixtureSpec::from_json(
            r#"{"means": [[0, 1], [2, 3]], "stds": [0.5, 0.25], "weights": [0.5, 0.5]}"#,
        )
        .unwrap();
        assert_eq!(spec.dim(), 2);
        let cases = [
            (
                r#"{"means": [[0, 1], [2]], "stds": [1, 1], "weights": [0.5, 0.5]}"#,
                "dimensions",
            ),
            (
                r#"{"means": [[0], [2]], "stds": [1], "weights": [0.5, 0.5]}"#,
                "stds",
            ),
            (
                r#"{"means": [[0], [2]], "stds": [1, 1], "weights": [0.5, 0.6]}"#,
                "sum",
            ),
            (
                r#"{"means": [[0], [2]], "stds": [1, 0], "weights": [0.5, 0.5]}"#,
                "std",
            ),
            (
                r#"{"means": [], "stds": [], "weights": []}"#,
                "at least one",
            ),
            (
                r#"{"means": [[0]], "stds": [1], "weights": [1], "extra": 1}"#,
                "malformed",
            ),
            ("not json", "malformed"),
        ];
        for (text, needle) in cases {
            let reason = MixtureSpec::from_json(text).unwrap_err();
            assert!(reason.contains(needle), "{text}: {reason}");
            assert!(!reason.contains('\n'), "{reason}");
        }
    }
}
