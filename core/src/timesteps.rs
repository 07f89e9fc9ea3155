//! Choosing `N` inference timesteps out of `T` training steps.
//!
//! Leading, linspace and trailing are the spacings diffusers users know (`timestep_spacing`,
//! as `DDIMScheduler` defines them). Timesteps are written first to last (descending). The step
//! after timestep `i` goes to `timesteps[i + 1]`, and the last step goes to "no noise"
//! (alpha-bar = 1), which [`previous`] returns as `None`, as diffusers' `DDPMScheduler` and
//! `DPMSolverMultistepScheduler` do. diffusers' `DDIMScheduler` steps to `t - T / N` instead,
//! which is the same timestep for leading and trailing spacing when `N` divides `T` and differs
//! otherwise (and for linspace); ddm's rule is right for every spacing: no step is skipped or
//! taken twice and the last DDIM step always lands on clean data.
//!
//! [`Spacing::Given`] carries the timesteps themselves (diffusers' `timesteps=[...]`), for the
//! few-step samplers whose best timesteps are found by measurement, such as a distilled
//! student's; it holds at most [`MAX_GIVEN_STEPS`].

use crate::error::{Error, Result};
use crate::schedule::{Schedule, MIN_ALPHA_BAR};

/// Most timesteps a [`Spacing::Given`] holds.
pub const MAX_GIVEN_STEPS: usize = 16;

/// Inference timesteps given one by one: 1 to [`MAX_GIVEN_STEPS`] of them, strictly
/// descending (checked against a schedule's `T` where they are used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GivenTimesteps {
    len: u8,
    values: [u32; MAX_GIVEN_STEPS],
}

impl GivenTimesteps {
    /// The timesteps `values`, first to last.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `values` is empty, longer than [`MAX_GIVEN_STEPS`] or
    /// not strictly descending.
    pub const fn new(values: &[u32]) -> Result<Self> {
        if values.is_empty() || values.len() > MAX_GIVEN_STEPS {
            return Err(Error::InvalidParameter(
                "given timesteps must number 1 to 16",
            ));
        }
        let mut stored = [0; MAX_GIVEN_STEPS];
        let mut i = 0;
        while i < values.len() {
            if i > 0 && values[i] >= values[i - 1] {
                return Err(Error::InvalidParameter(
                    "given timesteps must be strictly descending",
                ));
            }
            stored[i] = values[i];
            i += 1;
        }
        Ok(GivenTimesteps {
            len: values.len() as u8,
            values: stored,
        })
    }

    /// The timesteps, first (noisiest) to last.
    pub fn as_slice(&self) -> &[u32] {
        &self.values[..usize::from(self.len)]
    }

    /// How many there are (`1..=MAX_GIVEN_STEPS`).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always `false`: there is at least one.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// How the inference timesteps are spread over `0..T`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Spacing {
    /// `t_i = i * (T / N) + steps_offset` (integer ratio), as in DDIM and Stable Diffusion.
    Leading,
    /// `round(linspace(0, T - 1, N))`, as in the original diffusers "linspace".
    Linspace,
    /// `round(T - i * T / N) - 1`: starts at `T - 1`, as recommended by Lin et al. 2023.
    Trailing,
    /// Uniform in half-log-SNR `lambda = ln(a_t / s_t)` from `T - 1` down to 0, each mapped to
    /// the nearest integer timestep (the "logSNR" skip type of the DPM-Solver paper). Small
    /// timesteps that would coincide are pushed apart by one. Best for few-step solvers on
    /// sharp data, where time-uniform spacings leave one large jump in lambda at the end.
    LogSnr,
    /// Exactly these timesteps (as many as the sampler's steps, each below `T`).
    Given(GivenTimesteps),
}

