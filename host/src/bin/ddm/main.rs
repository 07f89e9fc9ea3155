//! `ddm`: train, sample, evaluate and export denoising diffusion models.

mod bench;
mod demo;
mod eval;
mod sample;
mod schedule;
mod train;
mod train_classifier;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Denoising diffusion models from a workstation to a microcontroller.
#[derive(Debug, Parser)]
#[command(name = "ddm", version, about)]
struct Cli {
    /// CPU threads for tensor computations (0: one per core). The default, 1, is fastest for
    /// the small models of ddm on few cores (see BENCHMARKS.md).
    #[arg(long, global = true, default_value_t = ddm::threads::DEFAULT_THREADS)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a noise schedule and the inference timesteps chosen from it.
    Schedule(schedule::Args),
    /// Generate samples from a trained checkpoint or a Gaussian-mixture oracle.
    Sample(Box<sample::Args>),
    /// Train a noise predictor (MLP or UNet) on a data set into a run folder.
    Train(Box<train::Args>),
    /// Train an MLP on the embedded 8x8 digits and draw 64 samples (a few minutes on a CPU).
    Demo(demo::Args),
    /// Measure sample quality: each metric beside the same metric between two disjoint real
    /// sets of the same size (the floor).
    Eval(eval::Args),
    /// Train the feature classifier `ddm eval` uses for an image data set (maintainers: the
    /// committed ones are in host/classifiers/).
    TrainClassifier(train_classifier::Args),
    /// Measure training steps per second of the model presets.
    #[command(hide = true)]
    BenchTrain(bench::Args),
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
        Command::Schedule(args) => schedule::run(&args),
        Command::Sample(args) => sample::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::TrainClassifier(args) => train_classifier::run(&args),
        Command::BenchTrain(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
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
