//! The probability flow ODE of the variance-exploding SDE, solved with Heun's method (Song et
//! al. 2021; the second-order sampler of Karras et al. 2022, "Elucidating the Design Space").

use super::predictor_corrector::ve_levels;
use super::{validate_clip, validate_timesteps, Sampler};
use crate::error::{check_len, Error, Result};
use crate::prediction::Prediction;
use crate::rng::Rng;
use crate::schedule::Schedule;

/// Deterministic sampling along the probability flow `dy / dsigma = -sigma score(y, sigma) =
/// eps(y, sigma)` of the variance-exploding sample `y = x0 + sigma_t z`, over timesteps
/// `t_0 > t_1 > ...` of a schedule (`sigma_t = s_t / a_t`). As for
/// [`PredictorCorrector`](super::PredictorCorrector), the state the caller holds and the
/// network's input is `x_t = a_t y`, starting from `x ~ N(0, I)`.
///
/// Each step from `sigma` to the next timestep's `sigma'` is a Heun step: an Euler step
/// `y' = y + (sigma' - sigma) eps(y, sigma)`, then the correction
/// `y <- y + (sigma' - sigma) (eps(y, sigma) + eps(y', sigma')) / 2`. The last step, to
/// `sigma = 0`, is Euler's alone: `y - sigma eps`, the x0 estimate, clamped when
/// [`with_clip_sample`](Self::with_clip_sample) sets a radius. `N` timesteps take `2N - 1`
/// network evaluations. The first slope waits in the caller's scratch (one element per
/// element of `x`). No noise is drawn.
#[derive(Debug)]
pub struct ProbabilityFlowHeun<'a> {
    schedule: Schedule<'a>,
    timesteps: &'a [u32],
    prediction: Prediction,
    slope: &'a mut [f32],
    clip_sample: Option<f32>,
    index: usize,
    correcting: bool,
}

impl<'a> ProbabilityFlowHeun<'a> {
    /// A sampler over `timesteps` (strictly decreasing, below `T`, each with `alpha_bar < 1`)
    /// for a network predicting `prediction`, keeping the first slope of each step in
    /// `scratch`, which must have the length of the samples given to [`step`](Sampler::step).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for invalid timesteps.
    pub fn new(
        schedule: Schedule<'a>,
        timesteps: &'a [u32],
        prediction: Prediction,
        scratch: &'a mut [f32],
    ) -> Result<Self> {
        validate_timesteps(&schedule, timesteps)?;
        Ok(ProbabilityFlowHeun {
            schedule,
            timesteps,
            prediction,
            slope: scratch,
            clip_sample: None,
            index: 0,
            correcting: false,
        })
    }

    /// Clamps the final x0 estimate to `[-r, r]` (`None`: no clamp).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `r` is not positive and finite.
    pub fn with_clip_sample(mut self, clip_sample: Option<f32>) -> Result<Self> {
        validate_clip(clip_sample)?;
        self.clip_sample = clip_sample;
        Ok(self)
    }
}

impl Sampler for ProbabilityFlowHeun<'_> {
    fn timestep(&self) -> Option<u32> {
        // While correcting, the network is evaluated at the step's target timestep.
        self.timesteps
            .get(self.index + usize::from(self.correcting))
            .copied()
    }

    fn step(&mut self, x: &mut [f32], output: &[f32], _rng: &mut Rng) -> Result<()> {
        let t = self.timestep().ok_or(Error::Finished)?;
        check_len("network output", x.len(), output.len())?;
        check_len("scratch", x.len(), self.slope.len())?;
        let (a, s, _) = ve_levels(&self.schedule, Some(t));
        let (a32, s32) = (a as f32, s as f32);
        let prediction = self.prediction;
        let start = Some(self.timesteps[self.index]);
        let next = self.timesteps.get(self.index + 1).copied();
        let (_, _, sigma) = ve_levels(&self.schedule, start);
        let (a_next, _, sigma_next) = ve_levels(&self.schedule, next);
        let h = sigma_next - sigma;
        if self.correcting {
            // At t' = next: x' = a' y' holds the Euler step; x <- x' + a' h (eps2 - eps1) / 2.
            let half = (0.5 * a_next * h) as f32;
            for ((value, &o), &first) in x.iter_mut().zip(output).zip(self.slope.iter()) {
                let eps = prediction.to_x0_eps(*value, o, a32, s32).1;
                *value += half * (eps - first);
            }
            self.correcting = false;
            self.index += 1;
            return Ok(());
        }
        // x' = a' (y + h eps) = (a' / a) x + a' h eps.
        let (keep, drift) = ((a_next / a) as f32, (a_next * h) as f32);
        let last = next.is_none();
        for ((value, &o), first) in x.iter_mut().zip(output).zip(self.slope.iter_mut()) {
            let eps = prediction.to_x0_eps(*value, o, a32, s32).1;
            *first = eps;
            *value = keep * *value + drift * eps;
            if last {
                if let Some(radius) = self.clip_sample {
                    *value = value.clamp(-radius, radius);
                }
            }
        }
        if last {
            self.index += 1;
        } else {
            self.correcting = true;
        }
        Ok(())
    }

    fn num_steps(&self) -> usize {
        2 * self.timesteps.len() - 1
    }

    fn steps_taken(&self) -> usize {
        // The last timestep takes one call, not two.
        (2 * self.index + usize::from(self.correcting)).min(self.num_steps())
    }
}
