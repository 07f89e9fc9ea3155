//! `ddm::eval` on real images with the committed classifiers: known degradations must score
//! worse than real images, and real images must score like the floor.

use std::path::Path;

use ddm::data::{self, DatasetSpec, LoadOptions, Split};
use ddm::eval::floor::disjoint_draw;
use ddm::eval::report::Value;
use ddm::eval::{evaluate, EvalOptions, Report, DEFAULT_EVAL_SEED};
use ddm::npy::Array;
use ddm_core::Rng;

const N: usize = 400;

fn scalar(report: &Report, key: &str, floor: bool) -> f64 {
    let metric = report
        .metric(key)
        .unwrap_or_else(|| panic!("no metric {key}"));
    let value = if floor {
        &metric.floor
    } else {
        &metric.samples
    };
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number"))
}

fn kid(report: &Report, floor: bool) -> (f64, f64) {
    let metric = report.metric("kid").unwrap();
    match if floor {
        &metric.floor
    } else {
        &metric.samples
    } {
        Value::MeanSe(v) => (v.mean, v.se),
        other => panic!("KID is {other:?}"),
    }
}

fn run(spec: &DatasetSpec, images: &[f32], side: usize) -> Report {
    let n = images.len() / (side * side);
    let array = Array {
        shape: vec![n, 1, side, side],
        values: images.to_vec(),
    };
    evaluate(spec, &array, Path::new("test.npy"), &EvalOptions::default()).unwrap()
}

fn add_noise(images: &[f32], std: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    images.iter().map(|v| v + std * rng.normal()).collect()
}

/// A 3x3 box blur of each `side x side` image (the mean over the neighbours inside it).
fn blur(images: &[f32], side: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(images.len());
    for image in images.chunks_exact(side * side) {
        for y in 0..side {
            for x in 0..side {
                let (mut sum, mut count) = (0.0, 0.0);
                for ny in y.saturating_sub(1)..(y + 2).min(side) {
                    for nx in x.saturating_sub(1)..(x + 2).min(side) {
                        sum += image[ny * side + nx];
                        count += 1.0;
                    }
                }
                out.push(sum / count);
            }
        }
    }
    out
}

/// optdigits digits that are in neither floor set (so "real samples" are fresh to A and B),
/// as `(images, labels)`.
fn optdigits_outside_the_floor() -> (Vec<f32>, Vec<u32>) {
    let all = data::optdigits::load().unwrap();
    let labels = all.labels.as_ref().unwrap();
    let sets = disjoint_draw(all.len(), N, DEFAULT_EVAL_SEED).unwrap();
    let mut used = vec![false; all.len()];
    for &i in sets.reference.iter().chain(&sets.stand_in) {
        used[i] = true;
    }
    let mut images = Vec::new();
    let mut kept = Vec::new();
    for i in (0..all.len()).filter(|&i| !used[i]) {
        images.extend_from_slice(all.sample(i));
        kept.push(labels[i]);
    }
    (images, kept)
}

