//! `ddm export` and `ddm sample --model`, end to end on briefly trained checkpoints: the
//! report's numbers, deterministic blobs and samples, the device runtime on the host against
//! candle, timestep-aware calibration against the runtime's own, ONNX in tract against
//! candle, and one-line errors for bad inputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use ddm::calibrate::{calibrate, CalibrationRun, TimestepWeighting};
use ddm::data::{self, DatasetSpec, LoadOptions};
use ddm::export::{default_export_sampling, sampler_config, schedule_spec};
use ddm::model::params::dense_random_weights;
use ddm::model::{forward, MlpConfig, ModelConfig, Params, UnetConfig};
use ddm::npy;
use ddm::sampling::SamplingOptions;
use ddm::schedule_args::{BetaScheduleName, ScheduleSpec};
use ddm::train::checkpoint::{self, WeightSet};
use ddm::train::{
    DataConfig, LossWeightSpec, Objective, PredictionType, RunConfig, TrainConfig, Trainer,
};
use ddm_core::{Rng, SamplerOptions};
use ddm_export::graph::{Graph, GraphBuilder};
use ddm_export::onnx::OnnxPrecision;
use ddm_export::reference::calibrate_with_sampler;
use ddm_export::{Calibration, CalibrationConfig};
use ddm_firmware::{required_arena_bytes, Blob, Precision};
use tempfile::TempDir;

fn ddm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddm"))
        .args(args)
        .output()
        .expect("the ddm binary runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The command failed with a one-line message containing `needle`, without a panic.
fn assert_one_line_failure(output: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "expected failure, got {stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
}

/// `1234567` as `1,234,567`, as the report prints numbers.
fn grouped(value: usize) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// A briefly trained run on the 8x8 digits: v-prediction on the cosine schedule (so the blob
/// must carry schedule and prediction type correctly to match the checkpoint).
fn train(model: ModelConfig, steps: u64, batch_size: usize) -> TempDir {
    let spec = DatasetSpec::Optdigits;
    let options = LoadOptions::default();
    let data = data::load(&spec, &options).unwrap();
    let config = RunConfig::new(
        model,
        DataConfig::new(&spec, &options, &data),
        ScheduleSpec {
            beta_schedule: BetaScheduleName::Cosine,
            ..ScheduleSpec::default()
        },
        Objective {
            prediction: PredictionType::V,
            loss_weight: LossWeightSpec::Simple,
        },
        TrainConfig {
            steps,
            batch_size,
            lr: 2e-3,
            warmup_steps: 20,
            ema_decay: 0.99,
            ..TrainConfig::default()
        },
    )
    .unwrap();
    let mut trainer = Trainer::new(config, data, &Device::Cpu).unwrap();
    for _ in 0..steps {
        trainer.step().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(dir.path(), &trainer.checkpoint().unwrap()).unwrap();
    dir
}

/// A small MLP with GroupNorm, 300 steps (shared by the tests).
fn mlp_run() -> &'static Path {
    static RUN: OnceLock<TempDir> = OnceLock::new();
    RUN.get_or_init(|| {
        train(
            ModelConfig::Mlp(MlpConfig {
                hidden: 64,
                blocks: 2,
                time_dim: 16,
                norm_groups: 4,
                classes: 0,
            }),
            300,
            64,
        )
    })
    .path()
}

fn tiny_unet_config() -> UnetConfig {
    UnetConfig {
        channels: 8,
        channel_mults: vec![1, 2],
        blocks_per_level: 1,
        groups: 4,
        classes: 0,
    }
}

/// A tiny UNet, 20 steps (shared by the tests).
fn unet_run() -> &'static Path {
    static RUN: OnceLock<TempDir> = OnceLock::new();
    RUN.get_or_init(|| train(ModelConfig::Unet(tiny_unet_config()), 20, 16))
        .path()
}

/// The sampler options of these tests, for `ddm export` and `ddm sample`.
const SAMPLER: [&str; 8] = [
    "--sampler",
    "ddim",
    "--steps",
    "8",
    "--spacing",
    "trailing",
    "--clip-sample",
    "1",
];

