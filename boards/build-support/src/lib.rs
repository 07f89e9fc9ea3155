//! The build-script half of the ddm board crates: the model blob reaches a board at build
//! time, from a path, never by editing source.
//!
//! A board's `build.rs` calls [`link_memory_x`] (puts its `memory.x` where cortex-m-rt's
//! `link.x` finds it) and [`embed_model`], which reads these environment variables:
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `DDM_MODEL_BLOB` | path of the model blob (relative: to the board crate's directory) | `hil/fixtures/optdigits-mlp-int8.ddm` of this repository |
//! | `DDM_SAMPLER` | `ddim`, `dpmpp-2m`, `ddpm`, `pc` or `pf-ode` | the blob's sampler |
//! | `DDM_STEPS` | timesteps walked per sample (the network evaluations of `ddim`, `dpmpp-2m` and `ddpm`) | the blob's sampler's |
//! | `DDM_SPACING` | `leading`, `linspace`, `trailing` or `logsnr`, or the timesteps, comma-separated (`999,760,500,250`: `--timesteps`) | see below |
//! | `DDM_STEPS_OFFSET` | offset of leading timesteps | see below |
//! | `DDM_ETA` | DDIM's eta | see below |
//! | `DDM_VARIANCE` | DDPM's reverse variance, `beta` or `posterior` | see below |
//! | `DDM_CLIP_SAMPLE` | clamp x0 estimates to `[-R, R]`: `R`, or `none` for no clamp | see below |
//! | `DDM_FIRST_ORDER_PENULTIMATE` | DPM-Solver++'s first-order penultimate step: `true` or `false` | see below |
//! | `DDM_PC_CORRECTOR_STEPS` | the predictor-corrector's corrector steps per timestep | see below |
//! | `DDM_PC_SNR` | the predictor-corrector's signal-to-noise ratio | see below |
//! | `DDM_SEED` | seed of the random streams | 0 |
//! | `DDM_NUM` | number of samples (indices `0..num`) | 1 |
//! | `DDM_CLASS` | the class to generate, for a class-conditional blob | none: the unconditional model |
//! | `DDM_GUIDANCE` | classifier-free guidance of `DDM_CLASS` (1: none) | `ddm_core::guidance::DEFAULT_SCALE` |
//!
//! The sampler variables mean what `ddm sample --model`'s flags of the same names mean
//! (`--sampler`, `--steps`, `--spacing`, ...; the names are `ddm_core::names`'): each one
//! set replaces that setting; each one unset or empty keeps the blob's when the sampler is the
//! blob's, and takes the core's default for the chosen sampler otherwise
//! (`SamplerOptions::resolve`). [`sampler_env`] writes them for a [`SamplerOptions`], as the
//! HIL harness does.
//!
//! It parses the blob with the device runtime itself ([`ddm_firmware::Blob::parse`]), so a
//! corrupt or truncated blob fails the build with the runtime's reason; checks the settings
//! as the runtime would; computes the exact arena the run needs
//! ([`ddm_firmware::required_arena_bytes_for_steps`]) and fails the build at once when that
//! alone exceeds the board's RAM (from `memory.x`). Then it copies the blob into `OUT_DIR`
//! and writes `ddm_model.rs` there, which the board includes with
//! `ddm_board_support::include_model!()`: the blob as a 16-byte aligned static in flash,
//! `ARENA_BYTES`, `SAMPLE_LEN`, the `RUN` configuration and `MODEL_SOURCE`. The arena becomes
//! a `static` of exactly `ARENA_BYTES`, so an arena that fits the RAM only without the rest of
//! the program's statics and its stack fails at link time ("region RAM overflowed" or the
//! board's stack-reserve assertion), as it would on hardware.
//!
//! Every failure is printed as a `cargo::error=` line, so cargo shows it as the build's error.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use ddm_core::loss_weight::ReverseVariance;
use ddm_core::sampler::SamplerKind;
use ddm_core::timesteps::{GivenTimesteps, Spacing};
use ddm_core::Guidance;
use ddm_firmware::{required_arena_bytes_for_steps, Blob, GenerateSettings, SamplerOptions};

pub mod memory_x;

pub use memory_x::ram_length;

/// The environment variable that names the model blob.
pub const MODEL_ENV: &str = "DDM_MODEL_BLOB";

/// The sampler's variables, in the order of `SamplerOptions`' fields.
pub const SAMPLER_ENV: [&str; 10] = [
    "DDM_SAMPLER",
    "DDM_STEPS",
    "DDM_SPACING",
    "DDM_STEPS_OFFSET",
    "DDM_ETA",
    "DDM_VARIANCE",
    "DDM_CLIP_SAMPLE",
    "DDM_FIRST_ORDER_PENULTIMATE",
    "DDM_PC_CORRECTOR_STEPS",
    "DDM_PC_SNR",
];

/// Every environment variable [`embed_model`] reads.
pub const SETTINGS_ENV: [&str; 15] = [
    MODEL_ENV,
    SAMPLER_ENV[0],
    SAMPLER_ENV[1],
    SAMPLER_ENV[2],
    SAMPLER_ENV[3],
    SAMPLER_ENV[4],
    SAMPLER_ENV[5],
    SAMPLER_ENV[6],
    SAMPLER_ENV[7],
    SAMPLER_ENV[8],
    SAMPLER_ENV[9],
    "DDM_SEED",
    "DDM_NUM",
    "DDM_CLASS",
    "DDM_GUIDANCE",
];

/// The blob used when `DDM_MODEL_BLOB` is not set: the optdigits int8 MLP of the tests.
pub fn default_blob() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../hil/fixtures/optdigits-mlp-int8.ddm")
}

