//! How far each deterministic sampler lands from the exact probability-flow ODE solution on a
//! Gaussian mixture, whose exact noise prediction replaces the network.
//!
//! For each schedule, spacing and step count, `N` initial noises `x_T` (at the sampler's first
//! timestep) are mapped to clean data twice: by the sampler, and by the probability-flow ODE
//! solved to convergence. The ODE is integrated in the variance-exploding variables
//! `y = x / a`, `sigma = s / a`, where it reads `dy / dsigma = eps(a y, t(sigma))`, with
//! classic fourth-order Runge-Kutta in `u = ln sigma` (`dy / du = sigma eps`) in `f64` from
//! the first timestep's sigma down to `sigma = 1e-6`, where `y` is the clean sample up to
//! `1e-6 eps`. The integration doubles its step count until two runs agree to 1e-6 (max abs).
//!
//! Prints a Markdown table of the RMS and largest distance (over samples and coordinates) of
//! DDIM and DPM-Solver++ 2M (diffusers' algorithm, and with the second to last step at first
//! order as well) to that solution.
//!
//! `cargo run --release -p ddm-core --example pf_ode_error [N]` (default N = 2000).

use ddm_core::sampler::{self, Ddim, DpmSolverPp2m, Sampler};
use ddm_core::schedule::{BetaSchedule, Schedule, ScheduleConfig};
use ddm_core::timesteps::{fill_timesteps, Spacing};
use ddm_core::{GaussianMixture, Prediction, Rng};

const DIM: usize = 2;

/// The eight-Gaussians mixture of `examples/eight-gaussians.json` (radius 2).
fn mixture_parameters() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut means = Vec::new();
    for k in 0..8 {
        let angle = k as f64 * std::f64::consts::FRAC_PI_4;
        means.extend([(2.0 * angle.cos()) as f32, (2.0 * angle.sin()) as f32]);
    }
    let stds = vec![0.2, 0.25, 0.2, 0.3, 0.2, 0.25, 0.2, 0.3];
    let weights = vec![0.2, 0.1, 0.15, 0.05, 0.2, 0.1, 0.15, 0.05];
    (means, stds, weights)
}

/// The mixture's exact eps at `x` for the level `alpha_bar` (in `f32`, as the oracle computes).
fn eps(mixture: &GaussianMixture<'_>, x: &[f64], alpha_bar: f64, out: &mut [f64]) {
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let mut e = vec![0.0f32; x.len()];
    let (a, s) = (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt());
    mixture.eps(&x32, a as f32, s as f32, &mut e).unwrap();
    for (o, v) in out.iter_mut().zip(e) {
        *o = f64::from(v);
    }
}

/// `dy / du` at `u = ln sigma`.
fn derivative(mixture: &GaussianMixture<'_>, y: &[f64], u: f64, out: &mut [f64]) {
    let sigma = u.exp();
    let alpha_bar = 1.0 / (1.0 + sigma * sigma);
    let x: Vec<f64> = y.iter().map(|v| v * alpha_bar.sqrt()).collect();
    eps(mixture, &x, alpha_bar, out);
    for v in out.iter_mut() {
        *v *= sigma;
    }
}

/// The PF-ODE solution from `x` at level `alpha_bar` with `steps` RK4 steps in `ln sigma`.
fn ode_solution(
    mixture: &GaussianMixture<'_>,
    x: &[f32],
    alpha_bar: f64,
    steps: usize,
) -> Vec<f64> {
    let a = alpha_bar.sqrt();
    let mut y: Vec<f64> = x.iter().map(|&v| f64::from(v) / a).collect();
    let (u0, u1) = (((1.0 - alpha_bar) / alpha_bar).sqrt().ln(), 1e-6f64.ln());
    let h = (u1 - u0) / steps as f64;
    let n = y.len();
    let (mut k1, mut k2, mut k3, mut k4) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let mut tmp = vec![0.0; n];
    for i in 0..steps {
        let u = u0 + i as f64 * h;
        derivative(mixture, &y, u, &mut k1);
        for j in 0..n {
            tmp[j] = y[j] + 0.5 * h * k1[j];
        }
        derivative(mixture, &tmp, u + 0.5 * h, &mut k2);
        for j in 0..n {
            tmp[j] = y[j] + 0.5 * h * k2[j];
        }
        derivative(mixture, &tmp, u + 0.5 * h, &mut k3);
        for j in 0..n {
            tmp[j] = y[j] + h * k3[j];
        }
        derivative(mixture, &tmp, u + h, &mut k4);
        for j in 0..n {
            y[j] += h / 6.0 * (k1[j] + 2.0 * k2[j] + 2.0 * k3[j] + k4[j]);
        }
    }
    y
}

