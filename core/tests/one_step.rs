//! Every sampler's single step, every prediction type and every loss weight against formulas
//! written out here by hand on scalars, in f64: not the code under test called twice.
//!
//! The schedule is a four-step table `alpha_bar = [0.9, 0.5, 0.2, 0.05]` chosen so that every
//! coefficient is far from 0 and 1; noise draws are read from a clone of the sampler's
//! generator before the step, so the expected value uses the very draw the step uses.

use ddm_core::loss_weight::{LossWeighting, ReverseVariance};
use ddm_core::sampler::{
    AnnealedLangevin, Ddim, Ddpm, DpmSolverPp2m, PredictorCorrector, ProbabilityFlowHeun, Sampler,
};
use ddm_core::{Prediction, Rng, Schedule};

const TABLE: [f32; 4] = [0.9, 0.5, 0.2, 0.05];

fn ab(t: usize) -> f64 {
    f64::from(TABLE[t])
}

fn schedule() -> Schedule<'static> {
    Schedule::new(&TABLE).unwrap()
}

/// `|ours - expected| <= 2e-6 max(1, |expected|)`: f32 arithmetic on values of order 1.
fn close(ours: f32, expected: f64, what: &str) {
    let tolerance = 2e-6 * expected.abs().max(1.0);
    assert!(
        (f64::from(ours) - expected).abs() <= tolerance,
        "{what}: got {ours}, expected {expected}"
    );
}

/// The first normal draw of `rng` (without advancing it).
fn next_draw(rng: &Rng) -> f64 {
    f64::from(rng.clone().normal())
}

#[test]
fn ddim_deterministic_step() {
    // x_prev = a_prev x0 + sqrt(1 - ab_prev) eps, x0 = (x - s eps) / a; from t = 2 to t = 1.
    let timesteps = [2u32, 1];
    let mut ddim = Ddim::new(schedule(), &timesteps, Prediction::Eps, 0.0, None).unwrap();
    let (x, eps) = (0.7f64, 0.3f64);
    let x0 = (x - (1.0 - ab(2)).sqrt() * eps) / ab(2).sqrt();
    let expected = ab(1).sqrt() * x0 + (1.0 - ab(1)).sqrt() * eps;
    let mut v = [x as f32];
    ddim.step(&mut v, &[eps as f32], &mut Rng::new(0)).unwrap();
    close(v[0], expected, "DDIM eta 0");
    // The last step lands on clean data: x = x0 of the network at t = 1.
    let out = -0.4f64;
    let x0 = (f64::from(v[0]) - (1.0 - ab(1)).sqrt() * out) / ab(1).sqrt();
    ddim.step(&mut v, &[out as f32], &mut Rng::new(0)).unwrap();
    close(v[0], x0, "DDIM onto clean data");
    assert!(ddim.step(&mut v, &[0.0], &mut Rng::new(0)).is_err());
}

#[test]
fn ddim_stochastic_step_uses_the_given_draw() {
    // sigma = eta sqrt((1 - ab_prev) / (1 - ab)) sqrt(1 - ab / ab_prev);
    // x_prev = a_prev x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z.
    let timesteps = [3u32, 1];
    let eta = 0.8f64;
    let mut ddim = Ddim::new(schedule(), &timesteps, Prediction::Eps, eta as f32, None).unwrap();
    let (x, eps) = (-1.1f64, 0.6f64);
    let sigma = eta * ((1.0 - ab(1)) / (1.0 - ab(3))).sqrt() * (1.0 - ab(3) / ab(1)).sqrt();
    let x0 = (x - (1.0 - ab(3)).sqrt() * eps) / ab(3).sqrt();
    let mut rng = Rng::new(5);
    let z = next_draw(&rng);
    let expected = ab(1).sqrt() * x0 + (1.0 - ab(1) - sigma * sigma).sqrt() * eps + sigma * z;
    let mut v = [x as f32];
    ddim.step(&mut v, &[eps as f32], &mut rng).unwrap();
    close(v[0], expected, "DDIM eta 0.8");
    // The last step lands on clean data with sigma = 0: no noise is drawn.
    let before = rng.clone();
    ddim.step(&mut v, &[0.1], &mut rng).unwrap();
    assert_eq!(rng, before, "the last DDIM step draws nothing");
    // eta = 1 is DDPM's posterior variance.
    let posterior = (1.0 - ab(1)) / (1.0 - ab(3)) * (1.0 - ab(3) / ab(1));
    assert!(((sigma / eta).powi(2) - posterior).abs() < 1e-12);
}