fn export(run: &Path, precision: &str, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "export",
        "--checkpoint",
        path_str(run),
        "--precision",
        precision,
        "--calib",
        "16",
        "--out",
        path_str(out),
    ];
    args.extend_from_slice(&SAMPLER);
    args.extend_from_slice(extra);
    stdout(&ddm(&args))
}

/// Samples 12 with seed 5 from `source` (`--checkpoint` or `--model`) into `out`.
fn sample(source: &str, path: &Path, out: &Path, extra: &[&str]) -> Vec<f32> {
    sample_seeded(source, path, out, "5", extra)
}

fn sample_seeded(source: &str, path: &Path, out: &Path, seed: &str, extra: &[&str]) -> Vec<f32> {
    let mut args = vec![
        "sample",
        source,
        path_str(path),
        "--num",
        "12",
        "--seed",
        seed,
        "--out",
        path_str(out),
    ];
    args.extend_from_slice(extra);
    stdout(&ddm(&args));
    npy::read_f32(out).unwrap().values
}

fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

fn mean_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}

#[test]
fn export_reports_the_blob_and_is_deterministic() {
    let run = mlp_run();
    let config = checkpoint::read_config(run).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (blob_path, again_path) = (dir.path().join("a.ddm"), dir.path().join("b.ddm"));
    let onnx_path = dir.path().join("model.onnx");
    let report = export(run, "int8", &blob_path, &["--onnx", path_str(&onnx_path)]);
    export(run, "int8", &again_path, &[]);
    let bytes = std::fs::read(&blob_path).unwrap();
    assert_eq!(bytes, std::fs::read(&again_path).unwrap(), "deterministic");

    let blob = Blob::parse(&bytes).unwrap();
    assert_eq!(blob.precision(), Precision::Int8);
    assert_eq!(blob.macs(), config.graph.macs());
    let defaults = blob.sampler_defaults();
    assert_eq!((defaults.steps, defaults.clip_sample), (8, Some(1.0)));
    let expect = [
        format!(
            "parameters       {}",
            grouped(config.graph.parameter_count())
        ),
        format!("MACs per call    {}", grouped(config.graph.macs() as usize)),
        format!("flash            {} bytes", grouped(bytes.len())),
        format!(
            "arena            {} bytes",
            grouped(required_arena_bytes(&blob).unwrap())
        ),
        "calibrated on 16 trajectories".to_string(),
        "8 timesteps from 999 to".to_string(),
        "SQNR against f32 on 32 calibration inputs".to_string(),
        "DDIM, 8 steps, trailing spacing, eta 0, clip 1".to_string(),
    ];
    for line in &expect {
        assert!(report.contains(line.as_str()), "{line:?} not in\n{report}");
    }
    // One SQNR row per node, every one measured.
    for node in &config.graph.nodes {
        let row = report
            .lines()
            .find(|l| l.split_whitespace().next() == Some(node.name.as_str()))
            .unwrap_or_else(|| panic!("no row for {} in\n{report}", node.name));
        let sqnr: f64 = row.split_whitespace().last().unwrap().parse().unwrap();
        assert!(sqnr > 10.0, "{row}");
    }
    // The ONNX file holds the float parameters.
    let onnx = std::fs::read(&onnx_path).unwrap();
    assert!(onnx.len() > 4 * config.graph.parameter_count());

    // f32 and fp16 blobs: no calibration for f32, and the sizes follow the precision.
    let f32_report = export(run, "f32", &dir.path().join("f32.ddm"), &[]);
    assert!(!f32_report.contains("calibrated"), "{f32_report}");
    assert!(!f32_report.contains("SQNR"), "{f32_report}");
    let fp16_report = export(run, "fp16", &dir.path().join("f16.ddm"), &[]);
    assert!(fp16_report.contains("SQNR"), "{fp16_report}");
    let one = export(
        run,
        "int8",
        &dir.path().join("one.ddm"),
        &["--time-groups", "1"],
    );
    let size = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap().len();
    assert!(size("one.ddm") < size("f16.ddm") && size("f16.ddm") < size("f32.ddm"));
    // One set of int8 activation parameters per step by default: the report gives their
    // flash, the difference to one set.
    assert_eq!(blob.time_groups(), 8);
    assert!(!one.contains("time groups"), "{one}");
    let groups_line = format!(
        "time groups      8 (activation parameters per range of timesteps: {} bytes of flash",
        grouped((size("a.ddm") - size("one.ddm")) as usize)
    );
    assert!(
        report.contains(&groups_line),
        "{groups_line:?} not in\n{report}"
    );
    // A flash budget between one set and eight: as many groups as fit, and it says so.
    let budget = (size("one.ddm") + size("a.ddm")) / 2;
    let capped = export(
        run,
        "int8",
        &dir.path().join("capped.ddm"),
        &["--flash-budget", &budget.to_string()],
    );
    let capped_groups = Blob::parse(&std::fs::read(dir.path().join("capped.ddm")).unwrap())
        .unwrap()
        .time_groups();
    assert!((2..8).contains(&capped_groups), "{capped}");
    assert!(size("capped.ddm") <= budget);
    assert!(
        capped.contains(&format!(
            "time groups limited to {capped_groups} of 8 by --flash-budget {budget}"
        )),
        "{capped}"
    );
}

