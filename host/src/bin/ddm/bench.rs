//! `ddm bench-train` (hidden): training and forward steps per second of the model presets.
//!
//! `scripts/bench-vs-pytorch.sh` runs it with `--json` beside the same models in PyTorch.

use std::time::Instant;

use clap::Args as ClapArgs;
use ddm::data::Dataset;
use ddm::device::DeviceArgs;
use ddm::model::kernels::{with_kernels, Kernels};
use ddm::model::{MlpConfig, ModelConfig, UnetConfig};
use ddm::schedule_args::ScheduleSpec;
use ddm::train::{loss_on_batch, DataConfig, Objective, RunConfig, TrainConfig, Trainer};
use ddm_core::Rng;

/// The models that can be timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// `MlpConfig::default()` (the demo's model) on flattened 8x8 images.
    Mlp,
    /// `UnetConfig::default()` on 8x8 images.
    Unet8,
    /// `UnetConfig::default()` on 28x28 images (Fashion-MNIST's size).
    Unet28,
}

impl Preset {
    fn model(self) -> (ModelConfig, Vec<usize>) {
        match self {
            Preset::Mlp => (ModelConfig::Mlp(MlpConfig::default()), vec![1, 8, 8]),
            Preset::Unet8 => (ModelConfig::Unet(UnetConfig::default()), vec![1, 8, 8]),
            Preset::Unet28 => (ModelConfig::Unet(UnetConfig::default()), vec![1, 28, 28]),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Preset::Mlp => "mlp",
            Preset::Unet8 => "unet8",
            Preset::Unet28 => "unet28",
        }
    }
}

/// What one timed step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A full training step: batch, forward, backward, clipping, AdamW, EMA.
    Train,
    /// Batch and loss only, without gradient tracking.
    Forward,
    /// Both, one after the other.
    Both,
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Models to time (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "mlp,unet8,unet28"
    )]
    preset: Vec<Preset>,
    /// What to time.
    #[arg(long, value_enum, default_value_t = Mode::Train)]
    mode: Mode,
    /// Samples per step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Most timed steps per preset and mode.
    #[arg(long, default_value_t = 200)]
    steps: u64,
    /// Stop timing a preset after this many seconds (at least 3 steps are timed).
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Untimed warm-up steps per preset and mode.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Time candle's own operations instead of ddm's fused CPU kernels (for comparison).
    #[arg(long)]
    candle_kernels: bool,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Random data of `shape` in [-1, 1] (the speed does not depend on the values).
fn random_data(shape: &[usize]) -> Dataset {
    let len: usize = shape.iter().product();
    let mut rng = Rng::new(1);
    Dataset {
        name: "random".into(),
        shape: shape.to_vec(),
        values: (0..512 * len).map(|_| 2.0 * rng.uniform() - 1.0).collect(),
        labels: None,
    }
}

/// CPU time used by the process so far (all threads), in seconds.
fn cpu_seconds() -> f64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes the clock's value into `time`, a valid timespec.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut time) };
    if status != 0 {
        return f64::NAN;
    }
    time.tv_sec as f64 + time.tv_nsec as f64 * 1e-9
}

/// What [`time`] measured.
struct Timing {
    steps: u64,
    /// Wall-clock seconds of the timed steps.
    seconds: f64,
    /// CPU seconds of the timed steps, all threads together (on a busy machine this shows
    /// the work done, where the wall clock also counts waiting for a core).
    cpu_seconds: f64,
}

/// Times `step` until `args.steps` steps or `args.seconds` have passed.
fn time(args: &Args, mut step: impl FnMut(u64) -> anyhow::Result<()>) -> anyhow::Result<Timing> {
    for i in 0..args.warmup {
        step(i)?;
    }
    let (started, cpu_started) = (Instant::now(), cpu_seconds());
    let mut timed = 0u64;
    while timed < args.steps.max(3) && (timed < 3 || started.elapsed().as_secs_f64() < args.seconds)
    {
        step(args.warmup + timed)?;
        timed += 1;
    }
    Ok(Timing {
        steps: timed,
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds() - cpu_started,
    })
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let kernels = if args.candle_kernels {
        Kernels::Candle
    } else {
        Kernels::Fused
    };
    with_kernels(kernels, || run_presets(args))
}

fn run_presets(args: &Args) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "?".into());
    let modes: &[&str] = match args.mode {
        Mode::Train => &["train"],
        Mode::Forward => &["forward"],
        Mode::Both => &["forward", "train"],
    };
    if !args.json {
        println!(
            "threads: {threads}, batch {}, up to {} timed steps or {} s per preset after {} \
             warm-up steps",
            args.batch_size, args.steps, args.seconds, args.warmup
        );
        println!(
            "{:<8} {:<8} {:>12} {:>10} {:>12} {:>10} {:>10} {:>12} {:>12}",
            "model",
            "mode",
            "shape",
            "params",
            "MACs/sample",
            "steps/s",
            "ms/step",
            "samples/s",
            "CPU ms/step"
        );
    }
    for &preset in &args.preset {
        let (model, shape) = preset.model();
        let data = random_data(&shape);
        let data_config = DataConfig::in_memory(&data);
        let train = TrainConfig {
            steps: args.warmup + args.steps.max(3),
            batch_size: args.batch_size,
            ..TrainConfig::default()
        };
        let config = RunConfig::new(
            model,
            data_config,
            ScheduleSpec::default(),
            Objective::default(),
            train,
        )?;
        let (params, macs) = (config.graph.parameter_count(), config.graph.macs());
        for &mode in modes {
            let mut trainer = Trainer::new(config.clone(), data.clone(), &device)?;
            let timing = if mode == "train" {
                time(args, |_| {
                    trainer.step()?;
                    Ok(())
                })?
            } else {
                // Plain tensors: candle records no graph for the backward pass.
                let weights = trainer.params().detached_copy()?;
                time(args, |step| {
                    let batch = trainer.batch(step)?;
                    let loss = loss_on_batch(&config.graph, &weights, &batch, &device)?;
                    loss.to_scalar::<f32>()?;
                    Ok(())
                })?
            };
            let rate = timing.steps as f64 / timing.seconds;
            let cpu_per_step = timing.cpu_seconds / timing.steps as f64;
            if args.json {
                let record = serde_json::json!({
                    "framework": "ddm",
                    "kernels": if args.candle_kernels { "candle" } else { "fused" },
                    "model": preset.name(),
                    "mode": mode,
                    "shape": shape,
                    "params": params,
                    "macs_per_sample": macs,
                    "batch": args.batch_size,
                    "threads": threads,
                    "device": args.device.device.to_string(),
                    "steps": timing.steps,
                    "seconds": timing.seconds,
                    "steps_per_s": rate,
                    "cpu_s_per_step": cpu_per_step,
                });
                println!("{record}");
            } else {
                println!(
                    "{:<8} {:<8} {:>12} {:>10} {:>12} {:>10.2} {:>10.2} {:>12.0} {:>12.2}",
                    preset.name(),
                    mode,
                    format!("{shape:?}"),
                    params,
                    macs,
                    rate,
                    1000.0 / rate,
                    rate * args.batch_size as f64,
                    1000.0 * cpu_per_step
                );
            }
        }
    }
    Ok(())
}