#[test]
fn ddpm_step_with_both_variances() {
    // Over timesteps 3 -> 1 the effective beta is 1 - ab_3 / ab_1 and alpha = ab_3 / ab_1:
    // x_prev = (x - beta / s eps) / sqrt(alpha) + rho z, rho^2 = beta or the posterior variance
    // beta (1 - ab_prev) / (1 - ab); the last step adds no noise.
    let timesteps = [3u32, 1];
    let (x, eps) = (0.9f64, -0.2f64);
    let alpha = ab(3) / ab(1);
    let beta = 1.0 - alpha;
    let mean = (x - beta / (1.0 - ab(3)).sqrt() * eps) / alpha.sqrt();
    for (variance, rho_sq) in [
        (ReverseVariance::Beta, beta),
        (
            ReverseVariance::Posterior,
            beta * (1.0 - ab(1)) / (1.0 - ab(3)),
        ),
    ] {
        let mut ddpm = Ddpm::new(schedule(), &timesteps, Prediction::Eps, variance, None).unwrap();
        let mut rng = Rng::new(9);
        let z = next_draw(&rng);
        let mut v = [x as f32];
        ddpm.step(&mut v, &[eps as f32], &mut rng).unwrap();
        close(
            v[0],
            mean + rho_sq.sqrt() * z,
            &format!("DDPM {variance:?}"),
        );
        // Last step, t = 1 -> clean: alpha = ab_1, no noise, and no draw taken.
        let before = rng.clone();
        let out = 0.35f64;
        let alpha = ab(1);
        let expected =
            (f64::from(v[0]) - (1.0 - alpha) / (1.0 - ab(1)).sqrt() * out) / alpha.sqrt();
        ddpm.step(&mut v, &[out as f32], &mut rng).unwrap();
        close(v[0], expected, &format!("DDPM {variance:?} last step"));
        assert_eq!(rng, before, "the last step draws nothing");
    }
}

#[test]
fn dpm_solver_first_second_order_and_final_steps() {
    // lambda = ln(a / s); h = lambda_next - lambda;
    // x_next = (s_next / s) x - a_next (e^{-h} - 1) D, D = x0 (first order) or
    // (1 + 1 / (2 r)) x0 - 1 / (2 r) x0_last with r = h_last / h; onto clean data x = x0.
    let lambda = |t: usize| (ab(t).sqrt() / (1.0 - ab(t)).sqrt()).ln();
    let x0_of = |x: f64, out: f64, t: usize| (x - (1.0 - ab(t)).sqrt() * out) / ab(t).sqrt();
    let outputs = [0.5f64, -0.3, 0.8, 0.1];
    // Four and three timesteps: the penultimate step is step 2 of 4 and step 1 of 3.
    for (timesteps, first_order_penultimate) in [
        (&[3u32, 2, 1, 0][..], false),
        (&[3u32, 2, 1, 0][..], true),
        (&[3u32, 1, 0][..], false),
        (&[3u32, 1, 0][..], true),
    ] {
        let mut scratch = [0.0f32];
        let mut dpm =
            DpmSolverPp2m::new(schedule(), timesteps, Prediction::Eps, None, &mut scratch)
                .unwrap()
                .with_first_order_penultimate(first_order_penultimate);
        let mut x = 1.3f64;
        let mut v = [x as f32];
        let mut last: Option<(f64, f64)> = None; // (x0, h) of the previous step
        for (k, &out) in outputs.iter().take(timesteps.len()).enumerate() {
            let t = timesteps[k] as usize;
            let x0 = x0_of(f64::from(v[0]), out, t);
            x = f64::from(v[0]);
            let expected = if k + 1 == timesteps.len() {
                x0
            } else {
                let next = timesteps[k + 1] as usize;
                let h = lambda(next) - lambda(t);
                let second =
                    last.is_some() && !(first_order_penultimate && k + 2 == timesteps.len());
                let d = match last {
                    Some((x0_last, h_last)) if second => {
                        let r = h_last / h;
                        (1.0 + 1.0 / (2.0 * r)) * x0 - 1.0 / (2.0 * r) * x0_last
                    }
                    _ => x0,
                };
                last = Some((x0, h));
                ((1.0 - ab(next)) / (1.0 - ab(t))).sqrt() * x
                    - ab(next).sqrt() * ((-h).exp() - 1.0) * d
            };
            dpm.step(&mut v, &[out as f32], &mut Rng::new(0)).unwrap();
            close(
                v[0],
                expected,
                &format!(
                    "DPM-Solver++ step {k}, first-order penultimate {first_order_penultimate}"
                ),
            );
        }
        assert_eq!(dpm.timestep(), None);
    }
}

