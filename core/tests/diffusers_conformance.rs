//! The samplers compute what diffusers' schedulers compute, step for step.
//!
//! `data/diffusers-reference.json` holds trajectories of diffusers' own `DDIMScheduler`,
//! `DDPMScheduler` and `DPMSolverMultistepScheduler` (their defaults unless a case names a
//! setting) on the exact noise prediction of a Gaussian mixture, written once by
//! `scripts/diffusers-reference.sh`. Every step gives the sample going in, the model output,
//! the noise drawn (from a port of [`Rng`], so ddm draws the same values) and the sample coming
//! out. Each step here starts from diffusers' sample and model output, so a step is checked on
//! identical inputs and an error cannot hide behind, or be blamed on, an earlier one; the
//! multistep solver's history is built from the same inputs, as diffusers builds its own.
//!
//! Tolerance: `1e-5` relative to the size of the step's terms. diffusers computes in float32
//! torch and ddm in f32 with f64 coefficients, so on well-conditioned steps the two agree to a
//! few float32 roundings of the result; where the update cancels large terms (an eps network's
//! `x0 = (x - s eps) / a` with `a` near 0, multiplied back by `a_prev`), both lose the same
//! digits and the tolerance scales with the terms, `a_prev / a (|x| + |out|)`.
//!
//! Also pinned: diffusers' `alphas_cumprod` of every beta schedule ddm shares with it (with
//! the zero-terminal-SNR rescaling), at timesteps from 0 to `T - 1`.

use ddm_core::loss_weight::ReverseVariance;
use ddm_core::sampler::{SamplerConfig, SamplerKind};
use ddm_core::schedule::{BetaSchedule, Schedule, ScheduleConfig};
use ddm_core::timesteps::Spacing;
use ddm_core::{Prediction, Rng, Sampler};
use serde_json::Value;

const RELATIVE: f64 = 1e-5;

fn reference() -> Value {
    serde_json::from_str(include_str!("data/diffusers-reference.json")).expect("valid JSON")
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_f64().expect("a number") as f32)
        .collect()
}

fn table(betas: BetaSchedule, zero_terminal_snr: bool) -> Vec<f32> {
    let mut table = vec![0.0f32; 1000];
    ScheduleConfig {
        betas,
        train_steps: 1000,
        zero_terminal_snr,
    }
    .fill_alphas_cumprod(&mut table)
    .unwrap();
    table
}

#[test]
fn schedules_match_diffusers() {
    let reference = reference();
    let schedules = reference["schedules"].as_object().unwrap();
    let cases = [
        ("linear", BetaSchedule::linear(), false),
        ("linear+zero_snr", BetaSchedule::linear(), true),
        ("scaled_linear", BetaSchedule::scaled_linear(), false),
        (
            "scaled_linear+zero_snr",
            BetaSchedule::scaled_linear(),
            true,
        ),
        ("squaredcos_cap_v2", BetaSchedule::cosine(), false),
        ("sigmoid", BetaSchedule::sigmoid(), false),
    ];
    assert_eq!(schedules.len(), cases.len());
    for (name, betas, zero_snr) in cases {
        let pinned = &schedules[name];
        let ours = table(betas, zero_snr);
        let timesteps = pinned["t"].as_array().unwrap();
        for (t, expected) in timesteps.iter().zip(floats(&pinned["alphas_cumprod"])) {
            let t = t.as_u64().unwrap() as usize;
            let (ours, expected) = (f64::from(ours[t]), f64::from(expected));
            // diffusers accumulates the product in float32, ddm in f64: 1e-5 relative covers
            // float32's accumulated rounding over 1000 factors, 1e-10 absolute the last steps
            // of the rescaled schedules (values near 1e-7 that float32 rounding cancels
            // into); zero stays exactly zero.
            assert!(
                (ours - expected).abs() <= 1e-5 * expected.abs() + 1e-10,
                "{name} t={t}: ddm {ours:e}, diffusers {expected:e}"
            );
        }
    }
}

/// ddm's settings for a reference case.
fn config(case: &Value, steps: usize, spacing: Spacing) -> SamplerConfig {
    let kind = match case["sampler"].as_str().unwrap() {
        "ddim" => SamplerKind::Ddim,
        "ddpm" => SamplerKind::Ddpm,
        "dpmpp-2m" => SamplerKind::DpmSolverPp2m,
        other => panic!("unknown sampler {other}"),
    };
    SamplerConfig {
        eta: case["eta"].as_f64().unwrap_or(0.0) as f32,
        variance: match case["variance"].as_str() {
            Some("fixed_large") => ReverseVariance::Beta,
            _ => ReverseVariance::Posterior,
        },
        clip_sample: case["clip"].as_f64().map(|r| r as f32),
        ..SamplerConfig::with_spacing(kind, steps as u32, spacing)
    }
}