/// Why a board cannot be built with the given model and settings.
#[derive(Debug, Clone, PartialEq)]
pub enum BuildError {
    /// The blob file cannot be read.
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The device runtime refuses the blob.
    InvalidBlob {
        /// The path.
        path: PathBuf,
        /// The runtime's reason.
        reason: ddm_firmware::Error,
    },
    /// A `DDM_*` variable has a value that cannot be used.
    InvalidSetting {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The device runtime refuses the sampler settings for this blob.
    InvalidSampler {
        /// The settings, as `VARIABLE=value` pairs of the variables that were set.
        settings: String,
        /// The runtime's reason.
        reason: String,
    },
    /// The arena alone needs more than the board's RAM.
    ArenaTooLarge {
        /// The board (crate directory name).
        board: String,
        /// Arena bytes the run needs.
        arena_bytes: usize,
        /// Steps of the run.
        steps: u32,
        /// RAM of the board, from its `memory.x`.
        ram_bytes: usize,
    },
    /// Writing into `OUT_DIR` failed, or cargo's variables are missing.
    Output(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Read { path, reason } => {
                write!(f, "cannot read the model blob {}: {reason}", path.display())
            }
            BuildError::InvalidBlob { path, reason } => {
                write!(f, "{} is not a usable model blob: {reason}", path.display())
            }
            BuildError::InvalidSetting {
                variable,
                value,
                reason,
            } => write!(f, "{variable}={value:?}: {reason}"),
            BuildError::InvalidSampler { settings, reason } => {
                write!(f, "the sampler settings [{settings}] cannot run: {reason}")
            }
            BuildError::ArenaTooLarge {
                board,
                arena_bytes,
                steps,
                ram_bytes,
            } => write!(
                f,
                "blob too large for {board}'s RAM: generating in {steps} steps needs an arena of \
                 {arena_bytes} bytes, and the board has {ram_bytes} bytes of RAM"
            ),
            BuildError::Output(reason) => write!(f, "{reason}"),
        }
    }
}

impl std::error::Error for BuildError {}

/// What [`embed_model`] embedded.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    /// The blob's path.
    pub source: PathBuf,
    /// Bytes of the blob.
    pub blob_bytes: usize,
    /// Bytes of the arena.
    pub arena_bytes: usize,
    /// Elements of one generated sample (a latent model's decoded image:
    /// [`Blob::image_len`]).
    pub sample_len: usize,
    /// The sampler settings the build was given (`None` fields: the blob's or the
    /// sampler's defaults).
    pub sampler: SamplerOptions,
    /// Steps per sample, resolved.
    pub steps: u32,
    /// Seed.
    pub seed: u64,
    /// Number of samples.
    pub num: u64,
    /// The class to generate (`None`: the unconditional model).
    pub class: Option<u32>,
    /// Its guidance.
    pub guidance: Guidance,
}