#[test]
fn predictions_convert_and_clip_as_written() {
    // x0 and v outputs through DDIM (eta 0, t = 2 -> 1): x0-pred gives x0 directly and
    // eps = (x - a x0) / s; v-pred gives x0 = a x - s v and eps = s x + a v.
    let timesteps = [2u32, 1];
    let (a, s) = (ab(2).sqrt(), (1.0 - ab(2)).sqrt());
    let (a1, s1) = (ab(1).sqrt(), (1.0 - ab(1)).sqrt());
    let x = 0.4f64;
    let ddim_step = |prediction: Prediction, out: f64, clip: Option<f32>| {
        let mut ddim = Ddim::new(schedule(), &timesteps, prediction, 0.0, clip).unwrap();
        let mut v = [x as f32];
        ddim.step(&mut v, &[out as f32], &mut Rng::new(0)).unwrap();
        v[0]
    };
    let out = 0.25f64;
    close(
        ddim_step(Prediction::X0, out, None),
        a1 * out + s1 * (x - a * out) / s,
        "x0 prediction",
    );
    close(
        ddim_step(Prediction::V, out, None),
        a1 * (a * x - s * out) + s1 * (s * x + a * out),
        "v prediction",
    );
    // Clipping: eps-pred output 1.5 puts x0 = (0.4 - s 1.5) / a below -1; clipped to -1 and
    // eps recomputed from it, (x - a (-1)) / s.
    let out = 1.5f64;
    assert!((x - s * out) / a < -1.0);
    close(
        ddim_step(Prediction::Eps, out, Some(1.0)),
        -a1 + s1 * (x + a) / s,
        "clipped eps prediction",
    );
    // Inside the radius clipping changes nothing.
    let out = 0.1f64;
    assert_eq!(
        ddim_step(Prediction::Eps, out, Some(5.0)),
        ddim_step(Prediction::Eps, out, None)
    );
    // v prediction clipped: x0 = a x - s v clamped to 0.5.
    let out = -2.0f64;
    assert!(a * x - s * out > 0.5);
    close(
        ddim_step(Prediction::V, out, Some(0.5)),
        a1 * 0.5 + s1 * (x - a * 0.5) / s,
        "clipped v prediction",
    );
}

#[test]
fn langevin_drift_noise_level_scaling_and_final_denoising() {
    // sigma_i = sigma_max (sigma_min / sigma_max)^(i / (L - 1)), alpha_i = eps sigma_i^2 /
    // sigma_min^2, x <- x + alpha_i / 2 g + sqrt(alpha_i) z; the final step x <- x + sigma_min^2 g.
    let (sigma_max, sigma_min, levels, per_level, step) =
        (4.0f64, 0.25f64, 3usize, 2usize, 1e-3f64);
    let mut langevin =
        AnnealedLangevin::new(sigma_max, sigma_min, levels, per_level, step, true).unwrap();
    assert_eq!(langevin.num_steps(), levels * per_level + 1);
    let mut v = [0.2f32];
    let mut rng = Rng::new(17);
    let scores = [1.5f64, -0.5, 2.0, 0.3, -1.0, 0.7, 4.0];
    for (k, &g) in scores.iter().enumerate() {
        let x = f64::from(v[0]);
        let level = (k / per_level).min(levels - 1);
        let sigma = sigma_max * (sigma_min / sigma_max).powf(level as f64 / (levels - 1) as f64);
        assert!(
            (langevin.sigma().unwrap() - sigma).abs() < 1e-12,
            "step {k} level"
        );
        let expected = if k < levels * per_level {
            let alpha = step * (sigma / sigma_min).powi(2);
            x + alpha / 2.0 * g + alpha.sqrt() * next_draw(&rng)
        } else {
            x + sigma_min * sigma_min * g
        };
        assert_eq!(langevin.steps_taken(), k);
        langevin
            .step_with_score(&mut v, &[g as f32], &mut rng)
            .unwrap();
        close(v[0], expected, &format!("Langevin step {k}"));
    }
    assert_eq!(langevin.sigma(), None);
}