#[test]
fn the_runtime_on_the_host_matches_candle_and_is_deterministic() {
    for (name, run) in [("mlp", mlp_run()), ("unet", unet_run())] {
        let dir = tempfile::tempdir().unwrap();
        let p = |file: &str| dir.path().join(file);
        export(run, "f32", &p("f32.ddm"), &[]);
        export(run, "fp16", &p("f16.ddm"), &[]);
        export(run, "int8", &p("int8.ddm"), &[]);
        let float = sample("--checkpoint", run, &p("float.npy"), &SAMPLER);
        // The blobs' defaults are the same sampler.
        let from_f32 = sample("--model", &p("f32.ddm"), &p("f32.npy"), &[]);
        let from_f16 = sample("--model", &p("f16.ddm"), &p("f16.npy"), &[]);
        let from_int8 = sample("--model", &p("int8.ddm"), &p("int8.npy"), &[]);
        // Same noise, same sampler code: the f32 blob differs from candle only by the
        // kernels' rounding (f32 sums in another order, ~1e-7 relative per call), amplified
        // by at most 8 steps of a smooth map on samples in [-1, 1] (clipped x0): 1e-4 leaves
        // a wide margin while any real difference (another noise stream, timestep, schedule
        // or prediction type) shows up at ~1e-1.
        let f32_error = max_abs_difference(&from_f32, &float);
        // f16 weights: relative rounding 2^-11 per weight.
        let f16_error = max_abs_difference(&from_f16, &float);
        // int8: the network output's SQNR is 20-30 dB (1-10% noise); over the whole
        // trajectory the mean pixel moves by a few percent of the [-1, 1] range.
        let int8_error = mean_abs_difference(&from_int8, &float);
        println!("{name}: f32 {f32_error:.1e}, fp16 {f16_error:.1e}, int8 mean {int8_error:.1e}");
        assert!(f32_error < 1e-4, "{name}: f32 blob vs candle {f32_error}");
        assert!(f16_error < 2e-2, "{name}: fp16 blob vs candle {f16_error}");
        assert!(int8_error < 0.1, "{name}: int8 blob vs candle {int8_error}");
        assert!(int8_error > 0.0, "int8 is not float");

        // Same blob and seed: the same bytes, on any number of threads; options given on
        // the command line replace the blob's defaults.
        let bytes = || std::fs::read(p("again.npy")).unwrap();
        sample("--model", &p("int8.ddm"), &p("again.npy"), &[]);
        assert_eq!(bytes(), std::fs::read(p("int8.npy")).unwrap());
        let (int8_blob, again) = (p("int8.ddm"), p("again.npy"));
        stdout(&ddm(&[
            "--threads",
            "2",
            "sample",
            "--model",
            path_str(&int8_blob),
            "--num",
            "12",
            "--seed",
            "5",
            "--out",
            path_str(&again),
        ]));
        assert_eq!(bytes(), std::fs::read(p("int8.npy")).unwrap());
        let other_seed = sample_seeded("--model", &p("int8.ddm"), &p("seed.npy"), "6", &[]);
        assert_ne!(other_seed, from_int8);
        let mut four = SAMPLER.to_vec();
        four[3] = "4";
        let float4 = sample("--checkpoint", run, &p("float4.npy"), &four);
        let blob4 = sample("--model", &p("f32.ddm"), &p("blob4.npy"), &["--steps", "4"]);
        assert!(max_abs_difference(&float4, &blob4) < 1e-4);
    }
    // Images can be written as a grid.
    let dir = tempfile::tempdir().unwrap();
    let blob = dir.path().join("m.ddm");
    export(unet_run(), "int8", &blob, &[]);
    let png = dir.path().join("grid.png");
    stdout(&ddm(&[
        "sample",
        "--model",
        path_str(&blob),
        "--num",
        "4",
        "--out",
        path_str(&png),
    ]));
    assert!(std::fs::metadata(&png).unwrap().len() > 0);
}

