//! Every sampler, driven by the mixture's exact denoiser, must reproduce the mixture.
//!
//! The data is a 2-D mixture of 8 Gaussians (radius 2, stds 0.1..0.2, unequal weights). For
//! 4000 samples per sampler we check, against the known mixture:
//! - per-mode weights (samples assigned to the nearest mean): binomial standard error is at
//!   most sqrt(0.2 * 0.8 / 4000) = 0.0063, tolerance 0.025 (4 standard errors);
//! - per-mode means: standard error std / sqrt(n_k) <= 0.2 / sqrt(200) = 0.014, tolerance 0.05
//!   per coordinate;
//! - per-mode variance (mean over both coordinates): relative standard error
//!   sqrt(1 / n_k) <= 0.07 for 200 samples, tolerance 30% relative (4 standard errors plus the
//!   discretisation error of the sampler);
//! - sliced Wasserstein distance to 4000 fresh mixture samples, compared with the floor between
//!   two independent sets of 4000 mixture samples: at most 1.5x the floor plus 0.005.
//!
//! The tolerances were checked against deliberately wrong samplers (see the last test): a
//! 3-step DDIM run, DDIM with a 5% error in the noise prediction, and a Langevin run without
//! annealing all fail them.

use ddm_core::loss_weight::ReverseVariance;
use ddm_core::sampler::{self, AnnealedLangevin, Ddim, Ddpm, DpmSolverPp2m};
use ddm_core::schedule::{Schedule, ScheduleConfig};
use ddm_core::timesteps::{fill_timesteps, Spacing};
use ddm_core::{GaussianMixture, Prediction, Rng};

const N: usize = 4000;
const DIM: usize = 2;

struct Mixture {
    means: Vec<f32>,
    stds: Vec<f32>,
    weights: Vec<f32>,
}

impl Mixture {
    fn eight_gaussians() -> Self {
        let mut means = Vec::new();
        for k in 0..8 {
            let angle = k as f32 * std::f32::consts::FRAC_PI_4;
            means.extend([2.0 * angle.cos(), 2.0 * angle.sin()]);
        }
        Mixture {
            means,
            stds: vec![0.2, 0.25, 0.2, 0.3, 0.2, 0.25, 0.2, 0.3],
            weights: vec![0.2, 0.1, 0.15, 0.05, 0.2, 0.1, 0.15, 0.05],
        }
    }

    fn oracle(&self) -> GaussianMixture<'_> {
        GaussianMixture::new(&self.means, &self.stds, &self.weights, DIM).unwrap()
    }
}

fn linear_table() -> Vec<f32> {
    let mut table = vec![0.0f32; 1000];
    ScheduleConfig::ddpm()
        .fill_alphas_cumprod(&mut table)
        .unwrap();
    table
}

fn timesteps(steps: usize, spacing: Spacing) -> Vec<u32> {
    let table = linear_table();
    let mut out = vec![0u32; steps];
    fill_timesteps(&Schedule::new(&table).unwrap(), spacing, 0, &mut out).unwrap();
    out
}

/// Runs a VP sampler from standard normal noise with the mixture's exact eps.
fn run_vp(
    mixture: &Mixture,
    schedule: Schedule<'_>,
    sampler: &mut dyn ddm_core::Sampler,
    seed: u64,
) -> Vec<f32> {
    let oracle = mixture.oracle();
    let mut rng = Rng::new(seed);
    let mut x = vec![0.0f32; N * DIM];
    rng.fill_normal(&mut x);
    let mut output = vec![0.0f32; N * DIM];
    sampler::run(sampler, &mut x, &mut output, &mut rng, |x, t, out| {
        let (a, s) = (schedule.signal(t as usize), schedule.noise(t as usize));
        oracle.eps(x, a as f32, s as f32, out)
    })
    .unwrap();
    x
}

fn run_langevin(mixture: &Mixture, mut langevin: AnnealedLangevin, sigma_max: f32) -> Vec<f32> {
    let oracle = mixture.oracle();
    let mut rng = Rng::new(4);
    let mut x = vec![0.0f32; N * DIM];
    rng.fill_normal(&mut x);
    x.iter_mut().for_each(|v| *v *= sigma_max);
    let mut score = vec![0.0f32; N * DIM];
    while let Some(sigma) = langevin.sigma() {
        oracle.ve_score(&x, sigma as f32, &mut score).unwrap();
        langevin.step(&mut x, &score, &mut rng).unwrap();
    }
    x
}

