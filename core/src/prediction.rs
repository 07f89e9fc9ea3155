//! What the network predicts: the noise (eps), the clean data (x0) or the velocity (v).
//!
//! With `x_t = a x0 + s eps` and `a^2 + s^2 = 1`, the velocity is `v = a eps - s x0`
//! (Salimans & Ho 2022). Conversions are per element and take the signal and noise scales
//! `a = sqrt(alpha_bar_t)` and `s = sqrt(1 - alpha_bar_t)` of the timestep.

/// The quantity a denoising network outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Prediction {
    /// The added noise `eps` (DDPM).
    #[default]
    Eps,
    /// The clean sample `x0`.
    X0,
    /// The velocity `v = a eps - s x0`.
    V,
}

impl Prediction {
    /// Splits a model output at `x_t` into the implied `(x0, eps)`.
    ///
    /// `a` must be > 0 for [`Prediction::Eps`] and `s` > 0 for [`Prediction::X0`]; samplers
    /// never evaluate at `a = 0` (they use [`MIN_ALPHA_BAR`](crate::schedule::MIN_ALPHA_BAR)
    /// there) or at `s = 0`.
    #[inline]
    pub fn to_x0_eps(self, x_t: f32, output: f32, a: f32, s: f32) -> (f32, f32) {
        match self {
            Prediction::Eps => ((x_t - s * output) / a, output),
            Prediction::X0 => (output, (x_t - a * output) / s),
            Prediction::V => (a * x_t - s * output, s * x_t + a * output),
        }
    }

    /// The training target for this prediction type given the clean sample and the noise.
    #[inline]
    pub fn target(self, x0: f32, eps: f32, a: f32, s: f32) -> f32 {
        match self {
            Prediction::Eps => eps,
            Prediction::X0 => x0,
            Prediction::V => a * eps - s * x0,
        }
    }

    /// The output this prediction type gives for a known `(x0, eps)` pair.
    #[inline]
    pub fn from_x0_eps(self, x0: f32, eps: f32, a: f32, s: f32) -> f32 {
        self.target(x0, eps, a, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_every_type() {
        let (a, s) = (0.6f32, 0.8f32);
        let (x0, eps) = (0.3f32, -1.2f32);
        let x_t = a * x0 + s * eps;
        for kind in [Prediction::Eps, Prediction::X0, Prediction::V] {
            let output = kind.from_x0_eps(x0, eps, a, s);
            let (x0_back, eps_back) = kind.to_x0_eps(x_t, output, a, s);
            assert!((x0_back - x0).abs() < 1e-5, "{kind:?} x0");
            assert!((eps_back - eps).abs() < 1e-5, "{kind:?} eps");
        }
    }
}