#[test]
fn calibration_follows_the_sampler_like_the_runtimes_own() {
    let run = mlp_run();
    let config = checkpoint::read_config(run).unwrap();
    let weights = checkpoint::read_weights(run, &config, WeightSet::Ema).unwrap();
    let graph = &config.graph;
    let params = Params::from_weights(graph, &weights, &Device::Cpu).unwrap();
    let table = config.schedule.alphas_cumprod().unwrap();
    let sampling = SamplingOptions {
        settings: SamplerOptions {
            clip_sample: Some(Some(1.0)),
            ..SamplerOptions::none()
        },
        ..default_export_sampling()
    };
    let cal = |batch: usize, weighting: TimestepWeighting| {
        let run = CalibrationRun {
            samples: 10,
            batch,
            seed: 11,
            config: CalibrationConfig {
                max_inputs: 1000,
                ..CalibrationConfig::default()
            },
            weighting,
            // The runtime's calibration has no tail probes.
            tail_sigma: 0.0,
            time_groups: 16,
        };
        calibrate(
            graph,
            &params,
            config.objective.prediction.into(),
            &table,
            &sampling,
            &run,
            &Device::Cpu,
        )
        .unwrap()
    };
    let batched = cal(4, TimestepWeighting::Uniform);
    assert_eq!(batched.timesteps.len(), 10);
    assert_eq!(
        batched.timesteps[0], 999,
        "trailing spacing (the default for a v network) starts at T - 1"
    );
    assert_eq!(
        batched.network_calls,
        10 * 3,
        "ceil(10 / 4) batches x 10 steps"
    );
    // Every (x_t, t) was offered: 10 trajectories x 10 timesteps.
    let inputs = batched.calibration.inputs();
    assert_eq!(inputs.len(), 100);
    for t in &batched.timesteps {
        assert_eq!(inputs.iter().filter(|i| i.t == *t).count(), 10);
    }

    // One time group per visited timestep.
    assert_eq!(batched.calibration.group_count(), 10);
    for t in &batched.timesteps {
        assert_eq!(batched.calibration.time_group(*t), *t as usize / 100);
    }

    // The device runtime's f32 network on the same trajectories (same seed, sampler and
    // schedule) sees the same values in every time group, up to float rounding; so does
    // another batch size.
    let mut reference = Calibration::with_time_groups(
        graph,
        CalibrationConfig::default(),
        batched.calibration.time_groups().to_vec(),
    )
    .unwrap();
    calibrate_with_sampler(
        graph,
        &weights,
        &mut reference,
        &schedule_spec(&config).unwrap(),
        &sampler_config(
            &sampling,
            &ddm_core::Schedule::new(&table).unwrap(),
            config.objective.prediction.into(),
        )
        .unwrap(),
        10,
        11,
    )
    .unwrap();
    let single = cal(1, TimestepWeighting::Uniform);
    // Weighting late steps offers a subset of the early steps' values, but keeps the
    // extremes (and so min/max ranges) exact.
    let weighted = cal(4, TimestepWeighting::Quadratic);
    for (index, node) in graph.nodes.iter().enumerate() {
        let id = ddm_export::graph::NodeId(index);
        let (mut all, mut offered) = (0u64, 0u64);
        for group in 0..10 {
            let ours = batched.calibration.stats(id, group).unwrap();
            assert!(ours.count > 0, "{} in group {group}", node.name);
            for other in [
                reference.stats(id, group).unwrap(),
                single.calibration.stats(id, group).unwrap(),
            ] {
                assert_eq!(ours.count, other.count, "{}", node.name);
                let scale = ours.max.abs().max(ours.min.abs()).max(1e-3);
                let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * scale;
                assert!(
                    close(ours.min, other.min) && close(ours.max, other.max),
                    "{} in group {group}: [{}, {}] vs [{}, {}]",
                    node.name,
                    ours.min,
                    ours.max,
                    other.min,
                    other.max
                );
            }
            let subset = weighted.calibration.stats(id, group).unwrap();
            assert_eq!(
                (subset.min, subset.max),
                (ours.min, ours.max),
                "{} in group {group}",
                node.name
            );
            all += ours.count;
            offered += subset.count;
        }
        // The last step offers everything, the first 1%: about 38.5% of all values.
        let share = offered as f64 / all as f64;
        assert!((0.3..0.5).contains(&share), "{}: {share}", node.name);
    }
}

