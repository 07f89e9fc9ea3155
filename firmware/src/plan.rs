//! Arena layout.
//!
//! Everything the runtime writes lives in one caller-provided `&mut [u8]`. Its start is
//! rounded up to [`ARENA_ALIGN`] bytes (so any slice works; the `required_*` sizes include
//! that slack), then:
//!
//! ```text
//! | activations (the blob's plan: arena_bytes) | kernel scratch | x | network output |
//! | unconditional output | sampler scratch | timesteps (steps u32) |
//! ```
//!
//! each region rounded up to 16 bytes; `x` and the output are `sample_len` f32 each, the
//! sampler scratch (DPM-Solver++'s previous x0 estimate, the probability flow ODE's first
//! slope) `sample_len` f32 or empty. The unconditional output, the second prediction of each guided
//! step, is `sample_len` f32 for a class-conditional blob ([`Blob::classes`]) and empty
//! otherwise. The kernel scratch ([`Blob::scratch_bytes`]) is the int8
//! convolutions' im2col buffer, sized at parse for the network's largest fan-in: four int16
//! columns, 8 bytes per element of the fan-in rounded up to a multiple of 4 (9,216 bytes for a
//! 3x3 convolution of 128 input channels). It is empty, and takes no bytes, for float blobs
//! and blobs without convolutions. [`Network`](crate::Network) alone only needs the
//! activations and the kernel scratch ([`network_arena_bytes`]). The blob's memory plan gives
//! each node's output an offset in the activations (validated at parse: in range, aligned,
//! not overlapping its inputs except in place); this module only adds up the regions.
//! The schedule's `alphas_cumprod` table takes no arena bytes: the samplers read it in place
//! from the blob ([`Blob::alpha_bar_schedule`]).
//!
//! A latent model's decoder ([`Blob::decoder`]) runs once, after the last step, when the
//! denoiser's activations and kernel scratch are dead: its own activations and kernel scratch
//! start at the arena's start too, and `x` starts after the larger of the two networks, so
//! one arena holds both and the decoder reads the final latent from `x` in place.

use core::ops::Range;

use crate::blob::Blob;
use crate::error::{Error, Result};
use crate::format::align_up;

/// Alignment of the arena start and of every region in it.
pub const ARENA_ALIGN: usize = 16;

/// Where each buffer of a generation run lives in the (aligned) arena.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ArenaLayout {
    /// Activations of the network (the blob's memory plan).
    pub activations: Range<usize>,
    /// Scratch of the network's kernels ([`Blob::scratch_bytes`]; empty when that is 0).
    pub kernel_scratch: Range<usize>,
    /// A latent model's decoder network, activations and kernel scratch (from 0, over the
    /// denoiser's; empty without a decoder).
    pub decoder: Range<usize>,
    /// The sample being denoised (f32).
    pub x: Range<usize>,
    /// The network output (f32).
    pub output: Range<usize>,
    /// The unconditional prediction of a guided step (f32; empty for an unconditional blob).
    pub unconditional: Range<usize>,
    /// DPM-Solver++ 2M's previous x0 estimate (f32).
    pub scratch: Range<usize>,
    /// The inference timesteps (u32).
    pub timesteps: Range<usize>,
}

const OVERFLOW: Error = Error::Malformed("arena size overflows usize");

impl ArenaLayout {
    /// The layout for generating with `blob` in `steps` steps.
    pub fn new(blob: &Blob<'_>, steps: usize) -> Result<Self> {
        /// The next `bytes` (`None`: overflowed) from `end`, which moves past them, aligned.
        fn region(end: &mut usize, bytes: Option<usize>) -> Result<Range<usize>> {
            let start = *end;
            *end = bytes
                .and_then(|b| start.checked_add(b))
                .and_then(|e| align_up(e, ARENA_ALIGN))
                .ok_or(OVERFLOW)?;
            Ok(start..start + bytes.unwrap_or(0))
        }
        let mut end = 0usize;
        let sample = blob.sample_len().checked_mul(4);
        let activations = region(&mut end, Some(blob.arena_bytes()))?;
        let kernel_scratch = region(&mut end, Some(blob.scratch_bytes()))?;
        let decoder = match blob.decoder() {
            Some(decoder) => 0..network_layout(&decoder)?.end,
            None => 0..0,
        };
        end = align_up(end.max(decoder.end), ARENA_ALIGN).ok_or(OVERFLOW)?;
        Ok(ArenaLayout {
            activations,
            kernel_scratch,
            decoder,
            x: region(&mut end, sample)?,
            output: region(&mut end, sample)?,
            unconditional: region(
                &mut end,
                if blob.classes().is_some() {
                    sample
                } else {
                    Some(0)
                },
            )?,
            scratch: region(&mut end, sample)?,
            timesteps: region(&mut end, steps.checked_mul(4))?,
        })
    }

    /// Bytes of the aligned arena (without the alignment slack).
    pub fn len(&self) -> usize {
        self.timesteps.end
    }

    /// Whether the layout is empty (never, for a valid blob).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Arena bytes [`generate`](crate::generate()) needs for `blob` with its default number of
/// steps, including `ARENA_ALIGN - 1` bytes of alignment slack (any `&mut [u8]` of this length
/// works). Overriding the steps needs [`required_arena_bytes_for_steps`].
pub fn required_arena_bytes(blob: &Blob<'_>) -> Result<usize> {
    required_arena_bytes_for_steps(blob, blob.sampler_defaults().steps as usize)
}

/// Arena bytes [`generate`](crate::generate()) needs for `blob` in `steps` steps (with slack).
pub fn required_arena_bytes_for_steps(blob: &Blob<'_>, steps: usize) -> Result<usize> {
    ArenaLayout::new(blob, steps)?
        .len()
        .checked_add(ARENA_ALIGN - 1)
        .ok_or(OVERFLOW)
}

/// Arena bytes a [`Network`](crate::Network) alone needs for `blob` (with slack): the
/// activations and the kernel scratch, laid out as at the start of an [`ArenaLayout`].
pub fn network_arena_bytes(blob: &Blob<'_>) -> Result<usize> {
    network_layout(blob)?
        .end
        .checked_add(ARENA_ALIGN - 1)
        .ok_or(OVERFLOW)
}

/// The kernel scratch of a [`Network`](crate::Network)'s (aligned) arena; its end is the
/// bytes the network needs. The activations are `0..blob.arena_bytes()`; the scratch follows
/// them, 16-byte aligned, or is the empty range at their end when the blob needs none.
pub(crate) fn network_layout(blob: &Blob<'_>) -> Result<Range<usize>> {
    let activations = blob.arena_bytes();
    match blob.scratch_bytes() {
        0 => Ok(activations..activations),
        bytes => {
            let start = align_up(activations, ARENA_ALIGN).ok_or(OVERFLOW)?;
            Ok(start..start.checked_add(bytes).ok_or(OVERFLOW)?)
        }
    }
}

/// The arena from its first [`ARENA_ALIGN`]-aligned byte, checked to hold `needed` bytes.
pub(crate) fn aligned(arena: &mut [u8], needed: usize) -> Result<&mut [u8]> {
    let available = arena.len();
    let skip = (ARENA_ALIGN - (arena.as_ptr() as usize) % ARENA_ALIGN) % ARENA_ALIGN;
    let required = needed.checked_add(skip).ok_or(OVERFLOW)?;
    if available < required {
        return Err(Error::ArenaTooSmall {
            required,
            available,
        });
    }
    Ok(&mut arena[skip..required])
}