#[test]
fn langevin_as_a_sampler_takes_eps_at_its_level_index() {
    // The same run driven by eps = -sigma g through the Sampler trait, level indices counted
    // from sigma_min: 4.0, 1.0, 0.25 are levels 2, 1, 0.
    let make = || AnnealedLangevin::new(4.0, 0.25, 3, 2, 1e-3, true).unwrap();
    let (mut by_score, mut by_eps) = (make(), make());
    let (mut a, mut b) = ([0.2f32, -0.7], [0.2f32, -0.7]);
    let (mut rng_a, mut rng_b) = (Rng::new(3), Rng::new(3));
    let mut levels = Vec::new();
    while let Some(level) = by_eps.timestep() {
        levels.push(level);
        let sigma = by_score.sigma().unwrap();
        assert_eq!(by_eps.noise_levels().sigma(level as usize), sigma);
        let score = [0.5f32 - a[0], -0.3 - a[1]];
        let eps = [
            (-sigma * f64::from(score[0])) as f32,
            (-sigma * f64::from(score[1])) as f32,
        ];
        by_score
            .step_with_score(&mut a, &score, &mut rng_a)
            .unwrap();
        by_eps.step(&mut b, &eps, &mut rng_b).unwrap();
        for i in 0..2 {
            close(b[i], f64::from(a[i]), "Langevin by eps");
        }
    }
    assert_eq!(levels, [2, 2, 1, 1, 0, 0, 0]);
    assert_eq!(Sampler::num_steps(&by_eps), 7);
}

/// `(a_t, sigma_t = s_t / a_t)` of the four-step table.
fn ve(t: usize) -> (f64, f64) {
    let a = ab(t).sqrt();
    (a, (1.0 - ab(t)).sqrt() / a)
}

#[test]
fn predictor_corrector_corrector_and_predictor_steps() {
    // Timesteps 3 then 1, one corrector step each, v prediction (eps = s x + a v). On the
    // variance-exploding sample y = x / a with g = -eps / sigma: corrector
    // y + e g + sqrt(2e) w with e = 2 (r |w| / |g|)^2; predictor y + (s^2 - s'^2) g +
    // sqrt(s^2 - s'^2) w; the last predictor y - sigma eps with no noise; x = a y throughout.
    let timesteps = [3u32, 1];
    let snr = 0.2f64;
    let mut pc = PredictorCorrector::new(schedule(), &timesteps, Prediction::V, 1, snr).unwrap();
    assert_eq!(pc.num_steps(), 4);
    let mut x = [0.3f32, -1.1];
    let mut rng = Rng::new(9);
    let outputs = [[0.4f32, -0.2], [1.3, 0.6], [-0.5, 0.25], [0.7, -0.9]];
    let at = [3usize, 3, 1, 1];
    for (k, out) in outputs.iter().enumerate() {
        let t = at[k];
        assert_eq!(pc.timestep(), Some(t as u32), "step {k}");
        let (a, sigma) = ve(t);
        let s = (1.0 - ab(t)).sqrt();
        let v: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let eps: Vec<f64> = (0..2).map(|i| s * v[i] + a * f64::from(out[i])).collect();
        let y: Vec<f64> = v.iter().map(|v| v / a).collect();
        let g: Vec<f64> = eps.iter().map(|e| -e / sigma).collect();
        let mut draws = rng.clone();
        let w = [f64::from(draws.normal()), f64::from(draws.normal())];
        let expected: Vec<f64> = match k {
            0 | 2 => {
                let w_norm = (w[0] * w[0] + w[1] * w[1]).sqrt();
                let g_norm = (g[0] * g[0] + g[1] * g[1]).sqrt();
                let e = 2.0 * (snr * w_norm / g_norm).powi(2);
                (0..2)
                    .map(|i| a * (y[i] + e * g[i] + (2.0 * e).sqrt() * w[i]))
                    .collect()
            }
            1 => {
                let (a_next, sigma_next) = ve(1);
                let variance = sigma * sigma - sigma_next * sigma_next;
                (0..2)
                    .map(|i| a_next * (y[i] + variance * g[i] + variance.sqrt() * w[i]))
                    .collect()
            }
            _ => (0..2).map(|i| y[i] - sigma * eps[i]).collect(),
        };
        assert_eq!(pc.steps_taken(), k);
        pc.step(&mut x, out, &mut rng).unwrap();
        for i in 0..2 {
            close(x[i], expected[i], &format!("PC step {k}[{i}]"));
        }
    }
    assert_eq!(pc.timestep(), None);
    assert_eq!(pc.steps_taken(), pc.num_steps());
    assert!(pc.step(&mut x, &[0.0, 0.0], &mut rng).is_err());
    // The final denoised output is clamped, the steps before it are not.
    let mut clipped = PredictorCorrector::new(schedule(), &[1], Prediction::Eps, 0, snr)
        .unwrap()
        .with_clip_sample(Some(0.5))
        .unwrap();
    let mut y = [0.3f32, -0.2, 0.1];
    clipped
        .step(&mut y, &[-3.0, 3.0, 0.0], &mut Rng::new(2))
        .unwrap();
    let (a, sigma) = ve(1);
    assert_eq!([y[0], y[1]], [0.5, -0.5]);
    close(y[2], 0.1 / a - sigma * 0.0, "unclamped element");
    // A zero noise prediction takes no corrector step, and still draws its noise: the
    // predictor after it uses the draws that follow.
    let mut pc = PredictorCorrector::new(schedule(), &timesteps, Prediction::Eps, 1, snr).unwrap();
    let mut x = [0.3f32, -1.1];
    let mut rng = Rng::new(9);
    pc.step(&mut x, &[0.0, 0.0], &mut rng).unwrap();
    assert_eq!(x, [0.3, -1.1]);
    let mut skipped = Rng::new(9);
    skipped.normal();
    skipped.normal();
    assert_eq!(rng.normal(), skipped.normal());
}