/// Writes `out.len()` inference timesteps (descending, first to last) for `schedule`.
/// `steps_offset` only applies to [`Spacing::Leading`].
///
/// Errors with [`Error::InvalidStepCount`] when `out` is empty, longer than the number of
/// training steps `T`, or the offset pushes a timestep to `T` or beyond, and for
/// [`Spacing::Given`] when `out` does not hold as many timesteps as given or one is `T` or
/// beyond.
pub fn fill_timesteps(
    schedule: &Schedule<'_>,
    spacing: Spacing,
    steps_offset: usize,
    out: &mut [u32],
) -> Result<()> {
    let train_steps = schedule.train_steps();
    let steps = out.len();
    let invalid = Error::InvalidStepCount { steps, train_steps };
    if steps == 0 || steps > train_steps || train_steps > u32::MAX as usize {
        return Err(invalid);
    }
    match spacing {
        Spacing::LogSnr => fill_log_snr(schedule, out),
        Spacing::Given(given) if given.len() == steps => out.copy_from_slice(given.as_slice()),
        Spacing::Given(_) => return Err(invalid),
        _ => {}
    }
    let count = steps as f64;
    let total = train_steps as f64;
    for (i, slot) in out.iter_mut().enumerate() {
        // `k` counts from the start of the ascending sequence for leading and linspace.
        let k = steps - 1 - i;
        let value = match spacing {
            Spacing::Leading => k * (train_steps / steps) + steps_offset,
            Spacing::Linspace => {
                let position = if steps > 1 {
                    k as f64 * (total - 1.0) / (count - 1.0)
                } else {
                    0.0
                };
                libm::rint(position) as usize
            }
            Spacing::Trailing => {
                let position = total - i as f64 * (total / count);
                (libm::rint(position) as usize).saturating_sub(1)
            }
            Spacing::LogSnr | Spacing::Given(_) => *slot as usize,
        };
        if value >= train_steps {
            return Err(invalid);
        }
        *slot = value as u32;
    }
    if out.windows(2).any(|w| w[1] >= w[0]) {
        return Err(invalid);
    }
    Ok(())
}

/// Half-log-SNR of step `t`, finite even at zero terminal SNR.
fn half_log_snr(schedule: &Schedule<'_>, t: usize) -> f64 {
    let alpha_bar = schedule
        .alpha_bar(t)
        .clamp(MIN_ALPHA_BAR, 1.0 - MIN_ALPHA_BAR);
    0.5 * libm::log(alpha_bar / (1.0 - alpha_bar))
}

/// Writes [`Spacing::LogSnr`] timesteps; `out` is non-empty and no longer than `T`.
fn fill_log_snr(schedule: &Schedule<'_>, out: &mut [u32]) {
    let last = schedule.train_steps() - 1;
    let steps = out.len();
    let (high, low) = (half_log_snr(schedule, 0), half_log_snr(schedule, last));
    // Ascending pass from the cleanest step: `floor` keeps timesteps distinct and the cap
    // leaves room for the steps still to place.
    let mut floor = 0usize;
    for j in 0..steps {
        let target = if steps == 1 {
            low
        } else {
            high + (low - high) * j as f64 / (steps - 1) as f64
        };
        // lambda is non-increasing in t: find the first t with lambda(t) <= target.
        let (mut lo, mut hi) = (0usize, last);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if half_log_snr(schedule, mid) > target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let nearest = if lo > 0
            && libm::fabs(half_log_snr(schedule, lo - 1) - target)
                < libm::fabs(half_log_snr(schedule, lo) - target)
        {
            lo - 1
        } else {
            lo
        };
        let t = nearest.max(floor).min(last + 1 + j - steps);
        out[steps - 1 - j] = t as u32;
        floor = t + 1;
    }
}