#[test]
fn optdigits_metrics_rank_noise_blur_and_dropped_classes_worse_than_real() {
    let spec = DatasetSpec::Optdigits;
    let (fresh, labels) = optdigits_outside_the_floor();
    assert!(fresh.len() / 64 >= N, "{} fresh digits", fresh.len() / 64);
    let real = &fresh[..N * 64];

    let base = run(&spec, real, 8);
    let noisy = run(&spec, &add_noise(real, 0.25, 1), 8);
    let very_noisy = run(&spec, &add_noise(real, 0.75, 2), 8);
    let blurred = run(&spec, &blur(real, 8), 8);
    // Only digits 0..5, as many samples: five classes dropped.
    let kept: Vec<f32> = fresh
        .chunks_exact(64)
        .zip(&labels)
        .filter(|(_, &l)| l < 5)
        .flat_map(|(image, _)| image.iter().copied())
        .take(N * 64)
        .collect();
    assert_eq!(kept.len(), N * 64);
    let dropped = run(&spec, &kept, 8);

    // The floor is the same for every run (same n, same seed).
    let fd_floor = scalar(&base, "fd", true);
    assert_eq!(fd_floor, scalar(&noisy, "fd", true));

    // Frechet distance: real ~ floor < noisy < very noisy; blur and dropped classes worse.
    let fd = |r: &Report| scalar(r, "fd", false);
    assert!(
        fd(&base) < 2.0 * fd_floor,
        "real {} floor {fd_floor}",
        fd(&base)
    );
    assert!(fd(&base) < fd(&noisy) && fd(&noisy) < fd(&very_noisy));
    assert!(fd(&blurred) > 2.0 * fd(&base), "blur {}", fd(&blurred));
    assert!(fd(&dropped) > 2.0 * fd(&base), "dropped {}", fd(&dropped));

    // KID: real within 3 SE of 0 like the floor; the degradations far above.
    let (real_kid, real_se) = kid(&base, false);
    let (floor_kid, floor_se) = kid(&base, true);
    assert!(
        real_kid.abs() < 3.0 * real_se,
        "real KID {real_kid} ± {real_se}"
    );
    assert!(
        floor_kid.abs() < 3.0 * floor_se,
        "floor KID {floor_kid} ± {floor_se}"
    );
    for (name, report) in [
        ("noisy", &noisy),
        ("very noisy", &very_noisy),
        ("blurred", &blurred),
        ("dropped", &dropped),
    ] {
        let (mean, se) = kid(report, false);
        let combined = (se * se + real_se * real_se).sqrt();
        assert!(
            mean > real_kid + 3.0 * combined,
            "{name}: {mean} ± {se} vs real {real_kid} ± {real_se}"
        );
    }
    assert!(kid(&noisy, false).0 < kid(&very_noisy, false).0);

    // Label entropy: dropping half the classes costs about ln 2.
    let entropy = |r: &Report| scalar(r, "label_entropy", false);
    let entropy_floor = scalar(&base, "label_entropy", true);
    assert!((entropy(&base) - entropy_floor).abs() < 0.05);
    assert!(entropy(&base) > 2.25, "{}", entropy(&base));
    assert!(entropy(&dropped) < 5f64.ln() + 0.1, "{}", entropy(&dropped));
    match &dropped.metric("label_histogram").unwrap().samples {
        Value::Histogram(counts) => {
            assert_eq!(counts.iter().sum::<usize>(), N);
            assert!(counts[5..].iter().sum::<usize>() < N / 50, "{counts:?}");
        }
        other => panic!("{other:?}"),
    }

    // Nearest training image. optdigits has one set, which the diffusion model trains on:
    // the "real" digits here are in it (copies, distance 0); noise moves them away, and far
    // noise farther than a held-out real digit is (the floor).
    let nearest = |r: &Report| scalar(r, "nearest_train_l2", false);
    let nearest_floor = scalar(&base, "nearest_train_l2", true);
    assert_eq!(nearest(&base), 0.0);
    assert!(nearest(&base) < nearest(&noisy) && nearest(&noisy) < nearest(&very_noisy));
    assert!(nearest(&very_noisy) > nearest_floor, "{nearest_floor}");
    assert!(nearest(&blurred) > 0.0);
}

#[test]
fn copies_of_training_digits_have_nearest_distance_zero() {
    // The first N digits of A: A lies outside B, so each copy is in the reference.
    let all = data::optdigits::load().unwrap();
    let sets = disjoint_draw(all.len(), N, DEFAULT_EVAL_SEED).unwrap();
    let copies: Vec<f32> = sets
        .reference
        .iter()
        .flat_map(|&i| all.sample(i).iter().copied())
        .collect();
    let report = run(&DatasetSpec::Optdigits, &copies, 8);
    assert_eq!(scalar(&report, "nearest_train_l2", false), 0.0);
    assert!(scalar(&report, "nearest_train_l2", true) > 1.0);
    // Copies of A itself: FD exactly at its minimum.
    assert!(scalar(&report, "fd", false) < 1e-6);
    assert!(report
        .notes
        .iter()
        .any(|note| note.contains("no test split")));
}

