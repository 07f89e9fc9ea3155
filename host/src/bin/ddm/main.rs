//! `ddm`: train, sample, evaluate and export denoising diffusion models.

mod sample;
mod schedule;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Denoising diffusion models from a workstation to a microcontroller.
#[derive(Debug, Parser)]
#[command(name = "ddm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a noise schedule and the inference timesteps chosen from it.
    Schedule(schedule::Args),
    /// Generate samples with a sampler.
    Sample(Box<sample::Args>),
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
    let result = match cli.command {
        Command::Schedule(args) => schedule::run(&args),
        Command::Sample(args) => sample::run(&args),
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
