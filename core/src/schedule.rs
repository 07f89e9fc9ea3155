//! Noise schedules and the per-step quantities derived from them.
//!
//! A schedule over `T` training steps is fully described by its cumulative products
//! `alpha_bar_t = prod_{i <= t} (1 - beta_i)` for `t = 0..T` (index 0 is the first noising
//! step). [`ScheduleConfig::fill_alphas_cumprod`] computes them in `f64` and stores them as
//! `f32` in a caller buffer; [`Schedule`] borrows that table and derives everything else.

use crate::error::{check_len, Error, Result};
use crate::noise_levels::NoiseLevels;

/// The shape of `beta_t` over the training steps.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BetaSchedule {
    /// DDPM's linear betas. `beta_start` / `beta_end` are given for `T = 1000` and scaled by
    /// `1000 / T` for other lengths (as in improved-diffusion), so the total noise is similar.
    Linear {
        /// First beta at `T = 1000` (default 1e-4).
        beta_start: f64,
        /// Last beta at `T = 1000` (default 0.02).
        beta_end: f64,
    },
    /// Betas linear in `sqrt(beta)` (Stable Diffusion's "scaled_linear"), not scaled with `T`.
    ScaledLinear {
        /// First beta (default 0.00085).
        beta_start: f64,
        /// Last beta (default 0.012).
        beta_end: f64,
    },
    /// The cosine schedule of improved DDPM: `alpha_bar(t) = cos^2((t/T + s)/(1 + s) * pi/2)`,
    /// betas capped at `max_beta`.
    Cosine {
        /// Offset `s` (default 0.008).
        s: f64,
        /// Cap on beta (default 0.999).
        max_beta: f64,
    },
    /// `beta_t = sigmoid(-6 + 12 t/(T-1)) * (beta_end - beta_start) + beta_start`.
    Sigmoid {
        /// Lower asymptote (default 1e-4).
        beta_start: f64,
        /// Upper asymptote (default 0.02).
        beta_end: f64,
    },
    /// The variance-exploding perturbation `x0 + sigma z` of score-based models over the
    /// geometric [`NoiseLevels`] `sigma_t` from `sigma_min` (`t = 0`) to `sigma_max`
    /// (`t = T - 1`), as a variance-preserving schedule: `alpha_bar_t = 1 / (1 + sigma_t^2)`,
    /// so `x_t = a_t x0 + s_t z = a_t (x0 + sigma_t z)` and [`Schedule::ve_sigma`] is
    /// `sigma_t`. A network trained on it with the eps loss learns the noise-conditional score
    /// `-eps(a_t x, t) / sigma_t` by denoising score matching with NCSN's weight `sigma^2`;
    /// the input scaling `a_t` keeps its inputs in the data's range at every level.
    VarianceExploding {
        /// The smallest noise level (NCSN: 0.01), at least [`MIN_VE_SIGMA`].
        sigma_min: f64,
        /// The largest (NCSNv2: about the largest distance between two training points).
        sigma_max: f64,
    },
}

impl BetaSchedule {
    /// Linear with DDPM's defaults (1e-4 .. 0.02 at `T = 1000`).
    pub const fn linear() -> Self {
        BetaSchedule::Linear {
            beta_start: 1e-4,
            beta_end: 0.02,
        }
    }

    /// Scaled-linear with Stable Diffusion's defaults (0.00085 .. 0.012).
    pub const fn scaled_linear() -> Self {
        BetaSchedule::ScaledLinear {
            beta_start: 0.000_85,
            beta_end: 0.012,
        }
    }

    /// Cosine with improved DDPM's defaults (`s = 0.008`, beta capped at 0.999).
    pub const fn cosine() -> Self {
        BetaSchedule::Cosine {
            s: 0.008,
            max_beta: 0.999,
        }
    }

    /// Sigmoid between 1e-4 and 0.02.
    pub const fn sigmoid() -> Self {
        BetaSchedule::Sigmoid {
            beta_start: 1e-4,
            beta_end: 0.02,
        }
    }