#[test]
fn probability_flow_heun_steps_and_the_final_euler_step() {
    // Timesteps 3, 2, 0, eps prediction, on y = x / a: from sigma_3 to sigma_2 an Euler step
    // y' = y + (sigma_2 - sigma_3) eps1 and the Heun correction y + (sigma_2 - sigma_3)
    // (eps1 + eps2) / 2; from sigma_2 to sigma_0 likewise; then y - sigma_0 eps; x = a y.
    let timesteps = [3u32, 2, 0];
    let mut scratch = [0.0f32; 1];
    let mut ode = ProbabilityFlowHeun::new(schedule(), &timesteps, Prediction::Eps, &mut scratch)
        .unwrap()
        .with_clip_sample(Some(10.0))
        .unwrap();
    assert_eq!(ode.num_steps(), 5);
    let mut x = [0.8f32];
    let mut rng = Rng::new(1);
    let untouched = rng.clone();
    let eps = [0.3f64, -0.4, 0.9, 0.1, -1.2];
    let walk = [(3usize, 2usize), (2, 2), (2, 0), (0, 0), (0, 0)];
    let mut y = 0.8 / ve(3).0;
    for (k, &e) in eps.iter().enumerate() {
        let (from, to) = walk[k];
        let evaluated = [3u32, 2, 2, 0, 0][k];
        assert_eq!(ode.timestep(), Some(evaluated), "step {k}");
        let h = ve(to).1 - ve(from).1;
        let expected = match k {
            0 | 2 => ve(to).0 * (y + h * e),
            1 | 3 => {
                let (from, to) = if k == 1 { (3, 2) } else { (2, 0) };
                y += (ve(to).1 - ve(from).1) * (eps[k - 1] + e) / 2.0;
                ve(to).0 * y
            }
            _ => y - ve(0).1 * e,
        };
        assert_eq!(ode.steps_taken(), k);
        ode.step(&mut x, &[e as f32], &mut rng).unwrap();
        close(x[0], expected, &format!("Heun step {k}"));
    }
    assert_eq!(ode.timestep(), None);
    assert_eq!(
        rng.normal(),
        untouched.clone().normal(),
        "no noise is drawn"
    );
    // The final x0 estimate is clamped.
    let mut scratch = [0.0f32; 1];
    let mut ode = ProbabilityFlowHeun::new(schedule(), &[0], Prediction::Eps, &mut scratch)
        .unwrap()
        .with_clip_sample(Some(1.0))
        .unwrap();
    let mut x = [0.8f32];
    ode.step(&mut x, &[-4.0], &mut rng).unwrap();
    assert_eq!(x, [1.0]);
}

