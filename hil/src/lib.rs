//! Hardware-in-the-loop harness: builds a board crate from `boards/`, runs one of its binaries
//! under QEMU (or qemu-aarch64, or on a probe-attached board) with a timeout, and returns the
//! log the device printed; [`check`] compares a generation run with the host's, bit for bit.
//!
//! Private modules, re-exported here: `board` ([`Board`]: configuration and builds), `run`
//! ([`DeviceRun`]: a run under the runner, with its timeout), `device_log` ([`LogLine`]: defmt
//! and text decoding) and `error` ([`Error`]).
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

pub use defmt_parser::Level;

mod board;
mod device_log;
mod error;
mod run;

pub mod check;
pub mod compare;
pub mod elf;
pub mod golden;
pub mod images;
pub mod layers;
pub mod protocol;
pub mod reference;

pub use board::{board_dir, install_hint, is_build_override, run_board, Board, OutputFormat};
pub use device_log::LogLine;
pub use error::{Bytes, Error, Result};
pub use run::DeviceRun;
