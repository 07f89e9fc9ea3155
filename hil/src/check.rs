//! One hardware-in-the-loop check: for a blob and a seed, build the board with the model,
//! run it, collect the image and the per-step figures, and check them byte for byte against
//! the host's run of the same runtime.
//!
//! # Backends
//!
//! - [`Backend::Qemu`] (the default, and CI's): the board's own runner, QEMU's
//!   `mps2-an386` Cortex-M4F with `-icount shift=0`, so SysTick ticks convert exactly to
//!   executed instructions (see [`instructions_per_tick`]).
//! - [`Backend::Probe`]: a real board attached through a debug probe, run with the board's
//!   `probe-rs run --chip ...` runner (defmt over RTT, decoded by probe-rs). When
//!   `probe-rs list` shows no probe the check is [`Outcome::Skipped`], never passed.
//! - [`Backend::LinuxArm`]: `boards/jetson` under `qemu-aarch64` (its runner), or on a real
//!   aarch64 Linux machine through a command the user gives (see [`user_runner`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use ddm_board_build::sampler_env;
use ddm_board_support::{Guidance, RunConfig};
use ddm_firmware::{required_arena_bytes_for_steps, Blob, GenerateSettings, SamplerOptions};

use crate::compare::compare;
use crate::elf;
use crate::golden::Figures;
use crate::protocol::{self, Report};
use crate::reference::{host_run, HostRun};
use crate::{board_dir, Board, Bytes, Error, Result};

/// Where a board runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Backend {
    /// The board's QEMU runner.
    #[default]
    Qemu,
    /// A probe-rs-attached board.
    Probe,
    /// An aarch64 Linux board: `qemu-aarch64`, or the given command (see [`user_runner`]).
    LinuxArm {
        /// The command that runs the binary on a real board, if any.
        command: Option<String>,
    },
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "qemu" => Ok(Backend::Qemu),
            "probe" => Ok(Backend::Probe),
            "linux-arm" => Ok(Backend::LinuxArm { command: None }),
            _ => Err(format!(
                "unknown backend `{name}`: expected qemu, probe or linux-arm"
            )),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Qemu => "qemu",
            Backend::Probe => "probe",
            Backend::LinuxArm { .. } => "linux-arm",
        })
    }
}

/// What to check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOptions {
    /// The board crate (a directory under `boards/`, or a path to one).
    pub board: String,
    /// Where it runs.
    pub backend: Backend,
    /// The model blob.
    pub model: PathBuf,
    /// The sampler, its step count and any of its settings (`None`: the blob's, as for
    /// `ddm sample --model`).
    pub sampler: SamplerOptions,
    /// Seed.
    pub seed: u64,
    /// Number of samples.
    pub num: u64,
    /// The class to generate, for a class-conditional blob (`None`: unconditional).
    pub class: Option<u32>,
    /// The guidance of the class (ignored without one).
    pub guidance: Guidance,
    /// Longest a run may take before it is killed.
    pub timeout: Duration,
}

impl CheckOptions {
    /// The blob's default sampler, 1 sample of seed 0, on QEMU, with a 10-minute timeout.
    pub fn new(board: &str, model: impl Into<PathBuf>) -> Self {
        CheckOptions {
            board: board.into(),
            backend: Backend::Qemu,
            model: model.into(),
            sampler: SamplerOptions::none(),
            seed: 0,
            num: 1,
            class: None,
            guidance: Guidance::DEFAULT,
            timeout: Duration::from_secs(600),
        }
    }

    /// These options with `steps` steps per sample.
    pub fn with_steps(mut self, steps: u32) -> Self {
        self.sampler.steps = Some(steps);
        self
    }

    /// The model's name in figures and golden files: the blob's file stem.
    pub fn model_name(&self) -> String {
        self.model
            .file_stem()
            .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
    }
}

/// A check that ran and passed.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The board's name.
    pub board: String,
    /// What the device reported.
    pub device: Report,
    /// The host's run.
    pub host: HostRun,
    /// Sizes and speed.
    pub figures: Figures,
    /// Shape of one generated sample (a latent model's decoded image).
    pub sample_shape: Vec<usize>,
    /// The image that ran.
    pub elf: PathBuf,
    /// Wall time of the device run.
    pub wall_time: Duration,
}

