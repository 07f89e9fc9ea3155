//! Class-conditional generation and transfer: classifier-free guidance on the exact mixture
//! oracle (class k is component k), a conditional MLP that learns the classes of a toy, the
//! command line (train, sample, eval), fine-tuning a run on new classes, and the errors.

use candle_core::{Device, Tensor};
use ddm::data::{self, toy, DatasetSpec, LoadOptions, Toy};
use ddm::guided::Guided;
use ddm::model::{forward, forward_conditional, MlpConfig, ModelConfig, Params};
use ddm::oracle::{MixtureDenoiser, MixtureSpec};
use ddm::sampling::{generate, SamplerChoice, SamplingOptions};
use ddm::schedule_args::ScheduleSpec;
use ddm::train::{DataConfig, Objective, RunConfig, TrainConfig, Trainer};
use ddm_core::Schedule;

/// Three well-separated components with different spreads and weights.
const SPEC: &str = r#"{"means": [[-2.0, 0.0], [2.0, 0.5], [0.0, 3.0]],
    "stds": [0.3, 0.6, 0.15], "weights": [0.5, 0.3, 0.2]}"#;
const MEANS: [[f32; 2]; 3] = [[-2.0, 0.0], [2.0, 0.5], [0.0, 3.0]];
const STDS: [f32; 3] = [0.3, 0.6, 0.15];

/// Per-axis mean and standard deviation of 2-D points.
fn moments(points: &[f32]) -> [(f64, f64); 2] {
    let n = (points.len() / 2) as f64;
    [0, 1].map(|axis| {
        let values: Vec<f64> = points
            .iter()
            .skip(axis)
            .step_by(2)
            .map(|&v| v.into())
            .collect();
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    })
}

/// Whether `points` look like component `k`: each axis's mean within 5 standard errors (plus
/// 0.02 of discretisation) of the component's, each axis's spread within 12% of its std.
/// With 2000 points the standard error of a mean is std / 45 and of a spread about 1.6%; the
/// samplers themselves narrow the tightest component (std 0.15) by up to 10% (DDPM's
/// "fixed small" reverse variance, DDIM's and DPM-Solver++'s discretisation).
fn check_component(points: &[f32], k: usize) -> Result<(), String> {
    let n = (points.len() / 2) as f64;
    let std = f64::from(STDS[k]);
    for (axis, (mean, spread)) in moments(points).into_iter().enumerate() {
        let expected = f64::from(MEANS[k][axis]);
        if (mean - expected).abs() > 5.0 * std / n.sqrt() + 0.02 {
            return Err(format!(
                "axis {axis}: mean {mean:.4}, component {k} has {expected}"
            ));
        }
        if (spread / std - 1.0).abs() > 0.12 {
            return Err(format!(
                "axis {axis}: spread {spread:.4}, component {k} has {std}"
            ));
        }
    }
    Ok(())
}

fn nearest_mean(point: &[f32], means: &[[f32; 2]]) -> usize {
    let distance = |m: &[f32; 2]| (point[0] - m[0]).powi(2) + (point[1] - m[1]).powi(2);
    (0..means.len())
        .min_by(|&a, &b| distance(&means[a]).total_cmp(&distance(&means[b])))
        .unwrap()
}

#[test]
fn guided_oracle_samples_each_requested_component_with_every_sampler() {
    let spec = MixtureSpec::from_json(SPEC).unwrap();
    let table = ScheduleSpec::default().alphas_cumprod().unwrap();
    let schedule = Schedule::new(&table).unwrap();
    let n = 2000;
    let samplers = [
        SamplingOptions::new(SamplerChoice::Ddpm, 1000),
        SamplingOptions::new(SamplerChoice::Ddim, 100),
        SamplingOptions::new(SamplerChoice::DpmppTwoM, 50),
    ];
    for options in &samplers {
        let mut oracle = MixtureDenoiser::new(&spec, schedule).unwrap();
        for k in 0..3u32 {
            let mut guided = Guided::new(&mut oracle, k, 1.0).unwrap();
            let samples = generate(&mut guided, schedule, options, n, n, None).unwrap();
            check_component(&samples, k as usize)
                .unwrap_or_else(|e| panic!("{:?} class {k}: {e}", options.sampler));
            // Bit for bit what the sampler gives on the component alone.
            let alone = MixtureSpec::from_json(&format!(
                r#"{{"means": [[{}, {}]], "stds": [{}], "weights": [1]}}"#,
                MEANS[k as usize][0], MEANS[k as usize][1], STDS[k as usize]
            ))
            .unwrap();
            let mut alone = MixtureDenoiser::new(&alone, schedule).unwrap();
            let reference = generate(&mut alone, schedule, options, n, n, None).unwrap();
            assert!(samples == reference, "{:?} class {k}", options.sampler);
        }
        // The check rejects the unconditional model: the mixture of all three.
        let unconditional = generate(&mut oracle, schedule, options, n, n, None).unwrap();
        for k in 0..3 {
            assert!(check_component(&unconditional, k).is_err(), "{k}");
        }
    }
}

