//! Every sampler, driven by the mixture's exact denoiser, must reproduce the mixture, at any
//! seed.
//!
//! The data is a 2-D mixture of 8 Gaussians (radius 2, stds 0.2..0.3, unequal weights). Each
//! sampler draws `N = 4000` samples; each sample is assigned to its nearest mode mean. The
//! statistics of that assignment (per mode: its share of the samples, its mean, its mean
//! squared deviation) are compared with the same statistics of `M = 200,000` exact mixture
//! samples, which also give each statistic's spread: the share's binomial standard error
//! `sqrt(p (1 - p) / N)`, the mean's `sd / sqrt(n_mode)` per coordinate, the squared
//! deviation's `sd(q) / sqrt(n_mode)`, each combined with the reference's own error. A check
//! fails beyond [`Z`] = 5 combined standard errors (two-sided probability 6e-7 per check; about
//! 200 checks run, so a correct sampler fails once in thousands of seeds). The nearest-mean
//! assignment makes the expected statistics differ from the mixture's parameters (tails cross
//! to neighbouring modes); comparing with the exact samples' statistics removes that bias.
//!
//! The sliced Wasserstein distance to fresh mixture samples is compared with its own spread
//! between independent mixture sets: mean plus [`Z`] standard deviations of 8 disjoint pairs.
//!
//! The seed comes from `DDM_TEST_SEED` (default 0): the suite passes for every seed, and was
//! run for seeds 0 to 19. The tolerances reject deliberately wrong samplers (the last test): a
//! 3-step DDIM run, DDIM with a 5% error in the noise prediction, a Langevin run without
//! annealing, a predictor-corrector run whose corrector steps at four times its
//! signal-to-noise ratio, the reverse diffusion predictor on 10 levels, the probability flow
//! ODE on 4 levels and with a 10% error in the noise prediction.
//!
//! The variance-exploding samplers run from `sigma_max = 5`, about the largest distance
//! between two points of the mixture (NCSNv2's rule), to `sigma_min = 0.01`: Langevin on its
//! own levels from `N(0, 25 I)`; the predictor-corrector sampler and the probability flow ODE
//! on a variance-exploding schedule of 1000 levels, from `N(0, I)` in its variance-preserving
//! form (`N(0, 26 I)` as `x0 + sigma z`).

use ddm_core::loss_weight::ReverseVariance;
use ddm_core::sampler::{
    self, AnnealedLangevin, Ddim, Ddpm, DpmSolverPp2m, PredictorCorrector, ProbabilityFlowHeun,
};
use ddm_core::schedule::{BetaSchedule, Schedule, ScheduleConfig};
use ddm_core::timesteps::{fill_timesteps, Spacing};
use ddm_core::{GaussianMixture, Prediction, Rng, Sampler};

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
    let mut rng = Rng::new(seed(4));
    let mut x = vec![0.0f32; N * DIM];
    rng.fill_normal(&mut x);
    x.iter_mut().for_each(|v| *v *= sigma_max);
    let mut score = vec![0.0f32; N * DIM];
    while let Some(sigma) = langevin.sigma() {
        oracle.ve_score(&x, sigma as f32, &mut score).unwrap();
        langevin.step_with_score(&mut x, &score, &mut rng).unwrap();
    }
    x
}

/// The variance-exploding schedule of the level samplers: 1000 geometric levels from 0.01 to
/// 5, as `alpha_bar = 1 / (1 + sigma^2)`.
fn ve_table() -> Vec<f32> {
    let mut table = vec![0.0f32; 1000];
    ScheduleConfig {
        betas: BetaSchedule::VarianceExploding {
            sigma_min: 0.01,
            sigma_max: 5.0,
        },
        train_steps: 1000,
        zero_terminal_snr: false,
    }
    .fill_alphas_cumprod(&mut table)
    .unwrap();
    table
}

/// `count` timesteps of the variance-exploding schedule, evenly spread from 999 to 0 (even in
/// log sigma).
fn spread(count: usize) -> Vec<u32> {
    let table = ve_table();
    let mut out = vec![0u32; count];
    fill_timesteps(
        &Schedule::new(&table).unwrap(),
        Spacing::Linspace,
        0,
        &mut out,
    )
    .unwrap();
    out
}