/// How a check ended, when it did not fail.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The device reproduced the host's run.
    Passed(Box<CheckReport>),
    /// The check could not run here (no probe attached); the message says why.
    Skipped(String),
}

/// The board crate directory of `board`: a path if it is one, else `boards/<board>`.
fn resolve_board(board: &str) -> PathBuf {
    let path = Path::new(board);
    if path.join(".cargo").join("config.toml").is_file() {
        path.to_path_buf()
    } else {
        board_dir(board)
    }
}

/// The board's generation binary: `package.metadata.ddm.generate-bin` of its Cargo.toml, or
/// `generate`.
pub fn generate_bin(board: &Board) -> String {
    std::fs::read_to_string(board.dir().join("Cargo.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|manifest| {
            manifest
                .get("package")?
                .get("metadata")?
                .get("ddm")?
                .get("generate-bin")?
                .as_str()
                .map(String::from)
        })
        .unwrap_or_else(|| "generate".into())
}

/// The runner for a user-given command: `sh -c <command>`, with `{elf}` in it replaced by the
/// binary's local path (quoted), or the path appended when `{elf}` does not appear. For
/// example `scp {elf} jetson:/tmp/ddm && ssh jetson /tmp/ddm`.
pub fn user_runner(command: &str) -> Vec<String> {
    let script = if command.contains("{elf}") {
        command.replace("{elf}", "\"$1\"")
    } else {
        format!("{command} \"$1\"")
    };
    vec!["sh".into(), "-c".into(), script, "sh".into()]
}

/// Instructions per clock tick when the runner is QEMU with `-icount shift=N`: QEMU's virtual
/// clock then advances `2^N` ns per executed instruction, so a clock of `hz` ticks per second
/// counts `1e9 / (hz 2^N)` instructions per tick. `None` without `-icount`.
pub fn instructions_per_tick(runner: &[String], hz: u64) -> Option<f64> {
    let position = runner.iter().position(|arg| arg == "-icount")?;
    let spec = runner.get(position + 1)?;
    let shift: u32 = spec
        .split(',')
        .find_map(|part| {
            part.strip_prefix("shift=")
                .or(Some(part).filter(|p| p.parse::<u32>().is_ok()))
        })?
        .parse()
        .ok()?;
    Some(1e9 / (hz as f64 * f64::from(1u32 << shift)))
}

/// Whether a debug probe is attached (`probe-rs list`).
fn probe_attached() -> Result<bool> {
    let output = Command::new("probe-rs")
        .arg("list")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::QemuMissing {
                    program: "probe-rs".into(),
                    hint: crate::install_hint("probe-rs"),
                }
            } else {
                Error::Io {
                    context: "running probe-rs list".into(),
                    source,
                }
            }
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(output.status.success() && text.lines().any(|line| line.trim_start().starts_with('[')))
}

