//! Time per network call on the host, batch 1 (as on the device), in one run: the device
//! runtime (int8 on each kernel path of this CPU, fastest first; fp16 and f32 blobs), the float
//! model in candle (the trainer's executor) and the ONNX export in tract (f32 and f16
//! parameters), with each time's ratio to candle's and to the fastest int8 path's.
//!
//! ```sh
//! cargo bench -p ddm --bench network_call                       # built-in models
//! cargo bench -p ddm --bench network_call -- --checkpoint demo  # also a trained run
//! cargo bench -p ddm --bench network_call -- --seconds 5        # longer timing per row
//! ```
//!
//! Built-in models: the demo's MLP on 8x8 digits, and a small UNet (16 channels, levels x1 x2,
//! one block per level) on 8x8 and 28x28 images, with random weights and none of them zero:
//! the trainer zero-initialises the last layer of every residual branch, and tract's
//! optimiser removes such layers, which would flatter it (a trained run, `--checkpoint`, has
//! no zero layers). Everything runs on one thread. Each row is timed for `--seconds` (default
//! 2) after 3 untimed calls; the median call is reported (robust to other load).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use ddm::calibrate::{calibrate, CalibrationRun};
use ddm::export::{default_export_sampling, sampler_config, schedule_spec};
use ddm::model::params::dense_random_weights;
use ddm::model::{forward, MlpConfig, ModelConfig, Params, UnetConfig};
use ddm::schedule_args::ScheduleSpec;
use ddm::train::checkpoint::{self, WeightSet};
use ddm::train::{DataConfig, Objective, RunConfig, TrainConfig};
use ddm_core::Rng;
use ddm_export::graph::{Graph, Weights};
use ddm_export::onnx::OnnxPrecision;
use ddm_export::{CalibrationConfig, ExportOptions, RangeMethod};
use ddm_firmware::{network_arena_bytes, Blob, Network, Path, Precision};

/// The timestep of every timed call.
const TIMESTEP: u32 = 500;

struct Options {
    checkpoints: Vec<PathBuf>,
    seconds: f64,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        checkpoints: Vec::new(),
        seconds: 2.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--checkpoint" => options.checkpoints.push(
                args.next()
                    .context("--checkpoint needs a run folder")?
                    .into(),
            ),
            "--seconds" => {
                options.seconds = args
                    .next()
                    .context("--seconds needs a number")?
                    .parse()
                    .context("--seconds needs a number")?
            }
            // `cargo bench` passes --bench; filters are not supported.
            "--bench" => {}
            other => bail!("unknown argument {other} (use --checkpoint DIR, --seconds S)"),
        }
    }
    Ok(options)
}

/// A model to time: its run configuration and weights.
struct Model {
    name: String,
    config: RunConfig,
    weights: Weights,
}

fn built_in(name: &str, model: ModelConfig, shape: &[usize]) -> anyhow::Result<Model> {
    let data = DataConfig {
        dataset: "random".into(),
        data_dir: None,
        image: [0, 0, 0],
        toy_samples: 0,
        toy_seed: 0,
        shape: shape.to_vec(),
        samples: 0,
        fingerprint: String::new(),
        subset: Default::default(),
    };
    let config = RunConfig::new(
        model,
        data,
        ScheduleSpec::default(),
        Objective::default(),
        TrainConfig::default(),
    )?;
    let weights = dense_random_weights(&config.graph, 0);
    Ok(Model {
        name: name.into(),
        config,
        weights,
    })
}

fn models(options: &Options) -> anyhow::Result<Vec<Model>> {
    let unet = || {
        ModelConfig::Unet(UnetConfig {
            channels: 16,
            channel_mults: vec![1, 2],
            blocks_per_level: 1,
            groups: 8,
            classes: 0,
        })
    };
    let mut models = vec![
        built_in(
            "mlp (demo) 8x8",
            ModelConfig::Mlp(MlpConfig::default()),
            &[1, 8, 8],
        )?,
        built_in("unet16 8x8", unet(), &[1, 8, 8])?,
        built_in("unet16 28x28", unet(), &[1, 28, 28])?,
    ];
    for dir in &options.checkpoints {
        let config = checkpoint::read_config(dir)?;
        let weights = checkpoint::read_weights(dir, &config, WeightSet::Ema)?;
        models.push(Model {
            name: dir.display().to_string(),
            config,
            weights,
        });
    }
    Ok(models)
}