/// The timestep that step `index` of `timesteps` moves to: the next entry, or `None` (no noise,
/// alpha-bar = 1) after the last one.
pub fn previous(timesteps: &[u32], index: usize) -> Option<usize> {
    timesteps.get(index + 1).map(|&t| t as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::schedule::ScheduleConfig;
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    fn table(train_steps: usize) -> Vec<f32> {
        let mut table = vec![0.0f32; train_steps];
        ScheduleConfig {
            train_steps,
            ..ScheduleConfig::ddpm()
        }
        .fill_alphas_cumprod(&mut table)
        .unwrap();
        table
    }

    fn fill(train: usize, spacing: Spacing, offset: usize, out: &mut [u32]) -> Result<()> {
        let table = table(train);
        fill_timesteps(&Schedule::new(&table).unwrap(), spacing, offset, out)
    }

    fn timesteps<const N: usize>(train: usize, spacing: Spacing, offset: usize) -> [u32; N] {
        let mut out = [0u32; N];
        fill(train, spacing, offset, &mut out).unwrap();
        out
    }

    #[test]
    fn log_snr_is_uniform_in_lambda_and_distinct() {
        let table = table(1000);
        let schedule = Schedule::new(&table).unwrap();
        let ts = timesteps::<20>(1000, Spacing::LogSnr, 0);
        assert_eq!((ts[0], ts[19]), (999, 0));
        let lambdas: Vec<f64> = ts
            .iter()
            .map(|&t| half_log_snr(&schedule, t as usize))
            .collect();
        let step = (lambdas[19] - lambdas[0]) / 19.0;
        for w in lambdas.windows(2) {
            assert!((w[1] - w[0] - step).abs() < 0.35 * step, "{lambdas:?}");
        }
        // Many steps crowd the clean end: they stay distinct and descending.
        let mut many = [0u32; 400];
        fill(1000, Spacing::LogSnr, 0, &mut many).unwrap();
        assert!(many.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(timesteps::<1>(1000, Spacing::LogSnr, 0), [999]);
        // The cosine schedule's capped last beta makes lambda drop sharply at T - 1.
        let mut cosine = vec![0.0f32; 1000];
        ScheduleConfig {
            betas: crate::schedule::BetaSchedule::cosine(),
            ..ScheduleConfig::ddpm()
        }
        .fill_alphas_cumprod(&mut cosine)
        .unwrap();
        let cosine = Schedule::new(&cosine).unwrap();
        for steps in [2usize, 20, 1000] {
            let mut out = vec![0u32; steps];
            fill_timesteps(&cosine, Spacing::LogSnr, 0, &mut out).unwrap();
            assert_eq!(out[0], 999);
        }
    }

    #[test]
    fn leading_matches_diffusers() {
        assert_eq!(
            timesteps::<10>(1000, Spacing::Leading, 0),
            [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
        );
        assert_eq!(
            timesteps::<10>(1000, Spacing::Leading, 1),
            [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
        );
    }

    #[test]
    fn linspace_matches_diffusers() {
        // numpy: np.linspace(0, 999, 10).round()[::-1]
        assert_eq!(
            timesteps::<10>(1000, Spacing::Linspace, 0),
            [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
        );
    }

    #[test]
    fn trailing_matches_diffusers() {
        // numpy: np.round(np.arange(1000, 0, -1000 / 3)) - 1
        assert_eq!(timesteps::<3>(1000, Spacing::Trailing, 0), [999, 666, 332]);
        assert_eq!(
            timesteps::<10>(1000, Spacing::Trailing, 0),
            [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
        );
    }

    #[test]
    fn previous_lands_on_clean_data() {
        let ts = timesteps::<3>(1000, Spacing::Trailing, 0);
        assert_eq!(previous(&ts, 0), Some(666));
        assert_eq!(previous(&ts, 1), Some(332));
        assert_eq!(previous(&ts, 2), None);
    }

    #[test]
    fn rejects_impossible_requests() {
        let mut none: [u32; 0] = [];
        assert!(fill(1000, Spacing::Leading, 0, &mut none).is_err());
        let mut too_many = [0u32; 51];
        assert!(fill(50, Spacing::Linspace, 0, &mut too_many).is_err());
        assert!(fill(50, Spacing::LogSnr, 0, &mut too_many).is_err());
        let mut offset = [0u32; 10];
        assert!(fill(1000, Spacing::Leading, 100, &mut offset).is_err());
    }
}
