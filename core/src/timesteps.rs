//! Choosing `N` inference timesteps out of `T` training steps.
//!
//! The three spacings are the ones diffusers users know (`timestep_spacing`). Timesteps are
//! written first to last (descending). The step after timestep `i` goes to `timesteps[i + 1]`,
//! and the last step goes to "no noise" (alpha-bar = 1), which [`previous`] returns as `None`.
//! Unlike diffusers' DDIM (`prev_t = t - T / N`), this is right for every spacing: no step is
//! skipped or taken twice and the last DDIM step always lands on clean data.

use crate::error::{Error, Result};

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
}

/// Writes `out.len()` inference timesteps (descending, first to last) for a schedule of
/// `train_steps` steps. `steps_offset` only applies to [`Spacing::Leading`].
///
/// Errors with [`Error::InvalidStepCount`] when `out` is empty, longer than `train_steps`, or the
/// offset pushes a timestep to `train_steps` or beyond.
pub fn fill_timesteps(
    train_steps: usize,
    spacing: Spacing,
    steps_offset: usize,
    out: &mut [u32],
) -> Result<()> {
    let steps = out.len();
    let invalid = Error::InvalidStepCount { steps, train_steps };
    if steps == 0 || steps > train_steps || train_steps > u32::MAX as usize {
        return Err(invalid);
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

/// The timestep that step `index` of `timesteps` moves to: the next entry, or `None` (no noise,
/// alpha-bar = 1) after the last one.
pub fn previous(timesteps: &[u32], index: usize) -> Option<usize> {
    timesteps.get(index + 1).map(|&t| t as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timesteps<const N: usize>(train: usize, spacing: Spacing, offset: usize) -> [u32; N] {
        let mut out = [0u32; N];
        fill_timesteps(train, spacing, offset, &mut out).unwrap();
        out
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
        assert!(fill_timesteps(1000, Spacing::Leading, 0, &mut none).is_err());
        let mut too_many = [0u32; 11];
        assert!(fill_timesteps(10, Spacing::Linspace, 0, &mut too_many).is_err());
        let mut offset = [0u32; 10];
        assert!(fill_timesteps(1000, Spacing::Leading, 100, &mut offset).is_err());
    }
}
