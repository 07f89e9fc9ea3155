//! A board crate: where it is, how its binaries are built (release, locked per board, with the
//! `DDM_*` variables of a check), and what is missing when they cannot be.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::elf;
use crate::error::{Bytes, Error, Result};
use crate::run::DeviceRun;

/// How many lines of cargo's output a [`Error::BuildFailed`] keeps.
const BUILD_OUTPUT_TAIL_LINES: usize = 40;

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
    pub(crate) dir: PathBuf,
    pub(crate) target: String,
    /// The runner command line, program first; never empty.
    pub(crate) runner: Vec<String>,
    /// `target.<triple>.linker`, if the configuration names one.
    pub(crate) linker: Option<String>,
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