    /// `beta_t` for `t` in `0..train_steps`, in `f64`.
    pub fn beta(&self, t: usize, train_steps: usize) -> f64 {
        let steps = train_steps as f64;
        // Position along the schedule in [0, 1]; a single-step schedule sits at 0.
        let fraction = if train_steps > 1 {
            t as f64 / (steps - 1.0)
        } else {
            0.0
        };
        match *self {
            BetaSchedule::Linear {
                beta_start,
                beta_end,
            } => {
                let scale = 1000.0 / steps;
                let (start, end) = (scale * beta_start, scale * beta_end);
                start + (end - start) * fraction
            }
            BetaSchedule::ScaledLinear {
                beta_start,
                beta_end,
            } => {
                let (start, end) = (libm::sqrt(beta_start), libm::sqrt(beta_end));
                let root = start + (end - start) * fraction;
                root * root
            }
            BetaSchedule::Cosine { s, max_beta } => {
                let alpha_bar = |u: f64| {
                    let c = libm::cos((u / steps + s) / (1.0 + s) * core::f64::consts::FRAC_PI_2);
                    c * c
                };
                let beta = 1.0 - alpha_bar(t as f64 + 1.0) / alpha_bar(t as f64);
                beta.min(max_beta)
            }
            BetaSchedule::Sigmoid {
                beta_start,
                beta_end,
            } => {
                let z = -6.0 + 12.0 * fraction;
                let sigmoid = 1.0 / (1.0 + libm::exp(-z));
                sigmoid * (beta_end - beta_start) + beta_start
            }
            BetaSchedule::VarianceExploding { .. } => {
                // 1 - alpha_bar_t / alpha_bar_{t-1} = (sigma_t^2 - sigma_{t-1}^2) / (1 + sigma_t^2);
                // NaN for sigmas that `validate` refuses.
                let Some(levels) = self.noise_levels(train_steps) else {
                    return f64::NAN;
                };
                let sigma = levels.sigma(t);
                let before = if t == 0 { 0.0 } else { levels.sigma(t - 1) };
                (sigma * sigma - before * before) / (1.0 + sigma * sigma)
            }
        }
    }

    /// The noise levels of a [`VarianceExploding`](BetaSchedule::VarianceExploding) schedule
    /// over `train_steps` steps (`None` for the other shapes, or invalid sigmas).
    pub fn noise_levels(&self, train_steps: usize) -> Option<NoiseLevels> {
        match *self {
            BetaSchedule::VarianceExploding {
                sigma_min,
                sigma_max,
            } if self.validate().is_ok() => ve_levels(sigma_min, sigma_max, train_steps),
            _ => None,
        }
    }

    fn validate(&self) -> Result<()> {
        let ok = match *self {
            BetaSchedule::Linear {
                beta_start,
                beta_end,
            }
            | BetaSchedule::ScaledLinear {
                beta_start,
                beta_end,
            }
            | BetaSchedule::Sigmoid {
                beta_start,
                beta_end,
            } => beta_start > 0.0 && beta_end >= beta_start && beta_end < 1.0,
            BetaSchedule::Cosine { s, max_beta } => s >= 0.0 && max_beta > 0.0 && max_beta <= 1.0,
            BetaSchedule::VarianceExploding {
                sigma_min,
                sigma_max,
            } => sigma_min >= MIN_VE_SIGMA && sigma_max > sigma_min && sigma_max.is_finite(),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidParameter(
                "beta schedule bounds must satisfy 0 < start <= end < 1 (cosine: s >= 0, \
                 0 < max_beta <= 1; variance exploding: 1e-3 <= sigma_min < sigma_max, finite)",
            ))
        }
    }
}

/// The smallest `sigma_min` of a variance-exploding schedule: level 0's `alpha_bar =
/// 1 / (1 + sigma^2)` keeps about three significant digits of `1 - alpha_bar` in `f32` (below
/// `1.7e-4` it rounds to 1, a timestep no sampler can take).
pub const MIN_VE_SIGMA: f64 = 1e-3;

