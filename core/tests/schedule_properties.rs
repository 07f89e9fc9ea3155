//! Property tests: every schedule and every spacing keeps its invariants for any size.

use ddm_core::schedule::{BetaSchedule, Schedule, ScheduleConfig};
use ddm_core::timesteps::{fill_timesteps, previous, Spacing};
use proptest::prelude::*;

fn beta_schedule() -> impl Strategy<Value = BetaSchedule> {
    prop_oneof![
        Just(BetaSchedule::linear()),
        Just(BetaSchedule::scaled_linear()),
        Just(BetaSchedule::cosine()),
        Just(BetaSchedule::sigmoid()),
    ]
}

fn spacing() -> impl Strategy<Value = Spacing> {
    prop_oneof![
        Just(Spacing::Leading),
        Just(Spacing::Linspace),
        Just(Spacing::Trailing),
        Just(Spacing::LogSnr),
    ]
}

fn table(betas: BetaSchedule, train_steps: usize, zero_terminal_snr: bool) -> Vec<f32> {
    let mut table = vec![0.0f32; train_steps];
    ScheduleConfig {
        betas,
        train_steps,
        zero_terminal_snr,
    }
    .fill_alphas_cumprod(&mut table)
    .unwrap();
    table
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn alpha_bar_is_monotone_in_unit_interval(
        betas in beta_schedule(), train_steps in 50usize..3000, zero in any::<bool>()
    ) {
        let table = table(betas, train_steps, zero);
        prop_assert!(table.iter().all(|a| (0.0..=1.0).contains(a)));
        prop_assert!(table.windows(2).all(|w| w[1] <= w[0]));
        let schedule = Schedule::new(&table).unwrap();
        for t in [0, train_steps / 2, train_steps - 1] {
            let beta = schedule.beta(t);
            prop_assert!((0.0..=1.0).contains(&beta));
            prop_assert!(schedule.posterior_variance(t) <= beta + 1e-12);
            prop_assert!((schedule.signal(t).powi(2) + schedule.noise(t).powi(2) - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn zero_terminal_snr_ends_exactly_at_zero(
        betas in beta_schedule(), train_steps in 50usize..3000
    ) {
        let rescaled = table(betas, train_steps, true);
        let original = table(betas, train_steps, false);
        prop_assert_eq!(rescaled[train_steps - 1], 0.0);
        prop_assert!((rescaled[0] - original[0]).abs() <= 1e-7);
        let schedule = Schedule::new(&rescaled).unwrap();
        prop_assert_eq!(schedule.snr(train_steps - 1), 0.0);
        prop_assert_eq!(schedule.beta(train_steps - 1), 1.0);
    }

    #[test]
    fn spacings_give_distinct_descending_timesteps(
        train_steps in 50usize..2000,
        fraction in 0.0f64..1.0,
        spacing in spacing(),
        offset in 0usize..3,
    ) {
        let steps = 1 + (fraction * (train_steps - 1) as f64) as usize;
        let table = table(BetaSchedule::linear(), train_steps, false);
        let schedule = Schedule::new(&table).unwrap();
        let mut ts = vec![0u32; steps];
        let result = fill_timesteps(&schedule, spacing, offset, &mut ts);
        if spacing == Spacing::Leading && (steps - 1) * (train_steps / steps) + offset >= train_steps {
            prop_assert!(result.is_err());
            return Ok(());
        }
        result.unwrap();
        prop_assert!(ts.windows(2).all(|w| w[0] > w[1]));
        prop_assert!(ts.iter().all(|&t| (t as usize) < train_steps));
        prop_assert_eq!(previous(&ts, steps - 1), None);
        for i in 0..steps - 1 {
            prop_assert_eq!(previous(&ts, i), Some(ts[i + 1] as usize));
        }
        match spacing {
            Spacing::Leading => {
                let ratio = (train_steps / steps) as u32;
                prop_assert_eq!(ts[steps - 1], offset as u32);
                prop_assert!(ts.windows(2).all(|w| w[0] - w[1] == ratio));
            }
            Spacing::Linspace if steps > 1 => {
                prop_assert_eq!(ts[0] as usize, train_steps - 1);
                prop_assert_eq!(ts[steps - 1], 0);
            }
            Spacing::Trailing => {
                prop_assert_eq!(ts[0] as usize, train_steps - 1);
                let ratio = train_steps as f64 / steps as f64;
                prop_assert!(ts.windows(2).all(|w| (f64::from(w[0] - w[1]) - ratio).abs() <= 1.0));
            }
            Spacing::LogSnr => {
                prop_assert_eq!(ts[0] as usize, train_steps - 1);
                if steps > 1 {
                    prop_assert_eq!(ts[steps - 1], 0);
                }
            }
            _ => {}
        }
    }
}
