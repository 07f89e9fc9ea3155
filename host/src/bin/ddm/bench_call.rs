//! `ddm bench-call` (hidden): time of one network call of a model blob on the device runtime,
//! batch 1, on each int8 product path this CPU has.
//!
//! `scripts/bench-vs-onnxruntime.sh` runs it with `--json` beside onnxruntime on the same
//! model's ONNX export.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args as ClapArgs;
use ddm_core::Rng;
use ddm_firmware::{network_arena_bytes, Blob, Network, Path};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// The model blob (`ddm export`).
    #[arg(long, value_name = "model.ddm")]
    model: PathBuf,
    /// Seconds to time each path for (after 3 untimed calls; at least 5 calls).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// The training timestep of the timed calls.
    #[arg(long, default_value_t = 500)]
    timestep: u32,
    /// Time only the CPU's fastest path (the one `ddm sample --model` uses).
    #[arg(long)]
    fastest_only: bool,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// The median of `call`'s durations over `seconds` (at least 5 calls), after 3 untimed calls.
fn median_seconds(
    seconds: f64,
    mut call: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for _ in 0..3 {
        call()?;
    }
    let started = Instant::now();
    let mut times = Vec::new();
    while times.len() < 5 || started.elapsed().as_secs_f64() < seconds {
        let at = Instant::now();
        call()?;
        times.push(at.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let blob = Blob::parse(&bytes).with_context(|| format!("parsing {}", args.model.display()))?;
    let mut arena = vec![0u8; network_arena_bytes(&blob)?];
    let mut x = vec![0.0f32; blob.sample_len()];
    Rng::new(1).fill_normal(&mut x);
    let mut out = vec![0.0f32; blob.output_len()];
    let fastest = Path::detect();
    let paths: Vec<Path> = if args.fastest_only {
        vec![fastest]
    } else {
        std::iter::once(fastest)
            .chain(Path::available().filter(|&p| p != fastest))
            .collect()
    };
    for path in paths {
        let mut network = Network::new(blob, &mut arena)?.with_path(path);
        let seconds = median_seconds(args.seconds, || {
            Ok(network.run(&x, args.timestep, &mut out)?)
        })?;
        if args.json {
            let record = serde_json::json!({
                "engine": "ddm",
                "model": args.model.display().to_string(),
                "precision": format!("{:?}", blob.precision()).to_lowercase(),
                "path": path.name(),
                "fastest": path == fastest,
                "us_per_call": seconds * 1e6,
            });
            println!("{record}");
        } else {
            println!(
                "{}: {:?} on {}: {:.1} us per call",
                args.model.display(),
                blob.precision(),
                path.name(),
                seconds * 1e6
            );
        }
    }
    Ok(())
}