/// `train_steps` geometric levels from `sigma_min` to `sigma_max` (one step: `sigma_max`);
/// `None` for invalid sigmas, no steps or more than `u32::MAX`.
fn ve_levels(sigma_min: f64, sigma_max: f64, train_steps: usize) -> Option<NoiseLevels> {
    let count = u32::try_from(train_steps).ok()?;
    let levels = if count == 1 {
        NoiseLevels::new(sigma_max, sigma_max, 1)
    } else {
        NoiseLevels::new(sigma_min, sigma_max, count)
    };
    levels.ok()
}

/// A complete schedule description: the beta shape, the number of training steps and whether
/// to rescale it to zero terminal SNR.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ScheduleConfig {
    /// Shape of the betas.
    pub betas: BetaSchedule,
    /// Number of training steps `T` (at least 2 with zero-SNR rescaling, at least 1 otherwise).
    pub train_steps: usize,
    /// Rescale `sqrt(alpha_bar)` so that the last step has exactly zero SNR (Lin et al. 2023,
    /// Algorithm 1): shift so the last value is 0, scale so the first is unchanged.
    pub zero_terminal_snr: bool,
}

impl ScheduleConfig {
    /// DDPM's default: linear betas over 1000 steps.
    pub const fn ddpm() -> Self {
        ScheduleConfig {
            betas: BetaSchedule::linear(),
            train_steps: 1000,
            zero_terminal_snr: false,
        }
    }

    /// Writes `alpha_bar_t` for `t = 0..T` into `out` (which must have `T` elements).
    ///
    /// The products are accumulated in `f64` and rounded once to `f32`. With zero-terminal-SNR
    /// rescaling the last entry is exactly `0.0`.
    pub fn fill_alphas_cumprod(&self, out: &mut [f32]) -> Result<()> {
        let steps = self.train_steps;
        check_len("alphas_cumprod", steps, out.len())?;
        if steps == 0 || (self.zero_terminal_snr && steps < 2) {
            return Err(Error::InvalidParameter(
                "train_steps must be >= 1 (>= 2 with zero-terminal-SNR)",
            ));
        }
        self.betas.validate()?;
        if self.zero_terminal_snr && matches!(self.betas, BetaSchedule::VarianceExploding { .. }) {
            return Err(Error::InvalidParameter(
                "zero-terminal-SNR rescaling does not apply to a variance-exploding schedule",
            ));
        }
        if (0..steps).any(|t| !(0.0..=1.0).contains(&self.betas.beta(t, steps))) {
            return Err(Error::InvalidParameter(
                "betas leave [0, 1] for this many training steps (linear betas scale with 1000 / T)",
            ));
        }
        let cumprod = |out: &mut [f32], rescale: Option<(f64, f64)>| {
            let mut product = 1.0f64;
            for (t, slot) in out.iter_mut().enumerate() {
                product *= 1.0 - self.betas.beta(t, steps);
                let value = match rescale {
                    None => product,
                    Some((first, last)) => {
                        let root = (libm::sqrt(product) - last) * first / (first - last);
                        root * root
                    }
                };
                *slot = value as f32;
            }
            product
        };
        if self.zero_terminal_snr {
            let first = libm::sqrt(1.0 - self.betas.beta(0, steps));
            let last = libm::sqrt(cumprod(out, None));
            if first <= last {
                return Err(Error::InvalidParameter(
                    "zero-terminal-SNR needs alpha_bar to decrease over the schedule",
                ));
            }
            cumprod(out, Some((first, last)));
        } else {
            cumprod(out, None);
        }
        Ok(())
    }

    /// Writes the betas `beta_t` for `t = 0..T` into `out`, as implied by
    /// [`fill_alphas_cumprod`](Self::fill_alphas_cumprod) (so zero-SNR rescaling is included).
    pub fn fill_betas(&self, out: &mut [f32]) -> Result<()> {
        self.fill_alphas_cumprod(out)?;
        betas_from_alphas_cumprod(out);
        Ok(())
    }
}