#[test]
fn stronger_guidance_keeps_samples_in_their_class_and_tightens_them() {
    let spec = MixtureSpec::from_json(SPEC).unwrap();
    let table = ScheduleSpec::default().alphas_cumprod().unwrap();
    let schedule = Schedule::new(&table).unwrap();
    let mut oracle = MixtureDenoiser::new(&spec, schedule).unwrap();
    let options = SamplingOptions::new(SamplerChoice::Ddim, 50);
    for k in 0..3u32 {
        let spread = |scale: f32, oracle: &mut MixtureDenoiser| {
            let mut guided = Guided::new(oracle, k, scale).unwrap();
            let samples = generate(&mut guided, schedule, &options, 1000, 1000, None).unwrap();
            let inside = samples
                .chunks_exact(2)
                .filter(|p| nearest_mean(p, &MEANS) == k as usize)
                .count();
            // Class 1's spread reaches the boundary with the others in about 3 of 1000.
            assert!(
                inside >= 990,
                "class {k}, guidance {scale}: {inside} of 1000"
            );
            let [(_, x), (_, y)] = moments(&samples);
            x + y
        };
        let (plain, guided) = (spread(1.0, &mut oracle), spread(4.0, &mut oracle));
        // Guidance pushes away from the other components' share of the unconditional score,
        // which at low noise is the class's own: it sharpens the class, never widens it.
        assert!(
            guided <= plain * 1.01,
            "class {k}: spread {plain} -> {guided}"
        );
    }
}

fn conditional_toy_run(steps: u64) -> (RunConfig, data::Dataset) {
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
            classes: data.class_count().unwrap(),
        }),
        DataConfig::new(&spec, &options, &data),
        ScheduleSpec::default(),
        Objective::default(),
        TrainConfig {
            steps,
            batch_size: 256,
            lr: 3e-3,
            warmup_steps: 20,
            ema_decay: 0.99,
            label_dropout: 0.2,
            ..TrainConfig::default()
        },
    )
    .unwrap();
    (config, data)
}

#[test]
fn a_conditional_mlp_learns_the_classes_of_eight_gaussians() {
    let (config, data) = conditional_toy_run(800);
    assert_eq!(config.graph.classes(), Some(8));
    let mut trainer = Trainer::new(config, data, &Device::Cpu).unwrap();
    // Labels are dropped at the configured rate, to the "no class" label 8.
    let batch = trainer.batch(0).unwrap();
    let dropped = batch
        .class
        .as_ref()
        .unwrap()
        .iter()
        .filter(|&&y| y == 8)
        .count();
    assert!(
        (30..=75).contains(&dropped),
        "{dropped} of 256 labels dropped"
    );
    while !trainer.is_finished() {
        assert!(trainer.step().unwrap().applied);
    }
    let means: Vec<[f32; 2]> = toy::EIGHT_GAUSSIANS_MEANS
        .chunks_exact(2)
        .map(|m| [m[0], m[1]])
        .collect();
    let schedule = Schedule::new(trainer.alphas_cumprod()).unwrap();
    let options = SamplingOptions::new(SamplerChoice::Ddim, 20);
    let mut denoiser = trainer.denoiser(true).unwrap();
    let n = 200;
    for scale in [1.0, 3.0] {
        for k in 0..8u32 {
            let mut guided = Guided::new(&mut denoiser, k, scale).unwrap();
            let samples = generate(&mut guided, schedule, &options, n, n, None).unwrap();
            let hits = samples
                .chunks_exact(2)
                .filter(|p| nearest_mean(p, &means) == k as usize)
                .count();
            // Chance is 1/8; the trained model must put nearly all of them in the class.
            assert!(hits >= 180, "class {k}, guidance {scale}: {hits} of {n}");
        }
    }
    // Without a class the same network generates the whole toy.
    let samples = generate(&mut denoiser, schedule, &options, 800, 800, None).unwrap();
    let mut counts = [0usize; 8];
    for p in samples.chunks_exact(2) {
        counts[nearest_mean(p, &means)] += 1;
    }
    assert!(
        counts.iter().all(|&c| c >= 50),
        "unconditional modes {counts:?}"
    );
}

