//! Hardware-in-the-loop harness: builds a board crate from `boards/`, runs one of its binaries
//! under QEMU (or qemu-aarch64, or on a probe-attached board) with a timeout, and returns the
//! log the device printed; [`check`] compares a generation run with the host's, bit for bit.
//!
//! Modules: [`check`] (one whole check: build, run, compare, figures, golden files, for the
//! `qemu`, `probe` and `linux-arm` backends), [`protocol`] (the report boards print),
//! [`reference`](mod@reference) (the host's run), [`compare`], [`elf`] (flash and RAM use),
//! [`golden`], [`images`] (PNG and `.npy` output for people), [`layers`] (single-layer models
//! for the benchmark).
//!
//! # Board crates
//!
//! A board crate is a standalone Cargo package (outside this workspace) whose
//! `.cargo/config.toml` is the one description of how to build and run it:
//! - `build.target`: the target triple its binaries are built for;
//! - `target.<triple>.runner`: the QEMU command line that runs an ELF. It ends with `-kernel`,
//!   because the ELF's path is appended to it, exactly as `cargo run` does.
//!
//! Its binaries write defmt frames over semihosting, which QEMU passes to its stdout, and end
//! the run with a semihosting exit: status 0 for success, non-zero for a panic or a failed
//! check. `boards/qemu-mps2-an386` is the first such board. A board for a Linux target
//! (`boards/jetson`) prints the same messages as plain text lines on stdout instead
//! ([`OutputFormat::Text`]).
//!
//! # Flow
//!
//! [`run_board`] does the round trip for one binary. Its steps are public for callers that
//! need them apart:
//! 1. [`Board::open`] reads the board's Cargo configuration;
//! 2. [`Board::check_emulator`] makes sure the runner's emulator is installed;
//! 3. [`Board::build`] builds the binary in release mode and returns the ELF's path;
//! 4. [`Board::run`] runs the ELF under the emulator, kills it at the timeout, and decodes its
//!    stdout against the ELF's defmt table into a [`DeviceRun`];
//! 5. [`DeviceRun::success`] turns a non-zero exit status into [`Error::DeviceFailed`].
//!
//! Every run is bounded by its timeout: an emulator that has not exited by then is killed and
//! the run reported as [`Error::Timeout`], never waited on.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use std::sync::{Mutex, OnceLock};

use defmt_decoder::{DecodeError, Table};
pub use defmt_parser::Level;

pub mod check;
pub mod compare;
pub mod elf;
pub mod golden;
pub mod images;
pub mod layers;
pub mod protocol;
pub mod reference;

/// How many lines of cargo's output a [`Error::BuildFailed`] keeps.
const BUILD_OUTPUT_TAIL_LINES: usize = 40;