/// Writes `alpha_bar` for user-given betas into `out` (same length as `betas`).
/// Every beta must lie in `[0, 1]`.
pub fn alphas_cumprod_from_betas(betas: &[f32], out: &mut [f32]) -> Result<()> {
    check_len("alphas_cumprod", betas.len(), out.len())?;
    if betas.is_empty() || betas.iter().any(|b| !(0.0..=1.0).contains(b)) {
        return Err(Error::InvalidParameter(
            "user betas must be non-empty and lie in [0, 1]",
        ));
    }
    let mut product = 1.0f64;
    for (beta, slot) in betas.iter().zip(out.iter_mut()) {
        product *= 1.0 - f64::from(*beta);
        *slot = product as f32;
    }
    Ok(())
}

/// Converts a table of `alpha_bar` into betas in place.
fn betas_from_alphas_cumprod(table: &mut [f32]) {
    let mut previous = 1.0f64;
    for slot in table.iter_mut() {
        let current = f64::from(*slot);
        *slot = (1.0 - current / previous) as f32;
        previous = current;
    }
}

/// What the samplers use in place of `alpha_bar = 0`, the last step of a zero-terminal-SNR
/// schedule (they divide by `sqrt(alpha_bar)`): `2^-24`, the value diffusers substitutes
/// there. Any positive `alpha_bar`, however small, is used as it is.
pub const MIN_ALPHA_BAR: f64 = 1.0 / 16_777_216.0;

/// `alpha_bar`, or [`MIN_ALPHA_BAR`] in place of 0: the level a sampler divides by.
pub fn nonzero_alpha_bar(alpha_bar: f64) -> f64 {
    if alpha_bar > 0.0 {
        alpha_bar
    } else {
        MIN_ALPHA_BAR
    }
}

/// A borrowed schedule: `alpha_bar_t` for `t = 0..T` and everything derived from it.
///
/// Timestep indices are `0..T`; querying `t >= T` returns the last step's value
/// (use [`Schedule::train_steps`] to stay in range). `alpha_bar` of "before step 0" is 1.
///
/// The table is borrowed either as `f32` values ([`Schedule::new`]) or, without copying, as
/// the little-endian bytes a model blob stores at any alignment ([`Schedule::from_le_bytes`]);
/// both give the same values bit for bit.
#[derive(Debug, Clone, Copy)]
pub struct Schedule<'a> {
    table: Table<'a>,
}