#[test]
fn fashion_mnist_real_test_images_score_like_the_floor_and_noise_worse() {
    let spec = DatasetSpec::FashionMnist;
    let Ok(test) = data::load(
        &spec,
        &LoadOptions {
            split: Split::Test,
            ..LoadOptions::default()
        },
    ) else {
        eprintln!("note: Fashion-MNIST is not installed; skipping");
        return;
    };
    let n = 200;
    // Test images outside both floor sets.
    let sets = disjoint_draw(test.len(), n, DEFAULT_EVAL_SEED).unwrap();
    let mut used = vec![false; test.len()];
    for &i in sets.reference.iter().chain(&sets.stand_in) {
        used[i] = true;
    }
    let real: Vec<f32> = (0..test.len())
        .filter(|&i| !used[i])
        .take(n)
        .flat_map(|i| test.sample(i).iter().copied())
        .collect();
    let base = run(&spec, &real, 28);
    let noisy = run(&spec, &add_noise(&real, 0.5, 3), 28);
    assert_eq!(base.n, n);
    assert!(base.reference.contains("test split"), "{}", base.reference);
    assert!(base
        .nearest_reference
        .as_deref()
        .unwrap()
        .contains("60000 images of the fashion-mnist train split"));
    let fd_floor = scalar(&base, "fd", true);
    assert!(scalar(&base, "fd", false) < 2.0 * fd_floor);
    assert!(scalar(&noisy, "fd", false) > 3.0 * scalar(&base, "fd", false));
    let (real_kid, real_se) = kid(&base, false);
    assert!(real_kid.abs() < 3.0 * real_se, "{real_kid} ± {real_se}");
    let (noisy_kid, noisy_se) = kid(&noisy, false);
    assert!(noisy_kid > real_kid + 3.0 * (real_se * real_se + noisy_se * noisy_se).sqrt());
    assert!(scalar(&base, "label_entropy", false) > 2.1);
    let nearest = scalar(&base, "nearest_train_l2", false);
    let nearest_floor = scalar(&base, "nearest_train_l2", true);
    assert!(
        (nearest / nearest_floor - 1.0).abs() < 0.15,
        "{nearest} {nearest_floor}"
    );
    assert!(scalar(&noisy, "nearest_train_l2", false) > 1.5 * nearest);
}

#[test]
fn toys_report_their_four_metrics_beside_the_floor() {
    let spec: DatasetSpec = "toy:8gaussians".parse().unwrap();
    let n = 500;
    // Fresh points (another seed than the evaluation's) and a version missing two modes.
    let real = data::toy::generate(data::Toy::EightGaussians, n, 12345).unwrap();
    let array = |values: Vec<f32>| Array {
        shape: vec![values.len() / 2, 2],
        values,
    };
    let options = EvalOptions::default();
    let report = evaluate(
        &spec,
        &array(real.values.clone()),
        Path::new("t.npy"),
        &options,
    )
    .unwrap();
    let labels = real.labels.unwrap();
    let six: Vec<f32> = real
        .values
        .chunks_exact(2)
        .zip(&labels)
        .filter(|(_, &l)| l < 6)
        .flat_map(|(p, _)| p.iter().copied())
        .collect();
    let missing = evaluate(&spec, &array(six), Path::new("t.npy"), &options).unwrap();
    let coverage = |r: &Report, floor: bool| {
        let m = r.metric("mode_coverage").unwrap();
        match if floor { &m.floor } else { &m.samples } {
            Value::Coverage { covered, modes } => (*covered, *modes),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(coverage(&report, false), (8, 8));
    assert_eq!(coverage(&report, true), (8, 8));
    assert_eq!(coverage(&missing, false), (6, 8));
    for key in ["sliced_w2", "w2", "mmd_rbf"] {
        let real_value = scalar(&report, key, false);
        let floor = scalar(&report, key, true);
        let worse = scalar(&missing, key, false);
        assert!(
            worse > 2.0 * real_value.abs().max(floor.abs()),
            "{key}: {worse} vs {real_value}, {floor}"
        );
    }
    assert!(report.classifier.is_none());
    assert!(report.reference.contains("seed"));
}
