//! The default int8 pipeline, end to end, as a new user runs it: `ddm train` with its defaults
//! (eps prediction, linear schedule; a small MLP so the test trains in seconds), `ddm export
//! --precision int8` with its defaults, then `ddm sample --model` against `ddm sample
//! --checkpoint` with the same sampler (the blob's default, DDIM in 10 steps), seed and count.
//!
//! What must hold: no int8 sample leaves the float samples' range by more than 10% of it, no
//! int8 sample strays far from its float twin (same initial noise), and the Frechet distance
//! (`ddm eval`) stays near the float model's. Before the tail probes of calibration
//! (`ddm::calibrate::tail_probes`), rare initial noises saturated the network's int8 ranges at
//! the first steps and their samples ran away: the export without probes is checked to fail
//! these same measures, so this test is known to catch that defect.

use std::path::Path;
use std::process::{Command, Output};

use ddm::npy;

fn ddm(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_ddm"))
        .args(args)
        .output()
        .expect("the ddm binary runs");
    assert!(
        output.status.success(),
        "ddm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn frechet_distance(samples: &Path) -> f64 {
    let output = ddm(&[
        "eval",
        "--dataset",
        "optdigits",
        "--samples",
        path_str(samples),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    report["metrics"]["fd"]["samples"].as_f64().unwrap()
}

/// How an int8 sample set compares with the float one.
#[derive(Debug)]
struct Comparison {
    /// Samples with a value outside the float samples' range widened by 10% of each end.
    outside: usize,
    /// Largest root-mean-square difference between an int8 sample and its float twin.
    worst_rms: f32,
    /// int8 Frechet distance over float's.
    fd_ratio: f64,
}

fn compare(int8: &Path, float: &Path) -> Comparison {
    let (a, b) = (npy::read_f32(int8).unwrap(), npy::read_f32(float).unwrap());
    assert_eq!(a.shape, b.shape);
    let low = b.values.iter().copied().fold(f32::INFINITY, f32::min);
    let high = b.values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (low, high) = (low - 0.1 * low.abs(), high + 0.1 * high.abs());
    let len = a.values.len() / a.rows();
    let mut outside = 0;
    let mut worst_rms = 0.0f32;
    for (x, y) in a.values.chunks(len).zip(b.values.chunks(len)) {
        if x.iter().any(|v| !(low..=high).contains(v)) {
            outside += 1;
        }
        let rms =
            (x.iter().zip(y).map(|(p, q)| (p - q) * (p - q)).sum::<f32>() / len as f32).sqrt();
        worst_rms = worst_rms.max(rms);
    }
    Comparison {
        outside,
        worst_rms,
        fd_ratio: frechet_distance(int8) / frechet_distance(float),
    }
}

#[test]
fn default_int8_export_keeps_every_sample_near_the_float_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let run = p("run");
    ddm(&[
        "--threads",
        "2",
        "train",
        "--dataset",
        "optdigits",
        "--model",
        "mlp",
        "--width",
        "128",
        "--depth",
        "2",
        "--time-dim",
        "32",
        "--steps",
        "6000",
        "--preview-every",
        "0",
        "--checkpoint-every",
        "6000",
        "--out",
        path_str(&run),
    ]);
    let (default, bare) = (p("int8.ddm"), p("no-probes.ddm"));
    let export = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "export",
            "--checkpoint",
            path_str(&run),
            "--precision",
            "int8",
            "--out",
            path_str(out),
        ];
        args.extend_from_slice(extra);
        ddm(&args);
    };
    export(&default, &[]);
    export(&bare, &["--calib-tail-sigma", "0"]);
    let seed = ["--num", "1000", "--seed", "1"];
    let float = p("float.npy");
    let mut args = vec![
        "sample",
        "--checkpoint",
        path_str(&run),
        "--sampler",
        "ddim",
        "--steps",
        "10",
        "--out",
        path_str(&float),
    ];
    args.extend_from_slice(&seed);
    ddm(&args);
    let sample_blob = |blob: &Path, out: &Path| {
        let mut args = vec![
            "--threads",
            "2",
            "sample",
            "--model",
            path_str(blob),
            "--out",
            path_str(out),
        ];
        args.extend_from_slice(&seed);
        ddm(&args);
    };
    let (int8, int8_bare) = (p("int8.npy"), p("int8-no-probes.npy"));
    sample_blob(&default, &int8);
    sample_blob(&bare, &int8_bare);

    let ours = compare(&int8, &float);
    println!("default export: {ours:?}");
    assert_eq!(ours.outside, 0, "{ours:?}");
    assert!(ours.worst_rms < 1.0, "{ours:?}");
    // Measured 0.97 here; 15% leaves room for another machine's training, not for a defect
    // (the export without probes scores about 5).
    assert!(ours.fd_ratio < 1.15, "{ours:?}");

    let without = compare(&int8_bare, &float);
    println!("export without tail probes: {without:?}");
    assert!(
        without.outside > 0 && without.fd_ratio > 1.5,
        "the defect this test guards against did not show: {without:?}"
    );
}
