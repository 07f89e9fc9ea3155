//! `ddm-hil` (also `ddm hil`): runs one hardware-in-the-loop check, or the Cortex-M
//! benchmark.
//!
//! ```text
//! ddm-hil --board qemu-mps2-an386 --model model.ddm --steps 4 --seed 0 [--out-dir DIR]
//! ddm-hil --model model.ddm --sampler dpmpp-2m --steps 6 --spacing logsnr    (any `ddm sample --model` sampler flag)
//! ddm-hil --board nrf52840-dk --backend probe --model model.ddm
//! ddm-hil --board jetson --backend linux-arm [--command 'scp {elf} j:/tmp/d && ssh j /tmp/d'] --model model.ddm
//! ddm-hil bench [--model A.ddm --model B.ddm] [--steps 2] [--layers]
//! ```
//!
//! A check builds the board with the model, runs it, compares the device's samples and
//! per-step checksums with the host's run bit for bit, prints the figures, and writes
//! `device.png` beside `host.png` (and both as `.npy`) into `--out-dir`. Exit status: 0 when
//! the device reproduced the host, 1 on any failure, 2 for a usage error, 4 when the check was
//! skipped (no probe attached): a skipped check never reads as a pass.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ddm::sampler_args::BlobSamplerArgs;
use ddm_hil::check::{check, Backend, CheckOptions, Outcome};
use ddm_hil::golden::{bless_requested, check_golden};
use ddm_hil::images::write_samples;

/// Exit status of a skipped check.
const SKIPPED: u8 = 4;

/// Checks that a board generates exactly what the host generates.
#[derive(Debug, Parser)]
#[command(
    name = "ddm-hil",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    check: CheckArgs,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Print MACs per instruction of the int8 kernels on the Cortex-M4 (QEMU -icount).
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The board crate: a directory of boards/ (qemu-mps2-an386, nrf52840-dk,
    /// stm32f746g-disco, pico2, jetson) or a path.
    #[arg(long, default_value = "qemu-mps2-an386")]
    board: String,
    /// Where it runs: qemu, probe (a probe-rs-attached board) or linux-arm (qemu-aarch64, or
    /// --command).
    #[arg(long, default_value = "qemu")]
    backend: Backend,
    /// linux-arm: the command that runs the binary on a real board, through `sh -c`; `{elf}`
    /// stands for the binary's local path (appended when absent).
    #[arg(long, requires = "backend")]
    command: Option<String>,
    /// The model blob.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Seed of the random streams (sample i uses stream i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of samples.
    #[arg(long, default_value_t = 1)]
    num: u64,
    /// The sampler and its settings, as `ddm sample --model` takes them.
    #[command(flatten)]
    sampler: BlobSamplerArgs,
    /// The class to generate, for a class-conditional model (as `ddm sample --class`, one
    /// class).
    #[arg(long)]
    class: Option<u32>,
    /// Classifier-free guidance of --class (as `ddm sample --guidance`).
    #[arg(long, default_value_t = ddm_core::guidance::DEFAULT_SCALE, requires = "class")]
    guidance: f32,
    /// Where to write device.png, host.png, device.npy and host.npy.
    #[arg(long, default_value = "hil-out")]
    out_dir: PathBuf,
    /// Longest a device run may take, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Compare the figures with hil/golden/<board>-<model>.json.
    #[arg(long)]
    golden: bool,
    /// Rewrite hil/golden/<board>-<model>.json from this run (also DDM_BLESS=1).
    #[arg(long)]
    bless: bool,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Models to measure [default: the optdigits MLP and the 8x8 UNet of hil/fixtures].
    #[arg(long)]
    model: Vec<PathBuf>,
    /// Steps per run (each step is one network call).
    #[arg(long, default_value_t = 2)]
    steps: u32,
    /// Also measure single-layer models (linear, convolutions, GroupNorm, SiLU), written into
    /// target/ddm-hil-layers.
    #[arg(long)]
    layers: bool,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn run_check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let Some(model) = &args.model else {
        eprintln!("error: --model is required (a model blob, e.g. from `ddm export`)");
        return Ok(ExitCode::from(2));
    };
    let backend = match (&args.backend, &args.command) {
        (Backend::LinuxArm { .. }, command) => Backend::LinuxArm {
            command: command.clone(),
        },
        (_, Some(_)) => anyhow::bail!("--command applies to --backend linux-arm only"),
        (backend, None) => backend.clone(),
    };
    let options = CheckOptions {
        board: args.board.clone(),
        backend,
        model: model.clone(),
        sampler: args.sampler.options()?,
        seed: args.seed,
        num: args.num,
        class: args.class,
        guidance: ddm_core::Guidance::new(args.guidance)?,
        timeout: Duration::from_secs(args.timeout),
    };
    let report = match check(&options)? {
        Outcome::Skipped(reason) => {
            println!("SKIPPED: {reason}");
            return Ok(ExitCode::from(SKIPPED));
        }
        Outcome::Passed(report) => report,
    };
    println!(
        "PASS {}: {} sample(s) x {} steps bit-identical to the host ({}; device run {:.1} s)",
        report.board,
        report.device.run.num,
        report.device.run.steps,
        report.device.board.clock,
        report.wall_time.as_secs_f64()
    );
    print!("{}", report.figures);
    let written = write_samples(
        &args.out_dir,
        &report.sample_shape,
        &report.device.images,
        &report.host.images,
    )
    .with_context(|| format!("writing the samples into {}", args.out_dir.display()))?;
    for path in written {
        println!("wrote {}", path.display());
    }
    if args.golden || args.bless || bless_requested() {
        match check_golden(&report.figures, args.bless || bless_requested()) {
            Ok(message) => println!("golden: {message}"),
            Err(message) => {
                eprintln!("error: {message}");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_bench(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let mut models = if args.model.is_empty() {
        vec![
            fixtures().join("optdigits-mlp-int8.ddm"),
            fixtures().join("unet-8x8-int8.ddm"),
        ]
    } else {
        args.model.clone()
    };
    if args.layers {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ddm-hil-layers");
        std::fs::create_dir_all(&dir)?;
        for (name, blob) in ddm_hil::layers::layer_models() {
            let path = dir.join(format!("{name}.ddm"));
            std::fs::write(&path, blob)?;
            models.push(path);
        }
    }
    println!("Cortex-M4F (QEMU mps2-an386, -icount shift=0): int8 network calls");
    println!(
        "{:<24} {:>12} {:>16} {:>10} {:>10} {:>10} {:>10}",
        "model", "MACs/call", "instructions", "MACs/insn", "flash", "RAM", "arena"
    );
    for model in models {
        let options = CheckOptions::new("qemu-mps2-an386", &model).with_steps(args.steps);
        let Outcome::Passed(report) = check(&options)? else {
            anyhow::bail!("the QEMU check of {} was skipped", model.display());
        };
        let f = &report.figures;
        println!(
            "{:<24} {:>12} {:>16} {:>10.3} {:>10} {:>10} {:>10}",
            f.model,
            f.macs_per_call,
            f.instructions_per_call.unwrap_or(0),
            f.macs_per_instruction().unwrap_or(0.0),
            f.flash_bytes.unwrap_or(0),
            f.ram_bytes.unwrap_or(0),
            f.arena_bytes
        );
    }
    println!("(instructions counted by QEMU, not cycles: see BENCHMARKS.md)");
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Sub::Bench(args)) => run_bench(args),
        None => run_check(&cli.check),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