#[test]
fn noise_level_samplers_refuse_what_they_cannot_walk() {
    for timesteps in [&[][..], &[4], &[1, 2], &[1, 1]] {
        let pc = PredictorCorrector::new(schedule(), timesteps, Prediction::Eps, 1, 0.16);
        assert!(pc.is_err(), "{timesteps:?}");
        let mut scratch = [0.0f32];
        let ode = ProbabilityFlowHeun::new(schedule(), timesteps, Prediction::Eps, &mut scratch);
        assert!(ode.is_err(), "{timesteps:?}");
    }
    for snr in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        let pc = PredictorCorrector::new(schedule(), &[2, 0], Prediction::Eps, 1, snr);
        assert!(pc.is_err(), "{snr}");
    }
    let mut pc = PredictorCorrector::new(schedule(), &[2, 0], Prediction::Eps, 0, 0.16).unwrap();
    assert!(pc.step(&mut [0.0; 2], &[0.0; 3], &mut Rng::new(0)).is_err());
    let mut scratch = [0.0f32; 2];
    let mut ode =
        ProbabilityFlowHeun::new(schedule(), &[2, 0], Prediction::Eps, &mut scratch).unwrap();
    assert!(ode
        .step(&mut [0.0; 3], &[0.0; 3], &mut Rng::new(0))
        .is_err());
    for radius in [0.0f32, -1.0, f32::NAN] {
        assert!(
            PredictorCorrector::new(schedule(), &[2, 0], Prediction::Eps, 0, 0.16)
                .unwrap()
                .with_clip_sample(Some(radius))
                .is_err()
        );
    }
}

#[test]
fn loss_weights_follow_their_definitions_on_every_prediction() {
    let schedule = schedule();
    // Over the table the per-step beta_t = 1 - ab_t / ab_{t-1} (ab_{-1} = 1).
    let beta = |t: usize| 1.0 - ab(t) / if t == 0 { 1.0 } else { ab(t - 1) };
    let snr = |t: usize| ab(t) / (1.0 - ab(t));
    for t in 0..4 {
        let posterior = if t == 0 {
            beta(0)
        } else {
            beta(t) * (1.0 - ab(t - 1)) / (1.0 - ab(t))
        };
        for (variance, rho_sq) in [
            (ReverseVariance::Beta, beta(t)),
            (ReverseVariance::Posterior, posterior),
        ] {
            // beta^2 / (2 rho^2 (1 - beta)(1 - ab)) on the eps loss. At a fixed x_t an eps
            // error d gives an x0 error -(s / a) d and a v error d / a, so the same objective
            // weighs the x0 loss by SNR and the v loss by ab times the eps weight.
            let eps_weight = beta(t).powi(2) / (2.0 * rho_sq * (1.0 - beta(t)) * (1.0 - ab(t)));
            for (prediction, factor) in [
                (Prediction::Eps, 1.0),
                (Prediction::X0, snr(t)),
                (Prediction::V, ab(t)),
            ] {
                let ours = LossWeighting::Elbo(variance).weight(&schedule, t, prediction);
                let expected = eps_weight * factor;
                assert!(
                    (f64::from(ours) - expected).abs() <= 1e-6 * expected.max(1.0),
                    "ELBO {variance:?} {prediction:?} t={t}: {ours} vs {expected}"
                );
            }
        }
        // min-SNR-gamma (Hang et al. 2023): min(SNR, gamma) on x0, / SNR on eps,
        // / (SNR + 1) on v.
        let gamma = 2.0f64;
        let clamped = snr(t).min(gamma);
        for (prediction, expected) in [
            (Prediction::Eps, clamped / snr(t)),
            (Prediction::X0, clamped),
            (Prediction::V, clamped / (snr(t) + 1.0)),
        ] {
            let ours = LossWeighting::MinSnr {
                gamma: gamma as f32,
            }
            .weight(&schedule, t, prediction);
            assert!(
                (f64::from(ours) - expected).abs() <= 1e-6 * expected.max(1.0),
                "min-SNR {prediction:?} t={t}: {ours} vs {expected}"
            );
        }
        for prediction in [Prediction::Eps, Prediction::X0, Prediction::V] {
            assert_eq!(LossWeighting::Simple.weight(&schedule, t, prediction), 1.0);
        }
        // NCSN's weight: 1 on the eps loss, so the eps-loss factor on the others; it is
        // min-SNR with the clamp out of reach.
        for (prediction, expected) in [
            (Prediction::Eps, 1.0),
            (Prediction::X0, snr(t)),
            (Prediction::V, ab(t)),
        ] {
            let ours = LossWeighting::Ncsn.weight(&schedule, t, prediction);
            assert!(
                (f64::from(ours) - expected).abs() <= 1e-6 * expected.max(1.0),
                "NCSN {prediction:?} t={t}: {ours} vs {expected}"
            );
            let unclamped = LossWeighting::MinSnr { gamma: 1e30 }.weight(&schedule, t, prediction);
            assert!((ours - unclamped).abs() <= 1e-6 * ours.max(1.0));
        }
    }
}

