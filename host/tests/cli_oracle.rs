//! The `ddm schedule` and `ddm sample --oracle-gmm` commands, end to end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ddm::npy;

fn ddm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddm"))
        .args(args)
        .output()
        .expect("the ddm binary runs")
}

fn spec_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/eight-gaussians.json")
}

fn assert_one_line_failure(output: &Output, needle: &str) {
    assert!(!output.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn schedule_json_lists_timesteps_alphas_and_previous() {
    let output = ddm(&[
        "schedule",
        "--beta-schedule",
        "cosine",
        "--train-steps",
        "1000",
        "--steps",
        "4",
        "--spacing",
        "trailing",
        "--zero-snr",
        "--json",
    ]);
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let timesteps: Vec<i64> = serde_json::from_value(json["timesteps"].clone()).unwrap();
    let previous: Vec<i64> = serde_json::from_value(json["prev_timesteps"].clone()).unwrap();
    let alphas: Vec<f64> = serde_json::from_value(json["alphas_cumprod"].clone()).unwrap();
    assert_eq!(timesteps, vec![999, 749, 499, 249]);
    assert_eq!(previous, vec![749, 499, 249, -1]);
    // Zero terminal SNR: the first timestep (T - 1) has alpha-bar exactly 0.
    assert_eq!(alphas[0], 0.0);
    assert!(alphas.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn oracle_sampling_writes_the_mixture() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("samples.npy");
    let output = ddm(&[
        "sample",
        "--oracle-gmm",
        spec_path().to_str().unwrap(),
        "--sampler",
        "dpmpp-2m",
        "--steps",
        "20",
        "--num",
        "2000",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples = npy::read_f32(&out).unwrap();
    assert_eq!(samples.shape, vec![2000, 2]);
    // Every sample lies near the circle of radius 2 that carries the modes (stds <= 0.3).
    let near = samples
        .values
        .chunks(2)
        .filter(|v| ((v[0] * v[0] + v[1] * v[1]).sqrt() - 2.0).abs() < 1.0)
        .count();
    assert!(near > 1980, "{near} of 2000 near the circle");
}

#[test]
fn langevin_draws_the_mixture_and_clips_its_final_estimate() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_path();
    let sample = |clip: Option<&str>| {
        let out = dir.path().join(format!("langevin-{clip:?}.npy"));
        let mut args = vec![
            "sample",
            "--oracle-gmm",
            spec.to_str().unwrap(),
            "--sampler",
            "langevin",
            "--levels",
            "10",
            "--steps",
            "201",
            "--langevin-step-size",
            "1e-4",
            "--num",
            "500",
            "--out",
            out.to_str().unwrap(),
        ];
        if let Some(radius) = clip {
            args.extend(["--clip-sample", radius]);
        }
        let output = ddm(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        npy::read_f32(&out).unwrap().values
    };
    let free = sample(None);
    let near = free
        .chunks(2)
        .filter(|v| ((v[0] * v[0] + v[1] * v[1]).sqrt() - 2.0).abs() < 1.0)
        .count();
    assert!(near > 480, "{near} of 500 near the circle");
    assert!(free.iter().any(|v| v.abs() > 1.5));
    let clipped = sample(Some("1.5"));
    assert!(clipped.iter().all(|v| v.abs() <= 1.5));
    // The clamp acts on the final estimate only: inside the radius nothing changes.
    for (c, f) in clipped.iter().zip(&free) {
        assert_eq!(*c, f.clamp(-1.5, 1.5));
    }
}

#[test]
fn given_initial_noise_makes_ddim_reproducible_and_ddpm_seeded() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init.npy");
    let noise: Vec<f32> = (0..200)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    npy::write_f32(&init, &[100, 2], &noise).unwrap();
    let run = |sampler: &str, seed: &str, name: &str| {
        let out = dir.path().join(name);
        let output = ddm(&[
            "sample",
            "--oracle-gmm",
            spec_path().to_str().unwrap(),
            "--sampler",
            sampler,
            "--steps",
            "10",
            "--seed",
            seed,
            "--init-noise",
            init.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        npy::read_f32(&out).unwrap()
    };
    // DDIM with eta = 0 is a deterministic function of the initial noise.
    assert_eq!(run("ddim", "1", "a.npy"), run("ddim", "2", "b.npy"));
    // DDPM adds seeded noise: same seed same bits, other seed other samples.
    assert_eq!(run("ddpm", "1", "c.npy"), run("ddpm", "1", "d.npy"));
    assert_ne!(run("ddpm", "1", "e.npy"), run("ddpm", "2", "f.npy"));
    assert_eq!(run("ddim", "1", "g.npy").shape, vec![100, 2]);
}

#[test]
fn bad_input_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.npy");
    let out = out.to_str().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let malformed = write("malformed.json", "{\"means\": [[0, 1]], ");
    assert_one_line_failure(
        &ddm(&["sample", "--oracle-gmm", &malformed, "--out", out]),
        "malformed mixture spec",
    );
    let weights = write(
        "weights.json",
        r#"{"means": [[0], [1]], "stds": [1, 1], "weights": [0.7, 0.7]}"#,
    );
    assert_one_line_failure(
        &ddm(&["sample", "--oracle-gmm", &weights, "--out", out]),
        "weights sum to",
    );
    let init = dir.path().join("init.npy");
    npy::write_f32(&init, &[4, 3], &[0.0; 12]).unwrap();
    assert_one_line_failure(
        &ddm(&[
            "sample",
            "--oracle-gmm",
            spec_path().to_str().unwrap(),
            "--init-noise",
            init.to_str().unwrap(),
            "--out",
            out,
        ]),
        "expected [n, 2]",
    );
    assert_one_line_failure(
        &ddm(&[
            "sample",
            "--oracle-gmm",
            spec_path().to_str().unwrap(),
            "--sampler",
            "euler",
            "--out",
            out,
        ]),
        "invalid value 'euler'",
    );
    assert_one_line_failure(
        &ddm(&["sample", "--oracle-gmm", "/no/such/spec.json", "--out", out]),
        "/no/such/spec.json",
    );
    assert_one_line_failure(
        &ddm(&["schedule", "--steps", "2000", "--train-steps", "1000"]),
        "cannot choose 2000",
    );
    assert!(!Path::new(out).exists(), "a failed run wrote output");
}

/// `ddm sample --oracle-gmm SPEC` on a variance-exploding schedule from 0.01 to 5 over 1000
/// levels with `args`; the samples' values.
fn sample_ve(spec: &Path, out: &Path, args: &[&str]) -> Vec<f32> {
    let mut all = vec![
        "sample",
        "--oracle-gmm",
        spec.to_str().unwrap(),
        "--beta-schedule",
        "ve",
        "--sigma-max",
        "5",
        "--train-steps",
        "1000",
        "--num",
        "1000",
        "--seed",
        "5",
        "--out",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let output = ddm(&all);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    npy::read_f32(out).unwrap().values
}

#[test]
fn variance_exploding_samplers_draw_the_mixture() {
    // Every sampler over the levels of a variance-exploding schedule puts the samples on the
    // modes (radius 2, stds <= 0.3) in the mixture's proportions: the two modes at angle 0 and
    // pi carry 0.2 each.
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_path();
    for (name, args) in [
        ("pf-ode", &["--sampler", "pf-ode", "--steps", "100"][..]),
        (
            "reverse diffusion",
            &[
                "--sampler",
                "pc",
                "--pc-corrector-steps",
                "0",
                "--steps",
                "1000",
            ],
        ),
        (
            "langevin",
            &[
                "--sampler",
                "langevin",
                "--levels",
                "100",
                "--steps",
                "1000",
            ],
        ),
    ] {
        let values = sample_ve(&spec, &dir.path().join("ve.npy"), args);
        let near = values
            .chunks(2)
            .filter(|v| ((v[0] * v[0] + v[1] * v[1]).sqrt() - 2.0).abs() < 0.75)
            .count();
        assert!(near > 985, "{name}: {near} of 1000 near the circle");
        let east = values
            .chunks(2)
            .filter(|v| v[0] > 1.7 && v[1].abs() < 0.7)
            .count();
        // Binomial(1000, 0.2): standard deviation 12.6.
        assert!((140..260).contains(&east), "{name}: {east} at angle 0");
    }
}

#[test]
fn predictor_corrector_draws_a_mixture_of_images_size() {
    // The corrector's step comes from each sample's own norms, which concentrate in image
    // dimensions: 784 here (in 16 the state-dependent step inflates the variance by a third,
    // see `ddm_core::sampler::PredictorCorrector`). Two components at -m and +m (|m| = 3), weights 0.3 and 0.7, std 0.5.
    const DIM: usize = 784;
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("two.json");
    let offset = 3.0 / (DIM as f32).sqrt();
    let json = serde_json::json!({
        "means": [vec![-offset; DIM], vec![offset; DIM]],
        "stds": [0.5, 0.5],
        "weights": [0.3, 0.7],
    });
    std::fs::write(&spec, json.to_string()).unwrap();
    let values = sample_ve(
        &spec,
        &dir.path().join("pc.npy"),
        &["--sampler", "pc", "--steps", "500"],
    );
    let mut negative = 0;
    let mut squared = 0.0f64;
    for row in values.chunks(DIM) {
        let side: f32 = row.iter().sum::<f32>().signum();
        negative += usize::from(side < 0.0);
        squared += row
            .iter()
            .map(|&v| f64::from(v - side * offset).powi(2))
            .sum::<f64>();
    }
    // Binomial(1000, 0.3): standard deviation 14.5. The per-coordinate variance is 0.25 up to
    // the discretisation (0.257 in a reference simulation with batch norms, 0.258 with
    // per-sample ones); a sampler that leaves a tenth of sigma_max's noise or blurs the modes
    // lies far outside.
    assert!(
        (250..350).contains(&negative),
        "{negative} on the negative side"
    );
    let variance = squared / (1000 * DIM) as f64;
    assert!((variance - 0.255).abs() < 0.01, "variance {variance}");
}

#[test]
fn level_samplers_walk_a_variance_preserving_schedule_too_and_sigmas_need_ve() {
    // DDPM's linear schedule in its variance-exploding form (sigma 0.01 to 157).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.npy");
    let spec = spec_path();
    for args in [
        &["--sampler", "pf-ode", "--steps", "100"][..],
        &[
            "--sampler",
            "pc",
            "--pc-corrector-steps",
            "0",
            "--steps",
            "1000",
        ],
    ] {
        let mut all = vec![
            "sample",
            "--oracle-gmm",
            spec.to_str().unwrap(),
            "--num",
            "500",
            "--out",
            out.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        let output = ddm(&all);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let values = npy::read_f32(&out).unwrap().values;
        let near = values
            .chunks(2)
            .filter(|v| ((v[0] * v[0] + v[1] * v[1]).sqrt() - 2.0).abs() < 0.75)
            .count();
        assert!(near > 490, "{args:?}: {near} of 500 near the circle");
    }
    let output = ddm(&[
        "sample",
        "--oracle-gmm",
        spec.to_str().unwrap(),
        "--sigma-max",
        "5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_line_failure(&output, "apply to --beta-schedule ve only");
    let output = ddm(&["schedule", "--beta-schedule", "ve"]);
    assert_one_line_failure(&output, "needs --sigma-max");
}