#[test]
fn class_embeddings_pick_rows_and_refuse_bad_labels() {
    let (config, _) = conditional_toy_run(1);
    let graph = &config.graph;
    let initial = Params::init(graph, 3, &Device::Cpu).unwrap();
    // The output layer starts at zero: give it weights so that the output shows the classes.
    let params = Params::from_tensors(initial.iter().map(|(name, tensor)| {
        let tensor = match name {
            "out.weight" => tensor.ones_like().unwrap(),
            _ => tensor.clone(),
        };
        (name.to_string(), tensor)
    }));
    let x = Tensor::from_vec(vec![0.1f32, -0.2, 0.3, 0.4], (2, 2), &Device::Cpu).unwrap();
    let t = Tensor::from_vec(vec![10u32, 500], 2, &Device::Cpu).unwrap();
    let rows = |y: Tensor| y.to_vec2::<f32>().unwrap();
    let run = |labels: Option<Vec<u32>>| {
        let labels = labels.map(|l| Tensor::from_vec(l, 2, &Device::Cpu).unwrap());
        forward_conditional(graph, &params, &x, &t, labels.as_ref(), None)
    };
    let unconditional = rows(forward(graph, &params, &x, &t, None).unwrap());
    assert_eq!(rows(run(None).unwrap()), unconditional);
    assert_eq!(rows(run(Some(vec![8, 8])).unwrap()), unconditional);
    let (a, b) = (
        rows(run(Some(vec![0, 3])).unwrap()),
        rows(run(Some(vec![0, 5])).unwrap()),
    );
    assert_eq!(a[0], b[0], "sample 0 asks for the same class");
    assert_ne!(a[1], b[1], "sample 1 asks for another class");
    assert_ne!(a[0], unconditional[0]);
    let err = run(Some(vec![9, 0])).unwrap_err().to_string();
    assert!(err.contains("class 9"), "{err}");
    let one = Tensor::from_vec(vec![0u32], 1, &Device::Cpu).unwrap();
    let err = forward_conditional(graph, &params, &x, &t, Some(&one), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("one class per sample"), "{err}");
}

/// Small, fast training runs: batch 16, two warm-up steps, a 4-sample preview at the end.
const QUICK: [&str; 10] = [
    "--batch-size",
    "16",
    "--warmup",
    "2",
    "--preview-every",
    "0",
    "--preview-samples",
    "4",
    "--preview-steps",
    "2",
];

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn ddm(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ddm"))
        .args(args)
        .output()
        .expect("the ddm binary runs")
}

