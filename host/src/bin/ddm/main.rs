//! `ddm`: train, sample, evaluate and export denoising diffusion models.

mod bench;
mod bench_call;
mod demo;
mod distill;
mod eval;
mod export;
mod optimizer_args;
mod reconstruct;
mod sample;
mod schedule;
mod train;
mod train_autoencoder;
mod train_classifier;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Denoising diffusion models from a workstation to a microcontroller.
#[derive(Debug, Parser)]
#[command(name = "ddm", version, about)]
struct Cli {
    /// CPU threads for tensor computations (0, the default: one per core; results are
    /// bit-identical at any count; see BENCHMARKS.md).
    #[arg(long, global = true, default_value_t = ddm::threads::DEFAULT_THREADS)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a noise schedule and the inference timesteps chosen from it.
    Schedule(schedule::Args),
    /// Generate samples from a trained checkpoint, an exported model blob (the device
    /// runtime, run on the host) or a Gaussian-mixture oracle.
    Sample(Box<sample::Args>),
    /// Train a noise predictor (MLP or UNet) on a data set into a run folder.
    Train(Box<train::Args>),
    /// Distil a trained run into a student that generates in a few network calls
    /// (progressive or consistency distillation); the student is a run folder that `sample`
    /// and `export` use with its own sampler.
    Distill(Box<distill::Args>),
    /// Train the autoencoder of latent diffusion (a KL-regularised convolutional encoder and
    /// decoder, downsampling by 4 by default) on images into a run folder.
    TrainAutoencoder(Box<train_autoencoder::Args>),
    /// Pass real images (`ddm eval`'s floor set B) through a trained autoencoder into a .npy
    /// for `ddm eval`, and print their PSNR.
    Reconstruct(reconstruct::Args),
    /// Train an MLP on the embedded 8x8 digits and draw 64 samples (a few minutes on a CPU).
    Demo(demo::Args),
    /// Export a trained checkpoint for the device: an int8, fp16 or f32 blob (calibrated on
    /// the sampler's trajectories), its sizes and per-layer SQNR, and optionally ONNX.
    Export(Box<export::Args>),
    /// Measure sample quality: each metric beside the same metric between two disjoint real
    /// sets of the same size (the floor).
    Eval(eval::Args),
    /// Train the feature classifier `ddm eval` uses for an image data set (maintainers: the
    /// committed ones are in host/classifiers/).
    TrainClassifier(train_classifier::Args),
    /// Measure training steps per second of the model presets.
    #[command(hide = true)]
    BenchTrain(bench::Args),
    /// Time one network call of a model blob on each int8 product path of this CPU.
    #[command(hide = true)]
    BenchCall(bench_call::Args),
    /// Any other NAME runs the program `ddm-NAME` beside this one or on PATH, as cargo and git
    /// do: `ddm hil` is the hardware-in-the-loop check (`cargo build --release -p ddm-hil`).
    #[command(external_subcommand)]
    External(Vec<OsString>),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help and --version.
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("{}", one_line(&error.render().to_string()));
            return ExitCode::from(2);
        }
    };
    ddm::threads::configure(cli.threads);
    let result = match cli.command {
        Command::External(args) => return run_external(&args),
        Command::Schedule(args) => schedule::run(&args),
        Command::Sample(args) => sample::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Distill(args) => distill::run(&args),
        Command::TrainAutoencoder(args) => train_autoencoder::run(&args),
        Command::Reconstruct(args) => reconstruct::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::TrainClassifier(args) => train_classifier::run(&args),
        Command::BenchTrain(args) => bench::run(&args),
        Command::BenchCall(args) => bench_call::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the external subcommand `args[0]` as the program `ddm-<args[0]>` with the remaining
/// arguments: the executable beside this one first, then the first on PATH. Its exit status
/// becomes ours; a missing program is a one-line error (status 2).
fn run_external(args: &[OsString]) -> ExitCode {
    let Some((name, rest)) = args.split_first() else {
        return ExitCode::from(2);
    };
    let program = format!("ddm-{}", name.to_string_lossy());
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(&program)))
        .filter(|path| path.is_file());
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(&program))
                .find(|path| path.is_file())
        })
    };
    let Some(path): Option<PathBuf> = beside.or_else(on_path) else {
        let hint = if name == "hil" {
            "; build it with `cargo build --release -p ddm-hil`"
        } else {
            ""
        };
        eprintln!(
            "error: no such command `{}` (no `{program}` beside ddm or on PATH){hint}",
            name.to_string_lossy()
        );
        return ExitCode::from(2);
    };
    match std::process::Command::new(&path).args(rest).status() {
        Ok(status) => status
            .code()
            .and_then(|code| u8::try_from(code).ok())
            .map_or(ExitCode::FAILURE, ExitCode::from),
        Err(error) => {
            eprintln!("error: running {}: {error}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// Joins clap's multi-line usage error into one line, without the "--help" hint.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join(" ")
}
