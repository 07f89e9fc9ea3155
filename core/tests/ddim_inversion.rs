//! DDIM with eta = 0 is deterministic and, in the limit of many steps, invertible.

use ddm_core::sampler::{self, Ddim, DdimInversion, Sampler};
use ddm_core::schedule::{Schedule, ScheduleConfig};
use ddm_core::timesteps::{fill_timesteps, Spacing};
use ddm_core::{GaussianMixture, Prediction, Rng};

const N: usize = 500;

fn mixture_parts() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let means = vec![-1.0, 0.5, 1.0, -0.5, 0.0, 1.0];
    (means, vec![0.3, 0.4, 0.3], vec![0.3, 0.3, 0.4])
}

fn round_trip_error(steps: usize) -> f64 {
    let (means, stds, weights) = mixture_parts();
    let mixture = GaussianMixture::new(&means, &stds, &weights, 2).unwrap();
    let mut table = vec![0.0f32; 1000];
    ScheduleConfig::ddpm()
        .fill_alphas_cumprod(&mut table)
        .unwrap();
    let schedule = Schedule::new(&table).unwrap();
    let mut ts = vec![0u32; steps];
    fill_timesteps(&schedule, Spacing::Leading, 0, &mut ts).unwrap();
    let network = |x: &[f32], t: u32, out: &mut [f32]| {
        let (a, s) = (schedule.signal(t as usize), schedule.noise(t as usize));
        mixture.eps(x, a as f32, s as f32, out)
    };

    let mut rng = Rng::new(5);
    let mut x0 = vec![0.0f32; N * 2];
    mixture.sample(&mut rng, &mut x0).unwrap();
    let mut x = x0.clone();
    let mut output = vec![0.0f32; N * 2];
    let mut inversion = DdimInversion::new(schedule, &ts, Prediction::Eps).unwrap();
    assert_eq!((inversion.num_steps(), inversion.steps_taken()), (steps, 0));
    sampler::run(&mut inversion, &mut x, &mut output, &mut rng, network).unwrap();
    assert_eq!(
        (inversion.num_steps(), inversion.steps_taken()),
        (steps, steps)
    );
    let latent = x.clone();

    let mut ddim = Ddim::new(schedule, &ts, Prediction::Eps, 0.0, None).unwrap();
    sampler::run(&mut ddim, &mut x, &mut output, &mut rng, network).unwrap();

    // Deterministic: the same latent gives the same bits, whatever the RNG state.
    let mut again = latent.clone();
    let mut ddim = Ddim::new(schedule, &ts, Prediction::Eps, 0.0, None).unwrap();
    sampler::run(
        &mut ddim,
        &mut again,
        &mut output,
        &mut Rng::new(999),
        network,
    )
    .unwrap();
    assert_eq!(again, x);

    x.iter()
        .zip(&x0)
        .map(|(a, b)| f64::from((a - b).abs()))
        .sum::<f64>()
        / x.len() as f64
}

#[test]
fn inversion_error_vanishes_with_more_steps() {
    let errors: Vec<f64> = [10, 50, 250, 1000]
        .iter()
        .map(|&steps| round_trip_error(steps))
        .collect();
    eprintln!("mean |x0' - x0| for 10, 50, 250, 1000 steps: {errors:?}");
    assert!(errors.windows(2).all(|w| w[1] < w[0]), "{errors:?}");
    // Data spread is about 1; at 1000 steps the round trip is within 1% of it.
    assert!(errors[3] < 0.01, "{errors:?}");
    assert!(errors[3] < errors[0] / 10.0, "{errors:?}");
}