/// Runs one check (see the module documentation).
pub fn check(options: &CheckOptions) -> Result<Outcome> {
    let mut board = Board::open(resolve_board(&options.board))?;
    let name = board.name();
    let program = Path::new(&board.runner()[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let wrong_backend = |expected: &str| Error::BoardConfig {
        path: board.dir().join(".cargo/config.toml"),
        reason: format!(
            "{name} runs with `{program}`, not on the {} backend: use --backend {expected}",
            options.backend
        ),
    };
    match &options.backend {
        Backend::Qemu if program == "probe-rs" => return Err(wrong_backend("probe")),
        Backend::Qemu if board.output_format() == crate::OutputFormat::Text => {
            return Err(wrong_backend("linux-arm"))
        }
        Backend::Qemu => {}
        Backend::Probe => {
            if program != "probe-rs" {
                return Err(wrong_backend(if program == "qemu-system-arm" {
                    "qemu"
                } else {
                    "linux-arm"
                }));
            }
            if !probe_attached()? {
                return Ok(Outcome::Skipped(format!(
                    "no probe attached: skipping {name}"
                )));
            }
            let mut runner = board.runner().to_vec();
            runner.extend(["--log-format".into(), "{L} {s}".into()]);
            board = board.with_runner(runner);
        }
        Backend::LinuxArm { command } => {
            if board.output_format() != crate::OutputFormat::Text {
                return Err(wrong_backend(if program == "probe-rs" {
                    "probe"
                } else {
                    "qemu"
                }));
            }
            if let Some(command) = command {
                board = board.with_runner(user_runner(command));
            }
        }
    }
    board.check_emulator()?;

    let model = std::fs::canonicalize(&options.model).map_err(|source| Error::Io {
        context: format!("reading the model blob {}", options.model.display()),
        source,
    })?;
    let model_path = model.to_string_lossy().into_owned();
    let (seed, num) = (options.seed.to_string(), options.num.to_string());
    let class = options.class.map(|c| c.to_string()).unwrap_or_default();
    let guidance = match options.class {
        Some(_) => options.guidance.scale().to_string(),
        None => String::new(),
    };
    let sampler = sampler_env(&options.sampler);
    let mut env = vec![
        ("DDM_MODEL_BLOB", model_path.as_str()),
        ("DDM_SEED", seed.as_str()),
        ("DDM_NUM", num.as_str()),
        ("DDM_CLASS", class.as_str()),
        ("DDM_GUIDANCE", guidance.as_str()),
    ];
    env.extend(
        sampler
            .iter()
            .map(|(variable, value)| (*variable, value.as_str())),
    );
    let bin = generate_bin(&board);
    let blob = std::fs::read(&model).map_err(|source| Error::Io {
        context: format!("reading {}", model.display()),
        source,
    })?;
    let elf = board.build(&bin, &env).map_err(|error| match error {
        Error::RamOverflow {
            board,
            ram,
            linker_says,
            ..
        } => Error::RamOverflow {
            board,
            arena: Bytes(arena_bytes(&blob, options).map(|a| a as u64)),
            ram,
            linker_says,
        },
        other => other,
    })?;

    // The host's run, with exactly the settings the build embedded.
    let parsed = Blob::parse(&blob).map_err(|e| Error::ModelRejected {
        board: name.clone(),
        reason: e.to_string(),
    })?;
    let config = run_config(&parsed, options);
    let sample_shape = {
        let (dims, rank) = parsed.image_shape().dims();
        dims[..rank].to_vec()
    };
    // The device first: when both would fail (a model that overflows, say), the device's
    // failure and log are what this check is about.
    let run = board.run(&elf, options.timeout)?.success()?;
    let device = protocol::parse(run.messages())?;
    let host = host_run(&blob, &config)?;
    if (device.run.steps, device.run.seed, device.run.num)
        != (config.steps, config.seed, config.num)
    {
        return Err(Error::Mismatch {
            board: name,
            details: format!(
                "the device ran {} steps of seed {} for {} samples, the host {} of seed {} for {}: \
                 the image was not built with this check's settings",
                device.run.steps, device.run.seed, device.run.num, config.steps, config.seed,
                config.num
            ),
        });
    }
    compare(&device, &host).map_err(|details| Error::Mismatch {
        board: name.clone(),
        details,
    })?;

    let figures = figures(&board, &elf, &device, options);
    Ok(Outcome::Passed(Box::new(CheckReport {
        board: name,
        device,
        host,
        figures,
        sample_shape,
        elf,
        wall_time: run.wall_time,
    })))
}

/// The run configuration the board's build resolves for `options` (ddm-board-build's rule).
pub fn run_config(blob: &Blob<'_>, options: &CheckOptions) -> RunConfig {
    let settings = GenerateSettings {
        sampler: options.sampler,
        ..GenerateSettings::new(options.seed, 0)
    };
    RunConfig {
        sampler: options.sampler,
        // Settings the runtime refuses keep the blob's steps: the run reports the refusal.
        steps: settings
            .resolve(blob)
            .map_or(blob.sampler_defaults().steps, |config| config.steps),
        seed: options.seed,
        num: options.num,
        class: options.class,
        guidance: options.guidance,
    }
}

/// The arena `options` need with `blob`, if the blob parses.
fn arena_bytes(blob: &[u8], options: &CheckOptions) -> Option<usize> {
    let blob = Blob::parse(blob).ok()?;
    let steps = run_config(&blob, options).steps;
    required_arena_bytes_for_steps(&blob, steps as usize).ok()
}

/// The figures of a passed run: ticks convert to instructions under QEMU `-icount`
/// ([`instructions_per_tick`]), and are cycles on the DWT.
fn figures(board: &Board, elf_path: &Path, device: &Report, options: &CheckOptions) -> Figures {
    // A step's ticks cover both calls of a guided step.
    let guided = options.class.is_some() && options.guidance.needs_unconditional();
    let calls_per_step = if guided { 2 } else { 1 };
    let calls = (device.steps.len() * calls_per_step as usize).max(1) as f64;
    let mean_ticks = device.steps.iter().map(|s| s.ticks as f64).sum::<f64>() / calls;
    let per_tick = instructions_per_tick(board.runner(), device.board.hz);
    let instructions_per_call = per_tick.map(|f| (mean_ticks * f).round() as u64);
    // A generated image: every step's calls and the decoder's call.
    let samples = device.images.len().max(1) as f64;
    let decode_ticks = device.decodes.iter().map(|d| d.ticks as f64).sum::<f64>();
    let image_ticks =
        (device.steps.iter().map(|s| s.ticks as f64).sum::<f64>() + decode_ticks) / samples;
    let instructions_per_image = per_tick.map(|f| (image_ticks * f).round() as u64);
    let instructions_per_decode = per_tick
        .filter(|_| !device.decodes.is_empty())
        .map(|f| (decode_ticks / device.decodes.len() as f64 * f).round() as u64);
    let cycles_per_call = (device.board.clock == "dwt-cycles").then_some(mean_ticks.round() as u64);
    let regions = board.memory_regions();
    let sizes = (!regions.is_empty())
        .then(|| elf::sizes(elf_path, &regions).ok())
        .flatten();
    Figures {
        board: board.name(),
        model: options.model_name(),
        steps: device.run.steps,
        blob_bytes: device.model.blob_bytes,
        arena_bytes: device.model.arena_bytes,
        macs_per_call: device.model.macs,
        calls_per_step,
        instructions_per_call,
        cycles_per_call,
        decoder_macs: (device.model.decoder_macs > 0).then_some(device.model.decoder_macs),
        instructions_per_decode,
        instructions_per_image,
        flash_bytes: sizes.map(|s| s.flash_bytes),
        ram_bytes: sizes.map(|s| s.ram_bytes),
        stack_bytes: device.stack.map(|(used, _)| used),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icount_shift_gives_instructions_per_tick() {
        let runner: Vec<String> = "qemu-system-arm -icount shift=0,align=off,sleep=off -kernel"
            .split_whitespace()
            .map(String::from)
            .collect();
        assert_eq!(instructions_per_tick(&runner, 25_000_000), Some(40.0));
        let runner: Vec<String> = ["qemu-system-arm", "-icount", "2"]
            .map(String::from)
            .to_vec();
        assert_eq!(instructions_per_tick(&runner, 25_000_000), Some(10.0));
        assert_eq!(instructions_per_tick(&["qemu".into()], 1), None);
    }

    #[test]
    fn user_commands_get_the_binary() {
        assert_eq!(
            user_runner("scp {elf} j:/tmp/d && ssh j /tmp/d")[2],
            "scp \"$1\" j:/tmp/d && ssh j /tmp/d"
        );
        assert_eq!(user_runner("ssh j")[2], "ssh j \"$1\"");
    }

    #[test]
    fn backends_parse() {
        assert_eq!("qemu".parse(), Ok(Backend::Qemu));
        assert_eq!("probe".parse(), Ok(Backend::Probe));
        assert_eq!("linux-arm".parse(), Ok(Backend::LinuxArm { command: None }));
        assert!("jtag".parse::<Backend>().is_err());
    }
}
