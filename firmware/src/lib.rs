//! The ddm device runtime: reads a model blob from flash without copying it and runs the
//! denoiser (int8, fp16 or f32) and the core samplers in one caller-provided arena.
//!
//! `no_std`, no allocation (in `std` builds the x86-64 and aarch64 SIMD paths keep a copy of
//! each convolution's input and its packed weights per thread), no panics on untrusted input.
//! The pieces, in the order data flows:
//! - [`format`]: the blob layout, byte by byte, and its constants;
//! - [`blob`]: the zero-copy reader that validates everything once ([`Blob::parse`]);
//! - [`shape_rule`]: each operator's output shape and the checks that decide it, once, for the
//!   reader, the writer and the exporter;
//! - [`quant`]: fixed-point requantisation (TFLite Micro / CMSIS-NN), the SiLU table and the
//!   helpers the exporter shares with the runtime;
//! - [`kernels`]: one module per op, int8 and float variants; the int8 products on the
//!   CPU's fastest [`Path`] (the Cortex-M4's DSP instructions, AVX2, AVX-VNNI, AVX-512 VNNI,
//!   NEON, NEON's `SDOT`, the int8 matrix multiply `SMMLA`);
//! - [`plan`]: the arena layout and [`required_arena_bytes`];
//! - [`network`]: one network evaluation ([`Network::run`]; an int8 blob with time groups
//!   quantises each call's activations with the parameters of its timestep's group), and each
//!   node's output after it ([`Network::node_output`]);
//! - [`generate()`]: a whole sample with DDIM, DPM-Solver++ 2M, DDPM, the predictor-corrector
//!   sampler or the probability flow ODE, decoded by a latent model's decoder
//!   ([`Blob::decoder`]) in the same arena;
//! - `writer` (feature `std`): builds blobs, for the exporter and the tests.
//!
//! The same code runs on the host and the device: float kernels use a fixed operation order
//! and [`libm`], int8 kernels exact integer arithmetic, so both produce the same bytes.
//!
//! ```no_run
//! # fn demo(flash: &[u8]) -> ddm_firmware::Result<()> {
//! use ddm_firmware::{generate, required_arena_bytes, Blob, GenerateSettings};
//! static mut ARENA: [u8; 64 * 1024] = [0; 64 * 1024];
//! let blob = Blob::parse(flash)?;
//! assert!(required_arena_bytes(&blob)? <= 64 * 1024);
//! let mut sample = [0.0f32; 2];
//! # #[allow(static_mut_refs)]
//! let arena = unsafe { &mut ARENA };
//! generate(&blob, arena, &GenerateSettings::new(42, 0), &mut sample)?;
//! # Ok(()) }
//! ```
#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_code)]

#[cfg(any(feature = "std", test))]
extern crate std;

pub mod blob;
mod cast;
mod error;
pub mod format;
pub mod generate;
pub mod kernels;
pub mod network;
pub mod plan;
pub mod quant;
pub mod settings;
pub mod shape_rule;
#[cfg(feature = "std")]
pub mod writer;

pub use blob::{Blob, BlobKind, Node, Op, Shape, Tensor};
pub use ddm_core::sampler::{SamplerConfig, SamplerOptions};
pub use error::{Error, Result};
pub use format::{DType, OpCode, Precision, FORMAT_VERSION};
pub use generate::{
    generate, generate_observed, generate_with, GenerateSettings, StepInfo, StepObserver,
};
pub use kernels::dot::Path;
pub use network::{Network, NodeOutput};
pub use plan::{
    network_arena_bytes, required_arena_bytes, required_arena_bytes_for_steps, ArenaLayout,
};
pub use quant::{silu_lut, AddParams, QuantParams, Requant};
pub use settings::ModelSchedule;