/// How often a running emulator is polled for its exit.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Everything that can go wrong between a board's sources and its decoded log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The emulator (or runner) named by the board's runner is not installed.
    #[error("`{program}` is not installed or not on PATH: {hint}")]
    QemuMissing {
        /// The program the runner names.
        program: String,
        /// How to install it.
        hint: &'static str,
    },

    /// The cross linker a board's configuration names is not installed.
    #[error("the linker `{linker}` is not installed: {hint}")]
    LinkerMissing {
        /// The linker.
        linker: String,
        /// How to install it.
        hint: &'static str,
    },

    /// The board's build script refused the model or the settings (a corrupt blob, a step
    /// count the model cannot take, an arena larger than the board's RAM): the reason is the
    /// build script's.
    #[error("{board} cannot be built with this model: {reason}")]
    ModelRejected {
        /// The board.
        board: String,
        /// The build script's reason.
        reason: String,
    },

    /// The image does not fit the board's RAM: the linker refused it.
    #[error(
        "blob too large for {board}'s RAM: the link failed ({linker_says}); the model needs \
         {arena} for its arena, on top of the firmware's own static data and a stack \
         reserve, and the board has {ram}"
    )]
    RamOverflow {
        /// The board.
        board: String,
        /// Arena bytes the run needs (when the caller knows the model).
        arena: Bytes,
        /// RAM of the board, from its `memory.x`.
        ram: Bytes,
        /// The linker's complaint.
        linker_says: String,
    },

    /// The device's output is not a complete report.
    #[error("{0}")]
    Protocol(#[from] protocol::ProtocolError),

    /// The host could not produce the reference run.
    #[error("{0}")]
    Reference(#[from] reference::ReferenceError),

    /// The device computed something else than the host.
    #[error("{board} does not reproduce the host's run:\n{details}")]
    Mismatch {
        /// The board.
        board: String,
        /// The first differing element and step.
        details: String,
    },

    /// A figure drifted from its golden file, or the file is missing.
    #[error("{0}")]
    Golden(String),

    /// The Rust target the board builds for is not installed in the toolchain.
    #[error("the Rust target `{target}` is not installed: run `rustup target add {target}`")]
    TargetMissing {
        /// The board's target triple.
        target: String,
    },

    /// The board's `.cargo/config.toml` is missing or lacks what the harness needs.
    #[error("board configuration {}: {reason}", path.display())]
    BoardConfig {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// `cargo build` failed for a reason other than a missing target.
    #[error(
        "building `{bin}` in {} failed ({status}); last lines of cargo's output:\n{output_tail}",
        board.display()
    )]
    BuildFailed {
        /// The board directory.
        board: PathBuf,
        /// The binary being built.
        bin: String,
        /// Cargo's exit status.
        status: ExitStatus,
        /// The last lines cargo printed.
        output_tail: String,
    },

    /// The device had not exited when the timeout expired; the emulator was killed.
    #[error(
        "`{}` did not exit within {timeout:?}, so the emulator was killed; device log until then:\n{}",
        elf.display(),
        Log(log)
    )]
    Timeout {
        /// The ELF that was running.
        elf: PathBuf,
        /// The timeout that expired.
        timeout: Duration,
        /// What the device logged before it was killed.
        log: Vec<LogLine>,
    },

    /// The emulator exited with a non-zero status: a panic, a fault or a failed check on the
    /// device, or an emulator that refused to start (see `stderr`).
    #[error(
        "`{}` failed ({status}); device log:\n{}{}",
        elf.display(),
        Log(log),
        EmulatorStderr(stderr)
    )]
    DeviceFailed {
        /// The ELF that ran.
        elf: PathBuf,
        /// The emulator's exit status.
        status: ExitStatus,
        /// Everything the device logged, the panic message included.
        log: Vec<LogLine>,
        /// The emulator's own diagnostics.
        stderr: String,
    },

    /// The ELF has no usable defmt table, or the device's output is not valid defmt frames.
    #[error("decoding the defmt output of `{}`: {reason}", elf.display())]
    Decode {
        /// The ELF whose table was used.
        elf: PathBuf,
        /// What failed.
        reason: String,
    },

    /// Starting a process or reading a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A byte count, displayed as `N bytes` or `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub Option<u64>);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n} bytes"),
            None => f.write_str("an unknown number of bytes"),
        }
    }
}

/// One decoded defmt frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The frame's level; `None` for `defmt::println!`.
    pub level: Option<Level>,
    /// The formatted message, without level, timestamp or location.
    pub message: String,
}

impl fmt::Display for LogLine {
    /// `LEVEL message`, with the message's continuation lines indented under its first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = self.level.map_or("", Level::as_str).to_ascii_uppercase();
        write!(f, "{level:<5} ")?;
        for (i, line) in self.message.split('\n').enumerate() {
            if i > 0 {
                f.write_str("\n      ")?;
            }
            f.write_str(line)?;
        }
        Ok(())
    }
}

/// Displays a device log one indented line per frame, for error messages.
struct Log<'a>(&'a [LogLine]);

impl fmt::Display for Log<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("  (nothing)");
        }
        for (i, line) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            // Indent continuation lines too, under the message.
            let line = line.to_string().replace('\n', "\n  ");
            write!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// Displays the emulator's stderr after a device log, or nothing when it is empty.
struct EmulatorStderr<'a>(&'a str);

impl fmt::Display for EmulatorStderr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stderr = self.0.trim_end();
        if stderr.is_empty() {
            return Ok(());
        }
        write!(f, "\nemulator stderr:\n{stderr}")
    }
}

/// One completed run of an ELF under the emulator, whatever its exit status.
#[derive(Debug, Clone)]
pub struct DeviceRun {
    /// The ELF that ran.
    pub elf: PathBuf,
    /// The emulator's exit status: success exactly when the device exited with status 0.
    pub status: ExitStatus,
    /// Every defmt frame the device sent, in order.
    pub log: Vec<LogLine>,
    /// The emulator's own diagnostics (not the device's output).
    pub stderr: String,
    /// Wall-clock time from starting the emulator to its exit.
    pub wall_time: Duration,
}

