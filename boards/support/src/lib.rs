//! The board-independent part of every ddm firmware image, so that a board crate is only its
//! initialisation and its I/O.
//!
//! - [`trace`]: generation with the device runtime, observed step by step
//!   ([`trace::generate_observed`]); the `ddm-hil` harness runs the same function on the host;
//! - [`RunConfig`]: what to generate (sampler, steps, seed, number of samples), fixed when the
//!   image is built (see `ddm-board-build`);
//! - [`StaticBuffer`] and [`Aligned`]: the arena and the model blob as statics, sized at build
//!   time, so that a model too large for a board's RAM fails at link time;
//! - with feature `device`: [`report::run`], which generates every sample, toggles a status
//!   LED (any `embedded-hal` [`OutputPin`](embedded_hal::digital::OutputPin)) and times each
//!   network call with a [`clock::Clock`], and prints everything as defmt lines in the
//!   protocol below; [`clock::DwtClock`] (the DWT cycle counter) and [`stack`] (stack
//!   high-water mark) for Cortex-M boards.
//!
//! # The line protocol
//!
//! A run prints these defmt lines at info level, in this order. Fields are `key=value`,
//! separated by single spaces; numbers are decimal unless written `0x...`.
//!
//! ```text
//! ddm board=<name> clock=<clock> hz=<ticks per second>
//! blob path=<where the blob came from>                 (optional; boards print it first or second)
//! model precision=<int8|fp16|f32> nodes=<n> sample_len=<n> macs=<per network call> blob_bytes=<n> arena_bytes=<n> decoder_macs=<n>
//! run sampler=<ddpm|ddim|dpmpp-2m> steps=<n> seed=<n> num=<n>
//! step sample=<i> index=<k> t=<timestep> ticks=<n> fnv=<0x........>    (steps x num lines)
//! decode sample=<i> ticks=<n>                                         (latent models: after each sample's steps)
//! image sample=<i> offset=<byte offset> bytes=[b, b, ...]              (64 bytes a line)
//! sample index=<i> fnv=<0x........>                                   (after each sample's image)
//! stack used=<bytes> size=<bytes>                                     (when measurable)
//! done
//! ```
//!
//! - `model`: `sample_len` is the length of a generated sample, a latent model's decoded
//!   image; `decoder_macs` the multiply-accumulates of its decoder's one call per sample (0
//!   without a decoder).
//! - `decode`: the duration of a latent model's decoder call, in `clock` ticks.
//! - `step`: `ticks` is the duration of the network call alone, in `clock` ticks (`hz` per
//!   second; on the DWT, CPU cycles); `fnv` is [`fnv1a`] of the sample's `f32`s (their
//!   little-endian bytes) after the sampler's update of that step, so the first diverging
//!   step of a mismatching run is known.
//! - `image`: the generated sample as the little-endian bytes of its `f32`s (exact; the host
//!   converts it to PNG for people).
//! - A failure prints `error: <reason>` at error level and the board ends the run with a
//!   failure status (semihosting exit, or a panic caught by the debug probe).
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

pub use ddm_core::Guidance;
pub use ddm_firmware::{GenerateSettings, SamplerOptions};

pub mod trace;

#[cfg(feature = "device")]
pub mod clock;
#[cfg(feature = "device")]
pub mod report;
#[cfg(feature = "device")]
pub mod stack;

pub use ddm_core::loss_weight::ReverseVariance;
pub use ddm_core::sampler::SamplerKind;
pub use ddm_core::timesteps::{GivenTimesteps, Spacing};
pub use trace::{fnv1a, generate_observed, StepObserver};

/// Ends a run on a board driven by a debugger (`probe-rs run`).
///
/// A failed run panics with its reason (panic-probe reports it, and `probe-rs run` exits with a
/// failure status). A successful one ends with a semihosting exit with status 0, which
/// `probe-rs run` passes on as its own; without a debugger attached (a board running on its
/// own) semihosting would fault, so the core sleeps instead.
#[cfg(feature = "device")]
pub fn finish(result: Result<(), report::RunError>) -> ! {
    if let Err(error) = result {
        panic!("generation failed: {error}");
    }
    if cortex_m::peripheral::DCB::is_debugger_attached() {
        cortex_m_semihosting::debug::exit(cortex_m_semihosting::debug::EXIT_SUCCESS);
    }
    loop {
        cortex_m::asm::wfi();
    }
}

/// Bytes of the sample per `image` line.
pub const IMAGE_CHUNK_BYTES: usize = 64;

/// What a board generates: fixed when its image is built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunConfig {
    /// The sampler and any of its settings the build chose (`DDM_SAMPLER`, `DDM_SPACING`,
    /// ...); everything left `None` is the blob's (the core's rule,
    /// `SamplerOptions::resolve`). Its `steps` is not read: [`RunConfig::steps`] is.
    pub sampler: SamplerOptions,
    /// Number of timesteps per sample (the network evaluations of DDPM, DDIM and
    /// DPM-Solver++), resolved against the blob by the build.
    pub steps: u32,
    /// Seed of the random streams.
    pub seed: u64,
    /// Number of samples (indices `0..num`, each with its own random stream).
    pub num: u64,
    /// The class to generate (`DDM_CLASS`), for a class-conditional blob; `None`: the
    /// unconditional model.
    pub class: Option<u32>,
    /// The guidance of the class (`DDM_GUIDANCE`; ignored without a class).
    pub guidance: Guidance,
}