#[test]
fn every_sampler_step_matches_diffusers() {
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 17);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let betas = match case["betas"].as_str().unwrap() {
            "linear" => BetaSchedule::linear(),
            "cosine" => BetaSchedule::cosine(),
            other => panic!("unknown schedule {other}"),
        };
        let prediction = match case["prediction"].as_str().unwrap() {
            "epsilon" => Prediction::Eps,
            "v_prediction" => Prediction::V,
            other => panic!("unknown prediction {other}"),
        };
        let spacing = match case["spacing"].as_str().unwrap() {
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            other => panic!("unknown spacing {other}"),
        };
        let alphas = table(betas, false);
        let schedule = Schedule::new(&alphas).unwrap();
        let expected: Vec<u32> = case["timesteps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        let config = config(case, expected.len(), spacing);
        // ddm's spacing gives diffusers' timesteps (DPM-Solver++ is handed ddm's leading
        // timesteps explicitly: diffusers' own "leading" differs between its schedulers).
        let mut timesteps = vec![0u32; expected.len()];
        config.timesteps(&schedule, &mut timesteps).unwrap();
        assert_eq!(timesteps, expected, "{name}: timesteps");

        let steps = case["steps"].as_array().unwrap();
        let len = floats(&steps[0]["x"]).len();
        let mut scratch = vec![0.0f32; config.scratch_len(len)];
        let mut sampler = config
            .build(prediction, schedule, &timesteps, &mut scratch)
            .unwrap();
        let mut rng = Rng::with_stream(case["seed"].as_u64().unwrap(), 1);
        for (k, step) in steps.iter().enumerate() {
            let t = step["t"].as_u64().unwrap() as u32;
            assert_eq!(sampler.timestep(), Some(t), "{name} step {k}");
            let (mut x, output) = (floats(&step["x"]), floats(&step["output"]));
            // The noise ddm will draw is the noise diffusers drew (when ddm draws at all: its
            // last step adds none, while diffusers' DDPM draws and scales by ~0 there).
            let noise = floats(&step["noise"]);
            let is_last = k + 1 == steps.len();
            if !noise.is_empty() && !is_last {
                let mut preview = rng.clone();
                for (i, &drawn) in noise.iter().enumerate() {
                    let ours = preview.normal();
                    assert!(
                        (ours - drawn).abs() <= 1e-6 * drawn.abs().max(1.0),
                        "{name} step {k}: draw {i} {ours} vs {drawn}"
                    );
                }
            }
            let x_in = x.clone();
            sampler.step(&mut x, &output, &mut rng).unwrap();
            let prev = floats(&step["prev"]);
            let level = |t: Option<u32>| {
                let alpha_bar = t.map_or(1.0, |t| schedule.alpha_bar(t as usize));
                alpha_bar.max(1e-30).sqrt()
            };
            let gain = level(timesteps.get(k + 1).copied()) / level(Some(t));
            for i in 0..x.len() {
                let terms = 1.0f64
                    .max(f64::from(prev[i].abs()))
                    .max(gain * f64::from(x_in[i].abs() + output[i].abs()));
                let error = f64::from(x[i] - prev[i]).abs();
                assert!(
                    error <= RELATIVE * terms,
                    "{name} step {k} (t = {t}) value {i}: ddm {} vs diffusers {} (error {error:e}, scale {terms:e})",
                    x[i],
                    prev[i]
                );
            }
        }
        assert_eq!(sampler.timestep(), None, "{name}: finished");
    }
}

/// The reference would catch the bug it was written for: DPM-Solver++ taking its second to
/// last step at first order (ddm's former behaviour, kept as an option) leaves diffusers'
/// trajectory by far more than the tolerance.
#[test]
fn the_first_order_penultimate_step_is_not_diffusers() {
    let reference = reference();
    let case = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "dpmpp-2m-linear-trailing-10")
        .unwrap();
    let alphas = table(BetaSchedule::linear(), false);
    let schedule = Schedule::new(&alphas).unwrap();
    let config = SamplerConfig {
        first_order_penultimate: true,
        ..config(case, 10, Spacing::Trailing)
    };
    let mut timesteps = [0u32; 10];
    config.timesteps(&schedule, &mut timesteps).unwrap();
    let steps = case["steps"].as_array().unwrap();
    let mut scratch = vec![0.0f32; 8];
    let mut sampler = config
        .build(Prediction::Eps, schedule, &timesteps, &mut scratch)
        .unwrap();
    let mut rng = Rng::new(0);
    let mut worst = 0.0f32;
    for step in steps {
        let (mut x, output) = (floats(&step["x"]), floats(&step["output"]));
        sampler.step(&mut x, &output, &mut rng).unwrap();
        for (a, b) in x.iter().zip(floats(&step["prev"])) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(worst > 1e-3, "differs by only {worst}");
}
