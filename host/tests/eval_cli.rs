//! `ddm eval` end to end: the text table and JSON beside the floor, and one-line errors for
//! bad sample files.

use std::path::Path;
use std::process::{Command, Output};

use ddm::data;
use ddm::npy;

fn ddm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddm"))
        .args(args)
        .output()
        .expect("the ddm binary runs")
}

fn eval(dataset: &str, samples: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "eval",
        "--dataset",
        dataset,
        "--samples",
        samples.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ddm(&args)
}

fn assert_one_line_failure(output: &Output, needles: &[&str]) {
    assert!(!output.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The last 300 optdigits digits as `[300, 1, 8, 8]`.
fn write_digits(path: &Path) {
    let all = data::optdigits::load().unwrap();
    let values = all.values[(all.len() - 300) * 64..].to_vec();
    npy::write_f32(path, &[300, 1, 8, 8], &values).unwrap();
}

#[test]
fn text_report_lists_each_metric_beside_its_floor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("digits.npy");
    write_digits(&path);
    let output = eval("optdigits", &path, &[]);
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("300 samples of optdigits"), "{text}");
    assert!(text.contains("floor: each metric between two disjoint real sets of 300"));
    assert!(text.contains("sha256 2682d9ae"), "{text}");
    let header = text.lines().find(|l| l.starts_with("metric")).unwrap();
    assert!(
        header.contains("samples") && header.contains("floor"),
        "{header}"
    );
    for label in [
        "Frechet distance",
        "KID",
        "label entropy (nats)",
        "predicted labels 0..9",
        "nearest training image (L2)",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(label)),
            "{label}: {text}"
        );
    }
    assert!(text.contains("no test split"), "{text}");
}

#[test]
fn json_report_has_samples_and_floor_for_each_metric() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("digits.npy");
    write_digits(&path);
    let output = eval("optdigits", &path, &["--json", "--num", "120"]);
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["dataset"], "optdigits");
    assert_eq!(json["n"], 120);
    assert_eq!(json["samples_in_file"], 300);
    let metrics = &json["metrics"];
    assert!(metrics["fd"]["samples"].as_f64().unwrap() >= 0.0);
    assert!(metrics["fd"]["floor"].as_f64().unwrap() > 0.0);
    assert!(metrics["kid"]["samples"]["mean"].is_f64());
    assert!(metrics["kid"]["floor"]["se"].as_f64().unwrap() > 0.0);
    assert!(metrics["label_entropy"]["samples"].as_f64().unwrap() > 2.0);
    let histogram = metrics["label_histogram"]["samples"].as_array().unwrap();
    assert_eq!(histogram.len(), 10);
    assert!(metrics["nearest_train_l2"]["floor"].as_f64().unwrap() > 0.0);
    assert_eq!(
        json["classifier"]["sha256"],
        "2682d9aea55cd1df216924f47458d4b976c43a367a28da25ce87f185b77db0d6"
    );
    assert_eq!(json["value_range"]["outside_unit_interval"], 0);
}

#[test]
fn toy_json_has_wasserstein_mmd_and_coverage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("moons.npy");
    let moons = data::toy::generate(data::Toy::Moons, 400, 99).unwrap();
    npy::write_f32(&path, &[400, 2], &moons.values).unwrap();
    let output = eval("toy:moons", &path, &["--json"]);
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let metrics = &json["metrics"];
    for key in ["sliced_w2", "w2", "mmd_rbf"] {
        assert!(metrics[key]["samples"].is_f64(), "{key}");
        assert!(metrics[key]["floor"].is_f64(), "{key}");
    }
    assert_eq!(metrics["mode_coverage"]["samples"]["covered"], 2);
    assert_eq!(metrics["mode_coverage"]["floor"]["modes"], 2);
    assert!(json["classifier"].is_null());
}