/// Sliced Wasserstein-1 distance over 128 random directions.
fn sliced_wasserstein(a: &[f32], b: &[f32]) -> f64 {
    let mut rng = Rng::new(99);
    let mut total = 0.0;
    let projections = 128;
    for _ in 0..projections {
        let angle = rng.uniform() * std::f32::consts::TAU;
        let (c, s) = (angle.cos(), angle.sin());
        let project = |x: &[f32]| {
            let mut p: Vec<f32> = x.chunks(2).map(|v| c * v[0] + s * v[1]).collect();
            p.sort_by(f32::total_cmp);
            p
        };
        let (pa, pb) = (project(a), project(b));
        total += pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| f64::from((x - y).abs()))
            .sum::<f64>()
            / pa.len() as f64;
    }
    total / projections as f64
}

struct ModeStats {
    weights: Vec<f64>,
    means: Vec<[f64; 2]>,
    variances: Vec<f64>,
}

fn mode_stats(mixture: &Mixture, x: &[f32]) -> ModeStats {
    let k = mixture.weights.len();
    let mut count = vec![0usize; k];
    let mut sum = vec![[0.0f64; 2]; k];
    let mut sum_sq = vec![0.0f64; k];
    for v in x.chunks(2) {
        let nearest = (0..k)
            .min_by(|&i, &j| {
                let d = |m: usize| {
                    (v[0] - mixture.means[2 * m]).powi(2)
                        + (v[1] - mixture.means[2 * m + 1]).powi(2)
                };
                d(i).total_cmp(&d(j))
            })
            .unwrap();
        count[nearest] += 1;
        sum[nearest][0] += f64::from(v[0]);
        sum[nearest][1] += f64::from(v[1]);
        sum_sq[nearest] += f64::from(v[0] * v[0] + v[1] * v[1]);
    }
    let n = (x.len() / 2) as f64;
    let mut stats = ModeStats {
        weights: vec![],
        means: vec![],
        variances: vec![],
    };
    for m in 0..k {
        let c = count[m].max(1) as f64;
        let mean = [sum[m][0] / c, sum[m][1] / c];
        let variance = (sum_sq[m] / c - mean[0] * mean[0] - mean[1] * mean[1]) / 2.0;
        stats.weights.push(count[m] as f64 / n);
        stats.means.push(mean);
        stats.variances.push(variance);
    }
    stats
}

/// Returns the list of violated checks (empty when the samples match the mixture).
fn violations(mixture: &Mixture, x: &[f32]) -> Vec<String> {
    let mut failures = Vec::new();
    assert!(x.iter().all(|v| v.is_finite()), "non-finite samples");
    let stats = mode_stats(mixture, x);
    for m in 0..mixture.weights.len() {
        let weight = f64::from(mixture.weights[m]);
        if (stats.weights[m] - weight).abs() > 0.025 {
            failures.push(format!(
                "mode {m}: weight {:.4} vs {weight}",
                stats.weights[m]
            ));
        }
        for d in 0..2 {
            let target = f64::from(mixture.means[2 * m + d]);
            if (stats.means[m][d] - target).abs() > 0.05 {
                failures.push(format!(
                    "mode {m}: mean[{d}] {:.4} vs {target:.4}",
                    stats.means[m][d]
                ));
            }
        }
        let variance = f64::from(mixture.stds[m]).powi(2);
        if (stats.variances[m] / variance - 1.0).abs() > 0.3 {
            failures.push(format!(
                "mode {m}: variance {:.5} vs {variance:.5}",
                stats.variances[m]
            ));
        }
    }
    let oracle = mixture.oracle();
    let (mut reference, mut other) = (vec![0.0f32; N * DIM], vec![0.0f32; N * DIM]);
    oracle.sample(&mut Rng::new(1001), &mut reference).unwrap();
    oracle.sample(&mut Rng::new(1002), &mut other).unwrap();
    let floor = sliced_wasserstein(&reference, &other);
    let distance = sliced_wasserstein(&reference, x);
    eprintln!("sliced Wasserstein {distance:.4} (floor {floor:.4})");
    if distance > 1.5 * floor + 0.005 {
        failures.push(format!(
            "sliced Wasserstein {distance:.4} vs floor {floor:.4}"
        ));
    }
    failures
}