impl DeviceRun {
    /// Returns the run if the device exited with status 0, and [`Error::DeviceFailed`] with
    /// its log otherwise.
    pub fn success(self) -> Result<Self> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(Error::DeviceFailed {
                elf: self.elf,
                status: self.status,
                log: self.log,
                stderr: self.stderr,
            })
        }
    }

    /// The messages of the log, in order.
    pub fn messages(&self) -> impl Iterator<Item = &str> {
        self.log.iter().map(|line| line.message.as_str())
    }
}

/// The directory of the board crate `name` in this repository (`boards/<name>`).
pub fn board_dir(name: &str) -> PathBuf {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ddm-hil lives in a directory of the repository");
    repository.join("boards").join(name)
}

/// Builds `bin` of the board crate in `board_dir` (release profile, with `extra_env` added to
/// the build's environment), runs it under the board's emulator for at most `timeout`, and
/// returns its decoded log if it exited with status 0.
///
/// Fails with [`Error::QemuMissing`] or [`Error::TargetMissing`] when the tools are absent,
/// [`Error::BuildFailed`], [`Error::Timeout`], [`Error::DeviceFailed`] for a non-zero exit
/// (a device panic), or [`Error::Decode`].
pub fn run_board(
    board_dir: impl AsRef<Path>,
    bin: &str,
    timeout: Duration,
    extra_env: &[(&str, &str)],
) -> Result<DeviceRun> {
    let board = Board::open(board_dir)?;
    board.check_emulator()?;
    let elf = board.build(bin, extra_env)?;
    board.run(&elf, timeout)?.success()
}

/// A board crate: where it is, what it builds for and how its binaries are run.
#[derive(Debug, Clone)]
pub struct Board {
    dir: PathBuf,
    target: String,
    /// The runner command line, program first; never empty.
    runner: Vec<String>,
    /// `target.<triple>.linker`, if the configuration names one.
    linker: Option<String>,
}

/// How a board's binaries print their log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// defmt frames on stdout (bare-metal boards, over semihosting or RTT).
    Defmt,
    /// One plain-text message per line on stdout (hosted boards: Linux on aarch64).
    Text,
}

impl Board {
    /// Reads `build.target` and `target.<triple>.runner` from `<dir>/.cargo/config.toml`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(".cargo").join("config.toml");
        let config_error = |reason: String| Error::BoardConfig {
            path: path.clone(),
            reason,
        };
        let text = fs::read_to_string(&path).map_err(|e| config_error(e.to_string()))?;
        let config: toml::Table = text.parse().map_err(|e| config_error(format!("{e}")))?;