/// The converged PF-ODE solution (doubling the RK4 steps until two runs agree to 1e-6).
fn converged(mixture: &GaussianMixture<'_>, x: &[f32], alpha_bar: f64) -> Vec<f64> {
    let mut steps = 256;
    let mut previous = ode_solution(mixture, x, alpha_bar, steps);
    loop {
        steps *= 2;
        let next = ode_solution(mixture, x, alpha_bar, steps);
        let change = previous
            .iter()
            .zip(&next)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        if change < 1e-6 || steps > 1 << 16 {
            return next;
        }
        previous = next;
    }
}

fn run(
    sampler: &mut dyn Sampler,
    schedule: &Schedule<'_>,
    mixture: &GaussianMixture<'_>,
    x: &[f32],
) -> Vec<f32> {
    let mut x = x.to_vec();
    let mut output = vec![0.0f32; x.len()];
    let mut rng = Rng::new(0);
    sampler::run(sampler, &mut x, &mut output, &mut rng, |x, t, out| {
        let (a, s) = (schedule.signal(t as usize), schedule.noise(t as usize));
        mixture.eps(x, a as f32, s as f32, out)
    })
    .unwrap();
    x
}

fn distance(sample: &[f32], exact: &[f64]) -> (f64, f64) {
    let (mut sum, mut max) = (0.0f64, 0.0f64);
    for (&s, &e) in sample.iter().zip(exact) {
        let d = (f64::from(s) - e).abs();
        sum += d * d;
        max = max.max(d);
    }
    ((sum / exact.len() as f64).sqrt(), max)
}

fn main() {
    let num: usize = std::env::args()
        .nth(1)
        .map_or(2000, |v| v.parse().expect("N is a number"));
    let (means, stds, weights) = mixture_parameters();
    let mixture = GaussianMixture::new(&means, &stds, &weights, DIM).unwrap();
    let mut noise = vec![0.0f32; num * DIM];
    Rng::new(2024).fill_normal(&mut noise);

    println!("| schedule | spacing | steps | DDIM rms / max | DPM-Solver++ 2M (diffusers) rms / max | + first-order penultimate rms / max |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (name, betas) in [
        ("linear", BetaSchedule::linear()),
        ("cosine", BetaSchedule::cosine()),
    ] {
        let mut table = vec![0.0f32; 1000];
        ScheduleConfig {
            betas,
            ..ScheduleConfig::ddpm()
        }
        .fill_alphas_cumprod(&mut table)
        .unwrap();
        let schedule = Schedule::new(&table).unwrap();
        for spacing in [Spacing::Trailing, Spacing::Leading, Spacing::LogSnr] {
            for steps in [5usize, 10, 20] {
                let mut timesteps = vec![0u32; steps];
                fill_timesteps(&schedule, spacing, 0, &mut timesteps).unwrap();
                let alpha_bar = schedule.alpha_bar(timesteps[0] as usize);
                let exact = converged(&mixture, &noise, alpha_bar);
                let mut ddim = Ddim::new(schedule, &timesteps, Prediction::Eps, 0.0, None).unwrap();
                let ddim = distance(&run(&mut ddim, &schedule, &mixture, &noise), &exact);
                let solver = |first_order_penultimate: bool| {
                    let mut scratch = vec![0.0f32; noise.len()];
                    let mut dpm = DpmSolverPp2m::new(
                        schedule,
                        &timesteps,
                        Prediction::Eps,
                        None,
                        &mut scratch,
                    )
                    .unwrap()
                    .with_first_order_penultimate(first_order_penultimate);
                    distance(&run(&mut dpm, &schedule, &mixture, &noise), &exact)
                };
                let (diffusers, penultimate) = (solver(false), solver(true));
                println!(
                    "| {name} | {spacing:?} | {steps} | {:.4} / {:.3} | {:.4} / {:.3} | {:.4} / {:.3} |",
                    ddim.0, ddim.1, diffusers.0, diffusers.1, penultimate.0, penultimate.1
                );
            }
        }
    }
}