/// Runs a variance-exploding sampler on the whole batch at once (the predictor-corrector's
/// norms are then the batch's: in two dimensions a single sample's score norm comes near zero
/// too often for per-sample steps) with the mixture's exact eps scaled by `bias`.
fn run_ve<S: Sampler>(mixture: &Mixture, sampler: &mut S, bias: f32, seed: u64) -> Vec<f32> {
    let table = ve_table();
    let schedule = Schedule::new(&table).unwrap();
    let oracle = mixture.oracle();
    let mut rng = Rng::new(seed);
    let mut x = vec![0.0f32; N * DIM];
    rng.fill_normal(&mut x);
    let mut output = vec![0.0f32; N * DIM];
    sampler::run(sampler, &mut x, &mut output, &mut rng, |x, t, out| {
        let (a, s) = (schedule.signal(t as usize), schedule.noise(t as usize));
        oracle.eps(x, a as f32, s as f32, out)?;
        out.iter_mut().for_each(|e| *e *= bias);
        Ok::<(), ddm_core::Error>(())
    })
    .unwrap();
    x
}

fn run_pc(mixture: &Mixture, timesteps: &[u32], corrector_steps: usize, snr: f64) -> Vec<f32> {
    let table = ve_table();
    let schedule = Schedule::new(&table).unwrap();
    let mut sampler =
        PredictorCorrector::new(schedule, timesteps, Prediction::Eps, corrector_steps, snr)
            .unwrap();
    run_ve(mixture, &mut sampler, 1.0, seed(5))
}

