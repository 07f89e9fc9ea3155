//! Running a built image under its board's runner with a timeout, and what it printed.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use defmt_decoder::Table;

use crate::board::{install_hint, Board, OutputFormat};
use crate::device_log::{decode, text_lines, LogLine};
use crate::error::{Error, Log, Result};

/// How often a running emulator is polled for its exit.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

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

impl Board {
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
    pub(crate) fn spawn_error(&self, source: io::Error) -> Error {
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