#[test]
fn the_forward_process_is_the_closed_form() {
    // x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) e, per element, at every t.
    let (x0, e) = ([2.0f32, -0.5, 0.0], [0.3f32, 1.5, -2.0]);
    let mut out = [0.0f32; 3];
    for t in 0..4 {
        ddm_core::forward::add_noise(&schedule(), t, &x0, &e, &mut out).unwrap();
        for i in 0..3 {
            let expected = ab(t).sqrt() * f64::from(x0[i]) + (1.0 - ab(t)).sqrt() * f64::from(e[i]);
            close(out[i], expected, &format!("x_t at t={t}"));
        }
    }
    assert!(ddm_core::forward::add_noise(&schedule(), 0, &x0, &e[..2], &mut out).is_err());
}

#[test]
fn every_sampler_refuses_timesteps_it_cannot_walk() {
    use ddm_core::sampler::{SamplerConfig, SamplerKind};
    use ddm_core::timesteps::Spacing;
    // alpha_bar = 1 at t = 0 of this table: a "noisy" step with no noise.
    static CLEAN: [f32; 3] = [1.0, 0.5, 0.2];
    let clean = Schedule::new(&CLEAN).unwrap();
    let bad: [&[u32]; 5] = [&[], &[4, 1], &[3, 3], &[1, 2], &[2, 0]];
    for kind in [
        SamplerKind::Ddpm,
        SamplerKind::Ddim,
        SamplerKind::DpmSolverPp2m,
    ] {
        let config = SamplerConfig::with_spacing(kind, 2, Spacing::Leading);
        let build = |schedule: Schedule<'static>, timesteps: &'static [u32]| {
            let mut scratch = vec![0.0f32; 1];
            config
                .build(Prediction::Eps, schedule, timesteps, &mut scratch)
                .map(|sampler| (sampler.num_steps(), sampler.steps_taken()))
        };
        // Empty, beyond T, repeated, ascending.
        for &timesteps in &bad[..4] {
            assert!(
                build(schedule(), timesteps).is_err(),
                "{kind:?} {timesteps:?}"
            );
        }
        // A step at alpha_bar = 1 (here t = 0 of `clean`) is no noisy step to denoise.
        assert!(build(clean, bad[4]).is_err(), "{kind:?} alpha_bar = 1");
        assert!(build(clean, &[2, 1]).is_ok(), "{kind:?} inside");
        // The sampler counts what it is given and what it did.
        let mut scratch = vec![0.0f32; 1];
        let timesteps: &'static [u32] = &[3, 2, 0];
        let mut sampler = config
            .build(Prediction::Eps, schedule(), timesteps, &mut scratch)
            .unwrap();
        assert_eq!((sampler.num_steps(), sampler.steps_taken()), (3, 0));
        let mut x = [0.1f32];
        sampler.step(&mut x, &[0.2], &mut Rng::new(0)).unwrap();
        sampler.step(&mut x, &[0.2], &mut Rng::new(0)).unwrap();
        assert_eq!((sampler.num_steps(), sampler.steps_taken()), (3, 2));
        assert_eq!(sampler.timestep(), Some(0));
    }
}