/// Copies `memory_x` (the board's `memory.x`) into `OUT_DIR` and puts that on the linker's
/// search path, where cortex-m-rt's `link.x` includes it.
pub fn link_memory_x(memory_x: &[u8]) {
    let out = out_dir().unwrap_or_else(|e| fail(&e));
    fs::write(out.join("memory.x"), memory_x)
        .unwrap_or_else(|e| fail(&BuildError::Output(format!("writing memory.x: {e}"))));
    println!("cargo::rustc-link-search={}", out.display());
    println!("cargo::rerun-if-changed=memory.x");
}

/// Embeds the model for board `board` (its crate directory name) whose RAM is described by
/// `memory_x` (`None`: no RAM check, for hosted targets), or fails the build with the reason.
pub fn embed_model(board: &str, memory_x: Option<&str>) -> Embedded {
    for variable in SETTINGS_ENV {
        println!("cargo::rerun-if-env-changed={variable}");
    }
    let ram_bytes = memory_x.and_then(ram_length);
    let result = settings_from_env().and_then(|(path, settings)| {
        println!("cargo::rerun-if-changed={}", path.display());
        embed(board, &path, &settings, ram_bytes)
    });
    result.unwrap_or_else(|e| fail(&e))
}

/// Prints `error` as cargo's build error and ends the build script.
fn fail(error: &BuildError) -> ! {
    // One `cargo::error` line per line of the message: cargo shows them all.
    for line in error.to_string().lines() {
        println!("cargo::error={line}");
    }
    std::process::exit(0)
}

fn out_dir() -> Result<PathBuf, BuildError> {
    std::env::var_os("OUT_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| {
            BuildError::Output("OUT_DIR is not set: run this from a build script".into())
        })
}

/// What to generate, as read from the `DDM_*` variables.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The sampler variables ([`SAMPLER_ENV`]).
    pub sampler: SamplerOptions,
    /// `DDM_SEED`.
    pub seed: u64,
    /// `DDM_NUM`.
    pub num: u64,
    /// `DDM_CLASS`.
    pub class: Option<u32>,
    /// `DDM_GUIDANCE` (the default scale when unset).
    pub guidance: Guidance,
}