fn succeeds(args: &[&str]) -> String {
    let output = ddm(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?}: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn fails_with(args: &[&str], needle: &str) {
    let output = ddm(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_command_line_trains_samples_and_refuses_conditional_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (run, plain, npy_path) = (path("run"), path("plain"), path("two.npy"));
    let train = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--dataset",
            "optdigits",
            "--model",
            "mlp",
            "--width",
            "32",
            "--depth",
            "1",
            "--steps",
            "20",
            "--out",
        ];
        args.push(out);
        args.extend_from_slice(&QUICK);
        args.extend_from_slice(extra);
        succeeds(&args);
    };
    train(&run, &["--conditional", "--label-dropout", "0.15"]);
    let config = std::fs::read_to_string(dir.path().join("run/config.json")).unwrap();
    assert!(config.contains(r#""classes": 10"#), "{config}");
    assert!(config.contains(r#""label_dropout": 0.15"#), "{config}");
    let sample = |extra: &[&str]| {
        let mut args = vec!["sample", "--checkpoint", run.as_str(), "--steps", "4"];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<String>>()
    };

    // One row per class in a grid; class after class in a .npy.
    let grid = path("grid.png");
    let out = succeeds(&strs(&sample(&[
        "--class", "all", "--num", "3", "--out", &grid,
    ])));
    assert!(out.contains("10 rows of 3"), "{out}");
    let image = image::open(&grid).unwrap();
    assert!(
        image.height() > 3 * image.width(),
        "{}x{}",
        image.width(),
        image.height()
    );
    succeeds(&strs(&sample(&[
        "--class", "2,7", "--num", "3", "--out", &npy_path,
    ])));
    let two = ddm::npy::read_f32(std::path::Path::new(&npy_path)).unwrap();
    assert_eq!(two.shape, vec![6, 1, 8, 8]);
    let guided_path = path("guided.npy");
    let args = sample(&[
        "--class",
        "2,7",
        "--num",
        "3",
        "--guidance",
        "4",
        "--out",
        &guided_path,
    ]);
    succeeds(&strs(&args));
    let guided = ddm::npy::read_f32(std::path::Path::new(&guided_path)).unwrap();
    assert_ne!(two.values, guided.values);

    // `ddm eval --class` scores samples against the real images of their class.
    let sevens = path("sevens.npy");
    succeeds(&strs(&sample(&[
        "--class", "7", "--num", "24", "--out", &sevens,
    ])));
    let report = succeeds(&[
        "eval",
        "--dataset",
        "optdigits",
        "--samples",
        &sevens,
        "--class",
        "7",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let accuracy = &report["metrics"]["class_accuracy"];
    let share = accuracy["samples"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share), "{report}");
    assert!(
        accuracy["floor"].as_f64().unwrap() > 0.9,
        "the classifier knows real sevens"
    );
    assert!(
        report["reference"].as_str().unwrap().contains("class 7"),
        "{report}"
    );
    fails_with(
        &[
            "eval",
            "--dataset",
            "optdigits",
            "--samples",
            &sevens,
            "--class",
            "10",
        ],
        "classes 0..9",
    );

    // Mistakes get clear errors.
    let bad = |extra: &[&str], needle: &str| fails_with(&strs(&sample(extra)), needle);
    bad(
        &["--class", "10", "--out", &npy_path],
        "outside the model's classes 0..9",
    );
    bad(
        &["--class", "seven", "--out", &npy_path],
        "not a class index",
    );
    bad(
        &["--class", "1", "--guidance", "0.5", "--out", &npy_path],
        "guidance",
    );
    bad(&["--guidance", "3", "--out", &npy_path], "--class");
    train(&plain, &[]);
    fails_with(
        &[
            "sample",
            "--checkpoint",
            &plain,
            "--class",
            "1",
            "--out",
            &npy_path,
        ],
        "unconditional",
    );
    let swiss = path("swiss");
    fails_with(
        &[
            "train",
            "--dataset",
            "toy:swissroll",
            "--model",
            "mlp",
            "--conditional",
            "--out",
            &swiss,
        ],
        "no labels",
    );
}

/// The blob of a conditional run carries its classes: `ddm sample --model --class` on the f32
/// blob follows `ddm sample --checkpoint --class` (the same sampler, seed and guidance), int8
/// generates every class, and the mistakes get clear errors.
#[test]
fn conditional_runs_export_and_generate_classes_from_the_blob() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let run = path("run");
    let mut args = vec![
        "train",
        "--dataset",
        "optdigits",
        "--model",
        "mlp",
        "--width",
        "32",
        "--depth",
        "1",
        "--steps",
        "30",
        "--conditional",
        "--out",
        &run,
    ];
    args.extend_from_slice(&QUICK);
    succeeds(&args);
    let sampler = ["--sampler", "ddim", "--steps", "4", "--spacing", "trailing"];
    let export = |precision: &str, out: &str| {
        let mut args = vec![
            "export",
            "--checkpoint",
            &run,
            "--precision",
            precision,
            "--calib",
            "20",
            "--out",
            out,
        ];
        args.extend_from_slice(&sampler);
        succeeds(&args)
    };
    let (f32_blob, int8_blob) = (path("f32.ddm"), path("int8.ddm"));
    export("f32", &f32_blob);
    let report = export("int8", &int8_blob);
    assert!(report.contains("class_embedding"), "{report}");
    let sample = |source: &[&str], extra: &[&str], out: &str| {
        let mut args = vec!["sample"];
        args.extend_from_slice(source);
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--seed", "3", "--out", out]);
        succeeds(&args)
    };
    let classes = ["--class", "1,8", "--num", "4", "--guidance", "2"];
    let (host, device) = (path("host.npy"), path("device.npy"));
    let mut flags = sampler.to_vec();
    flags.extend_from_slice(&classes);
    sample(&["--checkpoint", &run], &flags, &host);
    sample(&["--model", &f32_blob], &classes, &device);
    let host = ddm::npy::read_f32(std::path::Path::new(&host)).unwrap();
    let device = ddm::npy::read_f32(std::path::Path::new(&device)).unwrap();
    assert_eq!(device.shape, vec![8, 1, 8, 8]);
    let worst = host
        .values
        .iter()
        .zip(&device.values)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "f32 blob against the checkpoint: {worst}");
    // Guidance and the class change the blob's samples.
    let unguided = path("unguided.npy");
    sample(
        &["--model", &f32_blob],
        &["--class", "1,8", "--num", "4", "--guidance", "1"],
        &unguided,
    );
    let unguided = ddm::npy::read_f32(std::path::Path::new(&unguided)).unwrap();
    assert_ne!(unguided.values, device.values);
    assert_ne!(device.values[..64], device.values[4 * 64..5 * 64]);

    let grid = path("int8.png");
    let out = sample(
        &["--model", &int8_blob],
        &["--class", "all", "--num", "2"],
        &grid,
    );
    assert!(out.contains("10 rows of 2"), "{out}");

    fails_with(
        &[
            "sample", "--model", &int8_blob, "--class", "10", "--out", &grid,
        ],
        "outside the model's classes 0..9",
    );
    fails_with(
        &[
            "export",
            "--checkpoint",
            &run,
            "--precision",
            "int8",
            "--out",
            &path("other.ddm"),
            "--onnx",
            &path("run.onnx"),
        ],
        "no class input",
    );
    assert!(!dir.path().join("other.ddm").exists());
    let plain = path("plain");
    let mut args = vec![
        "train",
        "--dataset",
        "optdigits",
        "--model",
        "mlp",
        "--width",
        "32",
        "--depth",
        "1",
        "--steps",
        "5",
        "--out",
        &plain,
    ];
    args.extend_from_slice(&QUICK);
    succeeds(&args);
    let plain_blob = path("plain.ddm");
    succeeds(&[
        "export",
        "--checkpoint",
        &plain,
        "--precision",
        "f32",
        "--out",
        &plain_blob,
    ]);
    fails_with(
        &[
            "sample",
            "--model",
            &plain_blob,
            "--class",
            "1",
            "--out",
            &grid,
        ],
        "unconditional",
    );
}

#[test]
fn fine_tuning_starts_from_a_run_learns_new_classes_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (base, tuned, npy_path) = (path("base"), path("tuned"), path("nines.npy"));
    let mut common = vec!["--steps", "12", "--checkpoint-every", "4"];
    common.extend_from_slice(&QUICK);
    let mut args = vec![
        "train",
        "--dataset",
        "optdigits",
        "--only-classes",
        "0,1,2,3,4,5,6,7",
        "--model",
        "mlp",
        "--width",
        "32",
        "--depth",
        "1",
        "--conditional",
        "--out",
        &base,
    ];
    args.extend_from_slice(&common);
    succeeds(&args);
    let read = |run: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(format!("{run}/config.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let config = read(&base);
    assert_eq!(config["model"]["classes"], 8);
    assert_eq!(
        config["data"]["samples"], 1443,
        "1797 digits less 174 eights and 180 nines"
    );

    let mut args = vec![
        "train",
        "--dataset",
        "optdigits",
        "--only-classes",
        "8,9",
        "--limit",
        "100",
        "--init-from",
        &base,
        "--out",
        &tuned,
        "--stop-after",
        "4",
    ];
    args.extend_from_slice(&common);
    succeeds(&args);
    succeeds(&["train", "--resume", "--out", &tuned]);
    let config = read(&tuned);
    assert_eq!(
        config["model"]["classes"], 10,
        "the new classes join the old ones"
    );
    assert_eq!(config["data"]["samples"], 100);
    assert_eq!(
        config["data"]["subset"]["classes"],
        serde_json::json!([8, 9])
    );
    assert_eq!(config["init_from"]["step"], 12);
    assert_eq!(config["init_from"]["ema"], true);
    assert_eq!(config["schedule"], read(&base)["schedule"]);
    assert_eq!(config["progress"]["step"], 12);
    succeeds(&[
        "sample",
        "--checkpoint",
        &tuned,
        "--class",
        "9",
        "--num",
        "4",
        "--steps",
        "3",
        "--out",
        &npy_path,
    ]);

    // Another architecture or sample shape is refused.
    fails_with(
        &[
            "train",
            "--dataset",
            "optdigits",
            "--init-from",
            &base,
            "--width",
            "64",
            "--out",
            &path("wide"),
        ],
        "cannot be used with",
    );
    fails_with(
        &[
            "train",
            "--dataset",
            "toy:moons",
            "--init-from",
            &base,
            "--out",
            &path("moons"),
        ],
        "shape",
    );
    fails_with(
        &[
            "train",
            "--dataset",
            "optdigits",
            "--init-from",
            &path("missing"),
            "--out",
            &path("x"),
        ],
        "missing",
    );
}

/// `--freeze down-path` holds the UNet's input convolution and down levels at the source's
/// weights through a stop and a resume while the rest trains; a prefix that names nothing,
/// or freezing without `--init-from`, is refused.
#[test]
fn freezing_the_down_path_keeps_it_at_the_source() {
    use ddm::train::checkpoint::{read_config, read_weights, WeightSet};
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (base, tuned, bad) = (path("base"), path("tuned"), path("bad"));
    let mut args = vec![
        "train",
        "--dataset",
        "optdigits",
        "--model",
        "unet",
        "--width",
        "8",
        "--groups",
        "4",
        "--steps",
        "3",
        "--out",
        &base,
    ];
    args.extend_from_slice(&QUICK);
    succeeds(&args);
    let mut args = vec![
        "train",
        "--dataset",
        "optdigits",
        "--init-from",
        &base,
        "--freeze",
        "down-path",
        "--steps",
        "6",
        "--checkpoint-every",
        "2",
        "--stop-after",
        "2",
        "--out",
        &tuned,
    ];
    args.extend_from_slice(&QUICK);
    succeeds(&args);
    succeeds(&["train", "--resume", "--out", &tuned]);
    let source_config = read_config(std::path::Path::new(&base)).unwrap();
    let source = read_weights(std::path::Path::new(&base), &source_config, WeightSet::Ema).unwrap();
    let config = read_config(std::path::Path::new(&tuned)).unwrap();
    assert_eq!(config.progress.step, 6);
    assert_eq!(config.train.freeze, vec!["down-path".to_string()]);
    for set in [WeightSet::Model, WeightSet::Ema] {
        let weights = read_weights(std::path::Path::new(&tuned), &config, set).unwrap();
        let (mut frozen, mut moved) = (0, 0);
        for (name, tensor) in &weights {
            let same = tensor.data == source[name].data;
            if name.starts_with("conv_in.") || name.starts_with("down") {
                assert!(same, "{name} is frozen but changed ({set:?})");
                frozen += 1;
            } else if !same {
                moved += 1;
            }
        }
        assert!(frozen >= 4, "{frozen} frozen tensors");
        assert!(moved > 10, "only {moved} tensors trained");
    }
    let mut args = vec![
        "train",
        "--dataset",
        "optdigits",
        "--init-from",
        &base,
        "--freeze",
        "encoder",
        "--out",
        &bad,
    ];
    args.extend_from_slice(&QUICK);
    fails_with(
        &args,
        "--freeze encoder: no parameter of this model starts with it",
    );
    fails_with(
        &[
            "train",
            "--dataset",
            "optdigits",
            "--freeze",
            "down-path",
            "--out",
            &path("bad"),
        ],
        "--init-from",
    );
}
