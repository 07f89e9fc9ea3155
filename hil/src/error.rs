//! The harness's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use crate::device_log::LogLine;
use crate::{protocol, reference};

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

/// Displays a device log one indented line per frame, for error messages.
pub(crate) struct Log<'a>(pub(crate) &'a [LogLine]);

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
pub(crate) struct EmulatorStderr<'a>(&'a str);

impl fmt::Display for EmulatorStderr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stderr = self.0.trim_end();
        if stderr.is_empty() {
            return Ok(());
        }
        write!(f, "\nemulator stderr:\n{stderr}")
    }
}