#[test]
fn bad_sample_files_are_one_line_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let wrong_shape = dir.path().join("wrong-shape.npy");
    npy::write_f32(&wrong_shape, &[30, 3], &[0.0; 90]).unwrap();
    assert_one_line_failure(
        &eval("optdigits", &wrong_shape, &[]),
        &["wrong-shape.npy", "[30, 3]", "[n, 1, 8, 8] or [n, 64]"],
    );
    assert_one_line_failure(
        &eval("fashion-mnist", &wrong_shape, &[]),
        &["wrong-shape.npy", "[n, 1, 28, 28] or [n, 784]"],
    );
    assert_one_line_failure(
        &eval("toy:moons", &wrong_shape, &[]),
        &["wrong-shape.npy", "[n, 2]"],
    );

    let nan = dir.path().join("nan.npy");
    let mut values = vec![0.0f32; 30 * 64];
    values[100] = f32::NAN;
    npy::write_f32(&nan, &[30, 64], &values).unwrap();
    assert_one_line_failure(&eval("optdigits", &nan, &[]), &["nan.npy", "NaN"]);

    let empty_file = dir.path().join("empty-file.npy");
    std::fs::write(&empty_file, b"").unwrap();
    assert_one_line_failure(
        &eval("optdigits", &empty_file, &[]),
        &["empty-file.npy", "not a valid .npy file"],
    );

    let empty_array = dir.path().join("empty-array.npy");
    npy::write_f32(&empty_array, &[0, 64], &[]).unwrap();
    assert_one_line_failure(
        &eval("optdigits", &empty_array, &[]),
        &["empty-array.npy", "empty"],
    );

    let missing = dir.path().join("missing.npy");
    assert_one_line_failure(&eval("optdigits", &missing, &[]), &["missing.npy"]);

    let few = dir.path().join("few.npy");
    npy::write_f32(&few, &[5, 2], &[0.0; 10]).unwrap();
    assert_one_line_failure(&eval("toy:moons", &few, &[]), &["few.npy", "at least 20"]);

    let digits = dir.path().join("digits.npy");
    write_digits(&digits);
    assert_one_line_failure(
        &eval("optdigits", &digits, &["--num", "301"]),
        &["--num 301", "300"],
    );
    assert_one_line_failure(
        &eval("folder:somewhere", &digits, &[]),
        &["optdigits, mnist, fashion-mnist and toy:NAME"],
    );
    let mnist_like = dir.path().join("mnist-like.npy");
    npy::write_f32(&mnist_like, &[30, 784], &[0.0; 30 * 784]).unwrap();
    assert_one_line_failure(
        &eval("mnist", &mnist_like, &[]),
        &["no committed classifier for mnist", "--classifier"],
    );
}

#[test]
fn an_explicit_classifier_file_is_used_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("digits.npy");
    write_digits(&path);
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let weights = manifest.join("classifiers/optdigits.safetensors");
    let output = eval(
        "optdigits",
        &path,
        &["--json", "--classifier", weights.to_str().unwrap()],
    );
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(json["classifier"]["source"]
        .as_str()
        .unwrap()
        .ends_with("optdigits.safetensors"));
    assert_eq!(
        json["classifier"]["sha256"],
        "2682d9aea55cd1df216924f47458d4b976c43a367a28da25ce87f185b77db0d6"
    );
    // Weights of the 28x28 network do not fit optdigits.
    let wrong = manifest.join("classifiers/fashion-mnist.safetensors");
    assert_one_line_failure(
        &eval(
            "optdigits",
            &path,
            &["--classifier", wrong.to_str().unwrap()],
        ),
        &[
            "fashion-mnist.safetensors",
            "tensor fc1.weight",
            "expected F32 [64, 128]",
        ],
    );
}

#[test]
fn train_classifier_writes_loadable_weights_and_their_hash() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.safetensors");
    let output = ddm(&[
        "train-classifier",
        "--dataset",
        "optdigits",
        "--epochs",
        "1",
        "--train-limit",
        "64",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let hash = ddm::eval::classifier::sha256_hex(&bytes);
    assert!(stdout.contains(&format!("sha256 {hash}")), "{stdout}");
    assert!(stdout.contains("test accuracy"), "{stdout}");
    ddm::eval::Classifier::load(ddm::eval::classifier::OPTDIGITS_ARCHITECTURE, &out).unwrap();
    assert_one_line_failure(
        &ddm(&[
            "train-classifier",
            "--dataset",
            "toy:moons",
            "--out",
            out.to_str().unwrap(),
        ]),
        &["toy:moons has no feature classifier"],
    );
}