        let target = config
            .get("build")
            .and_then(|build| build.get("target"))
            .and_then(toml::Value::as_str)
            .ok_or_else(|| config_error("no `build.target` string".into()))?
            .to_owned();
        // Cargo accepts the runner as one string split on whitespace, or as an array.
        let runner: Vec<String> = match config
            .get("target")
            .and_then(|targets| targets.get(&target))
            .and_then(|table| table.get("runner"))
        {
            Some(toml::Value::String(line)) => line.split_whitespace().map(String::from).collect(),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(String::from))
                .collect::<Option<_>>()
                .ok_or_else(|| config_error("`runner` has a non-string item".into()))?,
            _ => Vec::new(),
        };
        if runner.is_empty() {
            return Err(config_error(format!("no `target.{target}.runner`")));
        }
        let linker = config
            .get("target")
            .and_then(|targets| targets.get(&target))
            .and_then(|table| table.get("linker"))
            .and_then(toml::Value::as_str)
            .map(String::from);
        Ok(Board {
            dir,
            target,
            runner,
            linker,
        })
    }

    /// The board's name: its directory's name.
    pub fn name(&self) -> String {
        self.dir.file_name().map_or_else(
            || self.dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// The runner command line, program first.
    pub fn runner(&self) -> &[String] {
        &self.runner
    }

    /// The same board run by another command line (program first; the ELF's path is appended
    /// to it): a user-given command for a real board, or `probe-rs run` with other options.
    pub fn with_runner(mut self, runner: Vec<String>) -> Self {
        if !runner.is_empty() {
            self.runner = runner;
        }
        self
    }

    /// How the board's binaries print their log: plain text for Linux targets, defmt
    /// otherwise.
    pub fn output_format(&self) -> OutputFormat {
        if self.target.contains("-linux-") {
            OutputFormat::Text
        } else {
            OutputFormat::Defmt
        }
    }

    /// The regions of the board's `memory.x` (none for hosted boards).
    pub fn memory_regions(&self) -> Vec<elf::Region> {
        fs::read_to_string(self.dir.join("memory.x"))
            .map(|text| elf::regions(&text))
            .unwrap_or_default()
    }

    /// Bytes of the board's RAM, from `memory.x`.
    pub fn ram_bytes(&self) -> Option<u64> {
        self.memory_regions()
            .into_iter()
            .find(|r| r.name == "RAM")
            .map(|r| r.length)
    }

    /// The board crate's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The target triple the board builds for.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Checks that the runner's program can be started, so that a missing emulator is
    /// reported before a build is spent on it.
    pub fn check_emulator(&self) -> Result<()> {
        let program = &self.runner[0];
        Command::new(program)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(drop)
            .map_err(|e| self.spawn_error(e))
    }

    /// Builds `bin` with `cargo build --release` in the board directory, so that the board's
    /// `.cargo/config.toml` applies, into `<dir>/target`, and returns the path of a private
    /// copy of the ELF (see below).
    ///
    /// The build's environment is this process's, minus the variables an enclosing
    /// `cargo test` or shell may set that would reconfigure it (see [`is_build_override`]),
    /// plus `extra_env`. Builds of one board are serialised within this process, and each
    /// returns its own copy of the ELF (under `<dir>/target/ddm-hil/`), so that concurrent
    /// tests that build the same binary with different models (`DDM_MODEL_BLOB`) never run
    /// each other's image.
    ///
    /// Fails with [`Error::TargetMissing`] when the toolchain lacks the board's target,
    /// [`Error::LinkerMissing`] when its cross linker is absent, [`Error::ModelRejected`] when
    /// the build script refuses the model or the settings, [`Error::RamOverflow`] when the
    /// image does not fit the RAM, [`Error::BuildFailed`] otherwise.
    pub fn build(&self, bin: &str, extra_env: &[(&str, &str)]) -> Result<PathBuf> {
        self.build_with_features(bin, &[], extra_env)
    }

    /// [`Board::build`] with the crate's cargo `features` enabled.
    pub fn build_with_features(
        &self,
        bin: &str,
        features: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Result<PathBuf> {
        let _guard = board_lock(&self.dir)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let elf = self.build_locked(bin, features, extra_env)?;
        static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let copies = self.dir.join("target").join("ddm-hil");
        fs::create_dir_all(&copies).map_err(|source| Error::Io {
            context: format!("creating {}", copies.display()),
            source,
        })?;
        remove_stale_copies(&copies);
        let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let copy = copies.join(format!("{bin}-{}-{n}", std::process::id()));
        fs::copy(&elf, &copy).map_err(|source| Error::Io {
            context: format!("copying {} to {}", elf.display(), copy.display()),
            source,
        })?;
        Ok(copy)
    }

    fn build_locked(
        &self,
        bin: &str,
        features: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Result<PathBuf> {
        let target_dir = self.dir.join("target");
        // The cargo that runs these tests, so that the same toolchain builds the board.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .current_dir(&self.dir)
            .args(["build", "--release", "--color", "never", "--bin", bin])
            .args(
                (!features.is_empty())
                    .then(|| ["--features".to_owned(), features.join(",")])
                    .into_iter()
                    .flatten(),
            )
            .arg("--target-dir")
            .arg(&target_dir)
            .stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(is_build_override) {
                command.env_remove(key);
            }
        }
        command.envs(extra_env.iter().copied());

        let output = command.output().map_err(|source| Error::Io {
            context: format!("running cargo build in {}", self.dir.display()),
            source,
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("target may not be installed") {
                return Err(Error::TargetMissing {
                    target: self.target.clone(),
                });
            }
            if let Some(linker) = self
                .linker
                .as_ref()
                .filter(|l| stderr.contains(&format!("linker `{l}` not found")))
            {
                return Err(Error::LinkerMissing {
                    linker: linker.clone(),
                    hint: install_hint(linker),
                });
            }
            if let Some(reason) = build_script_error(&stderr) {
                return Err(Error::ModelRejected {
                    board: self.name(),
                    reason,
                });
            }
            if let Some(linker_says) = ram_overflow(&stderr) {
                return Err(Error::RamOverflow {
                    board: self.name(),
                    arena: Bytes(None),
                    ram: Bytes(self.ram_bytes()),
                    linker_says,
                });
            }
            return Err(Error::BuildFailed {
                board: self.dir.clone(),
                bin: bin.to_owned(),
                status: output.status,
                output_tail: tail(&stderr, BUILD_OUTPUT_TAIL_LINES),
            });
        }
        Ok(target_dir.join(&self.target).join("release").join(bin))
    }

    /// Runs `elf` under the board's runner and decodes what the device logged.
    ///
    /// Returns the run whatever the device's exit status (see [`DeviceRun::success`]). Kills
    /// the emulator and fails with [`Error::Timeout`], carrying the log so far, if it has not
    /// exited after `timeout`. Fails with [`Error::Decode`] if the ELF has no defmt table or
    /// a successful run's output holds a malformed frame; a failed run's malformed frames
    /// appear in its log instead, so that the failure itself is what gets reported.
    pub fn run(&self, elf: &Path, timeout: Duration) -> Result<DeviceRun> {
        self.run_with_args(elf, &[], timeout)
    }

    /// [`Board::run`], passing `args` to the program after the ELF's path (hosted boards).
    pub fn run_with_args(&self, elf: &Path, args: &[&str], timeout: Duration) -> Result<DeviceRun> {
        let decode_error = |reason: String| Error::Decode {
            elf: elf.to_path_buf(),
            reason,
        };
        let table = if self.decodes_defmt() {
            let elf_bytes = fs::read(elf).map_err(|source| Error::Io {
                context: format!("reading {}", elf.display()),
                source,
            })?;
            let table = Table::parse(&elf_bytes)
                .map_err(|e| decode_error(format!("{e:#}")))?
                .ok_or_else(|| {
                    decode_error("the ELF has no .defmt section (is `-Tdefmt.x` linked?)".into())
                })?;
            Some(table)
        } else {
            None
        };

        let started = Instant::now();
        let mut child = Command::new(&self.runner[0])
            .args(&self.runner[1..])
            .arg(elf)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_error(e))?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let status = wait_or_kill(&mut child, timeout).map_err(|source| Error::Io {
            context: format!("waiting for {}", self.runner[0]),
            source,
        })?;
        let wall_time = started.elapsed();
        // The pipes close when the emulator exits or is killed, so these joins return.
        let stdout = stdout.join().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();

        let (log, malformed) = match &table {
            Some(table) => decode(table, &stdout),
            None => (text_lines(&stdout), 0),
        };
        let Some(status) = status else {
            return Err(Error::Timeout {
                elf: elf.to_path_buf(),
                timeout,
                log,
            });
        };
        if status.success() && malformed > 0 {
            return Err(decode_error(format!(
                "{malformed} malformed frame(s) in the output of a successful run; log:\n{}",
                Log(&log)
            )));
        }
        Ok(DeviceRun {
            elf: elf.to_path_buf(),
            status,
            log,
            stderr,
            wall_time,
        })
    }

    /// Maps a failure to start the runner's program to [`Error::QemuMissing`] when it is not
    /// installed.
    fn spawn_error(&self, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::NotFound {
            Error::QemuMissing {
                program: self.runner[0].clone(),
                hint: install_hint(&self.runner[0]),
            }
        } else {
            Error::Io {
                context: format!("starting {}", self.runner[0]),
                source,
            }
        }
    }
}

/// Removes the ELF copies of earlier runs (older than an hour) from `dir`; failures are
/// ignored, as the copies are only a cache.
fn remove_stale_copies(dir: &Path) {
    const STALE: Duration = Duration::from_secs(3600);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > STALE);
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// One lock per board directory, leaked: builds of a board never overlap within this process.
type BoardLocks = Mutex<Vec<(PathBuf, &'static Mutex<()>)>>;

/// The build lock of the board crate in `dir`.
fn board_lock(dir: &Path) -> &'static Mutex<()> {
    static LOCKS: OnceLock<BoardLocks> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((_, lock)) = locks.iter().find(|(d, _)| d == dir) {
        return lock;
    }
    let lock: &'static Mutex<()> = Box::leak(Box::default());
    locks.push((dir.to_path_buf(), lock));
    lock
}

impl Board {
    /// Whether the runner's stdout is raw defmt frames to decode against the ELF (QEMU), rather
    /// than text lines (a Linux board, or `probe-rs run`, which decodes defmt itself).
    fn decodes_defmt(&self) -> bool {
        let program = Path::new(&self.runner[0])
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.output_format() == OutputFormat::Defmt && program != "probe-rs"
    }
}

/// How to install `program` (an emulator, a runner or a cross linker).
pub fn install_hint(program: &str) -> &'static str {
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.as_str() {
        "qemu-system-arm" => {
            "install QEMU's Arm system emulator (Debian/Ubuntu: `apt-get install qemu-system-arm`)"
        }
        "qemu-aarch64" => {
            "install QEMU's user-mode emulators (Debian/Ubuntu: `apt-get install qemu-user`)"
        }
        "aarch64-linux-gnu-gcc" => {
            "install the aarch64 cross toolchain (Debian/Ubuntu: `apt-get install \
             gcc-aarch64-linux-gnu libc6-dev-arm64-cross`)"
        }
        "flip-link" => "install it with `cargo install flip-link --locked`",
        "probe-rs" => "install it with `cargo install probe-rs-tools --locked`",
        _ => "install it, or change the board's `.cargo/config.toml`",
    }
}

/// The messages a board's build script gave through `cargo::error=` (ddm-board-build's refusal
/// of a model or setting), joined; `None` when the build failed for another reason.
fn build_script_error(stderr: &str) -> Option<String> {
    // Cargo prints each `cargo::error=` line as `error: <package>@<version>: <line>`, then
    // `error: build script logged errors`.
    if !stderr.contains("build script logged errors") {
        return None;
    }
    let lines: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("error: "))
        .filter(|line| *line != "build script logged errors")
        .map(|line| match line.split_once(": ") {
            Some((package, message)) if package.contains('@') && !package.contains(' ') => message,
            _ => line,
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// The linker's complaint when an image does not fit its RAM region (or leaves too little of
/// it to the stack); `None` for other build failures.
fn ram_overflow(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .map(|line| line.trim().trim_start_matches("= note: "))
        .find(|line| {
            line.contains("will not fit in region 'RAM'")
                || line.contains("region `RAM' overflowed")
                || line.contains("region RAM overflowed")
                || line.contains("not enough RAM left for the stack")
        })
        .map(|line| line.trim_start_matches("rust-lld: ").trim().to_owned())
}

/// One message per line of a text log; a leading `TRACE`, `DEBUG`, `INFO`, `WARN` or `ERROR`
/// (as `probe-rs run --log-format "{L} {s}"` prints) becomes the line's level.
fn text_lines(bytes: &[u8]) -> Vec<LogLine> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (first, rest) = line.split_once(' ').unwrap_or((line, ""));
            let level = match first {
                "TRACE" => Some(Level::Trace),
                "DEBUG" => Some(Level::Debug),
                "INFO" => Some(Level::Info),
                "WARN" => Some(Level::Warn),
                "ERROR" => Some(Level::Error),
                _ => None,
            };
            match level {
                Some(level) => LogLine {
                    level: Some(level),
                    message: rest.trim_start().to_owned(),
                },
                None => LogLine {
                    level: line.starts_with("error:").then_some(Level::Error),
                    message: line.to_owned(),
                },
            }
        })
        .collect()
}

