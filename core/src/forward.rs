//! The forward (noising) process in closed form.

use crate::error::{check_len, Result};
use crate::schedule::Schedule;

/// Writes `x_t = a_t x_0 + s_t e` for one timestep `t` into `out`.
/// `x0`, `noise` and `out` must have the same length.
pub fn add_noise(
    schedule: &Schedule<'_>,
    t: usize,
    x0: &[f32],
    noise: &[f32],
    out: &mut [f32],
) -> Result<()> {
    check_len("noise", x0.len(), noise.len())?;
    check_len("out", x0.len(), out.len())?;
    let a = schedule.signal(t) as f32;
    let s = schedule.noise(t) as f32;
    for ((slot, &x), &e) in out.iter_mut().zip(x0).zip(noise) {
        *slot = a * x + s * e;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleConfig;

    #[test]
    fn interpolates_between_data_and_noise() {
        let mut table = [0.0f32; 1000];
        ScheduleConfig::ddpm()
            .fill_alphas_cumprod(&mut table)
            .unwrap();
        let schedule = Schedule::new(&table).unwrap();
        let mut out = [0.0f32; 2];
        add_noise(&schedule, 0, &[1.0, -1.0], &[0.5, 0.5], &mut out).unwrap();
        assert!((out[0] - (0.9999f32.sqrt() + 0.01 * 0.5)).abs() < 1e-5);
        add_noise(&schedule, 999, &[1.0, -1.0], &[0.5, 0.5], &mut out).unwrap();
        assert!((out[0] - 0.5).abs() < 0.01 && (out[1] - 0.5).abs() < 0.01);
        assert!(add_noise(&schedule, 0, &[1.0], &[0.5, 0.5], &mut out).is_err());
    }
}