/// The median duration of `call` over `seconds` (at least 5 calls), after 3 untimed calls.
fn time(seconds: f64, mut call: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    for _ in 0..3 {
        call()?;
    }
    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < 5 || started.elapsed().as_secs_f64() < seconds {
        let start = Instant::now();
        call()?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// The blob of `model` in `precision`, int8 calibrated on 8 trajectories of the default
/// export sampler.
fn blob(model: &Model, precision: Precision) -> anyhow::Result<Vec<u8>> {
    let graph = &model.config.graph;
    let sampling = default_export_sampling();
    let table = model.config.schedule.alphas_cumprod()?;
    let calibration = if precision == Precision::Int8 {
        let params = Params::from_weights(graph, &model.weights, &Device::Cpu)?;
        let run = CalibrationRun {
            samples: 8,
            batch: 8,
            config: CalibrationConfig {
                max_inputs: 0,
                ..CalibrationConfig::default()
            },
            ..CalibrationRun::default()
        };
        calibrate(
            graph,
            &params,
            model.config.objective.prediction.into(),
            &table,
            &sampling,
            &run,
            &Device::Cpu,
        )?
        .calibration
    } else {
        ddm_export::Calibration::new(graph, CalibrationConfig::default())
    };
    let options = ExportOptions {
        precision,
        range: RangeMethod::Mse,
        sampler: sampler_config(
            &sampling,
            &ddm_core::Schedule::new(&table)?,
            model.config.objective.prediction.into(),
        )?,
        schedule: schedule_spec(&model.config)?,
    };
    Ok(ddm_export::export(graph, &model.weights, &calibration, &options)?.blob)
}

/// One call of the device runtime, its int8 products on `path`.
fn time_runtime(blob: &[u8], path: Path, x: &[f32], seconds: f64) -> anyhow::Result<Duration> {
    let parsed = Blob::parse(blob)?;
    let mut arena = vec![0u8; network_arena_bytes(&parsed)?];
    let mut network = Network::new(parsed, &mut arena)?.with_path(path);
    let mut out = vec![0.0f32; x.len()];
    time(seconds, || Ok(network.run(x, TIMESTEP, &mut out)?))
}

fn time_candle(model: &Model, x: &[f32], seconds: f64) -> anyhow::Result<Duration> {
    let graph: &Graph = &model.config.graph;
    let params = Params::from_weights(graph, &model.weights, &Device::Cpu)?;
    let mut dims = vec![1];
    dims.extend_from_slice(graph.input_shape());
    // As the sampler calls it: tensors in, values out.
    time(seconds, || {
        let input = Tensor::from_vec(x.to_vec(), dims.as_slice(), &Device::Cpu)?;
        let t = Tensor::from_vec(vec![TIMESTEP as f32], 1, &Device::Cpu)?;
        let y: Vec<f32> = forward(graph, &params, &input, &t, None)?
            .flatten_all()?
            .to_vec1()?;
        std::hint::black_box(y);
        Ok(())
    })
}

fn time_tract(
    model: &Model,
    precision: OnnxPrecision,
    x: &[f32],
    seconds: f64,
) -> anyhow::Result<Duration> {
    use tract_onnx::prelude::*;
    let graph = &model.config.graph;
    let bytes = ddm_export::onnx::export(graph, &model.weights, precision)?;
    let mut dims = vec![1usize];
    dims.extend_from_slice(graph.input_shape());
    // Batch 1, fixed: the device's case, and what lets tract plan every shape.
    let runnable = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])?
        .with_input_fact(0, f32::fact(dims.clone()).into())?
        .with_input_fact(1, f32::fact([1usize]).into())?
        .into_optimized()?
        .into_runnable()?;
    let x = tract_onnx::prelude::Tensor::from_shape(&dims, x)?;
    let t = tract_onnx::prelude::Tensor::from_shape(&[1], &[TIMESTEP as f32])?;
    time(seconds, || {
        let outputs = runnable.run(tvec!(x.clone().into_tvalue(), t.clone().into_tvalue()))?;
        std::hint::black_box(outputs);
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    ddm::threads::configure(1);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "network call, batch 1, one thread, median of >= {} s per row; load average before: {}",
        options.seconds,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "{:<16} {:<18} {:>12} {:>10} {:>10} {:>10}",
        "model", "engine", "MACs/call", "us/call", "x candle", "x int8"
    );
    for model in models(&options)? {
        let graph = &model.config.graph;
        let len: usize = graph.input_shape().iter().product();
        let mut x = vec![0.0f32; len];
        Rng::new(1).fill_normal(&mut x);
        let s = options.seconds;
        // The int8 runtime on this CPU's fastest path first, then on each other path.
        let int8 = blob(&model, Precision::Int8)?;
        let detected = Path::detect();
        let mut rows = vec![(
            format!("int8 {}", detected.name()),
            time_runtime(&int8, detected, &x, s)?,
        )];
        for path in Path::available().filter(|&p| p != detected) {
            let name = format!("int8 {}", path.name());
            rows.push((name, time_runtime(&int8, path, &x, s)?));
        }
        for (name, precision) in [
            ("fp16 runtime", Precision::F16),
            ("f32 runtime", Precision::F32),
        ] {
            let bytes = blob(&model, precision)?;
            rows.push((name.into(), time_runtime(&bytes, detected, &x, s)?));
        }
        let candle = time_candle(&model, &x, s)?;
        rows.push(("candle f32".into(), candle));
        rows.push((
            "tract f32".into(),
            time_tract(&model, OnnxPrecision::F32, &x, s)?,
        ));
        rows.push((
            "tract f16".into(),
            time_tract(&model, OnnxPrecision::F16, &x, s)?,
        ));
        let candle = candle.as_secs_f64();
        let int8 = rows[0].1.as_secs_f64();
        for (engine, duration) in rows {
            let seconds = duration.as_secs_f64();
            println!(
                "{:<16} {:<18} {:>12} {:>10.1} {:>10.2} {:>10.2}",
                model.name,
                engine,
                graph.macs(),
                seconds * 1e6,
                seconds / candle,
                seconds / int8
            );
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average after: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}