/// Runs an ONNX file in tract on a batch (the file's batch dimension is symbolic).
fn run_tract(bytes: &[u8], x: &[f32], dims: &[usize], t: &[f32]) -> Vec<f32> {
    use tract_onnx::prelude::*;
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let x = tract_onnx::prelude::Tensor::from_shape(dims, x).unwrap();
    let t = tract_onnx::prelude::Tensor::from_shape(&[t.len()], t).unwrap();
    let outputs = model.run(tvec!(x.into_tvalue(), t.into_tvalue())).unwrap();
    let eps = outputs[0].to_plain_array_view::<f32>().unwrap();
    assert_eq!(eps.shape(), dims);
    eps.iter().copied().collect()
}

/// Largest `|a - b|` relative to the largest `|b|`.
fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    max_abs_difference(a, b) / scale
}

fn check_onnx_against_candle(graph: &Graph, seed: u64) {
    let weights = dense_random_weights(graph, seed);
    let params = Params::from_weights(graph, &weights, &Device::Cpu).unwrap();
    let shape = graph.input_shape().to_vec();
    let len: usize = shape.iter().product();
    let batch = 4;
    let mut rng = Rng::new(seed);
    let mut x = vec![0.0f32; batch * len];
    rng.fill_normal(&mut x);
    let t: Vec<f32> = [999.0, 500.0, 37.0, 0.0].to_vec();
    let mut dims = vec![batch];
    dims.extend_from_slice(&shape);
    let candle = forward(
        graph,
        &params,
        &Tensor::from_vec(x.clone(), dims.as_slice(), &Device::Cpu).unwrap(),
        &Tensor::from_vec(t.clone(), batch, &Device::Cpu).unwrap(),
        None,
    )
    .unwrap()
    .flatten_all()
    .unwrap()
    .to_vec1::<f32>()
    .unwrap();
    let f32_file = ddm_export::onnx::export(graph, &weights, OnnxPrecision::F32).unwrap();
    let f16_file = ddm_export::onnx::export(graph, &weights, OnnxPrecision::F16).unwrap();
    let from_f32 = run_tract(&f32_file, &x, &dims, &t);
    let from_f16 = run_tract(&f16_file, &x, &dims, &t);
    for (sample, timestep) in t.iter().enumerate() {
        let rows = sample * len..(sample + 1) * len;
        let reference = &candle[rows.clone()];
        // f32: both compute the same float model; only summation order differs.
        let e32 = relative_error(&from_f32[rows.clone()], reference);
        // f16 parameters (relative rounding 2^-11 each) through a few layers.
        let e16 = relative_error(&from_f16[rows], reference);
        println!("t {timestep}: f32 {e32:.1e}, f16 {e16:.1e}");
        assert!(e32 < 1e-4, "f32 ONNX vs candle at t {timestep}: {e32:e}");
        assert!(e16 < 1e-2, "f16 ONNX vs candle at t {timestep}: {e16:e}");
        assert!(e16 > 0.0, "the f16 file rounds the weights");
    }
}

