//! Per-timestep weights of the training loss `w(t) |target - output|^2`.
//!
//! All weights are defined on the eps-prediction loss and converted to the loss of the chosen
//! prediction type, using `|eps err|^2 = SNR |x0 err|^2 = alpha_bar |v err|^2`, so every
//! prediction type optimises the same objective.

use crate::prediction::Prediction;
use crate::schedule::Schedule;

/// Which variance `rho_t^2` of the reverse step the ELBO weight assumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ReverseVariance {
    /// `rho_t^2 = beta_t` ("fixed large", DDPM's choice for training). Simplifies the weight to
    /// `beta_t / (2 (1 - beta_t)(1 - alpha_bar_t))`.
    #[default]
    Beta,
    /// `rho_t^2` = the posterior variance ("fixed small"); at `t = 0`, where it vanishes, the
    /// weight falls back to `rho_0^2 = beta_0` (the decoder term).
    Posterior,
}

/// A training loss weighting.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LossWeighting {
    /// `w = 1` on the chosen prediction type's loss (DDPM's "simple" loss when predicting eps).
    #[default]
    Simple,
    /// The variational bound's weight on the eps loss:
    /// `beta_t^2 / (2 rho_t^2 (1 - beta_t)(1 - alpha_bar_t))`.
    Elbo(ReverseVariance),
    /// Min-SNR-gamma (Hang et al. 2023): `min(SNR, gamma)` on the x0 loss.
    MinSnr {
        /// The clamp, typically 5.
        gamma: f32,
    },
    /// `w = 1` on the eps loss whatever the network predicts: denoising score matching with
    /// NCSN's `lambda(sigma) = sigma^2` (Song & Ermon 2019), since
    /// `sigma^2 |s + z / sigma|^2 = |eps - z|^2` for the score `s = -eps / sigma`. For an eps
    /// network the same as [`Simple`](Self::Simple); for a v network (on a variance-exploding
    /// schedule, EDM's preconditioned output with `sigma_data = 1`) `alpha_bar` on the v loss.
    Ncsn,
}

impl LossWeighting {
    /// The weight of timestep `t` for a network that predicts `prediction`.
    pub fn weight(self, schedule: &Schedule<'_>, t: usize, prediction: Prediction) -> f32 {
        let alpha_bar = schedule.alpha_bar(t);
        let snr = schedule.snr(t);
        // Factor that turns a weight on the eps loss into one on this prediction's loss.
        let eps_to_prediction = match prediction {
            Prediction::Eps => 1.0,
            Prediction::X0 => snr,
            Prediction::V => alpha_bar,
        };
        let weight = match self {
            LossWeighting::Simple => return 1.0,
            LossWeighting::Ncsn => eps_to_prediction,
            LossWeighting::Elbo(variance) => {
                let beta = schedule.beta(t);
                let rho_sq = match variance {
                    ReverseVariance::Posterior if t > 0 => schedule.posterior_variance(t),
                    _ => beta,
                };
                beta * beta / (2.0 * rho_sq * (1.0 - beta) * (1.0 - alpha_bar)) * eps_to_prediction
            }
            LossWeighting::MinSnr { gamma } => {
                // min(SNR, gamma) on the x0 loss is min(SNR, gamma) / SNR on the eps loss.
                let clamped = snr.min(f64::from(gamma));
                match prediction {
                    Prediction::Eps => clamped / snr,
                    Prediction::X0 => clamped,
                    Prediction::V => clamped / (snr + 1.0),
                }
            }
        };
        weight as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleConfig;

    #[test]
    fn weights_follow_their_definitions() {
        let mut table = [0.0f32; 1000];
        ScheduleConfig::ddpm()
            .fill_alphas_cumprod(&mut table)
            .unwrap();
        let schedule = Schedule::new(&table).unwrap();
        let t = 300;
        let beta = schedule.beta(t);
        let elbo = LossWeighting::Elbo(ReverseVariance::Beta).weight(&schedule, t, Prediction::Eps);
        let expected = beta / (2.0 * (1.0 - beta) * (1.0 - schedule.alpha_bar(t)));
        assert!((f64::from(elbo) - expected).abs() < 1e-6);

        // The same objective expressed on x0 and v.
        let on_x0 = LossWeighting::Elbo(ReverseVariance::Beta).weight(&schedule, t, Prediction::X0);
        assert!((f64::from(on_x0) - expected * schedule.snr(t)).abs() < 1e-5);

        let gamma = 5.0;
        let min_snr = LossWeighting::MinSnr { gamma };
        // Low t: SNR is huge, the eps weight is gamma / SNR; high t: SNR < gamma, weight 1.
        let low = min_snr.weight(&schedule, 0, Prediction::Eps);
        assert!((f64::from(low) - 5.0 / schedule.snr(0)).abs() < 1e-6);
        assert_eq!(min_snr.weight(&schedule, 900, Prediction::Eps), 1.0);
        assert_eq!(min_snr.weight(&schedule, 0, Prediction::X0), 5.0);
        assert_eq!(
            LossWeighting::Simple.weight(&schedule, 10, Prediction::V),
            1.0
        );
        // The posterior variance is below beta, so its ELBO weight is larger; t = 0 stays finite.
        let posterior = LossWeighting::Elbo(ReverseVariance::Posterior);
        let large = LossWeighting::Elbo(ReverseVariance::Beta);
        assert!(posterior.weight(&schedule, 0, Prediction::Eps).is_finite());
        assert!(
            posterior.weight(&schedule, 500, Prediction::Eps)
                > large.weight(&schedule, 500, Prediction::Eps)
        );
    }
}