fn run_ode(mixture: &Mixture, timesteps: &[u32], bias: f32) -> Vec<f32> {
    let table = ve_table();
    let schedule = Schedule::new(&table).unwrap();
    let mut slope = vec![0.0f32; N * DIM];
    let mut sampler =
        ProbabilityFlowHeun::new(schedule, timesteps, Prediction::Eps, &mut slope).unwrap();
    run_ve(mixture, &mut sampler, bias, seed(6))
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

/// Deviation limit, in combined standard errors.
const Z: f64 = 5.0;

/// Samples of the exact mixture that give the reference statistics.
const M: usize = 200_000;

/// The base seed: `DDM_TEST_SEED`, or 0.
fn base_seed() -> u64 {
    std::env::var("DDM_TEST_SEED")
        .ok()
        .map(|v| v.parse().expect("DDM_TEST_SEED is a number"))
        .unwrap_or(0)
}

/// A seed for `purpose` under the base seed.
fn seed(purpose: u64) -> u64 {
    base_seed()
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(purpose)
}

/// Statistics of the nearest-mean assignment of a sample set.
struct ModeStats {
    /// Samples assigned to each mode.
    counts: Vec<usize>,
    /// Total samples.
    n: usize,
    /// Per mode, per coordinate: mean.
    means: Vec<[f64; 2]>,
    /// Per mode, per coordinate: standard deviation.
    sds: Vec<[f64; 2]>,
    /// Per mode: mean of `q = |x - mean|^2 / 2`, the per-coordinate variance.
    variances: Vec<f64>,
    /// Per mode: standard deviation of `q`.
    variance_sds: Vec<f64>,
}

fn mode_stats(mixture: &Mixture, x: &[f32]) -> ModeStats {
    let k = mixture.weights.len();
    let nearest = |v: &[f32]| {
        (0..k)
            .min_by(|&i, &j| {
                let d = |m: usize| {
                    (v[0] - mixture.means[2 * m]).powi(2)
                        + (v[1] - mixture.means[2 * m + 1]).powi(2)
                };
                d(i).total_cmp(&d(j))
            })
            .unwrap()
    };
    let assigned: Vec<usize> = x.chunks(2).map(nearest).collect();
    let mut counts = vec![0usize; k];
    let mut sums = vec![[0.0f64; 2]; k];
    for (v, &m) in x.chunks(2).zip(&assigned) {
        counts[m] += 1;
        sums[m][0] += f64::from(v[0]);
        sums[m][1] += f64::from(v[1]);
    }
    let means: Vec<[f64; 2]> = (0..k)
        .map(|m| {
            let c = counts[m].max(1) as f64;
            [sums[m][0] / c, sums[m][1] / c]
        })
        .collect();
    let mut second = vec![[0.0f64; 2]; k];
    let (mut q_sum, mut q_sq) = (vec![0.0f64; k], vec![0.0f64; k]);
    for (v, &m) in x.chunks(2).zip(&assigned) {
        let d = [f64::from(v[0]) - means[m][0], f64::from(v[1]) - means[m][1]];
        second[m][0] += d[0] * d[0];
        second[m][1] += d[1] * d[1];
        let q = (d[0] * d[0] + d[1] * d[1]) / 2.0;
        q_sum[m] += q;
        q_sq[m] += q * q;
    }
    let mut stats = ModeStats {
        counts: counts.clone(),
        n: x.len() / 2,
        means,
        sds: vec![],
        variances: vec![],
        variance_sds: vec![],
    };
    for m in 0..k {
        let c = counts[m].max(1) as f64;
        stats
            .sds
            .push([(second[m][0] / c).sqrt(), (second[m][1] / c).sqrt()]);
        let q_mean = q_sum[m] / c;
        stats.variances.push(q_mean);
        stats
            .variance_sds
            .push((q_sq[m] / c - q_mean * q_mean).max(0.0).sqrt());
    }
    stats
}

/// The exact mixture's statistics and the floor of the sliced Wasserstein distance, per seed.
struct Reference {
    stats: ModeStats,
    /// `N` fresh mixture samples to measure the distance to.
    fresh: Vec<f32>,
    /// Mean and standard deviation of the distance between independent `N`-sample sets.
    floor: (f64, f64),
}

fn reference(mixture: &Mixture) -> Reference {
    let oracle = mixture.oracle();
    let mut exact = vec![0.0f32; M * DIM];
    oracle
        .sample(&mut Rng::new(seed(1001)), &mut exact)
        .unwrap();
    let mut fresh = vec![0.0f32; N * DIM];
    oracle
        .sample(&mut Rng::new(seed(1002)), &mut fresh)
        .unwrap();
    let floors: Vec<f64> = (0..8)
        .map(|pair| {
            let (mut a, mut b) = (vec![0.0f32; N * DIM], vec![0.0f32; N * DIM]);
            oracle
                .sample(&mut Rng::new(seed(2000 + 2 * pair)), &mut a)
                .unwrap();
            oracle
                .sample(&mut Rng::new(seed(2001 + 2 * pair)), &mut b)
                .unwrap();
            sliced_wasserstein(&a, &b)
        })
        .collect();
    let mean = floors.iter().sum::<f64>() / floors.len() as f64;
    let sd =
        (floors.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / (floors.len() - 1) as f64).sqrt();
    Reference {
        stats: mode_stats(mixture, &exact),
        fresh,
        floor: (mean, sd),
    }
}

/// Returns the list of violated checks (empty when the samples match the mixture).
fn violations(mixture: &Mixture, x: &[f32]) -> Vec<String> {
    let mut failures = Vec::new();
    assert!(x.iter().all(|v| v.is_finite()), "non-finite samples");
    let reference = reference(mixture);
    let expected = &reference.stats;
    let ours = mode_stats(mixture, x);
    let mut check = |what: String, value: f64, target: f64, se: f64| {
        if (value - target).abs() > Z * se {
            failures.push(format!(
                "{what}: {value:.4} vs {target:.4} ({:.1} standard errors)",
                (value - target).abs() / se
            ));
        }
    };
    for m in 0..mixture.weights.len() {
        let p = expected.counts[m] as f64 / expected.n as f64;
        let share = ours.counts[m] as f64 / ours.n as f64;
        let se = (p * (1.0 - p) * (1.0 / ours.n as f64 + 1.0 / expected.n as f64)).sqrt();
        check(format!("mode {m} share"), share, p, se);
        let (n, n_ref) = (ours.counts[m].max(1) as f64, expected.counts[m] as f64);
        for d in 0..2 {
            let sd = expected.sds[m][d];
            let se = sd * (1.0 / n + 1.0 / n_ref).sqrt();
            check(
                format!("mode {m} mean[{d}]"),
                ours.means[m][d],
                expected.means[m][d],
                se,
            );
        }
        let se = expected.variance_sds[m] * (1.0 / n + 1.0 / n_ref).sqrt();
        check(
            format!("mode {m} variance"),
            ours.variances[m],
            expected.variances[m],
            se,
        );
    }
    let distance = sliced_wasserstein(&reference.fresh, x);
    let (floor, spread) = reference.floor;
    eprintln!("sliced Wasserstein {distance:.4} (floor {floor:.4} +- {spread:.4})");
    if distance > floor + Z * spread {
        failures.push(format!(
            "sliced Wasserstein {distance:.4} vs floor {floor:.4} +- {spread:.4}"
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
        let x = run_vp(&mixture, schedule, &mut ddpm, seed(1));
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
    let x = run_vp(&mixture, schedule, &mut ddim, seed(2));
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
    let x = run_vp(&mixture, schedule, &mut solver, seed(3));
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
fn annealed_langevin_driven_by_eps_at_its_levels() {
    // The same sampler through the Sampler trait: noise predictions at level indices of the
    // sampler's own table.
    let mixture = Mixture::eight_gaussians();
    let langevin = AnnealedLangevin::new(5.0, 0.01, 20, 100, 2e-5, true).unwrap();
    let levels = langevin.noise_levels();
    let oracle = mixture.oracle();
    let mut rng = Rng::new(seed(7));
    let mut x = vec![0.0f32; N * DIM];
    rng.fill_normal(&mut x);
    x.iter_mut().for_each(|v| *v *= 5.0);
    let mut output = vec![0.0f32; N * DIM];
    let mut langevin = langevin;
    sampler::run(
        &mut langevin,
        &mut x,
        &mut output,
        &mut rng,
        |x, level, out| oracle.ve_eps(x, levels.sigma(level as usize) as f32, out),
    )
    .unwrap();
    assert_matches("Langevin by eps", &mixture, &x);
}

#[test]
fn predictor_corrector_500_levels() {
    // 1000 evaluations: 500 levels, one corrector step each at the paper's r = 0.16.
    let mixture = Mixture::eight_gaussians();
    let x = run_pc(&mixture, &spread(500), 1, 0.16);
    assert_matches("PC-500", &mixture, &x);
}

#[test]
fn reverse_diffusion_1000_levels() {
    // The predictor alone: the SMLD reverse diffusion of the paper.
    let mixture = Mixture::eight_gaussians();
    let x = run_pc(&mixture, &spread(1000), 0, 0.16);
    assert_matches("reverse diffusion 1000", &mixture, &x);
}

#[test]
fn probability_flow_heun_100_levels() {
    let mixture = Mixture::eight_gaussians();
    let x = run_ode(&mixture, &spread(100), 1.0);
    assert_matches("probability flow ODE, 100 levels", &mixture, &x);
}

#[test]
fn predictor_corrector_and_the_ode_on_a_variance_preserving_schedule() {
    // The same samplers walk any schedule in its variance-exploding form: DDPM's linear one
    // (sigma from 0.01 to 157).
    let mixture = Mixture::eight_gaussians();
    let table = linear_table();
    let schedule = Schedule::new(&table).unwrap();
    let ts = timesteps(500, Spacing::Linspace);
    let mut pc = PredictorCorrector::new(schedule, &ts, Prediction::Eps, 1, 0.16).unwrap();
    let x = run_vp(&mixture, schedule, &mut pc, seed(8));
    assert_matches("PC-500 on the linear schedule", &mixture, &x);
    let ts = timesteps(100, Spacing::Linspace);
    let mut slope = vec![0.0f32; N * DIM];
    let mut ode = ProbabilityFlowHeun::new(schedule, &ts, Prediction::Eps, &mut slope).unwrap();
    let x = run_vp(&mixture, schedule, &mut ode, seed(9));
    assert_matches("ODE-100 on the linear schedule", &mixture, &x);
}

#[test]
fn the_checks_reject_wrong_samplers() {
    let mixture = Mixture::eight_gaussians();
    let table = linear_table();
    let schedule = Schedule::new(&table).unwrap();
    // Too few DDIM steps blur the modes.
    let ts = timesteps(3, Spacing::Trailing);
    let mut ddim = Ddim::new(schedule, &ts, Prediction::Eps, 0.0, None).unwrap();
    let x = run_vp(&mixture, schedule, &mut ddim, seed(2));
    assert!(!violations(&mixture, &x).is_empty(), "3-step DDIM passed");
    // A network that under-predicts the noise by 5% leaves noise in every sample.
    let ts = timesteps(50, Spacing::Leading);
    let oracle = mixture.oracle();
    let mut ddim = Ddim::new(schedule, &ts, Prediction::Eps, 0.0, None).unwrap();
    let mut rng = Rng::new(seed(2));
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
    // A corrector at four times its signal-to-noise ratio takes 16 times its steps.
    let x = run_pc(&mixture, &spread(500), 1, 0.64);
    let failures = violations(&mixture, &x);
    eprintln!("{failures:?}");
    assert!(!failures.is_empty(), "PC at r = 0.64 passed");
    // Ten reverse diffusion steps from sigma 5.
    let x = run_pc(&mixture, &spread(10), 0, 0.16);
    assert!(
        !violations(&mixture, &x).is_empty(),
        "10-level reverse diffusion passed"
    );
    // Four Heun steps from sigma 5.
    let x = run_ode(&mixture, &spread(4), 1.0);
    assert!(!violations(&mixture, &x).is_empty(), "4-level ODE passed");
    // A network that under-predicts the noise by 10%.
    let x = run_ode(&mixture, &spread(100), 0.9);
    let failures = violations(&mixture, &x);
    eprintln!("{failures:?}");
    assert!(!failures.is_empty(), "biased ODE passed");
}