impl RunConfig {
    /// The runtime's settings for sample `sample_index`: the device and the host reference
    /// both use exactly these.
    pub fn settings(&self, sample_index: u64) -> GenerateSettings {
        GenerateSettings {
            sampler: SamplerOptions {
                steps: Some(self.steps),
                ..self.sampler
            },
            seed: self.seed,
            sample_index,
            class: self.class,
            guidance: self.guidance,
        }
    }
}

/// A value aligned to 16 bytes: the model blob in flash and the arena in RAM.
#[derive(Debug)]
#[repr(C, align(16))]
pub struct Aligned<T: ?Sized>(pub T);

/// A zero-initialised, 16-byte-aligned byte buffer in a `static`, lent out once as
/// `&'static mut [u8]`.
///
/// It lives in `.bss`, so its size counts towards the RAM the linker checks against
/// `memory.x`: an arena a board cannot hold fails the build instead of the run. Taking it
/// from a `static` (not building it on the stack) keeps large buffers off the stack.
pub struct StaticBuffer<const N: usize> {
    bytes: UnsafeCell<Aligned<[u8; N]>>,
    taken: AtomicBool,
}

// SAFETY: the bytes are only reachable through `take`, which hands out the one `&mut` at most
// once (the flag is swapped atomically).
unsafe impl<const N: usize> Sync for StaticBuffer<N> {}

impl<const N: usize> StaticBuffer<N> {
    /// A buffer of `N` zero bytes.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        StaticBuffer {
            bytes: UnsafeCell::new(Aligned([0; N])),
            taken: AtomicBool::new(false),
        }
    }

    /// The bytes, the first time; `None` afterwards.
    // The atomic flag is what makes the returned `&mut` unique: this is the pattern of
    // `cortex_m::singleton!` and `static_cell`, which clippy cannot see through.
    #[allow(clippy::mut_from_ref)]
    pub fn take(&'static self) -> Option<&'static mut [u8]> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the flag was clear, so no other reference to the bytes exists, and none
        // will be created: this is the only place that makes one.
        Some(unsafe { &mut (*self.bytes.get()).0 })
    }
}

/// `bytes` (16-byte aligned, a multiple of 4 long, as a [`StaticBuffer`] of `4 n` bytes is)
/// as `f32`s; `None` otherwise.
pub fn as_f32s(bytes: &mut [u8]) -> Option<&mut [f32]> {
    bytemuck::try_cast_slice_mut(bytes).ok()
}

/// Includes the model and run constants `ddm-board-build` generated for this crate (in its
/// build script) as items of the current module: `BLOB` (the blob in flash, an
/// [`Aligned`] byte array), `ARENA_BYTES`, `SAMPLE_LEN`, `RUN` (a [`RunConfig`]) and
/// `MODEL_SOURCE` (where the blob came from).
#[macro_export]
macro_rules! include_model {
    () => {
        include!(concat!(env!("OUT_DIR"), "/ddm_model.rs"));
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_buffer_is_taken_once() {
        static BUFFER: StaticBuffer<32> = StaticBuffer::new();
        let bytes = BUFFER.take().expect("first take");
        assert_eq!(bytes.len(), 32);
        assert_eq!(bytes.as_ptr() as usize % 16, 0);
        assert!(bytes.iter().all(|&b| b == 0));
        assert!(as_f32s(bytes).is_some_and(|f| f.len() == 8));
        assert!(BUFFER.take().is_none());
    }

    #[test]
    fn settings_take_the_built_options_and_the_resolved_steps() {
        let config = RunConfig {
            sampler: SamplerOptions {
                kind: Some(SamplerKind::DpmSolverPp2m),
                steps: Some(3),
                spacing: Some(Spacing::Leading),
                first_order_penultimate: Some(true),
                ..SamplerOptions::none()
            },
            steps: 7,
            seed: 3,
            num: 2,
            class: Some(4),
            guidance: Guidance::new(2.5).unwrap(),
        };
        let settings = config.settings(1);
        assert_eq!(settings.class, Some(4));
        assert_eq!(settings.guidance.scale(), 2.5);
        assert_eq!(
            settings.sampler,
            SamplerOptions {
                steps: Some(7),
                ..config.sampler
            }
        );
        assert_eq!((settings.seed, settings.sample_index), (3, 1));
        let blob_default = RunConfig {
            sampler: SamplerOptions::none(),
            ..config
        };
        assert_eq!(
            blob_default.settings(0).sampler,
            SamplerOptions {
                steps: Some(7),
                ..SamplerOptions::none()
            }
        );
    }
}