/// Whether the inherited environment variable `key` must be removed from a nested board build.
///
/// Removed: everything cargo sets for the process it runs (`CARGO_PKG_*`, `CARGO_MANIFEST_DIR`,
/// ...) and every variable that overrides cargo or rustc configuration (`CARGO_TARGET_DIR`,
/// `CARGO_BUILD_TARGET`, `CARGO_ENCODED_RUSTFLAGS`, `CARGO_PROFILE_*`, `CARGO_TARGET_<triple>_*`,
/// `RUSTFLAGS`, `RUSTC_WRAPPER`, ...), because the board's own `.cargo/config.toml` must decide
/// those: host flags such as coverage instrumentation would break a `no_std` build. Also
/// `DEFMT_LOG`, which the board's configuration sets, and every `DDM_*` variable (the model and
/// run settings of ddm-board-build, which the harness gives explicitly). Kept: where cargo's
/// home and registry
/// are and how it reaches them (`CARGO_HOME`, `CARGO_NET_*`, `CARGO_HTTP_*`,
/// `CARGO_REGISTRIES_*`, `CARGO_REGISTRY_*`), output style (`CARGO_TERM_*`) and
/// `CARGO_BUILD_JOBS`.
pub fn is_build_override(key: &str) -> bool {
    const KEEP: &[&str] = &[
        "CARGO_HOME",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_TERM_",
        "CARGO_BUILD_JOBS",
    ];
    const REMOVE: &[&str] = &[
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "DEFMT_LOG",
        "MAKEFLAGS",
        "MFLAGS",
    ];
    if key.starts_with("CARGO") || key.starts_with("__CARGO") {
        !KEEP.iter().any(|kept| key.starts_with(kept))
    } else if key.starts_with("DDM_") {
        // The model and run settings of a board build are the harness's to give.
        true
    } else {
        REMOVE.contains(&key)
    }
}

