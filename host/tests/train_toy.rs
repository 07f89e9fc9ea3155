//! Training the MLP on a 2-D toy lowers the loss, and its DDIM samples land on the toy.

use candle_core::Device;
use ddm::data::{self, DatasetSpec, LoadOptions, Toy};
use ddm::model::{MlpConfig, ModelConfig};
use ddm::sampling::generate;
use ddm::schedule_args::ScheduleSpec;
use ddm::train::run::preview_sampling;
use ddm::train::{DataConfig, Objective, RunConfig, TrainConfig, Trainer};
use ddm_core::{Rng, Schedule};

/// Sliced 1-Wasserstein distance between two equally large 2-D point sets: the mean over
/// `directions` random unit vectors of the 1-D Wasserstein distance of the projections
/// (mean absolute difference of the sorted projections).
fn sliced_wasserstein(a: &[f32], b: &[f32], directions: usize, seed: u64) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut rng = Rng::new(seed);
    let mut total = 0.0;
    for _ in 0..directions {
        let angle = std::f64::consts::TAU * f64::from(rng.uniform());
        let (c, s) = (angle.cos(), angle.sin());
        let project = |points: &[f32]| {
            let mut p: Vec<f64> = points
                .chunks_exact(2)
                .map(|v| c * f64::from(v[0]) + s * f64::from(v[1]))
                .collect();
            p.sort_by(f64::total_cmp);
            p
        };
        let (pa, pb) = (project(a), project(b));
        total += pa.iter().zip(&pb).map(|(x, y)| (x - y).abs()).sum::<f64>() / pa.len() as f64;
    }
    total / directions as f64
}

#[test]
fn mlp_learns_eight_gaussians() {
    let spec = DatasetSpec::Toy(Toy::EightGaussians);
    let options = LoadOptions {
        toy_samples: 4000,
        seed: 1,
        ..LoadOptions::default()
    };
    let data = data::load(&spec, &options).unwrap();
    let config = RunConfig::new(
        ModelConfig::Mlp(MlpConfig {
            hidden: 128,
            blocks: 2,
            time_dim: 32,
            norm_groups: 0,
            classes: 0,
        }),
        DataConfig::new(&spec, &options, &data),
        ScheduleSpec::default(),
        Objective::default(),
        TrainConfig {
            steps: 600,
            batch_size: 256,
            lr: 3e-3,
            warmup_steps: 20,
            ema_decay: 0.99,
            ..TrainConfig::default()
        },
    )
    .unwrap();
    let mut trainer = Trainer::new(config, data, &Device::Cpu).unwrap();
    while !trainer.is_finished() {
        assert!(trainer.step().unwrap().applied);
    }
    let losses = &trainer.config().progress.losses;
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    let (first, last) = (mean(&losses[..10]), mean(&losses[550..]));
    // The untrained model outputs 0, so the eps loss starts at E|eps|^2 = 1.
    assert!(
        losses[0] > 0.8 && losses[0] < 1.2,
        "first loss {}",
        losses[0]
    );
    assert!(last < 0.6 * first, "loss {first} -> {last}");

    let n = 1000;
    let mut noise = vec![0.0f32; 2 * n];
    Rng::new(99).fill_normal(&mut noise);
    let mut denoiser = trainer.denoiser(true).unwrap();
    let schedule = Schedule::new(trainer.alphas_cumprod()).unwrap();
    let samples = generate(
        &mut denoiser,
        schedule,
        &preview_sampling(20),
        n,
        n,
        Some(&noise),
    )
    .unwrap();
    let reference = data::toy::generate(Toy::EightGaussians, n, 7)
        .unwrap()
        .values;
    let other = data::toy::generate(Toy::EightGaussians, n, 8)
        .unwrap()
        .values;
    // A Gaussian with the toy's mean and per-axis spread: what a model that learnt only the
    // first two moments would give.
    let moments = |axis: usize| {
        let values: Vec<f32> = reference.iter().skip(axis).step_by(2).copied().collect();
        let mean = values.iter().sum::<f32>() / n as f32;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n as f32;
        (mean, var.sqrt())
    };
    let (moment_x, moment_y) = (moments(0), moments(1));
    let gaussian: Vec<f32> = noise
        .chunks_exact(2)
        .flat_map(|e| {
            [
                moment_x.0 + moment_x.1 * e[0],
                moment_y.0 + moment_y.1 * e[1],
            ]
        })
        .collect();
    let sw = |points: &[f32]| sliced_wasserstein(points, &reference, 64, 5);
    let (to_samples, to_noise, to_gaussian, floor) =
        (sw(&samples), sw(&noise), sw(&gaussian), sw(&other));
    eprintln!(
        "sliced W1 to the toy: samples {to_samples:.4}, initial noise {to_noise:.4}, \
         moment-matched Gaussian {to_gaussian:.4}, another draw of the toy {floor:.4}"
    );
    // Margins: two draws of the toy differ by sampling error alone (the floor, ~0.02); the
    // initial noise is ~0.3 away. Samples must close at least 3/4 of the gap from the noise
    // to the floor, and beat the moment-matched Gaussian by half its excess over the floor:
    // the model must have learnt the eight modes, not just the ring's scale.
    assert!(
        to_samples < floor + 0.25 * (to_noise - floor),
        "{to_samples} vs noise {to_noise}"
    );
    assert!(
        to_samples < floor + 0.5 * (to_gaussian - floor),
        "{to_samples} vs Gaussian {to_gaussian}"
    );
    assert!(
        floor < to_samples,
        "the floor {floor} bounds what a model can reach"
    );
}