/// Where a [`Schedule`]'s `alpha_bar` values live.
#[derive(Debug, Clone, Copy)]
enum Table<'a> {
    /// `f32` values.
    F32(&'a [f32]),
    /// Little-endian `f32` bit patterns, 4 bytes per value, at any alignment.
    LeBytes(&'a [u8]),
}

impl<'a> Schedule<'a> {
    /// Wraps a table of `alpha_bar` values, which must be non-empty, lie in `[0, 1]` and be
    /// non-increasing.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the table is empty, out of range or increasing.
    pub fn new(alphas_cumprod: &'a [f32]) -> Result<Self> {
        Schedule {
            table: Table::F32(alphas_cumprod),
        }
        .validated()
    }

    /// Wraps a table of `alpha_bar` values stored as little-endian `f32`s (4 bytes each, any
    /// alignment), read in place: a model blob's table in flash needs no copy in RAM. Same
    /// conditions as [`Schedule::new`].
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the length is not a multiple of 4, or the values are
    /// empty, out of range or increasing.
    pub fn from_le_bytes(alphas_cumprod: &'a [u8]) -> Result<Self> {
        if !alphas_cumprod.len().is_multiple_of(4) {
            return Err(Error::InvalidParameter(
                "alphas_cumprod bytes must be a multiple of 4 long",
            ));
        }
        Schedule {
            table: Table::LeBytes(alphas_cumprod),
        }
        .validated()
    }

    fn validated(self) -> Result<Self> {
        let steps = self.train_steps();
        let in_range = (0..steps).all(|t| (0.0..=1.0).contains(&self.value(t)));
        let monotone = (1..steps).all(|t| self.value(t) <= self.value(t - 1));
        if steps == 0 || !in_range || !monotone {
            return Err(Error::InvalidParameter(
                "alphas_cumprod must be non-empty, in [0, 1] and non-increasing",
            ));
        }
        Ok(self)
    }

    /// The stored `alpha_bar_t` for `t < T`.
    fn value(&self, t: usize) -> f32 {
        match self.table {
            Table::F32(values) => values[t],
            Table::LeBytes(bytes) => {
                let at = 4 * t;
                f32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
            }
        }
    }

    /// Number of training steps `T`.
    pub fn train_steps(&self) -> usize {
        match self.table {
            Table::F32(values) => values.len(),
            Table::LeBytes(bytes) => bytes.len() / 4,
        }
    }

    fn index(&self, t: usize) -> usize {
        t.min(self.train_steps() - 1)
    }

    /// `alpha_bar_t`.
    pub fn alpha_bar(&self, t: usize) -> f64 {
        f64::from(self.value(self.index(t)))
    }

    /// `alpha_bar` at an optional timestep: `None` means "no noise at all" (alpha-bar = 1),
    /// the level a sampler's final step lands on.
    pub fn alpha_bar_at(&self, t: Option<usize>) -> f64 {
        t.map_or(1.0, |t| self.alpha_bar(t))
    }

    /// `alpha_bar_{t-1}` (1 for `t = 0`).
    pub fn alpha_bar_prev(&self, t: usize) -> f64 {
        let t = self.index(t);
        if t == 0 {
            1.0
        } else {
            self.alpha_bar(t - 1)
        }
    }

    /// `beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}`.
    pub fn beta(&self, t: usize) -> f64 {
        let previous = self.alpha_bar_prev(t);
        if previous == 0.0 {
            1.0
        } else {
            1.0 - self.alpha_bar(t) / previous
        }
    }

    /// `a_t = sqrt(alpha_bar_t)`, the signal scale.
    pub fn signal(&self, t: usize) -> f64 {
        libm::sqrt(self.alpha_bar(t))
    }

    /// `s_t = sqrt(1 - alpha_bar_t)`, the noise scale.
    pub fn noise(&self, t: usize) -> f64 {
        libm::sqrt(1.0 - self.alpha_bar(t))
    }

    /// Signal-to-noise ratio `alpha_bar_t / (1 - alpha_bar_t)` (infinite when `alpha_bar = 1`).
    pub fn snr(&self, t: usize) -> f64 {
        let alpha_bar = self.alpha_bar(t);
        alpha_bar / (1.0 - alpha_bar)
    }

    /// `ln SNR_t` (`-inf` at zero terminal SNR).
    pub fn log_snr(&self, t: usize) -> f64 {
        libm::log(self.snr(t))
    }

    /// Variance of the posterior `q(x_{t-1} | x_t, x_0)`:
    /// `beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)` (0 at `t = 0`).
    pub fn posterior_variance(&self, t: usize) -> f64 {
        let alpha_bar = self.alpha_bar(t);
        if alpha_bar >= 1.0 {
            return 0.0;
        }
        self.beta(t) * (1.0 - self.alpha_bar_prev(t)) / (1.0 - alpha_bar)
    }

    /// The variance-exploding noise level of step `t`: `sigma_t = s_t / a_t`, so that
    /// `x_t / a_t = x_0 + sigma_t e`.
    pub fn ve_sigma(&self, t: usize) -> f64 {
        let alpha_bar = nonzero_alpha_bar(self.alpha_bar(t));
        libm::sqrt((1.0 - alpha_bar) / alpha_bar)
    }

    /// The timestep whose [`ve_sigma`](Self::ve_sigma) is nearest to `sigma` in log space.
    pub fn timestep_for_ve_sigma(&self, sigma: f64) -> usize {
        let target = libm::log(sigma.max(f64::MIN_POSITIVE));
        // ve_sigma is non-decreasing in t: binary search the first t with sigma_t >= sigma.
        let (mut low, mut high) = (0usize, self.train_steps());
        while low < high {
            let mid = low + (high - low) / 2;
            if self.ve_sigma(mid) < sigma {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        let candidates = [low.saturating_sub(1), low.min(self.train_steps() - 1)];
        let distance = |t: usize| libm::fabs(libm::log(self.ve_sigma(t)) - target);
        if distance(candidates[0]) <= distance(candidates[1]) {
            candidates[0]
        } else {
            candidates[1]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(config: ScheduleConfig) -> [f32; 1000] {
        let mut out = [0.0f32; 1000];
        config.fill_alphas_cumprod(&mut out).unwrap();
        out
    }

    #[test]
    fn variance_exploding_is_the_geometric_sigmas_scaled_into_the_unit_variance() {
        let betas = BetaSchedule::VarianceExploding {
            sigma_min: 0.01,
            sigma_max: 50.0,
        };
        let config = ScheduleConfig {
            betas,
            train_steps: 1000,
            zero_terminal_snr: false,
        };
        let alphas = table(config);
        let schedule = Schedule::new(&alphas).unwrap();
        let levels = betas.noise_levels(1000).unwrap();
        assert_eq!(
            (levels.sigma_min(), levels.sigma_max(), levels.len()),
            (0.01, 50.0, 1000)
        );
        for t in [0usize, 1, 333, 998, 999] {
            let sigma = levels.sigma(t);
            let expected = 1.0 / (1.0 + sigma * sigma);
            assert!(
                (f64::from(alphas[t]) - expected).abs() <= 1e-7 * expected,
                "{t}: {} vs {expected}",
                alphas[t]
            );
            // The table's sigma, from an f32 alpha_bar, within 1e-3 of the level's.
            let relative = (schedule.ve_sigma(t) - sigma).abs() / sigma;
            assert!(relative < 1e-3, "{t}: {relative}");
        }
        assert!(BetaSchedule::linear().noise_levels(1000).is_none());
        let one = BetaSchedule::VarianceExploding {
            sigma_min: 0.5,
            sigma_max: 2.0,
        };
        assert_eq!(one.noise_levels(1).unwrap().sigma(0), 2.0);
        for (sigma_min, sigma_max) in [
            (0.0, 1.0),
            (1e-4, 1.0),
            (1.0, 1.0),
            (2.0, 1.0),
            (0.1, f64::INFINITY),
        ] {
            let bad = ScheduleConfig {
                betas: BetaSchedule::VarianceExploding {
                    sigma_min,
                    sigma_max,
                },
                ..config
            };
            assert!(bad.fill_alphas_cumprod(&mut [0.0; 1000]).is_err());
            assert!(bad.betas.noise_levels(1000).is_none());
            assert!(bad.betas.beta(3, 1000).is_nan());
        }
        let zero_snr = ScheduleConfig {
            zero_terminal_snr: true,
            ..config
        };
        assert!(zero_snr.fill_alphas_cumprod(&mut [0.0; 1000]).is_err());
    }

    #[test]
    fn linear_matches_ddpm_endpoints() {
        let alphas = table(ScheduleConfig::ddpm());
        let schedule = Schedule::new(&alphas).unwrap();
        assert!((schedule.beta(0) - 1e-4).abs() < 1e-7);
        assert!((schedule.beta(999) - 0.02).abs() < 1e-5);
        // Known value: alpha_bar_999 of DDPM's linear schedule is 4.04e-5.
        assert!((schedule.alpha_bar(999) - 4.0358e-5).abs() < 1e-7);
    }

    #[test]
    fn linear_scales_with_train_steps() {
        let config = ScheduleConfig {
            train_steps: 100,
            ..ScheduleConfig::ddpm()
        };
        let mut out = [0.0f32; 100];
        config.fill_betas(&mut out).unwrap();
        assert!((out[0] - 1e-3).abs() < 1e-6);
        assert!((out[99] - 0.2).abs() < 1e-5);
    }

    #[test]
    fn cosine_is_capped_and_zero_snr_ends_at_zero() {
        let cosine = ScheduleConfig {
            betas: BetaSchedule::cosine(),
            ..ScheduleConfig::ddpm()
        };
        let mut betas = [0.0f32; 1000];
        cosine.fill_betas(&mut betas).unwrap();
        assert!(betas.iter().all(|&b| b <= 0.999 + 1e-6));
        assert!((betas[999] - 0.999).abs() < 1e-6);

        let zero = table(ScheduleConfig {
            zero_terminal_snr: true,
            ..ScheduleConfig::ddpm()
        });
        assert_eq!(zero[999], 0.0);
        let original = table(ScheduleConfig::ddpm());
        assert!((zero[0] - original[0]).abs() < 1e-7);
    }

    #[test]
    fn user_betas_and_bad_input() {
        let mut out = [0.0f32; 3];
        alphas_cumprod_from_betas(&[0.1, 0.2, 0.5], &mut out).unwrap();
        assert!((out[2] - 0.36).abs() < 1e-6);
        assert!(alphas_cumprod_from_betas(&[0.1, 1.5, 0.5], &mut out).is_err());
        assert!(Schedule::new(&[0.5, 0.9]).is_err());
        assert!(Schedule::new(&[]).is_err());
        let mut short = [0.0f32; 10];
        assert!(ScheduleConfig::ddpm()
            .fill_alphas_cumprod(&mut short)
            .is_err());
    }

    #[test]
    fn a_table_read_in_place_from_bytes_is_the_same_schedule() {
        let alphas = table(ScheduleConfig {
            betas: BetaSchedule::cosine(),
            ..ScheduleConfig::ddpm()
        });
        // One byte of offset: the bytes are misaligned for f32, as a blob's may be.
        let mut bytes = [0u8; 1 + 4 * 1000];
        for (chunk, value) in bytes[1..].chunks_exact_mut(4).zip(&alphas) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        let from_bytes = Schedule::from_le_bytes(&bytes[1..]).unwrap();
        let from_values = Schedule::new(&alphas).unwrap();
        assert_eq!(from_bytes.train_steps(), 1000);
        for t in 0..1001 {
            assert_eq!(
                from_bytes.alpha_bar(t).to_bits(),
                from_values.alpha_bar(t).to_bits()
            );
            assert_eq!(from_bytes.beta(t).to_bits(), from_values.beta(t).to_bits());
        }

        assert!(
            Schedule::from_le_bytes(&bytes[1..4000]).is_err(),
            "not whole f32s"
        );
        assert!(Schedule::from_le_bytes(&[]).is_err(), "empty");
        let increasing = [0.5f32.to_le_bytes(), 0.9f32.to_le_bytes()].concat();
        assert!(Schedule::from_le_bytes(&increasing).is_err());
        let out_of_range = [1.5f32.to_le_bytes(), 0.9f32.to_le_bytes()].concat();
        assert!(Schedule::from_le_bytes(&out_of_range).is_err());
        assert!(Schedule::from_le_bytes(&f32::NAN.to_le_bytes()).is_err());
    }

    #[test]
    fn ve_sigma_lookup_inverts() {
        let alphas = table(ScheduleConfig::ddpm());
        let schedule = Schedule::new(&alphas).unwrap();
        for t in [0usize, 1, 17, 500, 998, 999] {
            assert_eq!(schedule.timestep_for_ve_sigma(schedule.ve_sigma(t)), t);
        }
        assert_eq!(schedule.timestep_for_ve_sigma(1e-9), 0);
        assert_eq!(schedule.timestep_for_ve_sigma(1e9), 999);
    }
}
