//! The learning-rate schedule: linear warm-up, then cosine decay to a floor.

/// The learning rate of training step `step` (0-based) of `total`.
///
/// Steps `0..warmup` rise linearly to `peak` (`peak (step + 1) / warmup`); the remaining steps
/// follow `floor + (peak - floor) (1 + cos(pi p)) / 2` with `p` going from 0 at the first step
/// after the warm-up to 1 at the last step.
pub fn learning_rate(step: u64, total: u64, warmup: u64, peak: f64, floor: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = total.saturating_sub(warmup).saturating_sub(1);
    let progress = if decay_steps == 0 {
        0.0
    } else {
        ((step - warmup) as f64 / decay_steps as f64).min(1.0)
    };
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_the_floor() {
        let lr = |step| learning_rate(step, 110, 10, 1.0, 0.1);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!((lr(60) - 0.55).abs() < 0.01);
        assert!((lr(109) - 0.1).abs() < 1e-12);
        assert!((1..110).all(|s| s < 10 || lr(s) <= lr(s - 1)));
        // No warm-up and a single step: the peak.
        assert_eq!(learning_rate(0, 1, 0, 1.0, 0.1), 1.0);
    }
}