fn env_value(variable: &'static str) -> Option<String> {
    std::env::var(variable)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// Parses `variable`'s value (`None`: unset) with `parse`, or names what it expected.
fn parse_value<T>(
    variable: &'static str,
    value: Option<String>,
    expected: impl fmt::Display,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, BuildError> {
    let Some(value) = value else { return Ok(None) };
    match parse(value.trim()) {
        Some(parsed) => Ok(Some(parsed)),
        None => Err(BuildError::InvalidSetting {
            variable,
            value,
            reason: format!("expected {expected}"),
        }),
    }
}

fn parse_number<T>(
    variable: &'static str,
    value: Option<String>,
    min: T,
) -> Result<Option<T>, BuildError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    parse_value(variable, value, format_args!("an integer >= {min}"), |v| {
        v.parse::<T>().ok().filter(|n| *n >= min)
    })
}

fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> String {
    all.iter().map(|&v| name(v)).collect::<Vec<_>>().join(", ")
}

/// The sampler options in the [`SAMPLER_ENV`] variables, looked up with `lookup` (an unset or
/// blank variable: `None`). The inverse of [`sampler_env`].
///
/// # Errors
/// [`BuildError::InvalidSetting`] for a value that is not a name, number or flag its variable
/// takes (the values themselves are checked against the blob by the runtime's rule later).
pub fn sampler_options(
    lookup: impl Fn(&'static str) -> Option<String>,
) -> Result<SamplerOptions, BuildError> {
    let value = |variable: &'static str| lookup(variable).filter(|v| !v.trim().is_empty());
    let [sampler, steps, spacing, steps_offset, eta, variance, clip_sample, first_order, corrector_steps, snr] =
        SAMPLER_ENV;
    Ok(SamplerOptions {
        kind: parse_value(
            sampler,
            value(sampler),
            names(&SamplerKind::ALL, SamplerKind::name),
            SamplerKind::from_name,
        )?,
        steps: parse_number(steps, value(steps), 1u32)?,
        spacing: parse_value(
            spacing,
            value(spacing),
            format_args!(
                "{} or the timesteps, comma-separated and strictly descending",
                names(&Spacing::ALL, Spacing::name)
            ),
            spacing_from_text,
        )?,
        steps_offset: parse_number(steps_offset, value(steps_offset), 0u32)?,
        eta: parse_value(eta, value(eta), "a number", |v| v.parse::<f32>().ok())?,
        variance: parse_value(
            variance,
            value(variance),
            names(&ReverseVariance::ALL, ReverseVariance::name),
            ReverseVariance::from_name,
        )?,
        clip_sample: parse_value(
            clip_sample,
            value(clip_sample),
            "a number or none",
            |v| match v {
                "none" => Some(None),
                radius => radius.parse::<f32>().ok().map(Some),
            },
        )?,
        first_order_penultimate: parse_value(
            first_order,
            value(first_order),
            "true or false",
            |v| v.parse::<bool>().ok(),
        )?,
        corrector_steps: parse_number(corrector_steps, value(corrector_steps), 0u32)?,
        snr: parse_value(snr, value(snr), "a number", |v| v.parse::<f32>().ok())?,
    })
}

/// A spacing's name, or given timesteps as `--timesteps` takes them (`999,700,400,100`).
fn spacing_from_text(text: &str) -> Option<Spacing> {
    Spacing::from_name(text).or_else(|| {
        let values: Vec<u32> = text
            .split(',')
            .map(|part| part.trim().parse().ok())
            .collect::<Option<_>>()?;
        GivenTimesteps::new(&values).ok().map(Spacing::Given)
    })
}

/// `spacing` as [`spacing_from_text`] reads it.
fn spacing_text(spacing: Spacing) -> String {
    match spacing {
        Spacing::Given(given) => {
            let values: Vec<String> = given.as_slice().iter().map(u32::to_string).collect();
            values.join(",")
        }
        named => named.name().into(),
    }
}

/// `options` as the values of the [`SAMPLER_ENV`] variables: each setting given in its
/// variable's form (numbers exactly: `f32`s in their shortest round-tripping decimal), an
/// empty value for each one left `None`.
pub fn sampler_env(options: &SamplerOptions) -> [(&'static str, String); 10] {
    fn text<T>(value: Option<T>, form: impl Fn(T) -> String) -> String {
        value.map(form).unwrap_or_default()
    }
    let values = [
        text(options.kind, |k| k.name().into()),
        text(options.steps, |n| n.to_string()),
        text(options.spacing, spacing_text),
        text(options.steps_offset, |n| n.to_string()),
        text(options.eta, |eta| eta.to_string()),
        text(options.variance, |v| v.name().into()),
        text(options.clip_sample, |clip| {
            clip.map_or_else(|| "none".into(), |r| r.to_string())
        }),
        text(options.first_order_penultimate, |flag| flag.to_string()),
        text(options.corrector_steps, |n| n.to_string()),
        text(options.snr, |snr| snr.to_string()),
    ];
    let mut pairs = SAMPLER_ENV.map(|variable| (variable, String::new()));
    for (pair, value) in pairs.iter_mut().zip(values) {
        pair.1 = value;
    }
    pairs
}

fn settings_from_env() -> Result<(PathBuf, Settings), BuildError> {
    let path = env_value(MODEL_ENV).map_or_else(default_blob, PathBuf::from);
    let settings = Settings {
        sampler: sampler_options(|variable| std::env::var(variable).ok())?,
        seed: parse_number("DDM_SEED", env_value("DDM_SEED"), 0u64)?.unwrap_or(0),
        num: parse_number("DDM_NUM", env_value("DDM_NUM"), 1u64)?.unwrap_or(1),
        class: parse_number("DDM_CLASS", env_value("DDM_CLASS"), 0u32)?,
        guidance: guidance(env_value("DDM_GUIDANCE"))?,
    };
    if settings.class.is_none() && env_value("DDM_GUIDANCE").is_some() {
        return Err(BuildError::InvalidSetting {
            variable: "DDM_GUIDANCE",
            value: env_value("DDM_GUIDANCE").unwrap_or_default(),
            reason: "guidance needs a class (DDM_CLASS)".into(),
        });
    }
    Ok((path, settings))
}

/// `DDM_GUIDANCE`: a scale `>= 1` ([`Guidance::new`]), the default when unset.
fn guidance(value: Option<String>) -> Result<Guidance, BuildError> {
    let scale = parse_value("DDM_GUIDANCE", value.clone(), "a number >= 1", |v| {
        v.parse::<f32>().ok()
    })?;
    match scale {
        None => Ok(Guidance::DEFAULT),
        Some(scale) => Guidance::new(scale).map_err(|e| BuildError::InvalidSetting {
            variable: "DDM_GUIDANCE",
            value: value.unwrap_or_default(),
            reason: e.to_string(),
        }),
    }
}

/// Validates the blob at `path` and the settings, and writes `model.ddm` and `ddm_model.rs`
/// into `OUT_DIR`.
pub fn embed(
    board: &str,
    path: &Path,
    settings: &Settings,
    ram_bytes: Option<usize>,
) -> Result<Embedded, BuildError> {
    let bytes = fs::read(path).map_err(|e| BuildError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let embedded = check(board, path, &bytes, settings, ram_bytes)?;
    let out = out_dir()?;
    let copy = out.join("model.ddm");
    fs::write(&copy, &bytes)
        .map_err(|e| BuildError::Output(format!("writing {}: {e}", copy.display())))?;
    let code = generated_code(&embedded, &copy);
    fs::write(out.join("ddm_model.rs"), code)
        .map_err(|e| BuildError::Output(format!("writing ddm_model.rs: {e}")))?;
    Ok(embedded)
}

/// The checks of [`embed`], without writing anything.
pub fn check(
    board: &str,
    path: &Path,
    bytes: &[u8],
    settings: &Settings,
    ram_bytes: Option<usize>,
) -> Result<Embedded, BuildError> {
    let invalid = |reason| BuildError::InvalidBlob {
        path: path.to_path_buf(),
        reason,
    };
    let blob = Blob::parse(bytes).map_err(invalid)?;
    if blob.kind() != ddm_firmware::BlobKind::Model {
        return Err(invalid(ddm_firmware::Error::InvalidSchedule(
            "a network blob cannot generate: it has no schedule",
        )));
    }
    let generate = GenerateSettings {
        sampler: settings.sampler,
        seed: settings.seed,
        sample_index: 0,
        class: settings.class,
        guidance: settings.guidance,
    };
    generate
        .check_class(&blob)
        .map_err(|error| BuildError::InvalidSetting {
            variable: "DDM_CLASS",
            value: settings.class.map(|c| c.to_string()).unwrap_or_default(),
            reason: error.to_string(),
        })?;
    // The runtime's own rule: what the device will resolve, refused here if it would refuse.
    let config = generate
        .resolve(&blob)
        .map_err(|error| BuildError::InvalidSampler {
            settings: sampler_env(&settings.sampler)
                .iter()
                .filter(|(_, value)| !value.is_empty())
                .map(|(variable, value)| format!("{variable}={value}"))
                .collect::<Vec<_>>()
                .join(" "),
            reason: format!(
                "{error} (the model was trained with {} timesteps)",
                blob.train_steps()
            ),
        })?;
    let arena_bytes =
        required_arena_bytes_for_steps(&blob, config.steps as usize).map_err(invalid)?;
    if let Some(ram_bytes) = ram_bytes.filter(|&ram| arena_bytes > ram) {
        return Err(BuildError::ArenaTooLarge {
            board: board.into(),
            arena_bytes,
            steps: config.steps,
            ram_bytes,
        });
    }
    Ok(Embedded {
        source: path.to_path_buf(),
        blob_bytes: bytes.len(),
        arena_bytes,
        sample_len: blob.image_len(),
        sampler: settings.sampler,
        steps: config.steps,
        seed: settings.seed,
        num: settings.num,
        class: settings.class,
        guidance: settings.guidance,
    })
}

/// `options` as a Rust expression (floats by their bits, so exactly).
fn options_literal(options: &SamplerOptions) -> String {
    fn some<T>(value: Option<T>, form: impl Fn(T) -> String) -> String {
        value.map_or_else(|| "None".into(), |v| format!("Some({})", form(v)))
    }
    let float = |x: f32| format!("f32::from_bits({:#010x})", x.to_bits());
    let SamplerOptions {
        kind,
        steps,
        spacing,
        steps_offset,
        eta,
        variance,
        clip_sample,
        first_order_penultimate,
        corrector_steps,
        snr,
    } = *options;
    format!(
        "::ddm_board_support::SamplerOptions {{\n        \
         kind: {},\n        steps: {},\n        spacing: {},\n        steps_offset: {},\n        \
         eta: {},\n        variance: {},\n        clip_sample: {},\n        \
         first_order_penultimate: {},\n        corrector_steps: {},\n        snr: {},\n    }}",
        some(kind, |k| format!("::ddm_board_support::SamplerKind::{k:?}")),
        some(steps, |n| n.to_string()),
        some(spacing, |s| match s {
            Spacing::Given(given) => format!(
                "::ddm_board_support::Spacing::Given(match \
                 ::ddm_board_support::GivenTimesteps::new(&{:?}) {{ Ok(given) => given, \
                 Err(_) => panic!(\"invalid timesteps\") }})",
                given.as_slice()
            ),
            named => format!("::ddm_board_support::Spacing::{named:?}"),
        }),
        some(steps_offset, |n| n.to_string()),
        some(eta, float),
        some(variance, |v| format!(
            "::ddm_board_support::ReverseVariance::{v:?}"
        )),
        some(clip_sample, |clip| some(clip, float)),
        some(first_order_penultimate, |flag| flag.to_string()),
        some(corrector_steps, |n| n.to_string()),
        some(snr, float),
    )
}

/// The contents of `ddm_model.rs`.
fn generated_code(embedded: &Embedded, copy: &Path) -> String {
    let sampler = options_literal(&embedded.sampler);
    format!(
        "// Generated by ddm-board-build from {source:?}; rebuilt when it or a DDM_* variable changes.\n\
         /// Where the model blob came from.\n\
         pub const MODEL_SOURCE: &str = {source:?};\n\
         /// The model blob, in flash.\n\
         pub static BLOB: ::ddm_board_support::Aligned<[u8; {blob_bytes}]> =\n    \
             ::ddm_board_support::Aligned(*include_bytes!({copy:?}));\n\
         /// Bytes of RAM the runtime needs to generate `RUN` (activations, sample buffers,\n\
         /// schedule, timesteps and alignment slack).\n\
         pub const ARENA_BYTES: usize = {arena_bytes};\n\
         /// Elements of one generated sample (a latent model's decoded image).\n\
         pub const SAMPLE_LEN: usize = {sample_len};\n\
         /// What to generate.\n\
         pub const RUN: ::ddm_board_support::RunConfig = ::ddm_board_support::RunConfig {{\n    \
             sampler: {sampler},\n    steps: {steps},\n    seed: {seed},\n    num: {num},\n    \
             class: {class:?},\n    guidance: match ::ddm_board_support::Guidance::new(\
             f32::from_bits({guidance:#010x})) {{\n        Ok(guidance) => guidance,\n        \
             Err(_) => panic!(\"invalid DDM_GUIDANCE\"),\n    }},\n}};\n",
        source = embedded.source.display().to_string(),
        blob_bytes = embedded.blob_bytes,
        copy = copy.display().to_string(),
        arena_bytes = embedded.arena_bytes,
        sample_len = embedded.sample_len,
        steps = embedded.steps,
        seed = embedded.seed,
        num = embedded.num,
        class = embedded.class,
        guidance = embedded.guidance.scale().to_bits(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(options: &SamplerOptions) -> Result<SamplerOptions, BuildError> {
        let env = sampler_env(options);
        sampler_options(|variable| {
            env.iter()
                .find(|(name, _)| *name == variable)
                .map(|(_, value)| value.clone())
        })
    }

    #[test]
    fn sampler_variables_round_trip_every_setting_exactly() {
        let every = SamplerOptions {
            kind: Some(SamplerKind::Ddim),
            steps: Some(7),
            spacing: Some(Spacing::LogSnr),
            steps_offset: Some(1),
            eta: Some(0.1),
            variance: Some(ReverseVariance::Beta),
            clip_sample: Some(Some(1.0e-3 / 3.0)),
            first_order_penultimate: Some(false),
            corrector_steps: Some(3),
            snr: Some(0.16),
        };
        assert_eq!(env_of(&every), Ok(every));
        let pc = SamplerOptions {
            corrector_steps: Some(0),
            snr: Some(1.0e-2 / 7.0),
            ..SamplerOptions::sampler(SamplerKind::PredictorCorrector, 40)
        };
        assert_eq!(env_of(&pc), Ok(pc));
        let ode = SamplerOptions::sampler(SamplerKind::ProbabilityFlow, 9);
        assert_eq!(env_of(&ode), Ok(ode));
        let unclipped = SamplerOptions {
            clip_sample: Some(None),
            first_order_penultimate: Some(true),
            ..SamplerOptions::sampler(SamplerKind::DpmSolverPp2m, 3)
        };
        assert_eq!(env_of(&unclipped), Ok(unclipped));
        assert_eq!(env_of(&SamplerOptions::none()), Ok(SamplerOptions::none()));
        let given = SamplerOptions {
            spacing: Some(Spacing::Given(
                GivenTimesteps::new(&[999, 700, 400, 100]).unwrap(),
            )),
            ..SamplerOptions::sampler(SamplerKind::Ddim, 4)
        };
        assert_eq!(env_of(&given), Ok(given));
        assert!(sampler_env(&given)
            .iter()
            .any(|pair| *pair == ("DDM_SPACING", "999,700,400,100".to_string())));
        assert!(sampler_env(&SamplerOptions::none())
            .iter()
            .all(|(_, value)| value.is_empty()));
        for kind in SamplerKind::ALL {
            let options = SamplerOptions::sampler(kind, 2);
            assert_eq!(env_of(&options), Ok(options));
        }
    }

    #[test]
    fn sampler_variables_refuse_what_their_flags_refuse() {
        for (variable, value) in [
            ("DDM_SAMPLER", "euler"),
            ("DDM_SAMPLER", "langevin"),
            ("DDM_STEPS", "0"),
            ("DDM_STEPS", "four"),
            ("DDM_SPACING", "log-snr"),
            ("DDM_SPACING", "100,400"),
            ("DDM_SPACING", "999,,100"),
            ("DDM_STEPS_OFFSET", "-1"),
            ("DDM_ETA", "x"),
            ("DDM_VARIANCE", "fixed_small"),
            ("DDM_CLIP_SAMPLE", "off"),
            ("DDM_FIRST_ORDER_PENULTIMATE", "yes"),
        ] {
            let error =
                sampler_options(|v| (v == variable).then(|| value.to_string())).expect_err(value);
            assert!(
                matches!(&error, BuildError::InvalidSetting { variable: v, .. } if *v == variable),
                "{error}"
            );
        }
    }

    #[test]
    fn generated_options_are_the_given_ones() {
        let options = SamplerOptions {
            kind: Some(SamplerKind::Ddpm),
            eta: Some(0.3),
            clip_sample: Some(None),
            ..SamplerOptions::none()
        };
        let code = options_literal(&options);
        assert!(
            code.contains("kind: Some(::ddm_board_support::SamplerKind::Ddpm)"),
            "{code}"
        );
        assert!(
            code.contains(&format!(
                "eta: Some(f32::from_bits({:#010x}))",
                0.3f32.to_bits()
            )),
            "{code}"
        );
        assert!(code.contains("clip_sample: Some(None)"), "{code}");
        assert!(code.contains("steps: None"), "{code}");
        let given = SamplerOptions {
            spacing: Some(Spacing::Given(GivenTimesteps::new(&[999, 500]).unwrap())),
            ..SamplerOptions::none()
        };
        let code = options_literal(&given);
        assert!(
            code.contains("::ddm_board_support::GivenTimesteps::new(&[999, 500])"),
            "{code}"
        );
    }

    #[test]
    fn corrupt_blob_is_refused_with_the_runtime_reason() {
        let settings = Settings {
            sampler: SamplerOptions::none(),
            seed: 0,
            num: 1,
            class: None,
            guidance: Guidance::DEFAULT,
        };
        let error = check(
            "board",
            Path::new("x.ddm"),
            b"not a blob at all, long enough?",
            &settings,
            None,
        )
        .expect_err("garbage is no blob");
        assert!(matches!(error, BuildError::InvalidBlob { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with("x.ddm is not a usable model blob: "),
            "{error}"
        );
    }
}