#[test]
fn schedule_settings_are_refused_exactly_outside_their_bounds() {
    use ddm_core::schedule::{BetaSchedule, ScheduleConfig};
    let fill = |betas: BetaSchedule, train_steps: usize, zero_terminal_snr: bool| {
        let mut table = vec![0.0f32; train_steps];
        ScheduleConfig {
            betas,
            train_steps,
            zero_terminal_snr,
        }
        .fill_alphas_cumprod(&mut table)
        .map(|()| table)
    };
    let linear = |beta_start, beta_end| BetaSchedule::Linear {
        beta_start,
        beta_end,
    };
    let scaled = |beta_start, beta_end| BetaSchedule::ScaledLinear {
        beta_start,
        beta_end,
    };
    let sigmoid = |beta_start, beta_end| BetaSchedule::Sigmoid {
        beta_start,
        beta_end,
    };
    // 0 < start <= end < 1 for the three linear-like shapes; equal ends are allowed.
    for shape in [linear, scaled, sigmoid] {
        for (start, end) in [
            (0.0, 0.01),
            (-1e-4, 0.01),
            (0.02, 0.01),
            (1e-4, 1.0),
            (f64::NAN, 0.01),
        ] {
            assert!(
                fill(shape(start, end), 1000, false).is_err(),
                "({start}, {end})"
            );
        }
        assert!(fill(shape(0.01, 0.01), 1000, false).is_ok());
        assert!(fill(shape(1e-4, 0.999), 1000, false).is_ok());
    }
    // Cosine: s >= 0, 0 < max_beta <= 1 (s = 0 and max_beta = 1 allowed).
    for (s, max_beta) in [
        (-0.001, 0.999),
        (0.008, 0.0),
        (0.008, 1.001),
        (f64::NAN, 0.5),
    ] {
        let cosine = BetaSchedule::Cosine { s, max_beta };
        assert!(fill(cosine, 10, false).is_err(), "({s}, {max_beta})");
    }
    for (s, max_beta) in [(0.0, 0.999), (0.008, 1.0)] {
        assert!(fill(BetaSchedule::Cosine { s, max_beta }, 10, false).is_ok());
    }
    // One training step is a schedule (its beta is beta_start); zero is not, and zero-SNR
    // rescaling needs two.
    let one = fill(linear(1e-4, 0.02), 1, false).unwrap();
    assert!((f64::from(one[0]) - (1.0 - 0.1)).abs() < 1e-7, "{one:?}");
    assert!(fill(linear(1e-4, 0.02), 0, false).is_err());
    assert!(fill(BetaSchedule::cosine(), 1, true).is_err());
    assert!(fill(BetaSchedule::cosine(), 2, true).is_ok());
}

#[test]
fn schedule_quantities_follow_their_definitions() {
    let schedule = schedule();
    for t in 0..4 {
        let snr = ab(t) / (1.0 - ab(t));
        assert!(
            (schedule.log_snr(t) - snr.ln()).abs() < 1e-6,
            "log SNR at {t}"
        );
        let sigma = ((1.0 - ab(t)) / ab(t)).sqrt();
        assert!(
            (schedule.ve_sigma(t) - sigma).abs() < 1e-6 * sigma,
            "sigma at {t}"
        );
        // The timestep of a sigma is the nearest in log sigma: exact values map to their
        // step, values between two steps to the nearer one in log space.
        assert_eq!(schedule.timestep_for_ve_sigma(sigma), t);
        if t > 0 {
            let below = ((1.0 - ab(t - 1)) / ab(t - 1)).sqrt();
            let geometric = (below * sigma).sqrt();
            assert_eq!(schedule.timestep_for_ve_sigma(geometric * 1.01), t);
            assert_eq!(schedule.timestep_for_ve_sigma(geometric * 0.99), t - 1);
        }
    }
    assert_eq!(schedule.timestep_for_ve_sigma(1e-9), 0);
    assert_eq!(schedule.timestep_for_ve_sigma(1e9), 3);
}

#[test]
fn log_snr_spacing_clamps_a_clean_first_step() {
    use ddm_core::timesteps::{fill_timesteps, Spacing};
    // alpha_bar = 1 at t = 0 has infinite log-SNR; the spacing clamps it to 1 - 2^-24 and
    // spreads the steps as for that value.
    static CLEAN: [f32; 6] = [1.0, 0.9, 0.6, 0.3, 0.1, 0.01];
    static NEAR: [f32; 6] = [1.0 - 1.0 / 16_777_216.0, 0.9, 0.6, 0.3, 0.1, 0.01];
    assert!(NEAR[0] < 1.0);
    let (mut clean, mut near) = ([0u32; 4], [0u32; 4]);
    fill_timesteps(
        &Schedule::new(&CLEAN).unwrap(),
        Spacing::LogSnr,
        0,
        &mut clean,
    )
    .unwrap();
    fill_timesteps(
        &Schedule::new(&NEAR).unwrap(),
        Spacing::LogSnr,
        0,
        &mut near,
    )
    .unwrap();
    assert_eq!(clean, near);
    assert_eq!(clean[0], 5);
}