fn assert_matches(name: &str, mixture: &Mixture, x: &[f32]) {
    let failures = violations(mixture, x);
    assert!(failures.is_empty(), "{name}: {failures:#?}");
}

#[test]
fn ddpm_1000_steps() {
    let mixture = Mixture::eight_gaussians();
    let table = linear_table();
    let schedule = Schedule::new(&table).unwrap();
    for variance in [ReverseVariance::Beta, ReverseVariance::Posterior] {
        let ts = timesteps(1000, Spacing::Leading);
        let mut ddpm = Ddpm::new(schedule, &ts, Prediction::Eps, variance, None).unwrap();
        let x = run_vp(&mixture, schedule, &mut ddpm, 1);
        assert_matches(&format!("DDPM-1000 {variance:?}"), &mixture, &x);
    }
}

#[test]
fn ddim_50_steps() {
    let mixture = Mixture::eight_gaussians();
    let table = linear_table();
    let schedule = Schedule::new(&table).unwrap();
    let ts = timesteps(50, Spacing::Leading);
    let mut ddim = Ddim::new(schedule, &ts, Prediction::Eps, 0.0, None).unwrap();
    let x = run_vp(&mixture, schedule, &mut ddim, 2);
    assert_matches("DDIM-50", &mixture, &x);
}

#[test]
fn dpm_solver_pp_20_steps() {
    let mixture = Mixture::eight_gaussians();
    let table = linear_table();
    let schedule = Schedule::new(&table).unwrap();
    let ts = timesteps(20, Spacing::LogSnr);
    let mut previous = vec![0.0f32; N * DIM];
    let mut solver =
        DpmSolverPp2m::new(schedule, &ts, Prediction::Eps, None, &mut previous).unwrap();
    let x = run_vp(&mixture, schedule, &mut solver, 3);
    assert_matches("DPM-Solver++-20", &mixture, &x);
}

#[test]
fn annealed_langevin() {
    let mixture = Mixture::eight_gaussians();
    let langevin = AnnealedLangevin::new(5.0, 0.01, 20, 100, 2e-5, true).unwrap();
    let x = run_langevin(&mixture, langevin, 5.0);
    assert_matches("Langevin", &mixture, &x);
}

#[test]
fn the_checks_reject_wrong_samplers() {
    let mixture = Mixture::eight_gaussians();
    let table = linear_table();
    let schedule = Schedule::new(&table).unwrap();
    // Too few DDIM steps blur the modes.
    let ts = timesteps(3, Spacing::Trailing);
    let mut ddim = Ddim::new(schedule, &ts, Prediction::Eps, 0.0, None).unwrap();
    let x = run_vp(&mixture, schedule, &mut ddim, 2);
    assert!(!violations(&mixture, &x).is_empty(), "3-step DDIM passed");
    // A network that under-predicts the noise by 5% leaves noise in every sample.
    let ts = timesteps(50, Spacing::Leading);
    let oracle = mixture.oracle();
    let mut ddim = Ddim::new(schedule, &ts, Prediction::Eps, 0.0, None).unwrap();
    let mut rng = Rng::new(2);
    let mut x = vec![0.0f32; N * DIM];
    rng.fill_normal(&mut x);
    let mut output = vec![0.0f32; N * DIM];
    sampler::run(&mut ddim, &mut x, &mut output, &mut rng, |x, t, out| {
        let (a, s) = (schedule.signal(t as usize), schedule.noise(t as usize));
        oracle.eps(x, a as f32, s as f32, out)?;
        out.iter_mut().for_each(|e| *e *= 0.95);
        Ok::<(), ddm_core::Error>(())
    })
    .unwrap();
    let failures = violations(&mixture, &x);
    eprintln!("{failures:?}");
    assert!(!failures.is_empty(), "biased DDIM passed");
    // Langevin at a single small noise level cannot move mass between modes.
    let langevin = AnnealedLangevin::new(0.01, 0.01, 1, 100, 2e-5, true).unwrap();
    let x = run_langevin(&mixture, langevin, 5.0);
    assert!(
        !violations(&mixture, &x).is_empty(),
        "unannealed Langevin passed"
    );
}
