//! DPM-Solver++ 2M (Lu et al. 2022), multistep, data prediction.

use super::{check_step, denoise, validate_clip, validate_timesteps, Sampler, StepLevels};
use crate::error::{check_len, Result};
use crate::prediction::Prediction;
use crate::rng::Rng;
use crate::schedule::Schedule;

/// DPM-Solver++ 2M over half-log-SNR `lambda = ln(a / s)`:
/// `x_prev = (s_prev / s) x - a_prev (e^{-h} - 1) D` with `h = lambda_prev - lambda` and
/// `D = (1 + 1/(2r)) x0 - 1/(2r) x0_last`, `r = h_last / h`.
///
/// Lower order at the ends, as diffusers' `DPMSolverMultistepScheduler` with its defaults
/// (`solver_order=2`, `solver_type="midpoint"`, `lower_order_final=True`,
/// `final_sigmas_type="zero"`): the first step is first order (`D = x0`, no history yet), and
/// so is the final step onto clean data (`h` is infinite there and the update is `x = x0`);
/// every step between them is second order.
///
/// [`DpmSolverPp2m::with_first_order_penultimate`] also takes the step into the smallest
/// timestep at first order (ddm's behaviour before it matched diffusers).
#[derive(Debug)]
pub struct DpmSolverPp2m<'a> {
    schedule: Schedule<'a>,
    timesteps: &'a [u32],
    prediction: Prediction,
    clip_sample: Option<f32>,
    previous_x0: &'a mut [f32],
    previous_h: Option<f64>,
    first_order_penultimate: bool,
    index: usize,
}

impl<'a> DpmSolverPp2m<'a> {
    /// A DPM-Solver++ 2M sampler. `previous_x0` is scratch for the last x0 estimate and must be
    /// as long as the sample.
    pub fn new(
        schedule: Schedule<'a>,
        timesteps: &'a [u32],
        prediction: Prediction,
        clip_sample: Option<f32>,
        previous_x0: &'a mut [f32],
    ) -> Result<Self> {
        validate_timesteps(&schedule, timesteps)?;
        validate_clip(clip_sample)?;
        Ok(DpmSolverPp2m {
            schedule,
            timesteps,
            prediction,
            clip_sample,
            previous_x0,
            previous_h: None,
            first_order_penultimate: false,
            index: 0,
        })
    }

    /// Takes the step into the smallest timestep (the second to last) at first order too.
    pub fn with_first_order_penultimate(mut self, first_order: bool) -> Self {
        self.first_order_penultimate = first_order;
        self
    }
}

impl Sampler for DpmSolverPp2m<'_> {
    fn timestep(&self) -> Option<u32> {
        self.timesteps.get(self.index).copied()
    }

    fn step(&mut self, x: &mut [f32], output: &[f32], _rng: &mut Rng) -> Result<()> {
        check_step(x, output, self.index, self.timesteps.len())?;
        check_len("DPM-Solver++ scratch", x.len(), self.previous_x0.len())?;
        let levels = StepLevels::new(&self.schedule, self.timesteps, self.index);
        let (a, s) = (levels.a as f32, levels.s as f32);
        let (prediction, clip) = (self.prediction, self.clip_sample);

        if levels.is_last && levels.alpha_bar_prev >= 1.0 {
            // Landing on clean data: the first-order update degenerates to x = x0.
            for (value, &out) in x.iter_mut().zip(output) {
                *value = denoise(prediction, clip, *value, out, a, s).0;
            }
        } else {
            let lambda = libm::log(levels.a / levels.s);
            let lambda_prev = libm::log(levels.a_prev / levels.s_prev);
            let h = lambda_prev - lambda;
            let x_coefficient = (levels.s_prev / levels.s) as f32;
            let d_coefficient = (-levels.a_prev * libm::expm1(-h)) as f32;
            // Weights of x0 and x0_last in D (first order without history).
            let first_order =
                self.first_order_penultimate && self.index + 2 == self.timesteps.len();
            let (w_now, w_last) = match self.previous_h {
                Some(h_last) if !first_order => {
                    let half_inv_r = h / (2.0 * h_last);
                    ((1.0 + half_inv_r) as f32, half_inv_r as f32)
                }
                _ => (1.0, 0.0),
            };
            for ((value, &out), last) in x.iter_mut().zip(output).zip(self.previous_x0.iter_mut()) {
                let x0 = denoise(prediction, clip, *value, out, a, s).0;
                let d = w_now * x0 - w_last * *last;
                *value = x_coefficient * *value + d_coefficient * d;
                *last = x0;
            }
            self.previous_h = Some(h);
        }
        self.index += 1;
        Ok(())
    }

    fn num_steps(&self) -> usize {
        self.timesteps.len()
    }

    fn steps_taken(&self) -> usize {
        self.index
    }
}
