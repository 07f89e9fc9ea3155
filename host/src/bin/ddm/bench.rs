//! `ddm bench-train` (hidden): training steps per second of the model presets.

use std::time::Instant;

use clap::Args as ClapArgs;
use ddm::data::Dataset;
use ddm::model::{self, MlpConfig, ModelConfig, UnetConfig};
use ddm::schedule_args::ScheduleSpec;
use ddm::train::{DataConfig, Objective, RunConfig, TrainConfig, Trainer};
use ddm_core::Rng;

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Samples per training step.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Most timed steps per preset.
    #[arg(long, default_value_t = 200)]
    steps: u64,
    /// Stop timing a preset after this many seconds (at least 3 steps are timed).
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Untimed warm-up steps per preset.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Compute on the CPU even when built with CUDA.
    #[arg(long)]
    cpu: bool,
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

pub fn run(args: &Args) -> anyhow::Result<()> {
    let device = model::device(!args.cpu)?;
    let presets: [(&str, ModelConfig, Vec<usize>); 3] = [
        (
            "mlp (demo preset)",
            ModelConfig::Mlp(MlpConfig::default()),
            vec![1, 8, 8],
        ),
        (
            "unet (preset)",
            ModelConfig::Unet(UnetConfig::default()),
            vec![1, 8, 8],
        ),
        (
            "unet (preset)",
            ModelConfig::Unet(UnetConfig::default()),
            vec![1, 28, 28],
        ),
    ];
    println!(
        "threads: {}, batch {}, up to {} timed steps or {} s per preset after {} warm-up steps",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "?".into()),
        args.batch_size,
        args.steps,
        args.seconds,
        args.warmup
    );
    println!(
        "{:<18} {:>12} {:>10} {:>12} {:>10} {:>10} {:>12}",
        "model", "shape", "params", "MACs/sample", "steps/s", "ms/step", "samples/s"
    );
    for (name, model, shape) in presets {
        let data = random_data(&shape);
        let data_config = DataConfig {
            dataset: "random".into(),
            data_dir: None,
            image: [0, 0, 0],
            toy_samples: 0,
            toy_seed: 0,
            shape: shape.clone(),
            samples: data.len(),
            fingerprint: ddm::train::config::fingerprint(&data),
        };
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
        let mut trainer = Trainer::new(config, data, &device)?;
        for _ in 0..args.warmup {
            trainer.step()?;
        }
        let started = Instant::now();
        let mut timed = 0u64;
        while timed < args.steps && (timed < 3 || started.elapsed().as_secs_f64() < args.seconds) {
            trainer.step()?;
            timed += 1;
        }
        let rate = timed as f64 / started.elapsed().as_secs_f64();
        println!(
            "{:<18} {:>12} {:>10} {:>12} {:>10.1} {:>10.2} {:>12.0}",
            name,
            format!("{shape:?}"),
            params,
            macs,
            rate,
            1000.0 / rate,
            rate * args.batch_size as f64
        );
    }
    Ok(())
}