#[test]
fn onnx_runs_in_tract_and_matches_candle() {
    let mlp = ModelConfig::Mlp(MlpConfig {
        hidden: 64,
        blocks: 2,
        time_dim: 16,
        norm_groups: 4,
        classes: 0,
    })
    .build(&[1, 8, 8])
    .unwrap();
    check_onnx_against_candle(&mlp, 1);
    let unet = tiny_unet_config().build(&[1, 8, 8]).unwrap();
    check_onnx_against_candle(&unet, 2);
    // A graph with a vector input (2-D toys) and no time embedding path is fine too.
    let mut b = GraphBuilder::new(&[2]);
    let x = b.input();
    let h = b.linear("fc", x, 2).unwrap();
    check_onnx_against_candle(&b.finish(h).unwrap(), 3);
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |file: &str| dir.path().join(file);
    let out = p("out.ddm");
    let missing = p("no-such-run");
    let export_args = |run: &Path| -> Vec<String> {
        [
            "export",
            "--checkpoint",
            path_str(run),
            "--precision",
            "int8",
            "--out",
            path_str(&out),
        ]
        .map(String::from)
        .to_vec()
    };
    let run_args = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ddm(&refs)
    };
    assert_one_line_failure(&run_args(export_args(&missing)), "config.json");
    let mut langevin = export_args(mlp_run());
    langevin.extend(["--sampler", "langevin"].map(String::from));
    assert_one_line_failure(&run_args(langevin), "no langevin sampler");
    let mut too_many = export_args(mlp_run());
    too_many.extend(["--steps", "5000"].map(String::from));
    assert_one_line_failure(
        &run_args(too_many),
        "cannot choose 5000 inference steps out of 1000 training steps",
    );
    let mut no_calibration = export_args(mlp_run());
    no_calibration.extend(["--calib", "0"].map(String::from));
    assert_one_line_failure(&run_args(no_calibration), "at least one sample");
    assert!(!out.exists(), "nothing written on failure");

    export(mlp_run(), "int8", &out, &[]);
    let good = std::fs::read(&out).unwrap();
    let sample_model = |path: &PathBuf, extra: &[&str]| {
        let target = p("x.npy");
        let mut args = vec![
            "sample",
            "--model",
            path_str(path),
            "--out",
            path_str(&target),
        ];
        args.extend_from_slice(extra);
        let output = ddm(&args);
        assert!(!target.exists(), "no samples written on failure");
        output
    };
    let corrupt = p("corrupt.ddm");
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    std::fs::write(&corrupt, &flipped).unwrap();
    assert_one_line_failure(&sample_model(&corrupt, &[]), "not a valid ddm model blob");
    std::fs::write(&corrupt, &good[..good.len() - 100]).unwrap();
    assert_one_line_failure(&sample_model(&corrupt, &[]), "not a valid ddm model blob");
    std::fs::write(&corrupt, b"hello").unwrap();
    assert_one_line_failure(&sample_model(&corrupt, &[]), "not a valid ddm model blob");
    assert_one_line_failure(&sample_model(&p("absent.ddm"), &[]), "absent.ddm");
    assert_one_line_failure(
        &sample_model(&out, &["--steps", "5000"]),
        "cannot choose 5000 inference steps",
    );
    assert_one_line_failure(
        &sample_model(&out, &["--sampler", "langevin"]),
        "no langevin sampler",
    );
    assert_one_line_failure(
        &sample_model(&out, &["--init-noise", "x.npy"]),
        "do not apply to --model",
    );
    assert_one_line_failure(
        &sample_model(&out, &["--checkpoint", path_str(mlp_run())]),
        "cannot be used with",
    );
    assert_one_line_failure(
        &sample_model(&out, &["--train-steps", "10"]),
        "brings its own schedule",
    );
}