/// Reads `pipe` to its end on a thread of its own, so that a chatty child never blocks on a
/// full pipe while we wait for it.
fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error ends the capture; what was read so far is still returned.
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Waits for `child` to exit and returns its status, or kills it once `timeout` has passed
/// and returns `None`. The child is never left running, not even when waiting fails.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let outcome = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(Some(status)),
            Ok(None) if Instant::now() >= deadline => break Ok(None),
            Ok(None) => thread::sleep(POLL_INTERVAL),
            Err(e) => break Err(e),
        }
    };
    if !matches!(outcome, Ok(Some(_))) {
        // Killing a child that exited meanwhile is harmless; `wait` reaps it either way.
        let _ = child.kill();
        child.wait()?;
    }
    outcome
}

/// Decodes a stream of defmt frames. Returns the frames and how many were malformed; each
/// malformed frame appears in the log as an error line. An incomplete frame at the end (the
/// device was killed mid-frame) is dropped.
fn decode(table: &Table, bytes: &[u8]) -> (Vec<LogLine>, usize) {
    let mut decoder = table.new_stream_decoder();
    decoder.received(bytes);
    let mut log = Vec::new();
    let mut malformed = 0;
    loop {
        match decoder.decode() {
            Ok(frame) => log.push(LogLine {
                level: frame.level(),
                message: frame.display_message().to_string(),
            }),
            Err(DecodeError::UnexpectedEof) => break,
            Err(DecodeError::Malformed) => {
                malformed += 1;
                log.push(LogLine {
                    level: Some(Level::Error),
                    message: "<malformed defmt frame>".into(),
                });
                // Without framing (raw encoding) there is no way to find the next frame.
                if !table.encoding().can_recover() {
                    break;
                }
            }
        }
    }
    (log, malformed)
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_overrides_are_removed_and_registry_settings_kept() {
        for key in [
            "CARGO_TARGET_DIR",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "CARGO_PROFILE_RELEASE_LTO",
            "CARGO_TARGET_THUMBV7EM_NONE_EABIHF_RUNNER",
            "CARGO_MANIFEST_DIR",
            "CARGO",
            "__CARGO_FIX_PLZ",
            "RUSTFLAGS",
            "RUSTC_WRAPPER",
            "DEFMT_LOG",
            "DDM_MODEL_BLOB",
            "DDM_STEPS",
        ] {
            assert!(is_build_override(key), "{key} should be removed");
        }
        for key in [
            "CARGO_HOME",
            "CARGO_NET_OFFLINE",
            "CARGO_REGISTRIES_CRATES_IO_PROTOCOL",
            "CARGO_BUILD_JOBS",
            "PATH",
            "HOME",
            "RUSTUP_TOOLCHAIN",
        ] {
            assert!(!is_build_override(key), "{key} should be kept");
        }
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn runner_string_is_read_from_the_board_config() {
        let board = Board::open(board_dir("qemu-mps2-an386")).expect("board config");
        assert_eq!(board.target(), "thumbv7em-none-eabihf");
        assert_eq!(board.runner[0], "qemu-system-arm");
        assert_eq!(board.runner.last().map(String::as_str), Some("-kernel"));
    }

    #[test]
    fn missing_emulator_is_reported_with_install_hint() {
        let board = Board {
            dir: PathBuf::from("."),
            target: "thumbv7em-none-eabihf".into(),
            runner: vec!["/nonexistent/qemu-system-arm".into()],
            linker: None,
        };
        let error = board.check_emulator().expect_err("emulator cannot exist");
        assert!(matches!(error, Error::QemuMissing { .. }), "{error:?}");
        assert!(error
            .to_string()
            .contains("apt-get install qemu-system-arm"));
    }
}
